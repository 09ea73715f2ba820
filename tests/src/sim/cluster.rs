//! Simulated members on one virtual clock: each runs the node's own
//! [`Step`] (the driver's `Ready` processing) over in-memory storage and the
//! node's KV state machine, with the simulation's effects
//! ([`super::node`]).

use super::TICK_UNITS;
use super::invariants::Invariants;
use super::kv::{get_request, pairs};
use super::network::{NetFaults, Network};
use super::node::{
    CRASHED, Contents, Event, NodeStep, Proposal, Read, STALE_READ_CTX, SimEffects, SimNode,
    ViewRead, apply_bounds, contents, restored, state_config,
};
use super::watch::EventHistory;
use flotilla_node::api::{FeatureGate, peer_leader_takes, peer_proposal_filter};
use flotilla_node::driver::{DriverError, PEER_COMMAND_BYTES_MAX, Step};
use flotilla_node::state::{Clock, MemberIds};
use flotilla_node::transport::{FEATURES, PEER_PROPOSALS, PeerFeatures};
use flotilla_raft::{
    Bytes, Config, LogIndex, MemStorage, NodeId, ProposeError, Raft, Storage, StorageError, Term,
};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

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

/// The checks after each call into a member's step: its commit index.
fn node_after(fx: &mut SimEffects<'_>, step: &NodeStep) {
    if fx.check_invariants {
        let raft = step.raft();
        let status = raft.status();
        fx.inv.on_commit(
            fx.node.id,
            status.hard_state.commit,
            status.last_index,
            raft.storage(),
        );
    }
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
    /// Reads running on frozen views (the API's read pool).
    pub view_reads: Vec<ViewRead>,
    /// Most ticks a read spends on its view before it answers.
    pub view_delay_ticks: u64,
    /// Reads answered from views so far.
    pub view_reads_done: u64,
    /// Most ticks a snapshot spends being written off the driver before
    /// the log is compacted to it.
    pub snapshot_write_ticks: u64,
    /// Most ticks a run of heavy entries spends applying off a member's
    /// step (drawn per run, when it is not applied at once).
    pub apply_delay_ticks: u64,
    /// Chance that a member crashes (and restarts) right after its snapshot
    /// is written, before the log is compacted to it.
    pub crash_after_snapshot_write: f64,
    /// Snapshots written, then recorded by compacting the log.
    pub snapshots_compacted: u64,
    /// Snapshots written, then recovered by a restart before the log was
    /// compacted to them.
    pub snapshots_recovered_unrecorded: u64,
    /// A read on a view that answered inconsistently, if any.
    read_violation: Option<String>,
    /// A snapshot write or compaction that went wrong, if any.
    pub(super) snapshot_violation: Option<String>,
    /// Each revision's events, and the checks of what watchers see.
    pub event_history: EventHistory,
    /// Chance per tick that a watcher catches up from an old revision on a
    /// random member.
    pub watch_catch_up_per_tick: f64,
    /// The watch checks' own random source, so that checking does not
    /// change the run's schedule of faults and deliveries.
    pub(super) check_rng: SmallRng,
    /// When a revoke of each lease was first proposed (by a client or by
    /// the leader's expiry loop), in virtual time.
    pub revokes_proposed: HashMap<i64, u64>,
    /// Revokes the leaders' expiry loops proposed.
    pub expiry_revokes: u64,
    /// What each member advertises, as its peers heard it (every member
    /// hears every other here).
    heard: PeerFeatures,
    /// The members' ids, as the node's member table gives them to its
    /// feature gate.
    member_ids: MemberIds,
    /// A member playing the previous release, which neither makes nor
    /// takes proposals through the peer stream, if any: its followers'
    /// clients go to it another way, and it sends its own clients' writes
    /// to the leader.
    pub without_peer_proposals: Option<NodeId>,
    /// Whether members write their log entries with a deferred sync (the
    /// node's default), or sync each `Ready` before going on.
    pub deferred_sync: bool,
    /// In a run that defers syncs, a member whose disk is slow: its syncs
    /// take up to half an election timeout, so that much of what it
    /// writes is unsynced when it crashes (a leader's count of its own
    /// entries, or an acknowledgement, that ran ahead of its sync would
    /// lose committed entries).
    pub slow_disk: Option<NodeId>,
    /// Committed entries checked durable on a majority so far.
    durable_checked: LogIndex,
    /// Commands leaders appended from followers' batches.
    pub peer_proposals: u64,
    /// When each lease was last granted (asked) or kept alive, in virtual
    /// time, and its TTL in seconds.
    pub lease_renewed: HashMap<i64, (u64, i64)>,
    /// Virtual milliseconds (one time unit each), for lease timers.
    clock_ms: Arc<AtomicU64>,
    /// The instant virtual time 0 stands for.
    clock_base: Instant,
    /// Ticks so far (each member's step counts its reads' age in them).
    ticks: u64,
    pub(super) template: Config,
    pub(super) seed: u64,
}

/// Ticks between two rounds of a leader's lease expiry loop (the node's
/// default check interval, 100 ms, at 10 ms a tick).
const LEASE_CHECK_TICKS: u64 = 10;

/// Ticks a read waits for its confirmation, and a follower's proposal for
/// the leader's answer, before it fails (the driver's
/// `read_timeout_ticks`).
const READ_TIMEOUT_TICKS: u64 = 100;

/// Proposals waiting at a leader before it refuses its followers' (the
/// driver's `max_pending_proposals`): below the workload's five clients,
/// so that a leader sometimes refuses a batch as busy.
const PENDING_PROPOSALS_MAX: usize = 3;

/// Most virtual time units a deferred sync takes (a little under a LAN delay,
/// acknowledgements and the leader's own count wait for it).
const SYNC_DELAY_MAX_UNITS: u64 = 2;

/// Most virtual time units a sync takes on a slow disk (half an election
/// timeout).
const SLOW_SYNC_DELAY_MAX_UNITS: u64 = 50;

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
            view_reads: Vec::new(),
            view_delay_ticks: 3,
            view_reads_done: 0,
            snapshot_write_ticks: 0,
            apply_delay_ticks: 0,
            crash_after_snapshot_write: 0.0,
            snapshots_compacted: 0,
            snapshots_recovered_unrecorded: 0,
            read_violation: None,
            snapshot_violation: None,
            event_history: EventHistory::default(),
            watch_catch_up_per_tick: 0.2,
            check_rng: SmallRng::seed_from_u64(seed ^ 0x5741_5443_4845_5253),
            revokes_proposed: HashMap::new(),
            expiry_revokes: 0,
            heard: PeerFeatures::default(),
            member_ids: MemberIds::default(),
            without_peer_proposals: None,
            deferred_sync: true,
            slow_disk: None,
            durable_checked: 0,
            peer_proposals: 0,
            lease_renewed: HashMap::new(),
            clock_ms: Arc::new(AtomicU64::new(0)),
            clock_base: Instant::now(),
            ticks: 0,
            template,
            seed,
        };
        // One run in three has a member of the previous release.
        let old = cluster.check_rng.random_range(0..3 * n as u64);
        cluster.without_peer_proposals = (old < n as u64).then_some(NodeId(old + 1));
        // One run in three syncs each `Ready` before going on; the others
        // defer their syncs, as the node does by default.
        cluster.deferred_sync = cluster.check_rng.random_range(0..3) != 0;
        let slow = cluster.check_rng.random_range(0..2 * n as u64);
        cluster.slow_disk = (cluster.deferred_sync && slow < n as u64).then_some(NodeId(slow + 1));
        for id in &ids {
            cluster.push_node(
                *id,
                MemStorage::new_with_voters(&ids).with_snapshot_writer(),
            );
        }
        cluster
    }

    fn push_node(&mut self, id: NodeId, storage: MemStorage) {
        self.nodes.push(SimNode {
            id,
            step: None,
            stored: Some(storage),
            restarts: 0,
            crash_mid_persist: false,
            snapshots_installed: 0,
            snapshots_taken: 0,
            torn_crashes: 0,
            snapshot_bytes_buffered: 0,
            writing: None,
            snapshot_writes_lost: 0,
            lessor: None,
            applied_events: None,
            event_revision: 0,
            applying: None,
            applies_at_once: 0,
            applies_deferred: 0,
            stale_expected: None,
            stale_reads_checked: 0,
            syncing: VecDeque::new(),
            sync_floor: 0,
            syncs_deferred: 0,
            syncs_inline: 0,
            entries_lost_unsynced: 0,
            previous_release: false,
        });
        self.start(id);
    }

    /// Starts a new, empty member that is not yet in the configuration (the
    /// leader must add it). Returns its id.
    pub fn add_node(&mut self) -> NodeId {
        let id = NodeId(self.nodes.len() as u64 + 1);
        self.push_node(id, MemStorage::new_joining().with_snapshot_writer());
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
        self.node_mut(id).step.as_mut().map(|s| s.raft_mut())
    }

    /// Proposes a client's write at member `id`, as the API does: a
    /// leader appends it, a follower sends it to the leader through the
    /// peer stream; either way the proposal waits in the member's step for
    /// its answer ([`Event::Answered`]). A follower that cannot send it so
    /// (no leader, or one of the previous release) refuses it with the
    /// leader it knows, where the API would forward it.
    pub fn propose(
        &mut self,
        id: NodeId,
        command: Bytes,
        proposal: Proposal,
    ) -> Option<Result<(), ProposeError>> {
        self.with_effects((id.0 - 1) as usize, |step, ticks, fx| {
            if step.raft().state().1 {
                return Ok(step.raft_mut().propose(command).map(|(index, term)| {
                    step.track(index, term, proposal, fx);
                }));
            }
            Ok(step
                .propose_via_leader(command, proposal, ticks, PENDING_PROPOSALS_MAX, fx)
                .map_err(|(e, _)| {
                    let leader_hint = match e {
                        DriverError::NotLeader { leader_hint } => leader_hint,
                        _ => Some(step.followed_leader()),
                    };
                    ProposeError::NotLeader { leader_hint }
                }))
        })
    }

    /// Asks member `id` for a linearizable read: the step confirms it, then
    /// serves it ([`Event::ReadDone`]) or fails it ([`Event::ReadFailed`]).
    /// False if the member is down.
    pub fn read(&mut self, id: NodeId, read: Read) -> bool {
        self.with_effects((id.0 - 1) as usize, |step, ticks, fx| {
            step.read(read, ticks, fx);
            Ok(true)
        })
        .unwrap_or(false)
    }

    /// A linearizable read of the key a [`read_ctx`] names, at member `id`.
    pub fn read_key(&mut self, id: NodeId, ctx: Bytes) -> bool {
        let key = ctx_key(&ctx).unwrap_or_default();
        self.read(
            id,
            Read {
                ctx,
                request: get_request(&key),
            },
        )
    }

    /// The virtual clock lease timers read: one time unit is a millisecond.
    pub fn clock(&self) -> Clock {
        let (ms, base) = (self.clock_ms.clone(), self.clock_base);
        Arc::new(move || base + Duration::from_millis(ms.load(Ordering::Relaxed)))
    }

    /// The virtual clock's reading now.
    pub fn instant(&self) -> Instant {
        self.clock_base + Duration::from_millis(self.now)
    }

    fn start(&mut self, id: NodeId) {
        let clock = self.clock();
        let mut config = self.template.clone();
        config.id = id;
        let node = &mut self.nodes[(id.0 - 1) as usize];
        config.seed = self
            .seed
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .wrapping_add(id.0 * 1000 + u64::from(node.restarts));
        let mut storage = node
            .stored
            .take()
            .expect("a stopped member keeps its storage");
        storage.recover();
        let snap = storage.snapshot().expect("memory storage does not fail");
        // As the node does: the snapshot's size weighs the log until the
        // member takes or installs another.
        config.restored_snapshot_bytes = snap.data.len() as u64;
        let (sm, lessor) = restored(&storage, clock);
        node.event_revision = sm.kv().revision();
        node.applied_events = Some(sm.subscribe());
        node.lessor = Some(lessor);
        // The node's own filter and feature checks, over what this member
        // advertises and hears.
        let own = if self.without_peer_proposals == Some(id) {
            FEATURES & !PEER_PROPOSALS
        } else {
            FEATURES
        };
        self.heard.record(id.0, own);
        self.member_ids
            .set(self.nodes.iter().map(|n| n.id.0).collect());
        let gate = FeatureGate::new(id.0, own, self.heard.clone(), self.member_ids.clone());
        let raft = Raft::new(config, storage).expect("simulation config is valid");
        let mut step = Step::new(raft, sm).with_bounds(apply_bounds());
        let node = &mut self.nodes[(id.0 - 1) as usize];
        node.previous_release = self.without_peer_proposals == Some(id);
        if gate.understood_here(PEER_PROPOSALS) {
            let limits = state_config().kv.limits();
            step = step.with_peer_proposals(
                peer_proposal_filter(gate.clone(), limits, PEER_COMMAND_BYTES_MAX),
                peer_leader_takes(gate),
            );
        }
        node.step = Some(step);
        node.applying = None;
        node.crash_mid_persist = false;
        node.snapshot_bytes_buffered = 0;
        self.inv.on_snapshot(id, snap.meta.index, snap.meta.term);
    }

    /// Crashes a member: it loses everything but its storage (its waiters
    /// and the reads on its views are never answered). Messages to it are
    /// dropped while it is down.
    pub fn crash(&mut self, id: NodeId) {
        let node = &mut self.nodes[(id.0 - 1) as usize];
        if let Some(step) = node.step.take() {
            let mut storage = step.into_raft().into_storage();
            node.lose_unsynced(&mut storage, &mut self.rng, &mut self.inv);
            node.stored = Some(storage);
        }
        node.lose_snapshot_write();
        node.lessor = None;
        node.applied_events = None;
        self.view_reads.retain(|r| r.node != id);
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
            .filter_map(|n| n.raft().map(|r| (n.id, r.state())))
            .filter(|(_, (_, is_leader))| *is_leader)
            .max_by_key(|(_, (term, _))| *term)
            .map(|(id, _)| id)
    }

    /// Delivers due messages and handles every `Ready` until nothing moves at
    /// the current instant, then ticks if a tick is due, then finishes the
    /// reads on views that are due, then moves the clock to the next event.
    pub fn step(&mut self) {
        self.clock_ms.store(self.now, Ordering::Relaxed);
        self.settle();
        if self.now.is_multiple_of(TICK_UNITS) {
            self.ticks += 1;
            for i in 0..self.nodes.len() {
                self.with_effects(i, |step, ticks, fx| {
                    step.raft_mut().tick();
                    step.expire(ticks, READ_TIMEOUT_TICKS, fx);
                    Ok(())
                });
            }
            if self.ticks.is_multiple_of(LEASE_CHECK_TICKS) {
                self.expire_leases();
            }
            self.settle();
            if self.watch_catch_up_per_tick > 0.0
                && self.check_rng.random_bool(self.watch_catch_up_per_tick)
            {
                self.catch_up_watch();
            }
        }
        self.finish_view_reads();
        self.finish_snapshot_writes();
        self.finish_deferred_applies();
        self.finish_syncs();
        let next_tick = (self.now / TICK_UNITS + 1) * TICK_UNITS;
        let next_sync = self
            .nodes
            .iter()
            .filter_map(|n| n.syncing.front().map(|s| s.due))
            .min();
        let next = self
            .net
            .next_delivery()
            .into_iter()
            .chain(next_sync)
            .fold(next_tick, u64::min)
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
                // The core may raise its commit index, which the next
                // `Ready` saves: checked after that.
                let i = (m.to.0 - 1) as usize;
                let batch = self.run_effects(i, false, |step, _, fx| {
                    Ok(step.step_message(m, PENDING_PROPOSALS_MAX, fx))
                });
                if let Some(Some(batch)) = batch {
                    self.peer_proposals += batch.accepted;
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

    /// Runs `f` on member `i`'s step with the simulation's effects; a
    /// simulated crash while persisting takes the member down. None if the
    /// member is down.
    pub(super) fn with_effects<T>(
        &mut self,
        i: usize,
        f: impl FnOnce(&mut NodeStep, u64, &mut SimEffects<'_>) -> Result<T, StorageError>,
    ) -> Option<T> {
        self.run_effects(i, true, f)
    }

    /// [`Self::with_effects`]; without the check of the member's commit
    /// index after `f` when `check_commit` is false (its core may hold a
    /// commit index it has not saved yet, which the next `Ready` saves).
    fn run_effects<T>(
        &mut self,
        i: usize,
        check_commit: bool,
        f: impl FnOnce(&mut NodeStep, u64, &mut SimEffects<'_>) -> Result<T, StorageError>,
    ) -> Option<T> {
        let node = &mut self.nodes[i];
        let inline_sync = self.slow_disk != Some(node.id);
        let sync_delay_max = if self.slow_disk == Some(node.id) {
            SLOW_SYNC_DELAY_MAX_UNITS
        } else {
            SYNC_DELAY_MAX_UNITS
        };
        let mut step = node.step.take()?;
        let mut fx = SimEffects {
            node,
            now: self.now,
            net: &mut self.net,
            rng: &mut self.rng,
            inv: &mut self.inv,
            check_invariants: self.check_invariants,
            events: &mut self.events,
            committed_log: &mut self.committed_log,
            view_reads: &mut self.view_reads,
            view_delay_max: self.view_delay_ticks * TICK_UNITS,
            snapshot_write_delay_max: self.snapshot_write_ticks * TICK_UNITS,
            apply_delay_max: self.apply_delay_ticks * TICK_UNITS,
            deferred_sync: self.deferred_sync,
            sync_delay_max,
            inline_sync,
        };
        match f(&mut step, self.ticks, &mut fx) {
            Ok(out) => {
                if check_commit {
                    node_after(&mut fx, &step);
                }
                fx.node.step = Some(step);
                Some(out)
            }
            Err(StorageError::Fatal(e)) if e == CRASHED => {
                let node = &mut self.nodes[i];
                let mut storage = step.into_raft().into_storage();
                node.lose_unsynced(&mut storage, &mut self.rng, &mut self.inv);
                node.stored = Some(storage);
                node.lose_snapshot_write();
                node.lessor = None;
                node.applied_events = None;
                let id = node.id;
                self.view_reads.retain(|r| r.node != id);
                None
            }
            Err(e) => panic!("member {} failed: {e} (seed {})", i + 1, self.seed),
        }
    }

    /// Steps 2–6 of the driver contract for member `i`, by the node's own
    /// step.
    fn handle_ready(&mut self, i: usize) -> bool {
        let Some(step) = self.nodes[i].step.as_ref() else {
            return false;
        };
        // As the driver at the end of its turn: this instant's proposals
        // go to the leader in one batch.
        if step.pending_proposals() > 0 {
            self.run_effects(i, false, |step, ticks, fx| {
                step.flush_peer_proposals(ticks, fx);
                Ok(())
            });
        }
        let Some(step) = self.nodes[i].step.as_ref() else {
            return false;
        };
        if step.waits_for_state_machine() {
            // A leader's snapshot to install: as the driver, the member
            // waits for its runs applying elsewhere (their events reach
            // the watchers before the snapshot replaces the store). The
            // snapshot raised the core's commit index, which the `Ready`
            // below saves: it is checked after that.
            self.run_effects(i, false, |step, _, fx| {
                while step.waits_for_state_machine() {
                    let Some(run) = fx.node.applying.take() else {
                        break;
                    };
                    let (sm, outputs) = run.apply();
                    step.applied_elsewhere(sm, outputs, fx)?;
                }
                Ok(())
            });
            self.drain_events(i);
        }
        if !self.nodes[i].step.as_mut().is_some_and(|s| s.has_ready()) {
            return false;
        }
        self.with_effects(i, |step, _, fx| step.process_one(fx));
        self.drain_events(i);
        self.check_committed_durable(i);
        true
    }

    /// After member `i`'s `Ready`, if it leads: every entry it committed
    /// since the last check is durable on a majority of its voters.
    fn check_committed_durable(&mut self, i: usize) {
        if !self.check_invariants {
            return;
        }
        let Some(raft) = self.nodes[i].raft() else {
            return;
        };
        if !raft.state().1 {
            return;
        }
        let (id, commit, voters) = (
            raft.id(),
            raft.status().hard_state.commit,
            raft.conf_state().voters,
        );
        // Checked at once, under the configuration the leader committed
        // it with (a membership change appended later may add a voter);
        // its own storage holds every entry it committed, once the `Ready`
        // is written, unless a snapshot covers it.
        while self.durable_checked < commit {
            let index = self.durable_checked + 1;
            self.durable_checked = index;
            let Some(term) = self.nodes[i]
                .raft()
                .and_then(|r| r.storage().term(index).ok())
            else {
                continue;
            };
            let holders = voters
                .iter()
                .filter(|v| self.holds_durably(**v, index, term))
                .count();
            self.inv
                .on_committed_durable(id, index, holders, voters.len());
        }
    }

    /// Whether member `id`'s storage holds entry `index` of `term` where a
    /// crash cannot take it: synced, or covered by its snapshot.
    fn holds_durably(&self, id: NodeId, index: LogIndex, term: Term) -> bool {
        let Some(node) = self.nodes.get((id.0 - 1) as usize) else {
            return false;
        };
        let storage = match (&node.step, &node.stored) {
            (Some(step), _) => step.raft().storage(),
            (None, Some(stored)) => stored,
            (None, None) => return false,
        };
        if index <= storage.snapshot_index() {
            return true;
        }
        storage.term(index).is_ok_and(|t| t == term)
            && (index <= node.sync_floor || node.syncing.iter().all(|s| index < s.first))
    }

    /// Finishes the deferred syncs that are due: each member's step learns
    /// its writes are durable, and the messages that waited leave.
    fn finish_syncs(&mut self) {
        let now = self.now;
        let mut finished = false;
        for i in 0..self.nodes.len() {
            let node = &mut self.nodes[i];
            let mut last = None;
            while let Some(sync) = node.syncing.front().filter(|s| s.due <= now).copied() {
                node.syncing.pop_front();
                node.syncs_deferred += 1;
                last = Some(sync.write);
            }
            if let Some(write) = last {
                finished = true;
                // A leader may raise its commit index, which the next
                // `Ready` saves: checked after that.
                self.run_effects(i, false, |step, _, fx| {
                    step.synced(write, fx);
                    Ok(())
                });
            }
        }
        if finished {
            // As the driver, which processes the `Ready`s a sync's report
            // brings before it takes other input: the commit index it
            // raised is saved before a client or a crash comes.
            self.settle();
        }
    }

    /// Brings back the state machines whose runs of heavy entries are due:
    /// each member's step answers the run's proposals and goes on
    /// applying what queued meanwhile.
    fn finish_deferred_applies(&mut self) {
        let now = self.now;
        for i in 0..self.nodes.len() {
            if self.nodes[i].applying.as_ref().is_none_or(|a| a.due > now) {
                continue;
            }
            self.with_effects(i, |step, _, fx| {
                let mut run = fx.node.applying.take().expect("checked");
                let before = std::mem::take(&mut run.before);
                // While the run is away: a read that may be stale runs at
                // once on the copy the step kept as the state machine left
                // (it keeps one if such a read came since the last run).
                if step.has_read_copy() {
                    assert!(
                        stale_read(step, fx, before.clone()),
                        "member {}: a stale read waited beside a current copy",
                        fx.node.id
                    );
                    fx.node.stale_reads_checked += 1;
                }
                let queued = fx.node.applied_events.as_ref().map_or(0, |rx| rx.len());
                let (sm, outputs) = run.apply();
                let sent = fx.node.applied_events.as_ref().map_or(0, |rx| rx.len()) > queued;
                // Applied, not yet home. If the run sent watchers events, a
                // client may have seen past the copy: the read waits, and
                // runs on the state machine home. If not, it runs on the
                // copy, which the run did not touch. With no copy (no such
                // read came since the last run), it waits too.
                let waits = sent || !step.has_read_copy();
                let expected = if waits { contents(&sm) } else { before };
                assert_eq!(
                    stale_read(step, fx, expected),
                    !waits,
                    "member {}: a stale read ran on a copy older than the events sent, or waited beside a current one",
                    fx.node.id
                );
                fx.node.stale_reads_checked += u64::from(!waits);
                step.applied_elsewhere(sm, outputs, fx)?;
                assert!(
                    fx.node.stale_expected.is_none(),
                    "member {}: a stale read still waits with the state machine home",
                    fx.node.id
                );
                Ok(())
            });
            self.drain_events(i);
        }
    }

    /// Finishes the reads on views that are due: each answers from its
    /// view, and its count must match what the same view holds.
    fn finish_view_reads(&mut self) {
        let now = self.now;
        let (due, later): (Vec<ViewRead>, Vec<ViewRead>) = std::mem::take(&mut self.view_reads)
            .into_iter()
            .partition(|r| r.due <= now);
        self.view_reads = later;
        for r in due {
            let resp = r.view.range(&r.request);
            let mut counting = r.request.clone();
            counting.count_only = true;
            counting.limit = 0;
            let count = r.view.range(&counting).count;
            let mut all = r.request.clone();
            all.limit = 0;
            let total = r.view.range(&all).kvs.len() as i64;
            if (count, resp.count) != (total, total) && self.read_violation.is_none() {
                self.read_violation = Some(format!(
                    "node {}: a range on a view counted {} (count-only {count}) but holds {total} keys",
                    r.node, resp.count
                ));
            }
            self.view_reads_done += 1;
            self.events.push(Event::ReadDone {
                node: r.node,
                ctx: r.ctx,
                kvs: pairs(&resp),
                more: resp.more,
            });
        }
    }

    /// The first safety violation found, with the seed.
    pub fn violation(&self) -> Option<String> {
        self.inv
            .violation()
            .or(self.read_violation.as_deref())
            .or(self.snapshot_violation.as_deref())
            .or(self.event_history.violation())
            .map(|v| format!("{v} (at time {} ticks)", self.now / TICK_UNITS))
    }

    /// Runs until some member leads and a quorum knows it, or `max_ticks` pass.
    pub fn await_leader(&mut self, max_ticks: u64) -> Option<NodeId> {
        for _ in 0..max_ticks {
            if let Some(l) = self.leader() {
                let term = self.node(l).raft().map(|r| r.state().0);
                let voters = self
                    .node(l)
                    .raft()
                    .map(|r| r.conf_state().voters)
                    .unwrap_or_default();
                let knowing = voters
                    .iter()
                    .filter_map(|v| self.node(*v).raft())
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
            match n.raft() {
                Some(r) => {
                    let s = r.status();
                    out.push_str(&format!(
                        "\n    {}: {:?} term {} vote {} leader {} commit {} applied {} last {} voters {:?} learners {:?} matches {:?} {:?} applying {:?}",
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
                        s.match_indexes,
                        n.step,
                        n.applying,
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

/// Has `step` run a read that may be stale, which must see `expected`
/// (checked where it is served); true if it ran at once, false if it waits
/// for the state machine.
fn stale_read(step: &mut NodeStep, fx: &mut SimEffects<'_>, expected: Contents) -> bool {
    fx.node.stale_expected = Some(expected);
    step.read_stale(
        Read {
            ctx: Bytes::from_static(STALE_READ_CTX),
            request: Default::default(),
        },
        fx,
    );
    fx.node.stale_expected.is_none()
}
