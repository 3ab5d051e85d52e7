//! Packer 1.6.6's `ansible-local` provisioner: the playbook(s), roles,
//! group and host variables and an inventory are uploaded into
//! `staging_directory` on the machine, and `ansible-playbook` (the
//! `command` key) runs there against `127.0.0.1` with `-c local`.
//!
//! Keys: `playbook_file` or `playbook_files` (one of them), `playbook_dir`,
//! `playbook_paths`, `role_paths`, `group_vars`, `host_vars`,
//! `inventory_file`, `inventory_groups`, `extra_arguments`,
//! `staging_directory` (default `/tmp/packer-provisioner-ansible-local/<uuid>`),
//! `clean_staging_directory`, `galaxy_file`, `galaxy_command`, `command`
//! (default `ANSIBLE_FORCE_COLOR=1 PYTHONUNBUFFERED=1 ansible-playbook`,
//! run through the remote shell). Every path is checked at validate time,
//! as Packer does.
//!
//! Where a file lands, as in Packer: `playbook_file` in the staging
//! directory under its own name; each of `playbook_files` under the
//! staging directory followed by its absolute local path (or, inside
//! `playbook_dir`, its path relative to it); `playbook_dir`'s contents in
//! the staging directory itself; `role_paths` under `roles/<name>`;
//! `playbook_paths` under `playbooks/<name>`; `group_vars` and `host_vars`
//! under those names.
//!
//! One difference from Packer 1.6.6: Packer's `--extra-vars` string ends
//! with a stray `-o IdentitiesOnly=yes` (an ssh option that lands in
//! Ansible's variables as `_raw_params` and `IdentitiesOnly=yes`); kiln
//! passes only `packer_build_name`, `packer_builder_type` and
//! `packer_http_addr`.
use crate::common::{
    check_path, go_base, go_join, http_addr, need_comm, run, sh_quote, upload_dir_contents,
    upload_file, Kind,
};
use kiln_core::{
    async_trait, BuildCtx, BuildError, Communicator, PrepareOpts, ProvisionCtx, Provisioner,
};
use kiln_template::Decoder;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Packer's default staging directory (a unique name is added).
pub const DEFAULT_STAGING_DIR: &str = "/tmp/packer-provisioner-ansible-local";

#[derive(Debug, Clone)]
pub struct Config {
    pub command: String,
    pub extra_arguments: Vec<String>,
    pub group_vars: Option<String>,
    pub host_vars: Option<String>,
    pub playbook_dir: Option<String>,
    pub playbook_file: Option<String>,
    /// Absolute local paths.
    pub playbook_files: Vec<String>,
    pub playbook_paths: Vec<String>,
    pub role_paths: Vec<String>,
    pub staging_dir: String,
    pub clean_staging_dir: bool,
    pub inventory_file: Option<String>,
    pub inventory_groups: Vec<String>,
    pub galaxy_file: Option<String>,
    pub galaxy_command: String,
}

/// Packer's `uuid.TimeOrderedUUID`: the time first, so names sort by
/// creation.
pub fn time_ordered_uuid() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let r = uuid::Uuid::new_v4();
    let b = r.as_bytes();
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        now.as_secs() as u32,
        (now.subsec_nanos() >> 16) & 0xffff,
        u16::from_be_bytes([b[0], b[1]]),
        u16::from_be_bytes([b[2], b[3]]),
        u64::from_be_bytes([0, 0, b[4], b[5], b[6], b[7], b[8], b[9]])
    )
}

fn non_empty(s: Option<String>) -> Option<String> {
    s.filter(|s| !s.is_empty())
}

impl Config {
    pub fn decode(d: &mut Decoder<'_>) -> Option<Config> {
        let command = non_empty(d.string("command"))
            .unwrap_or_else(|| "ANSIBLE_FORCE_COLOR=1 PYTHONUNBUFFERED=1 ansible-playbook".into());
        let extra_arguments = d.string_list("extra_arguments").unwrap_or_default();
        let group_vars = non_empty(d.string("group_vars"));
        let host_vars = non_empty(d.string("host_vars"));
        let playbook_dir = non_empty(d.string("playbook_dir"));
        let playbook_file = non_empty(d.string("playbook_file"));
        let playbook_files_raw = d.string_list("playbook_files").unwrap_or_default();
        let playbook_paths = d.string_list("playbook_paths").unwrap_or_default();
        let role_paths = d.string_list("role_paths").unwrap_or_default();
        let staging_dir = non_empty(d.string("staging_directory"))
            .unwrap_or_else(|| go_join(&[DEFAULT_STAGING_DIR, &time_ordered_uuid()]));
        let clean_staging_dir = d.bool("clean_staging_directory").unwrap_or(false);
        let inventory_file = non_empty(d.string("inventory_file"));
        let inventory_groups = d.string_list("inventory_groups").unwrap_or_default();
        let galaxy_file = non_empty(d.string("galaxy_file"));
        let galaxy_command =
            non_empty(d.string("galaxy_command")).unwrap_or_else(|| "ansible-galaxy".into());

        let mut ok = true;
        if !playbook_files_raw.is_empty() && playbook_file.is_some() {
            d.error(
                "playbook_files",
                "Either playbook_file or playbook_files can be specified, not both",
            );
            ok = false;
        }
        if playbook_files_raw.is_empty() && playbook_file.is_none() {
            d.error_here("Either playbook_file or playbook_files must be specified");
            ok = false;
        }
        if let Some(p) = &playbook_file {
            ok &= check_path(d, "playbook_file", p, Kind::File);
        }
        let mut playbook_files = Vec::new();
        for p in &playbook_files_raw {
            if check_path(d, "playbook_files", p, Kind::File) {
                match std::path::absolute(p) {
                    Ok(a) => playbook_files.push(a.display().to_string()),
                    Err(e) => {
                        d.error("playbook_files", format!("{p}: {e}"));
                        ok = false;
                    }
                }
            } else {
                ok = false;
            }
        }
        if let Some(p) = &inventory_file {
            ok &= check_path(d, "inventory_file", p, Kind::File);
        }
        if let Some(p) = &galaxy_file {
            ok &= check_path(d, "galaxy_file", p, Kind::File);
        }
        for (key, v) in [
            ("playbook_dir", &playbook_dir),
            ("group_vars", &group_vars),
            ("host_vars", &host_vars),
        ] {
            if let Some(p) = v {
                ok &= check_path(d, key, p, Kind::Dir);
            }
        }
        for p in &playbook_paths {
            ok &= check_path(d, "playbook_paths", p, Kind::Dir);
        }
        for p in &role_paths {
            ok &= check_path(d, "role_paths", p, Kind::Dir);
        }
        ok.then_some(Config {
            command,
            extra_arguments,
            group_vars,
            host_vars,
            playbook_dir,
            playbook_file,
            playbook_files,
            playbook_paths,
            role_paths,
            staging_dir,
            clean_staging_dir,
            inventory_file,
            inventory_groups,
            galaxy_file,
            galaxy_command,
        })
    }
}

pub struct AnsibleLocal {
    pub config: Config,
}

pub fn factory(d: &mut Decoder<'_>, _: &PrepareOpts) -> Option<Box<dyn Provisioner>> {
    Config::decode(d).map(|config| Box::new(AnsibleLocal { config }) as Box<dyn Provisioner>)
}

/// `mkdir -p`, its output shown.
async fn create_dir(ctx: &BuildCtx, comm: &dyn Communicator, dir: &str) -> Result<(), BuildError> {
    ctx.ui.message(&format!("Creating directory: {dir}"));
    match run(ctx, comm, &format!("mkdir -p {}", sh_quote(dir))).await? {
        0 => Ok(()),
        _ => Err(BuildError::msg(
            "Non-zero exit status. See output above for more information.",
        )),
    }
}

async fn remove_dir(ctx: &BuildCtx, comm: &dyn Communicator, dir: &str) -> Result<(), BuildError> {
    ctx.ui.message(&format!("Removing directory: {dir}"));
    match run(ctx, comm, &format!("rm -rf {}", sh_quote(dir))).await? {
        0 => Ok(()),
        _ => Err(BuildError::msg(
            "Non-zero exit status. See output above for more information.",
        )),
    }
}

/// Create `dst` and upload the contents of `src` into it.
async fn upload_dir(
    ctx: &BuildCtx,
    comm: &dyn Communicator,
    dst: &str,
    src: &str,
) -> Result<(), BuildError> {
    create_dir(ctx, comm, dst).await?;
    upload_dir_contents(ctx, comm, dst, Path::new(src), &[]).await
}

impl AnsibleLocal {
    /// Each of `playbook_files` under the staging directory, at its
    /// absolute local path, or relative to `playbook_dir` when inside it
    /// (then it was uploaded with the directory). Returns the remote paths.
    async fn upload_playbook_files(
        &self,
        ctx: &BuildCtx,
        comm: &dyn Communicator,
    ) -> Result<Vec<String>, BuildError> {
        let c = &self.config;
        let dir = match &c.playbook_dir {
            Some(d) => Some(
                std::path::absolute(d)
                    .map_err(|e| BuildError::msg(format!("{d}: {e}")))?
                    .display()
                    .to_string(),
            ),
            None => None,
        };
        let mut remote = Vec::new();
        for f in &c.playbook_files {
            if let Some(rel) = dir.as_deref().and_then(|d| f.strip_prefix(d)) {
                remote.push(go_join(&[&c.staging_dir, rel]));
                continue;
            }
            ctx.ui.message(&format!("Uploading playbook file: {f}"));
            let remote_dir = go_join(&[&c.staging_dir, &crate::common::go_dir(f)]);
            let remote_file = go_join(&[&c.staging_dir, f]);
            create_dir(ctx, comm, &remote_dir)
                .await
                .map_err(|e| e.context(format!("Error uploading playbook file: {f}")))?;
            upload_file(ctx, comm, &remote_file, Path::new(f))
                .await
                .map_err(|e| e.context(format!("Error uploading playbook: {f}")))?;
            remote.push(remote_file);
        }
        Ok(remote)
    }

    async fn run_remote(
        &self,
        ctx: &BuildCtx,
        comm: &dyn Communicator,
        command: &str,
    ) -> Result<(), BuildError> {
        match run(ctx, comm, command).await? {
            0 => Ok(()),
            127 => Err(BuildError::msg(format!(
                "{} could not be found. Verify that it is available on the\nPATH after connecting to the machine.",
                self.config.command
            ))),
            n => Err(BuildError::msg(format!("Non-zero exit status: {n}"))),
        }
    }
}

#[async_trait]
impl Provisioner for AnsibleLocal {
    async fn provision(
        &self,
        pctx: &ProvisionCtx<'_>,
        comm: Option<&Arc<dyn Communicator>>,
    ) -> Result<(), BuildError> {
        let ctx = pctx.build;
        let comm = need_comm(comm, "ansible-local")?;
        let c = &self.config;
        let ui = &*ctx.ui;
        ui.say("Provisioning with Ansible...");

        if let Some(dir) = &c.playbook_dir {
            ui.message("Uploading Playbook directory to Ansible staging directory...");
            upload_dir(ctx, comm, &c.staging_dir, dir)
                .await
                .map_err(|e| e.context("Error uploading playbook_dir directory"))?;
        } else {
            ui.message("Creating Ansible staging directory...");
            create_dir(ctx, comm, &c.staging_dir)
                .await
                .map_err(|e| e.context("Error creating staging directory"))?;
        }

        let mut playbooks = Vec::new();
        if let Some(pf) = &c.playbook_file {
            ui.message("Uploading main Playbook file...");
            let dst = go_join(&[&c.staging_dir, &go_base(pf)]);
            upload_file(ctx, comm, &dst, Path::new(pf))
                .await
                .map_err(|e| e.context("Error uploading main playbook"))?;
            playbooks.push(dst);
        } else {
            playbooks = self.upload_playbook_files(ctx, comm).await?;
        }

        // The inventory: the user's, or a temporary one naming 127.0.0.1
        // (in each of `inventory_groups`). Removed locally when done.
        let mut _tmp_inventory = None;
        let inventory_local: PathBuf = match &c.inventory_file {
            Some(f) => PathBuf::from(f),
            None => {
                let content = if c.inventory_groups.is_empty() {
                    "127.0.0.1".to_string()
                } else {
                    c.inventory_groups
                        .iter()
                        .map(|g| format!("[{g}]\n127.0.0.1\n"))
                        .collect()
                };
                let _ = std::fs::create_dir_all(&ctx.work_dir);
                let tmp = tempfile::Builder::new()
                    .prefix("packer-provisioner-ansible-local")
                    .tempfile_in(&ctx.work_dir)
                    .and_then(|mut f| {
                        use std::io::Write;
                        f.write_all(content.as_bytes())?;
                        Ok(f.into_temp_path())
                    })
                    .map_err(|e| BuildError::msg(format!("Error preparing inventory file: {e}")))?;
                let p = tmp.to_path_buf();
                _tmp_inventory = Some(tmp);
                p
            }
        };

        if let Some(g) = &c.galaxy_file {
            ui.message("Uploading galaxy file...");
            let dst = go_join(&[&c.staging_dir, &go_base(g)]);
            upload_file(ctx, comm, &dst, Path::new(g))
                .await
                .map_err(|e| e.context("Error uploading galaxy file"))?;
        }

        ui.message("Uploading inventory file...");
        let inventory = go_join(&[
            &c.staging_dir,
            &go_base(&inventory_local.display().to_string()),
        ]);
        upload_file(ctx, comm, &inventory, &inventory_local)
            .await
            .map_err(|e| e.context("Error uploading inventory file"))?;

        if let Some(g) = &c.group_vars {
            ui.message("Uploading group_vars directory...");
            upload_dir(ctx, comm, &go_join(&[&c.staging_dir, "group_vars"]), g)
                .await
                .map_err(|e| e.context("Error uploading group_vars directory"))?;
        }
        if let Some(h) = &c.host_vars {
            ui.message("Uploading host_vars directory...");
            upload_dir(ctx, comm, &go_join(&[&c.staging_dir, "host_vars"]), h)
                .await
                .map_err(|e| e.context("Error uploading host_vars directory"))?;
        }
        if !c.role_paths.is_empty() {
            ui.message("Uploading role directories...");
            for src in &c.role_paths {
                let dst = go_join(&[&c.staging_dir, "roles", &go_base(src)]);
                upload_dir(ctx, comm, &dst, src)
                    .await
                    .map_err(|e| e.context("Error uploading roles"))?;
            }
        }
        if !c.playbook_paths.is_empty() {
            ui.message("Uploading additional Playbooks...");
            let dir = go_join(&[&c.staging_dir, "playbooks"]);
            create_dir(ctx, comm, &dir)
                .await
                .map_err(|e| e.context("Error creating playbooks directory"))?;
            for src in &c.playbook_paths {
                let dst = go_join(&[&dir, &go_base(src)]);
                upload_dir(ctx, comm, &dst, src)
                    .await
                    .map_err(|e| e.context("Error uploading playbooks"))?;
            }
        }

        self.execute(ctx, comm, &playbooks, &inventory)
            .await
            .map_err(|e| e.context("Error executing Ansible"))?;

        if c.clean_staging_dir {
            ui.message("Removing staging directory...");
            remove_dir(ctx, comm, &c.staging_dir)
                .await
                .map_err(|e| e.context("Error removing staging directory"))?;
        }
        Ok(())
    }
}

impl AnsibleLocal {
    async fn execute(
        &self,
        ctx: &BuildCtx,
        comm: &dyn Communicator,
        playbooks: &[String],
        inventory: &str,
    ) -> Result<(), BuildError> {
        let c = &self.config;
        let mut extra = format!(
            " --extra-vars \"packer_build_name={} packer_builder_type={} packer_http_addr={}\" ",
            ctx.build_name,
            ctx.build_type,
            http_addr(ctx)
        );
        extra.push_str(&c.extra_arguments.join(" "));
        if let Some(g) = &c.galaxy_file {
            let roles = go_join(&[&c.staging_dir, "roles"]);
            let file = go_join(&[&c.staging_dir, &go_base(g)]);
            let command = format!(
                "cd {} && {} install -r {} -p {}",
                sh_quote(&c.staging_dir),
                c.galaxy_command,
                sh_quote(&file),
                sh_quote(&roles)
            );
            ctx.ui
                .message(&format!("Executing Ansible Galaxy: {command}"));
            match run(ctx, comm, &command).await? {
                0 => {}
                n => {
                    return Err(BuildError::msg(format!(
                        "Error executing Ansible Galaxy: Non-zero exit status: {n}"
                    )))
                }
            }
        }
        for pb in playbooks {
            let command = format!(
                "cd {} && {} {}{} -c local -i {}",
                sh_quote(&c.staging_dir),
                c.command,
                sh_quote(pb),
                extra,
                sh_quote(inventory)
            );
            ctx.ui.message(&format!("Executing Ansible: {command}"));
            self.run_remote(ctx, comm, &command).await?;
        }
        Ok(())
    }
}
