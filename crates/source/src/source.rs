//! The one interface every origin sits behind: the daemon's origin reader, the seed's
//! back-to-source and the proxy's fallback call only this, and each kind of origin (HTTP,
//! local files, …) is one module that implements it.

use std::pin::Pin;

use async_trait::async_trait;
use bytes::Bytes;
use futures::{Stream, StreamExt as _};

use crate::error::SourceError;
use crate::origin_guard::OriginPolicy;

/// What one read asks of an origin.
#[derive(Clone, Copy, Debug)]
pub struct ReadRequest<'a> {
    /// The origin URL.
    pub url: &'a str,
    /// Request headers the caller passes through (credentials among them); origins without
    /// headers ignore them.
    pub headers: &'a [(String, String)],
    /// The first byte wanted.
    pub start: u64,
    /// The byte after the last one wanted; `None`: to the end of the content.
    pub end: Option<u64>,
    /// A validator recorded earlier (ETag or Last-Modified): when the content no longer
    /// matches it, the origin answers with the whole new content (`start` 0 in the response)
    /// instead of the range.
    pub if_range: Option<&'a str>,
    /// How strict the origin guard is for this read.
    pub policy: OriginPolicy,
}

impl<'a> ReadRequest<'a> {
    /// All of `url` under `policy`, no headers, no validator.
    pub fn whole(url: &'a str, policy: OriginPolicy) -> Self {
        Self {
            url,
            headers: &[],
            start: 0,
            end: None,
            if_range: None,
            policy,
        }
    }
}

/// The body of a read: chunks of bytes as they arrive.
pub type BodyStream = Pin<Box<dyn Stream<Item = Result<Bytes, SourceError>> + Send>>;

/// An origin's answer to a read, its body read chunk by chunk.
pub struct OriginResponse {
    /// Total content length, as the origin reported it.
    pub total_length: u64,
    /// Offset of the first body byte in the content. An origin may send more than was asked
    /// (from the start of the content, or to its end).
    pub start: u64,
    /// The origin's version of the content (`ETag`, or what stands for one).
    pub etag: Option<String>,
    /// The origin's `Last-Modified`.
    pub last_modified: Option<String>,
    body: BodyStream,
}

impl OriginResponse {
    /// A response whose body is `body`.
    pub fn new(
        total_length: u64,
        start: u64,
        etag: Option<String>,
        last_modified: Option<String>,
        body: BodyStream,
    ) -> Self {
        Self {
            total_length,
            start,
            etag,
            last_modified,
            body,
        }
    }

    /// The next body chunk; `None` at the end.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>, SourceError> {
        self.body.next().await.transpose()
    }
}

/// One object a listing found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listed {
    /// The object's own URL, read like any other.
    pub url: String,
    /// Where it lies below the listed URL, `/`-separated (`a/b.bin`). It comes from the
    /// origin: whoever writes files by it checks it first (see [`safe_relative_path`]).
    pub path: String,
    /// Its length in bytes, as the listing reported it.
    pub size: u64,
    /// Its version (ETag or what stands for one), when the listing gave one.
    pub version: Option<String>,
    /// The content digest the origin publishes for it, if any: its download is then
    /// content-addressed and checked against it.
    pub digest: Option<pollen_core::ContentDigest>,
}

/// What a URL stands for once its origin has been asked: the URL to download (a revision
/// pinned to its commit), and what the origin publishes about the content.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved {
    /// The URL to download: the same one, or one naming a fixed version of the content.
    pub url: String,
    /// The content digest the origin publishes, if any.
    pub digest: Option<pollen_core::ContentDigest>,
    /// The content's length, when known.
    pub size: Option<u64>,
    /// The origin serves it only to callers with credentials.
    pub private: bool,
    /// The origin's version of the object (a bucket object's ETag), when it names one and no
    /// digest: the task is that version.
    pub version: Option<String>,
}

/// A listing: the objects found, in the origin's order, and whether there were more than
/// the caller asked for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Listing {
    /// The objects, at most the limit asked for.
    pub objects: Vec<Listed>,
    /// True when the origin holds more than the limit.
    pub truncated: bool,
}

/// Whether `path`, a listed object's relative path, is one a file may be written at below a
/// directory: no empty, `.` or `..` component, not absolute, no NUL. An origin is not
/// trusted to name only paths inside the destination (an S3 key may be `../../etc/x`).
pub fn safe_relative_path(path: &str) -> bool {
    !path.is_empty()
        && !path.starts_with('/')
        && !path.contains('\0')
        && path.split('/').all(|c| !matches!(c, "" | "." | ".."))
}

/// An origin: where content comes from when no peer has it.
#[async_trait]
pub trait Source: Send + Sync + std::fmt::Debug {
    /// Refuses `url` before any connection when this origin must not be read under `policy`
    /// (an address the guard refuses, a path outside the directories allowed).
    fn check(&self, url: &str, policy: OriginPolicy) -> Result<(), SourceError>;

    /// Reads what `req` asks for, streaming.
    async fn read(&self, req: ReadRequest<'_>) -> Result<OriginResponse, SourceError>;

    /// The objects below `url` (a prefix, a directory), at most `limit` of them. Origins
    /// that cannot list refuse.
    async fn list(
        &self,
        url: &str,
        policy: OriginPolicy,
        limit: usize,
    ) -> Result<Listing, SourceError> {
        let _ = (policy, limit);
        Err(SourceError::Unsupported {
            url: url.to_string(),
            reason: "this kind of origin cannot be listed".into(),
        })
    }

    /// What `url` stands for before it is downloaded. Origins whose URLs name one fixed
    /// content and publish nothing more answer with the URL itself, asking nobody.
    async fn resolve(&self, url: &str, policy: OriginPolicy) -> Result<Resolved, SourceError> {
        let _ = policy;
        Ok(Resolved {
            url: url.to_string(),
            digest: None,
            size: None,
            private: false,
            version: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listed_paths_must_stay_below_the_destination() {
        for ok in [
            "a",
            "a/b.bin",
            "weights/model-00001.safetensors",
            "..a/b..",
            ".hidden",
        ] {
            assert!(safe_relative_path(ok), "{ok}");
        }
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a//b",
            "a/./b",
            "a/",
            "a\0b",
            "..",
        ] {
            assert!(!safe_relative_path(bad), "{bad:?}");
        }
    }
}
