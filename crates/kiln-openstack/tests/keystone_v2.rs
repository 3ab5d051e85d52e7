//! Keystone v2.0 (the seed's `OS_AUTH_URL` ends in `/v2.0/`; current
//! Keystone has none), against answers shaped as the Identity v2.0 API
//! reference's examples, served by a small local HTTP server: the token
//! request body, the service catalog by interface and region, renewal of
//! an expiring token, and re-authentication after a 401.
use kiln_openstack::client::auth::{self, AccessKeys, IdentityVersion};
use kiln_openstack::client::{Cloud, Service, Session};
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

#[derive(Default)]
struct Keystone {
    /// Token ids issued, in order.
    issued: Vec<String>,
    /// The token the compute service accepts.
    valid: Option<String>,
    /// Lifetime of the next tokens, seconds.
    lifetime: i64,
    requests: Vec<(String, String, Value)>,
}

/// The v2.0 reference's "Authenticate" answer with this server's URLs.
fn access(base: &str, token: &str, lifetime: i64) -> Value {
    let exp = time::OffsetDateTime::now_utc() + time::Duration::seconds(lifetime);
    let exp = exp
        .format(&time::macros::format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second]Z"
        ))
        .unwrap();
    let tenant = "fc394f2ab2df4114bde39905f800dc57";
    json!({"access": {
        "token": {"issued_at": "2014-01-30T15:30:58.819584", "expires": exp, "id": token,
                  "tenant": {"description": null, "enabled": true, "id": tenant, "name": "jb23"}},
        "serviceCatalog": [
            {"endpoints": [
                {"adminURL": format!("{base}/admin/v2/{tenant}"), "region": "RegionOne",
                 "internalURL": format!("{base}/internal/v2/{tenant}"), "id": "2dad48f09e2a447a9bf852bcd93548ef",
                 "publicURL": format!("{base}/public/v2/{tenant}")},
                {"adminURL": format!("{base}/other-admin/v2/{tenant}"), "region": "RegionTwo",
                 "internalURL": format!("{base}/other-internal/v2/{tenant}"), "id": "2",
                 "publicURL": format!("{base}/other/v2/{tenant}")}],
             "endpoints_links": [], "type": "compute", "name": "nova"},
            {"endpoints": [
                {"adminURL": format!("{base}/glance"), "region": "RegionOne",
                 "internalURL": format!("{base}/glance"), "id": "3", "publicURL": format!("{base}/glance")}],
             "endpoints_links": [], "type": "image", "name": "glance"},
            {"endpoints": [
                {"adminURL": format!("{base}:35357/v2.0"), "region": "RegionOne",
                 "internalURL": format!("{base}/v2.0"), "id": "4", "publicURL": format!("{base}/v2.0")}],
             "endpoints_links": [], "type": "identity", "name": "keystone"}],
        "user": {"username": "jb23", "roles_links": [], "id": "9a6590b2ab024747bc2167c4e064d00d",
                 "roles": [{"name": "Member"}], "name": "jb23"},
        "metadata": {"is_admin": 0, "roles": ["9fe2ff9ee4384b1894a90878d3e92bab"]}}})
}

async fn serve(state: Arc<Mutex<Keystone>>) -> String {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", l.local_addr().unwrap());
    let b2 = base.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut c, _)) = l.accept().await else {
                return;
            };
            let (state, base) = (state.clone(), b2.clone());
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut b = [0u8; 4096];
                let (head, body) = loop {
                    let n = c.read(&mut b).await.unwrap();
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&b[..n]);
                    if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..p]).to_string();
                        let len: usize = head
                            .lines()
                            .find_map(|l| {
                                let l = l.to_ascii_lowercase();
                                l.strip_prefix("content-length:")
                                    .map(|v| v.trim().parse().unwrap())
                            })
                            .unwrap_or(0);
                        while buf.len() < p + 4 + len {
                            let n = c.read(&mut b).await.unwrap();
                            buf.extend_from_slice(&b[..n]);
                        }
                        break (head, buf[p + 4..p + 4 + len].to_vec());
                    }
                };
                let mut first = head.lines().next().unwrap().split_whitespace();
                let (method, path) = (
                    first.next().unwrap().to_string(),
                    first.next().unwrap().to_string(),
                );
                let token = head.lines().find_map(|l| {
                    l.to_ascii_lowercase()
                        .starts_with("x-auth-token:")
                        .then(|| l.split_once(':').unwrap().1.trim().to_string())
                });
                let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                let (status, answer) = {
                    let mut s = state.lock().unwrap();
                    s.requests
                        .push((method.clone(), path.clone(), body.clone()));
                    if method == "POST" && path == "/v2.0/tokens" {
                        let pc = &body["auth"]["passwordCredentials"];
                        if pc["username"] == "jb23"
                            && pc["password"] == "not_my_password"
                            && body["auth"]["tenantName"] == "jb23"
                        {
                            let id = format!("token-{}", s.issued.len() + 1);
                            s.issued.push(id.clone());
                            s.valid = Some(id.clone());
                            (200, access(&base, &id, s.lifetime))
                        } else {
                            (
                                401,
                                json!({"error": {"message": "The request you have made requires authentication.", "code": 401, "title": "Unauthorized"}}),
                            )
                        }
                    } else if path.contains("/v2/fc394f2ab2df4114bde39905f800dc57/flavors/2") {
                        if token.is_some() && token == s.valid {
                            let which = path.split('/').nth(1).unwrap().to_string();
                            (
                                200,
                                json!({"flavor": {"id": "2", "name": "m1.small", "served_by": which}}),
                            )
                        } else {
                            (
                                401,
                                json!({"error": {"message": "The request you have made requires authentication.", "code": 401}}),
                            )
                        }
                    } else {
                        (
                            404,
                            json!({"itemNotFound": {"message": "no such thing", "code": 404}}),
                        )
                    }
                };
                let text = answer.to_string();
                let resp = format!(
                    "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
                    text.len()
                );
                let _ = c.write_all(resp.as_bytes()).await;
            });
        }
    });
    base
}

fn seed_env(base: &str, extra: &[(&str, &str)]) -> kiln_openstack::client::AuthOptions {
    // The seed's rc file, with this server as OS_AUTH_URL.
    let mut vars: Vec<(String, String)> = vec![
        ("OS_NO_CACHE".into(), "True".into()),
        ("COMPUTE_API_VERSION".into(), "1.1".into()),
        ("OS_USERNAME".into(), "jb23".into()),
        ("OS_TENANT_NAME".into(), "jb23".into()),
        ("OS_CLOUDNAME".into(), "overcloud".into()),
        ("OS_AUTH_URL".into(), format!("{base}/v2.0/")),
        ("NOVA_VERSION".into(), "1.1".into()),
        ("OS_PASSWORD".into(), "not_my_password".into()),
    ];
    for (k, v) in extra {
        vars.push((k.to_string(), v.to_string()));
    }
    auth::resolve(
        &AccessKeys::default(),
        &|k| {
            vars.iter()
                .rev()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.clone())
        },
        &|_| None,
    )
    .unwrap()
}

#[tokio::test]
async fn seed_rc_authenticates_against_v2_and_uses_the_catalog() {
    let st = Arc::new(Mutex::new(Keystone {
        lifetime: 3600,
        ..Default::default()
    }));
    let base = serve(st.clone()).await;
    let o = seed_env(&base, &[]);
    assert_eq!(o.identity_version(), IdentityVersion::V2);
    let s = Session::connect(o).await.unwrap();
    {
        let k = st.lock().unwrap();
        let (m, p, b) = &k.requests[0];
        assert_eq!((m.as_str(), p.as_str()), ("POST", "/v2.0/tokens"));
        assert_eq!(
            b,
            &json!({"auth": {"passwordCredentials": {"username": "jb23", "password": "not_my_password"}, "tenantName": "jb23"}})
        );
    }
    assert_eq!(
        s.project_id().await.unwrap().as_deref(),
        Some("fc394f2ab2df4114bde39905f800dc57")
    );
    // No region asked: the first public compute endpoint.
    assert_eq!(
        s.endpoint(Service::Compute).await.unwrap(),
        format!("{base}/public/v2/fc394f2ab2df4114bde39905f800dc57")
    );
    // Glance's unversioned endpoint gets /v2.
    assert_eq!(
        s.endpoint(Service::Image).await.unwrap(),
        format!("{base}/glance/v2")
    );
    let f = Cloud::new(s.clone()).find_flavor("2").await.unwrap();
    assert_eq!((f.id.as_str(), f.name.as_str()), ("2", "m1.small"));

    // Interface and region select the endpoint.
    let o = seed_env(
        &base,
        &[
            ("OS_REGION_NAME", "RegionTwo"),
            ("OS_INTERFACE", "internal"),
        ],
    );
    let s = Session::connect(o).await.unwrap();
    assert_eq!(
        s.endpoint(Service::Compute).await.unwrap(),
        format!("{base}/other-internal/v2/fc394f2ab2df4114bde39905f800dc57")
    );
    let o = seed_env(&base, &[("OS_REGION_NAME", "RegionThree")]);
    let s = Session::connect(o).await.unwrap();
    let e = s.endpoint(Service::Compute).await.unwrap_err().to_string();
    assert!(e.contains("region RegionThree"), "{e}");
    // Cinder is not in this catalog.
    let e = s.endpoint(Service::Volume).await.unwrap_err().to_string();
    assert!(e.contains("block storage"), "{e}");
}

#[tokio::test]
async fn wrong_password_is_reported() {
    let st = Arc::new(Mutex::new(Keystone {
        lifetime: 3600,
        ..Default::default()
    }));
    let base = serve(st).await;
    let o = seed_env(&base, &[("OS_PASSWORD", "nope")]);
    let e = Session::connect(o).await.err().unwrap().to_string();
    assert!(
        e.contains("/v2.0/tokens: 401: The request you have made requires authentication."),
        "{e}"
    );
    assert!(
        !e.contains("nope"),
        "the password is never in a message: {e}"
    );
}

#[tokio::test]
async fn expiring_token_is_renewed_before_use() {
    // Tokens issued long ago (the reference's `issued_at`) that expire in
    // 60 s: within kiln's two-minute margin, so each use renews first (a
    // long build never presents a stale token).
    let st = Arc::new(Mutex::new(Keystone {
        lifetime: 60,
        ..Default::default()
    }));
    let base = serve(st.clone()).await;
    let s = Session::connect(seed_env(&base, &[])).await.unwrap();
    let cloud = Cloud::new(s.clone());
    cloud.find_flavor("2").await.unwrap();
    cloud.find_flavor("2").await.unwrap();
    let issued = st.lock().unwrap().issued.len();
    assert!(issued >= 3, "issued {issued}");
    assert_eq!(s.auth_count() as usize, issued);
    // A long-lived token is reused.
    st.lock().unwrap().lifetime = 3600;
    let s = Session::connect(seed_env(&base, &[])).await.unwrap();
    let cloud = Cloud::new(s.clone());
    for _ in 0..3 {
        cloud.find_flavor("2").await.unwrap();
    }
    assert_eq!(s.auth_count(), 1);
}

#[tokio::test]
async fn refused_token_is_renewed_once_and_the_request_retried() {
    let st = Arc::new(Mutex::new(Keystone {
        lifetime: 3600,
        ..Default::default()
    }));
    let base = serve(st.clone()).await;
    let s = Session::connect(seed_env(&base, &[])).await.unwrap();
    let cloud = Cloud::new(s.clone());
    // Keystone revokes it (or it expired early).
    st.lock().unwrap().valid = None;
    let f = cloud.find_flavor("2").await.unwrap();
    assert_eq!(f.id, "2");
    assert_eq!(s.auth_count(), 2);
    let k = st.lock().unwrap();
    let tokens: Vec<&str> = k
        .requests
        .iter()
        .filter(|(_, p, _)| p == "/v2.0/tokens")
        .map(|(m, _, _)| m.as_str())
        .collect();
    assert_eq!(tokens.len(), 2);
}
