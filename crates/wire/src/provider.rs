//! What the upload server serves from: the [`PieceProvider`] the daemon implements over its
//! store, the [`ServedSlice`] it hands out, and the [`UploadStats`] the server keeps.

use std::fs::File;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::Arc;
use std::time::Duration;

use pollen_core::grant::Grant;
use pollen_core::{Bitfield, SliceHash, TaskId};

/// Slices sent this shortly before their connection ended are reported as maybe not
/// delivered: a child passes a slice on within about a second (it refreshes its parents'
/// bitfields every 300 ms), so one that died sooner after may have taken the only copy.
pub const RECENT: Duration = Duration::from_secs(1);

/// A slice the provider can serve, with everything needed to send it.
pub struct ServedSlice {
    /// The task's content file.
    pub file: Arc<File>,
    /// Offset of the slice in the file.
    pub offset: u64,
    /// Slice length.
    pub length: u32,
    /// The slice's piece.
    pub piece: u32,
    /// The hashes of every slice of that piece; `None` when they must first be computed
    /// (the server then calls [`PieceProvider::slice_hashes`] off the async runtime).
    pub hashes: Option<Arc<[SliceHash]>>,
}

/// What the upload server serves from: the daemon's piece store.
pub trait PieceProvider: Send + Sync + 'static {
    /// The slices held for a task, or `None` if the task is unknown.
    fn bitfield(&self, task: &TaskId) -> Option<Bitfield>;
    /// A verified slice (numbered across the task), or `None` if it is not held or not
    /// offered now. Must not block.
    fn slice(&self, task: &TaskId, slice: u32) -> Option<ServedSlice>;
    /// The slice hashes of a held piece, computed from its bytes if need be. May block: the
    /// server calls it off the async runtime.
    fn slice_hashes(&self, _task: &TaskId, _piece: u32) -> Option<Arc<[SliceHash]>> {
        None
    }
    /// Whether `task` is private: served only on a connection that showed a grant for it
    /// (see `pollen_core::grant`).
    fn is_private(&self, _task: &TaskId) -> bool {
        false
    }
    /// Whether `grant` lets the host connected from `peer` fetch `task`.
    fn admits(&self, _task: &TaskId, _peer: std::net::IpAddr, _grant: &Grant) -> bool {
        false
    }
    /// Called when a slice was sent in full (for last-access and accounting).
    fn served(&self, _task: &TaskId, _bytes: u64) {}
    /// Slices that [`slice`](Self::slice) handed out but that may not have reached a live
    /// peer: sending failed, or the connection ended within [`RECENT`] of sending them.
    fn not_delivered(&self, _task: &TaskId, _slices: &[u32]) {}
}

/// Counters of one upload server.
#[derive(Debug, Default)]
pub struct UploadStats {
    /// Slice bytes sent.
    pub bytes: AtomicU64,
    /// Slices sent in full.
    pub slices: AtomicU64,
    /// Connections open now.
    pub connections: AtomicUsize,
    /// Connections dropped for protocol errors.
    pub protocol_errors: AtomicU64,
    /// Connections closed for sending no request in time.
    pub timed_out: AtomicU64,
    /// Requests for a private task on a connection that showed no valid grant for it.
    pub ungranted: AtomicU64,
}
