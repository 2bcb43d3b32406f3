//! Hugging Face Hub repositories as origins: `hf://[datasets/|spaces/]owner/repo[@revision]
//! [/path]`, read through the hub's documented HTTP API (or any server that speaks it, such as
//! a mirror: `origin_hf.endpoint`).
//!
//! A revision (branch, tag) is resolved to its commit once, and the file is named at that
//! commit from then on, so every peer fetches the same bytes. Files the hub keeps in LFS or
//! Xet come with the sha256 the hub publishes: the download is content-addressed by it and
//! checked against it before anyone sees it. Small files stored in git have only a git blob
//! id; they are read whole, checked against it, and served from memory to the reader's ranged
//! requests. A token (`HF_TOKEN` or `origin_hf.token`) goes to the hub's own address only
//! (the HTTP client drops it on a redirect to another host, such as the hub's CDN).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use pollen_core::ContentDigest;
use sha1::Digest as _;

use crate::error::SourceError;
use crate::http::{connect_error, ApiClients};
use crate::origin_guard::{OriginGuard, OriginPolicy};
use crate::source::{Listed, Listing, OriginResponse, ReadRequest, Resolved, Source};

/// The hub's public address, used unless `origin_hf.endpoint` (or `HF_ENDPOINT`) says
/// otherwise.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// Git files up to this size are read whole and checked against their blob id; larger ones
/// without a published sha256 are refused (the hub keeps every large file in LFS or Xet).
const SMALL_FILE_LIMIT: u64 = 64 << 20;

/// Checked small files kept in memory for the reader's ranged requests.
const SMALL_FILES_KEPT: usize = 16;

/// How the hub reader is set up.
#[derive(Clone)]
pub struct HubSettings {
    /// The hub's base URL.
    pub endpoint: String,
    /// Sent as `Authorization: Bearer` to the hub for private and gated repositories.
    pub token: Option<String>,
    /// Connect timeout of every request.
    pub connect_timeout: Duration,
    /// Read timeout of every request.
    pub read_timeout: Duration,
    /// Extra CA certificates (PEM) besides the web roots.
    pub extra_roots: Vec<Vec<u8>>,
}

impl std::fmt::Debug for HubSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubSettings")
            .field("endpoint", &self.endpoint)
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .finish_non_exhaustive()
    }
}

/// What an `hf://` URL names.
#[derive(Clone, Debug, PartialEq, Eq)]
struct HubPath {
    /// `models`, `datasets` or `spaces`.
    kind: &'static str,
    /// `owner/repo`.
    repo: String,
    /// A branch, tag or commit (default `main`).
    revision: String,
    /// A file or directory in the repository, `/`-separated; empty: the whole repository.
    path: String,
}

impl HubPath {
    fn parse(url: &str) -> Result<Self, SourceError> {
        let bad = |reason: &str| SourceError::Unsupported {
            url: url.to_string(),
            reason: format!("{reason} (hf://[datasets/|spaces/]owner/repo[@revision][/path])"),
        };
        let rest = url
            .strip_prefix("hf://")
            .ok_or_else(|| bad("not an hf:// URL"))?;
        let rest = rest.split(['?', '#']).next().unwrap_or_default();
        let mut parts = rest.split('/').peekable();
        let kind = match parts.peek() {
            Some(&"datasets") => "datasets",
            Some(&"spaces") => "spaces",
            _ => "models",
        };
        if kind != "models" {
            parts.next();
        }
        let owner = parts
            .next()
            .filter(|s| !s.is_empty())
            .ok_or_else(|| bad("no owner"))?;
        let name = parts
            .next()
            .filter(|s| !s.is_empty())
            .ok_or_else(|| bad("no repository"))?;
        let (name, revision) = match name.split_once('@') {
            Some((n, r)) if !r.is_empty() => (n, decode(r)),
            Some(_) => return Err(bad("an empty revision")),
            None => (name, "main".to_string()),
        };
        let path: Vec<String> = parts.map(decode).collect();
        let path = path.join("/");
        let path = path.trim_end_matches('/').to_string();
        if path.split('/').any(|c| c == "..") {
            return Err(bad("a path with .."));
        }
        Ok(Self {
            kind,
            repo: format!("{owner}/{name}"),
            revision,
            path,
        })
    }

    /// `hf://…` for `path` in this repository at `revision`.
    fn url(&self, revision: &str, path: &str) -> String {
        let kind = match self.kind {
            "models" => String::new(),
            k => format!("{k}/"),
        };
        format!(
            "hf://{kind}{}@{}/{}",
            self.repo,
            encode(revision),
            path.split('/').map(encode).collect::<Vec<_>>().join("/")
        )
    }
}

/// Percent-decodes one URL component.
fn decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={}", s.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

/// Percent-encodes one path component for a URL.
fn encode(s: &str) -> String {
    let mut u = url::Url::parse("http://x/").expect("a static URL");
    u.path_segments_mut().expect("a base URL").push(s);
    u.path()[1..].to_string()
}

/// The git blob id of `content` (what the hub lists as a small file's `oid`).
fn git_blob_id(content: &[u8]) -> String {
    let mut h = sha1::Sha1::new();
    h.update(format!("blob {}\0", content.len()).as_bytes());
    h.update(content);
    hex::encode(h.finalize())
}

/// One entry of the hub's tree listing.
#[derive(serde::Deserialize)]
struct TreeEntry {
    #[serde(rename = "type")]
    kind: String,
    path: String,
    #[serde(default)]
    size: u64,
    #[serde(default)]
    oid: String,
    #[serde(default)]
    lfs: Option<LfsInfo>,
}

#[derive(serde::Deserialize)]
struct LfsInfo {
    oid: String,
}

#[derive(serde::Deserialize)]
struct RevisionInfo {
    sha: String,
    #[serde(default)]
    private: bool,
}

/// A file's metadata from the hub's answer to a HEAD of its resolve URL.
struct FileMeta {
    size: u64,
    /// The sha256 of an LFS or Xet file.
    sha256: Option<ContentDigest>,
    /// The git blob id of a small file.
    blob_id: Option<String>,
}

/// Reads files of Hugging Face Hub repositories.
#[derive(Clone, Debug)]
pub struct HubSource {
    settings: Arc<HubSettings>,
    endpoint: url::Url,
    /// API calls and HEADs (redirects not followed); file bodies (followed, each hop guarded).
    clients: ApiClients,
    /// Small files read whole and checked, newest last.
    small: Arc<Mutex<VecDeque<(String, Bytes)>>>,
}

impl HubSource {
    /// A hub reader with `settings`, connecting only where `guard` lets it.
    pub fn new(settings: HubSettings, guard: &OriginGuard) -> Result<Self, SourceError> {
        let endpoint = url::Url::parse(settings.endpoint.trim_end_matches('/'))
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https"))
            .ok_or_else(|| SourceError::Client {
                what: format!(
                    "origin_hf.endpoint {:?} is not an http(s) URL",
                    settings.endpoint
                ),
                source: None,
            })?;
        Ok(Self {
            clients: ApiClients::new(
                settings.connect_timeout,
                settings.read_timeout,
                &settings.extra_roots,
                guard,
            )?,
            endpoint,
            settings: Arc::new(settings),
            small: Arc::default(),
        })
    }

    fn api(&self, policy: OriginPolicy) -> &reqwest::Client {
        self.clients.api(policy)
    }

    /// `{endpoint}/{tail}`.
    fn at(&self, tail: &str) -> String {
        format!("{}/{tail}", self.endpoint.as_str().trim_end_matches('/'))
    }

    /// The resolve URL of `p`'s file at `revision`.
    fn resolve_url(&self, p: &HubPath, revision: &str) -> String {
        let kind = match p.kind {
            "models" => String::new(),
            k => format!("{k}/"),
        };
        let path: Vec<String> = p.path.split('/').map(encode).collect();
        self.at(&format!(
            "{kind}{}/resolve/{}/{}",
            p.repo,
            encode(revision),
            path.join("/")
        ))
    }

    fn auth(&self) -> Vec<(String, String)> {
        self.settings
            .token
            .iter()
            .map(|t| ("Authorization".to_string(), format!("Bearer {t}")))
            .collect()
    }

    /// GETs `api_url` and parses its JSON; `url` names the hf:// URL in errors. Also returns
    /// the `Link: <…>; rel="next"` of a paginated answer.
    async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        url: &str,
        api_url: &str,
        policy: OriginPolicy,
    ) -> Result<(T, Option<String>), SourceError> {
        let mut req = self.api(policy).get(api_url);
        if let Some(t) = &self.settings.token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.map_err(|e| connect_error(url, e))?;
        let status = resp.status();
        if !status.is_success() {
            return Err(hub_error(url, status.as_u16(), &resp));
        }
        let next = resp
            .headers()
            .get_all(reqwest::header::LINK)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .find(|l| l.contains("rel=\"next\""))
            .and_then(|l| l.split_once('<').and_then(|(_, r)| r.split_once('>')))
            .map(|(u, _)| u.to_string());
        let body = resp.bytes().await.map_err(|e| SourceError::Body {
            what: format!("reading the hub's answer for {url}"),
            source: Some(Box::new(e)),
        })?;
        let value = serde_json::from_slice(&body).map_err(|e| {
            SourceError::Protocol(format!(
                "the hub's answer for {url} is not what its API sends: {e}"
            ))
        })?;
        Ok((value, next))
    }

    /// The commit `p.revision` names, and whether the repository is private.
    async fn commit(
        &self,
        url: &str,
        p: &HubPath,
        policy: OriginPolicy,
    ) -> Result<RevisionInfo, SourceError> {
        let api = self.at(&format!(
            "api/{}/{}/revision/{}",
            p.kind,
            p.repo,
            encode(&p.revision)
        ));
        let (info, _) = self.get_json::<RevisionInfo>(url, &api, policy).await?;
        if info.sha.len() != 40 || !info.sha.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(SourceError::Protocol(format!(
                "the hub named commit {:?} for {url}; a commit is 40 hex digits",
                info.sha
            )));
        }
        Ok(info)
    }

    /// HEAD of the resolve URL: size, and the sha256 (LFS, Xet) or git blob id published.
    async fn file_meta(
        &self,
        url: &str,
        resolve: &str,
        policy: OriginPolicy,
    ) -> Result<FileMeta, SourceError> {
        let mut req = self
            .api(policy)
            .head(resolve)
            .header(reqwest::header::ACCEPT_ENCODING, "identity");
        if let Some(t) = &self.settings.token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.map_err(|e| connect_error(url, e))?;
        let status = resp.status();
        if !(status.is_success() || status.is_redirection()) {
            return Err(hub_error(url, status.as_u16(), &resp));
        }
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(|v| {
                    v.trim()
                        .trim_start_matches("W/")
                        .trim_matches('"')
                        .to_string()
                })
        };
        let linked = header("x-linked-etag");
        let size = header("x-linked-size")
            .or_else(|| header("content-length"))
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| SourceError::Protocol(format!("the hub sent no size for {url}")))?;
        let sha256 = match &linked {
            Some(e) => Some(
                format!("sha256:{e}")
                    .parse::<ContentDigest>()
                    .map_err(|_| {
                        SourceError::Protocol(format!(
                            "the hub's X-Linked-Etag {e:?} for {url} is not a sha256"
                        ))
                    })?,
            ),
            None => None,
        };
        Ok(FileMeta {
            size,
            sha256,
            blob_id: if linked.is_none() {
                header("etag")
            } else {
                None
            },
        })
    }

    /// The small file `url` (at `resolve`), read whole and checked against `blob_id`; kept
    /// for the next ranged reads.
    async fn small_file(
        &self,
        req: &ReadRequest<'_>,
        resolve: &str,
        blob_id: &str,
    ) -> Result<Bytes, SourceError> {
        let key = format!("{resolve} {blob_id}");
        {
            let kept = self.small.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((_, b)) = kept.iter().find(|(k, _)| *k == key) {
                return Ok(b.clone());
            }
        }
        let auth = self.auth();
        let mut resp = self
            .clients
            .http
            .read(ReadRequest {
                url: resolve,
                headers: &auth,
                start: 0,
                end: None,
                if_range: None,
                policy: req.policy,
            })
            .await
            .map_err(|e| renamed(e, req.url))?;
        if resp.total_length > SMALL_FILE_LIMIT {
            return Err(SourceError::Protocol(format!(
                "{} is {} bytes without a published sha256; the hub keeps files that large in LFS",
                req.url, resp.total_length
            )));
        }
        let mut body = Vec::with_capacity(resp.total_length as usize);
        while let Some(c) = resp.chunk().await? {
            body.extend_from_slice(&c);
        }
        let actual = git_blob_id(&body);
        if actual != blob_id {
            return Err(SourceError::Protocol(format!(
                "{}: the content's git blob id is {actual}, the hub published {blob_id}; discarded",
                req.url
            )));
        }
        let body = Bytes::from(body);
        let mut kept = self.small.lock().unwrap_or_else(|e| e.into_inner());
        kept.push_back((key, body.clone()));
        while kept.len() > SMALL_FILES_KEPT {
            kept.pop_front();
        }
        Ok(body)
    }
}

/// An error for a hub answer with `status` to a request for `url`: what a user can act on.
fn hub_error(url: &str, status: u16, resp: &reqwest::Response) -> SourceError {
    let code = resp
        .headers()
        .get("x-error-code")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    match (status, code) {
        (401 | 403, _) | (_, "GatedRepo") => SourceError::Refused(format!(
            "the hub refused {url} (HTTP {status}): a private or gated repository needs a token with access (HF_TOKEN or origin_hf.token)"
        )),
        (404, "RevisionNotFound") => SourceError::NotFound {
            url: url.to_string(),
            what: "the revision does not exist".into(),
        },
        (404, "EntryNotFound") => SourceError::NotFound {
            url: url.to_string(),
            what: "the file does not exist at that revision".into(),
        },
        (404, _) => SourceError::NotFound {
            url: url.to_string(),
            what: "the repository, revision or file does not exist (or is private)".into(),
        },
        _ => SourceError::Status {
            status,
            url: url.to_string(),
        },
    }
}

/// `e` with the hub's resolve URL replaced by the `hf://` URL the user gave.
fn renamed(e: SourceError, url: &str) -> SourceError {
    match e {
        SourceError::Status { status, .. } => SourceError::Status {
            status,
            url: url.to_string(),
        },
        other => other,
    }
}

/// The hub's tree listing is paginated; this many pages at most (of 1,000 entries or so).
const MAX_PAGES: usize = 1000;

#[async_trait]
impl Source for HubSource {
    fn check(&self, url: &str, _policy: OriginPolicy) -> Result<(), SourceError> {
        let p = HubPath::parse(url)?;
        if p.path.is_empty() {
            return Err(SourceError::Unsupported {
                url: url.to_string(),
                reason: "names a repository, not a file (use --recursive for all of it)".into(),
            });
        }
        Ok(())
    }

    async fn read(&self, req: ReadRequest<'_>) -> Result<OriginResponse, SourceError> {
        self.check(req.url, req.policy)?;
        let p = HubPath::parse(req.url)?;
        let resolve = self.resolve_url(&p, &p.revision);
        let meta = self.file_meta(req.url, &resolve, req.policy).await?;
        if meta.sha256.is_none() {
            let blob_id = meta.blob_id.as_deref().ok_or_else(|| {
                SourceError::Protocol(format!(
                    "the hub published neither a sha256 nor a git blob id for {}",
                    req.url
                ))
            })?;
            let body = self.small_file(&req, &resolve, blob_id).await?;
            let len = body.len() as u64;
            let start = req.start.min(len);
            let end = req.end.unwrap_or(len).clamp(start, len);
            let part = body.slice(start as usize..end as usize);
            return Ok(OriginResponse::new(
                len,
                start,
                Some(format!("\"{blob_id}\"")),
                None,
                Box::pin(futures::stream::once(async move { Ok(part) })),
            ));
        }
        let auth = self.auth();
        self.clients
            .http
            .read(ReadRequest {
                url: &resolve,
                headers: &auth,
                ..req
            })
            .await
            .map_err(|e| renamed(e, req.url))
    }

    async fn list(
        &self,
        url: &str,
        policy: OriginPolicy,
        limit: usize,
    ) -> Result<Listing, SourceError> {
        let p = HubPath::parse(url)?;
        let commit = self.commit(url, &p, policy).await?.sha;
        let dir = if p.path.is_empty() {
            String::new()
        } else {
            format!(
                "/{}",
                p.path.split('/').map(encode).collect::<Vec<_>>().join("/")
            )
        };
        let mut next = Some(self.at(&format!(
            "api/{}/{}/tree/{commit}{dir}?recursive=true&expand=false",
            p.kind, p.repo
        )));
        let mut listing = Listing::default();
        let mut pages = 0;
        while let Some(page) = next.take() {
            pages += 1;
            if pages > MAX_PAGES {
                return Err(SourceError::Protocol(format!(
                    "the hub's listing of {url} runs past {MAX_PAGES} pages"
                )));
            }
            // The next page must be the hub's own.
            if !page.starts_with(self.endpoint.as_str().trim_end_matches('/')) {
                return Err(SourceError::Protocol(format!(
                    "the hub's listing of {url} links to another host"
                )));
            }
            let (entries, link) = self.get_json::<Vec<TreeEntry>>(url, &page, policy).await?;
            next = link;
            for e in entries.into_iter().filter(|e| e.kind == "file") {
                let below = if p.path.is_empty() {
                    Some(e.path.as_str())
                } else {
                    e.path
                        .strip_prefix(&p.path)
                        .and_then(|r| r.strip_prefix('/'))
                };
                let Some(rel) = below.filter(|r| !r.is_empty()) else {
                    continue;
                };
                if listing.objects.len() == limit {
                    listing.truncated = true;
                    return Ok(listing);
                }
                let digest = e
                    .lfs
                    .as_ref()
                    .and_then(|l| format!("sha256:{}", l.oid).parse::<ContentDigest>().ok());
                listing.objects.push(Listed {
                    url: p.url(&commit, &e.path),
                    path: rel.to_string(),
                    size: e.size,
                    version: Some(e.lfs.map_or(e.oid, |l| l.oid)),
                    digest,
                });
            }
        }
        Ok(listing)
    }

    async fn resolve(&self, url: &str, policy: OriginPolicy) -> Result<Resolved, SourceError> {
        self.check(url, policy)?;
        let p = HubPath::parse(url)?;
        let info = self.commit(url, &p, policy).await?;
        let pinned = p.url(&info.sha, &p.path);
        let meta = self
            .file_meta(url, &self.resolve_url(&p, &info.sha), policy)
            .await?;
        Ok(Resolved {
            url: pinned,
            digest: meta.sha256,
            size: Some(meta.size),
            private: info.private,
            version: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_urls_name_a_repository_a_revision_and_a_path() {
        let p = HubPath::parse("hf://org/model@v1.0/weights/model.safetensors").expect("url");
        assert_eq!(
            p,
            HubPath {
                kind: "models",
                repo: "org/model".into(),
                revision: "v1.0".into(),
                path: "weights/model.safetensors".into(),
            }
        );
        let d = HubPath::parse("hf://datasets/org/set").expect("url");
        assert_eq!(
            (d.kind, d.revision.as_str(), d.path.as_str()),
            ("datasets", "main", "")
        );
        let pr = HubPath::parse("hf://org/m@refs%2Fpr%2F1/a b.txt").expect("url");
        assert_eq!(pr.revision, "refs/pr/1");
        assert_eq!(pr.path, "a b.txt");
        assert_eq!(
            pr.url(&"a".repeat(40), "x y/z"),
            format!("hf://org/m@{}/x%20y/z", "a".repeat(40))
        );
        assert_eq!(
            HubPath::parse(&d.url("c0ffee", "train/0.parquet"))
                .expect("back")
                .path,
            "train/0.parquet"
        );
        for bad in [
            "hf://org",
            "hf://org/",
            "hf://org/m@/x",
            "hf://org/m/../../x",
            "s3://b/k",
        ] {
            assert!(HubPath::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_blob_id_is_gits() {
        // `printf 'hello\n' | git hash-object --stdin`
        assert_eq!(
            git_blob_id(b"hello\n"),
            "ce013625030ba8dba906f756967f9e9ca394464a"
        );
    }
}
