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
    /// The request's tag, application and filtered query parameters: with the URL and the
    /// digest they make the task id, which a scheduler recomputes when this task is announced.
    #[serde(default)]
    pub tag: String,
    /// See `tag`.
    #[serde(default)]
    pub application: String,
    /// See `tag`.
    #[serde(default)]
    pub filtered_query: Vec<String>,
    /// Fetched with credentials (see `pollen_core::task_id`): part of the task id.
    #[serde(default)]
    pub private: bool,
    /// The object's version the task id names (see `pollen_core::TaskKey::version`).
    #[serde(default)]
    pub version: String,
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
    /// The content file's size and modification time when the task completed. Nothing of
    /// Pollen's writes a complete task's file, so a difference means someone else did (a
    /// hard-linked output edited, the data directory tampered with): the copy is checked
    /// again before it is handed out or served.
    #[serde(default)]
    pub content_stamp: Option<ContentStamp>,
}

/// A content file's size and modification time.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ContentStamp {
    /// Length in bytes.
    pub len: u64,
    /// Modification time: seconds since the Unix epoch...
    pub mtime_secs: i64,
    /// ...and nanoseconds.
    pub mtime_nanos: u32,
}

impl ContentStamp {
    /// The stamp of an open file.
    pub fn of(file: &std::fs::File) -> std::io::Result<Self> {
        use std::os::unix::fs::MetadataExt;
        let m = file.metadata()?;
        Ok(Self {
            len: m.len(),
            mtime_secs: m.mtime(),
            mtime_nanos: u32::try_from(m.mtime_nsec()).unwrap_or(0),
        })
    }
}
