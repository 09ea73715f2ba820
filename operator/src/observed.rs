//! What a reconcile reads from the world, reduced to the facts the plan
//! decides on: the StatefulSet, pods and volumes from the API server, the
//! membership and each member's status from the nodes.

use crate::admin::{Member, MemberId, NodeStatus};
use crate::names::{ClusterNames, FOUNDERS_ANNOTATION};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};

/// The StatefulSet as observed.
#[derive(Clone, Debug, PartialEq)]
pub struct StatefulSetFacts {
    /// `spec.replicas`.
    pub replicas: u32,
    /// `status.updateRevision`: the revision pods should have.
    pub update_revision: Option<String>,
    /// Whether the StatefulSet controller has seen the current spec
    /// (`status.observedGeneration >= metadata.generation`); until then
    /// `update_revision` may be stale.
    pub observed: bool,
    /// The founding member count recorded on it.
    pub founders: Option<u32>,
    /// Its volume claim templates, which cannot change once created.
    pub claim_templates: Option<Vec<PersistentVolumeClaim>>,
}

impl StatefulSetFacts {
    /// The facts of `sts`.
    pub fn of(sts: &StatefulSet) -> Self {
        let status = sts.status.as_ref();
        StatefulSetFacts {
            replicas: sts
                .spec
                .as_ref()
                .and_then(|s| s.replicas)
                .and_then(|r| u32::try_from(r).ok())
                .unwrap_or(1),
            update_revision: status.and_then(|s| s.update_revision.clone()),
            observed: match (
                status.and_then(|s| s.observed_generation),
                sts.metadata.generation,
            ) {
                (Some(seen), Some(generation)) => seen >= generation,
                (_, None) => true,
                (None, Some(_)) => false,
            },
            founders: sts
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(FOUNDERS_ANNOTATION))
                .and_then(|v| v.parse().ok()),
            claim_templates: sts
                .spec
                .as_ref()
                .and_then(|s| s.volume_claim_templates.clone()),
        }
    }
}

/// A member pod as observed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodFacts {
    /// Its ordinal.
    pub ordinal: u32,
    /// Its uid (a delete is conditional on it).
    pub uid: Option<String>,
    /// Its Ready condition.
    pub ready: bool,
    /// Its `controller-revision-hash` label.
    pub revision: Option<String>,
    /// Being deleted.
    pub terminating: bool,
}

impl PodFacts {
    /// The facts of `pod`, if it is one of `names`' member pods.
    pub fn of(names: &ClusterNames, pod: &Pod) -> Option<Self> {
        let ordinal = names.ordinal_of_pod(pod.metadata.name.as_deref()?)?;
        let ready = pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
        Some(PodFacts {
            ordinal,
            uid: pod.metadata.uid.clone(),
            ready,
            revision: pod
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("controller-revision-hash").cloned()),
            terminating: pod.metadata.deletion_timestamp.is_some(),
        })
    }
}

/// A data volume claim as observed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PvcFacts {
    /// The ordinal of the pod it belongs to.
    pub ordinal: u32,
    /// Its uid.
    pub uid: Option<String>,
    /// Being deleted.
    pub terminating: bool,
}

impl PvcFacts {
    /// The facts of `pvc`, if it is one of `names`' data volumes.
    pub fn of(names: &ClusterNames, pvc: &PersistentVolumeClaim) -> Option<Self> {
        Some(PvcFacts {
            ordinal: names.ordinal_of_pvc(pvc.metadata.name.as_deref()?)?,
            uid: pvc.metadata.uid.clone(),
            terminating: pvc.metadata.deletion_timestamp.is_some(),
        })
    }
}

/// A member of the Raft membership, matched to a pod by its peer URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberFacts {
    /// Its id.
    pub id: MemberId,
    /// The pod ordinal its peer URL names; `None` for a URL that is not
    /// one of this cluster's pod addresses.
    pub ordinal: Option<u32>,
    /// Its name; empty when added but never started.
    pub name: String,
    /// A learner.
    pub learner: bool,
    /// Its own status, when it answered.
    pub status: Option<NodeStatus>,
}

impl MemberFacts {
    /// The facts of `member`, with the status it gave (if asked and answered).
    pub fn of(names: &ClusterNames, member: &Member, status: Option<NodeStatus>) -> Self {
        MemberFacts {
            id: member.id,
            ordinal: member
                .peer_urls
                .iter()
                .find_map(|u| names.ordinal_of_peer_url(u)),
            name: member.name.clone(),
            learner: member.is_learner,
            status,
        }
    }
}

/// Everything a reconcile read.
#[derive(Clone, Debug, PartialEq)]
pub struct Observed {
    /// The StatefulSet, if it exists.
    pub statefulset: Option<StatefulSetFacts>,
    /// Member pods.
    pub pods: Vec<PodFacts>,
    /// Data volumes.
    pub pvcs: Vec<PvcFacts>,
    /// The membership, or why it could not be read.
    pub membership: Result<Vec<MemberFacts>, String>,
}

impl Observed {
    /// The pod of `ordinal`.
    pub fn pod(&self, ordinal: u32) -> Option<&PodFacts> {
        self.pods.iter().find(|p| p.ordinal == ordinal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pods_are_read_for_readiness_revision_and_termination() {
        let names = ClusterNames::new("demo", "prod");
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "demo-2", "uid": "u2", "labels": {"controller-revision-hash": "demo-abc"},
                         "deletionTimestamp": "2026-01-01T00:00:00Z"},
            "status": {"conditions": [{"type": "PodScheduled", "status": "True"}, {"type": "Ready", "status": "True"}]}
        }))
        .expect("pod");
        let facts = PodFacts::of(&names, &pod).expect("a member pod");
        assert_eq!(facts.ordinal, 2);
        assert!(facts.ready && facts.terminating);
        assert_eq!(facts.revision.as_deref(), Some("demo-abc"));
        let not_ready: Pod = serde_json::from_value(json!({
            "metadata": {"name": "demo-0"},
            "status": {"conditions": [{"type": "Ready", "status": "False"}]}
        }))
        .expect("pod");
        assert!(!PodFacts::of(&names, &not_ready).expect("pod").ready);
        let other: Pod =
            serde_json::from_value(json!({"metadata": {"name": "other-0"}})).expect("pod");
        assert_eq!(PodFacts::of(&names, &other), None);
    }

    #[test]
    fn a_statefulset_is_observed_once_its_controller_saw_the_generation() {
        let sts = |generation: i64, seen: Option<i64>| -> StatefulSet {
            serde_json::from_value(json!({
                "metadata": {"name": "demo", "generation": generation,
                             "annotations": {FOUNDERS_ANNOTATION: "3"}},
                "spec": {"replicas": 4, "serviceName": "demo-peers", "selector": {},
                         "template": {}},
                "status": {"replicas": 4, "observedGeneration": seen, "updateRevision": "demo-r2"}
            }))
            .expect("sts")
        };
        let facts = StatefulSetFacts::of(&sts(3, Some(3)));
        assert!(facts.observed);
        assert_eq!((facts.replicas, facts.founders), (4, Some(3)));
        assert_eq!(facts.update_revision.as_deref(), Some("demo-r2"));
        assert!(!StatefulSetFacts::of(&sts(4, Some(3))).observed);
        assert!(!StatefulSetFacts::of(&sts(4, None)).observed);
    }

    #[test]
    fn members_are_matched_to_pods_by_peer_url() {
        let names = ClusterNames::new("demo", "prod");
        let m = |url: &str| Member {
            id: MemberId(7),
            name: String::new(),
            peer_urls: vec![url.to_string()],
            is_learner: true,
        };
        assert_eq!(
            MemberFacts::of(&names, &m(&names.peer_url(4)), None).ordinal,
            Some(4)
        );
        assert_eq!(
            MemberFacts::of(&names, &m("http://10.0.0.9:2380"), None).ordinal,
            None
        );
    }
}
