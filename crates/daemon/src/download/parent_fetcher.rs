//! Downloads slices from one parent over one data-plane connection.
//!
//! Keeps up to `depth` slice requests in flight, choosing slices the parent has and nobody
//! else is fetching. The slice hashes that come with a slice must add up to the scheduler's
//! digest of its piece, and every slice is read whole into memory and checked against its hash
//! before any of it is written (the check and write of one slice overlap the read of the
//! next); the fetcher that verifies a piece's last slice commits the piece. A bad slice ends
//! the fetcher with [`FetchError::BadSlice`] (the hashes as evidence) so the conductor
//! blocklists the parent and reports it to the scheduler. When the parent has nothing more for us for a
//! while, the fetcher ends quietly and the conductor asks for other parents.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pollen_core::slice::piece_root;
use pollen_core::{PieceDigest, SliceHash};
use pollen_storage::{SliceMark, SliceSink, Store, VerifiedPut, WRITE_CHUNK};
use pollen_wire::{ClientTls, PieceClient, PieceResponse, WireError};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::config::DaemonConfig;
use crate::download::piece_claims::PieceClaims;
use crate::download::report::Report;
use crate::error::DownloadError;
use crate::stats::DaemonStats;
use crate::traffic::{Pace, PieceSlot};

/// Polls of an idle parent's bitfield before giving up on it (about 100 ms apart).
const IDLE_POLLS: u32 = 30;
/// Longest wait for a place among the pieces in flight before polling the parent again.
const SLOT_WAIT: Duration = Duration::from_secs(30);
/// How often a busy parent's bitfield is refreshed.
const BITFIELD_REFRESH: Duration = Duration::from_millis(300);

/// Why a parent fetcher stopped.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FetchError {
    /// The connection or protocol failed: the parent is at fault or gone.
    #[error("parent connection failed")]
    Wire(#[from] WireError),
    /// The parent sent slice hashes that do not add up to the piece's published digest.
    #[error("the slice hashes sent with slice {0} do not match its piece's published digest")]
    BadPiece(u32),
    /// The parent sent a slice whose bytes do not match its hash; nothing of it was written.
    #[error("slice {slice} failed verification: its hash is {got}, the published one {expected}")]
    BadSlice {
        /// The slice, numbered across the task.
        slice: u32,
        /// The hash it should have (hex).
        expected: String,
        /// The hash its bytes have (hex).
        got: String,
    },
    /// The parent answered with something we did not ask for.
    #[error("parent protocol violation: {0}")]
    Protocol(String),
    /// The parent sent nothing for too long (a stopped process, a black-holed link).
    #[error("parent sent nothing for {0:?}")]
    Stalled(Duration),
    /// Our side failed (disk full, store closed): not the parent's fault.
    #[error(transparent)]
    Local(DownloadError),
}

pub(crate) struct ParentJob {
    pub parent_id: String,
    pub seed: bool,
    pub addr: SocketAddr,
    pub claims: Arc<PieceClaims>,
    pub ctx: FetchContext,
    pub depth: usize,
}

/// What every fetcher of one download shares.
#[derive(Clone)]
pub(crate) struct FetchContext {
    /// The daemon's settings (connect and stall timeouts among them).
    pub cfg: Arc<DaemonConfig>,
    pub store: Arc<Store>,
    pub stats: Arc<DaemonStats>,
    /// The task's traffic control: limiters, the cap on pieces in flight, prefetch yield.
    pub pace: Pace,
    pub reports: mpsc::Sender<Report>,
    /// TLS towards parents, when mutual TLS is on.
    pub tls: Option<ClientTls>,
    /// For a private task, the scheduler's latest grant: shown to each parent on connecting
    /// (see `pollen_core::grant`).
    pub grant: Arc<std::sync::Mutex<Option<pollen_core::grant::Grant>>>,
}

/// A slice read whole and handed to the sink: what acting on its outcome needs.
pub(crate) struct Received {
    slice: u32,
    piece: u32,
    /// The piece's published digest.
    digest: PieceDigest,
    /// The slice's hash, from the list checked against that digest.
    hash: SliceHash,
    /// From request to the last byte read.
    took: Duration,
    /// Its place among the host's pieces in flight, held until it is written.
    _slot: PieceSlot,
}

enum Expect {
    Bitfield,
    /// A slice, its piece's digest, when it was requested, and its place among the host's
    /// pieces in flight.
    Piece(u32, PieceDigest, Instant, PieceSlot),
}

impl ParentJob {
    pub async fn run(self) -> Result<(), FetchError> {
        let mut claimed = Vec::new();
        let mut commits = JoinSet::new();
        let stats = self.ctx.stats.clone();
        let counted = self.claims.clone();
        let mut sink = SliceSink::new(self.claims.entry.clone()).on_stored(Arc::new(move |n| {
            DaemonStats::add(&stats.p2p_download_bytes, n);
            counted
                .from_peers
                .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        }));
        let mut result = self.fetch(&mut claimed, &mut commits, &mut sink).await;
        // The last slice read is acted on whatever ended the connection: it may be the one
        // that completes a piece.
        let last = self
            .settle_sink(&mut sink, &mut claimed, &mut commits)
            .await;
        // A forged last slice is the verdict on this parent, whatever else ended it.
        match last {
            Err(e @ FetchError::BadSlice { .. }) => result = Err(e),
            Err(e) if result.is_ok() => result = Err(e),
            _ => {}
        }
        for n in claimed {
            self.claims.release(n, &self.parent_id);
        }
        while let Some(done) = commits.join_next().await {
            match done {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(FetchError::Local(e)),
                Err(_) => return Err(FetchError::Local(DownloadError::ShuttingDown)),
            }
        }
        result
    }

    /// Commits a piece whose every slice is verified in the background, so the connection
    /// moves on while the metadata is made durable.
    fn commit(
        &self,
        n: u32,
        digest: PieceDigest,
        cost: Duration,
        commits: &mut JoinSet<Result<(), DownloadError>>,
    ) {
        let (store, claims, stats, reports, parent) = (
            self.ctx.store.clone(),
            self.claims.clone(),
            self.ctx.stats.clone(),
            self.ctx.reports.clone(),
            self.parent_id.clone(),
        );
        commits.spawn(async move {
            store.commit_piece(&claims.entry, n, digest).await?;
            claims.changed.notify_waiters();
            DaemonStats::add(&stats.pieces_from_peers, 1);
            let _ = reports
                .send(Report::Piece {
                    number: n,
                    digest,
                    parent: Some((parent, cost.as_millis().min(u32::MAX as u128) as u32)),
                })
                .await;
            Ok(())
        });
    }

    /// Acts on a slice once the sink checked and wrote it: a forged one ends the fetcher
    /// with the evidence; a verified one is released, counted, and commits its piece when
    /// it was the piece's last slice.
    fn settled(
        &self,
        r: Received,
        put: VerifiedPut,
        claimed: &mut Vec<u32>,
        commits: &mut JoinSet<Result<(), DownloadError>>,
    ) -> Result<(), FetchError> {
        let mark = match put {
            VerifiedPut::Mismatch { got } => {
                DaemonStats::add(&self.ctx.stats.pieces_rejected, 1);
                return Err(FetchError::BadSlice {
                    slice: r.slice,
                    expected: hex::encode(r.hash),
                    got: hex::encode(got),
                });
            }
            VerifiedPut::Duplicate => SliceMark::Already,
            VerifiedPut::Stored(mark) => mark,
        };
        self.claims.record_piece_time(r.took);
        // Its bytes were counted as it was stored (see `SliceSink::on_stored`).
        if mark == SliceMark::Already {
            self.claims.count_duplicate();
        }
        // Verified: the slice is served from now on and nobody claims it again.
        self.release(claimed, r.slice);
        if mark == SliceMark::PieceDone && self.claims.begin_commit(r.piece) {
            // A piece's time from this parent, as the scheduler compares them.
            let cost = r.took * self.claims.entry.slices().slices_of(r.piece);
            self.commit(r.piece, r.digest, cost, commits);
        }
        Ok(())
    }

    /// Waits for the slice being written, if any, and acts on it; true if there was one.
    async fn settle_sink(
        &self,
        sink: &mut SliceSink<Received>,
        claimed: &mut Vec<u32>,
        commits: &mut JoinSet<Result<(), DownloadError>>,
    ) -> Result<bool, FetchError> {
        match sink
            .settle()
            .await
            .map_err(|e| FetchError::Local(e.into()))?
        {
            Some((r, put)) => self.settled(r, put, claimed, commits).map(|()| true),
            None => Ok(false),
        }
    }

    async fn fetch(
        &self,
        claimed: &mut Vec<u32>,
        commits: &mut JoinSet<Result<(), DownloadError>>,
        sink: &mut SliceSink<Received>,
    ) -> Result<(), FetchError> {
        let mut client = PieceClient::connect_with(
            self.addr,
            self.ctx.cfg.connect_timeout,
            self.ctx.tls.as_ref(),
        )
        .await?;
        let task = self.claims.entry.id;
        let grant = *self.ctx.grant.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(g) = grant {
            client.send_grant(task, g).await?;
        }
        let layout = self.claims.entry.layout();
        let slices = self.claims.entry.slices();
        let mut inflight: VecDeque<Expect> = VecDeque::new();
        let mut idle = 0u32;
        let mut last_bitfield = Instant::now();
        client.request_bitfield(task).await?;
        inflight.push_back(Expect::Bitfield);
        loop {
            // Registered before looking for work, so a change (a digest published, a piece
            // released) that lands while this pass finds nothing still wakes the wait below.
            let changed = self.claims.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if last_bitfield.elapsed() >= BITFIELD_REFRESH
                && !inflight.iter().any(|e| matches!(e, Expect::Bitfield))
            {
                client.request_bitfield(task).await?;
                inflight.push_back(Expect::Bitfield);
                last_bitfield = Instant::now();
            }
            let pieces_inflight = inflight
                .iter()
                .filter(|e| matches!(e, Expect::Piece(..)))
                .count();
            for asked in pieces_inflight..self.depth {
                // With no piece in flight this fetcher may wait for a place (it holds none);
                // otherwise it takes one only if free, and reads what it asked for first.
                let slot = if asked == 0 {
                    // The slice being written holds a place: settle it before waiting for one.
                    let free = match self.ctx.pace.try_piece_slot() {
                        Some(s) => Some(s),
                        None => {
                            self.settle_sink(sink, claimed, commits).await?;
                            None
                        }
                    };
                    // A long wait (prefetch behind a foreground download) is cut so the
                    // connection polls the parent's bitfield and is not closed as idle.
                    let wait = tokio::time::timeout(SLOT_WAIT, self.ctx.pace.piece_slot());
                    match free {
                        Some(s) => s,
                        None => match wait.await {
                            Ok(s) => s,
                            Err(_) => break,
                        },
                    }
                } else {
                    match self.ctx.pace.try_piece_slot() {
                        Some(s) => s,
                        None => break,
                    }
                };
                let Some((n, d)) = self.claims.claim_from(&self.parent_id, self.seed) else {
                    break;
                };
                claimed.push(n);
                client.request_slice(task, n).await?;
                inflight.push_back(Expect::Piece(n, d, Instant::now(), slot));
            }
            if inflight.is_empty() {
                // Nothing is coming: act on the slice being written before waiting.
                if self.settle_sink(sink, claimed, commits).await? {
                    continue;
                }
                // Nothing to ask this parent for now: wait for a change here or poll its
                // bitfield again shortly; give up on a parent that stays idle.
                if self.claims.all_present() {
                    return Ok(());
                }
                idle += 1;
                if idle > IDLE_POLLS {
                    return Ok(());
                }
                tokio::select! {
                    _ = changed => {}
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                }
                client.request_bitfield(task).await?;
                inflight.push_back(Expect::Bitfield);
                last_bitfield = Instant::now();
                continue;
            }
            let Some(expect) = inflight.pop_front() else {
                continue;
            };
            let response = self.within(client.next_response()).await??;
            match (response, expect) {
                (PieceResponse::Bitfield(b), Expect::Bitfield) => {
                    if b.len() == slices.count() {
                        self.claims.set_parent_bitfield(&self.parent_id, b);
                    }
                }
                (PieceResponse::Missing(m), Expect::Piece(n, _, _, _)) if m == n => {
                    self.claims.refused(&self.parent_id, n);
                    self.release(claimed, n);
                }
                (
                    PieceResponse::Slice { header: h, hashes },
                    Expect::Piece(n, expected, asked, slot),
                ) => {
                    let spot = slices.spot(n).filter(|s| {
                        h.slice == n && h.offset == s.offset && u64::from(h.length) == s.length
                    });
                    let Some(spot) = spot else {
                        return Err(FetchError::Protocol(format!(
                            "asked for slice {n}, got slice {} at {} of {} bytes",
                            h.slice, h.offset, h.length
                        )));
                    };
                    let piece_len = layout.length(spot.piece);
                    let hashes = self.checked_hashes(n, spot.piece, piece_len, hashes, expected)?;
                    idle = 0;
                    // The whole slice is read into memory and verified before any of it is
                    // written (pollen_storage::slice_write).
                    let mut buf = sink.buffer(h.length as usize);
                    for part in buf.chunks_mut(WRITE_CHUNK) {
                        self.ctx.pace.take(part.len() as u64, false).await;
                        self.within(client.read_payload(part)).await??;
                    }
                    let received = Received {
                        slice: n,
                        piece: spot.piece,
                        digest: expected,
                        hash: hashes[spot.index as usize],
                        took: asked.elapsed(),
                        _slot: slot,
                    };
                    let hash = received.hash;
                    let before = sink
                        .submit(n, buf, hash, received)
                        .await
                        .map_err(|e| FetchError::Local(e.into()))?;
                    if let Some((r, put)) = before {
                        self.settled(r, put, claimed, commits)?;
                    }
                }
                (other, _) => {
                    return Err(FetchError::Protocol(format!("unexpected answer {other:?}")))
                }
            }
        }
    }

    /// The slice hashes of a piece, as the parent sent them, once they add up to the piece's
    /// published digest (a list seen before for this piece is not checked again).
    fn checked_hashes(
        &self,
        n: u32,
        piece: u32,
        piece_len: u64,
        hashes: Vec<SliceHash>,
        expected: PieceDigest,
    ) -> Result<Arc<[SliceHash]>, FetchError> {
        if let Some(known) = self.claims.entry.slice_hashes(piece) {
            if *known == *hashes {
                return Ok(known);
            }
        }
        if piece_root(&hashes, piece_len) != Some(expected) {
            DaemonStats::add(&self.ctx.stats.pieces_rejected, 1);
            return Err(FetchError::BadPiece(n));
        }
        let hashes: Arc<[SliceHash]> = hashes.into();
        self.claims.entry.set_slice_hashes(piece, hashes.clone());
        Ok(hashes)
    }

    /// Runs a read from the parent, failing it when nothing arrives within the stall timeout.
    async fn within<T>(&self, read: impl std::future::Future<Output = T>) -> Result<T, FetchError> {
        let stall = self.ctx.cfg.parent_stall_timeout;
        tokio::time::timeout(stall, read)
            .await
            .map_err(|_| FetchError::Stalled(stall))
    }

    fn release(&self, claimed: &mut Vec<u32>, n: u32) {
        claimed.retain(|c| *c != n);
        self.claims.release(n, &self.parent_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_broken_connection_keeps_the_wire_error_and_its_io_cause() {
        let e = FetchError::from(WireError::Io(std::io::Error::from(
            std::io::ErrorKind::ConnectionReset,
        )));
        let wire = std::error::Error::source(&e)
            .and_then(|s| s.downcast_ref::<WireError>())
            .expect("the wire error as the source");
        assert!(
            matches!(wire, WireError::Io(io) if io.kind() == std::io::ErrorKind::ConnectionReset),
            "{wire:?}"
        );
    }
}
