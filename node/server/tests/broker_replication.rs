//! Replication over three real `flotilla-node` processes: the spec's
//! `leader_failover` (kill a partition leader under an acks=all load; a new
//! leader from the ISR; no acknowledged record lost) and `split_brain` (a
//! leader cut off from its followers writes records that never commit; a
//! new leader is elected; when the old one returns its divergent suffix is
//! truncated, no consumer ever saw it, its stale epoch is refused). Both
//! end with a history check: every acks=all record acknowledged is read
//! back once, at its offset, in partition order. Every wait is bounded;
//! nothing asserts on durations.

#![cfg(unix)]

#[path = "common/broker.rs"]
mod broker;
mod common;
#[path = "common/processes.rs"]
mod processes;

use broker::{
    BROKER_WAIT, create, member_at, read_all, records, start_cluster, start_cluster_with,
    wait_new_leader,
};
use flotilla_client::broker::BrokerClient;
use flotilla_proto::broker as pb;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// The history check: each acknowledged batch (base offset → values) is in
/// the final log at exactly its offsets; the log's offsets are dense.
fn check_history(acked: &BTreeMap<u64, Vec<String>>, log: &[pb::Record]) {
    for (i, r) in log.iter().enumerate() {
        assert_eq!(r.offset, i as u64, "dense, ordered offsets");
    }
    for (&base, values) in acked {
        for (i, v) in values.iter().enumerate() {
            let at = base as usize + i;
            let got = log
                .get(at)
                .map(|r| String::from_utf8_lossy(&r.value).into_owned());
            assert_eq!(
                got.as_deref(),
                Some(v.as_str()),
                "acknowledged record at offset {at} lost or changed"
            );
        }
    }
}

fn value_list(rs: &[pb::Record]) -> Vec<String> {
    rs.iter()
        .map(|r| String::from_utf8_lossy(&r.value).into_owned())
        .collect()
}

async fn wait_isr(client: &BrokerClient, topic: &str, size: usize) {
    let deadline = tokio::time::Instant::now() + BROKER_WAIT;
    loop {
        if let Ok(d) = client.describe_topic(topic).await
            && d.partitions[0].isr.len() == size
        {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "ISR of {topic} did not reach {size}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leader_failover() {
    let mut cluster = start_cluster("broker_replication::leader_failover").await;
    let client = Arc::new(BrokerClient::new(&cluster.endpoints()).expect("client"));
    create(&client, "f", 1, 3, 2).await;
    // The leader writes the ISR just after it takes the partition: describe
    // once all three are in it.
    wait_isr(&client, "f", 3).await;
    let d = client.describe_topic("f").await.expect("describe");
    let old = d.partitions[0].clone();
    let victim = member_at(&cluster, &old.leader_addr);

    // An acks=all load, in batches, until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (client, stop) = (client.clone(), stop.clone());
        tokio::spawn(async move {
            let mut acked: BTreeMap<u64, Vec<String>> = BTreeMap::new();
            let mut n = 0u64;
            let mut failures = 0u32;
            while !stop.load(Ordering::Relaxed) {
                let values: Vec<String> = (n..n + 20).map(|i| format!("v{i}")).collect();
                let req = pb::ProduceRequest {
                    topic: "f".into(),
                    partition: 0,
                    records: values
                        .iter()
                        .map(|v| pb::Record {
                            value: v.clone().into_bytes().into(),
                            ..Default::default()
                        })
                        .collect(),
                    acks: pb::Acks::All as i32,
                    producer_id: 9,
                    base_sequence: n,
                    ..Default::default()
                };
                match client.produce(req).await {
                    Ok(r) => {
                        acked.insert(r.base_offset, values);
                    }
                    // Outcome unknown or refused: not acknowledged.
                    Err(_) => failures += 1,
                }
                n += 20;
            }
            (acked, failures)
        })
    };
    tokio::time::sleep(Duration::from_millis(700)).await;
    cluster.kill(victim);
    let new = wait_new_leader(&client, "f", 0, &old.leader_addr).await;
    assert!(
        old.isr.contains(&new.leader),
        "the new leader {} comes from the ISR {:?}",
        new.leader,
        old.isr
    );
    assert!(new.leader_epoch > old.leader_epoch, "a new epoch");
    tokio::time::sleep(Duration::from_millis(700)).await;
    stop.store(true, Ordering::Relaxed);
    let (acked, failures) = load.await.expect("load");
    assert!(
        acked.len() > 2,
        "writes went on: {} batches acknowledged, {failures} failed",
        acked.len()
    );
    let last = *acked.keys().last().expect("acked");
    assert!(
        last > 0 && acked.keys().any(|&b| b >= last),
        "batches were acknowledged"
    );

    // The killed broker comes back as a follower and rejoins the ISR.
    cluster.restart(victim).await;
    wait_isr(&client, "f", 3).await;
    let log = read_all(&client, "f", 0).await;
    check_history(&acked, &log);
    drop(cluster);
}

/// The spec's idempotent retry across a failover: batches acknowledged by
/// the old leader and retried (same producer id and sequences) after it is
/// killed are answered as duplicates by the new leader, at their original
/// offsets, and written once; the producer then goes on where it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn idempotent_retry_after_failover() {
    let mut cluster = start_cluster("broker_replication::idempotent_retry_after_failover").await;
    let client = BrokerClient::new(&cluster.endpoints()).expect("client");
    create(&client, "idem", 1, 3, 2).await;
    wait_isr(&client, "idem", 3).await;
    let old = client
        .describe_topic("idem")
        .await
        .expect("describe")
        .partitions[0]
        .clone();
    let batch = |base_sequence: u64| pb::ProduceRequest {
        topic: "idem".into(),
        partition: 0,
        records: (base_sequence..base_sequence + 5)
            .map(|i| pb::Record {
                value: format!("s{i}").into_bytes().into(),
                ..Default::default()
            })
            .collect(),
        acks: pb::Acks::All as i32,
        producer_id: 77,
        base_sequence,
        producer_epoch: 3,
        ..Default::default()
    };
    let a = client.produce(batch(0)).await.expect("first batch");
    let b = client.produce(batch(5)).await.expect("second batch");
    assert!(!a.duplicate && !b.duplicate);

    cluster.kill(member_at(&cluster, &old.leader_addr));
    let new = wait_new_leader(&client, "idem", 0, &old.leader_addr).await;
    assert!(new.leader_epoch > old.leader_epoch, "a new epoch");

    // The retries: the producer never saw the answers, say.
    let rb = client
        .produce(batch(5))
        .await
        .expect("retry of the second batch");
    assert!(rb.duplicate, "the new leader wrote the second batch again");
    assert_eq!(rb.base_offset, b.base_offset);
    let ra = client
        .produce(batch(0))
        .await
        .expect("retry of the first batch");
    assert!(ra.duplicate, "the new leader wrote the first batch again");
    assert_eq!(ra.base_offset, a.base_offset);
    // An older producer epoch is fenced; a gap is refused.
    let stale = client
        .produce(pb::ProduceRequest {
            producer_epoch: 2,
            ..batch(10)
        })
        .await;
    assert!(
        stale.is_err(),
        "an older producer epoch is refused: {stale:?}"
    );
    let gap = client.produce(batch(20)).await;
    assert!(gap.is_err(), "a sequence gap is refused: {gap:?}");
    let c = client.produce(batch(10)).await.expect("the next batch");
    assert!(!c.duplicate);
    assert_eq!(c.base_offset, b.base_offset + 5);

    let log = read_all(&client, "idem", 0).await;
    let want: Vec<String> = (0..15).map(|i| format!("s{i}")).collect();
    assert_eq!(value_list(&log), want, "every record once, in order");
    drop(cluster);
}

/// The earliest offset of `topic`-0 once it is above 0.
async fn wait_log_start_moves(client: &BrokerClient, topic: &str) -> u64 {
    let deadline = tokio::time::Instant::now() + BROKER_WAIT;
    loop {
        if let Ok(start) = client
            .list_offset(topic, 0, pb::OffsetSpec::Earliest, 0)
            .await
            && start > 0
        {
            return start;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "retention never moved the log start of {topic}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Retention through AlterTopic, and a follower below its leader's log
/// start: with one follower down, ~3.5 MiB go into 1 MiB segments; retention
/// lowered by AlterTopic deletes the old segments on the open replicas (the
/// earliest offset moves, a consumer at offset 0 gets OffsetOutOfRange).
/// The follower comes back with an empty log below the leader's log start:
/// it resets its log to that start and rejoins the ISR.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retention_through_alter_topic() {
    let mut cluster = start_cluster_with(
        "broker_replication::retention_through_alter_topic",
        vec!["--retention-check-interval-ms".into(), "200".into()],
    )
    .await;
    let client = BrokerClient::new(&cluster.endpoints()).expect("client");
    client
        .create_topic(
            "ret",
            pb::TopicConfig {
                partitions: 1,
                replication_factor: 3,
                min_insync_replicas: 2,
                segment_bytes: 1 << 20,
                ..Default::default()
            },
        )
        .await
        .expect("create");
    wait_isr(&client, "ret", 3).await;
    let p = client
        .describe_topic("ret")
        .await
        .expect("describe")
        .partitions[0]
        .clone();
    // rf 3 over three brokers: every other member is a follower.
    let leader = member_at(&cluster, &p.leader_addr);
    let victim = (leader + 1) % 3;
    cluster.kill(victim);
    // Idle, and the dead follower was caught up: it leaves the ISR because
    // it stopped fetching.
    wait_isr(&client, "ret", 2).await;

    let value = "x".repeat(1024);
    for batch in 0..14u64 {
        let resp = client
            .produce(pb::ProduceRequest {
                topic: "ret".into(),
                partition: 0,
                records: (0..256)
                    .map(|i| pb::Record {
                        value: format!("{}-{value}", batch * 256 + i).into_bytes().into(),
                        ..Default::default()
                    })
                    .collect(),
                acks: pb::Acks::All as i32,
                ..Default::default()
            })
            .await
            .expect("produce");
        assert_eq!(resp.base_offset, batch * 256);
    }
    let earliest = client
        .list_offset("ret", 0, pb::OffsetSpec::Earliest, 0)
        .await
        .expect("earliest");
    assert_eq!(earliest, 0, "the default retention keeps everything");

    client
        .alter_topic(pb::AlterTopicRequest {
            name: "ret".into(),
            retention_ms: Some(1),
            ..Default::default()
        })
        .await
        .expect("alter retention");
    let start = wait_log_start_moves(&client, "ret").await;
    let old = client
        .fetch(pb::FetchRequest {
            topic: "ret".into(),
            partition: 0,
            offset: 0,
            ..Default::default()
        })
        .await;
    assert_eq!(
        old.as_ref().err().and_then(|e| e.code()),
        Some(pb::ErrorCode::OffsetOutOfRange),
        "a consumer at a deleted offset: {old:?}"
    );
    let first = client
        .fetch(pb::FetchRequest {
            topic: "ret".into(),
            partition: 0,
            offset: start,
            ..Default::default()
        })
        .await
        .expect("fetch at the log start");
    assert_eq!(first.records[0].offset, start);
    assert!(
        first.records[0]
            .value
            .starts_with(format!("{start}-").as_bytes())
    );

    // The follower returns below the leader's log start.
    cluster.restart(victim).await;
    wait_isr(&client, "ret", 3).await;
    drop(cluster);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn split_brain() {
    // A longer lease, so the cut-off leader surely still believes it leads
    // when B arrives (below).
    let mut cluster = start_cluster_with(
        "broker_replication::split_brain",
        vec!["--partition-lease-ttl-ms".into(), "4000".into()],
    )
    .await;
    let all = BrokerClient::new(&cluster.endpoints()).expect("client");
    let d = create(&all, "s", 1, 3, 2).await;
    let old = d.partitions[0].clone();
    let l = member_at(&cluster, &old.leader_addr);
    let followers: Vec<usize> = (0..3).filter(|&i| i != l).collect();
    let mut acked: BTreeMap<u64, Vec<String>> = BTreeMap::new();

    // A: committed everywhere.
    let a = records(0, 0, 10);
    let r = all
        .produce(pb::ProduceRequest {
            topic: "s".into(),
            partition: 0,
            records: a.clone(),
            ..Default::default()
        })
        .await
        .expect("A");
    acked.insert(r.base_offset, value_list(&a));
    wait_isr(&all, "s", 3).await;

    // Cut the leader off: its followers stop. It still believes it leads
    // (its lease window has not run out) and takes acks=leader writes B,
    // which no follower gets.
    // (Killed, not paused: a paused follower's replication long-poll could
    // still be answered with B into its socket buffer.)
    for &f in &followers {
        cluster.kill(f);
    }
    let mut at_old =
        pb::broker_client::BrokerClient::new(processes::channel(&cluster.endpoints()[l]));
    let b = records(9, 100, 5);
    let rb = at_old
        .produce(pb::ProduceRequest {
            topic: "s".into(),
            partition: 0,
            records: b.clone(),
            acks: pb::Acks::Leader as i32,
            ..Default::default()
        })
        .await
        .expect("answer")
        .into_inner();
    assert!(
        rb.error.is_none(),
        "the old leader accepts B within its lease window: {:?}",
        rb.error
    );
    assert_eq!(rb.base_offset, 10);
    // No consumer can see B: the high watermark stays below it.
    let seen = at_old
        .fetch(pb::FetchRequest {
            topic: "s".into(),
            partition: 0,
            offset: 10,
            max_wait_ms: 0,
            ..Default::default()
        })
        .await
        .expect("answer")
        .into_inner();
    assert!(
        seen.records.is_empty(),
        "a consumer read uncommitted records: {:?}",
        seen.records
    );
    assert_eq!((seen.high_watermark, seen.log_end_offset), (10, 15));

    // The old leader stops (as if partitioned away); the others return and
    // elect a new leader.
    cluster.pause(l);
    for &f in &followers {
        cluster.restart(f).await;
    }
    let live: Vec<String> = followers
        .iter()
        .map(|&f| cluster.endpoints()[f].clone())
        .collect();
    let client = BrokerClient::new(&live).expect("client");
    let new = wait_new_leader(&client, "s", 0, &old.leader_addr).await;
    assert!(new.leader_epoch > old.leader_epoch);
    let c = records(1, 200, 10);
    let rc = client
        .produce(pb::ProduceRequest {
            topic: "s".into(),
            partition: 0,
            records: c.clone(),
            ..Default::default()
        })
        .await
        .expect("C at the new leader");
    assert_eq!(
        rc.base_offset,
        10,
        "the new leader never had B; logs:\n{}\n---\n{}\n---\n{}",
        cluster.log(0),
        cluster.log(1),
        cluster.log(2)
    );
    acked.insert(rc.base_offset, value_list(&c));

    // The old leader returns: its writes are refused, its stale epoch is
    // refused by the new leader, and it truncates B.
    cluster.resume(l);
    let refused = at_old
        .produce(pb::ProduceRequest {
            topic: "s".into(),
            partition: 0,
            records: records(9, 300, 1),
            acks: pb::Acks::Leader as i32,
            ..Default::default()
        })
        .await
        .expect("answer")
        .into_inner();
    let code = refused
        .error
        .expect("the deposed leader refuses writes")
        .code;
    assert!(
        code == pb::ErrorCode::LeaseExpiring as i32 || code == pb::ErrorCode::NotLeader as i32,
        "unexpected error code {code}"
    );
    let mut at_new = pb::broker_client::BrokerClient::new(processes::channel(&format!(
        "http://{}",
        new.leader_addr
    )));
    let stale = at_new
        .fetch(pb::FetchRequest {
            topic: "s".into(),
            partition: 0,
            offset: 0,
            replica_id: old.leader,
            leader_epoch: old.leader_epoch,
            ..Default::default()
        })
        .await
        .expect("answer")
        .into_inner();
    assert_eq!(
        stale.error.expect("fenced").code,
        pb::ErrorCode::FencedLeaderEpoch as i32
    );

    wait_isr(&client, "s", 3).await;
    let mut truncations = None;
    for _ in 0..100 {
        truncations = cluster.metric(l, "flotilla_broker_truncations_total").await;
        if truncations.unwrap_or(0.0) >= 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        truncations,
        Some(1.0),
        "the old leader truncated its divergent suffix once"
    );
    assert!(cluster.log(l).contains("truncated a divergent log suffix"));
    let log = read_all(&client, "s", 0).await;
    assert_eq!(log.len(), 20);
    check_history(&acked, &log);
    let values = value_list(&log);
    for v in value_list(&b) {
        assert!(!values.contains(&v), "the divergent record {v} survived");
    }
    drop(cluster);
}
