//! `DiskStorage` behaves like `MemStorage` (the model) under random saves,
//! overwrites, compactions, snapshot installs and restarts.

use flotilla_raft::{
    Bytes, ConfState, Entry, EntryKind, MemStorage, NodeId, Snapshot, SnapshotMeta, Storage, Term,
};
use flotilla_storage::{DiskStorage, StorageOptions};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Op {
    /// Save `n` entries of `term` from `back` entries before the end.
    Save {
        back: u64,
        n: u64,
        term: u64,
    },
    /// Compact at `back` entries before the end, keeping `keep` entries
    /// before the snapshot.
    Compact {
        back: u64,
        keep: u64,
    },
    /// Install a leader snapshot `ahead` entries past the end (or inside).
    Install {
        back: u64,
        ahead: u64,
        term_bump: bool,
    },
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..4u64, 1..6u64, 1..4u64).prop_map(|(back, n, term)| Op::Save { back, n, term }),
        1 => (0..6u64, 0..4u64).prop_map(|(back, keep)| Op::Compact { back, keep }),
        1 => (0..4u64, 0..3u64, any::<bool>())
            .prop_map(|(back, ahead, term_bump)| Op::Install { back, ahead, term_bump }),
        1 => Just(Op::Reopen),
    ]
}

fn voters() -> ConfState {
    ConfState {
        voters: vec![NodeId(1)],
        learners: vec![],
    }
}

fn options() -> StorageOptions {
    StorageOptions {
        segment_bytes_max: 100,
        bootstrap: Some(voters()),
        ..StorageOptions::new(5, 1)
    }
}

fn snapshot(index: u64, term: Term) -> Snapshot {
    Snapshot {
        meta: SnapshotMeta {
            index,
            term,
            conf_state: voters(),
        },
        data: Bytes::from(format!("at {index}")),
    }
}

fn assert_same(disk: &DiskStorage, model: &MemStorage) {
    assert_eq!(
        (disk.first_index(), disk.last_index()),
        (model.first_index(), model.last_index())
    );
    let (lo, hi) = (model.first_index(), model.last_index() + 1);
    assert_eq!(
        disk.entries(lo, hi, u64::MAX).unwrap(),
        model.entries(lo, hi, u64::MAX).unwrap()
    );
    assert_eq!(disk.snapshot().unwrap(), model.snapshot().unwrap());
    assert_eq!(disk.term(lo - 1).unwrap(), model.term(lo - 1).unwrap());
}

/// The model as a restart leaves it: entries a compaction kept before the
/// snapshot are not loaded again.
fn reopened(model: &MemStorage) -> MemStorage {
    let snap = model.snapshot().unwrap();
    let (first, last) = (snap.meta.index + 1, model.last_index());
    let entries = model.entries(first, last + 1, u64::MAX).unwrap();
    MemStorage::from_parts(model.hard_state(), snap, entries)
}

fn apply(op: &Op, disk: &mut DiskStorage, model: &mut MemStorage) {
    let last = model.last_index();
    match *op {
        Op::Save { back, n, term } => {
            // Raft never rewrites what a snapshot covers, even where a
            // compaction kept those entries.
            let from = (last + 1)
                .saturating_sub(back)
                .max(model.snapshot_index() + 1);
            // Terms never go down along the log, as in Raft.
            let term = Term(model.term(from - 1).unwrap().0 + term);
            let entries: Vec<Entry> = (from..from + n)
                .map(|index| Entry {
                    term,
                    index,
                    kind: EntryKind::Normal,
                    data: Bytes::from(vec![index as u8; (index % 7) as usize]),
                })
                .collect();
            model.save(None, &entries).unwrap();
            disk.save(None, &entries).unwrap();
        }
        Op::Compact { back, keep } => {
            let index = last.saturating_sub(back);
            if index >= model.first_index() {
                let snap = snapshot(index, model.term(index).unwrap());
                let compact_to = index.saturating_sub(keep);
                model.compact(snap.clone(), compact_to).unwrap();
                disk.compact(snap, compact_to).unwrap();
            }
        }
        Op::Install {
            back,
            ahead,
            term_bump,
        } => {
            let index = (last + ahead).saturating_sub(back);
            let held = model.term(index).ok();
            let term = match held {
                Some(t) if !term_bump => t,
                _ => Term(model.term(last).unwrap().0 + 1),
            };
            let snap = snapshot(index, term);
            model.apply_snapshot(snap.clone()).unwrap();
            disk.apply_snapshot(snap).unwrap();
        }
        Op::Reopen => {}
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn disk_matches_memory(ops in prop::collection::vec(op(), 1..30)) {
        let dir = tempfile::tempdir().unwrap();
        let mut disk = DiskStorage::open(dir.path(), options()).unwrap();
        let mut model = MemStorage::new_with_voters(&[NodeId(1)]);
        for op in &ops {
            apply(op, &mut disk, &mut model);
            if matches!(op, Op::Reopen) {
                drop(disk);
                disk = DiskStorage::open(dir.path(), options()).unwrap();
                model = reopened(&model);
            }
            assert_same(&disk, &model);
        }
        drop(disk);
        let disk = DiskStorage::open(dir.path(), options()).unwrap();
        assert_same(&disk, &reopened(&model));
    }
}
