//! The broker's metadata in the KV: key names, the JSON values under them,
//! and replica placement. Pure: no IO here.
//!
//! | key | value | lease |
//! |---|---|---|
//! | `topic:<name>` | [`TopicSpec`] | — |
//! | `partition:<topic>:<id>/replicas` | [`Replicas`] | — |
//! | `partition:<topic>:<id>/leader` | [`LeaderRecord`]; its create_revision is the leader epoch | the leader broker's |
//! | `partition:<topic>:<id>/isr` | [`IsrRecord`] | — |
//! | `broker:<id>` | [`BrokerRecord`] | the broker's |
//! | `cg:<group>/topic:<topic>/partition:<id>` | [`CommittedRecord`] | — |
//! | `group:<group>/member:<id>` | [`MemberRecord`] | the member's |
//! | `group:<group>/generation` | [`GenerationRecord`] | — |
//! | `group:<group>/coordinator` | [`CoordinatorRecord`]: the Kafka group's coordinator | that broker's |
//! | `group:<group>/kafka-generation` | [`KafkaGenerationRecord`] | — |

use serde::{Deserialize, Serialize};

/// Longest topic or group name.
pub const NAME_CHARS_MAX: usize = 200;
/// Most partitions of one topic.
pub const PARTITIONS_MAX: u32 = 1024;
/// Highest replication factor.
pub const REPLICATION_FACTOR_MAX: u32 = 16;

/// Key of a topic's configuration.
pub fn topic_key(topic: &str) -> String {
    format!("topic:{topic}")
}

/// Prefix of every topic key.
pub const TOPIC_PREFIX: &str = "topic:";
/// Prefix of every partition key.
pub const PARTITION_PREFIX: &str = "partition:";
/// Prefix of every broker registration.
pub const BROKER_PREFIX: &str = "broker:";

/// Prefix of one topic's partition keys.
pub fn partition_prefix(topic: &str) -> String {
    format!("partition:{topic}:")
}

/// Key of a partition's replica list.
pub fn replicas_key(topic: &str, partition: u32) -> String {
    format!("partition:{topic}:{partition}/replicas")
}

/// Key of a partition's leader (its create_revision is the leader epoch).
pub fn leader_key(topic: &str, partition: u32) -> String {
    format!("partition:{topic}:{partition}/leader")
}

/// Key of a partition's in-sync replica set.
pub fn isr_key(topic: &str, partition: u32) -> String {
    format!("partition:{topic}:{partition}/isr")
}

/// Key of a broker's registration.
pub fn broker_key(id: u64) -> String {
    format!("broker:{id}")
}

/// Key of a group's committed offset for a partition (the spec's key).
pub fn committed_key(group: &str, topic: &str, partition: u32) -> String {
    format!("cg:{group}/topic:{topic}/partition:{partition}")
}

/// Prefix of a group's committed offsets.
pub fn committed_prefix(group: &str) -> String {
    format!("cg:{group}/")
}

/// Key of a group member (attached to the member's lease).
pub fn member_key(group: &str, member: &str) -> String {
    format!("group:{group}/member:{member}")
}

/// Prefix of a group's members.
pub fn member_prefix(group: &str) -> String {
    format!("group:{group}/member:")
}

/// Key of a group's generation record.
pub fn generation_key(group: &str) -> String {
    format!("group:{group}/generation")
}

/// Key of a Kafka group's coordinator (attached to the coordinator's
/// lease; its create_revision fences the coordinator's writes).
pub fn coordinator_key(group: &str) -> String {
    format!("group:{group}/coordinator")
}

/// Key of a Kafka group's last generation.
pub fn kafka_generation_key(group: &str) -> String {
    format!("group:{group}/kafka-generation")
}

/// Which partition key a key under [`PARTITION_PREFIX`] is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PartitionKey {
    /// `/replicas`
    Replicas(String, u32),
    /// `/leader`
    Leader(String, u32),
    /// `/isr`
    Isr(String, u32),
}

/// Parses a key under [`PARTITION_PREFIX`]; `None` for anything else.
pub fn parse_partition_key(key: &str) -> Option<PartitionKey> {
    let rest = key.strip_prefix(PARTITION_PREFIX)?;
    let (tp, what) = rest.rsplit_once('/')?;
    let (topic, p) = tp.rsplit_once(':')?;
    let p: u32 = p.parse().ok()?;
    let topic = topic.to_string();
    match what {
        "replicas" => Some(PartitionKey::Replicas(topic, p)),
        "leader" => Some(PartitionKey::Leader(topic, p)),
        "isr" => Some(PartitionKey::Isr(topic, p)),
        _ => None,
    }
}

/// A topic's configuration as stored under `topic:<name>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicSpec {
    /// Partition count.
    pub partitions: u32,
    /// Replicas per partition.
    pub replication_factor: u32,
    /// Retention by age; 0 keeps for ever.
    pub retention_ms: u64,
    /// Retention by size; 0 is unbounded.
    pub retention_bytes: u64,
    /// Segment roll size; 0 is the log's default.
    pub segment_bytes: u64,
    /// acks=all needs this many in-sync replicas.
    pub min_insync_replicas: u32,
    /// The partition log's fsync policy (`flotilla_log::FsyncPolicy` text).
    pub fsync_policy: String,
    /// Whether a replica outside the ISR may lead.
    pub unclean_leader_election: bool,
}

impl TopicSpec {
    /// The partition log configuration this topic asks for.
    pub fn log_config(&self) -> Result<flotilla_log::LogConfig, String> {
        let mut c = flotilla_log::LogConfig::default();
        if self.segment_bytes > 0 {
            c.segment_bytes_max = self.segment_bytes;
        }
        c.retention_ms = (self.retention_ms > 0).then_some(self.retention_ms);
        c.retention_bytes = (self.retention_bytes > 0).then_some(self.retention_bytes);
        c.fsync = self
            .fsync_policy
            .parse()
            .map_err(|e: flotilla_log::LogError| e.to_string())?;
        c.validate().map_err(|e| e.to_string())?;
        Ok(c)
    }

    /// Checks the values a topic may have.
    pub fn validate(&self) -> Result<(), String> {
        if self.partitions == 0 || self.partitions > PARTITIONS_MAX {
            return Err(format!(
                "partitions {} must be from 1 to {PARTITIONS_MAX}",
                self.partitions
            ));
        }
        if self.replication_factor == 0 || self.replication_factor > REPLICATION_FACTOR_MAX {
            return Err(format!(
                "replication factor {} must be from 1 to {REPLICATION_FACTOR_MAX}",
                self.replication_factor
            ));
        }
        if self.min_insync_replicas == 0 || self.min_insync_replicas > self.replication_factor {
            return Err(format!(
                "min.insync.replicas {} must be from 1 to the replication factor {}",
                self.min_insync_replicas, self.replication_factor
            ));
        }
        // A segment holds at least one record of the largest size.
        let min = u64::from(flotilla_log::LogConfig::default().record_bytes_max);
        if self.segment_bytes != 0 && self.segment_bytes < min {
            return Err(format!(
                "segment bytes {} must be 0 (default) or at least {min} (the largest record)",
                self.segment_bytes
            ));
        }
        self.log_config().map(|_| ())
    }
}

/// Checks a topic or group name: 1 to 200 characters of `[A-Za-z0-9._-]`,
/// not `.` or `..` (Kafka's rule; the name is also a directory name).
pub fn validate_name(what: &str, name: &str) -> Result<(), String> {
    let legal = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if name.is_empty()
        || name.len() > NAME_CHARS_MAX
        || name == "."
        || name == ".."
        || !name.chars().all(legal)
    {
        return Err(format!(
            "{what} name {name:?}: use 1 to {NAME_CHARS_MAX} characters from [A-Za-z0-9._-], not . or .."
        ));
    }
    Ok(())
}

/// A partition's replica list: broker ids, the preferred leader first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replicas {
    /// Broker ids.
    pub replicas: Vec<u64>,
}

/// The value of a leader key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderRecord {
    /// The leading broker.
    pub broker: u64,
    /// Its client address.
    pub addr: String,
    /// The lease the key is attached to.
    pub lease: i64,
}

/// The value of an ISR key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IsrRecord {
    /// The in-sync replicas.
    pub isr: Vec<u64>,
    /// The leader epoch that wrote it.
    pub leader_epoch: i64,
}

/// The value of a broker registration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerRecord {
    /// The broker id (the node's member id).
    pub id: u64,
    /// Its client address, `host:port`.
    pub addr: String,
    /// Its Kafka listener's advertised address, `host:port`; empty when it
    /// runs none (and in records written before there was one).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub kafka_addr: String,
}

/// A committed offset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommittedRecord {
    /// The next offset to consume.
    pub offset: u64,
    /// Free-form metadata.
    pub metadata: String,
    /// The generation that committed it (0: standalone).
    pub generation: u64,
}

/// A group member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberRecord {
    /// The client's name.
    pub client_id: String,
    /// Topics it consumes.
    pub topics: Vec<String>,
    /// Its lease.
    pub lease: i64,
}

/// A group's generation: who was in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct GenerationRecord {
    /// The generation number.
    pub generation: u64,
    /// The members (sorted ids).
    pub members: Vec<String>,
    /// The topics consumed (sorted, deduplicated union of the members')
    /// with their partition counts when the generation began: the
    /// assignment of a generation never changes.
    pub topics: std::collections::BTreeMap<String, u32>,
}

/// The value of a Kafka group's coordinator key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CoordinatorRecord {
    /// The coordinating broker.
    pub broker: u64,
    /// Its lease (the key is attached to it).
    pub lease: i64,
}

/// A Kafka group's last generation, written by its coordinator before any
/// member hears of it, so a new coordinator continues above it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct KafkaGenerationRecord {
    /// The generation id.
    pub generation: i32,
    /// Its members.
    pub members: Vec<String>,
    /// The protocol chosen.
    pub protocol: String,
}

/// Why replicas cannot be placed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlacementError {
    /// More replicas asked for than brokers alive.
    #[error(
        "replication factor {replication_factor} is above the {live} live broker(s); \
         start more brokers or lower the replication factor"
    )]
    NotEnoughBrokers {
        /// Asked for.
        replication_factor: u32,
        /// Live brokers.
        live: usize,
    },
}

/// Places the replicas of partitions `first..first + count` over `brokers`
/// (live ids): round robin over the sorted brokers, shifted by the partition
/// id, so leaders (the first replica) and replicas spread evenly and the same
/// inputs always give the same placement.
pub fn place(
    brokers: &[u64],
    first: u32,
    count: u32,
    replication_factor: u32,
) -> Result<Vec<Vec<u64>>, PlacementError> {
    let mut sorted = brokers.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let n = sorted.len();
    if replication_factor as usize > n || n == 0 {
        return Err(PlacementError::NotEnoughBrokers {
            replication_factor,
            live: n,
        });
    }
    Ok((first..first + count)
        .map(|p| {
            (0..replication_factor as usize)
                .map(|i| sorted[(p as usize + i) % n])
                .collect()
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placement_is_round_robin_shifted_by_partition() {
        let placed = place(&[30, 10, 20], 0, 4, 2).unwrap();
        assert_eq!(
            placed,
            vec![vec![10, 20], vec![20, 30], vec![30, 10], vec![10, 20]]
        );
        // Added partitions continue the rotation.
        assert_eq!(place(&[10, 20, 30], 4, 1, 2).unwrap(), vec![vec![20, 30]]);
    }

    #[test]
    fn placement_is_balanced_and_distinct() {
        let brokers = [1, 2, 3, 4, 5];
        let placed = place(&brokers, 0, 50, 3).unwrap();
        let mut leaders = std::collections::HashMap::new();
        let mut replicas = std::collections::HashMap::new();
        for r in &placed {
            let mut d = r.clone();
            d.sort_unstable();
            d.dedup();
            assert_eq!(d.len(), 3, "replicas of a partition are distinct brokers");
            *leaders.entry(r[0]).or_insert(0) += 1;
            for b in r {
                *replicas.entry(*b).or_insert(0) += 1;
            }
        }
        assert!(leaders.values().all(|&c| c == 10), "{leaders:?}");
        assert!(replicas.values().all(|&c| c == 30), "{replicas:?}");
    }

    #[test]
    fn replication_factor_above_brokers_is_an_error() {
        let err = place(&[1, 2], 0, 1, 3).unwrap_err();
        assert_eq!(
            err,
            PlacementError::NotEnoughBrokers {
                replication_factor: 3,
                live: 2
            }
        );
        assert!(err.to_string().contains("above the 2 live broker(s)"));
        assert!(place(&[], 0, 1, 1).is_err());
    }

    #[test]
    fn partition_keys_round_trip() {
        assert_eq!(
            parse_partition_key(&leader_key("a:b", 7)),
            Some(PartitionKey::Leader("a:b".into(), 7))
        );
        assert_eq!(
            parse_partition_key(&isr_key("t", 0)),
            Some(PartitionKey::Isr("t".into(), 0))
        );
        assert_eq!(
            parse_partition_key(&replicas_key("t", 12)),
            Some(PartitionKey::Replicas("t".into(), 12))
        );
        assert_eq!(parse_partition_key("partition:t:x/leader"), None);
        assert_eq!(parse_partition_key("topic:t"), None);
        assert_eq!(
            committed_key("g", "t", 3),
            "cg:g/topic:t/partition:3",
            "the spec's key"
        );
    }

    #[test]
    fn broker_records_without_a_kafka_address_still_parse() {
        let old: BrokerRecord = serde_json::from_str(r#"{"id":7,"addr":"h:1"}"#).unwrap();
        assert_eq!(old.kafka_addr, "");
        let new = BrokerRecord {
            id: 7,
            addr: "h:1".into(),
            kafka_addr: "h:9092".into(),
        };
        let text = serde_json::to_string(&new).unwrap();
        assert_eq!(serde_json::from_str::<BrokerRecord>(&text).unwrap(), new);
        assert_eq!(
            serde_json::to_string(&old).unwrap(),
            r#"{"id":7,"addr":"h:1"}"#,
            "no Kafka address, no field: older brokers read it unchanged"
        );
    }

    #[test]
    fn names_and_specs_are_checked() {
        assert!(validate_name("topic", "orders.v1_x-2").is_ok());
        for bad in ["", ".", "..", "a/b", "a:b", &"x".repeat(201)] {
            assert!(validate_name("topic", bad).is_err(), "{bad:?}");
        }
        let spec = TopicSpec {
            partitions: 3,
            replication_factor: 3,
            retention_ms: 0,
            retention_bytes: 0,
            segment_bytes: 0,
            min_insync_replicas: 2,
            fsync_policy: "never".into(),
            unclean_leader_election: false,
        };
        assert!(spec.validate().is_ok());
        let c = spec.log_config().unwrap();
        assert_eq!(c.retention_ms, None);
        for bad in [
            TopicSpec {
                partitions: 0,
                ..spec.clone()
            },
            TopicSpec {
                min_insync_replicas: 4,
                ..spec.clone()
            },
            TopicSpec {
                fsync_policy: "sometimes".into(),
                ..spec.clone()
            },
            TopicSpec {
                segment_bytes: 10,
                ..spec.clone()
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }
}
