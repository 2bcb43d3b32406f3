//! The metadata record kept for each task.

use serde::{Deserialize, Serialize};

/// What the store knows about a task besides its pieces.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct TaskMeta {
    /// Origin URL the task was first requested with.
    pub url: String,
    /// Content length in bytes.
    pub content_length: u64,
    /// Piece length in bytes.
    pub piece_length: u64,
    /// Expected content digest (`sha256:…`), when known.
    #[serde(default)]
    pub digest: Option<String>,
    /// Origin `ETag`, when seen.
    #[serde(default)]
    pub etag: Option<String>,
    /// Origin `Last-Modified`, when seen.
    #[serde(default)]
    pub last_modified: Option<String>,
    /// All pieces present and, when a digest is known, the whole content checked against it.
    #[serde(default)]
    pub complete: bool,
    /// Unix seconds of the last download or upload.
    #[serde(default)]
    pub last_access: u64,
}
