use super::*;
use crate::crd::Phase;
use serde_json::json;

#[tokio::test]
async fn unreachable_nodes_change_nothing_and_degrade_the_status() {
    let h = running(3).await;
    h.edit_spec(|s| s["replicas"] = json!(5));
    for o in 0..3 {
        h.nodes.set_running(o, false);
    }
    for _ in 0..3 {
        assert_eq!(
            h.step().await,
            vec![
                "apply statefulsets/demo replicas=3",
                "status raftclusters/demo"
            ],
            "no step, replicas unchanged"
        );
    }
    assert_eq!(h.nodes.calls(), vec![], "no membership call");
    let status = h.status();
    assert_eq!(status.phase, Some(Phase::Degraded));
    assert_eq!(
        h.condition("Degraded"),
        Some(("True".into(), "MembersUnreachable".into()))
    );
    assert_eq!(
        h.condition("Available"),
        Some(("False".into(), "MembershipUnknown".into()))
    );
    assert_eq!(status.members.len(), 3, "the last seen members are kept");
    assert!(status.members.iter().all(|m| !m.healthy));
    assert_eq!(status.leader, None);
}

#[tokio::test]
async fn a_lost_quorum_blocks_scale_down() {
    let h = running(5).await;
    h.edit_spec(|s| s["replicas"] = json!(3));
    // Three of five down: no leader, so the member list cannot be read.
    for o in [1, 2, 3] {
        h.nodes.set_running(o, false);
    }
    h.settle();
    for _ in 0..3 {
        assert_eq!(
            h.step().await,
            vec![
                "apply statefulsets/demo replicas=5",
                "status raftclusters/demo"
            ]
        );
    }
    assert_eq!(h.nodes.calls(), vec![]);
    assert_eq!(
        h.condition("Degraded"),
        Some(("True".into(), "MembersUnreachable".into()))
    );
}

#[tokio::test]
async fn a_removal_that_would_leave_no_healthy_quorum_is_held_back() {
    let h = running(5).await;
    h.edit_spec(|s| s["replicas"] = json!(4));
    // Two of five down: the cluster works, but removing 4 would leave four
    // voters of which only two are healthy.
    h.nodes.set_running(1, false);
    h.nodes.set_running(2, false);
    h.settle();
    assert_eq!(
        h.step().await,
        vec![
            "apply statefulsets/demo replicas=5",
            "status raftclusters/demo"
        ]
    );
    assert_eq!(h.nodes.calls(), vec![]);
    assert_eq!(
        h.condition("Degraded"),
        Some(("True".into(), "QuorumAtRisk".into()))
    );
    assert_eq!(
        h.condition("Available"),
        Some(("True".into(), "QuorumHealthy".into()))
    );
    // One comes back: 4 voters with 3 healthy is enough.
    let id4 = h.nodes.id_of(4);
    h.nodes.set_running(1, true);
    h.settle();
    h.step().await;
    assert_eq!(
        h.nodes.calls(),
        vec![crate::admin::fake::AdminCall::Remove(id4)]
    );
}

#[tokio::test]
async fn a_failed_apply_takes_no_step_and_the_next_reconcile_does() {
    let h = running(3).await;
    h.edit_spec(|s| s["replicas"] = json!(4));
    // The StatefulSet apply fails: the step that would follow is not taken.
    h.api.fail_next("apply statefulsets/demo");
    assert!(h.reconcile().await.is_err());
    assert_eq!(
        h.nodes.calls(),
        vec![],
        "no membership step after a failed apply"
    );
    h.step().await;
    assert_eq!(
        h.nodes.calls(),
        vec![crate::admin::fake::AdminCall::Add {
            peer_url: h.names.peer_url(3),
            learner: true
        }]
    );
}

#[tokio::test]
async fn a_refused_step_is_reported_as_a_warning_and_retried() {
    let h = running(3).await;
    h.edit_spec(|s| s["replicas"] = json!(4));
    h.nodes
        .refuse_next("etcdserver: too many learner members in cluster");
    h.api.take_calls();
    assert!(
        h.reconcile().await.is_err(),
        "the failed step fails the reconcile (for backoff)"
    );
    let writes = crate::testing::harness::writes(h.api.take_calls());
    assert_eq!(
        writes,
        vec![
            "apply statefulsets/demo replicas=3",
            "event MemberAdded",
            "status raftclusters/demo"
        ]
    );
    let events = h.api.list("/apis/events.k8s.io/v1/namespaces/prod/events");
    let last = &events.last().expect("an event").1;
    assert_eq!(last["type"], "Warning");
    assert!(
        last["note"]
            .as_str()
            .is_some_and(|n| n.contains("too many learner")),
        "{last}"
    );
    assert_eq!(h.status().phase, Some(Phase::Degraded));
    assert_eq!(
        h.condition("Degraded"),
        Some(("True".into(), "StepFailed".into()))
    );
    // The next reconcile takes the same step again, and it succeeds.
    h.step().await;
    assert_eq!(
        h.nodes.calls(),
        vec![
            crate::admin::fake::AdminCall::Add {
                peer_url: h.names.peer_url(3),
                learner: true
            },
            crate::admin::fake::AdminCall::Add {
                peer_url: h.names.peer_url(3),
                learner: true
            },
        ]
    );
    assert_eq!(h.nodes.membership().len(), 4);
    assert_eq!(
        h.condition("Degraded"),
        Some(("False".into(), "AsExpected".into()))
    );
}
