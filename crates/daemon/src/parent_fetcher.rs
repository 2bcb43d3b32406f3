//! Downloads pieces from one parent over one data-plane connection.
//!
//! Keeps up to `depth` piece requests in flight, choosing pieces the parent has and nobody
//! else is fetching. Every piece is streamed to disk while hashed and checked against the
//! scheduler's digest before it is committed; a bad piece ends the fetcher with
//! [`FetchError::BadPiece`] so the conductor blocklists the parent. When the parent has nothing
//! more for us for a while, the fetcher ends quietly and the conductor asks for other parents.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pollen_core::PieceDigest;
use pollen_storage::{PieceWriter, Store, WRITE_CHUNK};
use pollen_wire::{ClientTls, PieceClient, PieceResponse, WireError};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::conductor::Report;
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
    /// The parent sent a piece whose digest is wrong.
    #[error("piece {0} failed verification")]
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
    pub store: Arc<Store>,
    pub stats: Arc<DaemonStats>,
    /// The task's traffic control: limiters, the cap on pieces in flight, prefetch yield.
    pub pace: Pace,
    pub reports: mpsc::Sender<Report>,
    pub depth: usize,
    pub connect_timeout: Duration,
    /// TLS towards the parent, when mutual TLS is on.
    pub tls: Option<ClientTls>,
    /// A parent that sends nothing for this long is given up.
    pub stall_timeout: Duration,
}

enum Expect {
    Bitfield,
    /// A piece, its digest, when it was requested, and its place among the host's pieces
    /// in flight.
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

    /// Commits a verified piece in the background, so the connection moves on to the next
    /// piece while the metadata is made durable; the claim ends when the commit does.
    fn commit(
        &self,
        n: u32,
        digest: PieceDigest,
        len: u64,
        cost: Duration,
        commits: &mut JoinSet<Result<(), DownloadError>>,
    ) {
        let (store, claims, stats, reports, parent) = (
            self.store.clone(),
            self.claims.clone(),
            self.stats.clone(),
            self.reports.clone(),
            self.parent_id.clone(),
        );
        commits.spawn(async move {
            let committed = store.commit_piece(&claims.entry, n, digest).await;
            claims.release(n, &parent);
            committed?;
            DaemonStats::add(&stats.p2p_download_bytes, len);
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
        let mut client =
            PieceClient::connect_with(self.addr, self.connect_timeout, self.tls.as_ref()).await?;
        let task = self.claims.entry.id;
        let layout = self.claims.entry.layout();
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
                    match tokio::time::timeout(SLOT_WAIT, self.pace.piece_slot()).await {
                        Ok(s) => s,
                        Err(_) => break,
                    }
                } else {
                    match self.pace.try_piece_slot() {
                        Some(s) => s,
                        None => break,
                    }
                };
                let Some((n, d)) = self.claims.claim_from(&self.parent_id, self.seed) else {
                    break;
                };
                claimed.push(n);
                client.request_piece(task, n).await?;
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
                    if b.len() == layout.piece_count() {
                        self.claims.set_parent_bitfield(&self.parent_id, b);
                    }
                }
                (PieceResponse::Missing(m), Expect::Piece(n, _, _, _)) if m == n => {
                    self.claims.refused(&self.parent_id, n);
                    self.release(claimed, n);
                }
                (PieceResponse::Piece(h), Expect::Piece(n, expected, asked, _slot)) => {
                    if h.number != n
                        || h.offset != layout.offset(n)
                        || u64::from(h.length) != layout.length(n)
                    {
                        return Err(FetchError::Protocol(format!(
                            "asked for piece {n}, got piece {} at {} of {} bytes",
                            h.number, h.offset, h.length
                        )));
                    }
                    idle = 0;
                    let mut writer =
                        PieceWriter::new(self.claims.entry.content().clone(), h.offset);
                    let mut left = h.length as usize;
                    while left > 0 {
                        let take = left.min(WRITE_CHUNK);
                        buf.resize(take, 0);
                        self.pace.take(take as u64, false).await;
                        self.within(client.read_payload(&mut buf)).await??;
                        buf = writer
                            .write_owned(std::mem::take(&mut buf))
                            .await
                            .map_err(|e| FetchError::Local(e.into()))?;
                        left -= take;
                    }
                    let digest = writer
                        .finish()
                        .await
                        .map_err(|e| FetchError::Local(e.into()))?;
                    if digest != expected {
                        DaemonStats::add(&self.stats.pieces_rejected, 1);
                        return Err(FetchError::BadPiece(n));
                    }
                    self.claims.record_piece_time(asked.elapsed());
                    if !self.claims.begin_commit(n) {
                        // The endgame twin finished first; nothing to commit or report.
                        self.release(claimed, n);
                        continue;
                    }
                    claimed.retain(|c| *c != n);
                    self.commit(n, digest, u64::from(h.length), asked.elapsed(), commits);
                }
                (other, _) => {
                    return Err(FetchError::Protocol(format!("unexpected answer {other:?}")))
                }
            }
        }
    }

    /// Runs a read from the parent, failing it when nothing arrives within the stall timeout.
    async fn within<T>(&self, read: impl std::future::Future<Output = T>) -> Result<T, FetchError> {
        tokio::time::timeout(self.stall_timeout, read)
            .await
            .map_err(|_| FetchError::Stalled(self.stall_timeout))
    }

    fn release(&self, claimed: &mut Vec<u32>, n: u32) {
        claimed.retain(|c| *c != n);
        self.claims.release(n, &self.parent_id);
    }
}
