//! What can go wrong talking to AWS.
use kiln_core::BuildError;

/// An error from an AWS call. The message is complete: it is printed once,
/// as is. Secrets never appear in it (only key ids).
#[derive(Debug, Clone, thiserror::Error)]
pub enum AwsError {
    /// Missing or contradictory configuration (found before any request).
    #[error("{0}")]
    Config(String),
    /// No credentials could be found, or they could not be obtained.
    #[error("{0}")]
    Credentials(String),
    /// AWS answered with an error: the request was refused (4xx) or failed
    /// on AWS's side (5xx: it may or may not have been carried out).
    #[error("{service} {action}: {code}: {message} (HTTP {status}{})", request_id.as_deref().map(|r| format!(", request id {r}")).unwrap_or_default())]
    Api {
        service: &'static str,
        action: String,
        status: u16,
        code: String,
        message: String,
        request_id: Option<String>,
    },
    /// No answer. `sent` is false when the request certainly never reached
    /// AWS (the connection could not be made); true when it may have been
    /// received and carried out (reset, timed out waiting for the answer).
    #[error("{service} {action}: {message}")]
    Transport {
        service: &'static str,
        action: String,
        message: String,
        sent: bool,
    },
    /// An answer that does not say what the API reference says it should.
    #[error("{service} {action}: unexpected answer: {message}")]
    Protocol {
        service: &'static str,
        action: String,
        message: String,
    },
    /// The build was cancelled while waiting.
    #[error("cancelled")]
    Cancelled,
    /// A waiter gave up or saw a failure state.
    #[error("{0}")]
    Wait(String),
}

/// Error codes AWS uses for throttling (the AWS SDKs' list).
pub const THROTTLE_CODES: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottledException",
    "TooManyRequestsException",
    "ProvisionedThroughputExceededException",
    "TransactionInProgressException",
    "RequestLimitExceeded",
    "BandwidthLimitExceeded",
    "LimitExceededException",
    "RequestThrottled",
    "SlowDown",
    "PriorRequestNotComplete",
    "EC2ThrottledException",
];

/// Error codes the AWS SDKs treat as transient.
pub const TRANSIENT_CODES: &[&str] = &[
    "RequestTimeout",
    "RequestTimeoutException",
    "InternalError",
    "InternalFailure",
    "ServiceUnavailable",
    "Unavailable",
    "IDPCommunicationError",
];

impl AwsError {
    pub fn status(&self) -> Option<u16> {
        match self {
            AwsError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
    /// The AWS error code (`InvalidAMIID.NotFound`, `RequestLimitExceeded`).
    pub fn code(&self) -> Option<&str> {
        match self {
            AwsError::Api { code, .. } => Some(code),
            _ => None,
        }
    }
    pub fn request_id(&self) -> Option<&str> {
        match self {
            AwsError::Api { request_id, .. } => request_id.as_deref(),
            _ => None,
        }
    }
    /// AWS said it is throttling this caller: the request was not carried
    /// out, and may be sent again after a pause.
    pub fn is_throttle(&self) -> bool {
        self.code().is_some_and(|c| THROTTLE_CODES.contains(&c)) || (self.status() == Some(429))
    }
    /// The request may or may not have been carried out (no answer after
    /// sending, or a server error): whatever it creates must be looked for.
    pub fn outcome_unknown(&self) -> bool {
        self.unanswered() || (matches!(self.status(), Some(500..=599)) && !self.is_throttle())
    }
    /// No answer at all after the request was sent (timeout, reset): AWS
    /// may still be carrying it out, and what it creates may appear later.
    pub fn unanswered(&self) -> bool {
        matches!(self, AwsError::Transport { sent: true, .. })
    }
    /// Worth sending again: throttling, a server error, a transient error
    /// code, or no answer. (Whether a create may be sent again is the
    /// caller's business: see [`crate::client::Retry`].)
    pub fn is_retryable(&self) -> bool {
        match self {
            AwsError::Transport { .. } => true,
            AwsError::Api { status, code, .. } => {
                self.is_throttle() || *status >= 500 || TRANSIENT_CODES.contains(&code.as_str())
            }
            _ => false,
        }
    }
    /// The resource does not exist (`*.NotFound`, `NoSuchKey`, HTTP 404).
    pub fn is_not_found(&self) -> bool {
        match self {
            AwsError::Api { code, status, .. } => {
                code.ends_with(".NotFound")
                    || code.ends_with("NotFound")
                    || code == "NoSuchKey"
                    || code == "NoSuchUpload"
                    || code == "NoSuchBucket"
                    || code == "InvalidAMIID.Unavailable"
                    || *status == 404
            }
            _ => false,
        }
    }
    /// A create refused because the name is taken (`InvalidGroup.Duplicate`,
    /// `InvalidKeyPair.Duplicate`).
    pub fn is_duplicate(&self) -> bool {
        self.code().is_some_and(|c| c.ends_with(".Duplicate"))
    }
}

impl From<AwsError> for BuildError {
    fn from(e: AwsError) -> Self {
        match e {
            AwsError::Cancelled => BuildError::Cancelled,
            e => BuildError::new(e),
        }
    }
}

/// What kiln-commonsteps' create routine asks of an error: the answers
/// are [`AwsError`]'s own.
impl kiln_commonsteps::CloudError for AwsError {
    fn outcome_unknown(&self) -> bool {
        AwsError::outcome_unknown(self)
    }
    fn unanswered(&self) -> bool {
        AwsError::unanswered(self)
    }
    fn is_not_found(&self) -> bool {
        AwsError::is_not_found(self)
    }
    fn is_retryable(&self) -> bool {
        AwsError::is_retryable(self)
    }
    fn task_lost(reason: String) -> Self {
        AwsError::Transport {
            service: "ec2",
            action: "request".into(),
            message: format!("the request's task ended: {reason}"),
            sent: true,
        }
    }
}

/// Parse an AWS error body: EC2's `<Response><Errors><Error>`, the Query
/// APIs' `<ErrorResponse><Error>`, S3's `<Error>`. `(code, message,
/// request id)`.
pub fn parse_error_body(body: &str) -> Option<(String, String, Option<String>)> {
    let doc = roxmltree::Document::parse(body).ok()?;
    let err = doc.descendants().find(|n| n.has_tag_name("Error"))?;
    let text = |n: roxmltree::Node<'_, '_>, name: &str| {
        n.children()
            .find(|c| c.tag_name().name() == name)
            .and_then(|c| c.text())
            .map(|s| s.trim().to_string())
    };
    let code = text(err, "Code")?;
    let message = text(err, "Message").unwrap_or_default();
    let rid = doc
        .descendants()
        .find(|n| matches!(n.tag_name().name(), "RequestID" | "RequestId"))
        .and_then(|n| n.text())
        .map(|s| s.trim().to_string());
    Some((code, message, rid))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(status: u16, code: &str) -> AwsError {
        AwsError::Api {
            service: "ec2",
            action: "RunInstances".into(),
            status,
            code: code.into(),
            message: "m".into(),
            request_id: Some("r-1".into()),
        }
    }

    #[test]
    fn classification() {
        assert!(api(503, "RequestLimitExceeded").is_throttle());
        assert!(api(503, "RequestLimitExceeded").is_retryable());
        assert!(!api(503, "RequestLimitExceeded").outcome_unknown());
        assert!(api(500, "InternalError").outcome_unknown());
        assert!(!api(500, "InternalError").unanswered());
        assert!(!api(400, "InvalidParameterValue").is_retryable());
        assert!(api(400, "InvalidAMIID.NotFound").is_not_found());
        assert!(api(400, "InvalidGroup.Duplicate").is_duplicate());
        let t = |sent| AwsError::Transport {
            service: "ec2",
            action: "RunInstances".into(),
            message: "x".into(),
            sent,
        };
        assert!(t(true).unanswered() && t(true).outcome_unknown());
        assert!(!t(false).unanswered() && !t(false).outcome_unknown());
        assert!(t(false).is_retryable());
        assert_eq!(
            api(500, "InternalError").to_string(),
            "ec2 RunInstances: InternalError: m (HTTP 500, request id r-1)"
        );
    }

    #[test]
    fn what_the_create_routine_is_told() {
        use kiln_commonsteps::CloudError;
        let lost = <AwsError as CloudError>::task_lost("panicked".into());
        assert!(CloudError::unanswered(&lost) && CloudError::outcome_unknown(&lost));
        assert!(CloudError::is_retryable(&api(503, "RequestLimitExceeded")));
        assert!(!CloudError::outcome_unknown(&api(
            503,
            "RequestLimitExceeded"
        )));
        assert!(CloudError::is_not_found(&api(400, "InvalidGroup.NotFound")));
        assert!(!CloudError::outcome_unknown(&api(
            400,
            "InvalidKeyPair.Duplicate"
        )));
    }

    #[test]
    fn error_bodies() {
        let ec2 = r#"<?xml version="1.0" encoding="UTF-8"?>
<Response><Errors><Error><Code>InvalidAMIID.NotFound</Code><Message>The image id '[ami-1]' does not exist</Message></Error></Errors><RequestID>abc</RequestID></Response>"#;
        assert_eq!(
            parse_error_body(ec2),
            Some((
                "InvalidAMIID.NotFound".into(),
                "The image id '[ami-1]' does not exist".into(),
                Some("abc".into())
            ))
        );
        let s3 =
            "<Error><Code>NoSuchKey</Code><Message>gone</Message><RequestId>q</RequestId></Error>";
        assert_eq!(
            parse_error_body(s3),
            Some(("NoSuchKey".into(), "gone".into(), Some("q".into())))
        );
        let sts = r#"<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><Error><Type>Sender</Type><Code>AccessDenied</Code><Message>no</Message></Error><RequestId>z</RequestId></ErrorResponse>"#;
        assert_eq!(parse_error_body(sts).unwrap().0, "AccessDenied");
        assert_eq!(parse_error_body("<html>oops</html>"), None);
    }
}
