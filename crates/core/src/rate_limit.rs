//! A token-bucket byte-rate limiter shared by every transfer of one traffic class.
//!
//! One limiter per class (upload, download, back-to-source) per host, cloned into each
//! connection. Callers ask for the bytes they are about to move and sleep until the bucket
//! allows it. The burst is small (a twentieth of a second's worth, at least 256 KiB): enough
//! that a 128 KiB write is not chopped up, small enough that even a short transfer is never
//! more than a few percent faster than its limit.
//!
//! The rate can change while transfers run ([`RateLimiter::set_rate`], for config pushed by
//! the manager): every clone sees the new rate at its next call.

use std::sync::{Arc, Mutex};
use std::time::Duration;

// Tokio's clock: the same as the system's, except that a test can pause and advance it.
use tokio::time::Instant;

/// The smallest burst, in bytes.
const BURST_FLOOR: f64 = 256.0 * 1024.0;

/// Shared byte-rate limiter; `None` rate means unlimited.
#[derive(Clone, Debug)]
pub struct RateLimiter {
    inner: Arc<Mutex<Option<Bucket>>>,
}

#[derive(Debug)]
struct Bucket {
    rate: f64,
    capacity: f64,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    /// A full bucket for `bytes_per_sec`; none for unlimited.
    fn of(bytes_per_sec: Option<u64>) -> Option<Self> {
        bytes_per_sec.filter(|r| *r > 0).map(|r| {
            let rate = r as f64;
            let capacity = (rate / 20.0).max(BURST_FLOOR);
            Bucket {
                rate,
                capacity,
                tokens: capacity,
                last: Instant::now(),
            }
        })
    }
}

impl RateLimiter {
    /// A limiter allowing `bytes_per_sec` (unlimited when `None` or zero).
    pub fn new(bytes_per_sec: Option<u64>) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Bucket::of(bytes_per_sec))),
        }
    }

    /// A limiter that never waits.
    pub fn unlimited() -> Self {
        Self::new(None)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Bucket>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Changes the rate for every clone (unlimited when `None` or zero). A new limit starts
    /// with a full burst; an unchanged one keeps its state.
    pub fn set_rate(&self, bytes_per_sec: Option<u64>) {
        let mut b = self.lock();
        let wanted = bytes_per_sec.filter(|r| *r > 0);
        if b.as_ref().map(|b| b.rate as u64) != wanted {
            *b = Bucket::of(wanted);
        }
    }

    /// Takes `bytes` tokens and returns how long the caller must wait before moving them.
    fn reserve(&self, bytes: u64) -> Duration {
        let mut guard = self.lock();
        let Some(b) = guard.as_mut() else {
            return Duration::ZERO;
        };
        let now = Instant::now();
        let elapsed = now.duration_since(b.last).as_secs_f64();
        b.last = now;
        b.tokens = (b.tokens + elapsed * b.rate).min(b.capacity);
        b.tokens -= bytes as f64;
        if b.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-b.tokens / b.rate)
        }
    }

    /// Waits until `bytes` may be moved.
    pub async fn acquire(&self, bytes: u64) {
        let wait = self.reserve(bytes);
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }

    /// The configured rate, if limited.
    pub fn rate(&self) -> Option<u64> {
        self.lock().as_ref().map(|b| b.rate as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unlimited_never_waits() {
        let l = RateLimiter::new(None);
        assert_eq!(l.reserve(u64::MAX / 2), Duration::ZERO);
        assert_eq!(RateLimiter::new(Some(0)).rate(), None);
    }

    #[test]
    fn a_new_rate_reaches_every_clone() {
        let l = RateLimiter::new(None);
        let clone = l.clone();
        l.set_rate(Some(4 << 20));
        assert_eq!(clone.rate(), Some(4 << 20));
        assert_eq!(clone.reserve(256 << 10), Duration::ZERO);
        assert!(clone.reserve(2 << 20) > Duration::ZERO);
        l.set_rate(Some(0));
        assert_eq!(clone.rate(), None);
        assert_eq!(clone.reserve(u64::MAX / 2), Duration::ZERO);
    }

    #[test]
    fn debt_beyond_the_burst_turns_into_waiting_time() {
        let rate = 4 << 20; // 4 MiB/s: the burst is the 256 KiB floor.
        let l = RateLimiter::new(Some(rate));
        assert_eq!(l.reserve(256 << 10), Duration::ZERO);
        // The next 2 MiB must wait about half a second (computed, not slept).
        let w = l.reserve(2 << 20);
        assert!(
            w > Duration::from_millis(400) && w <= Duration::from_millis(500),
            "{w:?}"
        );
    }

    /// Moves `total` bytes in `chunk`-byte steps through `l` and returns the (paused,
    /// virtual) time it took.
    async fn move_bytes(l: &RateLimiter, total: u64, chunk: u64) -> Duration {
        let start = Instant::now();
        let mut moved = 0;
        while moved < total {
            l.acquire(chunk).await;
            moved += chunk;
        }
        start.elapsed()
    }

    #[tokio::test(start_paused = true)]
    async fn a_transfer_takes_its_size_over_the_rate_less_one_burst() {
        // 24 MiB at 8 MiB/s in 128 KiB writes: the burst (a twentieth of a second, 409.6 KiB)
        // is free, the rest paced, so 2.95 s of (virtual) time, exactly.
        let (rate, total) = (8u64 << 20, 24u64 << 20);
        let took = move_bytes(&RateLimiter::new(Some(rate)), total, 128 << 10).await;
        let burst = rate as f64 / 20.0;
        let expected = (total as f64 - burst) / rate as f64;
        assert!(
            (took.as_secs_f64() - expected).abs() < 0.01,
            "took {took:?}, expected {expected:.3} s"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn clones_share_one_budget() {
        // Two transfers through clones of one limiter take as long as one of twice the size.
        let rate = 4u64 << 20;
        let l = RateLimiter::new(Some(rate));
        let other = l.clone();
        let (a, b) = tokio::join!(
            move_bytes(&l, 4 << 20, 64 << 10),
            move_bytes(&other, 4 << 20, 64 << 10)
        );
        let took = a.max(b).as_secs_f64();
        let expected = (8.0 * 1048576.0 - 262144.0) / rate as f64;
        assert!(
            (took - expected).abs() < 0.02,
            "took {took:.3} s, expected {expected:.3} s"
        );
    }
}
