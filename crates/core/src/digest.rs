//! Content and piece digests.
//!
//! A content digest (`sha256:HEX`) names a whole blob, as OCI registries and `pollen get
//! --digest` do. A piece digest is the BLAKE3 hash of one piece, computed by whoever read the
//! piece from the origin and checked by every receiver before the piece is stored or served.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest as _, Sha256};

/// Why a digest string was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum DigestError {
    /// Only `sha256:` is supported today.
    #[error("unsupported digest algorithm {0:?} (expected sha256:<64 hex digits>)")]
    UnsupportedAlgorithm(String),
    /// The hex part is not 64 hex digits.
    #[error("malformed digest {0:?} (expected sha256:<64 hex digits>)")]
    Malformed(String),
}

/// The sha256 of a whole blob.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ContentDigest(pub [u8; 32]);

impl ContentDigest {
    /// Hashes a byte slice (for tests and small content).
    pub fn of(bytes: &[u8]) -> Self {
        Self(Sha256::digest(bytes).into())
    }

    /// Lower-case hex of the hash, without the algorithm prefix.
    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl FromStr for ContentDigest {
    type Err = DigestError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let (algo, hex_part) = s
            .split_once(':')
            .ok_or_else(|| DigestError::Malformed(s.to_string()))?;
        if !algo.eq_ignore_ascii_case("sha256") {
            return Err(DigestError::UnsupportedAlgorithm(algo.to_string()));
        }
        let mut out = [0u8; 32];
        if hex_part.len() != 64 || hex::decode_to_slice(hex_part, &mut out).is_err() {
            return Err(DigestError::Malformed(s.to_string()));
        }
        Ok(Self(out))
    }
}

impl fmt::Display for ContentDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex())
    }
}

impl fmt::Debug for ContentDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// The BLAKE3 hash of one piece.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct PieceDigest(pub [u8; 32]);

impl PieceDigest {
    /// Hashes a whole piece held in memory.
    pub fn of(bytes: &[u8]) -> Self {
        Self(*blake3::hash(bytes).as_bytes())
    }

    /// Builds a digest from bytes received on the wire or read from the store.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        bytes.try_into().ok().map(Self)
    }
}

impl From<blake3::Hash> for PieceDigest {
    fn from(h: blake3::Hash) -> Self {
        Self(*h.as_bytes())
    }
}

impl fmt::Debug for PieceDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "blake3:{}", hex::encode(&self.0[..8]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn piece_digests_convert_and_show_their_algorithm() {
        let d = PieceDigest::of(b"piece");
        assert_eq!(PieceDigest::from(blake3::hash(b"piece")), d);
        assert_eq!(PieceDigest::from_slice(&d.0), Some(d));
        assert_eq!(PieceDigest::from_slice(&d.0[..31]), None);
        assert_eq!(
            format!("{d:?}"),
            format!("blake3:{}", hex::encode(&d.0[..8]))
        );
        let c = ContentDigest([0xab; 32]);
        assert_eq!(format!("{c:?}"), format!("sha256:{}", "ab".repeat(32)));
    }

    #[test]
    fn content_digest_round_trips_and_rejects_garbage() {
        let d = ContentDigest::of(b"hello");
        let parsed: ContentDigest = d.to_string().parse().expect("round trip");
        assert_eq!(parsed, d);
        assert!(matches!(
            "md5:abcd".parse::<ContentDigest>(),
            Err(DigestError::UnsupportedAlgorithm(_))
        ));
        assert!(matches!(
            "sha256:zz".parse::<ContentDigest>(),
            Err(DigestError::Malformed(_))
        ));
        assert!("nocolon".parse::<ContentDigest>().is_err());
    }
}
