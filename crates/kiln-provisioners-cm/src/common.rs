//! What the configuration-management provisioners share: running commands
//! on the machine with their output streamed, moving files, checking paths
//! at validate time, Go's path functions (Packer builds remote paths with
//! `filepath.Join`/`Base`), and the refusal of Windows guests.
use kiln_core::communicator::{FileMeta, NoProgress};
use kiln_core::{BuildCtx, BuildError, Communicator, ExitStatus};
use kiln_ssh::{CollectOutput, UiOutput};
use kiln_template::Decoder;
use std::path::Path;

/// Go's `path.Clean` (the slash-separated form `filepath.ToSlash` gives on
/// unix).
pub fn go_clean(p: &str) -> String {
    if p.is_empty() {
        return ".".into();
    }
    let rooted = p.starts_with('/');
    let mut out: Vec<&str> = Vec::new();
    for part in p.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if out.last().is_some_and(|l| *l != "..") {
                    out.pop();
                } else if !rooted {
                    out.push("..");
                }
            }
            x => out.push(x),
        }
    }
    let body = out.join("/");
    match (rooted, body.is_empty()) {
        (true, _) => format!("/{body}"),
        (false, true) => ".".into(),
        (false, false) => body,
    }
}

/// Go's `filepath.Join` (empty elements skipped, the result cleaned).
pub fn go_join(parts: &[&str]) -> String {
    let joined: Vec<&str> = parts.iter().copied().filter(|p| !p.is_empty()).collect();
    if joined.is_empty() {
        return String::new();
    }
    go_clean(&joined.join("/"))
}

/// Go's `filepath.Base` (trailing slashes dropped; `"."` for empty).
pub fn go_base(p: &str) -> String {
    if p.is_empty() {
        return ".".into();
    }
    let t = p.trim_end_matches('/');
    if t.is_empty() {
        return "/".into();
    }
    t.rsplit('/').next().unwrap_or(t).to_string()
}

/// Go's `filepath.Dir`.
pub fn go_dir(p: &str) -> String {
    match p.rfind('/') {
        Some(i) => go_clean(&p[..=i]),
        None => ".".into(),
    }
}

/// Single-quote `s` for a POSIX shell.
pub fn sh_quote(s: &str) -> String {
    kiln_ssh::shell_quote(s)
}

/// What a path must be, for [`stat_problem`].
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    /// Anything that exists.
    Any,
}

/// Why a path given in the template is not usable (checked at validate
/// time, as Packer's prepare does).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// It cannot be read: Go's `os.Stat` error text (`stat x: no such file
    /// or directory`).
    Invalid(String),
    /// A directory where a file is wanted.
    NotFile,
    /// Not a directory where one is wanted.
    NotDir,
}

/// Check `path` as Packer's prepare does: `None` when it is usable.
pub fn stat_problem(path: &str, kind: Kind) -> Option<Problem> {
    match std::fs::metadata(path) {
        Err(e) => Some(Problem::Invalid(format!("stat {path}: {}", os_error(&e)))),
        Ok(m) if kind == Kind::File && m.is_dir() => Some(Problem::NotFile),
        Ok(m) if kind == Kind::Dir && !m.is_dir() => Some(Problem::NotDir),
        Ok(_) => None,
    }
}

/// Packer's `validateFileConfig`/`validateDirConfig` messages of the
/// ansible provisioners: `key: path is invalid: stat path: ...`, `key:
/// path must point to a file` (or directory). Records the error; returns
/// whether the path is usable.
pub fn check_path(d: &mut Decoder<'_>, key: &str, path: &str, kind: Kind) -> bool {
    let msg = match stat_problem(path, kind) {
        None => return true,
        Some(Problem::Invalid(e)) => format!("{key}: {path} is invalid: {e}"),
        Some(Problem::NotFile) => format!("{key}: {path} must point to a file"),
        Some(Problem::NotDir) => format!("{key}: {path} must point to a directory"),
    };
    d.error(key, msg);
    false
}

/// An I/O error as Go prints an `os.Stat` failure's cause.
pub fn os_error(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file or directory".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        std::io::ErrorKind::NotADirectory => "not a directory".into(),
        _ => e.to_string(),
    }
}

/// `guest_os_type`: kiln provisions unix guests only. Returns false (and
/// records why) for `windows`, and for anything Packer does not know.
pub fn check_guest_os(d: &mut Decoder<'_>, value: &str) -> bool {
    match value.to_ascii_lowercase().as_str() {
        "" | "unix" => true,
        "windows" => {
            d.error(
                "guest_os_type",
                "guest_os_type \"windows\": kiln does not support Windows guests yet (only unix guests over SSH)",
            );
            false
        }
        other => {
            d.error(
                "guest_os_type",
                format!("Invalid guest_os_type: \"{other}\" (kiln supports \"unix\")"),
            );
            false
        }
    }
}

/// The communicator, or the error every provisioner gives for
/// `communicator: none`.
pub fn need_comm<'a>(
    comm: Option<&'a std::sync::Arc<dyn Communicator>>,
    what: &str,
) -> Result<&'a dyn Communicator, BuildError> {
    match comm {
        Some(c) => Ok(&**c),
        None => Err(BuildError::msg(format!(
            "the {what} provisioner needs a communicator, but this build has `communicator: none`"
        ))),
    }
}

/// Run `command` on the machine with its output streamed to the build's
/// UI (stdout as messages, stderr as errors, as Packer's `RunWithUi`);
/// returns its exit status (128 + the signal's number when a signal ended
/// it). A dropped connection is an error.
pub async fn run(
    ctx: &BuildCtx,
    comm: &dyn Communicator,
    command: &str,
) -> Result<i32, BuildError> {
    let ui = &*ctx.ui;
    let st = ctx
        .cancellable(async { Ok(comm.start(command, &UiOutput(ui)).await?) })
        .await?;
    status_code(st, command)
}

/// Like [`run`], with the output kept (shown only through the error when
/// the command fails).
pub async fn run_quiet(
    ctx: &BuildCtx,
    comm: &dyn Communicator,
    command: &str,
) -> Result<(i32, String), BuildError> {
    let out = CollectOutput::default();
    let st = ctx
        .cancellable(async { Ok(comm.start(command, &out).await?) })
        .await?;
    let code = status_code(st, command)?;
    let mut text = out
        .stdout
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .join("\n");
    let err = out
        .stderr
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .join("\n");
    if !err.is_empty() {
        if !text.is_empty() {
            text.push('\n');
        }
        text.push_str(&err);
    }
    Ok((code, text))
}

fn status_code(st: ExitStatus, command: &str) -> Result<i32, BuildError> {
    match st {
        ExitStatus::Code(c) => Ok(c),
        ExitStatus::Signal(s) => Ok(128 + kiln_core::communicator::signal_number(&s)),
        ExitStatus::Disconnected => Err(BuildError::msg(format!(
            "the connection to the machine was lost while running: {command}"
        ))),
    }
}

/// Upload the local file `src` to the remote path `dst` (mode 0644 unless
/// the file is executable, then 0755).
pub async fn upload_file(
    ctx: &BuildCtx,
    comm: &dyn Communicator,
    dst: &str,
    src: &Path,
) -> Result<(), BuildError> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(src)
        .map_err(|e| BuildError::msg(format!("Error opening: {}: {e}", src.display())))?;
    let mut f = tokio::fs::File::open(src)
        .await
        .map_err(|e| BuildError::msg(format!("Error opening: {}: {e}", src.display())))?;
    let fm = FileMeta {
        mode: meta.permissions().mode() & 0o777,
        size: Some(meta.len()),
    };
    ctx.cancellable(async { Ok(comm.upload(dst, &mut f, fm, &NoProgress).await) })
        .await?
        .map_err(|e| BuildError::msg(format!("Error uploading {}: {e}", src.display())))
}

/// Upload bytes to the remote path `dst`.
pub async fn upload_bytes(
    ctx: &BuildCtx,
    comm: &dyn Communicator,
    dst: &str,
    data: &[u8],
    mode: u32,
) -> Result<(), BuildError> {
    let mut r = data;
    let fm = FileMeta {
        mode,
        size: Some(data.len() as u64),
    };
    ctx.cancellable(async { Ok(comm.upload(dst, &mut r, fm, &NoProgress).await) })
        .await?
        .map_err(|e| BuildError::msg(format!("Error uploading {dst}: {e}")))
}

/// Upload the contents of the local directory `src` into the remote
/// directory `dst` (which must exist), skipping `exclude` (relative paths).
pub async fn upload_dir_contents(
    ctx: &BuildCtx,
    comm: &dyn Communicator,
    dst: &str,
    src: &Path,
    exclude: &[String],
) -> Result<(), BuildError> {
    let mut s = src.display().to_string();
    if !s.ends_with('/') {
        s.push('/');
    }
    ctx.cancellable(async {
        Ok(comm
            .upload_dir(dst, Path::new(&s), exclude, &NoProgress)
            .await)
    })
    .await?
    .map_err(|e| BuildError::msg(format!("Error uploading {}: {e}", src.display())))
}

/// The generated value of `key`, if the builder set one.
pub fn generated(ctx: &BuildCtx, key: &str) -> Option<String> {
    ctx.generated().get(key).cloned()
}

/// What Packer's builders without an HTTP server give as `PackerHTTPAddr`.
pub const HTTP_ADDR_NOT_IMPLEMENTED: &str = "ERR_HTTP_ADDR_NOT_IMPLEMENTED_BY_BUILDER";

/// The builder's HTTP server address (Packer's `PackerHTTPAddr`), or the
/// not-implemented marker.
pub fn http_addr(ctx: &BuildCtx) -> String {
    let g = ctx.generated();
    if let Some(a) = g.get("PackerHTTPAddr").filter(|a| !a.is_empty()) {
        return a.clone();
    }
    HTTP_ADDR_NOT_IMPLEMENTED.to_string()
}

/// Render a run-time template (`execute_command`, `extra_arguments`, ...)
/// with the builder's generated data and extra context values.
pub fn render(
    option: &str,
    template: &str,
    base: &kiln_template::Context,
    ctx: &BuildCtx,
    data: &[(&str, &str)],
) -> Result<String, BuildError> {
    let c = ctx.runtime_interp(base, data);
    kiln_template::interp::render(template, &c)
        .map_err(|e| BuildError::msg(format!("error interpolating `{option}`: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_paths() {
        assert_eq!(go_join(&["/tmp/x", "roles", "a/"]), "/tmp/x/roles/a");
        assert_eq!(go_join(&["/tmp/x", "/home/u/p.yml"]), "/tmp/x/home/u/p.yml");
        assert_eq!(go_join(&["/tmp/x", "../y"]), "/tmp/y");
        assert_eq!(go_base("/a/b/"), "b");
        assert_eq!(go_base("b"), "b");
        assert_eq!(go_dir("/a/b/c.yml"), "/a/b");
        assert_eq!(go_dir("c.yml"), ".");
        assert_eq!(go_clean("a/./b//c/.."), "a/b");
    }
}
