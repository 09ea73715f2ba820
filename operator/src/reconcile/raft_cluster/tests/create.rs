use super::*;
use crate::crd::{MemberRole, Phase};

#[tokio::test]
async fn create_applies_every_object_then_reports_the_members() {
    let h = Harness::new(3);
    h.api.take_calls();
    h.reconcile().await.expect("first reconcile");
    assert_eq!(
        h.api.take_calls(),
        vec![
            "get statefulsets/demo",
            "list pods",
            "list persistentvolumeclaims",
            "apply configmaps/demo-config",
            "apply services/demo-peers",
            "apply services/demo-client",
            "apply statefulsets/demo replicas=3",
            "apply poddisruptionbudgets/demo",
            "event Creating",
            "status raftclusters/demo",
        ],
        "the exact requests of the first reconcile"
    );
    assert_eq!(h.nodes.calls(), vec![], "no membership call while creating");
    let status = h.status();
    assert_eq!(status.phase, Some(Phase::Creating));
    assert_eq!(status.founding_members, Some(3));
    assert_eq!(status.observed_generation, Some(1));

    // Pods start but the operator has not seen them yet: still creating, no step.
    assert_eq!(
        h.step().await,
        vec![
            "apply statefulsets/demo replicas=3",
            "status raftclusters/demo"
        ]
    );
    assert_eq!(h.status().phase, Some(Phase::Creating));
    assert_eq!(
        h.condition("Progressing"),
        Some(("True".into(), "WaitingForMembers".into()))
    );
    assert_eq!(
        h.condition("Degraded"),
        Some(("False".into(), "AsExpected".into()))
    );

    h.settle();
    assert_eq!(
        h.step().await,
        vec![
            "apply statefulsets/demo replicas=3",
            "status raftclusters/demo"
        ]
    );
    let status = h.status();
    assert_eq!(status.phase, Some(Phase::Running));
    assert_eq!((status.replicas, status.ready_replicas), (3, 3));
    assert_eq!(status.leader.as_deref(), Some("demo-0"));
    let roles: Vec<_> = status
        .members
        .iter()
        .map(|m| (m.name.as_str(), m.role, m.healthy))
        .collect();
    assert_eq!(
        roles,
        vec![
            ("demo-0", MemberRole::Leader, true),
            ("demo-1", MemberRole::Follower, true),
            ("demo-2", MemberRole::Follower, true)
        ]
    );
    assert_eq!(
        h.condition("Available"),
        Some(("True".into(), "QuorumHealthy".into()))
    );
    assert_eq!(
        h.condition("Progressing"),
        Some(("False".into(), "Converged".into()))
    );
    assert_eq!(h.nodes.calls(), vec![]);
    assert_eq!(
        h.volumes(),
        vec!["data-demo-0", "data-demo-1", "data-demo-2"]
    );
}

#[tokio::test]
async fn the_owned_objects_point_back_at_the_raft_cluster() {
    let h = Harness::new(3);
    h.reconcile().await.expect("reconcile");
    for path in [
        "/api/v1/namespaces/prod/configmaps/demo-config",
        "/api/v1/namespaces/prod/services/demo-peers",
        "/api/v1/namespaces/prod/services/demo-client",
        "/apis/apps/v1/namespaces/prod/statefulsets/demo",
        "/apis/policy/v1/namespaces/prod/poddisruptionbudgets/demo",
    ] {
        let o = h
            .api
            .get(path)
            .unwrap_or_else(|| panic!("{path} was not applied"));
        let owner = &o["metadata"]["ownerReferences"][0];
        assert_eq!(owner["kind"], "RaftCluster", "{path}");
        assert_eq!(owner["uid"], "rc-uid-1", "{path}");
        assert_eq!(owner["controller"], true, "{path}");
    }
}

#[tokio::test]
async fn an_even_replica_count_is_warned_about() {
    let h = Harness::new(4);
    h.reconcile().await.expect("reconcile");
    let warnings = h.status().warnings;
    assert_eq!(warnings.len(), 1);
    assert!(warnings[0].contains("even (4)"), "{warnings:?}");
}

#[tokio::test]
async fn a_storage_change_keeps_the_volume_templates_and_warns() {
    let h = running(3).await;
    h.edit_spec(|s| s["storage"] = serde_json::json!({"size": "20Gi"}));
    h.step().await;
    let sts = h
        .api
        .get("/apis/apps/v1/namespaces/prod/statefulsets/demo")
        .expect("sts");
    let size = &sts["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"];
    assert_eq!(
        size, "10Gi",
        "claim templates are immutable: the original ones are applied"
    );
    let warnings = h.status().warnings;
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains("20Gi") && warnings[0].contains("10Gi"),
        "{warnings:?}"
    );
}

/// Founders publish themselves into the member table once they run: a
/// table that lacks one while the cluster starts must not be read as a
/// smaller cluster.
#[tokio::test]
async fn a_founder_that_has_not_published_itself_is_waited_for_not_scaled_away() {
    let h = Harness::new(3);
    h.step().await;
    h.nodes.set_running(2, false);
    h.settle();
    for _ in 0..3 {
        assert_eq!(
            h.step().await,
            vec![
                "apply statefulsets/demo replicas=3",
                "status raftclusters/demo"
            ]
        );
        h.settle();
    }
    assert_eq!(h.nodes.calls(), vec![]);
    assert_eq!(h.status().phase, Some(Phase::Creating));
    assert!(!h.status().bootstrapped);
    assert_eq!(
        h.condition("Progressing"),
        Some(("True".into(), "WaitingForMembers".into()))
    );
    h.nodes.set_running(2, true);
    h.settle();
    h.step().await;
    assert!(h.status().bootstrapped);
    assert_eq!(h.status().phase, Some(Phase::Running));
}
