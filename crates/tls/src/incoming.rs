//! The connections a gRPC server (the scheduler's, the manager's) takes: at most
//! `max_connections` at once, and each must prove it is a client within `setup_timeout` —
//! the whole HTTP/2 preface on plain TCP, a finished handshake under TLS — or it is closed.
//! So a flood of idle or trickling sockets is cut off and cannot hold the places that daemons
//! need; a daemon keeps one connection for its life.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, OwnedSemaphorePermit};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::{Connected, TcpConnectInfo};
use tracing::debug;

use crate::role::{host_of, roles_of, ProvenRoles, Role};

/// What every HTTP/2 connection starts with (RFC 9113, section 3.4).
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// A connection admitted to the server; its place is given back when it closes.
pub struct Admitted {
    stream: Stream,
    _place: OwnedSemaphorePermit,
}

enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// What a handler learns of an admitted connection: the client's address, and under TLS
/// the roles its certificate proves.
#[derive(Clone, Debug)]
pub struct AdmittedInfo {
    /// The TCP connection's addresses.
    pub tcp: TcpConnectInfo,
    /// The roles of the client's certificate; `None` on plain TCP (no TLS, nothing proven).
    pub roles: Option<ProvenRoles>,
    /// The host id the client's certificate names, if it names one.
    pub host: Option<String>,
}

impl Connected for Admitted {
    type ConnectInfo = AdmittedInfo;

    fn connect_info(&self) -> AdmittedInfo {
        match &self.stream {
            Stream::Plain(s) => AdmittedInfo {
                tcp: s.connect_info(),
                roles: None,
                host: None,
            },
            Stream::Tls(s) => {
                let (tcp, session) = s.get_ref();
                let leaf = session.peer_certificates().and_then(|c| c.first());
                AdmittedInfo {
                    tcp: tcp.connect_info(),
                    roles: Some(leaf.map(roles_of).unwrap_or_default()),
                    host: leaf.and_then(host_of),
                }
            }
        }
    }
}

/// The client's IP address of a request on an admitted connection.
pub fn remote_ip<T>(req: &tonic::Request<T>) -> Option<std::net::IpAddr> {
    req.extensions()
        .get::<AdmittedInfo>()
        .and_then(|i| i.tcp.remote_addr())
        .or_else(|| req.remote_addr())
        .map(|a| a.ip())
}

/// The roles the client's certificate proves on this request's connection; `None` on plain
/// TCP (no TLS, nothing proven).
pub fn proven_roles<T>(req: &tonic::Request<T>) -> Option<ProvenRoles> {
    req.extensions()
        .get::<AdmittedInfo>()
        .and_then(|i| i.roles.clone())
}

/// The host id the client's certificate names, if it names one (see [`crate::role`]).
pub fn proven_host<T>(req: &tonic::Request<T>) -> Option<String> {
    req.extensions()
        .get::<AdmittedInfo>()
        .and_then(|i| i.host.clone())
}

/// Refuses a request that speaks for host `claimed` (`what` says how) over a connection whose
/// certificate names another host.
#[allow(clippy::result_large_err)] // tonic::Status is what every RPC returns.
pub fn check_host(proven: Option<&str>, claimed: &str, what: &str) -> Result<(), tonic::Status> {
    match proven {
        Some(h) if h != claimed => Err(tonic::Status::permission_denied(format!(
            "{what} names host {claimed}, but this connection's certificate was issued to host {h}"
        ))),
        _ => Ok(()),
    }
}

/// What a client showed of a join token ([`pollen_core::join`]) for a role claim.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenShown {
    /// No token.
    None,
    /// A live token for the claimed role.
    Accepted,
    /// A token that is unknown, revoked, expired or for another role.
    Refused,
}

/// The hash of the join token sent with a request (metadata [`pollen_core::join::METADATA`]),
/// if one was; a value that is not a well-formed token hashes to something no server holds.
pub fn join_token_hash<T>(req: &tonic::Request<T>) -> Option<String> {
    req.metadata()
        .get(pollen_core::join::METADATA)
        .map(|v| pollen_core::join::hash(v.to_str().unwrap_or("")))
}

/// Judges a claim of `role` (`claim` says what was claimed): it stands when the client's
/// certificate carries the role or the client showed a live join token for it; on plain TCP
/// (`proven` is `None`) with `open` set, any claim stands (a network whose hosts are all
/// trusted, as the server said when it started). Anything else is PERMISSION_DENIED, saying
/// what would have been accepted.
#[allow(clippy::result_large_err)] // tonic::Status is what every RPC returns.
pub fn check_claim(
    proven: Option<&ProvenRoles>,
    token: TokenShown,
    role: Role,
    claim: &str,
    open: bool,
) -> Result<(), tonic::Status> {
    if token == TokenShown::Accepted || proven.is_some_and(|r| r.has(role)) {
        return Ok(());
    }
    if proven.is_none() && open && token == TokenShown::None {
        return Ok(());
    }
    let name = role.as_str();
    let why = match (token, proven) {
        (TokenShown::Refused, _) => format!(
            "the join token it showed is unknown, revoked, expired or not for the {name} role"
        ),
        (_, Some(roles)) => format!(
            "it needs a certificate carrying the {name} role ({}) or a join token for it; its certificate carries {:?}",
            role.uri(),
            roles.0.iter().map(|r| r.as_str()).collect::<Vec<_>>()
        ),
        (_, None) => format!(
            "it showed no join token and no certificate: give it one the manager issued for the {name} role (--join-token-file), or use mutual TLS"
        ),
    };
    Err(tonic::Status::permission_denied(format!(
        "{claim} refused: {why}"
    )))
}

impl AsyncRead for Admitted {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match &mut self.get_mut().stream {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Admitted {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().stream {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().stream {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().stream {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Waits until the client has sent the whole HTTP/2 preface, without consuming it.
async fn preface_arrived(stream: &TcpStream) -> io::Result<()> {
    let mut buf = [0u8; PREFACE.len()];
    loop {
        let n = stream.peek(&mut buf).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        if buf[..n] != PREFACE[..n] {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "not HTTP/2"));
        }
        if n == PREFACE.len() {
            return Ok(());
        }
        // Part of it: wait for more bytes rather than spin on the same peek.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Accepts on `listener` until `shutdown` and yields the connections that set up in time;
/// with `tls` (a config that demands client certificates, offering ALPN `h2`), over TLS.
pub fn admit(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    max_connections: usize,
    setup_timeout: Duration,
    shutdown: CancellationToken,
) -> ReceiverStream<io::Result<Admitted>> {
    let tls = tls.map(TlsAcceptor::from);
    let (tx, rx) = mpsc::channel(64);
    let places = pollen_core::places::Places::new(max_connections);
    tokio::spawn(async move {
        while let Some((place, stream, peer)) =
            pollen_core::accept::next_connection(&listener, &places, &shutdown).await
        {
            let _ = stream.set_nodelay(true);
            let (tls, tx) = (tls.clone(), tx.clone());
            tokio::spawn(async move {
                let setup = async {
                    match tls {
                        None => preface_arrived(&stream)
                            .await
                            .map(|()| Stream::Plain(stream)),
                        Some(acceptor) => acceptor
                            .accept(stream)
                            .await
                            .map(|s| Stream::Tls(Box::new(s))),
                    }
                };
                match tokio::time::timeout(setup_timeout, setup).await {
                    Ok(Ok(stream)) => {
                        let _ = tx
                            .send(Ok(Admitted {
                                stream,
                                _place: place,
                            }))
                            .await;
                    }
                    Ok(Err(e)) => debug!(%peer, error = %e, "connection refused at setup"),
                    Err(_) => debug!(%peer, "connection closed: no client setup in time"),
                }
            });
        }
    });
    ReceiverStream::new(rx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claim_stands_on_the_role_certificate_or_a_live_token_and_on_nothing_else() {
        let seed = ProvenRoles(vec![Role::Peer, Role::Seed]);
        let peer = ProvenRoles(vec![Role::Peer]);
        let ok = |proven: Option<&ProvenRoles>, token, open| {
            check_claim(proven, token, Role::Seed, "a seed session", open).is_ok()
        };
        assert!(ok(Some(&seed), TokenShown::None, false));
        assert!(ok(Some(&peer), TokenShown::Accepted, false));
        assert!(ok(None, TokenShown::Accepted, false));
        assert!(!ok(Some(&peer), TokenShown::None, false));
        assert!(
            !ok(Some(&peer), TokenShown::None, true),
            "open never lifts TLS"
        );
        assert!(!ok(None, TokenShown::None, false));
        assert!(!ok(None, TokenShown::Refused, false));
        assert!(
            !ok(None, TokenShown::Refused, true),
            "a bad token is refused even when open"
        );
        assert!(ok(None, TokenShown::None, true));
        let e = check_claim(None, TokenShown::None, Role::Seed, "a seed session", false)
            .expect_err("refused");
        assert_eq!(e.code(), tonic::Code::PermissionDenied);
        assert!(e.message().contains("--join-token-file"), "{}", e.message());
    }
}
