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

use bytes::Bytes;
use hyper::header::{HeaderMap, HeaderValue, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, RANGE};
use hyper::{Method, Response, StatusCode};
use pollen_core::{ContentDigest, TaskKey};
use sha2::{Digest as _, Sha256};
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::body::{self, Body};
use super::task_stream::{StreamFail, TaskStream};
use super::upstream::{control_header, forward_headers, relay};
use super::ProxyState;
use crate::conductor::TaskSpec;
use crate::error::DownloadError;
use crate::stats::DaemonStats;

type Tx = mpsc::Sender<Result<Bytes, std::io::Error>>;

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
            Authorisation::Refused(
                relay(&state.relay_client, Method::GET, url, fwd.clone(), None).await,
            )
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
        return relay(&state.relay_client, Method::GET, &req.url, fwd, None).await;
    }
    let headers = task_headers(&fwd);
    let Some(spec) = task_spec(&req, headers.clone()) else {
        return relay(&state.relay_client, Method::GET, &req.url, fwd, None).await;
    };
    if let Some(range) = req.headers.get(RANGE) {
        return serve_range(state, &req, spec, range.clone(), fwd).await;
    }
    let task_id = spec.id;
    let watch = state.conductor.start(spec);
    let stream = TaskStream::new(
        state.conductor.store.clone(),
        watch,
        0,
        None,
        state.cfg.stall_timeout,
    );
    let (tx, body) = body::channel(4);
    let mut resp = Response::new(body);
    let h = resp.headers_mut();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if let Ok(v) = HeaderValue::from_str(&req.digest.to_string()) {
        h.insert("docker-content-digest", v);
    }
    if let Ok(v) = HeaderValue::from_str(&task_id.hex()) {
        h.insert("x-pollen-task-id", v);
    }
    if let Some(len) = length {
        h.insert(CONTENT_LENGTH, HeaderValue::from(len));
    }
    let pump = Pump {
        state,
        url: req.url,
        digest: req.digest,
        headers,
        length,
        tx,
    };
    tokio::spawn(pump.run(stream));
    resp
}

/// Moves one blob from the task (or the registry) to the client.
struct Pump {
    state: Arc<ProxyState>,
    url: String,
    digest: ContentDigest,
    headers: Vec<(String, String)>,
    length: Option<u64>,
    tx: Tx,
}

/// How the body ended.
enum Ended {
    Done,
    ClientGone,
}

impl Pump {
    async fn run(self, mut stream: TaskStream) {
        let mut hash = Some(Box::new(Sha256::new()));
        let mut held: Option<Bytes> = None;
        let p2p = loop {
            match stream.next(&mut hash).await {
                Ok(Some(b)) => {
                    if let Ended::ClientGone = self.pass(&mut held, b).await {
                        return;
                    }
                }
                Ok(None) => break Ok(()),
                Err(e) => break Err(e),
            }
        };
        let pos = stream.position();
        if let Err(StreamFail::Download(e @ DownloadError::DigestMismatch { .. })) = &p2p {
            // The registry's bytes themselves are wrong: asking it again would not help.
            return self.abort(&e.to_string()).await;
        }
        if let Err(e) = p2p {
            let why = match &e {
                StreamFail::Stalled(d) => format!("no progress for {d:?}"),
                other => other.to_string(),
            };
            warn!(url = %self.url, offset = pos, reason = %why, "P2P path failed; serving the rest of the blob from the registry");
            DaemonStats::add(&self.state.conductor.stats.proxy_fallbacks, 1);
            match self.rest_from_registry(pos, &mut hash, &mut held).await {
                Ok(Ended::Done) => {}
                Ok(Ended::ClientGone) => return,
                Err(msg) => return self.abort(&msg).await,
            }
        } else {
            info!(url = %self.url, bytes = pos, "blob served through P2P");
            DaemonStats::add(&self.state.conductor.stats.proxy_p2p_served, 1);
        }
        let actual = hash.map(|h| ContentDigest(h.finalize().into()));
        if actual != Some(self.digest) {
            let shown = actual.map(|d| d.to_string()).unwrap_or_default();
            return self
                .abort(&format!("content is {shown}, not {}", self.digest))
                .await;
        }
        if let Some(b) = held {
            let _ = self.tx.send(Ok(b)).await;
        }
    }

    /// Sends the chunk held back so far and holds this one instead.
    async fn pass(&self, held: &mut Option<Bytes>, b: Bytes) -> Ended {
        if let Some(prev) = held.replace(b) {
            if self.tx.send(Ok(prev)).await.is_err() {
                return Ended::ClientGone;
            }
        }
        Ended::Done
    }

    /// The blob from `pos` on, straight from the registry.
    async fn rest_from_registry(
        &self,
        mut pos: u64,
        hash: &mut Option<Box<Sha256>>,
        held: &mut Option<Bytes>,
    ) -> Result<Ended, String> {
        let mut resp = self
            .state
            .source
            .fetch(&self.url, &self.headers, pos)
            .await
            .map_err(|e| format!("the registry failed too: {e}"))?;
        if let Some(len) = self.length {
            if resp.total_length != len {
                return Err(format!(
                    "the registry now reports {} bytes, not {len}",
                    resp.total_length
                ));
            }
        }
        let mut skip = pos.saturating_sub(resp.start);
        if resp.start > pos {
            return Err("the registry answered a different range".into());
        }
        let h = hash.as_mut().ok_or("the hash was lost")?;
        while let Some(mut chunk) = resp
            .chunk()
            .await
            .map_err(|e| format!("the registry's transfer broke: {e}"))?
        {
            if skip > 0 {
                let n = skip.min(chunk.len() as u64) as usize;
                chunk = chunk.slice(n..);
                skip -= n as u64;
            }
            if chunk.is_empty() {
                continue;
            }
            h.update(&chunk);
            pos += chunk.len() as u64;
            if let Ended::ClientGone = self.pass(held, chunk).await {
                return Ok(Ended::ClientGone);
            }
        }
        if pos != resp.total_length {
            return Err(format!(
                "the registry closed the transfer after {pos} of {} bytes",
                resp.total_length
            ));
        }
        Ok(Ended::Done)
    }

    async fn abort(&self, why: &str) {
        DaemonStats::add(&self.state.conductor.stats.proxy_aborted, 1);
        warn!(url = %self.url, digest = %self.digest, reason = %why, "blob failed verification or transfer; response aborted");
        let _ = self
            .tx
            .send(Err(std::io::Error::other(format!("pollen: {why}"))))
            .await;
    }
}

/// A single `bytes=` range, resolved against the content length: (first, last) inclusive.
pub(crate) fn parse_range(v: &str, len: u64) -> Option<(u64, u64)> {
    let spec = v.trim().strip_prefix("bytes=")?;
    if spec.contains(',') || len == 0 {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let (a, b) = (a.trim(), b.trim());
    let (first, last) = if a.is_empty() {
        let n: u64 = b.parse().ok()?;
        if n == 0 {
            return None;
        }
        (len.saturating_sub(n), len - 1)
    } else {
        let first: u64 = a.parse().ok()?;
        let last = if b.is_empty() {
            len - 1
        } else {
            b.parse::<u64>().ok()?.min(len - 1)
        };
        (first, last)
    };
    (first <= last && first < len).then_some((first, last))
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
    let covered = held.as_ref().and_then(|entry| {
        let layout = entry.layout();
        let (first, last) = parse_range(range.to_str().ok()?, layout.content_length())?;
        let have = entry.bitfield();
        let (p, q) = (layout.piece_at(first)?, layout.piece_at(last)?);
        (p..=q).all(|n| have.get(n)).then_some((first, last))
    });
    let (Some(entry), Some((first, last))) = (held, covered) else {
        if state.cfg.prefetch {
            info!(url = %req.url, "range request for a blob not held; fetching the whole blob in the background");
            drop(state.conductor.start(spec));
        }
        return relay(&state.relay_client, Method::GET, &req.url, fwd, None).await;
    };
    let total = entry.layout().content_length();
    let stream = TaskStream::held(state.conductor.store.clone(), spec.id, first, last + 1);
    let (tx, body) = body::channel(4);
    tokio::spawn(async move {
        let mut stream = stream;
        let mut no_hash = None;
        loop {
            let item = match stream.next(&mut no_hash).await {
                Ok(Some(b)) => Ok(b),
                Ok(None) => break,
                Err(e) => Err(std::io::Error::other(e.to_string())),
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

#[cfg(test)]
mod tests {
    use super::parse_range;

    #[test]
    fn single_ranges_resolve_and_others_are_refused() {
        assert_eq!(parse_range("bytes=0-9", 100), Some((0, 9)));
        assert_eq!(parse_range("bytes=90-", 100), Some((90, 99)));
        assert_eq!(parse_range("bytes=-10", 100), Some((90, 99)));
        assert_eq!(parse_range("bytes=50-1000", 100), Some((50, 99)));
        assert_eq!(parse_range("bytes=100-", 100), None);
        assert_eq!(parse_range("bytes=0-1,5-6", 100), None);
        assert_eq!(parse_range("items=0-1", 100), None);
        assert_eq!(parse_range("bytes=9-1", 100), None);
        assert_eq!(parse_range("bytes=-0", 100), None);
    }
}
