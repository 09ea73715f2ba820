//! Helpers of the broker tests.

#![allow(dead_code)]

use crate::processes::{ProcessCluster, ProcessOptions};
use flotilla_client::broker::BrokerClient;
use flotilla_proto::broker as pb;
use std::time::Duration;

/// Longest wait for a partition state.
pub const BROKER_WAIT: Duration = Duration::from_secs(30);

/// Three real nodes with their brokers registered.
pub async fn start_cluster(hint: &str) -> ProcessCluster {
    start_cluster_with(hint, Vec::new()).await
}

/// [`start_cluster`] with more flags for every node.
pub async fn start_cluster_with(hint: &str, extra_args: Vec<String>) -> ProcessCluster {
    let cluster = ProcessCluster::start(
        ProcessOptions {
            token: "broker",
            extra_args,
            ..ProcessOptions::default()
        },
        hint.to_string(),
    )
    .await;
    let client = BrokerClient::new(&cluster.endpoints()).expect("client");
    // Every broker registered: a topic with rf 3 can be placed.
    let deadline = tokio::time::Instant::now() + BROKER_WAIT;
    loop {
        let probe = client
            .create_topic(
                "probe",
                pb::TopicConfig {
                    partitions: 1,
                    replication_factor: 3,
                    ..Default::default()
                },
            )
            .await;
        if probe.is_ok() {
            client.delete_topic("probe").await.expect("delete probe");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "brokers did not register: {probe:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    cluster
}

/// Waits until every partition of `topic` has a leader; returns the
/// description.
pub async fn wait_leaders(client: &BrokerClient, topic: &str) -> pb::TopicDescription {
    let deadline = tokio::time::Instant::now() + BROKER_WAIT;
    loop {
        if let Ok(d) = client.describe_topic(topic).await
            && d.partitions.iter().all(|p| p.leader != 0)
        {
            return d;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no leaders for {topic}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `count` records valued `p<partition>-<i>` from `first`.
pub fn records(partition: u32, first: u64, count: u64) -> Vec<pb::Record> {
    (first..first + count)
        .map(|i| pb::Record {
            value: format!("p{partition}-{i}").into_bytes().into(),
            ..Default::default()
        })
        .collect()
}
