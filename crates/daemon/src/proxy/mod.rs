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
pub(crate) mod mirror;
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
use tokio_util::sync::CancellationToken;
use tracing::debug;

use self::body::Body;
use crate::config::ProxyConfig;
use crate::download::conductor::Conductor;

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

impl ProxyState {
    /// Runs `work` (a tunnel, a response body being fed) among the daemon's tracked tasks,
    /// so shutdown waits for it, and ends it when the daemon stops.
    pub(crate) fn spawn<F>(&self, work: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let stop = self.conductor.shutdown.clone();
        self.conductor.tasks.spawn(async move {
            tokio::select! {
                _ = work => {}
                _ = stop.cancelled() => {}
            }
        });
    }

    /// How strict the origin guard is for what the proxy fetches or relays: a local client's
    /// request, unless this daemon is a seed (see `Conductor::origin_policy`).
    pub fn origin_policy(&self) -> pollen_source::OriginPolicy {
        pollen_source::OriginPolicy::of(self.conductor.cfg.seed, false)
    }
}

/// What one listener serves.
#[derive(Clone, Debug)]
pub(crate) enum Door {
    /// The mirror for any registry (named by `?ns=`, a header, the path, or the default) and
    /// the HTTP proxy.
    Shared,
    /// The mirror of one registry (`scheme://host[:port]`), for every `/v2/` request.
    Registry(Arc<str>),
}

/// Serves `door` on `listener` until `shutdown`.
pub(crate) async fn serve(
    listener: TcpListener,
    state: Arc<ProxyState>,
    door: Door,
    shutdown: CancellationToken,
) {
    let slots = pollen_core::places::Places::new(state.cfg.max_connections);
    while let Some((permit, stream, peer)) =
        pollen_core::accept::next_connection(&listener, &slots, &shutdown).await
    {
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        let token = shutdown.clone();
        let header_timeout = state.cfg.header_read_timeout;
        let tasks = state.conductor.tasks.clone();
        let door = door.clone();
        tasks.spawn(async move {
            let _permit = permit;
            let svc = service_fn(move |req| {
                let state = state.clone();
                let door = door.clone();
                async move { Ok::<_, Infallible>(dispatch(state, &door, req).await) }
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

async fn dispatch(state: Arc<ProxyState>, door: &Door, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path();
    let mirror_path = req.uri().scheme().is_none() && (path == "/v2" || path.starts_with("/v2/"));
    if let Door::Registry(registry) = door {
        if mirror_path {
            return mirror::handle(state, Some(registry), req).await;
        }
        if req.uri().scheme().is_none() && path == "/healthz" {
            return Response::new(body::full("ok\n"));
        }
        return body::text_error(
            StatusCode::NOT_FOUND,
            &format!("pollen: this port mirrors {registry} only (/v2/...)"),
        );
    }
    if req.method() == Method::CONNECT {
        return tunnel::connect(state, req).await;
    }
    if req.uri().scheme().is_some() {
        return forward(state, req).await;
    }
    if mirror_path {
        return mirror::handle(state, None, req).await;
    }
    if path == "/healthz" {
        return Response::new(body::full("ok\n"));
    }
    body::text_error(
        StatusCode::NOT_FOUND,
        "pollen: this port serves the registry mirror (/v2/...) and HTTP proxy requests",
    )
}

/// The registry a bound mirror listener serves, as `scheme://host[:port]`.
pub(crate) fn bound_registry(
    m: &crate::config::RegistryMirror,
    cfg: &ProxyConfig,
) -> Result<String, String> {
    upstream::registry_base(None, Some(&m.registry), cfg)
        .map_err(|e| format!("registry mirror {}={}: {e}", m.registry, m.listen))
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
            upstream::relay(&state, parts.method, &url, headers, Some(incoming)).await
        }
    }
}

/// Binds the proxy's port.
pub(crate) async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// The mirror's parsers of untrusted request bytes, for the fuzz target
/// (`fuzz/fuzz_targets/mirror_request.rs`): path and query, registry naming, Range. Panics
/// only when an invariant breaks.
#[doc(hidden)]
pub fn fuzz_mirror_request(path_and_query: &str, registry_header: &str, range: &str, len: u64) {
    let (path, query) = path_and_query
        .split_once('?')
        .map_or((path_and_query, None), |(p, q)| (p, Some(q)));
    let (ns, rest) = mirror::query_without_ns(query);
    assert!(rest.is_empty() || rest.starts_with('?'));
    let header = (!registry_header.is_empty()).then_some(registry_header);
    if let Ok(base) = upstream::registry_base(ns.as_deref(), header, &ProxyConfig::default()) {
        assert!(base.starts_with("http://") || base.starts_with("https://"));
    }
    if let Some(Ok((base, rewritten))) = mirror::registry_in_path(path) {
        assert!(base.starts_with("http"));
        assert!(rewritten.starts_with("/v2/"));
    }
    if let Ok(mirror::Route::Blob { digest }) = mirror::route(path) {
        assert!(!digest.is_empty());
        let _ = digest.parse::<pollen_core::ContentDigest>();
    }
    if let Some((first, last)) = pollen_core::byte_range::parse(range, len) {
        assert!(
            first <= last && last < len,
            "range {first}-{last} outside {len}"
        );
    }
}

#[cfg(test)]
mod fuzz_entry_tests {
    #[test]
    fn the_fuzz_entry_accepts_odd_inputs() {
        for (p, h, r, l) in [
            ("/v2/a/blobs/sha256:00?ns=x", "", "bytes=0-", 10),
            (
                "/v2/pollen-registry/http/h_1/x/blobs/y",
                "ftp://x",
                "bytes=-5",
                3,
            ),
            ("?ns=%zz&&=", "http://[::1]:80", "bytes=5-1", 0),
            (
                "/v2/pollen-registry/https/",
                "https://h/p",
                "bytes=18446744073709551615-",
                u64::MAX,
            ),
        ] {
            super::fuzz_mirror_request(p, h, r, l);
        }
    }
}
