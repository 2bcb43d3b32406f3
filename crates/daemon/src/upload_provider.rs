//! Serves the upload server from the piece store: only committed, verified pieces.

use std::sync::Arc;

use pollen_core::{Bitfield, TaskId};
use pollen_storage::Store;
use pollen_wire::{PieceProvider, ServedPiece};

pub(crate) struct StoreProvider(pub Arc<Store>);

impl PieceProvider for StoreProvider {
    fn bitfield(&self, task: &TaskId) -> Option<Bitfield> {
        self.0.get(task).map(|e| e.bitfield())
    }

    fn piece(&self, task: &TaskId, number: u32) -> Option<ServedPiece> {
        let entry = self.0.get(task)?;
        let digest = entry.piece_digest(number)?;
        let layout = entry.layout();
        Some(ServedPiece {
            file: entry.content().file().clone(),
            offset: layout.offset(number),
            length: u32::try_from(layout.length(number)).ok()?,
            digest,
        })
    }
}
