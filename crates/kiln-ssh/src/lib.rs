//! kiln's SSH communicator.
//!
//! - [`SshConfig::decode`]: every communicator key of Packer 1.6.6
//!   (`communicator`, `ssh_*`, `pause_before_connecting`,
//!   `temporary_key_pair_*`, `winrm_*`), honoured or reported as "not
//!   supported by kiln yet".
//! - [`TempKeyPair::for_config`]: the key pair builders hand to the machine,
//!   of the template's `temporary_key_pair_type` / `_bits` (Packer's types
//!   and defaults: RSA 4096 unless said otherwise, ECDSA, ed25519; the
//!   builder passes its default for when the template says nothing);
//!   [`TempKeyPair::generate`] makes an ed25519 one.
//! - [`connect`]: connect with fast retries until `ssh_timeout`, fail at once
//!   on refused credentials, pin the host key for the rest of the build.
//! - [`SshCommunicator`]: implements [`kiln_core::Communicator`] (commands
//!   with live output, uploads and downloads of files and directories with
//!   Packer's semantics, reconnection after a reboot).
//! - [`clear_authorized_keys`]: Packer's `ssh_clear_authorized_keys`.
//! - [`SshCommunicator::drop_connection_now`]: for a builder that knows the
//!   machine was reset (a QMP `RESET` event): the connection is dropped at
//!   once, the running command returns `Disconnected` (as
//!   `expect_disconnect` wants) without waiting for keep-alives to miss.
//!
//! # Why russh
//!
//! kiln needs an SSH client that is async (builds run in parallel on one
//! tokio runtime, and every wait must be cancellable by Ctrl-C), that can
//! stream many channels over one connection, and that builds without a C
//! toolchain or system libraries. The candidates were:
//!
//! - `ssh2` (libssh2 bindings): blocking, a C library to build and link,
//!   and libssh2's throughput on large transfers is far below OpenSSH's.
//! - `openssh` (drives the `ssh` binary through a control master): needs
//!   OpenSSH on the build host and gives no control over host keys or
//!   authentication errors beyond parsing messages.
//! - `russh`: pure Rust, tokio-native, actively maintained, with
//!   AES-GCM/ChaCha20-Poly1305 through `ring` (already in kiln's dependency
//!   tree for TLS), curve25519 key exchange, ed25519/RSA/ECDSA keys, agent
//!   and certificate authentication, keep-alives and a host-key callback
//!   (which is how kiln pins the host key). Its channels take owned `Bytes`
//!   so bulk data is not copied on the way in.
//!
//! russh it is. kiln prefers AES-GCM (AES-NI makes it the fastest cipher
//! for the bulk transfers of the file provisioner) and uses 64 KiB packets
//! and a 16 MiB receive window.
//!
//! # Connecting
//!
//! A booting machine first refuses TCP connections, then may accept them
//! before sshd answers. kiln retries "not up yet" failures quickly (50 ms,
//! doubling to 1 s) so a build waits at most about a second longer than the
//! guest takes to open port 22. A refusal of the credentials is different:
//! it is reported at once, saying which user and which credentials were
//! tried and which methods the server offers, unless
//! `ssh_handshake_attempts` asks kiln to try again (Packer retries 10 times
//! by default, silently, which makes a wrong password take minutes to show).
//!
//! Several TCP connections may be open at once while a machine boots (see
//! `HEDGE_INTERVAL` in [`client`]): one that is refused or closed without a
//! banner does not end the others; the attempt fails only when all have.
//!
//! The host key seen at the first connection is remembered; a different key
//! on any later connection of the build (after a reboot, say) is refused.
//! Packer does not check host keys at all.
//!
//! # Transfers
//!
//! See [`transfer`] for the design: one exec channel per transfer, a tar
//! stream for directories, `cat` for files, no per-file round trips.
pub mod client;
pub mod config;
pub mod keys;
mod piped;
pub mod transfer;

pub use client::{connect, SshCommunicator};
pub use config::{CommType, SshConfig};
pub use keys::{TempKeyPair, TempKeyType};
pub use transfer::shell_quote;

use kiln_core::communicator::{CommError, FileMeta, TransferProgress};
use kiln_core::{async_trait, Communicator, ExitStatus, OutputSink};
use std::path::Path;
use tokio::io::{AsyncRead, AsyncWrite};

#[async_trait]
impl Communicator for SshCommunicator {
    async fn start(&self, command: &str, out: &dyn OutputSink) -> Result<ExitStatus, CommError> {
        self.run_streamed(command, out).await
    }

    async fn upload(
        &self,
        dst: &str,
        src: &mut (dyn AsyncRead + Send + Unpin),
        meta: FileMeta,
        progress: &dyn TransferProgress,
    ) -> Result<(), CommError> {
        self.upload_file(dst, src, meta, progress).await
    }

    async fn upload_dir(
        &self,
        dst: &str,
        src: &Path,
        exclude: &[String],
        progress: &dyn TransferProgress,
    ) -> Result<(), CommError> {
        self.upload_directory(dst, src, exclude, progress).await
    }

    async fn download(
        &self,
        src: &str,
        dst: &mut (dyn AsyncWrite + Send + Unpin),
        progress: &dyn TransferProgress,
    ) -> Result<(), CommError> {
        self.download_file(src, dst, progress).await
    }

    async fn download_dir(
        &self,
        src: &str,
        dst: &Path,
        progress: &dyn TransferProgress,
    ) -> Result<(), CommError> {
        self.download_directory(src, dst, progress).await
    }

    async fn reconnect(&self, timeout: std::time::Duration) -> Result<(), CommError> {
        self.do_reconnect(timeout).await
    }

    async fn exec_piped(
        &self,
        command: &str,
        stdin: &mut (dyn AsyncRead + Send + Unpin),
        stdout: &mut (dyn AsyncWrite + Send + Unpin),
        stderr: &mut (dyn AsyncWrite + Send + Unpin),
    ) -> Result<ExitStatus, CommError> {
        self.run_piped(command, stdin, stdout, stderr).await
    }
}

/// Collects a command's output (for small helper commands).
#[derive(Default)]
pub struct CollectOutput {
    pub stdout: std::sync::Mutex<Vec<String>>,
    pub stderr: std::sync::Mutex<Vec<String>>,
}

impl OutputSink for CollectOutput {
    fn stdout_line(&self, line: &str) {
        self.stdout
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(line.to_string());
    }
    fn stderr_line(&self, line: &str) {
        self.stderr
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(line.to_string());
    }
}

/// Streams a command's output to a build's UI: stdout as `    name: line`,
/// stderr as `==> name: line` in red (as Packer shows remote commands).
pub struct UiOutput<'a>(pub &'a dyn kiln_core::Ui);

impl OutputSink for UiOutput<'_> {
    fn stdout_line(&self, line: &str) {
        self.0.message(line);
    }
    fn stderr_line(&self, line: &str) {
        self.0.error(line);
    }
}

/// Packer's `ssh_clear_authorized_keys`: remove the temporary key's line
/// from `~/.ssh/authorized_keys` of the user and (through sudo) of root.
/// Failures are reported, never fatal (as in Packer).
pub async fn clear_authorized_keys(
    comm: &dyn Communicator,
    key: &TempKeyPair,
    ui: &dyn kiln_core::Ui,
) {
    ui.say("Trying to remove ephemeral keys from authorized_keys files");
    let pat = key
        .name
        .replace(['/', '.', '*', '[', ']', '\\', '^', '$'], ".");
    let cmds = [
        format!("sed -i.bak '/ {pat}$/d' ~/.ssh/authorized_keys; rm ~/.ssh/authorized_keys.bak"),
        format!("sudo sed -i.bak '/ {pat}$/d' /root/.ssh/authorized_keys; sudo rm /root/.ssh/authorized_keys.bak"),
    ];
    for c in cmds {
        if let Err(e) = comm.start(&c, &UiOutput(ui)).await {
            ui.error(&format!(
                "Error cleaning up authorized_keys; please clean up keys manually: {e}"
            ));
        }
    }
}
