//! Downloads slices from one parent over one data-plane connection.
//!
//! Keeps up to `depth` slice requests in flight, choosing slices the parent has and nobody
//! else is fetching. The slice hashes that come with a slice must add up to the scheduler's
//! digest of its piece, and every slice is streamed to disk while hashed and checked against
//! its hash before it counts (and is served to others); the fetcher that verifies a piece's
//! last slice commits the piece. A bad slice ends the fetcher with [`FetchError::BadPiece`]
//! so the conductor blocklists the parent. When the parent has nothing more for us for a
//! while, the fetcher ends quietly and the conductor asks for other parents.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pollen_core::slice::piece_root;
use pollen_core::{PieceDigest, SliceHash};
use pollen_storage::{PieceWriter, SliceMark, Store, WRITE_CHUNK};
use pollen_wire::{ClientTls, PieceClient, PieceResponse, WireError};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::conductor::Report;
use crate::config::DaemonConfig;
use crate::error::DownloadError;
use crate::piece_claims::PieceClaims;
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
    #[error("parent connection failed: {0}")]
    Wire(#[from] WireError),
    /// The parent sent a slice (or slice hashes) that do not match the piece's digest.
    #[error("slice {0} failed verification")]
    BadPiece(u32),
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
        let result = self.fetch(&mut claimed, &mut commits).await;
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

    async fn fetch(
        &self,
        claimed: &mut Vec<u32>,
        commits: &mut JoinSet<Result<(), DownloadError>>,
    ) -> Result<(), FetchError> {
        let mut client = PieceClient::connect_with(
            self.addr,
            self.ctx.cfg.connect_timeout,
            self.ctx.tls.as_ref(),
        )
        .await?;
        let task = self.claims.entry.id;
        let layout = self.claims.entry.layout();
        let slices = self.claims.entry.slices();
        let mut inflight: VecDeque<Expect> = VecDeque::new();
        let mut idle = 0u32;
        let mut last_bitfield = Instant::now();
        let mut buf = Vec::with_capacity(WRITE_CHUNK);
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
                    // A long wait (prefetch behind a foreground download) is cut so the
                    // connection polls the parent's bitfield and is not closed as idle.
                    match tokio::time::timeout(SLOT_WAIT, self.ctx.pace.piece_slot()).await {
                        Ok(s) => s,
                        Err(_) => break,
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
                    Expect::Piece(n, expected, asked, _slot),
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
                    let mut writer =
                        PieceWriter::slice(self.claims.entry.content().clone(), spot, piece_len);
                    let mut left = h.length as usize;
                    while left > 0 {
                        let take = left.min(WRITE_CHUNK);
                        buf.resize(take, 0);
                        self.ctx.pace.take(take as u64, false).await;
                        self.within(client.read_payload(&mut buf)).await??;
                        buf = writer
                            .write_owned(std::mem::take(&mut buf))
                            .await
                            .map_err(|e| FetchError::Local(e.into()))?;
                        left -= take;
                    }
                    let got = writer
                        .finish_slices()
                        .await
                        .map_err(|e| FetchError::Local(e.into()))?;
                    if got.as_slice() != [hashes[spot.index as usize]] {
                        DaemonStats::add(&self.ctx.stats.pieces_rejected, 1);
                        return Err(FetchError::BadPiece(n));
                    }
                    self.claims.record_piece_time(asked.elapsed());
                    let mark = self.claims.entry.mark_slice(n);
                    if mark == SliceMark::Already {
                        self.claims.count_duplicate();
                    } else {
                        DaemonStats::add(&self.ctx.stats.p2p_download_bytes, u64::from(h.length));
                    }
                    // Verified: the slice is served from now on and nobody claims it again.
                    self.release(claimed, n);
                    if mark == SliceMark::PieceDone && self.claims.begin_commit(spot.piece) {
                        // A piece's time from this parent, as the scheduler compares them.
                        let cost = asked.elapsed() * slices.slices_of(spot.piece);
                        self.commit(spot.piece, expected, cost, commits);
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
