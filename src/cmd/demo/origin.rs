//! The demo's origin: one blob of random bytes over HTTP on loopback, with `Range` support,
//! counting every byte it sends so the demo can show how little the swarm took from it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use pollen_core::ContentDigest;
use rand::Rng as _;
use sha2::{Digest as _, Sha256};
use tokio_util::sync::CancellationToken;

/// Bytes sent per body chunk.
const CHUNK: usize = 256 << 10;

#[derive(Clone)]
struct Blob {
    data: Bytes,
    etag: String,
    served: Arc<AtomicU64>,
}

/// A running origin; stops when dropped.
pub(crate) struct DemoOrigin {
    addr: SocketAddr,
    digest: ContentDigest,
    served: Arc<AtomicU64>,
    shutdown: CancellationToken,
}

impl Drop for DemoOrigin {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl DemoOrigin {
    /// Serves `size` random bytes at `/blob` on a free loopback port.
    pub(crate) async fn start(size: usize) -> std::io::Result<Self> {
        let mut data = vec![0u8; size];
        rand::make_rng::<rand::rngs::SmallRng>().fill_bytes(&mut data);
        let digest = ContentDigest(Sha256::digest(&data).into());
        let served = Arc::new(AtomicU64::new(0));
        let blob = Blob {
            data: Bytes::from(data),
            etag: format!("\"{}\"", &digest.hex()[..16]),
            served: served.clone(),
        };
        let app = Router::new().route("/blob", get(serve)).with_state(blob);
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await;
        });
        Ok(Self {
            addr,
            digest,
            served,
            shutdown,
        })
    }

    /// The blob's URL.
    pub(crate) fn url(&self) -> String {
        format!("http://{}/blob", self.addr)
    }

    /// The blob's sha256.
    pub(crate) fn digest(&self) -> ContentDigest {
        self.digest
    }

    /// Body bytes sent so far.
    pub(crate) fn bytes_served(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }
}

async fn serve(State(b): State<Blob>, headers: HeaderMap) -> Response {
    let len = b.data.len() as u64;
    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .map(|v| pollen_core::byte_range::parse(v, len));
    let (status, first, last) = match range {
        None => (StatusCode::OK, 0, len),
        Some(Some((first, last))) => (StatusCode::PARTIAL_CONTENT, first, last + 1),
        Some(None) => {
            return (
                StatusCode::RANGE_NOT_SATISFIABLE,
                [(header::CONTENT_RANGE, format!("bytes */{len}"))],
            )
                .into_response()
        }
    };
    let mut resp = Response::new(counted(&b, first as usize, last as usize));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_LENGTH, (last - first).into());
    h.insert(
        header::ACCEPT_RANGES,
        header::HeaderValue::from_static("bytes"),
    );
    if let Ok(v) = header::HeaderValue::from_str(&b.etag) {
        h.insert(header::ETAG, v);
    }
    if status == StatusCode::PARTIAL_CONTENT {
        if let Ok(v) = header::HeaderValue::from_str(&format!("bytes {first}-{}/{len}", last - 1)) {
            h.insert(header::CONTENT_RANGE, v);
        }
    }
    resp
}

/// `data[start..end]` in chunks, each counted as it is handed to the connection.
fn counted(b: &Blob, start: usize, end: usize) -> Body {
    let (data, served) = (b.data.clone(), b.served.clone());
    let chunks = futures::stream::iter((start..end).step_by(CHUNK).map(move |at| {
        let next = (at + CHUNK).min(end);
        served.fetch_add((next - at) as u64, Ordering::Relaxed);
        Ok::<Bytes, std::io::Error>(data.slice(at..next))
    }));
    Body::from_stream(chunks)
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn get(url: &str, range: Option<&str>) -> (u16, Vec<(String, String)>, Vec<u8>) {
        let mut req = reqwest::Client::new().get(url);
        if let Some(r) = range {
            req = req.header("range", r);
        }
        let resp = req.send().await.expect("origin answers");
        let status = resp.status().as_u16();
        let headers = resp
            .headers()
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
            .collect();
        (status, headers, resp.bytes().await.expect("body").to_vec())
    }

    #[tokio::test]
    async fn the_origin_serves_the_blob_and_its_ranges_and_counts_what_it_sent() {
        let o = DemoOrigin::start(1_000_000).await.expect("origin");
        let (status, _, body) = get(&o.url(), None).await;
        assert_eq!(status, 200);
        assert_eq!(ContentDigest(Sha256::digest(&body).into()), o.digest());
        let (status, headers, part) = get(&o.url(), Some("bytes=10-19")).await;
        assert_eq!(status, 206);
        assert_eq!(part, body[10..20]);
        assert!(headers
            .iter()
            .any(|(k, v)| k == "content-range" && v == "bytes 10-19/1000000"));
        let (status, _, _) = get(&o.url(), Some("bytes=2000000-")).await;
        assert_eq!(status, 416);
        assert_eq!(o.bytes_served(), 1_000_010);
    }
}
