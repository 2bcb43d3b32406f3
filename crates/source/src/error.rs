//! Errors of origin fetches.

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
    /// The origin could not be reached.
    #[error("cannot reach the origin for {url}: {reason}")]
    Connect {
        /// The URL requested.
        url: String,
        /// Why.
        reason: String,
    },
    /// The transfer broke or stalled after it started.
    #[error("origin transfer failed: {0}")]
    Body(String),
    /// The origin's response is not usable (no length, bad Content-Range, short body).
    #[error("origin response unusable: {0}")]
    Protocol(String),
    /// The origin guard refused the address (cloud metadata, link-local, or for the fleet
    /// policy loopback and this node's own addresses); the text names the rule.
    #[error("{0}")]
    Refused(String),
    /// A request header given by the user is not valid HTTP.
    #[error("invalid request header {0:?}")]
    InvalidHeader(String),
}

impl SourceError {
    /// Whether retrying the same request may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            SourceError::Status { status, .. } => *status >= 500 || *status == 429,
            SourceError::Connect { .. } | SourceError::Body(_) => true,
            SourceError::Protocol(_) | SourceError::InvalidHeader(_) | SourceError::Refused(_) => {
                false
            }
        }
    }
}
