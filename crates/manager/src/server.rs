//! Serving the REST router on a TCP listener with bounds: at most `max_connections` at once,
//! request headers within `header_read_timeout`, bodies within [`crate::rest::MAX_BODY_BYTES`].

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;
use tracing::debug;

/// Largest request head (line and headers) read.
const MAX_HEAD_BYTES: usize = 64 * 1024;

pub async fn serve_http(
    listener: TcpListener,
    router: Router,
    max_connections: usize,
    header_read_timeout: Duration,
    shutdown: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(max_connections.max(1)));
    while let Some((permit, stream, peer)) =
        pollen_core::accept::next_connection(&listener, &slots, &shutdown).await
    {
        let router = router.clone();
        let token = shutdown.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let svc = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
                let router = router.clone();
                // Who is calling, for the sign-in throttle.
                req.extensions_mut()
                    .insert(axum::extract::ConnectInfo(peer));
                async move {
                    let resp = router
                        .oneshot(req.map(axum::body::Body::new))
                        .await
                        .unwrap_or_else(|e: Infallible| match e {});
                    Ok::<_, Infallible>(resp)
                }
            });
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_read_timeout)
                .max_buf_size(MAX_HEAD_BYTES)
                .serve_connection(TokioIo::new(stream), svc);
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => if let Err(e) = r {
                    debug!(%peer, error = %e, "manager connection ended with an error");
                },
                _ = token.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(Duration::from_secs(5), conn).await;
                }
            }
        });
    }
}
