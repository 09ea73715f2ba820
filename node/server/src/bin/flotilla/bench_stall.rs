//! `flotilla bench stall`: whether whole-keyspace reads, counts and
//! snapshots stall the Raft thread of a loaded cluster (issue 15).
//!
//! It starts a local 3-member cluster of release members (as `dev-cluster`
//! does, fsync on), fills it with `--keys` keys of `--value-bytes` bytes
//! (64-put transactions), then runs the phases `--phases` names (all by
//! default), `--seconds` each, in this order:
//!
//! 1. **baseline**: `--writers` clients put (overwriting the filled keys);
//! 2. **reads**: the same writers, while `--readers` clients read the whole
//!    keyspace with `--limit 1`, as many count the whole keyspace
//!    (`count_only`), and one client takes snapshots (Maintenance/Snapshot,
//!    as `etcdctl snapshot save`) back to back; the members also take their
//!    own Raft snapshots every `--snapshot-count` entries (whatever the
//!    keyspace's size, unless `--snapshot-min-log-percent` says otherwise),
//!    and whenever `--snapshot-max-log-bytes` of log gathered;
//! 3. **watch**: the same writers while `--watchers` watch streams on the
//!    leader each watch the whole keyspace, so that every put fans out to
//!    each of them (see `bench_watch`);
//! 4. **delete**: `--delete-keys` more keys are filled under a prefix of
//!    their own, then the same writers run while one DeleteRange removes
//!    that whole prefix (as `etcdctl check perf` does at its end);
//! 5. **compact**: the same writers while one Compact at the store's
//!    revision removes every revision of that fill (see `bench_bulk`).
//!
//! For each phase it prints the write throughput and latency (p50, p99, max),
//! the read and snapshot latencies, the events the watch streams received (per
//! second, and as a share of what they should have seen), the members' "fell
//! behind its clock" warnings (counted in their logs) and the leader changes
//! (the growth of the highest Raft term); for the bulk phases also the bulk
//! request's latency, when every member had applied it, each member's term and
//! the leader before and after, and the writers' errors by kind ("no leader",
//! "leader changed", timed out). Then, unless `--catch-up-puts 0` (or
//! `--phases` leaves out `catch-up`), the catch-up case: a follower is stopped
//! (SIGSTOP) while that many puts commit as 64-put transactions, continued
//! (SIGCONT), and its Status is polled from outside until it applied what the
//! leader had committed, counting the snapshots the follower installed and the
//! snapshot sends the leader started meanwhile.
//! The follower stays stopped at least `--pause-seconds`.
//!
//! Each phase also shows how many Raft snapshots the members took in it
//! (with `--snapshot-count` low, several: the baseline's write latencies
//! then include them) and the machine's load average at its end.
//!
//! What snapshots cost writes: a second table splits each phase's writes
//! into those that overlapped a Raft snapshot being written on any member
//! and those that overlapped none (the spans come from the members' logs,
//! see `bench_overlap`), with the latencies of each, the share of the phase
//! some member was writing a snapshot, and the extra wait — the p99 and the
//! max of the overlapping writes less those of the others.

use crate::WriteOut;
use crate::bench_bulk::{self, Bulk};
use crate::bench_overlap::{self, Span};
use crate::bench_watch::{self, Watched};
use crate::dev_cluster::{self, Member, NodeProgram};
use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use flotilla_proto::etcdserverpb::kv_client::KvClient;
use flotilla_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use flotilla_proto::etcdserverpb::{
    PutRequest, RangeRequest, RequestOp, SnapshotRequest, StatusRequest, StatusResponse,
    TxnRequest, request_op,
};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};
use tokio::task::JoinHandle;
use tonic::transport::{Channel, Endpoint};

/// Options of `flotilla bench stall`.
#[derive(Debug, Args)]
pub struct StallArgs {
    /// Keys to fill the cluster with before the load.
    #[arg(long, default_value_t = 1_000_000)]
    keys: u64,
    /// Bytes of each value.
    #[arg(long, default_value_t = 256)]
    value_bytes: usize,
    /// Seconds of each phase (see `--phases`).
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Clients putting during each phase.
    #[arg(long, default_value_t = 16)]
    writers: u32,
    /// Clients reading the whole keyspace with `--limit 1`, and as many
    /// counting it, during the read phase.
    #[arg(long, default_value_t = 2)]
    readers: u32,
    /// Watch streams on the leader during the watch phase, each with one
    /// watcher on the whole keyspace (0: skip the watch phase).
    #[arg(long, default_value_t = 8)]
    watchers: u32,
    /// Keys filled under their own prefix for the delete phase, which
    /// removes them with one DeleteRange (`etcdctl check perf --load l`
    /// ends by deleting about 250,000).
    #[arg(long, default_value_t = 250_000)]
    delete_keys: u64,
    /// The phases to run, comma-separated; they run in the order listed
    /// under `--help` whatever the order given (e.g. `baseline,delete` for
    /// the delete beside its no-read baseline).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_values_t = PhaseName::ALL
    )]
    phases: Vec<PhaseName>,
    /// Puts committed while a follower is stopped (0: skip the catch-up case).
    #[arg(long, default_value_t = 100_000)]
    catch_up_puts: u64,
    /// Seconds the follower stays stopped at least, however soon the puts
    /// are done (the pause the members' clocks must catch up on).
    #[arg(long, default_value_t = 45)]
    pause_seconds: u64,
    /// The members' `--snapshot-count` (Raft snapshots every this many entries).
    #[arg(long, default_value_t = 10_000)]
    snapshot_count: u64,
    /// The members' `--snapshot-min-log-percent`. 0 by default here, so
    /// that a snapshot comes every `--snapshot-count` entries whatever the
    /// keyspace's size, as the stress this benchmark applies; the members'
    /// own default (100) snapshots a large keyspace far less often.
    #[arg(long, default_value_t = 0)]
    snapshot_min_log_percent: u64,
    /// The members' `--snapshot-max-log-bytes`: the bytes of log since the
    /// last snapshot that make one due whatever the count and percentage
    /// say (the members' default, as their environment variable does).
    #[arg(
        long,
        env = "FLOTILLA_SNAPSHOT_MAX_LOG_BYTES",
        default_value_t = flotilla_raft::Config::SNAPSHOT_AFTER_BYTES_DEFAULT
    )]
    snapshot_max_log_bytes: u64,
    /// Ports as `dev-cluster --base-port` uses them.
    #[arg(long, default_value_t = 24790)]
    base_port: u16,
    /// Folder for the members' data and logs (default: a temporary folder,
    /// removed afterwards).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// A `flotilla-node` binary to run the members with (default: this
    /// executable's own `node` command).
    #[arg(long)]
    node_bin: Option<PathBuf>,
}

/// A phase of the benchmark, in the order they run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
enum PhaseName {
    /// Writes alone.
    Baseline,
    /// Writes beside whole-keyspace reads, counts and snapshots.
    Reads,
    /// Writes beside watchers of the whole keyspace.
    Watch,
    /// Writes beside one DeleteRange of `--delete-keys` keys.
    Delete,
    /// Writes beside one Compact of the delete phase's fill.
    Compact,
    /// A stopped follower's catch-up (also skipped by `--catch-up-puts 0`).
    CatchUp,
}

impl PhaseName {
    const ALL: [PhaseName; 6] = [
        PhaseName::Baseline,
        PhaseName::Reads,
        PhaseName::Watch,
        PhaseName::Delete,
        PhaseName::Compact,
        PhaseName::CatchUp,
    ];

    fn name(self) -> &'static str {
        match self {
            PhaseName::Baseline => "baseline",
            PhaseName::Reads => "reads",
            PhaseName::Watch => "watch",
            PhaseName::Delete => "delete",
            PhaseName::Compact => "compact",
            PhaseName::CatchUp => "catch-up",
        }
    }
}

/// Puts per fill (and catch-up) transaction.
const TXN_PUTS: u64 = 64;
/// Clients filling at once.
const FILL_CLIENTS: u64 = 8;
/// How long a writer waits after a failed put before its next one.
const FAILED_WRITE_BACKOFF: Duration = Duration::from_millis(10);
/// How long one request may take before it counts as failed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Latencies of one kind of request, in milliseconds.
#[derive(Debug, Default, serde::Serialize)]
struct Latency {
    count: usize,
    failed: u64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

impl Latency {
    fn of(mut samples: Vec<Duration>, failed: u64) -> Latency {
        samples.sort();
        let at = |q: f64| {
            samples
                .get(((samples.len() as f64 * q) as usize).min(samples.len().saturating_sub(1)))
                .map_or(0.0, |d| d.as_secs_f64() * 1e3)
        };
        Latency {
            count: samples.len(),
            failed,
            p50_ms: at(0.50),
            p99_ms: at(0.99),
            max_ms: samples.last().map_or(0.0, |d| d.as_secs_f64() * 1e3),
        }
    }
}

/// Failed requests by what their error says.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
struct Errors {
    /// "etcdserver: no leader".
    no_leader: u64,
    /// "etcdserver: leader changed" (the outcome of a write is unknown).
    leader_changed: u64,
    /// Past its deadline.
    timed_out: u64,
    other: u64,
    /// When the first failed write was sent and the last one answered
    /// (seconds since the Unix epoch; writers only).
    failing_from: Option<f64>,
    failing_until: Option<f64>,
}

impl Errors {
    fn count(&mut self, e: &tonic::Status) {
        let slot = if e.message().contains("no leader") {
            &mut self.no_leader
        } else if e.message().contains("leader changed") {
            &mut self.leader_changed
        } else if matches!(
            e.code(),
            tonic::Code::DeadlineExceeded | tonic::Code::Cancelled
        ) {
            &mut self.timed_out
        } else {
            &mut self.other
        };
        *slot += 1;
    }

    /// Notes a write that failed from `from` until `until`.
    fn during(&mut self, from: f64, until: f64) {
        self.failing_from = Some(self.failing_from.map_or(from, |f| f.min(from)));
        self.failing_until = Some(self.failing_until.map_or(until, |u| u.max(until)));
    }

    fn add(&mut self, o: Errors) {
        self.no_leader += o.no_leader;
        self.leader_changed += o.leader_changed;
        self.timed_out += o.timed_out;
        self.other += o.other;
        if let (Some(from), Some(until)) = (o.failing_from, o.failing_until) {
            self.during(from, until);
        }
    }

    /// From the first failed write until the last one failed, in ms.
    fn failing_ms(&self) -> f64 {
        match (self.failing_from, self.failing_until) {
            (Some(from), Some(until)) => (until - from) * 1e3,
            _ => 0.0,
        }
    }

    fn total(&self) -> u64 {
        self.no_leader + self.leader_changed + self.timed_out + self.other
    }
}

/// One phase's figures.
#[derive(Debug, serde::Serialize)]
struct Phase {
    name: &'static str,
    writes_per_s: f64,
    writes: Latency,
    /// The writes' failures by kind.
    write_errors: Errors,
    range_limit_1: Latency,
    count_only: Latency,
    snapshots: Latency,
    missed_tick_warnings: u64,
    leader_changes: u64,
    /// Raft snapshots the members took during the phase.
    raft_snapshots: u64,
    /// The writes split by whether a snapshot was being written meanwhile.
    snapshot_cost: SnapshotCost,
    /// The machine's 1-minute load average at the phase's end.
    load_average: String,
    /// The bulk phases' one request.
    bulk: Option<Bulk>,
    /// The watch phase's streams.
    watch: Option<Watched>,
}

/// A phase's writes that overlapped a Raft snapshot being written on any
/// member, and those that overlapped none.
#[derive(Debug, serde::Serialize)]
struct SnapshotCost {
    during: Latency,
    clear: Latency,
    /// Share of the phase during which some member wrote a snapshot.
    snapshot_share: f64,
    /// p99 of the overlapping writes less that of the others.
    extra_p99_ms: f64,
    /// Max of the overlapping writes less that of the others.
    extra_max_ms: f64,
}

impl SnapshotCost {
    fn of(writes: &[(f64, Duration)], snapshots: Vec<Span>, phase: Span) -> SnapshotCost {
        let merged = bench_overlap::merge(snapshots);
        let (during, clear) = bench_overlap::split(writes, &merged);
        let (during, clear) = (Latency::of(during, 0), Latency::of(clear, 0));
        let both = during.count > 0 && clear.count > 0;
        let extra = |a: f64, b: f64| if both { a - b } else { f64::NAN };
        SnapshotCost {
            snapshot_share: bench_overlap::covered(&merged, phase)
                / (phase.end - phase.start).max(f64::MIN_POSITIVE),
            extra_p99_ms: extra(during.p99_ms, clear.p99_ms),
            extra_max_ms: extra(during.max_ms, clear.max_ms),
            during,
            clear,
        }
    }
}

/// Now, in seconds since the Unix epoch (the members' logs' clock).
fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The catch-up case's figures.
#[derive(Debug, serde::Serialize)]
struct CatchUp {
    puts: u64,
    stopped_s: f64,
    /// From SIGCONT until the follower applied the leader's commit index.
    caught_up_ms: f64,
    /// Snapshots the follower installed while catching up, and snapshot
    /// sends the leader started (more sends than installs: a send started
    /// over); `None` when a member's `/metrics` did not answer.
    snapshots_installed: Option<u64>,
    snapshot_sends: Option<u64>,
    missed_tick_warnings: u64,
    leader_changes: u64,
    load_average: String,
}

/// The cluster under test.
pub(crate) struct Cluster {
    dir: PathBuf,
    pub(crate) members: Vec<Member>,
}

impl Cluster {
    async fn start(args: &StallArgs, dir: PathBuf, program: &NodeProgram) -> Result<Cluster> {
        let initial = dev_cluster::initial_cluster(3, args.base_port);
        let extra = vec![
            "--snapshot-count".to_string(),
            args.snapshot_count.to_string(),
            "--snapshot-min-log-percent".to_string(),
            args.snapshot_min_log_percent.to_string(),
            "--snapshot-max-log-bytes".to_string(),
            args.snapshot_max_log_bytes.to_string(),
        ];
        let mut members = Vec::new();
        for i in 0..3 {
            members.push(dev_cluster::spawn_with(
                program,
                &dir,
                args.base_port,
                false,
                i,
                &initial,
                &extra,
            )?);
        }
        let mut c = Cluster { dir, members };
        dev_cluster::wait_ready(&mut c.members, &c.dir, Duration::from_secs(60)).await?;
        Ok(c)
    }

    /// Member `i`'s client URL.
    fn url(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", self.members[i].client)
    }

    pub(crate) fn channel(&self, i: usize) -> Result<Channel> {
        Ok(Endpoint::from_shared(self.url(i))?
            .connect_timeout(Duration::from_secs(1))
            .connect_lazy())
    }

    pub(crate) async fn status(&self, i: usize) -> Option<StatusResponse> {
        let mut client = MaintenanceClient::new(self.channel(i).ok()?);
        let mut req = tonic::Request::new(StatusRequest {});
        req.set_timeout(Duration::from_millis(500));
        client.status(req).await.ok().map(|r| r.into_inner())
    }

    /// The leader's index, waiting for one.
    pub(crate) async fn leader(&self) -> Result<usize> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            for i in 0..self.members.len() {
                if let Some(s) = self.status(i).await
                    && s.leader != 0
                    && s.header.is_some_and(|h| h.member_id == s.leader)
                {
                    return Ok(i);
                }
            }
            if Instant::now() >= deadline {
                bail!("no leader within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The highest Raft term any member reports.
    async fn term(&self) -> u64 {
        let mut term = 0;
        for i in 0..self.members.len() {
            if let Some(s) = self.status(i).await {
                term = term.max(s.raft_term);
            }
        }
        term
    }

    /// "fell behind its clock" warnings in all members' logs so far.
    fn warnings(&self) -> u64 {
        self.count_in_logs("fell behind its clock")
    }

    /// Raft snapshots all members took so far (their log lines).
    fn raft_snapshots(&self) -> u64 {
        self.count_in_logs(bench_overlap::SNAPSHOT_LINE)
    }

    /// The spans of the Raft snapshots all members took so far.
    fn snapshot_spans(&self) -> Vec<Span> {
        self.members
            .iter()
            .flat_map(|m| {
                let log = self.dir.join(format!("{}.log", m.name));
                bench_overlap::snapshot_spans(&std::fs::read_to_string(log).unwrap_or_default())
            })
            .collect()
    }

    /// [`Self::snapshot_spans`] once no member is writing a snapshot (a
    /// snapshot is logged only once durable), waiting at most a minute.
    /// Members whose `/metrics` lack the snapshot gauge (older versions)
    /// are given [`UNGAUGED_GRACE`] instead.
    async fn settled_snapshot_spans(&self) -> Vec<Span> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let mut writing = false;
            for m in &self.members {
                match metric(m.http, "flotilla_raft_snapshot_writing").await {
                    Some(v) => writing |= v > 0.0,
                    None => {
                        tokio::time::sleep(UNGAUGED_GRACE).await;
                        return self.snapshot_spans();
                    }
                }
            }
            if !writing || Instant::now() >= deadline {
                return self.snapshot_spans();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn count_in_logs(&self, what: &str) -> u64 {
        self.members
            .iter()
            .map(|m| count_lines(&self.dir.join(format!("{}.log", m.name)), what))
            .sum()
    }

    async fn stop_all(&mut self) {
        for m in &mut self.members {
            dev_cluster::stop(m).await;
        }
    }
}

/// How long to wait for members without the snapshot gauge to finish a
/// snapshot that overlapped a phase's end.
const UNGAUGED_GRACE: Duration = Duration::from_secs(5);

/// The value of an unlabelled metric on a member's HTTP `port`.
async fn metric(port: u16, name: &str) -> Option<f64> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let fetch = async {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        let req = "GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
        s.write_all(req.as_bytes()).await?;
        let mut text = String::new();
        s.read_to_string(&mut text).await?;
        Ok::<_, std::io::Error>(text)
    };
    let text = tokio::time::timeout(Duration::from_secs(2), fetch)
        .await
        .ok()?
        .ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

fn count_lines(log: &Path, what: &str) -> u64 {
    std::fs::read_to_string(log).map_or(0, |text| {
        text.lines().filter(|l| l.contains(what)).count() as u64
    })
}

/// The machine's load averages (1, 5, 15 minutes), to read the figures by.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg").map_or_else(
        |_| "unknown".to_string(),
        |s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "),
    )
}

fn key(i: u64) -> Vec<u8> {
    format!("stall/{i:010}").into_bytes()
}

fn put_op(key: fn(u64) -> Vec<u8>, i: u64, value: &[u8]) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestPut(PutRequest {
            key: key(i),
            value: value.to_vec(),
            ..Default::default()
        })),
    }
}

/// Puts keys `key(from..to)` in 64-put transactions from `FILL_CLIENTS`
/// clients through `channels` in turn.
async fn put_txns(
    channels: &[Channel],
    key: fn(u64) -> Vec<u8>,
    from: u64,
    to: u64,
    value: &[u8],
) -> Result<()> {
    let next = Arc::new(AtomicU64::new(from));
    let done = Arc::new(AtomicU64::new(0));
    let mut tasks: Vec<JoinHandle<Result<()>>> = Vec::new();
    for c in 0..FILL_CLIENTS {
        let mut kv = KvClient::new(channels[c as usize % channels.len()].clone());
        let (next, done, value) = (next.clone(), done.clone(), value.to_vec());
        tasks.push(tokio::spawn(async move {
            loop {
                let start = next.fetch_add(TXN_PUTS, Ordering::Relaxed);
                if start >= to {
                    return Ok(());
                }
                let ops = (start..(start + TXN_PUTS).min(to))
                    .map(|i| put_op(key, i, &value))
                    .collect();
                let txn = TxnRequest {
                    success: ops,
                    ..Default::default()
                };
                let mut attempts = 0;
                loop {
                    let mut req = tonic::Request::new(txn.clone());
                    req.set_timeout(REQUEST_TIMEOUT);
                    match kv.txn(req).await {
                        Ok(_) => break,
                        Err(_) if attempts < 20 => {
                            attempts += 1;
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                        Err(e) => return Err(e).context("a transaction failed 20 times"),
                    }
                }
                let n = done.fetch_add(TXN_PUTS, Ordering::Relaxed) + TXN_PUTS;
                if n % 100_000 < TXN_PUTS {
                    eprintln!("  {n} of {} keys", to - from);
                }
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
}

/// A client that repeats one kind of request until `stop`: its latencies
/// and its failures.
type Sampler = JoinHandle<(Vec<Duration>, Errors)>;

/// A writer: when each write started (seconds since the Unix epoch) and how
/// long it took, and its failures.
type TimedSampler = JoinHandle<(Vec<(f64, Duration)>, Errors)>;

fn writer(
    kv: KvClient<Channel>,
    w: u64,
    keys: u64,
    value: Vec<u8>,
    stop: Arc<AtomicBool>,
) -> TimedSampler {
    let mut kv = kv;
    tokio::spawn(async move {
        let (mut samples, mut failed) = (Vec::new(), Errors::default());
        let mut n = w;
        while !stop.load(Ordering::Relaxed) {
            // A spread of the filled keys, different per writer.
            n = n
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let mut req = tonic::Request::new(PutRequest {
                key: key((n >> 17) % keys.max(1)),
                value: value.clone(),
                ..Default::default()
            });
            req.set_timeout(REQUEST_TIMEOUT);
            let (at, t) = (unix_now(), Instant::now());
            match kv.put(req).await {
                Ok(_) => samples.push((at, t.elapsed())),
                Err(e) => {
                    failed.count(&e);
                    failed.during(at, unix_now());
                    // Back off as a client would: "no leader" comes back
                    // at once, and retrying in a loop would take the cores
                    // the members need to elect one.
                    tokio::time::sleep(FAILED_WRITE_BACKOFF).await;
                }
            }
        }
        (samples, failed)
    })
}

fn reader(kv: KvClient<Channel>, count_only: bool, stop: Arc<AtomicBool>) -> Sampler {
    let mut kv = kv;
    tokio::spawn(async move {
        let (mut samples, mut failed) = (Vec::new(), Errors::default());
        while !stop.load(Ordering::Relaxed) {
            let mut req = tonic::Request::new(RangeRequest {
                key: b"\0".to_vec(),
                range_end: b"\0".to_vec(),
                limit: i64::from(!count_only),
                count_only,
                ..Default::default()
            });
            req.set_timeout(REQUEST_TIMEOUT);
            let t = Instant::now();
            match kv.range(req).await {
                Ok(_) => samples.push(t.elapsed()),
                Err(e) => failed.count(&e),
            }
        }
        (samples, failed)
    })
}

fn snapshotter(mut m: MaintenanceClient<Channel>, stop: Arc<AtomicBool>) -> Sampler {
    m = m.max_decoding_message_size(64 << 20);
    tokio::spawn(async move {
        let (mut samples, mut failed) = (Vec::new(), Errors::default());
        while !stop.load(Ordering::Relaxed) {
            let t = Instant::now();
            let taken = async {
                let mut stream = m.snapshot(SnapshotRequest {}).await?.into_inner();
                while stream.message().await?.is_some() {}
                Ok::<(), tonic::Status>(())
            };
            match tokio::time::timeout(Duration::from_secs(120), taken).await {
                Ok(Ok(())) => samples.push(t.elapsed()),
                Ok(Err(e)) => failed.count(&e),
                Err(_) => failed.timed_out += 1,
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        (samples, failed)
    })
}

async fn collect<T>(samplers: Vec<JoinHandle<(Vec<T>, Errors)>>) -> Result<(Vec<T>, Errors)> {
    let (mut all, mut failed) = (Vec::new(), Errors::default());
    for s in samplers {
        let (samples, f) = s.await?;
        all.extend(samples);
        failed.add(f);
    }
    Ok((all, failed))
}

async fn phase(c: &Cluster, args: &StallArgs, which: PhaseName) -> Result<Phase> {
    let reads = which == PhaseName::Reads;
    let leader = c.leader().await?;
    let (term0, warnings0) = (c.term().await, c.warnings());
    let snapshots0 = c.raft_snapshots();
    // Watchers are confirmed before the first write, so that each sees
    // every write of the phase. On the leader, as the reads: its stall
    // costs the most. One connection each.
    let mut opened = Vec::new();
    if which == PhaseName::Watch {
        for _ in 0..args.watchers {
            opened.push(bench_watch::open(c.url(leader)).await?);
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    let value = vec![b'w'; args.value_bytes];
    let writers: Vec<TimedSampler> = (0..args.writers)
        .map(|w| {
            let ch = c.channel(w as usize % c.members.len())?;
            Ok(writer(
                KvClient::new(ch),
                u64::from(w) + 1,
                args.keys,
                value.clone(),
                stop.clone(),
            ))
        })
        .collect::<Result<_>>()?;
    let (mut ranges, mut counts, mut snaps) = (Vec::new(), Vec::new(), Vec::new());
    if reads {
        // The reads go to the leader, whose stall costs the most.
        for _ in 0..args.readers {
            ranges.push(reader(
                KvClient::new(c.channel(leader)?),
                false,
                stop.clone(),
            ));
            counts.push(reader(
                KvClient::new(c.channel(leader)?),
                true,
                stop.clone(),
            ));
        }
        snaps.push(snapshotter(
            MaintenanceClient::new(c.channel(leader)?),
            stop.clone(),
        ));
    }
    let watchers: Vec<_> = opened
        .into_iter()
        .map(|o| bench_watch::drain(o, stop.clone()))
        .collect();
    let (started, started_at) = (Instant::now(), unix_now());
    let bulk = match which {
        PhaseName::Delete | PhaseName::Compact => {
            let request = if which == PhaseName::Delete {
                bench_bulk::Request::DeleteRange
            } else {
                bench_bulk::Request::Compact
            };
            // Stop the writers however the request went.
            let bulk = bench_bulk::run(c, request, leader, started, args.seconds).await;
            stop.store(true, Ordering::Relaxed);
            Some(bulk?)
        }
        _ => {
            tokio::time::sleep(Duration::from_secs(args.seconds)).await;
            None
        }
    };
    stop.store(true, Ordering::Relaxed);
    let (writes, write_failures) = collect(writers).await?;
    let elapsed = started.elapsed().as_secs_f64();
    let window = Span {
        start: started_at,
        end: started_at + elapsed,
    };
    // A snapshot still being written is logged once durable: let the
    // members finish what overlaps the phase's last writes.
    let spans = c.settled_snapshot_spans().await;
    let snapshot_cost = SnapshotCost::of(&writes, spans, window);
    let writes: Vec<Duration> = writes.into_iter().map(|(_, took)| took).collect();
    let (ranges, range_failures) = collect(ranges).await?;
    let (counts, count_failures) = collect(counts).await?;
    let (snaps, snap_failures) = collect(snaps).await?;
    let watch = if which == PhaseName::Watch {
        Some(bench_watch::collect(watchers, elapsed, writes.len()).await?)
    } else {
        None
    };
    Ok(Phase {
        name: which.name(),
        writes_per_s: writes.len() as f64 / elapsed,
        writes: Latency::of(writes, write_failures.total()),
        write_errors: write_failures,
        range_limit_1: Latency::of(ranges, range_failures.total()),
        count_only: Latency::of(counts, count_failures.total()),
        snapshots: Latency::of(snaps, snap_failures.total()),
        missed_tick_warnings: c.warnings() - warnings0,
        leader_changes: c.term().await - term0,
        raft_snapshots: c.raft_snapshots() - snapshots0,
        snapshot_cost,
        load_average: load_average(),
        bulk,
        watch,
    })
}

/// Sends `signal` to the member's process.
fn signal(member: &Member, signal: rustix::process::Signal) -> Result<()> {
    let pid = member.child.id().context("the member has exited")?;
    let pid = rustix::process::Pid::from_raw(pid as i32).context("bad pid")?;
    rustix::process::kill_process(pid, signal).context("cannot signal the member")
}

async fn catch_up(c: &Cluster, args: &StallArgs) -> Result<CatchUp> {
    let leader = c.leader().await?;
    let follower = (leader + 1) % c.members.len();
    let (term0, warnings0) = (c.term().await, c.warnings());
    let installed = || {
        metric(
            c.members[follower].http,
            "flotilla_raft_snapshots_installed_total",
        )
    };
    let sends = || metric(c.members[leader].http, "flotilla_raft_snapshots_sent_total");
    let (installed0, sends0) = (installed().await, sends().await);
    let channels = [c.channel(leader)?];
    let value = vec![b'c'; args.value_bytes];
    signal(&c.members[follower], rustix::process::Signal::STOP)?;
    let stopped = Instant::now();
    let to = args.keys + args.catch_up_puts;
    let wrote = put_txns(&channels, key, args.keys, to, &value).await;
    let pause = Duration::from_secs(args.pause_seconds);
    if wrote.is_ok() && stopped.elapsed() < pause {
        tokio::time::sleep(pause - stopped.elapsed()).await;
    }
    let target = match c.status(leader).await {
        Some(s) => s.raft_index,
        None => 0,
    };
    let stopped_s = stopped.elapsed().as_secs_f64();
    signal(&c.members[follower], rustix::process::Signal::CONT)?;
    wrote?;
    if target == 0 {
        bail!("the leader did not answer Status after the puts");
    }
    let continued = Instant::now();
    loop {
        if let Some(s) = c.status(follower).await
            && s.raft_applied_index >= target
        {
            break;
        }
        if continued.elapsed() > Duration::from_secs(120) {
            bail!("the follower did not catch up within 120 s");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let caught_up_ms = continued.elapsed().as_secs_f64() * 1e3;
    let load_average = load_average();
    let grew = |before: Option<f64>, after: Option<f64>| Some((after? - before?) as u64);
    let snapshots_installed = grew(installed0, installed().await);
    let snapshot_sends = grew(sends0, sends().await);
    // Let its late warnings reach the log.
    tokio::time::sleep(Duration::from_millis(200)).await;
    Ok(CatchUp {
        puts: args.catch_up_puts,
        stopped_s,
        caught_up_ms,
        snapshots_installed,
        snapshot_sends,
        missed_tick_warnings: c.warnings() - warnings0,
        leader_changes: c.term().await - term0,
        load_average,
    })
}

fn print(args: &StallArgs, phases: &[Phase], catch: Option<&CatchUp>, out: WriteOut) -> Result<()> {
    if out == WriteOut::Json {
        let doc = serde_json::json!({
            "keys": args.keys,
            "value_bytes": args.value_bytes,
            "writers": args.writers,
            "readers": args.readers,
            "watchers": args.watchers,
            "delete_keys": args.delete_keys,
            "snapshot_count": args.snapshot_count,
            "snapshot_min_log_percent": args.snapshot_min_log_percent,
            "snapshot_max_log_bytes": args.snapshot_max_log_bytes,
            "phases": phases,
            "catch_up": catch,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(());
    }
    println!(
        "{} keys x {} B, {} writers, {} range + {} count readers, {} s per phase",
        args.keys, args.value_bytes, args.writers, args.readers, args.readers, args.seconds
    );
    println!(
        "{:<9} {:>9} {:>8} {:>8} {:>8} {:>8}  {:>24}  {:>24}  {:>24} {:>6} {:>7} {:>5}  {:<14}",
        "phase",
        "writes/s",
        "p50 ms",
        "p99 ms",
        "max ms",
        "failed",
        "range --limit 1 p50/p99/max",
        "count p50/p99/max",
        "snapshot n p50/max",
        "missed",
        "leaders",
        "snaps",
        "load avg"
    );
    for p in phases {
        let l = |l: &Latency| format!("{:.1}/{:.1}/{:.1}", l.p50_ms, l.p99_ms, l.max_ms);
        println!(
            "{:<9} {:>9.0} {:>8.2} {:>8.2} {:>8.1} {:>8}  {:>24}  {:>24}  {:>24} {:>6} {:>7} {:>5}  {}",
            p.name,
            p.writes_per_s,
            p.writes.p50_ms,
            p.writes.p99_ms,
            p.writes.max_ms,
            p.writes.failed,
            l(&p.range_limit_1),
            l(&p.count_only),
            format!(
                "{} {:.0}/{:.0}",
                p.snapshots.count, p.snapshots.p50_ms, p.snapshots.max_ms
            ),
            p.missed_tick_warnings,
            p.leader_changes,
            p.raft_snapshots,
            p.load_average
        );
    }
    println!(
        "writes during a member's Raft snapshot vs not ({} snapshot count, {}% min log, {} MiB max log):",
        args.snapshot_count,
        args.snapshot_min_log_percent,
        args.snapshot_max_log_bytes as f64 / (1 << 20) as f64
    );
    println!(
        "{:<9} {:>7} {:>26} {:>26} {:>9} {:>9}",
        "phase",
        "snap %",
        "during n p50/p99/max ms",
        "not during n p50/p99/max",
        "extra p99",
        "extra max"
    );
    for p in phases {
        let c = &p.snapshot_cost;
        let l = |l: &Latency| {
            format!(
                "{} {:.1}/{:.1}/{:.1}",
                l.count, l.p50_ms, l.p99_ms, l.max_ms
            )
        };
        println!(
            "{:<9} {:>7.0} {:>26} {:>26} {:>9.1} {:>9.1}",
            p.name,
            c.snapshot_share * 100.0,
            l(&c.during),
            l(&c.clear),
            c.extra_p99_ms,
            c.extra_max_ms
        );
    }
    print_bulk(phases);
    print_watch(phases);
    if let Some(c) = catch {
        println!(
            "catch-up: follower stopped {:.1} s while {} puts committed; caught up {:.0} ms after SIGCONT ({} snapshots installed, {} snapshot sends started; {} missed-tick warnings, {} leader changes; load average {})",
            c.stopped_s,
            c.puts,
            c.caught_up_ms,
            count(c.snapshots_installed),
            count(c.snapshot_sends),
            c.missed_tick_warnings,
            c.leader_changes,
            c.load_average
        );
    }
    Ok(())
}

/// The watch phase's line: what its streams received against what every
/// one of them should have seen.
fn print_watch(phases: &[Phase]) {
    for p in phases {
        let Some(w) = &p.watch else { continue };
        println!(
            "{}: {} streams on the leader, each watching the whole keyspace, received {} events ({:.0}/s, {:.2} of the phase's writes times the streams); {} ended early{}",
            p.name,
            w.streams,
            w.events,
            w.events_per_s,
            w.share,
            w.ended_early,
            w.first_end
                .as_ref()
                .map_or_else(String::new, |why| format!(" (the first: {why})"))
        );
    }
}

/// A count that may be unknown, for the table.
fn count(n: Option<u64>) -> String {
    n.map_or_else(|| "?".to_string(), |n| n.to_string())
}

/// The bulk phases' table: each request, its latency, when every member
/// had applied it, terms and leader before and after, and the writes beside
/// it against the baseline's.
fn print_bulk(phases: &[Phase]) {
    if phases.iter().all(|p| p.bulk.is_none()) {
        return;
    }
    let baseline = phases.iter().find(|p| p.name == PhaseName::Baseline.name());
    let ms = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |v| format!("{v:.0}"));
    println!(
        "bulk requests beside the writes (terms of n1/n2/n3 and the leader; writes p99/max ms vs the baseline's; failed writes by error, and from the first to the last):"
    );
    println!(
        "{:<9} {:<12} {:>8} {:>8} {:>10}  {:<14} {:<14} {:>21}  {:>9} {:>9} {:>9} {:>6} {:>10}",
        "phase",
        "request",
        "keys",
        "took ms",
        "applied ms",
        "before",
        "after",
        "writes vs baseline",
        "no leader",
        "ldr chg",
        "timed out",
        "other",
        "failing ms"
    );
    for p in phases {
        let Some(b) = &p.bulk else { continue };
        let writes = format!(
            "{:.1}/{:.0} vs {}",
            p.writes.p99_ms,
            p.writes.max_ms,
            baseline.map_or_else(
                || "-".to_string(),
                |b| format!("{:.1}/{:.0}", b.writes.p99_ms, b.writes.max_ms)
            )
        );
        let e = &p.write_errors;
        println!(
            "{:<9} {:<12} {:>8} {:>8.0} {:>10}  {:<14} {:<14} {:>21}  {:>9} {:>9} {:>9} {:>6} {:>10.0}",
            p.name,
            b.request,
            b.keys,
            b.took_ms,
            ms(b.all_applied_ms),
            b.before.text(),
            b.after.text(),
            writes,
            e.no_leader,
            e.leader_changed,
            e.timed_out,
            e.other,
            e.failing_ms()
        );
        if let Some(err) = &b.error {
            println!("{:<9} the {} failed: {err}", p.name, b.request);
        }
        if b.request == "delete-range" && (b.deleted != b.keys || b.keys_left != 0) {
            println!(
                "{:<9} deleted {} of {} keys; {} left under the prefix",
                p.name, b.deleted, b.keys, b.keys_left
            );
        }
    }
}

/// Runs the benchmark.
pub async fn run(args: StallArgs, out: WriteOut) -> Result<()> {
    if args.keys == 0 || args.seconds == 0 || args.writers == 0 {
        bail!("--keys, --seconds and --writers must be at least 1");
    }
    let (dir, temporary) = match &args.dir {
        Some(d) => (d.clone(), false),
        None => (
            std::env::temp_dir().join(format!("flotilla-stall-{}", std::process::id())),
            true,
        ),
    };
    let program = dev_cluster::node_program(args.node_bin.as_deref())?;
    let mut c = Cluster::start(&args, dir.clone(), &program).await?;
    let result = async {
        eprintln!("filling {} keys of {} B", args.keys, args.value_bytes);
        let fill = Instant::now();
        let channels: Vec<Channel> = (0..c.members.len())
            .map(|i| c.channel(i))
            .collect::<Result<_>>()?;
        let value = vec![b'f'; args.value_bytes];
        put_txns(&channels, key, 0, args.keys, &value).await?;
        eprintln!(
            "filled in {:.1} s ({} missed-tick warnings so far)",
            fill.elapsed().as_secs_f64(),
            c.warnings()
        );
        let (mut phases, mut catch, mut bulk_filled) = (Vec::new(), None, false);
        let mut chosen = args.phases.clone();
        chosen.sort();
        chosen.dedup();
        for which in chosen {
            if matches!(which, PhaseName::Delete | PhaseName::Compact) && !bulk_filled {
                // Filled here, not with the rest, so the phases before
                // run on the same store with or without the bulk phases.
                eprintln!("filling {} keys under their own prefix", args.delete_keys);
                let fill = Instant::now();
                put_txns(&channels, bench_bulk::key, 0, args.delete_keys, &value).await?;
                eprintln!("filled in {:.1} s", fill.elapsed().as_secs_f64());
                bulk_filled = true;
            }
            if which == PhaseName::Watch && args.watchers == 0 {
                continue;
            }
            if which == PhaseName::CatchUp {
                if args.catch_up_puts > 0 {
                    eprintln!("catch-up case");
                    catch = Some(catch_up(&c, &args).await?);
                }
                continue;
            }
            eprintln!("{} phase", which.name());
            phases.push(phase(&c, &args, which).await?);
        }
        Ok::<_, anyhow::Error>((phases, catch))
    }
    .await;
    c.stop_all().await;
    match result {
        Ok((phases, catch)) => {
            if temporary {
                let _ = std::fs::remove_dir_all(&dir);
            }
            print(&args, &phases, catch.as_ref(), out)
        }
        Err(e) => Err(e.context(format!("logs in {}", dir.display()))),
    }
}
