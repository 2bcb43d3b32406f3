//! The in-memory record of one task's slices (see [`crate::slices`] for what it is for and
//! the operations on it): which slices are held, which pieces are begun, which slices are
//! being written, and the slice hashes computed so far. It knows nothing of the store.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use pollen_core::{Bitfield, SliceHash, SliceLayout};

/// The slices of one task.
pub(crate) struct SliceBook {
    pub(crate) hashes: HashMap<u32, Arc<[SliceHash]>>,
    /// Slices that can be served: every slice of a present piece and every verified slice
    /// of an unfinished one. Kept up to date as slices are verified and pieces committed or
    /// dropped, so nothing is derived per request.
    pub(crate) held: Bitfield,
    /// Unfinished pieces with a verified slice.
    pub(crate) begun: HashSet<u32>,
    /// Slices a writer is writing right now (see `crate::slice_write`).
    pub(crate) writing: HashSet<u32>,
}

impl SliceBook {
    /// The book of a task whose pieces `present` are held.
    pub(crate) fn new(layout: SliceLayout, present: &Bitfield) -> Self {
        let mut held = Bitfield::new(layout.count());
        for n in present.iter_set() {
            layout.range_of(n).for_each(|g| held.set(g));
        }
        Self {
            hashes: HashMap::new(),
            held,
            begun: HashSet::new(),
            writing: HashSet::new(),
        }
    }
}
