//! A real HTTP origin that serves one blob, counts every byte it sends, and can misbehave.
//!
//! Used by the multi-process tests and the benchmark harness, which need to know exactly how
//! much the origin served. Routes:
//! - `GET /blob` — the data, with `Range` support (206), `ETag` and `Last-Modified`;
//! - `GET /missing` — 404;
//! - `GET /truncated` — announces the full length, sends half, then drops the connection;
//! - `GET /flaky` — fails twice, then behaves: the first request gets a 503, the second
//!   half of what it asked for before the connection drops, the rest are `/blob`;
//! - `GET /slow` — the data, in 64 KiB chunks 10 ms apart (about 6 MiB/s): slow but steady;
//! - `GET /stalling` — the first request gets the first half of what it asked for, then
//!   nothing more while the connection stays open; the rest are `/blob`;
//! - `GET /private` — the data to a request carrying `Authorization: Bearer
//!   pollen-test-token` ([`PRIVATE_TOKEN`]), 401 to any other;
//! - `GET /v2/…` — the data again, for any registry path (a registry for mirror tests);
//! - `GET /mutable` — the data, until [`Origin::change`] makes it other bytes of the same
//!   length under another ETag (an origin whose content changes under the same URL).
//!
//! `If-Range` is honoured: a Range request whose validator is stale gets the whole content.
//!
//! [`Origin::start_tls`] serves the same routes over HTTPS with a given certificate.

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
use tokio_util::sync::CancellationToken;

const CHUNK: usize = 256 << 10;

#[derive(Clone)]
struct Shared {
    data: Bytes,
    digest: pollen_core::ContentDigest,
    bytes_served: Arc<AtomicU64>,
    /// What `/mutable` serves once [`Origin::change`] was called: the data with every byte
    /// inverted (same length, other ETag).
    changed: Arc<std::sync::RwLock<Option<(Bytes, pollen_core::ContentDigest)>>>,
    /// Requests `/flaky` has answered.
    flaky_hits: Arc<AtomicU64>,
    /// Requests `/stalling` has answered.
    stalling_hits: Arc<AtomicU64>,
}

/// How a response body misbehaves.
#[derive(Clone, Copy)]
enum Flaw {
    /// Sends everything at once.
    None,
    /// Drops the connection once this offset is reached.
    DropAt(usize),
    /// Stops sending at this offset and keeps the connection open.
    StallAt(usize),
    /// Waits 10 ms before every chunk (and sends 64 KiB chunks).
    Slow,
}

/// A running origin server; stops when dropped.
pub struct Origin {
    /// Listening address.
    pub addr: SocketAddr,
    shared: Shared,
    shutdown: CancellationToken,
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn parse_range(h: &HeaderMap, len: u64) -> Option<(u64, u64)> {
    pollen_core::byte_range::parse(h.get(header::RANGE)?.to_str().ok()?, len)
}

fn body(shared: &Shared, start: usize, end: usize, flaw: Flaw) -> Body {
    let data = shared.data.clone();
    let counter = shared.bytes_served.clone();
    let stream = futures::stream::unfold(start, move |pos| {
        let data = data.clone();
        let counter = counter.clone();
        async move {
            if pos >= end {
                return None;
            }
            let (cut, chunk) = match flaw {
                Flaw::None => (usize::MAX, CHUNK),
                Flaw::DropAt(at) | Flaw::StallAt(at) => (at, CHUNK),
                Flaw::Slow => {
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    (usize::MAX, 64 << 10)
                }
            };
            if pos >= cut {
                if let Flaw::StallAt(_) = flaw {
                    // The server's graceful shutdown ends this when the origin drops.
                    std::future::pending::<()>().await;
                }
                return Some((
                    Err(std::io::Error::other("origin dropped the connection")),
                    end,
                ));
            }
            let next = (pos + chunk).min(end).min(cut);
            counter.fetch_add((next - pos) as u64, Ordering::Relaxed);
            Some((Ok::<Bytes, std::io::Error>(data.slice(pos..next)), next))
        }
    });
    Body::from_stream(stream)
}

fn etag(s: &Shared) -> String {
    format!("\"{}\"", &s.digest.hex()[..16])
}

async fn blob(State(s): State<Shared>, headers: HeaderMap) -> Response {
    serve(&s, headers, Flaw::None)
}

async fn slow(State(s): State<Shared>, headers: HeaderMap) -> Response {
    serve(&s, headers, Flaw::Slow)
}

async fn stalling(State(s): State<Shared>, headers: HeaderMap) -> Response {
    if s.stalling_hits.fetch_add(1, Ordering::Relaxed) > 0 {
        return serve(&s, headers, Flaw::None);
    }
    let len = s.data.len() as u64;
    let (a, b) = parse_range(&headers, len).unwrap_or((0, len.saturating_sub(1)));
    let half = (a + (b + 1 - a) / 2) as usize;
    serve(&s, headers, Flaw::StallAt(half))
}

/// The data (or the range asked for), with validators, sent with `flaw`.
fn serve(s: &Shared, headers: HeaderMap, flaw: Flaw) -> Response {
    let len = s.data.len() as u64;
    // `If-Range` with another validator: the range no longer applies, send the whole (new)
    // content, as RFC 9110 says.
    let stale = headers
        .get(header::IF_RANGE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v != etag(s));
    let headers = if stale {
        let mut h = headers.clone();
        h.remove(header::RANGE);
        h
    } else {
        headers
    };
    let common = [
        (header::ETAG, etag(s)),
        (
            header::LAST_MODIFIED,
            "Mon, 23 Nov 2026 00:00:00 GMT".to_string(),
        ),
        (header::ACCEPT_RANGES, "bytes".to_string()),
    ];
    match parse_range(&headers, len) {
        Some((a, b)) => (
            StatusCode::PARTIAL_CONTENT,
            common,
            [
                (header::CONTENT_RANGE, format!("bytes {a}-{b}/{len}")),
                (header::CONTENT_LENGTH, (b - a + 1).to_string()),
            ],
            body(s, a as usize, b as usize + 1, flaw),
        )
            .into_response(),
        None if headers.contains_key(header::RANGE) => {
            (StatusCode::RANGE_NOT_SATISFIABLE, "bad range").into_response()
        }
        None => (
            StatusCode::OK,
            common,
            [(header::CONTENT_LENGTH, len.to_string())],
            body(s, 0, len as usize, flaw),
        )
            .into_response(),
    }
}

async fn mutable(State(s): State<Shared>, headers: HeaderMap) -> Response {
    let now = s.changed.read().unwrap_or_else(|e| e.into_inner()).clone();
    match now {
        None => serve(&s, headers, Flaw::None),
        Some((data, digest)) => {
            let changed = Shared {
                data,
                digest,
                ..s.clone()
            };
            serve(&changed, headers, Flaw::None)
        }
    }
}

async fn flaky(State(s): State<Shared>, headers: HeaderMap) -> Response {
    match s.flaky_hits.fetch_add(1, Ordering::Relaxed) {
        0 => (StatusCode::SERVICE_UNAVAILABLE, "try again later").into_response(),
        1 => {
            let len = s.data.len();
            let (start, end) = parse_range(&headers, len as u64)
                .map(|(a, b)| (a as usize, b as usize + 1))
                .unwrap_or((0, len));
            let cut = start + (end - start) / 2;
            let mut resp = (
                StatusCode::OK,
                [
                    (header::CONTENT_LENGTH, (end - start).to_string()),
                    (header::ETAG, etag(&s)),
                ],
                body(&s, start, end, Flaw::DropAt(cut)),
            )
                .into_response();
            if (start, end) != (0, len) {
                *resp.status_mut() = StatusCode::PARTIAL_CONTENT;
                let range = format!("bytes {start}-{}/{len}", end - 1);
                if let Ok(v) = header::HeaderValue::from_str(&range) {
                    resp.headers_mut().insert(header::CONTENT_RANGE, v);
                }
            }
            resp
        }
        _ => serve(&s, headers, Flaw::None),
    }
}

/// The bearer token `/private` asks for.
pub const PRIVATE_TOKEN: &str = "pollen-test-token";

async fn private(State(s): State<Shared>, headers: HeaderMap) -> Response {
    let expected = format!("Bearer {PRIVATE_TOKEN}");
    match headers.get(header::AUTHORIZATION) {
        Some(v) if v.as_bytes() == expected.as_bytes() => serve(&s, headers, Flaw::None),
        _ => StatusCode::UNAUTHORIZED.into_response(),
    }
}

async fn truncated(State(s): State<Shared>) -> Response {
    let len = s.data.len();
    (
        StatusCode::OK,
        [(header::CONTENT_LENGTH, len.to_string())],
        body(&s, 0, len, Flaw::DropAt(len / 2)),
    )
        .into_response()
}

fn router(data: Bytes) -> (Router, Shared) {
    let shared = Shared {
        digest: pollen_core::ContentDigest::of(&data),
        data,
        bytes_served: Arc::new(AtomicU64::new(0)),
        changed: Arc::new(std::sync::RwLock::new(None)),
        flaky_hits: Arc::new(AtomicU64::new(0)),
        stalling_hits: Arc::new(AtomicU64::new(0)),
    };
    let app = Router::new()
        .route("/blob", get(blob))
        .route("/truncated", get(truncated))
        .route("/private", get(private))
        .route("/flaky", get(flaky))
        .route("/slow", get(slow))
        .route("/stalling", get(stalling))
        .route("/mutable", get(mutable))
        // Any registry blob path serves the same bytes: a registry for mirror tests (one that
        // lies whenever the digest asked for is not this data's).
        .route("/v2/{*rest}", get(blob))
        .with_state(shared.clone());
    (app, shared)
}

impl Origin {
    /// Binds `bind`, builds the routes for `data`, and runs `serve` until the origin drops.
    async fn launch<F, Fut>(bind: SocketAddr, data: Bytes, serve: F) -> std::io::Result<Self>
    where
        F: FnOnce(tokio::net::TcpListener, Router, CancellationToken) -> Fut,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let listener = tokio::net::TcpListener::bind(bind).await?;
        let addr = listener.local_addr()?;
        let (app, shared) = router(data);
        let shutdown = CancellationToken::new();
        tokio::spawn(serve(listener, app, shutdown.clone()));
        Ok(Self {
            addr,
            shared,
            shutdown,
        })
    }

    /// Serves `data` on `bind` (port 0 picks a free port).
    pub async fn start(bind: SocketAddr, data: Bytes) -> std::io::Result<Self> {
        Self::launch(bind, data, |listener, app, token| async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(token.cancelled_owned())
                .await;
        })
        .await
    }

    /// Serves `data` over HTTPS with the PEM certificate chain and private key given.
    pub async fn start_tls(
        bind: SocketAddr,
        data: Bytes,
        cert_pem: &[u8],
        key_pem: &[u8],
    ) -> std::io::Result<Self> {
        use tokio_rustls::rustls::pki_types::pem::PemObject;
        use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let invalid = |e: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, e);
        let certs = CertificateDer::pem_slice_iter(cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| invalid(e.to_string()))?;
        let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| invalid(e.to_string()))?;
        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let config = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| invalid(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| invalid(e.to_string()))?;
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        Self::launch(bind, data, |listener, app, token| async move {
            loop {
                let (tcp, _) = tokio::select! {
                    _ = token.cancelled() => return,
                    r = listener.accept() => match r { Ok(x) => x, Err(_) => continue },
                };
                let (acceptor, app) = (acceptor.clone(), app.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = hyper_util::service::TowerToHyperService::new(app);
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                        .await;
                });
            }
        })
        .await
    }

    /// URL of a route on this origin, e.g. `url("/blob")`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Requests `/flaky` has answered.
    pub fn flaky_requests(&self) -> u64 {
        self.shared.flaky_hits.load(Ordering::Relaxed)
    }

    /// Requests `/stalling` has answered.
    pub fn stalling_requests(&self) -> u64 {
        self.shared.stalling_hits.load(Ordering::Relaxed)
    }

    /// Body bytes sent so far, over all requests.
    pub fn bytes_served(&self) -> u64 {
        self.shared.bytes_served.load(Ordering::Relaxed)
    }

    /// The sha256 of the served data (computed once, at start).
    pub fn digest(&self) -> pollen_core::ContentDigest {
        self.shared.digest
    }

    /// The served data.
    pub fn data(&self) -> &Bytes {
        &self.shared.data
    }

    /// From now on `/mutable` serves different content of the same length (every byte
    /// inverted) with another ETag; returns its sha256.
    pub fn change(&self) -> pollen_core::ContentDigest {
        let data: Bytes = self
            .shared
            .data
            .iter()
            .map(|b| !b)
            .collect::<Vec<u8>>()
            .into();
        let digest = pollen_core::ContentDigest::of(&data);
        *self
            .shared
            .changed
            .write()
            .unwrap_or_else(|e| e.into_inner()) = Some((data, digest));
        digest
    }
}

/// `size` bytes of pseudo-random data (fast, not cryptographic).
pub fn random_data(size: usize) -> Bytes {
    use rand::Rng as _;
    let mut v = vec![0u8; size];
    rand::make_rng::<rand::rngs::SmallRng>().fill_bytes(&mut v);
    Bytes::from(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse_within_the_content() {
        let mut h = HeaderMap::new();
        h.insert(header::RANGE, "bytes=10-".parse().expect("header"));
        assert_eq!(parse_range(&h, 100), Some((10, 99)));
        h.insert(header::RANGE, "bytes=10-500".parse().expect("header"));
        assert_eq!(parse_range(&h, 100), Some((10, 99)));
        h.insert(header::RANGE, "bytes=200-".parse().expect("header"));
        assert_eq!(parse_range(&h, 100), None);
    }
}
