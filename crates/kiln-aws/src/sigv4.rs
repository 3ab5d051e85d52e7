//! AWS Signature Version 4 (header-based), as AWS documents it: canonical
//! request, string to sign, HMAC-SHA256 key derivation, `Authorization`
//! header. Checked against AWS's published test suite
//! (`tests/sigv4-suite`, run by `tests/sigv4.rs`).
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

/// The SHA-256 of an empty payload.
pub const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// What a request is signed with.
#[derive(Clone)]
pub struct SigningParams<'a> {
    pub access_key: &'a str,
    pub secret_key: &'a str,
    /// A session token: sent (and signed) as `x-amz-security-token`.
    pub token: Option<&'a str>,
    pub region: &'a str,
    pub service: &'a str,
    pub time: OffsetDateTime,
}

/// How the path is made canonical.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathStyle {
    /// Every service but S3: decode the path, remove `.`/`..` and empty
    /// segments, encode it again.
    Normalized,
    /// The path as sent, URI-encoded once more, without normalisation
    /// (the test suite's "unnormalized" cases).
    EncodedOnly,
    /// S3: the path as sent (already encoded by the caller), unchanged.
    AsIs,
}

/// The request to sign. `headers` must include `host`; the signer adds
/// `x-amz-date` (and the token) itself.
pub struct SignableRequest<'a> {
    pub method: &'a str,
    /// The path as it is sent on the wire.
    pub path: &'a str,
    /// Query parameters, decoded.
    pub query: &'a [(String, String)],
    pub headers: &'a [(String, String)],
    /// Hex SHA-256 of the body, or `UNSIGNED-PAYLOAD`.
    pub payload_hash: &'a str,
    pub path_style: PathStyle,
    /// Also send and sign `x-amz-content-sha256` (S3 requires it).
    pub content_sha256_header: bool,
}

/// The signature and what it was computed from.
#[derive(Debug, Clone)]
pub struct Signed {
    /// Headers to add to the request (`x-amz-date`, the token,
    /// `x-amz-content-sha256` when asked, `authorization`).
    pub headers: Vec<(String, String)>,
    pub canonical_request: String,
    pub string_to_sign: String,
    pub signature: String,
}

/// URI-encode as SigV4 wants: every byte but the unreserved characters
/// (`A-Z a-z 0-9 - _ . ~`) as `%XX` (upper case); `/` kept when
/// `keep_slash`.
pub fn uri_encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for &b in s.as_bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b'/' if keep_slash => out.push('/'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Decode `%XX` escapes (and nothing else: `+` stays `+`).
pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn normalize_path(path: &str) -> String {
    let mut segs: Vec<&str> = Vec::new();
    for s in path.split('/') {
        match s {
            "" | "." => {}
            ".." => {
                segs.pop();
            }
            s => segs.push(s),
        }
    }
    let mut out = String::from("/");
    out.push_str(&segs.join("/"));
    if path.ends_with('/') && out.len() > 1 {
        out.push('/');
    }
    out
}

fn canonical_uri(path: &str, style: PathStyle) -> String {
    let path = if path.is_empty() { "/" } else { path };
    match style {
        PathStyle::Normalized => uri_encode(&normalize_path(&percent_decode(path)), true),
        PathStyle::EncodedOnly => uri_encode(path, true),
        PathStyle::AsIs => path.to_string(),
    }
}

/// The canonical query string: keys and values encoded, sorted by key,
/// then value.
pub fn canonical_query(query: &[(String, String)]) -> String {
    let mut q: Vec<(String, String)> = query
        .iter()
        .map(|(k, v)| (uri_encode(k, false), uri_encode(v, false)))
        .collect();
    q.sort();
    q.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

fn trim_value(v: &str) -> String {
    v.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes any key length");
    m.update(data);
    m.finalize().into_bytes().to_vec()
}

/// Hex SHA-256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// The signing key for a day, region and service.
pub fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> Vec<u8> {
    let k = hmac(format!("AWS4{secret}").as_bytes(), date.as_bytes());
    let k = hmac(&k, region.as_bytes());
    let k = hmac(&k, service.as_bytes());
    hmac(&k, b"aws4_request")
}

/// `20150830T123600Z`
pub fn amz_date(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        t.year(),
        t.month() as u8,
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// Sign `req`.
pub fn sign(req: &SignableRequest<'_>, p: &SigningParams<'_>) -> Signed {
    let date_time = amz_date(p.time);
    let date = &date_time[..8];
    let mut added: Vec<(String, String)> = vec![("x-amz-date".into(), date_time.clone())];
    if req.content_sha256_header {
        added.push(("x-amz-content-sha256".into(), req.payload_hash.to_string()));
    }
    if let Some(t) = p.token {
        added.push(("x-amz-security-token".into(), t.to_string()));
    }
    // name -> values, in the order they appear
    let mut hs: Vec<(String, Vec<String>)> = Vec::new();
    for (k, v) in req.headers.iter().chain(added.iter()) {
        let k = k.to_ascii_lowercase();
        if k == "authorization" {
            continue;
        }
        let v = trim_value(v);
        match hs.iter_mut().find(|(n, _)| *n == k) {
            Some((_, vs)) => vs.push(v),
            None => hs.push((k, vec![v])),
        }
    }
    hs.sort_by(|a, b| a.0.cmp(&b.0));
    let canonical_headers: String = hs
        .iter()
        .map(|(k, vs)| format!("{k}:{}\n", vs.join(",")))
        .collect();
    let signed_headers = hs
        .iter()
        .map(|(k, _)| k.as_str())
        .collect::<Vec<_>>()
        .join(";");
    let canonical_request = format!(
        "{}\n{}\n{}\n{}\n{}\n{}",
        req.method,
        canonical_uri(req.path, req.path_style),
        canonical_query(req.query),
        canonical_headers,
        signed_headers,
        req.payload_hash
    );
    let scope = format!("{date}/{}/{}/aws4_request", p.region, p.service);
    let string_to_sign = format!(
        "AWS4-HMAC-SHA256\n{date_time}\n{scope}\n{}",
        sha256_hex(canonical_request.as_bytes())
    );
    let key = signing_key(p.secret_key, date, p.region, p.service);
    let signature = hex::encode(hmac(&key, string_to_sign.as_bytes()));
    added.push((
        "authorization".into(),
        format!(
            "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed_headers}, Signature={signature}",
            p.access_key
        ),
    ));
    Signed {
        headers: added,
        canonical_request,
        string_to_sign,
        signature,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding() {
        assert_eq!(uri_encode("a b/c~d*", true), "a%20b/c~d%2A");
        assert_eq!(uri_encode("a/b", false), "a%2Fb");
        assert_eq!(percent_decode("%E1%88%B4x%2"), "\u{1234}x%2");
        assert_eq!(normalize_path("/a/./b/../c//d/"), "/a/c/d/");
        assert_eq!(normalize_path("//"), "/");
    }

    #[test]
    fn signing_key_from_aws_docs() {
        // AWS's documented example key derivation (secret, 20120215,
        // us-east-1, iam).
        let k = signing_key(
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            "20120215",
            "us-east-1",
            "iam",
        );
        assert_eq!(
            hex::encode(k),
            "f4780e2d9f65fa895f9c67b32ce1baf0b0d8a43505a000a1a9e090d414db404d"
        );
    }
}
