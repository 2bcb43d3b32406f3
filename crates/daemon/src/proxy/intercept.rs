//! TLS interception for `CONNECT` targets listed in `intercept_hosts`: the proxy answers the
//! tunnel itself, completes the client's TLS handshake with a certificate its CA signs for
//! the target, and reads the HTTP requests inside. Each becomes `https://target/path` and
//! meets the proxy rules like any other URL (P2P, or relayed to the real target over TLS).

use std::convert::Infallible;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::upgrade::Upgraded;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio_rustls::TlsAcceptor;
use tracing::{debug, warn};

use super::body::Body;
use super::{handle_url, ProxyState, MAX_HEADER_BYTES};

/// Serves the requests inside one intercepted tunnel to `target` (`host:port`).
pub(crate) async fn serve(state: Arc<ProxyState>, upgraded: Upgraded, target: String) {
    let Some(ca) = state.ca.clone() else {
        warn!(%target, "interception asked for but no CA is loaded");
        return;
    };
    let host = target
        .rsplit_once(':')
        .map(|(h, _)| h)
        .unwrap_or(&target)
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let config = match ca.server_config(&host) {
        Ok(c) => c,
        Err(e) => {
            warn!(%target, error = %e, "cannot make a certificate for an intercepted host");
            return;
        }
    };
    let tls = match tokio::time::timeout(
        state.cfg.header_read_timeout,
        TlsAcceptor::from(config).accept(TokioIo::new(upgraded)),
    )
    .await
    {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            debug!(%target, error = %e, "client refused the intercepted TLS handshake (does it trust the Pollen CA?)");
            return;
        }
        Err(_) => {
            debug!(%target, "client sent no TLS handshake in time");
            return;
        }
    };
    let base = if target.ends_with(":443") {
        format!("https://{}", target.trim_end_matches(":443"))
    } else {
        format!("https://{target}")
    };
    let svc = service_fn(move |req: Request<Incoming>| {
        let state = state.clone();
        let base = base.clone();
        async move {
            let path = req
                .uri()
                .path_and_query()
                .map(|p| p.as_str().to_string())
                .unwrap_or_else(|| "/".into());
            let url = format!("{base}{path}");
            Ok::<Response<Body>, Infallible>(handle_url(state, req, url).await)
        }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(std::time::Duration::from_secs(30))
        .max_buf_size(MAX_HEADER_BYTES)
        .serve_connection(TokioIo::new(tls), svc);
    if let Err(e) = conn.await {
        debug!(%target, error = %e, "intercepted connection ended with an error");
    }
}
