//! Packer 1.6.6's `salt-masterless` provisioner: upload a Salt state tree
//! (and pillars, a minion configuration, grains) to the machine and run
//! `salt-call --local` there.
//!
//! Keys: `local_state_tree` (required), `local_pillar_roots`,
//! `remote_state_tree` (default `/srv/salt`), `remote_pillar_roots`
//! (default `/srv/pillar`), `minion_config` (then the two `remote_*` keys
//! may not be used: the minion configuration says where the trees are),
//! `grains_file`, `skip_bootstrap`, `bootstrap_args`, `salt_call_args`,
//! `log_level` (default `info`), `temp_config_dir` (default `/tmp/salt`),
//! `no_exit_on_failure`, `custom_state` (`state.sls <it>` instead of
//! `state.highstate`), `disable_sudo`, `salt_bin_dir`, `formulas`,
//! `guest_os_type` (`unix` only: kiln refuses Windows guests at validate
//! time). Local paths are checked at validate time, as Packer does.
//!
//! The command is Packer's: `sudo <salt_bin_dir>/salt-call --local
//! state.highstate --file-root=<remote_state_tree>
//! --pillar-root=<remote_pillar_roots> --retcode-passthrough -l info
//! <salt_call_args>`, its output streamed; a non-zero exit fails the build
//! (`Bad exit status: N`) unless `no_exit_on_failure`.
//!
//! # The bootstrap needs the internet
//!
//! Unless `skip_bootstrap` is true, Salt is installed on the machine as
//! Packer does it: the machine downloads `https://bootstrap.saltstack.com`
//! with `curl` (or `wget`) to `/tmp/install_salt.sh` and runs it with
//! `sudo sh /tmp/install_salt.sh <bootstrap_args>`. That needs a machine
//! with internet access (and the script's own downloads). Packer ignores a
//! failed download and goes on to a confusing `salt-call: not found`;
//! kiln stops at the failed download and says that the machine may have
//! no internet access and that Salt can be installed beforehand with
//! `skip_bootstrap: true`.
//!
//! # `formulas`
//!
//! Each formula is a git URL with a `//subdirectory` (go-getter's form,
//! `[git::]URL.git//dir[?ref=REF]`): kiln clones it on this machine with
//! `git clone --depth 1 [--branch REF]` and copies `dir` into
//! `local_state_tree/dir` before the tree is uploaded (a formula already
//! there is used as it is), and removes what it downloaded afterwards.
//!
//! # Where kiln differs from Packer 1.6.6
//!
//! - **Uploads go through a private temporary directory.** Packer uploads
//!   the trees and files into the login user's home directory under fixed
//!   names (`states`, `pillar`, `minion`, `grains`) and moves them from
//!   there, so a leftover `~/states` makes the next upload land inside it;
//!   kiln uploads into a fresh `mktemp -d` directory and moves from there.
//! - **An existing `remote_state_tree` is replaced.** Packer 1.6.6 means
//!   to clear the destination before moving the tree in, but its test is
//!   inverted (it removes the destination only when `stat` fails), so on a
//!   machine that already has `/srv/salt` the new tree lands in
//!   `/srv/salt/states` and `salt-call` runs the old one. kiln removes an
//!   existing destination, then moves the tree in (the same for the
//!   pillar roots). A missing parent of the destination is created
//!   (Packer's `mv` fails).
//! - **A failed bootstrap download stops the build** (see above), and so
//!   does a failed bootstrap run (Packer goes on).
//! - **`formulas`** use `git` on this machine rather than go-getter; a
//!   formula found already in the state tree is kept afterwards (Packer
//!   deletes it).
use crate::common::{
    go_join, need_comm, os_error, run, run_quiet, sh_quote, upload_dir_contents, upload_file,
};
use kiln_core::{
    async_trait, BuildCtx, BuildError, Communicator, PrepareOpts, ProvisionCtx, Provisioner,
};
use kiln_template::Decoder;
use std::path::Path;
use std::sync::Arc;

/// Where Packer's unix guests get the bootstrap script from.
pub const BOOTSTRAP_URL: &str = "https://bootstrap.saltstack.com";
const CONFIG_DIR: &str = "/etc/salt";
const STATE_ROOT: &str = "/srv/salt";
const PILLAR_ROOT: &str = "/srv/pillar";
const TEMP_DIR: &str = "/tmp/salt";

#[derive(Debug, Clone)]
pub struct Config {
    pub skip_bootstrap: bool,
    pub bootstrap_args: String,
    pub disable_sudo: bool,
    pub custom_state: String,
    pub minion_config: Option<String>,
    pub grains_file: Option<String>,
    pub local_state_tree: String,
    pub local_pillar_roots: Option<String>,
    pub remote_state_tree: Option<String>,
    pub remote_pillar_roots: Option<String>,
    pub temp_config_dir: String,
    pub no_exit_on_failure: bool,
    pub log_level: String,
    pub salt_call_args: String,
    pub salt_bin_dir: String,
    pub formulas: Vec<String>,
    /// The arguments after `salt-call --local`.
    pub cmd_args: String,
}

fn non_empty(s: Option<String>) -> Option<String> {
    s.filter(|s| !s.is_empty())
}

/// Packer's `salt-masterless` path checks: `name: path 'p' is invalid: ...`.
fn check(d: &mut Decoder<'_>, key: &str, path: &str, dir: bool) -> bool {
    let problem = match std::fs::metadata(path) {
        Err(e) => format!("is invalid: stat {path}: {}", os_error(&e)),
        Ok(m) if dir && !m.is_dir() => "must point to a directory".into(),
        Ok(m) if !dir && m.is_dir() => "must point to a file".into(),
        Ok(_) => return true,
    };
    d.error(key, format!("{key}: path '{path}' {problem}"));
    false
}

/// A formula URL as Packer accepts it: `<anything>.git//<dir>[?query]`.
pub fn valid_formula_url(u: &str) -> bool {
    let Some(i) = u.rfind(".git//") else {
        return false;
    };
    let rest = &u[i + 6..];
    let dir = rest.split('?').next().unwrap_or("");
    !dir.is_empty()
        && dir
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// A formula URL's parts: (repository, subdirectory, ref).
pub fn formula_parts(u: &str) -> (String, String, Option<String>) {
    let u = u.strip_prefix("git::").unwrap_or(u);
    let i = u.rfind(".git//").unwrap_or(u.len());
    let repo = u[..(i + 4).min(u.len())].to_string();
    let rest = u.get(i + 6..).unwrap_or("");
    let (dir, query) = rest.split_once('?').unwrap_or((rest, ""));
    let reference = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("ref="))
        .map(str::to_string);
    (repo, dir.to_string(), reference)
}

impl Config {
    pub fn decode(d: &mut Decoder<'_>) -> Option<Config> {
        let skip_bootstrap = d.bool("skip_bootstrap").unwrap_or(false);
        let bootstrap_args = d.string("bootstrap_args").unwrap_or_default();
        let disable_sudo = d.bool("disable_sudo").unwrap_or(false);
        let custom_state = d.string("custom_state").unwrap_or_default();
        let minion_config = non_empty(d.string("minion_config"));
        let grains_file = non_empty(d.string("grains_file"));
        let local_state_tree = d.string("local_state_tree").unwrap_or_default();
        let local_pillar_roots = non_empty(d.string("local_pillar_roots"));
        let remote_state_tree = non_empty(d.string("remote_state_tree"));
        let remote_pillar_roots = non_empty(d.string("remote_pillar_roots"));
        let temp_config_dir =
            non_empty(d.string("temp_config_dir")).unwrap_or_else(|| TEMP_DIR.into());
        let no_exit_on_failure = d.bool("no_exit_on_failure").unwrap_or(false);
        let log_level = d.string("log_level").unwrap_or_default();
        let salt_call_args = d.string("salt_call_args").unwrap_or_default();
        let salt_bin_dir = d.string("salt_bin_dir").unwrap_or_default();
        let guest_os_type = d.string("guest_os_type").unwrap_or_default();
        let formulas = d.string_list("formulas").unwrap_or_default();

        let mut ok = crate::common::check_guest_os(d, &guest_os_type);
        if local_state_tree.is_empty() {
            d.error_here("local_state_tree cannot be empty");
            ok = false;
        } else {
            ok &= check(d, "local_state_tree", &local_state_tree, true);
        }
        if !formulas.iter().all(|f| valid_formula_url(f)) {
            d.error(
                "formulas",
                "Invalid formula URL. Please verify the git URLs also contain a '//' subdir",
            );
            ok = false;
        }
        if let Some(p) = &local_pillar_roots {
            ok &= check(d, "local_pillar_roots", p, true);
        }
        if let Some(p) = &minion_config {
            ok &= check(d, "minion_config", p, false);
        }
        if minion_config.is_some() && (remote_state_tree.is_some() || remote_pillar_roots.is_some())
        {
            d.error_here(
                "remote_state_tree and remote_pillar_roots only apply when minion_config is not used",
            );
            ok = false;
        }
        if let Some(p) = &grains_file {
            ok &= check(d, "grains_file", p, false);
        }

        let mut a = String::new();
        if custom_state.is_empty() {
            a.push_str(" state.highstate");
        } else {
            a.push_str(" state.sls ");
            a.push_str(&custom_state);
        }
        if minion_config.is_none() {
            a.push_str(" --file-root=");
            a.push_str(remote_state_tree.as_deref().unwrap_or(STATE_ROOT));
            a.push_str(" --pillar-root=");
            a.push_str(remote_pillar_roots.as_deref().unwrap_or(PILLAR_ROOT));
        }
        if !no_exit_on_failure {
            a.push_str(" --retcode-passthrough");
        }
        a.push_str(" -l ");
        a.push_str(if log_level.is_empty() {
            "info"
        } else {
            &log_level
        });
        if !salt_call_args.is_empty() {
            a.push(' ');
            a.push_str(&salt_call_args);
        }
        ok.then_some(Config {
            skip_bootstrap,
            bootstrap_args,
            disable_sudo,
            custom_state,
            minion_config,
            grains_file,
            local_state_tree,
            local_pillar_roots,
            remote_state_tree,
            remote_pillar_roots,
            temp_config_dir,
            no_exit_on_failure,
            log_level,
            salt_call_args,
            salt_bin_dir,
            formulas,
            cmd_args: a,
        })
    }
}

pub struct SaltMasterless {
    pub config: Config,
}

pub fn factory(d: &mut Decoder<'_>, _: &PrepareOpts) -> Option<Box<dyn Provisioner>> {
    Config::decode(d).map(|config| Box::new(SaltMasterless { config }) as Box<dyn Provisioner>)
}

/// Removes the formulas kiln downloaded, whatever happens.
struct Downloaded(Vec<std::path::PathBuf>);
impl Drop for Downloaded {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_dir_all(p);
        }
    }
}

impl SaltMasterless {
    fn sudo(&self, cmd: &str) -> String {
        if self.config.disable_sudo {
            cmd.to_string()
        } else {
            format!("sudo {cmd}")
        }
    }

    async fn must(
        &self,
        ctx: &BuildCtx,
        comm: &dyn Communicator,
        cmd: &str,
    ) -> Result<(), BuildError> {
        match run(ctx, comm, cmd).await? {
            0 => Ok(()),
            n => Err(BuildError::msg(format!("Bad exit status: {n}"))),
        }
    }

    async fn create_dir(
        &self,
        ctx: &BuildCtx,
        comm: &dyn Communicator,
        dir: &str,
    ) -> Result<(), BuildError> {
        ctx.ui.message(&format!("Creating directory: {dir}"));
        self.must(
            ctx,
            comm,
            &self.sudo(&format!("mkdir -p {}", sh_quote(dir))),
        )
        .await
    }

    async fn move_path(
        &self,
        ctx: &BuildCtx,
        comm: &dyn Communicator,
        src: &str,
        dst: &str,
    ) -> Result<(), BuildError> {
        ctx.ui.message(&format!("Moving {src} to {dst}"));
        self.must(
            ctx,
            comm,
            &self.sudo(&format!("mv {} {}", sh_quote(src), sh_quote(dst))),
        )
        .await
        .map_err(|e| e.context(format!("Unable to move {src} to {dst}")))
    }

    /// Remove `dst` if it exists, then move `src` there.
    async fn replace_with(
        &self,
        ctx: &BuildCtx,
        comm: &dyn Communicator,
        src: &str,
        dst: &str,
    ) -> Result<(), BuildError> {
        let (exists, _) =
            run_quiet(ctx, comm, &self.sudo(&format!("test -e {}", sh_quote(dst)))).await?;
        if exists == 0 {
            ctx.ui.message(&format!("Removing directory: {dst}"));
            self.must(ctx, comm, &self.sudo(&format!("rm -rf {}", sh_quote(dst))))
                .await?;
        } else {
            // Its parent may be missing too (`/srv` on a minimal system).
            let parent = crate::common::go_dir(dst);
            self.must(
                ctx,
                comm,
                &self.sudo(&format!("mkdir -p {}", sh_quote(&parent))),
            )
            .await?;
        }
        self.move_path(ctx, comm, src, dst).await
    }

    fn download_formulas(&self, ctx: &BuildCtx) -> Result<Downloaded, BuildError> {
        let c = &self.config;
        let mut downloaded = Downloaded(Vec::new());
        if c.formulas.is_empty() {
            return Ok(downloaded);
        }
        ctx.ui.say("Downloading Salt formulas...");
        for f in &c.formulas {
            let (repo, dir, reference) = formula_parts(f);
            let path = Path::new(&c.local_state_tree).join(&dir);
            if path.exists() {
                ctx.ui
                    .message(&format!("Found existing formula at: {}", path.display()));
                continue;
            }
            ctx.ui.message(&format!("{f} => {}", path.display()));
            let tmp = tempfile::Builder::new()
                .prefix("kiln-formula")
                .tempdir_in(&ctx.work_dir)
                .or_else(|_| tempfile::tempdir())
                .map_err(|e| BuildError::msg(format!("Unable to create a directory: {e}")))?;
            let mut git = std::process::Command::new("git");
            git.args(["clone", "--quiet", "--depth", "1"]);
            if let Some(r) = &reference {
                git.args(["--branch", r]);
            }
            let clone = tmp.path().join("repo");
            let out = git
                .arg(&repo)
                .arg(&clone)
                .stdin(std::process::Stdio::null())
                .output()
                .map_err(|e| {
                    BuildError::msg(format!(
                        "Unable to download Salt formula from {f}: running git: {e}"
                    ))
                })?;
            if !out.status.success() {
                return Err(BuildError::msg(format!(
                    "Unable to download Salt formula from {f}: git clone {repo}: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                )));
            }
            let sub = clone.join(&dir);
            if !sub.is_dir() {
                return Err(BuildError::msg(format!(
                    "Unable to download Salt formula from {f}: {repo} has no directory {dir}"
                )));
            }
            let cp = std::process::Command::new("cp")
                .arg("-a")
                .arg(&sub)
                .arg(&path)
                .output()
                .map_err(|e| BuildError::msg(format!("Unable to copy the Salt formula: {e}")))?;
            if !cp.status.success() {
                return Err(BuildError::msg(format!(
                    "Unable to create Salt state directory: {}",
                    String::from_utf8_lossy(&cp.stderr).trim()
                )));
            }
            downloaded.0.push(path);
        }
        Ok(downloaded)
    }
}

#[async_trait]
impl Provisioner for SaltMasterless {
    async fn provision(
        &self,
        pctx: &ProvisionCtx<'_>,
        comm: Option<&Arc<dyn Communicator>>,
    ) -> Result<(), BuildError> {
        let ctx = pctx.build;
        let comm = need_comm(comm, "salt-masterless")?;
        let c = &self.config;
        let ui = &*ctx.ui;
        let _formulas = self.download_formulas(ctx)?;

        ui.say("Provisioning with Salt...");
        if !c.skip_bootstrap {
            ui.message("Downloading saltstack bootstrap to /tmp/install_salt.sh");
            let fetch = format!(
                "curl -L {BOOTSTRAP_URL} -o /tmp/install_salt.sh || wget -O /tmp/install_salt.sh {BOOTSTRAP_URL}"
            );
            let n = run(ctx, comm, &fetch).await?;
            if n != 0 {
                return Err(BuildError::msg(format!(
                    "Unable to download Salt: fetching the bootstrap script from {BOOTSTRAP_URL} failed on the machine \
                     (curl and wget, exit status {n}). The bootstrap needs a machine with access to the internet: \
                     without it, install Salt beforehand (for example with a shell provisioner) and set \"skip_bootstrap\": true"
                )));
            }
            let install = format!(
                "{} {}",
                self.sudo("sh /tmp/install_salt.sh"),
                c.bootstrap_args
            );
            ui.message(&format!("Installing Salt with command {install}"));
            let n = run(ctx, comm, &install).await?;
            if n != 0 {
                return Err(BuildError::msg(format!(
                    "Unable to install Salt: the bootstrap script exited with status {n} (see its output above)"
                )));
            }
        }

        ui.message(&format!(
            "Creating remote temporary directory: {}",
            c.temp_config_dir
        ));
        self.create_dir(ctx, comm, &c.temp_config_dir)
            .await
            .map_err(|e| e.context("Error creating remote temporary directory"))?;

        // A private directory of the login user to upload into (the
        // destinations belong to root).
        let (code, out) = run_quiet(ctx, comm, "mktemp -d").await?;
        let upload_dir = out.lines().next().unwrap_or("").trim().to_string();
        if code != 0 || upload_dir.is_empty() {
            return Err(BuildError::msg(format!(
                "Error creating a temporary directory on the machine: {out}"
            )));
        }
        let result = self.send_and_run(ctx, comm, &upload_dir).await;
        let _ = run_quiet(ctx, comm, &format!("rm -rf {}", sh_quote(&upload_dir))).await;
        result
    }
}

impl SaltMasterless {
    async fn send_and_run(
        &self,
        ctx: &BuildCtx,
        comm: &dyn Communicator,
        up: &str,
    ) -> Result<(), BuildError> {
        let c = &self.config;
        let ui = &*ctx.ui;
        for (what, file, name) in [
            ("minion config", &c.minion_config, "minion"),
            ("grains file", &c.grains_file, "grains"),
        ] {
            let Some(src) = file else { continue };
            ui.message(&format!("Uploading {what}: {src}"));
            let staged = go_join(&[up, name]);
            let tmp = go_join(&[&c.temp_config_dir, name]);
            upload_file(ctx, comm, &staged, Path::new(src))
                .await
                .map_err(|e| e.context(format!("Error uploading local {what} to remote")))?;
            self.move_path(ctx, comm, &staged, &tmp)
                .await
                .map_err(|e| e.context(format!("Error uploading local {what} to remote")))?;
            ui.message(&format!("Make sure directory {CONFIG_DIR} exists"));
            self.create_dir(ctx, comm, CONFIG_DIR)
                .await
                .map_err(|e| e.context("Error creating remote salt configuration directory"))?;
            self.move_path(ctx, comm, &tmp, &go_join(&[CONFIG_DIR, name]))
                .await?;
        }

        ui.message(&format!(
            "Uploading local state tree: {}",
            c.local_state_tree
        ));
        self.send_tree(
            ctx,
            comm,
            up,
            "states",
            &c.local_state_tree,
            c.remote_state_tree.as_deref().unwrap_or(STATE_ROOT),
        )
        .await
        .map_err(|e| e.context("Error uploading local state tree to remote"))?;

        if let Some(p) = &c.local_pillar_roots {
            ui.message(&format!("Uploading local pillar roots: {p}"));
            self.send_tree(
                ctx,
                comm,
                up,
                "pillar",
                p,
                c.remote_pillar_roots.as_deref().unwrap_or(PILLAR_ROOT),
            )
            .await
            .map_err(|e| e.context("Error uploading local pillar roots to remote"))?;
        }

        let salt_call = go_join(&[&c.salt_bin_dir, "salt-call"]);
        ui.message(&format!("Running: salt-call --local {}", c.cmd_args));
        let n = run(
            ctx,
            comm,
            &self.sudo(&format!("{salt_call} --local {}", c.cmd_args)),
        )
        .await?;
        if n != 0 && !c.no_exit_on_failure {
            return Err(BuildError::msg(format!(
                "Error executing salt-call: Bad exit status: {n}"
            )));
        }
        Ok(())
    }

    /// Upload a tree into `up/name`, move it to `temp_config_dir/name`,
    /// then to `dst` (replacing what is there).
    async fn send_tree(
        &self,
        ctx: &BuildCtx,
        comm: &dyn Communicator,
        up: &str,
        name: &str,
        src: &str,
        dst: &str,
    ) -> Result<(), BuildError> {
        let c = &self.config;
        let staged = go_join(&[up, name]);
        let (code, out) = run_quiet(ctx, comm, &format!("mkdir -p {}", sh_quote(&staged))).await?;
        if code != 0 {
            return Err(BuildError::msg(format!("creating {staged}: {out}")));
        }
        upload_dir_contents(ctx, comm, &staged, Path::new(src), &[".git".to_string()]).await?;
        let tmp = go_join(&[&c.temp_config_dir, name]);
        self.replace_with(ctx, comm, &staged, &tmp).await?;
        self.replace_with(ctx, comm, &tmp, dst).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formula_urls() {
        assert!(valid_formula_url(
            "https://github.com/saltstack-formulas/git-formula.git//git"
        ));
        assert!(valid_formula_url("git::file:///r/f.git//dir?ref=v1"));
        assert!(!valid_formula_url("https://example.invalid/f.git"));
        assert!(!valid_formula_url("https://example.invalid/f.git//a/b"));
        assert_eq!(
            formula_parts("git::file:///r/f.git//dir?ref=v1"),
            (
                "file:///r/f.git".to_string(),
                "dir".to_string(),
                Some("v1".to_string())
            )
        );
    }
}
