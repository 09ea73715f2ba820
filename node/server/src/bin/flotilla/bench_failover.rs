//! `flotilla bench failover`: how long writes stop when the leader is
//! stopped, over real member processes on this machine.
//!
//! It starts a local 3-member cluster (as `dev-cluster` does, fsync on),
//! keeps writers putting through it, and `--runs` times: finds the leader,
//! sends it SIGTERM (or, with `--signal kill`, SIGKILL), and times the first
//! put that one of the other members accepts as leader — puts sent straight
//! to each of them, marked so that they are proposed there or refused,
//! never forwarded. Then it waits for the old leader's process to end,
//! starts it again and lets the cluster settle before the next run. It
//! prints each run and the minimum, median and maximum.

use crate::WriteOut;
use crate::dev_cluster::{self, Member, NodeProgram};
use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use flotilla_client::{Client, ClientConfig};
use flotilla_proto::etcdserverpb::kv_client::KvClient;
use flotilla_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use flotilla_proto::etcdserverpb::{PutRequest, StatusRequest};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tonic::transport::{Channel, Endpoint};

/// How the leader is stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum StopSignal {
    /// SIGTERM: the member hands leadership over, then stops (Kubernetes'
    /// way of stopping a pod).
    Term,
    /// SIGKILL: the member vanishes; the others wait out an election
    /// timeout.
    Kill,
}

/// Options of `flotilla bench failover`.
#[derive(Debug, Args)]
pub struct FailoverArgs {
    /// Leader stops to time.
    #[arg(long, default_value_t = 5)]
    runs: u32,
    /// How the leader is stopped.
    #[arg(long, value_enum, default_value = "term")]
    signal: StopSignal,
    /// Writers putting through the cluster meanwhile.
    #[arg(long, default_value_t = 4)]
    writers: u32,
    /// Ports as `dev-cluster --base-port` uses them.
    #[arg(long, default_value_t = 23790)]
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

/// One timed stop.
#[derive(Debug, serde::Serialize)]
struct RunResult {
    /// Milliseconds from the signal to the first put a new leader accepted.
    first_write_ms: f64,
    /// Milliseconds from the signal to the old leader's exit (as seen
    /// between probe puts, so to within a put's round trip).
    exit_ms: f64,
    /// The old leader's exit code (none when killed by a signal).
    exit_code: Option<i32>,
    /// What the old leader's log says of its hand-off (SIGTERM only).
    hand_off: String,
}

/// The cluster under test.
struct Cluster {
    program: NodeProgram,
    dir: PathBuf,
    base_port: u16,
    initial: String,
    members: Vec<Member>,
}

impl Cluster {
    fn endpoint(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", self.members[i].client)
    }

    fn endpoints(&self) -> Vec<String> {
        (0..self.members.len()).map(|i| self.endpoint(i)).collect()
    }

    async fn start(args: &FailoverArgs, dir: PathBuf) -> Result<Cluster> {
        let program = dev_cluster::node_program(args.node_bin.as_deref())?;
        let initial = dev_cluster::initial_cluster(3, args.base_port);
        let mut c = Cluster {
            program,
            dir,
            base_port: args.base_port,
            initial,
            members: Vec::new(),
        };
        for i in 0..3 {
            let m = dev_cluster::spawn(&c.program, &c.dir, c.base_port, false, i, &c.initial)?;
            c.members.push(m);
        }
        c.wait_ready().await?;
        Ok(c)
    }

    async fn wait_ready(&mut self) -> Result<()> {
        dev_cluster::wait_ready(&mut self.members, &self.dir, Duration::from_secs(30)).await
    }

    /// The member that leads, with its term.
    async fn leader(&self) -> Result<(usize, u64)> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            for i in 0..self.members.len() {
                let mut req = tonic::Request::new(StatusRequest {});
                req.set_timeout(Duration::from_millis(500));
                let mut client = MaintenanceClient::new(channel(&self.endpoint(i))?);
                if let Ok(s) = client.status(req).await {
                    let s = s.into_inner();
                    let me = s.header.map_or(0, |h| h.member_id);
                    if s.leader != 0 && s.leader == me {
                        return Ok((i, s.raft_term));
                    }
                }
            }
            if Instant::now() >= deadline {
                bail!("no leader within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn stop_all(&mut self) {
        for m in &mut self.members {
            dev_cluster::stop(m).await;
        }
    }
}

fn channel(url: &str) -> Result<Channel> {
    Ok(Endpoint::from_shared(url.to_string())?
        .connect_timeout(Duration::from_millis(300))
        .connect_lazy())
}

/// Puts through `kv` (a member other than the stopped leader; it forwards
/// to whoever leads): whether the put was acknowledged by a member already
/// in a term after `old_term`, that is, committed under a new leader. A put
/// the old leader still took before it handed over answers in the old term
/// and does not count.
async fn put_in_new_term(kv: &mut KvClient<Channel>, n: u64, old_term: u64) -> bool {
    let mut req = tonic::Request::new(PutRequest {
        key: format!("failover/probe/{n}").into_bytes(),
        value: b"probe".to_vec(),
        ..PutRequest::default()
    });
    req.set_timeout(Duration::from_millis(250));
    match tokio::time::timeout(Duration::from_millis(300), kv.put(req)).await {
        Ok(Ok(r)) => r
            .into_inner()
            .header
            .is_some_and(|h| h.raft_term > old_term),
        _ => false,
    }
}

/// Sends `signal` to the member's process.
fn send_signal(member: &Member, signal: StopSignal) -> Result<()> {
    let pid = member.child.id().context("the member has exited")?;
    let pid = rustix::process::Pid::from_raw(pid as i32).context("bad pid")?;
    let signal = match signal {
        StopSignal::Term => rustix::process::Signal::TERM,
        StopSignal::Kill => rustix::process::Signal::KILL,
    };
    rustix::process::kill_process(pid, signal).context("cannot signal the leader")
}

async fn one_run(c: &mut Cluster, signal: StopSignal, probe_seq: &AtomicU64) -> Result<RunResult> {
    let (old, term) = c.leader().await?;
    let mut others: Vec<KvClient<Channel>> = Vec::new();
    for i in (0..c.members.len()).filter(|i| *i != old) {
        others.push(KvClient::new(channel(&c.endpoint(i))?));
    }
    // The probe's connections are open before the clock starts.
    for kv in &mut others {
        let _ = put_in_new_term(kv, probe_seq.fetch_add(1, Ordering::Relaxed), term).await;
    }
    let signalled = Instant::now();
    send_signal(&c.members[old], signal)?;
    let mut exited: Option<(Duration, std::process::ExitStatus)> = None;
    let first_write = loop {
        if exited.is_none()
            && let Ok(Some(status)) = c.members[old].child.try_wait()
        {
            exited = Some((signalled.elapsed(), status));
        }
        let mut accepted = false;
        for kv in &mut others {
            if put_in_new_term(kv, probe_seq.fetch_add(1, Ordering::Relaxed), term).await {
                accepted = true;
                break;
            }
        }
        if accepted {
            break signalled.elapsed();
        }
        if signalled.elapsed() > Duration::from_secs(30) {
            bail!("no member accepted a write within 30 s of stopping the leader");
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    let (exit_after, exit) = match exited {
        Some(exited) => exited,
        None => {
            let status = tokio::time::timeout(Duration::from_secs(30), c.members[old].child.wait())
                .await
                .context("the old leader did not exit within 30 s")??;
            (signalled.elapsed(), status)
        }
    };
    let exit_ms = exit_after.as_secs_f64() * 1e3;
    let hand_off = match signal {
        StopSignal::Term => hand_off_outcome(&c.dir.join(format!("{}.log", c.members[old].name))),
        StopSignal::Kill => "-".to_string(),
    };
    // Back to three members, settled, for the next run.
    c.members[old] = dev_cluster::spawn(
        &c.program,
        &c.dir,
        c.base_port,
        false,
        old as u16,
        &c.initial,
    )?;
    c.wait_ready().await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    Ok(RunResult {
        first_write_ms: first_write.as_secs_f64() * 1e3,
        exit_ms,
        exit_code: exit.code(),
        hand_off,
    })
}

/// The last hand-off the member's log reports: `done in N ms` or `failed`.
fn hand_off_outcome(log: &std::path::Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let Some(line) = text
        .lines()
        .rev()
        .find(|l| l.contains("leadership hand-off"))
    else {
        return "not logged".to_string();
    };
    if line.contains("failed") {
        return "failed".to_string();
    }
    line.split("took_ms=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .map_or("done".to_string(), |ms| format!("done in {ms} ms"))
}

fn print_results(args: &FailoverArgs, runs: &[RunResult], out: WriteOut) -> Result<()> {
    let mut ms: Vec<f64> = runs.iter().map(|r| r.first_write_ms).collect();
    ms.sort_by(f64::total_cmp);
    let (min, median, max) = (ms[0], ms[ms.len() / 2], ms[ms.len() - 1]);
    match out {
        WriteOut::Json => {
            let doc = serde_json::json!({
                "signal": format!("{:?}", args.signal).to_lowercase(),
                "runs": runs,
                "first_write_ms": { "min": min, "median": median, "max": max },
            });
            println!("{}", serde_json::to_string_pretty(&doc)?);
        }
        WriteOut::Table => {
            println!("run  first write (ms)  old leader exit (ms)  exit code  hand-off");
            for (i, r) in runs.iter().enumerate() {
                let code = r.exit_code.map_or("signal".to_string(), |c| c.to_string());
                println!(
                    "{:>3}  {:>16.1}  {:>20.1}  {code:>9}  {}",
                    i + 1,
                    r.first_write_ms,
                    r.exit_ms,
                    r.hand_off
                );
            }
            println!(
                "leader stopped ({}) -> first write on a new leader: min {min:.1} ms, median {median:.1} ms, max {max:.1} ms over {} runs",
                match args.signal {
                    StopSignal::Term => "SIGTERM",
                    StopSignal::Kill => "SIGKILL",
                },
                runs.len()
            );
        }
    }
    Ok(())
}

/// Runs the benchmark.
pub async fn run(args: FailoverArgs, out: WriteOut) -> Result<()> {
    if args.runs == 0 {
        bail!("--runs must be at least 1");
    }
    let (dir, temporary) = match &args.dir {
        Some(d) => (d.clone(), false),
        None => (
            std::env::temp_dir().join(format!("flotilla-failover-{}", std::process::id())),
            true,
        ),
    };
    let mut c = Cluster::start(&args, dir.clone()).await?;
    let stop = Arc::new(AtomicBool::new(false));
    let config = ClientConfig {
        request_timeout: Duration::from_secs(5),
        attempt_timeout: Duration::from_secs(1),
        max_attempts: 50,
        connect_timeout: Duration::from_millis(300),
        backoff_min: Duration::from_millis(5),
        backoff_max: Duration::from_millis(100),
    };
    let mut writers = Vec::new();
    for w in 0..args.writers {
        let client = Client::new(&c.endpoints(), config.clone())?;
        let stop = stop.clone();
        writers.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let _ = client
                    .put(format!("failover/w{w}/{n}").as_bytes(), b"v")
                    .await;
            }
        }));
    }
    let probe_seq = AtomicU64::new(0);
    let mut runs = Vec::new();
    let mut failure = None;
    for run in 1..=args.runs {
        match one_run(&mut c, args.signal, &probe_seq).await {
            Ok(r) => {
                eprintln!("run {run}: first write after {:.1} ms", r.first_write_ms);
                runs.push(r);
            }
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        let _ = w.await;
    }
    c.stop_all().await;
    if temporary && failure.is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    if let Some(e) = failure {
        return Err(e.context(format!("logs in {}", dir.display())));
    }
    print_results(&args, &runs, out)
}
