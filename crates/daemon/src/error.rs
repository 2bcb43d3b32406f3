//! Why a download failed, in terms the CLI can show and act on: each error keeps its cause
//! (`source()`) and says its kind ([`DownloadError::kind`]); what crosses the local API is the
//! whole chain ([`pollen_core::error_kind::Chain`]).

use std::sync::Arc;

use pollen_core::error_kind::{Chain, ErrorKind};
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
    #[error("origin failed")]
    Origin(#[source] Arc<SourceError>),
    /// The origin's content changed under the same URL while the task was fetched; the text
    /// says how it showed and what was done about it.
    #[error("origin failed: {0}")]
    OriginChanged(String),
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
    #[error("cannot write {path}")]
    Output {
        /// Output path.
        path: String,
        /// Why.
        #[source]
        source: Arc<std::io::Error>,
    },
    /// The piece store failed.
    #[error("storage failed")]
    Storage(#[source] StoreError),
    /// The task went away or lost pieces while the download still needed them (removed by
    /// an operator or the cache's collector at the wrong moment); running it again fetches
    /// it anew.
    #[error("{0}")]
    TaskLost(String),
    /// The daemon is shutting down.
    #[error("the daemon is shutting down")]
    ShuttingDown,
    /// The download needed the origin (the text says why) and its caller forbade it.
    #[error("{0}, and this download may not read the origin (--no-origin)")]
    NoOrigin(String),
    /// The output path holds something other than the content, and the caller asked to keep
    /// an existing output.
    #[error("{0} already exists and differs from the content; pass --overwrite to replace it")]
    OutputDiffers(String),
    /// A file to import could not be read (with the caller's rights).
    #[error("cannot read {path}")]
    Input {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: Arc<std::io::Error>,
    },
    /// The task asked for is not held (complete) on this host.
    #[error("{0}")]
    NotHeld(String),
    /// Every local caller went away and nothing else asked for the task: the run stopped,
    /// keeping the pieces it holds for a rerun.
    #[error("nobody waits for the download any more; a rerun resumes it")]
    Abandoned,
}

impl DownloadError {
    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        match self {
            DownloadError::InvalidRequest(_) => ErrorKind::Invalid,
            DownloadError::OriginStatus { status, url } => SourceError::Status {
                status: *status,
                url: url.clone(),
            }
            .kind(),
            DownloadError::Refused(_) => ErrorKind::Refused,
            DownloadError::Origin(e) => e.kind(),
            DownloadError::OriginChanged(_) | DownloadError::DigestMismatch { .. } => {
                ErrorKind::Corrupt
            }
            DownloadError::DiskFull(_) => ErrorKind::Full,
            DownloadError::Output { source, .. } => ErrorKind::of_io(source),
            DownloadError::Storage(e) => e.kind(),
            DownloadError::TaskLost(_) => ErrorKind::NotFound,
            DownloadError::ShuttingDown => ErrorKind::Unavailable,
            DownloadError::Abandoned | DownloadError::NoOrigin(_) => ErrorKind::Unavailable,
            DownloadError::OutputDiffers(_) => ErrorKind::Invalid,
            DownloadError::Input { source, .. } => ErrorKind::of_io(source),
            DownloadError::NotHeld(_) => ErrorKind::NotFound,
        }
    }
}

impl From<SourceError> for DownloadError {
    fn from(e: SourceError) -> Self {
        match e {
            SourceError::Status { status, url } => DownloadError::OriginStatus { status, url },
            SourceError::InvalidHeader(h) => {
                DownloadError::InvalidRequest(format!("invalid header {h:?}"))
            }
            SourceError::Refused(r) => DownloadError::Refused(r),
            other => DownloadError::Origin(Arc::new(other)),
        }
    }
}

impl From<StoreError> for DownloadError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::DiskFull => {
                DownloadError::DiskFull("storing pieces in the data directory".into())
            }
            e @ StoreError::OriginChanged { .. } => DownloadError::OriginChanged(format!(
                "{e}; the origin content changed since other peers read it"
            )),
            other => DownloadError::Storage(other),
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
            DownloadError::OriginChanged(_) => Code::Aborted,
            DownloadError::DigestMismatch { .. } => Code::DataLoss,
            DownloadError::DiskFull(_) => Code::ResourceExhausted,
            DownloadError::Output { .. } => Code::PermissionDenied,
            DownloadError::Storage(_) => Code::Internal,
            DownloadError::TaskLost(_) => Code::Aborted,
            DownloadError::ShuttingDown => Code::Aborted,
            DownloadError::Abandoned => Code::Cancelled,
            DownloadError::NoOrigin(_) => Code::Unavailable,
            DownloadError::OutputDiffers(_) => Code::AlreadyExists,
            DownloadError::Input { source, .. } => match source.kind() {
                std::io::ErrorKind::NotFound => Code::NotFound,
                std::io::ErrorKind::PermissionDenied => Code::PermissionDenied,
                _ => Code::FailedPrecondition,
            },
            DownloadError::NotHeld(_) => Code::NotFound,
        };
        tonic::Status::new(code, Chain(&e).to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn an_origin_failure_keeps_its_causes_and_the_cli_sees_them_all() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused");
        let e = DownloadError::from(SourceError::Connect {
            url: "http://o/x".into(),
            source: Box::new(io),
        });
        assert_eq!(e.kind(), ErrorKind::Unavailable);
        let source = e.source().expect("the origin's error");
        assert_eq!(source.to_string(), "cannot reach the origin for http://o/x");
        assert_eq!(
            source.source().map(|c| c.to_string()).as_deref(),
            Some("connection refused")
        );
        let status = tonic::Status::from(e);
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert_eq!(
            status.message(),
            "origin failed: cannot reach the origin for http://o/x: connection refused"
        );
    }

    #[test]
    fn store_and_output_failures_keep_their_causes() {
        let eof = std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "failed to fill whole buffer",
        );
        let e = DownloadError::from(StoreError::io(eof));
        assert!(matches!(e, DownloadError::Storage(_)));
        assert_eq!(
            Chain(&e).to_string(),
            "storage failed: content file I/O failed: failed to fill whole buffer"
        );
        assert_eq!(
            DownloadError::from(StoreError::io(std::io::Error::from_raw_os_error(28))).kind(),
            ErrorKind::Full
        );
        let out = DownloadError::Output {
            path: "/out".into(),
            source: Arc::new(std::io::ErrorKind::PermissionDenied.into()),
        };
        assert_eq!(out.kind(), ErrorKind::Refused);
        assert!(out.source().is_some());
        assert_eq!(
            DownloadError::from(SourceError::Status {
                status: 404,
                url: "u".into()
            })
            .kind(),
            ErrorKind::NotFound
        );
    }
}
