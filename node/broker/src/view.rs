//! A snapshot of the broker metadata read from the KV in one pass: topics,
//! partitions (replicas, leader with its epoch, ISR) and live brokers.

use crate::metadata::{
    self, BROKER_PREFIX, BrokerRecord, IsrRecord, LeaderRecord, PARTITION_PREFIX, PartitionKey,
    Replicas, TOPIC_PREFIX, TopicSpec,
};
use flotilla_client::{Client, ClientError};
use flotilla_proto::broker as pb;
use std::collections::BTreeMap;

/// A partition's leader as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderView {
    /// The record.
    pub record: LeaderRecord,
    /// Its create_revision: the epoch.
    pub epoch: i64,
}

/// One partition's metadata.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PartitionView {
    /// Replica broker ids, preferred leader first.
    pub replicas: Vec<u64>,
    /// The leader, if any.
    pub leader: Option<LeaderView>,
    /// The ISR, if written yet.
    pub isr: Option<IsrRecord>,
    /// The ISR key's mod_revision (0 if absent).
    pub isr_revision: i64,
}

/// The metadata at one moment.
#[derive(Debug, Clone, Default)]
pub struct View {
    /// Topics by name.
    pub topics: BTreeMap<String, TopicSpec>,
    /// Partitions by (topic, id).
    pub partitions: BTreeMap<(String, u32), PartitionView>,
    /// Live brokers by id.
    pub brokers: BTreeMap<u64, BrokerRecord>,
}

impl View {
    /// Reads the view (three prefix ranges).
    pub async fn read(kv: &Client) -> Result<View, ClientError> {
        let mut view = View::default();
        let (kvs, _) = kv.range_prefix(TOPIC_PREFIX.as_bytes()).await?;
        for kv in kvs {
            let key = String::from_utf8_lossy(&kv.key);
            let Some(name) = key.strip_prefix(TOPIC_PREFIX) else {
                continue;
            };
            match serde_json::from_slice::<TopicSpec>(&kv.value) {
                Ok(spec) => {
                    view.topics.insert(name.to_string(), spec);
                }
                Err(e) => tracing::warn!(%key, error = %e, "ignoring an unreadable topic record"),
            }
        }
        let (kvs, _) = kv.range_prefix(PARTITION_PREFIX.as_bytes()).await?;
        for kv in kvs {
            let key = String::from_utf8_lossy(&kv.key);
            let Some(pk) = metadata::parse_partition_key(&key) else {
                continue;
            };
            match pk {
                PartitionKey::Replicas(t, p) => {
                    if let Ok(r) = serde_json::from_slice::<Replicas>(&kv.value) {
                        view.partitions.entry((t, p)).or_default().replicas = r.replicas;
                    }
                }
                PartitionKey::Leader(t, p) => {
                    if let Ok(record) = serde_json::from_slice::<LeaderRecord>(&kv.value) {
                        view.partitions.entry((t, p)).or_default().leader = Some(LeaderView {
                            record,
                            epoch: kv.create_revision,
                        });
                    }
                }
                PartitionKey::Isr(t, p) => {
                    if let Ok(r) = serde_json::from_slice::<IsrRecord>(&kv.value) {
                        let e = view.partitions.entry((t, p)).or_default();
                        e.isr = Some(r);
                        e.isr_revision = kv.mod_revision;
                    }
                }
            }
        }
        // Partitions of topics that are gone (a deletion in progress) are
        // not part of the view.
        view.partitions
            .retain(|(t, p), _| view.topics.get(t).is_some_and(|s| *p < s.partitions));
        view.brokers = live_brokers(kv).await?;
        Ok(view)
    }

    /// A topic's description for the API.
    pub fn describe(&self, name: &str) -> Option<pb::TopicDescription> {
        let spec = self.topics.get(name)?;
        let partitions = (0..spec.partitions)
            .map(|p| {
                let v = self
                    .partitions
                    .get(&(name.to_string(), p))
                    .cloned()
                    .unwrap_or_default();
                pb::PartitionInfo {
                    partition: p,
                    replicas: v.replicas,
                    leader: v.leader.as_ref().map_or(0, |l| l.record.broker),
                    leader_addr: v
                        .leader
                        .as_ref()
                        .map_or(String::new(), |l| l.record.addr.clone()),
                    leader_epoch: v.leader.as_ref().map_or(0, |l| l.epoch),
                    isr: v.isr.map(|i| i.isr).unwrap_or_default(),
                }
            })
            .collect();
        Some(pb::TopicDescription {
            name: name.to_string(),
            config: Some(spec_to_proto(spec)),
            partitions,
        })
    }
}

/// The live brokers (registered, lease alive).
pub async fn live_brokers(kv: &Client) -> Result<BTreeMap<u64, BrokerRecord>, ClientError> {
    let (kvs, _) = kv.range_prefix(BROKER_PREFIX.as_bytes()).await?;
    Ok(kvs
        .into_iter()
        .filter_map(|kv| serde_json::from_slice::<BrokerRecord>(&kv.value).ok())
        .map(|b| (b.id, b))
        .collect())
}

/// The wire form of a topic's configuration.
pub fn spec_to_proto(spec: &TopicSpec) -> pb::TopicConfig {
    pb::TopicConfig {
        partitions: spec.partitions,
        replication_factor: spec.replication_factor,
        retention_ms: spec.retention_ms,
        retention_bytes: spec.retention_bytes,
        segment_bytes: spec.segment_bytes,
        min_insync_replicas: spec.min_insync_replicas,
        fsync_policy: spec.fsync_policy.clone(),
        unclean_leader_election: spec.unclean_leader_election,
    }
}
