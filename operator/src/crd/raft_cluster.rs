//! The `RaftCluster` kind: a replicated Flotilla cluster, run as one
//! StatefulSet, whose membership the operator changes one member at a time.

use k8s_openapi::api::core::v1::{
    Affinity, ResourceRequirements, Toleration, TopologySpreadConstraint,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The desired Flotilla cluster.
// clippy reads the repeated `type_ = ...` of the printcolumn() lists as
// duplicated attributes; each belongs to its own column.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "flotilla.dev",
    version = "v1alpha1",
    kind = "RaftCluster",
    namespaced,
    shortname = "raft",
    category = "flotilla",
    status = "RaftClusterStatus",
    derive = "PartialEq",
    doc = "A Raft-replicated Flotilla cluster: an etcd-v3-compatible key-value store and broker, one member per pod.",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas"
    ),
    printcolumn(
        name = "Replicas",
        type_ = "integer",
        json_path = ".spec.replicas",
        description = "Desired members"
    ),
    printcolumn(
        name = "Ready",
        type_ = "integer",
        json_path = ".status.readyReplicas",
        description = "Members healthy and caught up"
    ),
    printcolumn(
        name = "Leader",
        type_ = "string",
        json_path = ".status.leader",
        description = "The Raft leader"
    ),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct RaftClusterSpec {
    /// Number of voting members. Odd counts are recommended: an even count
    /// tolerates no more failures than the odd count below it.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 1, max = 99))]
    pub replicas: i32,
    /// The `flotilla-node` container image.
    #[schemars(length(min = 1))]
    pub image: String,
    /// Image pull policy (Kubernetes' default when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<PullPolicy>,
    /// Each member's persistent volume.
    #[serde(default)]
    pub storage: StorageSpec,
    /// CPU and memory of the node container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Raft timing and snapshots (the node's defaults when unset).
    #[serde(default)]
    pub raft: RaftTuning,
    /// Whether the Raft log is fsynced (`Always`; `Never` is for benchmarks only).
    #[serde(default)]
    pub fsync: FsyncPolicy,
    /// How linearizable reads are confirmed.
    #[serde(default)]
    pub read_mode: ReadMode,
    /// The broker's defaults for new topics.
    #[serde(default)]
    pub broker: BrokerDefaults,
    /// Scheduling and metadata added to every member pod.
    #[serde(default)]
    pub pod: PodOverrides,
    /// The client Service.
    #[serde(default)]
    pub service: ServiceSpec,
}

fn default_replicas() -> i32 {
    3
}

/// Kubernetes' image pull policies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum PullPolicy {
    /// Pull on every start.
    Always,
    /// Pull when the node lacks the image.
    IfNotPresent,
    /// Never pull.
    Never,
}

impl PullPolicy {
    /// The API's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            PullPolicy::Always => "Always",
            PullPolicy::IfNotPresent => "IfNotPresent",
            PullPolicy::Never => "Never",
        }
    }
}

/// Each member's volume (the StatefulSet's claim template `data`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StorageSpec {
    /// Requested size, e.g. `10Gi`.
    #[serde(default = "default_storage_size")]
    pub size: Quantity,
    /// Storage class (the cluster's default when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
}

impl Default for StorageSpec {
    fn default() -> Self {
        StorageSpec {
            size: default_storage_size(),
            storage_class_name: None,
        }
    }
}

fn default_storage_size() -> Quantity {
    Quantity("10Gi".to_string())
}

/// Raft timing; every field left unset keeps the node's default.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "!has(self.heartbeatTicks) || !has(self.electionTicks) || self.heartbeatTicks < self.electionTicks",
    "message": "heartbeatTicks must be below electionTicks"
}]))]
pub struct RaftTuning {
    /// Milliseconds per Raft tick (`--tick-ms`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10000))]
    pub tick_ms: Option<u32>,
    /// Minimum election timeout in ticks (`--election-ticks`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 2, max = 1000))]
    pub election_ticks: Option<u32>,
    /// Heartbeat interval in ticks (`--heartbeat-ticks`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub heartbeat_ticks: Option<u32>,
    /// Applied entries between snapshots (`--snapshot-count`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub snapshot_count: Option<u64>,
    /// `snapshotCount` entries make a snapshot due only once their bytes
    /// reach this percentage of the last snapshot's size
    /// (`--snapshot-min-log-percent`, 100 by default; 0: the count alone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 10000))]
    pub snapshot_min_log_percent: Option<u64>,
    /// Bytes of log since the last snapshot that make a snapshot due
    /// whatever `snapshotCount` and `snapshotMinLogPercent` say
    /// (`--snapshot-max-log-bytes`, 32 MiB by default): the most log a
    /// member keeps between snapshots, also in memory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1048576, max = 17179869184_u64))]
    pub snapshot_max_log_bytes: Option<u64>,
}

/// Durability of the Raft log (`--fsync`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum FsyncPolicy {
    /// fsync every batch: an acknowledged write survives a power loss.
    #[default]
    Always,
    /// Never fsync: replication-only durability (benchmarks).
    Never,
}

impl FsyncPolicy {
    /// The node's spelling.
    pub fn as_node_value(self) -> &'static str {
        match self {
            FsyncPolicy::Always => "always",
            FsyncPolicy::Never => "never",
        }
    }
}

/// How linearizable reads are confirmed (`--read-mode`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ReadMode {
    /// ReadIndex: a heartbeat round confirms each batch of reads.
    #[default]
    Safe,
    /// Leader lease: no round trip while the lease holds (relies on bounded clock drift).
    Lease,
}

impl ReadMode {
    /// The node's spelling.
    pub fn as_node_value(self) -> &'static str {
        match self {
            ReadMode::Safe => "safe",
            ReadMode::Lease => "lease",
        }
    }
}

/// The broker's defaults for topics that do not set their own.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BrokerDefaults {
    /// Replicas per partition (`--default-replication-factor`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub default_replication_factor: Option<u32>,
    /// In-sync replicas an `acks=all` write needs (`--min-insync-replicas`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub min_insync_replicas: Option<u32>,
}

/// Scheduling and metadata for every member pod.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodOverrides {
    /// Pod affinity and anti-affinity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    /// Tolerations.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    /// Node selector.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Topology spread constraints.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub topology_spread_constraints: Vec<TopologySpreadConstraint>,
    /// Extra pod labels (the operator's own labels win on a clash).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Extra pod annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Priority class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class_name: Option<String>,
}

/// The client Service.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceSpec {
    /// Service type.
    #[serde(default, rename = "type")]
    pub type_: ServiceType,
}

/// Kubernetes' Service types a client Service may have.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ServiceType {
    /// Reachable inside the cluster.
    #[default]
    ClusterIP,
    /// Also on a port of every node.
    NodePort,
    /// Also through a cloud load balancer.
    LoadBalancer,
}

impl ServiceType {
    /// The API's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceType::ClusterIP => "ClusterIP",
            ServiceType::NodePort => "NodePort",
            ServiceType::LoadBalancer => "LoadBalancer",
        }
    }
}

/// What the operator last saw of the cluster.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RaftClusterStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// One word for where the cluster stands.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// Members in the Raft membership (voters and learners).
    #[serde(default)]
    pub replicas: i32,
    /// Members that are healthy and caught up.
    #[serde(default)]
    pub ready_replicas: i32,
    /// The leader's pod name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<String>,
    /// Every member, by ordinal.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<MemberStatus>,
    /// How many members founded the cluster (its `--initial-cluster`),
    /// recorded at creation and never changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub founding_members: Option<i32>,
    /// Every founding member has been in the member table at once. Until
    /// then a founder missing from it has not published itself yet; from
    /// then on, a founder missing from it was removed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub bootstrapped: bool,
    /// Advice about the spec, e.g. an even replica count.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// `Available`, `Progressing` and `Degraded`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// Where a cluster stands, in one word.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Phase {
    /// Founding members are starting; no membership read yet.
    Creating,
    /// Every member healthy, nothing to change.
    Running,
    /// A membership step is under way.
    Scaling,
    /// Pods are being replaced with a new template.
    Upgrading,
    /// The operator cannot read or safely change the cluster.
    Degraded,
}

/// One member as the operator saw it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MemberStatus {
    /// Its pod name.
    pub name: String,
    /// Its Raft member id, in hex as etcdctl prints it.
    pub id: String,
    /// Leader, follower or learner.
    pub role: MemberRole,
    /// Answered, knows a leader and is within the lag bound.
    pub healthy: bool,
    /// Its Raft term.
    #[serde(default)]
    pub term: u64,
    /// Its commit index.
    #[serde(default)]
    pub commit_index: u64,
    /// Its applied index.
    #[serde(default)]
    pub applied_index: u64,
    /// Entries behind the leader's commit index.
    #[serde(default)]
    pub lag: u64,
}

/// A member's Raft role.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum MemberRole {
    /// The leader.
    Leader,
    /// A voter that does not lead.
    Follower,
    /// Receives the log, does not vote.
    Learner,
}
