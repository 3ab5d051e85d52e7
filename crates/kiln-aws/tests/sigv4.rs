//! kiln's SigV4 signer against AWS's published SigV4 test suite (the
//! header-signing cases of `aws-signing-test-suite/v4`, copied unchanged
//! into `tests/sigv4-suite`: request, context, canonical request, string to
//! sign, signature).
use kiln_aws::sigv4::{
    percent_decode, sha256_hex, sign, PathStyle, SignableRequest, SigningParams,
};
use std::path::Path;

struct Case {
    method: String,
    path: String,
    query: Vec<(String, String)>,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

fn parse_request(text: &str) -> Case {
    let (head, body) = match text.find("\n\n") {
        Some(i) => (&text[..i], text.as_bytes()[i + 2..].to_vec()),
        None => (text, Vec::new()),
    };
    let mut lines = head.lines();
    let first = lines.next().unwrap();
    let sp = first.find(' ').unwrap();
    let end = first.rfind(" HTTP/").unwrap();
    let (method, target) = (&first[..sp], &first[sp + 1..end]);
    let (path, q) = target.split_once('?').unwrap_or((target, ""));
    let query = q
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect();
    let mut headers: Vec<(String, String)> = Vec::new();
    for l in lines {
        if l.starts_with(' ') || l.starts_with('\t') {
            let last = headers.last_mut().unwrap();
            last.1 = format!("{} {}", last.1, l.trim());
        } else {
            let (k, v) = l.split_once(':').unwrap();
            headers.push((k.to_string(), v.to_string()));
        }
    }
    Case {
        method: method.into(),
        path: path.into(),
        query,
        headers,
        body,
    }
}

#[test]
fn aws_sigv4_test_suite() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sigv4-suite");
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    assert!(names.len() >= 37, "the suite is missing cases");
    let mut failures = Vec::new();
    for name in &names {
        let d = dir.join(name);
        let read = |f: &str| std::fs::read_to_string(d.join(f)).unwrap();
        let ctx: serde_json::Value = serde_json::from_str(&read("context.json")).unwrap();
        let c = parse_request(&read("request.txt"));
        let creds = &ctx["credentials"];
        let omit_token = ctx["omit_session_token"].as_bool().unwrap_or(false);
        let t = time::OffsetDateTime::parse(
            ctx["timestamp"].as_str().unwrap(),
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap();
        let params = SigningParams {
            access_key: creds["access_key_id"].as_str().unwrap(),
            secret_key: creds["secret_access_key"].as_str().unwrap(),
            token: if omit_token {
                None
            } else {
                creds["token"].as_str()
            },
            region: ctx["region"].as_str().unwrap(),
            service: ctx["service"].as_str().unwrap(),
            time: t,
        };
        let hash = sha256_hex(&c.body);
        let req = SignableRequest {
            method: &c.method,
            path: &c.path,
            query: &c.query,
            headers: &c.headers,
            payload_hash: &hash,
            path_style: if ctx["normalize"].as_bool().unwrap_or(true) {
                PathStyle::Normalized
            } else {
                PathStyle::EncodedOnly
            },
            content_sha256_header: ctx["sign_body"].as_bool().unwrap_or(false),
        };
        let s = sign(&req, &params);
        let want_creq = read("header-canonical-request.txt");
        let want_sts = read("header-string-to-sign.txt");
        let want_sig = read("header-signature.txt");
        if s.canonical_request != want_creq.trim_end_matches('\n')
            || s.string_to_sign != want_sts.trim_end_matches('\n')
            || s.signature != want_sig.trim()
        {
            failures.push(format!(
                "{}:\n--- canonical request\n{}\n--- want\n{}\n--- signature {} want {}",
                name.to_string_lossy(),
                s.canonical_request,
                want_creq,
                s.signature,
                want_sig.trim()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases differ:\n{}",
        failures.len(),
        names.len(),
        failures.join("\n\n")
    );
}
