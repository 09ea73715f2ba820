//! Exactly-once sessions with several writes of one client in flight: one
//! `flotilla_client::Client` shared by many tasks, and raw requests with
//! explicit ids that arrive out of order and are retried.

mod common;

use common::{Cluster, get_req, put_req};
use flotilla_client::{Client, ClientConfig};
use flotilla_node::transport::{FEATURES, WINDOWED_SESSIONS};
use flotilla_proto::etcdserverpb::RangeRequest;
use flotilla_proto::etcdserverpb::kv_client::KvClient;
use std::sync::Arc;
use tonic::Code;
use tonic::transport::Channel;

const TASKS: usize = 8;
const PUTS: usize = 200;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_client_shared_by_many_tasks() {
    let c = Cluster::start().await;
    marks_let_in(&c).await;
    // Through a follower, so the writes are forwarded too, and through the
    // leader: two clients, each shared by its own tasks.
    let mut all = Vec::new();
    for member in [c.follower(), c.leader()] {
        let client = Arc::new(Client::new(&[c.url(member)], ClientConfig::default()).unwrap());
        for t in 0..TASKS {
            let client = client.clone();
            all.push(tokio::spawn(async move {
                let mut failed = Vec::new();
                for i in 0..PUTS {
                    let key = format!("s/{member}/{t}/{i:03}");
                    if let Err(e) = client.put(key.as_bytes(), b"v").await {
                        failed.push(format!("{key}: {e}"));
                    }
                }
                failed
            }));
        }
    }
    let mut failed = Vec::new();
    for task in all {
        failed.extend(task.await.expect("task"));
    }
    assert!(
        failed.is_empty(),
        "{} of {} writes failed, first: {:?}",
        failed.len(),
        2 * TASKS * PUTS,
        failed.first()
    );
    let mut kv = c.kv(c.leader()).await;
    let all = kv
        .range(RangeRequest {
            key: b"s/".to_vec(),
            range_end: b"s0".to_vec(),
            ..RangeRequest::default()
        })
        .await
        .expect("range")
        .into_inner();
    assert_eq!(all.kvs.len(), 2 * TASKS * PUTS, "every key written");
    let twice: Vec<_> = all.kvs.iter().filter(|kv| kv.version != 1).collect();
    assert!(twice.is_empty(), "written more than once: {twice:?}");
    c.shutdown().await;
}

/// A put of `key` as write `seq` of client 77, sent while `mark` was its
/// lowest unanswered write (None: without the mark).
async fn put(
    kv: &mut KvClient<Channel>,
    key: &str,
    seq: u64,
    mark: Option<u64>,
) -> Result<i64, tonic::Status> {
    let mut r = tonic::Request::new(put_req(key, "v"));
    let md = r.metadata_mut();
    md.insert("flotilla-client-id", 77u64.into());
    md.insert("flotilla-seq", seq.into());
    if let Some(mark) = mark {
        md.insert("flotilla-first-unanswered", mark.into());
    }
    let reply = kv.put(r).await?.into_inner();
    Ok(reply.header.expect("header").revision)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_out_of_order_and_retried_apply_once() {
    let c = Cluster::start().await;
    marks_let_in(&c).await;
    let mut leader = c.kv(c.leader()).await;
    let mut follower = c.kv(c.follower()).await;
    // 3, 1, 2 arrive in that order, half of them forwarded; none answered
    // yet when each was sent, so the mark stays 1.
    let three = put(&mut leader, "o/3", 3, Some(1))
        .await
        .expect("3 applies");
    let one = put(&mut follower, "o/1", 1, Some(1))
        .await
        .expect("1 applies");
    let two = put(&mut leader, "o/2", 2, Some(1))
        .await
        .expect("2 applies");
    assert!(three < one && one < two);
    // Retries, through the other member: the first answers, no new writes.
    for (key, seq, revision) in [("o/2", 2, two), ("o/3", 3, three), ("o/1", 1, one)] {
        let again = put(&mut follower, key, seq, Some(1)).await;
        assert_eq!(again.expect("retry"), revision, "seq {seq}: first answer");
    }
    // The client has seen 1-3: 4 carries mark 4, and 1-3 are then stale
    // (a late copy of an earlier attempt of 2, sent with mark 1).
    let four = put(&mut follower, "o/4", 4, Some(4)).await.expect("4");
    let stale = put(&mut leader, "o/2", 2, Some(1)).await.unwrap_err();
    assert_eq!(stale.code(), Code::FailedPrecondition, "{stale:?}");
    assert_eq!(put(&mut leader, "o/4", 4, Some(4)).await.unwrap(), four);
    // A mark above the write's own seq is malformed.
    let bad = put(&mut leader, "o/5", 5, Some(6)).await.unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    // Without the mark the original rule holds: below the last, stale.
    let old = put(&mut leader, "o/x", 3, None).await.unwrap_err();
    assert_eq!(old.code(), Code::FailedPrecondition);
    for key in ["o/1", "o/2", "o/3", "o/4"] {
        let r = leader
            .range(get_req(key))
            .await
            .expect("range")
            .into_inner();
        assert_eq!(r.kvs[0].version, 1, "{key} written once");
    }
    assert!(
        common::value_of(&mut leader, get_req("o/5"))
            .await
            .is_none()
    );
    assert!(
        common::value_of(&mut leader, get_req("o/x"))
            .await
            .is_none()
    );
    c.shutdown().await;
}

/// Waits until the leader's gate lets marks into the log.
async fn marks_let_in(c: &Cluster) {
    common::eventually("the leader heard every member advertise marks", || async {
        let leader = c.try_leader()?;
        c.nodes[leader]
            .features()
            .open(WINDOWED_SESSIONS)
            .then_some(())
    })
    .await;
}

/// Every key on member `i`, read there (serializable), with the revision
/// it was read at.
async fn store_of(c: &Cluster, i: usize) -> (i64, Vec<(Vec<u8>, Vec<u8>, i64, i64)>) {
    let r = c
        .kv(i)
        .await
        .range(RangeRequest {
            key: vec![0],
            range_end: vec![0],
            serializable: true,
            ..RangeRequest::default()
        })
        .await
        .expect("range")
        .into_inner();
    let kvs = r
        .kvs
        .into_iter()
        .map(|kv| (kv.key, kv.value, kv.mod_revision, kv.version))
        .collect();
    (r.header.expect("header").revision, kvs)
}

/// Client 77 writes 3 through the leader, then 1 and 2 through a follower
/// and the leader, all sent with mark 1; the answers to 1 and 2, once
/// every member holds the same store, which is returned.
async fn three_then_one_and_two(
    c: &Cluster,
) -> (
    Result<i64, tonic::Status>,
    Result<i64, tonic::Status>,
    Vec<(Vec<u8>, Vec<u8>, i64, i64)>,
) {
    let mut leader = c.kv(c.leader()).await;
    let mut follower = c.kv(c.follower()).await;
    put(&mut leader, "g/3", 3, Some(1))
        .await
        .expect("3 applies");
    let one = put(&mut follower, "g/1", 1, Some(1)).await;
    let two = put(&mut leader, "g/2", 2, Some(1)).await;
    let store = common::eventually("every member holds the same store", || async {
        let first = store_of(c, 0).await;
        for i in 1..c.nodes.len() {
            if store_of(c, i).await != first {
                return None;
            }
        }
        Some(first.1)
    })
    .await;
    (one, two, store)
}

fn keys(store: &[(Vec<u8>, Vec<u8>, i64, i64)]) -> Vec<String> {
    store
        .iter()
        .map(|(k, ..)| String::from_utf8_lossy(k).into_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_member_of_the_previous_release_marks_stay_out_of_the_log() {
    // n3 plays the previous release: its batches advertise nothing.
    let c = Cluster::start_advertising(|_| {}, |i| if i == 2 { 0 } else { FEATURES }).await;
    let (one, two, store) = three_then_one_and_two(&c).await;
    // The old rule on every member: below the last seq, stale, not applied.
    for (seq, answer) in [(1, one), (2, two)] {
        let e = answer.expect_err("stale");
        assert_eq!(e.code(), Code::FailedPrecondition, "seq {seq}: {e:?}");
    }
    assert_eq!(keys(&store), ["g/3"]);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_every_member_advertising_marks_out_of_order_writes_apply() {
    let c = Cluster::start().await;
    marks_let_in(&c).await;
    let (one, two, store) = three_then_one_and_two(&c).await;
    one.expect("1 applies");
    two.expect("2 applies");
    assert_eq!(keys(&store), ["g/1", "g/2", "g/3"]);
    c.shutdown().await;
}
