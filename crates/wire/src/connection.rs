//! One upload connection: reads a child's requests in order and answers each (bitfields,
//! slices sent with `sendfile` or through TLS, errors), within the server's deadlines, and
//! reports the slices that may not have reached the child.

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt as _;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pollen_core::{RateLimiter, TaskId};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufReader, Interest, WriteHalf};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, warn};

use crate::codec::{read_message, Message, SliceHeader, WireError};
use crate::provider::{PieceProvider, ServedSlice, UploadStats, RECENT};

/// Bytes handed to `sendfile` per rate-limiter grant.
const SEND_CHUNK: u64 = 1 << 20;

/// The slices one connection sent in the last [`RECENT`], oldest first.
#[derive(Default)]
struct RecentSlices(VecDeque<(Instant, TaskId, u32)>);

impl RecentSlices {
    fn push(&mut self, task: TaskId, slice: u32) {
        let now = Instant::now();
        self.forget_older(now);
        self.0.push_back((now, task, slice));
    }

    fn forget_older(&mut self, now: Instant) {
        while self
            .0
            .front()
            .is_some_and(|(at, _, _)| now.duration_since(*at) > RECENT)
        {
            self.0.pop_front();
        }
    }

    /// Reports what is still recent to `provider`, one call per task.
    fn report(mut self, provider: &dyn PieceProvider) {
        self.forget_older(Instant::now());
        while let Some((_, task, _)) = self.0.front().copied() {
            let slices: Vec<u32> = self
                .0
                .iter()
                .filter(|(_, t, _)| *t == task)
                .map(|(_, _, n)| *n)
                .collect();
            self.0.retain(|(_, t, _)| *t != task);
            provider.not_delivered(&task, &slices);
        }
    }
}

/// Most private tasks one connection may be granted.
pub(crate) const MAX_GRANTS_PER_CONNECTION: usize = 64;

pub(crate) struct Connection {
    /// Where the connection comes from: what a grant must name.
    pub(crate) peer_ip: std::net::IpAddr,
    pub(crate) provider: Arc<dyn PieceProvider>,
    pub(crate) limiter: RateLimiter,
    pub(crate) stats: Arc<UploadStats>,
    pub(crate) pieces: Option<Arc<Semaphore>>,
    pub(crate) first_request_timeout: Duration,
    pub(crate) idle_timeout: Duration,
    pub(crate) write_timeout: Duration,
}

/// Where slice bytes go: from the file with `sendfile` on plain TCP, through a buffer and
/// the cipher under TLS.
trait PieceOut: AsyncWrite + Unpin + Send {
    fn send_piece<'a>(
        &'a mut self,
        conn: &'a Connection,
        piece: &'a ServedSlice,
    ) -> impl Future<Output = io::Result<()>> + Send + 'a;
}

impl PieceOut for OwnedWriteHalf {
    fn send_piece<'a>(
        &'a mut self,
        conn: &'a Connection,
        piece: &'a ServedSlice,
    ) -> impl Future<Output = io::Result<()>> + Send + 'a {
        let shared: &'a OwnedWriteHalf = self;
        conn.send_file_range(shared.as_ref(), piece)
    }
}

impl PieceOut for WriteHalf<TlsStream<TcpStream>> {
    fn send_piece<'a>(
        &'a mut self,
        conn: &'a Connection,
        piece: &'a ServedSlice,
    ) -> impl Future<Output = io::Result<()>> + Send + 'a {
        conn.send_buffered(self, piece)
    }
}

impl Connection {
    pub(crate) async fn serve(
        &self,
        stream: TcpStream,
        tls: Option<TlsAcceptor>,
    ) -> Result<(), WireError> {
        let Some(tls) = tls else {
            let (read_half, write_half) = stream.into_split();
            return self.answer(read_half, write_half).await;
        };
        let accepted = tokio::time::timeout(self.first_request_timeout, tls.accept(stream)).await;
        let stream = match accepted {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                self.stats.protocol_errors.fetch_add(1, Ordering::Relaxed);
                debug!(error = %e, "TLS handshake refused");
                return Ok(());
            }
            Err(_) => {
                self.stats.timed_out.fetch_add(1, Ordering::Relaxed);
                return Ok(());
            }
        };
        let (read_half, write_half) = tokio::io::split(stream);
        self.answer(read_half, write_half).await
    }

    /// Answers requests until the connection ends, then reports the slices it sent just
    /// before (see [`RECENT`]).
    async fn answer<R, W>(&self, read_half: R, write_half: W) -> Result<(), WireError>
    where
        R: AsyncRead + Unpin + Send,
        W: PieceOut,
    {
        let mut recent = RecentSlices::default();
        let result = self
            .answer_until_end(read_half, write_half, &mut recent)
            .await;
        recent.report(self.provider.as_ref());
        result
    }

    async fn answer_until_end<R, W>(
        &self,
        read_half: R,
        mut write_half: W,
        recent: &mut RecentSlices,
    ) -> Result<(), WireError>
    where
        R: AsyncRead + Unpin + Send,
        W: PieceOut,
    {
        let mut reader = BufReader::new(read_half);
        let mut scratch = Vec::new();
        let mut out = Vec::with_capacity(64);
        let mut wait = self.first_request_timeout;
        let mut granted: std::collections::HashSet<TaskId> = Default::default();
        loop {
            let read = tokio::time::timeout(wait, read_message(&mut reader, &mut scratch)).await;
            wait = self.idle_timeout;
            let Ok(read) = read else {
                self.stats.timed_out.fetch_add(1, Ordering::Relaxed);
                debug!("closing a connection that sent no request in time");
                return Ok(());
            };
            let msg = match read {
                Ok(Some(m)) => m,
                Ok(None) => return Ok(()),
                Err(e @ (WireError::Io(_) | WireError::Truncated)) => return Err(e),
                Err(e) => {
                    self.stats.protocol_errors.fetch_add(1, Ordering::Relaxed);
                    warn!(error = %e, "closing connection after a malformed frame");
                    out.clear();
                    Message::Error {
                        message: e.to_string(),
                    }
                    .encode(&mut out);
                    let _ = self.send_frames(&mut write_half, &out).await;
                    return Err(e);
                }
            };
            out.clear();
            let refused = |task: &TaskId| {
                // The connection's own set first: a granted task needs no store lookup.
                let no = !granted.contains(task) && self.provider.is_private(task);
                if no {
                    self.stats.ungranted.fetch_add(1, Ordering::Relaxed);
                    debug!(task = %task, "private task asked without a grant; answered as unknown");
                }
                no
            };
            match msg {
                Message::Grant { task, grant } => {
                    if granted.len() < MAX_GRANTS_PER_CONNECTION
                        && self.provider.admits(&task, self.peer_ip, &grant)
                    {
                        granted.insert(task);
                    }
                }
                Message::BitfieldRequest { task } if refused(&task) => {
                    Message::Bitfield {
                        task,
                        count: 0,
                        bits: Vec::new(),
                    }
                    .encode(&mut out);
                    self.send_frames(&mut write_half, &out).await?;
                }
                Message::SliceRequest { task, slice } if refused(&task) => {
                    Message::SliceMissing { task, slice }.encode(&mut out);
                    self.send_frames(&mut write_half, &out).await?;
                }
                Message::BitfieldRequest { task } => {
                    let field = self.provider.bitfield(&task).unwrap_or_default();
                    Message::Bitfield {
                        task,
                        count: field.len(),
                        bits: field.as_bytes().to_vec(),
                    }
                    .encode(&mut out);
                    self.send_frames(&mut write_half, &out).await?;
                }
                Message::SliceRequest { task, slice } => {
                    let _place = match &self.pieces {
                        Some(s) => Some(s.clone().acquire_owned().await.map_err(|_| {
                            WireError::Io(io::Error::other("upload server closing"))
                        })?),
                        None => None,
                    };
                    let handed_out = self.provider.slice(&task, slice);
                    let was_handed_out = handed_out.is_some();
                    let found = match handed_out {
                        Some(mut s) if s.hashes.is_none() => {
                            let provider = self.provider.clone();
                            let piece = s.piece;
                            s.hashes = tokio::task::spawn_blocking(move || {
                                provider.slice_hashes(&task, piece)
                            })
                            .await
                            .map_err(|_| {
                                WireError::Io(io::Error::other("upload server closing"))
                            })?;
                            s.hashes.is_some().then_some(s)
                        }
                        other => other,
                    };
                    let Some((piece, hashes)) = found.and_then(|s| {
                        let h = s.hashes.clone()?;
                        Some((s, h))
                    }) else {
                        if was_handed_out {
                            // Handed out, but its hashes could not be had: not sent.
                            self.provider.not_delivered(&task, &[slice]);
                        }
                        Message::SliceMissing { task, slice }.encode(&mut out);
                        self.send_frames(&mut write_half, &out).await?;
                        continue;
                    };
                    Message::SliceHashes {
                        piece: piece.piece,
                        hashes: hashes.to_vec(),
                    }
                    .encode(&mut out);
                    Message::Slice(SliceHeader {
                        slice,
                        offset: piece.offset,
                        length: piece.length,
                    })
                    .encode(&mut out);
                    let sent = match self.within_write_timeout(write_half.write_all(&out)).await {
                        Ok(()) => write_half.send_piece(self, &piece).await,
                        Err(e) => Err(e),
                    };
                    if let Err(e) = sent {
                        self.provider.not_delivered(&task, &[slice]);
                        return Err(e.into());
                    }
                    self.stats.slices.fetch_add(1, Ordering::Relaxed);
                    self.provider.served(&task, u64::from(piece.length));
                    recent.push(task, slice);
                }
                other => {
                    self.stats.protocol_errors.fetch_add(1, Ordering::Relaxed);
                    out.clear();
                    Message::Error {
                        message: format!("unexpected request {other:?}"),
                    }
                    .encode(&mut out);
                    let _ = self.send_frames(&mut write_half, &out).await;
                    return Ok(());
                }
            }
        }
    }

    /// Sends `piece` by reading it into a buffer, one rate-limited chunk at a time (for
    /// streams that must see the bytes, such as TLS).
    /// `write`, or a timed-out error (counted) when the peer takes no bytes for
    /// `write_timeout`.
    async fn within_write_timeout<T>(
        &self,
        write: impl Future<Output = io::Result<T>>,
    ) -> io::Result<T> {
        match tokio::time::timeout(self.write_timeout, write).await {
            Ok(r) => r,
            Err(_) => {
                self.stats.timed_out.fetch_add(1, Ordering::Relaxed);
                debug!("closing a connection whose peer took no bytes in time");
                Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("the peer took no bytes for {:?}", self.write_timeout),
                ))
            }
        }
    }

    /// Writes encoded frames and flushes them, within the write timeout.
    async fn send_frames<W: AsyncWrite + Unpin>(
        &self,
        out: &mut W,
        frames: &[u8],
    ) -> io::Result<()> {
        self.within_write_timeout(out.write_all(frames)).await?;
        self.within_write_timeout(out.flush()).await
    }

    async fn send_buffered<W: AsyncWrite + Unpin>(
        &self,
        out: &mut W,
        piece: &ServedSlice,
    ) -> io::Result<()> {
        let mut offset = piece.offset;
        let end = piece.offset + u64::from(piece.length);
        let mut buf = Vec::new();
        while offset < end {
            let chunk = (end - offset).min(SEND_CHUNK);
            self.limiter.acquire(chunk).await;
            let file = piece.file.clone();
            buf = tokio::task::spawn_blocking(move || {
                buf.resize(chunk as usize, 0);
                file.read_exact_at(&mut buf, offset).map(|()| buf)
            })
            .await
            .map_err(io::Error::other)??;
            self.within_write_timeout(out.write_all(&buf)).await?;
            offset += chunk;
            self.stats.bytes.fetch_add(chunk, Ordering::Relaxed);
        }
        self.within_write_timeout(out.flush()).await
    }

    /// Sends `piece` from its file with `sendfile`, one rate-limited chunk at a time.
    async fn send_file_range(&self, sock: &TcpStream, piece: &ServedSlice) -> io::Result<()> {
        let mut offset = piece.offset as i64;
        let end = piece.offset + u64::from(piece.length);
        while (offset as u64) < end {
            let chunk = (end - offset as u64).min(SEND_CHUNK);
            self.limiter.acquire(chunk).await;
            let chunk_end = offset as u64 + chunk;
            while (offset as u64) < chunk_end {
                self.within_write_timeout(sock.writable()).await?;
                let want = (chunk_end - offset as u64) as usize;
                let sent = sock.try_io(Interest::WRITABLE, || {
                    nix::sys::sendfile::sendfile64(
                        sock.as_fd(),
                        piece.file.as_fd(),
                        Some(&mut offset),
                        want,
                    )
                    .map_err(io::Error::from)
                });
                match sent {
                    Ok(0) => {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "content file shorter than the slice",
                        ))
                    }
                    Ok(n) => {
                        self.stats.bytes.fetch_add(n as u64, Ordering::Relaxed);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }
}
