//! Packer 1.6.6's `shell` provisioner: upload scripts to the machine and
//! run them, with reboots (`expect_disconnect`) handled.
use crate::common::{
    check_exit_code, decode_env_vars, flatten_env, render, retry, unix_line_endings,
};
use kiln_core::communicator::{FileMeta, NoProgress};
use kiln_core::{
    async_trait, BuildCtx, BuildError, Communicator, ExitStatus, PrepareOpts, ProvisionCtx,
    Provisioner,
};
use kiln_ssh::{CollectOutput, UiOutput};
use kiln_template::Decoder;
use rand::Rng;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct ShellConfig {
    pub inline: Option<Vec<String>>,
    pub scripts: Vec<PathBuf>,
    pub vars: Vec<String>,
    pub env_var_format: String,
    pub execute_command: String,
    pub inline_shebang: String,
    pub remote_folder: String,
    pub remote_path: String,
    pub skip_clean: bool,
    pub binary: bool,
    pub valid_exit_codes: Vec<i64>,
    pub expect_disconnect: bool,
    pub start_retry_timeout: Duration,
    pub pause_after: Option<Duration>,
    pub use_env_var_file: bool,
}

impl ShellConfig {
    pub fn decode(d: &mut Decoder<'_>) -> Option<ShellConfig> {
        let inline = d.raw_string_list("inline").filter(|l| !l.is_empty());
        let script = d.string("script").filter(|s| !s.is_empty());
        let mut scripts = d.string_list("scripts").unwrap_or_default();
        let vars = decode_env_vars(d);
        let use_env_var_file = d.bool("use_env_var_file").unwrap_or(false);
        let env_var_format = d
            .string("env_var_format")
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| {
                if use_env_var_file {
                    "export %s='%s'\n".into()
                } else {
                    "%s='%s' ".into()
                }
            });
        let execute_command = d
            .raw_string("execute_command")
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| {
                if use_env_var_file {
                    "chmod +x {{.Path}}; . {{.EnvVarFile}} && {{.Path}}".into()
                } else {
                    "chmod +x {{.Path}}; {{.Vars}} {{.Path}}".into()
                }
            });
        let inline_shebang = d
            .string("inline_shebang")
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "/bin/sh -e".into());
        let remote_folder = d
            .string("remote_folder")
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "/tmp".into());
        let remote_file = d
            .string("remote_file")
            .filter(|s| !s.is_empty())
            // Packer draws from 0..9999; on a shared /tmp (the null builder to a
            // real host) a leftover of another user's build with the same name
            // cannot be overwritten, so kiln draws from a wider range.
            .unwrap_or_else(|| format!("script_{}.sh", rand::thread_rng().gen::<u32>()));
        let remote_path = d
            .string("remote_path")
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| format!("{remote_folder}/{remote_file}"));
        let skip_clean = d.bool("skip_clean").unwrap_or(false);
        let binary = d.bool("binary").unwrap_or(false);
        let valid_exit_codes = d.int_list("valid_exit_codes").unwrap_or_default();
        let expect_disconnect = d.bool("expect_disconnect").unwrap_or(false);
        let start_retry_timeout = d
            .duration("start_retry_timeout")
            .filter(|t| !t.is_zero())
            .unwrap_or(Duration::from_secs(300));
        let pause_after = d.duration("pause_after").filter(|t| !t.is_zero());

        let mut ok = true;
        if script.is_some() && !scripts.is_empty() {
            d.error("script", "Only one of script or scripts can be specified.");
            ok = false;
        }
        if let Some(s) = script {
            scripts = vec![s];
        }
        if scripts.is_empty() && inline.is_none() {
            d.error_here("Either a script file or inline script must be specified.");
            ok = false;
        } else if !scripts.is_empty() && inline.is_some() {
            d.error_here("Only a script file or an inline script can be specified, not both.");
            ok = false;
        }
        for s in &scripts {
            if let Err(e) = std::fs::metadata(s) {
                let key = if d.node("script").is_some() {
                    "script"
                } else {
                    "scripts"
                };
                d.error(key, format!("Bad script '{s}': {e}"));
                ok = false;
            }
        }
        ok.then(|| ShellConfig {
            inline,
            scripts: scripts.into_iter().map(PathBuf::from).collect(),
            vars,
            env_var_format,
            execute_command,
            inline_shebang,
            remote_folder,
            remote_path,
            skip_clean,
            binary,
            valid_exit_codes,
            expect_disconnect,
            start_retry_timeout,
            pause_after,
            use_env_var_file,
        })
    }
}

pub struct Shell {
    pub config: ShellConfig,
}

pub fn factory(d: &mut Decoder<'_>, _: &PrepareOpts) -> Option<Box<dyn Provisioner>> {
    ShellConfig::decode(d).map(|config| Box::new(Shell { config }) as Box<dyn Provisioner>)
}

/// Run a small helper command; its output is only shown if it fails.
async fn quiet(comm: &dyn Communicator, cmd: &str) -> Result<ExitStatus, BuildError> {
    let out = CollectOutput::default();
    Ok(comm.start(cmd, &out).await?)
}

impl Shell {
    async fn upload_script(
        &self,
        comm: &dyn Communicator,
        dst: &str,
        data: &[u8],
    ) -> Result<(), BuildError> {
        let mut r = data;
        comm.upload(
            dst,
            &mut r,
            FileMeta {
                mode: 0o644,
                size: Some(data.len() as u64),
            },
            &NoProgress,
        )
        .await
        .map_err(|e| BuildError::msg(format!("Error uploading script: {e}")))
    }

    async fn cleanup_remote(
        &self,
        ctx: &BuildCtx,
        comm: &dyn Communicator,
        path: &str,
    ) -> Result<(), BuildError> {
        let q = kiln_ssh::shell_quote(path);
        retry(ctx, self.config.start_retry_timeout, || async {
            match quiet(comm, &format!("rm -f {q}")).await {
                Ok(ExitStatus::Code(0)) => Ok(()),
                Ok(ExitStatus::Disconnected) => Err(BuildError::msg(
                    "Disconnect while removing temporary script.",
                )),
                Ok(_) => Err(BuildError::msg(format!(
                    "Error removing temporary script at {path}!"
                ))),
                Err(e) => Err(BuildError::msg(format!(
                    "Error removing temporary script at {path}: {e}"
                ))),
            }
        })
        .await
    }

    /// After an expected disconnect: reconnect, and if the machine is still
    /// going down (systemd says `stopping`), wait for it to come back rather
    /// than run the next script on a dying system.
    async fn after_disconnect(
        &self,
        ctx: &BuildCtx,
        comm: &dyn Communicator,
    ) -> Result<(), BuildError> {
        let deadline = std::time::Instant::now() + self.config.start_retry_timeout;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            ctx.cancellable(async {
                comm.reconnect(left.max(Duration::from_secs(1)))
                    .await
                    .map_err(|e| {
                        BuildError::msg(format!(
                            "the machine did not come back within start_retry_timeout ({}): {e}",
                            kiln_core::build::go_duration(self.config.start_retry_timeout)
                        ))
                    })
            })
            .await?;
            let out = CollectOutput::default();
            let st = ctx
                .cancellable(async {
                    Ok(comm
                        .start("systemctl is-system-running 2>/dev/null || true", &out)
                        .await)
                })
                .await?;
            let stopping = out
                .stdout
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .any(|l| l.trim() == "stopping");
            match st {
                Ok(ExitStatus::Code(_)) if !stopping => return Ok(()),
                _ if std::time::Instant::now() >= deadline => {
                    return Err(BuildError::msg(format!(
                        "the machine did not come back within start_retry_timeout ({})",
                        kiln_core::build::go_duration(self.config.start_retry_timeout)
                    )))
                }
                _ => ctx.sleep(Duration::from_secs(1)).await?,
            }
        }
    }
}

#[async_trait]
impl Provisioner for Shell {
    async fn provision(
        &self,
        pctx: &ProvisionCtx<'_>,
        comm: Option<&Arc<dyn Communicator>>,
    ) -> Result<(), BuildError> {
        let ctx = pctx.build;
        let ui = &*ctx.ui;
        let Some(comm) = comm else {
            return Err(BuildError::msg(
                "the shell provisioner needs a communicator, but this build has `communicator: none`",
            ));
        };
        let comm: &dyn Communicator = &**comm;
        let cfg = &self.config;

        // Scripts: the files given, or the inline commands as one script.
        let mut scripts: Vec<(String, Vec<u8>)> = Vec::new();
        for p in &cfg.scripts {
            let data = std::fs::read(p).map_err(|e| {
                BuildError::msg(format!("Error opening shell script: {}: {e}", p.display()))
            })?;
            scripts.push((p.display().to_string(), data));
        }
        if let Some(inline) = &cfg.inline {
            let mut text = format!("#!{}\n", cfg.inline_shebang);
            for c in inline {
                let c = render(c, &pctx.interp, ctx, &[])
                    .map_err(|e| e.context("Error interpolating Inline"))?;
                text.push_str(&c);
                text.push('\n');
            }
            let tmp = tempfile_in(&ctx.work_dir, "packer-shell", text.as_bytes())?;
            scripts.push((tmp, text.into_bytes()));
        }

        let flattened = flatten_env(ctx, &cfg.vars, &cfg.env_var_format);
        let mut env_var_file = String::new();
        if cfg.use_env_var_file {
            let remote = format!(
                "{}/varfile_{}.sh",
                cfg.remote_folder,
                rand::thread_rng().gen::<u32>()
            );
            retry(ctx, cfg.start_retry_timeout, || async {
                let mut r = flattened.as_bytes();
                comm.upload(
                    &remote,
                    &mut r,
                    FileMeta {
                        mode: 0o600,
                        size: Some(flattened.len() as u64),
                    },
                    &NoProgress,
                )
                .await
                .map_err(|e| BuildError::msg(format!("Error uploading envVarFile: {e}")))?;
                quiet(
                    comm,
                    &format!("chmod 0600 {}", kiln_ssh::shell_quote(&remote)),
                )
                .await?;
                Ok(())
            })
            .await?;
            env_var_file = remote;
        }

        for (name, data) in &scripts {
            ui.say(&format!("Provisioning with shell script: {name}"));
            let data = if cfg.binary {
                data.clone()
            } else {
                unix_line_endings(data)
            };
            let command = render(
                &cfg.execute_command,
                &pctx.interp,
                ctx,
                &[
                    ("Vars", &flattened),
                    ("EnvVarFile", &env_var_file),
                    ("Path", &cfg.remote_path),
                ],
            )
            .map_err(|e| e.context("Error processing command"))?;

            let status = retry(ctx, cfg.start_retry_timeout, || async {
                self.upload_script(comm, &cfg.remote_path, &data).await?;
                quiet(comm, &format!("chmod 0755 {}", cfg.remote_path))
                    .await
                    .map_err(|e| {
                        e.context("Error chmodding script file to 0755 in remote machine")
                    })?;
                Ok(comm.start(&command, &UiOutput(ui)).await?)
            })
            .await?;

            // A reboot may kill the script (SIGTERM, SIGHUP) before the
            // connection drops: with expect_disconnect that is the same
            // thing.
            let rebooted = match &status {
                ExitStatus::Disconnected => true,
                ExitStatus::Signal(s) => {
                    (cfg.expect_disconnect || cfg.valid_exit_codes.contains(&2300218))
                        && matches!(s.as_str(), "TERM" | "HUP" | "KILL")
                }
                ExitStatus::Code(_) => false,
            };
            let allow = cfg.expect_disconnect || cfg.valid_exit_codes.contains(&2300218);
            if rebooted {
                if !allow {
                    return Err(BuildError::msg(
                        "Script disconnected unexpectedly. If you expected your script to disconnect, i.e. from a restart, you can try adding `\"expect_disconnect\": true` or `\"valid_exit_codes\": [0, 2300218]` to the shell provisioner parameters.",
                    ));
                }
                ui.say("The connection dropped as expected (expect_disconnect): waiting for the machine to come back...");
                self.after_disconnect(ctx, comm).await?;
            } else {
                match &status {
                    ExitStatus::Code(c) => check_exit_code(*c, &cfg.valid_exit_codes)?,
                    // As Packer (Go's ssh): 128 + the signal's number.
                    ExitStatus::Signal(s) => check_exit_code(
                        128 + kiln_core::communicator::signal_number(s),
                        &cfg.valid_exit_codes,
                    )
                    .map_err(|e| e.context(format!("Script was killed by signal {s}")))?,
                    ExitStatus::Disconnected => {}
                }
            }
            if cfg.skip_clean {
                continue;
            }
            self.cleanup_remote(ctx, comm, &cfg.remote_path).await?;
        }
        if !cfg.skip_clean && !env_var_file.is_empty() {
            self.cleanup_remote(ctx, comm, &env_var_file).await?;
        }
        if let Some(p) = cfg.pause_after {
            ui.say(&format!(
                "Pausing {} after this provisioner...",
                kiln_core::build::go_duration(p)
            ));
            ctx.sleep(p).await?;
        }
        Ok(())
    }
}

/// Write a temporary file in the build's working directory; returns its path.
pub(crate) fn tempfile_in(
    dir: &std::path::Path,
    prefix: &str,
    data: &[u8],
) -> Result<String, BuildError> {
    let _ = std::fs::create_dir_all(dir);
    let name = dir.join(format!(
        "{prefix}{}",
        rand::thread_rng().gen_range(100_000_000u64..999_999_999)
    ));
    std::fs::write(&name, data)
        .map_err(|e| BuildError::msg(format!("Error preparing shell script: {e}")))?;
    Ok(name.display().to_string())
}

#[cfg(test)]
mod tests {
    use super::ShellConfig;
    use kiln_template::{Context, Decoder, Diagnostics, Source};
    use std::sync::Arc;

    fn default_remote_path() -> String {
        let n = kiln_template::json::parse(Arc::new(Source {
            path: "t.json".into(),
            text: r#"{"inline": ["true"]}"#.into(),
        }))
        .unwrap();
        let ctx = Context::default();
        let mut diags = Diagnostics::default();
        let mut d = Decoder::new(&n, &ctx, &mut diags);
        let c = ShellConfig::decode(&mut d).unwrap();
        d.finish();
        assert!(diags.0.is_empty(), "{diags}");
        c.remote_path
    }

    /// A leftover `/tmp/script_N.sh` of another user cannot be overwritten
    /// (sticky /tmp): the default name is drawn from far more than
    /// Packer's 10 000 numbers, so such a collision is negligible.
    #[test]
    fn the_default_remote_name_is_drawn_from_a_wide_range() {
        let numbers: Vec<u64> = (0..32)
            .map(|_| {
                let p = default_remote_path();
                let n = p
                    .strip_prefix("/tmp/script_")
                    .and_then(|s| s.strip_suffix(".sh"))
                    .unwrap_or_else(|| panic!("{p}"));
                n.parse().unwrap()
            })
            .collect();
        // 32 draws all below 10 000 out of 2^32: about (2.3e-6)^32.
        assert!(numbers.iter().any(|&n| n >= 10_000), "{numbers:?}");
    }
}
