//! Consumer groups over three real `flotilla-node` processes: the spec's
//! `consumer_offset` and `at_least_once`, and rebalancing on join, leave and
//! expiry with old generations fenced. Every wait is bounded; nothing
//! asserts on durations.

#![cfg(unix)]

#[path = "common/broker.rs"]
mod broker;
mod common;
#[path = "common/processes.rs"]
mod processes;

use broker::{create, records, start_cluster};
use flotilla_client::broker::{BrokerClient, ConsumedRecord, Consumer, ConsumerConfig, StartFrom};
use flotilla_proto::broker as pb;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

const PARTITIONS: u32 = 3;
const PER_PARTITION: u64 = 100;

async fn fill(client: &BrokerClient, topic: &str) {
    create(client, topic, PARTITIONS, 3, 2).await;
    for p in 0..PARTITIONS {
        client
            .produce(pb::ProduceRequest {
                topic: topic.into(),
                partition: p,
                records: records(p, 0, PER_PARTITION),
                acks: pb::Acks::All as i32,
                ..Default::default()
            })
            .await
            .expect("produce");
    }
}

fn config(group: &str) -> ConsumerConfig {
    ConsumerConfig {
        group: Some(group.into()),
        client_id: "test".into(),
        session_timeout: Duration::from_secs(2),
        heartbeat_interval: Duration::from_millis(300),
        auto_commit: false,
        start_from: StartFrom::Earliest,
        ..ConsumerConfig::default()
    }
}

/// Polls until `n` records came (bounded).
async fn take(consumer: &mut Consumer, n: usize) -> Vec<ConsumedRecord> {
    let mut out = Vec::new();
    for _ in 0..500 {
        if out.len() >= n {
            break;
        }
        out.extend(
            consumer
                .poll(Duration::from_millis(100))
                .await
                .expect("poll"),
        );
    }
    assert!(out.len() >= n, "only {} of {n} records", out.len());
    out
}

fn key(r: &ConsumedRecord) -> (u32, u64) {
    (r.partition, r.offset)
}

/// The spec's `consumer_offset`: consume 100, commit, restart the consumer;
/// it resumes at the commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn consumer_offset() {
    let cluster = start_cluster("broker_groups::consumer_offset").await;
    let client = Arc::new(BrokerClient::new(&cluster.endpoints()).expect("client"));
    fill(&client, "events").await;

    let mut c = Consumer::new(client.clone(), vec!["events".into()], config("g1"))
        .await
        .expect("join");
    let got = take(&mut c, 100).await;
    // Commit exactly the first 100 processed (per partition, the next
    // offset after the last one taken).
    let mut done: BTreeMap<(String, u32), u64> = BTreeMap::new();
    for r in got.iter().take(100) {
        done.insert((r.topic.clone(), r.partition), r.offset + 1);
    }
    c.commit_offsets(&done).await.expect("commit");
    c.leave().await.expect("leave");

    let committed = client.describe_group("g1").await.expect("describe").offsets;
    for o in &committed {
        assert_eq!(done[&(o.topic.clone(), o.partition)], o.offset as u64);
    }

    let mut again = Consumer::new(client.clone(), vec!["events".into()], config("g1"))
        .await
        .expect("rejoin");
    let expected: BTreeMap<(String, u32), u64> = (0..PARTITIONS)
        .map(|p| {
            let tp = ("events".to_string(), p);
            let at = done.get(&tp).copied().unwrap_or(0);
            (tp, at)
        })
        .collect();
    assert_eq!(
        again.positions(),
        &expected,
        "the restarted consumer resumes at the commit"
    );
    let rest = take(
        &mut again,
        (PARTITIONS as u64 * PER_PARTITION) as usize - 100,
    )
    .await;
    let first: BTreeSet<(u32, u64)> = got.iter().take(100).map(key).collect();
    let second: BTreeSet<(u32, u64)> = rest.iter().map(key).collect();
    assert!(
        first.is_disjoint(&second),
        "nothing committed is read again"
    );
    assert_eq!(
        first.len() + second.len(),
        (PARTITIONS as u64 * PER_PARTITION) as usize
    );
    drop(cluster);
}

/// The spec's `at_least_once`: a consumer that crashes after reading and
/// before committing; its records are delivered again to the group.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn at_least_once() {
    let cluster = start_cluster("broker_groups::at_least_once").await;
    let client = Arc::new(BrokerClient::new(&cluster.endpoints()).expect("client"));
    fill(&client, "jobs").await;

    let mut c = Consumer::new(client.clone(), vec!["jobs".into()], config("workers"))
        .await
        .expect("join");
    let first = take(&mut c, 120).await;
    let mut done: BTreeMap<(String, u32), u64> = BTreeMap::new();
    for r in first.iter().take(60) {
        done.insert((r.topic.clone(), r.partition), r.offset + 1);
    }
    c.commit_offsets(&done).await.expect("commit the first 60");
    // Crash: no commit of the rest, no leave; the membership expires.
    drop(c);

    let mut next = Consumer::new(client.clone(), vec!["jobs".into()], config("workers"))
        .await
        .expect("join");
    // The crashed member is gone after its session timeout; the survivor
    // then owns every partition.
    let mut seen: BTreeSet<(u32, u64)> = BTreeSet::new();
    for _ in 0..100 {
        if next.positions().len() == PARTITIONS as usize {
            break;
        }
        seen.extend(
            next.poll(Duration::from_millis(100))
                .await
                .expect("poll")
                .iter()
                .map(key),
        );
    }
    assert_eq!(
        next.positions().len(),
        PARTITIONS as usize,
        "the survivor owns every partition"
    );
    for _ in 0..100 {
        if seen.len() as u64 >= PARTITIONS as u64 * PER_PARTITION - 60 {
            break;
        }
        seen.extend(
            next.poll(Duration::from_millis(100))
                .await
                .expect("poll")
                .iter()
                .map(key),
        );
    }
    let committed: BTreeSet<(u32, u64)> = first.iter().take(60).map(key).collect();
    let uncommitted: BTreeSet<(u32, u64)> = first.iter().skip(60).map(key).collect();
    assert!(
        uncommitted.is_subset(&seen),
        "records read but not committed are delivered again"
    );
    assert!(committed.is_disjoint(&seen), "committed records are not");
    drop(cluster);
}

/// Join, leave and expiry start new generations; the assignment covers
/// every partition once; an old generation cannot commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rebalance_and_fencing() {
    // Rebalance on join, leave and expiry; an old generation cannot commit.
    let cluster = start_cluster("broker_groups::rebalance_and_fencing").await;
    let client = Arc::new(BrokerClient::new(&cluster.endpoints()).expect("client"));
    create(&client, "r", 4, 1, 1).await;
    let mut a = Consumer::new(client.clone(), vec!["r".into()], config("rg"))
        .await
        .expect("a");
    let gen_a = a.generation();
    assert_eq!(a.positions().len(), 4);
    let b = Consumer::new(client.clone(), vec!["r".into()], config("rg"))
        .await
        .expect("b");
    assert!(b.generation() > gen_a);
    // a learns of the new generation at its next heartbeat.
    for _ in 0..50 {
        let _ = a.poll(Duration::from_millis(100)).await.expect("poll a");
        if a.generation() == b.generation() {
            break;
        }
    }
    assert_eq!(a.generation(), b.generation());
    let pa: BTreeSet<_> = a.positions().keys().cloned().collect();
    let pb_: BTreeSet<_> = b.positions().keys().cloned().collect();
    assert!(pa.is_disjoint(&pb_));
    assert_eq!(pa.len() + pb_.len(), 4);
    assert_eq!((pa.len(), pb_.len()), (2, 2));

    // A commit from the old generation is refused.
    let resp = client
        .groups()
        .commit_offsets(pb::CommitOffsetsRequest {
            group: "rg".into(),
            member_id: a.member_id().to_string(),
            generation: gen_a,
            offsets: vec![pb::OffsetCommit {
                topic: "r".into(),
                partition: 0,
                offset: 1,
                metadata: String::new(),
            }],
        })
        .await
        .expect("answer")
        .into_inner();
    assert_eq!(
        resp.error.expect("fenced").code,
        pb::ErrorCode::IllegalGeneration as i32
    );

    // b leaves: a gets everything.
    b.leave().await.expect("leave");
    for _ in 0..50 {
        let _ = a.poll(Duration::from_millis(100)).await.expect("poll a");
        if a.positions().len() == 4 {
            break;
        }
    }
    assert_eq!(a.positions().len(), 4);
    let d = client.describe_group("rg").await.expect("describe");
    assert_eq!(d.members.len(), 1);

    // c joins, then dies without leaving (no more heartbeats): its lease
    // expires after the session timeout, a new generation gives a
    // everything again.
    let c = Consumer::new(client.clone(), vec!["r".into()], config("rg"))
        .await
        .expect("c");
    let gen_c = c.generation();
    for _ in 0..50 {
        let _ = a.poll(Duration::from_millis(100)).await.expect("poll a");
        if a.generation() == gen_c {
            break;
        }
    }
    assert_eq!(a.positions().len(), 2, "a shares with c");
    drop(c);
    for _ in 0..100 {
        let _ = a.poll(Duration::from_millis(100)).await.expect("poll a");
        if a.generation() > gen_c && a.positions().len() == 4 {
            break;
        }
    }
    assert!(
        a.generation() > gen_c,
        "c's expiry started a new generation"
    );
    assert_eq!(a.positions().len(), 4, "a has every partition again");
    let d = client.describe_group("rg").await.expect("describe");
    assert_eq!(d.members.len(), 1, "the expired member is gone");
    drop(cluster);
}
