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
/// Order, as Packer 1.6.6 (gophercloud's clientconfig): template key, then
/// the cloud named by `cloud`/`OS_CLOUD` in clouds.yaml, then `OS_*`.
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
    let has_cloud = cloud.is_some();
    // With a cloud, its values come before the environment (gophercloud
    // reads OS_* only when no cloud is selected).
    let pick = |tmpl: Option<String>, cloud_keys: &[&str], env_keys: &[&str]| -> Option<String> {
        nonempty(tmpl)
            .or_else(|| cloud_keys.iter().find_map(|k| nonempty(c(k))))
            .or_else(|| if has_cloud { None } else { first(env_keys) })
    };

    let auth_url = pick(t.identity_endpoint, &["auth_url"], &["OS_AUTH_URL"]).ok_or_else(|| {
        OsError::Config(
            "no identity endpoint: set identity_endpoint, OS_AUTH_URL, or a cloud (OS_CLOUD) in clouds.yaml".into(),
        )
    })?;
    let version = match cloud
        .as_ref()
        .and_then(|c| c.identity_api_version.clone())
        .or_else(|| e("OS_IDENTITY_API_VERSION"))
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
        .or_else(|| {
            if has_cloud {
                None
            } else {
                first(&["OS_INTERFACE", "OS_ENDPOINT_TYPE"])
            }
        })
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
        let doc: serde_yaml::Value = serde_yaml::from_str(&text)
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

fn yaml_str(v: &serde_yaml::Value) -> Option<String> {
    match v {
        serde_yaml::Value::String(s) => Some(s.clone()),
        serde_yaml::Value::Number(n) => Some(n.to_string()),
        serde_yaml::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn parse_cloud(c: &serde_yaml::Value) -> Cloud {
    let mut out = Cloud::default();
    if let Some(serde_yaml::Value::Mapping(m)) = c.get("auth") {
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
}
