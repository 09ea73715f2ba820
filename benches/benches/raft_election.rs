//! Election time after a leader crash, in ticks, on the deterministic
//! simulation (3 members, pre-vote and check-quorum on, election timeout
//! 10–20 ticks, messages delayed 0.1–0.3 ticks). Prints the distribution over
//! many seeds; criterion times one crash-and-elect cycle of the simulator.

use criterion::{Criterion, criterion_group, criterion_main};
use flotilla_tests::sim::{Cluster, NetFaults, TICK_UNITS, sim_config};

/// Ticks from the leader's crash until a new leader is known by a quorum.
fn election_ticks_after_crash(seed: u64) -> u64 {
    let mut c = Cluster::new(3, sim_config(), NetFaults::RELIABLE, seed);
    let leader = c.await_leader(500).expect("first leader");
    // Let the cluster run steadily for a while, then crash the leader at a
    // random point of its heartbeat cycle.
    c.run_ticks(20 + seed % 7);
    c.crash(leader);
    let start = c.now;
    let next = c.await_leader(1000).expect("a new leader");
    assert_ne!(next, leader);
    (c.now - start).div_ceil(TICK_UNITS)
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn bench(c: &mut Criterion) {
    let quick = std::env::args().any(|a| a == "--test");
    let runs = if quick { 50 } else { 2000 };
    let mut ticks: Vec<u64> = (0..runs).map(election_ticks_after_crash).collect();
    ticks.sort_unstable();
    let election = sim_config().election_ticks;
    println!(
        "raft_election summary: {runs} leader crashes, election timeout {election}-{} ticks: \
         new leader after p50 {} / p90 {} / p99 {} / max {} ticks \
         (at a 100 ms tick: p50 {} ms, p99 {} ms)",
        2 * election - 1,
        percentile(&ticks, 0.5),
        percentile(&ticks, 0.9),
        percentile(&ticks, 0.99),
        ticks[ticks.len() - 1],
        percentile(&ticks, 0.5) * 100,
        percentile(&ticks, 0.99) * 100,
    );
    let mut seed = 0u64;
    c.bench_function("raft_election/crash_and_elect_3_members", |b| {
        b.iter(|| {
            seed += 1;
            election_ticks_after_crash(seed)
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = bench
}
criterion_main!(benches);
