//! Snapshots and log compaction (Raft §7), in the spec's scenarios: members
//! snapshot their state machine when the log passes a size, compact the log,
//! and a follower too far behind receives the snapshot through InstallSnapshot
//! in bounded, checksummed chunks. Every step runs the safety invariants.

use flotilla_raft::{Config, NodeId, Storage};
use flotilla_tests::sim::{Cluster, NetFaults, SimWrite, sim_config};
use rand::Rng;

const WAIT: u64 = 300;
const SNAPSHOT_EVERY: u64 = 20;

fn config() -> Config {
    let mut c = sim_config();
    c.snapshot_after_entries = SNAPSHOT_EVERY;
    // Small chunks, so that every snapshot travels in several.
    c.max_snapshot_chunk_bytes = 64;
    c
}

fn put(i: u64) -> Vec<u8> {
    SimWrite::Put {
        key: format!("k{}", i % 7),
        value: format!("v{i}"),
    }
    .command(9, i)
    .to_vec()
}

/// Every running member applies everything it holds, or the test fails.
fn settle(c: &mut Cluster) {
    assert!(
        c.settle_all(WAIT),
        "seed {}: members did not settle{}",
        c.seed(),
        c.describe()
    );
}

fn assert_safe(c: &Cluster) {
    if let Some(v) = c.violation() {
        panic!("seed {}: invariant violated: {v}", c.seed());
    }
}

/// Every running member holds the same key-value state.
fn assert_same_state(c: &Cluster) {
    let up: Vec<_> = c.nodes.iter().filter(|n| n.is_up()).collect();
    for k in 0..7 {
        let key = format!("k{k}");
        let values: Vec<Option<String>> = up.iter().map(|n| n.get(&key)).collect();
        assert!(
            values.windows(2).all(|w| w[0] == w[1]),
            "members disagree on {key}: {values:?}"
        );
    }
}

fn first_index(c: &Cluster, id: NodeId) -> u64 {
    c.node(id).raft().expect("up").storage().first_index()
}

/// Raft §7: with a snapshot every few entries, the log stays short on every
/// member, state machines agree, and a restarted member loads its snapshot
/// and replays the log after it.
#[test]
fn snapshot_basic() {
    let mut c = Cluster::new(3, config(), NetFaults::RELIABLE, 21);
    let mut last = 0;
    for i in 1..=150 {
        last = c.one(&put(i), 3, true, WAIT).expect("agreed");
    }
    settle(&mut c);
    for id in c.ids() {
        let first = first_index(&c, id);
        assert!(first > 1, "member {id} never compacted its log");
        assert!(
            last - first < 3 * SNAPSHOT_EVERY,
            "member {id} keeps {} entries",
            last - first + 1
        );
        assert!(c.node(id).snapshots_taken > 0);
    }
    assert_same_state(&c);
    let victim = c.ids()[1];
    c.crash(victim);
    c.restart(victim);
    c.one(&put(151), 3, true, WAIT)
        .expect("agreed after restart");
    settle(&mut c);
    assert_same_state(&c);
    assert_safe(&c);
}

fn install_run(seed: u64, faults: NetFaults, crash: bool) {
    let mut c = Cluster::new(3, config(), faults, seed);
    let mut seq = 0;
    for round in 0..8 {
        c.one(&put(seq), 2, true, 4 * WAIT)
            .unwrap_or_else(|| panic!("seed {seed}: round {round} not agreed{}", c.describe()));
        seq += 1;
        let leader = c.await_leader(WAIT).expect("a leader");
        let ids = c.ids();
        let victim = ids
            .iter()
            .copied()
            .find(|id| *id != leader && c.node(*id).is_up())
            .expect("a follower");
        if crash {
            c.crash(victim);
        } else {
            c.net.isolate(victim, &ids);
        }
        // Enough entries that the leader compacts well past the victim.
        let burst = SNAPSHOT_EVERY * 2 + c.rng.random_range(0..SNAPSHOT_EVERY);
        for _ in 0..burst {
            if let Some(l) = c.leader()
                && let Some(raft) = c.raft(l)
            {
                let _ = raft.propose(put(seq).into());
                seq += 1;
            }
            c.run_ticks(1);
        }
        c.one(&put(seq), 2, true, 4 * WAIT)
            .unwrap_or_else(|| panic!("seed {seed}: majority stalled{}", c.describe()));
        seq += 1;
        if crash {
            c.restart(victim);
        } else {
            c.net.heal();
        }
        let installed_before = c.node(victim).snapshots_installed;
        let index = c
            .one(&put(seq), 3, true, 4 * WAIT)
            .unwrap_or_else(|| panic!("seed {seed}: victim did not catch up{}", c.describe()));
        seq += 1;
        assert!(c.node(victim).applied() >= index);
        // The leader compacted past everything the victim held, so the log
        // alone cannot have brought it up to date.
        assert!(
            c.node(victim).snapshots_installed > installed_before,
            "seed {seed}: round {round}: victim {victim} caught up without installing a snapshot{}",
            c.describe()
        );
        assert_safe(&c);
    }
    c.net.set_faults(NetFaults::RELIABLE);
    settle(&mut c);
    assert_same_state(&c);
    assert_safe(&c);
}

/// Raft §7: a follower disconnected while the leader compacts past it
/// catches up through InstallSnapshot.
#[test]
fn snapshot_install() {
    install_run(31, NetFaults::RELIABLE, false);
}

/// The same on a network that loses, duplicates and reorders messages —
/// snapshot chunks included.
#[test]
fn snapshot_install_unreliable() {
    for seed in 41..44 {
        install_run(seed, NetFaults::UNRELIABLE, false);
    }
}

/// The same with the follower crashed instead of cut off, restarting from
/// its persisted state.
#[test]
fn snapshot_install_crash() {
    for seed in 51..54 {
        install_run(seed, NetFaults::RELIABLE, true);
    }
}

/// A follower that crashes part-way through receiving a snapshot (it has
/// acknowledged some chunks, not all) keeps nothing of the partial transfer
/// (it is buffered, never installed) and receives it whole after
/// restarting.
#[test]
fn snapshot_install_crash_mid_transfer() {
    let mut config = config();
    config.max_snapshot_chunk_bytes = 16;
    let mut c = Cluster::new(3, config, NetFaults::RELIABLE, 61);
    c.one(&put(0), 3, true, WAIT).expect("agreed");
    let leader = c.await_leader(WAIT).expect("leader");
    let victim = c
        .ids()
        .into_iter()
        .find(|id| *id != leader)
        .expect("follower");
    let ids = c.ids();
    c.net.isolate(victim, &ids);
    for i in 1..=3 * SNAPSHOT_EVERY {
        c.one(&put(i), 2, true, WAIT).expect("majority agrees");
    }
    c.net.heal();
    // Let some chunks arrive, then crash it as soon as it holds part of the
    // snapshot (the whole transfer takes a few instants).
    let mut crashed_holding = None;
    for _ in 0..200 {
        c.step();
        let buffered = c.node(victim).snapshot_bytes_buffered;
        if buffered > 0 {
            c.crash(victim);
            crashed_holding = Some(buffered);
            break;
        }
    }
    let buffered = crashed_holding.expect("the victim never held part of a snapshot to crash with");
    assert_eq!(
        c.node(victim).snapshots_installed,
        0,
        "the victim installed the snapshot before the crash"
    );
    c.run_ticks(30);
    c.restart(victim);
    // Nothing of the partial transfer survived the crash.
    let held = c
        .node(victim)
        .raft()
        .expect("up")
        .storage()
        .snapshot()
        .expect("in-memory storage does not fail");
    assert_eq!(
        held.meta.index, 0,
        "the victim crashed holding {buffered} bytes of a snapshot and restarted with one"
    );
    c.one(&put(1000), 3, true, 4 * WAIT)
        .unwrap_or_else(|| panic!("victim never caught up{}", c.describe()));
    assert!(c.node(victim).snapshots_installed > 0);
    settle(&mut c);
    assert_same_state(&c);
    assert_safe(&c);
}
