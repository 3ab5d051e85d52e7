//! Packer 1.6.6's communicator configuration (`communicator`, `ssh_*`,
//! `winrm_*`, `pause_before_connecting`, `temporary_key_pair_*`), decoded
//! from a builder's JSON.
//!
//! Every key Packer's communicator accepts is asked for, so none is ever an
//! "unknown key". A key kiln can honour is honoured; a key it cannot is a
//! clear "not supported by kiln yet" diagnostic at its position (never
//! silently ignored). The only keys accepted without effect are those Packer
//! itself ignores in the same situation (`winrm_*` when the communicator is
//! not `winrm`, `ssh_*` when it is `none`).
use kiln_template::Decoder;
use std::path::PathBuf;
use std::time::Duration;

/// Which communicator a build uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CommType {
    #[default]
    Ssh,
    None,
}

/// The communicator configuration of a builder.
#[derive(Debug, Clone)]
pub struct SshConfig {
    pub comm_type: CommType,
    /// `pause_before_connecting`: connect, pause this long, connect again.
    pub pause_before_connecting: Option<Duration>,
    /// `ssh_host` (builders usually discover the host themselves).
    pub host: Option<String>,
    /// `ssh_port` (default 22).
    pub port: u16,
    /// Whether `ssh_port` was given explicitly.
    pub port_set: bool,
    pub username: String,
    pub password: Option<String>,
    /// `ssh_private_key_file`, with `~` expanded.
    pub private_key_file: Option<PathBuf>,
    /// `ssh_certificate_file`, with `~` expanded (signs `ssh_private_key_file`
    /// or the temporary key).
    pub certificate_file: Option<PathBuf>,
    pub agent_auth: bool,
    /// `ssh_timeout` (or `ssh_wait_timeout`), default 5 minutes.
    pub timeout: Duration,
    /// `ssh_handshake_attempts`: how many authentication refusals to accept
    /// before failing. `None` when not set: kiln then fails at the first
    /// refusal (Packer's default is 10, which makes a wrong password take
    /// over a minute to report).
    pub handshake_attempts: Option<u32>,
    /// `ssh_keep_alive_interval` (default 5s); `None` when disabled (a
    /// negative value, as in Packer).
    pub keep_alive_interval: Option<Duration>,
    /// `ssh_read_write_timeout`: drop the connection when nothing at all
    /// arrives for this long (keep-alive replies count). `None`: never.
    pub read_write_timeout: Option<Duration>,
    pub pty: bool,
    pub clear_authorized_keys: bool,
    /// `ssh_keypair_name` (for builders that use an existing cloud key pair).
    pub keypair_name: Option<String>,
    /// `temporary_key_pair_name` (for builders that upload the temporary key).
    pub temporary_key_pair_name: Option<String>,
    /// `temporary_key_pair_type`; `None` when the template does not say
    /// (the builder then chooses: see [`crate::TempKeyPair::for_config`]).
    /// `temporary_key_pair_bits` alone means Packer's default type, `rsa`.
    pub temporary_key_pair_type: Option<crate::keys::TempKeyType>,
    /// `temporary_key_pair_bits` (0: the type's default size; checked
    /// against the type at decode time).
    pub temporary_key_pair_bits: u32,
    /// `ssh_ciphers`, in russh's names (checked at decode).
    pub ciphers: Option<Vec<String>>,
    /// `ssh_key_exchange_algorithms` (checked at decode).
    pub kex_algorithms: Option<Vec<String>>,
    /// `ssh_disable_agent_forwarding` (kiln never forwards the agent).
    pub disable_agent_forwarding: bool,
    /// `ssh_file_transfer_method` (`scp` or `sftp`): accepted for
    /// compatibility; kiln moves files through the remote shell (`cat`, `tar`)
    /// either way, with the semantics Packer's scp transfer has.
    pub file_transfer_method: String,
}

impl Default for SshConfig {
    fn default() -> Self {
        SshConfig {
            comm_type: CommType::Ssh,
            pause_before_connecting: None,
            host: None,
            port: 22,
            port_set: false,
            username: String::new(),
            password: None,
            private_key_file: None,
            certificate_file: None,
            agent_auth: false,
            timeout: Duration::from_secs(300),
            handshake_attempts: None,
            keep_alive_interval: Some(Duration::from_secs(5)),
            read_write_timeout: None,
            pty: false,
            clear_authorized_keys: false,
            keypair_name: None,
            temporary_key_pair_name: None,
            temporary_key_pair_type: None,
            temporary_key_pair_bits: 0,
            ciphers: None,
            kex_algorithms: None,
            disable_agent_forwarding: false,
            file_transfer_method: "scp".into(),
        }
    }
}

/// Keys of Packer's communicator that kiln cannot honour yet.
const UNSUPPORTED: &[(&str, &str)] = &[
    ("ssh_bastion_host", "SSH bastion hosts"),
    ("ssh_proxy_host", "SOCKS proxies"),
    ("ssh_local_tunnels", "SSH tunnels"),
    ("ssh_remote_tunnels", "SSH tunnels"),
    ("ssh_public_key", "`ssh_public_key`"),
    (
        "ssh_private_key",
        "`ssh_private_key` (use `ssh_private_key_file`)",
    ),
];

/// Keys that only matter together with one of [`UNSUPPORTED`]'s (asked for
/// so they are not "unknown"; reported with it).
const DEPENDENT: &[&str] = &[
    "ssh_bastion_port",
    "ssh_bastion_agent_auth",
    "ssh_bastion_username",
    "ssh_bastion_password",
    "ssh_bastion_interactive",
    "ssh_bastion_private_key_file",
    "ssh_bastion_certificate_file",
    "ssh_proxy_port",
    "ssh_proxy_username",
    "ssh_proxy_password",
];

const WINRM_KEYS: &[&str] = &[
    "winrm_username",
    "winrm_password",
    "winrm_host",
    "winrm_no_proxy",
    "winrm_port",
    "winrm_timeout",
    "winrm_use_ssl",
    "winrm_insecure",
    "winrm_use_ntlm",
];

/// `~` and `~/...` to the home directory (Packer's `pathing.ExpandUser`).
pub fn expand_user(p: &str) -> PathBuf {
    if p == "~" || p.starts_with("~/") {
        if let Some(home) = std::env::var_os("HOME") {
            let mut h = PathBuf::from(home);
            if p.len() > 2 {
                h.push(&p[2..]);
            }
            return h;
        }
    }
    PathBuf::from(p)
}

fn negative_duration(d: &mut Decoder<'_>, key: &str) -> bool {
    matches!(d.node(key).map(|n| &n.value),
        Some(kiln_template::Value::String(s)) if s.trim_start().starts_with('-'))
        || matches!(d.node(key).map(|n| &n.value),
        Some(kiln_template::Value::Number(s)) if s.trim_start().starts_with('-'))
}

impl SshConfig {
    /// Ask for every communicator key of Packer 1.6.6 and validate them.
    /// Problems go into the decoder's diagnostics.
    pub fn decode(d: &mut Decoder<'_>) -> SshConfig {
        let mut c = SshConfig::default();
        let kind = d.string("communicator");
        match kind.as_deref() {
            None | Some("") | Some("ssh") => c.comm_type = CommType::Ssh,
            Some("none") => c.comm_type = CommType::None,
            Some(k @ ("winrm" | "docker" | "dockerWindowsContainer")) => {
                d.error(
                    "communicator",
                    format!(
                        "the `{k}` communicator is not supported by kiln yet (use `ssh` or `none`)"
                    ),
                );
            }
            Some(k) => d.error(
                "communicator",
                format!("Communicator type {k} is invalid (kiln supports `ssh` and `none`)"),
            ),
        }
        c.pause_before_connecting = d
            .duration("pause_before_connecting")
            .filter(|d| !d.is_zero());

        c.host = d.string("ssh_host").filter(|s| !s.is_empty());
        if let Some(p) = d.uint("ssh_port") {
            if p == 0 {
                c.port = 22;
            } else if p > 65535 {
                d.error("ssh_port", format!("ssh_port {p} is not a TCP port"));
            } else {
                c.port = p as u16;
                c.port_set = true;
            }
        }
        c.username = d.string("ssh_username").unwrap_or_default();
        c.password = d.string("ssh_password").filter(|s| !s.is_empty());
        c.keypair_name = d.string("ssh_keypair_name").filter(|s| !s.is_empty());
        c.temporary_key_pair_name = d
            .string("temporary_key_pair_name")
            .filter(|s| !s.is_empty());
        if let Some(t) = d
            .string("temporary_key_pair_type")
            .filter(|t| !t.is_empty())
        {
            match crate::keys::TempKeyType::parse(&t) {
                Ok(k) => c.temporary_key_pair_type = Some(k),
                Err(e) => d.error("temporary_key_pair_type", e),
            }
        }
        if let Some(b) = d.int("temporary_key_pair_bits") {
            if b < 0 || b > u32::MAX as i64 {
                d.error(
                    "temporary_key_pair_bits",
                    format!("temporary_key_pair_bits {b} is not a key size"),
                );
            } else if b != 0 {
                c.temporary_key_pair_bits = b as u32;
                // Bits alone: Packer's default type.
                let kind = *c
                    .temporary_key_pair_type
                    .get_or_insert(crate::keys::TempKeyType::Rsa);
                if let Err(e) = kind.bits(b as u32) {
                    d.error("temporary_key_pair_bits", e);
                }
            }
        }
        c.ciphers = d.string_list("ssh_ciphers").filter(|l| !l.is_empty());
        if let Some(list) = &c.ciphers {
            let bad: Vec<&String> = list.iter().filter(|n| cipher_name(n).is_none()).collect();
            if !bad.is_empty() {
                let known: Vec<&str> = russh::cipher::ALL_CIPHERS
                    .iter()
                    .map(|n| n.as_ref())
                    .filter(|n| *n != "none" && *n != "clear")
                    .collect();
                d.error(
                    "ssh_ciphers",
                    format!(
                        "ssh_ciphers: {} not supported by kiln (supported: {})",
                        bad.iter()
                            .map(|s| format!("`{s}`"))
                            .collect::<Vec<_>>()
                            .join(", "),
                        known.join(", ")
                    ),
                );
            }
        }
        c.clear_authorized_keys = d.bool("ssh_clear_authorized_keys").unwrap_or(false);
        c.kex_algorithms = d
            .string_list("ssh_key_exchange_algorithms")
            .filter(|l| !l.is_empty());
        if let Some(list) = &c.kex_algorithms {
            let bad: Vec<&String> = list.iter().filter(|n| kex_name(n).is_none()).collect();
            if !bad.is_empty() {
                let known: Vec<&str> = russh::kex::ALL_KEX_ALGORITHMS
                    .iter()
                    .map(|n| n.as_ref())
                    .filter(|n| {
                        !n.starts_with("ext-info") && !n.starts_with("kex-strict") && *n != "none"
                    })
                    .collect();
                d.error(
                    "ssh_key_exchange_algorithms",
                    format!(
                        "ssh_key_exchange_algorithms: {} not supported by kiln (supported: {})",
                        bad.iter()
                            .map(|s| format!("`{s}`"))
                            .collect::<Vec<_>>()
                            .join(", "),
                        known.join(", ")
                    ),
                );
            }
        }
        c.private_key_file = d
            .string("ssh_private_key_file")
            .filter(|s| !s.is_empty())
            .map(|s| expand_user(&s));
        c.certificate_file = d
            .string("ssh_certificate_file")
            .filter(|s| !s.is_empty())
            .map(|s| expand_user(&s));
        c.pty = d.bool("ssh_pty").unwrap_or(false);
        if let Some(t) = d.duration("ssh_timeout").filter(|t| !t.is_zero()) {
            c.timeout = t;
        }
        if let Some(t) = d.duration("ssh_wait_timeout").filter(|t| !t.is_zero()) {
            c.timeout = t;
        }
        c.agent_auth = d.bool("ssh_agent_auth").unwrap_or(false);
        c.disable_agent_forwarding = d.bool("ssh_disable_agent_forwarding").unwrap_or(false);
        if let Some(n) = d.int("ssh_handshake_attempts") {
            if n < 0 {
                d.error(
                    "ssh_handshake_attempts",
                    "ssh_handshake_attempts must not be negative",
                );
            } else if n > 0 {
                c.handshake_attempts = Some(n as u32);
            }
        }
        if negative_duration(d, "ssh_keep_alive_interval") {
            c.keep_alive_interval = None;
        } else if let Some(k) = d.duration("ssh_keep_alive_interval") {
            if !k.is_zero() {
                c.keep_alive_interval = Some(k);
            }
        }
        c.read_write_timeout = d
            .duration("ssh_read_write_timeout")
            .filter(|t| !t.is_zero());
        if let Some(m) = d.string("ssh_file_transfer_method") {
            if !m.is_empty() {
                if m != "scp" && m != "sftp" {
                    d.error(
                        "ssh_file_transfer_method",
                        format!(
                            "ssh_file_transfer_method ('{m}') is invalid, valid methods: sftp, scp"
                        ),
                    );
                }
                c.file_transfer_method = m;
            }
        }

        // Keys kiln cannot honour: an error if set (to anything but empty).
        for (key, what) in UNSUPPORTED {
            if is_set(d, key) {
                d.error(
                    key,
                    format!("`{key}`: {what} are not supported by kiln yet"),
                );
            }
        }
        for key in DEPENDENT {
            // Asked for (so never unknown); set alone, they do nothing in
            // Packer either.
            let _ = d.node(key);
        }
        let winrm = kind.as_deref() == Some("winrm");
        for key in WINRM_KEYS {
            // Packer ignores winrm_* unless the communicator is winrm, which
            // kiln reports above.
            let _ = d.node(key);
            let _ = winrm;
        }

        if c.comm_type == CommType::Ssh {
            if c.username.is_empty() {
                d.error_here(
                    "An ssh_username must be specified\n  Note: some builders used to default ssh_username to \"root\".",
                );
            }
            if let Some(p) = &c.private_key_file {
                if let Err(e) = crate::keys::load_private_key(p) {
                    d.error(
                        "ssh_private_key_file",
                        format!("ssh_private_key_file is invalid: {e}"),
                    );
                }
            }
            if let Some(p) = &c.certificate_file {
                if let Err(e) = russh::keys::load_openssh_certificate(p) {
                    d.error(
                        "ssh_certificate_file",
                        format!("invalid identity certificate {}: {e}", p.display()),
                    );
                }
            }
        }
        c
    }

    /// `communicator: none`.
    pub fn is_none(&self) -> bool {
        self.comm_type == CommType::None
    }
}

fn is_set(d: &mut Decoder<'_>, key: &str) -> bool {
    match d.node(key).map(|n| &n.value) {
        None | Some(kiln_template::Value::Null) => false,
        Some(kiln_template::Value::String(s)) => !s.is_empty(),
        Some(kiln_template::Value::Array(a)) => !a.is_empty(),
        Some(kiln_template::Value::Bool(b)) => *b,
        Some(kiln_template::Value::Number(n)) => n.trim() != "0",
        Some(_) => true,
    }
}

pub(crate) fn cipher_name(n: &str) -> Option<russh::cipher::Name> {
    russh::cipher::ALL_CIPHERS
        .iter()
        .find(|c| c.as_ref() == n && n != "none" && n != "clear")
        .map(|c| **c)
}

pub(crate) fn kex_name(n: &str) -> Option<russh::kex::Name> {
    russh::kex::ALL_KEX_ALGORITHMS
        .iter()
        .find(|c| c.as_ref() == n && n != "none")
        .map(|c| **c)
}
