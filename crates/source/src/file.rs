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
use crate::source::{Listed, Listing, OriginResponse, ReadRequest, Source};

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

/// The regular files below `dir` (depth first, names sorted), at most `limit`: links to files
/// are listed where they resolve under `roots` (a model directory is often links into a
/// store), links to directories are not followed (no cycles, no escape).
fn walk(dir: &Path, roots: &[PathBuf], limit: usize) -> Result<Listing, SourceError> {
    let mut listing = Listing::default();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        let mut entries = std::fs::read_dir(&d)
            .and_then(|r| r.collect::<std::io::Result<Vec<_>>>())
            .map_err(|e| io_error(&d, e))?;
        entries.sort_by_key(std::fs::DirEntry::file_name);
        let mut subdirs = Vec::new();
        for e in entries {
            let path = e.path();
            let kind = e.file_type().map_err(|err| io_error(&path, err))?;
            let meta = if kind.is_symlink() {
                match std::fs::canonicalize(&path) {
                    Ok(real) if roots.iter().any(|r| real.starts_with(r)) => {
                        std::fs::metadata(&real).map_err(|err| io_error(&real, err))?
                    }
                    _ => continue,
                }
            } else {
                e.metadata().map_err(|err| io_error(&path, err))?
            };
            if kind.is_dir() {
                subdirs.push(path);
                continue;
            }
            if !meta.is_file() {
                continue;
            }
            let rel = path
                .strip_prefix(dir)
                .ok()
                .and_then(Path::to_str)
                .ok_or_else(|| SourceError::Unsupported {
                    url: path.display().to_string(),
                    reason: "a file name that is not UTF-8 cannot be listed".into(),
                })?;
            if listing.objects.len() == limit {
                listing.truncated = true;
                return Ok(listing);
            }
            let url = url::Url::from_file_path(&path)
                .map_err(|()| SourceError::Protocol(format!("{} as a URL", path.display())))?;
            listing.objects.push(Listed {
                url: url.to_string(),
                path: rel.to_string(),
                size: meta.len(),
                version: Some(version(&meta)),
                digest: None,
            });
        }
        // Depth first, in name order.
        pending.extend(subdirs.into_iter().rev());
    }
    Ok(listing)
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

    async fn list(
        &self,
        url: &str,
        _policy: OriginPolicy,
        limit: usize,
    ) -> Result<Listing, SourceError> {
        let dir = self.allowed_path(url)?;
        if !dir.is_dir() {
            return Err(SourceError::Unsupported {
                url: url.to_string(),
                reason: "not a directory".into(),
            });
        }
        let roots = self.roots.clone();
        tokio::task::spawn_blocking(move || walk(&dir, &roots, limit))
            .await
            .map_err(|e| SourceError::Client {
                what: "listing a directory".into(),
                source: Some(Box::new(e)),
            })?
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
    async fn a_directory_lists_its_files_below_it_and_no_link_out() {
        let dir = tempfile::tempdir().expect("dir");
        let root = dir.path().join("models");
        std::fs::create_dir_all(root.join("m/sub/deeper")).expect("mkdir");
        std::fs::write(root.join("m/a.bin"), b"aa").expect("write");
        std::fs::write(root.join("m/sub/b.json"), b"b").expect("write");
        std::fs::write(root.join("m/sub/deeper/c"), b"ccc").expect("write");
        std::fs::write(root.join("blob"), b"linked").expect("write");
        std::fs::write(dir.path().join("secret"), b"x").expect("write");
        std::os::unix::fs::symlink(root.join("blob"), root.join("m/in")).expect("link");
        std::os::unix::fs::symlink(dir.path().join("secret"), root.join("m/out")).expect("link");
        std::os::unix::fs::symlink(dir.path(), root.join("m/loop")).expect("link");
        let s = FileSource::new(std::slice::from_ref(&root)).expect("source");
        let url = url::Url::from_directory_path(root.join("m")).expect("url");
        let all = s
            .list(url.as_str(), OriginPolicy::LocalUser, 100)
            .await
            .expect("list");
        let got: Vec<_> = all
            .objects
            .iter()
            .map(|o| (o.path.as_str(), o.size))
            .collect();
        assert_eq!(
            got,
            [
                ("a.bin", 2),
                ("in", 6),
                ("sub/b.json", 1),
                ("sub/deeper/c", 3)
            ]
        );
        assert!(!all.truncated);
        // Each listed URL reads its file.
        let mut resp = s
            .read(ReadRequest::whole(
                &all.objects[2].url,
                OriginPolicy::LocalUser,
            ))
            .await
            .expect("read");
        assert_eq!(
            resp.chunk().await.expect("chunk").as_deref(),
            Some(&b"b"[..])
        );
        let two = s
            .list(url.as_str(), OriginPolicy::LocalUser, 2)
            .await
            .expect("list");
        assert_eq!((two.objects.len(), two.truncated), (2, true));
        let outside = url::Url::from_directory_path(dir.path()).expect("url");
        assert!(matches!(
            s.list(outside.as_str(), OriginPolicy::LocalUser, 10).await,
            Err(SourceError::Refused(_))
        ));
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
