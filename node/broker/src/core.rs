//! The broker's shared state and its configuration: the KV client, the
//! lease, the open replicas, connections to other brokers, metrics.

use crate::error::PartitionError;
use crate::lease::LeaseClock;
use crate::metadata::{self, LeaderRecord, TopicSpec};
use crate::replica::{Replica, Role};
use flotilla_client::Client;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tonic::transport::Channel;

/// A partition's identity.
pub type TopicPartition = (String, u32);

/// The broker's settings (node flags and their defaults).
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// This broker's id: the node's member id.
    pub broker_id: u64,
    /// Its client address other brokers and clients reach it at,
    /// `host:port`.
    pub advertise_addr: String,
    /// Where partition replicas live (`<data-dir>/broker`).
    pub data_dir: PathBuf,
    /// The KV's client URLs (the node's own cluster).
    pub kv_endpoints: Vec<String>,
    /// Replication factor of topics created without one.
    pub default_replication_factor: u32,
    /// min.insync.replicas of topics created without one (capped at their
    /// replication factor).
    pub min_insync_replicas: u32,
    /// TTL of the lease behind registrations and leaderships.
    pub partition_lease_ttl: Duration,
    /// Largest produce batch (encoded records) accepted.
    pub max_batch_bytes: u64,
    /// An ISR member that has not caught up with the leader for this long
    /// leaves the ISR.
    pub replica_lag_time_max: Duration,
    /// How often the metadata is re-read while it cannot be watched, or
    /// while a partition waits for a leader.
    pub reconcile_interval: Duration,
    /// How often the metadata is re-read while it is watched (changes are
    /// acted on as the watch reports them; this is the backstop).
    pub metadata_resync_interval: Duration,
    /// Largest fetch response (records) when the request does not bound it.
    pub fetch_max_bytes: u32,
    /// Longest acks=all wait when the request does not bound it.
    pub ack_timeout: Duration,
    /// Longest fetch long-poll accepted.
    pub fetch_wait_max: Duration,
    /// The Kafka listener's advertised `host:port`, registered beside the
    /// client address so every broker can name it in Kafka Metadata; empty
    /// when this node runs no Kafka listener.
    pub kafka_advertise_addr: String,
    /// How often each replica applies its topic's retention.
    pub retention_check_interval: Duration,
}

impl BrokerConfig {
    /// Defaults for broker `broker_id` at `advertise_addr`, storing under
    /// `data_dir`, with the KV at `kv_endpoints`.
    pub fn new(
        broker_id: u64,
        advertise_addr: String,
        data_dir: PathBuf,
        kv_endpoints: Vec<String>,
    ) -> BrokerConfig {
        BrokerConfig {
            broker_id,
            advertise_addr,
            data_dir,
            kv_endpoints,
            default_replication_factor: 1,
            min_insync_replicas: 1,
            partition_lease_ttl: Duration::from_millis(1000),
            max_batch_bytes: 4 << 20,
            replica_lag_time_max: Duration::from_millis(3000),
            reconcile_interval: Duration::from_millis(100),
            metadata_resync_interval: Duration::from_secs(1),
            fetch_max_bytes: 1 << 20,
            ack_timeout: Duration::from_secs(10),
            fetch_wait_max: Duration::from_secs(30),
            kafka_advertise_addr: String::new(),
            retention_check_interval: Duration::from_secs(5),
        }
    }

    /// Checks the settings.
    pub fn validate(&self) -> Result<(), String> {
        if self.default_replication_factor == 0
            || self.default_replication_factor > metadata::REPLICATION_FACTOR_MAX
        {
            return Err(format!(
                "--default-replication-factor {} must be from 1 to {}",
                self.default_replication_factor,
                metadata::REPLICATION_FACTOR_MAX
            ));
        }
        if self.min_insync_replicas == 0 {
            return Err("--min-insync-replicas must be at least 1".into());
        }
        if self.partition_lease_ttl < Duration::from_millis(500) {
            return Err(format!(
                "--partition-lease-ttl-ms {} must be at least 500",
                self.partition_lease_ttl.as_millis()
            ));
        }
        if self.retention_check_interval < Duration::from_millis(10) {
            return Err(format!(
                "--retention-check-interval-ms {} must be at least 10",
                self.retention_check_interval.as_millis()
            ));
        }
        if self.max_batch_bytes < 1024 || self.max_batch_bytes > 256 << 20 {
            return Err(format!(
                "--broker-max-batch-bytes {} must be from 1024 to {}",
                self.max_batch_bytes,
                256u64 << 20
            ));
        }
        Ok(())
    }
}

/// The broker's counters on `/metrics`.
#[derive(Debug, Clone, Default)]
pub struct BrokerMetrics {
    /// Divergent-suffix truncations after leader changes.
    pub truncations: Counter,
    /// Records dropped by them.
    pub truncated_records: Counter,
    /// Partition leaderships taken.
    pub leader_elections: Counter,
    /// ISR shrinks written.
    pub isr_shrinks: Counter,
    /// ISR expansions written.
    pub isr_expands: Counter,
    /// Records appended as leader.
    pub records_produced: Counter,
    /// Metadata changes the KV Watch reported (responses with events).
    pub metadata_watch_events: Counter,
    /// Segments deleted by retention.
    pub retention_segments_deleted: Counter,
    /// Follower logs reset to their leader's log start.
    pub follower_resets: Counter,
}

impl BrokerMetrics {
    /// Registers the counters (under the registry's prefix).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "broker_truncations",
            "Divergent log suffixes truncated after a leader change (KIP-101)",
            self.truncations.clone(),
        );
        registry.register(
            "broker_truncated_records",
            "Records dropped by divergent-suffix truncations",
            self.truncated_records.clone(),
        );
        registry.register(
            "broker_leader_elections",
            "Partition leaderships this broker took",
            self.leader_elections.clone(),
        );
        registry.register(
            "broker_isr_shrinks",
            "ISR shrinks this broker wrote as leader",
            self.isr_shrinks.clone(),
        );
        registry.register(
            "broker_isr_expands",
            "ISR expansions this broker wrote as leader",
            self.isr_expands.clone(),
        );
        registry.register(
            "broker_records_produced",
            "Records appended as partition leader",
            self.records_produced.clone(),
        );
        registry.register(
            "broker_metadata_watch_events",
            "Broker metadata changes reported by the KV Watch (each starts a reconcile)",
            self.metadata_watch_events.clone(),
        );
        registry.register(
            "broker_retention_segments_deleted",
            "Log segments deleted by retention (by time or size, below the high watermark)",
            self.retention_segments_deleted.clone(),
        );
        registry.register(
            "broker_follower_resets",
            "Follower logs emptied and restarted at the leader's log start (they were below it)",
            self.follower_resets.clone(),
        );
    }
}

/// The broker's shared state.
#[derive(Debug)]
pub struct BrokerCore {
    /// Settings.
    pub config: BrokerConfig,
    /// The KV, through the etcd API.
    pub kv: Client,
    /// The lease and its safe window.
    pub lease: LeaseClock,
    /// Counters.
    pub metrics: BrokerMetrics,
    replicas: Mutex<HashMap<TopicPartition, Arc<Replica>>>,
    channels: Mutex<HashMap<String, Channel>>,
    /// The Kafka groups this broker coordinates ([`crate::kcoord`]).
    pub kafka_groups: crate::kcoord::Groups,
    /// Each replica's topic configuration as last seen.
    pub(crate) specs: Mutex<HashMap<TopicPartition, (TopicSpec, Vec<u64>)>>,
}

impl BrokerCore {
    /// The core of a broker with `config`.
    pub fn new(config: BrokerConfig, metrics: BrokerMetrics) -> Result<BrokerCore, String> {
        config.validate()?;
        let kv = Client::new(
            &config.kv_endpoints,
            flotilla_client::ClientConfig::default(),
        )
        .map_err(|e| e.to_string())?;
        Ok(BrokerCore {
            config,
            kv,
            lease: LeaseClock::default(),
            metrics,
            replicas: Mutex::default(),
            channels: Mutex::default(),
            kafka_groups: crate::kcoord::Groups::default(),
            specs: Mutex::default(),
        })
    }

    /// This broker's id.
    pub fn id(&self) -> u64 {
        self.config.broker_id
    }

    /// The replica of `tp` held here.
    pub fn replica(&self, topic: &str, partition: u32) -> Option<Arc<Replica>> {
        self.replicas
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(topic.to_string(), partition))
            .cloned()
    }

    /// Every replica held here.
    pub fn all_replicas(&self) -> Vec<Arc<Replica>> {
        self.replicas
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// The replica of `tp`, opened if needed.
    pub fn open_replica(
        &self,
        topic: &str,
        partition: u32,
        spec: &TopicSpec,
    ) -> Result<Arc<Replica>, PartitionError> {
        if let Some(r) = self.replica(topic, partition) {
            return Ok(r);
        }
        let config = spec.log_config().map_err(PartitionError::Invalid)?;
        let r = Arc::new(Replica::open(
            &self.config.data_dir,
            topic,
            partition,
            self.id(),
            config,
            spec.min_insync_replicas,
        )?);
        let mut g = self.replicas.lock().unwrap_or_else(|p| p.into_inner());
        Ok(g.entry((topic.to_string(), partition)).or_insert(r).clone())
    }

    /// Forgets the replica of `tp` (its files stay unless `remove`).
    pub fn close_replica(&self, tp: &TopicPartition, remove: bool) {
        let r = self
            .replicas
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(tp);
        self.specs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(tp);
        if let Some(r) = r {
            r.set_role(Role::None);
            if remove {
                if let Err(e) = r.remove_files() {
                    tracing::warn!(topic = %tp.0, partition = tp.1, error = %e, "cannot remove a deleted partition's files");
                } else {
                    tracing::info!(topic = %tp.0, partition = tp.1, "removed a deleted partition's files");
                }
            }
        }
    }

    /// A channel to the broker at `addr` (`host:port`), connected lazily.
    pub fn channel(&self, addr: &str) -> Result<Channel, String> {
        let mut g = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = g.get(addr) {
            return Ok(c.clone());
        }
        let c = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| format!("broker address {addr:?}: {e}"))?
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true)
            .connect_lazy();
        g.insert(addr.to_string(), c.clone());
        Ok(c)
    }

    /// The NotLeader error for `tp`, with the leader the KV names (or
    /// UnknownTopicOrPartition if the KV has no such partition).
    pub async fn not_leader_here(&self, topic: &str, partition: u32) -> PartitionError {
        if let Some(r) = self.replica(topic, partition)
            && let Role::Follower {
                epoch,
                leader,
                addr,
            } = r.role()
        {
            return PartitionError::NotLeader {
                topic: topic.to_string(),
                partition,
                leader_id: leader,
                leader_addr: addr,
                leader_epoch: epoch,
            };
        }
        let key = metadata::leader_key(topic, partition);
        let replicas = metadata::replicas_key(topic, partition);
        let leader = self
            .kv
            .range(flotilla_proto::etcdserverpb::RangeRequest {
                key: key.clone().into_bytes(),
                ..Default::default()
            })
            .await;
        let exists = self.kv.get(replicas.as_bytes()).await;
        match (leader, exists) {
            (Ok(l), Ok(Some(_))) => {
                let found = l.kvs.first().and_then(|kv| {
                    serde_json::from_slice::<LeaderRecord>(&kv.value)
                        .ok()
                        .map(|r| (r, kv.create_revision))
                });
                let (leader_id, leader_addr, leader_epoch) =
                    found.map_or((0, String::new(), 0), |(r, e)| (r.broker, r.addr, e));
                PartitionError::NotLeader {
                    topic: topic.to_string(),
                    partition,
                    leader_id,
                    leader_addr,
                    leader_epoch,
                }
            }
            (Ok(_), Ok(None)) => PartitionError::Unknown {
                topic: topic.to_string(),
                partition,
            },
            _ => PartitionError::NotAvailable("the metadata store is not reachable".into()),
        }
    }
}
