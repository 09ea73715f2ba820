//! Simulated members on one virtual clock: each runs a Raft core over
//! in-memory storage and the KV state machine, following the crate's driver
//! contract step by step.

use super::TICK_UNITS;
use super::invariants::Invariants;
use super::kv::{KvCommand, KvOutput, KvStore};
use super::network::{NetFaults, Network};
use flotilla_raft::{
    Bytes, Config, EntryKind, LogIndex, MemStorage, Message, MessageBody, NodeId, Raft, ReadState,
    Role, Storage, Term,
};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::collections::VecDeque;

/// Something a member did that clients may be waiting for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A member applied a client command.
    Applied {
        /// The member.
        node: NodeId,
        /// Log position.
        index: LogIndex,
        /// Entry term.
        term: Term,
        /// The command.
        cmd: KvCommand,
        /// Its output on that member.
        output: KvOutput,
    },
    /// A confirmed read was served from a member's state machine.
    ReadDone {
        /// The member.
        node: NodeId,
        /// The request context.
        ctx: Bytes,
        /// The value read, for the key named in the context.
        value: Option<String>,
    },
}

/// One simulated member.
#[derive(Debug)]
pub struct SimNode {
    /// Its id.
    pub id: NodeId,
    /// The running core, or None while crashed.
    pub raft: Option<Raft<MemStorage>>,
    /// What survives a crash.
    stored: Option<MemStorage>,
    /// Its state machine (rebuilt from the log after a restart).
    pub kv: KvStore,
    /// Highest index applied in this life.
    pub applied: LogIndex,
    /// Reads confirmed but waiting for their index to be applied.
    waiting_reads: VecDeque<ReadState>,
    /// Restarts so far.
    pub restarts: u32,
    /// Crash in the middle of persisting the next `Ready`.
    pub crash_mid_persist: bool,
    /// Snapshots installed from a leader.
    pub snapshots_installed: u64,
    /// Snapshots taken locally.
    pub snapshots_taken: u64,
    /// Crashes part-way through persisting a `Ready`.
    pub torn_crashes: u64,
    /// Bytes of a leader's snapshot this member buffers but has not
    /// installed, as its last InstallSnapshotResponse said (0 once it
    /// installs, answers an append, or restarts).
    pub snapshot_bytes_buffered: u64,
}

impl SimNode {
    /// Whether the member is running.
    pub fn is_up(&self) -> bool {
        self.raft.is_some()
    }

    /// Role, if running.
    pub fn role(&self) -> Option<Role> {
        self.raft.as_ref().map(|r| r.status().soft_state.role)
    }
}

/// Follows, from what a member sends, how much of a leader's snapshot it
/// buffers: it acknowledges each chunk of an incomplete snapshot with the
/// bytes it holds, and answers with an append response once it installed it
/// (or needs it no longer).
fn note_sent(snapshot_bytes_buffered: &mut u64, m: &Message) {
    match m.body {
        MessageBody::InstallSnapshotResponse { next_offset, .. } => {
            *snapshot_bytes_buffered = next_offset;
        }
        MessageBody::AppendEntriesResponse { .. } => *snapshot_bytes_buffered = 0,
        _ => {}
    }
}

/// Extracts the key a read context names (see [`read_ctx`]).
pub fn ctx_key(ctx: &[u8]) -> Option<String> {
    ctx.get(16..)
        .and_then(|k| String::from_utf8(k.to_vec()).ok())
}

/// A read context: client, sequence number and key.
pub fn read_ctx(client: u64, seq: u64, key: &str) -> Bytes {
    let mut v = Vec::with_capacity(16 + key.len());
    v.extend_from_slice(&client.to_le_bytes());
    v.extend_from_slice(&seq.to_le_bytes());
    v.extend_from_slice(key.as_bytes());
    Bytes::from(v)
}

fn node_id(i: usize) -> NodeId {
    NodeId(i as u64 + 1)
}

/// The whole simulated cluster.
#[derive(Debug)]
pub struct Cluster {
    /// Members; member `i` has id `i + 1`.
    pub nodes: Vec<SimNode>,
    /// The network between them.
    pub net: Network,
    /// The run's random source (faults, delays, workload).
    pub rng: SmallRng,
    /// Virtual time in units; a tick is [`TICK_UNITS`] units.
    pub now: u64,
    /// Safety checks.
    pub inv: Invariants,
    /// Whether to run the (costly) invariant checks.
    pub check_invariants: bool,
    /// Events for clients, drained by them.
    pub events: Vec<Event>,
    /// The term and command applied at each index (index - 1), as first
    /// applied.
    pub committed_log: Vec<(Term, Bytes)>,
    template: Config,
    seed: u64,
}

impl Cluster {
    /// `n` members configured from `template` (ids and seeds are set per
    /// member), with a seeded network.
    pub fn new(n: usize, template: Config, faults: NetFaults, seed: u64) -> Cluster {
        let ids: Vec<NodeId> = (1..=n as u64).map(NodeId).collect();
        let mut cluster = Cluster {
            nodes: Vec::new(),
            net: Network::new(faults),
            rng: SmallRng::seed_from_u64(seed),
            now: 0,
            inv: Invariants::default(),
            check_invariants: true,
            events: Vec::new(),
            committed_log: Vec::new(),
            template,
            seed,
        };
        for id in &ids {
            cluster.push_node(*id, MemStorage::new_with_voters(&ids));
        }
        cluster
    }

    fn push_node(&mut self, id: NodeId, storage: MemStorage) {
        self.nodes.push(SimNode {
            id,
            raft: None,
            stored: Some(storage),
            kv: KvStore::default(),
            applied: 0,
            waiting_reads: VecDeque::new(),
            restarts: 0,
            crash_mid_persist: false,
            snapshots_installed: 0,
            snapshots_taken: 0,
            torn_crashes: 0,
            snapshot_bytes_buffered: 0,
        });
        self.start(id);
    }

    /// Starts a new, empty member that is not yet in the configuration (the
    /// leader must add it). Returns its id.
    pub fn add_node(&mut self) -> NodeId {
        let id = NodeId(self.nodes.len() as u64 + 1);
        self.push_node(id, MemStorage::new_joining());
        id
    }

    /// All member ids.
    pub fn ids(&self) -> Vec<NodeId> {
        self.nodes.iter().map(|n| n.id).collect()
    }

    /// The member with `id`.
    pub fn node(&self, id: NodeId) -> &SimNode {
        &self.nodes[(id.0 - 1) as usize]
    }

    fn node_mut(&mut self, id: NodeId) -> &mut SimNode {
        &mut self.nodes[(id.0 - 1) as usize]
    }

    /// The core of a running member.
    pub fn raft(&mut self, id: NodeId) -> Option<&mut Raft<MemStorage>> {
        self.node_mut(id).raft.as_mut()
    }

    fn start(&mut self, id: NodeId) {
        let mut config = self.template.clone();
        config.id = id;
        let node = &mut self.nodes[(id.0 - 1) as usize];
        config.seed = self
            .seed
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .wrapping_add(id.0 * 1000 + u64::from(node.restarts));
        let storage = node
            .stored
            .take()
            .expect("a stopped member keeps its storage");
        let snap = storage.snapshot().expect("memory storage does not fail");
        node.kv = if snap.meta.index > 0 {
            KvStore::decode(&snap.data).expect("snapshots decode")
        } else {
            KvStore::default()
        };
        node.applied = snap.meta.index;
        node.raft = Some(Raft::new(config, storage).expect("simulation config is valid"));
        node.waiting_reads.clear();
        node.crash_mid_persist = false;
        node.snapshot_bytes_buffered = 0;
        self.inv.on_snapshot(id, snap.meta.index, snap.meta.term);
    }

    /// Crashes a member: it loses everything but its storage. Messages to it
    /// are dropped while it is down.
    pub fn crash(&mut self, id: NodeId) {
        let node = self.node_mut(id);
        if let Some(raft) = node.raft.take() {
            node.stored = Some(raft.into_storage());
        }
    }

    /// Restarts a crashed member from its storage.
    pub fn restart(&mut self, id: NodeId) {
        if self.node(id).is_up() {
            return;
        }
        self.node_mut(id).restarts += 1;
        self.start(id);
    }

    /// The running leader with the highest term, if any.
    pub fn leader(&self) -> Option<NodeId> {
        self.nodes
            .iter()
            .filter_map(|n| n.raft.as_ref().map(|r| (n.id, r.state())))
            .filter(|(_, (_, is_leader))| *is_leader)
            .max_by_key(|(_, (term, _))| *term)
            .map(|(id, _)| id)
    }

    /// Delivers due messages and handles every `Ready` until nothing moves at
    /// the current instant, then ticks if a tick is due, then moves the clock
    /// to the next event.
    pub fn step(&mut self) {
        self.settle();
        if self.now.is_multiple_of(TICK_UNITS) {
            for i in 0..self.nodes.len() {
                if let Some(raft) = self.nodes[i].raft.as_mut() {
                    raft.tick();
                }
            }
            self.settle();
        }
        let next_tick = (self.now / TICK_UNITS + 1) * TICK_UNITS;
        let next = self
            .net
            .next_delivery()
            .map_or(next_tick, |t| t.min(next_tick))
            .max(self.now + 1);
        self.now = next;
    }

    /// Runs for `ticks` ticks of virtual time.
    pub fn run_ticks(&mut self, ticks: u64) {
        let end = self.now + ticks * TICK_UNITS;
        while self.now < end {
            self.step();
        }
    }

    /// Handles messages and readies at the current instant until quiet.
    pub fn settle(&mut self) {
        // Bounded: a zero-delay network can bounce messages many times within
        // one instant, but never forever (each round needs new input).
        for _ in 0..100_000 {
            let mut busy = false;
            while let Some(m) = self.net.pop_due(self.now) {
                busy = true;
                if let Some(raft) = self.node_mut(m.to).raft.as_mut() {
                    raft.step(m);
                }
            }
            for i in 0..self.nodes.len() {
                busy |= self.handle_ready(i);
            }
            if !busy {
                return;
            }
        }
        panic!(
            "simulation did not settle within one instant (seed {})",
            self.seed
        );
    }

    /// Steps 2–6 of the driver contract for member `i`.
    fn handle_ready(&mut self, i: usize) -> bool {
        let node = &mut self.nodes[i];
        let id = node.id;
        let Some(raft) = node.raft.as_mut() else {
            return false;
        };
        if !raft.has_ready() {
            return false;
        }
        let mut ready = raft.ready().expect("in-memory storage does not fail");
        // A leader may send before persisting; its messages then leave even
        // if it crashes while writing.
        if ready.messages_first {
            for m in std::mem::take(&mut ready.messages) {
                note_sent(&mut node.snapshot_bytes_buffered, &m);
                self.net.send(m, self.now, &mut self.rng);
            }
        }
        if node.crash_mid_persist && ready.must_persist() {
            self.crash_while_persisting(i, ready);
            return true;
        }
        // Step 3: persist — a snapshot from the leader first, then the hard
        // state and entries in one save.
        if let Some(snap) = &ready.snapshot {
            raft.storage_mut()
                .apply_snapshot(snap.clone())
                .expect("in-memory storage does not fail");
        }
        if self.check_invariants {
            self.inv.on_persist(id, raft.storage(), &ready.entries);
        }
        raft.storage_mut()
            .save(ready.hard_state.as_ref(), &ready.entries)
            .expect("in-memory storage does not fail");
        let status = raft.status();
        if let Some(soft) = ready.soft_state
            && soft.role == Role::Leader
        {
            let term = status.hard_state.term;
            self.inv.on_leader(id, term);
            if self.check_invariants {
                self.inv.on_leader_log(id, term, raft.storage());
            }
        }
        // Step 4: send.
        for m in ready.messages {
            note_sent(&mut node.snapshot_bytes_buffered, &m);
            self.net.send(m, self.now, &mut self.rng);
        }
        // Step 5: restore from the snapshot, apply, then serve reads.
        if let Some(snap) = &ready.snapshot {
            node.kv = KvStore::decode(&snap.data).expect("snapshots decode");
            node.applied = snap.meta.index;
            node.snapshots_installed += 1;
            node.snapshot_bytes_buffered = 0;
            self.inv.on_snapshot(id, snap.meta.index, snap.meta.term);
        }
        if self.check_invariants {
            self.inv.on_committed(id, &ready.committed_entries);
        }
        for entry in &ready.committed_entries {
            if self.check_invariants {
                self.inv.on_apply(id, entry);
            }
            if entry.index as usize > self.committed_log.len() {
                self.committed_log.push((entry.term, entry.data.clone()));
            }
            node.applied = entry.index;
            if entry.kind != EntryKind::Normal {
                continue;
            }
            match KvCommand::decode(&entry.data) {
                Ok(cmd) => {
                    let output = node.kv.apply(&cmd);
                    self.events.push(Event::Applied {
                        node: id,
                        index: entry.index,
                        term: entry.term,
                        cmd,
                        output,
                    });
                }
                Err(_) => {
                    // Scripted tests propose raw bytes; they are not commands.
                }
            }
        }
        node.waiting_reads.extend(ready.read_states);
        // Step 6.
        raft.advance();
        if self.check_invariants {
            self.inv.on_commit(
                id,
                status.hard_state.commit,
                status.last_index,
                raft.storage(),
            );
        }
        while let Some(read) = node.waiting_reads.front() {
            if read.index > node.applied {
                break;
            }
            let read = node.waiting_reads.pop_front().expect("checked");
            let value = ctx_key(&read.ctx).and_then(|k| node.kv.get(&k));
            self.events.push(Event::ReadDone {
                node: id,
                ctx: read.ctx,
                value,
            });
        }
        // Compact once the log passed the configured size.
        if raft.snapshot_due() {
            raft.compact(node.kv.encode())
                .expect("in-memory storage does not fail");
            node.snapshots_taken += 1;
        }
        true
    }

    /// The member crashes part-way through step 3: of what the `Ready` asked
    /// to persist, only a prefix reached the disk (entries not yet synced
    /// vanish), and nothing was sent or applied. What did reach the disk is
    /// checked for log matching like any other write; the entries the
    /// `Ready` handed out as committed were committed, applied or not.
    fn crash_while_persisting(&mut self, i: usize, ready: flotilla_raft::Ready) {
        let id = node_id(i);
        let rng = &mut self.rng;
        let node = &mut self.nodes[i];
        node.torn_crashes += 1;
        let raft = node.raft.as_mut().expect("running");
        if self.check_invariants {
            self.inv.on_committed(id, &ready.committed_entries);
        }
        if let Some(snap) = ready.snapshot {
            if rng.random_bool(0.5) {
                self.crash(id);
                return;
            }
            raft.storage_mut()
                .apply_snapshot(snap)
                .expect("in-memory storage does not fail");
        }
        let kept = rng.random_range(0..=ready.entries.len());
        if self.check_invariants {
            self.inv
                .on_persist(id, raft.storage(), &ready.entries[..kept]);
        }
        // The hard state is written after the entries, so it can only have
        // reached the disk if every entry did.
        let hard_state = if kept == ready.entries.len() && rng.random_bool(0.5) {
            ready.hard_state
        } else {
            None
        };
        raft.storage_mut()
            .save(hard_state.as_ref(), &ready.entries[..kept])
            .expect("in-memory storage does not fail");
        self.crash(id);
    }

    /// The first safety violation found, with the seed.
    pub fn violation(&self) -> Option<String> {
        self.inv
            .violation()
            .map(|v| format!("{v} (at time {} ticks)", self.now / TICK_UNITS))
    }

    /// Runs until some member leads and a quorum knows it, or `max_ticks` pass.
    pub fn await_leader(&mut self, max_ticks: u64) -> Option<NodeId> {
        for _ in 0..max_ticks {
            if let Some(l) = self.leader() {
                let term = self.node(l).raft.as_ref().map(|r| r.state().0);
                let voters = self
                    .node(l)
                    .raft
                    .as_ref()
                    .map(|r| r.conf_state().voters)
                    .unwrap_or_default();
                let knowing = voters
                    .iter()
                    .filter_map(|v| self.node(*v).raft.as_ref())
                    .filter(|r| r.status().soft_state.leader == l && Some(r.state().0) == term)
                    .count();
                if knowing > voters.len() / 2 {
                    return Some(l);
                }
            }
            self.run_ticks(1);
        }
        None
    }

    /// One line per member: role, term, leader, commit, applied, last index.
    pub fn describe(&self) -> String {
        let mut out = String::new();
        for n in &self.nodes {
            match &n.raft {
                Some(r) => {
                    let s = r.status();
                    out.push_str(&format!(
                        "\n    {}: {:?} term {} vote {} leader {} commit {} applied {} last {} voters {:?} learners {:?} matches {:?}",
                        n.id,
                        s.soft_state.role,
                        s.hard_state.term,
                        s.hard_state.vote,
                        s.soft_state.leader,
                        s.hard_state.commit,
                        s.applied,
                        s.last_index,
                        s.conf_state.voters,
                        s.conf_state.learners,
                        s.match_indexes
                    ));
                }
                None => out.push_str(&format!("\n    {}: down", n.id)),
            }
        }
        out
    }

    /// The seed of this run.
    pub fn seed(&self) -> u64 {
        self.seed
    }
}
