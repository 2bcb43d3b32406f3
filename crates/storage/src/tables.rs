//! The store's redb tables, named in one place below everything that opens them.

use redb::TableDefinition;

/// Task id to its metadata (`meta::TaskMeta`, encoded).
pub(crate) const TASKS: TableDefinition<'static, [u8; 32], &'static [u8]> =
    TableDefinition::new("tasks");
/// (task id, piece number) to the piece's digest: the pieces held.
pub(crate) const PIECES: TableDefinition<'static, ([u8; 32], u32), [u8; 32]> =
    TableDefinition::new("pieces");
