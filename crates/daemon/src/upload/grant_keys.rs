//! The grant keys of the schedulers this daemon holds host sessions with: what its upload
//! port checks a grant for a private task against (see `pollen_core::grant`).
//!
//! A key is learnt only from a scheduler's host session (over mutual TLS when it is on), so
//! no other host can add one. Keys of schedulers that left or restarted are kept a while
//! (the most recent [`KEPT`]): children may still hold grants they signed.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::{Arc, RwLock};

use pollen_core::grant::{self, Grant, GrantKey};
use pollen_core::TaskId;
use tracing::{debug, warn};

/// Most keys kept.
const KEPT: usize = 16;

/// The keys learnt, newest last; cheap to clone and share.
#[derive(Clone, Default)]
pub(crate) struct GrantKeys(Arc<RwLock<VecDeque<GrantKey>>>);

impl GrantKeys {
    /// Records a key a scheduler sent on its host session; a malformed one is ignored.
    pub fn learn(&self, key: &[u8]) {
        let Ok(key) = GrantKey::try_from(key) else {
            warn!(
                len = key.len(),
                "ignoring a scheduler grant key that is not 32 bytes"
            );
            return;
        };
        let mut keys = self.0.write().unwrap_or_else(|e| e.into_inner());
        if keys.contains(&key) {
            return;
        }
        if keys.len() == KEPT {
            keys.pop_front();
        }
        keys.push_back(key);
    }

    /// Whether one of the keys signed `g` for `task` and the host at `peer`, unexpired.
    pub fn admits(&self, task: &TaskId, peer: IpAddr, g: &Grant) -> bool {
        let keys: Vec<GrantKey> = self
            .0
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .copied()
            .collect();
        grant::verify(&keys, task, peer, g, grant::unix_now())
            .inspect_err(|e| debug!(task = %task, %peer, error = %e, "grant refused"))
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pollen_core::grant::GrantSigner;

    #[test]
    fn only_learnt_keys_admit_and_the_oldest_are_forgotten() {
        let keys = GrantKeys::default();
        let task = TaskId([1; 32]);
        let peer: IpAddr = "10.0.0.2".parse().expect("ip");
        let first = GrantSigner::generate();
        let g = first.sign(&task, peer, u64::MAX);
        assert!(!keys.admits(&task, peer, &g), "nothing learnt yet");
        keys.learn(&[1, 2, 3]);
        keys.learn(&first.public_key());
        assert!(keys.admits(&task, peer, &g));
        for _ in 0..KEPT {
            keys.learn(&GrantSigner::generate().public_key());
        }
        assert!(
            !keys.admits(&task, peer, &g),
            "forgotten after {KEPT} newer keys"
        );
    }
}
