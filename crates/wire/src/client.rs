//! Piece client: one connection to a parent, with pipelined requests.
//!
//! The caller writes requests with [`PieceClient::request_slice`] and
//! [`PieceClient::request_bitfield`] and reads the answers, in request order, with
//! [`PieceClient::next_response`]. After a [`PieceResponse::Slice`], the payload must be read
//! with [`PieceClient::read_payload`] before the next response. Bytes are not verified here:
//! the receiver checks the slice hashes against the piece digest the scheduler published and
//! each slice against its hash.
//!
//! With a [`ClientTls`], the connection is TLS: the parent's certificate must chain to the
//! cluster CA and carry the peers' name, and this side presents its own certificate.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use pollen_core::{Bitfield, SliceHash, TaskId};
use tokio::io::{AsyncBufRead, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::ClientConfig;
use tokio_rustls::TlsConnector;

use crate::codec::{read_message, Message, SliceHeader, WireError};

/// One answer from a parent.
#[derive(Debug)]
pub enum PieceResponse {
    /// A slice follows; read its payload next.
    Slice {
        /// Where the slice lies.
        header: SliceHeader,
        /// The parent's hashes of every slice of the slice's piece (unverified).
        hashes: Vec<SliceHash>,
    },
    /// The parent does not have the slice, or will not send it now.
    Missing(u32),
    /// The parent's bitfield for the task (empty when it does not know the task).
    Bitfield(Bitfield),
}

/// How to speak TLS to parents: the client config and the name their certificates carry.
#[derive(Clone)]
pub struct ClientTls {
    connector: TlsConnector,
    name: ServerName<'static>,
}

impl ClientTls {
    /// TLS with `config`, checking `name` on every parent's certificate.
    pub fn new(config: Arc<ClientConfig>, name: ServerName<'static>) -> Self {
        Self {
            connector: TlsConnector::from(config),
            name,
        }
    }
}

type Reader = Box<dyn AsyncRead + Send + Unpin>;
type Writer = Box<dyn AsyncWrite + Send + Unpin>;

/// A connection to one parent's upload server.
pub struct PieceClient {
    reader: BufReader<Reader>,
    writer: Writer,
    scratch: Vec<u8>,
    out: Vec<u8>,
    peer: SocketAddr,
}

impl PieceClient {
    /// Connects to a parent within `timeout`, over plain TCP.
    pub async fn connect(addr: SocketAddr, timeout: Duration) -> Result<Self, WireError> {
        Self::connect_with(addr, timeout, None).await
    }

    /// Connects to a parent within `timeout` (TLS handshake included when `tls` is given).
    pub async fn connect_with(
        addr: SocketAddr,
        timeout: Duration,
        tls: Option<&ClientTls>,
    ) -> Result<Self, WireError> {
        let timed_out = || {
            WireError::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("connecting to {addr} timed out"),
            ))
        };
        tokio::time::timeout(timeout, Self::open(addr, tls))
            .await
            .map_err(|_| timed_out())?
    }

    async fn open(addr: SocketAddr, tls: Option<&ClientTls>) -> Result<Self, WireError> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (r, w): (Reader, Writer) = match tls {
            None => {
                let (r, w) = stream.into_split();
                (Box::new(r), Box::new(w))
            }
            Some(tls) => {
                let s = tls.connector.connect(tls.name.clone(), stream).await?;
                let (r, w) = tokio::io::split(s);
                (Box::new(r), Box::new(w))
            }
        };
        Ok(Self {
            reader: BufReader::with_capacity(256 << 10, r),
            writer: w,
            scratch: Vec::new(),
            out: Vec::with_capacity(64),
            peer: addr,
        })
    }

    /// The parent's address.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    async fn send(&mut self, m: Message) -> Result<(), WireError> {
        self.out.clear();
        m.encode(&mut self.out);
        self.writer.write_all(&self.out).await?;
        self.writer.flush().await?;
        Ok(())
    }

    /// Shows the scheduler's grant to fetch the private `task` (before asking for it).
    pub async fn send_grant(
        &mut self,
        task: TaskId,
        grant: pollen_core::grant::Grant,
    ) -> Result<(), WireError> {
        self.send(Message::Grant { task, grant }).await
    }

    /// Asks for the parent's bitfield of `task`.
    pub async fn request_bitfield(&mut self, task: TaskId) -> Result<(), WireError> {
        self.send(Message::BitfieldRequest { task }).await
    }

    /// Asks for slice `slice` (counted across the task) of `task`.
    pub async fn request_slice(&mut self, task: TaskId, slice: u32) -> Result<(), WireError> {
        self.send(Message::SliceRequest { task, slice }).await
    }

    async fn next_message(&mut self) -> Result<Message, WireError> {
        read_message(&mut self.reader, &mut self.scratch)
            .await?
            .ok_or(WireError::Truncated)
    }

    /// Reads the next answer.
    pub async fn next_response(&mut self) -> Result<PieceResponse, WireError> {
        match self.next_message().await? {
            Message::SliceHashes { hashes, .. } => match self.next_message().await? {
                Message::Slice(header) => Ok(PieceResponse::Slice { header, hashes }),
                _ => Err(WireError::Malformed {
                    tag: 0x06,
                    reason: "slice hashes not followed by their slice",
                }),
            },
            Message::Slice(_) => Err(WireError::Malformed {
                tag: 0x04,
                reason: "slice sent without its piece's slice hashes",
            }),
            Message::SliceMissing { slice, .. } => Ok(PieceResponse::Missing(slice)),
            Message::Bitfield { count, bits, .. } => Bitfield::from_bytes(count, &bits)
                .map(PieceResponse::Bitfield)
                .ok_or(WireError::Malformed {
                    tag: 0x02,
                    reason: "bits set past the slice count",
                }),
            Message::Error { message } => Err(WireError::Io(std::io::Error::other(format!(
                "parent refused: {message}"
            )))),
            _ => Err(WireError::Malformed {
                tag: 0,
                reason: "request frame received by a client",
            }),
        }
    }

    /// Reads exactly `buf.len()` payload bytes: what is already buffered is copied, the rest
    /// goes from the socket straight into `buf` (no second copy through the read buffer).
    pub async fn read_payload(&mut self, buf: &mut [u8]) -> Result<(), WireError> {
        let buffered = self.reader.buffer();
        let head = buffered.len().min(buf.len());
        buf[..head].copy_from_slice(&buffered[..head]);
        Pin::new(&mut self.reader).consume(head);
        let rest = &mut buf[head..];
        if rest.is_empty() {
            return Ok(());
        }
        self.reader.get_mut().read_exact(rest).await.map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                WireError::Truncated
            } else {
                WireError::Io(e)
            }
        })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Message;

    /// A parent that answers anything with `frames`, then keeps the connection open.
    async fn parent_sending(frames: Vec<Message>) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.expect("accept");
            let mut out = Vec::new();
            for f in &frames {
                f.encode(&mut out);
            }
            s.write_all(&out).await.expect("write");
            std::future::pending::<()>().await;
        });
        addr
    }

    #[tokio::test]
    async fn a_parents_error_frame_is_an_error_naming_its_message() {
        let addr = parent_sending(vec![Message::Error {
            message: "no such task".into(),
        }])
        .await;
        let mut c = PieceClient::connect(addr, Duration::from_secs(5))
            .await
            .expect("connect");
        let e = c.next_response().await.expect_err("refused");
        assert!(
            e.to_string().contains("no such task") || format!("{e:?}").contains("no such task"),
            "{e:?}"
        );
    }

    #[tokio::test]
    async fn a_slice_without_its_hashes_is_refused_as_malformed() {
        let addr = parent_sending(vec![Message::Slice(SliceHeader {
            slice: 0,
            offset: 0,
            length: 4,
        })])
        .await;
        let mut c = PieceClient::connect(addr, Duration::from_secs(5))
            .await
            .expect("connect");
        let e = c.next_response().await.expect_err("malformed");
        assert!(matches!(e, WireError::Malformed { tag: 0x04, .. }), "{e:?}");
    }
}
