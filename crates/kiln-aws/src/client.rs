//! The connection to AWS: endpoints, signed requests, retries.
//!
//! Every request is signed with SigV4 ([`crate::sigv4`]). Throttling
//! (`RequestLimitExceeded`, `Throttling`, `SlowDown`, ...), server errors
//! (5xx), transient codes and dropped connections are retried with
//! exponential backoff and full jitter, as the AWS SDKs do, up to
//! `max_retries` times (Packer's default: 10). A call that creates
//! something and is not idempotent is sent with [`Retry::SafeOnly`]: only
//! answers that prove it was not carried out (throttling, a connection that
//! could not be made) are retried; anything else is returned so the caller
//! can look for what may have been made.
use crate::config::{AccessConfig, Env, PollingConfig, WaitTiming};
use crate::credentials::{self, Credentials, Provider, SharedFiles};
use crate::error::{parse_error_body, AwsError};
use crate::sigv4::{self, PathStyle, SignableRequest, SigningParams};
use bytes::Bytes;
use rand::Rng;
use std::sync::Arc;
use std::time::Duration;

/// Which failures a call may be sent again after.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Reads, deletes, and creates made idempotent by a client token:
    /// throttling, 5xx, transient codes, no answer.
    Idempotent,
    /// A create that is not idempotent: only throttling and connections
    /// that could not be made (the request was certainly not carried out).
    SafeOnly,
    /// Never.
    Never,
}

/// Backoff for retries.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts in all (Packer: `max_retries` + 1 = 11).
    pub max_attempts: u32,
    /// Base delay for server errors and dropped connections.
    pub base: Duration,
    /// Base delay after throttling.
    pub throttle_base: Duration,
    /// No single wait is longer.
    pub cap: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 11,
            base: Duration::from_millis(100),
            throttle_base: Duration::from_millis(500),
            cap: Duration::from_secs(20),
        }
    }
}

impl RetryPolicy {
    /// The wait before attempt `attempt + 1` (full jitter: a random time up
    /// to `base * 2^attempt`, capped).
    pub fn delay(&self, attempt: u32, throttled: bool) -> Duration {
        let base = if throttled {
            self.throttle_base
        } else {
            self.base
        };
        let ceiling = base.saturating_mul(1u32 << attempt.min(16)).min(self.cap);
        let ms = ceiling.as_millis().max(1) as u64;
        Duration::from_millis(rand::thread_rng().gen_range(ms / 4..=ms))
    }
}

/// The DNS suffix of a region's partition.
pub fn dns_suffix(region: &str) -> &'static str {
    if region.starts_with("cn-") {
        "amazonaws.com.cn"
    } else {
        "amazonaws.com"
    }
}

/// An HTTP response, read whole.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Bytes,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// HTTP, signing and retries, without credentials of its own.
#[derive(Clone)]
pub struct Transport {
    pub http: reqwest::Client,
    pub retry: RetryPolicy,
    /// How long one request may take before it counts as unanswered.
    pub request_timeout: Duration,
}

/// A request to send (signed anew for each attempt).
pub struct Request<'a> {
    pub service: &'static str,
    /// For messages and the retry logic: the API action.
    pub action: &'a str,
    pub method: reqwest::Method,
    /// Scheme, host and port (no trailing slash).
    pub base: &'a str,
    /// The path as sent, already encoded.
    pub path: &'a str,
    pub query: &'a [(String, String)],
    pub headers: &'a [(String, String)],
    pub body: Bytes,
    pub path_style: PathStyle,
    pub s3: bool,
    pub timeout: Option<Duration>,
}

impl Transport {
    pub fn new(insecure: bool, retry: RetryPolicy) -> Result<Self, AwsError> {
        let http = reqwest::Client::builder()
            .danger_accept_invalid_certs(insecure)
            .connect_timeout(Duration::from_secs(10))
            .pool_idle_timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| AwsError::Config(format!("HTTP client: {e}")))?;
        Ok(Transport {
            http,
            retry,
            request_timeout: Duration::from_secs(120),
        })
    }

    /// Send `req` once, signed with `creds` for `region`.
    pub async fn send_once(
        &self,
        req: &Request<'_>,
        region: &str,
        creds: &Credentials,
    ) -> Result<Response, AwsError> {
        let url = reqwest::Url::parse(&format!("{}{}", req.base, req.path))
            .map_err(|e| AwsError::Config(format!("bad endpoint {}{}: {e}", req.base, req.path)))?;
        let host = match (url.host_str(), url.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_string(),
            _ => {
                return Err(AwsError::Config(format!(
                    "no host in endpoint {}",
                    req.base
                )))
            }
        };
        let payload_hash = sigv4::sha256_hex(&req.body);
        let mut headers: Vec<(String, String)> = vec![("host".into(), host)];
        headers.extend(req.headers.iter().cloned());
        let signed = sigv4::sign(
            &SignableRequest {
                method: req.method.as_str(),
                path: req.path,
                query: req.query,
                headers: &headers,
                payload_hash: &payload_hash,
                path_style: req.path_style,
                content_sha256_header: req.s3,
            },
            &SigningParams {
                access_key: &creds.access_key_id,
                secret_key: &creds.secret_access_key,
                token: creds.session_token.as_deref(),
                region,
                service: req.service,
                time: time::OffsetDateTime::now_utc(),
            },
        );
        let query = if req.query.is_empty() {
            String::new()
        } else {
            format!("?{}", sigv4::canonical_query(req.query))
        };
        let full = format!("{}{}{}", req.base, req.path, query);
        let mut rb = self
            .http
            .request(req.method.clone(), &full)
            .timeout(req.timeout.unwrap_or(self.request_timeout));
        for (k, v) in req.headers.iter().chain(signed.headers.iter()) {
            rb = rb.header(k.as_str(), v.as_str());
        }
        if !req.body.is_empty()
            || req.method == reqwest::Method::PUT
            || req.method == reqwest::Method::POST
        {
            rb = rb.body(req.body.clone());
        }
        let transport_err = |e: reqwest::Error| AwsError::Transport {
            service: req.service,
            action: req.action.to_string(),
            message: describe(&e),
            sent: !e.is_connect(),
        };
        let resp = rb.send().await.map_err(transport_err)?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.bytes().await.map_err(transport_err)?;
        if status >= 300 {
            let text = String::from_utf8_lossy(&body);
            let rid = headers
                .get("x-amz-request-id")
                .or_else(|| headers.get("x-amzn-requestid"))
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let (code, message, rid2) = parse_error_body(&text).unwrap_or_else(|| {
                (
                    match status {
                        404 => "NotFound".to_string(),
                        403 => "Forbidden".to_string(),
                        s if s >= 500 => "ServerError".to_string(),
                        _ => format!("HTTP{status}"),
                    },
                    text.chars()
                        .take(300)
                        .collect::<String>()
                        .trim()
                        .to_string(),
                    None,
                )
            });
            return Err(AwsError::Api {
                service: req.service,
                action: req.action.to_string(),
                status,
                code,
                message,
                request_id: rid2.or(rid),
            });
        }
        Ok(Response {
            status,
            headers,
            body,
        })
    }

    /// Send `req`, retrying as `retry` allows.
    pub async fn send(
        &self,
        req: &Request<'_>,
        region: &str,
        creds: &Arc<Provider>,
        retry: Retry,
    ) -> Result<Response, AwsError> {
        let mut attempt = 0;
        loop {
            let c = creds.get().await?;
            match self.send_once(req, region, &c).await {
                Ok(r) => return Ok(r),
                Err(e) => {
                    attempt += 1;
                    let again = match retry {
                        Retry::Never => false,
                        Retry::Idempotent => e.is_retryable(),
                        Retry::SafeOnly => {
                            e.is_throttle() || matches!(e, AwsError::Transport { sent: false, .. })
                        }
                    };
                    if !again || attempt >= self.retry.max_attempts {
                        return Err(e);
                    }
                    tokio::time::sleep(self.retry.delay(attempt - 1, e.is_throttle())).await;
                }
            }
        }
    }

    /// A Query-API call (EC2, STS) with fixed credentials: the answer's
    /// XML.
    pub async fn query(
        &self,
        service: &'static str,
        endpoint: &str,
        region: &str,
        creds: &Credentials,
        params: &[(String, String)],
        retry: Retry,
    ) -> Result<String, AwsError> {
        let provider = Provider::fixed(creds.clone(), self.clone());
        self.query_with(service, endpoint, region, &provider, params, retry)
            .await
    }

    /// A Query-API call: POST of the form-encoded parameters.
    pub async fn query_with(
        &self,
        service: &'static str,
        endpoint: &str,
        region: &str,
        creds: &Arc<Provider>,
        params: &[(String, String)],
        retry: Retry,
    ) -> Result<String, AwsError> {
        let action = params
            .iter()
            .find(|(k, _)| k == "Action")
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        let (base, path) = split_endpoint(endpoint);
        let body = form_encode(params);
        let headers = vec![(
            "content-type".to_string(),
            "application/x-www-form-urlencoded; charset=utf-8".to_string(),
        )];
        let req = Request {
            service,
            action: &action,
            method: reqwest::Method::POST,
            base: &base,
            path: &path,
            query: &[],
            headers: &headers,
            body: Bytes::from(body),
            path_style: PathStyle::Normalized,
            s3: false,
            timeout: None,
        };
        let r = self.send(&req, region, creds, retry).await?;
        Ok(r.text())
    }
}

/// `scheme://host[:port]` and the path (`/` at least) of an endpoint URL.
pub fn split_endpoint(endpoint: &str) -> (String, String) {
    let e = endpoint.trim_end_matches('/');
    let after_scheme = e.find("://").map(|i| i + 3).unwrap_or(0);
    match e[after_scheme..].find('/') {
        Some(i) => (
            e[..after_scheme + i].to_string(),
            format!("{}/", &e[after_scheme + i..]),
        ),
        None => (e.to_string(), "/".to_string()),
    }
}

/// `application/x-www-form-urlencoded` as AWS expects it (RFC 3986
/// encoding, spaces as `%20`).
pub fn form_encode(params: &[(String, String)]) -> String {
    params
        .iter()
        .map(|(k, v)| {
            format!(
                "{}={}",
                sigv4::uri_encode(k, false),
                sigv4::uri_encode(v, false)
            )
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// A reqwest error with its causes.
pub fn describe(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

/// Where kiln sends each service's requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoints {
    pub ec2: String,
    /// `None`: AWS's S3 (virtual-hosted buckets); `Some`: a custom S3
    /// endpoint, addressed path-style (`endpoint/bucket/key`).
    pub s3: Option<String>,
    pub sts: String,
    /// The EC2 endpoint was set by the user (it stays when the region
    /// changes).
    pub ec2_custom: bool,
}

fn with_scheme(u: &str) -> String {
    if u.contains("://") {
        u.trim_end_matches('/').to_string()
    } else {
        format!("https://{}", u.trim_end_matches('/'))
    }
}

impl Endpoints {
    /// Endpoints for `region`: `custom_endpoint_ec2`, then
    /// `AWS_ENDPOINT_URL_<SERVICE>`, then `AWS_ENDPOINT_URL`, then AWS's.
    /// As in Packer (whose session-wide endpoint reaches every service),
    /// `custom_endpoint_ec2` also serves S3 when no S3 endpoint is set.
    pub fn resolve(custom_ec2: Option<&str>, env: &Env, region: &str) -> Self {
        let general = env.get("AWS_ENDPOINT_URL").map(with_scheme);
        let ec2_env = env.get("AWS_ENDPOINT_URL_EC2").map(with_scheme);
        let (ec2, ec2_custom) = match (custom_ec2.map(with_scheme), ec2_env, general.clone()) {
            (Some(c), _, _) | (None, Some(c), _) | (None, None, Some(c)) => (c, true),
            _ => (
                format!("https://ec2.{region}.{}", dns_suffix(region)),
                false,
            ),
        };
        let s3 = env
            .get("AWS_ENDPOINT_URL_S3")
            .map(with_scheme)
            .or(general)
            .or_else(|| custom_ec2.map(with_scheme));
        Endpoints {
            ec2,
            s3,
            sts: credentials::sts_endpoint(env, region),
            ec2_custom,
        }
    }
}

/// A connection to AWS in one region: credentials, endpoints, retries.
#[derive(Clone)]
pub struct Aws {
    pub transport: Transport,
    pub region: String,
    pub creds: Arc<Provider>,
    pub endpoints: Endpoints,
    pub env: Env,
    pub polling: PollingConfig,
    custom_ec2: Option<String>,
}

impl std::fmt::Debug for Aws {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Aws")
            .field("region", &self.region)
            .field("endpoints", &self.endpoints)
            .finish()
    }
}

impl Aws {
    /// Resolve credentials, region and endpoints from `c` and the process
    /// environment.
    pub async fn connect(c: &AccessConfig) -> Result<Aws, AwsError> {
        Self::connect_with(c, Env::from_process()).await
    }

    /// As [`Aws::connect`], with the given environment.
    pub async fn connect_with(c: &AccessConfig, env: Env) -> Result<Aws, AwsError> {
        let files = SharedFiles::load(c, &env)?;
        let region = credentials::resolve_region(c, &env, &files).ok_or_else(|| {
            AwsError::Config(
                "no AWS region: set `region`, AWS_REGION or AWS_DEFAULT_REGION, or a region in the profile".into(),
            )
        })?;
        let retry = RetryPolicy {
            max_attempts: c.max_retries.unwrap_or(10) + 1,
            ..RetryPolicy::default()
        };
        let transport = Transport::new(c.insecure_skip_tls_verify, retry)?;
        let creds = credentials::resolve(c, &env, &region, &transport).await?;
        Ok(Aws {
            endpoints: Endpoints::resolve(c.custom_endpoint_ec2.as_deref(), &env, &region),
            transport,
            region,
            creds,
            polling: c.polling,
            custom_ec2: c.custom_endpoint_ec2.clone(),
            env,
        })
    }

    /// The same account and settings in another region (for AMI copies).
    pub fn in_region(&self, region: &str) -> Aws {
        let mut a = self.clone();
        a.region = region.to_string();
        a.endpoints = Endpoints::resolve(self.custom_ec2.as_deref(), &self.env, region);
        a
    }

    /// How long one request may take before it counts as unanswered.
    pub fn set_request_timeout(&mut self, t: Duration) {
        self.transport.request_timeout = t;
    }

    /// The secret values in use (to register with the UI's scrubber).
    pub async fn secrets(&self) -> Vec<String> {
        self.creds
            .get()
            .await
            .map(|c| c.secrets())
            .unwrap_or_default()
    }

    /// A waiter's timing (see [`PollingConfig::timing`]).
    pub fn timing(&self, delay: u64, attempts: u64) -> WaitTiming {
        self.polling.timing(&self.env, delay, attempts)
    }

    /// An EC2 Query-API call: `Action`, `Version` and `params`.
    pub async fn ec2_call(
        &self,
        action: &str,
        params: Vec<(String, String)>,
        retry: Retry,
    ) -> Result<String, AwsError> {
        let mut p = vec![
            ("Action".to_string(), action.to_string()),
            ("Version".to_string(), "2016-11-15".to_string()),
        ];
        p.extend(params);
        self.transport
            .query_with(
                "ec2",
                &self.endpoints.ec2,
                &self.region,
                &self.creds,
                &p,
                retry,
            )
            .await
    }

    /// An STS Query-API call.
    pub async fn sts_call(
        &self,
        action: &str,
        params: Vec<(String, String)>,
    ) -> Result<String, AwsError> {
        let mut p = vec![
            ("Action".to_string(), action.to_string()),
            ("Version".to_string(), "2011-06-15".to_string()),
        ];
        p.extend(params);
        self.transport
            .query_with(
                "sts",
                &self.endpoints.sts,
                &self.region,
                &self.creds,
                &p,
                Retry::Idempotent,
            )
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_precedence() {
        let env = Env::default();
        let e = Endpoints::resolve(None, &env, "eu-west-1");
        assert_eq!(e.ec2, "https://ec2.eu-west-1.amazonaws.com");
        assert_eq!(e.s3, None);
        assert_eq!(e.sts, "https://sts.eu-west-1.amazonaws.com");
        assert_eq!(
            Endpoints::resolve(None, &env, "cn-north-1").ec2,
            "https://ec2.cn-north-1.amazonaws.com.cn"
        );
        let env = Env::default()
            .with("AWS_ENDPOINT_URL", "http://127.0.0.1:1")
            .with("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:2/");
        let e = Endpoints::resolve(None, &env, "us-east-1");
        assert_eq!(e.ec2, "http://127.0.0.1:1");
        assert_eq!(e.s3.as_deref(), Some("http://127.0.0.1:2"));
        assert_eq!(e.sts, "http://127.0.0.1:1");
        let env = env.with("AWS_ENDPOINT_URL_EC2", "http://127.0.0.1:3");
        let e = Endpoints::resolve(Some("ec2.example.com"), &env, "us-east-1");
        assert_eq!(e.ec2, "https://ec2.example.com");
        assert!(e.ec2_custom);
        let e = Endpoints::resolve(None, &env, "us-east-1");
        assert_eq!(e.ec2, "http://127.0.0.1:3");
        // custom_endpoint_ec2 serves S3 too when nothing else is set (Packer's session-wide endpoint)
        let e = Endpoints::resolve(Some("http://127.0.0.1:9"), &Env::default(), "us-east-1");
        assert_eq!(e.s3.as_deref(), Some("http://127.0.0.1:9"));
    }

    #[test]
    fn endpoint_split_and_form() {
        assert_eq!(
            split_endpoint("http://127.0.0.1:5055"),
            ("http://127.0.0.1:5055".into(), "/".into())
        );
        assert_eq!(
            split_endpoint("https://x.com/api/"),
            ("https://x.com".into(), "/api/".into())
        );
        assert_eq!(
            form_encode(&[
                ("A".into(), "b c/d".into()),
                ("Filter.1.Name".into(), "tag:Name".into())
            ]),
            "A=b%20c%2Fd&Filter.1.Name=tag%3AName"
        );
    }

    #[test]
    fn backoff_is_capped_and_jittered() {
        let p = RetryPolicy::default();
        for a in 0..20 {
            let d = p.delay(a, true);
            assert!(d <= p.cap, "{d:?}");
        }
        let d0 = p.delay(0, false);
        assert!(d0 <= Duration::from_millis(100));
        let many: std::collections::BTreeSet<u128> =
            (0..50).map(|_| p.delay(5, false).as_millis()).collect();
        assert!(many.len() > 5, "jitter: {many:?}");
    }
}
