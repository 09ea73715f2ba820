//! Membership changes (thesis §4): learners, promotion, removal, one voter
//! change at a time with the leader's own-term commit first, leadership
//! transfer before removing the leader, and a removed leader stepping down.
//! Every step runs the safety invariants.

use flotilla_raft::{Bytes, ConfChange, NodeId, ProposeError, Role};
use flotilla_tests::sim::{Cluster, NetFaults, TICK_UNITS, sim_config};

const WAIT: u64 = 300;

fn cluster(seed: u64) -> Cluster {
    Cluster::new(3, sim_config(), NetFaults::RELIABLE, seed)
}

fn assert_safe(c: &Cluster) {
    if let Some(v) = c.violation() {
        panic!("seed {}: invariant violated: {v}", c.seed());
    }
}

fn leader(c: &mut Cluster) -> NodeId {
    c.await_leader(WAIT)
        .unwrap_or_else(|| panic!("no leader{}", c.describe()))
}

/// Proposes `change` at the leader, retrying while the leader is not ready
/// for it, and waits until three running members that stay in the
/// configuration (all, if fewer run) applied it.
fn change(c: &mut Cluster, change: ConfChange) -> u64 {
    for _ in 0..WAIT {
        let l = leader(c);
        match c.raft(l).expect("up").propose_conf_change(change) {
            Ok((index, _)) => {
                // A removed member need not learn that its removal
                // committed: count the running members that stay.
                let stays = |id: NodeId| !matches!(change, ConfChange::RemoveNode(r) if r == id);
                let up = c.nodes.iter().filter(|n| n.is_up() && stays(n.id)).count();
                let applied = c.wait_applied(index, up.min(3), WAIT);
                assert!(
                    applied >= up.min(3),
                    "{change:?} at index {index} applied by {applied} of the {up} running members that stay{}",
                    c.describe()
                );
                return index;
            }
            Err(ProposeError::ConfChangeRejected(_)) | Err(ProposeError::NotLeader { .. }) => {
                c.run_ticks(2)
            }
            Err(e) => panic!("{change:?}: {e}"),
        }
    }
    panic!("{change:?} never accepted{}", c.describe());
}

fn voters(c: &mut Cluster) -> Vec<NodeId> {
    let l = leader(c);
    let mut v = c.raft(l).expect("up").conf_state().voters;
    v.sort();
    v
}

/// Thesis §4.2.1: a new member joins as a learner, receives the log without
/// voting or counting in quorums, and is promoted once caught up.
#[test]
fn learner_catches_up_then_is_promoted() {
    let mut c = cluster(1);
    for i in 0..20u8 {
        c.one(&[i], 3, true, WAIT).expect("agreed");
    }
    let new = c.add_node();
    change(&mut c, ConfChange::AddLearner(new));
    let index = c.one(b"after-add", 3, true, WAIT).expect("agreed");
    assert_eq!(c.wait_applied(index, 4, WAIT), 4, "the learner caught up");
    assert_eq!(c.node(new).role(), Some(Role::Follower));
    // A learner is not counted: with it and one voter down, two voters of
    // three still commit; with two voters down nothing commits.
    let l = leader(&mut c);
    let others: Vec<NodeId> = voters(&mut c).into_iter().filter(|v| *v != l).collect();
    c.crash(others[0]);
    c.one(b"two-of-three", 2, true, WAIT)
        .expect("two voters commit");
    c.crash(others[1]);
    let (stuck, _) = c
        .raft(l)
        .expect("up")
        .propose(Bytes::from_static(b"stuck"))
        .expect("leader");
    c.run_ticks(50);
    assert_eq!(
        c.n_committed(stuck).0,
        0,
        "a learner counted towards a quorum"
    );
    c.restart(others[0]);
    c.restart(others[1]);
    leader(&mut c);
    change(&mut c, ConfChange::PromoteLearner(new));
    assert_eq!(voters(&mut c).len(), 4);
    c.one(b"four-voters", 4, true, WAIT)
        .expect("agreed by four");
    assert_safe(&c);
}

/// The leader refuses to promote `learner`, with a reason naming `why`.
fn assert_promotion_refused(c: &mut Cluster, learner: NodeId, why: &str) {
    let l = leader(c);
    let e = c
        .raft(l)
        .expect("up")
        .propose_conf_change(ConfChange::PromoteLearner(learner))
        .expect_err("promotion refused");
    assert!(
        matches!(e, ProposeError::ConfChangeRejected(ref r) if r.contains(why)),
        "{e}"
    );
}

/// A learner far behind is not promoted: it would stall commits.
#[test]
fn promotion_refused_while_learner_lags() {
    let mut config = sim_config();
    config.max_promote_lag_entries = 5;
    let mut c = Cluster::new(3, config, NetFaults::RELIABLE, 2);
    c.one(b"x", 3, true, WAIT).expect("agreed");
    let new = c.add_node();
    change(&mut c, ConfChange::AddLearner(new));
    c.crash(new);
    for i in 0..20u8 {
        c.one(&[i], 3, true, WAIT).expect("agreed");
    }
    assert_promotion_refused(&mut c, new, "behind");
    c.restart(new);
    c.one(b"catch-up", 4, true, WAIT)
        .expect("learner caught up");
    change(&mut c, ConfChange::PromoteLearner(new));
    assert!(voters(&mut c).contains(&new));
    assert_safe(&c);
}

/// A learner that never answered is not promoted, however short the log:
/// it may not be running at all.
#[test]
fn promotion_refused_for_a_learner_never_heard_from() {
    let mut c = cluster(3);
    c.one(b"x", 3, true, WAIT).expect("agreed");
    let new = c.add_node();
    c.crash(new);
    change(&mut c, ConfChange::AddLearner(new));
    assert_promotion_refused(&mut c, new, "acknowledged no entry");
    c.restart(new);
    c.one(b"catch-up", 4, true, WAIT)
        .expect("learner caught up");
    change(&mut c, ConfChange::PromoteLearner(new));
    assert!(voters(&mut c).contains(&new));
    assert_safe(&c);
}

/// Thesis §4.1: one change at a time — a second change is refused until
/// the first commits; and a new leader accepts none before it committed an
/// entry of its own term.
#[test]
fn one_change_at_a_time() {
    let mut c = cluster(3);
    c.one(b"x", 3, true, WAIT).expect("agreed");
    let l = leader(&mut c);
    let a = c.add_node();
    let b = c.add_node();
    let raft = c.raft(l).expect("up");
    raft.propose_conf_change(ConfChange::AddLearner(a))
        .expect("first change");
    let e = raft
        .propose_conf_change(ConfChange::AddLearner(b))
        .expect_err("second change while the first is uncommitted");
    assert!(matches!(e, ProposeError::ConfChangeRejected(_)), "{e}");
    c.run_ticks(20);
    change(&mut c, ConfChange::AddLearner(b));

    // A fresh leader: refuse until its no-op commits.
    let l = leader(&mut c);
    let ids: Vec<NodeId> = voters(&mut c);
    c.crash(l);
    let mut refused_early = false;
    for _ in 0..200 * TICK_UNITS {
        c.step();
        if let Some(nl) = c.leader().filter(|x| *x != l) {
            let raft = c.raft(nl).expect("up");
            let (term, _) = raft.state();
            let status = raft.status();
            let committed_in_term =
                status.hard_state.commit == status.last_index && term == status.hard_state.term;
            if !committed_in_term {
                let e = raft.propose_conf_change(ConfChange::RemoveNode(a));
                assert!(
                    matches!(e, Err(ProposeError::ConfChangeRejected(_))),
                    "{e:?}"
                );
                refused_early = true;
            }
            break;
        }
    }
    assert!(
        refused_early,
        "the new leader had committed before it could be asked"
    );
    c.restart(l);
    assert_eq!(voters(&mut c), ids);
    assert_safe(&c);
}

/// Thesis §4.2.2: a leader that removes itself keeps leading until the
/// change commits, then steps down; the rest elect a leader.
#[test]
fn removed_leader_steps_down() {
    let mut c = cluster(4);
    c.one(b"x", 3, true, WAIT).expect("agreed");
    let l = leader(&mut c);
    let (index, _) = loop {
        match c
            .raft(l)
            .expect("up")
            .propose_conf_change(ConfChange::RemoveNode(l))
        {
            Ok(v) => break v,
            Err(_) => c.run_ticks(1),
        }
    };
    assert_eq!(
        c.node(l).role(),
        Some(Role::Leader),
        "still leads before the commit"
    );
    assert!(
        c.wait_applied(index, 2, WAIT) >= 2,
        "the removal at {index} was not applied by two members{}",
        c.describe()
    );
    c.run_ticks(2);
    assert_ne!(
        c.node(l).role(),
        Some(Role::Leader),
        "still leads after its removal committed"
    );
    let next = leader(&mut c);
    assert_ne!(next, l);
    assert_eq!(voters(&mut c).len(), 2);
    c.one(b"without-old-leader", 2, true, WAIT)
        .expect("the rest commit");
    // The removed member never campaigns again.
    c.run_ticks(100);
    assert_ne!(c.node(l).role(), Some(Role::Candidate));
    assert_safe(&c);
}

/// The operator's path for removing the leader: transfer leadership away
/// first (thesis §3.10), then remove it as an ordinary follower.
#[test]
fn transfer_then_remove_leader() {
    let mut c = cluster(5);
    c.one(b"x", 3, true, WAIT).expect("agreed");
    let old = leader(&mut c);
    let target = c.ids().into_iter().find(|id| *id != old).expect("follower");
    c.raft(old)
        .expect("up")
        .transfer_leader(target)
        .expect("transfer");
    c.run_ticks(10);
    assert_eq!(leader(&mut c), target);
    change(&mut c, ConfChange::RemoveNode(old));
    assert!(!voters(&mut c).contains(&old));
    c.one(b"after", 2, true, WAIT).expect("agreed");
    assert_safe(&c);
}

/// A removed follower is gone from the leader's replication and quorum.
#[test]
fn remove_follower_shrinks_quorum() {
    let mut c = Cluster::new(5, sim_config(), NetFaults::RELIABLE, 6);
    c.one(b"x", 5, true, WAIT).expect("agreed");
    let l = leader(&mut c);
    let followers: Vec<NodeId> = c.ids().into_iter().filter(|id| *id != l).collect();
    change(&mut c, ConfChange::RemoveNode(followers[0]));
    change(&mut c, ConfChange::RemoveNode(followers[1]));
    assert_eq!(voters(&mut c).len(), 3);
    // Three voters: with the two removed members and one more down, two of
    // three still commit.
    c.crash(followers[0]);
    c.crash(followers[1]);
    c.crash(followers[2]);
    c.one(b"two-of-three", 2, true, WAIT)
        .expect("quorum of the new configuration");
    assert_safe(&c);
}
