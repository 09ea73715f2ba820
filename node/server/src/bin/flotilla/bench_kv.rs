//! `flotilla bench kv`: a load generator in the manner of etcd's `benchmark`
//! tool, against any etcd v3 endpoint (Flotilla or etcd itself).
//!
//! `--clients` tasks share `--conns` gRPC connections round-robin (each
//! connection goes to the next endpoint in turn) and take requests from one
//! shared counter until `--total` have been sent. The connections are split
//! over one single-threaded runtime per core, each with the clients that
//! use its connections, so no request changes threads on its way (see
//! [`load_thread`]). Latencies go into an HDR
//! histogram (microseconds); the report gives throughput, p50/p90/p99/p99.9
//! and max, and the error count. The exit code is 1 when every request
//! failed.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::WriteOut;
use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand, ValueEnum};
use flotilla_proto::etcdserverpb::kv_client::KvClient;
use flotilla_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use flotilla_proto::etcdserverpb::{PutRequest, RangeRequest, StatusRequest};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};
use tonic::body::Body;
use tonic::codegen::Service;
use tonic::codegen::http::{Request as HttpRequest, Response as HttpResponse, Uri};
use tonic::transport::{Channel, Endpoint};

/// `flotilla bench kv ...`
#[derive(Debug, Subcommand)]
pub enum KvBench {
    /// Put requests: keys of `--key-size` bytes (random in `--key-space-size`,
    /// or sequential), values of `--val-size` bytes.
    Put {
        #[command(flatten)]
        load: LoadArgs,
        /// Key size in bytes (the key number is written big-endian into its
        /// last bytes, at most 8).
        #[arg(long, default_value_t = 8)]
        key_size: usize,
        /// Value size in bytes.
        #[arg(long, default_value_t = 256)]
        val_size: usize,
        /// Use keys 0, 1, 2, ... (modulo `--key-space-size`) instead of
        /// random ones.
        #[arg(long)]
        sequential_keys: bool,
        /// Number of distinct keys. (etcd's benchmark defaults to 1, every
        /// put to the same key.)
        #[arg(long, default_value_t = 100_000)]
        key_space_size: u64,
    },
    /// Range requests for one key (or `[key, range-end)`), written once
    /// before the run unless `--no-populate`.
    Range {
        #[command(flatten)]
        load: LoadArgs,
        /// The key to read.
        #[arg(default_value = "bench-range-key")]
        key: String,
        /// Range end (exclusive); empty reads just the key.
        #[arg(long, default_value = "")]
        range_end: String,
        /// l: linearizable (the default), s: serializable.
        #[arg(long, value_enum, default_value_t = Consistency::L)]
        consistency: Consistency,
        /// Size of the value written to the key before the run.
        #[arg(long, default_value_t = 256)]
        val_size: usize,
        /// Do not write the key before the run.
        #[arg(long)]
        no_populate: bool,
    },
}

/// Read consistency, as etcd's benchmark `--consistency`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Consistency {
    /// Linearizable.
    L,
    /// Serializable.
    S,
}

/// Options common to every load.
#[derive(Debug, Args)]
pub struct LoadArgs {
    /// Concurrent requesters.
    #[arg(long, default_value_t = 100)]
    clients: usize,
    /// gRPC connections, shared round-robin by the clients and spread over
    /// the endpoints.
    #[arg(long, default_value_t = 10)]
    conns: usize,
    /// Requests in all.
    #[arg(long, default_value_t = 10_000)]
    total: u64,
    /// Send everything to the leader (found via Maintenance.Status) instead
    /// of spreading over the endpoints.
    #[arg(long)]
    leader_only: bool,
    /// Per-request timeout in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    timeout_ms: u64,
    /// No progress bar.
    #[arg(long)]
    no_progress: bool,
    /// Shorthand for `-w json`.
    #[arg(long)]
    json: bool,
}

/// What one requester sends.
#[derive(Debug, Clone)]
enum Op {
    Put {
        key_size: usize,
        value: Vec<u8>,
        sequential: bool,
        key_space: u64,
    },
    Range {
        key: Vec<u8>,
        range_end: Vec<u8>,
        serializable: bool,
    },
}

impl Op {
    fn name(&self) -> &'static str {
        match self {
            Op::Put { .. } => "put",
            Op::Range {
                serializable: false,
                ..
            } => "range (linearizable)",
            Op::Range {
                serializable: true, ..
            } => "range (serializable)",
        }
    }
}

/// One requester's results.
struct Tally {
    hist: Histogram<u64>,
    errors: u64,
    samples: Vec<String>,
}

const ERROR_SAMPLES: usize = 5;

fn histogram() -> Histogram<u64> {
    // 1 µs to 10 min, 3 significant digits.
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

fn key_bytes(n: u64, size: usize) -> Vec<u8> {
    let mut key = vec![b'k'; size];
    let be = n.to_be_bytes();
    let take = size.min(8);
    key[size - take..].copy_from_slice(&be[8 - take..]);
    key
}

/// One HTTP/2 connection of the load, used through hyper's client
/// directly. A tonic `Channel` hands every request to a buffer task before
/// the connection's own task sees it; without that hop the generator takes
/// less of the CPU it shares with the members under test. Clones share the
/// connection.
#[derive(Clone)]
struct Conn(hyper::client::conn::http2::SendRequest<Body>);

impl Service<HttpRequest<Body>> for Conn {
    type Response = HttpResponse<hyper::body::Incoming>;
    type Error = hyper::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, hyper::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), hyper::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: HttpRequest<Body>) -> Self::Future {
        Box::pin(self.0.send_request(request))
    }
}

/// A KV client on a new load connection to `endpoint` (TCP_NODELAY,
/// writes coalesced per scheduler pass, as the members' own connections).
async fn connect_load(endpoint: &str, timeout: Duration) -> Result<KvClient<Conn>> {
    let url = crate::connect::url(endpoint);
    let uri: Uri = url
        .parse()
        .with_context(|| format!("bad endpoint {endpoint}"))?;
    let connecting = async {
        let io = flotilla_client::coalesce::Connector::default()
            .call(uri.clone())
            .await
            .with_context(|| format!("cannot connect to {url}"))?;
        hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
            .handshake(io)
            .await
            .with_context(|| format!("HTTP/2 handshake with {url} failed"))
    };
    let (send, connection) = tokio::time::timeout(timeout.min(Duration::from_secs(3)), connecting)
        .await
        .with_context(|| format!("cannot connect to {url}: timed out"))??;
    // Runs until every clone of the client is dropped.
    tokio::spawn(connection);
    Ok(KvClient::with_origin(Conn(send), uri))
}

async fn connect(endpoint: &str, timeout: Duration) -> Result<Channel> {
    let url = crate::connect::url(endpoint);
    Endpoint::from_shared(url.clone())
        .with_context(|| format!("bad endpoint {endpoint}"))?
        .connect_timeout(Duration::from_secs(3))
        .timeout(timeout)
        .connect_with_connector(flotilla_client::coalesce::Connector::default())
        .await
        .with_context(|| format!("cannot connect to {url}"))
}

/// The endpoint of the current leader, asking each endpoint's Status.
async fn find_leader(endpoints: &[String], timeout: Duration) -> Result<String> {
    let mut statuses = Vec::new();
    for endpoint in endpoints {
        let Ok(ch) = connect(endpoint, timeout).await else {
            continue;
        };
        if let Ok(s) = MaintenanceClient::new(ch).status(StatusRequest {}).await {
            let s = s.into_inner();
            let id = s.header.as_ref().map_or(0, |h| h.member_id);
            statuses.push((endpoint.clone(), id, s.leader));
        }
    }
    let leader = statuses
        .iter()
        .map(|(_, _, leader)| *leader)
        .find(|&l| l != 0);
    let Some(leader) = leader else {
        bail!("no endpoint knows a leader");
    };
    statuses
        .into_iter()
        .find(|(_, id, _)| *id == leader)
        .map(|(endpoint, _, _)| endpoint)
        .with_context(|| format!("the leader {leader:x} is not among --endpoints"))
}

/// Runs a `bench kv` load and prints its report.
pub async fn run(cmd: KvBench, endpoints: &[String], out: WriteOut) -> Result<ExitCode> {
    if endpoints.is_empty() {
        bail!("no --endpoints");
    }
    let (load, op) = match cmd {
        KvBench::Put {
            load,
            key_size,
            val_size,
            sequential_keys,
            key_space_size,
        } => {
            if key_size == 0 || key_space_size == 0 {
                bail!("--key-size and --key-space-size must be positive");
            }
            let op = Op::Put {
                key_size,
                value: vec![b'v'; val_size],
                sequential: sequential_keys,
                key_space: key_space_size,
            };
            (load, op)
        }
        KvBench::Range {
            load,
            key,
            range_end,
            consistency,
            val_size,
            no_populate,
        } => {
            let op = Op::Range {
                key: key.into_bytes(),
                range_end: range_end.into_bytes(),
                serializable: consistency == Consistency::S,
            };
            if !no_populate && let Op::Range { key, .. } = &op {
                let ch = connect(&endpoints[0], Duration::from_secs(10)).await?;
                KvClient::new(ch)
                    .put(PutRequest {
                        key: key.clone(),
                        value: vec![b'v'; val_size],
                        ..PutRequest::default()
                    })
                    .await
                    .context("cannot write the key to read")?;
            }
            (load, op)
        }
    };
    if load.clients == 0 || load.conns == 0 {
        bail!("--clients and --conns must be positive");
    }
    let json = load.json || out == WriteOut::Json;
    let timeout = Duration::from_millis(load.timeout_ms);
    let targets: Vec<String> = if load.leader_only {
        vec![find_leader(endpoints, timeout).await?]
    } else {
        endpoints.to_vec()
    };
    let bar = if load.no_progress {
        ProgressBar::hidden()
    } else {
        let bar = ProgressBar::new(load.total);
        bar.set_style(
            ProgressStyle::with_template(
                "{msg} [{elapsed_precise}] {wide_bar} {pos}/{len} ({per_sec}, eta {eta})",
            )
            .expect("valid progress template"),
        );
        bar.set_message(op.name());
        bar
    };
    let threads = load_threads(load.conns, load.clients);
    let shared = Arc::new(Shared {
        op: op.clone(),
        next: AtomicU64::new(0),
        bar: bar.clone(),
        total: load.total,
        timeout,
        targets: targets.clone(),
        conns: load.conns,
        clients: load.clients,
        threads,
    });
    // Every thread connects first and says so; the clock starts once all
    // have, and `go` lets them send (dropped unsent, it stops them).
    let (connected_tx, mut connected) = tokio::sync::mpsc::channel(threads);
    let (go, go_rx) = tokio::sync::watch::channel(false);
    let mut workers = Vec::with_capacity(threads);
    for t in 0..threads {
        let (shared, connected_tx, go_rx) = (shared.clone(), connected_tx.clone(), go_rx.clone());
        let worker = std::thread::Builder::new()
            .name(format!("bench-load-{t}"))
            .spawn(move || load_thread(t, &shared, connected_tx, go_rx))
            .context("cannot start a load thread")?;
        workers.push(worker);
    }
    drop(connected_tx);
    for _ in 0..threads {
        match connected.recv().await {
            Some(Ok(())) => {}
            Some(Err(e)) => return Err(e),
            None => bail!("a load thread stopped before it connected"),
        }
    }
    let start = Instant::now();
    go.send_replace(true);
    let tallies = tokio::task::spawn_blocking(move || {
        workers
            .into_iter()
            .map(|w| {
                w.join()
                    .map_err(|_| anyhow::anyhow!("a load thread panicked"))?
            })
            .collect::<Result<Vec<Vec<Tally>>>>()
    })
    .await
    .context("waiting for the load threads")??;
    let elapsed = start.elapsed().as_secs_f64();
    let mut hist = histogram();
    let mut errors = 0;
    let mut samples: Vec<String> = Vec::new();
    for tally in tallies.into_iter().flatten() {
        hist.add(&tally.hist).context("merging histograms")?;
        errors += tally.errors;
        for s in tally.samples {
            if samples.len() < ERROR_SAMPLES && !samples.contains(&s) {
                samples.push(s);
            }
        }
    }
    bar.finish_and_clear();

    let ok = hist.len();
    let rps = ok as f64 / elapsed.max(1e-9);
    let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    if json {
        let doc = serde_json::json!({
            "op": op.name(),
            "endpoints": targets,
            "clients": load.clients,
            "conns": load.conns,
            "total": load.total,
            "ok": ok,
            "errors": errors,
            "error_samples": samples,
            "elapsed_s": elapsed,
            "requests_per_s": rps,
            "latency_ms": {
                "mean": hist.mean() / 1000.0,
                "p50": ms(0.5),
                "p90": ms(0.9),
                "p99": ms(0.99),
                "p99_9": ms(0.999),
                "max": hist.max() as f64 / 1000.0,
            },
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        println!("Summary ({}):", op.name());
        println!("  Endpoints:    {}", targets.join(","));
        println!(
            "  Clients:      {} over {} connection(s)",
            load.clients, load.conns
        );
        println!("  Total:        {elapsed:.4} s");
        println!("  Requests:     {ok} ok, {errors} error(s)");
        println!("  Requests/sec: {rps:.1}");
        println!("Latency (ms):");
        println!("  mean  {:>10.3}", hist.mean() / 1000.0);
        for (name, q) in [("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p99.9", 0.999)] {
            println!("  {name:<5} {:>10.3}", ms(q));
        }
        println!("  max   {:>10.3}", hist.max() as f64 / 1000.0);
        for s in &samples {
            println!("error: {s}");
        }
    }
    if ok == 0 && load.total > 0 {
        eprintln!("every request failed");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// What every load thread reads.
struct Shared {
    op: Op,
    /// The next request's number; requests stop at `total`.
    next: AtomicU64,
    bar: ProgressBar,
    total: u64,
    timeout: Duration,
    /// Connection `i` goes to `targets[i % targets.len()]`.
    targets: Vec<String>,
    conns: usize,
    clients: usize,
    threads: usize,
}

/// How many threads the load runs on: one per core, at most one per
/// connection and one per client (a thread without clients would close
/// its connections as the run starts). Threads get whole connections, so
/// when `conns` is not a multiple of the count, some carry more clients
/// than others.
fn load_threads(conns: usize, clients: usize) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    conns.min(clients).clamp(1, cores)
}

/// Load thread `t`: its own single-threaded runtime, with connections
/// `t, t + threads, ...` and the clients that use them (client `c` uses
/// connection `c % conns`). A request, its connection's task and its
/// answer so stay on one thread: a hop to another costs a wake-up, which
/// the report would count as the server's latency and which takes CPU
/// from the members on a small machine. Reports on `connected` once its
/// connections are up (or failed), then waits for `go`.
fn load_thread(
    t: usize,
    shared: &Arc<Shared>,
    connected: tokio::sync::mpsc::Sender<Result<()>>,
    mut go: tokio::sync::watch::Receiver<bool>,
) -> Result<Vec<Tally>> {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let _ = connected.blocking_send(Err(
                anyhow::Error::new(e).context("cannot start a load runtime")
            ));
            return Ok(Vec::new());
        }
    };
    rt.block_on(async move {
        let mut clients = Vec::new();
        let mut up = Ok(());
        for i in (t..shared.conns).step_by(shared.threads) {
            match connect_load(&shared.targets[i % shared.targets.len()], shared.timeout).await {
                Ok(client) => clients.push((i, client)),
                Err(e) => {
                    up = Err(e);
                    break;
                }
            }
        }
        let failed = up.is_err();
        let sent = connected.send(up).await;
        // Dropped at once, so that if another thread dies before it
        // reports, the main thread sees the channel close instead of
        // waiting for it with this thread waiting for `go`.
        drop(connected);
        if sent.is_err() || failed {
            return Ok(Vec::new());
        }
        if go.wait_for(|go| *go).await.is_err() {
            // The run was called off: another thread could not connect.
            return Ok(Vec::new());
        }
        let mut tasks = Vec::new();
        for c in (0..shared.clients).filter(|c| (c % shared.conns) % shared.threads == t) {
            let conn = c % shared.conns;
            let client = clients
                .iter()
                .find(|(i, _)| *i == conn)
                .map(|(_, client)| client.clone())
                .expect("a thread holds the connections of its clients");
            tasks.push(tokio::spawn(requester(client, shared.clone(), c)));
        }
        let mut tallies = Vec::with_capacity(tasks.len());
        for task in tasks {
            tallies.push(task.await.context("a requester panicked")?);
        }
        Ok(tallies)
    })
}

async fn requester(mut client: KvClient<Conn>, shared: Arc<Shared>, seed: usize) -> Tally {
    let Shared {
        op,
        next,
        bar,
        total,
        timeout,
        ..
    } = &*shared;
    let (total, timeout) = (*total, *timeout);
    let mut rng = SmallRng::seed_from_u64(seed as u64 ^ 0x5eed_f107);
    let mut tally = Tally {
        hist: histogram(),
        errors: 0,
        samples: Vec::new(),
    };
    loop {
        let n = next.fetch_add(1, Ordering::Relaxed);
        if n >= total {
            break;
        }
        let began = Instant::now();
        let call = async {
            match op {
                Op::Put {
                    key_size,
                    value,
                    sequential,
                    key_space,
                } => {
                    let k = if *sequential {
                        n % key_space
                    } else {
                        rng.random_range(0..*key_space)
                    };
                    client
                        .put(PutRequest {
                            key: key_bytes(k, *key_size),
                            value: value.clone(),
                            ..PutRequest::default()
                        })
                        .await
                        .map(|_| ())
                }
                Op::Range {
                    key,
                    range_end,
                    serializable,
                } => client
                    .range(RangeRequest {
                        key: key.clone(),
                        range_end: range_end.clone(),
                        serializable: *serializable,
                        ..RangeRequest::default()
                    })
                    .await
                    .map(|_| ()),
            }
        };
        let result = match tokio::time::timeout(timeout, call).await {
            Ok(result) => result,
            Err(_) => Err(tonic::Status::deadline_exceeded(format!(
                "no answer within {} ms",
                timeout.as_millis()
            ))),
        };
        match result {
            Ok(()) => {
                let us = began.elapsed().as_micros().max(1);
                tally.hist.saturating_record(us as u64);
            }
            Err(status) => {
                tally.errors += 1;
                if tally.samples.len() < ERROR_SAMPLES {
                    let s = format!("{:?}: {}", status.code(), status.message());
                    if !tally.samples.contains(&s) {
                        tally.samples.push(s);
                    }
                }
            }
        }
        bar.inc(1);
    }
    tally
}

#[cfg(test)]
mod tests {
    use super::key_bytes;

    #[test]
    fn keys_have_the_requested_size() {
        assert_eq!(key_bytes(1, 8), vec![0, 0, 0, 0, 0, 0, 0, 1]);
        assert_eq!(key_bytes(258, 2), vec![1, 2]);
        assert_eq!(key_bytes(5, 10), vec![b'k', b'k', 0, 0, 0, 0, 0, 0, 0, 5]);
    }
}
