//! Traffic control shared by every download on this host: the rate limiters a transfer's
//! bytes pass through, the cap on pieces being fetched at once, and the rule that prefetch
//! (downloads nobody waits for, such as the rest of a blob after a Range request) yields to
//! foreground downloads.
//!
//! A background task moves no new piece while any foreground download runs on the host, and
//! its bytes also pass the prefetch limiter. When a foreground request joins a background
//! task, the task is promoted: it stops yielding and leaves the prefetch limiter.

use std::sync::Arc;

use pollen_core::RateLimiter;
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};

use crate::config::DaemonConfig;

/// Whether a download is waited for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Priority {
    Foreground,
    Background,
}

/// What every task on the host shares: its limiters and the cap on pieces in flight.
struct HostClasses {
    download: RateLimiter,
    back_to_source: RateLimiter,
    prefetch: RateLimiter,
    /// Pieces in flight over every task; `None` without a cap.
    pieces: Option<Arc<Semaphore>>,
}

/// The host's traffic classes and counters.
pub(crate) struct Traffic {
    host: Arc<HostClasses>,
    task_rate: u64,
    /// Foreground downloads running now.
    foreground: watch::Sender<usize>,
}

impl Traffic {
    pub fn new(cfg: &DaemonConfig) -> Self {
        let limit = |v: u64| RateLimiter::new((v > 0).then_some(v));
        Self {
            host: Arc::new(HostClasses {
                download: limit(cfg.download_rate_limit),
                back_to_source: limit(cfg.back_to_source_rate_limit),
                prefetch: limit(cfg.prefetch_rate_limit),
                pieces: (cfg.max_concurrent_download_pieces > 0)
                    .then(|| Arc::new(Semaphore::new(cfg.max_concurrent_download_pieces))),
            }),
            task_rate: cfg.task_download_rate_limit,
            foreground: watch::channel(0).0,
        }
    }

    /// The host's download limiter (shared with every transfer).
    pub fn download_limiter(&self) -> RateLimiter {
        self.host.download.clone()
    }

    /// The host's back-to-source limiter (shared with every transfer).
    pub fn back_to_source_limiter(&self) -> RateLimiter {
        self.host.back_to_source.clone()
    }

    /// The pacing of one new task, which starts at `priority`, limited to the lower of the
    /// host's per-task limit and its own `rate_limit` (0: none). A foreground task counts as
    /// running until [`Traffic::finished`] is called for it.
    pub fn pace(&self, priority: Priority, rate_limit: u64) -> (Pace, watch::Sender<Priority>) {
        if priority == Priority::Foreground {
            self.foreground.send_modify(|n| *n += 1);
        }
        let (tx, rx) = watch::channel(priority);
        let pace = Pace {
            host: self.host.clone(),
            task: RateLimiter::new(
                [self.task_rate, rate_limit]
                    .into_iter()
                    .filter(|r| *r > 0)
                    .min(),
            ),
            priority: rx,
            foreground: self.foreground.subscribe(),
        };
        (pace, tx)
    }

    /// Raises a background task to the foreground (a foreground request joined it).
    pub fn promote(&self, priority: &watch::Sender<Priority>) {
        if priority.send_replace(Priority::Foreground) == Priority::Background {
            self.foreground.send_modify(|n| *n += 1);
        }
    }

    /// A task ended; it no longer holds prefetch back.
    pub fn finished(&self, priority: &watch::Sender<Priority>) {
        if *priority.borrow() == Priority::Foreground {
            self.foreground.send_modify(|n| *n = n.saturating_sub(1));
        }
    }
}

/// How one task's transfers are paced.
#[derive(Clone)]
pub(crate) struct Pace {
    host: Arc<HostClasses>,
    task: RateLimiter,
    priority: watch::Receiver<Priority>,
    foreground: watch::Receiver<usize>,
}

/// A place among the pieces in flight; dropping it frees the place.
pub(crate) struct PieceSlot(#[allow(dead_code)] Option<OwnedSemaphorePermit>);

impl Pace {
    fn background(&self) -> bool {
        *self.priority.borrow() == Priority::Background
    }

    /// True while this task must not start a new piece: it is background and a foreground
    /// download is running.
    pub fn yielding(&self) -> bool {
        self.background() && *self.foreground.borrow() > 0
    }

    /// Waits until this task may start a new piece (see [`Pace::yielding`]).
    pub async fn yield_to_foreground(&self) {
        let (mut priority, mut foreground) = (self.priority.clone(), self.foreground.clone());
        while self.yielding() {
            tokio::select! {
                r = priority.changed() => if r.is_err() { return },
                r = foreground.changed() => if r.is_err() { return },
            }
        }
    }

    /// A place for one more piece in flight, waiting for one (and for the foreground, in
    /// the background). Call it only while holding no other place: a fetcher that waits
    /// while holding places could wait on itself.
    pub async fn piece_slot(&self) -> PieceSlot {
        self.yield_to_foreground().await;
        match &self.host.pieces {
            None => PieceSlot(None),
            Some(s) => PieceSlot(s.clone().acquire_owned().await.ok()),
        }
    }

    /// A place for one more piece if one is free now and this task need not yield.
    pub fn try_piece_slot(&self) -> Option<PieceSlot> {
        if self.yielding() {
            return None;
        }
        match &self.host.pieces {
            None => Some(PieceSlot(None)),
            Some(s) => s
                .clone()
                .try_acquire_owned()
                .ok()
                .map(|p| PieceSlot(Some(p))),
        }
    }

    /// Takes `bytes` from every limiter they pass: host download, task, back-to-source when
    /// they come from the origin, prefetch while the task is in the background.
    pub async fn take(&self, bytes: u64, from_origin: bool) {
        self.host.download.acquire(bytes).await;
        self.task.acquire(bytes).await;
        if from_origin {
            self.host.back_to_source.acquire(bytes).await;
        }
        if self.background() {
            self.host.prefetch.acquire(bytes).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn traffic(max_pieces: usize) -> Traffic {
        Traffic::new(&DaemonConfig {
            max_concurrent_download_pieces: max_pieces,
            ..Default::default()
        })
    }

    /// Lets every other task on the current-thread runtime run until it blocks.
    async fn settle() {
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn prefetch_waits_while_a_foreground_download_runs() {
        let t = traffic(0);
        let (fg, fg_priority) = t.pace(Priority::Foreground, 0);
        let (bg, _bg_priority) = t.pace(Priority::Background, 0);
        assert!(!fg.yielding());
        assert!(bg.yielding());
        assert!(bg.try_piece_slot().is_none());
        let waiting = tokio::spawn(async move { bg.piece_slot().await });
        settle().await;
        assert!(
            !waiting.is_finished(),
            "prefetch moved during a foreground download"
        );
        t.finished(&fg_priority);
        waiting
            .await
            .expect("prefetch resumes once the foreground is done");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_promoted_prefetch_stops_yielding_and_holds_others_back() {
        let t = traffic(0);
        let (_fg, fg_priority) = t.pace(Priority::Foreground, 0);
        let (bg, bg_priority) = t.pace(Priority::Background, 0);
        let (other, _other_priority) = t.pace(Priority::Background, 0);
        let waiting = tokio::spawn(async move { bg.piece_slot().await });
        settle().await;
        assert!(!waiting.is_finished());
        t.promote(&bg_priority);
        waiting.await.expect("a promoted task moves at once");
        // The first foreground ends; the promoted one still holds the other prefetch back.
        t.finished(&fg_priority);
        assert!(other.yielding());
        t.finished(&bg_priority);
        assert!(!other.yielding());
    }

    #[test]
    fn a_task_takes_the_lower_of_the_hosts_per_task_limit_and_its_own() {
        let host = Traffic::new(&DaemonConfig {
            task_download_rate_limit: 8 << 20,
            ..Default::default()
        });
        assert_eq!(
            host.pace(Priority::Foreground, 2 << 20).0.task.rate(),
            Some(2 << 20)
        );
        assert_eq!(
            host.pace(Priority::Foreground, 0).0.task.rate(),
            Some(8 << 20)
        );
        assert_eq!(
            host.pace(Priority::Foreground, 16 << 20).0.task.rate(),
            Some(8 << 20)
        );
        let free = traffic(0);
        assert_eq!(
            free.pace(Priority::Foreground, 3 << 20).0.task.rate(),
            Some(3 << 20)
        );
        assert_eq!(free.pace(Priority::Foreground, 0).0.task.rate(), None);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn pieces_in_flight_are_capped_over_every_task() {
        let t = traffic(2);
        let (a, _pa) = t.pace(Priority::Foreground, 0);
        let (b, _pb) = t.pace(Priority::Foreground, 0);
        let first = a.try_piece_slot().expect("a free place");
        let _second = b.try_piece_slot().expect("a free place");
        assert!(a.try_piece_slot().is_none());
        assert!(b.try_piece_slot().is_none());
        drop(first);
        assert!(b.try_piece_slot().is_some());
        let unlimited = traffic(0).pace(Priority::Foreground, 0).0;
        let held: Vec<_> = (0..100)
            .filter_map(|_| unlimited.try_piece_slot())
            .collect();
        assert_eq!(held.len(), 100);
    }
}
