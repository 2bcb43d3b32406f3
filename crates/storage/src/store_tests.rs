//! The piece store's own tests: tasks survive restarts, files changed behind the store's
//! back are noticed, and the bookkeeping the daemon reads is right.

use super::*;
use crate::piece_writer::PieceWriter;

fn meta(len: u64) -> TaskMeta {
    let layout = PieceLayout::for_content(len);
    TaskMeta {
        url: "http://h/x".into(),
        content_length: len,
        piece_length: layout.piece_length(),
        ..Default::default()
    }
}

#[tokio::test]
async fn committed_pieces_survive_reopening_and_uncommitted_ones_do_not() {
    let dir = tempfile::tempdir().expect("tempdir");
    let id = TaskId([1; 32]);
    let data: Vec<u8> = (0..(9u32 << 20)).map(|i| (i % 251) as u8).collect();
    {
        let store = Store::open(dir.path()).expect("open");
        let entry = store
            .ensure_task(id, meta(data.len() as u64))
            .expect("task");
        let layout = entry.layout();
        assert_eq!(layout.piece_count(), 3);
        for n in [0u32, 2] {
            let range = layout.offset(n) as usize..(layout.offset(n) + layout.length(n)) as usize;
            let mut w = PieceWriter::new(entry.clone(), n);
            w.write(&data[range.clone()]).await.expect("write");
            let (d, _) = w.finish().await.expect("digest");
            assert_eq!(d, PieceDigest::of(&data[range]));
            store.commit_piece(&entry, n, d).await.expect("commit");
        }
        // Piece 1 is written but never committed: it must not count after a restart.
        let mut w = PieceWriter::new(entry.clone(), 1);
        w.write(&[0u8; 16]).await.expect("write");
        assert!(
            entry.held_pieces_checked(),
            "this process verified every piece"
        );
    }
    let store = Store::open(dir.path()).expect("reopen");
    let entry = store.get(&id).expect("task survives");
    assert_eq!(entry.bitfield().iter_set().collect::<Vec<_>>(), vec![0, 2]);
    assert!(
        !entry.held_pieces_checked(),
        "pieces held from before a restart are not trusted until re-read"
    );
    assert!(!entry.held_bytes_trusted());
    entry.mark_held_pieces_checked();
    assert!(entry.held_pieces_checked() && entry.held_bytes_trusted());
    assert!(entry.piece_digest(1).is_none());
    assert!(!entry.is_complete());
    // A piece found bad later is dropped, durably.
    store.drop_pieces(&entry, &[2]).expect("drop");
    assert_eq!(entry.bitfield().iter_set().collect::<Vec<_>>(), vec![0]);
    drop(store);
    let store = Store::open(dir.path()).expect("reopen");
    let entry = store.get(&id).expect("task survives");
    assert_eq!(entry.bitfield().iter_set().collect::<Vec<_>>(), vec![0]);
    assert!(entry.piece_digest(2).is_none());
    store.mark_complete(&entry).expect("complete");
    drop(store);
    let store = Store::open(dir.path()).expect("reopen again");
    let entry = store.get(&id).expect("task");
    assert!(entry.is_complete());
    assert!(
        entry.held_pieces_checked(),
        "a complete task is guarded by its stamp instead"
    );
    store.remove_task(&id).expect("remove");
    assert!(store.get(&id).is_none());
    drop(store);
    assert!(Store::open(dir.path()).expect("reopen").get(&id).is_none());
}

#[tokio::test]
async fn a_complete_task_knows_when_its_file_was_changed_behind_its_back() {
    use std::io::Write;
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open");
    let id = TaskId([2; 32]);
    let entry = store.ensure_task(id, meta(1000)).expect("task");
    entry.content().write_at(&[1u8; 1000], 0).expect("write");
    assert!(!entry.content_unchanged(), "not complete yet");
    store.mark_complete(&entry).expect("complete");
    assert!(entry.content_unchanged());
    // Someone appends to the file through another handle (a hard-linked output).
    std::thread::sleep(std::time::Duration::from_millis(20));
    let mut other = std::fs::OpenOptions::new()
        .append(true)
        .open(store.content_path(&id))
        .expect("open");
    other.write_all(b"edit").expect("append");
    assert!(!entry.content_unchanged(), "an append is seen");
    // Found intact again (the caller re-read it): stamped anew.
    store.mark_complete(&entry).expect("restamp");
    assert!(entry.content_unchanged());
    // The stamp survives a restart.
    drop(entry);
    drop(store);
    let store = Store::open(dir.path()).expect("reopen");
    let entry = store.get(&id).expect("task");
    assert!(
        !entry.content_unchanged(),
        "reopening cut the file back to its length"
    );
}

#[tokio::test]
async fn the_bookkeeping_the_daemon_reads_is_kept() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open");
    let data = vec![5u8; 3 << 20];
    let id = TaskId([7; 32]);
    let private = TaskMeta {
        private: true,
        ..meta(data.len() as u64)
    };
    let entry = store.ensure_task(id, private).expect("task");
    assert!(entry.is_private());
    let public = store
        .ensure_task(TaskId([8; 32]), meta(10))
        .expect("another task");
    assert!(!public.is_private());
    let mut listed: Vec<TaskId> = store.tasks().iter().map(|e| e.id).collect();
    listed.sort_by_key(|t| t.0);
    assert_eq!(listed, vec![id, TaskId([8; 32])]);

    // The digests of the pieces present, and only those.
    let layout = entry.layout();
    let n = layout.piece_count() - 1;
    let range = layout.offset(n) as usize..(layout.offset(n) + layout.length(n)) as usize;
    let mut w = PieceWriter::new(entry.clone(), n);
    w.write(&data[range]).await.expect("write");
    let (d, _) = w.finish().await.expect("digest");
    store.commit_piece(&entry, n, d).await.expect("commit");
    assert_eq!(entry.present_digests(), vec![(n, d)]);

    // Asking for the same task again keeps it, pieces and all; the same task at another
    // length (the origin changed) starts over.
    let again = store
        .ensure_task(id, meta(data.len() as u64))
        .expect("again");
    assert!(Arc::ptr_eq(&again, &entry), "the held task was replaced");
    let other = store.ensure_task(id, meta(1 << 20)).expect("changed");
    assert!(other.present_digests().is_empty());

    // A use is stamped with the time.
    let before = now_unix();
    store
        .update_meta(&other, |m| m.last_access = 0)
        .expect("reset");
    store.touch(&other).expect("touch");
    let stamped = other.snapshot().meta.last_access;
    assert!(stamped >= before && before > 1_600_000_000, "{stamped}");
}

#[tokio::test]
async fn removing_a_task_whose_file_is_gone_succeeds_and_other_failures_are_reported() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open");
    let gone = TaskId([1; 32]);
    store.ensure_task(gone, meta(10)).expect("task");
    std::fs::remove_file(store.content_path(&gone)).expect("rm");
    store
        .remove_task(&gone)
        .expect("a missing file is already removed");
    // A directory where the content file should be cannot be removed as a file.
    let stuck = TaskId([2; 32]);
    store.ensure_task(stuck, meta(10)).expect("task");
    let path = store.content_path(&stuck);
    std::fs::remove_file(&path).expect("rm");
    std::fs::create_dir(&path).expect("dir in its place");
    assert!(store.remove_task(&stuck).is_err());
}

#[tokio::test]
async fn a_piece_row_past_the_layout_is_ignored_on_load() {
    let dir = tempfile::tempdir().expect("tempdir");
    let id = TaskId([9; 32]);
    let count = {
        let store = Store::open(dir.path()).expect("open");
        store
            .ensure_task(id, meta(10))
            .expect("task")
            .layout()
            .piece_count()
    };
    // A row numbered one past the last piece, as a damaged database might hold.
    {
        let db = Database::create(dir.path().join("metadata.redb")).expect("db");
        let txn = db.begin_write().expect("txn");
        txn.open_table(PIECES)
            .expect("table")
            .insert((id.0, count), [0u8; 32])
            .expect("row");
        txn.commit().expect("commit");
    }
    let store = Store::open(dir.path()).expect("reopen");
    let entry = store.get(&id).expect("task");
    assert_eq!(entry.bitfield().count(), 0);
    assert!(entry.present_digests().is_empty());
}

#[tokio::test]
async fn a_cache_in_redbs_older_file_format_is_converted_on_open_and_keeps_its_tasks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let id = TaskId([7; 32]);
    let data: Vec<u8> = (0..(5u32 << 20)).map(|i| (i % 241) as u8).collect();
    let m = meta(data.len() as u64);
    let layout = PieceLayout::with_piece_length(m.content_length, m.piece_length).expect("layout");
    let first = &data[..layout.length(0) as usize];
    // The metadata as redb 2's own file format (v2) holds it: one task, its first piece.
    let path = dir.path().join("metadata.redb");
    std::fs::create_dir_all(dir.path().join("content")).expect("content dir");
    std::fs::write(dir.path().join("content").join(id.hex()), &data).expect("content");
    {
        let db = redb::Builder::new()
            .create_with_file_format_v3(false)
            .create(&path)
            .expect("v2 db");
        let txn = db.begin_write().expect("txn");
        txn.open_table(TASKS)
            .expect("tasks")
            .insert(id.0, serde_json::to_vec(&m).expect("meta").as_slice())
            .expect("task row");
        txn.open_table(PIECES)
            .expect("pieces")
            .insert((id.0, 0), PieceDigest::of(first).0)
            .expect("piece row");
        txn.commit().expect("commit");
    }
    // (A copy shows the file really was in the older format: upgrading it does something.)
    let copy = dir.path().join("copy.redb");
    std::fs::copy(&path, &copy).expect("copy");
    let mut probe = Database::create(&copy).expect("copy");
    assert!(probe.upgrade().expect("upgrade"), "the fixture is not v2");
    drop(probe);

    {
        let store = Store::open(dir.path()).expect("open");
        let entry = store.get(&id).expect("the task survives the conversion");
        assert_eq!(entry.bitfield().count(), 1);
        assert_eq!(
            entry.present_digests(),
            vec![(0, PieceDigest::of(first))],
            "its piece and digest too"
        );
    }
    let mut db = Database::create(&path).expect("reopen");
    assert!(
        !db.upgrade().expect("upgrade"),
        "the file was left in the older format"
    );
}
