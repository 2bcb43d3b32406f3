//! Serving the REST router on a TCP listener with bounds: at most `max_connections` at once,
//! request headers (and, over HTTPS, the TLS handshake before them) within
//! `header_read_timeout`, bodies within [`crate::rest::MAX_BODY_BYTES`].

use std::convert::Infallible;
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;
use tracing::debug;

/// Largest request head (line and headers) read.
const MAX_HEAD_BYTES: usize = 64 * 1024;

pub async fn serve_http(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    router: Router,
    max_connections: usize,
    header_read_timeout: Duration,
    shutdown: CancellationToken,
) {
    let slots = pollen_core::places::Places::new(max_connections);
    while let Some((permit, stream, peer)) =
        pollen_core::accept::next_connection(&listener, &slots, &shutdown).await
    {
        let router = router.clone();
        let token = shutdown.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match tls {
                None => serve_connection(stream, peer, router, header_read_timeout, token).await,
                Some(acceptor) => {
                    match tokio::time::timeout(header_read_timeout, acceptor.accept(stream)).await {
                        Ok(Ok(s)) => {
                            serve_connection(s, peer, router, header_read_timeout, token).await;
                        }
                        Ok(Err(e)) => debug!(%peer, error = %e, "TLS handshake refused"),
                        Err(_) => debug!(%peer, "TLS handshake not finished in time"),
                    }
                }
            }
        });
    }
}

/// Serves HTTP/1.1 on one connection (plain or TLS) until it ends or `token` fires.
async fn serve_connection<I>(
    io: I,
    peer: std::net::SocketAddr,
    router: Router,
    header_read_timeout: Duration,
    token: CancellationToken,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
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
        .serve_connection(TokioIo::new(io), svc);
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
}
