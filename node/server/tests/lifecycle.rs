//! A member's lifecycle, in process: the leadership hand-off a stopping
//! leader runs (also behind `GET /prestop`), `/readyz` once a member caught
//! up, and a storage failure that ends the member (`/livez`, and what the
//! process waits on). The process-level versions — SIGTERM under load, a
//! real exit code — are in `orchestration.rs`.

mod common;

use common::{Cluster, WAIT, bind, eventually, get_req, node_config, put_req, value_of};
use flotilla_node::config::{FsyncSetting, InitialMember};
use flotilla_node::lifecycle::HandedOff;
use flotilla_node::server::{NodeIo, NodeListeners, start_with};
use flotilla_raft::Role;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `GET path` on the HTTP port at `addr`: the status code and the body.
async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let call = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.expect("write");
        let mut buf = String::new();
        s.read_to_string(&mut buf).await.expect("read");
        let code = buf[9..12].parse().expect("status code");
        let body = buf.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
        (code, body)
    };
    tokio::time::timeout(WAIT, call).await.expect("answered")
}

/// Thesis §3.10 as a stop: the leader hands over to a caught-up voter,
/// which then leads with every acknowledged write; a follower has nothing
/// to hand over.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_leader_hands_leadership_to_a_caught_up_voter() {
    let c = Cluster::start().await;
    let old = c.leader();
    let mut kv = c.kv(old).await;
    for i in 0..20 {
        kv.put(put_req(&format!("k{i}"), "v")).await.expect("put");
    }
    let follower = c.follower();
    assert_eq!(
        c.nodes[follower].hand_off().run().await,
        Ok(HandedOff::NotLeader)
    );

    let done = c.nodes[old].hand_off().run().await.expect("handed off");
    let HandedOff::Transferred { to, leader } = done else {
        panic!("expected a transfer, got {done:?}");
    };
    assert_eq!(to, leader, "the chosen voter won");
    assert_ne!(leader, c.id(old));
    let new = (0..3).find(|i| c.id(*i) == leader).expect("a member");
    // The old leader learned of its successor from the successor's first
    // message, which a new leader sends before its driver publishes its
    // own status: wait for that status rather than read it at once.
    eventually("the new leader's status to say Leader", || async {
        (c.nodes[new].raft().status().role == Role::Leader).then_some(())
    })
    .await;
    assert_eq!(c.nodes[old].raft().status().role, Role::Follower);
    let mut kv = c.kv(new).await;
    for i in 0..20 {
        assert_eq!(
            value_of(&mut kv, get_req(&format!("k{i}"))).await,
            Some(b"v".to_vec()),
            "k{i} survived the hand-off"
        );
    }
    c.shutdown().await;
}

/// The preStop hook: `GET /prestop` on the leader hands leadership over
/// and answers 200 once this member follows; on a follower it answers 200
/// at once. Every member's `/readyz` is 200 once it caught up.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn prestop_hands_off_and_readyz_follows_catch_up() {
    let c = Cluster::start().await;
    for i in 0..3 {
        let addr = c.nodes[i].http_addr();
        eventually("readyz to turn 200", || async {
            (http_get(addr, "/readyz").await.0 == 200).then_some(())
        })
        .await;
        assert_eq!(http_get(addr, "/livez").await.0, 200);
    }
    let follower = c.follower();
    let (code, body) = http_get(c.nodes[follower].http_addr(), "/prestop").await;
    assert_eq!(
        (code, body.as_str()),
        (200, "ok: this member does not lead\n")
    );

    let old = c.leader();
    let (code, body) = http_get(c.nodes[old].http_addr(), "/prestop").await;
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("leadership handed to member"), "{body}");
    assert_ne!(c.nodes[old].raft().status().role, Role::Leader);
    assert!(c.nodes[old].raft().status().leader.is_some());
    c.shutdown().await;
}

/// A failed fsync stops the driver for good: the member reports it through
/// `failed()` (what the process waits on to exit non-zero), and `/livez`
/// turns 503 with the reason. The fault layer fails every fsync from the
/// armed one on, as a disk that went away would.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_fsync_ends_the_member() {
    let dir = tempfile::tempdir().expect("tempdir");
    let l = NodeListeners {
        client: bind().await,
        peer: bind().await,
        http: bind().await,
    };
    let initial = [InitialMember {
        name: "solo".into(),
        id: 1,
        peer_url: format!("http://{}", l.peer.local_addr().expect("addr")),
    }];
    let mut config = node_config("solo", 1, &initial, &dir, &l);
    config.fsync = FsyncSetting::Always;
    let fs = flotilla_storage::FaultyFs::new();
    let io = NodeIo {
        fs: Some(Arc::new(fs.clone())),
        ..NodeIo::default()
    };
    let node = start_with(config, l, io).await.expect("start");
    let url = format!("http://{}", node.client_addr());
    let mut kv = flotilla_proto::etcdserverpb::kv_client::KvClient::connect(url)
        .await
        .expect("connect");
    eventually("a first write", || {
        let mut kv = kv.clone();
        async move { kv.put(put_req("before", "1")).await.ok() }
    })
    .await;
    assert_eq!(node.fatal_error(), None);
    assert_eq!(http_get(node.http_addr(), "/livez").await.0, 200);

    fs.fail_fsync_after(1);
    let failed = kv.put(put_req("after", "1")).await;
    assert!(
        failed.is_err(),
        "a write whose fsync failed is never acknowledged"
    );
    let reason = tokio::time::timeout(WAIT, node.failed())
        .await
        .expect("the member reports the failure");
    assert!(reason.contains("injected fsync failure"), "{reason}");
    let (code, body) = http_get(node.http_addr(), "/livez").await;
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("fatal"), "{body}");
    let stopped = tokio::time::timeout(Duration::from_secs(5), node.shutdown())
        .await
        .expect("a failed member still stops");
    assert!(stopped.is_err(), "the storage error is the stop's result");
}
