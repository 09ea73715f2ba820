//! The Lease service through followers, over real gRPC on loopback with
//! three members (the harness is in `common`): a follower forwards
//! TimeToLive and Leases to the leader and relays keepalive streams there,
//! following the leader when it moves. Waits are bounded; nothing asserts
//! on durations.

mod common;

use common::*;
use flotilla_proto::etcdserverpb::lease_client::LeaseClient;
use flotilla_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use flotilla_proto::etcdserverpb::{
    LeaseGrantRequest, LeaseKeepAliveRequest, LeaseKeepAliveResponse, LeaseLeasesRequest,
    LeaseRevokeRequest, LeaseTimeToLiveRequest, MoveLeaderRequest, PutRequest,
};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;
use tonic::transport::Channel;

async fn lease_client(c: &Cluster, i: usize) -> LeaseClient<Channel> {
    LeaseClient::new(c.channel(i).await)
}

/// Grants a lease through member `i` and attaches `key` to it.
async fn leased_key(c: &Cluster, i: usize, ttl: i64, key: &str) -> i64 {
    let granted = lease_client(c, i)
        .await
        .lease_grant(LeaseGrantRequest { ttl, id: 0 })
        .await
        .expect("grant")
        .into_inner();
    assert_eq!(granted.ttl, ttl);
    c.kv(i)
        .await
        .put(PutRequest {
            lease: granted.id,
            ..put_req(key, "v")
        })
        .await
        .expect("put with the lease");
    granted.id
}

/// One keepalive stream: requests in, answers out.
struct KeepAlive {
    requests: mpsc::Sender<LeaseKeepAliveRequest>,
    answers: Streaming<LeaseKeepAliveResponse>,
}

impl KeepAlive {
    async fn open(c: &Cluster, i: usize) -> KeepAlive {
        let (requests, rx) = mpsc::channel(4);
        let answers = lease_client(c, i)
            .await
            .lease_keep_alive(ReceiverStream::new(rx))
            .await
            .expect("keepalive stream")
            .into_inner();
        KeepAlive { requests, answers }
    }

    async fn renew(&mut self, id: i64) -> LeaseKeepAliveResponse {
        self.requests
            .send(LeaseKeepAliveRequest { id })
            .await
            .expect("stream open");
        tokio::time::timeout(WAIT, self.answers.message())
            .await
            .expect("an answer within the wait")
            .expect("a healthy stream")
            .expect("the stream stays open")
    }
}

async fn exists(c: &Cluster, i: usize, key: &str) -> bool {
    value_of(&mut c.kv(i).await, get_req(key)).await.is_some()
}

/// Moves leadership to member `to` and waits until every member agrees.
async fn move_leader(c: &Cluster, to: usize) {
    let leader = c.leader();
    MaintenanceClient::new(c.channel(leader).await)
        .move_leader(MoveLeaderRequest {
            target_id: c.id(to).0,
        })
        .await
        .expect("move leader");
    let want = c.id(to);
    eventually("every member to follow the new leader", || async {
        c.nodes
            .iter()
            .all(|n| n.raft().status().leader == want)
            .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn keepalive_through_a_follower_keeps_a_lease_alive_past_its_ttl() {
    let c = Cluster::start().await;
    let f = c.follower();
    let id = leased_key(&c, f, 2, "kept").await;
    let mut stream = KeepAlive::open(&c, f).await;
    // Renewed well within the TTL for twice the TTL: the key stays.
    for _ in 0..10 {
        let answer = stream.renew(id).await;
        assert_eq!((answer.id, answer.ttl), (id, 2), "{answer:?}");
        assert_eq!(
            answer.header.expect("header").member_id,
            c.id(f).0,
            "answered by the member the client talks to, as etcd's are"
        );
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    assert!(exists(&c, f, "kept").await, "a kept-alive lease lives");
    let gone = stream.renew(999_999).await;
    assert_eq!(
        (gone.id, gone.ttl),
        (999_999, 0),
        "a lease that does not exist"
    );

    // Without keepalives it expires: they were what kept it.
    drop(stream);
    eventually("the lease to expire once no longer kept alive", || async {
        (!exists(&c, f, "kept").await).then_some(())
    })
    .await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_relayed_keepalive_stream_follows_the_leader() {
    let c = Cluster::start().await;
    let f = c.follower();
    let third = (0..3).find(|i| *i != f && *i != c.leader()).expect("three");
    let id = leased_key(&c, f, 3, "kept").await;
    let mut stream = KeepAlive::open(&c, f).await;
    let answered_by = |a: &LeaseKeepAliveResponse| a.header.as_ref().expect("header").member_id;

    let first = stream.renew(id).await;
    assert_eq!((first.ttl, answered_by(&first)), (3, c.id(f).0));

    // Leadership moves to the third member: the same stream goes on there.
    move_leader(&c, third).await;
    let second = stream.renew(id).await;
    assert_eq!((second.ttl, answered_by(&second)), (3, c.id(f).0));

    // And to the member the client talks to: it now renews itself.
    move_leader(&c, f).await;
    let third_answer = stream.renew(id).await;
    assert_eq!(
        (third_answer.ttl, answered_by(&third_answer)),
        (3, c.id(f).0)
    );
    assert!(exists(&c, f, "kept").await);
    drop(stream);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn time_to_live_and_leases_via_a_follower_are_the_leaders() {
    let c = Cluster::start().await;
    let (leader, f) = (c.leader(), c.follower());
    let a = leased_key(&c, leader, 30, "a").await;
    let b = leased_key(&c, leader, 60, "b").await;
    // A follower's lessor holds no deadlines and would answer the granted
    // TTL; the leader's has counted down by now.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let ttl = lease_client(&c, f)
        .await
        .lease_time_to_live(LeaseTimeToLiveRequest { id: a, keys: true })
        .await
        .expect("time to live")
        .into_inner();
    assert_eq!(ttl.id, a);
    assert_eq!(ttl.granted_ttl, 30);
    assert!(
        (1..30).contains(&ttl.ttl),
        "the leader's remaining TTL: {ttl:?}"
    );
    assert_eq!(ttl.keys, vec![b"a".to_vec()]);
    // The leader's figures, in the name of the member asked (as etcd).
    assert_eq!(ttl.header.expect("header").member_id, c.id(f).0);

    let leases = lease_client(&c, f)
        .await
        .lease_leases(LeaseLeasesRequest {})
        .await
        .expect("leases")
        .into_inner();
    let mut ids: Vec<i64> = leases.leases.iter().map(|l| l.id).collect();
    ids.sort();
    let mut want = vec![a, b];
    want.sort();
    assert_eq!(ids, want);
    assert_eq!(leases.header.expect("header").member_id, c.id(f).0);

    // Grants and revokes through the follower answer in its name too.
    let granted = lease_client(&c, f)
        .await
        .lease_grant(LeaseGrantRequest { ttl: 20, id: 0 })
        .await
        .expect("grant via a follower")
        .into_inner();
    let header = granted.header.expect("header");
    assert_eq!(header.member_id, c.id(f).0);
    assert!(header.raft_term > 0, "{header:?}");
    let revoked = lease_client(&c, f)
        .await
        .lease_revoke(LeaseRevokeRequest { id: granted.id })
        .await
        .expect("revoke via a follower")
        .into_inner();
    assert_eq!(revoked.header.expect("header").member_id, c.id(f).0);

    let missing = lease_client(&c, f)
        .await
        .lease_time_to_live(LeaseTimeToLiveRequest {
            id: 424_242,
            keys: false,
        })
        .await
        .expect("time to live of a missing lease")
        .into_inner();
    assert_eq!(missing.ttl, -1, "etcd's answer for a missing lease");
    c.shutdown().await;
}
