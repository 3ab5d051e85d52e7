//! An SSH server on `127.0.0.1` in front of kiln's communicator, for the
//! `ansible` provisioner (Packer's "proxy adapter"): Ansible connects to it
//! as to any host, and every session it opens is passed through to the
//! machine over the build's own connection.
//!
//! - **Authentication**: public key only; the user must be the one the
//!   inventory names and the key the one the provisioner generated (or the
//!   template's `ssh_authorized_key_file`). The host key is generated
//!   (ed25519) unless `ssh_host_key_file` gives one.
//! - **`exec`**: the command runs on the machine through
//!   [`Communicator::exec_piped`], its standard streams passed byte for
//!   byte in both directions, its exit status returned (128 + the signal
//!   number when a signal ended it, 255 when the connection was lost).
//! - **`sftp`**: the machine's `sftp-server` (the `sftp_command` key)
//!   runs the same way, so an OpenSSH 9 `scp` (which speaks SFTP) and
//!   Ansible's sftp transfers both work.
//! - **legacy `scp -t` / `scp -f`** (`scp -O`): kiln speaks the scp
//!   protocol itself and moves the file with the communicator's upload and
//!   download, as Packer's adapter does (files only: Ansible sends no
//!   directories this way).
//! - `pty-req` and `env` requests are accepted and ignored (commands run
//!   without a terminal), a `shell` request is refused, as in Packer.
//!
//! The server stops (and every session's task with it) when the
//! [`Adapter`] is dropped.
use kiln_core::{BuildError, Communicator, ExitStatus, Ui};
use russh::keys::ssh_key::public::KeyData;
use russh::keys::PrivateKey;
use russh::server::{Auth, Msg, Session};
use russh::{Channel, ChannelId, MethodKind};
use std::collections::HashMap;
use std::sync::Arc;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio_util::sync::CancellationToken;

/// The default `sftp_command`: the first `sftp-server` found in the usual
/// places (Packer's default, `/usr/lib/sftp-server -e`, is not where
/// Debian, Ubuntu or Fedora put it).
pub const DEFAULT_SFTP_COMMAND: &str = "for p in /usr/lib/sftp-server /usr/lib/openssh/sftp-server /usr/libexec/openssh/sftp-server /usr/libexec/sftp-server /usr/lib/ssh/sftp-server; do if [ -x \"$p\" ]; then exec \"$p\" -e; fi; done; echo 'kiln: no sftp-server found on the machine (set sftp_command)' >&2; exit 127";

/// What every session of the adapter needs.
struct Shared {
    comm: Arc<dyn Communicator>,
    ui: Arc<dyn Ui>,
    user: String,
    key: KeyData,
    sftp_command: String,
    stop: CancellationToken,
}

/// A running adapter: listening on `127.0.0.1:port` until dropped.
pub struct Adapter {
    pub port: u16,
    stop: CancellationToken,
}

impl Drop for Adapter {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// What the adapter is started with.
pub struct AdapterConfig {
    pub comm: Arc<dyn Communicator>,
    pub ui: Arc<dyn Ui>,
    /// The only user name accepted.
    pub user: String,
    /// The only client key accepted.
    pub authorized_key: KeyData,
    pub host_key: PrivateKey,
    /// `local_port`: try it and the nine ports after it; 0: any port.
    pub local_port: u16,
    pub sftp_command: String,
}

impl Adapter {
    pub async fn start(cfg: AdapterConfig) -> Result<Adapter, BuildError> {
        let listener = bind(&cfg).await?;
        let port = listener
            .local_addr()
            .map_err(|e| BuildError::msg(format!("Error setting up SSH proxy connection: {e}")))?
            .port();
        let stop = CancellationToken::new();
        let shared = Arc::new(Shared {
            comm: cfg.comm,
            ui: cfg.ui,
            user: cfg.user,
            key: cfg.authorized_key,
            sftp_command: cfg.sftp_command,
            stop: stop.clone(),
        });
        let config = Arc::new(russh::server::Config {
            keys: vec![cfg.host_key],
            methods: (&[MethodKind::PublicKey][..]).into(),
            auth_rejection_time: std::time::Duration::from_millis(50),
            auth_rejection_time_initial: Some(std::time::Duration::from_millis(0)),
            inactivity_timeout: None,
            nodelay: true,
            ..Default::default()
        });
        let stop2 = stop.clone();
        tokio::spawn(async move {
            loop {
                let conn = tokio::select! {
                    _ = stop2.cancelled() => return,
                    c = listener.accept() => c,
                };
                let Ok((sock, _)) = conn else { continue };
                let handler = Conn {
                    shared: shared.clone(),
                    channels: HashMap::new(),
                };
                let config = config.clone();
                let stop3 = stop2.clone();
                tokio::spawn(async move {
                    let Ok(session) = russh::server::run_stream(config, sock, handler).await else {
                        return;
                    };
                    let handle = session.handle();
                    tokio::select! {
                        _ = stop3.cancelled() => {
                            let _ = handle
                                .disconnect(russh::Disconnect::ByApplication, "kiln: provisioning is over".into(), "en".into())
                                .await;
                        }
                        _ = session => {}
                    }
                });
            }
        });
        Ok(Adapter { port, stop })
    }
}

async fn bind(cfg: &AdapterConfig) -> Result<tokio::net::TcpListener, BuildError> {
    let tries = if cfg.local_port == 0 { 1 } else { 10 };
    let mut last = String::new();
    for i in 0..tries {
        let port = if cfg.local_port == 0 {
            0
        } else {
            cfg.local_port.saturating_add(i)
        };
        match tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
            Ok(l) => return Ok(l),
            Err(e) => {
                last = format!("listen tcp 127.0.0.1:{port}: {e}");
                cfg.ui.say(&last);
            }
        }
    }
    Err(BuildError::msg(format!(
        "Error setting up SSH proxy connection: {last}"
    )))
}

/// One client connection.
struct Conn {
    shared: Arc<Shared>,
    /// Sessions opened and not yet given a command.
    channels: HashMap<ChannelId, Channel<Msg>>,
}

impl Conn {
    fn key_ok(&self, user: &str, key: &KeyData) -> bool {
        user == self.shared.user && *key == self.shared.key
    }
}

impl russh::server::Handler for Conn {
    type Error = russh::Error;

    async fn auth_publickey_offered(
        &mut self,
        user: &str,
        offer: russh::server::PublicKeyOffer<'_>,
    ) -> Result<Auth, Self::Error> {
        Ok(if self.key_ok(user, offer.public_key.key_data()) {
            Auth::Accept
        } else {
            Auth::reject()
        })
    }

    async fn auth_publickey(
        &mut self,
        user: &str,
        key: russh::server::VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        Ok(if self.key_ok(user, key.public_key.key_data()) {
            Auth::Accept
        } else {
            Auth::reject()
        })
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: russh::server::ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.channels.insert(channel.id(), channel);
        reply.accept().await;
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    async fn pty_request(
        &mut self,
        channel: ChannelId,
        _term: &str,
        _col_width: u32,
        _row_height: u32,
        _pix_width: u32,
        _pix_height: u32,
        _modes: &[(russh::Pty, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        // Accepted and ignored, as Packer (OpenSSH asks for one with -tt).
        session.channel_success(channel)
    }

    async fn env_request(
        &mut self,
        channel: ChannelId,
        _name: &str,
        _value: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_success(channel)
    }

    async fn shell_request(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_failure(channel)
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let Some(ch) = self.channels.remove(&channel) else {
            return session.channel_failure(channel);
        };
        let command = String::from_utf8_lossy(data).into_owned();
        if command.is_empty() {
            return session.channel_failure(channel);
        }
        session.channel_success(channel)?;
        let shared = self.shared.clone();
        tokio::spawn(async move {
            let stop = shared.stop.clone();
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = serve(shared, ch, Request::Exec(command)) => {}
            }
        });
        Ok(())
    }

    async fn subsystem_request(
        &mut self,
        channel: ChannelId,
        name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        if name != "sftp" {
            self.shared
                .ui
                .error(&format!("unsupported subsystem requested: {name}"));
            return session.channel_failure(channel);
        }
        let Some(ch) = self.channels.remove(&channel) else {
            return session.channel_failure(channel);
        };
        session.channel_success(channel)?;
        let shared = self.shared.clone();
        tokio::spawn(async move {
            let stop = shared.stop.clone();
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = serve(shared, ch, Request::Sftp) => {}
            }
        });
        Ok(())
    }

    async fn channel_close(
        &mut self,
        channel: ChannelId,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.channels.remove(&channel);
        Ok(())
    }
}

enum Request {
    Exec(String),
    Sftp,
}

/// Is this `scp` command one the adapter serves itself (`-t` or `-f`)?
/// Returns (the options, the path).
pub fn scp_request(command: &str) -> Option<(String, String)> {
    let rest = command.strip_prefix("scp ")?;
    let mut opts = String::new();
    let mut words = rest.split(' ').peekable();
    while let Some(w) = words.peek() {
        if let Some(o) = w.strip_prefix('-') {
            if o.is_empty() {
                break;
            }
            opts.push_str(o);
            words.next();
        } else if w.is_empty() {
            words.next();
        } else {
            break;
        }
    }
    if !opts.contains(['t', 'f']) {
        return None;
    }
    let path: Vec<&str> = words.collect();
    let path = path.join(" ");
    // Ansible quotes the path for the shell: unquote it.
    let path = shlex::split(&path).map(|w| w.join("")).unwrap_or(path);
    Some((opts, path.trim().to_string()))
}

/// Serve one session to its end: run it, send its exit status, close.
async fn serve(shared: Arc<Shared>, ch: Channel<Msg>, req: Request) {
    let (mut rx, tx) = ch.split();
    let mut stdin = rx.make_reader();
    let mut stdout = tx.make_writer();
    let mut stderr = tx.make_writer_ext(Some(1));
    let code = match req {
        Request::Exec(cmd) => match scp_request(&cmd) {
            Some((opts, path)) => {
                let r = if opts.contains('t') {
                    scp_sink(&*shared.comm, &path, &opts, &mut stdin, &mut stdout).await
                } else {
                    scp_source(&*shared.comm, &path, &mut stdin, &mut stdout).await
                };
                match r {
                    Ok(()) => 0,
                    Err(e) => {
                        let _ = stderr
                            .write_all(format!("kiln proxy: scp {path}: {e}\n").as_bytes())
                            .await;
                        1
                    }
                }
            }
            None => run_piped(&shared, &cmd, &mut stdin, &mut stdout, &mut stderr).await,
        },
        Request::Sftp => {
            let cmd = shared.sftp_command.clone();
            run_piped(&shared, &cmd, &mut stdin, &mut stdout, &mut stderr).await
        }
    };
    let _ = stdout.flush().await;
    let _ = stderr.flush().await;
    drop(stdout);
    drop(stderr);
    let _ = tx.exit_status(code as u32).await;
    let _ = tx.eof().await;
    let _ = tx.close().await;
}

async fn run_piped(
    shared: &Shared,
    cmd: &str,
    stdin: &mut (dyn AsyncRead + Send + Unpin),
    stdout: &mut (dyn AsyncWrite + Send + Unpin),
    stderr: &mut (dyn AsyncWrite + Send + Unpin),
) -> i32 {
    match shared.comm.exec_piped(cmd, stdin, stdout, stderr).await {
        Ok(ExitStatus::Code(c)) => c,
        Ok(ExitStatus::Signal(s)) => 128 + kiln_core::communicator::signal_number(&s),
        Ok(ExitStatus::Disconnected) => {
            shared
                .ui
                .error("kiln proxy: the connection to the machine was lost");
            255
        }
        Err(e) => {
            shared.ui.error(&format!("kiln proxy: {e}"));
            let _ = stderr
                .write_all(format!("kiln proxy: {e}\n").as_bytes())
                .await;
            255
        }
    }
}

const SCP_OK: &[u8] = b"\0";

/// Read the peer's one-byte answer (0 = fine; 1 or 2 and a message =
/// error).
async fn scp_answer<R: AsyncRead + Unpin>(r: &mut BufReader<R>) -> Result<(), String> {
    let mut b = [0u8; 1];
    r.read_exact(&mut b).await.map_err(|e| e.to_string())?;
    if b[0] == 0 {
        return Ok(());
    }
    let mut msg = String::new();
    let _ = r.read_line(&mut msg).await;
    Err(format!("scp client: {}", msg.trim()))
}

/// `scp -t path`: receive files from the client and upload each to the
/// machine (to `path`, or `path/<name>` when `-d` says it is a directory).
async fn scp_sink(
    comm: &dyn Communicator,
    target: &str,
    opts: &str,
    stdin: &mut (dyn AsyncRead + Send + Unpin),
    out: &mut (dyn AsyncWrite + Send + Unpin),
) -> Result<(), String> {
    let mut r = BufReader::new(stdin);
    out.write_all(SCP_OK).await.map_err(|e| e.to_string())?;
    out.flush().await.map_err(|e| e.to_string())?;
    loop {
        let mut line = String::new();
        let n = r.read_line(&mut line).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Ok(());
        }
        let line = line.trim_end_matches('\n');
        let (kind, rest) = line.split_at(line.len().min(1));
        match kind {
            "T" => {}
            "C" => {
                let mut f = rest.splitn(3, ' ');
                let mode = f.next().and_then(|m| u32::from_str_radix(m, 8).ok());
                let size = f.next().and_then(|s| s.parse::<u64>().ok());
                let name = f.next().unwrap_or("");
                let (Some(mode), Some(size)) = (mode, size) else {
                    let msg = format!("bad scp file header: {line}");
                    let _ = out.write_all(format!("\x02{msg}\n").as_bytes()).await;
                    return Err(msg);
                };
                let dst = if opts.contains('d') {
                    format!("{}/{name}", target.trim_end_matches('/'))
                } else {
                    target.to_string()
                };
                out.write_all(SCP_OK).await.map_err(|e| e.to_string())?;
                out.flush().await.map_err(|e| e.to_string())?;
                let mut body = (&mut r).take(size);
                let res = comm
                    .upload(
                        &dst,
                        &mut body,
                        kiln_core::communicator::FileMeta {
                            mode: mode & 0o777,
                            size: Some(size),
                        },
                        &kiln_core::communicator::NoProgress,
                    )
                    .await;
                // Whatever the upload did, the rest of the body and its
                // trailing zero byte are read.
                let mut rest = Vec::new();
                let _ = body.read_to_end(&mut rest).await;
                scp_answer(&mut r).await?;
                match res {
                    Ok(()) => {
                        out.write_all(SCP_OK).await.map_err(|e| e.to_string())?;
                        out.flush().await.map_err(|e| e.to_string())?;
                    }
                    Err(e) => {
                        let msg = format!("{dst}: {e}");
                        let _ = out.write_all(format!("\x02{msg}\n").as_bytes()).await;
                        return Err(msg);
                    }
                }
                continue;
            }
            "D" | "E" => {
                let msg =
                    "directory copies through the proxy are not supported (Ansible sends files)";
                let _ = out.write_all(format!("\x02{msg}\n").as_bytes()).await;
                return Err(msg.into());
            }
            _ => {
                let msg = format!("unexpected scp message: {line:?}");
                let _ = out.write_all(format!("\x02{msg}\n").as_bytes()).await;
                return Err(msg);
            }
        }
        out.write_all(SCP_OK).await.map_err(|e| e.to_string())?;
        out.flush().await.map_err(|e| e.to_string())?;
    }
}

/// `scp -f path`: download the file from the machine and send it.
async fn scp_source(
    comm: &dyn Communicator,
    path: &str,
    stdin: &mut (dyn AsyncRead + Send + Unpin),
    out: &mut (dyn AsyncWrite + Send + Unpin),
) -> Result<(), String> {
    let mut r = BufReader::new(stdin);
    let mut data: Vec<u8> = Vec::new();
    let got = comm
        .download(path, &mut data, &kiln_core::communicator::NoProgress)
        .await;
    // The client says it is ready first.
    scp_answer(&mut r).await?;
    if let Err(e) = got {
        let msg = format!("{path}: {e}");
        let _ = out.write_all(format!("\x02{msg}\n").as_bytes()).await;
        return Err(msg);
    }
    let name = crate::common::go_base(path);
    out.write_all(format!("C0644 {} {name}\n", data.len()).as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    out.flush().await.map_err(|e| e.to_string())?;
    scp_answer(&mut r).await?;
    out.write_all(&data).await.map_err(|e| e.to_string())?;
    out.write_all(SCP_OK).await.map_err(|e| e.to_string())?;
    out.flush().await.map_err(|e| e.to_string())?;
    scp_answer(&mut r).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scp_requests() {
        assert_eq!(
            scp_request("scp -t '/home/u/.ansible/tmp/x/AnsiballZ_setup.py'"),
            Some((
                "t".into(),
                "/home/u/.ansible/tmp/x/AnsiballZ_setup.py".into()
            ))
        );
        assert_eq!(
            scp_request("scp -v -d -t /tmp/dir"),
            Some(("vdt".into(), "/tmp/dir".into()))
        );
        assert_eq!(
            scp_request("scp -f /etc/hostname").unwrap().1,
            "/etc/hostname"
        );
        assert_eq!(scp_request("scp a b"), None);
        assert_eq!(scp_request("ls -t"), None);
    }
}
