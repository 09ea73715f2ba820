//! Deferred syncs (`Storage::save_deferred`): the log write returns
//! without its fsync, and the handle it gives back makes it durable from
//! another thread; whatever must never run ahead of the log (a new term or
//! vote, a new segment, a snapshot) syncs it first; and a power loss
//! that tears the writes after the last sync leaves a log recovery starts
//! from, with every synced entry.

use std::sync::Arc;

use flotilla_raft::{
    Bytes, Entry, EntryKind, HardState, LogSync, NodeId, Storage, StorageError, Term,
};
use flotilla_storage::{DiskStorage, FaultyFs, StorageOptions};
use proptest::prelude::*;

mod common;

fn options() -> StorageOptions {
    common::one_voter(1)
}

fn entries(lo: u64, hi: u64) -> Vec<Entry> {
    common::entries(lo, hi, 7, 256)
}

fn open(dir: &std::path::Path, options: StorageOptions) -> (DiskStorage, FaultyFs) {
    common::open_faulty(dir, options).unwrap()
}

#[test]
fn a_deferred_write_syncs_on_another_thread_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (mut s, fs) = open(dir.path(), options());
    let fsyncs = fs.fsync_count();
    let first = s.save_deferred(None, &entries(1, 100)).unwrap();
    let second = s.save_deferred(None, &entries(101, 150)).unwrap();
    assert_eq!(
        fs.fsync_count(),
        fsyncs,
        "the writes returned without a sync"
    );
    // Reads see the entries at once.
    assert_eq!(s.last_index(), 150);
    let (first, second) = (first.expect("a sync to do"), second.expect("a sync to do"));
    std::thread::spawn(move || second.sync())
        .join()
        .unwrap()
        .unwrap();
    assert_eq!(fs.fsync_count() - fsyncs, 1, "one sync covers both writes");
    first.sync().unwrap();
    drop(s);
    let (s, _) = open(dir.path(), options());
    assert_eq!(s.entries(1, 151, u64::MAX).unwrap(), entries(1, 150));
}

#[test]
fn a_new_vote_syncs_the_log_before_the_hard_state() {
    let dir = tempfile::tempdir().unwrap();
    let (mut s, fs) = open(dir.path(), options());
    let pending = s.save_deferred(None, &entries(1, 10)).unwrap();
    assert!(pending.is_some());
    let fsyncs = fs.fsync_count();
    let hs = HardState {
        term: Term(2),
        vote: NodeId(1),
        commit: 10,
    };
    let after = s.save_deferred(Some(&hs), &entries(11, 12)).unwrap();
    // The log, then the hard state's temporary file and directory; the new
    // entries wait for their own sync.
    assert_eq!(fs.fsync_count() - fsyncs, 3);
    assert!(after.is_some());
    // A commit index alone writes nothing and has nothing to sync.
    let fsyncs = fs.fsync_count();
    let commit_only = HardState { commit: 12, ..hs };
    assert!(s.save_deferred(Some(&commit_only), &[]).unwrap().is_none());
    assert_eq!(fs.fsync_count(), fsyncs);
    drop(s);
    let (s, _) = open(dir.path(), options());
    assert_eq!(s.initial_state().unwrap().hard_state, hs);
    assert!(
        s.last_index() >= 10,
        "the commit index never passes the log"
    );
}

#[test]
fn a_full_segment_is_synced_before_the_next_one_starts() {
    let dir = tempfile::tempdir().unwrap();
    let options = StorageOptions {
        segment_bytes_max: 16 << 10,
        preallocate_bytes: 0,
        ..options()
    };
    let (mut s, fs) = open(dir.path(), options.clone());
    let mut lo = 1;
    while std::fs::read_dir(dir.path().join("log")).unwrap().count() < 2 {
        let fsyncs = fs.fsync_count();
        let sync = s.save_deferred(None, &entries(lo, lo + 9)).unwrap();
        assert!(sync.is_some());
        let rolled = std::fs::read_dir(dir.path().join("log")).unwrap().count() == 2;
        // A roll syncs the full segment, then the directory with the new
        // one's name; a write within a segment syncs nothing.
        assert_eq!(fs.fsync_count() - fsyncs, if rolled { 2 } else { 0 });
        lo += 10;
        assert!(lo < 10_000, "the segment never rolled");
    }
}

#[test]
fn a_failed_deferred_sync_is_an_error_for_its_caller() {
    let dir = tempfile::tempdir().unwrap();
    let (mut s, fs) = open(dir.path(), options());
    let sync = s
        .save_deferred(None, &entries(1, 5))
        .unwrap()
        .expect("a sync to do");
    fs.fail_fsync_after(1);
    let failed = sync.sync();
    assert!(
        matches!(&failed, Err(StorageError::Fatal(m)) if m.contains("injected fsync failure")),
        "{failed:?}"
    );
    // The storage is fatal from then on, and so is the handle: a later
    // sync could succeed only because the failed one consumed the error.
    assert!(matches!(sync.sync(), Err(StorageError::Fatal(_))));
    assert!(matches!(
        s.save_deferred(None, &entries(6, 6)),
        Err(StorageError::Fatal(_))
    ));
    assert!(matches!(
        s.entries(1, 2, u64::MAX),
        Err(StorageError::Fatal(_))
    ));
}

/// A follower's first append from a new leader brings the term and a
/// commit index that covers the entries it carries: the file gets the
/// commit index capped at what was durable, or a crash before their sync
/// would leave a commit index past the recovered log.
#[test]
fn a_saved_commit_index_never_covers_entries_not_yet_synced() {
    let dir = tempfile::tempdir().unwrap();
    let (mut s, _) = open(dir.path(), options());
    s.save(None, &entries(1, 5)).unwrap();
    let hs = HardState {
        term: Term(3),
        vote: NodeId::NONE,
        commit: 8,
    };
    let pending = s.save_deferred(Some(&hs), &entries(6, 8)).unwrap();
    assert!(pending.is_some());
    // The file says commit 5 until a later term or vote rewrites it.
    drop(s);
    let (s, _) = open(dir.path(), options());
    let saved = s.initial_state().unwrap().hard_state;
    assert_eq!((saved.term, saved.commit), (Term(3), 5));
}

/// A write that replaces a conflicting suffix is synced before it returns:
/// no old frame may outlive the cut behind a new one.
#[test]
fn a_write_that_cuts_the_log_is_synced_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let (mut s, fs) = open(dir.path(), options());
    s.save(None, &entries(1, 10)).unwrap();
    let fsyncs = fs.fsync_count();
    assert!(s.save_deferred(None, &entries(8, 9)).unwrap().is_none());
    assert_eq!(fs.fsync_count() - fsyncs, 1);
    assert_eq!(s.last_index(), 9);
}

#[test]
fn without_fsync_nothing_is_deferred() {
    let dir = tempfile::tempdir().unwrap();
    let options = StorageOptions {
        fsync: flotilla_storage::FsyncMode::Never,
        ..options()
    };
    let (mut s, _) = open(dir.path(), options);
    assert!(s.save_deferred(None, &entries(1, 5)).unwrap().is_none());
    assert_eq!(s.last_index(), 5);
}

/// Bytes of one frame of `entries` (256-byte payloads).
const FRAME_BYTES: usize = FRAME_HEADER_BYTES + 256;

/// Flips a bit in the `nth` frame (from 0) of `s`'s last segment, as a
/// crash that kept a later page of the log but not that one leaves it.
/// Returns the segment's path.
fn damage_frame(s: DiskStorage, nth: usize) -> std::path::PathBuf {
    let segment = s.segment_paths().last().unwrap().clone();
    drop(s);
    let mut bytes = std::fs::read(&segment).unwrap();
    bytes[nth * FRAME_BYTES + 40] ^= 0x10;
    std::fs::write(&segment, &bytes).unwrap();
    segment
}

/// Opening `dir` is refused as damage at the `nth` frame of `segment`.
fn assert_refused_at(dir: &std::path::Path, segment: &std::path::Path, nth: usize) {
    match common::open_faulty(dir, options()) {
        Err(flotilla_storage::OpenError::Corrupt { path, offset, .. }) => {
            assert_eq!(
                (path.as_path(), offset),
                (segment, (nth * FRAME_BYTES) as u64)
            );
        }
        other => panic!("{:?}", other.map(|_| ())),
    }
}

#[test]
fn a_crash_that_kept_later_unsynced_writes_but_not_an_earlier_one_is_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let (mut s, _) = open(dir.path(), options());
    s.save(None, &entries(1, 10)).unwrap();
    // Two deferred writes whose syncs never ran: the crash kept the second
    // and part of the first.
    let _pending = s.save_deferred(None, &entries(11, 20)).unwrap();
    let _pending = s.save_deferred(None, &entries(21, 30)).unwrap();
    damage_frame(s, 14);
    let (mut s, _) = open(dir.path(), options());
    assert_eq!(s.entries(1, 15, u64::MAX).unwrap(), entries(1, 14));
    assert_eq!(s.last_index(), 14, "cut at the torn frame");
    // The log goes on from the cut, and holds after a restart.
    s.save(None, &entries(15, 16)).unwrap();
    drop(s);
    let (s, _) = open(dir.path(), options());
    assert_eq!(s.entries(1, 17, u64::MAX).unwrap(), entries(1, 16));
}

#[test]
fn damage_before_a_frame_written_after_its_sync_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (mut s, _) = open(dir.path(), options());
    s.save(None, &entries(1, 10)).unwrap();
    let pending = s.save_deferred(None, &entries(11, 20)).unwrap();
    pending.expect("a sync to do").sync().unwrap();
    // Written once 11..=20 were durable: its frames say so.
    let _pending = s.save_deferred(None, &entries(21, 30)).unwrap();
    let segment = damage_frame(s, 14);
    assert_refused_at(dir.path(), &segment, 14);
}

#[test]
fn a_sync_of_a_rolled_segment_does_not_vouch_for_the_next_one() {
    let dir = tempfile::tempdir().unwrap();
    let opts = StorageOptions {
        segment_bytes_max: 10 * FRAME_BYTES as u64,
        ..options()
    };
    let (mut s, _) = open(dir.path(), opts.clone());
    let first_segment = s
        .save_deferred(None, &entries(1, 10))
        .unwrap()
        .expect("a sync to do");
    // The segment is full: it is synced, and 11..=15 go to a new one.
    let _pending = s.save_deferred(None, &entries(11, 15)).unwrap();
    assert_eq!(s.segment_paths().len(), 2);
    // The first segment's handle syncs late: its file, not the new one.
    first_segment.sync().unwrap();
    let _pending = s.save_deferred(None, &entries(16, 17)).unwrap();
    assert_eq!(s.segment_paths().len(), 2);
    damage_frame(s, 2);
    let (s, _) = open(dir.path(), opts);
    assert_eq!(s.entries(1, 13, u64::MAX).unwrap(), entries(1, 12));
    assert_eq!(s.last_index(), 12);
}

#[test]
fn what_a_restart_read_back_counts_as_synced() {
    let dir = tempfile::tempdir().unwrap();
    let (mut s, _) = open(dir.path(), options());
    // The process stops before the sync; the page cache keeps the write.
    let _never_synced = s.save_deferred(None, &entries(1, 10)).unwrap();
    drop(s);
    // Reopening syncs what it read back, and later frames say so.
    let (mut s, _) = open(dir.path(), options());
    let _pending = s.save_deferred(None, &entries(11, 12)).unwrap();
    let segment = damage_frame(s, 4);
    assert_refused_at(dir.path(), &segment, 4);
}

// A power loss after any mix of synchronous saves, deferred saves and
// their syncs: every sector of the log past the last finished sync may
// keep its newest bytes, fall back to what it held at that sync (the zeros
// written ahead), or come back garbled (a torn write), and the file may
// lose what it grew by since. Recovery must
// start, keep every entry that was synced, and return a prefix of what
// was written: never refuse, never invent.

/// The unit a power loss keeps or loses: a disk sector.
const SECTOR: usize = 512;
/// Bytes of a frame before its payload.
const FRAME_HEADER_BYTES: usize = 8 + 25;

#[derive(Clone, Debug)]
enum Op {
    /// Save entries with these payload sizes, synced at once.
    Save(Vec<usize>),
    /// Save them deferred.
    Deferred(Vec<usize>),
    /// Run the newest deferred write's sync (it covers every earlier one).
    Sync,
}

fn op() -> impl Strategy<Value = Op> {
    let sizes = || prop::collection::vec(1..700usize, 1..12);
    prop_oneof![
        1 => sizes().prop_map(Op::Save),
        4 => sizes().prop_map(Op::Deferred),
        1 => Just(Op::Sync),
    ]
}

/// What a sector past the last sync holds after the power loss.
#[derive(Clone, Copy, Debug)]
enum Page {
    Kept,
    Reverted,
    Garbled(u8),
}

fn page() -> impl Strategy<Value = Page> {
    prop_oneof![
        3 => Just(Page::Kept),
        2 => Just(Page::Reverted),
        1 => any::<u8>().prop_map(Page::Garbled),
    ]
}

/// Entry `index` with a `len`-byte payload.
fn entry(index: u64, len: usize) -> Entry {
    Entry {
        term: Term(1),
        index,
        kind: EntryKind::Normal,
        data: Bytes::from(vec![(index % 251) as u8 | 1; len]),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn recovery_keeps_what_was_synced_and_a_prefix_of_the_rest(
        ops in prop::collection::vec(op(), 1..24),
        pages in prop::collection::vec(page(), 64),
        tail in prop::collection::vec(1..700usize, 1..12),
        length_kept in 0.0..1.0f64,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let options = StorageOptions {
            preallocate_bytes: 64 << 10,
            ..common::one_voter(3)
        };
        let mut s = DiskStorage::open(dir.path(), options.clone()).unwrap();
        let mut written: Vec<Entry> = Vec::new();
        let mut synced = 0usize;
        // The segment's length at the last sync: zeros written ahead since
        // may not have reached the disk either.
        let mut synced_len = 0u64;
        let segment_len = |s: &DiskStorage| {
            std::fs::metadata(s.segment_paths().last().unwrap()).unwrap().len()
        };
        let mut newest: Option<(Arc<dyn LogSync>, usize, u64)> = None;
        // Always a deferred write last: something is at stake.
        let ops = ops.iter().cloned().chain([Op::Deferred(tail)]);
        for op in ops {
            match &op {
                Op::Save(sizes) | Op::Deferred(sizes) => {
                    let first = written.len() as u64 + 1;
                    let batch: Vec<Entry> = sizes
                        .iter()
                        .enumerate()
                        .map(|(i, &len)| entry(first + i as u64, len))
                        .collect();
                    written.extend(batch.iter().cloned());
                    if matches!(op, Op::Save(_)) {
                        s.save(None, &batch).unwrap();
                        synced = written.len();
                        synced_len = segment_len(&s);
                    } else if let Some(handle) = s.save_deferred(None, &batch).unwrap() {
                        newest = Some((handle, written.len(), segment_len(&s)));
                    }
                }
                Op::Sync => {
                    if let Some((handle, covers, len)) = newest.take() {
                        handle.sync().unwrap();
                        synced = synced.max(covers);
                        synced_len = synced_len.max(len);
                    }
                }
            }
        }
        let segment = s.segment_paths().last().unwrap().clone();
        prop_assert_eq!(s.segment_paths().len(), 1);
        drop(s);
        // The power loss: bytes past the synced frames, sector by sector,
        // and the file's length anywhere from its length at the last sync.
        let synced_end: usize = written[..synced]
            .iter()
            .map(|e| FRAME_HEADER_BYTES + e.data.len())
            .sum();
        let mut bytes = std::fs::read(&segment).unwrap();
        let shortest = (synced_len as usize).max(synced_end);
        let kept_len = shortest + ((bytes.len() - shortest) as f64 * length_kept) as usize;
        bytes.truncate(kept_len);
        for (n, start) in (synced_end / SECTOR * SECTOR..bytes.len()).step_by(SECTOR).enumerate() {
            let from = start.max(synced_end);
            let to = (start + SECTOR).min(bytes.len());
            match pages[n % pages.len()] {
                Page::Kept => {}
                Page::Reverted => bytes[from..to].fill(0),
                Page::Garbled(seed) => {
                    for (i, b) in bytes[from..to].iter_mut().enumerate() {
                        *b = seed.wrapping_mul(31).wrapping_add(i as u8);
                    }
                }
            }
        }
        std::fs::write(&segment, &bytes).unwrap();
        let s = match DiskStorage::open(dir.path(), options) {
            Ok(s) => s,
            Err(e) => return Err(TestCaseError::fail(format!(
                "refused after a power loss past entry {synced}: {e}"
            ))),
        };
        let last = s.last_index() as usize;
        prop_assert!(last >= synced, "lost synced entries: kept {last}, synced {synced}");
        prop_assert!(last <= written.len());
        let kept = s.entries(1, last as u64 + 1, u64::MAX).unwrap();
        prop_assert!(kept == written[..last], "recovered entries differ from those written");
    }
}
