//! The daemon's HTTP front door on one port: the OCI registry mirror (`/v2/…`) that container
//! runtimes pull through, and an HTTP(S) proxy: absolute-form requests and requests inside
//! intercepted `CONNECT` tunnels go through P2P when a rule matches their URL and are relayed
//! otherwise; other `CONNECT` targets are tunnelled untouched.
//!
//! Every connection is bounded: a client must send its headers within `header_read_timeout`,
//! headers larger than [`MAX_HEADER_BYTES`] are refused before anything is allocated for them,
//! and at most `max_connections` are served at once.

mod blob;
mod body;
pub(crate) mod ca;
mod intercept;
mod mirror;
mod p2p_get;
mod pump;
pub(crate) mod rules;
mod task_stream;
mod tunnel;
mod upstream;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use pollen_source::HttpSource;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use self::body::Body;
use crate::conductor::Conductor;
use crate::config::ProxyConfig;

/// Largest request head (request line and headers) accepted.
pub(crate) const MAX_HEADER_BYTES: usize = 64 << 10;

/// What every request handler shares.
pub(crate) struct ProxyState {
    pub conductor: Arc<Conductor>,
    pub cfg: ProxyConfig,
    /// Relays requests as they are: no redirects followed, so clients see the registry's own.
    pub relay_client: reqwest::Client,
    /// Fetches blob bytes from a registry when the P2P path fails (follows redirects).
    pub source: HttpSource,
    /// Which proxied URLs use P2P, which CONNECT targets are intercepted.
    pub rules: rules::Rules,
    /// Signs intercepted hosts' certificates.
    pub ca: Option<Arc<ca::Ca>>,
}

/// Serves the mirror and proxy on `listener` until `shutdown`.
pub(crate) async fn serve(
    listener: TcpListener,
    state: Arc<ProxyState>,
    shutdown: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(state.cfg.max_connections.max(1)));
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => return,
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
        };
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    warn!(error = %e, "proxy accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        let token = shutdown.clone();
        let header_timeout = state.cfg.header_read_timeout;
        tokio::spawn(async move {
            let _permit = permit;
            let svc = service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(dispatch(state, req).await) }
            });
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .max_buf_size(MAX_HEADER_BYTES)
                .serve_connection(TokioIo::new(stream), svc)
                .with_upgrades();
            tokio::select! {
                r = conn => if let Err(e) = r {
                    debug!(%peer, error = %e, "proxy connection ended with an error");
                },
                _ = token.cancelled() => {}
            }
        });
    }
}

async fn dispatch(state: Arc<ProxyState>, req: Request<Incoming>) -> Response<Body> {
    if req.method() == Method::CONNECT {
        return tunnel::connect(state, req).await;
    }
    if req.uri().scheme().is_some() {
        return forward(state, req).await;
    }
    let path = req.uri().path();
    if path == "/v2" || path.starts_with("/v2/") {
        return mirror::handle(state, req).await;
    }
    if path == "/healthz" {
        return Response::new(body::full("ok\n"));
    }
    body::text_error(
        StatusCode::NOT_FOUND,
        "pollen: this port serves the registry mirror (/v2/...) and HTTP proxy requests",
    )
}

/// A plain-HTTP proxy request (absolute-form URI).
async fn forward(state: Arc<ProxyState>, req: Request<Incoming>) -> Response<Body> {
    if req.uri().scheme_str() != Some("http") {
        return body::text_error(
            StatusCode::BAD_REQUEST,
            "pollen: only http:// URLs are proxied directly; use CONNECT for https",
        );
    }
    let url = req.uri().to_string();
    handle_url(state, req, url).await
}

/// A proxied request for `url` (plain, or from inside an intercepted tunnel): through P2P
/// when a rule says so, relayed to its origin otherwise.
pub(crate) async fn handle_url(
    state: Arc<ProxyState>,
    req: Request<Incoming>,
    url: String,
) -> Response<Body> {
    match state.rules.decide(&url) {
        rules::Decision::P2p(origin) => {
            let method = req.method().clone();
            p2p_get::serve(state, method, origin, req.headers()).await
        }
        rules::Decision::Relay => {
            let (parts, incoming) = req.into_parts();
            let headers = upstream::forward_headers(&parts.headers);
            upstream::relay(
                &state.relay_client,
                parts.method,
                &url,
                headers,
                Some(incoming),
            )
            .await
        }
    }
}

/// Binds the proxy's port.
pub(crate) async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}
