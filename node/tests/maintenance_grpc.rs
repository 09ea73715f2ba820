//! Auto-compaction and the Status figures over real gRPC on loopback with
//! three members (the harness is in `common`). Waits are bounded; nothing
//! asserts on durations.

mod common;

use common::*;
use flotilla_node::compaction::AutoCompaction;
use flotilla_proto::etcdserverpb::RangeRequest;
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
