//! The SSH connection: connecting with retries, authentication, host-key
//! pinning, running commands.
use crate::config::{cipher_name, kex_name, SshConfig};
use crate::keys::{load_private_key, TempKeyPair};
use kiln_core::communicator::CommError;
use kiln_core::{BuildCtx, BuildError, ExitStatus, OutputSink, Ui};
use russh::client::{Handle, KeyboardInteractiveAuthResponse};
use russh::keys::ssh_key::public::KeyData;
use russh::keys::{
    Certificate, HashAlg, PrivateKey, PrivateKeyWithHashAlg, PublicKeyOrCertificate,
};
use russh::{ChannelMsg, MethodKind};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

/// How long one TCP connection attempt may take.
const TCP_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the SSH handshake and authentication may take (Packer: 1 minute).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(60);
/// While a TCP connection is open but the server has not spoken yet, open
/// another one every this often (the first to speak wins).
///
/// Why: QEMU's user-mode network (and some NAT gateways) accept the TCP
/// connection on the host side at once and only then try the guest, which
/// may not even have its network up yet. That connection then waits for
/// the forwarder's retransmissions, which back off to many seconds: a
/// client that only waits on it learns that sshd is up long after it is.
/// A fresh connection gets a fresh, immediate try; the older ones are kept,
/// so a server that is merely slow to greet still gets through.
const HEDGE_INTERVAL: Duration = Duration::from_secs(2);
/// At most this many silent connections are kept open at once (the
/// oldest is closed to open a new one).
const MAX_SILENT: usize = 8;
/// First retry delay while the machine is not up; doubles up to
/// [`MAX_RETRY_DELAY`].
const FIRST_RETRY_DELAY: Duration = Duration::from_millis(50);
const MAX_RETRY_DELAY: Duration = Duration::from_secs(1);
/// Pause between authentication attempts when `ssh_handshake_attempts`
/// allows more than one (Packer: 2s).
const AUTH_RETRY_DELAY: Duration = Duration::from_secs(2);

/// One way to log in.
#[derive(Clone)]
enum AuthMethod {
    Key {
        key: Arc<PrivateKey>,
        cert: Option<Box<Certificate>>,
        label: String,
    },
    Agent,
    Password(String),
}

impl AuthMethod {
    fn label(&self) -> String {
        match self {
            AuthMethod::Key { label, .. } => label.clone(),
            AuthMethod::Agent => "keys of the SSH agent".into(),
            AuthMethod::Password(_) => "password".into(),
        }
    }
}

/// Why one connection attempt failed.
#[derive(Debug)]
enum AttemptError {
    /// Nothing (or nothing SSH) answers yet: retry.
    NotUp(String),
    /// The server said no to every credential.
    AuthRefused { tried: Vec<String>, allowed: String },
    /// The server's host key is not the one seen before.
    HostKeyChanged { before: String, now: String },
    /// Anything else that retrying cannot fix.
    Fatal(String),
}

/// russh's client handler: records (and checks) the server's host key.
struct Client {
    pinned: Option<KeyData>,
    seen: Arc<StdMutex<Option<KeyData>>>,
}

impl russh::client::Handler for Client {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let data = match key {
            PublicKeyOrCertificate::PublicKey { key, .. } => key.key_data().clone(),
            PublicKeyOrCertificate::Certificate(c) => c.public_key().clone(),
        };
        let ok = self.pinned.as_ref().is_none_or(|p| *p == data);
        *self.seen.lock().unwrap_or_else(|e| e.into_inner()) = Some(data);
        Ok(ok)
    }
}

fn fingerprint(k: &KeyData) -> String {
    k.fingerprint(HashAlg::Sha256).to_string()
}

/// kiln's SSH communicator. Cheap to share (`Arc`); commands and transfers
/// may run concurrently over the one connection.
pub struct SshCommunicator {
    pub(crate) host: String,
    pub(crate) port: u16,
    cfg: SshConfig,
    auth: Vec<AuthMethod>,
    russh_cfg: Arc<russh::client::Config>,
    handle: tokio::sync::Mutex<Option<Arc<Handle<Client>>>>,
    /// A second descriptor of the current connection's socket, to shut it
    /// down at once ([`SshCommunicator::drop_connection_now`]).
    socket: StdMutex<Option<std::net::TcpStream>>,
    host_key: StdMutex<Option<KeyData>>,
    ui: Arc<dyn Ui>,
    cancel: CancellationToken,
}

impl std::fmt::Debug for SshCommunicator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SshCommunicator")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.cfg.username)
            .finish_non_exhaustive()
    }
}

/// Connect to `host:port` as `cfg` says, retrying until `cfg.timeout`
/// (`ssh_timeout`) while the machine is not up yet, and failing at once
/// (unless `ssh_handshake_attempts` allows more) when the server refuses the
/// credentials. `key` is the builder's temporary key pair, tried after
/// `ssh_private_key_file` and before `ssh_password`.
///
/// Says "Waiting for SSH to become available..." and "Connected to SSH!"
/// like Packer, honours `pause_before_connecting`, registers `ssh_password`
/// as a secret, and stops when `ctx.cancel` fires.
pub async fn connect(
    cfg: &SshConfig,
    host: &str,
    port: u16,
    key: Option<&TempKeyPair>,
    ctx: &BuildCtx,
) -> Result<Arc<SshCommunicator>, BuildError> {
    if let Some(p) = &cfg.password {
        ctx.ui.add_secret(p);
    }
    let comm = SshCommunicator::new(cfg, host, port, key, ctx)?;
    // What Packer's provisioners learn of the connection (its
    // `PopulateProvisionHookData`): the `ansible` provisioner gives the
    // user's key file to Ansible when it reaches the machine directly.
    ctx.set_generated("ConnType", "ssh");
    if let Some(f) = &cfg.private_key_file {
        let abs = std::path::absolute(f).unwrap_or_else(|_| f.clone());
        ctx.set_generated("SSHPrivateKeyFile", abs.display().to_string());
    }
    ctx.set_generated("SSHAgentAuth", cfg.agent_auth.to_string());
    ctx.ui
        .say(&format!("Using ssh communicator to connect: {host}"));
    ctx.ui.say("Waiting for SSH to become available...");
    comm.wait_connected(cfg.timeout, true).await?;
    ctx.ui.say("Connected to SSH!");
    if let Some(p) = cfg.pause_before_connecting {
        ctx.ui.say(&format!(
            "Pausing {} before connecting...",
            kiln_core::build::go_duration(p)
        ));
        ctx.sleep(p).await?;
        comm.drop_connection().await;
        comm.wait_connected(cfg.timeout, true).await?;
    }
    Ok(Arc::new(comm))
}

impl SshCommunicator {
    fn new(
        cfg: &SshConfig,
        host: &str,
        port: u16,
        key: Option<&TempKeyPair>,
        ctx: &BuildCtx,
    ) -> Result<Self, BuildError> {
        let cert = match &cfg.certificate_file {
            Some(p) => Some(Box::new(russh::keys::load_openssh_certificate(p).map_err(
                |e| BuildError::msg(format!("reading ssh_certificate_file {}: {e}", p.display())),
            )?)),
            None => None,
        };
        let mut auth = Vec::new();
        if cfg.agent_auth {
            auth.push(AuthMethod::Agent);
        }
        if let Some(p) = &cfg.private_key_file {
            let k = load_private_key(p)
                .map_err(|e| BuildError::msg(format!("ssh_private_key_file is invalid: {e}")))?;
            auth.push(AuthMethod::Key {
                key: Arc::new(k),
                cert: cert.clone(),
                label: format!("key {}", p.display()),
            });
        }
        if let Some(t) = key {
            let k = t
                .private_key()
                .map_err(|e| BuildError::msg(format!("the temporary key pair is invalid: {e}")))?;
            ctx.ui.add_secret(t.private_openssh.trim());
            auth.push(AuthMethod::Key {
                key: Arc::new(k),
                cert: if cfg.private_key_file.is_none() {
                    cert
                } else {
                    None
                },
                label: format!("temporary key {}", t.name),
            });
        }
        if let Some(p) = &cfg.password {
            auth.push(AuthMethod::Password(p.clone()));
        }
        if auth.is_empty() {
            return Err(BuildError::msg(format!(
                "no way to log in to {host} as `{}`: set ssh_password, ssh_private_key_file or ssh_agent_auth (or use a builder that generates a temporary key pair)",
                cfg.username
            )));
        }

        let mut preferred = russh::Preferred::default();
        // AES-GCM first: with AES-NI it is the fastest cipher for bulk
        // transfers; chacha20-poly1305 next.
        let mut ciphers: Vec<russh::cipher::Name> = vec![
            russh::cipher::AES_128_GCM,
            russh::cipher::AES_256_GCM,
            russh::cipher::CHACHA20_POLY1305,
        ];
        for c in preferred.cipher.iter() {
            if !ciphers.contains(c) {
                ciphers.push(*c);
            }
        }
        if let Some(list) = &cfg.ciphers {
            ciphers = list.iter().filter_map(|n| cipher_name(n)).collect();
        }
        preferred.cipher = ciphers.into();
        if let Some(list) = &cfg.kex_algorithms {
            let mut kex: Vec<russh::kex::Name> = list.iter().filter_map(|n| kex_name(n)).collect();
            // Protocol extensions are not algorithms: keep them.
            for k in preferred.kex.iter() {
                let s: &str = k.as_ref();
                if (s.starts_with("ext-info") || s.starts_with("kex-strict")) && !kex.contains(k) {
                    kex.push(*k);
                }
            }
            preferred.kex = kex.into();
        }
        let russh_cfg = russh::client::Config {
            preferred,
            // Bigger windows than the default 2 MiB for fast downloads.
            window_size: 16 * 1024 * 1024,
            maximum_packet_size: 65535,
            channel_buffer_size: 256,
            keepalive_interval: cfg.keep_alive_interval,
            keepalive_max: 3,
            inactivity_timeout: cfg.read_write_timeout,
            nodelay: true,
            ..Default::default()
        };
        Ok(SshCommunicator {
            host: host.to_string(),
            port,
            cfg: cfg.clone(),
            auth,
            russh_cfg: Arc::new(russh_cfg),
            handle: tokio::sync::Mutex::new(None),
            socket: StdMutex::new(None),
            host_key: StdMutex::new(None),
            ui: ctx.ui.clone(),
            cancel: ctx.cancel.clone(),
        })
    }

    /// The user kiln logs in as.
    pub fn user(&self) -> &str {
        &self.cfg.username
    }

    /// SHA256 fingerprint of the host key seen at the first connection.
    pub fn host_key_fingerprint(&self) -> Option<String> {
        self.host_key
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(fingerprint)
    }

    fn addr(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// Forget the current connection (closing it).
    pub(crate) async fn drop_connection(&self) {
        let h = self.handle.lock().await.take();
        if let Some(h) = h {
            let _ = h
                .disconnect(russh::Disconnect::ByApplication, "", "en")
                .await;
        }
    }

    /// Drop the connection now, without a word to the server: for a builder
    /// that knows the machine was reset (QEMU's `RESET` event, say), whose
    /// TCP peer vanished without a FIN, so that nothing waits for the
    /// keep-alives to notice (up to `ssh_keep_alive_interval` x 3).
    ///
    /// The socket is shut down under the SSH session: a command running
    /// over it returns [`ExitStatus::Disconnected`] at once (what
    /// `expect_disconnect` expects), a transfer fails with
    /// [`CommError::Disconnected`]. The next command or
    /// [`kiln_core::Communicator::reconnect`] connects afresh (with the host
    /// key still pinned). Does nothing when there is no connection. Not
    /// async, so it can be called from any event handler.
    pub fn drop_connection_now(&self) {
        if let Some(s) = self.socket.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
        // Forget the handle too, unless someone holds the lock (they then
        // find it closed).
        if let Ok(mut g) = self.handle.try_lock() {
            *g = None;
        }
    }

    fn set_socket(&self, s: std::net::TcpStream) {
        *self.socket.lock().unwrap_or_else(|e| e.into_inner()) = Some(s);
    }

    /// A TCP connection on which the server has spoken (sent the first
    /// bytes of its banner, RFC 4253 4.2). Opens another connection every
    /// [`HEDGE_INTERVAL`] while the open ones are silent. A connection that
    /// is refused, cannot be made or is closed without a banner is a
    /// failure of that connection only: the others (one merely slow to
    /// greet) go on until one speaks or the budget is spent; when every
    /// one has failed, that is reported at once (the caller retries).
    async fn speaking_stream(&self, budget: Duration) -> Result<TcpStream, AttemptError> {
        let addr = self.addr();
        let deadline = Instant::now() + budget;
        let mut pending = tokio::task::JoinSet::new();
        let mut open = std::collections::VecDeque::new();
        let mut last_err: Option<String> = None;
        loop {
            if open.len() >= MAX_SILENT {
                let oldest: tokio::task::AbortHandle = open.pop_front().expect("not empty");
                oldest.abort();
            }
            let (host, port) = (self.host.clone(), self.port);
            let connect_budget = deadline
                .saturating_duration_since(Instant::now())
                .min(TCP_CONNECT_TIMEOUT);
            open.push_back(pending.spawn(async move {
                let tcp = match tokio::time::timeout(
                    connect_budget,
                    TcpStream::connect((host.as_str(), port)),
                )
                .await
                {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => return Err(e.to_string()),
                    Err(_) => return Err("no answer".to_string()),
                };
                let _ = tcp.set_nodelay(true);
                tcp.readable().await.map_err(|e| e.to_string())?;
                // Readable at end of file: closed without a banner (a
                // forwarder whose guest refused it). A failure of this
                // connection only: the others go on.
                let mut b = [0u8; 1];
                match tcp.peek(&mut b).await {
                    Ok(0) => Err("the connection was closed before the SSH banner".to_string()),
                    Ok(_) => Ok(tcp),
                    Err(e) => Err(e.to_string()),
                }
            }));
            let hedge =
                tokio::time::sleep_until((Instant::now() + HEDGE_INTERVAL).min(deadline).into());
            tokio::pin!(hedge);
            loop {
                tokio::select! {
                    r = pending.join_next() => match r {
                        Some(Ok(Ok(tcp))) => return Ok(tcp),
                        // One attempt failed: the others (an older one
                        // still waiting for its banner, say) go on; only
                        // when none is left is this a failure.
                        Some(Ok(Err(e))) => {
                            if pending.is_empty() {
                                return Err(AttemptError::NotUp(format!("connecting to {addr}: {e}")));
                            }
                            last_err = Some(e);
                        }
                        // An aborted oldest connection.
                        Some(Err(_)) => {
                            if pending.is_empty() {
                                break;
                            }
                        }
                        None => break,
                    },
                    _ = &mut hedge => break,
                }
            }
            if Instant::now() >= deadline {
                return Err(AttemptError::NotUp(match last_err {
                    Some(e) => format!(
                        "connecting to {addr}: {e} (and an accepted connection sent no SSH banner)"
                    ),
                    None => format!("{addr} accepted the connection but sent no SSH banner"),
                }));
            }
        }
    }

    /// One attempt: TCP, handshake, authentication.
    async fn attempt(
        &self,
        budget: Duration,
    ) -> Result<(Handle<Client>, std::net::TcpStream), AttemptError> {
        let addr = self.addr();
        let tcp = self.speaking_stream(budget).await?;
        // Keep a second descriptor of the socket, to shut it down at once.
        let (tcp, sock) = {
            let e = |e: std::io::Error| AttemptError::NotUp(format!("connecting to {addr}: {e}"));
            let std_tcp = tcp.into_std().map_err(e)?;
            let sock = std_tcp.try_clone().map_err(e)?;
            (TcpStream::from_std(std_tcp).map_err(e)?, sock)
        };
        let pinned = self
            .host_key
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let seen = Arc::new(StdMutex::new(None));
        let handler = Client {
            pinned: pinned.clone(),
            seen: seen.clone(),
        };
        let budget = budget.min(HANDSHAKE_TIMEOUT);
        let started = Instant::now();
        let hs = tokio::time::timeout(
            budget,
            russh::client::connect_stream(self.russh_cfg.clone(), tcp, handler),
        )
        .await;
        let seen_key = seen.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let mut handle = match hs {
            Ok(Ok(h)) => h,
            Ok(Err(e)) => {
                if let (Some(p), Some(s)) = (&pinned, &seen_key) {
                    if p != s {
                        return Err(AttemptError::HostKeyChanged {
                            before: fingerprint(p),
                            now: fingerprint(s),
                        });
                    }
                }
                return Err(match e {
                    russh::Error::NoCommonAlgo { .. } => AttemptError::Fatal(format!(
                        "SSH handshake with {addr}: {e} (check ssh_ciphers / ssh_key_exchange_algorithms)"
                    )),
                    e => AttemptError::NotUp(format!("SSH handshake with {addr}: {e}")),
                });
            }
            Err(_) => {
                return Err(AttemptError::NotUp(format!(
                    "SSH handshake with {addr}: timed out"
                )))
            }
        };
        let left = budget.saturating_sub(started.elapsed());
        match tokio::time::timeout(
            left.max(Duration::from_secs(1)),
            self.authenticate(&mut handle),
        )
        .await
        {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                return Err(AttemptError::NotUp(format!(
                    "SSH authentication with {addr}: timed out"
                )))
            }
        }
        if pinned.is_none() {
            *self.host_key.lock().unwrap_or_else(|e| e.into_inner()) = seen_key;
        }
        Ok((handle, sock))
    }

    async fn authenticate(&self, h: &mut Handle<Client>) -> Result<(), AttemptError> {
        let user = self.cfg.username.clone();
        let mut tried = Vec::new();
        let mut allowed = String::new();
        let addr = self.addr();
        let note = |r: &russh::client::AuthResult, allowed: &mut String| {
            if let russh::client::AuthResult::Failure {
                remaining_methods, ..
            } = r
            {
                *allowed = remaining_methods
                    .iter()
                    .map(<&str>::from)
                    .collect::<Vec<_>>()
                    .join(",");
            }
        };
        let conn_err = |tried: &Vec<String>, e: String| {
            if tried.is_empty() {
                AttemptError::NotUp(format!("SSH authentication with {addr}: {e}"))
            } else {
                AttemptError::AuthRefused {
                    tried: tried.clone(),
                    allowed: format!("(the server closed the connection: {e})"),
                }
            }
        };
        for m in &self.auth {
            match m {
                AuthMethod::Key { key, cert, .. } => {
                    let r = match cert {
                        Some(c) => {
                            h.authenticate_openssh_cert(&user, key.clone(), (**c).clone())
                                .await
                        }
                        None => {
                            let hash = if key.algorithm().is_rsa() {
                                h.best_supported_rsa_hash().await.ok().flatten().flatten()
                            } else {
                                None
                            };
                            h.authenticate_publickey(
                                &user,
                                PrivateKeyWithHashAlg::new(key.clone(), hash),
                            )
                            .await
                        }
                    };
                    let r = r.map_err(|e| conn_err(&tried, e.to_string()))?;
                    tried.push(m.label());
                    if r.success() {
                        return Ok(());
                    }
                    note(&r, &mut allowed);
                }
                AuthMethod::Agent => {
                    let mut agent = russh::keys::agent::client::AgentClient::connect_env()
                        .await
                        .map_err(|e| {
                            AttemptError::Fatal(format!(
                                "ssh_agent_auth: cannot reach the SSH agent (SSH_AUTH_SOCK): {e}"
                            ))
                        })?;
                    let ids = agent.request_identities().await.map_err(|e| {
                        AttemptError::Fatal(format!(
                            "ssh_agent_auth: asking the SSH agent for keys: {e}"
                        ))
                    })?;
                    for id in ids {
                        let russh::keys::agent::AgentIdentity::PublicKey { key, .. } = id else {
                            continue;
                        };
                        let hash = if key.algorithm().is_rsa() {
                            h.best_supported_rsa_hash().await.ok().flatten().flatten()
                        } else {
                            None
                        };
                        let r = h
                            .authenticate_publickey_with(&user, key, hash, &mut agent)
                            .await
                            .map_err(|e| conn_err(&tried, e.to_string()))?;
                        if r.success() {
                            return Ok(());
                        }
                        note(&r, &mut allowed);
                    }
                    tried.push(m.label());
                }
                AuthMethod::Password(p) => {
                    let r = h
                        .authenticate_password(&user, p.clone())
                        .await
                        .map_err(|e| conn_err(&tried, e.to_string()))?;
                    tried.push(m.label());
                    if r.success() {
                        return Ok(());
                    }
                    note(&r, &mut allowed);
                    let kbd = match &r {
                        russh::client::AuthResult::Failure {
                            remaining_methods, ..
                        } => remaining_methods.contains(&MethodKind::KeyboardInteractive),
                        _ => false,
                    };
                    if kbd {
                        // Packer answers every keyboard-interactive prompt
                        // with the password.
                        let mut resp = h
                            .authenticate_keyboard_interactive_start(&user, None)
                            .await
                            .map_err(|e| conn_err(&tried, e.to_string()))?;
                        for _ in 0..10 {
                            match resp {
                                KeyboardInteractiveAuthResponse::Success => return Ok(()),
                                KeyboardInteractiveAuthResponse::Failure {
                                    remaining_methods,
                                    ..
                                } => {
                                    allowed = remaining_methods
                                        .iter()
                                        .map(<&str>::from)
                                        .collect::<Vec<_>>()
                                        .join(",");
                                    break;
                                }
                                KeyboardInteractiveAuthResponse::InfoRequest {
                                    prompts, ..
                                } => {
                                    let answers = prompts.iter().map(|_| p.clone()).collect();
                                    resp = h
                                        .authenticate_keyboard_interactive_respond(answers)
                                        .await
                                        .map_err(|e| conn_err(&tried, e.to_string()))?;
                                }
                            }
                        }
                        tried.push("keyboard-interactive (password)".into());
                    }
                }
            }
        }
        Err(AttemptError::AuthRefused { tried, allowed })
    }

    /// Connect, retrying while the machine is not up, until `timeout`.
    pub(crate) async fn wait_connected(
        &self,
        timeout: Duration,
        first: bool,
    ) -> Result<(), BuildError> {
        let deadline = Instant::now() + timeout;
        let mut delay = FIRST_RETRY_DELAY;
        let mut refusals = 0u32;
        let allowed_refusals = self.cfg.handshake_attempts.unwrap_or(1).max(1);
        let mut last = String::from("no attempt finished");
        loop {
            if self.cancel.is_cancelled() {
                return Err(BuildError::Cancelled);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(BuildError::msg(format!(
                    "Timeout waiting for SSH: {} not reachable after {} (last error: {last})",
                    self.addr(),
                    kiln_core::build::go_duration(timeout)
                )));
            }
            let r = tokio::select! {
                biased;
                _ = self.cancel.cancelled() => return Err(BuildError::Cancelled),
                r = self.attempt(deadline - now) => r,
            };
            match r {
                Ok((h, sock)) => {
                    *self.handle.lock().await = Some(Arc::new(h));
                    self.set_socket(sock);
                    return Ok(());
                }
                Err(AttemptError::NotUp(e)) => {
                    tracing::debug!("SSH not up yet: {e}");
                    last = e;
                    let wait = delay.min(deadline.saturating_duration_since(Instant::now()));
                    tokio::select! {
                        biased;
                        _ = self.cancel.cancelled() => return Err(BuildError::Cancelled),
                        _ = tokio::time::sleep(wait) => {}
                    }
                    delay = (delay * 2).min(MAX_RETRY_DELAY);
                }
                Err(AttemptError::AuthRefused { tried, allowed }) => {
                    refusals += 1;
                    let msg = format!(
                        "SSH authentication refused: {} did not accept user `{}` with {}{}",
                        self.addr(),
                        self.cfg.username,
                        if tried.is_empty() {
                            "any credential".to_string()
                        } else {
                            tried.join(", ")
                        },
                        if allowed.is_empty() {
                            String::new()
                        } else if allowed.starts_with('(') {
                            format!(" {allowed}")
                        } else {
                            format!(" (the server accepts: {allowed})")
                        }
                    );
                    if refusals >= allowed_refusals {
                        let hint = if first {
                            "check ssh_username, ssh_password and ssh_private_key_file; set ssh_handshake_attempts to keep retrying if the machine installs its credentials late"
                        } else {
                            "the credentials that worked earlier in this build were refused"
                        };
                        return Err(BuildError::msg(format!("{msg}; {hint}")));
                    }
                    self.ui.error(&format!(
                        "{msg} (attempt {refusals} of {allowed_refusals}, retrying)"
                    ));
                    tokio::select! {
                        biased;
                        _ = self.cancel.cancelled() => return Err(BuildError::Cancelled),
                        _ = tokio::time::sleep(AUTH_RETRY_DELAY) => {}
                    }
                }
                Err(AttemptError::HostKeyChanged { before, now }) => {
                    return Err(BuildError::msg(format!(
                        "the SSH host key of {} changed during the build (was {before}, now {now}): refusing to connect; the machine at this address is not the one kiln was provisioning",
                        self.addr()
                    )));
                }
                Err(AttemptError::Fatal(e)) => return Err(BuildError::msg(e)),
            }
        }
    }

    /// A live connection handle: the current one, or (if it is gone) one
    /// fresh connection attempt, as Packer does when opening a session.
    async fn live_handle(&self) -> Result<Arc<Handle<Client>>, CommError> {
        let mut g = self.handle.lock().await;
        if let Some(h) = g.as_ref() {
            if !h.is_closed() {
                return Ok(h.clone());
            }
        }
        *g = None;
        match self.attempt(Duration::from_secs(10)).await {
            Ok((h, sock)) => {
                let h = Arc::new(h);
                *g = Some(h.clone());
                self.set_socket(sock);
                Ok(h)
            }
            Err(AttemptError::HostKeyChanged { before, now }) => Err(CommError::Other(format!(
                "the SSH host key of {} changed during the build (was {before}, now {now}): refusing to connect",
                self.addr()
            ))),
            Err(AttemptError::NotUp(e)) => Err(CommError::Disconnected(e)),
            Err(AttemptError::AuthRefused { tried, .. }) => Err(CommError::Other(format!(
                "SSH authentication refused on reconnection to {} (tried {})",
                self.addr(),
                tried.join(", ")
            ))),
            Err(AttemptError::Fatal(e)) => Err(CommError::Other(e)),
        }
    }

    /// Open a session channel (reconnecting once if the connection is
    /// gone).
    pub(crate) async fn open_channel(
        &self,
    ) -> Result<russh::Channel<russh::client::Msg>, CommError> {
        for attempt in 0..2 {
            let h = self.live_handle().await?;
            match h.channel_open_session().await {
                Ok(c) => return Ok(c),
                Err(e) => {
                    let mut g = self.handle.lock().await;
                    if g.as_ref().is_some_and(|x| Arc::ptr_eq(x, &h)) {
                        *g = None;
                    }
                    if attempt == 1 {
                        return Err(CommError::Disconnected(format!(
                            "opening an SSH session on {}: {e}",
                            self.addr()
                        )));
                    }
                }
            }
        }
        unreachable!()
    }

    /// Run a command, streaming its output line by line.
    pub(crate) async fn run_streamed(
        &self,
        command: &str,
        out: &dyn OutputSink,
    ) -> Result<ExitStatus, CommError> {
        let mut ch = self.open_channel().await?;
        if self.cfg.pty {
            ch.request_pty(
                false,
                "xterm",
                80,
                40,
                0,
                0,
                &[
                    (russh::Pty::ECHO, 0),
                    (russh::Pty::TTY_OP_ISPEED, 14400),
                    (russh::Pty::TTY_OP_OSPEED, 14400),
                ],
            )
            .await
            .map_err(|e| CommError::Disconnected(format!("requesting a pty: {e}")))?;
        }
        ch.exec(true, command)
            .await
            .map_err(|e| CommError::Disconnected(format!("starting the command: {e}")))?;
        let mut so = LineSplitter::default();
        let mut se = LineSplitter::default();
        let mut status = None;
        while let Some(msg) = ch.wait().await {
            match msg {
                ChannelMsg::Data { data } => so.push(&data, |l| out.stdout_line(l)),
                ChannelMsg::ExtendedData { data, ext: 1 } => se.push(&data, |l| out.stderr_line(l)),
                ChannelMsg::ExitStatus { exit_status } => {
                    status = Some(ExitStatus::Code(exit_status as i32))
                }
                ChannelMsg::ExitSignal { signal_name, .. } => {
                    status = Some(ExitStatus::Signal(sig_name(&signal_name)))
                }
                ChannelMsg::Failure => {
                    return Err(CommError::Remote(format!(
                        "the server refused to run the command: {command}"
                    )))
                }
                ChannelMsg::Close => break,
                _ => {}
            }
        }
        so.finish(|l| out.stdout_line(l));
        se.finish(|l| out.stderr_line(l));
        Ok(status.unwrap_or(ExitStatus::Disconnected))
    }

    /// Reconnect after the connection dropped, retrying until `timeout`.
    pub(crate) async fn do_reconnect(&self, timeout: Duration) -> Result<(), CommError> {
        self.drop_connection().await;
        self.wait_connected(timeout, false)
            .await
            .map_err(|e| match e {
                BuildError::Cancelled => CommError::Other("cancelled".into()),
                e => CommError::Disconnected(e.to_string()),
            })
    }
}

pub(crate) fn sig_name(s: &russh::Sig) -> String {
    let d = format!("{s:?}");
    match d
        .strip_prefix("Custom(\"")
        .and_then(|x| x.strip_suffix("\")"))
    {
        Some(c) => c.to_string(),
        None => d,
    }
}

/// Splits a byte stream into lines (`\n`, with a trailing `\r` removed).
#[derive(Default)]
pub(crate) struct LineSplitter {
    buf: Vec<u8>,
}

impl LineSplitter {
    pub(crate) fn push(&mut self, data: &[u8], mut f: impl FnMut(&str)) {
        let mut rest = data;
        while let Some(i) = rest.iter().position(|b| *b == b'\n') {
            self.buf.extend_from_slice(&rest[..i]);
            rest = &rest[i + 1..];
            let line = std::mem::take(&mut self.buf);
            f(&clean_line(&line));
        }
        self.buf.extend_from_slice(rest);
    }
    pub(crate) fn finish(&mut self, mut f: impl FnMut(&str)) {
        if !self.buf.is_empty() {
            let line = std::mem::take(&mut self.buf);
            f(&clean_line(&line));
        }
    }
}

/// A line as a terminal would show it: trailing `\r` dropped, and text
/// overwritten by a carriage return (progress meters) reduced to what
/// remains visible.
fn clean_line(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(b);
    let s = s.trim_end_matches('\r');
    match s.rfind('\r') {
        Some(i) => s[i + 1..].to_string(),
        None => s.to_string(),
    }
}
