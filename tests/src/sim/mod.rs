//! Deterministic simulation of Raft clusters.
//!
//! Every member runs the node's own driver step ([`flotilla_node::driver::Step`]:
//! the real [`flotilla_raft::Raft`] core, the node's KV state machine, its
//! proposal and read waiters) over [`flotilla_raft::MemStorage`], on one
//! virtual clock, behind a seeded network ([`Network`]) that drops, delays,
//! duplicates, reorders and cuts links. Reads take the API's paths: a
//! one-key Range on the driver, any other range on a frozen view, answered
//! later while writes go on. A [`Nemesis`] crashes and restarts members and partitions the
//! network; [`Workload`] clients run KV operations and record a history. After
//! every step [`Invariants`] checks Raft's safety properties; at the end the
//! history is checked for linearizability.
//!
//! The same seed gives the same run, so a failure is replayed by its seed:
//! [`run_seed`] reports the seed and the command that replays it.
//!
//! | module | what |
//! |---|---|
//! | `network` | virtual-time network with faults |
//! | `cluster` | members on one clock, crash and restart, reads on views |
//! | `node` | a member: the node's step with the simulation's effects; heavy entries applied at once or later |
//! | `invariants` | election safety, log matching, leader completeness, state machine safety, monotonic commit/apply |
//! | `kv` | the clients' operations as the node's KV commands and ranges |
//! | `workload` | clients with retries, recording the history |
//! | `nemesis` | the fault schedule |
//! | `snapshot_write` | snapshots written off the driver, then compacted to; crashes in between |
//! | `leases` | lease expiry rounds on the virtual clock, live events read, watch catch-ups |
//! | `watch` | each revision's events across members; watch catch-up and live events checked against them |

mod cluster;
mod invariants;
mod kv;
mod leases;
mod nemesis;
mod network;
mod node;
mod scripted;
mod snapshot_write;
mod watch;
mod workload;

pub use cluster::{Cluster, ctx_key, read_ctx};
pub use invariants::Invariants;
pub use kv::{SimWrite, get_request, pairs, scan_request};
pub use nemesis::{Nemesis, NemesisConfig};
pub use network::{NetFaults, Network};
pub use node::{Event, NodeStep, Proposal, Read, SimNode, ViewRead, state_config};
pub use watch::{EventHistory, LeaseDelete};
pub use workload::{Workload, WorkloadConfig};

use crate::linearizability::{Budget, check_and_report};
use flotilla_raft::{Config, NodeId};

/// Virtual time units per tick. Network delays are drawn in units, so
/// messages can arrive between ticks and overtake each other.
pub const TICK_UNITS: u64 = 10;

/// A Raft configuration for simulated members: elections after 10–20 ticks,
/// heartbeats every 2, small messages and windows so that flow control is
/// exercised.
pub fn sim_config() -> Config {
    let mut c = Config::new(NodeId(1));
    c.election_ticks = 10;
    c.heartbeat_ticks = 2;
    c.max_msg_bytes = 4096;
    c.max_inflight_msgs = 8;
    c.max_inflight_bytes = 64 * 1024;
    c
}

/// One random run.
#[derive(Clone, Debug)]
pub struct Scenario {
    /// Name used in replay commands and history files.
    pub name: &'static str,
    /// The test target that runs it (`cargo test --test <target>`); empty
    /// for the `flotilla-sim` binary.
    pub test_target: &'static str,
    /// Members.
    pub nodes: usize,
    /// Raft configuration template.
    pub raft: Config,
    /// Network faults at the start.
    pub faults: NetFaults,
    /// Fault schedule.
    pub nemesis: NemesisConfig,
    /// Client behaviour.
    pub workload: WorkloadConfig,
    /// Most ticks a snapshot spends being written off the driver (drawn
    /// per snapshot) before the log is compacted to it.
    pub snapshot_write_ticks: u64,
    /// Most ticks a run of heavy entries (ranged deletes) spends applying
    /// off a member's step, when it is not applied at once (drawn per
    /// run); up to longer than an election timeout, so that members apply
    /// them at staggered times while their peers wait, and shorter than a
    /// client's attempt, so that retries do not pile up behind them.
    pub apply_delay_ticks: u64,
    /// Ticks with faults.
    pub fault_ticks: u64,
    /// Ticks after healing, in which every client must finish.
    pub heal_ticks: u64,
    /// Check the history for linearizability.
    pub check_linearizability: bool,
    /// Most operations clients may give up on, in percent of those
    /// completed over a set of seeds (a liveness bound: a cluster that
    /// stops answering fails it).
    pub abandoned_percent_max: u64,
}

impl Scenario {
    /// Mixed faults on a 5-member cluster with ReadIndex reads.
    pub fn mixed(name: &'static str, test_target: &'static str) -> Scenario {
        Scenario {
            name,
            test_target,
            nodes: 5,
            raft: sim_config(),
            faults: NetFaults::RELIABLE,
            nemesis: NemesisConfig {
                max_down: 2,
                ..NemesisConfig::default()
            },
            workload: WorkloadConfig::default(),
            snapshot_write_ticks: 20,
            apply_delay_ticks: 15,
            fault_ticks: 600,
            heal_ticks: 300,
            check_linearizability: true,
            abandoned_percent_max: 1,
        }
    }
}

impl Scenario {
    /// Mixed faults on three members whose clients also grant leases,
    /// attach keys to them, revoke them and keep them alive (the leader's
    /// expiry loop revokes the rest), with snapshots written off the driver
    /// every 30 entries once those reach the last snapshot's size (the
    /// node's default policy); watchers catch up from old revisions.
    pub fn leases_watches(name: &'static str, test_target: &'static str) -> Scenario {
        let mut s = Scenario::mixed(name, test_target);
        s.nodes = 3;
        s.nemesis.max_down = 1;
        s.workload.lease_fraction = 0.3;
        s.raft.snapshot_after_entries = 30;
        s.raft.snapshot_catchup_entries = 10;
        s.raft.max_snapshot_chunk_bytes = 256;
        s
    }

    /// Mixed faults plus snapshots (every 30 entries whatever the state's
    /// size, sent in small chunks, with 10 entries kept before each for
    /// followers a little behind), membership churn, and crashes part-way
    /// through persisting.
    pub fn snapshots_membership(name: &'static str, test_target: &'static str) -> Scenario {
        let mut s = Scenario::mixed(name, test_target);
        s.raft.snapshot_after_entries = 30;
        s.raft.snapshot_min_log_percent = 0;
        s.raft.snapshot_catchup_entries = 10;
        s.raft.max_snapshot_chunk_bytes = 256;
        s.nemesis.torn_crashes = true;
        s.nemesis.membership = true;
        s.nemesis.crash_after_snapshot_write = 0.1;
        s
    }
}

/// What a passing run did.
#[derive(Clone, Debug, Default)]
pub struct RunStats {
    /// Operations answered.
    pub completed: u64,
    /// Operations with unknown outcome.
    pub abandoned: u64,
    /// Entries in the committed prefix.
    pub committed: u64,
    /// Invariant checks performed.
    pub checks: u64,
    /// Fault actions taken.
    pub faults: usize,
    /// Snapshots members took.
    pub snapshots_taken: u64,
    /// Snapshots members installed from a leader.
    pub snapshots_installed: u64,
    /// Crashes part-way through persisting a `Ready`.
    pub torn_crashes: u64,
    /// Snapshots written off the driver, then compacted to.
    pub snapshots_compacted: u64,
    /// Snapshot writes a crash cut short.
    pub snapshot_writes_lost: u64,
    /// Snapshots written, then recovered by a restart before the log was
    /// compacted to them.
    pub snapshots_recovered_unrecorded: u64,
    /// Ranges answered from a frozen view, after a delay.
    pub view_reads: u64,
    /// Runs of heavy entries handed off a member's step and applied at
    /// once.
    pub applies_at_once: u64,
    /// Runs of heavy entries handed off a member's step and applied
    /// later, while the member went on.
    pub applies_deferred: u64,
    /// Stale reads served on the copy a member's step kept while its
    /// state machine was away, and checked against the state it left in.
    pub stale_reads: u64,
    /// Revokes the leaders' expiry loops proposed.
    pub expiry_revokes: u64,
    /// Keys a lease revoke (client or expiry) deleted, recorded in the
    /// history.
    pub lease_deletes: u64,
    /// Keepalives a leader renewed.
    pub keepalives: u64,
    /// Watch catch-ups checked against the history (and refused as
    /// compacted).
    pub watch_catch_ups: u64,
    /// Watch catch-ups refused because their start was compacted.
    pub watch_catch_ups_compacted: u64,
    /// Revisions whose events were compared across members.
    pub revisions_compared: u64,
    /// Commands leaders appended from followers' batches (the peer
    /// stream).
    pub peer_proposals: u64,
    /// Runs with a member of the previous release, which neither makes
    /// nor takes such batches.
    pub runs_with_old_member: u64,
    /// Runs whose members deferred their log syncs.
    pub runs_with_deferred_sync: u64,
    /// Deferred syncs finished.
    pub syncs_deferred: u64,
    /// Followers' writes synced at once in runs that defer syncs.
    pub syncs_inline: u64,
    /// Entries crashes took away before their sync finished.
    pub entries_lost_unsynced: u64,
    /// Members added during the run.
    pub members_added: usize,
    /// Voters at the end.
    pub final_voters: usize,
}

impl RunStats {
    /// Adds another run's counts (`final_voters` is per run: it is summed
    /// only for the log line).
    pub fn add(&mut self, other: &RunStats) {
        self.completed += other.completed;
        self.abandoned += other.abandoned;
        self.committed += other.committed;
        self.checks += other.checks;
        self.faults += other.faults;
        self.snapshots_taken += other.snapshots_taken;
        self.snapshots_installed += other.snapshots_installed;
        self.torn_crashes += other.torn_crashes;
        self.snapshots_compacted += other.snapshots_compacted;
        self.snapshot_writes_lost += other.snapshot_writes_lost;
        self.snapshots_recovered_unrecorded += other.snapshots_recovered_unrecorded;
        self.view_reads += other.view_reads;
        self.applies_at_once += other.applies_at_once;
        self.applies_deferred += other.applies_deferred;
        self.stale_reads += other.stale_reads;
        self.expiry_revokes += other.expiry_revokes;
        self.lease_deletes += other.lease_deletes;
        self.keepalives += other.keepalives;
        self.watch_catch_ups += other.watch_catch_ups;
        self.watch_catch_ups_compacted += other.watch_catch_ups_compacted;
        self.revisions_compared += other.revisions_compared;
        self.peer_proposals += other.peer_proposals;
        self.runs_with_old_member += other.runs_with_old_member;
        self.runs_with_deferred_sync += other.runs_with_deferred_sync;
        self.syncs_deferred += other.syncs_deferred;
        self.syncs_inline += other.syncs_inline;
        self.entries_lost_unsynced += other.entries_lost_unsynced;
        self.members_added += other.members_added;
        self.final_voters += other.final_voters;
    }

    /// What every passing run must show, whatever its faults: the invariant
    /// checker ran, entries were committed, clients got answers, and the
    /// healed cluster has a leader with a plausible configuration (exactly
    /// the starting voters unless membership changed; never fewer than
    /// three, the nemesis's floor for removals).
    fn check(&self, scenario: &Scenario, members: usize) -> Result<(), String> {
        if self.checks == 0 {
            return Err("the invariant checker never ran".into());
        }
        if self.committed == 0 {
            return Err("no entry was committed".into());
        }
        if self.completed == 0 {
            return Err(format!(
                "clients completed no operation ({} abandoned)",
                self.abandoned
            ));
        }
        let voters_ok = if scenario.nemesis.membership {
            (3.min(scenario.nodes)..=members).contains(&self.final_voters)
        } else {
            self.final_voters == scenario.nodes
        };
        if !voters_ok {
            return Err(format!(
                "{} voters at the end ({} members started, {members} in all)",
                self.final_voters, scenario.nodes
            ));
        }
        Ok(())
    }
}

/// The command that replays `seed` of `scenario`.
pub fn replay_command(scenario: &Scenario, seed: u64) -> String {
    if scenario.test_target.is_empty() {
        let lease = if scenario.raft.read_mode == flotilla_raft::ReadMode::LeaseBased {
            " --lease-reads"
        } else {
            ""
        };
        return format!(
            "cargo run --release -p flotilla-tests --bin flotilla-sim -- --seed {seed} --members {} --ticks {}{lease} --verbose",
            scenario.nodes, scenario.fault_ticks
        );
    }
    format!(
        "SIM_SEED={seed} cargo test -p flotilla-tests --test {} {} -- --nocapture",
        scenario.test_target, scenario.name
    )
}

/// Runs one seed: faults, then healing, then checks that clients finished and
/// that the history is linearizable. An error names the seed and the command
/// that replays it.
///
/// A panic in the run (an assertion of the node's step, say) is caught and
/// reported the same way.
pub fn run_seed(scenario: &Scenario, seed: u64) -> Result<RunStats, String> {
    std::panic::catch_unwind(|| run_seed_inner(scenario, seed)).unwrap_or_else(|panic| {
        let what = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        Err(format!(
            "seed {seed}: panicked: {what}\n  replay: {}",
            replay_command(scenario, seed)
        ))
    })
}

fn run_seed_inner(scenario: &Scenario, seed: u64) -> Result<RunStats, String> {
    let fail = |what: String, nemesis: &Nemesis| {
        let recent: Vec<&String> = nemesis.actions.iter().rev().take(12).rev().collect();
        Err(format!(
            "seed {seed}: {what}\n  recent faults: {recent:?}\n  replay: {}",
            replay_command(scenario, seed)
        ))
    };
    let mut cluster = Cluster::new(scenario.nodes, scenario.raft.clone(), scenario.faults, seed);
    cluster.snapshot_write_ticks = scenario.snapshot_write_ticks;
    cluster.apply_delay_ticks = scenario.apply_delay_ticks;
    cluster.crash_after_snapshot_write = scenario.nemesis.crash_after_snapshot_write;
    let mut workload = Workload::new(scenario.workload.clone(), scenario.nodes);
    let mut nemesis = Nemesis::new(scenario.nemesis.clone());
    let fault_end = scenario.fault_ticks * TICK_UNITS;
    while cluster.now < fault_end {
        cluster.step();
        workload.step(&mut cluster);
        nemesis.step(&mut cluster);
        if let Some(v) = cluster.violation().or(workload.failure.clone()) {
            return fail(v, &nemesis);
        }
    }
    nemesis.heal_all(&mut cluster);
    workload.issuing = false;
    let heal_end = cluster.now + scenario.heal_ticks * TICK_UNITS;
    while cluster.now < heal_end && !workload.idle() {
        cluster.step();
        workload.step(&mut cluster);
        if let Some(v) = cluster.violation().or(workload.failure.clone()) {
            return fail(v, &nemesis);
        }
    }
    if !workload.idle() {
        return fail(
            format!(
                "liveness: clients still waiting {} ticks after the network healed; members:{}",
                scenario.heal_ticks,
                cluster.describe()
            ),
            &nemesis,
        );
    }
    if cluster.await_leader(scenario.heal_ticks).is_none() {
        return fail(
            format!(
                "liveness: no leader after healing; members:{}",
                cluster.describe()
            ),
            &nemesis,
        );
    }
    if scenario.workload.lease_fraction > 0.0 {
        if let Err(e) = leases_all_expire(&mut cluster, scenario) {
            return fail(e, &nemesis);
        }
        // Records the deletes the last revokes made.
        workload.step(&mut cluster);
    }
    let stats = RunStats {
        completed: workload.completed,
        abandoned: workload.abandoned,
        committed: cluster.inv.committed_len(),
        checks: cluster.inv.checks,
        faults: nemesis.actions.len(),
        snapshots_taken: cluster.nodes.iter().map(|n| n.snapshots_taken).sum(),
        snapshots_installed: cluster.nodes.iter().map(|n| n.snapshots_installed).sum(),
        torn_crashes: cluster.nodes.iter().map(|n| n.torn_crashes).sum(),
        snapshots_compacted: cluster.snapshots_compacted,
        snapshot_writes_lost: cluster.nodes.iter().map(|n| n.snapshot_writes_lost).sum(),
        snapshots_recovered_unrecorded: cluster.snapshots_recovered_unrecorded,
        view_reads: cluster.view_reads_done,
        applies_at_once: cluster.nodes.iter().map(|n| n.applies_at_once).sum(),
        applies_deferred: cluster.nodes.iter().map(|n| n.applies_deferred).sum(),
        stale_reads: cluster.nodes.iter().map(|n| n.stale_reads_checked).sum(),
        expiry_revokes: cluster.expiry_revokes,
        lease_deletes: workload.lease_deletes,
        keepalives: workload.keepalives,
        watch_catch_ups: cluster.event_history.catch_ups,
        watch_catch_ups_compacted: cluster.event_history.catch_ups_compacted,
        revisions_compared: cluster.event_history.revisions_compared,
        peer_proposals: cluster.peer_proposals,
        runs_with_old_member: u64::from(cluster.without_peer_proposals.is_some()),
        runs_with_deferred_sync: u64::from(cluster.deferred_sync),
        syncs_deferred: cluster.nodes.iter().map(|n| n.syncs_deferred).sum(),
        syncs_inline: cluster.nodes.iter().map(|n| n.syncs_inline).sum(),
        entries_lost_unsynced: cluster.nodes.iter().map(|n| n.entries_lost_unsynced).sum(),
        members_added: cluster.nodes.len() - scenario.nodes,
        final_voters: cluster
            .leader()
            .and_then(|l| cluster.node(l).raft().map(|r| r.conf_state().voters.len()))
            .unwrap_or(0),
    };
    if let Err(e) = stats.check(scenario, cluster.nodes.len()) {
        return fail(format!("run counters: {e}; {stats:?}"), &nemesis);
    }
    if scenario.check_linearizability {
        let history = workload.finish();
        let report = check_and_report(&history, Budget::default(), scenario.name, seed)
            .map_err(|e| format!("seed {seed}: cannot check history: {e}"))?;
        if !report.is_ok() {
            return fail(format!("history is not linearizable: {report}"), &nemesis);
        }
    }
    Ok(stats)
}

/// Once clients stop, no keepalive renews any lease: within the longest TTL
/// plus the expiry loop's retry every lease has expired and been revoked by
/// the leader, and no member holds a key attached to a lease any more.
fn leases_all_expire(cluster: &mut Cluster, scenario: &Scenario) -> Result<(), String> {
    let ttl_ticks = scenario.workload.lease_ttl_max_secs as u64 * 100;
    cluster.run_ticks(ttl_ticks + 300);
    let leader = cluster
        .await_leader(scenario.heal_ticks)
        .ok_or("liveness: no leader while leases expire")?;
    cluster.run_ticks(20);
    let applied = cluster.node(leader).applied();
    for id in cluster.ids() {
        let node = cluster.node(id);
        let Some(sm) = node.sm() else {
            continue;
        };
        if node.applied() < applied {
            continue;
        }
        let kv = sm.kv();
        if !kv.leases().is_empty() {
            let ids: Vec<i64> = kv.leases().iter().map(|(id, _)| id).collect();
            return Err(format!(
                "node {id}: leases {ids:?} outlived their TTL with no keepalive ({} ticks after the clients stopped)",
                ttl_ticks + 300
            ));
        }
        if let Some(orphan) = cluster.orphan_leased_key(id) {
            return Err(orphan);
        }
        let leased = kv
            .range(&kv::scan_request("l", "l", 0))
            .expect("a range is valid");
        if let Some(e) = resp_first(&leased) {
            return Err(format!(
                "node {id}: key {e} outlived every lease it could have been attached to"
            ));
        }
    }
    if let Some(v) = cluster.violation() {
        return Err(v);
    }
    Ok(())
}

fn resp_first(resp: &flotilla_proto::etcdserverpb::RangeResponse) -> Option<String> {
    resp.kvs
        .first()
        .map(|kv| String::from_utf8_lossy(&kv.key).into_owned())
}

/// The seeds a random test runs: `SIM_SEED` alone when set, else `SIM_SEEDS`
/// (default `default_count`) seeds derived from `base`.
///
/// A run of no seed would pass whatever the code does, so an empty list (or
/// a value that does not parse) panics. `SIM_SEED` replaces the whole set
/// with one seed, which is for replaying a failure: it says so on stderr,
/// and under `CI` it is refused, so a leftover `SIM_SEED` cannot shrink
/// every random test in CI to a single run.
pub fn seeds(base: u64, default_count: u64) -> Vec<u64> {
    seeds_from(
        base,
        default_count,
        std::env::var("SIM_SEED").ok().as_deref(),
        std::env::var("SIM_SEEDS").ok().as_deref(),
        std::env::var_os("CI").is_some(),
    )
}

fn seeds_from(
    base: u64,
    default_count: u64,
    seed: Option<&str>,
    count: Option<&str>,
    ci: bool,
) -> Vec<u64> {
    if let Some(seed) = seed {
        let seed: u64 = seed
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("SIM_SEED={seed:?} is not a seed (a u64)"));
        assert!(
            !ci,
            "SIM_SEED={seed} is set under CI: it would replace every random test's \
             {default_count}-seed set with one seed; unset it"
        );
        eprintln!(
            "\n*** SIM_SEED={seed}: running seed {seed} ONLY, in place of this test's \
             {default_count} seeds from {base} ***\n"
        );
        return vec![seed];
    }
    let count = match count {
        Some(c) => c
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("SIM_SEEDS={c:?} is not a count")),
        None => default_count,
    };
    assert!(
        count > 0,
        "no seed to run (SIM_SEEDS=0 or a default of 0): a random test of no seed passes whatever the code does"
    );
    (0..count).map(|i| base + i).collect()
}

#[cfg(test)]
mod tests {
    use super::seeds_from;

    #[test]
    fn seeds_default_and_count() {
        assert_eq!(seeds_from(10, 3, None, None, false), vec![10, 11, 12]);
        assert_eq!(seeds_from(10, 3, None, Some("2"), true), vec![10, 11]);
    }

    #[test]
    #[should_panic(expected = "no seed to run")]
    fn zero_seeds_are_refused() {
        seeds_from(10, 3, None, Some("0"), false);
    }

    #[test]
    #[should_panic(expected = "not a count")]
    fn unparsable_count_is_refused() {
        seeds_from(10, 3, None, Some("many"), false);
    }

    #[test]
    fn one_seed_replaces_the_set_outside_ci() {
        assert_eq!(seeds_from(10, 3, Some("77"), None, false), vec![77]);
    }

    #[test]
    #[should_panic(expected = "set under CI")]
    fn one_seed_is_refused_in_ci() {
        seeds_from(10, 3, Some("77"), None, true);
    }
}
