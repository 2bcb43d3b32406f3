//! Which scheduler serves a task: rendezvous (highest random weight) hashing of the task id
//! over the schedulers' URLs. Every daemon with the same set of schedulers picks the same one
//! for a task, and when a scheduler leaves only its own tasks move. Daemons use it to route
//! a task; tests and the simulator use it to know where a task went.

use sha2::{Digest as _, Sha256};

/// The weight of `scheduler_url` for the task whose id is `task_hex`; the highest wins.
pub fn weight(scheduler_url: &str, task_hex: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(scheduler_url.as_bytes());
    h.update([0]);
    h.update(task_hex.as_bytes());
    h.finalize().into()
}

/// The scheduler URLs in the order a task tries them: its own first.
pub fn order<'a>(scheduler_urls: &[&'a str], task_hex: &str) -> Vec<&'a str> {
    let mut urls = scheduler_urls.to_vec();
    urls.sort_by_cached_key(|u| std::cmp::Reverse(weight(u, task_hex)));
    urls
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_order_does_not_depend_on_the_order_given() {
        let a = ["http://a:1", "http://b:1", "http://c:1"];
        let b = ["http://c:1", "http://a:1", "http://b:1"];
        for t in ["00", "01", "ff", "task"] {
            assert_eq!(order(&a, t), order(&b, t));
        }
    }

    #[test]
    fn a_leaver_moves_only_its_own_tasks() {
        let all = ["http://a:1", "http://b:1", "http://c:1"];
        let left = ["http://a:1", "http://c:1"];
        let mut moved_to_each = [0, 0];
        for i in 0..300 {
            let t = format!("{i:064x}");
            let before = order(&all, &t)[0];
            let after = order(&left, &t)[0];
            if before != "http://b:1" {
                assert_eq!(
                    before, after,
                    "task {t} moved without its scheduler leaving"
                );
            } else {
                moved_to_each[usize::from(after == "http://c:1")] += 1;
            }
        }
        // b's tasks spread over both who stayed.
        assert!(moved_to_each.iter().all(|&n| n > 0), "{moved_to_each:?}");
    }
}
