//! What the storage tests that drive one voter through the fault-injecting
//! file layer share: its options, a run of same-sized entries, and opening
//! a directory with a fresh `FaultyFs`.

use std::path::Path;
use std::sync::Arc;

use flotilla_raft::{Bytes, ConfState, Entry, EntryKind, NodeId, Term};
use flotilla_storage::{DiskStorage, FaultyFs, OpenError, StorageOptions};

/// Member 1, the only voter, of cluster `cluster_id`.
pub fn one_voter(cluster_id: u64) -> StorageOptions {
    StorageOptions {
        bootstrap: Some(ConfState {
            voters: vec![NodeId(1)],
            learners: vec![],
        }),
        ..StorageOptions::new(cluster_id, 1)
    }
}

/// Entries `lo..=hi` of term 1, each `len` bytes of `fill`.
pub fn entries(lo: u64, hi: u64, fill: u8, len: usize) -> Vec<Entry> {
    (lo..=hi)
        .map(|index| Entry {
            term: Term(1),
            index,
            kind: EntryKind::Normal,
            data: Bytes::from(vec![fill; len]),
        })
        .collect()
}

/// Opens `dir` through a new fault-injecting layer, returned beside the
/// storage so a test can arm faults and count writes and syncs.
pub fn open_faulty(
    dir: &Path,
    options: StorageOptions,
) -> Result<(DiskStorage, FaultyFs), OpenError> {
    let fs = FaultyFs::new();
    let s = DiskStorage::open_with_fs(Arc::new(fs.clone()), dir, options)?;
    Ok((s, fs))
}
