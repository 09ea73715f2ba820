//! Crash recovery (DESIGN §4): torn tails are cut, damage is refused with
//! the file and byte offset, and a lost hard state or foreign directory
//! stops the node.

use std::fs;
use std::path::{Path, PathBuf};

use flotilla_raft::{
    Bytes, ConfState, Entry, EntryKind, HardState, NodeId, Snapshot, SnapshotMeta, Storage, Term,
};
use flotilla_storage::{DiskStorage, HARD_STATE_FILE, IDENTITY_FILE, OpenError, StorageOptions};

const CLUSTER: u64 = 0xC1;
const MEMBER: u64 = 2;

fn options() -> StorageOptions {
    StorageOptions {
        bootstrap: Some(ConfState {
            voters: vec![NodeId(1), NodeId(2)],
            learners: vec![],
        }),
        ..StorageOptions::new(CLUSTER, MEMBER)
    }
}

/// Entries with an 8-byte payload: 41-byte frames keep the every-byte cuts
/// cheap. No payload byte is zero, so zeroing the end of a frame always
/// damages it.
fn entry(index: u64) -> Entry {
    Entry {
        term: Term(1),
        index,
        kind: EntryKind::Normal,
        data: Bytes::from(vec![0x80 | index as u8; 8]),
    }
}

fn range(lo: u64, hi: u64) -> Vec<Entry> {
    (lo..=hi).map(entry).collect()
}

const FRAME_BYTES: usize = 41;

fn all(s: &DiskStorage) -> Vec<Entry> {
    s.entries(s.first_index(), s.last_index() + 1, u64::MAX)
        .unwrap()
}

/// A directory holding entries 1..=10 in three saves, and its one segment.
fn ten_entries(options: &StorageOptions) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let mut s = DiskStorage::open(dir.path(), options.clone()).unwrap();
    s.save(None, &range(1, 4)).unwrap();
    s.save(None, &range(5, 9)).unwrap();
    s.save(None, &range(10, 10)).unwrap();
    let segments = s.segment_paths();
    assert_eq!(segments.len(), 1);
    (dir, segments[0].clone())
}

/// A crash during the last saves, two ways: the file ends inside them (a
/// log written without zeros ahead), or it keeps its length and the bytes
/// from the cut on read as zeros (a write over the zero fill that stopped
/// part-way). Either way every whole frame is kept and the log goes on.
#[test]
fn cut_at_every_byte_of_the_last_three_frames_keeps_every_whole_frame() {
    let (dir, segment) = ten_entries(&options());
    let original = fs::read(&segment).unwrap();
    let frames = 10 * FRAME_BYTES;
    assert!(
        original.len() > frames && original[frames..].iter().all(|&b| b == 0),
        "the log is written over zeros filled ahead"
    );
    for zeroed in [false, true] {
        for cut in 7 * FRAME_BYTES..=frames {
            let mut bytes = original.clone();
            if zeroed {
                bytes[cut..].fill(0);
            } else {
                bytes.truncate(cut);
            }
            fs::write(&segment, &bytes).unwrap();
            let what = format!("cut at byte {cut}, zeroed after: {zeroed}");
            let mut s = DiskStorage::open(dir.path(), options()).unwrap();
            let whole = (cut / FRAME_BYTES) as u64;
            assert_eq!(s.last_index(), whole, "{what}");
            assert_eq!(all(&s), range(1, whole), "{what}");
            // A zero tail after whole frames is a clean end and is kept;
            // a partial frame is cut off with everything after it.
            let clean = zeroed && cut % FRAME_BYTES == 0;
            let expected_len = if clean {
                original.len() as u64
            } else {
                whole * FRAME_BYTES as u64
            };
            assert_eq!(
                fs::metadata(&segment).unwrap().len(),
                expected_len,
                "{what}"
            );
            // The log continues at the right index, and that survives too.
            s.save(None, &[entry(whole + 1)]).unwrap();
            drop(s);
            let s = DiskStorage::open(dir.path(), options()).unwrap();
            assert_eq!(all(&s), range(1, whole + 1), "{what}, after an append");
        }
    }
}

/// A follower's log replaced from a conflicting index on: the old frames
/// after the new ones must not come back at open, with or without zeros
/// filled ahead. Same-sized frames make them line up exactly where the new
/// log would continue.
#[test]
fn frames_past_a_conflict_do_not_come_back() {
    for preallocate_bytes in [0, StorageOptions::PREALLOCATE_BYTES_DEFAULT] {
        let opts = StorageOptions {
            preallocate_bytes,
            ..options()
        };
        let (dir, _segment) = ten_entries(&opts);
        let mut s = DiskStorage::open(dir.path(), opts.clone()).unwrap();
        let newer: Vec<Entry> = (5..=6)
            .map(|index| Entry {
                term: Term(2),
                ..entry(index)
            })
            .collect();
        s.save(None, &newer).unwrap();
        drop(s);
        let s = DiskStorage::open(dir.path(), opts).unwrap();
        assert_eq!(s.last_index(), 6, "preallocate_bytes {preallocate_bytes}");
        assert_eq!(all(&s)[4..], newer[..]);
    }
}

/// Zeros are filled ahead a piece at a time, never past the segment's
/// size, so a sealed segment ends with its last frame.
#[test]
fn zeros_are_filled_ahead_within_the_segment() {
    let dir = tempfile::tempdir().unwrap();
    let opts = StorageOptions {
        segment_bytes_max: 40 * FRAME_BYTES as u64 + 5,
        preallocate_bytes: 8 * FRAME_BYTES as u64 + 7,
        ..options()
    };
    let mut s = DiskStorage::open(dir.path(), opts.clone()).unwrap();
    for index in 1..=100 {
        s.save(None, &[entry(index)]).unwrap();
        let active = s.segment_paths().pop().unwrap();
        let len = fs::metadata(&active).unwrap().len();
        assert!(len <= opts.segment_bytes_max.max(41 * FRAME_BYTES as u64));
    }
    let segments = s.segment_paths();
    assert_eq!(segments.len(), 3);
    for sealed in &segments[..2] {
        assert_eq!(fs::metadata(sealed).unwrap().len(), 41 * FRAME_BYTES as u64);
    }
    let active = fs::read(&segments[2]).unwrap();
    let frames = 18 * FRAME_BYTES;
    assert!(active.len() > frames, "the active segment has zeros ahead");
    assert!(active[frames..].iter().all(|&b| b == 0));
    drop(s);
    let s = DiskStorage::open(dir.path(), opts).unwrap();
    assert_eq!(all(&s), range(1, 100));
}

#[test]
fn a_bit_flip_in_the_last_frame_is_a_torn_tail() {
    let (dir, segment) = ten_entries(&options());
    let original = fs::read(&segment).unwrap();
    for byte in 9 * FRAME_BYTES..10 * FRAME_BYTES {
        let mut damaged = original.clone();
        damaged[byte] ^= 1 << (byte % 8);
        fs::write(&segment, &damaged).unwrap();
        let s = DiskStorage::open(dir.path(), options()).unwrap();
        assert_eq!(all(&s), range(1, 9), "flip in byte {byte}");
    }
    // Garbage in the zeros after the last frame (an unacknowledged write
    // that reached the disk only in part) is cut off too.
    for byte in [10 * FRAME_BYTES, 10 * FRAME_BYTES + 700, original.len() - 1] {
        let mut damaged = original.clone();
        damaged[byte] = 0x5A;
        fs::write(&segment, &damaged).unwrap();
        let s = DiskStorage::open(dir.path(), options()).unwrap();
        assert_eq!(all(&s), range(1, 10), "garbage in byte {byte}");
        assert_eq!(
            fs::metadata(&segment).unwrap().len(),
            10 * FRAME_BYTES as u64
        );
    }
}

#[test]
fn a_bit_flip_before_valid_frames_is_refused_with_file_and_offset() {
    let (dir, segment) = ten_entries(&options());
    let original = fs::read(&segment).unwrap();
    let frame_at = 5 * FRAME_BYTES;
    for byte in frame_at..frame_at + FRAME_BYTES {
        let mut damaged = original.clone();
        damaged[byte] ^= 1 << (byte % 8);
        fs::write(&segment, &damaged).unwrap();
        match DiskStorage::open(dir.path(), options()) {
            Err(OpenError::Corrupt { path, offset, .. }) => {
                assert_eq!(
                    (path.as_path(), offset),
                    (segment.as_path(), frame_at as u64)
                );
            }
            other => panic!("flip in byte {byte}: {other:?}"),
        }
    }
    // The message names both, for the operator.
    let msg = DiskStorage::open(dir.path(), options())
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains(&segment.display().to_string()) && msg.contains("byte 205"),
        "{msg}"
    );
    // Nothing was cut: the damage is still there for inspection.
    assert_eq!(fs::read(&segment).unwrap().len(), original.len());
}

#[test]
fn damage_in_a_sealed_segment_is_refused() {
    let opts = StorageOptions {
        segment_bytes_max: 2 * FRAME_BYTES as u64,
        ..options()
    };
    let dir = tempfile::tempdir().unwrap();
    let mut s = DiskStorage::open(dir.path(), opts.clone()).unwrap();
    for i in 1..=6 {
        s.save(None, &[entry(i)]).unwrap();
    }
    let segments = s.segment_paths();
    assert_eq!(segments.len(), 3);
    drop(s);
    // Cut the middle segment's last frame in half: not a tail, so damage.
    let middle = &segments[1];
    let bytes = fs::read(middle).unwrap();
    fs::write(middle, &bytes[..bytes.len() - 10]).unwrap();
    match DiskStorage::open(dir.path(), opts) {
        Err(OpenError::Corrupt { path, offset, .. }) => {
            assert_eq!((&path, offset), (middle, FRAME_BYTES as u64));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_torn_tail_holding_committed_entries_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = DiskStorage::open(dir.path(), options()).unwrap();
    s.save(None, &range(1, 10)).unwrap();
    // A term change writes the hard-state file, commit included.
    let hs = HardState {
        term: Term(2),
        vote: NodeId(1),
        commit: 9,
    };
    s.save(Some(&hs), &[]).unwrap();
    let segment = s.segment_paths()[0].clone();
    drop(s);
    let bytes = fs::read(&segment).unwrap();
    fs::write(&segment, &bytes[..8 * FRAME_BYTES + 3]).unwrap();
    match DiskStorage::open(dir.path(), options()) {
        Err(OpenError::CommittedEntriesLost {
            commit: 9,
            last_index: 8,
        }) => {}
        other => panic!("{other:?}"),
    }
}

/// A save syncs for entries or a new term or vote; a commit index alone
/// stays in memory: the hard-state file is not written, and `save_syncs`
/// says so, also for the state a reopened directory loads.
#[test]
fn a_commit_index_alone_does_not_sync() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = DiskStorage::open(dir.path(), options()).unwrap();
    let hs = |term, vote, commit| HardState {
        term: Term(term),
        vote: NodeId(vote),
        commit,
    };
    let file = || fs::read(dir.path().join(HARD_STATE_FILE)).unwrap();
    assert!(s.save_syncs(None, &range(1, 3)));
    s.save(None, &range(1, 3)).unwrap();
    assert!(!s.save_syncs(None, &[]));
    assert!(s.save_syncs(Some(&hs(2, 1, 1)), &[]), "a new term");
    s.save(Some(&hs(2, 1, 1)), &[]).unwrap();
    let written = file();
    assert!(!s.save_syncs(Some(&hs(2, 1, 3)), &[]), "the commit alone");
    s.save(Some(&hs(2, 1, 3)), &[]).unwrap();
    assert_eq!(file(), written, "the commit alone is not written");
    assert!(s.save_syncs(Some(&hs(2, 1, 3)), &[entry(4)]), "entries");
    assert!(s.save_syncs(Some(&hs(2, 2, 3)), &[]), "a new vote");
    drop(s);
    let s = DiskStorage::open(dir.path(), options()).unwrap();
    assert!(!s.save_syncs(Some(&hs(2, 1, 3)), &[]), "after reopening");
    assert!(s.save_syncs(Some(&hs(3, 1, 3)), &[]));
}

#[test]
fn a_lost_hard_state_file_is_refused_naming_it() {
    let (dir, _) = ten_entries(&options());
    fs::remove_file(dir.path().join(HARD_STATE_FILE)).unwrap();
    match DiskStorage::open(dir.path(), options()) {
        Err(OpenError::HardStateLost { path }) => {
            assert_eq!(path, dir.path().join(HARD_STATE_FILE));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_foreign_cluster_or_member_is_refused() {
    let (dir, _) = ten_entries(&options());
    let other_cluster = StorageOptions {
        cluster_id: CLUSTER + 1,
        ..options()
    };
    let err = DiskStorage::open(dir.path(), other_cluster).unwrap_err();
    assert!(
        matches!(err, OpenError::ForeignCluster { found: CLUSTER, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("another cluster"), "{err}");
    let other_member = StorageOptions {
        member_id: MEMBER + 1,
        ..options()
    };
    let err = DiskStorage::open(dir.path(), other_member).unwrap_err();
    assert!(
        matches!(err, OpenError::ForeignMember { found: MEMBER, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("another member"), "{err}");
    // The right identity still opens it, untouched.
    assert_eq!(
        DiskStorage::open(dir.path(), options())
            .unwrap()
            .last_index(),
        10
    );
}

#[test]
fn a_directory_with_state_but_no_stamp_is_refused() {
    let (dir, _) = ten_entries(&options());
    fs::remove_file(dir.path().join(IDENTITY_FILE)).unwrap();
    let err = DiskStorage::open(dir.path(), options()).unwrap_err();
    assert!(matches!(err, OpenError::Unstamped { .. }), "{err:?}");
}

#[test]
fn a_damaged_identity_stamp_is_refused() {
    let (dir, _) = ten_entries(&options());
    let path = dir.path().join(IDENTITY_FILE);
    let mut bytes = fs::read(&path).unwrap();
    bytes[9] ^= 4;
    fs::write(&path, bytes).unwrap();
    let err = DiskStorage::open(dir.path(), options()).unwrap_err();
    assert!(matches!(err, OpenError::Corrupt { .. }), "{err:?}");
}

/// A directory of a version whose frames carried no synced marks is
/// restamped at open, so that such a version refuses it from then on; a
/// stamp of a format newer than this version's is refused by name.
#[test]
fn an_older_stamp_is_renewed_and_a_newer_one_refused() {
    let (dir, _) = ten_entries(&options());
    let path = dir.path().join(IDENTITY_FILE);
    let stamp = |magic: &[u8; 8]| {
        let mut out = magic.to_vec();
        out.extend_from_slice(&CLUSTER.to_le_bytes());
        out.extend_from_slice(&MEMBER.to_le_bytes());
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    };
    let current = fs::read(&path).unwrap();
    assert_eq!(current, stamp(b"FLOTID02"));
    fs::write(&path, stamp(b"FLOTID01")).unwrap();
    let s = DiskStorage::open(dir.path(), options()).unwrap();
    assert_eq!(all(&s), range(1, 10));
    assert_eq!(fs::read(&path).unwrap(), current);
    drop(s);
    fs::write(&path, stamp(b"FLOTID03")).unwrap();
    let err = DiskStorage::open(dir.path(), options()).unwrap_err();
    assert!(err.to_string().contains("newer format"), "{err}");
}

#[test]
fn a_joining_member_starts_with_no_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let opts = StorageOptions::new(CLUSTER, MEMBER);
    let s = DiskStorage::open(dir.path(), opts.clone()).unwrap();
    assert_eq!(s.initial_state().unwrap().conf_state, ConfState::default());
    drop(s);
    let s = DiskStorage::open(dir.path(), opts).unwrap();
    assert_eq!(s.snapshot().unwrap(), Snapshot::default());
}

fn snapshot(index: u64, term: u64) -> Snapshot {
    Snapshot {
        meta: SnapshotMeta {
            index,
            term: Term(term),
            conf_state: options().bootstrap.unwrap(),
        },
        data: Bytes::from_static(b"state"),
    }
}

fn snapshot_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir.join("snapshot"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn compaction_keeps_one_snapshot_and_removes_covered_segments() {
    let opts = StorageOptions {
        segment_bytes_max: 2 * FRAME_BYTES as u64,
        ..options()
    };
    let dir = tempfile::tempdir().unwrap();
    let mut s = DiskStorage::open(dir.path(), opts.clone()).unwrap();
    for i in 1..=8 {
        s.save(None, &[entry(i)]).unwrap();
    }
    assert_eq!(s.segment_paths().len(), 4); // 1-2, 3-4, 5-6, 7-8
    s.compact(snapshot(5, 1), 5).unwrap();
    // 1-2 and 3-4 are wholly covered; 5-6 straddles and stays.
    assert_eq!(s.segment_paths().len(), 2);
    assert_eq!(
        snapshot_files(dir.path()),
        vec![format!("{:020}-{:020}.snap", 5, 1)]
    );
    drop(s);
    let s = DiskStorage::open(dir.path(), opts).unwrap();
    assert_eq!(all(&s), range(6, 8));
    assert_eq!(s.snapshot().unwrap(), snapshot(5, 1));
}

/// Has a storage's snapshot writer write `snapshot`, its data streamed.
fn write_with(
    writer: flotilla_raft::SnapshotWriter,
    snapshot: &Snapshot,
) -> Result<u64, flotilla_raft::StorageError> {
    let data = snapshot.data.clone();
    writer(&snapshot.meta, Box::new(move |sink| sink.write_all(&data)))
}

/// A snapshot written by the storage's writer (on another thread in a
/// node) compacts the log only when `compact_written` follows; one that a
/// newer installed snapshot overtook meanwhile changes nothing.
#[test]
fn a_snapshot_written_aside_compacts_only_when_still_newest() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = DiskStorage::open(dir.path(), options()).unwrap();
    s.save(None, &range(1, 20)).unwrap();
    let writer = s
        .snapshot_writer()
        .expect("disk storage writes snapshots aside");
    std::thread::scope(|scope| {
        scope
            .spawn(|| write_with(writer, &snapshot(10, 1)))
            .join()
            .unwrap()
    })
    .unwrap();
    assert_eq!(s.first_index(), 1, "the log waits for compact_written");
    s.compact_written(snapshot(10, 1).meta, 10).unwrap();
    assert_eq!(s.first_index(), 11);
    assert_eq!(all(&s), range(11, 20));

    // Overtaken: a snapshot at 15 is installed while the one at 12 is
    // being written.
    let writer = s.snapshot_writer().unwrap();
    s.apply_snapshot(snapshot(15, 1)).unwrap();
    write_with(writer, &snapshot(12, 1)).unwrap();
    s.compact_written(snapshot(12, 1).meta, 12).unwrap();
    assert_eq!(s.first_index(), 16);
    assert_eq!(s.snapshot().unwrap(), snapshot(15, 1));
    drop(s);
    let s = DiskStorage::open(dir.path(), options()).unwrap();
    assert_eq!(s.snapshot().unwrap(), snapshot(15, 1));
    assert_eq!(all(&s), range(16, 20));
}

/// A compaction that keeps catch-up entries before the snapshot removes
/// only the segments wholly before them; at open the log starts after the
/// snapshot again (the kept entries are for followers of a running leader).
#[test]
fn compaction_keeps_catchup_entries_until_a_restart() {
    let opts = StorageOptions {
        segment_bytes_max: 2 * FRAME_BYTES as u64,
        ..options()
    };
    let dir = tempfile::tempdir().unwrap();
    let mut s = DiskStorage::open(dir.path(), opts.clone()).unwrap();
    for i in 1..=8 {
        s.save(None, &[entry(i)]).unwrap();
    }
    s.compact(snapshot(6, 1), 3).unwrap();
    assert_eq!((s.first_index(), s.snapshot_index()), (4, 6));
    assert_eq!(all(&s), range(4, 8));
    // 1-2 is wholly compacted; 3-4 holds the first kept entry.
    assert_eq!(s.segment_paths().len(), 3);
    s.save(None, &[entry(9)]).unwrap();
    drop(s);
    let s = DiskStorage::open(dir.path(), opts).unwrap();
    assert_eq!((s.first_index(), s.snapshot_index()), (7, 6));
    assert_eq!(all(&s), range(7, 9));
    assert_eq!(s.snapshot().unwrap(), snapshot(6, 1));
}

#[test]
fn an_interrupted_log_discard_is_finished_at_open() {
    let (dir, segment) = ten_entries(&options());
    let old_log = fs::read(&segment).unwrap();
    let mut s = DiskStorage::open(dir.path(), options()).unwrap();
    s.apply_snapshot(snapshot(7, 2)).unwrap(); // conflicts at 7: log discarded
    drop(s);
    // As if the crash came after the snapshot file but before the old
    // segment's removal (the new segment is only created after it).
    fs::remove_file(dir.path().join("log").join(format!("{:020}.seg", 8))).unwrap();
    fs::write(&segment, old_log).unwrap();
    fs::write(dir.path().join("snapshot/leftover.snap.tmp"), b"half").unwrap();
    let s = DiskStorage::open(dir.path(), options()).unwrap();
    assert_eq!((s.first_index(), s.last_index()), (8, 7));
    assert_eq!(s.snapshot().unwrap(), snapshot(7, 2));
    assert_eq!(s.initial_state().unwrap().hard_state.commit, 7);
    assert_eq!(
        snapshot_files(dir.path()).len(),
        1,
        "the temporary file is removed"
    );
}
