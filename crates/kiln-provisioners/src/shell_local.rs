//! Packer 1.6.6's `shell-local` provisioner: run commands or scripts on the
//! machine running kiln.
use crate::common::{check_exit_code, decode_env_vars, flatten_env, render};
use crate::shell::tempfile_in;
use kiln_core::{
    async_trait, BuildCtx, BuildError, Communicator, PrepareOpts, ProvisionCtx, Provisioner,
};
use kiln_template::Decoder;
use std::path::PathBuf;
use std::sync::Arc;

const SUPPORTED_OS: &[&str] = &[
    "darwin", "freebsd", "linux", "openbsd", "solaris", "windows",
];

#[derive(Debug, Clone)]
pub struct ShellLocalConfig {
    pub inline: Option<Vec<String>>,
    pub scripts: Vec<String>,
    pub vars: Vec<String>,
    pub env_var_format: String,
    pub execute_command: Vec<String>,
    pub inline_shebang: String,
    pub only_on: Vec<String>,
    pub tempfile_extension: String,
    pub use_linux_pathing: bool,
    pub valid_exit_codes: Vec<i64>,
}

/// The OS name as Go's `runtime.GOOS` spells it.
pub fn goos() -> &'static str {
    match std::env::consts::OS {
        "macos" => "darwin",
        other => other,
    }
}

impl ShellLocalConfig {
    pub fn decode(d: &mut Decoder<'_>) -> Option<ShellLocalConfig> {
        let command = d.raw_string("command").filter(|s| !s.is_empty());
        let inline = d.raw_string_list("inline");
        let script = d.string("script").filter(|s| !s.is_empty());
        let scripts = d.string_list("scripts").unwrap_or_default();
        let vars = decode_env_vars(d);
        let env_var_format = d
            .string("env_var_format")
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "%s='%s' ".into());
        let execute_command = match d.node("execute_command") {
            Some(n) if matches!(n.value, kiln_template::Value::String(_)) => {
                // Packer's decode hook splits a string on commas; a command
                // is more useful whole.
                d.raw_string("execute_command").map(|s| vec![s])
            }
            Some(_) => d.raw_string_list("execute_command"),
            None => None,
        }
        .filter(|l| !l.is_empty())
        .unwrap_or_else(|| {
            vec![
                "/bin/sh".into(),
                "-c".into(),
                "{{.Vars}} {{.Script}}".into(),
            ]
        });
        let inline_shebang = d
            .string("inline_shebang")
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "/bin/sh -e".into());
        let only_on = d.string_list("only_on").unwrap_or_default();
        let tempfile_extension = d
            .string("tempfile_extension")
            .unwrap_or_default()
            .trim_start_matches('.')
            .to_string();
        let use_linux_pathing = d.bool("use_linux_pathing").unwrap_or(false);
        let valid_exit_codes = d.int_list("valid_exit_codes").unwrap_or_default();

        let mut ok = true;
        let inline_given = inline.as_ref().is_some_and(|l| !l.is_empty());
        if command.is_none() && !inline_given && scripts.is_empty() && script.is_none() {
            d.error_here("Command, Inline, Script and Scripts options cannot all be empty.");
            ok = false;
        }
        let too_many = "You may only specify one of the following options: Command, Inline, Script or Scripts. Please consolidate these options in your config.";
        let mut inline = inline.filter(|l| !l.is_empty());
        let mut scripts = scripts;
        if let Some(c) = command {
            if inline.is_some() || !scripts.is_empty() || script.is_some() {
                d.error_here(too_many);
                ok = false;
            } else {
                inline = Some(vec![c]);
            }
        }
        if let Some(s) = script {
            if !scripts.is_empty() || inline.is_some() {
                d.error_here(too_many);
                ok = false;
            } else {
                scripts = vec![s];
            }
        }
        if !scripts.is_empty() && inline.is_some() {
            d.error_here(too_many);
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
        for os in &only_on {
            if !SUPPORTED_OS.contains(&os.as_str()) {
                d.error(
                    "only_on",
                    format!(
                        "Invalid OS specified in only_on: '{os}'\nSupported OS names: {}",
                        SUPPORTED_OS.join(", ")
                    ),
                );
                ok = false;
            }
        }
        if use_linux_pathing {
            // Packer turns script paths into WSL paths (`C:/x` -> `/mnt/c/x`),
            // which fails for every path on a unix host; kiln does not run on
            // Windows.
            d.error(
                "use_linux_pathing",
                format!("use_linux_pathing is for Windows hosts with the Windows Subsystem for Linux, and kiln runs on {} (remove it)", goos()),
            );
            if inline.is_some() {
                d.error_here("Packer is unable to use the Command and Inline features with the Windows Linux Subsystem. Please use the Script or Scripts options instead");
            }
            ok = false;
        }
        ok.then_some(ShellLocalConfig {
            inline,
            scripts,
            vars,
            env_var_format,
            execute_command,
            inline_shebang,
            only_on,
            tempfile_extension,
            use_linux_pathing,
            valid_exit_codes,
        })
    }
}

pub struct ShellLocal {
    pub config: ShellLocalConfig,
}

pub fn factory(d: &mut Decoder<'_>, _: &PrepareOpts) -> Option<Box<dyn Provisioner>> {
    ShellLocalConfig::decode(d)
        .map(|config| Box::new(ShellLocal { config }) as Box<dyn Provisioner>)
}

/// Run `argv` locally (in its own process group, killed with the build),
/// streaming its output to the build's UI. Returns the exit code.
async fn run_local(ctx: &BuildCtx, argv: &[String]) -> Result<i32, BuildError> {
    match kiln_core::local::run_streaming(argv, &[], ctx.ui.as_ref(), &ctx.cancel).await {
        Ok(code) => Ok(code),
        Err(kiln_core::local::ExecError::Cancelled) => Err(BuildError::Cancelled),
        Err(e) => Err(BuildError::msg(e.to_string())),
    }
}

#[async_trait]
impl Provisioner for ShellLocal {
    async fn provision(
        &self,
        pctx: &ProvisionCtx<'_>,
        _comm: Option<&Arc<dyn Communicator>>,
    ) -> Result<(), BuildError> {
        let ctx = pctx.build;
        let cfg = &self.config;
        if !cfg.only_on.is_empty() && !cfg.only_on.iter().any(|o| o == goos()) {
            ctx.ui.say("Skipping shell-local due to runtime OS");
            return Ok(());
        }
        let mut scripts: Vec<String> = cfg.scripts.clone();
        let mut temp = None;
        if scripts.is_empty() {
            if let Some(inline) = &cfg.inline {
                let mut text = format!("#!{}\n", cfg.inline_shebang);
                for c in inline {
                    text.push_str(&render(c, &pctx.interp, ctx, &[])?);
                    text.push('\n');
                }
                let mut p = tempfile_in(&ctx.work_dir, "packer-shell", text.as_bytes())?;
                if !cfg.tempfile_extension.is_empty() {
                    let with = format!("{p}.{}", cfg.tempfile_extension);
                    let _ = std::fs::rename(&p, &with);
                    p = with;
                }
                {
                    use std::os::unix::fs::PermissionsExt;
                    let _ = std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o700));
                }
                temp = Some(p.clone());
                scripts.push(p);
            }
        }
        let mut vars = Vec::new();
        for v in &cfg.vars {
            vars.push(render(v, &pctx.interp, ctx, &[])?);
        }
        let flattened = flatten_env(ctx, &vars, &cfg.env_var_format);
        let result = async {
            for script in &scripts {
                let abs = std::path::absolute(PathBuf::from(script))
                    .unwrap_or_else(|_| PathBuf::from(script))
                    .display()
                    .to_string();
                let mut argv = Vec::new();
                for a in &cfg.execute_command {
                    argv.push(
                        render(
                            a,
                            &pctx.interp,
                            ctx,
                            &[("Vars", &flattened), ("Script", &abs), ("Command", &abs)],
                        )
                        .map_err(|e| e.context("Error processing command"))?,
                    );
                }
                ctx.ui.say(&format!("Running local shell script: {script}"));
                let code = run_local(ctx, &argv).await.map_err(|e| match e {
                    BuildError::Cancelled => BuildError::Cancelled,
                    e => BuildError::msg(format!(
                        "Error executing script: {abs}\n\nPlease see output above for more information. ({e})"
                    )),
                })?;
                check_exit_code(code, &cfg.valid_exit_codes)?;
            }
            Ok(())
        }
        .await;
        if let Some(t) = temp {
            let _ = std::fs::remove_file(t);
        }
        result
    }
}
