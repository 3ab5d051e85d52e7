//! Credentials and region, resolved as Packer 1.6.6 (through
//! `aws-sdk-go-base` and the AWS SDK for Go) resolves them:
//!
//! 1. the template's `access_key` + `secret_key` (+ `token`);
//! 2. the environment: `AWS_ACCESS_KEY_ID` (or `AWS_ACCESS_KEY`),
//!    `AWS_SECRET_ACCESS_KEY` (or `AWS_SECRET_KEY`), `AWS_SESSION_TOKEN`;
//! 3. the shared credentials file (`shared_credentials_file`,
//!    `AWS_SHARED_CREDENTIALS_FILE`, `~/.aws/credentials`), profile
//!    `profile`, `AWS_PROFILE`, `AWS_DEFAULT_PROFILE` or `default`;
//! 4. the shared config file (`AWS_CONFIG_FILE`, `~/.aws/config`), section
//!    `[profile NAME]` (`[default]`): keys, or `role_arn` with
//!    `source_profile` (chains allowed) or `credential_source`
//!    (`Environment`, `Ec2InstanceMetadata`), assumed through STS
//!    `AssumeRole` with `external_id`, `role_session_name`,
//!    `duration_seconds`;
//! 5. the EC2 instance metadata service (IMDSv2, falling back to v1),
//!    unless `skip_metadata_api_check` or `AWS_EC2_METADATA_DISABLED=true`;
//!    its address is `AWS_EC2_METADATA_SERVICE_ENDPOINT` when set.
//!
//! Then, when the template has an `assume_role` block, its role is assumed
//! with those credentials. Assumed and instance credentials expire: they
//! are renewed five minutes before.
//!
//! The region: `region`, `AWS_REGION`, `AWS_DEFAULT_REGION`, then the
//! profile's `region` in the config file.
use crate::client::Transport;
use crate::config::{AccessConfig, AssumeRoleConfig, Env};
use crate::error::AwsError;
use crate::xml;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;

/// A set of credentials. `Debug` never shows the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
    pub expires: Option<OffsetDateTime>,
    /// Where they came from (for messages): "template", "environment",
    /// "shared credentials file ~/.aws/credentials, profile default", ...
    pub source: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "<sensitive>"),
            )
            .field("expires", &self.expires)
            .field("source", &self.source)
            .finish()
    }
}

impl Credentials {
    pub fn new(id: &str, secret: &str, token: Option<&str>, source: &str) -> Self {
        Credentials {
            access_key_id: id.to_string(),
            secret_access_key: secret.to_string(),
            session_token: token.filter(|t| !t.is_empty()).map(str::to_string),
            expires: None,
            source: source.to_string(),
        }
    }
    fn needs_refresh(&self) -> bool {
        self.expires
            .is_some_and(|e| e - OffsetDateTime::now_utc() < time::Duration::minutes(5))
    }
    /// The secret values (to register with the UI's scrubber).
    pub fn secrets(&self) -> Vec<String> {
        let mut v = vec![self.secret_access_key.clone()];
        v.extend(self.session_token.clone());
        v
    }
}

/// An INI file as the AWS CLI/SDKs read it: sections of `key = value`.
pub type Ini = BTreeMap<String, BTreeMap<String, String>>;

/// Parse an AWS shared config/credentials file (comments `#` and `;`,
/// keys lower-cased, nested `s3 =` blocks ignored).
pub fn parse_ini(text: &str) -> Ini {
    let mut out: Ini = BTreeMap::new();
    let mut cur: Option<String> = None;
    for line in text.lines() {
        let indented = line.starts_with(' ') || line.starts_with('\t');
        let l = line.trim();
        if l.is_empty() || l.starts_with('#') || l.starts_with(';') {
            continue;
        }
        if l.starts_with('[') && l.ends_with(']') {
            let name = l[1..l.len() - 1].trim().to_string();
            out.entry(name.clone()).or_default();
            cur = Some(name);
            continue;
        }
        if indented {
            continue; // a nested value (e.g. under `s3 =`)
        }
        if let (Some(sec), Some((k, v))) = (&cur, l.split_once('=')) {
            let v = v.trim();
            let v = v.split(" #").next().unwrap_or(v).trim();
            out.entry(sec.clone())
                .or_default()
                .insert(k.trim().to_ascii_lowercase(), v.to_string());
        }
    }
    out
}

fn expand_home(p: &Path, env: &Env) -> PathBuf {
    match (p.strip_prefix("~"), &env.home) {
        (Ok(rest), Some(h)) => h.join(rest),
        _ => p.to_path_buf(),
    }
}

/// The files and profile a configuration points at.
#[derive(Debug, Clone)]
pub struct SharedFiles {
    pub credentials_file: PathBuf,
    pub config_file: PathBuf,
    pub profile: String,
    pub credentials: Ini,
    pub config: Ini,
}

impl SharedFiles {
    pub fn load(c: &AccessConfig, env: &Env) -> Result<Self, AwsError> {
        let home = env.home.clone().unwrap_or_else(|| PathBuf::from("/root"));
        let credentials_file = c
            .shared_credentials_file
            .clone()
            .or_else(|| env.get("AWS_SHARED_CREDENTIALS_FILE").map(PathBuf::from))
            .map(|p| expand_home(&p, env))
            .unwrap_or_else(|| home.join(".aws/credentials"));
        let config_file = env
            .get("AWS_CONFIG_FILE")
            .map(|p| expand_home(Path::new(p), env))
            .unwrap_or_else(|| home.join(".aws/config"));
        let profile = c
            .profile
            .clone()
            .or_else(|| env.get("AWS_PROFILE").map(str::to_string))
            .or_else(|| env.get("AWS_DEFAULT_PROFILE").map(str::to_string))
            .unwrap_or_else(|| "default".to_string());
        let read = |p: &Path| -> Result<Ini, AwsError> {
            match std::fs::read_to_string(p) {
                Ok(t) => Ok(parse_ini(&t)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Ini::new()),
                Err(e) => Err(AwsError::Credentials(format!(
                    "reading {}: {e}",
                    p.display()
                ))),
            }
        };
        Ok(SharedFiles {
            credentials: read(&credentials_file)?,
            config: read(&config_file)?,
            credentials_file,
            config_file,
            profile,
        })
    }
    /// A profile's section of the config file (`[profile NAME]`, or
    /// `[default]`).
    pub fn config_profile(&self, name: &str) -> Option<&BTreeMap<String, String>> {
        self.config.get(&format!("profile {name}")).or_else(|| {
            if name == "default" {
                self.config.get("default")
            } else {
                None
            }
        })
    }
    /// The region of the profile in the config file.
    pub fn region(&self) -> Option<String> {
        self.config_profile(&self.profile)
            .and_then(|p| p.get("region"))
            .filter(|r| !r.is_empty())
            .cloned()
    }
}

/// The region, as Packer/the Go SDK resolve it.
pub fn resolve_region(c: &AccessConfig, env: &Env, files: &SharedFiles) -> Option<String> {
    c.region
        .clone()
        .or_else(|| env.get("AWS_REGION").map(str::to_string))
        .or_else(|| env.get("AWS_DEFAULT_REGION").map(str::to_string))
        .or_else(|| files.region())
}

/// What makes the credentials again when they expire.
#[derive(Clone)]
enum Renew {
    Never,
    AssumeRole {
        base: Arc<Provider>,
        role: Box<AssumeRoleConfig>,
        sts_endpoint: String,
        region: String,
    },
    Imds {
        endpoint: String,
    },
}

/// Credentials, renewed when they are about to expire.
pub struct Provider {
    current: tokio::sync::Mutex<Credentials>,
    renew: Renew,
    transport: Transport,
}

impl Provider {
    /// Fixed credentials.
    pub fn fixed(c: Credentials, transport: Transport) -> Arc<Self> {
        Arc::new(Provider {
            current: tokio::sync::Mutex::new(c),
            renew: Renew::Never,
            transport,
        })
    }
    /// The credentials to sign with now.
    pub fn get(
        self: &Arc<Self>,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Credentials, AwsError>> + Send + '_>,
    > {
        Box::pin(async move {
            let mut cur = self.current.lock().await;
            if cur.needs_refresh() {
                *cur = match &self.renew {
                    Renew::Never => cur.clone(),
                    Renew::AssumeRole {
                        base,
                        role,
                        sts_endpoint,
                        region,
                    } => {
                        let b = base.get().await?;
                        assume_role(&self.transport, sts_endpoint, region, &b, role).await?
                    }
                    Renew::Imds { endpoint } => imds_credentials(&self.transport, endpoint).await?,
                };
            }
            Ok(cur.clone())
        })
    }
    /// Where the credentials come from.
    pub async fn source(&self) -> String {
        self.current.lock().await.source.clone()
    }
}

/// The STS endpoint for `region`.
pub fn sts_endpoint(env: &Env, region: &str) -> String {
    env.get("AWS_ENDPOINT_URL_STS")
        .or_else(|| env.get("AWS_ENDPOINT_URL"))
        .map(str::to_string)
        .unwrap_or_else(|| format!("https://sts.{region}.{}", crate::client::dns_suffix(region)))
}

/// Resolve the credentials of `c` (see the module docs for the order).
pub async fn resolve(
    c: &AccessConfig,
    env: &Env,
    region: &str,
    transport: &Transport,
) -> Result<Arc<Provider>, AwsError> {
    let files = SharedFiles::load(c, env)?;
    let base = base_chain(c, env, &files, region, transport).await?;
    match &c.assume_role {
        None => Ok(base),
        Some(role) => {
            let sts = sts_endpoint(env, region);
            let b = base.get().await?;
            let creds = assume_role(transport, &sts, region, &b, role).await?;
            Ok(Arc::new(Provider {
                current: tokio::sync::Mutex::new(creds),
                renew: Renew::AssumeRole {
                    base,
                    role: Box::new(role.clone()),
                    sts_endpoint: sts,
                    region: region.to_string(),
                },
                transport: transport.clone(),
            }))
        }
    }
}

async fn base_chain(
    c: &AccessConfig,
    env: &Env,
    files: &SharedFiles,
    region: &str,
    transport: &Transport,
) -> Result<Arc<Provider>, AwsError> {
    let fixed = |cr: Credentials| Ok(Provider::fixed(cr, transport.clone()));
    if let (Some(a), Some(s)) = (&c.access_key, &c.secret_key) {
        return fixed(Credentials::new(
            a,
            s,
            c.token.as_deref(),
            "template (access_key)",
        ));
    }
    if let Some(cr) = env_credentials(env) {
        return fixed(cr);
    }
    if let Some(sec) = files.credentials.get(&files.profile) {
        if let Some(cr) = section_keys(
            sec,
            &format!(
                "shared credentials file {}, profile {}",
                files.credentials_file.display(),
                files.profile
            ),
        ) {
            return fixed(cr);
        }
    }
    if files.config_profile(&files.profile).is_some() {
        return profile_provider(files, &files.profile, env, region, transport, 0).await;
    }
    if metadata_allowed(c, env) {
        let endpoint = imds_endpoint(env);
        if let Ok(cr) = imds_credentials(transport, &endpoint).await {
            return Ok(Arc::new(Provider {
                current: tokio::sync::Mutex::new(cr),
                renew: Renew::Imds { endpoint },
                transport: transport.clone(),
            }));
        }
    }
    Err(AwsError::Credentials(format!(
        "No valid credential sources found for AWS: set access_key and secret_key, \
         AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or a profile (profile {:?} is in neither {} nor {}){}",
        files.profile,
        files.credentials_file.display(),
        files.config_file.display(),
        if metadata_allowed(c, env) {
            "; the instance metadata service did not answer"
        } else {
            ""
        }
    )))
}

fn metadata_allowed(c: &AccessConfig, env: &Env) -> bool {
    !c.skip_metadata_api_check
        && !env
            .get("AWS_EC2_METADATA_DISABLED")
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

fn imds_endpoint(env: &Env) -> String {
    env.get("AWS_EC2_METADATA_SERVICE_ENDPOINT")
        .unwrap_or("http://169.254.169.254")
        .trim_end_matches('/')
        .to_string()
}

/// The environment's keys, as the Go SDK's `EnvProvider` reads them.
pub fn env_credentials(env: &Env) -> Option<Credentials> {
    let id = env
        .get("AWS_ACCESS_KEY_ID")
        .or_else(|| env.get("AWS_ACCESS_KEY"))?;
    let secret = env
        .get("AWS_SECRET_ACCESS_KEY")
        .or_else(|| env.get("AWS_SECRET_KEY"))?;
    Some(Credentials::new(
        id,
        secret,
        env.get("AWS_SESSION_TOKEN"),
        "environment",
    ))
}

fn section_keys(sec: &BTreeMap<String, String>, source: &str) -> Option<Credentials> {
    let id = sec.get("aws_access_key_id").filter(|s| !s.is_empty())?;
    let secret = sec.get("aws_secret_access_key").filter(|s| !s.is_empty())?;
    Some(Credentials::new(
        id,
        secret,
        sec.get("aws_session_token").map(String::as_str),
        source,
    ))
}

/// A profile of the config file: its own keys, or a role assumed with the
/// credentials of `source_profile` or `credential_source`.
fn profile_provider<'a>(
    files: &'a SharedFiles,
    name: &'a str,
    env: &'a Env,
    region: &'a str,
    transport: &'a Transport,
    depth: usize,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Arc<Provider>, AwsError>> + Send + 'a>>
{
    Box::pin(async move {
        if depth > 5 {
            return Err(AwsError::Credentials(format!(
                "profile {name}: source_profile chain too long (a loop?)"
            )));
        }
        let cfg = files.config_profile(name);
        let role_arn = cfg
            .and_then(|p| p.get("role_arn"))
            .filter(|s| !s.is_empty());
        let Some(role_arn) = role_arn else {
            // Keys: credentials file first, then the config file.
            let creds = files
                .credentials
                .get(name)
                .and_then(|s| {
                    section_keys(
                        s,
                        &format!(
                            "shared credentials file {}, profile {name}",
                            files.credentials_file.display()
                        ),
                    )
                })
                .or_else(|| {
                    cfg.and_then(|s| {
                        section_keys(
                            s,
                            &format!(
                                "config file {}, profile {name}",
                                files.config_file.display()
                            ),
                        )
                    })
                });
            return match creds {
                Some(c) => Ok(Provider::fixed(c, transport.clone())),
                None => Err(AwsError::Credentials(format!(
                    "profile {name} has no credentials (aws_access_key_id/aws_secret_access_key or role_arn) in {} or {}",
                    files.credentials_file.display(),
                    files.config_file.display()
                ))),
            };
        };
        let cfg = cfg.expect("role_arn came from it");
        let base: Arc<Provider> = if let Some(src) = cfg.get("source_profile") {
            if src == name {
                // A profile may name itself: its own keys.
                let c = files
                    .credentials
                    .get(name)
                    .and_then(|s| section_keys(s, &format!("profile {name}")))
                    .or_else(|| section_keys(cfg, &format!("profile {name}")))
                    .ok_or_else(|| {
                        AwsError::Credentials(format!("profile {name}: source_profile has no keys"))
                    })?;
                Provider::fixed(c, transport.clone())
            } else {
                let has_cfg = files.config_profile(src).is_some();
                let has_creds = files.credentials.contains_key(src.as_str());
                if !has_cfg && !has_creds {
                    return Err(AwsError::Credentials(format!(
                        "profile {name}: source_profile {src} does not exist"
                    )));
                }
                profile_provider(files, src, env, region, transport, depth + 1).await?
            }
        } else {
            match cfg.get("credential_source").map(String::as_str) {
                Some("Environment") => {
                    let c = env_credentials(env).ok_or_else(|| {
                        AwsError::Credentials(format!(
                            "profile {name}: credential_source Environment, but AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY are not set"
                        ))
                    })?;
                    Provider::fixed(c, transport.clone())
                }
                Some("Ec2InstanceMetadata") => {
                    let endpoint = imds_endpoint(env);
                    let c = imds_credentials(transport, &endpoint).await?;
                    Arc::new(Provider {
                        current: tokio::sync::Mutex::new(c),
                        renew: Renew::Imds { endpoint },
                        transport: transport.clone(),
                    })
                }
                other => {
                    return Err(AwsError::Credentials(format!(
                        "profile {name}: role_arn needs source_profile or credential_source (Environment, Ec2InstanceMetadata){}",
                        other.map(|o| format!("; {o} is not supported")).unwrap_or_default()
                    )))
                }
            }
        };
        let role = AssumeRoleConfig {
            role_arn: role_arn.clone(),
            duration_seconds: cfg.get("duration_seconds").and_then(|d| d.parse().ok()),
            external_id: cfg.get("external_id").cloned(),
            session_name: cfg.get("role_session_name").cloned(),
            ..Default::default()
        };
        let sts = sts_endpoint(env, region);
        let b = base.get().await?;
        let creds = assume_role(transport, &sts, region, &b, &role).await?;
        Ok(Arc::new(Provider {
            current: tokio::sync::Mutex::new(creds),
            renew: Renew::AssumeRole {
                base,
                role: Box::new(role),
                sts_endpoint: sts,
                region: region.to_string(),
            },
            transport: transport.clone(),
        }))
    })
}

/// STS `AssumeRole`.
pub async fn assume_role(
    transport: &Transport,
    sts_endpoint: &str,
    region: &str,
    with: &Credentials,
    role: &AssumeRoleConfig,
) -> Result<Credentials, AwsError> {
    let session = role
        .session_name
        .clone()
        .unwrap_or_else(|| format!("kiln-{}", OffsetDateTime::now_utc().unix_timestamp_nanos()));
    let mut p: Vec<(String, String)> = vec![
        ("Action".into(), "AssumeRole".into()),
        ("Version".into(), "2011-06-15".into()),
        ("RoleArn".into(), role.role_arn.clone()),
        ("RoleSessionName".into(), session),
    ];
    if let Some(d) = role.duration_seconds {
        p.push(("DurationSeconds".into(), d.to_string()));
    }
    if let Some(x) = &role.external_id {
        p.push(("ExternalId".into(), x.clone()));
    }
    if let Some(x) = &role.policy {
        p.push(("Policy".into(), x.clone()));
    }
    for (i, a) in role.policy_arns.iter().enumerate() {
        p.push((format!("PolicyArns.member.{}.arn", i + 1), a.clone()));
    }
    for (i, (k, v)) in role.tags.iter().enumerate() {
        p.push((format!("Tags.member.{}.Key", i + 1), k.clone()));
        p.push((format!("Tags.member.{}.Value", i + 1), v.clone()));
    }
    for (i, k) in role.transitive_tag_keys.iter().enumerate() {
        p.push((format!("TransitiveTagKeys.member.{}", i + 1), k.clone()));
    }
    let body = transport
        .query(
            "sts",
            sts_endpoint,
            region,
            with,
            &p,
            crate::client::Retry::Idempotent,
        )
        .await
        .map_err(|e| match e {
            AwsError::Cancelled => e,
            e => AwsError::Credentials(format!("assuming role {}: {e}", role.role_arn)),
        })?;
    let doc = roxmltree::Document::parse(&body).map_err(|e| protocol("AssumeRole", e))?;
    let c = doc
        .descendants()
        .find(|n| n.has_tag_name("Credentials"))
        .ok_or_else(|| protocol("AssumeRole", "no Credentials"))?;
    let get = |k: &str| xml::text(c, k).ok_or_else(|| protocol("AssumeRole", format!("no {k}")));
    let mut cr = Credentials::new(
        &get("AccessKeyId")?,
        &get("SecretAccessKey")?,
        Some(&get("SessionToken")?),
        &format!("assumed role {} (from {})", role.role_arn, with.source),
    );
    cr.expires = xml::text(c, "Expiration").and_then(|e| {
        OffsetDateTime::parse(&e, &time::format_description::well_known::Rfc3339).ok()
    });
    Ok(cr)
}

fn protocol(action: &str, m: impl std::fmt::Display) -> AwsError {
    AwsError::Protocol {
        service: "sts",
        action: action.into(),
        message: m.to_string(),
    }
}

/// The instance role's credentials from the metadata service (IMDSv2's
/// token first, v1 when the token is refused).
pub async fn imds_credentials(
    transport: &Transport,
    endpoint: &str,
) -> Result<Credentials, AwsError> {
    let http = &transport.http;
    let t = Duration::from_secs(1);
    let err = |m: String| AwsError::Credentials(format!("instance metadata ({endpoint}): {m}"));
    let token = match http
        .put(format!("{endpoint}/latest/api/token"))
        .header("x-aws-ec2-metadata-token-ttl-seconds", "21600")
        .timeout(t)
        .send()
        .await
    {
        Ok(r) if r.status().is_success() => r.text().await.ok(),
        Ok(_) => None,
        Err(e) => return Err(err(e.to_string())),
    };
    let get = |path: String| {
        let mut rq = http.get(format!("{endpoint}{path}")).timeout(t);
        if let Some(tk) = &token {
            rq = rq.header("x-aws-ec2-metadata-token", tk);
        }
        async move {
            let r = rq.send().await.map_err(|e| e.to_string())?;
            if !r.status().is_success() {
                return Err(format!("HTTP {}", r.status().as_u16()));
            }
            r.text().await.map_err(|e| e.to_string())
        }
    };
    let roles = get("/latest/meta-data/iam/security-credentials/".into())
        .await
        .map_err(err)?;
    let role = roles
        .lines()
        .next()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| err("no instance role".into()))?
        .to_string();
    let body = get(format!("/latest/meta-data/iam/security-credentials/{role}"))
        .await
        .map_err(err)?;
    let v: serde_json::Value = serde_json::from_str(&body).map_err(|e| err(e.to_string()))?;
    let s = |k: &str| v[k].as_str().map(str::to_string);
    let (Some(id), Some(secret)) = (s("AccessKeyId"), s("SecretAccessKey")) else {
        return Err(err("no AccessKeyId/SecretAccessKey in the answer".into()));
    };
    let mut c = Credentials::new(
        &id,
        &secret,
        s("Token").as_deref(),
        &format!("instance metadata, role {role}"),
    );
    c.expires = s("Expiration").and_then(|e| {
        OffsetDateTime::parse(&e, &time::format_description::well_known::Rfc3339).ok()
    });
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ini_files() {
        let ini = parse_ini(
            "# c\n[default]\naws_access_key_id = A\nAWS_Secret_Access_Key=B ; x\n\n[profile dev]\nregion = eu-west-1 # comment\ns3 =\n  max_concurrent_requests = 4\nrole_arn=arn:aws:iam::1:role/r\n",
        );
        assert_eq!(ini["default"]["aws_access_key_id"], "A");
        assert_eq!(ini["default"]["aws_secret_access_key"], "B ; x");
        assert_eq!(ini["profile dev"]["region"], "eu-west-1");
        assert_eq!(ini["profile dev"]["role_arn"], "arn:aws:iam::1:role/r");
        assert!(!ini["profile dev"].contains_key("max_concurrent_requests"));
    }

    #[test]
    fn debug_hides_secrets() {
        let c = Credentials::new("AKID", "SECRET", Some("TOKEN"), "t");
        let d = format!("{c:?}");
        assert!(d.contains("AKID") && !d.contains("SECRET") && !d.contains("TOKEN"));
    }
}
