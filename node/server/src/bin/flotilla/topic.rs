//! `flotilla topic create|list|describe|alter|delete`: the broker's topic
//! administration (kafka-topics' habits, etcdctl's output switch).

use crate::WriteOut;
use anyhow::{Result, bail};
use clap::Subcommand;
use flotilla_client::broker::BrokerClient;
use flotilla_proto::broker as pb;
use serde_json::{Value, json};

/// `flotilla topic ...`
#[derive(Debug, Subcommand)]
pub enum TopicCommand {
    /// Create a topic; its partitions' replicas are placed over the live
    /// brokers.
    Create {
        /// Topic name: [A-Za-z0-9._-], up to 200 characters.
        name: String,
        /// Partitions.
        #[arg(short, long, default_value_t = 1)]
        partitions: u32,
        /// Replicas per partition (default: the brokers'
        /// --default-replication-factor).
        #[arg(short = 'r', long)]
        replication_factor: Option<u32>,
        /// acks=all needs this many in-sync replicas (default: the brokers'
        /// --min-insync-replicas, capped at the replication factor).
        #[arg(long)]
        min_insync_replicas: Option<u32>,
        /// Delete closed segments older than this (0: keep).
        #[arg(long, default_value_t = 0)]
        retention_ms: u64,
        /// Delete the oldest closed segments beyond this size (0: no bound).
        #[arg(long, default_value_t = 0)]
        retention_bytes: u64,
        /// Segment size (0: 1 GiB).
        #[arg(long, default_value_t = 0)]
        segment_bytes: u64,
        /// always, never, every-records:N or every-ms:T.
        #[arg(long, default_value = "never")]
        fsync: String,
        /// Let a replica outside the ISR lead (may lose acknowledged records).
        #[arg(long)]
        unclean_leader_election: bool,
    },
    /// List topics.
    List,
    /// Show a topic's configuration and each partition's replicas, leader,
    /// epoch and ISR.
    Describe {
        /// Topic name.
        name: String,
    },
    /// Add partitions or change configuration.
    Alter {
        /// Topic name.
        name: String,
        /// New partition count (only more).
        #[arg(short, long)]
        partitions: Option<u32>,
        /// New retention by age (0: keep).
        #[arg(long)]
        retention_ms: Option<u64>,
        /// New retention by size (0: no bound).
        #[arg(long)]
        retention_bytes: Option<u64>,
        /// New segment size.
        #[arg(long)]
        segment_bytes: Option<u64>,
        /// New min.insync.replicas.
        #[arg(long)]
        min_insync_replicas: Option<u32>,
        /// New fsync policy.
        #[arg(long)]
        fsync: Option<String>,
        /// Unclean leader election on or off.
        #[arg(long)]
        unclean_leader_election: Option<bool>,
    },
    /// Delete a topic and its data.
    Delete {
        /// Topic name.
        name: String,
    },
}

/// The JSON form of a topic.
pub fn topic_json(t: &pb::TopicDescription) -> Value {
    let c = t.config.clone().unwrap_or_default();
    json!({
        "name": t.name,
        "config": {
            "partitions": c.partitions,
            "replication_factor": c.replication_factor,
            "min_insync_replicas": c.min_insync_replicas,
            "retention_ms": c.retention_ms,
            "retention_bytes": c.retention_bytes,
            "segment_bytes": c.segment_bytes,
            "fsync_policy": c.fsync_policy,
            "unclean_leader_election": c.unclean_leader_election,
        },
        "partitions": t.partitions.iter().map(|p| json!({
            "partition": p.partition,
            "leader": format!("{:x}", p.leader),
            "leader_addr": p.leader_addr,
            "leader_epoch": p.leader_epoch,
            "replicas": p.replicas.iter().map(|r| format!("{r:x}")).collect::<Vec<_>>(),
            "isr": p.isr.iter().map(|r| format!("{r:x}")).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    })
}

fn ids(v: &[u64]) -> String {
    v.iter()
        .map(|r| format!("{r:x}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn print_topic(t: &pb::TopicDescription) {
    let c = t.config.clone().unwrap_or_default();
    println!(
        "topic {}  partitions {}  replication-factor {}  min-insync-replicas {}  retention-ms {}  retention-bytes {}  segment-bytes {}  fsync {}{}",
        t.name,
        c.partitions,
        c.replication_factor,
        c.min_insync_replicas,
        c.retention_ms,
        c.retention_bytes,
        c.segment_bytes,
        c.fsync_policy,
        if c.unclean_leader_election {
            "  unclean-leader-election"
        } else {
            ""
        }
    );
    println!(
        "{:>9}  {:>16}  {:>8}  {:<34}  ISR",
        "PARTITION", "LEADER", "EPOCH", "REPLICAS"
    );
    for p in &t.partitions {
        let leader = if p.leader == 0 {
            "-".to_string()
        } else {
            format!("{:x}", p.leader)
        };
        println!(
            "{:>9}  {:>16}  {:>8}  {:<34}  {}",
            p.partition,
            leader,
            p.leader_epoch,
            ids(&p.replicas),
            ids(&p.isr)
        );
    }
}

/// Runs a `topic` subcommand.
pub async fn run(cmd: TopicCommand, endpoints: &[String], out: WriteOut) -> Result<()> {
    let client = BrokerClient::new(endpoints)?;
    let shown = match cmd {
        TopicCommand::Create {
            name,
            partitions,
            replication_factor,
            min_insync_replicas,
            retention_ms,
            retention_bytes,
            segment_bytes,
            fsync,
            unclean_leader_election,
        } => {
            if partitions == 0 {
                bail!("--partitions must be at least 1");
            }
            let created = client
                .create_topic(
                    &name,
                    pb::TopicConfig {
                        partitions,
                        replication_factor: replication_factor.unwrap_or(0),
                        retention_ms,
                        retention_bytes,
                        segment_bytes,
                        min_insync_replicas: min_insync_replicas.unwrap_or(0),
                        fsync_policy: fsync,
                        unclean_leader_election,
                    },
                )
                .await?;
            // Show the partitions led: the leaders are elected within a
            // moment of the creation.
            let mut shown = created;
            for _ in 0..50 {
                if shown.partitions.iter().all(|p| p.leader != 0) {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                shown = client.describe_topic(&name).await?;
            }
            Some(shown)
        }
        TopicCommand::List => {
            let topics = client.list_topics().await?;
            match out {
                WriteOut::Json => {
                    let v: Vec<Value> = topics.iter().map(topic_json).collect();
                    println!("{}", json!({ "topics": v }));
                }
                WriteOut::Table => {
                    println!(
                        "{:<40}  {:>10}  {:>18}",
                        "TOPIC", "PARTITIONS", "REPLICATION-FACTOR"
                    );
                    for t in &topics {
                        let c = t.config.clone().unwrap_or_default();
                        println!(
                            "{:<40}  {:>10}  {:>18}",
                            t.name, c.partitions, c.replication_factor
                        );
                    }
                }
            }
            None
        }
        TopicCommand::Describe { name } => Some(client.describe_topic(&name).await?),
        TopicCommand::Alter {
            name,
            partitions,
            retention_ms,
            retention_bytes,
            segment_bytes,
            min_insync_replicas,
            fsync,
            unclean_leader_election,
        } => Some(
            client
                .alter_topic(pb::AlterTopicRequest {
                    name,
                    partitions,
                    retention_ms,
                    retention_bytes,
                    segment_bytes,
                    min_insync_replicas,
                    fsync_policy: fsync,
                    unclean_leader_election,
                })
                .await?,
        ),
        TopicCommand::Delete { name } => {
            client.delete_topic(&name).await?;
            match out {
                WriteOut::Json => println!("{}", json!({ "deleted": name })),
                WriteOut::Table => println!("topic {name} deleted"),
            }
            None
        }
    };
    if let Some(t) = shown {
        match out {
            WriteOut::Json => println!("{}", topic_json(&t)),
            WriteOut::Table => print_topic(&t),
        }
    }
    Ok(())
}
