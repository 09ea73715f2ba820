//! CreateTopics and DeleteTopics, through the broker's admin service (the
//! gRPC `BrokerAdmin`'s), so topics made either way are the same.

use crate::Context;
use flotilla_proto::broker as pb;
use flotilla_proto::broker::broker_admin_server::BrokerAdmin;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{
    CreateTopicsRequest, CreateTopicsResponse, DeleteTopicsRequest, DeleteTopicsResponse,
};
use kafka_protocol::protocol::StrBytes;
use tonic::{Code, Request, Status};

/// The topic configuration a CreateTopics asks for, or why it cannot be
/// served. `-1` partitions means 1 (Kafka's `num.partitions` default), `-1`
/// replication factor the broker's default.
pub fn topic_config(t: &CreatableTopic) -> Result<pb::TopicConfig, (ResponseError, String)> {
    if !t.assignments.is_empty() {
        return Err((
            ResponseError::InvalidReplicaAssignment,
            "manual replica assignments are not served; Flotilla places replicas".into(),
        ));
    }
    let partitions = match t.num_partitions {
        -1 => 1,
        n if n > 0 => n as u32,
        n => {
            return Err((ResponseError::InvalidPartitions, format!("{n} partitions")));
        }
    };
    let replication_factor = match t.replication_factor {
        -1 => 0,
        n if n > 0 => n as u32,
        n => {
            return Err((
                ResponseError::InvalidReplicationFactor,
                format!("replication factor {n}"),
            ));
        }
    };
    let mut c = pb::TopicConfig {
        partitions,
        replication_factor,
        ..Default::default()
    };
    for kv in &t.configs {
        let key = kv.name.as_str();
        let value = kv.value.as_ref().map(|v| v.as_str()).unwrap_or("");
        let bad = || {
            (
                ResponseError::InvalidConfig,
                format!("{key}={value:?} is not a valid value"),
            )
        };
        match key {
            "retention.ms" => {
                // Kafka's -1 keeps for ever, as the broker's 0.
                let v: i64 = value.parse().map_err(|_| bad())?;
                c.retention_ms = u64::try_from(v).unwrap_or(0);
            }
            "retention.bytes" => {
                let v: i64 = value.parse().map_err(|_| bad())?;
                c.retention_bytes = u64::try_from(v).unwrap_or(0);
            }
            "segment.bytes" => c.segment_bytes = value.parse().map_err(|_| bad())?,
            "min.insync.replicas" => c.min_insync_replicas = value.parse().map_err(|_| bad())?,
            "unclean.leader.election.enable" => {
                c.unclean_leader_election = value.parse().map_err(|_| bad())?
            }
            other => {
                return Err((
                    ResponseError::InvalidConfig,
                    format!(
                        "topic config {other:?} is not served (retention.ms, retention.bytes, \
                         segment.bytes, min.insync.replicas, unclean.leader.election.enable are)"
                    ),
                ));
            }
        }
    }
    Ok(c)
}

/// The Kafka error of a failed admin call.
pub fn status_code(s: &Status) -> ResponseError {
    match s.code() {
        Code::AlreadyExists => ResponseError::TopicAlreadyExists,
        Code::NotFound => ResponseError::UnknownTopicOrPartition,
        Code::InvalidArgument if s.message().contains("replication factor") => {
            ResponseError::InvalidReplicationFactor
        }
        Code::InvalidArgument if s.message().contains("partitions") => {
            ResponseError::InvalidPartitions
        }
        Code::InvalidArgument if s.message().contains("name") => {
            ResponseError::InvalidTopicException
        }
        Code::InvalidArgument => ResponseError::InvalidConfig,
        Code::Aborted | Code::Unavailable | Code::DeadlineExceeded => {
            ResponseError::RequestTimedOut
        }
        _ => ResponseError::UnknownServerError,
    }
}

/// Handles a CreateTopics.
pub async fn create(ctx: &Context, req: CreateTopicsRequest) -> CreateTopicsResponse {
    let mut results = Vec::with_capacity(req.topics.len());
    for t in &req.topics {
        let name = t.name.0.as_str().to_string();
        let result = CreatableTopicResult::default()
            .with_name(t.name.clone())
            .with_num_partitions(-1)
            .with_replication_factor(-1);
        let config = match topic_config(t) {
            Ok(c) => c,
            Err((e, why)) => {
                results.push(
                    result
                        .with_error_code(e.code())
                        .with_error_message(Some(StrBytes::from_string(why))),
                );
                continue;
            }
        };
        if req.validate_only {
            let ok = flotilla_broker::metadata::validate_name("topic", &name);
            results.push(match ok {
                Ok(()) => result,
                Err(why) => result
                    .with_error_code(ResponseError::InvalidTopicException.code())
                    .with_error_message(Some(StrBytes::from_string(why))),
            });
            continue;
        }
        let created = ctx
            .admin
            .create_topic(Request::new(pb::CreateTopicRequest {
                name,
                config: Some(config),
            }))
            .await;
        results.push(match created {
            Ok(r) => {
                let c = r
                    .into_inner()
                    .topic
                    .and_then(|t| t.config)
                    .unwrap_or_default();
                result
                    .with_num_partitions(c.partitions as i32)
                    .with_replication_factor(c.replication_factor as i16)
            }
            Err(s) => result
                .with_error_code(status_code(&s).code())
                .with_error_message(Some(StrBytes::from_string(s.message().to_string()))),
        });
    }
    CreateTopicsResponse::default().with_topics(results)
}

/// Handles a DeleteTopics (by name; topic ids are not served).
pub async fn delete(ctx: &Context, req: DeleteTopicsRequest) -> DeleteTopicsResponse {
    let names: Vec<_> = req
        .topic_names
        .iter()
        .cloned()
        .chain(req.topics.iter().filter_map(|t| t.name.clone()))
        .collect();
    let mut results = Vec::with_capacity(names.len());
    for n in names {
        let deleted = ctx
            .admin
            .delete_topic(Request::new(pb::DeleteTopicRequest {
                name: n.0.as_str().to_string(),
            }))
            .await;
        let r = DeletableTopicResult::default().with_name(Some(n));
        results.push(match deleted {
            Ok(_) => r,
            Err(s) => r
                .with_error_code(status_code(&s).code())
                .with_error_message(Some(StrBytes::from_string(s.message().to_string()))),
        });
    }
    DeleteTopicsResponse::default().with_responses(results)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::TopicName;
    use kafka_protocol::messages::create_topics_request::CreatableTopicConfig;

    fn topic(partitions: i32, rf: i16, configs: &[(&str, &str)]) -> CreatableTopic {
        CreatableTopic::default()
            .with_name(TopicName(StrBytes::from_static_str("t")))
            .with_num_partitions(partitions)
            .with_replication_factor(rf)
            .with_configs(
                configs
                    .iter()
                    .map(|(k, v)| {
                        CreatableTopicConfig::default()
                            .with_name(StrBytes::from_string(k.to_string()))
                            .with_value(Some(StrBytes::from_string(v.to_string())))
                    })
                    .collect(),
            )
    }

    #[test]
    fn create_topics_maps_defaults_and_configs() {
        let c = topic_config(&topic(-1, -1, &[])).unwrap();
        assert_eq!((c.partitions, c.replication_factor), (1, 0));
        let c = topic_config(&topic(
            6,
            3,
            &[
                ("retention.ms", "-1"),
                ("min.insync.replicas", "2"),
                ("segment.bytes", "1048576"),
            ],
        ))
        .unwrap();
        assert_eq!((c.partitions, c.replication_factor), (6, 3));
        assert_eq!(
            (c.retention_ms, c.min_insync_replicas, c.segment_bytes),
            (0, 2, 1 << 20)
        );
        assert_eq!(
            topic_config(&topic(0, 1, &[])).unwrap_err().0,
            ResponseError::InvalidPartitions
        );
        assert_eq!(
            topic_config(&topic(1, -2, &[])).unwrap_err().0,
            ResponseError::InvalidReplicationFactor
        );
        assert_eq!(
            topic_config(&topic(1, 1, &[("cleanup.policy", "compact")]))
                .unwrap_err()
                .0,
            ResponseError::InvalidConfig
        );
        assert_eq!(
            topic_config(&topic(1, 1, &[("retention.ms", "soon")]))
                .unwrap_err()
                .0,
            ResponseError::InvalidConfig
        );
    }

    #[test]
    fn admin_statuses_map_to_kafka_errors() {
        assert_eq!(
            status_code(&Status::already_exists("x")),
            ResponseError::TopicAlreadyExists
        );
        assert_eq!(
            status_code(&Status::not_found("x")),
            ResponseError::UnknownTopicOrPartition
        );
        assert_eq!(
            status_code(&Status::invalid_argument(
                "replication factor 3 is above the 2 live broker(s)"
            )),
            ResponseError::InvalidReplicationFactor
        );
        assert_eq!(
            status_code(&Status::unavailable("kv")),
            ResponseError::RequestTimedOut
        );
    }
}
