//! Upload server: answers other peers' bitfield and slice requests.
//!
//! One task per connection (a semaphore caps how many), requests answered strictly in order so
//! a client may pipeline them. Slice bytes go from the content file to the socket with
//! `sendfile`, paced by the host's upload rate limiter, without passing through user space.
//! A malformed frame gets an error frame and the connection is closed; nothing panics.
//! With TLS on ([`UploadServer::with_tls`]), only clients presenting a certificate the
//! config accepts get past the handshake, and slices are read into a buffer and encrypted
//! instead of sent with `sendfile`.
//!
//! Slices that may never have reached a live child are reported back to the provider
//! ([`PieceProvider::not_delivered`]): one whose sending failed, and those sent in the last
//! second of a connection that then ended (the child may have died before passing them
//! on). A seed uses that to hand them out again.
//!
//! A connection must send its first request within `first_request_timeout` (10 s by default)
//! and then never stay silent longer than `idle_timeout` (120 s), so sockets opened and left
//! idle (a connection flood, a slowloris) cannot hold the connection slots that real
//! children need. Real children ask for a bitfield as soon as they connect and poll at least
//! every few seconds. A peer that stops taking bytes is cut off the same way: each write (a
//! frame, or a chunk of a slice) must make progress within `write_timeout` (60 s), which a
//! 256 KiB slice does on any link faster than about 35 kbit/s. Waits on this server's own
//! rate limiter and slice cap do not count against it.

use std::ffi::OsString;
use std::io;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use pollen_core::places::Places;
use pollen_core::RateLimiter;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info_span, warn, Instrument};

use crate::connection::Connection;
pub use crate::provider::{PieceProvider, ServedSlice, UploadStats, RECENT};

/// Default time allowed for a new connection's first complete request.
pub const FIRST_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Default time a connection may stay silent between requests.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(120);

/// Default longest a connection's peer may take no bytes while the server has some to send
/// (a reader that never reads would otherwise hold its slot, and a slice place, forever).
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(60);

/// Sets the TCP congestion control of one connection (Linux `TCP_CONGESTION`).
fn set_congestion_control(stream: &TcpStream, name: &OsString) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        use nix::sys::socket::{setsockopt, sockopt::TcpCongestion};
        setsockopt(stream, TcpCongestion, name).map_err(io::Error::from)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (stream, name);
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "per-connection congestion control is Linux only",
        ))
    }
}

/// The upload server of one daemon.
pub struct UploadServer {
    listener: TcpListener,
    provider: Arc<dyn PieceProvider>,
    limiter: RateLimiter,
    stats: Arc<UploadStats>,
    /// Places for connections; the cap may change while the server runs.
    places: Arc<Places>,
    /// Places for slices being sent, over every connection; `None` without a cap.
    pieces: Option<Arc<Semaphore>>,
    first_request_timeout: Duration,
    idle_timeout: Duration,
    write_timeout: Duration,
    tls: Option<TlsAcceptor>,
    /// TCP congestion control set on every accepted connection; `None` keeps the system's.
    congestion: Option<OsString>,
}

impl UploadServer {
    /// Wraps a bound listener.
    pub fn new(
        listener: TcpListener,
        provider: Arc<dyn PieceProvider>,
        limiter: RateLimiter,
        stats: Arc<UploadStats>,
        max_connections: usize,
    ) -> Self {
        Self {
            listener,
            provider,
            limiter,
            stats,
            places: Arc::new(Places::new(max_connections)),
            pieces: None,
            first_request_timeout: FIRST_REQUEST_TIMEOUT,
            idle_timeout: IDLE_TIMEOUT,
            write_timeout: WRITE_TIMEOUT,
            tls: None,
            congestion: None,
        }
    }

    /// Sends over every accepted connection with the TCP congestion control `name` (Linux
    /// `TCP_CONGESTION`, e.g. "cubic"); empty keeps the system's default. A name the
    /// kernel refuses (not built, or not in `net.ipv4.tcp_allowed_congestion_control`) is
    /// logged once and the system's default is used.
    pub fn with_congestion_control(mut self, name: &str) -> Self {
        self.congestion = (!name.is_empty()).then(|| OsString::from(name));
        self
    }

    /// Speaks TLS with `config`; a client must finish its handshake within the first
    /// request's timeout. Give a config that demands client certificates for mutual TLS.
    pub fn with_tls(mut self, config: Arc<tokio_rustls::rustls::ServerConfig>) -> Self {
        self.tls = Some(TlsAcceptor::from(config));
        self
    }

    /// Closes a connection whose first complete request takes longer than `first`, or that
    /// stays silent longer than `idle` between requests.
    pub fn with_timeouts(mut self, first: Duration, idle: Duration) -> Self {
        self.first_request_timeout = first;
        self.idle_timeout = idle;
        self
    }

    /// Closes a connection whose peer takes no bytes for `write` while the server has some
    /// to send.
    pub fn with_write_timeout(mut self, write: Duration) -> Self {
        self.write_timeout = write;
        self
    }

    /// Sends at most `max` slices at once over every connection (0: no cap). A request
    /// past the cap waits for a slice to finish; its connection reads nothing meanwhile.
    pub fn with_piece_limit(mut self, max: usize) -> Self {
        self.pieces = (max > 0).then(|| Arc::new(Semaphore::new(max)));
        self
    }

    /// The cap on connections served at once, which may be changed while the server runs
    /// (a seed peer's cluster sets it).
    pub fn places(&self) -> Arc<Places> {
        self.places.clone()
    }

    /// Accepts connections until `shutdown` fires.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut conns = tokio::task::JoinSet::new();
        let mut congestion_refused = false;
        while let Some((permit, stream, peer)) =
            pollen_core::accept::next_connection(&self.listener, &self.places, &shutdown).await
        {
            let _ = stream.set_nodelay(true);
            if let Some(name) = &self.congestion {
                if let Err(e) = set_congestion_control(&stream, name) {
                    if !congestion_refused {
                        warn!(algorithm = ?name, error = %e, "cannot set the upload connections' TCP congestion control; keeping the system's");
                    }
                    congestion_refused = true;
                }
            }
            let conn = Connection {
                peer_ip: peer.ip(),
                provider: self.provider.clone(),
                limiter: self.limiter.clone(),
                stats: self.stats.clone(),
                pieces: self.pieces.clone(),
                first_request_timeout: self.first_request_timeout,
                idle_timeout: self.idle_timeout,
                write_timeout: self.write_timeout,
            };
            let token = shutdown.clone();
            let tls = self.tls.clone();
            conns.spawn(
                async move {
                    conn.stats.connections.fetch_add(1, Ordering::Relaxed);
                    tokio::select! {
                        _ = token.cancelled() => {}
                        r = conn.serve(stream, tls) => if let Err(e) = r {
                            debug!(error = %e, "upload connection ended with an error");
                        }
                    }
                    conn.stats.connections.fetch_sub(1, Ordering::Relaxed);
                    drop(permit);
                }
                .instrument(info_span!("upload", %peer)),
            );
            while conns.try_join_next().is_some() {}
        }
        conns.shutdown().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both ends of a loopback TCP connection.
    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        (client.expect("connect"), accepted.expect("accept").0)
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn a_connection_gets_the_congestion_control_asked_for() {
        use nix::sys::socket::{getsockopt, sockopt::TcpCongestion};
        let (_client, accepted) = pair().await;
        // Reno is built into every Linux kernel and always allowed.
        set_congestion_control(&accepted, &OsString::from("reno")).expect("reno");
        let now = getsockopt(&accepted, TcpCongestion).expect("getsockopt");
        assert_eq!(now.to_string_lossy().trim_end_matches('\0'), "reno");
    }

    #[tokio::test]
    async fn an_unknown_congestion_control_is_an_error_not_a_panic() {
        let (_client, accepted) = pair().await;
        assert!(set_congestion_control(&accepted, &OsString::from("no-such-algorithm")).is_err());
    }
}
