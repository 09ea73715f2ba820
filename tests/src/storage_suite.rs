//! The storage test suite every [`Storage`] implementation passes
//! (`MemStorage`, `flotilla_storage::DiskStorage`): the trait's contract,
//! checked by what the read methods return after each write.
//!
//! - [`run_all`] checks a fresh storage per case. `make` must return an
//!   empty storage bootstrapped with the voters [`VOTERS`].
//! - [`run_durability`] checks that everything survives a restart. Its
//!   `reopen` gets `None` for a fresh storage (as `make` above) and
//!   `Some(old)` to restart: it drops `old` and opens the same directory
//!   again. Only storage that outlives its object runs it: for `MemStorage`
//!   a "reopen" could only hand the same object back, and the suite would
//!   pass whatever it does.
//!
//! The commit index is checked loosely across a restart: Raft needs term,
//! vote and log durable, not the commit index, and the disk implementation
//! saves it lazily. After a restart it must be at most what was saved and at
//! least the snapshot's index.

use flotilla_raft::{
    Bytes, ConfState, Entry, EntryKind, HardState, LogIndex, NodeId, Snapshot, SnapshotMeta,
    Storage, StorageError, Term,
};

/// The voters a fresh storage must be bootstrapped with.
pub const VOTERS: [NodeId; 3] = [NodeId(1), NodeId(2), NodeId(3)];

/// An entry whose payload names its index and term, so a mix-up shows.
pub fn entry(index: LogIndex, term: u64) -> Entry {
    Entry {
        term: Term(term),
        index,
        kind: EntryKind::Normal,
        data: Bytes::from(format!("entry {index} of term {term}")),
    }
}

/// Entries `lo..=hi`, all of `term`.
pub fn entries(lo: LogIndex, hi: LogIndex, term: u64) -> Vec<Entry> {
    (lo..=hi).map(|i| entry(i, term)).collect()
}

/// A snapshot at `index`/`term` with a distinctive configuration and data.
pub fn snapshot(index: LogIndex, term: u64) -> Snapshot {
    Snapshot {
        meta: SnapshotMeta {
            index,
            term: Term(term),
            conf_state: ConfState {
                voters: vec![NodeId(1), NodeId(2)],
                learners: vec![NodeId(9)],
            },
        },
        data: Bytes::from(format!("state at {index}")),
    }
}

fn all<S: Storage>(s: &S) -> Vec<Entry> {
    s.entries(s.first_index(), s.last_index() + 1, u64::MAX)
        .expect("held entries are readable")
}

/// Every single-instance check, each on a fresh storage from `make`.
pub fn run_all<S: Storage>(mut make: impl FnMut() -> S) {
    empty_state(make());
    save_and_read(make());
    max_bytes_returns_at_least_one(make());
    overwrite_conflicting_suffix(make());
    rejects_gaps(make());
    hard_state_round_trips(make());
    compact_discards_covered_entries(make());
    compact_keeps_catchup_entries(make());
    apply_snapshot_keeps_matching_suffix(make());
    apply_snapshot_discards_conflicting_log(make());
    apply_snapshot_beyond_log(make());
    stale_snapshots_are_ignored(make());
}

/// A fresh storage: no entries, no vote, the bootstrap configuration.
pub fn empty_state<S: Storage>(s: S) {
    let init = s.initial_state().unwrap();
    assert_eq!(init.hard_state, HardState::default());
    assert_eq!(init.conf_state.voters, VOTERS.to_vec());
    assert_eq!((s.first_index(), s.last_index()), (1, 0));
    assert_eq!(s.term(0).unwrap(), Term(0));
    assert!(matches!(s.term(1), Err(StorageError::Unavailable(1))));
    assert!(s.entries(1, 1, u64::MAX).unwrap().is_empty());
    assert!(matches!(
        s.entries(1, 2, u64::MAX),
        Err(StorageError::Unavailable(_))
    ));
    let snap = s.snapshot().unwrap();
    assert_eq!(snap.meta.index, 0);
    assert_eq!(snap.meta.conf_state.voters, VOTERS.to_vec());
    assert!(snap.data.is_empty());
}

/// Saved entries read back, by range and by term.
pub fn save_and_read<S: Storage>(mut s: S) {
    let mut log = entries(1, 2, 1);
    log.extend(entries(3, 5, 2));
    s.save(None, &log[..2]).unwrap();
    s.save(None, &log[2..]).unwrap();
    assert_eq!((s.first_index(), s.last_index()), (1, 5));
    assert_eq!(all(&s), log);
    assert_eq!(s.entries(2, 4, u64::MAX).unwrap(), log[1..3].to_vec());
    assert_eq!(s.term(2).unwrap(), Term(1));
    assert_eq!(s.term(5).unwrap(), Term(2));
    assert!(matches!(s.term(6), Err(StorageError::Unavailable(6))));
    assert!(matches!(
        s.entries(4, 7, u64::MAX),
        Err(StorageError::Unavailable(_))
    ));
}

/// `max_bytes` stops the read once exceeded, but never returns nothing.
pub fn max_bytes_returns_at_least_one<S: Storage>(mut s: S) {
    let log = entries(1, 4, 1);
    s.save(None, &log).unwrap();
    let one = log[0].size_bytes();
    assert_eq!(s.entries(1, 5, 0).unwrap(), log[..1].to_vec());
    assert_eq!(s.entries(1, 5, one).unwrap(), log[..1].to_vec());
    assert_eq!(s.entries(1, 5, 2 * one).unwrap(), log[..2].to_vec());
    assert_eq!(s.entries(1, 5, 2 * one + 1).unwrap(), log[..2].to_vec());
}

/// A save from an index already held replaces everything from there on.
pub fn overwrite_conflicting_suffix<S: Storage>(mut s: S) {
    s.save(None, &entries(1, 5, 1)).unwrap();
    s.save(None, &entries(3, 4, 2)).unwrap();
    let mut expected = entries(1, 2, 1);
    expected.extend(entries(3, 4, 2));
    assert_eq!(all(&s), expected);
    assert_eq!(s.last_index(), 4);
    s.save(None, &entries(5, 6, 2)).unwrap();
    expected.extend(entries(5, 6, 2));
    assert_eq!(all(&s), expected);
    s.save(None, &entries(1, 1, 3)).unwrap();
    assert_eq!(all(&s), entries(1, 1, 3));
}

/// A save that would leave a hole in the log is refused, and changes nothing.
pub fn rejects_gaps<S: Storage>(mut s: S) {
    s.save(None, &entries(1, 2, 1)).unwrap();
    assert!(s.save(None, &entries(4, 4, 1)).is_err());
    assert_eq!(all(&s), entries(1, 2, 1));
}

/// The hard state reads back; a save without one keeps it.
pub fn hard_state_round_trips<S: Storage>(mut s: S) {
    let hs = HardState {
        term: Term(3),
        vote: NodeId(2),
        commit: 0,
    };
    s.save(Some(&hs), &[]).unwrap();
    assert_eq!(s.initial_state().unwrap().hard_state, hs);
    s.save(None, &entries(1, 2, 3)).unwrap();
    assert_eq!(s.initial_state().unwrap().hard_state, hs);
    let hs2 = HardState { commit: 2, ..hs };
    s.save(Some(&hs2), &[]).unwrap();
    assert_eq!(s.initial_state().unwrap().hard_state, hs2);
}

/// `compact` drops what the snapshot covers and records the snapshot.
pub fn compact_discards_covered_entries<S: Storage>(mut s: S) {
    s.save(None, &entries(1, 10, 1)).unwrap();
    s.compact(snapshot(5, 1), 5).unwrap();
    assert_eq!((s.first_index(), s.last_index()), (6, 10));
    assert_eq!(s.term(5).unwrap(), Term(1));
    assert!(matches!(s.term(4), Err(StorageError::Compacted(4))));
    assert!(matches!(
        s.entries(5, 7, u64::MAX),
        Err(StorageError::Compacted(5))
    ));
    assert_eq!(all(&s), entries(6, 10, 1));
    assert_eq!(s.snapshot().unwrap(), snapshot(5, 1));
    assert_eq!(
        s.initial_state().unwrap().conf_state,
        snapshot(5, 1).meta.conf_state
    );
    // Older snapshots change nothing; one beyond the log is refused.
    s.compact(snapshot(3, 1), 3).unwrap();
    assert_eq!(s.snapshot().unwrap(), snapshot(5, 1));
    assert!(s.compact(snapshot(11, 1), 11).is_err());
    assert_eq!(s.first_index(), 6);
    // Appends continue after a compaction.
    s.save(None, &entries(11, 12, 1)).unwrap();
    assert_eq!(all(&s), entries(6, 12, 1));
}

/// `compact` with `compact_to` below the snapshot keeps the entries in
/// between (for followers to catch up from), still records the snapshot,
/// and a later snapshot moves both points on. An installed snapshot from the
/// leader drops them.
pub fn compact_keeps_catchup_entries<S: Storage>(mut s: S) {
    s.save(None, &entries(1, 10, 1)).unwrap();
    s.compact(snapshot(6, 1), 3).unwrap();
    assert_eq!((s.first_index(), s.last_index()), (4, 10));
    assert_eq!(s.snapshot_index(), 6);
    assert_eq!(s.snapshot().unwrap(), snapshot(6, 1));
    assert_eq!(s.term(3).unwrap(), Term(1));
    assert!(matches!(s.term(2), Err(StorageError::Compacted(2))));
    assert_eq!(all(&s), entries(4, 10, 1));
    assert_eq!(
        s.initial_state().unwrap().conf_state,
        snapshot(6, 1).meta.conf_state
    );
    // A compaction point beyond the snapshot is clamped to it; one at or
    // below the held first entry discards nothing.
    s.compact(snapshot(8, 1), 9).unwrap();
    assert_eq!((s.first_index(), s.snapshot_index()), (9, 8));
    s.save(None, &entries(11, 14, 1)).unwrap();
    s.compact(snapshot(12, 1), 5).unwrap();
    assert_eq!((s.first_index(), s.snapshot_index()), (9, 12));
    // An older snapshot changes nothing, even with a later compaction point.
    s.compact(snapshot(10, 1), 10).unwrap();
    assert_eq!((s.first_index(), s.snapshot_index()), (9, 12));
    s.apply_snapshot(snapshot(13, 1)).unwrap();
    assert_eq!((s.first_index(), s.last_index()), (14, 14));
    assert_eq!(s.snapshot_index(), 13);
}

/// A leader's snapshot matching our entry at its index keeps what follows.
pub fn apply_snapshot_keeps_matching_suffix<S: Storage>(mut s: S) {
    s.save(None, &entries(1, 10, 2)).unwrap();
    s.apply_snapshot(snapshot(7, 2)).unwrap();
    assert_eq!((s.first_index(), s.last_index()), (8, 10));
    assert_eq!(all(&s), entries(8, 10, 2));
    assert_eq!(s.term(7).unwrap(), Term(2));
    assert_eq!(s.snapshot().unwrap(), snapshot(7, 2));
    assert!(s.initial_state().unwrap().hard_state.commit >= 7);
}

/// A snapshot whose term differs from ours at its index replaces the log.
pub fn apply_snapshot_discards_conflicting_log<S: Storage>(mut s: S) {
    s.save(None, &entries(1, 10, 1)).unwrap();
    s.apply_snapshot(snapshot(7, 2)).unwrap();
    assert_eq!((s.first_index(), s.last_index()), (8, 7));
    assert_eq!(s.term(7).unwrap(), Term(2));
    assert!(matches!(s.term(8), Err(StorageError::Unavailable(8))));
    assert_eq!(s.snapshot().unwrap(), snapshot(7, 2));
    assert_eq!(s.initial_state().unwrap().hard_state.commit, 7);
    s.save(None, &entries(8, 9, 2)).unwrap();
    assert_eq!(all(&s), entries(8, 9, 2));
}

/// A snapshot past the end of the log replaces it entirely.
pub fn apply_snapshot_beyond_log<S: Storage>(mut s: S) {
    s.save(None, &entries(1, 3, 1)).unwrap();
    s.apply_snapshot(snapshot(20, 4)).unwrap();
    assert_eq!((s.first_index(), s.last_index()), (21, 20));
    assert_eq!(s.term(20).unwrap(), Term(4));
    s.save(None, &entries(21, 21, 4)).unwrap();
    assert_eq!(all(&s), entries(21, 21, 4));
}

/// Snapshots older than the one held are ignored.
pub fn stale_snapshots_are_ignored<S: Storage>(mut s: S) {
    s.save(None, &entries(1, 10, 1)).unwrap();
    s.compact(snapshot(6, 1), 6).unwrap();
    s.apply_snapshot(snapshot(4, 1)).unwrap();
    s.apply_snapshot(snapshot(6, 1)).unwrap();
    assert_eq!(s.snapshot().unwrap(), snapshot(6, 1));
    assert_eq!(all(&s), entries(7, 10, 1));
}

/// Every restart check. See the module docs for `reopen`.
pub fn run_durability<S: Storage>(mut reopen: impl FnMut(Option<S>) -> S) {
    restart_keeps_log_and_vote(&mut reopen);
    restart_keeps_overwrite(&mut reopen);
    restart_keeps_compaction(&mut reopen);
    restart_keeps_applied_snapshot(&mut reopen);
    restart_keeps_many_batches(&mut reopen);
}

fn assert_restarted_hard_state<S: Storage>(s: &S, saved: HardState) {
    let hs = s.initial_state().unwrap().hard_state;
    assert_eq!(
        (hs.term, hs.vote),
        (saved.term, saved.vote),
        "term and vote survive"
    );
    let snap_index = s.snapshot().unwrap().meta.index;
    assert!(
        hs.commit <= saved.commit.max(snap_index),
        "commit {} > saved",
        hs.commit
    );
    assert!(
        hs.commit >= snap_index,
        "commit {} below the snapshot",
        hs.commit
    );
}

/// Entries and the vote survive a restart.
pub fn restart_keeps_log_and_vote<S: Storage>(reopen: &mut impl FnMut(Option<S>) -> S) {
    let mut s = reopen(None);
    let hs = HardState {
        term: Term(2),
        vote: NodeId(3),
        commit: 3,
    };
    s.save(Some(&hs), &entries(1, 3, 2)).unwrap();
    s.save(None, &entries(4, 5, 2)).unwrap();
    let s = reopen(Some(s));
    assert_eq!(all(&s), entries(1, 5, 2));
    assert_restarted_hard_state(&s, hs);
    assert_eq!(
        s.initial_state().unwrap().conf_state.voters,
        VOTERS.to_vec()
    );
}

/// An overwritten suffix stays overwritten after a restart.
pub fn restart_keeps_overwrite<S: Storage>(reopen: &mut impl FnMut(Option<S>) -> S) {
    let mut s = reopen(None);
    s.save(None, &entries(1, 6, 1)).unwrap();
    s.save(None, &entries(4, 4, 2)).unwrap();
    let mut s = reopen(Some(s));
    let mut expected = entries(1, 3, 1);
    expected.extend(entries(4, 4, 2));
    assert_eq!(all(&s), expected);
    s.save(None, &entries(5, 5, 2)).unwrap();
    let s = reopen(Some(s));
    expected.extend(entries(5, 5, 2));
    assert_eq!(all(&s), expected);
}

/// A compaction's snapshot and the remaining log survive a restart.
pub fn restart_keeps_compaction<S: Storage>(reopen: &mut impl FnMut(Option<S>) -> S) {
    let mut s = reopen(None);
    s.save(None, &entries(1, 10, 1)).unwrap();
    s.compact(snapshot(6, 1), 6).unwrap();
    let mut s = reopen(Some(s));
    assert_eq!(s.snapshot().unwrap(), snapshot(6, 1));
    assert_eq!((s.first_index(), s.last_index()), (7, 10));
    assert_eq!(all(&s), entries(7, 10, 1));
    assert_eq!(
        s.initial_state().unwrap().conf_state,
        snapshot(6, 1).meta.conf_state
    );
    s.save(None, &entries(11, 11, 1)).unwrap();
    let s = reopen(Some(s));
    assert_eq!(all(&s), entries(7, 11, 1));
}

/// An installed snapshot (log kept or discarded) survives a restart.
pub fn restart_keeps_applied_snapshot<S: Storage>(reopen: &mut impl FnMut(Option<S>) -> S) {
    let mut s = reopen(None);
    s.save(None, &entries(1, 8, 1)).unwrap();
    s.apply_snapshot(snapshot(5, 1)).unwrap();
    let mut s = reopen(Some(s));
    assert_eq!(all(&s), entries(6, 8, 1));
    assert!(s.initial_state().unwrap().hard_state.commit >= 5);
    s.apply_snapshot(snapshot(12, 3)).unwrap();
    let mut s = reopen(Some(s));
    assert_eq!(s.snapshot().unwrap(), snapshot(12, 3));
    assert_eq!((s.first_index(), s.last_index()), (13, 12));
    assert_eq!(s.initial_state().unwrap().hard_state.commit, 12);
    s.save(None, &entries(13, 14, 3)).unwrap();
    let s = reopen(Some(s));
    assert_eq!(all(&s), entries(13, 14, 3));
}

/// Many batches (enough to roll small segments) and overwrites across
/// batch boundaries survive a restart.
pub fn restart_keeps_many_batches<S: Storage>(reopen: &mut impl FnMut(Option<S>) -> S) {
    let mut s = reopen(None);
    let mut expected = Vec::new();
    for batch in 0..40u64 {
        let lo = batch * 5 + 1;
        s.save(None, &entries(lo, lo + 4, 1)).unwrap();
        expected.extend(entries(lo, lo + 4, 1));
    }
    // Replace the last 37 entries (crossing several batches) with 3.
    s.save(None, &entries(164, 166, 2)).unwrap();
    expected.truncate(163);
    expected.extend(entries(164, 166, 2));
    let s = reopen(Some(s));
    assert_eq!(all(&s), expected);
}
