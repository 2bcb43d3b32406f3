//! Upload grants: who may fetch a private task from a peer's upload port.
//!
//! A private task (see `task_id`) may be read only by callers its upstream let in. Whoever
//! holds a copy must not hand it to any host that asks by id, so the upload port serves a
//! private task only on a connection that first showed a *grant*: the scheduler's Ed25519
//! signature over the task, the address the child's host session comes from, and an expiry a
//! few minutes ahead. The scheduler gives grants only to peers it registered for that task
//! (an honest daemon registers only after the upstream let its caller in), and parents know
//! the schedulers' public keys from their host sessions. A grant shown from another address,
//! for another task, after its expiry or under an unknown key admits nothing, so a hostile
//! parent that is shown one cannot replay it elsewhere.

use std::net::IpAddr;

use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair, UnparsedPublicKey, ED25519};

use crate::TaskId;

/// An Ed25519 public key.
pub type GrantKey = [u8; 32];

/// A scheduler's signature that the child at one address may fetch one task until `expires`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Grant {
    /// Unix seconds after which it admits nothing.
    pub expires: u64,
    /// Ed25519 signature over [`signed_bytes`].
    pub signature: [u8; 64],
}

/// Why a grant admits nothing.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum GrantError {
    /// Past its expiry.
    #[error("the upload grant expired")]
    Expired,
    /// No trusted key signed these terms (another task, another address, a forgery).
    #[error("the upload grant is not signed for this task and address by a known scheduler")]
    BadSignature,
}

/// Seconds since the Unix epoch now, the clock grants' expiries are read against (0 if the
/// clock is before 1970, which expires every grant).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// What a grant signs: a fixed context, the task, the child's address (IPv4 mapped into
/// IPv6, so both forms of one address agree) and the expiry.
pub fn signed_bytes(task: &TaskId, child: IpAddr, expires: u64) -> Vec<u8> {
    let ip = match child {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    };
    let mut m = Vec::with_capacity(24 + 32 + 16 + 8);
    m.extend_from_slice(b"pollen upload grant v1\0");
    m.extend_from_slice(&task.0);
    m.extend_from_slice(&ip.octets());
    m.extend_from_slice(&expires.to_be_bytes());
    m
}

/// A scheduler's signing key, made fresh at start (grants live minutes; a restarted
/// scheduler sends its new public key on every host session).
pub struct GrantSigner {
    pair: Ed25519KeyPair,
}

impl GrantSigner {
    /// A new random key.
    pub fn generate() -> Self {
        let rng = SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).expect("the system RNG works");
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("a key ring just made");
        Self { pair }
    }

    /// The public key parents check grants with.
    pub fn public_key(&self) -> GrantKey {
        let mut k = [0u8; 32];
        k.copy_from_slice(self.pair.public_key().as_ref());
        k
    }

    /// A grant for `child` to fetch `task` until `expires` (Unix seconds).
    pub fn sign(&self, task: &TaskId, child: IpAddr, expires: u64) -> Grant {
        let sig = self.pair.sign(&signed_bytes(task, child, expires));
        let mut signature = [0u8; 64];
        signature.copy_from_slice(sig.as_ref());
        Grant { expires, signature }
    }
}

/// Checks that one of `keys` signed `grant` for `task` and `child`, and that it has not
/// expired at `now` (Unix seconds).
pub fn verify(
    keys: &[GrantKey],
    task: &TaskId,
    child: IpAddr,
    grant: &Grant,
    now: u64,
) -> Result<(), GrantError> {
    if now > grant.expires {
        return Err(GrantError::Expired);
    }
    let msg = signed_bytes(task, child, grant.expires);
    keys.iter()
        .any(|k| {
            UnparsedPublicKey::new(&ED25519, k)
                .verify(&msg, &grant.signature)
                .is_ok()
        })
        .then_some(())
        .ok_or(GrantError::BadSignature)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_grant_clock_is_the_real_one() {
        // 2020-01-01 and 2100-01-01: a clock read as 0 or 1 expires every grant at once.
        let now = unix_now();
        assert!((1_577_836_800..4_102_444_800).contains(&now), "{now}");
    }

    #[test]
    fn a_grant_admits_only_its_task_address_and_time_under_a_known_key() {
        let s = GrantSigner::generate();
        let keys = [GrantSigner::generate().public_key(), s.public_key()];
        let task = TaskId([7; 32]);
        let child: IpAddr = "10.1.2.3".parse().expect("ip");
        let g = s.sign(&task, child, 1_000);
        assert_eq!(verify(&keys, &task, child, &g, 999), Ok(()));
        // Valid through its expiry second, expired after it.
        assert_eq!(verify(&keys, &task, child, &g, 1_000), Ok(()));
        let mapped: IpAddr = "::ffff:10.1.2.3".parse().expect("ip");
        assert_eq!(verify(&keys, &task, mapped, &g, 999), Ok(()));
        assert_eq!(
            verify(&keys, &task, child, &g, 1_001),
            Err(GrantError::Expired)
        );
        let elsewhere: IpAddr = "10.1.2.4".parse().expect("ip");
        assert_eq!(
            verify(&keys, &task, elsewhere, &g, 999),
            Err(GrantError::BadSignature)
        );
        assert_eq!(
            verify(&keys, &TaskId([8; 32]), child, &g, 999),
            Err(GrantError::BadSignature)
        );
        let stretched = Grant {
            expires: 5_000,
            ..g
        };
        assert_eq!(
            verify(&keys, &task, child, &stretched, 999),
            Err(GrantError::BadSignature)
        );
        assert_eq!(
            verify(&keys[..1], &task, child, &g, 999),
            Err(GrantError::BadSignature),
            "an unknown scheduler's key"
        );
    }
}
