//! The plan's rules one by one, on hand-made observations.

use super::*;
use crate::admin::{MemberId, NodeStatus};
use crate::observed::{MemberFacts, PodFacts, PvcFacts, StatefulSetFacts};

const REV: &str = "rev-2";

/// A healthy cluster of `voters` voters (ordinal 0 leads) plus `learners`
/// learners, every pod running the current revision.
fn world(voters: u32, learners: u32) -> Observed {
    let n = voters + learners;
    let members = (0..n)
        .map(|o| MemberFacts {
            id: MemberId(100 + u64::from(o)),
            ordinal: Some(o),
            name: format!("demo-{o}"),
            learner: o >= voters,
            status: Some(NodeStatus {
                member_id: MemberId(100 + u64::from(o)),
                leader: MemberId(100),
                term: 3,
                commit_index: 500,
                applied_index: 500,
                is_learner: o >= voters,
            }),
        })
        .collect();
    Observed {
        statefulset: Some(StatefulSetFacts {
            replicas: n,
            update_revision: Some(REV.to_string()),
            observed: true,
            founders: Some(3),
            claim_templates: None,
        }),
        pods: (0..n).map(|o| pod(o, REV)).collect(),
        pvcs: (0..n).map(pvc).collect(),
        membership: Ok(members),
    }
}

fn pod(ordinal: u32, revision: &str) -> PodFacts {
    PodFacts {
        ordinal,
        uid: Some(format!("pod-uid-{ordinal}")),
        ready: true,
        revision: Some(revision.to_string()),
        terminating: false,
    }
}

fn pvc(ordinal: u32) -> PvcFacts {
    PvcFacts {
        ordinal,
        uid: Some(format!("pvc-uid-{ordinal}")),
        terminating: false,
    }
}

fn inputs(desired: u32) -> PlanInputs {
    PlanInputs {
        desired,
        founders: 3,
        known_voters: None,
        bootstrapped: true,
        limits: PlanLimits::default(),
    }
}

fn members(w: &mut Observed) -> &mut Vec<MemberFacts> {
    w.membership.as_mut().expect("readable")
}

fn decide(desired: u32, w: &Observed) -> Decision {
    plan(inputs(desired), w).decision
}

#[test]
fn no_statefulset_creates_the_founders() {
    let mut w = world(3, 0);
    w.statefulset = None;
    let p = plan(inputs(5), &w);
    assert_eq!(
        p.decision,
        Decision::Act(Step::CreateCluster { founders: 3 })
    );
    assert_eq!((p.statefulset_replicas, p.voters), (3, 3));
}

#[test]
fn a_healthy_cluster_of_the_wanted_size_is_converged() {
    let p = plan(inputs(3), &world(3, 0));
    assert_eq!(p.decision, Decision::Wait(Wait::Converged));
    assert_eq!((p.statefulset_replicas, p.voters), (3, 3));
    assert!(p.view.expect("view").available());
}

#[test]
fn an_unreadable_membership_changes_nothing() {
    let mut w = world(3, 0);
    w.membership = Err("connection refused".to_string());
    let mut i = inputs(5);
    i.known_voters = Some(3);
    let p = plan(i, &w);
    assert_eq!(
        p.decision,
        Decision::Wait(Wait::MembersUnreachable("connection refused".to_string()))
    );
    assert_eq!((p.statefulset_replicas, p.voters), (3, 3));
}

#[test]
fn members_outside_the_clusters_addresses_or_with_gaps_stop_the_plan() {
    let mut w = world(3, 0);
    members(&mut w)[2].ordinal = None;
    assert!(matches!(
        decide(5, &w),
        Decision::Wait(Wait::UnknownMembers(_))
    ));
    let mut w = world(3, 0);
    members(&mut w)[2].ordinal = Some(3);
    assert_eq!(
        decide(1, &w),
        Decision::Wait(Wait::MembershipGap(vec![0, 1, 3]))
    );
}

#[test]
fn scale_up_adds_the_next_ordinal_as_a_learner_when_all_are_healthy() {
    assert_eq!(
        decide(5, &world(3, 0)),
        Decision::Act(Step::AddLearner { ordinal: 3 })
    );
    let mut w = world(3, 0);
    w.pods[1].ready = false;
    assert_eq!(
        decide(5, &w),
        Decision::Wait(Wait::MembersUnhealthy(vec![1]))
    );
}

#[test]
fn an_added_member_is_followed_by_the_statefulset() {
    let mut w = world(3, 1);
    w.statefulset.as_mut().expect("sts").replicas = 3;
    let p = plan(inputs(5), &w);
    assert_eq!(
        p.decision,
        Decision::Act(Step::ScaleStatefulSet { from: 3, to: 4 })
    );
    assert_eq!(p.statefulset_replicas, 4);
}

#[test]
fn a_learner_is_promoted_only_once_caught_up() {
    let mut w = world(3, 1);
    members(&mut w)[3]
        .status
        .as_mut()
        .expect("status")
        .applied_index = 10;
    assert_eq!(
        decide(5, &w),
        Decision::Act(Step::PromoteLearner {
            ordinal: 3,
            id: MemberId(103)
        }),
        "490 behind is within the bound"
    );
    members(&mut w)[3]
        .status
        .as_mut()
        .expect("status")
        .applied_index = 0;
    members(&mut w).iter_mut().for_each(|m| {
        if let Some(s) = m.status.as_mut() {
            s.commit_index = 5000;
            if !m.learner {
                s.applied_index = 5000;
            }
        }
    });
    assert_eq!(
        decide(5, &w),
        Decision::Wait(Wait::LearnerCatchingUp {
            ordinal: 3,
            lag: Some(5000)
        })
    );
    let mut w = world(3, 1);
    members(&mut w)[3].status = None;
    members(&mut w)[3].name.clear();
    assert_eq!(
        decide(5, &w),
        Decision::Wait(Wait::LearnerCatchingUp {
            ordinal: 3,
            lag: None
        })
    );
}

#[test]
fn a_promotion_that_would_leave_no_healthy_quorum_waits() {
    // 2 voters, one down: promoting makes 3 voters with 2 healthy: fine.
    let mut w = world(2, 1);
    members(&mut w)[1].status = None;
    assert_eq!(
        decide(3, &w),
        Decision::Act(Step::PromoteLearner {
            ordinal: 2,
            id: MemberId(102)
        })
    );
    // 4 voters, two down: 5 voters with 3 healthy is a quorum; three down is not.
    let mut w = world(4, 1);
    members(&mut w)[1].status = None;
    members(&mut w)[2].status = None;
    assert!(matches!(
        decide(5, &w),
        Decision::Act(Step::PromoteLearner { .. })
    ));
    members(&mut w)[3].status = None;
    assert!(matches!(
        decide(5, &w),
        Decision::Wait(Wait::QuorumAtRisk { .. })
    ));
}

#[test]
fn scale_down_moves_leadership_off_the_highest_ordinal_first() {
    let mut w = world(5, 0);
    for m in members(&mut w) {
        m.status.as_mut().expect("status").leader = MemberId(104);
    }
    members(&mut w)[2]
        .status
        .as_mut()
        .expect("status")
        .applied_index = 499;
    assert_eq!(
        decide(3, &w),
        Decision::Act(Step::MoveLeader {
            from: 4,
            to_ordinal: 0,
            to: MemberId(100),
            reason: MoveReason::ScaleDown
        }),
        "the most caught-up voter, lowest ordinal on a tie"
    );
}

#[test]
fn scale_down_removes_the_highest_ordinal_then_shrinks_then_deletes_its_volume() {
    let w = world(5, 0);
    assert_eq!(
        decide(3, &w),
        Decision::Act(Step::RemoveMember {
            ordinal: 4,
            id: MemberId(104)
        })
    );
    let mut w = world(5, 0);
    members(&mut w).pop();
    assert_eq!(
        decide(3, &w),
        Decision::Act(Step::ScaleStatefulSet { from: 5, to: 4 })
    );
    w.statefulset.as_mut().expect("sts").replicas = 4;
    w.pods[4].terminating = true;
    assert_eq!(decide(3, &w), Decision::Wait(Wait::PodTerminating(4)));
    w.pods.pop();
    assert_eq!(
        decide(3, &w),
        Decision::Act(Step::DeleteVolume { ordinal: 4 })
    );
    w.pvcs[4].terminating = true;
    assert_eq!(decide(3, &w), Decision::Wait(Wait::VolumeTerminating(4)));
    w.pvcs.pop();
    assert_eq!(
        decide(3, &w),
        Decision::Act(Step::RemoveMember {
            ordinal: 3,
            id: MemberId(103)
        })
    );
}

#[test]
fn a_removal_that_would_leave_no_healthy_quorum_waits() {
    // 5 voters, 0 and 1 down: removing 4 leaves 4 voters with 2 healthy.
    let mut w = world(5, 0);
    for m in members(&mut w) {
        m.status.as_mut().expect("status").leader = MemberId(102);
    }
    members(&mut w)[0].status = None;
    members(&mut w)[1].status = None;
    assert_eq!(
        decide(3, &w),
        Decision::Wait(Wait::QuorumAtRisk {
            step: "remove 4".to_string()
        })
    );
    // With only 0 down, 4 voters keep 3 healthy.
    members(&mut w)[1].status = members(&mut w)[2].status;
    assert_eq!(
        decide(3, &w),
        Decision::Act(Step::RemoveMember {
            ordinal: 4,
            id: MemberId(104)
        })
    );
}

#[test]
fn a_learner_being_scaled_away_is_removed_not_promoted() {
    let mut w = world(3, 1);
    members(&mut w)[3].status = None;
    assert_eq!(
        decide(3, &w),
        Decision::Act(Step::RemoveMember {
            ordinal: 3,
            id: MemberId(103)
        })
    );
}

#[test]
fn rolling_update_goes_broken_pods_then_followers_then_the_leader() {
    let mut w = world(3, 0);
    for p in &mut w.pods {
        p.revision = Some("rev-1".to_string());
    }
    w.pods[0].ready = false;
    assert_eq!(
        decide(3, &w),
        Decision::Act(Step::ReplacePod { ordinal: 0 }),
        "a broken pod first"
    );
    w.pods[0].ready = true;
    assert_eq!(
        decide(3, &w),
        Decision::Act(Step::ReplacePod { ordinal: 2 })
    );
    w.pods[2].revision = Some(REV.to_string());
    assert_eq!(
        decide(3, &w),
        Decision::Act(Step::ReplacePod { ordinal: 1 })
    );
    w.pods[1].revision = Some(REV.to_string());
    assert_eq!(
        decide(3, &w),
        Decision::Act(Step::MoveLeader {
            from: 0,
            to_ordinal: 1,
            to: MemberId(101),
            reason: MoveReason::RollingUpdate
        })
    );
    for m in members(&mut w) {
        m.status.as_mut().expect("status").leader = MemberId(101);
    }
    assert_eq!(
        decide(3, &w),
        Decision::Act(Step::ReplacePod { ordinal: 0 })
    );
}

#[test]
fn rolling_update_waits_for_health_and_terminations() {
    let mut w = world(3, 0);
    w.pods[2].revision = Some("rev-1".to_string());
    w.pods[1].revision = Some("rev-1".to_string());
    members(&mut w)[0]
        .status
        .as_mut()
        .expect("status")
        .applied_index = 1;
    members(&mut w)
        .iter_mut()
        .for_each(|m| m.status.as_mut().expect("status").commit_index = 5000);
    members(&mut w)[1]
        .status
        .as_mut()
        .expect("status")
        .applied_index = 5000;
    members(&mut w)[2]
        .status
        .as_mut()
        .expect("status")
        .applied_index = 5000;
    assert_eq!(
        decide(3, &w),
        Decision::Wait(Wait::MembersUnhealthy(vec![0])),
        "0 is up to date but lags"
    );
    let mut w = world(3, 0);
    w.pods[2].revision = Some("rev-1".to_string());
    w.pods[1].terminating = true;
    assert_eq!(decide(3, &w), Decision::Wait(Wait::PodTerminating(1)));
    let mut w = world(3, 0);
    w.pods[2].revision = Some("rev-1".to_string());
    w.statefulset.as_mut().expect("sts").observed = false;
    assert_eq!(decide(3, &w), Decision::Wait(Wait::StatefulSetNotObserved));
}

#[test]
fn a_single_member_is_replaced_in_place() {
    let mut w = world(1, 0);
    w.pods[0].revision = Some("rev-1".to_string());
    assert_eq!(
        decide(1, &w),
        Decision::Act(Step::ReplacePod { ordinal: 0 })
    );
}

#[test]
fn the_leader_is_the_one_the_newest_term_names() {
    let mut w = world(3, 0);
    members(&mut w)[2].status.as_mut().expect("status").term = 9;
    members(&mut w)[2].status.as_mut().expect("status").leader = MemberId(102);
    let view = plan(inputs(3), &w).view.expect("view");
    assert_eq!(view.leader, Some(MemberId(102)));
    assert_eq!(
        view.endpoints(|o| o.to_string()),
        vec!["2", "0", "1"],
        "leader first"
    );
}

#[test]
fn a_broken_learner_of_an_old_revision_is_replaced_not_waited_on() {
    let mut w = world(3, 1);
    w.pods[3].revision = Some("rev-1".to_string());
    w.pods[3].ready = false;
    members(&mut w)[3].status = None;
    assert_eq!(
        decide(4, &w),
        Decision::Act(Step::ReplacePod { ordinal: 3 })
    );
    // On the current revision, the same learner is waited on.
    w.pods[3].revision = Some(REV.to_string());
    assert_eq!(
        decide(4, &w),
        Decision::Wait(Wait::LearnerCatchingUp {
            ordinal: 3,
            lag: None
        })
    );
}

#[test]
fn founders_not_yet_in_the_member_table_hold_everything_while_bootstrapping() {
    // Founders 0-2 are voters from the start, but 2 has not published itself.
    let mut w = world(3, 0);
    members(&mut w).pop();
    let mut i = inputs(3);
    i.bootstrapped = false;
    let p = plan(i, &w);
    assert_eq!(p.decision, Decision::Wait(Wait::FoundersStarting(vec![2])));
    assert_eq!(p.statefulset_replicas, 3, "never shrink a starting cluster");
    // Once bootstrapped, a founder missing from the table was removed.
    i.bootstrapped = true;
    assert_eq!(
        plan(i, &w).decision,
        Decision::Act(Step::ScaleStatefulSet { from: 3, to: 2 })
    );
}
