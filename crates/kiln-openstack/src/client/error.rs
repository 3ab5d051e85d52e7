use kiln_core::BuildError;

/// What can go wrong talking to OpenStack. The message is complete: it is
/// printed once, as is.
#[derive(Debug, thiserror::Error)]
pub enum OsError {
    /// Missing or contradictory credentials (found before any request).
    #[error("{0}")]
    Config(String),
    /// The cloud answered with an error status.
    #[error("{method} {url}: {status}{}", if message.is_empty() { String::new() } else { format!(": {message}") })]
    Http {
        method: String,
        url: String,
        status: u16,
        message: String,
    },
    /// No answer (connection refused, reset, timed out).
    #[error("{method} {url}: {message}")]
    Transport {
        method: String,
        url: String,
        message: String,
    },
    /// An answer that does not say what the API reference says it should.
    #[error("{0}")]
    Protocol(String),
    /// The build was cancelled while waiting.
    #[error("cancelled")]
    Cancelled,
}

impl OsError {
    pub fn status(&self) -> Option<u16> {
        match self {
            OsError::Http { status, .. } => Some(*status),
            _ => None,
        }
    }
    /// The request may or may not have been carried out (no answer, or a
    /// server error): whatever it creates must be searched for.
    pub fn outcome_unknown(&self) -> bool {
        matches!(self, OsError::Transport { .. }) || matches!(self.status(), Some(500..=599))
    }
    /// No answer at all (timeout, reset): the cloud may still be carrying
    /// the request out, and what it creates may appear a little later.
    pub fn unanswered(&self) -> bool {
        matches!(self, OsError::Transport { .. })
    }
    pub fn is_not_found(&self) -> bool {
        self.status() == Some(404)
    }
}

/// What kiln's create routine needs to know of an OpenStack error (see
/// [`kiln_commonsteps::create`]).
impl kiln_commonsteps::create::CloudError for OsError {
    fn outcome_unknown(&self) -> bool {
        OsError::outcome_unknown(self)
    }
    fn unanswered(&self) -> bool {
        OsError::unanswered(self)
    }
    fn is_not_found(&self) -> bool {
        OsError::is_not_found(self)
    }
    /// Anything but a refusal that will not change (400 to 404), missing
    /// credentials, or a cancel.
    fn is_retryable(&self) -> bool {
        !matches!(self, OsError::Config(_) | OsError::Cancelled)
            && !matches!(self.status(), Some(400..=404))
    }
    fn task_lost(reason: String) -> Self {
        OsError::Transport {
            method: "request".into(),
            url: String::new(),
            message: reason,
        }
    }
}

impl From<OsError> for BuildError {
    fn from(e: OsError) -> Self {
        match e {
            OsError::Cancelled => BuildError::Cancelled,
            e => BuildError::new(e),
        }
    }
}

/// The human part of an OpenStack error body: Nova's
/// `{"itemNotFound": {"message": ...}}`, Neutron's
/// `{"NeutronError": {"message": ...}}`, Keystone's `{"error": {"message"}}`,
/// Glance's HTML or text.
pub fn error_message(body: &str) -> String {
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(body) {
        if let Some(m) = find_message(&v, 0) {
            return m;
        }
    }
    let text: String = strip_tags(body)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    let mut t = text;
    if t.len() > 300 {
        let mut end = 300;
        while !t.is_char_boundary(end) {
            end -= 1;
        }
        t.truncate(end);
        t.push('…');
    }
    t
}

fn find_message(v: &serde_json::Value, depth: usize) -> Option<String> {
    if depth > 3 {
        return None;
    }
    match v {
        serde_json::Value::Object(m) => {
            for k in ["message", "faultstring", "detail"] {
                if let Some(serde_json::Value::String(s)) = m.get(k) {
                    return Some(s.trim().to_string());
                }
            }
            m.values().find_map(|x| find_message(x, depth + 1))
        }
        serde_json::Value::Array(a) => a.iter().find_map(|x| find_message(x, depth + 1)),
        _ => None,
    }
}

fn strip_tags(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut in_tag = false;
    for c in s.chars() {
        match c {
            '<' => in_tag = true,
            '>' if in_tag => {
                in_tag = false;
                out.push(' ');
            }
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_from_each_service() {
        assert_eq!(
            error_message(
                r#"{"itemNotFound": {"code": 404, "message": "Flavor m1.x could not be found."}}"#
            ),
            "Flavor m1.x could not be found."
        );
        assert_eq!(
            error_message(
                r#"{"NeutronError": {"type": "ExternalGatewayForFloatingIPNotFound", "message": "No route", "detail": ""}}"#
            ),
            "No route"
        );
        assert_eq!(
            error_message("<html><body><h1>500 Internal Server Error</h1>\nboom</body></html>"),
            "500 Internal Server Error boom"
        );
        let e = OsError::Http {
            method: "GET".into(),
            url: "http://x/v2.1/flavors/a".into(),
            status: 404,
            message: "nope".into(),
        };
        assert_eq!(e.to_string(), "GET http://x/v2.1/flavors/a: 404: nope");
    }

    #[test]
    fn what_the_create_routine_asks() {
        use kiln_commonsteps::create::CloudError;
        let http = |status| OsError::Http {
            method: "POST".into(),
            url: "u".into(),
            status,
            message: String::new(),
        };
        let none = OsError::task_lost("gone".into());
        // Refused: nothing made, no point asking again.
        for s in [400, 403, 404] {
            assert!(!CloudError::outcome_unknown(&http(s)));
            assert!(!http(s).is_retryable(), "{s}");
        }
        assert!(CloudError::is_not_found(&http(404)));
        // 409 (a conflict that may pass) and 5xx are tried again; a 5xx
        // may have made something, and so may no answer at all.
        assert!(http(409).is_retryable() && !CloudError::outcome_unknown(&http(409)));
        assert!(http(503).is_retryable() && CloudError::outcome_unknown(&http(503)));
        assert!(!CloudError::unanswered(&http(503)));
        assert!(CloudError::unanswered(&none) && CloudError::outcome_unknown(&none));
        assert!(none.is_retryable());
        assert!(!OsError::Config("x".into()).is_retryable());
    }
}
