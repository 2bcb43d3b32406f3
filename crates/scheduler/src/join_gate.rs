//! Who may be a seed here. A seed's reports of a task's facts count and it is sent trigger
//! headers, so the claim is checked: under mutual TLS the seed role in its certificate, and
//! otherwise a join token ([`pollen_core::join`]) whose hash is among those this scheduler
//! accepts — the seed tokens its manager lists (refreshed with every keepalive, so a revoked
//! token stops working within one), and those in its own `seed_join_tokens` file (for a
//! scheduler without a manager). `open_join` lets any plain-TCP claim stand.

use std::collections::HashSet;

use pollen_tls::incoming::TokenShown;

/// The seed tokens this scheduler accepts, as hashes.
#[derive(Debug, Default)]
pub struct JoinGate {
    local: HashSet<String>,
    from_manager: HashSet<String>,
}

impl JoinGate {
    /// Replaces the tokens from this scheduler's own file.
    pub fn set_local(&mut self, hashes: HashSet<String>) {
        self.local = hashes;
    }

    /// Replaces the tokens the manager lists; true when they changed.
    pub fn set_from_manager(&mut self, hashes: HashSet<String>) -> bool {
        let changed = self.from_manager != hashes;
        self.from_manager = hashes;
        changed
    }

    /// What a request that sent `hash` (or none) showed.
    pub fn shown(&self, hash: Option<&str>) -> TokenShown {
        match hash {
            None => TokenShown::None,
            Some(h) if self.local.contains(h) || self.from_manager.contains(h) => {
                TokenShown::Accepted
            }
            Some(_) => TokenShown::Refused,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_counts_from_either_list_until_the_manager_drops_it() {
        let (a, b) = (
            pollen_core::join::hash("local-token-0001"),
            pollen_core::join::hash("manager-token-01"),
        );
        let mut g = JoinGate::default();
        assert_eq!(g.shown(None), TokenShown::None);
        assert_eq!(g.shown(Some(&a)), TokenShown::Refused);
        g.set_local([a.clone()].into());
        assert!(g.set_from_manager([b.clone()].into()));
        assert_eq!(g.shown(Some(&a)), TokenShown::Accepted);
        assert_eq!(g.shown(Some(&b)), TokenShown::Accepted);
        assert!(!g.set_from_manager([b.clone()].into()));
        assert!(g.set_from_manager(HashSet::new()), "revoked at the manager");
        assert_eq!(g.shown(Some(&b)), TokenShown::Refused);
        assert_eq!(g.shown(Some(&a)), TokenShown::Accepted);
    }
}
