//! The operator's broker calls (`flotilla_operator::admin::GrpcAdmin` as
//! [`BrokerAdmin`]) against three real `flotilla-node` processes: what the
//! Topic reconciler sends is what the broker takes, and what the broker
//! describes is what the reconciler compares (brokers by member name,
//! retention kept for ever as -1, the fsync policy's spelling).

#![cfg(unix)]

#[path = "common/broker.rs"]
mod broker;
mod common;
#[path = "common/processes.rs"]
mod processes;

use broker::start_cluster;
use flotilla_operator::admin::broker::{BrokerAdmin, FsyncPolicy, NewTopic, TopicSettings};
use flotilla_operator::admin::{AdminError, GrpcAdmin};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_operators_topic_calls_against_real_brokers() {
    let cluster =
        start_cluster("broker_operator::the_operators_topic_calls_against_real_brokers").await;
    let endpoints = cluster.endpoints();
    let mut names: Vec<String> = cluster.members.iter().map(|m| m.name.clone()).collect();
    names.sort();
    let admin = GrpcAdmin::new(Duration::from_secs(2), Duration::from_secs(10));

    assert_eq!(
        admin
            .describe_topic(&endpoints, "orders")
            .await
            .expect("describe"),
        None,
        "an absent topic is None, not an error"
    );
    let settings = TopicSettings {
        retention_ms: Some(-1),
        segment_bytes: Some(1 << 20),
        min_insync_replicas: Some(2),
        fsync: Some(FsyncPolicy::EveryRecords(50)),
        ..TopicSettings::default()
    };
    admin
        .create_topic(
            &endpoints,
            &NewTopic {
                name: "orders".to_string(),
                partitions: 2,
                replication_factor: Some(3),
                settings,
            },
        )
        .await
        .expect("create");
    let again = admin
        .create_topic(
            &endpoints,
            &NewTopic {
                name: "orders".to_string(),
                partitions: 2,
                replication_factor: Some(3),
                settings,
            },
        )
        .await
        .expect_err("the name is taken");
    assert!(matches!(again, AdminError::Refused { .. }), "{again:?}");

    let info = admin
        .describe_topic(&endpoints, "orders")
        .await
        .expect("describe")
        .expect("the topic");
    assert_eq!(info.replication_factor, 3);
    assert_eq!(info.partitions.len(), 2);
    for p in &info.partitions {
        let mut replicas = p.replicas.clone();
        replicas.sort();
        assert_eq!(replicas, names, "replicas by member name: {p:?}");
        assert!(p.isr.iter().all(|r| names.contains(r)), "{p:?}");
    }
    // What the spec asked is what the broker reports: no change to make.
    assert!(
        settings.changes_from(&info.settings).is_empty(),
        "{:?} vs {:?}",
        settings,
        info.settings
    );

    admin
        .add_partitions(&endpoints, "orders", 4)
        .await
        .expect("grow");
    let shrink = admin
        .add_partitions(&endpoints, "orders", 1)
        .await
        .expect_err("partitions only grow");
    assert!(matches!(shrink, AdminError::Refused { .. }), "{shrink:?}");
    let change = TopicSettings {
        retention_ms: Some(3_600_000),
        fsync: Some(FsyncPolicy::Always),
        ..TopicSettings::default()
    };
    admin
        .alter_topic(&endpoints, "orders", &change)
        .await
        .expect("alter");
    let info = admin
        .describe_topic(&endpoints, "orders")
        .await
        .expect("describe")
        .expect("the topic");
    assert_eq!(info.partitions.len(), 4);
    assert!(change.changes_from(&info.settings).is_empty(), "{info:?}");
    assert_eq!(info.settings.segment_bytes, Some(1 << 20), "kept");

    let wide = admin
        .create_topic(
            &endpoints,
            &NewTopic {
                name: "wide".to_string(),
                partitions: 1,
                replication_factor: Some(5),
                settings: TopicSettings::default(),
            },
        )
        .await
        .expect_err("rf above the brokers");
    assert!(matches!(wide, AdminError::Refused { .. }), "{wide:?}");

    admin
        .delete_topic(&endpoints, "orders")
        .await
        .expect("delete");
    admin
        .delete_topic(&endpoints, "orders")
        .await
        .expect("deleting a missing topic is no error");
    assert_eq!(
        admin
            .describe_topic(&endpoints, "orders")
            .await
            .expect("describe"),
        None
    );

    let nobody = vec!["http://127.0.0.1:1".to_string()];
    let err = admin
        .describe_topic(&nobody, "orders")
        .await
        .expect_err("nobody answers");
    assert!(matches!(err, AdminError::Unreachable { .. }), "{err:?}");
}
