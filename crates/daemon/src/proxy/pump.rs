//! Moves one task's bytes to an HTTP client: from the piece store as the P2P download lands
//! them, then (if that path fails or stalls) the rest from the origin with a Range request,
//! so the client never sees the switch. With a known digest, the last chunk is held back
//! until the sha256 of everything sent matches; on a mismatch the response is aborted, so the
//! client never accepts a corrupt body.

use std::sync::Arc;

use bytes::Bytes;
use hyper::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE};
use hyper::Response;
use pollen_core::ContentDigest;
use pollen_source::{ReadRequest, Source as _};
use sha2::{Digest as _, Sha256};
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::body::{self, Body};
use super::task_stream::{StreamFail, TaskStream};
use super::ProxyState;
use crate::download::watch::DownloadWatch;
use crate::error::DownloadError;
use crate::stats::DaemonStats;

type Tx = mpsc::Sender<Result<Bytes, std::io::Error>>;

/// Moves one task from the store (or its origin) into a response body.
struct Pump {
    state: Arc<ProxyState>,
    /// The origin URL, for the fallback.
    url: String,
    /// Checked against everything sent, when known.
    digest: Option<ContentDigest>,
    /// Headers for the origin request of the fallback.
    headers: Vec<(String, String)>,
    /// The length announced to the client, when known.
    length: Option<u64>,
    tx: Tx,
}

/// Starts moving the task `watch` follows from its start, and returns the 200 response whose
/// body it fills (Content-Type, Content-Length when known and `X-Pollen-Task-Id` set; the
/// caller adds its own headers).
pub(crate) fn respond(
    state: Arc<ProxyState>,
    watch: DownloadWatch,
    url: String,
    digest: Option<ContentDigest>,
    headers: Vec<(String, String)>,
    length: Option<u64>,
) -> Response<Body> {
    let task_id = watch.id;
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
    if let Ok(v) = HeaderValue::from_str(&task_id.hex()) {
        h.insert("x-pollen-task-id", v);
    }
    if let Some(len) = length {
        h.insert(CONTENT_LENGTH, HeaderValue::from(len));
    }
    let spawner = state.clone();
    let pump = Pump {
        state,
        url,
        digest,
        headers,
        length,
        tx,
    };
    spawner.spawn(pump.run(stream));
    resp
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
            // The origin's bytes themselves are wrong: asking it again would not help.
            return self.abort(&e.to_string()).await;
        }
        if let Err(e) = p2p {
            let why = match &e {
                StreamFail::Stalled(d) => format!("no progress for {d:?}"),
                other => pollen_core::error_kind::Chain(other).to_string(),
            };
            warn!(url = %self.url, offset = pos, reason = %why, "P2P path failed; serving the rest from the origin");
            DaemonStats::add(&self.state.conductor.stats.proxy_fallbacks, 1);
            match self.rest_from_origin(pos, &mut hash, &mut held).await {
                Ok(Ended::Done) => {}
                Ok(Ended::ClientGone) => return,
                Err(msg) => return self.abort(&msg).await,
            }
        } else {
            info!(url = %self.url, bytes = pos, "served through P2P");
            DaemonStats::add(&self.state.conductor.stats.proxy_p2p_served, 1);
        }
        if let Some(expected) = self.digest {
            let actual = hash.map(|h| ContentDigest(h.finalize().into()));
            if actual != Some(expected) {
                let shown = actual.map(|d| d.to_string()).unwrap_or_default();
                return self
                    .abort(&format!("content is {shown}, not {expected}"))
                    .await;
            }
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

    /// The content from `pos` on, straight from the origin.
    async fn rest_from_origin(
        &self,
        mut pos: u64,
        hash: &mut Option<Box<Sha256>>,
        held: &mut Option<Bytes>,
    ) -> Result<Ended, String> {
        let mut resp = self
            .state
            .source
            .read(ReadRequest {
                start: pos,
                headers: &self.headers,
                ..ReadRequest::whole(&self.url, self.state.origin_policy())
            })
            .await
            .map_err(|e| format!("the origin failed too: {e}"))?;
        if let Some(len) = self.length {
            if resp.total_length != len {
                return Err(format!(
                    "the origin now reports {} bytes, not {len}",
                    resp.total_length
                ));
            }
        }
        let mut skip = pos.saturating_sub(resp.start);
        if resp.start > pos {
            return Err("the origin answered a different range".into());
        }
        let h = hash.as_mut().ok_or("the hash was lost")?;
        while let Some(mut chunk) = resp
            .chunk()
            .await
            .map_err(|e| format!("the origin's transfer broke: {e}"))?
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
                "the origin closed the transfer after {pos} of {} bytes",
                resp.total_length
            ));
        }
        Ok(Ended::Done)
    }

    async fn abort(&self, why: &str) {
        DaemonStats::add(&self.state.conductor.stats.proxy_aborted, 1);
        warn!(url = %self.url, reason = %why, "response aborted: verification or transfer failed");
        let _ = self
            .tx
            .send(Err(std::io::Error::other(format!("pollen: {why}"))))
            .await;
    }
}
