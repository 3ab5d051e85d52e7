//! What the shell provisioners share: environment variables as Packer
//! flattens them, exit-code checks, retries.
use kiln_core::{BuildCtx, BuildError};
use std::future::Future;
use std::time::{Duration, Instant};

pub use kiln_shell_local::{check_exit_code, decode_env_vars, go_sprintf};

/// The environment of a script as Packer flattens it for `{{.Vars}}`: see
/// [`kiln_shell_local::flatten_env`].
pub fn flatten_env(ctx: &BuildCtx, vars: &[String], format: &str) -> String {
    kiln_shell_local::flatten_env(
        &ctx.build_name,
        &ctx.build_type,
        &ctx.generated(),
        vars,
        format,
    )
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
    let c = ctx.runtime_interp(base, data);
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
    fn crlf() {
        assert_eq!(unix_line_endings(b"a\r\nb\rc\n"), b"a\nb\rc\n");
    }
}
