//! Who is asking, and what they may do.
//!
//! Two ways in: a console session (a cookie, made by signing in with a password) and a
//! personal access token (`Authorization: Bearer pln_…`). Both resolve to a [`Principal`]:
//! the user, their role, and — for a token — the scopes it was limited to. Secrets are random
//! 32-byte values shown once; only their SHA-256 is stored, so a leaked database holds no
//! usable credential. Passwords are argon2id hashes. Failed attempts are throttled per client
//! address (`throttle`).

pub mod password;
pub mod permission;
pub mod sealed;
pub mod secret;
pub mod throttle;

pub use permission::{Access, Principal, Resource, Role};
