//! Back-to-source: reads a task from its origin, cuts it into pieces, hashes and commits them.
//!
//! One streaming GET from the first missing piece onwards (a Range request when resuming), so
//! a fresh download costs the origin one request, like `curl`. Pieces another fetcher holds or
//! is fetching are read past, not written, and so are slices verified here already (see
//! `pollen_storage::PieceWriter`). The BLAKE3 digest of each piece read here is what
//! the scheduler publishes to every other peer. A connection that breaks early is retried from
//! the first missing piece a few times before the download fails.

use std::sync::Arc;
use std::time::Duration;

use pollen_core::{PieceLayout, TaskId, TaskKey};
use pollen_source::{HttpSource, OriginPolicy, SourceError};
use pollen_storage::{PieceWriter, Store, TaskMeta};
use rand::RngExt as _;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tracing::{info, warn};

use crate::config::DaemonConfig;
use crate::download::piece_claims::PieceClaims;
use crate::download::report::Report;
use crate::error::DownloadError;
use crate::stats::DaemonStats;
use crate::traffic::{Pace, PieceSlot};

/// Attempts after a broken transfer before giving up.
const RETRIES: u32 = 3;

pub(crate) struct OriginJob {
    pub task: TaskId,
    /// What was asked for (the URL among it).
    pub key: TaskKey,
    pub headers: Vec<(String, String)>,
    pub claims: Option<Arc<PieceClaims>>,
    pub source: HttpSource,
    pub store: Arc<Store>,
    pub stats: Arc<DaemonStats>,
    /// The task's traffic control: limiters, the cap on pieces in flight, prefetch yield.
    pub pace: Pace,
    pub reports: mpsc::Sender<Report>,
    /// The daemon's settings, for the claims this job makes when it is the first to learn
    /// the content length.
    pub cfg: Arc<DaemonConfig>,
    /// How strict the origin guard is for this task.
    pub policy: OriginPolicy,
}

/// The pause before retry `attempt` (1-based): 300 ms doubling each time, plus up to half
/// again at random, so daemons that failed together do not retry together.
fn retry_pause(attempt: u32) -> Duration {
    let base = 300u64 << attempt.saturating_sub(1).min(6);
    Duration::from_millis(base + rand::rng().random_range(0..=base / 2))
}

impl OriginJob {
    pub async fn run(mut self) -> Result<(), DownloadError> {
        let mut attempt = 0;
        loop {
            match self.fetch_once().await {
                Ok(()) => return Ok(()),
                Err(FetchFail::Source(e)) if e.is_retryable() && attempt < RETRIES => {
                    attempt += 1;
                    let pause = retry_pause(attempt);
                    warn!(url = %self.key.url, error = %pollen_core::error_kind::Chain(&e), attempt, ?pause, "origin transfer failed; retrying from the first missing piece");
                    let _ = self
                        .reports
                        .send(Report::OriginRetry {
                            attempt: attempt + 1,
                            of: RETRIES + 1,
                        })
                        .await;
                    tokio::time::sleep(pause).await;
                }
                Err(FetchFail::Source(e)) => return Err(e.into()),
                Err(FetchFail::Other(e)) => return Err(e),
            }
        }
    }

    fn first_missing_offset(&self) -> u64 {
        let Some(c) = &self.claims else { return 0 };
        let layout = c.entry.layout();
        c.entry
            .bitfield()
            .iter_missing()
            .next()
            .map(|n| layout.offset(n))
            .unwrap_or(layout.content_length())
    }

    async fn claims_for(
        &mut self,
        total: u64,
        etag: Option<String>,
        last_modified: Option<String>,
    ) -> Result<Arc<PieceClaims>, DownloadError> {
        if let Some(c) = &self.claims {
            if c.entry.layout().content_length() == total {
                return Ok(c.clone());
            }
            return Err(DownloadError::OriginChanged(format!(
                "the origin now reports {total} bytes but the task has {}; the content changed",
                c.entry.layout().content_length()
            )));
        }
        let layout = PieceLayout::for_content(total);
        let meta = TaskMeta {
            etag,
            last_modified,
            ..task_meta(&self.key, total, layout.piece_length())
        };
        let store = self.store.clone();
        let task = self.task;
        let entry = tokio::task::spawn_blocking(move || store.ensure_task(task, meta))
            .await
            .map_err(|_| DownloadError::ShuttingDown)??;
        let claims = PieceClaims::for_download(entry, &self.cfg);
        self.claims = Some(claims.clone());
        let _ = self.reports.send(Report::Created(claims.clone())).await;
        Ok(claims)
    }

    async fn fetch_once(&mut self) -> Result<(), FetchFail> {
        let start = self.first_missing_offset();
        if self.claims.as_ref().is_some_and(|c| c.all_present()) {
            return Ok(());
        }
        let recorded = self
            .claims
            .as_ref()
            .filter(|c| c.entry.bitfield().count() > 0)
            .map(|c| c.entry.snapshot().meta);
        let validator = recorded
            .as_ref()
            .and_then(|m| m.etag.clone().or_else(|| m.last_modified.clone()));
        let mut resp = self
            .source
            .fetch(
                &self.key.url,
                &self.headers,
                start,
                validator.as_deref(),
                self.policy,
            )
            .await?;
        if let Some(old) = recorded.filter(|m| content_changed(m, &resp)) {
            // Held pieces are of the old content: mixing them with the new would make a copy
            // that is neither. Drop the task; the next request starts over.
            let (store, id) = (self.store.clone(), self.task);
            let _ = tokio::task::spawn_blocking(move || store.remove_task(&id)).await;
            return Err(FetchFail::Other(DownloadError::OriginChanged(format!(
                "the content at {} changed since this download started (ETag {} → {}); the pieces held were discarded, run it again",
                self.key.url,
                old.etag.as_deref().unwrap_or("none"),
                resp.etag.as_deref().unwrap_or("none"),
            ))));
        }
        let claims = self
            .claims_for(
                resp.total_length,
                resp.etag.clone(),
                resp.last_modified.clone(),
            )
            .await?;
        let layout = claims.entry.layout();
        info!(url = %self.key.url, from = resp.start, total = resp.total_length, "reading from the origin");
        let mut pos = resp.start;
        let mut current: Option<(u32, Option<PieceWriter>)> = None;
        let mut slot: Option<PieceSlot> = None;
        let mut commits = JoinSet::new();
        let result = async {
            loop {
                let chunk = match resp.chunk().await {
                    Ok(Some(c)) => c,
                    Ok(None) => break,
                    Err(e) => {
                        return Err(FetchFail::Source(SourceError::Body {
                            what: format!(
                                "the origin closed the connection after {pos} of {} bytes",
                                layout.content_length()
                            ),
                            source: Some(Box::new(e)),
                        }))
                    }
                };
                self.pace.take(chunk.len() as u64, true).await;
                DaemonStats::add(&self.stats.origin_bytes, chunk.len() as u64);
                claims
                    .from_origin
                    .fetch_add(chunk.len() as u64, std::sync::atomic::Ordering::Relaxed);
                let mut data = &chunk[..];
                while !data.is_empty() {
                    let Some(n) = layout.piece_at(pos) else {
                        return Err(FetchFail::Source(SourceError::Protocol(
                            "the origin sent more bytes than its Content-Length".into(),
                        )));
                    };
                    let piece_end = layout.offset(n) + layout.length(n);
                    if current.as_ref().map(|c| c.0) != Some(n) {
                        // A piece starts: wait for a place among the pieces in flight (and,
                        // for prefetch, for the foreground to finish) before taking it. The
                        // previous piece's place was freed when it ended.
                        slot = None;
                        if pos == layout.offset(n) && !claims.entry.bitfield().get(n) {
                            slot = Some(self.pace.piece_slot().await);
                        }
                        let ours = pos == layout.offset(n) && claims.claim_piece(n);
                        let writer = ours.then(|| PieceWriter::new(claims.entry.clone(), n));
                        current = Some((n, writer));
                    }
                    let take = ((piece_end - pos) as usize).min(data.len());
                    if let Some((_, Some(w))) = current.as_mut() {
                        w.write(&data[..take])
                            .await
                            .map_err(|e| FetchFail::Other(e.into()))?;
                    }
                    data = &data[take..];
                    pos += take as u64;
                    if pos == piece_end {
                        if let Some((n, Some(w))) = current.take() {
                            self.finish_piece(&claims, n, w, &mut commits).await?;
                        }
                        slot = None;
                    }
                }
            }
            if pos < layout.content_length() {
                return Err(FetchFail::Source(SourceError::Body {
                    what: format!(
                        "the origin closed the connection after {pos} of {} bytes",
                        layout.content_length()
                    ),
                    source: None,
                }));
            }
            Ok(())
        }
        .await;
        if let Some((n, Some(_))) = current.take() {
            claims.release_piece(n);
        }
        while let Some(done) = commits.join_next().await {
            match done {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(FetchFail::Other(e)),
                Err(_) => return Err(FetchFail::Other(DownloadError::ShuttingDown)),
            }
        }
        result
    }

    /// Checks a finished piece and hands its commit to the background, so reading the next
    /// piece does not wait for the metadata fsync.
    async fn finish_piece(
        &self,
        claims: &Arc<PieceClaims>,
        n: u32,
        w: PieceWriter,
        commits: &mut JoinSet<Result<(), DownloadError>>,
    ) -> Result<(), FetchFail> {
        let (digest, hashes) = match w.finish().await {
            Ok(d) => d,
            Err(e) => {
                claims.release_piece(n);
                return Err(FetchFail::Other(e.into()));
            }
        };
        if claims
            .expected(n)
            .is_some_and(|expected| expected != digest)
        {
            claims.release_piece(n);
            return Err(FetchFail::Other(DownloadError::OriginChanged(format!(
                "piece {n} read from the origin differs from the digest other peers published; the origin content changed"
            ))));
        }
        if !claims.begin_commit(n) {
            // A parent's endgame copy of this piece got there first.
            claims.release_piece(n);
            return Ok(());
        }
        claims.entry.set_slice_hashes(n, hashes.into());
        let (store, claims, stats, reports) = (
            self.store.clone(),
            claims.clone(),
            self.stats.clone(),
            self.reports.clone(),
        );
        commits.spawn(async move {
            let committed = store.commit_piece(&claims.entry, n, digest).await;
            claims.release_piece(n);
            committed?;
            claims.add_expected([(n, digest)]);
            DaemonStats::add(&stats.pieces_from_origin, 1);
            let _ = reports
                .send(Report::Piece {
                    number: n,
                    digest,
                    parent: None,
                })
                .await;
            Ok(())
        });
        Ok(())
    }
}

/// The metadata of a new task of `content_length` bytes asked for by `key`.
pub(crate) fn task_meta(key: &TaskKey, content_length: u64, piece_length: u64) -> TaskMeta {
    TaskMeta {
        url: key.url.clone(),
        content_length,
        piece_length,
        digest: key.digest.map(|d| d.to_string()),
        tag: key.tag.clone(),
        application: key.application.clone(),
        filtered_query: key.filtered_query.clone(),
        private: key.private,
        ..Default::default()
    }
}

/// Whether the origin now describes other content than the task recorded: another ETag, or
/// (without ETags) another Last-Modified.
fn content_changed(old: &TaskMeta, resp: &pollen_source::OriginResponse) -> bool {
    match (&old.etag, &old.last_modified) {
        (Some(e), _) => resp.etag.as_ref() != Some(e),
        (None, Some(lm)) => resp.last_modified.as_ref() != Some(lm),
        (None, None) => false,
    }
}

enum FetchFail {
    Source(SourceError),
    Other(DownloadError),
}

impl From<SourceError> for FetchFail {
    fn from(e: SourceError) -> Self {
        FetchFail::Source(e)
    }
}

impl From<DownloadError> for FetchFail {
    fn from(e: DownloadError) -> Self {
        FetchFail::Other(e)
    }
}

impl From<pollen_storage::StoreError> for FetchFail {
    fn from(e: pollen_storage::StoreError) -> Self {
        FetchFail::Other(e.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_pauses_double_and_carry_at_most_half_again_of_jitter() {
        for (attempt, base) in [(1u32, 300u64), (2, 600), (3, 1200), (40, 300 << 6)] {
            for _ in 0..50 {
                let p = retry_pause(attempt).as_millis() as u64;
                assert!(
                    (base..=base + base / 2).contains(&p),
                    "attempt {attempt}: {p} ms"
                );
            }
        }
    }
}
