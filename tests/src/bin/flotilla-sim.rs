//! Runs Flotilla's Raft core as a simulated cluster on one virtual clock,
//! with crashes, partitions and a lossy network, and checks every run: Raft's
//! safety invariants after every step and the client history for
//! linearizability at the end.
//!
//! ```text
//! flotilla-sim --seeds 20              # 20 random runs of 5 members
//! flotilla-sim --seed 1234 --verbose   # replay one run, listing its faults
//! ```

use clap::Parser;
use flotilla_raft::ReadMode;
use flotilla_tests::sim::{Scenario, run_seed};
use std::process::ExitCode;
use std::time::Instant;

#[derive(Debug, Parser)]
#[command(about = "Simulate a Flotilla Raft cluster under faults and check it")]
struct Args {
    /// Number of seeds to run, starting at --first-seed.
    #[arg(long, default_value_t = 10)]
    seeds: u64,
    /// First seed.
    #[arg(long, default_value_t = 1)]
    first_seed: u64,
    /// Run exactly this seed (overrides --seeds).
    #[arg(long)]
    seed: Option<u64>,
    /// Members in the cluster.
    #[arg(long, default_value_t = 5)]
    members: usize,
    /// Ticks of faults per run (then the network heals).
    #[arg(long, default_value_t = 600)]
    ticks: u64,
    /// Serve reads from the leader lease instead of ReadIndex.
    #[arg(long)]
    lease_reads: bool,
    /// Print per-seed details.
    #[arg(long)]
    verbose: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let mut scenario = Scenario::mixed("flotilla_sim", "");
    scenario.nodes = args.members;
    scenario.nemesis.max_down = (args.members - 1) / 2;
    scenario.fault_ticks = args.ticks;
    if args.lease_reads {
        scenario.raft.read_mode = ReadMode::LeaseBased;
    }
    let seeds: Vec<u64> = match args.seed {
        Some(s) => vec![s],
        None => (args.first_seed..args.first_seed + args.seeds).collect(),
    };
    println!(
        "simulating {} member(s) for {} seed(s), {} ticks of faults each (crashes, partitions, loss, duplication, reordering)",
        args.members,
        seeds.len(),
        args.ticks
    );
    let started = Instant::now();
    let (mut ops, mut entries, mut checks) = (0, 0, 0);
    for seed in &seeds {
        match run_seed(&scenario, *seed) {
            Ok(stats) => {
                ops += stats.completed;
                entries += stats.committed;
                checks += stats.checks;
                if args.verbose || seeds.len() <= 20 {
                    println!(
                        "seed {seed}: ok — {} client ops answered ({} unknown), {} entries committed, {} faults, {} invariant checks, history linearizable",
                        stats.completed,
                        stats.abandoned,
                        stats.committed,
                        stats.faults,
                        stats.checks
                    );
                }
            }
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::FAILURE;
            }
        }
    }
    println!(
        "all {} seed(s) passed in {:.1} s: {ops} client ops, {entries} committed entries, {checks} invariant checks",
        seeds.len(),
        started.elapsed().as_secs_f64()
    );
    ExitCode::SUCCESS
}
