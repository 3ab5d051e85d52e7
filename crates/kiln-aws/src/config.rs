//! The access keys every AWS component of Packer 1.6.6 shares (its
//! `AccessConfig`), decoded from a template, and the environment they are
//! resolved against.
use kiln_template::Decoder;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// Packer's `assume_role` block.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AssumeRoleConfig {
    pub role_arn: String,
    pub duration_seconds: Option<u64>,
    pub external_id: Option<String>,
    pub policy: Option<String>,
    pub policy_arns: Vec<String>,
    pub session_name: Option<String>,
    pub tags: BTreeMap<String, String>,
    pub transitive_tag_keys: Vec<String>,
}

/// Packer's `aws_polling` block (and its environment overrides).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PollingConfig {
    pub delay_seconds: Option<u64>,
    pub max_attempts: Option<u64>,
}

/// The template keys of Packer 1.6.6's `AccessConfig`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccessConfig {
    pub access_key: Option<String>,
    pub secret_key: Option<String>,
    pub token: Option<String>,
    pub profile: Option<String>,
    pub region: Option<String>,
    pub custom_endpoint_ec2: Option<String>,
    pub shared_credentials_file: Option<PathBuf>,
    pub skip_metadata_api_check: bool,
    pub skip_credential_validation: bool,
    pub insecure_skip_tls_verify: bool,
    /// Packer's default is 10 retries (11 attempts).
    pub max_retries: Option<u32>,
    pub assume_role: Option<AssumeRoleConfig>,
    pub polling: PollingConfig,
}

/// Keys of Packer 1.6.6's `AccessConfig` that kiln refuses by name.
pub const REFUSED_KEYS: &[(&str, &str)] = &[
    (
        "vault_aws_engine",
        "vault_aws_engine is not supported by kiln: put the credentials in the environment or a profile",
    ),
    (
        "mfa_code",
        "mfa_code is not supported by kiln yet: use a profile whose role needs no MFA, or session credentials",
    ),
    (
        "decode_authorization_messages",
        "decode_authorization_messages is not supported by kiln yet",
    ),
];

impl AccessConfig {
    /// Decode the access keys from a component's configuration.
    pub fn decode(d: &mut Decoder<'_>) -> Self {
        let mut c = AccessConfig {
            access_key: d.string("access_key").filter(|s| !s.is_empty()),
            secret_key: d.string("secret_key").filter(|s| !s.is_empty()),
            token: d.string("token").filter(|s| !s.is_empty()),
            profile: d.string("profile").filter(|s| !s.is_empty()),
            region: d.string("region").filter(|s| !s.is_empty()),
            custom_endpoint_ec2: d.string("custom_endpoint_ec2").filter(|s| !s.is_empty()),
            shared_credentials_file: d
                .string("shared_credentials_file")
                .filter(|s| !s.is_empty())
                .map(PathBuf::from),
            skip_metadata_api_check: d.bool("skip_metadata_api_check").unwrap_or(false),
            skip_credential_validation: d.bool("skip_credential_validation").unwrap_or(false),
            insecure_skip_tls_verify: d.bool("insecure_skip_tls_verify").unwrap_or(false),
            max_retries: None,
            assume_role: None,
            polling: PollingConfig::default(),
        };
        if let Some(n) = d.int("max_retries") {
            if n < 0 {
                d.error("max_retries", "max_retries must not be negative");
            } else if n > 0 {
                c.max_retries = Some(n as u32);
            }
        }
        c.assume_role = d
            .nested("assume_role", |a| AssumeRoleConfig {
                role_arn: a.string("role_arn").unwrap_or_default(),
                duration_seconds: a.uint("duration_seconds").filter(|n| *n > 0),
                external_id: a.string("external_id").filter(|s| !s.is_empty()),
                policy: a.string("policy").filter(|s| !s.is_empty()),
                policy_arns: a.string_list("policy_arns").unwrap_or_default(),
                session_name: a.string("session_name").filter(|s| !s.is_empty()),
                tags: a.string_map("tags").unwrap_or_default(),
                transitive_tag_keys: a.string_list("transitive_tag_keys").unwrap_or_default(),
            })
            .filter(|a| !a.role_arn.is_empty());
        if let Some(p) = d.nested("aws_polling", |p| PollingConfig {
            delay_seconds: p.uint("delay_seconds").filter(|n| *n > 0),
            max_attempts: p.uint("max_attempts").filter(|n| *n > 0),
        }) {
            c.polling = p;
        }
        for (key, why) in REFUSED_KEYS {
            if d.node(key).is_some_and(|n| n.kind() != "null") {
                d.error(key, *why);
            }
        }
        if c.access_key.is_some() != c.secret_key.is_some() {
            d.error_here("`access_key` and `secret_key` must both be either set or not set.");
        }
        c
    }

    /// Values to hide from all output.
    pub fn secrets(&self) -> Vec<String> {
        [&self.secret_key, &self.token]
            .into_iter()
            .flatten()
            .cloned()
            .collect()
    }
}

/// What kiln reads of the process environment, captured once (tests pass
/// their own).
#[derive(Debug, Clone, Default)]
pub struct Env {
    pub vars: BTreeMap<String, String>,
    pub home: Option<PathBuf>,
}

impl Env {
    /// The process's environment and home directory.
    pub fn from_process() -> Self {
        let vars: BTreeMap<String, String> = std::env::vars()
            .filter(|(k, _)| k.starts_with("AWS_"))
            .collect();
        let home = std::env::var_os("HOME").map(PathBuf::from);
        Env { vars, home }
    }
    /// A variable, `None` when unset or empty.
    pub fn get(&self, k: &str) -> Option<&str> {
        self.vars
            .get(k)
            .map(String::as_str)
            .filter(|s| !s.is_empty())
    }
    pub fn with(mut self, k: &str, v: &str) -> Self {
        self.vars.insert(k.to_string(), v.to_string());
        self
    }
}

/// How long waiters wait: kiln polls quickly at first (a state change is
/// noticed about as soon as AWS makes it) and backs off to the waiter's
/// usual delay; the total time is Packer's (delay x attempts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WaitTiming {
    pub first_delay: Duration,
    pub max_delay: Duration,
    pub timeout: Duration,
}

impl PollingConfig {
    /// The timing of a waiter whose AWS SDK default is `delay` x `attempts`,
    /// with `aws_polling` and Packer's environment overrides
    /// (`AWS_POLL_DELAY_SECONDS`, `AWS_MAX_ATTEMPTS`, `AWS_TIMEOUT_SECONDS`):
    /// a delay set by the user is used as is, from the first poll.
    pub fn timing(&self, env: &Env, delay: u64, attempts: u64) -> WaitTiming {
        let num = |k: &str| {
            env.get(k)
                .and_then(|v| v.parse::<u64>().ok())
                .filter(|n| *n > 0)
        };
        let user_delay = self.delay_seconds.or_else(|| num("AWS_POLL_DELAY_SECONDS"));
        let d = user_delay.unwrap_or(delay);
        let attempts = self
            .max_attempts
            .or_else(|| num("AWS_MAX_ATTEMPTS"))
            .or_else(|| num("AWS_TIMEOUT_SECONDS").map(|t| (t / d.max(1)).max(1)))
            .unwrap_or(attempts);
        WaitTiming {
            first_delay: match user_delay {
                Some(u) => Duration::from_secs(u),
                None => Duration::from_millis(200),
            },
            max_delay: Duration::from_secs(d),
            timeout: Duration::from_secs(d * attempts),
        }
    }
}
