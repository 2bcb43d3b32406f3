//! Pollen's piece store: one sparse content file per task plus a redb metadata database.
//!
//! Why two places: piece bytes are large and written with positioned writes straight into the
//! task's content file; what is known about them (task metadata, which pieces are present and
//! their BLAKE3 digests) is small and must change atomically, so it lives in redb.
//!
//! Invariant: a piece is present only after its bytes were written to the content file *and*
//! its metadata row was committed (in that order, through [`committer`]). After a crash,
//! pieces whose commit did not happen are simply absent and are fetched again; a present piece
//! always has its digest, so any reader can re-verify it. Verified slices of unfinished pieces
//! are known only in memory (module `slices`). Slice bytes reach a content file only through
//! module `slice_write`: a parent's after they matched their hash, nobody's over a verified slice.

#![warn(missing_docs)]

mod committer;
mod content;
mod error;
mod meta;
mod piece_writer;
mod slice_book;
mod slice_sink;
mod slice_write;
mod slices;
mod store;
mod tables;

pub use content::{preallocate, ContentFile};
pub use error::StoreError;
pub use meta::{ContentStamp, TaskMeta};
pub use piece_writer::{PieceWriter, WRITE_CHUNK};
pub use slice_sink::SliceSink;
pub use slice_write::{OriginPut, VerifiedPut};
pub use slices::SliceMark;
pub use store::{Store, TaskEntry, TaskSnapshot};
