//! Failed sign-ins and bad tokens, counted per client address, so that nobody can guess
//! passwords at the speed of the network.
//!
//! Each client address may fail `per_minute` times in a fixed one-minute window; past that,
//! every request of that address that would need credentials is answered 429 with
//! `Retry-After` until the window ends, whether its credentials are right or not (so the
//! answer tells a guesser nothing). Successful requests cost nothing. The table is bounded:
//! when it is full, windows that ended are dropped first, and a new address beyond that is
//! not tracked rather than evicting one that is being throttled.
//!
//! Non-goals: per-account lockout (it would let anyone lock the admin out), and addresses
//! behind a shared proxy are one client (put the REST port behind nothing, or raise the limit).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Addresses tracked at most.
const MAX_CLIENTS: usize = 100_000;

/// The window failures are counted in.
const WINDOW: Duration = Duration::from_secs(60);

/// Per-address failure counts.
#[derive(Debug)]
pub struct Throttle {
    per_minute: u32,
    clients: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl Throttle {
    /// Allows `per_minute` failures per address and minute; 0 turns throttling off.
    pub fn new(per_minute: u32) -> Self {
        Self {
            per_minute,
            clients: Mutex::new(HashMap::new()),
        }
    }

    /// How long `client` must wait before it may try again; `None` when it may now.
    pub fn wait(&self, client: IpAddr, now: Instant) -> Option<Duration> {
        if self.per_minute == 0 {
            return None;
        }
        let clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        let (start, failures) = *clients.get(&client)?;
        let ends = start + WINDOW;
        (failures >= self.per_minute && now < ends).then(|| ends - now)
    }

    /// Counts one failure of `client`.
    pub fn failed(&self, client: IpAddr, now: Instant) {
        if self.per_minute == 0 {
            return;
        }
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if clients.len() >= MAX_CLIENTS && !clients.contains_key(&client) {
            clients.retain(|_, (start, _)| now < *start + WINDOW);
            if clients.len() >= MAX_CLIENTS {
                return;
            }
        }
        let entry = clients.entry(client).or_insert((now, 0));
        if now >= entry.0 + WINDOW {
            *entry = (now, 0);
        }
        entry.1 = entry.1.saturating_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_past_its_failures_waits_out_the_window_and_others_do_not() {
        let t = Throttle::new(3);
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(t.wait(a, t0), None);
            t.failed(a, t0);
        }
        let w = t.wait(a, t0 + Duration::from_secs(20)).expect("throttled");
        assert_eq!(w, Duration::from_secs(40));
        assert_eq!(t.wait(b, t0), None, "another client is not affected");
        assert_eq!(t.wait(a, t0 + WINDOW), None, "the window ended");
        t.failed(a, t0 + WINDOW);
        assert_eq!(
            t.wait(a, t0 + WINDOW),
            None,
            "a new window starts from one failure"
        );
    }

    #[test]
    fn zero_turns_it_off() {
        let t = Throttle::new(0);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        for _ in 0..100 {
            t.failed(a, Instant::now());
        }
        assert_eq!(t.wait(a, Instant::now()), None);
    }
}
