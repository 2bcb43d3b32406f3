//! Group commit of finished pieces into redb.
//!
//! Every finished piece needs a durable metadata commit before it counts as present. One
//! commit per piece would cost an fsync each; instead a dedicated thread takes every piece
//! queued since its last commit and writes them in one transaction, then answers each caller.
//! Under load the batch grows, so the fsync cost per piece falls as throughput rises.

use std::sync::mpsc;
use std::sync::Arc;

use pollen_core::{PieceDigest, TaskId};
use redb::Database;
use tokio::sync::oneshot;

use crate::error::StoreError;
use crate::tables::PIECES;

pub(crate) struct PieceCommit {
    pub task: TaskId,
    pub number: u32,
    pub digest: PieceDigest,
    pub done: oneshot::Sender<Result<(), StoreError>>,
}

/// Starts the committer thread; it ends when every sender is dropped.
pub(crate) fn spawn(
    db: Arc<Database>,
) -> Result<(mpsc::Sender<PieceCommit>, std::thread::JoinHandle<()>), StoreError> {
    let (tx, rx) = mpsc::channel::<PieceCommit>();
    let handle = std::thread::Builder::new()
        .name("pollen-committer".into())
        .spawn(move || {
            while let Ok(first) = rx.recv() {
                let mut batch = vec![first];
                batch.extend(rx.try_iter());
                let result = commit(&db, &batch);
                for item in batch {
                    let _ = item.done.send(result.clone());
                }
            }
        })
        .map_err(StoreError::io)?;
    Ok((tx, handle))
}

fn commit(db: &Database, batch: &[PieceCommit]) -> Result<(), StoreError> {
    let txn = db.begin_write()?;
    {
        let mut table = txn.open_table(PIECES)?;
        for p in batch {
            table.insert((p.task.0, p.number), p.digest.0)?;
        }
    }
    txn.commit()?;
    Ok(())
}
