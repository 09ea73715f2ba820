use super::*;
use crate::admin::MemberId;
use crate::admin::fake::AdminCall;
use crate::crd::Phase;
use serde_json::json;

/// Changes the image, lets the StatefulSet controller see it, and returns
/// the harness ready for the roll.
async fn new_image(h: &Harness) {
    h.edit_spec(|s| s["image"] = json!("flotilla/flotilla-node:2"));
    h.step().await; // applies the new template
    h.settle(); // the StatefulSet controller computes the new revision
}

#[tokio::test]
async fn rolling_update_replaces_followers_then_the_leader_one_pod_at_a_time() {
    let h = running(3).await;
    new_image(&h).await;
    h.nodes.clear_calls();
    let mut rounds = Vec::new();
    for _ in 0..10 {
        let writes = h.step().await;
        // The settle brings a deleted pod back on the new revision.
        h.settle();
        let done = h.status().phase == Some(Phase::Running);
        rounds.push(writes);
        if done {
            break;
        }
    }
    assert_eq!(
        rounds,
        vec![
            vec![
                "apply statefulsets/demo replicas=3",
                "delete pods/demo-2",
                "event PodReplaced",
                "status raftclusters/demo"
            ],
            vec![
                "apply statefulsets/demo replicas=3",
                "delete pods/demo-1",
                "event PodReplaced",
                "status raftclusters/demo"
            ],
            vec![
                "apply statefulsets/demo replicas=3",
                "event LeaderMoved",
                "status raftclusters/demo"
            ],
            vec![
                "apply statefulsets/demo replicas=3",
                "delete pods/demo-0",
                "event PodReplaced",
                "status raftclusters/demo"
            ],
            vec![
                "apply statefulsets/demo replicas=3",
                "status raftclusters/demo"
            ],
        ]
    );
    assert_eq!(
        h.nodes.calls(),
        vec![AdminCall::MoveLeader {
            via: 0,
            to: MemberId(0x1001)
        }]
    );
    assert_eq!(h.nodes.leader_ordinal(), Some(1));
}

#[tokio::test]
async fn rolling_update_waits_until_the_replaced_member_has_caught_up() {
    let h = running(3).await;
    new_image(&h).await;
    assert_eq!(h.step().await[1], "delete pods/demo-2");
    h.nodes.set_lagging(2);
    h.settle();
    for _ in 0..3 {
        assert_eq!(
            h.step().await,
            vec![
                "apply statefulsets/demo replicas=3",
                "status raftclusters/demo"
            ],
            "no pod is replaced while demo-2 lags"
        );
        h.settle();
    }
    assert_eq!(
        h.condition("Degraded"),
        Some(("True".into(), "MembersUnhealthy".into()))
    );
    h.nodes.set_caught_up(2);
    h.settle();
    assert_eq!(h.step().await[1], "delete pods/demo-1");
}

#[tokio::test]
async fn the_template_change_is_not_acted_on_before_the_statefulset_controller_saw_it() {
    let h = running(3).await;
    h.edit_spec(|s| s["image"] = json!("flotilla/flotilla-node:2"));
    h.step().await;
    // No settle: the StatefulSet's status still describes the old spec.
    assert_eq!(
        h.step().await,
        vec![
            "apply statefulsets/demo replicas=3",
            "status raftclusters/demo"
        ]
    );
    assert_eq!(
        h.condition("Progressing"),
        Some(("True".into(), "StatefulSetUpdating".into()))
    );
}
