//! An authenticated session: a Keystone token (v3 or v2.0), the service
//! catalog, endpoint selection by interface and region, and requests that
//! renew the token when it is about to expire or is refused (long builds
//! outlive tokens: Packer fails after an hour, kiln re-authenticates).
use super::auth::{AuthOptions, IdentityVersion, Interface};
use super::error::{error_message, OsError};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;

/// The services kiln talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    Compute,
    Image,
    Network,
    Volume,
}

impl Service {
    fn catalog_types(self) -> &'static [&'static str] {
        match self {
            Service::Compute => &["compute"],
            Service::Image => &["image"],
            Service::Network => &["network"],
            Service::Volume => &["block-storage", "volumev3", "volumev2", "volume"],
        }
    }
    /// The version suffix gophercloud appends to an unversioned endpoint.
    fn version_suffix(self) -> Option<&'static str> {
        match self {
            Service::Image => Some("/v2"),
            Service::Network => Some("/v2.0"),
            _ => None,
        }
    }
    fn name(self) -> &'static str {
        match self {
            Service::Compute => "compute (Nova)",
            Service::Image => "image (Glance)",
            Service::Network => "network (Neutron)",
            Service::Volume => "block storage (Cinder)",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub interface: String,
    pub region: Option<String>,
    pub url: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogEntry {
    pub service_type: String,
    pub name: String,
    pub endpoints: Vec<Endpoint>,
}

/// A token and what came with it.
#[derive(Debug, Clone)]
pub struct Token {
    pub id: String,
    pub expires_at: Option<OffsetDateTime>,
    pub catalog: Vec<CatalogEntry>,
    pub project_id: Option<String>,
    pub user_id: Option<String>,
    /// When Keystone issued it (its `issued_at`; else when kiln got it):
    /// with `expires_at`, the token's lifetime.
    pub issued_at: OffsetDateTime,
}

impl Token {
    /// Should it be renewed before use? Two minutes before it expires, or
    /// after three quarters of its life when it lives less than eight
    /// minutes (a cloud with short-lived tokens).
    pub fn needs_renewal(&self, now: OffsetDateTime) -> bool {
        let Some(exp) = self.expires_at else {
            return false;
        };
        let life: time::Duration = exp - self.issued_at;
        let margin = std::cmp::min(life / 4_i32, RENEW_MARGIN);
        exp - now <= margin
    }
}

/// Pick the endpoint for `types` with `interface` and `region` (any
/// region when none is asked for, as gophercloud).
pub fn find_endpoint(
    catalog: &[CatalogEntry],
    types: &[&str],
    interface: Interface,
    region: Option<&str>,
) -> Option<String> {
    for t in types {
        for e in catalog.iter().filter(|e| e.service_type == *t) {
            for ep in &e.endpoints {
                if ep.interface != interface.v3_name() {
                    continue;
                }
                if let Some(r) = region {
                    if ep.region.as_deref() != Some(r) {
                        continue;
                    }
                }
                return Some(ep.url.clone());
            }
        }
    }
    None
}

/// Parse Keystone v3's `POST /v3/auth/tokens` answer.
pub fn parse_v3_token(subject_token: &str, body: &Value) -> Result<Token, OsError> {
    let t = body
        .get("token")
        .ok_or_else(|| OsError::Protocol("Keystone v3 answer without `token`".into()))?;
    let mut catalog = Vec::new();
    for s in t
        .get("catalog")
        .and_then(|c| c.as_array())
        .into_iter()
        .flatten()
    {
        let eps = s
            .get("endpoints")
            .and_then(|e| e.as_array())
            .into_iter()
            .flatten()
            .filter_map(|ep| {
                Some(Endpoint {
                    interface: ep.get("interface")?.as_str()?.to_string(),
                    region: ep
                        .get("region_id")
                        .or_else(|| ep.get("region"))
                        .and_then(|r| r.as_str())
                        .map(String::from),
                    url: ep.get("url")?.as_str()?.to_string(),
                })
            })
            .collect();
        catalog.push(CatalogEntry {
            service_type: str_of(s, "type"),
            name: str_of(s, "name"),
            endpoints: eps,
        });
    }
    Ok(Token {
        id: subject_token.to_string(),
        expires_at: t
            .get("expires_at")
            .and_then(|v| v.as_str())
            .and_then(parse_time),
        catalog,
        project_id: t
            .pointer("/project/id")
            .and_then(|v| v.as_str())
            .map(String::from),
        user_id: t
            .pointer("/user/id")
            .and_then(|v| v.as_str())
            .map(String::from),
        issued_at: issued(t.get("issued_at")),
    })
}

fn issued(v: Option<&Value>) -> OffsetDateTime {
    v.and_then(|v| v.as_str())
        .and_then(parse_time)
        .unwrap_or_else(OffsetDateTime::now_utc)
}

/// Parse Keystone v2.0's `POST /v2.0/tokens` answer (`access`).
pub fn parse_v2_token(body: &Value) -> Result<Token, OsError> {
    let a = body
        .get("access")
        .ok_or_else(|| OsError::Protocol("Keystone v2.0 answer without `access`".into()))?;
    let id = a
        .pointer("/token/id")
        .and_then(|v| v.as_str())
        .ok_or_else(|| OsError::Protocol("Keystone v2.0 answer without access.token.id".into()))?;
    let mut catalog = Vec::new();
    for s in a
        .get("serviceCatalog")
        .and_then(|c| c.as_array())
        .into_iter()
        .flatten()
    {
        let mut eps = Vec::new();
        for ep in s
            .get("endpoints")
            .and_then(|e| e.as_array())
            .into_iter()
            .flatten()
        {
            let region = ep.get("region").and_then(|r| r.as_str()).map(String::from);
            for iface in [Interface::Public, Interface::Internal, Interface::Admin] {
                if let Some(u) = ep.get(iface.v2_key()).and_then(|u| u.as_str()) {
                    eps.push(Endpoint {
                        interface: iface.v3_name().to_string(),
                        region: region.clone(),
                        url: u.to_string(),
                    });
                }
            }
        }
        catalog.push(CatalogEntry {
            service_type: str_of(s, "type"),
            name: str_of(s, "name"),
            endpoints: eps,
        });
    }
    Ok(Token {
        id: id.to_string(),
        expires_at: a
            .pointer("/token/expires")
            .and_then(|v| v.as_str())
            .and_then(parse_time),
        catalog,
        project_id: a
            .pointer("/token/tenant/id")
            .and_then(|v| v.as_str())
            .map(String::from),
        user_id: a
            .pointer("/user/id")
            .and_then(|v| v.as_str())
            .map(String::from),
        issued_at: issued(a.pointer("/token/issued_at")),
    })
}

fn str_of(v: &Value, k: &str) -> String {
    v.get(k)
        .and_then(|x| x.as_str())
        .unwrap_or_default()
        .to_string()
}

/// Keystone's times: RFC 3339, sometimes without a zone (v2.0's
/// `2014-01-31T15:30:58Z`, v3's `2015-08-27T09:49:58.000000Z`).
pub fn parse_time(s: &str) -> Option<OffsetDateTime> {
    use time::format_description::well_known::Rfc3339;
    if let Ok(t) = OffsetDateTime::parse(s, &Rfc3339) {
        return Some(t);
    }
    OffsetDateTime::parse(&format!("{s}Z"), &Rfc3339).ok()
}

/// The body of a Keystone v3 token request.
pub fn v3_auth_body(o: &AuthOptions) -> Value {
    let user = || {
        let mut u = serde_json::Map::new();
        if let Some(id) = &o.user_id {
            u.insert("id".into(), json!(id));
        } else if let Some(n) = &o.username {
            u.insert("name".into(), json!(n));
            u.insert(
                "domain".into(),
                domain(&o.user_domain_id, &o.user_domain_name),
            );
        }
        Value::Object(u)
    };
    let identity = if o.app_cred_id.is_some() || o.app_cred_name.is_some() {
        let mut ac = serde_json::Map::new();
        if let Some(id) = &o.app_cred_id {
            ac.insert("id".into(), json!(id));
        } else {
            ac.insert("name".into(), json!(o.app_cred_name));
            ac.insert("user".into(), user());
        }
        ac.insert("secret".into(), json!(o.app_cred_secret));
        json!({"methods": ["application_credential"], "application_credential": ac})
    } else if let (Some(tok), None) = (&o.token, &o.password) {
        json!({"methods": ["token"], "token": {"id": tok}})
    } else {
        let mut u = user();
        if let Value::Object(m) = &mut u {
            m.insert("password".into(), json!(o.password));
        }
        json!({"methods": ["password"], "password": {"user": u}})
    };
    let mut auth = serde_json::Map::new();
    auth.insert("identity".into(), identity);
    // Application credentials carry their own scope.
    if o.app_cred_id.is_none() && o.app_cred_name.is_none() {
        if let Some(id) = &o.project_id {
            auth.insert("scope".into(), json!({"project": {"id": id}}));
        } else if let Some(n) = &o.project_name {
            auth.insert(
                "scope".into(),
                json!({"project": {"name": n, "domain": domain(&o.project_domain_id, &o.project_domain_name)}}),
            );
        } else if o.domain_id.is_some() || o.domain_name.is_some() {
            auth.insert(
                "scope".into(),
                json!({"domain": domain(&o.domain_id, &o.domain_name)}),
            );
        }
    }
    json!({ "auth": auth })
}

fn domain(id: &Option<String>, name: &Option<String>) -> Value {
    match (id, name) {
        (Some(id), _) => json!({ "id": id }),
        (None, Some(n)) => json!({ "name": n }),
        (None, None) => json!({ "id": "default" }),
    }
}

/// The body of a Keystone v2.0 token request.
pub fn v2_auth_body(o: &AuthOptions) -> Value {
    let mut auth = serde_json::Map::new();
    if let (Some(tok), None) = (&o.token, &o.password) {
        auth.insert("token".into(), json!({ "id": tok }));
    } else {
        let mut pc = serde_json::Map::new();
        if let Some(n) = &o.username {
            pc.insert("username".into(), json!(n));
        } else if let Some(id) = &o.user_id {
            pc.insert("userId".into(), json!(id));
        }
        pc.insert("password".into(), json!(o.password));
        auth.insert("passwordCredentials".into(), Value::Object(pc));
    }
    if let Some(id) = &o.project_id {
        auth.insert("tenantId".into(), json!(id));
    } else if let Some(n) = &o.project_name {
        auth.insert("tenantName".into(), json!(n));
    }
    json!({ "auth": auth })
}

/// A request body.
pub enum Body {
    None,
    Json(Value),
    /// Glance's JSON patch (`application/openstack-images-v2.1-json-patch`).
    JsonPatch(Value),
    /// A byte stream (image upload); cannot be replayed.
    Stream(reqwest::Body, Option<u64>),
}

impl Body {
    fn replayable(&self) -> bool {
        !matches!(self, Body::Stream(..))
    }
}

/// An authenticated session, shared by every client of a build.
pub struct Session {
    http: reqwest::Client,
    opts: AuthOptions,
    token: tokio::sync::Mutex<Option<Token>>,
    /// Timeout of one API call (not of uploads/downloads, which have an
    /// idle timeout instead).
    pub request_timeout: Duration,
    reauths: AtomicU64,
}

/// Renew the token when it has less than this left.
const RENEW_MARGIN: time::Duration = time::Duration::minutes(2);

fn default_timeout() -> Duration {
    std::env::var("KILN_OPENSTACK_REQUEST_TIMEOUT")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|s| *s > 0.0)
        .map(Duration::from_secs_f64)
        .unwrap_or(Duration::from_secs(60))
}

impl Session {
    /// Build the HTTP client (TLS options) and authenticate.
    pub async fn connect(opts: AuthOptions) -> Result<Arc<Session>, OsError> {
        let s = Arc::new(Session::new(opts)?);
        s.authenticate().await?;
        Ok(s)
    }

    /// A session that has not authenticated yet.
    pub fn new(opts: AuthOptions) -> Result<Session, OsError> {
        let timeout = default_timeout();
        let mut b = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(15).min(timeout))
            .read_timeout(timeout)
            .user_agent(concat!("kiln/", env!("CARGO_PKG_VERSION")))
            .pool_idle_timeout(Duration::from_secs(20));
        if opts.insecure {
            b = b.danger_accept_invalid_certs(true);
        }
        if let Some(ca) = &opts.cacert {
            let pem = std::fs::read(ca)
                .map_err(|e| OsError::Config(format!("reading cacert {}: {e}", ca.display())))?;
            for c in reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| OsError::Config(format!("cacert {}: {e}", ca.display())))?
            {
                b = b.add_root_certificate(c);
            }
        }
        if let (Some(cert), Some(key)) = (&opts.cert, &opts.key) {
            let mut pem = std::fs::read(cert)
                .map_err(|e| OsError::Config(format!("reading cert {}: {e}", cert.display())))?;
            pem.push(b'\n');
            pem.extend(
                std::fs::read(key)
                    .map_err(|e| OsError::Config(format!("reading key {}: {e}", key.display())))?,
            );
            b = b.identity(
                reqwest::Identity::from_pem(&pem)
                    .map_err(|e| OsError::Config(format!("client certificate: {e}")))?,
            );
        }
        let http = b
            .build()
            .map_err(|e| OsError::Config(format!("HTTP client: {e}")))?;
        Ok(Session {
            http,
            opts,
            token: tokio::sync::Mutex::new(None),
            request_timeout: timeout,
            reauths: AtomicU64::new(0),
        })
    }

    pub fn options(&self) -> &AuthOptions {
        &self.opts
    }

    /// How many times the token was obtained (1 + renewals).
    pub fn auth_count(&self) -> u64 {
        self.reauths.load(Ordering::Relaxed)
    }

    /// The current token, renewed first if it is about to expire (see
    /// [`Token::needs_renewal`]).
    pub async fn token(&self) -> Result<Token, OsError> {
        let mut g = self.token.lock().await;
        if let Some(t) = &*g {
            if !t.needs_renewal(OffsetDateTime::now_utc()) {
                return Ok(t.clone());
            }
        }
        let t = self.fetch_token().await?;
        *g = Some(t.clone());
        Ok(t)
    }

    /// Get a new token now.
    pub async fn authenticate(&self) -> Result<Token, OsError> {
        let mut g = self.token.lock().await;
        let t = self.fetch_token().await?;
        *g = Some(t.clone());
        Ok(t)
    }

    async fn reauthenticate_after(&self, refused: &str) -> Result<(), OsError> {
        let mut g = self.token.lock().await;
        if g.as_ref().is_some_and(|t| t.id != refused) {
            return Ok(()); // someone renewed it meanwhile
        }
        *g = Some(self.fetch_token().await?);
        Ok(())
    }

    async fn fetch_token(&self) -> Result<Token, OsError> {
        self.reauths.fetch_add(1, Ordering::Relaxed);
        let base = self.opts.auth_url.trim_end_matches('/').to_string();
        match self.opts.identity_version() {
            IdentityVersion::V3 => {
                let url = if super::auth::version_from_url(&base).is_some() {
                    format!("{base}/auth/tokens")
                } else {
                    format!("{base}/v3/auth/tokens")
                };
                let resp = self
                    .raw(
                        Method::POST,
                        &url,
                        None,
                        Body::Json(v3_auth_body(&self.opts)),
                    )
                    .await?;
                let subject = resp
                    .headers()
                    .get("x-subject-token")
                    .and_then(|h| h.to_str().ok())
                    .map(String::from)
                    .ok_or_else(|| {
                        OsError::Protocol("Keystone v3 answer without X-Subject-Token".into())
                    })?;
                let body = json_of(resp, &url).await?;
                parse_v3_token(&subject, &body)
            }
            IdentityVersion::V2 => {
                let url = if super::auth::version_from_url(&base).is_some() {
                    format!("{base}/tokens")
                } else {
                    format!("{base}/v2.0/tokens")
                };
                let resp = self
                    .raw(
                        Method::POST,
                        &url,
                        None,
                        Body::Json(v2_auth_body(&self.opts)),
                    )
                    .await?;
                let body = json_of(resp, &url).await?;
                parse_v2_token(&body)
            }
        }
    }

    /// The base URL of a service (no trailing slash), from the catalog.
    pub async fn endpoint(&self, svc: Service) -> Result<String, OsError> {
        let t = self.token().await?;
        let url = find_endpoint(
            &t.catalog,
            svc.catalog_types(),
            self.opts.interface,
            self.opts.region.as_deref(),
        )
        .ok_or_else(|| {
            OsError::Config(format!(
                "no {} endpoint in the service catalog for interface {}{}",
                svc.name(),
                self.opts.interface.v3_name(),
                self.opts
                    .region
                    .as_deref()
                    .map(|r| format!(" and region {r}"))
                    .unwrap_or_default()
            ))
        })?;
        let mut url = url.trim_end_matches('/').to_string();
        if let Some(sfx) = svc.version_suffix() {
            if !url.ends_with(sfx) {
                url.push_str(sfx);
            }
        }
        Ok(url)
    }

    /// The project the token is scoped to.
    pub async fn project_id(&self) -> Result<Option<String>, OsError> {
        Ok(self.token().await?.project_id)
    }

    /// One HTTP exchange, no auth, no retry; errors for non-2xx statuses.
    async fn raw(
        &self,
        method: Method,
        url: &str,
        token: Option<&str>,
        body: Body,
    ) -> Result<reqwest::Response, OsError> {
        let mut rb = self
            .http
            .request(method.clone(), url)
            .header("Accept", "application/json");
        if let Some(t) = token {
            rb = rb.header("X-Auth-Token", t);
        }
        let streaming = matches!(body, Body::Stream(..));
        rb = match body {
            Body::None => rb,
            Body::Json(v) => rb.json(&v),
            Body::JsonPatch(v) => rb
                .header(
                    "Content-Type",
                    "application/openstack-images-v2.1-json-patch",
                )
                .body(v.to_string()),
            Body::Stream(b, len) => {
                let rb = rb
                    .header("Content-Type", "application/octet-stream")
                    .body(b);
                match len {
                    Some(l) => rb.header("Content-Length", l),
                    None => rb,
                }
            }
        };
        if !streaming {
            rb = rb.timeout(self.request_timeout);
        }
        let resp = rb.send().await.map_err(|e| OsError::Transport {
            method: method.to_string(),
            url: url.to_string(),
            message: describe(&e),
        })?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status().as_u16();
        let text = tokio::time::timeout(self.request_timeout, resp.text())
            .await
            .ok()
            .and_then(|r| r.ok())
            .unwrap_or_default();
        Err(OsError::Http {
            method: method.to_string(),
            url: url.to_string(),
            status,
            message: error_message(&text),
        })
    }

    /// An authenticated request to `svc` at `path` (relative to the
    /// service's base URL, starting with `/`, or an absolute URL). Renews
    /// the token and tries again once on 401; retries GET/HEAD/DELETE on
    /// connection failures and 502/503/504.
    pub async fn request(
        &self,
        svc: Service,
        method: Method,
        path: &str,
        body: Body,
    ) -> Result<reqwest::Response, OsError> {
        let url = if path.starts_with("http://") || path.starts_with("https://") {
            path.to_string()
        } else {
            format!("{}{}", self.endpoint(svc).await?, path)
        };
        let idempotent = matches!(method, Method::GET | Method::HEAD | Method::DELETE);
        let mut body = Some(body);
        let mut kept: Option<Value> = None;
        let mut patch = false;
        let mut attempt = 0u32;
        let mut renewed = false;
        loop {
            attempt += 1;
            let b = match body.take() {
                Some(Body::Json(v)) => {
                    kept = Some(v.clone());
                    Body::Json(v)
                }
                Some(Body::JsonPatch(v)) => {
                    kept = Some(v.clone());
                    patch = true;
                    Body::JsonPatch(v)
                }
                Some(b) => b,
                None => match &kept {
                    Some(v) if patch => Body::JsonPatch(v.clone()),
                    Some(v) => Body::Json(v.clone()),
                    None => Body::None,
                },
            };
            let replayable = b.replayable();
            let token = self.token().await?;
            match self.raw(method.clone(), &url, Some(&token.id), b).await {
                Err(OsError::Http { status: 401, .. })
                    if !renewed && replayable && self.can_renew() =>
                {
                    renewed = true;
                    self.reauthenticate_after(&token.id).await?;
                }
                Err(e)
                    if idempotent
                        && attempt < 4
                        && (matches!(e, OsError::Transport { .. })
                            || matches!(e.status(), Some(502..=504))) =>
                {
                    tokio::time::sleep(Duration::from_millis(200 * 2u64.pow(attempt - 1))).await;
                }
                r => return r,
            }
        }
    }

    fn can_renew(&self) -> bool {
        self.opts.password.is_some() || self.opts.app_cred_secret.is_some()
    }

    /// A JSON request; the answer's body as JSON (`null` when empty).
    pub async fn json(
        &self,
        svc: Service,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, OsError> {
        let b = match body {
            Some(v) => Body::Json(v),
            None => Body::None,
        };
        let resp = self.request(svc, method, path, b).await?;
        let url = resp.url().to_string();
        json_of(resp, &url).await
    }
}

async fn json_of(resp: reqwest::Response, url: &str) -> Result<Value, OsError> {
    if resp.status() == StatusCode::NO_CONTENT {
        return Ok(Value::Null);
    }
    let bytes = resp.bytes().await.map_err(|e| OsError::Transport {
        method: "reading".into(),
        url: url.to_string(),
        message: describe(&e),
    })?;
    if bytes.iter().all(|b| b.is_ascii_whitespace()) {
        return Ok(Value::Null);
    }
    serde_json::from_slice(&bytes)
        .map_err(|e| OsError::Protocol(format!("{url}: answer is not JSON: {e}")))
}

/// A reqwest error without repeating the URL (the caller names it).
pub fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else {
        "request failed"
    };
    let mut src: Option<&dyn std::error::Error> = std::error::Error::source(e);
    let mut last = None;
    while let Some(s) = src {
        last = Some(s.to_string());
        src = s.source();
    }
    match last {
        Some(l) => format!("{kind}: {l}"),
        None => kind.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(life_s: i64) -> (Token, OffsetDateTime) {
        let t0 = OffsetDateTime::now_utc();
        let t = Token {
            id: "t".into(),
            expires_at: Some(t0 + time::Duration::seconds(life_s)),
            catalog: vec![],
            project_id: None,
            user_id: None,
            issued_at: t0,
        };
        (t, t0)
    }

    #[test]
    fn renewal_margin_follows_the_token_life() {
        let s = time::Duration::seconds;
        // An hour-long token: renewed in its last two minutes.
        let (t, t0) = token(3600);
        assert!(!t.needs_renewal(t0 + s(3479)));
        assert!(t.needs_renewal(t0 + s(3481)));
        // A 20 s token: renewed in its last quarter (5 s), not at once.
        let (t, t0) = token(20);
        assert!(!t.needs_renewal(t0));
        assert!(!t.needs_renewal(t0 + s(14)));
        assert!(t.needs_renewal(t0 + s(16)));
        // No expiry given: never renewed by time (a 401 still renews).
        let (mut t, t0) = token(1);
        t.expires_at = None;
        assert!(!t.needs_renewal(t0 + s(100_000)));
    }
}
