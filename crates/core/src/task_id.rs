//! Task identity: which downloads are "the same content".
//!
//! Content-addressed when the digest is known (the same blob from two registry hosts is one
//! task); otherwise the sha256 of the normalised URL (query parameters the caller filters
//! removed, the rest sorted) plus tag and application.
//!
//! A *private* task (its digest known, but fetched with credentials) is not content-addressed:
//! its id binds the digest to the normalised URL. Who may read a private blob is decided by
//! the upstream that holds it, so a copy is shared only among callers of that same upstream
//! (each checked there with their own credentials by whoever serves them), never with a
//! caller who names the digest at another registry, one it controls.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest as _, Sha256};
use url::Url;

use crate::digest::ContentDigest;

/// Why a task could not be identified.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum TaskIdError {
    /// The URL does not parse.
    #[error("malformed URL {url:?}: {reason}")]
    MalformedUrl {
        /// The URL as given.
        url: String,
        /// The parser's complaint.
        reason: String,
    },
    /// No origin of this build reads URLs of this scheme ([`SCHEMES`] lists those it reads).
    #[error("unsupported URL scheme {0:?} (supported: {list})", list = SCHEMES.join(", "))]
    UnsupportedScheme(String),
    /// A task id string is not 64 hex digits.
    #[error("malformed task id {0:?}")]
    MalformedTaskId(String),
}

/// 32-byte task identifier, shown as 64 hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TaskId(pub [u8; 32]);

impl TaskId {
    /// Lower-case hex form.
    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl FromStr for TaskId {
    type Err = TaskIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).map_err(|_| TaskIdError::MalformedTaskId(s.into()))?;
        Ok(Self(out))
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.hex())
    }
}

impl fmt::Debug for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TaskId({})", &self.hex()[..12])
    }
}

/// What a download is asked for; the task id is derived from it.
#[derive(Clone, Debug, Default)]
pub struct TaskKey {
    /// Origin URL.
    pub url: String,
    /// Expected content digest, when known.
    pub digest: Option<ContentDigest>,
    /// Free-form tag that separates otherwise equal URLs.
    pub tag: String,
    /// Application name that separates otherwise equal URLs.
    pub application: String,
    /// Query parameter names that do not change the content (signatures, expiry).
    pub filtered_query: Vec<String>,
    /// Fetched with credentials (see the module documentation): with a digest, the id binds
    /// it to the URL. Without a digest the id is the URL's anyway.
    pub private: bool,
    /// The origin's version of the object (a bucket object's ETag), when the origin names
    /// one: part of the id without a digest, so a changed object is a new task. Empty: the
    /// URL alone names the content.
    pub version: String,
}

impl TaskKey {
    /// The key of a plain download of `url`: no digest, tag or application, no query
    /// parameter filtered.
    pub fn of_url(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            digest: None,
            tag: String::new(),
            application: String::new(),
            filtered_query: Vec::new(),
            private: false,
            version: String::new(),
        }
    }

    /// Validates the URL and returns the task id.
    pub fn task_id(&self) -> Result<TaskId, TaskIdError> {
        let normalised = normalise_url(&self.url, &self.filtered_query)?;
        let private_digest = match self.digest {
            Some(d) if !self.private => return Ok(TaskId(d.0)),
            Some(d) => Some(d.to_string()),
            None => None,
        };
        let mut h = Sha256::new();
        if let Some(d) = &private_digest {
            h.update(b"pollen private blob\0");
            h.update(d.as_bytes());
        }
        for part in [normalised.as_str(), &self.tag, &self.application] {
            h.update((part.len() as u64).to_be_bytes());
            h.update(part.as_bytes());
        }
        // Absent, the id is what it was before versions were part of it.
        if !self.version.is_empty() {
            h.update(b"version\0");
            h.update((self.version.len() as u64).to_be_bytes());
            h.update(self.version.as_bytes());
        }
        Ok(TaskId(h.finalize().into()))
    }
}

/// The URL schemes this build has an origin for.
pub const SCHEMES: &[&str] = &[
    "http", "https", "file", "s3", "gs", "azblob", "az", "hf", "oci",
];

/// Parses `url`, keeps only the [`SCHEMES`] read here, drops the fragment and filtered query parameters, and
/// sorts the remaining parameters so equivalent URLs compare equal.
pub fn normalise_url(url: &str, filtered_query: &[String]) -> Result<Url, TaskIdError> {
    let mut u = Url::parse(url.trim()).map_err(|e| TaskIdError::MalformedUrl {
        url: url.to_string(),
        reason: e.to_string(),
    })?;
    if !SCHEMES.contains(&u.scheme()) {
        return Err(TaskIdError::UnsupportedScheme(u.scheme().to_string()));
    }
    if u.scheme() == "file" {
        // A file URL names a file on the host that reads it (`file:///path`); another host's
        // name makes no sense there, and `file://h/c:/x` does not even read back as itself
        // (the drive letter drops the host), so one URL could name two tasks.
        if !u.host_str().is_none_or(str::is_empty) {
            return Err(TaskIdError::MalformedUrl {
                url: url.to_string(),
                reason: "a file URL names a file on this host (file:///path), not another host"
                    .into(),
            });
        }
    } else if u.host_str().is_none_or(str::is_empty) {
        // (A bucket URL's host is its bucket.)
        return Err(TaskIdError::MalformedUrl {
            url: url.to_string(),
            reason: "no host".into(),
        });
    }
    u.set_fragment(None);
    let mut pairs: Vec<(String, String)> = u
        .query_pairs()
        .filter(|(k, _)| !filtered_query.iter().any(|f| f == k))
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    pairs.sort();
    if pairs.is_empty() {
        u.set_query(None);
    } else {
        u.query_pairs_mut().clear().extend_pairs(pairs);
    }
    Ok(u)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(url: &str) -> TaskKey {
        TaskKey {
            url: url.into(),
            ..Default::default()
        }
    }

    #[test]
    fn equivalent_urls_are_one_task() {
        let a = key("http://Example.com:80/a?b=2&a=1#frag").task_id();
        let b = key("http://example.com/a?a=1&b=2").task_id();
        assert_eq!(a, b);
        let mut filtered = key("http://example.com/a?a=1&sig=xyz");
        filtered.filtered_query = vec!["sig".into()];
        assert_eq!(
            filtered.task_id(),
            key("http://example.com/a?a=1").task_id()
        );
    }

    #[test]
    fn tag_application_and_digest_change_identity() {
        let plain = key("http://h/x").task_id().expect("valid");
        let mut tagged = key("http://h/x");
        tagged.tag = "t".into();
        assert_ne!(tagged.task_id().expect("valid"), plain);
        let d = ContentDigest::of(b"x");
        let mut by_digest = key("http://other/y");
        by_digest.digest = Some(d);
        assert_eq!(by_digest.task_id().expect("valid").0, d.0);
    }

    #[test]
    fn a_private_blob_is_one_task_per_upstream_not_per_digest() {
        let d = ContentDigest::of(b"layer");
        let private = |url: &str| {
            let mut k = key(url);
            k.digest = Some(d);
            k.private = true;
            k.task_id().expect("valid")
        };
        let at_victim = private("https://registry.corp/v2/team/app/blobs/sha256:ab");
        assert_ne!(at_victim.0, d.0, "not the bare digest");
        assert_eq!(
            at_victim,
            private("https://REGISTRY.corp:443/v2/team/app/blobs/sha256:ab"),
            "the same upstream"
        );
        assert_ne!(
            at_victim,
            private("https://attacker.example/v2/team/app/blobs/sha256:ab"),
            "another registry"
        );
        assert_ne!(
            at_victim,
            private("https://registry.corp/v2/other/app/blobs/sha256:ab"),
            "another repository"
        );
        // Without a digest, a URL's id is the same whether credentials were sent or not.
        let mut with = key("http://h/x");
        with.private = true;
        assert_eq!(with.task_id(), key("http://h/x").task_id());
    }

    #[test]
    fn a_changed_object_is_a_new_task_and_a_digest_still_decides() {
        let plain = key("s3://b/k");
        let mut v1 = key("s3://b/k");
        v1.version = "\"etag-1\"".into();
        let mut v2 = v1.clone();
        v2.version = "\"etag-2\"".into();
        let ids: Vec<_> = [&plain, &v1, &v2]
            .iter()
            .map(|k| k.task_id().expect("id"))
            .collect();
        assert!(ids[0] != ids[1] && ids[1] != ids[2] && ids[0] != ids[2]);
        let d = ContentDigest([7; 32]);
        v1.digest = Some(d);
        v2.digest = Some(d);
        assert_eq!(v1.task_id().expect("id"), v2.task_id().expect("id"));
    }

    #[test]
    fn malformed_and_unsupported_urls_are_refused() {
        assert!(matches!(
            key("not a url").task_id(),
            Err(TaskIdError::MalformedUrl { .. })
        ));
        assert!(matches!(
            key("ftp://h/x").task_id(),
            Err(TaskIdError::UnsupportedScheme(_))
        ));
        // A local file has no host; the same path names the same task.
        assert_eq!(
            key("file:///data/a.bin").task_id().expect("file"),
            key("file://localhost/data/a.bin#x")
                .task_id()
                .expect("file")
        );
        // Found by the url_parse fuzz target: with a host and a drive letter the URL did not
        // read back as itself. Another host's file is refused outright.
        for url in [r"fIle:\/h\\\\\\e:\/h\\\\\\�", "file://other/data/a.bin"] {
            assert!(
                matches!(key(url).task_id(), Err(TaskIdError::MalformedUrl { .. })),
                "{url}"
            );
        }
    }

    #[test]
    fn a_task_id_shows_as_lowercase_hex_and_reads_back() {
        let id = TaskId([0xAB; 32]);
        assert_eq!(id.hex(), "ab".repeat(32));
        assert_eq!(id.to_string(), id.hex());
        assert_eq!(format!("{id:?}"), format!("TaskId({})", "ab".repeat(6)));
        assert_eq!(id.hex().parse::<TaskId>().ok(), Some(id));
    }
}
