//! Credentials: the template's keys, falling back to the `OS_*` environment
//! (as an rc file sets it) and to `clouds.yaml` (`cloud` / `OS_CLOUD`),
//! resolved into one [`AuthOptions`] before any request is made.
use super::error::OsError;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Which endpoint of a service to use (`endpoint_type`, `OS_INTERFACE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Interface {
    #[default]
    Public,
    Internal,
    Admin,
}

impl Interface {
    /// Packer accepts `public`, `internal`, `admin` and the v2.0 spellings
    /// `publicURL`, `internalURL`, `adminURL`.
    pub fn parse(s: &str) -> Option<Interface> {
        match s {
            "" | "public" | "publicURL" => Some(Interface::Public),
            "internal" | "internalURL" => Some(Interface::Internal),
            "admin" | "adminURL" => Some(Interface::Admin),
            _ => None,
        }
    }
    pub fn v3_name(self) -> &'static str {
        match self {
            Interface::Public => "public",
            Interface::Internal => "internal",
            Interface::Admin => "admin",
        }
    }
    pub fn v2_key(self) -> &'static str {
        match self {
            Interface::Public => "publicURL",
            Interface::Internal => "internalURL",
            Interface::Admin => "adminURL",
        }
    }
}

/// Keystone API version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdentityVersion {
    V2,
    V3,
}

/// The access keys as written in a template (all optional).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccessKeys {
    pub identity_endpoint: Option<String>,
    pub username: Option<String>,
    pub user_id: Option<String>,
    pub password: Option<String>,
    pub tenant_name: Option<String>,
    pub tenant_id: Option<String>,
    pub domain_name: Option<String>,
    pub domain_id: Option<String>,
    pub region: Option<String>,
    pub endpoint_type: Option<String>,
    pub insecure: Option<bool>,
    pub cacert: Option<String>,
    pub cert: Option<String>,
    pub key: Option<String>,
    pub token: Option<String>,
    pub application_credential_name: Option<String>,
    pub application_credential_id: Option<String>,
    pub application_credential_secret: Option<String>,
    pub cloud: Option<String>,
}

impl AccessKeys {
    /// Every key name, for decoders.
    pub const KEYS: &'static [&'static str] = &[
        "identity_endpoint",
        "username",
        "user_id",
        "password",
        "tenant_name",
        "tenant_id",
        "domain_name",
        "domain_id",
        "region",
        "endpoint_type",
        "insecure",
        "cacert",
        "cert",
        "key",
        "token",
        "application_credential_name",
        "application_credential_id",
        "application_credential_secret",
        "cloud",
    ];

    /// Read the access keys from a component's configuration.
    pub fn decode(d: &mut kiln_template::Decoder<'_>) -> AccessKeys {
        let k = AccessKeys {
            identity_endpoint: d.string("identity_endpoint"),
            username: d.string("username"),
            user_id: d.string("user_id"),
            password: d.string("password"),
            tenant_name: d.string("tenant_name"),
            tenant_id: d.string("tenant_id"),
            domain_name: d.string("domain_name"),
            domain_id: d.string("domain_id"),
            region: d.string("region"),
            endpoint_type: d.string("endpoint_type"),
            insecure: d.bool("insecure"),
            cacert: d.string("cacert"),
            cert: d.string("cert"),
            key: d.string("key"),
            token: d.string("token"),
            application_credential_name: d.string("application_credential_name"),
            application_credential_id: d.string("application_credential_id"),
            application_credential_secret: d.string("application_credential_secret"),
            cloud: d.string("cloud"),
        };
        if let Some(t) = &k.endpoint_type {
            if Interface::parse(t).is_none() {
                d.error("endpoint_type", "Invalid endpoint type provided: must be public, internal or admin (or publicURL, internalURL, adminURL)");
            }
        }
        k
    }
}

/// Everything needed to authenticate and pick endpoints.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthOptions {
    pub auth_url: String,
    pub version: Option<IdentityVersion>,
    pub username: Option<String>,
    pub user_id: Option<String>,
    pub password: Option<String>,
    pub project_name: Option<String>,
    pub project_id: Option<String>,
    pub user_domain_name: Option<String>,
    pub user_domain_id: Option<String>,
    pub project_domain_name: Option<String>,
    pub project_domain_id: Option<String>,
    /// Domain scope (no project given, `domain_*` given).
    pub domain_name: Option<String>,
    pub domain_id: Option<String>,
    pub token: Option<String>,
    pub app_cred_id: Option<String>,
    pub app_cred_name: Option<String>,
    pub app_cred_secret: Option<String>,
    pub region: Option<String>,
    pub interface: Interface,
    pub insecure: bool,
    pub cacert: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

impl AuthOptions {
    /// The secrets to scrub from output.
    pub fn secrets(&self) -> Vec<String> {
        [&self.password, &self.token, &self.app_cred_secret]
            .into_iter()
            .flatten()
            .filter(|s| !s.is_empty())
            .cloned()
            .collect()
    }

    /// Keystone's version: `OS_IDENTITY_API_VERSION` / clouds.yaml's
    /// `identity_api_version` when given, else from the URL (`/v2.0`,
    /// `/v3`), else v3.
    pub fn identity_version(&self) -> IdentityVersion {
        if let Some(v) = self.version {
            return v;
        }
        version_from_url(&self.auth_url).unwrap_or(IdentityVersion::V3)
    }
}

pub fn version_from_url(url: &str) -> Option<IdentityVersion> {
    let u = url.trim_end_matches('/');
    if u.ends_with("/v2.0") || u.contains("/v2.0/") {
        Some(IdentityVersion::V2)
    } else if u.ends_with("/v3") || u.contains("/v3/") {
        Some(IdentityVersion::V3)
    } else {
        None
    }
}

fn nonempty(v: Option<String>) -> Option<String> {
    v.filter(|s| !s.is_empty())
}

/// Resolve the template's keys against the environment (`env` looks a
/// variable up) and clouds.yaml (`read_file` reads a candidate path).
///
/// Order, as Packer 1.6.6 (its access config and gophercloud's
/// clientconfig, which it vendors):
/// - credentials (`auth_url`, user, password, project, domains, token,
///   application credential): the template's key, then the cloud named by
///   `cloud`/`OS_CLOUD` in clouds.yaml, then `OS_*` (the environment fills
///   what the cloud leaves out);
/// - `OS_IDENTITY_API_VERSION` before the cloud's `identity_api_version`;
/// - `region`: the template, then `OS_REGION_NAME`, then the cloud's
///   `region_name`; `cacert`/`cert`/`key`: the template, then `OS_CACERT`/
///   `OS_CERT`/`OS_KEY` (Packer reads those before it looks at the cloud;
///   kiln then falls back to the cloud's own, which Packer ignores).
///
/// Unlike gophercloud, the template's `cloud` wins over `OS_CLOUD` (with
/// Packer 1.6.6 `OS_CLOUD` silently picks another cloud than the template
/// names). `endpoint_type`, `insecure` and their cloud/`OS_*` fallbacks are
/// kiln's own additions (Packer reads only the template's keys).
pub fn resolve(
    keys: &AccessKeys,
    env: &dyn Fn(&str) -> Option<String>,
    read_file: &dyn Fn(&Path) -> Option<String>,
) -> Result<AuthOptions, OsError> {
    let e = |k: &str| nonempty(env(k));
    let first = |ks: &[&str]| ks.iter().find_map(|k| e(k));
    let t = keys.clone();

    // clouds.yaml
    let cloud_name = nonempty(t.cloud.clone()).or_else(|| e("OS_CLOUD"));
    let cloud = match &cloud_name {
        Some(name) => Some(load_cloud(name, env, read_file)?),
        None => None,
    };
    let c = |k: &str| cloud.as_ref().and_then(|c| c.auth.get(k).cloned());
    // The template, then the cloud, then the environment for what is still
    // missing (gophercloud fills a cloud's empty values from OS_*).
    let pick = |tmpl: Option<String>, cloud_keys: &[&str], env_keys: &[&str]| -> Option<String> {
        nonempty(tmpl)
            .or_else(|| cloud_keys.iter().find_map(|k| nonempty(c(k))))
            .or_else(|| first(env_keys))
    };

    let auth_url = pick(t.identity_endpoint, &["auth_url"], &["OS_AUTH_URL"]).ok_or_else(|| {
        OsError::Config(
            "no identity endpoint: set identity_endpoint, OS_AUTH_URL, or a cloud (OS_CLOUD) in clouds.yaml".into(),
        )
    })?;
    let version = match e("OS_IDENTITY_API_VERSION")
        .or_else(|| cloud.as_ref().and_then(|c| c.identity_api_version.clone()))
    {
        Some(v) => match v.trim_start_matches('v') {
            "2" | "2.0" => Some(IdentityVersion::V2),
            "3" | "3.0" => Some(IdentityVersion::V3),
            other => {
                return Err(OsError::Config(format!(
                    "unsupported identity API version {other:?} (2.0 and 3 are)"
                )))
            }
        },
        None => None,
    };

    let token = pick(t.token, &["token"], &["OS_TOKEN", "OS_AUTH_TOKEN"]);
    let app_cred_id = pick(
        t.application_credential_id,
        &["application_credential_id"],
        &["OS_APPLICATION_CREDENTIAL_ID"],
    );
    let app_cred_name = pick(
        t.application_credential_name,
        &["application_credential_name"],
        &["OS_APPLICATION_CREDENTIAL_NAME"],
    );
    let app_cred_secret = pick(
        t.application_credential_secret,
        &["application_credential_secret"],
        &["OS_APPLICATION_CREDENTIAL_SECRET"],
    );
    let username = pick(t.username, &["username"], &["OS_USERNAME"]);
    let user_id = pick(t.user_id, &["user_id"], &["OS_USER_ID"]);
    let password = pick(t.password, &["password"], &["OS_PASSWORD"]);
    let project_name = pick(
        t.tenant_name,
        &["project_name", "tenant_name"],
        &["OS_PROJECT_NAME", "OS_TENANT_NAME"],
    );
    let project_id = pick(
        t.tenant_id,
        &["project_id", "tenant_id"],
        &["OS_PROJECT_ID", "OS_TENANT_ID"],
    );
    // `domain_name`/`domain_id` in a template is the user's domain (and the
    // project's, unless that is given separately), as in Packer.
    let domain_name = pick(t.domain_name.clone(), &["domain_name"], &["OS_DOMAIN_NAME"]);
    let domain_id = pick(t.domain_id.clone(), &["domain_id"], &["OS_DOMAIN_ID"]);
    let default_domain = pick(None, &["default_domain"], &["OS_DEFAULT_DOMAIN"]);
    let user_domain_name = nonempty(t.domain_name.clone())
        .or_else(|| pick(None, &["user_domain_name"], &["OS_USER_DOMAIN_NAME"]))
        .or_else(|| domain_name.clone());
    let user_domain_id = nonempty(t.domain_id.clone())
        .or_else(|| pick(None, &["user_domain_id"], &["OS_USER_DOMAIN_ID"]))
        .or_else(|| domain_id.clone());
    let project_domain_name = pick(None, &["project_domain_name"], &["OS_PROJECT_DOMAIN_NAME"])
        .or_else(|| domain_name.clone());
    let project_domain_id =
        pick(None, &["project_domain_id"], &["OS_PROJECT_DOMAIN_ID"]).or_else(|| domain_id.clone());
    // Without any domain, Keystone's default domain (id `default`): what an
    // rc file written for Keystone v2.0 (no domains) means.
    let fallback = default_domain.or_else(|| Some("default".to_string()));
    let (user_domain_id, user_domain_name) = match (user_domain_id, user_domain_name) {
        (None, None) => (fallback.clone(), None),
        x => x,
    };
    let (project_domain_id, project_domain_name) = match (project_domain_id, project_domain_name) {
        (None, None) => (fallback.clone(), None),
        x => x,
    };

    let region = nonempty(t.region)
        .or_else(|| e("OS_REGION_NAME"))
        .or_else(|| cloud.as_ref().and_then(|c| c.region_name.clone()));
    let iface_s = nonempty(t.endpoint_type)
        .or_else(|| cloud.as_ref().and_then(|c| c.interface.clone()))
        .or_else(|| first(&["OS_INTERFACE", "OS_ENDPOINT_TYPE"]))
        .unwrap_or_default();
    let interface = Interface::parse(&iface_s)
        .ok_or_else(|| OsError::Config(format!("invalid endpoint type {iface_s:?}")))?;
    let insecure = match t.insecure {
        Some(b) => b,
        None => match cloud.as_ref().and_then(|c| c.verify) {
            Some(v) => !v,
            None => e("OS_INSECURE").is_some_and(|v| truthy(&v)),
        },
    };
    let cacert = nonempty(t.cacert)
        .or_else(|| e("OS_CACERT"))
        .or_else(|| cloud.as_ref().and_then(|c| c.cacert.clone()));
    let cert = nonempty(t.cert)
        .or_else(|| e("OS_CERT"))
        .or_else(|| cloud.as_ref().and_then(|c| c.cert.clone()));
    let key = nonempty(t.key)
        .or_else(|| e("OS_KEY"))
        .or_else(|| cloud.as_ref().and_then(|c| c.key.clone()));

    let o = AuthOptions {
        auth_url,
        version,
        username,
        user_id,
        password,
        project_name,
        project_id,
        user_domain_name,
        user_domain_id,
        project_domain_name,
        project_domain_id,
        domain_name,
        domain_id,
        token,
        app_cred_id,
        app_cred_name,
        app_cred_secret,
        region,
        interface,
        insecure,
        cacert: cacert.map(PathBuf::from),
        cert: cert.map(PathBuf::from),
        key: key.map(PathBuf::from),
    };
    check(&o)?;
    Ok(o)
}

/// `keys` (a post-processor's own access keys) over credentials already
/// resolved for another component (the builder whose image it takes): each
/// key that is set wins, everything else stays as `base` has it. The
/// environment and clouds.yaml are not consulted again (`base` went
/// through them).
pub fn overlay(base: &AuthOptions, keys: &AccessKeys) -> Result<AuthOptions, OsError> {
    let mut o = base.clone();
    let k = keys.clone();
    if let Some(u) = nonempty(k.identity_endpoint) {
        o.auth_url = u;
        o.version = None; // from the new URL
    }
    if let Some(u) = nonempty(k.username) {
        o.username = Some(u);
        o.user_id = None;
    }
    if let Some(u) = nonempty(k.user_id) {
        o.user_id = Some(u);
    }
    if let Some(p) = nonempty(k.password) {
        o.password = Some(p);
        o.token = None;
    }
    if let Some(t) = nonempty(k.token) {
        o.token = Some(t);
        if nonempty(keys.password.clone()).is_none() {
            o.password = None;
        }
    }
    if let Some(n) = nonempty(k.tenant_name) {
        o.project_name = Some(n);
        o.project_id = None;
    }
    if let Some(id) = nonempty(k.tenant_id) {
        o.project_id = Some(id);
    }
    if let Some(d) = nonempty(k.domain_name) {
        o.user_domain_name = Some(d.clone());
        o.user_domain_id = None;
        o.project_domain_name = Some(d.clone());
        o.project_domain_id = None;
        o.domain_name = Some(d);
        o.domain_id = None;
    }
    if let Some(d) = nonempty(k.domain_id) {
        o.user_domain_id = Some(d.clone());
        o.project_domain_id = Some(d.clone());
        o.domain_id = Some(d);
    }
    if let Some(r) = nonempty(k.region) {
        o.region = Some(r);
    }
    if let Some(t) = nonempty(k.endpoint_type) {
        o.interface = Interface::parse(&t)
            .ok_or_else(|| OsError::Config(format!("invalid endpoint type {t:?}")))?;
    }
    if let Some(i) = k.insecure {
        o.insecure = i;
    }
    if let Some(c) = nonempty(k.cacert) {
        o.cacert = Some(PathBuf::from(c));
    }
    if let Some(c) = nonempty(k.cert) {
        o.cert = Some(PathBuf::from(c));
    }
    if let Some(c) = nonempty(k.key) {
        o.key = Some(PathBuf::from(c));
    }
    let app = (
        nonempty(k.application_credential_id),
        nonempty(k.application_credential_name),
        nonempty(k.application_credential_secret),
    );
    if app.0.is_some() || app.1.is_some() {
        o.app_cred_id = app.0;
        o.app_cred_name = app.1;
    }
    if app.2.is_some() {
        o.app_cred_secret = app.2;
    }
    check(&o)?;
    Ok(o)
}

fn truthy(v: &str) -> bool {
    matches!(
        v.to_ascii_lowercase().as_str(),
        "1" | "true" | "yes" | "on" | "t" | "y"
    )
}

fn check(o: &AuthOptions) -> Result<(), OsError> {
    let app = o.app_cred_id.is_some() || o.app_cred_name.is_some();
    if app {
        if o.app_cred_secret.is_none() {
            return Err(OsError::Config(
                "an application credential needs application_credential_secret".into(),
            ));
        }
        if o.app_cred_id.is_none() && o.username.is_none() && o.user_id.is_none() {
            return Err(OsError::Config(
                "application_credential_name needs username or user_id".into(),
            ));
        }
        if o.identity_version() == IdentityVersion::V2 {
            return Err(OsError::Config(
                "application credentials need Keystone v3".into(),
            ));
        }
        return Ok(());
    }
    if o.token.is_some() {
        return Ok(());
    }
    if o.username.is_none() && o.user_id.is_none() {
        return Err(OsError::Config(
            "no user: set username or user_id (or OS_USERNAME), a token, or an application credential".into(),
        ));
    }
    if o.password.is_none() {
        return Err(OsError::Config(
            "no password: set password or OS_PASSWORD".into(),
        ));
    }
    Ok(())
}

/// One cloud of clouds.yaml (the parts kiln uses).
#[derive(Debug, Clone, Default)]
pub struct Cloud {
    pub auth: BTreeMap<String, String>,
    pub region_name: Option<String>,
    pub interface: Option<String>,
    pub identity_api_version: Option<String>,
    pub verify: Option<bool>,
    pub cacert: Option<String>,
    pub cert: Option<String>,
    pub key: Option<String>,
}

/// Where clouds.yaml is looked for, in order (os-client-config's list):
/// `OS_CLIENT_CONFIG_FILE`, `./clouds.yaml`,
/// `$XDG_CONFIG_HOME/openstack/` (default `~/.config/openstack/`),
/// `/etc/openstack/`.
pub fn clouds_yaml_paths(env: &dyn Fn(&str) -> Option<String>) -> Vec<PathBuf> {
    let mut v = Vec::new();
    if let Some(f) = nonempty(env("OS_CLIENT_CONFIG_FILE")) {
        v.push(PathBuf::from(f));
    }
    v.push(PathBuf::from("clouds.yaml"));
    let xdg = nonempty(env("XDG_CONFIG_HOME"))
        .map(PathBuf::from)
        .or_else(|| nonempty(env("HOME")).map(|h| Path::new(&h).join(".config")));
    if let Some(x) = xdg {
        v.push(x.join("openstack/clouds.yaml"));
    }
    v.push(PathBuf::from("/etc/openstack/clouds.yaml"));
    v
}

fn load_cloud(
    name: &str,
    env: &dyn Fn(&str) -> Option<String>,
    read_file: &dyn Fn(&Path) -> Option<String>,
) -> Result<Cloud, OsError> {
    let paths = clouds_yaml_paths(env);
    for p in &paths {
        let Some(text) = read_file(p) else { continue };
        let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text)
            .map_err(|e| OsError::Config(format!("{}: {e}", p.display())))?;
        let Some(c) = doc.get("clouds").and_then(|c| c.get(name)) else {
            continue;
        };
        return Ok(parse_cloud(c));
    }
    Err(OsError::Config(format!(
        "cloud {name:?} not found in clouds.yaml (looked in {})",
        paths
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )))
}

fn yaml_str(v: &serde_yaml_ng::Value) -> Option<String> {
    match v {
        serde_yaml_ng::Value::String(s) => Some(s.clone()),
        serde_yaml_ng::Value::Number(n) => Some(n.to_string()),
        serde_yaml_ng::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn parse_cloud(c: &serde_yaml_ng::Value) -> Cloud {
    let mut out = Cloud::default();
    if let Some(serde_yaml_ng::Value::Mapping(m)) = c.get("auth") {
        for (k, v) in m {
            if let (Some(k), Some(v)) = (yaml_str(k), yaml_str(v)) {
                out.auth.insert(k, v);
            }
        }
    }
    let s = |k: &str| c.get(k).and_then(yaml_str);
    out.region_name = s("region_name").or_else(|| {
        c.get("regions")
            .and_then(|r| r.get(0))
            .and_then(|r| yaml_str(r).or_else(|| r.get("name").and_then(yaml_str)))
    });
    out.interface = s("interface").or_else(|| s("endpoint_type"));
    out.identity_api_version = s("identity_api_version");
    out.verify = c.get("verify").and_then(|v| v.as_bool());
    out.cacert = s("cacert");
    out.cert = s("cert");
    out.key = s("key");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }
    fn no_files(_: &Path) -> Option<String> {
        None
    }

    #[test]
    fn seed_rc_file() {
        // The seed's rc file, verbatim (Keystone v2.0, no domains).
        let env = env_of(&[
            ("OS_NO_CACHE", "True"),
            ("COMPUTE_API_VERSION", "1.1"),
            ("OS_USERNAME", "jb23"),
            ("no_proxy", ",172.31.4.18"),
            ("OS_TENANT_NAME", "jb23"),
            ("OS_CLOUDNAME", "overcloud"),
            ("OS_AUTH_URL", "http://172.31.4.18:5000/v2.0/"),
            ("NOVA_VERSION", "1.1"),
            ("OS_PASSWORD", "not_my_password"),
        ]);
        let o = resolve(&AccessKeys::default(), &env, &no_files).unwrap();
        assert_eq!(o.auth_url, "http://172.31.4.18:5000/v2.0/");
        assert_eq!(o.identity_version(), IdentityVersion::V2);
        assert_eq!(o.username.as_deref(), Some("jb23"));
        assert_eq!(o.project_name.as_deref(), Some("jb23"));
        assert_eq!(o.password.as_deref(), Some("not_my_password"));
        assert_eq!(o.interface, Interface::Public);
        assert_eq!(o.region, None);
        assert_eq!(o.secrets(), vec!["not_my_password".to_string()]);
    }

    #[test]
    fn template_keys_win_over_env() {
        let env = env_of(&[
            ("OS_AUTH_URL", "http://a:5000/v3"),
            ("OS_USERNAME", "envuser"),
            ("OS_PASSWORD", "envpw"),
            ("OS_PROJECT_NAME", "envproj"),
            ("OS_TENANT_NAME", "old"),
            ("OS_REGION_NAME", "R1"),
            ("OS_USER_DOMAIN_NAME", "UD"),
            ("OS_PROJECT_DOMAIN_ID", "pd"),
            ("OS_INSECURE", "true"),
            ("OS_CACERT", "/ca.pem"),
        ]);
        let keys = AccessKeys {
            username: Some("tmpl".into()),
            tenant_id: Some("p123".into()),
            endpoint_type: Some("internalURL".into()),
            ..Default::default()
        };
        let o = resolve(&keys, &env, &no_files).unwrap();
        assert_eq!(o.username.as_deref(), Some("tmpl"));
        assert_eq!(o.password.as_deref(), Some("envpw"));
        assert_eq!(o.project_id.as_deref(), Some("p123"));
        assert_eq!(o.project_name.as_deref(), Some("envproj"));
        assert_eq!(o.user_domain_name.as_deref(), Some("UD"));
        assert_eq!(o.user_domain_id, None);
        assert_eq!(o.project_domain_id.as_deref(), Some("pd"));
        assert_eq!(o.region.as_deref(), Some("R1"));
        assert_eq!(o.interface, Interface::Internal);
        assert!(o.insecure);
        assert_eq!(o.cacert.as_deref(), Some(Path::new("/ca.pem")));
        assert_eq!(o.identity_version(), IdentityVersion::V3);
    }

    #[test]
    fn template_domain_is_user_and_project_domain() {
        let env = env_of(&[("OS_AUTH_URL", "http://a:5000/v3"), ("OS_PASSWORD", "x")]);
        let keys = AccessKeys {
            username: Some("u".into()),
            domain_name: Some("D".into()),
            ..Default::default()
        };
        let o = resolve(&keys, &env, &no_files).unwrap();
        assert_eq!(o.user_domain_name.as_deref(), Some("D"));
        assert_eq!(o.project_domain_name.as_deref(), Some("D"));
        // No domain anywhere: Keystone's default domain.
        let o = resolve(
            &AccessKeys {
                username: Some("u".into()),
                ..Default::default()
            },
            &env,
            &no_files,
        )
        .unwrap();
        assert_eq!(o.user_domain_id.as_deref(), Some("default"));
        assert_eq!(o.project_domain_id.as_deref(), Some("default"));
    }

    #[test]
    fn missing_pieces_are_named() {
        let env = env_of(&[]);
        let e = resolve(&AccessKeys::default(), &env, &no_files).unwrap_err();
        assert!(e.to_string().contains("OS_AUTH_URL"), "{e}");
        let env = env_of(&[("OS_AUTH_URL", "http://a/v3"), ("OS_USERNAME", "u")]);
        let e = resolve(&AccessKeys::default(), &env, &no_files).unwrap_err();
        assert!(e.to_string().contains("OS_PASSWORD"), "{e}");
        let env = env_of(&[("OS_AUTH_URL", "http://a/v3"), ("OS_TOKEN", "tok")]);
        let o = resolve(&AccessKeys::default(), &env, &no_files).unwrap();
        assert_eq!(o.token.as_deref(), Some("tok"));
        let bad = AccessKeys {
            endpoint_type: Some("private".into()),
            ..Default::default()
        };
        let env = env_of(&[("OS_AUTH_URL", "http://a/v3"), ("OS_TOKEN", "tok")]);
        assert!(resolve(&bad, &env, &no_files).is_err());
    }

    #[test]
    fn clouds_yaml_with_os_cloud() {
        let yaml = r#"
clouds:
  other: {auth: {auth_url: "http://wrong"}}
  lab:
    auth:
      auth_url: http://127.0.0.1:5000/v3
      username: jb23
      password: pw
      project_name: jb23
      user_domain_name: Default
      project_domain_name: Default
    region_name: RegionOne
    interface: internal
    identity_api_version: 3
    verify: false
"#;
        let env = env_of(&[
            ("OS_CLOUD", "lab"),
            ("HOME", "/home/x"),
            ("OS_USERNAME", "ignored-with-a-cloud"),
        ]);
        let read = |p: &Path| {
            (p == Path::new("/home/x/.config/openstack/clouds.yaml")).then(|| yaml.to_string())
        };
        let o = resolve(&AccessKeys::default(), &env, &read).unwrap();
        assert_eq!(o.auth_url, "http://127.0.0.1:5000/v3");
        assert_eq!(o.username.as_deref(), Some("jb23"));
        assert_eq!(o.project_domain_name.as_deref(), Some("Default"));
        assert_eq!(o.region.as_deref(), Some("RegionOne"));
        assert_eq!(o.interface, Interface::Internal);
        assert_eq!(o.version, Some(IdentityVersion::V3));
        assert!(o.insecure);
        // The template's `cloud` wins over OS_CLOUD; a missing cloud is an error naming the paths.
        let keys = AccessKeys {
            cloud: Some("nope".into()),
            ..Default::default()
        };
        let e = resolve(&keys, &env, &read).unwrap_err().to_string();
        assert!(
            e.contains("\"nope\"") && e.contains("/etc/openstack/clouds.yaml"),
            "{e}"
        );
    }

    /// OS_CLOUD plus other OS_* variables, as Packer 1.6.6 resolves them
    /// (its access config, then gophercloud's clientconfig v0.0.0-20200508).
    #[test]
    fn os_cloud_with_other_os_variables() {
        let yaml = r#"
clouds:
  lab:
    auth:
      auth_url: http://cloud:5000/v3
      username: cloud-user
      project_name: cloud-project
    region_name: CloudRegion
    identity_api_version: 3
    cacert: /cloud-ca.pem
    cert: /cloud-cert.pem
"#;
        let read = |p: &Path| (p == Path::new("/c/clouds.yaml")).then(|| yaml.to_string());
        let env = env_of(&[
            ("OS_CLOUD", "lab"),
            ("OS_CLIENT_CONFIG_FILE", "/c/clouds.yaml"),
            // The cloud has these: the cloud's win.
            ("OS_AUTH_URL", "http://env:5000/v3"),
            ("OS_USERNAME", "env-user"),
            ("OS_PROJECT_NAME", "env-project"),
            // The cloud lacks these: the environment fills them in.
            ("OS_PASSWORD", "env-password"),
            ("OS_USER_DOMAIN_NAME", "EnvDomain"),
            // Packer reads these before looking at the cloud.
            ("OS_REGION_NAME", "EnvRegion"),
            ("OS_CACERT", "/env-ca.pem"),
            ("OS_KEY", "/env-key.pem"),
            // gophercloud: OS_IDENTITY_API_VERSION over identity_api_version.
            ("OS_IDENTITY_API_VERSION", "2.0"),
        ]);
        let o = resolve(&AccessKeys::default(), &env, &read).unwrap();
        assert_eq!(o.auth_url, "http://cloud:5000/v3");
        assert_eq!(o.username.as_deref(), Some("cloud-user"));
        assert_eq!(o.project_name.as_deref(), Some("cloud-project"));
        assert_eq!(o.password.as_deref(), Some("env-password"));
        assert_eq!(o.user_domain_name.as_deref(), Some("EnvDomain"));
        assert_eq!(o.region.as_deref(), Some("EnvRegion"));
        assert_eq!(o.cacert.as_deref(), Some(Path::new("/env-ca.pem")));
        assert_eq!(o.key.as_deref(), Some(Path::new("/env-key.pem")));
        // Packer ignores the cloud's cert; kiln falls back to it.
        assert_eq!(o.cert.as_deref(), Some(Path::new("/cloud-cert.pem")));
        assert_eq!(o.version, Some(IdentityVersion::V2));
        // Without those variables the cloud's region and version apply,
        // and the template's keys win over both.
        let env = env_of(&[
            ("OS_CLOUD", "lab"),
            ("OS_CLIENT_CONFIG_FILE", "/c/clouds.yaml"),
            ("OS_PASSWORD", "pw"),
        ]);
        let o = resolve(&AccessKeys::default(), &env, &read).unwrap();
        assert_eq!(o.region.as_deref(), Some("CloudRegion"));
        assert_eq!(o.version, Some(IdentityVersion::V3));
        assert_eq!(o.cacert.as_deref(), Some(Path::new("/cloud-ca.pem")));
        let keys = AccessKeys {
            username: Some("tmpl".into()),
            region: Some("TmplRegion".into()),
            ..Default::default()
        };
        let o = resolve(&keys, &env, &read).unwrap();
        assert_eq!(o.username.as_deref(), Some("tmpl"));
        assert_eq!(o.region.as_deref(), Some("TmplRegion"));
    }

    #[test]
    fn os_domain_variables_are_the_fallback_domain() {
        let base = [
            ("OS_AUTH_URL", "http://a/v3"),
            ("OS_USERNAME", "u"),
            ("OS_PASSWORD", "p"),
            ("OS_PROJECT_NAME", "proj"),
        ];
        let with = |extra: &[(&'static str, &'static str)]| {
            let mut v: Vec<(&str, &str)> = base.to_vec();
            v.extend_from_slice(extra);
            resolve(&AccessKeys::default(), &env_of(&v), &no_files).unwrap()
        };
        // OS_DOMAIN_NAME: the user's and the project's domain.
        let o = with(&[("OS_DOMAIN_NAME", "Dom")]);
        assert_eq!(o.user_domain_name.as_deref(), Some("Dom"));
        assert_eq!(o.project_domain_name.as_deref(), Some("Dom"));
        assert_eq!(
            (o.user_domain_id.clone(), o.project_domain_id.clone()),
            (None, None)
        );
        let b = crate::client::session::v3_auth_body(&o);
        assert_eq!(
            b["auth"]["identity"]["password"]["user"]["domain"],
            serde_json::json!({"name": "Dom"})
        );
        assert_eq!(
            b["auth"]["scope"]["project"]["domain"],
            serde_json::json!({"name": "Dom"})
        );
        // OS_DOMAIN_ID likewise, by id.
        let o = with(&[("OS_DOMAIN_ID", "d1")]);
        assert_eq!(o.user_domain_id.as_deref(), Some("d1"));
        assert_eq!(o.project_domain_id.as_deref(), Some("d1"));
        // The specific variables win over it.
        let o = with(&[
            ("OS_DOMAIN_NAME", "Dom"),
            ("OS_USER_DOMAIN_NAME", "UserDom"),
            ("OS_PROJECT_DOMAIN_ID", "pd"),
        ]);
        assert_eq!(o.user_domain_name.as_deref(), Some("UserDom"));
        assert_eq!(o.project_domain_id.as_deref(), Some("pd"));
        let b = crate::client::session::v3_auth_body(&o);
        assert_eq!(
            b["auth"]["scope"]["project"]["domain"],
            serde_json::json!({"id": "pd"})
        );
        // No project: a domain-scoped token.
        let env = env_of(&[
            ("OS_AUTH_URL", "http://a/v3"),
            ("OS_USERNAME", "u"),
            ("OS_PASSWORD", "p"),
            ("OS_DOMAIN_NAME", "Dom"),
        ]);
        let o = resolve(&AccessKeys::default(), &env, &no_files).unwrap();
        let b = crate::client::session::v3_auth_body(&o);
        assert_eq!(
            b["auth"]["scope"],
            serde_json::json!({"domain": {"name": "Dom"}})
        );
    }

    #[test]
    fn own_keys_over_resolved_credentials() {
        let env = env_of(&[
            ("OS_AUTH_URL", "http://a:5000/v3"),
            ("OS_USERNAME", "u"),
            ("OS_PASSWORD", "p"),
            ("OS_PROJECT_NAME", "proj"),
            ("OS_USER_DOMAIN_NAME", "Default"),
            ("OS_PROJECT_DOMAIN_NAME", "Default"),
        ]);
        let base = resolve(&AccessKeys::default(), &env, &no_files).unwrap();
        // Nothing of its own: the same credentials.
        assert_eq!(overlay(&base, &AccessKeys::default()).unwrap(), base);
        // Its own keys win, one by one.
        let o = overlay(
            &base,
            &AccessKeys {
                region: Some("R2".into()),
                tenant_id: Some("p2".into()),
                username: Some("other".into()),
                password: Some("pw2".into()),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(o.region.as_deref(), Some("R2"));
        assert_eq!(o.project_id.as_deref(), Some("p2"));
        assert_eq!(o.username.as_deref(), Some("other"));
        assert_eq!(o.password.as_deref(), Some("pw2"));
        assert_eq!(o.auth_url, base.auth_url);
        assert_eq!(o.user_domain_name.as_deref(), Some("Default"));
        // A token of its own replaces the password.
        let o = overlay(
            &base,
            &AccessKeys {
                token: Some("tok".into()),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!((o.token.as_deref(), o.password), (Some("tok"), None));
    }
}
