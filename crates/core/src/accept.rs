//! The accept step every server shares: a free place first, then the next connection.
//!
//! Each listening role (upload server, proxy, manager REST, gRPC admission) caps how many
//! connections it holds; taking the place before accepting leaves excess clients in the
//! kernel's backlog instead of holding sockets nobody serves. An accept error (out of file
//! descriptors, say) is logged and retried after a pause, so it cannot spin a core.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::places::Places;

/// Pause after a failed accept.
const RETRY_AFTER: Duration = Duration::from_millis(50);

/// Waits for a place among `places`, then for a connection on `listener`; the place is held
/// by the returned permit. `None` once `shutdown` fires or `places` is closed.
pub async fn next_connection(
    listener: &TcpListener,
    places: &Places,
    shutdown: &CancellationToken,
) -> Option<(OwnedSemaphorePermit, TcpStream, SocketAddr)> {
    let place = tokio::select! {
        _ = shutdown.cancelled() => return None,
        p = places.take() => p?,
    };
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            r = listener.accept() => match r {
                Ok((stream, peer)) => return Some((place, stream, peer)),
                Err(e) => {
                    warn!(error = %e, addr = ?listener.local_addr().ok(), "accept failed");
                    tokio::time::sleep(RETRY_AFTER).await;
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_connection_takes_a_place_and_shutdown_ends_the_wait() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let places = Places::new(1);
        let shutdown = CancellationToken::new();
        let _client = TcpStream::connect(addr).await.expect("connect");
        let (place, _stream, _) = next_connection(&listener, &places, &shutdown)
            .await
            .expect("a connection");
        assert_eq!(places.available(), 0);
        drop(place);
        assert_eq!(places.available(), 1);
        shutdown.cancel();
        assert!(next_connection(&listener, &places, &shutdown)
            .await
            .is_none());
    }
}
