use super::*;
use crate::admin::fake::AdminCall;
use crate::crd::{MemberRole, Phase};
use serde_json::json;

fn peer(h: &Harness, o: u32) -> String {
    h.names.peer_url(o)
}

#[tokio::test]
async fn scale_up_3_to_5_is_add_learner_then_replicas_then_promote_per_member() {
    let h = running(3).await;
    h.edit_spec(|s| s["replicas"] = json!(5));
    let rounds = converge(&h, 12).await;
    assert_eq!(
        rounds,
        vec![
            vec![
                "apply statefulsets/demo replicas=3",
                "event MemberAdded",
                "status raftclusters/demo"
            ],
            vec![
                "apply statefulsets/demo replicas=4",
                "event StatefulSetScaled",
                "status raftclusters/demo"
            ],
            vec![
                "apply statefulsets/demo replicas=4",
                "event MemberPromoted",
                "status raftclusters/demo"
            ],
            vec![
                "apply statefulsets/demo replicas=4",
                "event MemberAdded",
                "status raftclusters/demo"
            ],
            vec![
                "apply statefulsets/demo replicas=5",
                "event StatefulSetScaled",
                "status raftclusters/demo"
            ],
            vec![
                "apply statefulsets/demo replicas=5",
                "event MemberPromoted",
                "status raftclusters/demo"
            ],
            vec![
                "apply statefulsets/demo replicas=5",
                "status raftclusters/demo"
            ],
        ]
    );
    assert_eq!(
        h.nodes.calls(),
        vec![
            AdminCall::Add {
                peer_url: peer(&h, 3),
                learner: true
            },
            AdminCall::Promote(h.nodes.id_of(3)),
            AdminCall::Add {
                peer_url: peer(&h, 4),
                learner: true
            },
            AdminCall::Promote(h.nodes.id_of(4)),
        ]
    );
    let status = h.status();
    assert_eq!((status.replicas, status.ready_replicas), (5, 5));
    assert!(status.members.iter().all(|m| m.role != MemberRole::Learner));
    assert_eq!(status.founding_members, Some(3), "founders never change");
}

#[tokio::test]
async fn scale_down_5_to_3_removes_the_highest_ordinal_then_shrinks_then_deletes_its_volume() {
    let h = running(5).await;
    h.edit_spec(|s| s["replicas"] = json!(3));
    let rounds = converge(&h, 12).await;
    assert_eq!(
        rounds,
        vec![
            vec![
                "apply statefulsets/demo replicas=5",
                "event MemberRemoved",
                "status raftclusters/demo"
            ],
            vec![
                "apply statefulsets/demo replicas=4",
                "event StatefulSetScaled",
                "status raftclusters/demo"
            ],
            vec![
                "apply statefulsets/demo replicas=4",
                "delete persistentvolumeclaims/data-demo-4",
                "event VolumeDeleted",
                "status raftclusters/demo"
            ],
            vec![
                "apply statefulsets/demo replicas=4",
                "event MemberRemoved",
                "status raftclusters/demo"
            ],
            vec![
                "apply statefulsets/demo replicas=3",
                "event StatefulSetScaled",
                "status raftclusters/demo"
            ],
            vec![
                "apply statefulsets/demo replicas=3",
                "delete persistentvolumeclaims/data-demo-3",
                "event VolumeDeleted",
                "status raftclusters/demo"
            ],
            vec![
                "apply statefulsets/demo replicas=3",
                "status raftclusters/demo"
            ],
        ]
    );
    let (id3, id4) = (MemberId(0x1003), MemberId(0x1004));
    assert_eq!(
        h.nodes.calls(),
        vec![AdminCall::Remove(id4), AdminCall::Remove(id3)]
    );
    assert_eq!(
        h.volumes(),
        vec!["data-demo-0", "data-demo-1", "data-demo-2"]
    );
    assert_eq!(h.pods(), vec!["demo-0", "demo-1", "demo-2"]);
}

use crate::admin::MemberId;

#[tokio::test]
async fn scale_down_moves_leadership_off_a_leading_highest_ordinal_first() {
    let h = running(5).await;
    h.nodes.set_leader(4);
    h.edit_spec(|s| s["replicas"] = json!(4));
    let first = h.step().await;
    assert_eq!(
        first,
        vec![
            "apply statefulsets/demo replicas=5",
            "event LeaderMoved",
            "status raftclusters/demo"
        ]
    );
    assert_eq!(
        h.nodes.calls(),
        vec![AdminCall::MoveLeader {
            via: 4,
            to: MemberId(0x1000)
        }]
    );
    assert_eq!(h.nodes.leader_ordinal(), Some(0));
    h.settle();
    h.nodes.clear_calls();
    h.step().await;
    assert_eq!(h.nodes.calls(), vec![AdminCall::Remove(MemberId(0x1004))]);
}

/// The operator dies after every step, before it could write the status
/// (the status write fails), and a new one takes over: the same sequence
/// of membership calls, none repeated, none skipped.
#[tokio::test]
async fn a_scale_survives_the_operator_dying_after_each_step() {
    for (from, to) in [(3i32, 5u32), (5, 3)] {
        let h = running(from).await;
        h.edit_spec(|s| s["replicas"] = json!(to));
        let mut all_calls = Vec::new();
        for _ in 0..20 {
            // The step is taken, then the operator dies before its status lands.
            h.api.fail_next("status raftclusters/demo");
            h.nodes.clear_calls();
            assert!(
                h.reconcile().await.is_err(),
                "the status write was made to fail"
            );
            all_calls.extend(h.nodes.calls());
            // A new operator starts before anything else moved.
            h.nodes.clear_calls();
            h.reconcile().await.expect("restarted operator");
            all_calls.extend(h.nodes.calls());
            h.settle();
            if h.status().phase == Some(Phase::Running) && h.statefulset_replicas() == Some(to) {
                break;
            }
        }
        let (name, n) = (format!("{from}->{to}"), |o| h.nodes.id_of(o));
        if to > from.unsigned_abs() {
            assert_eq!(
                all_calls,
                vec![
                    AdminCall::Add {
                        peer_url: peer(&h, 3),
                        learner: true
                    },
                    AdminCall::Promote(n(3)),
                    AdminCall::Add {
                        peer_url: peer(&h, 4),
                        learner: true
                    },
                    AdminCall::Promote(n(4)),
                ],
                "{name}"
            );
        } else {
            assert_eq!(
                all_calls,
                vec![
                    AdminCall::Remove(MemberId(0x1004)),
                    AdminCall::Remove(MemberId(0x1003))
                ],
                "{name}"
            );
        }
        assert_eq!(h.statefulset_replicas(), Some(to), "{name}");
        assert_eq!(h.nodes.membership().len(), to as usize, "{name}");
    }
}

#[tokio::test]
async fn a_learner_that_never_catches_up_is_never_promoted() {
    let h = running(3).await;
    h.edit_spec(|s| s["replicas"] = json!(4));
    h.nodes.set_lagging(3);
    for _ in 0..8 {
        h.step().await;
        h.settle();
    }
    assert_eq!(
        h.nodes.calls(),
        vec![AdminCall::Add {
            peer_url: peer(&h, 3),
            learner: true
        }]
    );
    assert_eq!(
        h.nodes.membership(),
        vec![(0, false), (1, false), (2, false), (3, true)]
    );
    let status = h.status();
    assert_eq!(status.phase, Some(Phase::Scaling));
    assert_eq!(
        h.condition("Progressing"),
        Some(("True".into(), "LearnerCatchingUp".into()))
    );
    assert_eq!(
        h.condition("Available"),
        Some(("True".into(), "QuorumHealthy".into()))
    );
    let learner = status
        .members
        .iter()
        .find(|m| m.name == "demo-3")
        .expect("learner");
    assert_eq!(learner.role, MemberRole::Learner);
    assert!(!learner.healthy);
    assert!(learner.lag > 1000, "lag {}", learner.lag);
    // Once it catches up, it is promoted.
    h.nodes.set_caught_up(3);
    h.settle();
    h.nodes.clear_calls();
    h.step().await;
    assert_eq!(h.nodes.calls(), vec![AdminCall::Promote(h.nodes.id_of(3))]);
}

#[tokio::test]
async fn a_single_founder_grows_to_three_and_shrinks_back() {
    let h = running(1).await;
    h.edit_spec(|s| s["replicas"] = json!(3));
    converge(&h, 12).await;
    assert_eq!(
        h.nodes.membership(),
        vec![(0, false), (1, false), (2, false)]
    );
    let (id1, id2) = (h.nodes.id_of(1), h.nodes.id_of(2));
    h.nodes.clear_calls();
    h.edit_spec(|s| s["replicas"] = json!(1));
    converge(&h, 12).await;
    assert_eq!(
        h.nodes.calls(),
        vec![AdminCall::Remove(id2), AdminCall::Remove(id1)]
    );
    assert_eq!(h.nodes.membership(), vec![(0, false)]);
    assert_eq!(h.volumes(), vec!["data-demo-0"]);
    assert_eq!(h.status().founding_members, Some(1));
}
