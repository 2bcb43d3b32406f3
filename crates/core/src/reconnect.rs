//! The wait between attempts to re-open a long-lived link (a daemon's host session with a
//! scheduler and its session with the manager, a scheduler's registration with the
//! manager): exponential from 200 ms to 5 s, each wait lengthened by a random part of
//! itself, so that a fleet whose scheduler restarted does not reconnect in lock-step. The
//! delays come from `backon`; this module only owns the numbers and the cancellable sleep.

use std::time::Duration;

use backon::{BackoffBuilder as _, ExponentialBackoff, ExponentialBuilder};
use tokio_util::sync::CancellationToken;

/// The first wait.
pub const FIRST: Duration = Duration::from_millis(200);
/// The longest wait before jitter (a wait is at most twice this).
pub const LONGEST: Duration = Duration::from_secs(5);

/// Waits between attempts of one link; [`Reconnect::reset`] once the link is up again.
#[derive(Debug)]
pub struct Reconnect {
    delays: ExponentialBackoff,
}

fn delays() -> ExponentialBackoff {
    ExponentialBuilder::default()
        .with_min_delay(FIRST)
        .with_max_delay(LONGEST)
        .with_jitter()
        .without_max_times()
        .build()
}

impl Default for Reconnect {
    fn default() -> Self {
        Self { delays: delays() }
    }
}

impl Reconnect {
    /// The next wait.
    pub fn next_delay(&mut self) -> Duration {
        self.delays.next().unwrap_or(LONGEST)
    }

    /// Starts again from the first wait (the link came up).
    pub fn reset(&mut self) {
        self.delays = delays();
    }

    /// Sleeps for the next wait; false when `shutdown` fired first.
    pub async fn wait(&mut self, shutdown: &CancellationToken) -> bool {
        let d = self.next_delay();
        tokio::select! {
            _ = shutdown.cancelled() => false,
            _ = tokio::time::sleep(d) => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_grow_to_the_cap_with_jitter_and_start_over_on_reset() {
        let mut r = Reconnect::default();
        let waits: Vec<Duration> = (0..12).map(|_| r.next_delay()).collect();
        assert!(waits[0] >= FIRST && waits[0] < FIRST * 2, "{waits:?}");
        assert!(waits.iter().all(|w| *w <= LONGEST * 2), "{waits:?}");
        assert!(waits[11] >= LONGEST, "it reaches the cap: {waits:?}");
        r.reset();
        assert!(r.next_delay() < FIRST * 2);
        // Two links that fail together do not wait alike.
        let a: Vec<Duration> = {
            let mut r = Reconnect::default();
            (0..8).map(|_| r.next_delay()).collect()
        };
        let b: Vec<Duration> = {
            let mut r = Reconnect::default();
            (0..8).map(|_| r.next_delay()).collect()
        };
        assert_ne!(a, b, "jitter");
    }

    #[tokio::test]
    async fn a_wait_ends_at_shutdown() {
        let stop = CancellationToken::new();
        stop.cancel();
        assert!(!Reconnect::default().wait(&stop).await);
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_ends_after_its_delay_or_at_once_on_shutdown() {
        let shutdown = CancellationToken::new();
        let mut r = Reconnect::default();
        let started = tokio::time::Instant::now();
        assert!(r.wait(&shutdown).await, "the wait ran out");
        assert!(started.elapsed() >= FIRST);
        shutdown.cancel();
        let started = tokio::time::Instant::now();
        assert!(!r.wait(&shutdown).await, "shutdown ends the wait");
        assert_eq!(started.elapsed(), Duration::ZERO);
    }
}
