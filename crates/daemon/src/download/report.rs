//! What a fetcher (origin or parent) tells the download run it works for, kept below both
//! so neither imports the other.

use std::sync::Arc;

use pollen_core::PieceDigest;

use crate::download::piece_claims::PieceClaims;

/// What fetchers tell the run.
pub(crate) enum Report {
    /// The origin fetcher created the task (it learnt the length first).
    Created(Arc<PieceClaims>),
    /// A piece was verified and committed.
    Piece {
        number: u32,
        digest: PieceDigest,
        /// The parent it came from and the milliseconds it took (request to verified);
        /// `None` when read from the origin.
        parent: Option<(String, u32)>,
    },
    /// The origin fetcher starts attempt `attempt` of `of` after a failed transfer.
    OriginRetry { attempt: u32, of: u32 },
}
