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
            broker: true,
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

/// The index of the member whose client address is `addr` (`host:port`).
pub fn member_at(cluster: &ProcessCluster, addr: &str) -> usize {
    cluster
        .endpoints()
        .iter()
        .position(|e| e.trim_start_matches("http://") == addr)
        .unwrap_or_else(|| panic!("no member at {addr}"))
}

/// Waits until partition `partition` of `topic` is led by a broker other
/// than `not` (an address); returns the partition's state.
pub async fn wait_new_leader(
    client: &BrokerClient,
    topic: &str,
    partition: u32,
    not: &str,
) -> pb::PartitionInfo {
    let deadline = tokio::time::Instant::now() + BROKER_WAIT;
    loop {
        if let Ok(d) = client.describe_topic(topic).await {
            let p = &d.partitions[partition as usize];
            if p.leader != 0 && p.leader_addr != not {
                return p.clone();
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no new leader for {topic}-{partition}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every record of a partition from offset 0 to its high watermark, read
/// at its leader.
pub async fn read_all(client: &BrokerClient, topic: &str, partition: u32) -> Vec<pb::Record> {
    let mut out: Vec<pb::Record> = Vec::new();
    let end = client
        .list_offset(topic, partition, pb::OffsetSpec::Latest, 0)
        .await
        .expect("latest");
    while (out.len() as u64) < end {
        let resp = client
            .fetch(pb::FetchRequest {
                topic: topic.into(),
                partition,
                offset: out.len() as u64,
                max_wait_ms: 100,
                ..Default::default()
            })
            .await
            .expect("fetch");
        for r in resp.records {
            assert_eq!(r.offset, out.len() as u64, "offsets are dense and in order");
            out.push(r);
        }
    }
    out
}

/// Creates `topic` and waits for its leaders.
pub async fn create(
    client: &BrokerClient,
    topic: &str,
    partitions: u32,
    replication_factor: u32,
    min_insync_replicas: u32,
) -> pb::TopicDescription {
    client
        .create_topic(
            topic,
            pb::TopicConfig {
                partitions,
                replication_factor,
                min_insync_replicas,
                ..Default::default()
            },
        )
        .await
        .expect("create topic");
    wait_leaders(client, topic).await
}
