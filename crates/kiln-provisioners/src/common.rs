//! What the shell provisioners share: environment variables as Packer
//! flattens them, exit-code checks, retries.
use kiln_core::{BuildCtx, BuildError};
use kiln_template::Decoder;
use std::collections::BTreeMap;
use std::future::Future;
use std::time::{Duration, Instant};

/// Values of `ctx.generated` that mean "not provided by this builder"
/// (Packer's `commonsteps.Http*NotImplemented`).
const HTTP_NOT_IMPLEMENTED: &[&str] = &[
    "ERR_HTTP_ADDR_NOT_IMPLEMENTED_BY_BUILDER",
    "ERR_HTTP_IP_NOT_IMPLEMENTED_BY_BUILDER",
    "ERR_HTTP_PORT_NOT_IMPLEMENTED_BY_BUILDER",
];

/// Decode `environment_vars`, checking each is `key=value`.
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

/// Go's `fmt.Sprintf(format, key, value)` for the `%s` verbs of
/// `env_var_format` (`%%` is a percent sign).
pub fn sprintf2(format: &str, a: &str, b: &str) -> String {
    let mut out = String::new();
    let mut args = [a, b].into_iter();
    let mut chars = format.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '%' {
            match chars.peek() {
                Some('%') => {
                    chars.next();
                    out.push('%');
                }
                Some('s') | Some('v') | Some('q') => {
                    let verb = chars.next().unwrap_or('s');
                    match args.next() {
                        Some(x) if verb == 'q' => out.push_str(&format!("{x:?}")),
                        Some(x) => out.push_str(x),
                        None => out.push_str(&format!("%!{verb}(MISSING)")),
                    }
                }
                _ => out.push('%'),
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The environment of a script, as Packer builds it: `PACKER_BUILD_NAME`,
/// `PACKER_BUILDER_TYPE`, `PACKER_HTTP_{ADDR,IP,PORT}` when the builder
/// serves HTTP, then the user's `environment_vars` (single quotes escaped
/// as `'"'"'`), sorted by name, each formatted with `env_var_format`.
pub fn flatten_env(ctx: &BuildCtx, vars: &[String], format: &str) -> String {
    let mut env = BTreeMap::new();
    env.insert("PACKER_BUILD_NAME".to_string(), ctx.build_name.clone());
    env.insert("PACKER_BUILDER_TYPE".to_string(), ctx.build_type.clone());
    let generated = ctx.generated();
    for (key, var) in [
        ("PackerHTTPAddr", "PACKER_HTTP_ADDR"),
        ("PackerHTTPIP", "PACKER_HTTP_IP"),
        ("PackerHTTPPort", "PACKER_HTTP_PORT"),
    ] {
        if let Some(v) = generated.get(key) {
            if !HTTP_NOT_IMPLEMENTED.contains(&v.as_str()) {
                env.insert(var.to_string(), v.clone());
            }
        }
    }
    for kv in vars {
        if let Some((k, v)) = kv.split_once('=') {
            env.insert(k.to_string(), v.replace('\'', r#"'"'"'"#));
        }
    }
    env.iter().map(|(k, v)| sprintf2(format, k, v)).collect()
}

/// Packer's exit-code check.
pub fn check_exit_code(code: i32, valid: &[i64]) -> Result<(), BuildError> {
    let valid: Vec<i64> = if valid.is_empty() {
        vec![0]
    } else {
        valid.to_vec()
    };
    if valid.contains(&(code as i64)) {
        return Ok(());
    }
    Err(BuildError::msg(format!(
        "Script exited with non-zero exit status: {code}. Allowed exit codes are: [{}]",
        valid
            .iter()
            .map(|c| c.to_string())
            .collect::<Vec<_>>()
            .join(" ")
    )))
}

/// Packer's `retry.Config{StartTimeout}`: try, and on error try again every
/// 2 seconds until `timeout` has passed since the first try.
pub async fn retry<T, F, Fut>(ctx: &BuildCtx, timeout: Duration, mut f: F) -> Result<T, BuildError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, BuildError>>,
{
    let start = Instant::now();
    loop {
        match ctx.cancellable(f()).await {
            Ok(v) => return Ok(v),
            Err(BuildError::Cancelled) => return Err(BuildError::Cancelled),
            Err(e) => {
                if start.elapsed() >= timeout {
                    return Err(e);
                }
                ctx.sleep(Duration::from_secs(2)).await?;
            }
        }
    }
}

/// Render a run-time template (`execute_command`, `inline`) with the
/// generated data and extra context values.
pub fn render(
    template: &str,
    base: &kiln_template::Context,
    ctx: &BuildCtx,
    data: &[(&str, &str)],
) -> Result<String, BuildError> {
    let mut c = base.clone();
    for (k, v) in ctx.generated() {
        c.data.entry(k).or_insert(v);
    }
    for (k, v) in data {
        c.data.insert(k.to_string(), v.to_string());
    }
    kiln_template::interp::render(template, &c).map_err(|e| BuildError::msg(e.to_string()))
}

/// Convert CRLF line endings to LF (Packer's `UnixReader` for scripts that
/// are not `binary`).
pub fn unix_line_endings(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len());
    let mut i = 0;
    while i < data.len() {
        if data[i] == b'\r' && data.get(i + 1) == Some(&b'\n') {
            i += 1;
            continue;
        }
        out.push(data[i]);
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sprintf_like_go() {
        assert_eq!(sprintf2("%s='%s' ", "A", "b"), "A='b' ");
        assert_eq!(sprintf2("export %s='%s'\n", "A", "b"), "export A='b'\n");
        assert_eq!(sprintf2("%s=%s 100%%", "A", "b"), "A=b 100%");
        assert_eq!(sprintf2("%s", "A", "b"), "A");
    }

    #[test]
    fn exit_codes() {
        assert!(check_exit_code(0, &[]).is_ok());
        assert!(check_exit_code(2, &[0, 2]).is_ok());
        let e = check_exit_code(1, &[]).unwrap_err().to_string();
        assert_eq!(
            e,
            "Script exited with non-zero exit status: 1. Allowed exit codes are: [0]"
        );
    }

    #[test]
    fn crlf() {
        assert_eq!(unix_line_endings(b"a\r\nb\rc\n"), b"a\nb\rc\n");
    }
}
