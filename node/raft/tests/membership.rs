//! Membership entries as the application sees them: the configuration and
//! the proposer's context travel in one entry (so an application's member
//! table and Raft's configuration change together), and the strict
//! reconfiguration check refuses a removal that would leave no quorum that
//! answered recently.

mod common;

use common::*;
use flotilla_raft::{
    Bytes, ConfChange, ConfChangeData, ConfState, EntryKind, MemStorage, NodeId, ProposeError,
};

/// Thesis §4.1 with an application context: the change entry reaches every
/// member, commits, and hands each member the same configuration and the
/// proposer's bytes.
#[test]
fn a_change_carries_its_context_to_every_member() {
    let mut net = Net::new(3);
    net.elect(1);
    let context = Bytes::from_static(b"member record of 4");
    let (index, _) = net
        .core(1)
        .propose_conf_change_with_context(ConfChange::AddLearner(NodeId(4)), context.clone())
        .expect("the leader committed its no-op");
    let ready = handle(net.core(1));
    let readies = net.deliver(ready.messages);

    let mut applied_on = Vec::new();
    for (id, ready) in &readies {
        for entry in &ready.committed_entries {
            if entry.index != index {
                continue;
            }
            assert_eq!(entry.kind, EntryKind::ConfChange);
            let data = ConfChangeData::decode(&entry.data).expect("well formed");
            assert_eq!(data.context, context, "on {id}");
            assert_eq!(
                data.conf,
                ConfState {
                    voters: voters(3),
                    learners: vec![NodeId(4)],
                }
            );
            applied_on.push(*id);
        }
    }
    applied_on.sort();
    applied_on.dedup();
    assert_eq!(applied_on, voters(3), "committed on every member");
    for n in 1..=3 {
        assert_eq!(net.core(n).conf_state().learners, vec![NodeId(4)]);
    }
}

/// Entries written before contexts existed hold the configuration alone;
/// they decode with an empty context. A configuration cut short is refused.
#[test]
fn change_data_decodes_old_entries_and_refuses_damage() {
    let conf = ConfState {
        voters: voters(3),
        learners: vec![NodeId(9)],
    };
    let old = conf.encode();
    let decoded = ConfChangeData::decode(&old).expect("old format");
    assert_eq!((decoded.conf, decoded.context.len()), (conf.clone(), 0));

    let new = ConfChangeData {
        conf: conf.clone(),
        context: Bytes::from_static(b"ctx"),
    }
    .encode();
    assert_eq!(ConfChangeData::decode(&new).unwrap().context, &b"ctx"[..]);
    // The snapshot header's exact decoder refuses trailing bytes.
    assert_eq!(ConfState::decode(&new), None);
    for cut in 0..old.len() {
        assert_eq!(
            ConfChangeData::decode(&old.slice(..cut)),
            None,
            "cut at {cut}"
        );
    }
}

/// A leader of three with the strict check, whose no-op only member 2
/// acknowledged. Check-quorum off when `check_quorum` is false, so that a
/// test can let an election timeout pass without the leader stepping down.
fn strict_leader_heard_by_2(check_quorum: bool) -> Core {
    let mut config = config(1);
    config.strict_reconfig_check = true;
    config.check_quorum = check_quorum;
    let mut leader = core_with(config, MemStorage::new_with_voters(&voters(3)));
    elect(&mut leader);
    leader.step(append_ack(2, 1, 1, 1));
    handle(&mut leader);
    leader
}

/// etcd's `--strict-reconfig-check`: removing the one follower that answers
/// would leave the leader and a silent member, no working quorum; removing
/// the silent one leaves the leader and 2, a quorum of two.
#[test]
fn strict_check_refuses_a_removal_that_leaves_no_answering_quorum() {
    let mut leader = strict_leader_heard_by_2(true);
    let refused = leader.propose_conf_change(ConfChange::RemoveNode(NodeId(2)));
    assert!(
        matches!(&refused, Err(ProposeError::ConfChangeRejected(reason)) if reason.contains("below a quorum")),
        "{refused:?}"
    );
    leader
        .propose_conf_change(ConfChange::RemoveNode(NodeId(3)))
        .expect("1 and 2 answer: a quorum of the two left");
}

/// What a member answered counts for one election timeout: within it the
/// removal of the silent member goes through; once 2 has been silent for
/// longer, it is refused too.
#[test]
fn strict_check_forgets_answers_older_than_an_election_timeout() {
    let mut leader = strict_leader_heard_by_2(false);
    tick_n(&mut leader, ELECTION_TICKS - 1);
    leader
        .propose_conf_change(ConfChange::RemoveNode(NodeId(3)))
        .expect("2 answered within the timeout");

    let mut leader = strict_leader_heard_by_2(false);
    tick_n(&mut leader, ELECTION_TICKS + 1);
    assert!(leader.state().1, "check-quorum is off: still leading");
    let refused = leader.propose_conf_change(ConfChange::RemoveNode(NodeId(3)));
    assert!(
        matches!(&refused, Err(ProposeError::ConfChangeRejected(reason)) if reason.contains("below a quorum")),
        "{refused:?}"
    );
}

/// Without the check (the core's default), the same removal is accepted:
/// the check is what refuses it.
#[test]
fn without_the_strict_check_the_removal_is_accepted() {
    let mut leader = core_with(config(1), MemStorage::new_with_voters(&voters(3)));
    elect(&mut leader);
    leader.step(append_ack(2, 1, 1, 1));
    handle(&mut leader);
    leader
        .propose_conf_change(ConfChange::RemoveNode(NodeId(2)))
        .expect("no strict check");
}

/// A voter added directly counts at once: with the strict check the voters
/// already there must make the larger quorum themselves (etcd's
/// `IsReadyToAddVotingMember`), except when a single member grows to two.
#[test]
fn adding_a_voter_directly_needs_the_larger_quorum_already_answering() {
    // Three voters, only 2 answers: growing to four needs three answering.
    let mut leader = strict_leader_heard_by_2(true);
    let refused = leader.propose_conf_change(ConfChange::AddVoter(NodeId(4)));
    assert!(
        matches!(&refused, Err(ProposeError::ConfChangeRejected(reason)) if reason.contains("below a quorum")),
        "{refused:?}"
    );
    leader.step(append_ack(3, 1, 1, 1));
    handle(&mut leader);
    leader
        .propose_conf_change(ConfChange::AddVoter(NodeId(4)))
        .expect("1, 2 and 3 answer: a quorum of four");
    assert_eq!(leader.conf_state().voters, voters(4));

    let mut config = config(1);
    config.strict_reconfig_check = true;
    let mut single = core_with(config, MemStorage::new_with_voters(&voters(1)));
    elect(&mut single);
    single
        .propose_conf_change(ConfChange::AddVoter(NodeId(2)))
        .expect("one member may grow to two");
}
