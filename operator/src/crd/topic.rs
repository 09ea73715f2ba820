//! The `Topic` kind: a broker topic on a [`super::RaftCluster`].
//!
//! Its reconciler is [`crate::reconcile::topic`]; the reasons its Ready
//! condition uses are fixed here.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The desired topic.
// clippy reads the repeated `type_ = ...` of the printcolumn() lists as
// duplicated attributes; each belongs to its own column.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "flotilla.dev",
    version = "v1alpha1",
    kind = "Topic",
    namespaced,
    shortname = "ft",
    category = "flotilla",
    status = "TopicStatus",
    derive = "PartialEq",
    doc = "A partitioned, replicated topic of a RaftCluster's broker.",
    printcolumn(
        name = "Cluster",
        type_ = "string",
        json_path = ".spec.clusterRef.name"
    ),
    printcolumn(name = "Partitions", type_ = "integer", json_path = ".spec.partitions"),
    printcolumn(
        name = "RF",
        type_ = "integer",
        json_path = ".spec.replicationFactor",
        description = "Replication factor"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct TopicSpec {
    /// The RaftCluster (same namespace) whose broker holds the topic.
    pub cluster_ref: ClusterRef,
    /// The topic's name in the broker; `metadata.name` when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 249), regex(pattern = r"^[a-zA-Z0-9._-]+$"))]
    pub topic_name: Option<String>,
    /// Number of partitions. It may only grow: a shrink is refused with the
    /// Ready reason `NotSupported`.
    #[schemars(range(min = 1))]
    pub partitions: i32,
    /// Replicas per partition; the cluster's default when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub replication_factor: Option<i32>,
    /// Topic settings; the broker's defaults for those unset.
    #[serde(default)]
    pub config: TopicConfig,
    /// What deleting this resource does to the topic.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
}

impl Topic {
    /// The topic's name in the broker.
    pub fn topic_name(&self) -> &str {
        self.spec
            .topic_name
            .as_deref()
            .or(self.metadata.name.as_deref())
            .unwrap_or_default()
    }
}

/// A RaftCluster in the Topic's namespace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ClusterRef {
    /// Its name.
    #[schemars(length(min = 1))]
    pub name: String,
}

/// Per-topic settings.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TopicConfig {
    /// Records older than this are deleted (whole segments); `-1` keeps them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = -1))]
    pub retention_ms: Option<i64>,
    /// A partition's segments beyond this size are deleted, oldest first; `-1` keeps them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = -1))]
    pub retention_bytes: Option<i64>,
    /// A segment rolls at this size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1024))]
    pub segment_bytes: Option<i64>,
    /// In-sync replicas an `acks=all` write needs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub min_insync_replicas: Option<i32>,
    /// When the partition log is fsynced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fsync: Option<TopicFsync>,
}

/// The partition log's fsync policy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "self.mode != 'EveryRecords' || has(self.records)", "message": "mode EveryRecords needs records"},
    {"rule": "self.mode != 'EveryInterval' || has(self.intervalMs)", "message": "mode EveryInterval needs intervalMs"}
]))]
pub struct TopicFsync {
    /// The policy.
    pub mode: TopicFsyncMode,
    /// Records between fsyncs, for `EveryRecords`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub records: Option<u64>,
    /// Milliseconds between fsyncs, for `EveryInterval`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub interval_ms: Option<u64>,
}

/// When the partition log is fsynced.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum TopicFsyncMode {
    /// Every produced batch.
    Always,
    /// Every `records` records.
    EveryRecords,
    /// Every `intervalMs` milliseconds.
    EveryInterval,
    /// Never: durability by replication alone (Kafka's default).
    Never,
}

/// What deleting the Topic resource does to the broker's topic.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum DeletionPolicy {
    /// Delete the topic and its data.
    #[default]
    Delete,
    /// Keep the topic in the broker.
    Retain,
}

/// What the operator last saw of the topic.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TopicStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Each partition's leader and in-sync replicas.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub partitions: Vec<PartitionStatus>,
    /// `Ready`, with a [`TopicReadyReason`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// One partition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PartitionStatus {
    /// Partition id.
    pub id: i32,
    /// The leading replica's pod name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<String>,
    /// In-sync replicas' pod names.
    #[serde(default)]
    pub isr: Vec<String>,
}

/// The reasons of a Topic's `Ready` condition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TopicReadyReason {
    /// The topic exists as specified.
    Created,
    /// The referenced RaftCluster is missing or not Available.
    ClusterNotReady,
    /// The spec asks for something the broker cannot do (fewer partitions).
    NotSupported,
    /// An older Topic resource already names this topic; the older one wins.
    ResourceConflict,
    /// The broker refused a change (e.g. a replication factor above the
    /// broker count); the message carries its words.
    BrokerRefused,
}

impl TopicReadyReason {
    /// The condition's `reason`.
    pub fn as_str(self) -> &'static str {
        match self {
            TopicReadyReason::Created => "Created",
            TopicReadyReason::ClusterNotReady => "ClusterNotReady",
            TopicReadyReason::NotSupported => "NotSupported",
            TopicReadyReason::ResourceConflict => "ResourceConflict",
            TopicReadyReason::BrokerRefused => "BrokerRefused",
        }
    }
}
