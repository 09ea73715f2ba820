//! Metadata: the live brokers that run a Kafka listener (node ids by
//! [`crate::ids`]), and each topic's partitions with leader, leader epoch,
//! replicas and ISR, read from the KV in one pass (the same view the gRPC
//! `DescribeTopic` shows). Topics are never created by a Metadata request.

use crate::{Context, errors, ids};
use flotilla_broker::view::View;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use std::collections::BTreeMap;

/// The cluster id clients are told.
pub const CLUSTER_ID: &str = "flotilla";

/// `host:port` split; `None` if it is not that.
pub fn host_port(addr: &str) -> Option<(&str, i32)> {
    let (host, port) = addr.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    (!host.is_empty()).then_some((host, i32::from(port)))
}

/// Handles a Metadata request.
pub async fn handle(ctx: &Context, req: MetadataRequest, version: i16) -> MetadataResponse {
    let view = match View::read(&ctx.core.kv).await {
        Ok(v) => v,
        Err(e) => {
            tracing::warn!(error = %e, "kafka metadata: cannot read the broker metadata");
            View::default()
        }
    };
    let nodes = node_map(&view);
    let brokers: Vec<MetadataResponseBroker> = view
        .brokers
        .values()
        .filter_map(|b| {
            let (host, port) = host_port(&b.kafka_addr)?;
            let node = *nodes.get(&b.id)?;
            Some(
                MetadataResponseBroker::default()
                    .with_node_id(BrokerId(node))
                    .with_host(StrBytes::from_string(host.to_string()))
                    .with_port(port),
            )
        })
        .collect();
    let controller = brokers.iter().map(|b| b.node_id.0).min().unwrap_or(-1);
    let wanted: Vec<String> = match &req.topics {
        // v0 asks for every topic with an empty list; later versions with null.
        None => view.topics.keys().cloned().collect(),
        Some(t) if t.is_empty() && version == 0 => view.topics.keys().cloned().collect(),
        Some(t) => t
            .iter()
            .filter_map(|t| t.name.as_ref().map(|n| n.0.as_str().to_string()))
            .collect(),
    };
    let topics = wanted.into_iter().map(|name| topic(&view, &name)).collect();
    MetadataResponse::default()
        .with_brokers(brokers)
        .with_cluster_id(Some(StrBytes::from_static_str(CLUSTER_ID)))
        .with_controller_id(BrokerId(controller))
        .with_topics(topics)
}

/// Node ids of the live brokers; a collision is logged and the later
/// broker left out, so clients never see two brokers under one id.
fn node_map(view: &View) -> BTreeMap<u64, i32> {
    let mut ids_seen = Vec::new();
    for &id in view.brokers.keys() {
        ids_seen.push(id);
        if let Err(c) = ids::node_ids(ids_seen.iter().copied()) {
            tracing::error!(error = %c, "kafka metadata: leaving broker {id} out");
            ids_seen.pop();
        }
    }
    ids::node_ids(ids_seen).unwrap_or_default()
}

fn topic(view: &View, name: &str) -> MetadataResponseTopic {
    let resp = MetadataResponseTopic::default()
        .with_name(Some(TopicName(StrBytes::from_string(name.to_string()))))
        .with_topic_authorized_operations(i32::MIN);
    let Some(spec) = view.topics.get(name) else {
        return resp.with_error_code(ResponseError::UnknownTopicOrPartition.code());
    };
    let node = |id: &u64| BrokerId(ids::node_id(*id));
    let partitions = (0..spec.partitions)
        .map(|p| {
            let v = view
                .partitions
                .get(&(name.to_string(), p))
                .cloned()
                .unwrap_or_default();
            let (leader, epoch, code) = match &v.leader {
                Some(l) => (
                    ids::node_id(l.record.broker),
                    errors::epoch_to_kafka(l.epoch),
                    0,
                ),
                None => (-1, -1, ResponseError::LeaderNotAvailable.code()),
            };
            MetadataResponsePartition::default()
                .with_error_code(code)
                .with_partition_index(p as i32)
                .with_leader_id(BrokerId(leader))
                .with_leader_epoch(epoch)
                .with_replica_nodes(v.replicas.iter().map(node).collect())
                .with_isr_nodes(
                    v.isr
                        .as_ref()
                        .map(|i| i.isr.iter().map(node).collect())
                        .unwrap_or_default(),
                )
        })
        .collect();
    resp.with_partitions(partitions)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_split_into_host_and_port() {
        assert_eq!(host_port("127.0.0.1:9092"), Some(("127.0.0.1", 9092)));
        assert_eq!(host_port("[::1]:9092"), Some(("::1", 9092)));
        assert_eq!(host_port("n1.flotilla:19092"), Some(("n1.flotilla", 19092)));
        assert_eq!(host_port(""), None);
        assert_eq!(host_port("h:99999"), None);
        assert_eq!(host_port(":9092"), None);
    }
}
