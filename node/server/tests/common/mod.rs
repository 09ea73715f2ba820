//! The in-process cluster harness shared by the integration tests: three
//! members on `127.0.0.1:0` listeners with data in temporary folders, a
//! 10 ms tick, and helpers for the generated etcd clients. Waits are
//! bounded; nothing asserts on durations.

#![allow(dead_code)]

use flotilla_node::compaction::AutoCompaction;
use flotilla_node::config::{
    ClientThreadSetting, ClusterState, FsyncSetting, InitialMember, NodeConfig, ReadModeSetting,
};
use flotilla_node::server::{NodeListeners, RunningNode, start, start_with};
use flotilla_proto::etcdserverpb::kv_client::KvClient;
use flotilla_proto::etcdserverpb::{PutRequest, RangeRequest};
use flotilla_raft::{NodeId, Role};
use std::future::Future;
use std::time::Duration;
use tokio::net::TcpListener;
use tonic::transport::Channel;

/// Longest any wait in these tests may take.
pub const WAIT: Duration = Duration::from_secs(20);

pub struct Cluster {
    pub nodes: Vec<RunningNode>,
    pub configs: Vec<NodeConfig>,
    pub dirs: Vec<tempfile::TempDir>,
}

pub fn node_config(
    name: &str,
    member_id: u64,
    initial: &[InitialMember],
    dir: &tempfile::TempDir,
    l: &NodeListeners,
) -> NodeConfig {
    let addr = |l: &TcpListener| l.local_addr().expect("addr").to_string();
    NodeConfig {
        name: name.to_string(),
        member_id,
        cluster_id: 0xf107,
        data_dir: dir.path().to_path_buf(),
        initial_cluster: initial.to_vec(),
        cluster_state: ClusterState::New,
        client_listen: addr(&l.client),
        client_advertise: format!("http://{}", addr(&l.client)),
        peer_listen: addr(&l.peer),
        peer_advertise: format!("http://{}", addr(&l.peer)),
        metrics_listen: addr(&l.http),
        tick: Duration::from_millis(10),
        // The node's default: 10 ticks deposed healthy leaders on a loaded
        // 2-core box (three members share one process here).
        election_ticks: 20,
        heartbeat_ticks: 1,
        snapshot_count: 10_000,
        // By the count alone: the tests that snapshot count on when.
        snapshot_min_log_percent: 0,
        snapshot_max_log_bytes: flotilla_raft::Config::SNAPSHOT_AFTER_BYTES_DEFAULT,
        // These tests do not crash machines; skipping fsync keeps them quick
        // on a small CI box.
        fsync: FsyncSetting::Never,
        follower_sync_on_loop: false,
        read_mode: ReadModeSetting::Safe,
        max_request_bytes: 64 * 1024,
        auto_compaction: AutoCompaction::Off,
        discovery_peers: Vec::new(),
        // Founders ask each other before they bootstrap; in these tests
        // the others' servers may not run yet, so do not wait long.
        discovery_timeout: Duration::from_millis(300),
        join_timeout: WAIT,
        quota_backend_bytes: Some(flotilla_node::config::DEFAULT_QUOTA_BYTES),
        max_txn_ops: 128,
        max_concurrent_streams: u32::MAX,
        max_client_connections: 4096,
        // Both placements of the client server in every cluster: members
        // with odd ids serve clients on their driver's thread (what a
        // 2-core pod does), the others on the workers.
        client_thread: if member_id % 2 == 1 {
            ClientThreadSetting::Driver
        } else {
            ClientThreadSetting::Workers
        },
        snapshot_catchup_entries: 5_000,
        shutdown_timeout: Duration::from_secs(5),
        // These in-process clusters test the KV: no broker keys or leases
        // in it (the broker tests run real processes).
        broker: flotilla_node::config::BrokerSettings {
            enabled: false,
            ..flotilla_node::config::BrokerSettings::default()
        },
    }
}

pub async fn bind() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").await.expect("bind")
}

/// Polls `f` until it gives `Some`, for at most [`WAIT`].
pub async fn eventually<T, F: Future<Output = Option<T>>>(
    what: &str,
    mut f: impl FnMut() -> F,
) -> T {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

impl Cluster {
    /// Three members, started, with a leader elected and every member's
    /// entry (with its client URL) applied on every member.
    pub async fn start() -> Cluster {
        Cluster::start_with(10_000).await
    }

    /// [`Cluster::start`], snapshotting every `snapshot_count` entries.
    pub async fn start_with(snapshot_count: u64) -> Cluster {
        Cluster::start_configured(|config| config.snapshot_count = snapshot_count).await
    }

    /// [`Cluster::start`], confirming linearizable reads with `read_mode`.
    pub async fn start_read_mode(read_mode: ReadModeSetting) -> Cluster {
        Cluster::start_configured(|c| c.read_mode = read_mode).await
    }

    /// [`Cluster::start`], with `configure` applied to every member's
    /// configuration before it starts.
    pub async fn start_configured(configure: impl Fn(&mut NodeConfig)) -> Cluster {
        Cluster::start_advertising(configure, |_| flotilla_node::transport::FEATURES).await
    }

    /// [`Cluster::start_configured`], member `i` advertising
    /// `features(i)` to its peers (0: as a member of the release before
    /// peer features).
    pub async fn start_advertising(
        configure: impl Fn(&mut NodeConfig),
        features: impl Fn(usize) -> u64,
    ) -> Cluster {
        let n = 3;
        let mut listeners = Vec::new();
        for _ in 0..n {
            listeners.push(NodeListeners {
                client: bind().await,
                peer: bind().await,
                http: bind().await,
            });
        }
        let addr = |l: &TcpListener| l.local_addr().expect("addr").to_string();
        let initial: Vec<InitialMember> = listeners
            .iter()
            .enumerate()
            .map(|(i, l)| InitialMember {
                name: format!("n{}", i + 1),
                id: i as u64 + 1,
                peer_url: format!("http://{}", addr(&l.peer)),
            })
            .collect();
        let dirs: Vec<tempfile::TempDir> = (0..n)
            .map(|_| tempfile::tempdir().expect("tempdir"))
            .collect();
        let mut nodes = Vec::new();
        let mut configs = Vec::new();
        for (i, l) in listeners.into_iter().enumerate() {
            let mut config =
                node_config(&format!("n{}", i + 1), i as u64 + 1, &initial, &dirs[i], &l);
            configure(&mut config);
            configs.push(config.clone());
            let io = flotilla_node::server::NodeIo {
                advertised_features: features(i),
                ..flotilla_node::server::NodeIo::default()
            };
            nodes.push(start_with(config, l, io).await.expect("start"));
        }
        let c = Cluster {
            nodes,
            configs,
            dirs,
        };
        c.wait_ready().await;
        c
    }

    pub async fn wait_ready(&self) {
        eventually("a leader all members agree on", || async {
            let leaders: Vec<u64> = self
                .nodes
                .iter()
                .map(|n| n.raft().status().leader.0)
                .collect();
            (leaders[0] != 0 && leaders.iter().all(|l| *l == leaders[0])).then_some(())
        })
        .await;
        for node in &self.nodes {
            eventually("every member published", || async {
                let members = node
                    .raft()
                    .read_local(|sm| sm.kv().members())
                    .await
                    .expect("read");
                (members.len() == 3 && members.iter().all(|m| !m.client_ur_ls.is_empty()))
                    .then_some(())
            })
            .await;
        }
    }

    pub fn leader(&self) -> usize {
        self.nodes
            .iter()
            .position(|n| n.raft().status().role == Role::Leader)
            .expect("a leader")
    }

    pub fn follower(&self) -> usize {
        (self.leader() + 1) % self.nodes.len()
    }

    pub fn url(&self, i: usize) -> String {
        format!("http://{}", self.nodes[i].client_addr())
    }

    pub async fn channel(&self, i: usize) -> Channel {
        Channel::from_shared(self.url(i))
            .expect("url")
            .connect()
            .await
            .expect("connect")
    }

    pub async fn kv(&self, i: usize) -> KvClient<Channel> {
        KvClient::new(self.channel(i).await)
    }

    /// The member id of member `i` (`i + 1` for the founding members).
    pub fn id(&self, i: usize) -> NodeId {
        NodeId(self.nodes[i].member_id())
    }

    /// Every member's client URL, for a client of the whole cluster.
    pub fn endpoints(&self) -> Vec<String> {
        (0..self.nodes.len()).map(|i| self.url(i)).collect()
    }

    /// The member that is leader now, if any.
    pub fn try_leader(&self) -> Option<usize> {
        self.nodes
            .iter()
            .position(|n| n.raft().status().role == Role::Leader)
    }

    /// Splits the members into `groups` (indexes): no peer message crosses
    /// from one group to another, in either direction (faults act where a
    /// member sends, so every member blocks every member outside its
    /// group). Members in no group are cut off from everyone.
    pub fn partition(&self, groups: &[Vec<usize>]) {
        for i in 0..self.nodes.len() {
            let group = groups.iter().find(|g| g.contains(&i));
            let blocked: Vec<NodeId> = (0..self.nodes.len())
                .filter(|j| *j != i && !group.is_some_and(|g| g.contains(j)))
                .map(|j| self.id(j))
                .collect();
            let faults = self.nodes[i].faults();
            faults.heal();
            faults.partition(blocked);
        }
    }

    /// Cuts member `i` off from all the others, both ways.
    pub fn isolate(&self, i: usize) {
        let rest: Vec<usize> = (0..self.nodes.len()).filter(|j| *j != i).collect();
        self.partition(&[vec![i], rest]);
    }

    /// Removes every partition.
    pub fn heal(&self) {
        for node in &self.nodes {
            node.faults().heal();
        }
    }

    /// Waits until some member of `members` leads with the votes of
    /// `members` (every one of them names it as leader); returns it.
    pub async fn leader_among(&self, members: &[usize]) -> usize {
        eventually("a leader in the group", || async {
            let leader = members
                .iter()
                .copied()
                .find(|i| self.nodes[*i].raft().status().role == Role::Leader)?;
            let id = self.id(leader);
            members
                .iter()
                .all(|i| self.nodes[*i].raft().status().leader == id)
                .then_some(leader)
        })
        .await
    }

    /// Stops member `i` (as a crash would, minus the lost page cache:
    /// these tests do not fsync), keeps it down for `down`, and starts it
    /// again from its data folder on the same addresses, which the other
    /// members know it by.
    pub async fn restart(&mut self, i: usize, down: Duration) {
        let config = self.configs[i].clone();
        let (client, peer, http) = (
            self.nodes[i].client_addr(),
            self.nodes[i].peer_addr(),
            self.nodes[i].http_addr(),
        );
        let stopped = self.nodes.remove(i);
        tokio::time::timeout(WAIT, stopped.shutdown())
            .await
            .expect("shutdown within the wait")
            .expect("clean shutdown");
        tokio::time::sleep(down).await;
        let rebind = |addr: std::net::SocketAddr| async move {
            eventually("the port to be free again", || async {
                TcpListener::bind(addr).await.ok()
            })
            .await
        };
        let l = NodeListeners {
            client: rebind(client).await,
            peer: rebind(peer).await,
            http: rebind(http).await,
        };
        self.nodes
            .insert(i, start(config, l).await.expect("restart"));
    }

    pub async fn shutdown(self) {
        for node in self.nodes {
            node.shutdown().await.expect("clean shutdown");
        }
    }
}

pub fn put_req(key: &str, value: &str) -> PutRequest {
    PutRequest {
        key: key.into(),
        value: value.into(),
        ..Default::default()
    }
}

pub fn get_req(key: &str) -> RangeRequest {
    RangeRequest {
        key: key.into(),
        ..Default::default()
    }
}

pub async fn value_of(kv: &mut KvClient<Channel>, req: RangeRequest) -> Option<Vec<u8>> {
    let r = kv.range(req).await.expect("range").into_inner();
    r.kvs.into_iter().next().map(|kv| kv.value)
}

pub fn with_ids<T>(message: T, client: &'static str, seq: &'static str) -> tonic::Request<T> {
    let mut r = tonic::Request::new(message);
    r.metadata_mut()
        .insert("flotilla-client-id", client.parse().expect("ascii"));
    r.metadata_mut()
        .insert("flotilla-seq", seq.parse().expect("ascii"));
    r
}

/// A history-recording client run's shared state: the recorder, the clock
/// every client stamps operations with, and the stop flag. Each suite adds
/// its own client loop in an `impl Run` of its own.
#[derive(Clone)]
pub struct Run {
    pub recorder: std::sync::Arc<flotilla_tests::linearizability::HistoryRecorder>,
    pub start: std::time::Instant,
    pub stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Run {
    pub fn new() -> Run {
        Run {
            recorder: std::sync::Arc::default(),
            start: std::time::Instant::now(),
            stop: std::sync::Arc::default(),
        }
    }

    /// Nanoseconds since the run started: the clock all clients share.
    pub fn now(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }
}
