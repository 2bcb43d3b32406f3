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

use std::collections::VecDeque;
use std::ffi::OsString;
use std::fs::File;
use std::future::Future;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt as _;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pollen_core::grant::Grant;
use pollen_core::{Bitfield, RateLimiter, SliceHash, TaskId};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufReader, Interest, WriteHalf};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info_span, warn, Instrument};

use crate::codec::{read_message, Message, SliceHeader, WireError};

/// Bytes handed to `sendfile` per rate-limiter grant.
const SEND_CHUNK: u64 = 1 << 20;

/// Default time allowed for a new connection's first complete request.
pub const FIRST_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Default time a connection may stay silent between requests.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(120);

/// Default longest a connection's peer may take no bytes while the server has some to send
/// (a reader that never reads would otherwise hold its slot, and a slice place, forever).
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(60);

/// Slices sent this shortly before their connection ended are reported as maybe not
/// delivered: a child passes a slice on within about a second (it refreshes its parents'
/// bitfields every 300 ms), so one that died sooner after may have taken the only copy.
pub const RECENT: Duration = Duration::from_secs(1);

/// A slice the provider can serve, with everything needed to send it.
pub struct ServedSlice {
    /// The task's content file.
    pub file: Arc<File>,
    /// Offset of the slice in the file.
    pub offset: u64,
    /// Slice length.
    pub length: u32,
    /// The slice's piece.
    pub piece: u32,
    /// The hashes of every slice of that piece; `None` when they must first be computed
    /// (the server then calls [`PieceProvider::slice_hashes`] off the async runtime).
    pub hashes: Option<Arc<[SliceHash]>>,
}

/// What the upload server serves from: the daemon's piece store.
pub trait PieceProvider: Send + Sync + 'static {
    /// The slices held for a task, or `None` if the task is unknown.
    fn bitfield(&self, task: &TaskId) -> Option<Bitfield>;
    /// A verified slice (numbered across the task), or `None` if it is not held or not
    /// offered now. Must not block.
    fn slice(&self, task: &TaskId, slice: u32) -> Option<ServedSlice>;
    /// The slice hashes of a held piece, computed from its bytes if need be. May block: the
    /// server calls it off the async runtime.
    fn slice_hashes(&self, _task: &TaskId, _piece: u32) -> Option<Arc<[SliceHash]>> {
        None
    }
    /// Whether `task` is private: served only on a connection that showed a grant for it
    /// (see `pollen_core::grant`).
    fn is_private(&self, _task: &TaskId) -> bool {
        false
    }
    /// Whether `grant` lets the host connected from `peer` fetch `task`.
    fn admits(&self, _task: &TaskId, _peer: std::net::IpAddr, _grant: &Grant) -> bool {
        false
    }
    /// Called when a slice was sent in full (for last-access and accounting).
    fn served(&self, _task: &TaskId, _bytes: u64) {}
    /// Slices that [`slice`](Self::slice) handed out but that may not have reached a live
    /// peer: sending failed, or the connection ended within [`RECENT`] of sending them.
    fn not_delivered(&self, _task: &TaskId, _slices: &[u32]) {}
}

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

/// Counters of one upload server.
#[derive(Debug, Default)]
pub struct UploadStats {
    /// Slice bytes sent.
    pub bytes: AtomicU64,
    /// Slices sent in full.
    pub slices: AtomicU64,
    /// Connections open now.
    pub connections: AtomicUsize,
    /// Connections dropped for protocol errors.
    pub protocol_errors: AtomicU64,
    /// Connections closed for sending no request in time.
    pub timed_out: AtomicU64,
    /// Requests for a private task on a connection that showed no valid grant for it.
    pub ungranted: AtomicU64,
}

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
    permits: Arc<Semaphore>,
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
            permits: Arc::new(Semaphore::new(max_connections.max(1))),
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

    /// Accepts connections until `shutdown` fires.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut conns = tokio::task::JoinSet::new();
        let mut congestion_refused = false;
        while let Some((permit, stream, peer)) =
            pollen_core::accept::next_connection(&self.listener, &self.permits, &shutdown).await
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

/// Most private tasks one connection may be granted.
const MAX_GRANTS_PER_CONNECTION: usize = 64;

struct Connection {
    /// Where the connection comes from: what a grant must name.
    peer_ip: std::net::IpAddr,
    provider: Arc<dyn PieceProvider>,
    limiter: RateLimiter,
    stats: Arc<UploadStats>,
    pieces: Option<Arc<Semaphore>>,
    first_request_timeout: Duration,
    idle_timeout: Duration,
    write_timeout: Duration,
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
    async fn serve(&self, stream: TcpStream, tls: Option<TlsAcceptor>) -> Result<(), WireError> {
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
