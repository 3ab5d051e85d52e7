//! Packer 1.6.6's `shell-local`, once for both its forms: the provisioner
//! (`kiln-provisioners`) and the post-processor (`kiln-post-processors`).
//! Packer decodes and validates both with one configuration
//! (`common/shell-local`) and runs them with one function; so does kiln,
//! here. What differs between the two is only what surrounds a run (the
//! post-processor passes its artifact on) and one rule kept for old
//! templates: a post-processor's one-element `execute_command` is run with
//! `sh -c` ([`Form::PostProcessor`]).
//!
//! Options: `command` (deprecated: one inline command), `inline`, `script`,
//! `scripts` (exactly one of these), `environment_vars` (`KEY=value`),
//! `env_var_format` (default `%s='%s' `), `execute_command` (default
//! `["/bin/sh", "-c", "{{.Vars}} {{.Script}}"]`), `inline_shebang` (default
//! `/bin/sh -e`), `only_on` (Go OS names), `valid_exit_codes` (default
//! `[0]`), `tempfile_extension`, `use_linux_pathing` (for Windows hosts
//! with WSL: an error here, kiln does not run on Windows).
//!
//! `execute_command` is rendered per script with `.Vars` (the flattened
//! environment, see [`flatten_env`]), `.Script` and `.Command` (the
//! script's absolute path) and the builder's generated data. Inline
//! commands are rendered at run time, so they see the generated data too.
//! A `execute_command` given as one string is kept whole (Packer splits it
//! on commas, which breaks any command with a comma in it).
use kiln_core::{BuildCtx, BuildError};
use kiln_template::interp::{render_option, Context};
use kiln_template::Decoder;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The OS names `only_on` accepts (the Go `GOOS` values Packer lists).
pub const SUPPORTED_OS: &[&str] = &[
    "darwin", "freebsd", "linux", "openbsd", "solaris", "windows",
];

/// Generated-data keys of a builder's HTTP server, the environment
/// variables they become, and the value that means "this builder has no
/// HTTP server" (Packer's `commonsteps.Http*NotImplemented`).
const HTTP_DATA: &[(&str, &str, &str)] = &[
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

/// This machine's OS under its Go name (`runtime.GOOS`).
pub fn go_os() -> &'static str {
    match std::env::consts::OS {
        "macos" => "darwin",
        os => os,
    }
}

/// Go's `fmt.Sprintf` for the verbs `env_var_format` uses (`%s`, `%v`,
/// `%q`, `%%`), with Go's markers for missing and extra arguments.
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

/// The environment of a script as Packer flattens it (`{{.Vars}}`, for
/// `shell` and `shell-local` alike): `PACKER_BUILD_NAME`,
/// `PACKER_BUILDER_TYPE`, `PACKER_HTTP_{ADDR,IP,PORT}` when the builder
/// serves HTTP, then the user's `KEY=value` variables (single quotes
/// escaped as `'"'"'`), sorted by name, each formatted with `format`.
pub fn flatten_env(
    build_name: &str,
    build_type: &str,
    generated: &BTreeMap<String, String>,
    vars: &[String],
    format: &str,
) -> String {
    let mut env = BTreeMap::new();
    env.insert("PACKER_BUILD_NAME".to_string(), build_name.to_string());
    env.insert("PACKER_BUILDER_TYPE".to_string(), build_type.to_string());
    for (key, var, not_here) in HTTP_DATA {
        if let Some(v) = generated.get(*key).filter(|v| v.as_str() != *not_here) {
            env.insert((*var).to_string(), v.clone());
        }
    }
    for kv in vars {
        if let Some((k, v)) = kv.split_once('=') {
            env.insert(k.to_string(), v.replace('\'', r#"'"'"'"#));
        }
    }
    env.iter()
        .map(|(k, v)| go_sprintf(format, &[k, v]))
        .collect()
}

/// Decode `environment_vars`, checking that each is `key=value`.
pub fn decode_env_vars(d: &mut Decoder<'_>) -> Vec<String> {
    let vars = d.string_list("environment_vars").unwrap_or_default();
    for kv in &vars {
        match kv.split_once('=') {
            Some((k, _)) if !k.is_empty() => {}
            _ => d.error(
                "environment_vars",
                format!("Environment variable not in format 'key=value': {kv}"),
            ),
        }
    }
    vars
}

/// Packer's exit-code check (`valid_exit_codes`, default `[0]`).
pub fn check_exit_code(code: i32, valid: &[i64]) -> Result<(), BuildError> {
    let valid: &[i64] = if valid.is_empty() { &[0] } else { valid };
    if valid.contains(&i64::from(code)) {
        return Ok(());
    }
    let list: Vec<String> = valid.iter().map(|c| c.to_string()).collect();
    Err(BuildError::msg(format!(
        "Script exited with non-zero exit status: {code}. Allowed exit codes are: [{}]",
        list.join(" ")
    )))
}

/// Which `shell-local` is being decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    Provisioner,
    /// Runs a one-element `execute_command` with `sh -c`, as the
    /// post-processor did before Packer merged the two.
    PostProcessor,
}

/// A `shell-local` configuration (run only when it decoded without problems).
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

impl Config {
    /// Decode and validate; problems go to the decoder (the caller calls
    /// its `finish()`), and a configuration with problems is never run.
    pub fn decode(d: &mut Decoder<'_>, form: Form) -> Config {
        let command = d.raw_string("command").filter(|s| !s.is_empty());
        let inline = d.raw_string_list("inline");
        let script = d.string("script").filter(|s| !s.is_empty());
        let scripts = d.string_list("scripts").unwrap_or_default();
        let vars = decode_env_vars(d);
        let env_var_format = d
            .string("env_var_format")
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "%s='%s' ".into());
        let mut execute_command = match d.node("execute_command") {
            Some(n) if matches!(n.value, kiln_template::Value::String(_)) => {
                d.raw_string("execute_command").map(|s| vec![s])
            }
            Some(_) => d.raw_string_list("execute_command"),
            None => None,
        }
        .unwrap_or_default();
        match execute_command.len() {
            0 => {
                execute_command = vec![
                    "/bin/sh".into(),
                    "-c".into(),
                    "{{.Vars}} {{.Script}}".into(),
                ]
            }
            1 if form == Form::PostProcessor => {
                execute_command.splice(0..0, ["sh".to_string(), "-c".to_string()]);
            }
            _ => {}
        }
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

        let mut inline = inline.filter(|l| !l.is_empty());
        let mut scripts = scripts;
        if command.is_none() && inline.is_none() && scripts.is_empty() && script.is_none() {
            d.error_here("Command, Inline, Script and Scripts options cannot all be empty.");
        }
        const TOO_MANY: &str = "You may only specify one of the following options: Command, Inline, Script or Scripts. Please consolidate these options in your config.";
        if let Some(c) = command {
            if inline.is_some() || !scripts.is_empty() || script.is_some() {
                d.error_here(TOO_MANY);
            } else {
                inline = Some(vec![c]);
            }
        }
        if let Some(s) = script {
            if !scripts.is_empty() || inline.is_some() {
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
                let key = if d.node("script").is_some() {
                    "script"
                } else {
                    "scripts"
                };
                d.error(key, format!("Bad script '{s}': {e}"));
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
            }
        }
        if use_linux_pathing {
            // Packer turns script paths into WSL paths (`C:/x` ->
            // `/mnt/c/x`), which means nothing on a unix host.
            d.error(
                "use_linux_pathing",
                format!(
                    "use_linux_pathing is for Windows hosts with the Windows Subsystem for Linux, and kiln runs on {} (remove it)",
                    go_os()
                ),
            );
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
            tempfile_extension,
        }
    }

    /// Whether `only_on` lets it run on this machine.
    pub fn runs_here(&self) -> bool {
        self.only_on.is_empty() || self.only_on.iter().any(|o| o == go_os())
    }

    /// Run it: say "Skipping shell-local due to runtime OS" and do nothing
    /// when `only_on` excludes this machine; else write the inline commands
    /// to a script (removed afterwards, whatever happens) and run each
    /// script with `execute_command`, in its own process group (killed
    /// with the build), its output streamed to the build's UI. `base` is
    /// the interpolation context (the builder's generated data is added);
    /// `env` is added to the environment of the commands.
    pub async fn run(
        &self,
        build: &BuildCtx,
        base: &Context,
        env: &[(String, String)],
    ) -> Result<(), BuildError> {
        if !self.runs_here() {
            build.ui.say("Skipping shell-local due to runtime OS");
            return Ok(());
        }
        let generated = build.generated();
        let interp = build.runtime_interp(base, &[]);
        // Kept alive until every script ran; removes the file when dropped.
        let mut _inline_file = None;
        let scripts: Vec<String> = match (&self.inline, self.scripts.is_empty()) {
            (Some(inline), true) => {
                let p = self.write_inline_script(inline, &interp, &temp_dir(&build.work_dir))?;
                let s = p.display().to_string();
                _inline_file = Some(p);
                vec![s]
            }
            _ => self.scripts.clone(),
        };
        let mut vars = Vec::with_capacity(self.vars.len());
        for v in &self.vars {
            vars.push(render_option("environment_vars", v, &interp).map_err(BuildError::new)?);
        }
        let flattened = flatten_env(
            &build.build_name,
            &build.build_type,
            &generated,
            &vars,
            &self.env_var_format,
        );
        for script in &scripts {
            let abs = std::path::absolute(script)
                .map(|p| p.display().to_string())
                .unwrap_or_else(|_| script.clone());
            let c = interp
                .with("Vars", flattened.clone())
                .with("Script", abs.clone())
                .with("Command", abs.clone());
            let argv = self
                .execute_command
                .iter()
                .map(|a| render_option("execute_command", a, &c).map_err(BuildError::new))
                .collect::<Result<Vec<_>, _>>()?;
            build
                .ui
                .say(&format!("Running local shell script: {script}"));
            use kiln_core::local::{run_streaming, ExecError};
            let code = match run_streaming(&argv, env, &*build.ui, &build.cancel).await {
                Ok(code) => code,
                Err(ExecError::Cancelled) => return Err(BuildError::Cancelled),
                Err(e) => {
                    return Err(BuildError::msg(format!(
                        "Error executing script: {abs}: {e}\n\nPlease see output above for more information."
                    )))
                }
            };
            check_exit_code(code, &self.valid_exit_codes)?;
        }
        Ok(())
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
        let mut text = format!("#!{}\n", self.inline_shebang);
        for cmd in inline {
            text.push_str(&render_option("inline", cmd, interp).map_err(BuildError::new)?);
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
        // Closed before it is run (a file open for writing cannot be
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

/// Where inline scripts go: `PACKER_TMP_DIR`, else the build's working
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_var_format_is_go_sprintf() {
        assert_eq!(go_sprintf("%s='%s' ", &["A", "b"]), "A='b' ");
        assert_eq!(
            go_sprintf("export %s='%s'\n", &["A", "b"]),
            "export A='b'\n"
        );
        assert_eq!(go_sprintf("set %s=%s && ", &["A", "b"]), "set A=b && ");
        assert_eq!(go_sprintf("%s=%s 100%%", &["A", "b"]), "A=b 100%");
        assert_eq!(go_sprintf("%s", &["A", "b"]), "A%!(EXTRA string=b)");
        assert_eq!(go_sprintf("%s=%s %s", &["A", "b"]), "A=b %!s(MISSING)");
        assert_eq!(go_sprintf("%q=%v", &["A", "b"]), "\"A\"=b");
    }

    #[test]
    fn flattened_env_is_sorted_quoted_and_skips_missing_http() {
        let mut generated = BTreeMap::new();
        generated.insert("PackerHTTPIP".to_string(), "10.0.2.2".to_string());
        generated.insert(
            "PackerHTTPPort".to_string(),
            "ERR_HTTP_PORT_NOT_IMPLEMENTED_BY_BUILDER".to_string(),
        );
        let s = flatten_env(
            "b",
            "null",
            &generated,
            &["Z=it's".into(), "A=1=2".into()],
            "%s='%s' ",
        );
        assert_eq!(
            s,
            "A='1=2' PACKER_BUILDER_TYPE='null' PACKER_BUILD_NAME='b' PACKER_HTTP_IP='10.0.2.2' Z='it'\"'\"'s' "
        );
    }

    #[test]
    fn exit_codes() {
        assert!(check_exit_code(0, &[]).is_ok());
        assert!(check_exit_code(3, &[0, 3]).is_ok());
        let e = check_exit_code(4, &[0, 3]).unwrap_err().to_string();
        assert_eq!(
            e,
            "Script exited with non-zero exit status: 4. Allowed exit codes are: [0 3]"
        );
    }
}
