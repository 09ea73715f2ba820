//! Auto-compaction and the Status figures over real gRPC on loopback with
//! three members (the harness is in `common`). Waits are bounded; nothing
//! asserts on durations.

mod common;

use common::*;
use flotilla_node::compaction::AutoCompaction;
use flotilla_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use flotilla_proto::etcdserverpb::{
    CompactionRequest, RangeRequest, StatusRequest, StatusResponse,
};
use std::time::Duration;

/// A Range of `key` at `revision`.
fn at(key: &str, revision: i64) -> RangeRequest {
    RangeRequest {
        revision,
        ..get_req(key)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn revision_auto_compaction_keeps_the_last_revisions() {
    const KEPT: i64 = 3;
    let c = Cluster::start_configured(|config| {
        config.auto_compaction = AutoCompaction::Revision {
            revisions: KEPT,
            check_interval: Duration::from_millis(50),
        }
    })
    .await;
    let f = c.follower();
    let mut kv = c.kv(f).await;
    let mut revisions = Vec::new();
    for i in 0..10 {
        let put = kv
            .put(put_req("k", &format!("v{i}")))
            .await
            .expect("put")
            .into_inner();
        revisions.push(put.header.expect("header").revision);
    }
    let (first, last) = (revisions[0], *revisions.last().expect("ten"));

    // The first revision goes once the leader has proposed a compaction:
    // reading it then fails as it does on etcd, on any member.
    let status = eventually("the first revision to be compacted", || {
        let mut kv = kv.clone();
        async move { kv.range(at("k", first)).await.err() }
    })
    .await;
    assert_eq!(status.code(), tonic::Code::OutOfRange);
    assert_eq!(
        status.message(),
        "etcdserver: mvcc: required revision has been compacted"
    );

    // With the writes over, every member ends compacted at the last
    // revision less those kept, through the log.
    for node in &c.nodes {
        eventually("every member compacted to the last revisions", || async {
            let compacted = node
                .raft()
                .read_local(|sm| sm.kv().compact_revision())
                .await
                .expect("read");
            (compacted == last - KEPT).then_some(())
        })
        .await;
    }
    let kept = kv
        .range(at("k", last - KEPT))
        .await
        .expect("the last revisions are kept")
        .into_inner();
    assert_eq!(kept.kvs[0].value, format!("v{}", 9 - KEPT).into_bytes());
    let gone = kv
        .range(at("k", last - KEPT - 1))
        .await
        .expect_err("older revisions are compacted");
    assert_eq!(gone.code(), tonic::Code::OutOfRange);
    c.shutdown().await;
}

async fn status(c: &Cluster, i: usize) -> StatusResponse {
    MaintenanceClient::new(c.channel(i).await)
        .status(StatusRequest {})
        .await
        .expect("status")
        .into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn status_sizes_follow_the_data() {
    let c = Cluster::start().await;
    let (leader, f) = (c.leader(), c.follower());
    let before = status(&c, f).await;
    assert!(before.errors.is_empty(), "{:?}", before.errors);
    assert!(
        before.db_size > 0,
        "the data directory holds the log: {before:?}"
    );

    let value = "v".repeat(1024);
    let mut kv = c.kv(leader).await;
    let mut last = 0;
    // More than the 1 MiB of zeros the log segment is filled with ahead of
    // its end: `db_size` counts the files' allocated bytes (as etcd counts
    // its database file's), so it grows once the writes pass that fill.
    for i in 0..1100 {
        let put = kv
            .put(put_req(&format!("key-{}", i % 10), &value))
            .await
            .expect("put")
            .into_inner();
        last = put.header.expect("header").revision;
    }
    // 1.1 MiB more in the log and in the history, on every member.
    let after = eventually("the follower to apply the writes", || async {
        let s = status(&c, f).await;
        (s.header.as_ref().expect("header").revision == last).then_some(s)
    })
    .await;
    assert!(
        after.db_size >= before.db_size + 100 * 1024,
        "{} -> {}",
        before.db_size,
        after.db_size
    );
    assert!(
        after.db_size_in_use >= before.db_size_in_use + 100 * 1024,
        "{} -> {}",
        before.db_size_in_use,
        after.db_size_in_use
    );

    // A compaction drops the superseded versions: the history shrinks to
    // about the ten live values.
    kv.compact(CompactionRequest {
        revision: last,
        physical: false,
    })
    .await
    .expect("compact");
    let compacted = eventually("the follower to apply the compaction", || async {
        let s = status(&c, f).await;
        (s.db_size_in_use < after.db_size_in_use).then_some(s)
    })
    .await;
    assert!(
        compacted.db_size_in_use < 20 * 1024,
        "ten 1 KiB values left: {}",
        compacted.db_size_in_use
    );
    c.shutdown().await;
}
