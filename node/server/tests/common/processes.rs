//! A cluster of real `flotilla-node` processes for crash tests: three
//! members on loopback ports, each with its data in a temporary folder and
//! fsync on, that a test can kill abruptly (SIGKILL) and start again from
//! their data folders. Every child is killed and reaped when the cluster is
//! dropped, also when a test panics; a panicking test also gets the tail of
//! every member's log. Waits are bounded; nothing asserts on durations.

// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use flotilla_proto::etcdserverpb::StatusRequest;
use flotilla_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use flotilla_proto::etcdserverpb::{MemberListRequest, cluster_client::ClusterClient};
use rustix::process::{Pid, Signal, kill_process};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tonic::transport::Channel;

/// The member binary built for this package's tests.
const NODE_BIN: &str = env!("CARGO_BIN_EXE_flotilla-node");

/// Longest any wait here may take.
pub const PROCESS_WAIT: Duration = Duration::from_secs(30);

/// Attempts at starting one member when its ports turn out to be taken
/// (another process may grab a port while the member is down).
const START_ATTEMPTS: u32 = 5;

/// Lines of each member's log shown when a test fails.
const LOG_TAIL_LINES: usize = 25;

/// Ports are picked here, below Linux's default ephemeral range (32768 and
/// up), so outgoing connections of other processes do not take a member's
/// port while it is down.
const PORT_RANGE: std::ops::Range<u16> = 20_000..32_000;

/// Settings every member of a [`ProcessCluster`] gets.
#[derive(Clone, Debug)]
pub struct ProcessOptions {
    /// `--read-mode`: `safe` or `lease`.
    pub read_mode: &'static str,
    /// `--tick-ms`.
    pub tick_ms: u64,
    /// `--election-ticks`.
    pub election_ticks: u32,
    /// `--snapshot-count`: small, so restarts also load snapshots.
    pub snapshot_count: u64,
    /// `--initial-cluster-token`.
    pub token: &'static str,
    /// More flags for every member.
    pub extra_args: Vec<String>,
    /// Run the broker (off for the KV suites, whose checks read the whole
    /// keyspace and the lease list).
    pub broker: bool,
    /// Members advertise (and know each other by) host names
    /// `n<i>.flotilla.test`, resolved from the cluster's test hosts file
    /// ([`ProcessCluster::set_hosts`], through the test-only
    /// `FLOTILLA_TEST_ONLY_HOSTS_FILE`), instead of loopback addresses.
    pub named: bool,
}

impl Default for ProcessOptions {
    fn default() -> Self {
        ProcessOptions {
            read_mode: "safe",
            tick_ms: 10,
            election_ticks: 20, // the node's default
            snapshot_count: 100,
            token: "kv-crashes",
            extra_args: Vec::new(),
            named: false,
            broker: false,
        }
    }
}

/// One member: its ports, data folder, log file and (while it runs) its
/// process.
#[derive(Debug)]
pub struct Member {
    pub name: String,
    pub client_port: u16,
    pub peer_port: u16,
    pub http_port: u16,
    /// Its Kafka listener's port (served when the cluster runs the broker).
    pub kafka_port: u16,
    pub data_dir: tempfile::TempDir,
    pub log_path: PathBuf,
    child: Option<Child>,
    /// Times this member was started.
    pub starts: u32,
    /// The loopback address it listens on (any of 127.0.0.0/8 on Linux).
    pub ip: String,
    /// The name it is advertised by, when the cluster is `named`.
    pub host: Option<String>,
    /// More environment for its next starts (test-only hooks).
    pub env: Vec<(String, String)>,
    /// For a member added after the cluster started: the
    /// `--initial-cluster` it joins with (`--initial-cluster-state
    /// existing`), as `etcdctl member add` prints it.
    pub join_cluster: Option<String>,
    /// More flags for its next starts.
    pub extra_args: Vec<String>,
}

impl Member {
    pub fn url(&self) -> String {
        format!("http://{}:{}", self.ip, self.client_port)
    }

    /// Where its HTTP port (probes, metrics, /prestop) listens.
    pub fn http_addr(&self) -> String {
        format!("{}:{}", self.ip, self.http_port)
    }

    /// Where its Kafka listener listens (`host:port`), when the cluster
    /// runs the broker.
    pub fn kafka_addr(&self) -> String {
        format!("{}:{}", self.ip, self.kafka_port)
    }

    /// Its advertised peer URL.
    pub fn peer_url(&self) -> String {
        format!("http://{}:{}", self.advertised(), self.peer_port)
    }

    /// How other members reach it: its name, or its address.
    fn advertised(&self) -> &str {
        self.host.as_deref().unwrap_or(&self.ip)
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }
}

/// Three `flotilla-node` processes; see the module docs.
#[derive(Debug)]
pub struct ProcessCluster {
    pub members: Vec<Member>,
    initial_cluster: String,
    options: ProcessOptions,
    /// Printed when a test panics while the cluster is up: how to replay it.
    pub replay_hint: String,
    /// The test hosts file of a `named` cluster.
    hosts_file: PathBuf,
    logs: tempfile::TempDir,
}

/// A random number from the OS-seeded hasher: port choice must differ
/// between runs and between test processes, unlike the seeded schedule.
fn os_random() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one((std::process::id(), std::time::SystemTime::now()))
}

/// Every port this test process has handed out. Tests of one binary run in
/// parallel and a bind probe only says a port is free now: without this, a
/// test could pick a port another test's member is about to bind, or one
/// whose member is down for a restart. Ports stay taken for the process's
/// life (a few dozen per test out of 12,000).
static HANDED_OUT: std::sync::Mutex<std::collections::BTreeSet<u16>> =
    std::sync::Mutex::new(std::collections::BTreeSet::new());

/// `count` distinct ports in [`PORT_RANGE`] that can be bound on
/// 127.0.0.1 right now and that no other test of this process was given.
fn free_ports(count: usize) -> Vec<u16> {
    let span = u64::from(PORT_RANGE.end - PORT_RANGE.start);
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    let mut ports = Vec::new();
    for _ in 0..count * 50 {
        if ports.len() == count {
            break;
        }
        let port = PORT_RANGE.start + (os_random() % span) as u16;
        if !handed_out.contains(&port) && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            handed_out.insert(port);
            ports.push(port);
        }
    }
    assert_eq!(
        ports.len(),
        count,
        "cannot find {count} free loopback ports"
    );
    ports
}

/// A lazily connected channel to `url` that gives up connecting quickly.
pub fn channel(url: &str) -> Channel {
    Channel::from_shared(url.to_string())
        .expect("url")
        .connect_timeout(Duration::from_millis(300))
        .connect_lazy()
}

/// What one member says about itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemberStatus {
    pub member_id: u64,
    pub leader: u64,
    pub applied: u64,
}

/// Maintenance.Status of the member at `url`, if it answers within
/// `deadline`.
pub async fn status_at(url: &str, deadline: Duration) -> Option<MemberStatus> {
    let mut req = tonic::Request::new(StatusRequest {});
    req.set_timeout(deadline);
    let mut client = MaintenanceClient::new(channel(url));
    let s = tokio::time::timeout(deadline, client.status(req))
        .await
        .ok()?
        .ok()?;
    let s = s.into_inner();
    Some(MemberStatus {
        member_id: s.header?.member_id,
        leader: s.leader,
        applied: s.raft_applied_index,
    })
}

/// Polls `f` until it gives `Some`, for at most [`PROCESS_WAIT`].
async fn wait_for<T, F: Future<Output = Option<T>>>(what: &str, mut f: impl FnMut() -> F) -> T {
    let deadline = tokio::time::Instant::now() + PROCESS_WAIT;
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

/// The last `lines` lines of the file at `path` (at most 64 KiB read).
fn tail(path: &PathBuf, lines: usize) -> String {
    let Ok(mut f) = File::open(path) else {
        return "(no log)".into();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(64 * 1024)));
    let mut text = String::new();
    let _ = f.read_to_string(&mut text);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

impl ProcessCluster {
    /// Starts three members and waits until they agree on a leader and
    /// every member's client URL is published.
    pub async fn start(options: ProcessOptions, replay_hint: String) -> ProcessCluster {
        let mut c = ProcessCluster::prepare(options, replay_hint);
        c.start_prepared().await;
        c
    }

    /// Three members with their ports and empty data folders, not started:
    /// a test may fill the folders (a restored snapshot) first. In a
    /// `named` cluster the names resolve (to 127.0.0.1) from the start.
    pub fn prepare(options: ProcessOptions, replay_hint: String) -> ProcessCluster {
        ProcessCluster::prepare_resolvable(options, replay_hint, true)
    }

    /// Starts every member of a [`ProcessCluster::prepare`]d cluster and
    /// waits as [`ProcessCluster::start`] does.
    pub async fn start_prepared(&mut self) {
        for i in 0..self.members.len() {
            self.spawn(i);
        }
        for i in 0..self.members.len() {
            self.wait_serving(i).await;
        }
        self.wait_ready().await;
    }

    /// The `--initial-cluster` flag every founding member gets.
    pub fn initial_cluster(&self) -> &str {
        &self.initial_cluster
    }

    /// Starts the three members' processes without waiting for anything.
    /// In a `named` cluster, the names resolve (to 127.0.0.1) from the
    /// start if `resolvable`; otherwise the hosts file is empty and no name
    /// resolves until [`ProcessCluster::set_hosts`].
    pub fn spawn_all(
        options: ProcessOptions,
        replay_hint: String,
        resolvable: bool,
    ) -> ProcessCluster {
        let mut c = ProcessCluster::prepare_resolvable(options, replay_hint, resolvable);
        for i in 0..c.members.len() {
            c.spawn(i);
        }
        c
    }

    fn prepare_resolvable(
        options: ProcessOptions,
        replay_hint: String,
        resolvable: bool,
    ) -> ProcessCluster {
        let logs = tempfile::tempdir().expect("tempdir");
        let ports = free_ports(12);
        let members: Vec<Member> = (0..3)
            .map(|i| Member {
                name: format!("n{}", i + 1),
                client_port: ports[4 * i],
                peer_port: ports[4 * i + 1],
                http_port: ports[4 * i + 2],
                kafka_port: ports[4 * i + 3],
                data_dir: tempfile::tempdir().expect("tempdir"),
                log_path: logs.path().join(format!("n{}.log", i + 1)),
                child: None,
                starts: 0,
                ip: "127.0.0.1".into(),
                host: options.named.then(|| format!("n{}.flotilla.test", i + 1)),
                env: Vec::new(),
                join_cluster: None,
                extra_args: Vec::new(),
            })
            .collect();
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url()))
            .collect::<Vec<_>>()
            .join(",");
        let hosts_file = logs.path().join("hosts");
        std::fs::write(&hosts_file, "").expect("hosts file");
        let c = ProcessCluster {
            members,
            initial_cluster,
            options,
            replay_hint,
            hosts_file,
            logs,
        };
        if c.options.named && resolvable {
            let all: Vec<(usize, String)> = (0..3).map(|i| (i, "127.0.0.1".into())).collect();
            c.set_hosts(&all);
        }
        c
    }

    /// Rewrites the test hosts file (atomically: a member never reads half
    /// of it) so that member `i`'s name resolves to `ip` for each given
    /// pair, and no other name resolves.
    pub fn set_hosts(&self, entries: &[(usize, String)]) {
        let text: String = entries
            .iter()
            .map(|(i, ip)| {
                let host = self.members[*i].host.as_deref().expect("a named cluster");
                format!("{ip} {host}\n")
            })
            .collect();
        let tmp = self.hosts_file.with_extension("tmp");
        std::fs::write(&tmp, text).expect("write hosts");
        std::fs::rename(&tmp, &self.hosts_file).expect("replace hosts");
    }

    fn command(&self, i: usize) -> Command {
        let m = &self.members[i];
        let mut cmd = Command::new(NODE_BIN);
        // Settings from the test's own environment must not leak in.
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("FLOTILLA_") {
                cmd.env_remove(name);
            }
        }
        let url = |port: u16| format!("http://{}:{port}", m.ip);
        let advertised = format!("http://{}:{}", m.advertised(), m.client_port);
        if self.options.named {
            cmd.env("FLOTILLA_TEST_ONLY_HOSTS_FILE", &self.hosts_file);
        }
        for (name, value) in &m.env {
            cmd.env(name, value);
        }
        cmd.args(&self.options.extra_args);
        if self.options.broker {
            cmd.arg("--kafka-listen-addr")
                .arg(m.kafka_addr())
                .arg("--kafka-advertise-addr")
                .arg(format!("{}:{}", m.advertised(), m.kafka_port));
        } else {
            cmd.arg("--broker-enabled=false");
        }
        let (initial_cluster, state) = match &m.join_cluster {
            Some(cluster) => (cluster.as_str(), "existing"),
            None => (self.initial_cluster.as_str(), "new"),
        };
        cmd.env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .arg("--name")
            .arg(&m.name)
            .arg("--data-dir")
            .arg(m.data_dir.path())
            .arg("--initial-cluster")
            .arg(initial_cluster)
            .arg("--initial-cluster-state")
            .arg(state)
            .arg("--initial-cluster-token")
            .arg(self.options.token)
            .arg("--initial-advertise-peer-urls")
            .arg(m.peer_url())
            .arg("--discovery-timeout-ms")
            .arg("500")
            .arg("--join-timeout-ms")
            .arg(PROCESS_WAIT.as_millis().to_string())
            .arg("--listen-client-urls")
            .arg(url(m.client_port))
            .arg("--advertise-client-urls")
            .arg(advertised)
            .arg("--listen-peer-urls")
            .arg(url(m.peer_port))
            .arg("--listen-metrics-urls")
            .arg(url(m.http_port))
            .arg("--fsync")
            .arg("always")
            .arg("--read-mode")
            .arg(self.options.read_mode)
            .arg("--tick-ms")
            .arg(self.options.tick_ms.to_string())
            .arg("--election-ticks")
            .arg(self.options.election_ticks.to_string())
            .arg("--heartbeat-ticks")
            .arg("1")
            .arg("--snapshot-count")
            .arg(self.options.snapshot_count.to_string())
            .args(["--snapshot-min-log-percent", "0"])
            .args(&m.extra_args);
        cmd
    }

    /// Starts member `i`'s process (its log appended to its log file).
    fn spawn(&mut self, i: usize) {
        assert!(
            self.members[i].child.is_none(),
            "member {i} is already running"
        );
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.members[i].log_path)
            .expect("log file");
        let err = log.try_clone().expect("log file");
        let child = self
            .command(i)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .expect("spawn flotilla-node");
        self.members[i].child = Some(child);
        self.members[i].starts += 1;
    }

    /// Waits until member `i` answers Status. If its process exits first
    /// (a port taken while it was down), starts it again, a bounded number
    /// of times.
    pub async fn wait_serving(&mut self, i: usize) {
        let url = self.members[i].url();
        for attempt in 1..=START_ATTEMPTS {
            let deadline = tokio::time::Instant::now() + PROCESS_WAIT;
            loop {
                let child = self.members[i].child.as_mut().expect("running");
                if let Some(exit) = child.try_wait().expect("try_wait") {
                    self.members[i].child = None;
                    assert!(
                        attempt < START_ATTEMPTS,
                        "member {i} exited at start ({exit}) {START_ATTEMPTS} times; log:\n{}",
                        tail(&self.members[i].log_path, LOG_TAIL_LINES)
                    );
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    self.spawn(i);
                    break;
                }
                if status_at(&url, Duration::from_millis(300)).await.is_some() {
                    return;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "member {i} did not answer within the wait"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }

    /// Every member's client URL.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(Member::url).collect()
    }

    /// The client URLs of the members running now.
    pub fn running_endpoints(&self) -> Vec<String> {
        self.members
            .iter()
            .filter(|m| m.is_running())
            .map(Member::url)
            .collect()
    }

    /// A member not yet started, on free loopback ports, with an empty data
    /// folder: it joins the running cluster with `join_cluster` as its
    /// `--initial-cluster` (set it before [`ProcessCluster::start_member`]).
    pub fn add_spare(&mut self) -> usize {
        let ports = free_ports(4);
        let n = self.members.len() + 1;
        self.members.push(Member {
            name: format!("n{n}"),
            client_port: ports[0],
            peer_port: ports[1],
            http_port: ports[2],
            kafka_port: ports[3],
            data_dir: tempfile::tempdir().expect("tempdir"),
            log_path: self.logs.path().join(format!("n{n}.log")),
            child: None,
            starts: 0,
            ip: "127.0.0.1".into(),
            host: None,
            env: Vec::new(),
            join_cluster: Some(String::new()),
            extra_args: Vec::new(),
        });
        n - 1
    }

    /// Starts member `i` (a spare, or one stopped) and waits until it
    /// answers.
    pub async fn start_member(&mut self, i: usize) {
        self.spawn(i);
        self.wait_serving(i).await;
    }

    /// Starts member `i` expecting it to refuse to run: waits (bounded) for
    /// its process to exit and returns its exit status and log.
    pub async fn start_expecting_exit(&mut self, i: usize) -> (std::process::ExitStatus, String) {
        self.spawn(i);
        let status = self.wait_exit(i, PROCESS_WAIT).await.unwrap_or_else(|| {
            panic!(
                "member {i} did not exit within the wait; log:\n{}",
                tail(&self.members[i].log_path, LOG_TAIL_LINES)
            )
        });
        (status, tail(&self.members[i].log_path, LOG_TAIL_LINES))
    }

    /// The last lines of member `i`'s log.
    pub fn log_tail(&self, i: usize) -> String {
        tail(&self.members[i].log_path, LOG_TAIL_LINES)
    }

    /// Kills member `i` with SIGKILL (no shutdown, no final fsync) and
    /// reaps it.
    pub fn kill(&mut self, i: usize) {
        let mut child = self.members[i].child.take().expect("member is running");
        // The process may have died on its own; then kill reports that.
        let _ = child.kill();
        let status = child.wait().expect("wait for the killed member");
        assert!(
            !status.success(),
            "member {i} had exited cleanly before the kill; log:\n{}",
            tail(&self.members[i].log_path, LOG_TAIL_LINES)
        );
    }

    /// Asks member `i` to stop (SIGTERM), as Kubernetes does, and waits
    /// (bounded) for its process to end; returns how it ended and how long
    /// after the signal it did.
    pub async fn terminate(&mut self, i: usize) -> (std::process::ExitStatus, Duration) {
        let sent = std::time::Instant::now();
        self.signal(i, Signal::TERM);
        let status = self.wait_exit(i, PROCESS_WAIT).await.unwrap_or_else(|| {
            panic!(
                "member {i} did not stop within {PROCESS_WAIT:?} of SIGTERM; log:\n{}",
                tail(&self.members[i].log_path, LOG_TAIL_LINES)
            )
        });
        (status, sent.elapsed())
    }

    /// Waits at most `bound` for member `i`'s process to end on its own;
    /// reaps it and returns how it ended, or `None` if it still runs.
    pub async fn wait_exit(
        &mut self,
        i: usize,
        bound: Duration,
    ) -> Option<std::process::ExitStatus> {
        let deadline = tokio::time::Instant::now() + bound;
        loop {
            let child = self.members[i].child.as_mut().expect("member is running");
            if let Some(status) = child.try_wait().expect("try_wait") {
                self.members[i].child = None;
                return Some(status);
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Member `i`'s log so far.
    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(&self.members[i].log_path).unwrap_or_default()
    }

    /// `GET path` on member `i`'s HTTP port: status code and body, or
    /// `None` if it does not answer within a second.
    pub async fn http_get(&self, i: usize, path: &str) -> Option<(u16, String)> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let addr = self.members[i].http_addr();
        let call = async {
            let mut s = tokio::net::TcpStream::connect(&addr).await.ok()?;
            let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
            s.write_all(req.as_bytes()).await.ok()?;
            let mut buf = String::new();
            s.read_to_string(&mut buf).await.ok()?;
            let code = buf.get(9..12)?.parse().ok()?;
            let body = buf.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
            Some((code, body))
        };
        tokio::time::timeout(Duration::from_secs(1), call)
            .await
            .ok()
            .flatten()
    }

    /// The value of the Prometheus sample `name` (no labels) on member
    /// `i`'s `/metrics`, if it answers and has it.
    pub async fn metric(&self, i: usize, name: &str) -> Option<f64> {
        let (code, body) = self.http_get(i, "/metrics").await?;
        if code != 200 {
            return None;
        }
        body.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
    }

    /// Freezes member `i` (SIGSTOP): its process stays, its sockets stay
    /// open, it does nothing (as in a long pause of the machine or the
    /// process) until [`ProcessCluster::resume`].
    pub fn pause(&mut self, i: usize) {
        self.signal(i, Signal::STOP);
    }

    /// Lets a paused member go on (SIGCONT).
    pub fn resume(&mut self, i: usize) {
        self.signal(i, Signal::CONT);
    }

    fn signal(&mut self, i: usize, signal: Signal) {
        let child = self.members[i].child.as_ref().expect("member is running");
        if let Err(e) = kill_process(Pid::from_child(child), signal) {
            panic!("cannot send {signal:?} to member {i}: {e}");
        }
    }

    /// Starts member `i`'s process again from its data folder, without
    /// waiting for it (it may be meant to fail).
    pub fn spawn_again(&mut self, i: usize) {
        self.spawn(i);
    }

    /// Starts member `i` again from its data folder, on the same ports,
    /// and waits until it answers.
    pub async fn restart(&mut self, i: usize) {
        self.spawn(i);
        self.wait_serving(i).await;
    }

    /// Starts every stopped member again (all at once, as after a power
    /// cut) and waits until each answers.
    pub async fn restart_stopped(&mut self) {
        let stopped: Vec<usize> = (0..self.members.len())
            .filter(|i| !self.members[*i].is_running())
            .collect();
        for &i in &stopped {
            self.spawn(i);
        }
        for &i in &stopped {
            self.wait_serving(i).await;
        }
    }

    /// Panics if a member that should run has exited.
    pub fn assert_running(&mut self) {
        for (i, m) in self.members.iter_mut().enumerate() {
            if let Some(child) = m.child.as_mut()
                && let Some(exit) = child.try_wait().expect("try_wait")
            {
                panic!(
                    "member {i} exited on its own ({exit}); log:\n{}",
                    tail(&m.log_path, LOG_TAIL_LINES)
                );
            }
        }
    }

    /// The index of the member that says it leads now, if any.
    pub async fn leader(&self) -> Option<usize> {
        self.leader_other_than(None).await
    }

    /// [`ProcessCluster::leader`], not asking member `other` (paused, or
    /// the leader being replaced).
    pub async fn leader_other_than(&self, other: Option<usize>) -> Option<usize> {
        for (i, m) in self.members.iter().enumerate() {
            if !m.is_running() || Some(i) == other {
                continue;
            }
            if let Some(s) = status_at(&m.url(), Duration::from_millis(300)).await
                && s.leader != 0
                && s.leader == s.member_id
            {
                return Some(i);
            }
        }
        None
    }

    /// Waits until every running member answers, all name the same
    /// leader, and the member table holds exactly the running members, each
    /// with its client URL.
    pub async fn wait_ready(&self) {
        let urls = self.running_endpoints();
        wait_for("a leader all members agree on", || async {
            let mut leaders = Vec::new();
            for url in &urls {
                leaders.push(status_at(url, Duration::from_millis(500)).await?.leader);
            }
            (leaders[0] != 0 && leaders.iter().all(|l| *l == leaders[0])).then_some(())
        })
        .await;
        for url in &urls {
            wait_for("every member published", || async {
                let mut req = tonic::Request::new(MemberListRequest {
                    linearizable: false,
                });
                req.set_timeout(Duration::from_millis(500));
                let mut client = ClusterClient::new(channel(url));
                let call = client.member_list(req);
                let members = tokio::time::timeout(Duration::from_millis(800), call)
                    .await
                    .ok()?
                    .ok()?
                    .into_inner()
                    .members;
                (members.len() == urls.len() && members.iter().all(|m| !m.client_ur_ls.is_empty()))
                    .then_some(())
            })
            .await;
        }
    }
}

impl Drop for ProcessCluster {
    fn drop(&mut self) {
        for m in &mut self.members {
            if let Some(mut child) = m.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        if std::thread::panicking() {
            eprintln!("{}", self.replay_hint);
            for m in &self.members {
                eprintln!(
                    "--- last lines of {} ({} starts) ---\n{}",
                    m.name,
                    m.starts,
                    tail(&m.log_path, LOG_TAIL_LINES)
                );
            }
        }
    }
}
