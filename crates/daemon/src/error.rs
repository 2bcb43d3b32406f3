//! Why a download failed, in terms the CLI can show and act on.

use pollen_source::SourceError;
use pollen_storage::StoreError;

/// A failed download. Cloneable so every caller waiting on the same task gets it.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DownloadError {
    /// The request itself is wrong (malformed URL, bad digest, bad header).
    #[error("{0}")]
    InvalidRequest(String),
    /// The origin answered with an error status.
    #[error("origin returned HTTP {status} for {url}")]
    OriginStatus {
        /// HTTP status.
        status: u16,
        /// URL.
        url: String,
    },
    /// The origin guard refused the origin's address; the text names the rule.
    #[error("{0}")]
    Refused(String),
    /// The origin could not be reached or the transfer broke repeatedly.
    #[error("origin failed: {0}")]
    Origin(String),
    /// The content does not match the expected digest; nothing was kept.
    #[error("digest mismatch: expected {expected}, content is {actual}; the copy was discarded")]
    DigestMismatch {
        /// Expected digest.
        expected: String,
        /// Actual digest.
        actual: String,
    },
    /// The disk is full.
    #[error("no space left on device while {0}")]
    DiskFull(String),
    /// The output file could not be written.
    #[error("cannot write {path}: {reason}")]
    Output {
        /// Output path.
        path: String,
        /// Why.
        reason: String,
    },
    /// The piece store failed.
    #[error("storage failed: {0}")]
    Storage(String),
    /// The daemon is shutting down.
    #[error("the daemon is shutting down")]
    ShuttingDown,
}

impl From<SourceError> for DownloadError {
    fn from(e: SourceError) -> Self {
        match e {
            SourceError::Status { status, url } => DownloadError::OriginStatus { status, url },
            SourceError::InvalidHeader(h) => {
                DownloadError::InvalidRequest(format!("invalid header {h:?}"))
            }
            SourceError::Refused(r) => DownloadError::Refused(r),
            other => DownloadError::Origin(other.to_string()),
        }
    }
}

impl From<StoreError> for DownloadError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::DiskFull => {
                DownloadError::DiskFull("storing pieces in the data directory".into())
            }
            e @ StoreError::OriginChanged { .. } => DownloadError::Origin(format!(
                "{e}; the origin content changed since other peers read it"
            )),
            other => DownloadError::Storage(other.to_string()),
        }
    }
}

impl From<DownloadError> for tonic::Status {
    fn from(e: DownloadError) -> Self {
        use tonic::Code;
        let code = match &e {
            DownloadError::InvalidRequest(_) => Code::InvalidArgument,
            DownloadError::OriginStatus { .. } => Code::FailedPrecondition,
            DownloadError::Refused(_) => Code::PermissionDenied,
            DownloadError::Origin(_) => Code::Unavailable,
            DownloadError::DigestMismatch { .. } => Code::DataLoss,
            DownloadError::DiskFull(_) => Code::ResourceExhausted,
            DownloadError::Output { .. } => Code::PermissionDenied,
            DownloadError::Storage(_) => Code::Internal,
            DownloadError::ShuttingDown => Code::Aborted,
        };
        tonic::Status::new(code, e.to_string())
    }
}
