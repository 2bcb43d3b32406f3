//! Origin back-ends: where content comes from when no peer has it.
//!
//! Today: HTTP and HTTPS (rustls, no system OpenSSL), with Range requests so a partial task
//! resumes from its first missing piece. The caller sees a byte stream plus what the origin
//! said about the content (length, ETag, Last-Modified); errors say whether the origin refused
//! (a status to show the user) or the transfer broke (worth a retry).

mod error;
mod http;

pub use error::SourceError;
pub use http::{client, error_chain, HttpSource, OriginResponse};
