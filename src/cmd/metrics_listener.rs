//! A role's metrics listener (`--metrics-listen`): `/metrics` (OpenMetrics text) and
//! `/healthz` over plain HTTP/1.1, apart from the role's own ports, until shutdown.

use std::net::SocketAddr;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

/// Binds `addr` and serves `render()` at `/metrics` until `shutdown`; returns the address
/// bound (port 0 picks one).
pub(crate) async fn serve(
    addr: SocketAddr,
    render: impl Fn() -> String + Clone + Send + Sync + 'static,
    shutdown: CancellationToken,
) -> anyhow::Result<SocketAddr> {
    use axum::http::header::CONTENT_TYPE;
    use axum::routing::get;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} for metrics"))?;
    let bound = listener.local_addr()?;
    let app = axum::Router::new()
        .route(
            "/metrics",
            get(move || {
                let render = render.clone();
                async move {
                    (
                        [(
                            CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        render(),
                    )
                }
            }),
        )
        .route("/healthz", get(|| async { "ok" }));
    tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await;
        if let Err(e) = served {
            tracing::warn!(error = %e, "the metrics listener stopped");
        }
    });
    Ok(bound)
}
