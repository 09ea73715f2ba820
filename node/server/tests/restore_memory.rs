//! A backup of tens of MB is checked (`flotilla snapshot status`) and
//! restored into a data directory (`flotilla snapshot restore`) reading
//! the file as a stream: the bytes allocated at once are counted (this
//! test binary's global allocator is `allocation-counter`'s, which counts
//! per thread) and must stay far below the file's size. The restored
//! directory holds the same store with the new member table. A truncated
//! or damaged file, or one with a wrong checksum, is refused with a clear
//! error and leaves no data directory behind, nor its staging directory.

use flotilla_node::backup::{
    CHECKSUM_BYTES, RestoreError, SnapshotChunks, SnapshotFileError, SnapshotHeader, restore,
    summarize,
};
use flotilla_node::config::NodeArgs;
use flotilla_node::kv::{KvCommand, KvConfig, KvOp, KvStore};
use flotilla_proto::etcdserverpb::{Member, PutRequest};
use flotilla_raft::Storage as _;
use flotilla_storage::{DiskStorage, StorageOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

#[path = "common/big_store.rs"]
mod big_store;
use big_store::{KEYS, store, within_peak};

/// What checking or restoring may allocate at once: read and write
/// buffers of a MiB or so, one key's history, the small tables, the
/// storage's bookkeeping; far below the file.
const PEAK_BYTES_MAX: u64 = 4 << 20;
/// The restored member's peer URL (this test's port range; nothing binds).
const PEER_URL: &str = "http://127.0.0.1:21001";

/// Writes the backup file of `s` to `path`, as a member streams it.
fn write_backup(s: &KvStore, path: &Path) {
    let header = SnapshotHeader {
        cluster_id: 7,
        member_id: 2,
        applied_index: s.applied_index(),
        revision: s.revision(),
        compact_revision: s.compact_revision(),
        server_version: "test".into(),
        ..Default::default()
    };
    let mut chunks = SnapshotChunks::new(header, s.encode_snapshot(), 1 << 20);
    let mut out = std::fs::File::create(path).unwrap();
    while let Some(chunk) = chunks.next_chunk().unwrap() {
        out.write_all(&chunk).unwrap();
    }
}

fn args(dir: &Path) -> NodeArgs {
    NodeArgs {
        name: Some("n1".into()),
        initial_cluster: Some(format!("n1={PEER_URL}")),
        initial_cluster_token: Some("restored".into()),
        data_dir: Some(dir.to_path_buf()),
        ..NodeArgs::default()
    }
}

/// The staging directory a restore writes beside `dir`.
fn staging(dir: &Path) -> PathBuf {
    let mut s = dir.as_os_str().to_owned();
    s.push(".restoring");
    PathBuf::from(s)
}

/// A data directory that a member would not start from: absent (or
/// empty), and no staging directory left beside it.
fn assert_nothing_written(dir: &Path, why: &str) {
    let empty = std::fs::read_dir(dir).map_or(true, |mut d| d.next().is_none());
    assert!(empty, "{why}: the data directory holds something");
    assert!(
        !staging(dir).exists(),
        "{why}: the staging directory is left"
    );
}

#[test]
fn a_backup_of_tens_of_mb_is_checked_and_restored_in_bounded_memory() {
    let work = tempfile::tempdir().unwrap();
    let backup = work.path().join("backup.db");
    let s = store();
    write_backup(&s, &backup);
    let file_bytes = std::fs::metadata(&backup).unwrap().len();
    assert!(file_bytes > 40 << 20, "a file of {file_bytes} bytes");

    let summary = within_peak(
        &format!("status of a {file_bytes}-byte file"),
        PEAK_BYTES_MAX,
        || summarize(&backup),
    )
    .unwrap();
    assert_eq!(summary.total_key, KEYS as i64);
    assert_eq!(summary.revision, s.revision());
    assert_eq!(summary.total_size, file_bytes);
    assert_eq!(summary.hash, crc32fast::hash(&s.encode_snapshot()));

    let dir = work.path().join("n1.flotilla");
    let report = within_peak(
        &format!("restore of a {file_bytes}-byte file"),
        PEAK_BYTES_MAX,
        || restore(&backup, args(&dir)),
    )
    .unwrap();
    assert_eq!(report.keys, KEYS as i64);
    assert_eq!(report.revision, s.revision());
    assert!(!staging(&dir).exists());

    // The directory holds the store, with the new cluster's member table,
    // as a Raft snapshot at the index it had applied.
    let storage = DiskStorage::open(
        &dir,
        StorageOptions::new(report.cluster_id, report.member_id),
    )
    .unwrap();
    let snapshot = storage.snapshot().unwrap();
    assert_eq!(snapshot.meta.index, s.applied_index());
    let restored = KvStore::decode_snapshot(KvConfig::default(), &snapshot.data).unwrap();
    let mut expected = s.clone();
    expected.replace_members(vec![Member {
        id: report.member_id,
        name: "n1".into(),
        peer_ur_ls: vec![PEER_URL.into()],
        ..Default::default()
    }]);
    assert_eq!(restored.encode_snapshot(), expected.encode_snapshot());
}

#[test]
fn a_truncated_or_damaged_backup_is_refused_and_leaves_no_data_directory() {
    let work = tempfile::tempdir().unwrap();
    let mut s = KvStore::new(KvConfig::default());
    for i in 0..2000u64 {
        let op = KvOp::Put(PutRequest {
            key: format!("key/{i:05}").into_bytes(),
            value: vec![b'v'; 100],
            ..Default::default()
        });
        s.apply_entry(i + 1, KvCommand::new(op).encode_to_bytes());
    }
    let good = work.path().join("good.db");
    write_backup(&s, &good);
    let bytes = std::fs::read(&good).unwrap();
    let len = bytes.len();
    let encoded = s.encode_snapshot();
    // Where the store starts: right after the header.
    let store_at = bytes.windows(64).position(|w| w == &encoded[..64]).unwrap();
    // A byte inside a value: the store still decodes, only the checksum at
    // the end tells; and the first byte of the store (a field's key): the
    // store does not decode.
    let in_value = store_at
        + encoded.len() / 2
        + encoded[encoded.len() / 2..]
            .iter()
            .position(|&b| b == b'v')
            .unwrap();
    let flip = |at: usize, bit: u8| {
        let mut b = bytes.clone();
        b[at] ^= bit;
        b
    };
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("cut anywhere", bytes[..len - 100].to_vec(), "truncated"),
        (
            "cut by whole blocks",
            [
                &bytes[..len - 512 - CHECKSUM_BYTES],
                &bytes[len - CHECKSUM_BYTES..],
            ]
            .concat(),
            "damaged",
        ),
        ("a bit flipped in a value", flip(in_value, 0x04), "damaged"),
        (
            "a bit flipped in the store's structure",
            flip(store_at, 0x80),
            "damaged",
        ),
        (
            "a bit flipped in the checksum",
            flip(len - 1, 0x01),
            "damaged",
        ),
    ];
    for (why, content, says) in cases {
        let file = work.path().join("bad.db");
        std::fs::write(&file, &content).unwrap();
        let e = summarize(&file).unwrap_err();
        assert!(e.to_string().contains(says), "status, {why}: {e}");
        let dir = work.path().join("never");
        let e = restore(&file, args(&dir)).unwrap_err();
        assert!(e.to_string().contains(says), "restore, {why}: {e}");
        assert!(
            matches!(
                e,
                RestoreError::File(
                    SnapshotFileError::BadLength { .. }
                        | SnapshotFileError::ChecksumMismatch { .. }
                )
            ),
            "restore, {why}: {e:?}"
        );
        assert_nothing_written(&dir, why);
        // Into an existing empty directory (a volume's mount point): left
        // empty.
        std::fs::create_dir(&dir).unwrap();
        restore(&file, args(&dir)).unwrap_err();
        assert_nothing_written(&dir, why);
        std::fs::remove_dir(&dir).unwrap();
    }
    // The good file restores, after all those failures.
    let dir = work.path().join("restored");
    restore(&good, args(&dir)).unwrap();
    assert!(dir.join("snapshot").exists());
}
