//! How kiln reaches a machine: run a command, move files.
//!
//! Implemented by `kiln-ssh` (SSH) and used by the provisioners. `none` is the
//! absence of a communicator (`Option<Arc<dyn Communicator>>`).
use async_trait::async_trait;
use std::path::Path;
use tokio::io::{AsyncRead, AsyncWrite};

/// How a remote command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitStatus {
    Code(i32),
    /// Killed by a signal (name as the server reports it, e.g. "KILL").
    Signal(String),
    /// The connection dropped before an exit status arrived (e.g. the
    /// command rebooted the machine).
    Disconnected,
}

/// A signal's number as Go's ssh package knows it (0 if unknown): Packer
/// reports a command killed by a signal as exit status 128 + this.
pub fn signal_number(name: &str) -> i32 {
    match name {
        "HUP" => 1,
        "INT" => 2,
        "QUIT" => 3,
        "ILL" => 4,
        "ABRT" => 6,
        "FPE" => 8,
        "KILL" => 9,
        "USR1" => 10,
        "SEGV" => 11,
        "USR2" => 12,
        "PIPE" => 13,
        "ALRM" => 14,
        "TERM" => 15,
        _ => 0,
    }
}

/// Receives a remote command's output, line by line, as it arrives.
pub trait OutputSink: Send + Sync {
    fn stdout_line(&self, line: &str);
    fn stderr_line(&self, line: &str);
}

/// Metadata for an uploaded file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileMeta {
    /// Permission bits (e.g. 0o644).
    pub mode: u32,
    /// Size in bytes when known (for progress).
    pub size: Option<u64>,
}

/// Progress of a transfer, reported as bytes move.
pub trait TransferProgress: Send + Sync {
    fn start(&self, total_bytes: Option<u64>);
    fn advance(&self, bytes: u64);
    fn finish(&self);
}

/// A progress reporter that reports nothing.
pub struct NoProgress;
impl TransferProgress for NoProgress {
    fn start(&self, _: Option<u64>) {}
    fn advance(&self, _: u64) {}
    fn finish(&self) {}
}

#[derive(Debug, thiserror::Error)]
pub enum CommError {
    /// The connection is gone (reboot, network drop).
    #[error("connection lost: {0}")]
    Disconnected(String),
    #[error("{0}")]
    Remote(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Other(String),
}

#[async_trait]
pub trait Communicator: Send + Sync {
    /// Run `command` through the remote shell; stream its output to `out`.
    /// A dropped connection is `Ok(ExitStatus::Disconnected)`, not an error.
    async fn start(&self, command: &str, out: &dyn OutputSink) -> Result<ExitStatus, CommError>;

    /// Write `src` to the remote file `dst` (parent must exist), with `meta.mode`.
    async fn upload(
        &self,
        dst: &str,
        src: &mut (dyn AsyncRead + Send + Unpin),
        meta: FileMeta,
        progress: &dyn TransferProgress,
    ) -> Result<(), CommError>;

    /// Upload a local directory with Packer's semantics: if `src` ends in
    /// `/`, its contents go into `dst`; otherwise `dst/<basename of src>` is
    /// created. Modes are preserved. `exclude` are relative paths to skip.
    async fn upload_dir(
        &self,
        dst: &str,
        src: &Path,
        exclude: &[String],
        progress: &dyn TransferProgress,
    ) -> Result<(), CommError>;

    /// Read the remote file `src` into `dst`.
    async fn download(
        &self,
        src: &str,
        dst: &mut (dyn AsyncWrite + Send + Unpin),
        progress: &dyn TransferProgress,
    ) -> Result<(), CommError>;

    /// Download a remote directory into the local directory `dst`, with the
    /// same trailing-slash semantics as `upload_dir`.
    async fn download_dir(
        &self,
        src: &str,
        dst: &Path,
        progress: &dyn TransferProgress,
    ) -> Result<(), CommError>;

    /// Re-establish the connection after a disconnect (e.g. a reboot),
    /// retrying until `timeout`.
    async fn reconnect(&self, timeout: std::time::Duration) -> Result<(), CommError>;

    /// Run `command` through the remote shell with its standard streams
    /// connected byte for byte (no line splitting, no pty): `stdin` is sent
    /// until it ends (then the command sees end of file), stdout and
    /// stderr are written as they arrive. What an SSH server in front of
    /// the communicator needs to pass a client's `exec` or `sftp` session
    /// through (the `ansible` provisioner's proxy). A communicator that
    /// cannot do it says so (the default).
    async fn exec_piped(
        &self,
        command: &str,
        stdin: &mut (dyn AsyncRead + Send + Unpin),
        stdout: &mut (dyn AsyncWrite + Send + Unpin),
        stderr: &mut (dyn AsyncWrite + Send + Unpin),
    ) -> Result<ExitStatus, CommError> {
        let _ = (command, stdin, stdout, stderr);
        Err(CommError::Other(
            "this communicator cannot run a command with piped standard streams".into(),
        ))
    }
}
