//! The driver contract (crate docs, steps 1–6): what a `Ready` hands out,
//! once, and how a restarted core resumes from its storage.

mod common;

use common::*;
use flotilla_raft::{Bytes, EntryKind, HardState, MemStorage, NodeId, Role, Storage, Term};

fn data(ready: &flotilla_raft::Ready) -> Vec<Bytes> {
    ready
        .committed_entries
        .iter()
        .filter(|e| e.kind == EntryKind::Normal)
        .map(|e| e.data.clone())
        .collect()
}

/// Raft §5.3 ("the leader decides when it is safe to apply a log entry") and
/// driver step 5: each committed entry is handed out for applying exactly
/// once, in order; after `advance` it does not come again.
#[test]
fn committed_entries_are_handed_out_once() {
    let mut single = core(1, 1);
    let ready = elect(&mut single);
    assert_eq!(ready.soft_state.map(|s| s.role), Some(Role::Leader));
    assert!(
        ready.committed_entries.is_empty(),
        "a leader counts its own entry only once it is durable"
    );
    let ready = handle(&mut single);
    assert_eq!(
        ready
            .committed_entries
            .iter()
            .map(|e| (e.index, e.kind))
            .collect::<Vec<_>>(),
        [(1, EntryKind::Noop)]
    );

    single.propose(Bytes::from_static(b"a")).expect("leader");
    let ready = handle(&mut single);
    assert_eq!(ready.entries.len(), 1, "persisted first");
    assert!(data(&ready).is_empty());
    let ready = handle(&mut single);
    assert_eq!(data(&ready), [Bytes::from_static(b"a")], "then committed");

    single.propose(Bytes::from_static(b"b")).expect("leader");
    handle(&mut single);
    let ready = handle(&mut single);
    assert_eq!(data(&ready), [Bytes::from_static(b"b")], "no repeat of a");
    assert!(!single.has_ready());
}

/// Bounded `Ready`s (STYLE 7): committed entries are handed out within
/// `max_committed_bytes_per_ready`, at least one at a time, and the rest
/// follow in later `Ready`s.
#[test]
fn committed_entries_are_handed_out_within_the_byte_budget() {
    let mut config = config(1);
    config.max_committed_bytes_per_ready = 60; // two 27-byte entries
    let mut single = core_with(config, MemStorage::new_with_voters(&voters(1)));
    elect(&mut single);
    single
        .propose_batch((0..5).map(|i| Bytes::from(format!("c{i}x"))))
        .expect("leader");
    let mut batches = Vec::new();
    while single.has_ready() {
        batches.push(data(&handle(&mut single)).len());
    }
    // The first `Ready` persists them; the leader commits them once they
    // are durable, and hands them out two at a time.
    assert_eq!(batches, [0, 2, 2, 1]);
}

/// A driver whose state machine is busy holds committed entries back
/// (`hold_committed`): the commit index still moves, entries are still
/// persisted, and the held entries come out in order once released.
#[test]
fn held_committed_entries_wait_while_the_rest_goes_on() {
    let mut single = core(1, 1);
    elect(&mut single);
    handle(&mut single);
    single.hold_committed(true);
    single.propose(Bytes::from_static(b"a")).expect("leader");
    let ready = handle(&mut single);
    assert_eq!(ready.entries.len(), 1, "persisted while held");
    let ready = handle(&mut single);
    assert_eq!(
        ready.hard_state.map(|h| h.commit),
        Some(2),
        "committed while held"
    );
    assert!(data(&ready).is_empty(), "but not handed out");
    single.propose(Bytes::from_static(b"b")).expect("leader");
    while single.has_ready() {
        assert!(data(&handle(&mut single)).is_empty());
    }
    assert_eq!(single.status().applied, 1, "nothing handed out counts");
    single.hold_committed(false);
    assert!(single.has_ready(), "released entries are work");
    let ready = handle(&mut single);
    assert_eq!(
        data(&ready),
        [Bytes::from_static(b"a"), Bytes::from_static(b"b")]
    );
    assert_eq!(single.status().applied, 3);
}

/// Raft Figure 2 (persistent state) and thesis §3.8: a core restarted over
/// the same storage resumes its term, vote and commit index, and hands out
/// again the committed entries after `Config::applied`, the state machine's
/// own durable point.
#[test]
fn restarted_core_resumes_and_reapplies_from_the_applied_index() {
    let mut single = core(1, 1);
    elect(&mut single);
    single
        .propose_batch([b"a", b"b", b"c"].map(|d| Bytes::from_static(d)))
        .expect("leader");
    handle(&mut single); // persist
    handle(&mut single); // commit, apply and record the commit index
    let saved = single.storage().hard_state();
    assert_eq!(
        saved,
        HardState {
            term: Term(1),
            vote: NodeId(1),
            commit: 4
        }
    );
    let storage = single.into_storage();

    // The state machine had applied up to "a" (index 2).
    let mut config = config(1);
    config.applied = 2;
    let mut restarted = core_with(config, storage.clone());
    assert_eq!(restarted.status().hard_state, saved);
    let ready = handle(&mut restarted);
    assert_eq!(ready.hard_state, None, "nothing new to persist");
    assert_eq!(
        data(&ready),
        [Bytes::from_static(b"b"), Bytes::from_static(b"c")]
    );

    // From scratch, everything committed comes again.
    let mut from_zero = core_with(crate::config(1), storage);
    let ready = handle(&mut from_zero);
    assert_eq!(ready.committed_entries.len(), 4);

    // The next election is in the term after the saved one.
    let ready = elect(&mut from_zero);
    assert_eq!(ready.entries[0].term, Term(2));
}

/// Step 3's deferred sync: entries written with `advance_written` are not
/// handed out again, but a lone leader commits them only once `persisted`
/// reports them durable; a report of entries no longer held is ignored.
#[test]
fn a_deferred_write_counts_once_it_is_reported_durable() {
    let mut single = core(1, 1);
    elect(&mut single);
    handle(&mut single); // the no-op commits
    let (index, term) = single.propose(Bytes::from_static(b"a")).expect("leader");
    let ready = single.ready().unwrap();
    assert_eq!(ready.entries.len(), 1);
    single
        .storage_mut()
        .save(ready.hard_state.as_ref(), &ready.entries)
        .unwrap();
    single.advance_written();
    assert!(
        !single.has_ready(),
        "nothing more until the sync: {:?}",
        single.status()
    );
    assert!(single.status().hard_state.commit < index);
    // A report of another term's entry at that index changes nothing.
    single.persisted(index, Term(term.0 + 1));
    assert!(single.status().hard_state.commit < index);
    single.persisted(index, term);
    let ready = handle(&mut single);
    assert!(
        ready.entries.is_empty(),
        "written entries are not handed out again"
    );
    assert_eq!(data(&ready), [Bytes::from_static(b"a")]);
}
