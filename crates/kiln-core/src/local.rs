//! Running a command on this machine with its output streamed, line by
//! line, to the build's UI (stdout as messages, stderr as errors), as
//! Packer's shell-local communicator does.
//!
//! The command runs in its own process group with stdin from /dev/null.
//! When the build is cancelled the whole group gets SIGTERM, then SIGKILL
//! after a grace period; if the future is dropped before the command ends
//! (a panic, an abandoned build), the group is killed at once. Background
//! processes a command leaves behind after exiting normally are left alone,
//! as in Packer, but their holding stdout/stderr open delays completion
//! until they close it (Packer waits for the output too).
//!
//! Used by the shell-local provisioner and post-processor.
use crate::ui::Ui;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio_util::sync::CancellationToken;

/// How long a cancelled command may take to exit after SIGTERM.
pub const TERMINATE_GRACE: Duration = Duration::from_secs(3);

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("an empty command")]
    Empty,
    #[error("starting {program}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("waiting for {program}: {source}")]
    Wait {
        program: String,
        source: std::io::Error,
    },
    #[error("cancelled")]
    Cancelled,
}

/// Kills a process group when dropped (a step's future is dropped on
/// Ctrl-C, a panic unwinds), unless disarmed. With a zero grace the group
/// gets SIGKILL at once; otherwise SIGTERM first (so that a program such
/// as mmdebstrap unmounts what it mounted) and SIGKILL when the group is
/// still there after the grace period (waited for on a thread, so the drop
/// does not block).
pub struct GroupGuard {
    pgid: Option<Pid>,
    grace: Duration,
}

impl GroupGuard {
    /// A guard for the group `pgid` (the pid of a child started with
    /// `process_group(0)`; no group for an id that is not positive).
    pub fn new(pgid: i32, grace: Duration) -> Self {
        GroupGuard {
            pgid: (pgid > 0).then(|| Pid::from_raw(pgid)),
            grace,
        }
    }
    /// Send `sig` to the group now.
    pub fn signal(&self, sig: Signal) {
        if let Some(p) = self.pgid {
            let _ = killpg(p, sig);
        }
    }
    /// The group ended by itself: nothing to kill.
    pub fn disarm(&mut self) {
        self.pgid = None;
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        let Some(pg) = self.pgid.take() else { return };
        if self.grace.is_zero() {
            let _ = killpg(pg, Signal::SIGKILL);
            return;
        }
        if killpg(pg, Signal::SIGTERM).is_ok() {
            let grace = self.grace;
            std::thread::spawn(move || {
                let deadline = std::time::Instant::now() + grace;
                while std::time::Instant::now() < deadline {
                    if !group_alive(pg.as_raw()) {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                let _ = killpg(pg, Signal::SIGKILL);
            });
        }
    }
}

/// Whether any process of the group `pgid` still exists.
pub fn group_alive(pgid: i32) -> bool {
    killpg(Pid::from_raw(pgid), None).is_ok()
}

/// Wait (polling) until the group `pgid` has no process left, or
/// `timeout`; whether it is gone.
pub async fn wait_group_gone(pgid: i32, timeout: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    while group_alive(pgid) {
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    true
}

/// The program `name` as the shell would find it: a name with a `/` is
/// taken as a path (when it is a file), any other name is looked for in
/// the directories of `PATH`, in order. The one lookup every crate uses
/// (tools a step needs, tools a test needs).
pub fn which(name: &str) -> Option<std::path::PathBuf> {
    if name.contains('/') {
        let p = std::path::PathBuf::from(name);
        return p.is_file().then_some(p);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// What Packer prints of an output line: trailing white space removed, and
/// only the text after the last carriage return (what a terminal shows).
pub fn clean_line(line: &str) -> &str {
    let line = line.trim_end();
    match line.rfind('\r') {
        Some(i) => &line[i + 1..],
        None => line,
    }
}

async fn pump<R: AsyncRead + Unpin>(r: R, sink: impl Fn(&str)) {
    let mut r = BufReader::new(r);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match r.read_until(b'\n', &mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => sink(clean_line(&String::from_utf8_lossy(&buf))),
        }
    }
}

/// Run `argv` with `env` added to this process's environment; stream its
/// output to `ui`; return its exit code (-1 if a signal ended it, as Go
/// reports it).
pub async fn run_streaming(
    argv: &[String],
    env: &[(String, String)],
    ui: &dyn Ui,
    cancel: &CancellationToken,
) -> Result<i32, ExecError> {
    let (program, args) = argv.split_first().ok_or(ExecError::Empty)?;
    if cancel.is_cancelled() {
        return Err(ExecError::Cancelled);
    }
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|source| ExecError::Spawn {
        program: program.clone(),
        source,
    })?;
    let pgid = child.id().and_then(|id| i32::try_from(id).ok());
    let mut guard = GroupGuard::new(pgid.unwrap_or(0), Duration::ZERO);
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();

    let finished = {
        let out = async {
            if let Some(s) = stdout {
                pump(s, |l| ui.message(l)).await
            }
        };
        let err = async {
            if let Some(s) = stderr {
                pump(s, |l| ui.error(l)).await
            }
        };
        let all = async {
            let (_, _, status) = tokio::join!(out, err, child.wait());
            status
        };
        tokio::select! {
            biased;
            _ = cancel.cancelled() => None,
            status = all => Some(status),
        }
    };

    match finished {
        Some(status) => {
            guard.disarm();
            let status = status.map_err(|source| ExecError::Wait {
                program: program.clone(),
                source,
            })?;
            Ok(status.code().unwrap_or(-1))
        }
        None => {
            guard.signal(Signal::SIGTERM);
            if tokio::time::timeout(TERMINATE_GRACE, child.wait())
                .await
                .is_err()
            {
                guard.signal(Signal::SIGKILL);
                let _ = child.kill().await;
            }
            // Whatever else of the group is still alive goes now.
            drop(guard);
            Err(ExecError::Cancelled)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::which;

    #[test]
    fn which_finds_programs_on_path_and_takes_paths_as_they_are() {
        let sh = which("sh").expect("sh on PATH");
        assert!(sh.is_absolute() && sh.ends_with("sh"), "{}", sh.display());
        assert_eq!(which(&sh.display().to_string()), Some(sh));
        assert_eq!(which("kiln-no-such-program-here"), None);
        assert_eq!(which("/nonexistent/sh"), None);
        // A directory is not a program.
        assert_eq!(which("/"), None);
    }
}
