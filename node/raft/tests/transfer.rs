//! Leadership transfer (thesis §3.10): TimeoutNow once the target is caught
//! up, proposals refused meanwhile, abandoned after an election timeout.

mod common;

use common::*;
use flotilla_raft::{Bytes, MemStorage, MessageBody, NodeId, ProposeError, Term};

/// A leader of three whose no-op only member 2 acknowledged: 2 is up to
/// date, 3 lags.
fn leader_with_lagging_3() -> Core {
    let mut leader = core_with(config(1), MemStorage::new_with_voters(&voters(3)));
    elect(&mut leader);
    leader.step(append_ack(2, 1, 1, 1));
    handle(&mut leader);
    leader
}

/// Thesis §3.10 step 2: when the target's log already matches the leader's,
/// the leader sends TimeoutNow at once; the target campaigns without
/// pre-vote, its RequestVote marked as a transfer so that members inside the
/// old leader's lease still answer, and it wins the next term.
#[test]
fn transfer_to_an_up_to_date_follower_sends_timeout_now_at_once() {
    let mut net = Net::new(3);
    net.elect(1);

    net.core(1).transfer_leader(NodeId(2)).expect("leader");
    let ready = handle(net.core(1));
    assert_eq!(ready.messages, [msg(1, 2, 1, MessageBody::TimeoutNow)]);
    assert_eq!(
        net.core(1).propose(Bytes::from_static(b"x")),
        Err(ProposeError::TransferInProgress { to: NodeId(2) })
    );

    let readies = net.deliver(ready.messages);
    let requests: Vec<_> = readies
        .iter()
        .flat_map(|(_, r)| r.messages.iter())
        .filter(|m| m.kind() == "RequestVote")
        .collect();
    assert_eq!(requests.len(), 2, "straight to RequestVote, no PreVote");
    for m in requests {
        assert_eq!(m.from, NodeId(2));
        assert_eq!(m.term, Term(2));
        assert!(matches!(
            m.body,
            MessageBody::RequestVote {
                leader_transfer: true,
                ..
            }
        ));
    }
    assert_eq!(net.core(2).state(), (Term(2), true));
    assert_eq!(net.core(1).state(), (Term(2), false));
}

/// Thesis §3.10 step 1: a lagging target is first brought up to date; the
/// TimeoutNow goes only once it acknowledged the leader's last entry, and
/// proposals are refused all the while so that the target can catch up.
#[test]
fn transfer_to_a_lagging_follower_waits_until_it_catches_up() {
    let mut leader = leader_with_lagging_3();
    leader.transfer_leader(NodeId(3)).expect("leader");
    let ready = handle(&mut leader);
    assert!(!kinds(&ready.messages).contains(&"TimeoutNow"));
    assert_eq!(
        leader.propose(Bytes::from_static(b"x")),
        Err(ProposeError::TransferInProgress { to: NodeId(3) })
    );

    leader.step(append_ack(3, 1, 1, 1));
    let ready = handle(&mut leader);
    assert_eq!(
        sent_to(&ready, 3)
            .into_iter()
            .filter(|m| m.body == MessageBody::TimeoutNow)
            .count(),
        1
    );
}

/// Thesis §3.10 step 3 ("if the transfer does not complete within an
/// election timeout, the leader aborts it and resumes accepting client
/// requests").
#[test]
fn transfer_is_abandoned_after_an_election_timeout() {
    let mut leader = leader_with_lagging_3();
    leader.transfer_leader(NodeId(3)).expect("leader");
    handle(&mut leader);

    // Member 2 keeps answering heartbeats, so check-quorum holds; 3 is silent.
    for tick in 1..=ELECTION_TICKS {
        assert!(
            leader.propose(Bytes::from_static(b"x")).is_err(),
            "accepted at tick {tick} of the transfer"
        );
        leader.tick();
        let ready = handle(&mut leader);
        assert!(!kinds(&ready.messages).contains(&"TimeoutNow"));
        for round in heartbeat_rounds(&ready, 2) {
            leader.step(msg(2, 1, 1, MessageBody::HeartbeatResponse { round }));
        }
    }
    assert!(leader.state().1, "still leading");
    leader
        .propose(Bytes::from_static(b"x"))
        .expect("proposals resume after the transfer is abandoned");
}

/// Thesis §3.10: only a voter can take over, and only a leader hands over.
#[test]
fn transfer_needs_a_voter_target() {
    let mut leader = leader_with_lagging_3();
    assert_eq!(
        leader.transfer_leader(NodeId(9)),
        Err(flotilla_raft::TransferError::NotVoter(NodeId(9)))
    );
    leader
        .propose(Bytes::from_static(b"x"))
        .expect("no transfer started");
}

/// The member a stopping leader hands over to (etcd's
/// `transferLeadershipOnShutdown` picks the most caught-up voter too): the
/// other voter with the highest match index, never a learner, never itself;
/// nobody on a follower or a leader alone.
#[test]
fn transfer_target_is_the_most_caught_up_voter() {
    use flotilla_raft::{ConfState, HardState, Snapshot, SnapshotMeta};
    let conf = ConfState {
        voters: voters(3),
        learners: vec![NodeId(4)],
    };
    let storage = MemStorage::from_parts(
        HardState::default(),
        Snapshot {
            meta: SnapshotMeta {
                conf_state: conf,
                ..SnapshotMeta::default()
            },
            data: Bytes::new(),
        },
        Vec::new(),
    );
    let mut leader = core_with(config(1), storage);
    assert_eq!(
        leader.transfer_target(),
        None,
        "a follower hands over nothing"
    );
    elect(&mut leader);
    for i in 0..4 {
        leader
            .propose(Bytes::from(format!("c{i}")))
            .expect("leader");
        handle(&mut leader);
    }
    // The learner is furthest ahead, yet only voters can take over.
    leader.step(append_ack(4, 1, 1, 5));
    leader.step(append_ack(2, 1, 1, 2));
    leader.step(append_ack(3, 1, 1, 4));
    handle(&mut leader);
    assert_eq!(leader.transfer_target(), Some(NodeId(3)));
    leader.step(append_ack(2, 1, 1, 5));
    handle(&mut leader);
    assert_eq!(leader.transfer_target(), Some(NodeId(2)));

    // 3 catches up, then falls silent for a check-quorum round while 2
    // keeps answering heartbeats: the live voter is chosen over the silent
    // one, however caught up that one was.
    leader.step(append_ack(3, 1, 1, 5));
    handle(&mut leader);
    assert_eq!(leader.transfer_target(), Some(NodeId(2)), "tie: lowest id");
    leader.propose(Bytes::from_static(b"c4")).expect("leader");
    handle(&mut leader);
    leader.step(append_ack(3, 1, 1, 6));
    handle(&mut leader);
    assert_eq!(leader.transfer_target(), Some(NodeId(3)), "3 is ahead");
    // The round resets at the election timeout; 2's next heartbeat answer
    // (within a heartbeat interval) marks it again.
    for _ in 0..ELECTION_TICKS + HEARTBEAT_TICKS {
        leader.tick();
        let ready = handle(&mut leader);
        for round in heartbeat_rounds(&ready, 2) {
            leader.step(msg(2, 1, 1, MessageBody::HeartbeatResponse { round }));
        }
    }
    assert!(leader.state().1, "2 keeps the quorum");
    assert_eq!(leader.transfer_target(), Some(NodeId(2)), "3 went silent");

    let mut alone = core(1, 1);
    elect(&mut alone);
    assert!(alone.state().1);
    assert_eq!(alone.transfer_target(), None, "no other voter");
}
