//! Shared drivers for the Flotilla benchmarks: the criterion benches in
//! `benches/` and the `flotilla bench` load generators use them.
//!
//! | module | what |
//! |---|---|
//! | (root) | [`InstantCluster`]: Raft cores on a zero-delay network; [`smoke_run`] and [`full_run`], the bench targets' run sizes |
//! | [`log`] | the partition log's append and read drivers, plans and tables |
//!
//! [`InstantCluster`] runs Raft cores in one thread on a network with zero
//! delay: every message is delivered as soon as the `Ready` that carries it
//! was persisted (to [`MemStorage`]). It measures the core's own cost per
//! committed entry, with none of the simulation's fault machinery or checks.

pub mod log;

/// Whether a bench target runs as a smoke test, on its small inputs: with
/// `--test` (CI's `cargo test --bench '*' -- --test`), or without `--bench`
/// (as `cargo test` runs bench targets), the rule criterion follows for
/// its own test mode.
pub fn smoke_run() -> bool {
    std::env::args().any(|a| a == "--test") || !std::env::args().any(|a| a == "--bench")
}

/// Whether `FLOTILLA_BENCH_FULL` (set, and not `0`) asks a bench target
/// for its longer run.
pub fn full_run() -> bool {
    std::env::var_os("FLOTILLA_BENCH_FULL").is_some_and(|v| v != "0")
}

use flotilla_raft::{Bytes, Config, MemStorage, Message, NodeId, Raft, Role, Storage};
use std::collections::VecDeque;

/// A cluster of cores delivering messages instantly, in order.
#[derive(Debug)]
pub struct InstantCluster {
    nodes: Vec<Raft<MemStorage>>,
    leader: usize,
    queue: VecDeque<Message>,
    /// Entries applied at the leader (commands only, not no-ops).
    pub applied_commands: u64,
    /// Bytes of messages delivered.
    pub delivered_bytes: u64,
}

impl InstantCluster {
    /// `n` members with the given template (ids and seeds set per member),
    /// once one of them is elected.
    pub fn new(n: usize, template: &Config) -> InstantCluster {
        let ids: Vec<NodeId> = (1..=n as u64).map(NodeId).collect();
        let nodes = ids
            .iter()
            .map(|id| {
                let mut c = template.clone();
                c.id = *id;
                c.seed = id.0;
                Raft::new(c, MemStorage::new_with_voters(&ids)).expect("valid config")
            })
            .collect();
        let mut cluster = InstantCluster {
            nodes,
            leader: 0,
            queue: VecDeque::new(),
            applied_commands: 0,
            delivered_bytes: 0,
        };
        // Tick everyone until somebody leads.
        for _ in 0..10 * template.election_ticks {
            for node in &mut cluster.nodes {
                node.tick();
            }
            cluster.settle();
            if let Some(i) = cluster.nodes.iter().position(|n| n.state().1) {
                cluster.leader = i;
                return cluster;
            }
        }
        panic!("no leader elected");
    }

    /// The leader's core.
    pub fn leader(&mut self) -> &mut Raft<MemStorage> {
        &mut self.nodes[self.leader]
    }

    /// Handles readies and delivers messages until nothing moves.
    pub fn settle(&mut self) {
        loop {
            let mut busy = false;
            for i in 0..self.nodes.len() {
                busy |= self.handle_ready(i);
            }
            while let Some(m) = self.queue.pop_front() {
                busy = true;
                self.delivered_bytes += m.size_bytes();
                let to = (m.to.0 - 1) as usize;
                self.nodes[to].step(m);
            }
            if !busy {
                return;
            }
        }
    }

    fn handle_ready(&mut self, i: usize) -> bool {
        let node = &mut self.nodes[i];
        if !node.has_ready() {
            return false;
        }
        let ready = node.ready().expect("memory storage does not fail");
        node.storage_mut()
            .save(ready.hard_state.as_ref(), &ready.entries)
            .expect("memory storage does not fail");
        self.queue.extend(ready.messages);
        if node.status().soft_state.role == Role::Leader {
            self.applied_commands += ready
                .committed_entries
                .iter()
                .filter(|e| !e.data.is_empty())
                .count() as u64;
        }
        node.advance();
        true
    }

    /// Proposes `total` commands of `payload_bytes` each at the leader, in
    /// batches of `batch` per `Ready` (as a driver collects the proposals
    /// that arrive while the previous `Ready` is persisted), and runs until
    /// all are committed and applied at the leader.
    pub fn commit(&mut self, total: u64, payload_bytes: usize, batch: usize) {
        // Commands are slices of one buffer, as a server's request buffer
        // would be split: no allocation per command.
        let buffer = Bytes::from(vec![7u8; payload_bytes * batch]);
        let target = self.applied_commands + total;
        let mut proposed = 0u64;
        while proposed < total {
            let n = batch.min((total - proposed) as usize);
            let commands = (0..n).map(|k| buffer.slice(k * payload_bytes..(k + 1) * payload_bytes));
            self.nodes[self.leader]
                .propose_batch(commands)
                .expect("leader accepts proposals");
            proposed += n as u64;
            self.settle();
        }
        self.settle();
        assert_eq!(self.applied_commands, target, "every command was applied");
    }

    /// Entries held by each member's storage.
    pub fn log_lengths(&self) -> Vec<u64> {
        self.nodes
            .iter()
            .map(|n| n.storage().last_index())
            .collect()
    }
}

/// A configuration for throughput runs: large windows, no uncommitted limit
/// in the way.
pub fn throughput_config() -> Config {
    let mut c = Config::new(NodeId(1));
    c.max_msg_bytes = 1024 * 1024;
    c.max_inflight_msgs = 256;
    c.max_uncommitted_bytes = 1 << 30;
    c.max_uncommitted_entries = 1 << 24;
    c
}
