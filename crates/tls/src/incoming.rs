//! TLS connections for a server that takes a stream of them (tonic's
//! `serve_with_incoming`): each handshake runs on its own task with a deadline, so a client
//! that connects and stalls delays no one, and at most `MAX_HANDSHAKES` run at once.

use std::io;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::material::{handshake_timeout_accept, HANDSHAKE_TIMEOUT};

/// Handshakes in progress at most; further connections wait to be accepted.
const MAX_HANDSHAKES: usize = 1024;

/// Accepts connections on `listener` until `shutdown` fires and yields those whose TLS
/// handshake with `config` succeeds.
pub fn tls_incoming(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
    shutdown: CancellationToken,
) -> ReceiverStream<io::Result<TlsStream<TcpStream>>> {
    let (tx, rx) = mpsc::channel(64);
    let acceptor = TlsAcceptor::from(config);
    let slots = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    tokio::spawn(async move {
        loop {
            let slot = tokio::select! {
                _ = shutdown.cancelled() => return,
                s = slots.clone().acquire_owned() => match s { Ok(s) => s, Err(_) => return },
            };
            let (stream, peer) = tokio::select! {
                _ = shutdown.cancelled() => return,
                r = listener.accept() => match r {
                    Ok(x) => x,
                    Err(e) => {
                        warn!(error = %e, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let _ = stream.set_nodelay(true);
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                match handshake_timeout_accept(&acceptor, stream, HANDSHAKE_TIMEOUT).await {
                    Ok(s) => {
                        drop(slot);
                        let _ = tx.send(Ok(s)).await;
                    }
                    Err(e) => debug!(%peer, error = %e, "TLS handshake refused"),
                }
            });
        }
    });
    ReceiverStream::new(rx)
}
