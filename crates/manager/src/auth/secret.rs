//! Bearer secrets (access tokens and session cookies): random, shown once, stored hashed.
//!
//! SHA-256 is enough for the stored form: a secret carries 256 bits of entropy, so unlike a
//! password it cannot be guessed from its hash, and a lookup by hash stays one index probe.

use base64::Engine as _;
use rand::Rng as _;
use sha2::{Digest as _, Sha256};

/// What every access token starts with, so a leaked one is recognisable in a scan.
pub const TOKEN_PREFIX: &str = "pln_";

/// A new random secret: `prefix` then 43 URL-safe base64 characters.
pub fn generate(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!(
        "{prefix}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

/// The stored form of a secret.
pub fn digest(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// The part of a token safe to show after creation (prefix and 4 characters).
pub fn hint(secret: &str) -> String {
    let shown: String = secret.chars().take(TOKEN_PREFIX.len() + 4).collect();
    format!("{shown}…")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_distinct_and_their_digest_and_hint_do_not_reveal_them() {
        let a = generate(TOKEN_PREFIX);
        let b = generate(TOKEN_PREFIX);
        assert_ne!(a, b);
        assert_eq!(a.len(), TOKEN_PREFIX.len() + 43);
        assert!(!digest(&a).contains(&a[4..]));
        assert_eq!(digest(&a), digest(&a));
        assert_eq!(hint(&a).chars().count(), 9);
        assert!(a.starts_with(hint(&a).trim_end_matches('…')));
    }
}
