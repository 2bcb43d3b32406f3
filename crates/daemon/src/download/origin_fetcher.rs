//! Back-to-source: reads a task from its origin, cuts it into pieces, hashes and commits them.
//!
//! A fresh download is one streaming GET, so it costs the origin one request, like `curl`.
//! Otherwise each request asks for one run of pieces that are missing and that nobody else
//! fetches (a bounded Range), so a byte is read from the origin once: pieces held here, or
//! being fetched from a parent, are not read again. A piece someone else takes while the
//! stream runs ends that request at its first byte and the job asks for the next run; a piece
//! another fetcher lets go of unfinished is picked up before the job ends. (An origin that
//! ignores Range makes the job read past what it does not need instead.) Slices verified here
//! already are not written again (see `pollen_storage::PieceWriter`). The BLAKE3 digest of each
//! piece read here is what the scheduler publishes to every other peer. A connection that
//! breaks early is retried a few times before the download fails.

use std::sync::Arc;
use std::time::Duration;

use pollen_core::{PieceLayout, TaskId, TaskKey};
use pollen_source::{OriginPolicy, ReadRequest, Source as _, SourceError, Sources};
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
    pub source: Arc<Sources>,
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

/// What the job reads next.
#[derive(Debug, PartialEq, Eq)]
enum Next {
    /// Every piece is here.
    Done,
    /// Bytes `start` to `end` (exclusive; `None`: to the end of the content).
    Read(u64, Option<u64>),
    /// Every missing piece is being fetched by someone else: wait until they finish or let go.
    Wait,
}

/// How long a job waiting on other fetchers sleeps at most before it looks again (a claim let
/// go wakes it at once).
const RECHECK: Duration = Duration::from_millis(250);

impl OriginJob {
    pub async fn run(mut self) -> Result<(), DownloadError> {
        let mut attempt = 0;
        loop {
            let (start, end) = match self.next() {
                Next::Done => return Ok(()),
                Next::Wait => {
                    self.wait_for_others().await;
                    continue;
                }
                Next::Read(start, end) => (start, end),
            };
            match self.fetch_once(start, end).await {
                Ok(()) => attempt = 0,
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

    /// The first run of pieces missing here that nobody else fetches, or why there is none.
    fn next(&self) -> Next {
        let Some(c) = &self.claims else {
            return Next::Read(0, None);
        };
        let layout = c.entry.layout();
        let mut missing = false;
        let mut run: Option<(u32, u32)> = None;
        for n in c.entry.bitfield().iter_missing() {
            missing = true;
            let free = c.piece_free(n);
            match run {
                None if free => run = Some((n, n)),
                None => {}
                Some((first, last)) if free && n == last + 1 => run = Some((first, n)),
                Some(_) => break,
            }
        }
        match run {
            Some((first, last)) => {
                let end = layout.offset(last) + layout.length(last);
                let end = (end < layout.content_length()).then_some(end);
                Next::Read(layout.offset(first), end)
            }
            None if missing => Next::Wait,
            None => Next::Done,
        }
    }

    /// Waits until another fetcher commits or lets go of a piece (or a moment passes).
    async fn wait_for_others(&self) {
        let Some(c) = &self.claims else { return };
        let changed = c.changed.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        if self.next() == Next::Wait {
            let _ = tokio::time::timeout(RECHECK, changed).await;
        }
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

    /// One request for bytes `start` to `end` (exclusive; `None`: to the end).
    async fn fetch_once(&mut self, start: u64, end: Option<u64>) -> Result<(), FetchFail> {
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
            .read(ReadRequest {
                url: &self.key.url,
                headers: &self.headers,
                start,
                end,
                if_range: validator.as_deref(),
                policy: self.policy,
            })
            .await?;
        // The task names a version of the object: another one is not this task's content.
        if !self.key.version.is_empty()
            && resp.etag.as_ref().is_some_and(|e| *e != self.key.version)
        {
            return Err(FetchFail::Other(DownloadError::OriginChanged(format!(
                "{} changed since the download was asked for (ETag {} → {}); run it again",
                self.key.url,
                self.key.version,
                resp.etag.as_deref().unwrap_or("none"),
            ))));
        }
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
        // Whether the origin sent what was asked: only then is ending the request early at
        // a piece someone else has cheaper than reading past it.
        let ranged = resp.start == start;
        let until = match end {
            Some(end) if ranged => end,
            _ => layout.content_length(),
        };
        info!(url = %self.key.url, from = resp.start, to = until, total = resp.total_length, "reading from the origin");
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
                        if !ours && ranged && pos == layout.offset(n) {
                            // Someone else has this piece or is fetching it: end this
                            // request here rather than read it twice; the next asks for
                            // what is still missing.
                            return Ok(());
                        }
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
            if pos < until {
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
        version: key.version.clone(),
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
    use crate::traffic::{Priority, Traffic};
    use pollen_source::{FileSource, HttpSource, OriginGuard};
    use pollen_testkit::origin::{random_data, Origin};

    const MIB: usize = 1 << 20;

    /// A job for the `size` bytes an origin on loopback serves, its task made already (4 MiB
    /// pieces), and the origin. The store's directory lives as long as the returned guard.
    async fn job(size: usize) -> (tempfile::TempDir, OriginJob, Origin) {
        job_at("/blob", size).await
    }

    /// [`job`] for the origin's route `path`.
    async fn job_at(path: &str, size: usize) -> (tempfile::TempDir, OriginJob, Origin) {
        let origin = Origin::start("127.0.0.1:0".parse().expect("addr"), random_data(size))
            .await
            .expect("origin");
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("store");
        let cfg = Arc::new(DaemonConfig::default());
        let key = TaskKey {
            url: origin.url(path),
            ..Default::default()
        };
        let layout = PieceLayout::for_content(size as u64);
        let task = TaskId([9; 32]);
        let entry = store
            .ensure_task(task, task_meta(&key, size as u64, layout.piece_length()))
            .expect("task");
        let (reports, mut rx) = mpsc::channel(64);
        tokio::spawn(async move { while rx.recv().await.is_some() {} });
        let guard = OriginGuard::new(&["127.0.0.0/8".to_string()]).expect("guard");
        let timeout = Duration::from_secs(30);
        let job = OriginJob {
            task,
            key,
            headers: Vec::new(),
            claims: Some(PieceClaims::for_download(entry, &cfg)),
            source: Arc::new(Sources::new(
                HttpSource::new(timeout, timeout, &[], guard.clone()).expect("source"),
                FileSource::default(),
                Vec::new(),
            )),
            store,
            stats: Arc::new(DaemonStats::default()),
            pace: Traffic::new(&cfg).pace(Priority::Foreground, 0).0,
            reports,
            cfg,
            policy: OriginPolicy::LocalUser,
        };
        (dir, job, origin)
    }

    #[tokio::test]
    async fn each_request_asks_for_one_run_of_pieces_nobody_has_or_fetches() {
        let (_dir, job, _origin) = job(16 * MIB).await;
        let claims = job.claims.clone().expect("claims");
        let piece = 4 * MIB as u64;
        assert_eq!(job.next(), Next::Read(0, None), "a fresh task: all of it");
        // Piece 0 fetched by someone else, 2 too: the run is piece 1 alone.
        assert!(claims.claim_piece(0) && claims.claim_piece(2));
        assert_eq!(job.next(), Next::Read(piece, Some(2 * piece)));
        claims.release_piece(0);
        assert_eq!(job.next(), Next::Read(0, Some(2 * piece)));
        // Only the last piece free: to the end.
        assert!(claims.claim_piece(0) && claims.claim_piece(1));
        assert_eq!(job.next(), Next::Read(3 * piece, None));
        // Everything missing is someone else's: wait.
        assert!(claims.claim_piece(3));
        assert_eq!(job.next(), Next::Wait);
    }

    #[tokio::test]
    async fn a_piece_another_fetcher_lets_go_of_is_read_once_and_no_byte_twice() {
        // The race behind a flaky swarm test: the origin reader starts while a parent's
        // fetcher still holds piece 2, which it then gives up unfinished. The reader must
        // neither end with piece 2 missing nor read the pieces after it a second time.
        let size = 16 * MIB;
        let (_dir, job, origin) = job(size).await;
        let claims = job.claims.clone().expect("claims");
        let stats = job.stats.clone();
        assert!(claims.claim_piece(2), "held by 'a parent'");
        let run = tokio::spawn(job.run());
        until_present(&claims, &[0, 1, 3]).await;
        assert!(!run.is_finished(), "the reader ended with piece 2 missing");
        claims.release_piece(2);
        completes(run, &claims).await;
        assert_eq!(origin.bytes_served(), size as u64, "no byte read twice");
        assert_eq!(
            stats
                .origin_bytes
                .load(std::sync::atomic::Ordering::Relaxed),
            size as u64
        );
    }

    /// Waits for the job to end once the piece held was let go, with every piece present.
    async fn completes(
        run: tokio::task::JoinHandle<Result<(), DownloadError>>,
        claims: &PieceClaims,
    ) {
        tokio::time::timeout(Duration::from_secs(60), run)
            .await
            .expect("the reader ends once the piece is let go")
            .expect("join")
            .expect("the download completes");
        assert!(claims.all_present());
    }

    /// Waits until every piece in `pieces` is present.
    async fn until_present(claims: &PieceClaims, pieces: &[u32]) {
        tokio::time::timeout(Duration::from_secs(60), async {
            while !pieces.iter().all(|n| claims.entry.bitfield().get(*n)) {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("the pieces were read");
    }

    #[tokio::test]
    async fn a_piece_taken_by_another_fetcher_mid_stream_ends_the_request_there() {
        // A slow origin (about 6 MiB/s: a 4 MiB piece takes most of a second), so piece 2
        // is claimed by "a parent" long before the stream reaches it, and let go of only
        // once piece 3, after it, is here.
        let size = 16 * MIB;
        let (_dir, job, origin) = job_at("/slow", size).await;
        let claims = job.claims.clone().expect("claims");
        let run = tokio::spawn(job.run());
        until_present(&claims, &[0]).await;
        assert!(
            claims.claim_piece(2),
            "the stream is still far from piece 2"
        );
        until_present(&claims, &[1, 3]).await;
        claims.release_piece(2);
        completes(run, &claims).await;
        // Reading past piece 2 would have cost its 4 MiB twice; ending the request at its
        // first byte costs at most the chunks already on their way.
        let extra = origin.bytes_served() - size as u64;
        assert!(extra < (MIB as u64), "{extra} bytes read twice");
    }

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
