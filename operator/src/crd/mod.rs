//! The custom resources: [`RaftCluster`] (reconciled by this crate) and
//! [`Topic`] (its type and CRD; the reconciler comes with the broker's
//! admin API). `crdgen` writes their CRDs to `crds/`.

mod conditions;
mod raft_cluster;
mod topic;

pub use conditions::{ConditionStatus, set_condition};
pub use raft_cluster::{
    BrokerDefaults, FsyncPolicy, MemberRole, MemberStatus, Phase, PodOverrides, PullPolicy,
    RaftCluster, RaftClusterSpec, RaftClusterStatus, RaftTuning, ReadMode, ServiceSpec,
    ServiceType, StorageSpec,
};
pub use topic::{
    ClusterRef, DeletionPolicy, PartitionStatus, Topic, TopicConfig, TopicFsync, TopicFsyncMode,
    TopicReadyReason, TopicSpec, TopicStatus,
};

/// The API group of both kinds.
pub const GROUP: &str = "flotilla.dev";

/// Both CRDs as one YAML stream each, in the order `crdgen` writes them:
/// (file name under `crds/`, YAML text).
pub fn crd_files() -> Result<Vec<(&'static str, String)>, serde_yaml::Error> {
    use kube::CustomResourceExt;
    Ok(vec![
        (
            "raftclusters.flotilla.dev.yaml",
            serde_yaml::to_string(&RaftCluster::crd())?,
        ),
        (
            "topics.flotilla.dev.yaml",
            serde_yaml::to_string(&Topic::crd())?,
        ),
    ])
}
