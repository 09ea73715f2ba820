//! [`BrokerAdmin`] over the `flotilla.broker.v1.BrokerAdmin` gRPC service
//! every member serves, with the same connection habits as the membership
//! calls ([`GrpcAdmin`]). The broker names brokers by member id; the
//! operator reports pod names, so a description is joined with the member
//! list of the member that answered.

use super::broker::{BrokerAdmin, FsyncPolicy, NewTopic, PartitionInfo, TopicInfo, TopicSettings};
use super::{AdminError, GrpcAdmin};
use flotilla_proto::broker::broker_admin_client::BrokerAdminClient;
use flotilla_proto::broker::{
    AlterTopicRequest, CreateTopicRequest, DeleteTopicRequest, DescribeTopicRequest, TopicConfig,
    TopicDescription,
};
use flotilla_proto::etcdserverpb::MemberListRequest;
use flotilla_proto::etcdserverpb::cluster_client::ClusterClient;
use std::collections::HashMap;

/// The broker's spelling of a fsync policy.
pub fn fsync_text(p: FsyncPolicy) -> String {
    match p {
        FsyncPolicy::Always => "always".to_string(),
        FsyncPolicy::Never => "never".to_string(),
        FsyncPolicy::EveryRecords(n) => format!("every-records:{n}"),
        FsyncPolicy::EveryIntervalMs(ms) => format!("every-ms:{ms}"),
    }
}

/// Reads the broker's spelling; empty is the broker's default, `never`.
pub fn parse_fsync(text: &str) -> Option<FsyncPolicy> {
    match text {
        "" | "never" => Some(FsyncPolicy::Never),
        "always" => Some(FsyncPolicy::Always),
        other => {
            let (kind, n) = other.split_once(':')?;
            let n: u64 = n.parse().ok()?;
            match kind {
                "every-records" => Some(FsyncPolicy::EveryRecords(n)),
                "every-ms" => Some(FsyncPolicy::EveryIntervalMs(n)),
                _ => None,
            }
        }
    }
}

/// A retention as the broker takes it: 0 keeps records for ever, where
/// the resource says -1.
fn retention_to_broker(v: Option<i64>) -> Option<u64> {
    v.map(|v| u64::try_from(v).unwrap_or(0))
}

fn retention_from_broker(v: u64) -> Option<i64> {
    Some(if v == 0 {
        -1
    } else {
        i64::try_from(v).unwrap_or(i64::MAX)
    })
}

/// A description in the operator's terms, brokers named by `names`.
pub fn topic_info(d: TopicDescription, names: &HashMap<u64, String>) -> TopicInfo {
    let name_of = |id: u64| names.get(&id).cloned().unwrap_or_else(|| format!("{id:x}"));
    let config = d.config.unwrap_or_default();
    TopicInfo {
        name: d.name,
        replication_factor: config.replication_factor,
        partitions: d
            .partitions
            .into_iter()
            .map(|p| PartitionInfo {
                id: p.partition,
                leader: (p.leader != 0).then(|| name_of(p.leader)),
                replicas: p.replicas.iter().map(|r| name_of(*r)).collect(),
                isr: p.isr.iter().map(|r| name_of(*r)).collect(),
            })
            .collect(),
        settings: TopicSettings {
            retention_ms: retention_from_broker(config.retention_ms),
            retention_bytes: retention_from_broker(config.retention_bytes),
            segment_bytes: Some(i64::try_from(config.segment_bytes).unwrap_or(i64::MAX)),
            min_insync_replicas: Some(
                i32::try_from(config.min_insync_replicas).unwrap_or(i32::MAX),
            ),
            fsync: parse_fsync(&config.fsync_policy),
        },
    }
}

impl BrokerAdmin for GrpcAdmin {
    async fn describe_topic(
        &self,
        endpoints: &[String],
        name: &str,
    ) -> Result<Option<TopicInfo>, AdminError> {
        let name = name.to_string();
        self.first_answer(endpoints, |ch| {
            let name = name.clone();
            async move {
                let described = BrokerAdminClient::new(ch.clone())
                    .describe_topic(DescribeTopicRequest { name })
                    .await;
                let topic = match described {
                    Ok(r) => r.into_inner().topic.unwrap_or_default(),
                    Err(s) if s.code() == tonic::Code::NotFound => return Ok(None),
                    Err(s) => return Err(s),
                };
                let members = ClusterClient::new(ch)
                    .member_list(MemberListRequest {
                        linearizable: false,
                    })
                    .await?
                    .into_inner()
                    .members;
                let names = members.into_iter().map(|m| (m.id, m.name)).collect();
                Ok(Some(topic_info(topic, &names)))
            }
        })
        .await
    }

    async fn create_topic(&self, endpoints: &[String], topic: &NewTopic) -> Result<(), AdminError> {
        let s = topic.settings;
        let request = CreateTopicRequest {
            name: topic.name.clone(),
            config: Some(TopicConfig {
                partitions: topic.partitions,
                replication_factor: topic.replication_factor.unwrap_or(0),
                retention_ms: retention_to_broker(s.retention_ms).unwrap_or(0),
                retention_bytes: retention_to_broker(s.retention_bytes).unwrap_or(0),
                segment_bytes: s
                    .segment_bytes
                    .and_then(|b| u64::try_from(b).ok())
                    .unwrap_or(0),
                min_insync_replicas: s
                    .min_insync_replicas
                    .and_then(|m| u32::try_from(m).ok())
                    .unwrap_or(0),
                fsync_policy: s.fsync.map(fsync_text).unwrap_or_default(),
                unclean_leader_election: false,
            }),
        };
        self.first_answer(endpoints, |ch| {
            let request = request.clone();
            async move {
                BrokerAdminClient::new(ch).create_topic(request).await?;
                Ok(())
            }
        })
        .await
    }

    async fn add_partitions(
        &self,
        endpoints: &[String],
        name: &str,
        partitions: u32,
    ) -> Result<(), AdminError> {
        let request = AlterTopicRequest {
            name: name.to_string(),
            partitions: Some(partitions),
            ..AlterTopicRequest::default()
        };
        self.first_answer(endpoints, |ch| {
            let request = request.clone();
            async move {
                BrokerAdminClient::new(ch).alter_topic(request).await?;
                Ok(())
            }
        })
        .await
    }

    async fn alter_topic(
        &self,
        endpoints: &[String],
        name: &str,
        settings: &TopicSettings,
    ) -> Result<(), AdminError> {
        let request = AlterTopicRequest {
            name: name.to_string(),
            retention_ms: retention_to_broker(settings.retention_ms),
            retention_bytes: retention_to_broker(settings.retention_bytes),
            segment_bytes: settings.segment_bytes.and_then(|b| u64::try_from(b).ok()),
            min_insync_replicas: settings
                .min_insync_replicas
                .and_then(|m| u32::try_from(m).ok()),
            fsync_policy: settings.fsync.map(fsync_text),
            ..AlterTopicRequest::default()
        };
        self.first_answer(endpoints, |ch| {
            let request = request.clone();
            async move {
                BrokerAdminClient::new(ch).alter_topic(request).await?;
                Ok(())
            }
        })
        .await
    }

    async fn delete_topic(&self, endpoints: &[String], name: &str) -> Result<(), AdminError> {
        let name = name.to_string();
        self.first_answer(endpoints, |ch| {
            let name = name.clone();
            async move {
                match BrokerAdminClient::new(ch)
                    .delete_topic(DeleteTopicRequest { name })
                    .await
                {
                    Ok(_) => Ok(()),
                    Err(s) if s.code() == tonic::Code::NotFound => Ok(()),
                    Err(s) => Err(s),
                }
            }
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_proto::broker::PartitionInfo as WirePartition;

    #[test]
    fn fsync_policies_round_trip_and_unknown_text_is_none() {
        for p in [
            FsyncPolicy::Always,
            FsyncPolicy::Never,
            FsyncPolicy::EveryRecords(100),
            FsyncPolicy::EveryIntervalMs(5),
        ] {
            assert_eq!(parse_fsync(&fsync_text(p)), Some(p));
        }
        assert_eq!(parse_fsync(""), Some(FsyncPolicy::Never));
        assert_eq!(parse_fsync("every-records:x"), None);
        assert_eq!(parse_fsync("sometimes:1"), None);
    }

    #[test]
    fn a_description_names_brokers_by_member_name_and_keeps_for_ever_as_minus_one() {
        let names = HashMap::from([(7, "demo-0".to_string()), (9, "demo-1".to_string())]);
        let info = topic_info(
            TopicDescription {
                name: "orders".to_string(),
                config: Some(TopicConfig {
                    partitions: 1,
                    replication_factor: 2,
                    retention_ms: 0,
                    retention_bytes: 4096,
                    segment_bytes: 1 << 20,
                    min_insync_replicas: 2,
                    fsync_policy: "every-ms:10".to_string(),
                    unclean_leader_election: false,
                }),
                partitions: vec![WirePartition {
                    partition: 0,
                    replicas: vec![9, 7],
                    leader: 9,
                    leader_addr: String::new(),
                    leader_epoch: 3,
                    isr: vec![9, 0xab],
                }],
            },
            &names,
        );
        assert_eq!(info.replication_factor, 2);
        let p = &info.partitions[0];
        assert_eq!(p.leader.as_deref(), Some("demo-1"));
        assert_eq!(p.replicas, vec!["demo-1", "demo-0"]);
        assert_eq!(p.isr, vec!["demo-1", "ab"], "an unknown id shows in hex");
        assert_eq!(info.settings.retention_ms, Some(-1));
        assert_eq!(info.settings.retention_bytes, Some(4096));
        assert_eq!(info.settings.fsync, Some(FsyncPolicy::EveryIntervalMs(10)));
        assert_eq!(retention_to_broker(Some(-1)), Some(0));
    }
}
