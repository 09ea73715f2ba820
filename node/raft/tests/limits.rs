//! The bounds the core keeps and the errors a caller can act on.

mod common;

use common::*;
use flotilla_raft::{
    Bytes, Config, Entry, MemStorage, MessageBody, NodeId, ProposeError, ReadError, ReadMode,
    TransferError,
};

/// A leader of three that answered nothing yet: its no-op is uncommitted.
fn fresh_leader(tweak: impl FnOnce(&mut Config)) -> Core {
    let mut config = config(1);
    tweak(&mut config);
    let mut leader = core_with(config, MemStorage::new_with_voters(&voters(3)));
    elect(&mut leader);
    leader
}

/// Flow control at the source (etcd-raft's `MaxUncommittedEntriesSize`; a
/// bound per STYLE 7): a proposal that would take the appended-but-
/// uncommitted bytes past `max_uncommitted_bytes` is refused with
/// `UncommittedLimit`, and nothing of it is appended.
#[test]
fn proposal_beyond_uncommitted_bytes_is_refused_and_not_appended() {
    let data = Bytes::from(vec![0u8; 40]);
    let entry_bytes = data.len() as u64 + Entry::OVERHEAD_BYTES;
    let mut leader = fresh_leader(|c| c.max_uncommitted_bytes = entry_bytes + entry_bytes / 2);

    let (index, _) = leader.propose(data.clone()).expect("first fits");
    assert_eq!(
        leader.propose(data.clone()),
        Err(ProposeError::UncommittedLimit {
            uncommitted_bytes: entry_bytes,
            uncommitted_entries: 1,
            max_bytes: entry_bytes + entry_bytes / 2,
            max_entries: Config::new(NodeId(1)).max_uncommitted_entries,
        })
    );
    let ready = handle(&mut leader);
    assert_eq!(
        ready.entries.iter().map(|e| e.index).collect::<Vec<_>>(),
        [index],
        "only the accepted proposal is appended"
    );
}

/// As above for the entry count: a batch that would pass
/// `max_uncommitted_entries` is refused whole ("all or none").
#[test]
fn batch_beyond_uncommitted_entries_is_refused_whole() {
    let mut leader = fresh_leader(|c| c.max_uncommitted_entries = 3);
    let cmd = || Bytes::from_static(b"c");
    leader.propose_batch([cmd(), cmd()]).expect("two fit");
    let refused = leader.propose_batch([cmd(), cmd()]);
    assert!(
        matches!(
            refused,
            Err(ProposeError::UncommittedLimit {
                uncommitted_entries: 2,
                max_entries: 3,
                ..
            })
        ),
        "{refused:?}"
    );
    leader.propose(cmd()).expect("a third still fits");
    let ready = handle(&mut leader);
    assert_eq!(
        ready.entries.len(),
        3,
        "two, then one; the refused pair is absent"
    );
}

/// Once entries commit, their room is given back and proposals pass again.
#[test]
fn committed_entries_free_uncommitted_room() {
    let mut leader = fresh_leader(|c| c.max_uncommitted_entries = 1);
    leader.step(append_ack(2, 1, 1, 1)); // the no-op commits
    handle(&mut leader);
    let (index, _) = leader.propose(Bytes::from_static(b"a")).expect("fits");
    assert!(leader.propose(Bytes::from_static(b"b")).is_err());
    handle(&mut leader);

    leader.step(append_ack(2, 1, 1, index));
    let ready = handle(&mut leader);
    assert_eq!(ready.committed_entries.last().map(|e| e.index), Some(index));
    leader
        .propose(Bytes::from_static(b"b"))
        .expect("room again");
}

/// Thesis §6.4: reads waiting for confirmation are bounded by
/// `max_pending_reads`; one more is refused with `TooManyPending`.
#[test]
fn read_beyond_max_pending_reads_is_refused() {
    let mut leader = fresh_leader(|c| c.max_pending_reads = 2);
    leader
        .read_index(Bytes::from_static(b"r1"))
        .expect("queued");
    leader
        .read_index(Bytes::from_static(b"r2"))
        .expect("queued");
    assert_eq!(
        leader.read_index(Bytes::from_static(b"r3")),
        Err(ReadError::TooManyPending { limit: 2 })
    );
}

/// Raft §8 ("if the client contacts a follower, the follower rejects the
/// request and supplies information about the most recent leader"): a
/// follower refuses proposals and transfers with the leader it knows of; a
/// member that knows none gives no hint and cannot forward a read.
#[test]
fn follower_refuses_proposals_with_a_leader_hint() {
    let mut follower = core(2, 3);
    assert_eq!(
        follower.propose(Bytes::from_static(b"x")),
        Err(ProposeError::NotLeader { leader_hint: None })
    );
    assert_eq!(
        follower.read_index(Bytes::from_static(b"r")),
        Err(ReadError::NoLeader)
    );

    follower.step(msg(
        3,
        2,
        1,
        MessageBody::Heartbeat {
            commit: 0,
            round: 1,
        },
    ));
    handle(&mut follower);
    assert_eq!(
        follower.propose(Bytes::from_static(b"x")),
        Err(ProposeError::NotLeader {
            leader_hint: Some(NodeId(3))
        })
    );
    assert_eq!(
        follower.transfer_leader(NodeId(2)),
        Err(TransferError::NotLeader {
            leader_hint: Some(NodeId(3))
        })
    );
    assert!(handle(&mut follower).entries.is_empty());
}

/// Configuration that cannot work is refused up front (and `Raft::new`
/// refuses it too): lease reads without check-quorum (thesis §6.4.1: the
/// lease relies on followers that ignore votes), a heartbeat interval not
/// below the election timeout, zero ids and zero bounds.
#[test]
fn config_validate_rejects_inconsistent_values() {
    let base = config(1);
    assert_eq!(base.validate(), Ok(()));

    type Tweak = fn(&mut Config);
    let cases: [(&str, Tweak); 14] = [
        ("id 0", |c| c.id = NodeId::NONE),
        ("lease without check-quorum", |c| {
            c.read_mode = ReadMode::LeaseBased;
            c.check_quorum = false;
        }),
        ("lease drift not below election timeout", |c| {
            c.read_mode = ReadMode::LeaseBased;
            c.lease_drift_ticks = c.election_ticks;
        }),
        ("heartbeat = election", |c| {
            c.heartbeat_ticks = c.election_ticks
        }),
        ("heartbeat > election", |c| {
            c.heartbeat_ticks = c.election_ticks + 1
        }),
        ("heartbeat 0", |c| c.heartbeat_ticks = 0),
        ("election 0", |c| c.election_ticks = 0),
        ("inflight msgs 0", |c| c.max_inflight_msgs = 0),
        ("inflight bytes 0", |c| c.max_inflight_bytes = 0),
        ("msg bytes 0", |c| c.max_msg_bytes = 0),
        ("uncommitted bytes 0", |c| c.max_uncommitted_bytes = 0),
        ("uncommitted entries 0", |c| c.max_uncommitted_entries = 0),
        ("committed bytes per ready 0", |c| {
            c.max_committed_bytes_per_ready = 0
        }),
        ("pending reads 0", |c| c.max_pending_reads = 0),
    ];
    for (name, tweak) in cases {
        let mut bad = base.clone();
        tweak(&mut bad);
        assert!(bad.validate().is_err(), "{name} accepted");
        assert!(
            flotilla_raft::Raft::new(bad, MemStorage::new_with_voters(&voters(3))).is_err(),
            "{name} accepted by Raft::new"
        );
    }

    let mut lease = base.clone();
    lease.read_mode = ReadMode::LeaseBased;
    assert_eq!(lease.validate(), Ok(()), "lease with check-quorum is fine");
}

/// Only the leader's own proposals count against the uncommitted bounds, so
/// only their commitment may give room back: committing the no-op (or
/// entries of earlier terms) must not make room for proposals still
/// uncommitted.
#[test]
fn committing_the_noop_does_not_free_room_of_pending_proposals() {
    let mut leader = fresh_leader(|c| c.max_uncommitted_entries = 1);
    let (index, _) = leader.propose(Bytes::from_static(b"a")).expect("fits");
    handle(&mut leader);

    // Only the no-op (index 1) is acknowledged; "a" stays uncommitted.
    leader.step(append_ack(2, 1, 1, index - 1));
    let ready = handle(&mut leader);
    assert_eq!(ready.committed_entries.len(), 1, "the no-op commits");
    assert!(
        matches!(
            leader.propose(Bytes::from_static(b"b")),
            Err(ProposeError::UncommittedLimit { .. })
        ),
        "\"a\" is still uncommitted: no room for \"b\""
    );
}
