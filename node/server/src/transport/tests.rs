//! Three drivers over on-disk storage, talking real gRPC on loopback through
//! [`GrpcTransport`] and [`PeerService`]: agreement, a partitioned leader
//! replaced and caught up after healing, a member restarted on its old port.

use super::*;
use crate::driver::{Driver, DriverConfig, RaftHandle, StateMachine};
use crate::test_support::Recorder;
use flotilla_raft::{Bytes, Config, NodeId, Raft, Role, Term};
use flotilla_storage::{DiskStorage, StorageOptions};
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const CLUSTER: u64 = 7;

/// Fails the test instead of hanging it.
async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), f)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}

/// Small backoffs so reconnects happen within a test's patience.
pub(super) fn test_config() -> TransportConfig {
    TransportConfig {
        backoff_min: Duration::from_millis(10),
        backoff_max: Duration::from_millis(200),
        connect_timeout: Duration::from_millis(500),
        ..TransportConfig::default()
    }
}

struct Node {
    handle: RaftHandle<Recorder>,
    transport: GrpcTransport,
    stop_driver: oneshot::Sender<()>,
    stop_server: oneshot::Sender<()>,
    driver: JoinHandle<()>,
    server: JoinHandle<()>,
}

struct GrpcCluster {
    dirs: Vec<tempfile::TempDir>,
    addrs: Vec<SocketAddr>,
    /// Per member, kept across restarts so a test's faults survive them.
    faults: Vec<FaultControl>,
    nodes: Vec<Option<Node>>,
}

fn id(i: usize) -> NodeId {
    NodeId(i as u64 + 1)
}

impl GrpcCluster {
    async fn new(n: usize) -> GrpcCluster {
        let mut listeners = Vec::new();
        for _ in 0..n {
            listeners.push(TcpListener::bind("127.0.0.1:0").await.expect("bind"));
        }
        let mut c = GrpcCluster {
            dirs: (0..n)
                .map(|_| tempfile::tempdir().expect("tempdir"))
                .collect(),
            addrs: listeners
                .iter()
                .map(|l| l.local_addr().expect("addr"))
                .collect(),
            faults: (0..n).map(|i| FaultControl::new(i as u64)).collect(),
            nodes: (0..n).map(|_| None).collect(),
        };
        for (i, listener) in listeners.into_iter().enumerate() {
            c.start(i, listener);
        }
        c
    }

    fn start(&mut self, i: usize, listener: TcpListener) {
        let n = self.nodes.len();
        let mut options = StorageOptions::new(CLUSTER, id(i).0);
        options.bootstrap = Some(flotilla_raft::ConfState {
            voters: (0..n).map(id).collect(),
            learners: Vec::new(),
        });
        let storage = DiskStorage::open(self.dirs[i].path(), options).expect("open storage");
        let mut sm = Recorder::default();
        let snapshot = flotilla_raft::Storage::snapshot(&storage).expect("snapshot");
        if snapshot.meta.index > 0 {
            sm.restore(&snapshot).expect("restore");
        }
        let mut config = Config::new(id(i));
        config.election_ticks = 10;
        config.heartbeat_ticks = 2;
        let raft = Raft::new(config, storage).expect("raft");

        let transport = GrpcTransport::new(CLUSTER, test_config(), self.faults[i].clone());
        let peers: HashMap<NodeId, String> = (0..n)
            .filter(|&j| j != i)
            .map(|j| (id(j), format!("http://{}", self.addrs[j])))
            .collect();
        transport.set_peers(&peers).expect("valid peer URLs");
        let (driver, handle) = Driver::new(
            raft,
            sm,
            transport.clone(),
            DriverConfig {
                tick_interval: Duration::from_millis(10),
                ..DriverConfig::default()
            },
        );
        let service =
            PeerService::new(CLUSTER, handle.clone(), &test_config(), transport.metrics());
        let (stop_server, server_stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            serve(listener, service, async {
                let _ = server_stopped.await;
            })
            .await
            .expect("server ran");
        });
        let (stop_driver, driver_stopped) = oneshot::channel::<()>();
        let driver = tokio::spawn(async move {
            driver
                .run(async {
                    let _ = driver_stopped.await;
                })
                .await
                .expect("storage works");
        });
        self.nodes[i] = Some(Node {
            handle,
            transport,
            stop_driver,
            stop_server,
            driver,
            server,
        });
    }

    /// Stops member `i` whole: driver, outgoing streams and server. The
    /// server must end although peers still hold streams open to it.
    async fn stop(&mut self, i: usize) {
        let node = self.nodes[i].take().expect("running");
        let _ = node.stop_driver.send(());
        within("driver stops", node.driver)
            .await
            .expect("driver task");
        node.transport.shutdown();
        let _ = node.stop_server.send(());
        within("server stops", node.server)
            .await
            .expect("server task");
    }

    /// Starts member `i` again on its old address, from its data on disk.
    async fn restart(&mut self, i: usize) {
        let mut listener = None;
        for _ in 0..100 {
            match TcpListener::bind(self.addrs[i]).await {
                Ok(l) => {
                    listener = Some(l);
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
        self.start(i, listener.expect("the old port is free again"));
    }

    fn node(&self, i: usize) -> &Node {
        self.nodes[i].as_ref().expect("running")
    }

    fn handle(&self, i: usize) -> &RaftHandle<Recorder> {
        &self.node(i).handle
    }

    /// A member of `among` that leads in a term above `after`.
    async fn leader_among(&self, among: &[usize], after: Term) -> usize {
        for _ in 0..1000 {
            for &i in among {
                let s = self.handle(i).status();
                if s.role == Role::Leader && s.term > after {
                    return i;
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("no leader elected among {among:?} after term {after:?}");
    }

    async fn leader(&self) -> usize {
        let all: Vec<usize> = (0..self.nodes.len()).collect();
        self.leader_among(&all, Term(0)).await
    }

    async fn propose(&self, i: usize, command: String) -> usize {
        within("proposal", self.handle(i).propose(Bytes::from(command)))
            .await
            .expect("proposal applied")
    }

    /// Waits until member `i` applied `count` commands; returns them.
    async fn wait_commands(&self, i: usize, count: usize) -> Vec<Bytes> {
        for _ in 0..2000 {
            let commands = within(
                "local read",
                self.handle(i)
                    .read_local(|sm: &Recorder| sm.commands.clone()),
            )
            .await
            .expect("read");
            if commands.len() >= count {
                return commands;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("member {i} did not reach {count} commands");
    }

    /// Stops every member, so no task outlives the test's runtime.
    async fn shutdown(mut self) {
        for i in 0..self.nodes.len() {
            if self.nodes[i].is_some() {
                self.stop(i).await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_elect_a_leader_and_agree_over_grpc() {
    let c = GrpcCluster::new(3).await;
    let l = c.leader().await;
    for i in 0..50 {
        let out = c.propose(l, format!("cmd-{i}")).await;
        assert_eq!(out, i + 1, "outputs count the applied commands");
    }
    let expected = c.wait_commands(l, 50).await;
    for i in 0..3 {
        assert_eq!(c.wait_commands(i, 50).await, expected, "member {i}");
    }
    let stats = c.node(l).transport.stats();
    assert!(stats.batches_sent > 0 && stats.messages_sent >= stats.batches_sent);
    assert!(stats.messages_received > 0, "{stats:?}");
    assert_eq!(stats.decode_errors, 0);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_leader_is_replaced_and_catches_up_after_healing() {
    let c = GrpcCluster::new(3).await;
    let old = c.leader().await;
    for i in 0..5 {
        c.propose(old, format!("before-{i}")).await;
    }
    let old_term = c.handle(old).status().term;
    let others: Vec<usize> = (0..3).filter(|&i| i != old).collect();
    // Cut the leader off both ways: each side drops what it sends across.
    c.faults[old].partition(others.iter().map(|&i| id(i)));
    for &i in &others {
        c.faults[i].partition([id(old)]);
    }
    let new = c.leader_among(&others, old_term).await;
    for i in 0..10 {
        c.propose(new, format!("during-{i}")).await;
    }
    let expected = c.wait_commands(new, 15).await;
    assert!(c.node(old).transport.stats().dropped_fault > 0);
    // The old leader could not have applied what the majority wrote meanwhile.
    let stale = within(
        "local read",
        c.handle(old).read_local(|sm: &Recorder| sm.commands.len()),
    )
    .await
    .expect("read");
    assert_eq!(stale, 5);

    for f in &c.faults {
        f.heal();
    }
    assert_eq!(c.wait_commands(old, 15).await, expected);
    let after = c.handle(old).status();
    assert_ne!(after.role, Role::Leader, "the old leader stepped down");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_restarted_on_its_port_is_reconnected_and_catches_up() {
    let mut c = GrpcCluster::new(3).await;
    let l = c.leader().await;
    for i in 0..10 {
        c.propose(l, format!("a{i}")).await;
    }
    let victim = (l + 1) % 3;
    c.wait_commands(victim, 10).await;
    c.stop(victim).await;
    for i in 0..10 {
        c.propose(l, format!("b{i}")).await;
    }
    c.restart(victim).await;
    let commands = c.wait_commands(victim, 20).await;
    assert_eq!(commands.len(), 20);
    assert_eq!(commands[19], Bytes::from_static(b"b9"));
    // The leader's stream to the victim broke and came back.
    let stats = c.node(l).transport.stats();
    assert!(stats.stream_failures >= 1, "{stats:?}");
    assert!(stats.reconnects >= 1, "{stats:?}");
    c.shutdown().await;
}
