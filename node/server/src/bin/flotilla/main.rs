//! `flotilla`: the Flotilla command-line tool.
//!
//! Subcommands in etcdctl/kcat style: `--endpoints` names the cluster,
//! `-w json` gives output a script can parse. Exit codes: 0 success, 1 the
//! command failed (with a one-line `Error: ...` on stderr), 2 bad usage
//! (from clap).
//!
//! | file | what |
//! |---|---|
//! | `connect.rs` | channels, trying each endpoint, leader discovery, hex ids |
//! | `kv.rs`, `txn.rs` | `kv get/put/del/txn`; the transaction text |
//! | `lease.rs` | `lease grant/revoke/keepalive/timetolive/list` |
//! | `member.rs` | `member list/add/remove/promote` |
//! | `cluster.rs` | `cluster status` |
//! | `snapshot.rs` | `snapshot save/status/restore` |
//! | `topic.rs`, `produce.rs`, `consume.rs`, `group.rs` | the broker: `topic ...`, `produce`, `consume`, `group ...` |
//! | `dev_cluster.rs` | `dev-cluster` |
//! | `bench_kv.rs`, `bench_log.rs`, `bench_failover.rs`, `bench_stall.rs` | `bench kv`, `bench log`, `bench failover`, `bench stall` |
//! | `bench_overlap.rs` | `bench stall`: which writes overlapped a member's snapshot |
//! | `bench_bulk.rs` | `bench stall`: one DeleteRange or Compact of a whole filled prefix beside the writes |
//! | `bench_broker.rs` | `bench produce`, `bench e2e`, `bench broker-failover` |

mod bench_broker;
mod bench_bulk;
mod bench_failover;
mod bench_kv;
mod bench_log;
mod bench_overlap;
mod bench_stall;
mod bench_watch;
mod cluster;
mod connect;
mod consume;
mod dev_cluster;
mod group;
mod kv;
mod lease;
mod member;
mod produce;
mod snapshot;
mod topic;
mod txn;

/// jemalloc, not the system allocator: a member spends about a tenth of its
/// CPU in glibc's malloc and free under a put load, and with jemalloc puts
/// ran 7-19% faster at 9-17% less CPU (`benches/kv-cpu`); see the README.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use anyhow::Result;
use clap::{Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "flotilla",
    version,
    about = "Flotilla: a Raft-replicated, etcd-compatible key-value store and Kafka-style broker",
    propagate_version = true
)]
struct Cli {
    /// Client endpoints of the cluster, comma-separated.
    #[arg(
        long,
        global = true,
        value_delimiter = ',',
        default_value = "http://127.0.0.1:2379",
        env = "FLOTILLA_ENDPOINTS"
    )]
    endpoints: Vec<String>,
    /// Output format.
    #[arg(short = 'w', long = "write-out", global = true, value_enum, default_value_t = WriteOut::Table)]
    write_out: WriteOut,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Key-value operations.
    #[command(subcommand)]
    Kv(kv::KvCommand),
    /// Leases: keys attached to one vanish when it expires or is revoked.
    #[command(subcommand)]
    Lease(lease::LeaseCommand),
    /// Cluster membership.
    #[command(subcommand)]
    Member(member::MemberCommand),
    /// Cluster-wide views.
    #[command(subcommand)]
    Cluster(cluster::ClusterCommand),
    /// Backups: save a snapshot, check one, restore one into a new cluster.
    #[command(subcommand)]
    Snapshot(snapshot::SnapshotCommand),
    /// Broker topics: create, list, describe, alter, delete.
    #[command(subcommand)]
    Topic(topic::TopicCommand),
    /// Produce records to a topic: lines from stdin, or generated load.
    Produce(produce::ProduceArgs),
    /// Consume records of a topic (alone or in a group) to stdout.
    Consume(consume::ConsumeArgs),
    /// Consumer groups: list, describe.
    #[command(subcommand)]
    Group(group::GroupCommand),
    /// Start a local cluster of real `flotilla-node` processes, print its
    /// endpoints, and stop it cleanly on Ctrl-C.
    DevCluster(dev_cluster::DevClusterArgs),
    /// Measure a component on this machine.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Run one member (what `flotilla-node` does; used by dev-cluster).
    #[command(hide = true)]
    Node(Box<flotilla_node::config::NodeArgs>),
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Partition log: appends per fsync policy and appender count, each next
    /// to a raw write+fsync baseline of the same bytes, then a sequential read.
    Log(bench_log::LogBenchArgs),
    /// Load generator against any etcd v3 endpoint, like etcd's `benchmark`:
    /// throughput and latency percentiles of puts or ranges.
    #[command(subcommand)]
    Kv(bench_kv::KvBench),
    /// Stops the leader of a local 3-member cluster under a write load,
    /// several times, and times the first write a new leader accepts.
    Failover(bench_failover::FailoverArgs),
    /// Fills a local 3-member cluster, then measures writes with and without
    /// whole-keyspace reads, counts and snapshots beside them, beside one
    /// DeleteRange and one Compact of a large prefix, and how fast a
    /// stopped follower catches up.
    Stall(bench_stall::StallArgs),
    /// Broker: produce throughput to one partition (rf 1; rf 3 acks=all).
    Produce(bench_broker::ProduceBench),
    /// Broker: end-to-end latency (send -> receive) at a fixed rate.
    E2e(bench_broker::E2eBench),
    /// Broker: partition failover time after SIGKILL of its leader.
    BrokerFailover(bench_broker::FailoverBench),
}

/// Output formats, as etcdctl's `--write-out`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum WriteOut {
    /// Human-readable.
    Table,
    /// One JSON document.
    Json,
}

fn main() -> std::process::ExitCode {
    quiet_on_broken_pipe();
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            // The message chain on one line; never a backtrace, whatever
            // RUST_BACKTRACE says: these are the user's errors, not bugs.
            eprintln!("Error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Exit status of a Unix tool killed by SIGPIPE (128 + 13).
const BROKEN_PIPE_EXIT: i32 = 141;

/// A reader that stops early (`flotilla kv get "" --prefix | head -1`)
/// closes stdout, and std's print macros then panic on the broken pipe.
/// Exit quietly instead, with the status a Unix tool killed by SIGPIPE has.
/// (Restoring SIGPIPE's default action would also let a peer's closed
/// socket kill the process, as vectored socket writes raise it.)
fn quiet_on_broken_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or("");
        if message.starts_with("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(BROKEN_PIPE_EXIT);
        }
        default(info)
    }));
}

fn run(cli: Cli) -> Result<std::process::ExitCode> {
    let done = std::process::ExitCode::SUCCESS;
    match cli.command {
        Command::Node(args) => Ok(flotilla_node::member::run_member(*args)),
        Command::Bench(BenchCommand::Log(args)) => {
            bench_log::bench_log(args, cli.write_out).map(|()| done)
        }
        Command::Bench(BenchCommand::Failover(args)) => runtime()?
            .block_on(bench_failover::run(args, cli.write_out))
            .map(|()| done),
        Command::Bench(BenchCommand::Stall(args)) => runtime()?
            .block_on(bench_stall::run(args, cli.write_out))
            .map(|()| done),
        Command::Bench(BenchCommand::Produce(a)) => runtime()?
            .block_on(bench_broker::run(
                bench_broker::BrokerBench::Produce(a),
                &cli.endpoints,
                cli.write_out,
            ))
            .map(|()| done),
        Command::Bench(BenchCommand::E2e(a)) => runtime()?
            .block_on(bench_broker::run(
                bench_broker::BrokerBench::E2e(a),
                &cli.endpoints,
                cli.write_out,
            ))
            .map(|()| done),
        Command::Bench(BenchCommand::BrokerFailover(a)) => runtime()?
            .block_on(bench_broker::run(
                bench_broker::BrokerBench::BrokerFailover(a),
                &cli.endpoints,
                cli.write_out,
            ))
            .map(|()| done),
        Command::Bench(BenchCommand::Kv(cmd)) => {
            runtime()?.block_on(bench_kv::run(cmd, &cli.endpoints, cli.write_out))
        }
        Command::DevCluster(args) => runtime()?.block_on(dev_cluster::run(args)).map(|()| done),
        Command::Kv(cmd) => runtime()?
            .block_on(kv::run(cmd, &cli.endpoints, cli.write_out))
            .map(|()| done),
        Command::Lease(cmd) => runtime()?
            .block_on(lease::run(cmd, &cli.endpoints, cli.write_out))
            .map(|()| done),
        Command::Member(cmd) => runtime()?
            .block_on(member::run(cmd, &cli.endpoints, cli.write_out))
            .map(|()| done),
        Command::Cluster(cmd) => runtime()?
            .block_on(cluster::run(cmd, &cli.endpoints, cli.write_out))
            .map(|()| done),
        Command::Snapshot(cmd) => runtime()?
            .block_on(snapshot::run(cmd, &cli.endpoints, cli.write_out))
            .map(|()| done),
        Command::Topic(cmd) => runtime()?
            .block_on(topic::run(cmd, &cli.endpoints, cli.write_out))
            .map(|()| done),
        Command::Produce(args) => runtime()?
            .block_on(produce::run(args, &cli.endpoints, cli.write_out))
            .map(|()| done),
        Command::Consume(args) => runtime()?
            .block_on(consume::run(args, &cli.endpoints, cli.write_out))
            .map(|()| done),
        Command::Group(cmd) => runtime()?
            .block_on(group::run(cmd, &cli.endpoints, cli.write_out))
            .map(|()| done),
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}
