//! Join tokens: what a scheduler or a seed shows, where there is no mutual TLS, to be let in
//! as one.
//!
//! Under mutual TLS a role is written in the host's certificate. Without it, a scheduler
//! registering with the manager, and a seed opening its session with the manager or a
//! scheduler, sends a token the manager issued (stored there as a SHA-256 hash, revocable,
//! shown once) as the gRPC metadata [`METADATA`]. The server hashes what it is shown and
//! looks the hash up among the live tokens for that role. A token is a secret: it goes only
//! in that metadata, and its `Debug` form never shows it.

use std::collections::HashSet;
use std::path::Path;

use sha2::{Digest as _, Sha256};

/// The gRPC metadata key a join token travels in.
pub const METADATA: &str = "x-pollen-join-token";

/// What every join token the manager issues starts with, so a leaked one is recognisable.
pub const PREFIX: &str = "pjt_";

/// Shortest and longest token accepted (the manager's are 47 characters).
const LENGTHS: std::ops::RangeInclusive<usize> = 16..=256;

/// The stored form of a token: lowercase hex SHA-256. A token carries 256 random bits, so
/// the hash cannot be turned back into it, and a lookup stays one probe.
pub fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// A join token that is well formed: 16 to 256 visible ASCII characters.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinToken(String);

impl std::fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JoinToken(<redacted>)")
    }
}

/// Why a token or a token file was not taken. Never carries the token itself.
#[derive(Debug, thiserror::Error)]
pub enum JoinTokenError {
    /// The token is too short, too long or holds characters a token never has (its length).
    #[error("a join token must be 16 to 256 visible ASCII characters (no spaces); this one is {0} characters or holds others")]
    Malformed(usize),
    /// The file could not be read.
    #[error("cannot read the join token file {path}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// One line of a file of accepted tokens is neither a token nor `sha256:HEX`.
    #[error("{path} line {line}: {why}")]
    Line {
        /// The file.
        path: String,
        /// The line's number, from 1.
        line: usize,
        /// What is wrong with it.
        why: String,
    },
    /// The file holds no token.
    #[error("{path} holds no token")]
    Empty {
        /// The file.
        path: String,
    },
}

impl JoinToken {
    /// Takes `text` with surrounding whitespace trimmed.
    pub fn parse(text: &str) -> Result<Self, JoinTokenError> {
        let t = text.trim();
        if !LENGTHS.contains(&t.len()) || !t.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(JoinTokenError::Malformed(t.chars().count()));
        }
        Ok(Self(t.to_string()))
    }

    /// Reads the token from a file holding it alone (a trailing newline is fine).
    pub fn read(path: &Path) -> Result<Self, JoinTokenError> {
        let text = std::fs::read_to_string(path).map_err(|source| JoinTokenError::Read {
            path: path.display().to_string(),
            source,
        })?;
        if text.trim().is_empty() {
            return Err(JoinTokenError::Empty {
                path: path.display().to_string(),
            });
        }
        Self::parse(&text)
    }

    /// The secret, to put in [`METADATA`] and nowhere else.
    pub fn secret(&self) -> &str {
        &self.0
    }

    /// Its stored form.
    pub fn hash(&self) -> String {
        hash(&self.0)
    }
}

/// The hashes of the tokens in a file a server accepts: one per line, either the token
/// itself or `sha256:HEX` (so the file need not hold secrets); blank lines and lines
/// starting with `#` are skipped.
pub fn read_accepted(path: &Path) -> Result<HashSet<String>, JoinTokenError> {
    let text = std::fs::read_to_string(path).map_err(|source| JoinTokenError::Read {
        path: path.display().to_string(),
        source,
    })?;
    let mut out = HashSet::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = |why: &str| JoinTokenError::Line {
            path: path.display().to_string(),
            line: i + 1,
            why: why.to_string(),
        };
        match line.strip_prefix("sha256:") {
            Some(h) if h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()) => {
                out.insert(h.to_ascii_lowercase());
            }
            Some(_) => return Err(bad("a sha256: line needs 64 hex digits")),
            None => {
                let t = JoinToken::parse(line).map_err(|e| bad(&e.to_string()))?;
                out.insert(t.hash());
            }
        }
    }
    if out.is_empty() {
        return Err(JoinTokenError::Empty {
            path: path.display().to_string(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_trimmed_checked_and_never_shown_by_debug() {
        let t = JoinToken::parse("  pjt_abcdefghijklmnopqrstuvwxyz\n").expect("good");
        assert_eq!(t.secret(), "pjt_abcdefghijklmnopqrstuvwxyz");
        assert_eq!(t.hash(), hash("pjt_abcdefghijklmnopqrstuvwxyz"));
        assert_eq!(t.hash().len(), 64);
        assert_eq!(format!("{t:?}"), "JoinToken(<redacted>)");
        for bad in [
            "short",
            "has a space inside it ok",
            "pjt_é_abcdefghijklmnop",
        ] {
            let e = JoinToken::parse(bad).expect_err(bad).to_string();
            assert!(!e.contains(bad), "the error must not echo the token: {e}");
        }
        assert!(JoinToken::parse(&"x".repeat(257)).is_err());
    }

    #[test]
    fn an_accept_file_takes_tokens_and_hashes_and_says_which_line_is_wrong() {
        let dir = std::env::temp_dir().join(format!("pollen-join-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("accepted");
        let token = "pjt_0123456789abcdef0123";
        let other = hash("pjt_another_token_here");
        std::fs::write(
            &path,
            format!("# seeds\n{token}\n\nsha256:{}\n", other.to_uppercase()),
        )
        .expect("write");
        let got = read_accepted(&path).expect("read");
        assert_eq!(got, [hash(token), other].into_iter().collect());
        std::fs::write(&path, "# seeds\nsha256:abc\n").expect("write");
        let e = read_accepted(&path).expect_err("bad hash").to_string();
        assert!(e.contains("line 2"), "{e}");
        std::fs::write(&path, "# nothing\n").expect("write");
        assert!(matches!(
            read_accepted(&path),
            Err(JoinTokenError::Empty { .. })
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_unreadable_token_file_keeps_the_os_error_as_its_cause() {
        let e = JoinToken::read(Path::new("/nonexistent/pollen-token")).expect_err("no file");
        assert!(e.to_string().contains("/nonexistent/pollen-token"), "{e}");
        let cause = std::error::Error::source(&e).expect("the OS error");
        assert_eq!(
            cause.downcast_ref::<std::io::Error>().map(|io| io.kind()),
            Some(std::io::ErrorKind::NotFound)
        );
    }
}
