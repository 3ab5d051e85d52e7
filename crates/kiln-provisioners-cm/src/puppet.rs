//! Packer 1.6.6's `puppet-masterless` provisioner: upload a manifest (file
//! or directory), modules and a Hiera configuration into
//! `staging_directory` on the machine and run `puppet apply` there.
//!
//! Keys: `manifest_file` (required; a file or a directory), `manifest_dir`,
//! `module_paths`, `hiera_config_path`, `facter` (an object: each pair
//! becomes `FACTER_<key>='<value>'` in the command's environment, with
//! `packer_build_name` and `packer_builder_type` added as Packer does),
//! `extra_arguments`, `execute_command`, `staging_directory` (default
//! `/tmp/packer-puppet-masterless`), `working_directory` (default: the
//! staging directory), `clean_staging_directory`, `ignore_exit_codes`,
//! `prevent_sudo`, `puppet_bin_dir`, `guest_os_type` (`unix` only: kiln
//! refuses Windows guests, and with them `elevated_user` and
//! `elevated_password`, at validate time). Local paths are checked at
//! validate time.
//!
//! `execute_command` is rendered at run time with Packer's values:
//! `.WorkingDir`, `.FacterVars`, `.Sudo`, `.PuppetBinDir`, `.Debug`,
//! `.ModulePath` (the uploaded module directories joined with `:`),
//! `.ModulePathJoiner`, `.HieraConfigPath`, `.ManifestDir`,
//! `.ManifestFile` and `.ExtraArguments` (the `extra_arguments`, each
//! rendered with the same values, joined with spaces), plus the builder's
//! generated data. The default is Packer's:
//!
//! ```text
//! cd {{.WorkingDir}} && {{if ne .FacterVars ""}}{{.FacterVars}} {{end}}{{if .Sudo}}sudo -E {{end}}
//! {{if ne .PuppetBinDir ""}}{{.PuppetBinDir}}/{{end}}puppet apply --detailed-exitcodes {{if .Debug}}--debug {{end}}
//! {{if ne .ModulePath ""}}--modulepath='{{.ModulePath}}' {{end}}{{if ne .HieraConfigPath ""}}--hiera_config='{{.HieraConfigPath}}' {{end}}
//! {{if ne .ManifestDir ""}}--manifestdir='{{.ManifestDir}}' {{end}}{{if ne .ExtraArguments ""}}{{.ExtraArguments}} {{end}}{{.ManifestFile}}
//! ```
//!
//! (one line). `puppet apply --detailed-exitcodes` exits 2 when it changed
//! something: 0 and 2 are success, anything else fails the build (`Puppet
//! exited with a non-zero exit status: N`) unless `ignore_exit_codes`.
//!
//! Differences from Packer 1.6.6: `facter` variables are in name order
//! (Packer: Go's random map order); `.Sudo` and `.Debug` are `true` or
//! empty (Packer: `true`/`false`; the same in `{{if}}`); `.Debug` is never
//! set (kiln has no `-debug` mode). `manifest_dir` makes the default
//! command pass `--manifestdir`, which Puppet 4 and later refuse, as with
//! Packer.
use crate::common::{
    check_guest_os, go_base, need_comm, os_error, render, run, sh_quote, upload_dir_contents,
    upload_file,
};
use kiln_core::{
    async_trait, BuildCtx, BuildError, Communicator, PrepareOpts, ProvisionCtx, Provisioner,
};
use kiln_template::Decoder;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

/// Packer's default `execute_command` for unix guests.
pub const DEFAULT_EXECUTE_COMMAND: &str = concat!(
    "cd {{.WorkingDir}} && ",
    "{{if ne .FacterVars \"\"}}{{.FacterVars}} {{end}}",
    "{{if .Sudo}}sudo -E {{end}}",
    "{{if ne .PuppetBinDir \"\"}}{{.PuppetBinDir}}/{{end}}",
    "puppet apply --detailed-exitcodes ",
    "{{if .Debug}}--debug {{end}}",
    "{{if ne .ModulePath \"\"}}--modulepath='{{.ModulePath}}' {{end}}",
    "{{if ne .HieraConfigPath \"\"}}--hiera_config='{{.HieraConfigPath}}' {{end}}",
    "{{if ne .ManifestDir \"\"}}--manifestdir='{{.ManifestDir}}' {{end}}",
    "{{if ne .ExtraArguments \"\"}}{{.ExtraArguments}} {{end}}",
    "{{.ManifestFile}}"
);
pub const DEFAULT_STAGING_DIR: &str = "/tmp/packer-puppet-masterless";

#[derive(Debug, Clone)]
pub struct Config {
    pub clean_staging_dir: bool,
    /// Uninterpolated.
    pub execute_command: String,
    /// Uninterpolated.
    pub extra_arguments: Vec<String>,
    pub facter: BTreeMap<String, String>,
    pub hiera_config_path: Option<String>,
    pub ignore_exit_codes: bool,
    pub module_paths: Vec<String>,
    pub manifest_file: String,
    pub manifest_dir: Option<String>,
    pub prevent_sudo: bool,
    pub puppet_bin_dir: String,
    pub staging_dir: String,
    pub working_dir: String,
}

fn non_empty(s: Option<String>) -> Option<String> {
    s.filter(|s| !s.is_empty())
}

impl Config {
    pub fn decode(d: &mut Decoder<'_>) -> Option<Config> {
        d.raw_keys(&["execute_command", "extra_arguments"]);
        let clean_staging_dir = d.bool("clean_staging_directory").unwrap_or(false);
        let guest_os_type = d.string("guest_os_type").unwrap_or_default();
        let execute_command = non_empty(d.raw_string("execute_command"))
            .unwrap_or_else(|| DEFAULT_EXECUTE_COMMAND.into());
        let extra_arguments = d.raw_string_list("extra_arguments").unwrap_or_default();
        let facter = d.string_map("facter").unwrap_or_default();
        let hiera_config_path = non_empty(d.string("hiera_config_path"));
        let ignore_exit_codes = d.bool("ignore_exit_codes").unwrap_or(false);
        let module_paths = d.string_list("module_paths").unwrap_or_default();
        let manifest_file = d.string("manifest_file").unwrap_or_default();
        let manifest_dir = non_empty(d.string("manifest_dir"));
        let prevent_sudo = d.bool("prevent_sudo").unwrap_or(false);
        let puppet_bin_dir = d.string("puppet_bin_dir").unwrap_or_default();
        let staging_dir =
            non_empty(d.string("staging_directory")).unwrap_or_else(|| DEFAULT_STAGING_DIR.into());
        let working_dir =
            non_empty(d.string("working_directory")).unwrap_or_else(|| staging_dir.clone());
        let elevated_user = non_empty(d.string("elevated_user"));
        let elevated_password = non_empty(d.string("elevated_password"));

        let mut ok = check_guest_os(d, &guest_os_type);
        for (key, v) in [
            ("elevated_user", &elevated_user),
            ("elevated_password", &elevated_password),
        ] {
            if v.is_some() {
                d.error(
                    key,
                    format!(
                        "`{key}` runs Puppet as another user on Windows guests: kiln does not support Windows guests yet (remove it)"
                    ),
                );
                ok = false;
            }
        }
        if let Some(p) = &hiera_config_path {
            match std::fs::metadata(p) {
                Err(e) => {
                    d.error(
                        "hiera_config_path",
                        format!("hiera_config_path is invalid: stat {p}: {}", os_error(&e)),
                    );
                    ok = false;
                }
                Ok(m) if m.is_dir() => {
                    d.error(
                        "hiera_config_path",
                        "hiera_config_path must point to a file",
                    );
                    ok = false;
                }
                Ok(_) => {}
            }
        }
        if let Some(p) = &manifest_dir {
            match std::fs::metadata(p) {
                Err(e) => {
                    d.error(
                        "manifest_dir",
                        format!("manifest_dir is invalid: stat {p}: {}", os_error(&e)),
                    );
                    ok = false;
                }
                Ok(m) if !m.is_dir() => {
                    d.error("manifest_dir", "manifest_dir must point to a directory");
                    ok = false;
                }
                Ok(_) => {}
            }
        }
        if manifest_file.is_empty() {
            d.error_here("A manifest_file must be specified.");
            ok = false;
        } else if let Err(e) = std::fs::metadata(&manifest_file) {
            d.error(
                "manifest_file",
                format!(
                    "manifest_file is invalid: stat {manifest_file}: {}",
                    os_error(&e)
                ),
            );
            ok = false;
        }
        for (i, p) in module_paths.iter().enumerate() {
            match std::fs::metadata(p) {
                Err(e) => {
                    d.error(
                        "module_paths",
                        format!("module_path[{i}] is invalid: stat {p}: {}", os_error(&e)),
                    );
                    ok = false;
                }
                Ok(m) if !m.is_dir() => {
                    d.error(
                        "module_paths",
                        format!("module_path[{i}] must point to a directory"),
                    );
                    ok = false;
                }
                Ok(_) => {}
            }
        }
        ok.then_some(Config {
            clean_staging_dir,
            execute_command,
            extra_arguments,
            facter,
            hiera_config_path,
            ignore_exit_codes,
            module_paths,
            manifest_file,
            manifest_dir,
            prevent_sudo,
            puppet_bin_dir,
            staging_dir,
            working_dir,
        })
    }
}

pub struct PuppetMasterless {
    pub config: Config,
}

pub fn factory(d: &mut Decoder<'_>, _: &PrepareOpts) -> Option<Box<dyn Provisioner>> {
    Config::decode(d).map(|config| Box::new(PuppetMasterless { config }) as Box<dyn Provisioner>)
}

impl PuppetMasterless {
    fn sudo(&self, cmd: String) -> String {
        if self.config.prevent_sudo {
            cmd
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
            _ => Err(BuildError::msg(
                "Non-zero exit status. See output above for more info.",
            )),
        }
    }

    /// `mkdir -p` then `chmod 0777`, as Packer (so the login user can
    /// upload into it).
    async fn create_dir(
        &self,
        ctx: &BuildCtx,
        comm: &dyn Communicator,
        dir: &str,
    ) -> Result<(), BuildError> {
        ctx.ui.message(&format!("Creating directory: {dir}"));
        self.must(ctx, comm, &self.sudo(format!("mkdir -p {}", sh_quote(dir))))
            .await?;
        self.must(
            ctx,
            comm,
            &self.sudo(format!("chmod 0777 {}", sh_quote(dir))),
        )
        .await
    }

    async fn upload_directory(
        &self,
        ctx: &BuildCtx,
        comm: &dyn Communicator,
        dst: &str,
        src: &str,
    ) -> Result<(), BuildError> {
        self.create_dir(ctx, comm, dst).await?;
        upload_dir_contents(ctx, comm, dst, Path::new(src), &[]).await
    }

    async fn upload_manifests(
        &self,
        ctx: &BuildCtx,
        comm: &dyn Communicator,
    ) -> Result<String, BuildError> {
        let c = &self.config;
        ctx.ui.message("Uploading manifests...");
        let remote = format!("{}/manifests", c.staging_dir);
        self.create_dir(ctx, comm, &remote)
            .await
            .map_err(|e| e.context("Error creating manifests directory"))?;
        let meta = std::fs::metadata(&c.manifest_file)
            .map_err(|e| BuildError::msg(format!("Error inspecting manifest file: {e}")))?;
        if meta.is_dir() {
            ctx.ui.message(&format!(
                "Uploading manifest directory from: {}",
                c.manifest_file
            ));
            self.upload_directory(ctx, comm, &remote, &c.manifest_file)
                .await
                .map_err(|e| e.context("Error uploading manifest dir"))?;
            return Ok(remote);
        }
        ctx.ui.message(&format!(
            "Uploading manifest file from: {}",
            c.manifest_file
        ));
        let dst = format!("{remote}/{}", go_base(&c.manifest_file));
        upload_file(ctx, comm, &dst, Path::new(&c.manifest_file)).await?;
        Ok(dst)
    }
}

#[async_trait]
impl Provisioner for PuppetMasterless {
    async fn provision(
        &self,
        pctx: &ProvisionCtx<'_>,
        comm: Option<&Arc<dyn Communicator>>,
    ) -> Result<(), BuildError> {
        let ctx = pctx.build;
        let comm = need_comm(comm, "puppet-masterless")?;
        let c = &self.config;
        let ui = &*ctx.ui;
        ui.say("Provisioning with Puppet...");
        ui.message("Creating Puppet staging directory...");
        self.create_dir(ctx, comm, &c.staging_dir)
            .await
            .map_err(|e| e.context("Error creating staging directory"))?;

        let mut hiera = String::new();
        if let Some(h) = &c.hiera_config_path {
            ui.message("Uploading hiera configuration...");
            hiera = format!("{}/hiera.yaml", c.staging_dir);
            upload_file(ctx, comm, &hiera, Path::new(h))
                .await
                .map_err(|e| e.context("Error uploading hiera config"))?;
        }
        let mut manifest_dir = String::new();
        if let Some(m) = &c.manifest_dir {
            ui.message(&format!("Uploading manifest directory from: {m}"));
            manifest_dir = format!("{}/manifests", c.staging_dir);
            self.upload_directory(ctx, comm, &manifest_dir, m)
                .await
                .map_err(|e| e.context("Error uploading manifest dir"))?;
        }
        let mut module_paths = Vec::new();
        for (i, p) in c.module_paths.iter().enumerate() {
            ui.message(&format!("Uploading local modules from: {p}"));
            let target = format!("{}/module-{i}", c.staging_dir);
            self.upload_directory(ctx, comm, &target, p)
                .await
                .map_err(|e| e.context("Error uploading modules"))?;
            module_paths.push(target);
        }
        let manifest_file = self
            .upload_manifests(ctx, comm)
            .await
            .map_err(|e| e.context("Error uploading manifests"))?;

        let mut facter = c.facter.clone();
        facter.insert("packer_build_name".into(), ctx.build_name.clone());
        facter.insert("packer_builder_type".into(), ctx.build_type.clone());
        let facter_vars: Vec<String> = facter
            .iter()
            .map(|(k, v)| format!("FACTER_{k}='{v}'"))
            .collect();
        let facter_vars = facter_vars.join(" ");
        let module_path = module_paths.join(":");
        let sudo = if c.prevent_sudo { "" } else { "true" };
        let mut data: Vec<(&str, &str)> = vec![
            ("WorkingDir", &c.working_dir),
            ("FacterVars", &facter_vars),
            ("Sudo", sudo),
            ("PuppetBinDir", &c.puppet_bin_dir),
            ("Debug", ""),
            ("ModulePath", &module_path),
            ("ModulePathJoiner", ":"),
            ("HieraConfigPath", &hiera),
            ("ManifestDir", &manifest_dir),
            ("ManifestFile", &manifest_file),
            ("ExtraArguments", ""),
        ];
        let extra = render(
            "extra_arguments",
            &c.extra_arguments.join(" "),
            &pctx.interp,
            ctx,
            &data,
        )?;
        data.retain(|(k, _)| *k != "ExtraArguments");
        data.push(("ExtraArguments", &extra));
        let command = render(
            "execute_command",
            &c.execute_command,
            &pctx.interp,
            ctx,
            &data,
        )?;

        ui.message(&format!("Running Puppet: {command}"));
        let n = run(ctx, comm, &command)
            .await
            .map_err(|e| e.context("Got an error starting command"))?;
        if n != 0 && n != 2 && !c.ignore_exit_codes {
            return Err(BuildError::msg(format!(
                "Puppet exited with a non-zero exit status: {n}"
            )));
        }
        if c.clean_staging_dir {
            match run(
                ctx,
                comm,
                &self.sudo(format!("rm -rf {}", sh_quote(&c.staging_dir))),
            )
            .await?
            {
                0 => {}
                _ => {
                    return Err(BuildError::msg(
                        "Error removing staging directory: Non-zero exit status.",
                    ))
                }
            }
        }
        Ok(())
    }
}
