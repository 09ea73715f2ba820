//! The broker over three real `flotilla-node` processes: topic
//! administration in the KV, produce / fetch / list offsets at the
//! partition leaders, replication with acks=all, and the errors a client
//! acts on. Every wait is bounded; nothing asserts on durations.

#![cfg(unix)]

#[path = "common/broker.rs"]
mod broker;
mod common;
#[path = "common/processes.rs"]
mod processes;

use broker::{records, start_cluster, wait_leaders};
use flotilla_client::broker::{BrokerClient, BrokerClientError};
use flotilla_proto::broker as pb;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn topics_produce_fetch_and_errors() {
    let cluster = start_cluster("broker_basic::topics_produce_fetch_and_errors").await;
    let client = BrokerClient::new(&cluster.endpoints()).expect("client");

    // rf above the live brokers is a clear error.
    let err = client
        .create_topic(
            "too-wide",
            pb::TopicConfig {
                partitions: 1,
                replication_factor: 4,
                ..Default::default()
            },
        )
        .await
        .expect_err("rf 4 on 3 brokers");
    assert!(
        err.to_string().contains("above the 3 live broker(s)"),
        "{err}"
    );
    let err = client
        .create_topic(
            "bad/name",
            pb::TopicConfig {
                partitions: 1,
                ..Default::default()
            },
        )
        .await
        .expect_err("bad name");
    assert!(err.to_string().contains("topic name"), "{err}");

    let t = client
        .create_topic(
            "orders",
            pb::TopicConfig {
                partitions: 3,
                replication_factor: 3,
                min_insync_replicas: 2,
                ..Default::default()
            },
        )
        .await
        .expect("create");
    assert_eq!(t.partitions.len(), 3);
    let leaders: Vec<u64> = t.partitions.iter().map(|p| p.replicas[0]).collect();
    let mut distinct = leaders.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(distinct.len(), 3, "preferred leaders spread: {leaders:?}");
    let err = client
        .create_topic(
            "orders",
            pb::TopicConfig {
                partitions: 1,
                ..Default::default()
            },
        )
        .await
        .expect_err("exists");
    assert!(
        matches!(&err, BrokerClientError::Status(s) if s.code() == tonic::Code::AlreadyExists),
        "{err}"
    );

    let described = wait_leaders(&client, "orders").await;
    for p in &described.partitions {
        assert_eq!(
            p.leader, p.replicas[0],
            "the preferred replica leads a new partition"
        );
        assert!(p.leader_epoch > 0);
    }

    // acks=all produce, then fetch back from each partition.
    for p in 0..3u32 {
        let resp = client
            .produce(pb::ProduceRequest {
                topic: "orders".into(),
                partition: p,
                records: records(p, 0, 50),
                acks: pb::Acks::All as i32,
                ..Default::default()
            })
            .await
            .expect("produce");
        assert_eq!(resp.base_offset, 0);
        assert!(resp.high_watermark >= 50);
    }
    for p in 0..3u32 {
        let resp = client
            .fetch(pb::FetchRequest {
                topic: "orders".into(),
                partition: p,
                offset: 10,
                max_wait_ms: 100,
                ..Default::default()
            })
            .await
            .expect("fetch");
        assert_eq!(resp.records.len(), 40);
        for (i, r) in resp.records.iter().enumerate() {
            assert_eq!(r.offset, 10 + i as u64);
            assert_eq!(&r.value[..], format!("p{p}-{}", 10 + i).as_bytes());
        }
        assert_eq!(resp.high_watermark, 50);
        let latest = client
            .list_offset("orders", p, pb::OffsetSpec::Latest, 0)
            .await
            .expect("latest");
        let earliest = client
            .list_offset("orders", p, pb::OffsetSpec::Earliest, 0)
            .await
            .expect("earliest");
        assert_eq!((earliest, latest), (0, 50));
    }

    // Idempotent retry: the same producer id and sequence is written once.
    let batch = pb::ProduceRequest {
        topic: "orders".into(),
        partition: 0,
        records: records(0, 50, 5),
        acks: pb::Acks::All as i32,
        producer_id: 77,
        base_sequence: 0,
        ..Default::default()
    };
    let first = client.produce(batch.clone()).await.expect("first");
    let again = client.produce(batch.clone()).await.expect("retry");
    assert!(again.duplicate);
    assert_eq!(first.base_offset, again.base_offset);
    let gap = client
        .produce(pb::ProduceRequest {
            base_sequence: 9,
            ..batch.clone()
        })
        .await
        .expect_err("a sequence gap");
    assert_eq!(gap.code(), Some(pb::ErrorCode::OutOfOrderSequence), "{gap}");
    assert_eq!(
        client
            .list_offset("orders", 0, pb::OffsetSpec::Latest, 0)
            .await
            .unwrap(),
        55
    );

    // Fetch past the end is OffsetOutOfRange; a long poll at the end waits
    // and returns nothing.
    let err = client
        .fetch(pb::FetchRequest {
            topic: "orders".into(),
            partition: 1,
            offset: 51,
            ..Default::default()
        })
        .await
        .expect_err("out of range");
    assert_eq!(err.code(), Some(pb::ErrorCode::OffsetOutOfRange), "{err}");
    let empty = client
        .fetch(pb::FetchRequest {
            topic: "orders".into(),
            partition: 1,
            offset: 50,
            max_wait_ms: 200,
            ..Default::default()
        })
        .await
        .expect("empty poll");
    assert!(empty.records.is_empty());

    // A produce above --broker-max-batch-bytes is refused whole.
    let big = vec![0u8; 1 << 20];
    let err = client
        .produce(pb::ProduceRequest {
            topic: "orders".into(),
            partition: 2,
            records: (0..5)
                .map(|_| pb::Record {
                    value: big.clone().into(),
                    ..Default::default()
                })
                .collect(),
            acks: pb::Acks::Leader as i32,
            ..Default::default()
        })
        .await
        .expect_err("too large");
    assert_eq!(err.code(), Some(pb::ErrorCode::MessageTooLarge), "{err}");
    assert_eq!(
        client
            .list_offset("orders", 2, pb::OffsetSpec::Latest, 0)
            .await
            .unwrap(),
        50
    );

    // A request to a broker that does not lead names the leader.
    let d = client.describe_topic("orders").await.expect("describe");
    let p0 = &d.partitions[0];
    let other = cluster
        .endpoints()
        .into_iter()
        .find(|e| !e.ends_with(&p0.leader_addr))
        .expect("a non-leader");
    let mut raw = pb::broker_client::BrokerClient::new(processes::channel(&other));
    let resp = raw
        .produce(pb::ProduceRequest {
            topic: "orders".into(),
            partition: 0,
            records: records(0, 0, 1),
            ..Default::default()
        })
        .await
        .expect("answer")
        .into_inner();
    let e = resp.error.expect("not leader");
    assert_eq!(e.code, pb::ErrorCode::NotLeader as i32);
    assert_eq!(e.leader_id, p0.leader);
    assert_eq!(e.leader_addr, p0.leader_addr);

    // Followers replicated everything (ISR is all three).
    assert_eq!(d.partitions.iter().map(|p| p.isr.len()).min(), Some(3));
    // Every broker followed those changes through its KV Watch on the
    // metadata, not only through the periodic re-read.
    for i in 0..3 {
        let mut events = None;
        for _ in 0..100 {
            events = cluster
                .metric(i, "flotilla_broker_metadata_watch_events_total")
                .await;
            if events.unwrap_or(0.0) >= 1.0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(
            events.unwrap_or(0.0) >= 1.0,
            "member {i} saw no metadata change through the watch: {events:?}"
        );
    }

    // Alter: add partitions; delete.
    let altered = client
        .alter_topic(pb::AlterTopicRequest {
            name: "orders".into(),
            partitions: Some(4),
            retention_ms: Some(60_000),
            ..Default::default()
        })
        .await
        .expect("alter");
    assert_eq!(altered.partitions.len(), 4);
    assert_eq!(altered.config.as_ref().unwrap().retention_ms, 60_000);
    let _ = wait_leaders(&client, "orders").await;
    let list = client.list_topics().await.expect("list");
    assert_eq!(
        list.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(),
        vec!["orders"]
    );
    client.delete_topic("orders").await.expect("delete");
    let err = client.describe_topic("orders").await.expect_err("gone");
    assert!(
        matches!(&err, BrokerClientError::Status(s) if s.code() == tonic::Code::NotFound),
        "{err}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(cluster);
}
