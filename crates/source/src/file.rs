//! Local files as an origin (`file:///path`): how a file on a seed's disk enters the swarm.
//!
//! Off unless the daemon lists the directories it may read (`origin_file_roots`): the daemon
//! often runs with more rights than whoever hands it a URL (a local user, a preheat job), so
//! a path is read only when, every symbolic link resolved, it lies under one of those
//! directories. The file's length and modification time stand for an ETag, so a file that
//! changes under a resumed download is noticed like an HTTP origin's new ETag.

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use futures::StreamExt as _;
use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _};
use tokio_util::io::ReaderStream;

use crate::error::SourceError;
use crate::origin_guard::OriginPolicy;
use crate::source::{OriginResponse, ReadRequest, Source};

/// Bytes read from the file at a time.
const CHUNK: usize = 256 << 10;

/// Reads files under a few allowed directories.
#[derive(Clone, Debug, Default)]
pub struct FileSource {
    /// The allowed directories, symbolic links resolved.
    roots: Vec<PathBuf>,
}

impl FileSource {
    /// A source that reads files under `roots` (none: `file://` URLs are refused). Each root
    /// must exist.
    pub fn new(roots: &[PathBuf]) -> Result<Self, SourceError> {
        let roots = roots
            .iter()
            .map(|r| {
                std::fs::canonicalize(r).map_err(|e| SourceError::Client {
                    what: format!("the file origin directory {}", r.display()),
                    source: Some(Box::new(e)),
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { roots })
    }

    /// The path `url` names (syntax only: nothing is looked up).
    fn path_of(url: &str) -> Result<PathBuf, SourceError> {
        let unsupported = |reason: &str| SourceError::Unsupported {
            url: url.to_string(),
            reason: reason.to_string(),
        };
        let parsed = url::Url::parse(url).map_err(|e| unsupported(&e.to_string()))?;
        if parsed.scheme() != "file" {
            return Err(unsupported("not a file:// URL"));
        }
        if !matches!(parsed.host_str(), None | Some("") | Some("localhost")) {
            return Err(unsupported(
                "a file:// URL names a file on this host (file:///path)",
            ));
        }
        parsed
            .to_file_path()
            .map_err(|()| unsupported("not an absolute path"))
    }

    /// The file `url` names, every link resolved, when it lies under an allowed directory.
    fn allowed_path(&self, url: &str) -> Result<PathBuf, SourceError> {
        let path = Self::path_of(url)?;
        if self.roots.is_empty() {
            return Err(SourceError::Refused(
                "file:// origins are off on this daemon; list the directories it may read in origin_file_roots".into(),
            ));
        }
        let real = std::fs::canonicalize(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => SourceError::NotFound {
                url: url.to_string(),
                what: "the file does not exist".into(),
            },
            _ => io_error(&path, e),
        })?;
        if !self.roots.iter().any(|r| real.starts_with(r)) {
            return Err(SourceError::Refused(format!(
                "{} is not under a directory this daemon may read (origin_file_roots)",
                real.display()
            )));
        }
        Ok(real)
    }
}

/// What stands for the ETag of a file: its length and modification time.
fn version(meta: &std::fs::Metadata) -> String {
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    format!("\"{:x}-{mtime:x}\"", meta.len())
}

fn io_error(path: &Path, e: std::io::Error) -> SourceError {
    SourceError::Body {
        what: format!("reading {}", path.display()),
        source: Some(Box::new(e)),
    }
}

#[async_trait]
impl Source for FileSource {
    /// Checks the URL's form only: whether this host may read the file matters only if it
    /// is sent to the origin (peers without `origin_file_roots` get the file from the swarm,
    /// which has it only from a host allowed to read it).
    fn check(&self, url: &str, _policy: OriginPolicy) -> Result<(), SourceError> {
        Self::path_of(url).map(drop)
    }

    async fn read(&self, req: ReadRequest<'_>) -> Result<OriginResponse, SourceError> {
        let path = self.allowed_path(req.url)?;
        let mut file = tokio::fs::File::open(&path)
            .await
            .map_err(|e| io_error(&path, e))?;
        let meta = file.metadata().await.map_err(|e| io_error(&path, e))?;
        if !meta.is_file() {
            return Err(SourceError::Unsupported {
                url: req.url.to_string(),
                reason: "not a regular file".into(),
            });
        }
        let etag = version(&meta);
        let len = meta.len();
        // A file that changed since the validator was recorded is sent whole, as an HTTP
        // origin answers a stale If-Range.
        let (start, end) = match req.if_range {
            Some(v) if v != etag => (0, len),
            _ => (
                req.start.min(len),
                req.end.unwrap_or(len).clamp(req.start, len),
            ),
        };
        file.seek(std::io::SeekFrom::Start(start))
            .await
            .map_err(|e| io_error(&path, e))?;
        let body = ReaderStream::with_capacity(file.take(end - start), CHUNK)
            .map(move |r| r.map_err(|e| io_error(&path, e)));
        Ok(OriginResponse::new(
            len,
            start,
            Some(etag),
            None,
            Box::pin(body),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn read_all(s: &FileSource, req: ReadRequest<'_>) -> (OriginResponse, Vec<u8>) {
        let mut resp = s.read(req).await.expect("read");
        let mut out = Vec::new();
        while let Some(c) = resp.chunk().await.expect("chunk") {
            out.extend_from_slice(&c);
        }
        (resp, out)
    }

    #[tokio::test]
    async fn files_under_a_root_are_read_whole_or_by_range() {
        let dir = tempfile::tempdir().expect("dir");
        let data: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
        let file = dir.path().join("blob");
        std::fs::write(&file, &data).expect("write");
        let s = FileSource::new(&[dir.path().to_path_buf()]).expect("source");
        let url = url::Url::from_file_path(&file).expect("url").to_string();
        let (resp, all) = read_all(&s, ReadRequest::whole(&url, OriginPolicy::Fleet)).await;
        assert_eq!(all, data);
        assert_eq!(resp.total_length, data.len() as u64);
        let etag = resp.etag.clone().expect("a version");
        let ranged = ReadRequest {
            start: 1000,
            end: Some(300_000),
            if_range: Some(&etag),
            ..ReadRequest::whole(&url, OriginPolicy::LocalUser)
        };
        let (resp, part) = read_all(&s, ranged).await;
        assert_eq!((resp.start, &part[..]), (1000, &data[1000..300_000]));
        // The file changed since the validator: the whole new content, from 0.
        std::fs::write(&file, b"new").expect("rewrite");
        let (resp, part) = read_all(&s, ranged).await;
        assert_eq!((resp.start, &part[..]), (0, &b"new"[..]));
    }

    #[tokio::test]
    async fn paths_outside_the_roots_are_refused_even_through_a_link() {
        let dir = tempfile::tempdir().expect("dir");
        let root = dir.path().join("shared");
        std::fs::create_dir(&root).expect("mkdir");
        std::fs::write(dir.path().join("secret"), b"x").expect("write");
        std::os::unix::fs::symlink(dir.path().join("secret"), root.join("link")).expect("link");
        let s = FileSource::new(std::slice::from_ref(&root)).expect("source");
        let url = |p: &Path| url::Url::from_file_path(p).expect("url").to_string();
        let read = |s: FileSource, u: String| async move {
            s.read(ReadRequest::whole(&u, OriginPolicy::LocalUser))
                .await
                .err()
        };
        for refused in [
            url(&root.join("link")),
            url(&dir.path().join("secret")),
            format!("{}/../secret", url(&root)),
        ] {
            let e = read(s.clone(), refused.clone()).await;
            assert!(
                matches!(e, Some(SourceError::Refused(_))),
                "{refused}: {e:?}"
            );
        }
        let missing = read(s.clone(), url(&root.join("nope"))).await;
        assert!(
            matches!(missing, Some(SourceError::NotFound { .. })),
            "{missing:?}"
        );
        // Off when no directory is listed.
        let off = read(FileSource::default(), url(&root.join("link"))).await;
        assert!(
            matches!(off, Some(SourceError::Refused(ref m)) if m.contains("origin_file_roots"))
        );
        // The form alone is checked up front: another host's file is no local file.
        let remote = s.check("file://elsewhere/x", OriginPolicy::LocalUser);
        assert!(
            matches!(remote, Err(SourceError::Unsupported { .. })),
            "{remote:?}"
        );
        assert!(FileSource::default()
            .check(&url(&root.join("link")), OriginPolicy::Fleet)
            .is_ok());
    }
}
