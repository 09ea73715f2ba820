//! `flotilla dev-cluster`: a local cluster of real `flotilla-node` processes
//! on loopback, for trying Flotilla without Kubernetes.

use anyhow::{Context, Result, bail};
use clap::Args;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

/// Options of `flotilla dev-cluster`.
#[derive(Debug, Args)]
pub struct DevClusterArgs {
    /// Folder for the members' data and logs (created if missing; reused on
    /// the next start, so data survives restarts).
    #[arg(long, default_value = "flotilla-dev")]
    dir: PathBuf,
    /// Members.
    #[arg(long, default_value_t = 3)]
    members: u16,
    /// Member `i` (from 0) listens for clients on `base-port + i`, for peers
    /// on `base-port + 100 + i`, for HTTP on `base-port + 200 + i`.
    #[arg(long, default_value_t = 2379)]
    base_port: u16,
    /// Member `i` serves Kafka clients on `kafka-base-port + i` (0: no
    /// Kafka listener).
    #[arg(long, default_value_t = 9092)]
    kafka_base_port: u16,
    /// A `flotilla-node` binary to run the members with (default: this
    /// executable's own hidden `node` command, which is the same code).
    #[arg(long)]
    node_bin: Option<PathBuf>,
    /// Pass `--fsync never` to the members (faster, not durable).
    #[arg(long)]
    no_fsync: bool,
    /// Stop as soon as the cluster is ready (for scripts and tests).
    #[arg(long)]
    exit_when_ready: bool,
}

/// One member process on loopback.
pub(crate) struct Member {
    pub(crate) name: String,
    pub(crate) client: u16,
    pub(crate) http: u16,
    pub(crate) child: Child,
}

/// The program that runs a member, and the arguments that come before the
/// member's flags.
pub(crate) type NodeProgram = (PathBuf, Vec<&'static str>);

/// `node_bin`, or this executable's own `node` command.
pub(crate) fn node_program(node_bin: Option<&std::path::Path>) -> Result<NodeProgram> {
    if let Some(bin) = node_bin {
        return Ok((bin.to_path_buf(), Vec::new()));
    }
    // This executable's own `node` command, not a `flotilla-node` found
    // beside it: `cargo run --bin flotilla` rebuilds only this binary, and a
    // stale sibling from an earlier build would run old code.
    let me = std::env::current_exe().context("cannot find this executable")?;
    Ok((me, vec!["node"]))
}

/// Waits, for at most `within`, until every member answers its readiness
/// check. A member that exits meanwhile ends the wait with an error that
/// gives the last line of its log in `dir` (where a member says why it
/// stopped, e.g. a flag it refused).
pub(crate) async fn wait_ready(members: &mut [Member], dir: &Path, within: Duration) -> Result<()> {
    let deadline = Instant::now() + within;
    loop {
        let mut answered = 0;
        for m in members.iter_mut() {
            if let Ok(Some(status)) = m.child.try_wait() {
                let log = dir.join(format!("{}.log", m.name));
                let last = std::fs::read_to_string(&log)
                    .ok()
                    .and_then(|text| {
                        text.lines()
                            .rev()
                            .find(|line| !line.trim().is_empty())
                            .map(str::to_owned)
                    })
                    .unwrap_or_default();
                bail!(
                    "member {} exited with {status}: {last} (its log: {})",
                    m.name,
                    log.display()
                );
            }
            answered += usize::from(ready(m.http).await);
        }
        if answered == members.len() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "the cluster did not become ready within {} s; see the logs in {}",
                within.as_secs(),
                dir.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether `GET /readyz` on `port` answers 200.
pub(crate) async fn ready(port: u16) -> bool {
    let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
        return false;
    };
    let req = "GET /readyz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    if s.write_all(req.as_bytes()).await.is_err() {
        return false;
    }
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut buf)).await;
    matches!(read, Ok(Ok(_))) && buf.starts_with(b"HTTP/1.1 200")
}

/// The `--initial-cluster` of `members` members at `base_port`.
pub(crate) fn initial_cluster(members: u16, base_port: u16) -> String {
    let cluster: Vec<String> = (0..members)
        .map(|i| format!("n{}=http://127.0.0.1:{}", i + 1, base_port + 100 + i))
        .collect();
    cluster.join(",")
}

/// Starts member `i` (from 0) of `cluster`: data in `dir/n<i+1>`, its log
/// appended to `dir/n<i+1>.log`, ports as `--base-port` says.
pub(crate) fn spawn(
    program: &NodeProgram,
    dir: &std::path::Path,
    base_port: u16,
    no_fsync: bool,
    i: u16,
    cluster: &str,
) -> Result<Member> {
    spawn_with(program, dir, base_port, no_fsync, i, cluster, &[])
}

/// [`spawn`], with `extra` flags after the member's own.
pub(crate) fn spawn_with(
    (bin, prefix): &NodeProgram,
    dir: &std::path::Path,
    base_port: u16,
    no_fsync: bool,
    i: u16,
    cluster: &str,
    extra: &[String],
) -> Result<Member> {
    let name = format!("n{}", i + 1);
    let (client, peer, http) = (base_port + i, base_port + 100 + i, base_port + 200 + i);
    let data = dir.join(&name);
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let log = std::fs::File::options()
        .create(true)
        .append(true)
        .open(dir.join(format!("{name}.log")))?;
    let mut cmd = Command::new(bin);
    cmd.args(prefix)
        .arg("--name")
        .arg(&name)
        .arg("--data-dir")
        .arg(&data)
        .arg("--initial-cluster")
        .arg(cluster)
        .arg("--listen-client-urls")
        .arg(format!("http://127.0.0.1:{client}"))
        .arg("--listen-peer-urls")
        .arg(format!("http://127.0.0.1:{peer}"))
        .arg("--listen-metrics-urls")
        .arg(format!("http://127.0.0.1:{http}"))
        // Plain text in the log files, without colour codes.
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true);
    if no_fsync {
        cmd.arg("--fsync").arg("never");
    }
    cmd.args(extra);
    let child = cmd
        .spawn()
        .with_context(|| format!("cannot start {}", bin.display()))?;
    Ok(Member {
        name,
        client,
        http,
        child,
    })
}

/// Asks a member to stop (SIGTERM), then kills it if it has not within a
/// few seconds.
pub(crate) async fn stop(member: &mut Member) {
    if let Some(pid) = member.child.id() {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status()
            .await;
    }
    match tokio::time::timeout(Duration::from_secs(5), member.child.wait()).await {
        Ok(_) => {}
        Err(_) => {
            let _ = member.child.kill().await;
        }
    }
}

/// Runs the cluster until Ctrl-C (or until ready, with --exit-when-ready).
pub async fn run(args: DevClusterArgs) -> Result<()> {
    if args.members == 0 || args.members > 9 {
        bail!("--members must be between 1 and 9");
    }
    let program = node_program(args.node_bin.as_deref())?;
    let cluster = initial_cluster(args.members, args.base_port);
    let mut members = Vec::new();
    let kafka_port = |i: u16| (args.kafka_base_port != 0).then(|| args.kafka_base_port + i);
    for i in 0..args.members {
        let extra: Vec<String> = match kafka_port(i) {
            Some(port) => vec!["--kafka-listen-addr".into(), format!("127.0.0.1:{port}")],
            None => Vec::new(),
        };
        match spawn_with(
            &program,
            &args.dir,
            args.base_port,
            args.no_fsync,
            i,
            &cluster,
            &extra,
        ) {
            Ok(m) => members.push(m),
            Err(e) => {
                for m in &mut members {
                    stop(m).await;
                }
                return Err(e);
            }
        }
    }
    if let Err(e) = wait_ready(&mut members, &args.dir, Duration::from_secs(30)).await {
        for m in &mut members {
            stop(m).await;
        }
        return Err(e);
    }
    let endpoints: Vec<String> = members
        .iter()
        .map(|m| format!("http://127.0.0.1:{}", m.client))
        .collect();
    println!(
        "flotilla dev cluster of {} member(s) is ready (data and logs in {})",
        members.len(),
        args.dir.display()
    );
    for (i, m) in members.iter().enumerate() {
        let kafka =
            kafka_port(i as u16).map_or(String::new(), |p| format!("  kafka 127.0.0.1:{p}"));
        println!(
            "  {}: client http://127.0.0.1:{}  http http://127.0.0.1:{}/metrics{kafka}",
            m.name, m.client, m.http
        );
    }
    println!("endpoints: {}", endpoints.join(","));
    println!(
        "try: flotilla --endpoints {} kv put hello world && flotilla --endpoints {} kv get hello",
        endpoints.join(","),
        endpoints.join(",")
    );
    println!(
        "broker: flotilla --endpoints {e} topic create demo -p 3 -r 3 && \
         seq 10 | flotilla --endpoints {e} produce demo && \
         flotilla --endpoints {e} consume demo --group g1 --from-beginning --count 10",
        e = endpoints.join(",")
    );
    if let Some(first) = kafka_port(0) {
        let brokers: Vec<String> = (0..args.members)
            .filter_map(kafka_port)
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        println!("kafka bootstrap servers: {}", brokers.join(","));
        println!(
            "kafka: kcat -b 127.0.0.1:{first} -L && \
             printf 'k1:v1\\nk2:v2\\n' | kcat -b 127.0.0.1:{first} -P -t demo -K: && \
             kcat -b 127.0.0.1:{first} -C -t demo -o beginning -e -f '%k=%s\\n'"
        );
    }
    if !args.exit_when_ready {
        println!("press Ctrl-C to stop");
        tokio::signal::ctrl_c().await?;
    }
    for m in &mut members {
        stop(m).await;
    }
    println!("stopped");
    Ok(())
}
