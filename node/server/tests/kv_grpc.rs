//! The client API over real gRPC on loopback: three in-process members on
//! `127.0.0.1:0` listeners with data in temporary folders, a 10 ms tick,
//! driven through the generated etcd clients (the harness is in
//! `common`). Waits are bounded; nothing asserts on durations.

mod common;

use common::*;
use flotilla_node::config::{ClusterState, FsyncSetting, InitialMember};
use flotilla_node::server::{NodeListeners, start};
use flotilla_node::transport::{FEATURES, PEER_PROPOSALS};
use flotilla_proto::etcdserverpb::cluster_client::ClusterClient;
use flotilla_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use flotilla_proto::etcdserverpb::{
    MemberAddRequest, MemberListRequest, MemberPromoteRequest, MemberRemoveRequest,
    MoveLeaderRequest, PutRequest, RangeRequest, StatusRequest,
};
use flotilla_raft::Role;
use tokio::net::TcpListener;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn get() {
    let c = Cluster::start().await;
    let mut kv = c.kv(c.leader()).await;
    assert_eq!(value_of(&mut kv, get_req("missing")).await, None);
    let r = kv
        .range(get_req("missing"))
        .await
        .expect("range")
        .into_inner();
    assert_eq!(r.count, 0);
    let header = r.header.expect("header");
    assert_eq!(header.cluster_id, 0xf107);
    assert!(header.raft_term > 0);
    let status = kv.range(get_req("")).await.expect_err("an empty key");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert_eq!(status.message(), "etcdserver: key is not provided");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn put() {
    let c = Cluster::start().await;
    let mut kv = c.kv(c.leader()).await;
    let first = kv.put(put_req("k", "v1")).await.expect("put").into_inner();
    let mut again = put_req("k", "v2");
    again.prev_kv = true;
    let second = kv.put(again).await.expect("put").into_inner();
    let rev = |h: &Option<flotilla_proto::etcdserverpb::ResponseHeader>| {
        h.as_ref().expect("header").revision
    };
    assert_eq!(
        rev(&second.header),
        rev(&first.header) + 1,
        "one revision per put"
    );
    assert_eq!(second.prev_kv.expect("prev_kv").value, b"v1");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn put_get() {
    let c = Cluster::start().await;
    let mut kv = c.kv(c.leader()).await;
    kv.put(put_req("greeting", "hello")).await.expect("put");
    // Linearizable reads see it on every member, followers included.
    for i in 0..c.nodes.len() {
        let mut kv = c.kv(i).await;
        assert_eq!(
            value_of(&mut kv, get_req("greeting")).await.as_deref(),
            Some(&b"hello"[..]),
            "member {i}"
        );
    }
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent() {
    let c = Cluster::start().await;
    let clients = 6;
    let puts = 20;
    let mut tasks = Vec::new();
    for client in 0..clients {
        // Every member gets clients: followers forward.
        let mut kv = c.kv(client % c.nodes.len()).await;
        tasks.push(tokio::spawn(async move {
            for i in 0..puts {
                kv.put(put_req(
                    &format!("c{client}/k{i}"),
                    &format!("v{client}.{i}"),
                ))
                .await
                .expect("put");
            }
        }));
    }
    for t in tasks {
        t.await.expect("client task");
    }
    let mut kv = c.kv(c.follower()).await;
    for client in 0..clients {
        for i in 0..puts {
            let v = value_of(&mut kv, get_req(&format!("c{client}/k{i}"))).await;
            assert_eq!(v, Some(format!("v{client}.{i}").into_bytes()));
        }
    }
    let all = kv
        .range(RangeRequest {
            key: b"c".to_vec(),
            range_end: b"d".to_vec(),
            count_only: true,
            ..Default::default()
        })
        .await
        .expect("range")
        .into_inner();
    assert_eq!(all.count, (clients * puts) as i64);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn follower_forwards_writes_to_the_leader() {
    let c = Cluster::start().await;
    let f = c.follower();
    let mut follower = c.kv(f).await;
    let r = follower
        .put(put_req("fwd", "1"))
        .await
        .expect("forwarded put");
    let header = r.into_inner().header.expect("header");
    // The follower answers its client, as etcd's do; the revision is the
    // one the leader's proposal produced.
    assert_eq!(header.member_id, c.nodes[f].member_id());
    assert!(header.revision > 1, "revision of the write: {header:?}");
    let mut leader = c.kv(c.leader()).await;
    assert_eq!(
        value_of(&mut leader, get_req("fwd")).await,
        Some(b"1".to_vec())
    );
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn serializable_read_on_a_follower() {
    let c = Cluster::start().await;
    let mut leader = c.kv(c.leader()).await;
    leader.put(put_req("s", "x")).await.expect("put");
    let mut follower = c.kv(c.follower()).await;
    let value = eventually("the follower applies the put", || {
        let mut follower = follower.clone();
        async move {
            let mut req = get_req("s");
            req.serializable = true;
            value_of(&mut follower, req).await
        }
    })
    .await;
    assert_eq!(value, b"x");
    let mut req = get_req("s");
    req.serializable = true;
    let r = follower.range(req).await.expect("range").into_inner();
    assert_eq!(
        r.header.expect("header").member_id,
        c.nodes[c.follower()].member_id(),
        "served by the follower itself"
    );
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exactly_once_put_applies_once() {
    let c = Cluster::start().await;
    let mut leader = c.kv(c.leader()).await;
    let first = leader
        .put(with_ids(put_req("once", "a"), "77", "1"))
        .await
        .expect("put")
        .into_inner();
    // The same request again, through a follower this time (the forward
    // keeps the ids): answered from the session, no new revision.
    let mut follower = c.kv(c.follower()).await;
    let retry = follower
        .put(with_ids(put_req("once", "a"), "77", "1"))
        .await
        .expect("retried put")
        .into_inner();
    let rev = |h: Option<flotilla_proto::etcdserverpb::ResponseHeader>| h.expect("header").revision;
    assert_eq!(rev(retry.header), rev(first.header));
    let r = leader
        .range(get_req("once"))
        .await
        .expect("range")
        .into_inner();
    assert_eq!(r.kvs[0].version, 1, "applied once");
    assert_eq!(rev(r.header), rev(first.header), "no revision since");
    // Without ids, a repeat is a new write (etcd's semantics).
    let plain = leader
        .put(put_req("once", "a"))
        .await
        .expect("put")
        .into_inner();
    let r = leader
        .range(get_req("once"))
        .await
        .expect("range")
        .into_inner();
    assert_eq!(r.kvs[0].version, 2);
    assert_eq!(r.kvs[0].mod_revision, rev(plain.header));
    // Malformed ids are refused.
    let bad = leader.put(with_ids(put_req("once", "b"), "x", "1")).await;
    assert_eq!(
        bad.expect_err("malformed").code(),
        tonic::Code::InvalidArgument
    );
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn oversized_request_is_refused() {
    let c = Cluster::start().await;
    let mut kv = c.kv(c.follower()).await;
    let big = "x".repeat(100 * 1024);
    let status = kv.put(put_req("big", &big)).await.expect_err("too large");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert_eq!(status.message(), "etcdserver: request is too large");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn member_list_has_three_members_with_client_urls() {
    let c = Cluster::start().await;
    for i in 0..c.nodes.len() {
        let mut cluster = ClusterClient::new(c.channel(i).await);
        let list = cluster
            .member_list(MemberListRequest {
                linearizable: i == 0,
            })
            .await
            .expect("member list")
            .into_inner();
        assert_eq!(list.members.len(), 3);
        for (j, node) in c.nodes.iter().enumerate() {
            let m = list
                .members
                .iter()
                .find(|m| m.id == node.member_id())
                .expect("listed");
            assert_eq!(m.name, format!("n{}", j + 1));
            assert_eq!(m.client_ur_ls, vec![c.url(j)]);
            assert_eq!(m.peer_ur_ls.len(), 1);
            assert!(!m.is_learner);
        }
    }
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn maintenance_status_names_the_leader() {
    let c = Cluster::start().await;
    let leader_id = c.nodes[c.leader()].member_id();
    for i in 0..c.nodes.len() {
        let mut m = MaintenanceClient::new(c.channel(i).await);
        let s = m
            .status(StatusRequest {})
            .await
            .expect("status")
            .into_inner();
        assert_eq!(s.leader, leader_id, "member {i}");
        assert!(s.raft_term > 0);
        assert!(s.raft_index > 0);
        assert!(s.version.starts_with("3.5."), "{}", s.version);
        assert_eq!(s.header.expect("header").member_id, c.nodes[i].member_id());
    }
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn move_leader_hands_leadership_over() {
    let c = Cluster::start().await;
    let target = c.follower();
    let target_id = c.nodes[target].member_id();
    // Sent to a follower, MoveLeader says who leads.
    let mut m = MaintenanceClient::new(c.channel(target).await);
    let refused = m
        .move_leader(MoveLeaderRequest { target_id })
        .await
        .expect_err("only the leader moves leadership");
    assert_eq!(refused.code(), tonic::Code::Unavailable);
    assert_eq!(
        refused
            .metadata()
            .get("flotilla-leader-endpoint")
            .expect("hint"),
        c.url(c.leader()).as_str()
    );
    let mut m = MaintenanceClient::new(c.channel(c.leader()).await);
    m.move_leader(MoveLeaderRequest { target_id })
        .await
        .expect("move leader");
    eventually("the target to lead", || async {
        (c.nodes[target].raft().status().role == Role::Leader).then_some(())
    })
    .await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn member_add_learner_promote_and_remove() {
    let mut c = Cluster::start().await;
    let l = NodeListeners {
        client: bind().await,
        peer: bind().await,
        http: bind().await,
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let peer_url = format!("http://{}", l.peer.local_addr().expect("addr"));
    // Sent to a follower: forwarded to the leader.
    let mut cluster = ClusterClient::new(c.channel(c.follower()).await);
    let bad = cluster
        .member_add(MemberAddRequest {
            peer_ur_ls: vec!["127.0.0.1:1".into()],
            is_learner: true,
        })
        .await
        .expect_err("not a URL");
    assert_eq!(bad.message(), "etcdserver: given member URLs are invalid");
    let taken = cluster
        .member_add(MemberAddRequest {
            peer_ur_ls: vec![c.configs[0].peer_advertise.clone()],
            is_learner: true,
        })
        .await
        .expect_err("a founder's URL");
    assert_eq!(
        (taken.code(), taken.message()),
        (
            tonic::Code::FailedPrecondition,
            "etcdserver: Peer URLs already exists"
        )
    );
    let added = cluster
        .member_add(MemberAddRequest {
            peer_ur_ls: vec![peer_url.clone()],
            is_learner: true,
        })
        .await
        .expect("member add")
        .into_inner();
    let member = added.member.expect("the new member");
    assert!(member.is_learner);
    assert!(member.name.is_empty(), "unstarted: {member:?}");
    assert_eq!(member.peer_ur_ls, std::slice::from_ref(&peer_url));
    assert_eq!(added.members.len(), 4);
    assert!(
        added.members.iter().filter(|m| m.id == member.id).count() == 1,
        "a fresh id: {:?}",
        added.members
    );
    // The new member joins: founding members as its initial peers.
    let initial = c.nodes[0]
        .raft()
        .read_local(|sm| sm.kv().members())
        .await
        .expect("read")
        .into_iter()
        .map(|m| InitialMember {
            name: m.name,
            id: m.id,
            peer_url: m.peer_ur_ls[0].clone(),
        })
        .filter(|m| m.id != member.id)
        .collect::<Vec<_>>();
    // Its id is the cluster's to give: the config's is not used.
    let mut config = node_config("n4", 0, &initial, &dir, &l);
    config.cluster_state = ClusterState::Existing;
    c.configs.push(config.clone());
    let joiner = start(config, l).await.expect("start the joiner");
    assert_eq!(joiner.member_id(), member.id, "the id MemberAdd gave");
    c.nodes.push(joiner);
    c.dirs.push(dir);
    let mut leader = c.kv(c.leader()).await;
    leader.put(put_req("joined", "yes")).await.expect("put");
    let mut joiner = c.kv(3).await;
    eventually("the learner to catch up and publish", || {
        let mut joiner = joiner.clone();
        let node = &c.nodes[3];
        async move {
            let mut req = get_req("joined");
            req.serializable = true;
            let v = value_of(&mut joiner, req).await?;
            let me = node.member_id();
            let published = node
                .raft()
                .read_local(move |sm| sm.kv().member(me).is_some_and(|m| m.name == "n4"))
                .await
                .ok()?;
            published.then_some(v)
        }
    })
    .await;
    // Promotion waits until the learner is close enough behind.
    let promoted = eventually("the promotion", || {
        let mut cluster = cluster.clone();
        async move {
            cluster
                .member_promote(MemberPromoteRequest { id: member.id })
                .await
                .ok()
        }
    })
    .await
    .into_inner();
    let me = promoted
        .members
        .iter()
        .find(|m| m.id == member.id)
        .expect("listed");
    assert!(!me.is_learner);
    assert_eq!(me.name, "n4");
    // Linearizable reads from the new voter.
    assert_eq!(
        value_of(&mut joiner, get_req("joined")).await,
        Some(b"yes".to_vec())
    );
    let removed = cluster
        .member_remove(MemberRemoveRequest { id: member.id })
        .await
        .expect("member remove")
        .into_inner();
    assert_eq!(removed.members.len(), 3);
    let missing = cluster
        .member_remove(MemberRemoveRequest { id: member.id })
        .await
        .expect_err("already removed");
    assert_eq!(missing.code(), tonic::Code::NotFound);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restart_from_disk_keeps_data_and_members() {
    // Snapshots every few entries, so the restart goes through a snapshot.
    let mut c = Cluster::start_with(8).await;
    let mut leader = c.kv(c.leader()).await;
    for i in 0..30 {
        leader
            .put(put_req(&format!("r{i}"), &i.to_string()))
            .await
            .expect("put");
    }
    let i = c.follower();
    let config = c.configs[i].clone();
    let client_addr = c.nodes[i].client_addr();
    let peer_addr = c.nodes[i].peer_addr();
    let http_addr = c.nodes[i].http_addr();
    let stopped = c.nodes.remove(i);
    stopped.shutdown().await.expect("clean shutdown");
    leader.put(put_req("while-down", "1")).await.expect("put");
    // The same addresses again: the others know its peer URL.
    let l = NodeListeners {
        client: TcpListener::bind(client_addr).await.expect("rebind"),
        peer: TcpListener::bind(peer_addr).await.expect("rebind"),
        http: TcpListener::bind(http_addr).await.expect("rebind"),
    };
    c.nodes.insert(i, start(config, l).await.expect("restart"));
    let mut kv = c.kv(i).await;
    let value = eventually("the restarted member to catch up", || {
        let mut kv = kv.clone();
        async move {
            let mut req = get_req("while-down");
            req.serializable = true;
            value_of(&mut kv, req).await
        }
    })
    .await;
    assert_eq!(value, b"1");
    for k in 0..30 {
        let mut req = get_req(&format!("r{k}"));
        req.serializable = true;
        assert_eq!(
            value_of(&mut kv, req).await,
            Some(k.to_string().into_bytes())
        );
    }
    let members = c.nodes[i]
        .raft()
        .read_local(|sm| sm.kv().members())
        .await
        .expect("read");
    assert_eq!(members.len(), 3, "the member table survives the restart");
    // And it serves writes again (forwarded).
    kv.put(put_req("after", "restart")).await.expect("put");
    c.shutdown().await;
}

/// `--snapshot-min-log-percent` across a restart: a member restarted from
/// a snapshot of a large state weighs its log against that snapshot's
/// size (read from its file at start), so small writes past
/// `--snapshot-count` do not make it write the whole state again. Were
/// the size unknown, the count would decide and it would snapshot after
/// `SNAPSHOT_EVERY` entries.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restarted_member_weighs_its_log_against_the_snapshot_it_started_from() {
    const SNAPSHOT_EVERY: u64 = 8;
    // The count alone while the state fills: the last snapshot is at most
    // `SNAPSHOT_EVERY` entries old when the follower restarts.
    let mut c = Cluster::start_configured(|config| {
        config.snapshot_count = SNAPSHOT_EVERY;
        config.snapshot_min_log_percent = 0;
    })
    .await;
    let mut leader = c.kv(c.leader()).await;
    // About 1.2 MB of state, against at most 0.3 MB of log since the
    // last snapshot.
    let big = "b".repeat(40_000);
    for i in 0..30 {
        leader
            .put(put_req(&format!("big/{i:02}"), &big))
            .await
            .expect("put");
    }
    let i = c.follower();
    eventually("a snapshot on the follower", || async {
        let text = http_get(c.nodes[i].http_addr(), "/metrics").await;
        (metric(&text, "flotilla_raft_snapshots_written_total")? > 0.0).then_some(())
    })
    .await;
    c.configs[i].snapshot_min_log_percent = 100;
    c.restart(i, std::time::Duration::ZERO).await;
    let mut leader = c.kv(c.leader()).await;
    let small = 5 * SNAPSHOT_EVERY;
    for k in 0..small {
        leader
            .put(put_req(&format!("small/{k:02}"), "v"))
            .await
            .expect("put");
    }
    let last = format!("small/{:02}", small - 1);
    let kv = c.kv(i).await;
    eventually("the restarted member to apply the small writes", || {
        let mut kv = kv.clone();
        let mut req = get_req(&last);
        req.serializable = true;
        async move { value_of(&mut kv, req).await }
    })
    .await;
    // A snapshot made due would be written within this.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let text = http_get(c.nodes[i].http_addr(), "/metrics").await;
    assert_eq!(
        metric(&text, "flotilla_raft_snapshots_written_total"),
        Some(0.0),
        "{small} small entries after the restart made no snapshot due: {text}"
    );
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_member_behind_the_leaders_snapshot_catches_up_from_it() {
    // Snapshots every 8 entries: 40 writes while a follower is down compact
    // the leader's log past it, so it must be sent the snapshot, which the
    // leader's storage reads back from its file.
    let mut c = Cluster::start_with(8).await;
    let mut leader = c.kv(c.leader()).await;
    leader.put(put_req("before", "1")).await.expect("put");
    let i = c.follower();
    let config = c.configs[i].clone();
    let (client_addr, peer_addr, http_addr) = (
        c.nodes[i].client_addr(),
        c.nodes[i].peer_addr(),
        c.nodes[i].http_addr(),
    );
    let stopped = c.nodes.remove(i);
    stopped.shutdown().await.expect("clean shutdown");
    for k in 0..40 {
        leader
            .put(put_req(&format!("down/{k:02}"), &"v".repeat(100 + k)))
            .await
            .expect("put");
    }
    let l = NodeListeners {
        client: TcpListener::bind(client_addr).await.expect("rebind"),
        peer: TcpListener::bind(peer_addr).await.expect("rebind"),
        http: TcpListener::bind(http_addr).await.expect("rebind"),
    };
    c.nodes.insert(i, start(config, l).await.expect("restart"));
    let kv = c.kv(i).await;
    let kvs = eventually("the restarted member to hold every key", || {
        let mut kv = kv.clone();
        async move {
            let r = kv
                .range(RangeRequest {
                    key: b"down/".to_vec(),
                    range_end: b"down0".to_vec(),
                    serializable: true,
                    ..RangeRequest::default()
                })
                .await
                .ok()?
                .into_inner();
            (r.count == 40).then_some(r.kvs)
        }
    })
    .await;
    for (k, kv) in kvs.iter().enumerate() {
        assert_eq!(kv.key, format!("down/{k:02}").into_bytes());
        assert_eq!(kv.value, "v".repeat(100 + k).into_bytes());
    }
    let mut kv = kv;
    let mut req = get_req("before");
    req.serializable = true;
    assert_eq!(value_of(&mut kv, req).await, Some(b"1".to_vec()));
    c.shutdown().await;
}

/// Watch and Lease through a whole node: a watcher on a follower sees a
/// write made at the leader; a key attached to a lease goes when the lease
/// is revoked; the whole cluster still shuts down cleanly with the streams
/// open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_and_lease_through_the_node() {
    use flotilla_proto::etcdserverpb::lease_client::LeaseClient;
    use flotilla_proto::etcdserverpb::watch_client::WatchClient;
    use flotilla_proto::etcdserverpb::watch_request::RequestUnion;
    use flotilla_proto::etcdserverpb::{
        LeaseGrantRequest, LeaseRevokeRequest, WatchCreateRequest, WatchRequest,
    };
    let c = Cluster::start().await;
    let (leader, follower) = (c.leader(), c.follower());
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
            key: b"watched".to_vec(),
            ..Default::default()
        })),
    })
    .await
    .expect("queue the create");
    let mut stream = WatchClient::new(c.channel(follower).await)
        .watch(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("watch")
        .into_inner();
    let created = stream.message().await.expect("stream").expect("created");
    assert!(created.created);
    c.kv(leader)
        .await
        .put(put_req("watched", "v1"))
        .await
        .expect("put");
    let mut event = None;
    for _ in 0..100 {
        let msg =
            tokio::time::timeout(std::time::Duration::from_millis(200), stream.message()).await;
        if let Ok(Ok(Some(msg))) = msg
            && let Some(e) = msg.events.into_iter().next()
        {
            event = Some(e);
            break;
        }
    }
    let event = event.expect("the watch event arrived");
    assert_eq!(event.kv.expect("kv").value, b"v1");

    let mut lease = LeaseClient::new(c.channel(leader).await);
    let granted = lease
        .lease_grant(LeaseGrantRequest { ttl: 60, id: 0 })
        .await
        .expect("grant")
        .into_inner();
    c.kv(leader)
        .await
        .put(PutRequest {
            lease: granted.id,
            ..put_req("leased", "x")
        })
        .await
        .expect("put with lease");
    lease
        .lease_revoke(LeaseRevokeRequest { id: granted.id })
        .await
        .expect("revoke");
    let after = c
        .kv(follower)
        .await
        .range(get_req("leased"))
        .await
        .expect("range")
        .into_inner();
    assert!(after.kvs.is_empty(), "revoking the lease deleted its key");
    drop(tx);
    c.shutdown().await;
}

/// Runs etcdctl (v3 API) against the cluster; returns stdout.
fn etcdctl(endpoints: &str, args: &[&str], stdin: Option<&str>) -> String {
    use std::io::Write;
    let mut child = std::process::Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg("--endpoints")
        .arg(endpoints)
        .arg("--command-timeout=5s")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("etcdctl runs");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("write stdin");
    }
    let out = child.wait_with_output().expect("etcdctl finishes");
    assert!(
        out.status.success(),
        "etcdctl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Debian's etcdctl works unchanged against Flotilla: put, get, del, txn,
/// lease grant, member list, endpoint status. `.ci/run` installs it; on a
/// machine without it the test says so and passes only outside CI.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_compatibility() {
    if std::process::Command::new("etcdctl")
        .arg("version")
        .output()
        .is_err()
    {
        assert!(
            std::env::var_os("CI").is_none(),
            "etcdctl is missing in CI: .ci/run installs Debian's etcd-client"
        );
        eprintln!("etcdctl not installed: skipping (apt-get install etcd-client)");
        return;
    }
    let c = Cluster::start().await;
    let endpoints: Vec<String> = (0..3)
        .map(|i| c.nodes[i].client_addr().to_string())
        .collect();
    let e = endpoints.join(",");
    let run = |args: Vec<String>, stdin: Option<String>| {
        let e = e.clone();
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            etcdctl(&e, &args, stdin.as_deref())
        })
    };
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    assert_eq!(
        run(s(&["put", "foo", "bar"]), None)
            .await
            .expect("join")
            .trim(),
        "OK"
    );
    assert_eq!(
        run(s(&["get", "foo"]), None).await.expect("join"),
        "foo\nbar\n"
    );
    let txn = "create(\"k\") = \"0\"\n\nput k v\n\nput k other\n\n".to_string();
    let out = run(s(&["txn"]), Some(txn)).await.expect("join");
    assert!(out.starts_with("SUCCESS"), "{out}");
    assert_eq!(
        run(s(&["get", "k", "--print-value-only"]), None)
            .await
            .expect("join")
            .trim(),
        "v"
    );
    assert_eq!(
        run(s(&["del", "foo"]), None).await.expect("join").trim(),
        "1"
    );
    let lease = run(s(&["lease", "grant", "60"]), None).await.expect("join");
    assert!(lease.contains("granted with TTL(60s)"), "{lease}");
    let members = run(s(&["member", "list"]), None).await.expect("join");
    assert_eq!(members.lines().count(), 3, "{members}");
    let status = run(s(&["endpoint", "status", "-w", "json"]), None)
        .await
        .expect("join");
    assert!(status.contains("\"leader\""), "{status}");
    c.shutdown().await;
}

/// Fetches `path` from a member's HTTP port (HTTP/1.0, whole body).
async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())
        .await
        .expect("write");
    let mut body = String::new();
    s.read_to_string(&mut body).await.expect("read");
    body
}

/// The value of an unlabelled metric in Prometheus text.
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

/// A follower proposes its clients' writes through the peer stream, so
/// the leader counts them as peer proposals and the follower reads each
/// write right after its answer (it answers once it applied it); with
/// members that do not advertise peer proposals (the previous release) it
/// forwards them instead, and they apply just the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_follower_proposes_through_the_peer_stream_when_the_leader_takes_it() {
    const WRITES: usize = 40;
    for peer_proposals in [true, false] {
        let features = if peer_proposals {
            FEATURES
        } else {
            FEATURES & !PEER_PROPOSALS
        };
        let c = Cluster::start_advertising(|_| {}, |_| features).await;
        let (l, f) = (c.leader(), c.follower());
        let leader_id = c.id(l).0;
        eventually("the follower heard the leader advertise", || async {
            c.nodes[f]
                .features()
                .understood_by(leader_id, features)
                .then_some(())
        })
        .await;
        let mut kv = c.kv(f).await;
        for i in 0..WRITES {
            let key = format!("own/{i}");
            kv.put(put_req(&key, "v"))
                .await
                .expect("put through the follower");
            let mut read = get_req(&key);
            read.serializable = true;
            if peer_proposals {
                assert!(
                    value_of(&mut kv, read).await.is_some(),
                    "the follower answered {key} before it applied it"
                );
            }
        }
        let text = http_get(c.nodes[l].http_addr(), "/metrics").await;
        let taken = metric(&text, "flotilla_raft_peer_proposals_total").unwrap_or(0.0);
        if peer_proposals {
            assert!(taken >= WRITES as f64, "{taken} peer proposals");
        } else {
            assert_eq!(
                taken, 0.0,
                "proposed to a leader that does not advertise it"
            );
        }
        let mut leader = c.kv(l).await;
        for i in 0..WRITES {
            let key = format!("own/{i}");
            assert!(
                value_of(&mut leader, get_req(&key)).await.is_some(),
                "{key} (peer proposals: {peer_proposals})"
            );
        }
        c.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metrics_time_disk_writes_and_peer_round_trips() {
    let c = Cluster::start().await;
    let mut kv = c.kv(c.leader()).await;
    kv.put(put_req("m", "1")).await.expect("put");
    let leader = c.nodes[c.leader()].http_addr();
    let follower = c.nodes[c.follower()].http_addr();
    eventually("heartbeat round trips timed at the leader", || async {
        let text = http_get(leader, "/metrics").await;
        metric(&text, "flotilla_peer_round_trip_seconds_count").filter(|n| *n > 0.0)
    })
    .await;
    let text = http_get(follower, "/metrics").await;
    let writes = metric(&text, "flotilla_raft_fsync_duration_seconds_count");
    assert!(writes.is_some_and(|n| n > 0.0), "{text}");
    c.shutdown().await;
}

/// With the log synced (`--fsync always`) and `--follower-sync-on-loop
/// true`, only a follower syncs a write on its Raft loop: a leader's syncs
/// stay on the sync thread however fast its disk, so that the followers
/// commit while the leader's disk stalls. A follower does so only on a fast
/// disk: its count must rise when its syncs took half the 1 ms bound or
/// less (its estimate then falls under the bound within these writes,
/// whatever it was before). The leader may have synced a vote inline
/// before it led, so its count must only stay put.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_follower_sync_on_loop_only_a_follower_syncs_on_its_raft_loop() {
    let (leader, follower) = syncs_on_the_loop(true).await;
    assert_eq!(leader.inline, 0.0, "{leader:?}");
    if follower.mean_seconds < 0.000_5 {
        assert!(
            follower.inline > 0.0,
            "the follower's syncs took {} s each, yet none was on its loop",
            follower.mean_seconds
        );
    }
}

/// Without `--follower-sync-on-loop` (the default) no member syncs on its
/// Raft loop, however fast its disk: a sync the disk holds up would hold a
/// follower's heartbeat answers too.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_follower_sync_on_loop_every_sync_is_the_sync_threads() {
    let (leader, follower) = syncs_on_the_loop(false).await;
    assert_eq!(leader.inline, 0.0, "{leader:?}");
    assert_eq!(follower.inline, 0.0, "{follower:?}");
}

/// What one member's syncs did while 40 puts committed.
#[derive(Debug)]
struct LoopSyncs {
    /// Syncs on the Raft loop.
    inline: f64,
    /// The mean duration of a sync, in seconds.
    mean_seconds: f64,
}

/// Starts a cluster with the log synced (`follower_sync_on_loop` as
/// given), puts 40 keys through the leader, and returns what the leader's
/// and a follower's syncs did meanwhile; both must have synced.
async fn syncs_on_the_loop(follower_sync_on_loop: bool) -> (LoopSyncs, LoopSyncs) {
    let c = Cluster::start_configured(|n| {
        n.fsync = FsyncSetting::Always;
        n.follower_sync_on_loop = follower_sync_on_loop;
    })
    .await;
    let (leads, follows) = (c.leader(), c.follower());
    let mut kv = c.kv(leads).await;
    kv.put(put_req("warm", "1")).await.expect("put");
    let members = [c.nodes[leads].http_addr(), c.nodes[follows].http_addr()];
    // Syncs on the loop, syncs in all, and the seconds they took.
    let counts = |text: &str| {
        let read = |name: &str| metric(text, name).unwrap_or_else(|| panic!("no {name}"));
        [
            read("flotilla_raft_fsync_inline_total"),
            read("flotilla_raft_fsync_duration_seconds_count"),
            read("flotilla_raft_fsync_duration_seconds_sum"),
        ]
    };
    let mut before = Vec::new();
    for addr in members {
        before.push(counts(&http_get(addr, "/metrics").await));
    }
    for i in 0..40 {
        kv.put(put_req(&format!("inline-{i}"), "1"))
            .await
            .expect("put");
    }
    let mut seen = Vec::new();
    for (addr, [inline0, syncs0, seconds0]) in members.into_iter().zip(before) {
        let text = http_get(addr, "/metrics").await;
        let [inline, syncs, seconds] = counts(&text);
        assert!(syncs > syncs0, "the member synced its writes: {text}");
        seen.push(LoopSyncs {
            inline: inline - inline0,
            mean_seconds: (seconds - seconds0) / (syncs - syncs0),
        });
    }
    c.shutdown().await;
    let follower = seen.pop().expect("two members");
    (seen.pop().expect("two members"), follower)
}

/// A connection that never sends a byte (a half-open client, a port probe,
/// a client balancer's connect it never finished) must not hold a member's
/// shutdown forever, on any of its three ports: each server drains for a
/// bounded time, then closes what is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_is_not_held_by_silent_connections() {
    let c = Cluster::start().await;
    let node = &c.nodes[c.follower()];
    let mut silent = Vec::new();
    for addr in [node.client_addr(), node.peer_addr(), node.http_addr()] {
        silent.push(tokio::net::TcpStream::connect(addr).await.expect("connect"));
    }
    tokio::time::timeout(WAIT, c.shutdown())
        .await
        .expect("the members stopped within the wait despite silent connections");
    drop(silent);
}

/// A LeaseGrant retried with its exactly-once ids (its answer was lost)
/// grants one lease, not two: the retry gets the first grant's answer, on
/// the leader and through a follower alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exactly_once_lease_grant_grants_once() {
    use flotilla_proto::etcdserverpb::lease_client::LeaseClient;
    use flotilla_proto::etcdserverpb::{LeaseGrantRequest, LeaseLeasesRequest};
    let c = Cluster::start().await;
    let grant = || LeaseGrantRequest { ttl: 60, id: 0 };
    let mut leader = LeaseClient::new(c.channel(c.leader()).await);
    let mut follower = LeaseClient::new(c.channel(c.follower()).await);
    let first = leader
        .lease_grant(with_ids(grant(), "77", "1"))
        .await
        .expect("grant")
        .into_inner();
    let again = follower
        .lease_grant(with_ids(grant(), "77", "1"))
        .await
        .expect("retried grant")
        .into_inner();
    assert_eq!(again.id, first.id, "the retry answered from the session");
    let next = leader
        .lease_grant(with_ids(grant(), "77", "2"))
        .await
        .expect("next grant")
        .into_inner();
    assert_ne!(next.id, first.id);
    let leases = leader
        .lease_leases(LeaseLeasesRequest {})
        .await
        .expect("leases")
        .into_inner();
    assert_eq!(leases.leases.len(), 2, "{leases:?}");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn client_watch_prefixes() {
    let c = Cluster::start().await;
    let client =
        flotilla_client::Client::new(&c.endpoints(), flotilla_client::ClientConfig::default())
            .expect("client");
    let prefixes: [&[u8]; 2] = [b"wa/", b"wb/"];
    let mut w = client.watch_prefixes(&prefixes).await.expect("watch");
    assert_eq!(w.watchers(), 2);
    // Created before these writes: each write under a prefix is reported,
    // in order, and the one outside them is not.
    client.put(b"wc/outside", b"0").await.expect("put");
    client.put(b"wb/1", b"1").await.expect("put");
    client.put(b"wa/2", b"2").await.expect("put");
    let mut keys = Vec::new();
    while keys.len() < 2 {
        let resp = tokio::time::timeout(std::time::Duration::from_secs(10), w.next())
            .await
            .expect("events within the bound")
            .expect("stream")
            .expect("open stream");
        keys.extend(
            resp.events
                .iter()
                .map(|e| e.kv.as_ref().expect("kv").key.clone()),
        );
    }
    assert_eq!(keys, vec![b"wb/1".to_vec(), b"wa/2".to_vec()]);
    c.shutdown().await;
}

/// Members 1 and 3 serve clients on their driver's thread (the harness
/// gives odd ids `--client-thread driver`), member 2 on its workers. A
/// put, a one-key get and Kubernetes' update transaction stay on the
/// driver's thread; a range over keys and a watch are handed to the
/// workers; every answer is whole either way.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bounded_calls_run_on_the_driver_thread_and_long_ones_on_the_workers() {
    use flotilla_proto::etcdserverpb::request_op::Request as Op;
    use flotilla_proto::etcdserverpb::watch_client::WatchClient;
    use flotilla_proto::etcdserverpb::watch_request::RequestUnion;
    use flotilla_proto::etcdserverpb::{
        Compare, RequestOp, TxnRequest, WatchCreateRequest, WatchRequest, compare,
    };
    let c = Cluster::start().await;
    for i in 0..3 {
        let id = c.nodes[i].member_id();
        let http = c.nodes[i].http_addr();
        let counts = || async move {
            let text = http_get(http, "/metrics").await;
            let read = |name: &str| metric(&text, name).unwrap_or_else(|| panic!("no {name}"));
            (
                read("flotilla_client_calls_on_driver_total"),
                read("flotilla_client_calls_on_workers_total"),
            )
        };
        let before = counts().await;
        let mut kv = c.kv(i).await;
        let prefix = format!("placed-{id}-");
        for k in 0..5 {
            kv.put(put_req(&format!("{prefix}{k}"), "v"))
                .await
                .expect("put");
        }
        let key = format!("{prefix}0");
        assert_eq!(value_of(&mut kv, get_req(&key)).await, Some(b"v".to_vec()));
        let update = TxnRequest {
            compare: vec![Compare {
                result: compare::CompareResult::Equal as i32,
                target: compare::CompareTarget::Version as i32,
                key: key.clone().into(),
                target_union: Some(compare::TargetUnion::Version(1)),
                ..Compare::default()
            }],
            success: vec![RequestOp {
                request: Some(Op::RequestPut(put_req(&key, "w"))),
            }],
            failure: vec![RequestOp {
                request: Some(Op::RequestRange(get_req(&key))),
            }],
        };
        let txn = kv.txn(update).await.expect("txn").into_inner();
        assert!(txn.succeeded);
        let listed = kv
            .range(RangeRequest {
                key: prefix.clone().into(),
                range_end: format!("{prefix}~").into(),
                ..RangeRequest::default()
            })
            .await
            .expect("range")
            .into_inner();
        assert_eq!(listed.kvs.len(), 5);
        let (watches, watching) = tokio::sync::mpsc::channel(1);
        watches
            .send(WatchRequest {
                request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
                    key: key.clone().into(),
                    start_revision: 1,
                    ..WatchCreateRequest::default()
                })),
            })
            .await
            .expect("queue the watch");
        let mut events = WatchClient::new(c.channel(i).await)
            .watch(tokio_stream::wrappers::ReceiverStream::new(watching))
            .await
            .expect("watch")
            .into_inner();
        let mut seen = 0;
        tokio::time::timeout(WAIT, async {
            while seen < 2 {
                let answer = events.message().await.expect("watch stream");
                seen += answer.expect("the watch stays open").events.len();
            }
        })
        .await
        .expect("the watch's history");
        assert_eq!(seen, 2, "the put and the transaction's put");
        drop(watches);
        let after = counts().await;
        if id % 2 == 1 {
            assert!(after.0 >= before.0 + 7.0, "{before:?} -> {after:?}");
            assert!(after.1 >= before.1 + 2.0, "{before:?} -> {after:?}");
        } else {
            assert_eq!(after, (0.0, 0.0), "member {id} serves on its workers");
        }
    }
    c.shutdown().await;
}
