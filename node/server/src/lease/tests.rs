//! The Lease service and the expiry loop over real gRPC on loopback,
//! against one member.

use crate::state::StateConfig;
use crate::watch::WatchConfig;
use crate::watch::test_node::TestNode;
use flotilla_proto::etcdserverpb::lease_client::LeaseClient;
use flotilla_proto::etcdserverpb::{
    LeaseGrantRequest, LeaseKeepAliveRequest, LeaseLeasesRequest, LeaseRevokeRequest,
    LeaseTimeToLiveRequest,
};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

async fn node() -> TestNode {
    TestNode::start(WatchConfig::default(), StateConfig::default()).await
}

fn client(node: &TestNode) -> LeaseClient<Channel> {
    LeaseClient::new(node.channel.clone())
}

async fn grant(node: &TestNode, ttl: i64) -> i64 {
    let r = client(node)
        .lease_grant(LeaseGrantRequest { ttl, id: 0 })
        .await
        .expect("grant")
        .into_inner();
    assert_eq!(r.ttl, ttl);
    assert!(r.id > 0, "{r:?}");
    assert!(r.header.is_some());
    r.id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_a_lease_deletes_its_keys() {
    let node = node().await;
    let id = grant(&node, 60).await;
    node.put("leased", "v", id).await;
    node.put("free", "v", 0).await;
    let r = client(&node)
        .lease_revoke(LeaseRevokeRequest { id })
        .await
        .expect("revoke")
        .into_inner();
    let revision = r.header.expect("header").revision;
    assert!(node.get("leased").await.is_none());
    assert!(node.get("free").await.is_some());
    assert!(revision > 0);

    let err = client(&node)
        .lease_revoke(LeaseRevokeRequest { id })
        .await
        .expect_err("already revoked");
    assert_eq!(err.code(), tonic::Code::NotFound);
    assert_eq!(err.message(), "etcdserver: requested lease not found");
    node.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepalives_renew_and_report_gone_leases_with_ttl_zero() {
    let node = node().await;
    let id = grant(&node, 2).await;
    node.put("kept", "v", id).await;
    let (tx, rx) = mpsc::channel(4);
    let mut responses = client(&node)
        .lease_keep_alive(ReceiverStream::new(rx))
        .await
        .expect("keepalive stream")
        .into_inner();
    // Renewed well within the TTL for longer than the TTL: the key stays.
    for _ in 0..10 {
        tx.send(LeaseKeepAliveRequest { id }).await.expect("open");
        let r = responses.message().await.expect("healthy").expect("open");
        assert_eq!((r.id, r.ttl), (id, 2));
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(node.get("kept").await.is_some(), "a kept-alive lease lives");

    tx.send(LeaseKeepAliveRequest { id: 999_999 })
        .await
        .expect("open");
    let r = responses.message().await.expect("healthy").expect("open");
    assert_eq!((r.id, r.ttl), (999_999, 0), "a lease that does not exist");
    node.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_lease_is_revoked_by_the_leader_and_its_keys_deleted() {
    let node = node().await;
    let id = grant(&node, 1).await;
    node.put("ephemeral", "v", id).await;
    let mut gone = false;
    for _ in 0..200 {
        if node.get("ephemeral").await.is_none() {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(gone, "the key of an expired lease was not deleted");
    let ttl = client(&node)
        .lease_time_to_live(LeaseTimeToLiveRequest { id, keys: true })
        .await
        .expect("ttl")
        .into_inner();
    assert_eq!(ttl.ttl, -1, "{ttl:?}");
    node.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_to_live_lists_keys_and_leases_lists_leases() {
    let node = node().await;
    let a = grant(&node, 100).await;
    let b = grant(&node, 200).await;
    node.put("a/2", "v", a).await;
    node.put("a/1", "v", a).await;
    let r = client(&node)
        .lease_time_to_live(LeaseTimeToLiveRequest { id: a, keys: true })
        .await
        .expect("ttl")
        .into_inner();
    assert_eq!(r.id, a);
    assert_eq!(r.granted_ttl, 100);
    assert!(r.ttl > 0 && r.ttl <= 100, "{r:?}");
    assert_eq!(r.keys, vec![b"a/1".to_vec(), b"a/2".to_vec()]);
    let r = client(&node)
        .lease_time_to_live(LeaseTimeToLiveRequest { id: b, keys: false })
        .await
        .expect("ttl")
        .into_inner();
    assert!(r.keys.is_empty());
    assert_eq!(r.granted_ttl, 200);

    let mut ids: Vec<i64> = client(&node)
        .lease_leases(LeaseLeasesRequest {})
        .await
        .expect("leases")
        .into_inner()
        .leases
        .iter()
        .map(|l| l.id)
        .collect();
    ids.sort();
    let mut want = vec![a, b];
    want.sort();
    assert_eq!(ids, want);
    node.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_with_a_taken_id_is_refused_as_etcd_does() {
    let node = node().await;
    let mut c = client(&node);
    c.lease_grant(LeaseGrantRequest { ttl: 10, id: 42 })
        .await
        .expect("grant with an id");
    let err = c
        .lease_grant(LeaseGrantRequest { ttl: 10, id: 42 })
        .await
        .expect_err("taken");
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    assert_eq!(err.message(), "etcdserver: lease already exists");
    node.stop();
}
