//! Pollen's data plane: the framed binary protocol peers use to move pieces, slice by slice.
//!
//! Goals: move piece bytes with as few copies as the OS allows (`sendfile` on the sending
//! side), pipeline requests on one connection, and be paranoid about untrusted input (every
//! length is bounded before anything is allocated). Optional mutual TLS authenticates both
//! ends. Non-goals: discovery and integrity — the scheduler publishes piece digests and
//! receivers verify every slice against them.
//!
//! Frames are `tag: u8 | length: u32 BE | value`; see [`codec`] for the messages.

#![warn(missing_docs)]

pub mod client;
pub mod codec;
mod connection;
pub mod provider;
pub mod server;

pub use client::{ClientTls, PieceClient, PieceResponse};
pub use codec::{Message, SliceHeader, WireError};
pub use provider::{PieceProvider, ServedSlice, UploadStats};
pub use server::UploadServer;
