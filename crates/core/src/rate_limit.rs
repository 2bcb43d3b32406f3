//! A token-bucket byte-rate limiter shared by every transfer of one traffic class.
//!
//! One limiter per class (upload, download, back-to-source) per host, cloned into each
//! connection. Callers ask for the bytes they are about to move and sleep until the bucket
//! allows it. The burst is small (a twentieth of a second's worth, at least 256 KiB): enough
//! that a 128 KiB write is not chopped up, small enough that even a short transfer is never
//! more than a few percent faster than its limit.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The smallest burst, in bytes.
const BURST_FLOOR: f64 = 256.0 * 1024.0;

/// Shared byte-rate limiter; `None` rate means unlimited.
#[derive(Clone, Debug)]
pub struct RateLimiter {
    inner: Option<Arc<Mutex<Bucket>>>,
}

#[derive(Debug)]
struct Bucket {
    rate: f64,
    capacity: f64,
    tokens: f64,
    last: Instant,
}

impl RateLimiter {
    /// A limiter allowing `bytes_per_sec` (unlimited when `None` or zero).
    pub fn new(bytes_per_sec: Option<u64>) -> Self {
        let inner = bytes_per_sec.filter(|r| *r > 0).map(|r| {
            let rate = r as f64;
            let capacity = (rate / 20.0).max(BURST_FLOOR);
            Arc::new(Mutex::new(Bucket {
                rate,
                capacity,
                tokens: capacity,
                last: Instant::now(),
            }))
        });
        Self { inner }
    }

    /// A limiter that never waits.
    pub fn unlimited() -> Self {
        Self { inner: None }
    }

    /// Takes `bytes` tokens and returns how long the caller must wait before moving them.
    fn reserve(&self, bytes: u64) -> Duration {
        let Some(inner) = &self.inner else {
            return Duration::ZERO;
        };
        let mut b = inner.lock().unwrap_or_else(|e| e.into_inner());
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
        self.inner
            .as_ref()
            .map(|b| b.lock().unwrap_or_else(|e| e.into_inner()).rate as u64)
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
}
