//! `flotilla bench produce|e2e|broker-failover`: the broker measured over
//! real member processes on this machine.
//!
//! Each starts a local 3-member cluster (as `dev-cluster` does, on
//! `--base-port`) unless `--endpoints-given` says to use the cluster the
//! global `--endpoints` name, creates a topic of its own, measures, prints
//! a table (or JSON with `-w json`) and stops what it started.
//!
//! - `produce`: records of `--size` bytes in batches of `--batch`, with
//!   `--concurrency` batches in flight, to one partition; msgs/s and MB/s
//!   per replication factor and acks.
//! - `e2e`: a producer at a fixed `--rate` (batches every millisecond) and
//!   a consumer long-polling the leader; each record carries its send time;
//!   p50/p99/p99.9 of send → receive.
//! - `broker-failover`: an acks=all load on one partition; SIGKILL its
//!   leader `--runs` times; the time from the kill to the first batch a new
//!   leader acknowledges.

use crate::WriteOut;
use crate::dev_cluster::{self, Member, NodeProgram};
use anyhow::{Context, Result, bail};
use clap::Args;
use flotilla_client::broker::BrokerClient;
use flotilla_proto::broker as pb;
use serde_json::json;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Options every broker bench shares.
#[derive(Debug, Args, Clone)]
pub struct ClusterArgs {
    /// Use the cluster named by the global --endpoints instead of starting
    /// a local one.
    #[arg(long)]
    endpoints_given: bool,
    /// Ports of the local cluster, as `dev-cluster --base-port`.
    #[arg(long, default_value_t = 25790)]
    base_port: u16,
    /// A `flotilla-node` binary for the local cluster's members.
    #[arg(long)]
    node_bin: Option<PathBuf>,
    /// Extra flags for the local cluster's members (repeatable), such as
    /// `--member-flag=--partition-lease-ttl-ms=1000`.
    #[arg(long = "member-flag", allow_hyphen_values = true)]
    member_flags: Vec<String>,
}

/// `flotilla bench produce|e2e|broker-failover`
#[derive(Debug)]
pub enum BrokerBench {
    /// Produce throughput to one partition (rf 1, and rf 3 with acks=all).
    Produce(ProduceBench),
    /// End-to-end latency, send to receive, at a fixed rate.
    E2e(E2eBench),
    /// Partition failover time after SIGKILL of its leader.
    BrokerFailover(FailoverBench),
}

/// Options of `bench produce`.
#[derive(Debug, Args)]
pub struct ProduceBench {
    #[command(flatten)]
    cluster: ClusterArgs,
    /// Records per configuration.
    #[arg(long, default_value_t = 300_000)]
    messages: u64,
    /// Record value size in bytes.
    #[arg(long, default_value_t = 1024)]
    size: usize,
    /// Records per produce request.
    #[arg(long, default_value_t = 1000)]
    batch: u64,
    /// Produce requests in flight.
    #[arg(long, default_value_t = 4)]
    concurrency: u32,
    /// Replication factors to measure (rf 1 with acks=leader, rf > 1 with
    /// acks=all).
    #[arg(long, value_delimiter = ',', default_value = "1,3")]
    rf: Vec<u32>,
}

/// Options of `bench e2e`.
#[derive(Debug, Args)]
pub struct E2eBench {
    #[command(flatten)]
    cluster: ClusterArgs,
    /// Records per second.
    #[arg(long, default_value_t = 10_000)]
    rate: u64,
    /// Seconds to measure.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Record value size in bytes (at least 8: the send time).
    #[arg(long, default_value_t = 1024)]
    size: usize,
    /// Replication factor (acks=all).
    #[arg(long, default_value_t = 3)]
    rf: u32,
}

/// Options of `bench broker-failover`.
#[derive(Debug, Args)]
pub struct FailoverBench {
    #[command(flatten)]
    cluster: ClusterArgs,
    /// Leader kills to time.
    #[arg(long, default_value_t = 3)]
    runs: u32,
}

/// A local cluster started for a bench.
struct LocalCluster {
    program: NodeProgram,
    dir: PathBuf,
    base_port: u16,
    initial: String,
    flags: Vec<String>,
    members: Vec<Member>,
}

impl LocalCluster {
    async fn start(args: &ClusterArgs) -> Result<LocalCluster> {
        let dir =
            std::env::temp_dir().join(format!("flotilla-bench-broker-{}", std::process::id()));
        let program = dev_cluster::node_program(args.node_bin.as_deref())?;
        let initial = dev_cluster::initial_cluster(3, args.base_port);
        let mut c = LocalCluster {
            program,
            dir,
            base_port: args.base_port,
            initial,
            flags: args.member_flags.clone(),
            members: Vec::new(),
        };
        for i in 0..3 {
            let m = c.spawn(i)?;
            c.members.push(m);
        }
        c.wait_ready().await?;
        Ok(c)
    }

    fn spawn(&self, i: u16) -> Result<Member> {
        let (bin, mut prefix) = self.program.clone();
        let flags: Vec<&'static str> = self
            .flags
            .iter()
            .map(|f| &*Box::leak(f.clone().into_boxed_str()))
            .collect();
        prefix.extend(flags);
        dev_cluster::spawn(
            &(bin, prefix),
            &self.dir,
            self.base_port,
            false,
            i,
            &self.initial,
        )
    }

    async fn wait_ready(&mut self) -> Result<()> {
        dev_cluster::wait_ready(&mut self.members, &self.dir, Duration::from_secs(30)).await
    }

    fn endpoints(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|m| format!("http://127.0.0.1:{}", m.client))
            .collect()
    }

    async fn stop(mut self) {
        for m in &mut self.members {
            dev_cluster::stop(m).await;
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The cluster a bench runs against: started here, or given.
async fn cluster(
    args: &ClusterArgs,
    given: &[String],
) -> Result<(Option<LocalCluster>, Vec<String>)> {
    if args.endpoints_given {
        return Ok((None, given.to_vec()));
    }
    let c = LocalCluster::start(args).await?;
    let e = c.endpoints();
    Ok((Some(c), e))
}

/// Creates a fresh topic of one partition and waits for its leader (and,
/// with rf > 1, a full ISR).
async fn topic(client: &BrokerClient, name: &str, rf: u32) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = client
            .create_topic(
                name,
                pb::TopicConfig {
                    partitions: 1,
                    replication_factor: rf,
                    min_insync_replicas: rf.min(2),
                    ..Default::default()
                },
            )
            .await;
        match r {
            Ok(_) => break,
            // The brokers may still be registering.
            Err(e) if Instant::now() < deadline => {
                tracing::debug!(error = %e, "topic not created yet");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
    loop {
        let d = client.describe_topic(name).await?;
        let p = &d.partitions[0];
        if p.leader != 0 && p.isr.len() == rf as usize {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("topic {name} has no leader or full ISR within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn unique(prefix: &str) -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    format!("{prefix}-{t}")
}

/// One produce configuration: msgs/s and MB/s.
async fn produce_one(
    client: Arc<BrokerClient>,
    args: &ProduceBench,
    rf: u32,
) -> Result<serde_json::Value> {
    let name = unique(&format!("bench-rf{rf}"));
    topic(&client, &name, rf).await?;
    let acks = if rf == 1 {
        pb::Acks::Leader
    } else {
        pb::Acks::All
    };
    let value = bytes::Bytes::from(vec![b'x'; args.size]);
    let batch: Vec<pb::Record> = (0..args.batch)
        .map(|_| pb::Record {
            value: value.clone(),
            ..Default::default()
        })
        .collect();
    let batches = args.messages.div_ceil(args.batch);
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..args.concurrency {
        let (client, next, batch, name) =
            (client.clone(), next.clone(), batch.clone(), name.clone());
        tasks.push(tokio::spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < batches {
                client
                    .produce(pb::ProduceRequest {
                        topic: name.clone(),
                        partition: 0,
                        records: batch.clone(),
                        acks: acks as i32,
                        ..Default::default()
                    })
                    .await?;
            }
            Ok::<_, flotilla_client::broker::BrokerClientError>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let secs = started.elapsed().as_secs_f64();
    let msgs = batches * args.batch;
    let _ = client.delete_topic(&name).await;
    Ok(json!({
        "replication_factor": rf,
        "acks": if rf == 1 { "leader" } else { "all" },
        "messages": msgs,
        "size_bytes": args.size,
        "seconds": secs,
        "msgs_per_sec": msgs as f64 / secs,
        "mb_per_sec": (msgs as f64 * args.size as f64) / secs / 1e6,
    }))
}

async fn bench_produce(args: ProduceBench, given: &[String], out: WriteOut) -> Result<()> {
    let (local, endpoints) = cluster(&args.cluster, given).await?;
    let client = Arc::new(BrokerClient::new(&endpoints)?);
    let mut rows = Vec::new();
    let mut failure = None;
    for &rf in &args.rf {
        match produce_one(client.clone(), &args, rf).await {
            Ok(r) => rows.push(r),
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    if let Some(c) = local {
        c.stop().await;
    }
    if let Some(e) = failure {
        return Err(e);
    }
    match out {
        WriteOut::Json => println!("{}", json!({ "produce": rows })),
        WriteOut::Table => {
            println!(
                "produce to one partition: {} x {} B records, batches of {}, {} in flight",
                args.messages, args.size, args.batch, args.concurrency
            );
            println!(
                "{:>4}  {:>6}  {:>12}  {:>10}  {:>8}",
                "RF", "ACKS", "MSGS/S", "MB/S", "SECONDS"
            );
            for r in &rows {
                println!(
                    "{:>4}  {:>6}  {:>12.0}  {:>10.1}  {:>8.2}",
                    r["replication_factor"].as_u64().unwrap_or(0),
                    r["acks"].as_str().unwrap_or(""),
                    r["msgs_per_sec"].as_f64().unwrap_or(0.0),
                    r["mb_per_sec"].as_f64().unwrap_or(0.0),
                    r["seconds"].as_f64().unwrap_or(0.0)
                );
            }
        }
    }
    Ok(())
}

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

async fn bench_e2e(args: E2eBench, given: &[String], out: WriteOut) -> Result<()> {
    if args.size < 8 {
        bail!("--size must be at least 8 (the send time)");
    }
    if args.rate == 0 || args.rate > 1_000_000 {
        bail!("--rate must be from 1 to 1000000");
    }
    let (local, endpoints) = cluster(&args.cluster, given).await?;
    let result = e2e(&args, &endpoints).await;
    if let Some(c) = local {
        c.stop().await;
    }
    let (h, received, sent) = result?;
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    match out {
        WriteOut::Json => println!(
            "{}",
            json!({"rate": args.rate, "seconds": args.seconds, "size_bytes": args.size, "replication_factor": args.rf,
                   "sent": sent, "received": received,
                   "p50_ms": ms(0.5), "p99_ms": ms(0.99), "p999_ms": ms(0.999), "max_ms": h.max() as f64 / 1000.0})
        ),
        WriteOut::Table => {
            println!(
                "end to end (send -> receive), {} msgs/s of {} B for {} s, rf {} acks=all: {sent} sent, {received} received",
                args.rate, args.size, args.seconds, args.rf
            );
            println!(
                "{:>8}  {:>8}  {:>8}  {:>8}",
                "P50 MS", "P99 MS", "P99.9 MS", "MAX MS"
            );
            println!(
                "{:>8.2}  {:>8.2}  {:>8.2}  {:>8.2}",
                ms(0.5),
                ms(0.99),
                ms(0.999),
                h.max() as f64 / 1000.0
            );
        }
    }
    Ok(())
}

async fn e2e(
    args: &E2eBench,
    endpoints: &[String],
) -> Result<(hdrhistogram::Histogram<u64>, u64, u64)> {
    let client = Arc::new(BrokerClient::new(endpoints)?);
    let name = unique("bench-e2e");
    topic(&client, &name, args.rf).await?;
    // One acks=all record first: it is acknowledged once every follower
    // fetches from the new leader, so the measurement starts in the steady
    // state, not while the followers are still starting.
    let warm = client
        .produce(pb::ProduceRequest {
            topic: name.clone(),
            partition: 0,
            records: vec![pb::Record {
                value: bytes::Bytes::from_static(b"warm-up"),
                ..Default::default()
            }],
            acks: pb::Acks::All as i32,
            ..Default::default()
        })
        .await?;
    let start = warm.base_offset + 1;
    let stop = Arc::new(AtomicBool::new(false));
    let consumer = {
        let (client, name, stop) = (client.clone(), name.clone(), stop.clone());
        tokio::spawn(async move {
            let mut h = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)
                .expect("histogram");
            let mut offset = start;
            let mut received = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let resp = client
                    .fetch(pb::FetchRequest {
                        topic: name.clone(),
                        partition: 0,
                        offset,
                        max_wait_ms: 100,
                        ..Default::default()
                    })
                    .await?;
                let now = now_ns();
                for r in &resp.records {
                    let sent = u64::from_le_bytes(r.value[..8].try_into().expect("8 bytes"));
                    let _ = h.record((now.saturating_sub(sent) / 1000).max(1));
                    offset = r.offset + 1;
                    received += 1;
                }
            }
            Ok::<_, flotilla_client::broker::BrokerClientError>((h, received))
        })
    };
    // Batches every millisecond: rate / 1000 records each (at least one,
    // then fewer ticks).
    let per_tick = (args.rate / 1000).max(1);
    let tick = Duration::from_micros(1_000_000 * per_tick / args.rate);
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let mut sent = 0u64;
    let mut inflight = tokio::task::JoinSet::new();
    while Instant::now() < deadline {
        interval.tick().await;
        let t = now_ns().to_le_bytes();
        let mut v = vec![b'x'; args.size];
        v[..8].copy_from_slice(&t);
        let v = bytes::Bytes::from(v);
        let records: Vec<pb::Record> = (0..per_tick)
            .map(|_| pb::Record {
                value: v.clone(),
                ..Default::default()
            })
            .collect();
        let (client, name) = (client.clone(), name.clone());
        sent += per_tick;
        inflight.spawn(async move {
            client
                .produce(pb::ProduceRequest {
                    topic: name,
                    partition: 0,
                    records,
                    acks: pb::Acks::All as i32,
                    ..Default::default()
                })
                .await
        });
        while let Some(r) = inflight.try_join_next() {
            r??;
        }
        if inflight.len() > 10_000 {
            bail!("the cluster does not keep up with {} msgs/s", args.rate);
        }
    }
    while let Some(r) = inflight.join_next().await {
        r??;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let (h, received) = consumer.await??;
    let _ = client.delete_topic(&name).await;
    Ok((h, received, sent))
}

async fn bench_failover(args: FailoverBench, out: WriteOut) -> Result<()> {
    if args.runs == 0 {
        bail!("--runs must be at least 1");
    }
    if args.cluster.endpoints_given {
        bail!("broker-failover kills members: it runs on a local cluster it starts");
    }
    let mut c = LocalCluster::start(&args.cluster).await?;
    let result = failover_runs(&mut c, args.runs).await;
    let dir = c.dir.clone();
    if result.is_ok() {
        c.stop().await;
    } else {
        for m in &mut c.members {
            dev_cluster::stop(m).await;
        }
    }
    let runs = result.with_context(|| format!("logs in {}", dir.display()))?;
    let mut sorted = runs.clone();
    sorted.sort_by(f64::total_cmp);
    match out {
        WriteOut::Json => println!(
            "{}",
            json!({"runs_ms": runs, "min_ms": sorted[0], "median_ms": sorted[sorted.len() / 2], "max_ms": sorted[sorted.len() - 1]})
        ),
        WriteOut::Table => {
            println!(
                "partition failover (SIGKILL of the leader -> first acks=all batch a new leader acknowledged)"
            );
            for (i, r) in runs.iter().enumerate() {
                println!("  run {}: {r:.0} ms", i + 1);
            }
            println!(
                "min {:.0} ms  median {:.0} ms  max {:.0} ms",
                sorted[0],
                sorted[sorted.len() / 2],
                sorted[sorted.len() - 1]
            );
        }
    }
    Ok(())
}

async fn failover_runs(c: &mut LocalCluster, runs: u32) -> Result<Vec<f64>> {
    let client = Arc::new(BrokerClient::new(&c.endpoints())?);
    let name = unique("bench-failover");
    topic(&client, &name, 3).await?;
    let mut out = Vec::new();
    for run in 1..=runs {
        let d = client.describe_topic(&name).await?;
        let leader_addr = d.partitions[0].leader_addr.clone();
        let victim = c
            .members
            .iter()
            .position(|m| leader_addr.ends_with(&format!(":{}", m.client)))
            .context("the leader is not a local member")?;
        // The load: batches one after the other; the first acknowledged
        // after the kill ends the run.
        let pid = c.members[victim].child.id().context("no pid")?;
        let killed = Instant::now();
        rustix::process::kill_process(
            rustix::process::Pid::from_raw(pid as i32).context("pid")?,
            rustix::process::Signal::KILL,
        )?;
        let mut n = 0u64;
        let elapsed = loop {
            let r = client
                .produce(pb::ProduceRequest {
                    topic: name.clone(),
                    partition: 0,
                    records: vec![pb::Record {
                        value: format!("r{run}-{n}").into_bytes().into(),
                        ..Default::default()
                    }],
                    acks: pb::Acks::All as i32,
                    ..Default::default()
                })
                .await;
            n += 1;
            if let Ok(resp) = r
                && resp.leader_epoch > d.partitions[0].leader_epoch
            {
                break killed.elapsed();
            }
            if killed.elapsed() > Duration::from_secs(60) {
                bail!("no new leader within 60 s");
            }
        };
        eprintln!(
            "run {run}: a new leader acknowledged after {:.0} ms",
            elapsed.as_secs_f64() * 1e3
        );
        out.push(elapsed.as_secs_f64() * 1e3);
        let _ = c.members[victim].child.wait().await;
        c.members[victim] = c.spawn(victim as u16)?;
        c.wait_ready().await?;
        // The restarted broker catches up into the ISR before the next run.
        let deadline = Instant::now() + Duration::from_secs(30);
        while client.describe_topic(&name).await?.partitions[0].isr.len() < 3 {
            if Instant::now() >= deadline {
                bail!("the restarted broker did not rejoin the ISR within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(out)
}

/// Runs a broker bench.
pub async fn run(cmd: BrokerBench, endpoints: &[String], out: WriteOut) -> Result<()> {
    match cmd {
        BrokerBench::Produce(a) => bench_produce(a, endpoints, out).await,
        BrokerBench::E2e(a) => bench_e2e(a, endpoints, out).await,
        BrokerBench::BrokerFailover(a) => bench_failover(a, out).await,
    }
}
