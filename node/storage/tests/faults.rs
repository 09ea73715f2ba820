//! Group commit and failure handling, through the fault-injecting file
//! layer: one write and one fsync per save; a failed fsync or write makes
//! the storage fatal for good.

use flotilla_raft::{Bytes, Entry, HardState, NodeId, Storage, StorageError, Term};
use flotilla_storage::{DiskStorage, FaultyFs, StorageOptions};

mod common;

fn options() -> StorageOptions {
    common::one_voter(1)
}

fn entries(lo: u64, hi: u64) -> Vec<Entry> {
    common::entries(lo, hi, 7, 256)
}

fn open(dir: &std::path::Path) -> (DiskStorage, FaultyFs) {
    common::open_faulty(dir, options()).unwrap()
}

fn assert_fatal<T: std::fmt::Debug>(r: Result<T, StorageError>) {
    assert!(matches!(r, Err(StorageError::Fatal(_))), "{r:?}");
}

/// Writes other than the zero fills ahead of the log.
fn data_writes(fs: &FaultyFs) -> u64 {
    fs.write_count() - fs.zero_fill_count()
}

/// The zero fill rides on the save's one fsync, once per
/// `preallocate_bytes` of log.
#[test]
fn a_save_is_one_write_and_one_fsync_however_many_entries() {
    let dir = tempfile::tempdir().unwrap();
    let (mut s, fs) = open(dir.path());
    for (lo, hi) in [(1, 1), (2, 101), (102, 1101)] {
        let (writes, fsyncs) = (data_writes(&fs), fs.fsync_count());
        // A commit-only hard-state change rides along without extra IO.
        let hs = HardState {
            commit: lo - 1,
            ..HardState::default()
        };
        s.save(Some(&hs), &entries(lo, hi)).unwrap();
        assert_eq!(data_writes(&fs) - writes, 1, "one write for {lo}..={hi}");
        assert_eq!(fs.fsync_count() - fsyncs, 1, "one fsync for {lo}..={hi}");
    }
    // Overwriting a conflicting suffix in the active segment: still one each.
    let (writes, fsyncs) = (data_writes(&fs), fs.fsync_count());
    s.save(None, &entries(50, 60)).unwrap();
    assert_eq!(
        (data_writes(&fs) - writes, fs.fsync_count() - fsyncs),
        (1, 1)
    );
    assert_eq!(s.last_index(), 60);
    // One fill at the first save (1 MiB ahead), and one after the cut,
    // which shortened the file to its frames.
    assert_eq!(fs.zero_fill_count(), 2);
    let (fills, fsyncs) = (fs.zero_fill_count(), fs.fsync_count());
    for i in 0..4 {
        let lo = 61 + i * 1000;
        s.save(None, &entries(lo, lo + 999)).unwrap();
    }
    assert_eq!(
        fs.zero_fill_count() - fills,
        1,
        "one more fill for 1.1 MB of frames"
    );
    assert_eq!(fs.fsync_count() - fsyncs, 4);
}

#[test]
fn a_vote_is_written_atomically_before_the_entries() {
    let dir = tempfile::tempdir().unwrap();
    let (mut s, fs) = open(dir.path());
    let fsyncs = fs.fsync_count();
    let hs = HardState {
        term: Term(2),
        vote: NodeId(1),
        commit: 0,
    };
    s.save(Some(&hs), &entries(1, 3)).unwrap();
    // Temporary file, directory, then the segment.
    assert_eq!(fs.fsync_count() - fsyncs, 3);
    drop(s);
    let (s, _) = open(dir.path());
    assert_eq!(s.initial_state().unwrap().hard_state, hs);
}

#[test]
fn a_failed_fsync_is_fatal_and_stays_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let (mut s, fs) = open(dir.path());
    s.save(None, &entries(1, 5)).unwrap();
    fs.fail_fsync_after(1);
    assert_fatal(s.save(None, &entries(6, 6)));
    assert!(s.fatal_error().unwrap().contains("injected fsync failure"));
    // Every later call refuses, reads included: nothing may act on a write
    // that is perhaps not durable.
    assert_fatal(s.save(None, &entries(7, 7)));
    assert_fatal(s.save(Some(&HardState::default()), &[]));
    assert_fatal(s.entries(1, 2, u64::MAX));
    assert_fatal(s.term(1));
    assert_fatal(s.initial_state());
    assert_fatal(s.snapshot());
    assert_fatal(s.compact(flotilla_raft::Snapshot::default(), 0));
    // What was acknowledged before the failure is still there after restart.
    drop(s);
    let s = DiskStorage::open(dir.path(), options()).unwrap();
    assert!(s.last_index() >= 5);
    assert_eq!(s.entries(1, 6, u64::MAX).unwrap(), entries(1, 5));
}

#[test]
fn a_failed_hard_state_fsync_is_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let (mut s, fs) = open(dir.path());
    fs.fail_fsync_after(2); // the directory fsync of the atomic replace
    let hs = HardState {
        term: Term(3),
        vote: NodeId(1),
        commit: 0,
    };
    assert_fatal(s.save(Some(&hs), &entries(1, 1)));
    assert_fatal(s.save(None, &entries(1, 1)));
}

#[test]
fn a_failed_write_is_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let (mut s, fs) = open(dir.path());
    fs.fail_write_after(1);
    assert_fatal(s.save(None, &entries(1, 1)));
    assert_fatal(s.save(None, &entries(1, 1)));
}

#[test]
fn a_failed_snapshot_write_is_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let (mut s, fs) = open(dir.path());
    s.save(None, &entries(1, 4)).unwrap();
    fs.fail_fsync_after(1);
    let snap = flotilla_raft::Snapshot {
        meta: flotilla_raft::SnapshotMeta {
            index: 2,
            term: Term(1),
            conf_state: options().bootstrap.unwrap(),
        },
        data: Bytes::from_static(b"s"),
    };
    assert_fatal(s.compact(snap.clone(), 2));
    assert_fatal(s.apply_snapshot(snap));
    assert_fatal(s.entries(3, 4, u64::MAX));
}

#[test]
fn the_snapshot_is_read_back_from_its_file_and_damage_is_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let (mut s, _fs) = open(dir.path());
    s.save(None, &entries(1, 4)).unwrap();
    let snap = flotilla_raft::Snapshot {
        meta: flotilla_raft::SnapshotMeta {
            index: 2,
            term: Term(1),
            conf_state: options().bootstrap.unwrap(),
        },
        data: Bytes::from(vec![3u8; 4096]),
    };
    s.compact(snap.clone(), 2).unwrap();
    assert_eq!(s.snapshot().unwrap(), snap);
    // The data lives in the file only: damage there shows on the next read.
    let path = dir
        .path()
        .join(flotilla_storage::SNAPSHOT_DIR)
        .join(format!("{:020}-{:020}.snap", 2, 1));
    let mut buf = std::fs::read(&path).unwrap();
    buf[100] ^= 1;
    std::fs::write(&path, buf).unwrap();
    assert_fatal(s.snapshot());
    std::fs::remove_file(&path).unwrap();
    assert_fatal(s.snapshot());
    // Reads of the log go on: a bad snapshot file stops its reader only.
    assert_eq!(s.entries(3, 5, u64::MAX).unwrap(), entries(3, 4));
}
