//! Pollen core: the vocabulary every role shares.
//!
//! Task identity, content and piece digests, piece and slice math, the piece bitfield, human-readable
//! sizes, the byte-rate limiter, and the capped accept step every server shares. Nothing here
//! does I/O beyond the rate limiter's sleeps and that accept, so every other crate can depend
//! on it without pulling a runtime into its own design.

#![warn(missing_docs)]

pub mod accept;
pub mod bitfield;
pub mod byte_range;
pub mod credentials;
pub mod digest;
pub mod duration;
pub mod error_kind;
pub mod grant;
pub mod host;
pub mod join;
pub mod piece;
pub mod places;
pub mod rate_limit;
pub mod reconnect;
pub mod rendezvous;
pub mod size;
pub mod slice;
pub mod task_id;

pub use bitfield::Bitfield;
pub use digest::{ContentDigest, DigestError, PieceDigest};
pub use piece::PieceLayout;
pub use rate_limit::RateLimiter;
pub use size::{parse_size, SizeError};
pub use slice::{SliceHash, SliceLayout, SLICE_LENGTH};
pub use task_id::{TaskId, TaskIdError, TaskKey};
