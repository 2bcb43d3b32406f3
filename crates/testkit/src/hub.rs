//! A small Hugging Face Hub: the part of the hub's documented HTTP API that downloads use,
//! over repositories held in memory. No hub is reachable from the test machines, so the
//! `hf://` tests read this one; `tests/hub.rs` first has the real `huggingface_hub` client
//! download a snapshot from it, so it cannot drift from the protocol that client speaks.
//!
//! Routes (`{kind}` is `models`, `datasets` or `spaces`; a model's resolve path has no kind):
//! - `GET /api/{kind}/{owner}/{repo}/revision/{rev}`: `{"id", "sha", "private", "siblings"}`;
//! - `GET /api/{kind}/{owner}/{repo}/tree/{rev}[/{path}]?recursive=true`: the files below,
//!   each `{"type": "file", "path", "size", "oid"}` (the git blob id) and, for LFS files,
//!   `"lfs": {"oid": <sha256>, "size", "pointerSize"}`;
//! - `HEAD|GET /[{kind}/]{owner}/{repo}/resolve/{rev}/{path}`: a git file itself (`ETag` its
//!   blob id), or for an LFS file a 302 to `/cdn/{sha256}` with `X-Linked-Etag` (its sha256)
//!   and `X-Linked-Size`; `X-Repo-Commit` on both;
//! - `GET /cdn/{sha256}` (named as `localhost`, another host like the hub's CDN): an LFS
//!   file's bytes, ranges honoured; a file marked corrupt is served
//!   with one byte changed under its published sha256.
//!
//! A private repository answers 401 unless `Authorization: Bearer <its token>`; an unknown
//! revision 404 with `X-Error-Code: RevisionNotFound`, an unknown file `EntryNotFound`.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use bytes::Bytes;
use sha2::Digest as _;
use tokio_util::sync::CancellationToken;

/// A file of a fixture repository.
#[derive(Clone, Debug)]
pub struct HubFile {
    /// Its path in the repository.
    pub path: String,
    /// Its bytes.
    pub data: Bytes,
    /// Kept in LFS (served through the CDN, published with its sha256) rather than in git.
    pub lfs: bool,
    /// The CDN sends other bytes than the published sha256 (an LFS file only).
    pub corrupt: bool,
}

impl HubFile {
    /// A file stored in git.
    pub fn git(path: &str, data: impl Into<Bytes>) -> Self {
        Self {
            path: path.into(),
            data: data.into(),
            lfs: false,
            corrupt: false,
        }
    }

    /// A file stored in LFS.
    pub fn lfs(path: &str, data: impl Into<Bytes>) -> Self {
        Self {
            lfs: true,
            ..Self::git(path, data)
        }
    }

    fn sha256(&self) -> String {
        hex::encode(sha2::Sha256::digest(&self.data))
    }

    fn blob_id(&self) -> String {
        let mut h = ring::digest::Context::new(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY);
        h.update(format!("blob {}\0", self.data.len()).as_bytes());
        h.update(&self.data);
        hex::encode(h.finish())
    }
}

/// A fixture repository: one commit, reachable as `main` or by its sha.
#[derive(Clone, Debug)]
pub struct HubRepo {
    /// `models`, `datasets` or `spaces`.
    pub kind: String,
    /// `owner/name`.
    pub id: String,
    /// 40 hex digits.
    pub commit: String,
    /// `Some(token)`: private, readable with that token only.
    pub token: Option<String>,
    /// Its files.
    pub files: Vec<HubFile>,
}

impl HubRepo {
    /// A public model repository `id` holding `files`, its commit derived from them.
    pub fn model(id: &str, files: Vec<HubFile>) -> Self {
        let mut h = sha2::Sha256::new();
        for f in &files {
            h.update(f.path.as_bytes());
            h.update(&f.data);
        }
        Self {
            kind: "models".into(),
            id: id.into(),
            commit: hex::encode(h.finalize())[..40].to_string(),
            token: None,
            files,
        }
    }

    fn has_revision(&self, rev: &str) -> bool {
        rev == "main" || rev == self.commit
    }
}

#[derive(Default)]
struct Shared {
    repos: Vec<HubRepo>,
    /// "METHOD /path" of every request, in order.
    log: Mutex<Vec<String>>,
}

/// A running hub fixture, stopped on drop.
pub struct Hub {
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
}

impl Drop for Hub {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl Hub {
    /// Serves `repos` on 127.0.0.1 and a free port.
    pub async fn start(repos: Vec<HubRepo>) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        let endpoint = format!("http://{}", listener.local_addr()?);
        let shared = Arc::new(Shared {
            repos,
            log: Mutex::default(),
        });
        let app = Router::new()
            .fallback(handle)
            .with_state((shared.clone(), endpoint.clone()));
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await;
        });
        Ok(Self {
            endpoint,
            shared,
            shutdown,
        })
    }

    /// Requests whose "METHOD /path" contains `part`, so far.
    pub fn requests(&self, part: &str) -> usize {
        let log = self.shared.log.lock().unwrap_or_else(|e| e.into_inner());
        log.iter().filter(|l| l.contains(part)).count()
    }

    /// GETs of the bytes of `file` of `repo`: of its resolve URL for a git file, of its CDN
    /// URL for an LFS file.
    pub fn content_gets(&self, repo: &HubRepo, file: &HubFile) -> usize {
        if file.lfs {
            self.requests(&format!("GET /cdn/{}", file.sha256()))
        } else {
            self.requests(&format!("GET {}", resolve_path(repo, file)))
        }
    }
}

/// `/[kind/]owner/name/resolve/{commit}/{path}`.
fn resolve_path(repo: &HubRepo, file: &HubFile) -> String {
    let kind = if repo.kind == "models" {
        String::new()
    } else {
        format!("/{}", repo.kind)
    };
    format!("{kind}/{}/resolve/", repo.id)
        + &format!("{}/{}", repo.commit, file.path).replace(' ', "%20")
}

fn error(status: StatusCode, code: &str) -> Response {
    (
        status,
        [("x-error-code", code.to_string())],
        code.to_string(),
    )
        .into_response()
}

fn json(v: serde_json::Value) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], v.to_string()).into_response()
}

/// Serves `data` whole or the range asked for.
fn content(
    data: &Bytes,
    headers: &HeaderMap,
    extra: Vec<(&'static str, String)>,
    head: bool,
) -> Response {
    let len = data.len() as u64;
    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| pollen_core::byte_range::parse(v, len));
    let (status, body) = match range {
        Some((a, b)) => (
            StatusCode::PARTIAL_CONTENT,
            data.slice(a as usize..=b as usize),
        ),
        None => (StatusCode::OK, data.clone()),
    };
    let mut resp = Response::builder()
        .status(status)
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::CONTENT_LENGTH, body.len());
    if let Some((a, b)) = range {
        resp = resp.header(header::CONTENT_RANGE, format!("bytes {a}-{b}/{len}"));
    }
    for (k, v) in extra {
        resp = resp.header(k, v);
    }
    resp.body(if head {
        Body::empty()
    } else {
        Body::from(body)
    })
    .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

async fn handle(State((shared, endpoint)): State<(Arc<Shared>, String)>, req: Request) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    shared
        .log
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(format!("{method} {path}"));
    let head = method == Method::HEAD;
    if method != Method::GET && !head {
        return StatusCode::METHOD_NOT_ALLOWED.into_response();
    }
    let headers = req.headers().clone();
    let decoded = |s: &str| {
        url::form_urlencoded::parse(format!("x={}", s.replace('+', "%2B")).as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default()
    };
    let segs: Vec<String> = path
        .trim_start_matches('/')
        .split('/')
        .map(decoded)
        .collect();
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();

    if let ["cdn", sha] = segs[..] {
        for repo in &shared.repos {
            if let Some(f) = repo.files.iter().find(|f| f.lfs && f.sha256() == sha) {
                let mut data = f.data.to_vec();
                if f.corrupt && !data.is_empty() {
                    data[0] ^= 0xff;
                }
                let etag = vec![("etag", format!("\"{sha}\""))];
                return content(&Bytes::from(data), &headers, etag, head);
            }
        }
        return StatusCode::NOT_FOUND.into_response();
    }

    // Which repository, and what is asked of it.
    let (api, rest) = match segs.first() {
        Some(&"api") => (true, &segs[1..]),
        _ => (false, &segs[..]),
    };
    let (kind, rest) = match rest.first() {
        Some(&k @ ("models" | "datasets" | "spaces")) if api || k != "models" => (k, &rest[1..]),
        _ if !api => ("models", rest),
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    let [owner, name, action, rev, tail @ ..] = rest else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let id = format!("{owner}/{name}");
    let Some(repo) = shared.repos.iter().find(|r| r.kind == kind && r.id == id) else {
        return error(StatusCode::UNAUTHORIZED, "RepoNotFound");
    };
    if let Some(token) = &repo.token {
        let sent = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        if sent != Some(&format!("Bearer {token}")) {
            return error(StatusCode::UNAUTHORIZED, "RepoNotFound");
        }
    }
    if !repo.has_revision(rev) {
        return error(StatusCode::NOT_FOUND, "RevisionNotFound");
    }
    let tail = tail.join("/");
    match (api, *action) {
        (true, "revision") => json(serde_json::json!({
            "id": repo.id,
            "sha": repo.commit,
            "private": repo.token.is_some(),
            "siblings": repo.files.iter().map(|f| serde_json::json!({"rfilename": f.path})).collect::<Vec<_>>(),
        })),
        (true, "tree") => {
            let below: Vec<_> = repo
                .files
                .iter()
                .filter(|f| tail.is_empty() || f.path.starts_with(&format!("{tail}/")))
                .map(|f| {
                    let mut e = serde_json::json!({
                        "type": "file",
                        "path": f.path,
                        "size": f.data.len(),
                        "oid": f.blob_id(),
                    });
                    if f.lfs {
                        e["lfs"] = serde_json::json!({
                            "oid": f.sha256(),
                            "size": f.data.len(),
                            "pointerSize": 134,
                        });
                    }
                    e
                })
                .collect();
            json(serde_json::Value::Array(below))
        }
        (false, "resolve") => {
            let Some(f) = repo.files.iter().find(|f| f.path == tail) else {
                return error(StatusCode::NOT_FOUND, "EntryNotFound");
            };
            let commit = ("x-repo-commit", repo.commit.clone());
            if f.lfs {
                let sha = f.sha256();
                return Response::builder()
                    .status(StatusCode::FOUND)
                    // Another host, as the hub's CDN is: the client drops the token there.
                    .header(
                        header::LOCATION,
                        format!("{}/cdn/{sha}", endpoint.replace("127.0.0.1", "localhost")),
                    )
                    .header("x-repo-commit", repo.commit.clone())
                    .header("x-linked-etag", format!("\"{sha}\""))
                    .header("x-linked-size", f.data.len())
                    .header(header::ETAG, format!("\"{sha}\""))
                    .header(header::CONTENT_LENGTH, 0)
                    .body(Body::empty())
                    .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response());
            }
            let etag = ("etag", format!("\"{}\"", f.blob_id()));
            content(&f.data, &headers, vec![commit, etag], head)
        }
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}
