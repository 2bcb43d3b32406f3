//! Errors of origin fetches: each keeps its cause (`source()`) and says what kind of failure
//! it is ([`SourceError::kind`]); `Display` says only its own part (show one with
//! [`pollen_core::error_kind::Chain`] to see the causes).

use pollen_core::error_kind::ErrorKind;

/// A cause carried by an error.
pub type Cause = Box<dyn std::error::Error + Send + Sync>;

/// Why an origin fetch failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SourceError {
    /// The origin answered with an error status.
    #[error("origin returned HTTP {status} for {url}")]
    Status {
        /// HTTP status code.
        status: u16,
        /// The URL requested.
        url: String,
    },
    /// The origin could not be reached (or the URL names no origin).
    #[error("cannot reach the origin for {url}")]
    Connect {
        /// The URL requested.
        url: String,
        /// Why.
        #[source]
        source: Cause,
    },
    /// The transfer broke or stalled after it started.
    #[error("origin transfer failed: {what}")]
    Body {
        /// How far it got.
        what: String,
        /// The transfer's own error, when there is one (none for a body that simply ended
        /// short).
        #[source]
        source: Option<Cause>,
    },
    /// The origin's response is not usable (no length, bad Content-Range, short body).
    #[error("origin response unusable: {0}")]
    Protocol(String),
    /// The HTTP client could not be set up (a CA certificate, the TLS stack).
    #[error("cannot set up the origin client: {what}")]
    Client {
        /// What was being set up.
        what: String,
        /// Why it failed.
        #[source]
        source: Option<Cause>,
    },
    /// The origin guard refused the address (cloud metadata, link-local, or for the fleet
    /// policy loopback and this node's own addresses); the text names the rule.
    #[error("{0}")]
    Refused(String),
    /// A request header given by the user is not valid HTTP.
    #[error("invalid request header {0:?}")]
    InvalidHeader(String),
    /// The origin has nothing at that address (a file that does not exist).
    #[error("{what}: no such object at {url}")]
    NotFound {
        /// The URL asked for.
        url: String,
        /// What was looked for.
        what: String,
    },
    /// No origin of this build reads URLs of this kind.
    #[error("unsupported origin {url:?}: {reason}")]
    Unsupported {
        /// The URL asked for.
        url: String,
        /// Why, and what is supported.
        reason: String,
    },
}

impl SourceError {
    /// Whether retrying the same request may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            SourceError::Status { status, .. } => *status >= 500 || *status == 429,
            SourceError::Connect { .. } | SourceError::Body { .. } => true,
            SourceError::Protocol(_)
            | SourceError::Client { .. }
            | SourceError::InvalidHeader(_)
            | SourceError::Refused(_)
            | SourceError::NotFound { .. }
            | SourceError::Unsupported { .. } => false,
        }
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        match self {
            SourceError::Status { status, .. } => match status {
                404 | 410 => ErrorKind::NotFound,
                401 | 403 | 407 | 451 => ErrorKind::Refused,
                408 | 504 => ErrorKind::Timeout,
                429 | 500.. => ErrorKind::Unavailable,
                _ => ErrorKind::Invalid,
            },
            SourceError::Connect { source, .. } => kind_of(source.as_ref(), ErrorKind::Unavailable),
            SourceError::Body { source, .. } => {
                source.as_deref().map_or(ErrorKind::Unavailable, |s| {
                    kind_of(s, ErrorKind::Unavailable)
                })
            }
            SourceError::Protocol(_) => ErrorKind::Corrupt,
            SourceError::Client { .. } | SourceError::InvalidHeader(_) => ErrorKind::Invalid,
            SourceError::Refused(_) => ErrorKind::Refused,
            SourceError::NotFound { .. } => ErrorKind::NotFound,
            SourceError::Unsupported { .. } => ErrorKind::Invalid,
        }
    }
}

/// The kind of a cause: a timeout or an I/O error found among its causes, else `default`.
fn kind_of(e: &(dyn std::error::Error + 'static), default: ErrorKind) -> ErrorKind {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(r) = err.downcast_ref::<reqwest::Error>() {
            if r.is_timeout() {
                return ErrorKind::Timeout;
            }
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            return ErrorKind::of_io(io);
        }
        if let Some(s) = err.downcast_ref::<SourceError>() {
            return s.kind();
        }
        cur = err.source();
    }
    default
}

#[cfg(test)]
mod tests {
    use super::*;
    use pollen_core::error_kind::Chain;

    #[test]
    fn statuses_have_kinds_and_only_some_are_retried() {
        let s = |status| SourceError::Status {
            status,
            url: "http://o/x".into(),
        };
        assert_eq!(s(404).kind(), ErrorKind::NotFound);
        assert_eq!(s(403).kind(), ErrorKind::Refused);
        assert_eq!(s(504).kind(), ErrorKind::Timeout);
        assert_eq!(s(503).kind(), ErrorKind::Unavailable);
        assert_eq!(s(400).kind(), ErrorKind::Invalid);
        assert!(s(503).is_retryable() && s(429).is_retryable());
        assert!(!s(404).is_retryable());
    }

    #[test]
    fn a_broken_transfer_keeps_its_cause_and_its_kind() {
        let io = std::io::Error::new(std::io::ErrorKind::TimedOut, "read timed out");
        let e = SourceError::Body {
            what: "the origin closed the connection after 10 of 20 bytes".into(),
            source: Some(Box::new(io)),
        };
        assert_eq!(e.kind(), ErrorKind::Timeout);
        let cause = std::error::Error::source(&e).expect("a cause");
        assert_eq!(cause.to_string(), "read timed out");
        assert_eq!(
            Chain(&e).to_string(),
            "origin transfer failed: the origin closed the connection after 10 of 20 bytes: read timed out"
        );
        let short = SourceError::Body {
            what: "ended short".into(),
            source: None,
        };
        assert!(std::error::Error::source(&short).is_none());
        assert_eq!(short.kind(), ErrorKind::Unavailable);
    }
}
