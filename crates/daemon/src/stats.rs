//! The daemon's traffic counters (one struct, shared by `Arc`).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use pollen_wire::UploadStats;

/// Counters of one daemon.
#[derive(Debug, Default)]
pub struct DaemonStats {
    /// Bytes read from origins.
    pub origin_bytes: AtomicU64,
    /// Verified piece bytes received from peers.
    pub p2p_download_bytes: AtomicU64,
    /// Pieces read from origins.
    pub pieces_from_origin: AtomicU64,
    /// Pieces received from peers.
    pub pieces_from_peers: AtomicU64,
    /// Pieces that failed verification.
    pub pieces_rejected: AtomicU64,
    /// Blobs (and proxied files) the mirror served whole from the piece store or P2P.
    pub proxy_p2p_served: AtomicU64,
    /// Requests whose P2P path failed and that the mirror finished from the origin.
    pub proxy_fallbacks: AtomicU64,
    /// Responses aborted because the bytes did not match their digest.
    pub proxy_aborted: AtomicU64,
    /// Host sessions open now, one per scheduler in use; connected while above zero.
    pub scheduler_sessions: AtomicUsize,
    /// Upload server counters.
    pub upload: Arc<UploadStats>,
}

impl DaemonStats {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}
