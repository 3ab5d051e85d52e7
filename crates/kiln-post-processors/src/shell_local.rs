//! `shell-local`: run commands or scripts on this machine after the build
//! (Packer 1.6.6's shell-local post-processor, which shares its options
//! with the shell-local provisioner).
//!
//! Options: `command` (deprecated, one inline command), `inline`, `script`,
//! `scripts` (exactly one of these), `environment_vars` (`KEY=value`),
//! `env_var_format` (default `%s='%s' `), `execute_command` (default
//! `["/bin/sh", "-c", "{{.Vars}} {{.Script}}"]`; a single string is run with
//! `sh -c`, as Packer does for older templates), `inline_shebang` (default
//! `/bin/sh -e`), `only_on` (Go OS names), `valid_exit_codes` (default
//! `[0]`), `tempfile_extension`, `use_linux_pathing` (WSL only: an error
//! on other systems, as in Packer).
//!
//! `execute_command` is rendered per script with `.Vars` (the flattened
//! environment: `PACKER_BUILD_NAME`, `PACKER_BUILDER_TYPE`, the HTTP server's
//! `PACKER_HTTP_*` if the builder has one, then `environment_vars`, sorted),
//! `.Script` and `.Command` (the script's absolute path) and the builder's
//! generated data. Inline commands are rendered at run time. The input
//! artifact is passed on and always kept.
use crate::local_exec::{run_streaming, ExecError};
use crate::{render_option, runtime_context, RUN_UUID_KEY};
use kiln_core::{
    async_trait, Artifact, BuildError, PostProcessCtx, PostProcessed, PostProcessor, PrepareOpts,
};
use kiln_template::interp::Context;
use kiln_template::Decoder;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The OS names `only_on` accepts (Go's GOOS values Packer lists).
pub const SUPPORTED_OS: &[&str] = &[
    "darwin", "freebsd", "linux", "openbsd", "solaris", "windows",
];

const HTTP_NOT_IMPLEMENTED: &[(&str, &str, &str)] = &[
    (
        "PackerHTTPAddr",
        "PACKER_HTTP_ADDR",
        "ERR_HTTP_ADDR_NOT_IMPLEMENTED_BY_BUILDER",
    ),
    (
        "PackerHTTPIP",
        "PACKER_HTTP_IP",
        "ERR_HTTP_IP_NOT_IMPLEMENTED_BY_BUILDER",
    ),
    (
        "PackerHTTPPort",
        "PACKER_HTTP_PORT",
        "ERR_HTTP_PORT_NOT_IMPLEMENTED_BY_BUILDER",
    ),
];

#[derive(Debug, Clone)]
pub struct Config {
    /// Uninterpolated inline commands (`command` becomes one).
    pub inline: Option<Vec<String>>,
    pub scripts: Vec<String>,
    /// `KEY=value`, interpolated.
    pub vars: Vec<String>,
    pub env_var_format: String,
    /// Uninterpolated.
    pub execute_command: Vec<String>,
    pub inline_shebang: String,
    pub only_on: Vec<String>,
    pub valid_exit_codes: Vec<i64>,
    /// Without the leading dot.
    pub tempfile_extension: String,
}

/// Decode and validate a shell-local configuration (the caller calls
/// `finish()`).
pub fn decode(d: &mut Decoder<'_>) -> Config {
    let command = d.string("command").filter(|c| !c.is_empty());
    let mut inline = d.raw_string_list("inline");
    let script = d.string("script").filter(|s| !s.is_empty());
    let mut scripts = d.string_list("scripts").unwrap_or_default();
    let vars = d.string_list("environment_vars").unwrap_or_default();
    let env_var_format = d
        .string("env_var_format")
        .filter(|f| !f.is_empty())
        .unwrap_or_else(|| "%s='%s' ".to_string());
    let mut execute_command = d.raw_string_list("execute_command").unwrap_or_default();
    let inline_shebang = d
        .string("inline_shebang")
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "/bin/sh -e".to_string());
    let only_on = d.string_list("only_on").unwrap_or_default();
    let valid_exit_codes = d.int_list("valid_exit_codes").unwrap_or_default();
    let tempfile_extension = d.string("tempfile_extension").unwrap_or_default();
    let use_linux_pathing = d.bool("use_linux_pathing").unwrap_or(false);

    match execute_command.len() {
        0 => {
            execute_command = vec![
                "/bin/sh".to_string(),
                "-c".to_string(),
                "{{.Vars}} {{.Script}}".to_string(),
            ]
        }
        // Before the post-processor and the provisioner were merged,
        // execute_command was one string run by `sh -c`.
        1 => {
            execute_command.insert(0, "-c".to_string());
            execute_command.insert(0, "sh".to_string());
        }
        _ => {}
    }

    let inline_len = inline.as_ref().map_or(0, |i| i.len());
    if command.is_none() && inline_len == 0 && scripts.is_empty() && script.is_none() {
        d.error_here("Command, Inline, Script and Scripts options cannot all be empty.");
    }
    const TOO_MANY: &str = "You may only specify one of the following options: Command, Inline, Script or Scripts. Please consolidate these options in your config.";
    if let Some(c) = command {
        if inline_len != 0 || !scripts.is_empty() || script.is_some() {
            d.error_here(TOO_MANY);
        } else {
            inline = Some(vec![c]);
        }
    }
    if let Some(s) = script {
        if !scripts.is_empty() || inline.as_ref().is_some_and(|i| !i.is_empty()) {
            d.error_here(TOO_MANY);
        } else {
            scripts = vec![s];
        }
    }
    if !scripts.is_empty() && inline.is_some() {
        d.error_here(TOO_MANY);
    }
    for s in &scripts {
        if let Err(e) = std::fs::metadata(s) {
            d.error("scripts", format!("Bad script '{s}': {e}"));
        }
    }
    for os in &only_on {
        if !SUPPORTED_OS.contains(&os.as_str()) {
            d.error(
                "only_on",
                format!(
                    "Invalid OS specified in only_on: '{os}'. Supported OS names: {}",
                    SUPPORTED_OS.join(", ")
                ),
            );
        }
    }
    if use_linux_pathing {
        for s in &mut scripts {
            match std::path::absolute(&*s)
                .map_err(|e| e.to_string())
                .and_then(|p| to_wsl_path(&p.to_string_lossy()))
            {
                Ok(p) => *s = p,
                Err(e) => d.error("use_linux_pathing", e),
            }
        }
        if inline_len > 0 {
            d.error(
                "use_linux_pathing",
                "Packer is unable to use the Command and Inline features with the Windows Linux Subsystem. Please use the Script or Scripts options instead",
            );
        }
    }
    for kv in &vars {
        match kv.split_once('=') {
            Some((k, _)) if !k.is_empty() => {}
            _ => d.error(
                "environment_vars",
                format!("Environment variable not in format 'key=value': {kv}"),
            ),
        }
    }
    Config {
        inline,
        scripts,
        vars,
        env_var_format,
        execute_command,
        inline_shebang,
        only_on,
        valid_exit_codes,
        tempfile_extension: tempfile_extension
            .strip_prefix('.')
            .unwrap_or(&tempfile_extension)
            .to_string(),
    }
}

/// `C:/path/file` -> `/mnt/c/path/file` (for WSL).
fn to_wsl_path(win: &str) -> Result<String, String> {
    let p = win.replace('\\', "/");
    match p.split_once(":/") {
        Some((drive, rest)) => Ok(format!("/mnt/{}/{rest}", drive.to_lowercase())),
        None => Err(format!(
            "use_linux_pathing: cannot convert {p} to a WSL path: expected a drive (`C:/...`)"
        )),
    }
}

pub(crate) fn factory(d: &mut Decoder<'_>, _: &PrepareOpts) -> Option<Box<dyn PostProcessor>> {
    Some(Box::new(ShellLocal { config: decode(d) }))
}

pub struct ShellLocal {
    pub config: Config,
}

/// This machine's OS under its Go name.
pub fn go_os() -> &'static str {
    match std::env::consts::OS {
        "macos" => "darwin",
        os => os,
    }
}

/// Go's `fmt.Sprintf` for the `%s`/`%v`/`%q`/`%%` verbs `env_var_format`
/// uses.
pub fn go_sprintf(format: &str, args: &[&str]) -> String {
    let mut out = String::new();
    let mut next = 0;
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('%') => out.push('%'),
            Some(v @ ('s' | 'v' | 'q')) => match args.get(next) {
                Some(a) => {
                    if v == 'q' {
                        out.push_str(&format!("{a:?}"));
                    } else {
                        out.push_str(a);
                    }
                    next += 1;
                }
                None => out.push_str(&format!("%!{v}(MISSING)")),
            },
            Some(v) => {
                out.push('%');
                out.push(v);
            }
            None => out.push_str("%!(NOVERB)"),
        }
    }
    if next < args.len() {
        let extra: Vec<String> = args[next..].iter().map(|a| format!("string={a}")).collect();
        out.push_str(&format!("%!(EXTRA {})", extra.join(", ")));
    }
    out
}

impl Config {
    /// The `{{.Vars}}` text: every variable formatted with
    /// `env_var_format`, single quotes in values escaped for `'...'`.
    pub fn flattened_env(
        &self,
        build_name: &str,
        build_type: &str,
        generated: &BTreeMap<String, String>,
    ) -> String {
        let mut env = BTreeMap::new();
        env.insert("PACKER_BUILD_NAME".to_string(), build_name.to_string());
        env.insert("PACKER_BUILDER_TYPE".to_string(), build_type.to_string());
        for (key, var, not_impl) in HTTP_NOT_IMPLEMENTED {
            if let Some(v) = generated.get(*key).filter(|v| v.as_str() != *not_impl) {
                env.insert((*var).to_string(), v.clone());
            }
        }
        for kv in &self.vars {
            if let Some((k, v)) = kv.split_once('=') {
                env.insert(k.to_string(), v.replace('\'', "'\"'\"'"));
            }
        }
        env.iter()
            .map(|(k, v)| go_sprintf(&self.env_var_format, &[k, v]))
            .collect()
    }

    fn write_inline_script(
        &self,
        inline: &[String],
        interp: &Context,
        dir: &Path,
    ) -> Result<tempfile::TempPath, BuildError> {
        let mut b = tempfile::Builder::new();
        b.prefix("packer-shell");
        let suffix = format!(".{}", self.tempfile_extension);
        if !self.tempfile_extension.is_empty() {
            b.suffix(&suffix);
        }
        let mut f = b.tempfile_in(dir).map_err(|e| {
            BuildError::msg(format!(
                "Error preparing shell script in {}: {e}",
                dir.display()
            ))
        })?;
        let mut text = String::new();
        if !self.inline_shebang.is_empty() {
            text.push_str(&format!("#!{}\n", self.inline_shebang));
        }
        for cmd in inline {
            text.push_str(&render_option("inline", cmd, interp)?);
            text.push('\n');
        }
        f.write_all(text.as_bytes())
            .and_then(|_| f.flush())
            .map_err(|e| {
                BuildError::msg(format!(
                    "Error preparing shell script {}: {e}",
                    f.path().display()
                ))
            })?;
        // Closed before it is run (an executable open for writing cannot be
        // executed).
        let path = f.into_temp_path();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700)).map_err(|e| {
            BuildError::msg(format!(
                "Error preparing shell script {}: {e}",
                path.display()
            ))
        })?;
        Ok(path)
    }
}

/// Where inline scripts go: `PACKER_TMP_DIR`, else the build's work
/// directory, else the system's temporary directory.
fn temp_dir(work_dir: &Path) -> PathBuf {
    if let Some(d) = std::env::var_os("PACKER_TMP_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    if work_dir.is_dir() {
        return work_dir.to_path_buf();
    }
    std::env::temp_dir()
}

#[async_trait]
impl PostProcessor for ShellLocal {
    async fn post_process(
        &self,
        ctx: &PostProcessCtx<'_>,
        input: Arc<dyn Artifact>,
    ) -> Result<PostProcessed, BuildError> {
        let build = ctx.build;
        let c = &self.config;
        if !c.only_on.is_empty() && !c.only_on.iter().any(|o| o == go_os()) {
            build.ui.say("Skipping shell-local due to runtime OS");
            return Ok(PostProcessed {
                artifact: Some(input),
                keep: true,
                force_keep: true,
            });
        }
        let base = runtime_context(&ctx.interp, build, &[]);
        let generated = build.generated();

        let mut _inline_file = None;
        let scripts: Vec<String> = if !c.scripts.is_empty() {
            c.scripts.clone()
        } else if let Some(inline) = &c.inline {
            let p = c.write_inline_script(inline, &base, &temp_dir(&build.work_dir))?;
            let s = p.display().to_string();
            _inline_file = Some(p);
            vec![s]
        } else {
            vec![]
        };

        let vars = c.flattened_env(&build.build_name, &build.build_type, &generated);
        // Packer's children inherit PACKER_RUN_UUID from Packer.
        let mut env = Vec::new();
        if std::env::var_os(RUN_UUID_KEY).is_none() {
            env.push((RUN_UUID_KEY.to_string(), crate::run_uuid(&ctx.interp)));
        }

        for script in &scripts {
            let abs = std::path::absolute(script)
                .map(|p| p.display().to_string())
                .unwrap_or_else(|_| script.clone());
            let interp = base
                .with("Vars", vars.clone())
                .with("Script", abs.clone())
                .with("Command", abs.clone());
            let argv = c
                .execute_command
                .iter()
                .map(|a| render_option("execute_command", a, &interp))
                .collect::<Result<Vec<_>, _>>()?;
            build
                .ui
                .say(&format!("Running local shell script: {script}"));
            let code = match run_streaming(&argv, &env, &*build.ui, &build.cancel).await {
                Ok(code) => code,
                Err(ExecError::Cancelled) => return Err(BuildError::Cancelled),
                Err(e) => {
                    return Err(BuildError::msg(format!(
                        "Error executing script: {abs}: {e}\n\nPlease see output above for more information."
                    )))
                }
            };
            let allowed: &[i64] = if c.valid_exit_codes.is_empty() {
                &[0]
            } else {
                &c.valid_exit_codes
            };
            if !allowed.contains(&i64::from(code)) {
                let list: Vec<String> = allowed.iter().map(|c| c.to_string()).collect();
                return Err(BuildError::msg(format!(
                    "Script exited with non-zero exit status: {code}. Allowed exit codes are: [{}]",
                    list.join(" ")
                )));
            }
        }
        // Kept whatever the user says, so the chain can go on with it (use
        // artifice to replace an artifact).
        Ok(PostProcessed {
            artifact: Some(input),
            keep: true,
            force_keep: true,
        })
    }
}
