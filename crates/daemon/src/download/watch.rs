//! What a caller of a download sees: its progress (bytes held out of the task's length) and,
//! once it ends, its outcome, both as watch channels every caller of the task shares.

use std::time::Duration;

use pollen_core::TaskId;
use tokio::sync::watch;

use crate::download::piece_claims::PieceClaims;
use crate::error::DownloadError;

/// What a download is doing or waiting for, for a caller to show.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Starting: checking the cache, asking a scheduler.
    #[default]
    Starting,
    /// Registered with a scheduler; no parent offered and the origin not read yet (a seed
    /// may be fetching it).
    WaitingForPeers,
    /// Fetching from parents.
    FromPeers,
    /// Reading the origin (sent there by the scheduler, or without one).
    FromOrigin,
    /// Reading the origin again after a transfer failed: attempt `attempt` of `of`.
    OriginRetry { attempt: u32, of: u32 },
}

impl Phase {
    /// In words, for `pollen get`.
    pub fn describe(self) -> String {
        match self {
            Phase::Starting => "asking the scheduler".into(),
            Phase::WaitingForPeers => "waiting for a peer or the seed to hold it".into(),
            Phase::FromPeers => "fetching from peers".into(),
            Phase::FromOrigin => "reading the origin".into(),
            Phase::OriginRetry { attempt, of } => {
                format!("reading the origin, attempt {attempt} of {of} (the last one failed)")
            }
        }
    }
}

/// Bytes of the task held so far, out of its length.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Progress {
    /// What the download is doing now.
    pub phase: Phase,
    pub content_length: u64,
    pub completed: u64,
    /// Of those, verified bytes from peers and bytes read from the origin by this run.
    pub from_peers: u64,
    pub from_origin: u64,
}

/// How a download ended; `None` while it runs.
pub(crate) type Outcome = Option<Result<(), DownloadError>>;

/// A caller's view of a download.
pub(crate) struct DownloadWatch {
    pub id: TaskId,
    pub progress: watch::Receiver<Progress>,
    pub result: watch::Receiver<Outcome>,
    pub from_cache: bool,
}

impl DownloadWatch {
    /// Waits until the download progresses or ends, at most `limit`; false when nothing
    /// happened in time. When a sender is already gone (the download is ending and its
    /// outcome is about to be published), returns after a short pause so the caller looks
    /// again.
    pub async fn progressed_within(&mut self, limit: Duration) -> bool {
        let changed = async {
            tokio::select! {
                r = self.progress.changed() => r.is_ok(),
                r = self.result.changed() => r.is_ok(),
            }
        };
        match tokio::time::timeout(limit, changed).await {
            Ok(true) => true,
            Ok(false) => {
                tokio::time::sleep(Duration::from_millis(20)).await;
                true
            }
            Err(_) => false,
        }
    }
}

/// Publishes the bytes `claims`' task holds, keeping the phase.
pub(crate) fn publish(progress: &watch::Sender<Progress>, claims: &PieceClaims) {
    progress.send_modify(|p| {
        *p = Progress {
            phase: p.phase,
            ..progress_of(claims)
        }
    });
}

/// Publishes a new phase, keeping the bytes.
pub(crate) fn set_phase(progress: &watch::Sender<Progress>, phase: Phase) {
    progress.send_if_modified(|p| {
        let changed = p.phase != phase;
        p.phase = phase;
        changed
    });
}

/// The bytes the claims' task holds, out of its length.
pub(crate) fn progress_of(claims: &PieceClaims) -> Progress {
    let layout = claims.entry.layout();
    Progress {
        phase: Phase::default(),
        content_length: layout.content_length(),
        completed: claims
            .entry
            .bitfield()
            .iter_set()
            .map(|n| layout.length(n))
            .sum(),
        from_peers: claims.from_peers.load(std::sync::atomic::Ordering::Relaxed),
        from_origin: claims
            .from_origin
            .load(std::sync::atomic::Ordering::Relaxed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn watch_of() -> (
        watch::Sender<Progress>,
        watch::Sender<Outcome>,
        DownloadWatch,
    ) {
        let (ptx, prx) = watch::channel(Progress::default());
        let (rtx, rrx) = watch::channel(None);
        let w = DownloadWatch {
            id: TaskId([1; 32]),
            progress: prx,
            result: rrx,
            from_cache: false,
        };
        (ptx, rtx, w)
    }

    #[tokio::test(start_paused = true)]
    async fn a_watch_wakes_on_progress_or_an_outcome_and_not_otherwise() {
        let (ptx, rtx, mut w) = watch_of();
        assert!(
            !w.progressed_within(Duration::from_secs(5)).await,
            "nothing happened"
        );
        ptx.send_replace(Progress {
            content_length: 10,
            completed: 4,
            ..Progress::default()
        });
        assert!(w.progressed_within(Duration::from_secs(5)).await);
        assert_eq!(w.progress.borrow_and_update().completed, 4);
        rtx.send_replace(Some(Ok(())));
        assert!(w.progressed_within(Duration::from_secs(5)).await);
        assert!(matches!(*w.result.borrow_and_update(), Some(Ok(()))));
    }

    #[tokio::test(start_paused = true)]
    async fn a_watch_whose_download_is_gone_returns_for_a_last_look() {
        let (ptx, rtx, mut w) = watch_of();
        drop((ptx, rtx));
        let started = tokio::time::Instant::now();
        assert!(w.progressed_within(Duration::from_secs(60)).await);
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "it waited the whole limit"
        );
    }
}
