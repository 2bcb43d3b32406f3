//! Serving one registry blob: authorised by the registry, carried by P2P, verified against
//! its digest before the last byte leaves, and served straight from the registry whenever the
//! P2P path fails.
//!
//! The order of a request:
//! 1. A HEAD to the registry with the client's own credentials. Anything but success (or a
//!    redirect) means the client may not have the blob: its GET is relayed so the client gets
//!    the registry's own answer (a 401 with its `WWW-Authenticate` challenge, a 404). So a
//!    private layer held in the cache never reaches a client the registry would refuse.
//! 2. The blob's task (id = its sha256, so every registry host shares it) is started or
//!    joined, and its bytes are streamed in order as pieces are verified.
//! 3. If the P2P download fails or stalls, the rest comes from the registry with a Range
//!    request from where the stream stopped: the client never sees the switch.
//! 4. The last chunk is held back until the sha256 of everything sent matches the digest; on
//!    a mismatch the response is aborted, so the client never accepts a corrupt blob.

use std::sync::Arc;

use hyper::header::{HeaderMap, HeaderValue, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, RANGE};
use hyper::{Method, Response, StatusCode};
use pollen_core::{ContentDigest, TaskKey};
use tracing::info;

use super::body::{self, Body};
use super::pump;
use super::task_stream::TaskStream;
use super::upstream::{control_header, forward_headers, relay};
use super::ProxyState;
use crate::download::task_spec::TaskSpec;

/// A blob GET, as the mirror parsed it.
pub(crate) struct BlobRequest {
    /// `scheme://host[:port]/v2/NAME/blobs/DIGEST` at the registry.
    pub url: String,
    pub digest: ContentDigest,
    pub headers: HeaderMap,
}

/// What the registry said to the client's credentials.
enum Authorisation {
    /// May fetch; the blob's length when the registry gave it.
    Allowed(Option<u64>),
    /// Refused (or missing): this response goes to the client unchanged.
    Refused(Response<Body>),
}

async fn authorise(state: &ProxyState, url: &str, fwd: &HeaderMap) -> Authorisation {
    if let Some(refused) = super::upstream::guard_refusal(state, url) {
        return Authorisation::Refused(refused);
    }
    let mut head = fwd.clone();
    head.remove(RANGE);
    match state.relay_client.head(url).headers(head).send().await {
        Ok(r) if r.status().is_success() => Authorisation::Allowed(
            r.headers()
                .get(CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok()),
        ),
        Ok(r) if r.status().is_redirection() => Authorisation::Allowed(None),
        Ok(_) | Err(_) => {
            // The registry's own answer to the client's GET, body included.
            Authorisation::Refused(relay(state, Method::GET, url, fwd.clone(), None).await)
        }
    }
}

/// The headers a blob's task carries to whoever fetches it from the registry (this daemon or
/// a seed peer): the client's credentials, nothing else.
fn task_headers(fwd: &HeaderMap) -> Vec<(String, String)> {
    fwd.get_all(hyper::header::AUTHORIZATION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(|v| ("Authorization".to_string(), v.to_string()))
        .collect()
}

fn task_spec(req: &BlobRequest, headers: Vec<(String, String)>) -> Option<TaskSpec> {
    let key = TaskKey {
        url: req.url.clone(),
        digest: Some(req.digest),
        tag: control_header(&req.headers, "tag")
            .unwrap_or("")
            .to_string(),
        application: control_header(&req.headers, "application")
            .unwrap_or("")
            .to_string(),
        filtered_query: Vec::new(),
        private: false,
        version: String::new(),
    };
    TaskSpec::new(key, headers).ok()
}

/// Whether the client asked to bypass P2P (`X-Pollen-Use-P2P: false`).
fn p2p_refused(h: &HeaderMap) -> bool {
    control_header(h, "use-p2p").is_some_and(|v| v.eq_ignore_ascii_case("false"))
}

/// Answers a blob GET.
pub(crate) async fn serve(state: Arc<ProxyState>, req: BlobRequest) -> Response<Body> {
    let fwd = forward_headers(&req.headers);
    let length = match authorise(&state, &req.url, &fwd).await {
        Authorisation::Allowed(len) => len,
        Authorisation::Refused(resp) => return resp,
    };
    if p2p_refused(&req.headers) {
        return relay(&state, Method::GET, &req.url, fwd, None).await;
    }
    let headers = task_headers(&fwd);
    let Some(spec) = task_spec(&req, headers.clone()) else {
        return relay(&state, Method::GET, &req.url, fwd, None).await;
    };
    if let Some(range) = req.headers.get(RANGE) {
        return serve_range(state, &req, spec, range.clone(), fwd).await;
    }
    let watch = state.conductor.start(spec);
    let mut resp = pump::respond(state, watch, req.url, Some(req.digest), headers, length);
    if let Ok(v) = HeaderValue::from_str(&req.digest.to_string()) {
        resp.headers_mut().insert("docker-content-digest", v);
    }
    resp
}

/// A Range GET: answered from pieces already held when they cover it, otherwise relayed to
/// the registry (and, with `prefetch`, the whole blob is fetched into the cache meanwhile).
async fn serve_range(
    state: Arc<ProxyState>,
    req: &BlobRequest,
    spec: TaskSpec,
    range: HeaderValue,
    fwd: HeaderMap,
) -> Response<Body> {
    let held = state.conductor.store.get(&spec.id);
    let covered = held
        .as_ref()
        .filter(|e| e.held_bytes_trusted())
        .and_then(|entry| {
            let layout = entry.layout();
            let (first, last) =
                pollen_core::byte_range::parse(range.to_str().ok()?, layout.content_length())?;
            let have = entry.bitfield();
            let (p, q) = (layout.piece_at(first)?, layout.piece_at(last)?);
            (p..=q).all(|n| have.get(n)).then_some((first, last))
        });
    let (Some(entry), Some((first, last))) = (held, covered) else {
        if state.cfg.prefetch {
            info!(url = %req.url, "range request for a blob not held; fetching the whole blob in the background");
            drop(state.conductor.prefetch(spec));
        }
        return relay(&state, Method::GET, &req.url, fwd, None).await;
    };
    let total = entry.layout().content_length();
    let stream = TaskStream::held(state.conductor.store.clone(), spec.id, first, last + 1);
    let (tx, body) = body::channel(4);
    state.spawn(async move {
        let mut stream = stream;
        let mut no_hash = None;
        loop {
            let item = match stream.next(&mut no_hash).await {
                Ok(Some(b)) => Ok(b),
                Ok(None) => break,
                Err(e) => Err(std::io::Error::other(
                    pollen_core::error_kind::Chain(&e).to_string(),
                )),
            };
            let failed = item.is_err();
            if tx.send(item).await.is_err() || failed {
                break;
            }
        }
    });
    let mut resp = Response::new(body);
    *resp.status_mut() = StatusCode::PARTIAL_CONTENT;
    let h = resp.headers_mut();
    h.insert(CONTENT_LENGTH, HeaderValue::from(last + 1 - first));
    if let Ok(v) = HeaderValue::from_str(&format!("bytes {first}-{last}/{total}")) {
        h.insert(CONTENT_RANGE, v);
    }
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    resp
}
