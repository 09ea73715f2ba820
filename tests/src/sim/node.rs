//! One simulated member: the node's own [`Step`] (the `Ready` processing the
//! tokio driver runs) over in-memory storage and the node's KV state
//! machine, with the simulation's [`Effects`]: a seeded network, storage
//! that can tear on a crash, the invariant checker, and client answers.

use super::invariants::Invariants;
use super::kv::pairs;
use super::network::Network;
use flotilla_node::driver::{
    Applied, ApplyBounds, DriverError, Effects, INLINE_BYTES_MAX, Persisted, Step, apply_run,
    durable_before,
};
use flotilla_node::kv::Lessor;
use flotilla_node::kv::{KvConfig, KvOutput, KvView};
use flotilla_node::state::{AppliedEvents, Clock, NodeStateMachine, StateConfig};
use flotilla_proto::etcdserverpb::RangeRequest;
use flotilla_raft::{
    Bytes, Entry, LogIndex, MemStorage, Message, MessageBody, NodeId, Raft, Ready, Role, Snapshot,
    SnapshotEncoder, SnapshotWriter, Storage, StorageError, Term,
};
use rand::Rng;
use rand::rngs::SmallRng;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use tokio::sync::broadcast;

/// The step every simulated member runs.
pub type NodeStep = Step<MemStorage, NodeStateMachine, Proposal, Read>;

/// A client's write waiting for its entry: who proposed it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proposal {
    /// The client (its session id).
    pub client: u64,
    /// Its request's sequence number.
    pub seq: u64,
}

/// A read waiting to run once confirmed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Read {
    /// Names the read to whoever waits for it.
    pub ctx: Bytes,
    /// The Range to run.
    pub request: RangeRequest,
}

impl Read {
    /// Whether the API would serve it on the driver (one key) rather than
    /// on a frozen view off the driver (any range).
    fn on_driver(&self) -> bool {
        self.request.range_end.is_empty()
    }
}

/// Something a member did that clients may be waiting for.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// A member answered a proposal.
    Answered {
        /// The member.
        node: NodeId,
        /// Who proposed it.
        proposal: Proposal,
        /// The entry's index and the store's output, or why the outcome is
        /// unknown.
        outcome: Result<(LogIndex, KvOutput), DriverError>,
    },
    /// A confirmed read was served.
    ReadDone {
        /// The member.
        node: NodeId,
        /// The read's context.
        ctx: Bytes,
        /// The keys and values it returned, in key order.
        kvs: Vec<(String, String)>,
        /// Whether the range held more keys than its limit let through.
        more: bool,
    },
    /// A read could not be served.
    ReadFailed {
        /// The member.
        node: NodeId,
        /// The read's context.
        ctx: Bytes,
        /// Why.
        error: DriverError,
    },
}

impl Event {
    /// The value a one-key read returned.
    pub fn value(kvs: &[(String, String)]) -> Option<String> {
        kvs.first().map(|(_, v)| v.clone())
    }
}

/// A read running on a frozen view, off the driver (the API's read pool):
/// it finishes at `due`, whatever the member applies meanwhile.
#[derive(Debug)]
pub struct ViewRead {
    /// When it finishes, in virtual time units.
    pub due: u64,
    /// The member.
    pub node: NodeId,
    /// The read's context.
    pub ctx: Bytes,
    /// The store as the read was confirmed.
    pub view: KvView,
    /// The Range.
    pub request: RangeRequest,
}

/// A snapshot being written off the driver, as the tokio driver's
/// snapshot thread does: the state frozen and the meta prepared when the
/// snapshot was due; the encoding and the storage's writer run when `due`
/// comes, and only then is the log compacted (`Raft::compact_written`).
/// Meanwhile the member applies on, may install a leader's snapshot, or
/// crash (the write is then lost).
pub struct SnapshotWrite {
    /// When the write finishes, in virtual time units.
    pub due: u64,
    /// Position and configuration (the data follows from `encode`).
    pub snapshot: Snapshot,
    /// The frozen state's encoder.
    encode: SnapshotEncoder,
    /// The storage's writer.
    writer: SnapshotWriter,
    /// The store's revision and its keys and values when it was frozen.
    pub frozen: Contents,
}

impl std::fmt::Debug for SnapshotWrite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotWrite")
            .field("due", &self.due)
            .field("index", &self.snapshot.meta.index)
            .finish_non_exhaustive()
    }
}

impl SnapshotWrite {
    /// Encodes the frozen state and has the storage's writer store it (the
    /// writing thread's whole work); returns the snapshot written.
    pub fn write(self) -> Result<(Snapshot, Contents), StorageError> {
        let mut snapshot = self.snapshot;
        let mut data = Vec::new();
        (self.encode)(&mut data)
            .map_err(|e| StorageError::Fatal(format!("encoding a snapshot: {e}")))?;
        snapshot.data = data.into();
        let stored = snapshot.data.clone();
        (self.writer)(
            &snapshot.meta,
            Box::new(move |sink| sink.write_all(&stored)),
        )?;
        Ok((snapshot, self.frozen))
    }
}

/// A run of heavy entries applying off the member's step, as on the
/// tokio driver's apply thread: the state machine left with them and
/// comes back at `due`; meanwhile the member ticks, steps messages and
/// queues newly committed entries. A crash loses it with the process.
pub struct DeferredApply {
    /// When the run finishes, in virtual time units.
    pub due: u64,
    /// The state machine, away from the step.
    sm: NodeStateMachine,
    /// The run.
    entries: Vec<Entry>,
    /// The store as the state machine left: what a stale read sees
    /// meanwhile (the step's copy of it).
    pub before: Contents,
}

impl std::fmt::Debug for DeferredApply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeferredApply")
            .field("due", &self.due)
            .field("first", &self.entries.first().map(|e| e.index))
            .field("entries", &self.entries.len())
            .finish()
    }
}

impl DeferredApply {
    /// Applies the run (the apply thread's whole work): the state machine
    /// and the outputs, for [`Step::applied_elsewhere`].
    pub fn apply(mut self) -> Applied<NodeStateMachine> {
        let outputs = apply_run(&mut self.sm, &self.entries);
        (self.sm, outputs)
    }
}

/// The bounds of a simulated member's queue of entries waiting to apply:
/// small, so that runs are cut and the core holds entries back.
pub fn apply_bounds() -> ApplyBounds {
    ApplyBounds {
        queue_entries_max: 8,
        queue_bytes_max: 4096,
        run_entries_max: 4,
    }
}

/// Names the stale read the simulation checks as a run of heavy entries
/// comes home (see [`SimNode::stale_expected`]).
pub const STALE_READ_CTX: &[u8] = b"stale-read";

/// A store's revision and every key with its value.
pub type Contents = (i64, Vec<(String, String)>);

/// The whole key space of `sm`'s store at its revision: the revision and
/// every key with its value.
pub fn contents(sm: &NodeStateMachine) -> Contents {
    let all = RangeRequest {
        key: vec![0],
        range_end: vec![0],
        ..Default::default()
    };
    let resp = sm
        .kv()
        .range(&all)
        .expect("a whole-key-space range is valid");
    (sm.kv().revision(), pairs(&resp))
}

/// One simulated member.
#[derive(Debug)]
pub struct SimNode {
    /// Its id.
    pub id: NodeId,
    /// The running step (core, state machine, waiters), or None while
    /// crashed.
    pub step: Option<NodeStep>,
    /// What survives a crash.
    pub(super) stored: Option<MemStorage>,
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
    /// The snapshot being written off the driver, if any (one at a time).
    pub writing: Option<SnapshotWrite>,
    /// Snapshot writes a crash cut short (nothing reached the storage).
    pub snapshot_writes_lost: u64,
    /// The lessor its state machine keeps (the lease service's and the
    /// expiry loop's), while running.
    pub lessor: Option<Arc<Mutex<Lessor>>>,
    /// What its live watchers would be sent: each applied entry's events.
    pub applied_events: Option<broadcast::Receiver<Arc<AppliedEvents>>>,
    /// The store's revision its live events have reached (reset when it
    /// restores a snapshot).
    pub event_revision: i64,
    /// The run of heavy entries applying off the step, if any.
    pub applying: Option<DeferredApply>,
    /// Runs of heavy entries handed off the step: applied at once, and
    /// deferred to a later time.
    pub applies_at_once: u64,
    /// See `applies_at_once`.
    pub applies_deferred: u64,
    /// What the stale read under way must see: the store before the run
    /// away (`DeferredApply::before`) when the step kept a copy, else the
    /// store after the run.
    pub stale_expected: Option<Contents>,
    /// Stale reads served on the step's copy while a run applied
    /// elsewhere, and checked (those that waited for the state machine
    /// are checked too, not counted).
    pub stale_reads_checked: u64,
    /// Its writes whose sync is under way, oldest first (the run defers
    /// syncs, [`Persisted::Syncing`]).
    pub syncing: VecDeque<PendingSync>,
    /// Entries up to here survive a crash even while a sync of theirs is
    /// under way: a new term or vote syncs the log before it is written,
    /// as the disk storage does.
    pub sync_floor: LogIndex,
    /// Deferred syncs finished.
    pub syncs_deferred: u64,
    /// Writes of a run that defers syncs which this member, a follower
    /// with no sync under way, synced at once, as the driver does on a
    /// fast disk.
    pub syncs_inline: u64,
    /// Entries crashes took away before their sync finished.
    pub entries_lost_unsynced: u64,
    /// Whether it plays the previous release
    /// ([`super::Cluster::without_peer_proposals`]), which names no
    /// snapshot in its answers to snapshot chunks.
    pub previous_release: bool,
}

/// A write whose sync is under way.
#[derive(Clone, Copy, Debug)]
pub struct PendingSync {
    /// The step's number for it.
    pub write: u64,
    /// Its first entry.
    pub first: LogIndex,
    /// When the sync finishes (in order: never before an earlier one's).
    pub due: u64,
}

impl SimNode {
    /// The machine goes down: of the entries written but not yet synced,
    /// a random suffix never reached the disk (none, some or all of them).
    pub(super) fn lose_unsynced(
        &mut self,
        storage: &mut MemStorage,
        rng: &mut SmallRng,
        inv: &mut Invariants,
    ) {
        let Some(first) = self.syncing.iter().map(|s| s.first).min() else {
            return;
        };
        self.syncing.clear();
        let from = first.max(self.sync_floor + 1);
        let last = storage.last_index();
        if from > last {
            return;
        }
        // Half the time all of it is lost, the case that exposes an
        // acknowledgement or a count that ran ahead of a sync.
        let cut = if rng.random_bool(0.5) {
            from
        } else {
            rng.random_range(from..=last + 1)
        };
        let commit = storage.hard_state().commit;
        storage.discard_from(cut);
        self.entries_lost_unsynced += storage.last_index().abs_diff(last);
        if storage.hard_state().commit < commit {
            inv.on_commit_lost(self.id, storage.hard_state().commit);
        }
    }

    /// The member goes down: a snapshot being written on its thread is
    /// lost with the process.
    pub(super) fn lose_snapshot_write(&mut self) {
        if self.writing.take().is_some() {
            self.snapshot_writes_lost += 1;
        }
        self.applying = None;
    }
}

impl SimNode {
    /// Whether the member is running.
    pub fn is_up(&self) -> bool {
        self.step.is_some()
    }

    /// Its core, if running.
    pub fn raft(&self) -> Option<&Raft<MemStorage>> {
        self.step.as_ref().map(|s| s.raft())
    }

    /// Role, if running.
    pub fn role(&self) -> Option<Role> {
        self.raft().map(|r| r.status().soft_state.role)
    }

    /// Highest index applied in this life (0 while down).
    pub fn applied(&self) -> LogIndex {
        self.step.as_ref().map_or(0, |s| s.applied())
    }

    /// The state machine, while up and not applying a run elsewhere.
    pub fn sm(&self) -> Option<&NodeStateMachine> {
        self.step.as_ref().and_then(|s| s.sm())
    }

    /// The value of `key` in its store, as applied (None while down or
    /// applying elsewhere).
    pub fn get(&self, key: &str) -> Option<String> {
        let resp = self
            .sm()?
            .kv()
            .range(&super::kv::get_request(key))
            .expect("a one-key range is valid");
        Event::value(&pairs(&resp))
    }
}

/// The KV store's configuration in the simulation: a short history (it
/// compacts itself every few writes, so reads and snapshots meet
/// compaction).
pub fn state_config() -> StateConfig {
    StateConfig {
        kv: KvConfig {
            retain_revisions: 16,
            ..KvConfig::default()
        },
        ..StateConfig::default()
    }
}

/// A state machine holding `storage`'s snapshot, its lease timers on
/// `clock`, and its lessor.
pub fn restored(storage: &MemStorage, clock: Clock) -> (NodeStateMachine, Arc<Mutex<Lessor>>) {
    let (mut sm, lessor) = NodeStateMachine::new(state_config());
    sm.set_clock(clock);
    let snap = storage.snapshot().expect("memory storage does not fail");
    if snap.meta.index > 0 {
        flotilla_node::driver::StateMachine::restore(&mut sm, &snap).expect("snapshots restore");
    }
    (sm, lessor)
}

/// What a simulated crash part-way through persisting returns: the step
/// stops there, as the process would.
pub(super) const CRASHED: &str = "simulated crash while persisting";

/// The simulation's effects for one member's step, borrowed from the
/// cluster for one call.
pub(super) struct SimEffects<'a> {
    pub node: &'a mut SimNode,
    pub now: u64,
    pub net: &'a mut Network,
    pub rng: &'a mut SmallRng,
    pub inv: &'a mut Invariants,
    pub check_invariants: bool,
    pub events: &'a mut Vec<Event>,
    pub committed_log: &'a mut Vec<(Term, Bytes)>,
    pub view_reads: &'a mut Vec<ViewRead>,
    /// Most virtual time units a read spends on its view.
    pub view_delay_max: u64,
    /// Most virtual time units a snapshot spends being written.
    pub snapshot_write_delay_max: u64,
    /// Most virtual time units a run of heavy entries spends applying off
    /// the step (0: always at once).
    pub apply_delay_max: u64,
    /// Whether writes defer their sync, and the most virtual time units a
    /// sync takes.
    pub deferred_sync: bool,
    /// See `deferred_sync`.
    pub sync_delay_max: u64,
    /// Whether, in a run that defers syncs, this member (as a follower,
    /// with no sync under way) may sync a small write at once, as the
    /// driver does when the disk has been fast: not on the slow disk.
    pub inline_sync: bool,
}

impl SimEffects<'_> {
    /// The checks of a `Ready` about to be written, and the committed
    /// entries it hands out (committed whether or not they apply).
    fn check_ready(
        &mut self,
        storage: &MemStorage,
        ready: &Ready,
        entries: &[flotilla_raft::Entry],
    ) {
        if self.check_invariants {
            self.inv.on_persist(self.node.id, storage, entries);
            self.inv
                .on_committed(self.node.id, &ready.committed_entries);
        }
    }

    /// After the `Ready` is durable: leader checks, and the entries about
    /// to apply.
    fn after_persist(&mut self, raft: &Raft<MemStorage>, ready: &Ready) {
        let id = self.node.id;
        if let Some(soft) = ready.soft_state
            && soft.role == Role::Leader
        {
            let term = raft.status().hard_state.term;
            self.inv.on_leader(id, term);
            if self.check_invariants {
                self.inv.on_leader_log(id, term, raft.storage());
            }
        }
        for entry in &ready.committed_entries {
            self.record_applied(entry);
        }
    }

    /// Records that the member applied `entry`: the apply order, and the
    /// committed log.
    fn record_applied(&mut self, entry: &Entry) {
        if self.check_invariants {
            self.inv.on_apply(self.node.id, entry);
        }
        if entry.index as usize > self.committed_log.len() {
            self.committed_log.push((entry.term, entry.data.clone()));
        }
    }

    /// The member crashes part-way through persisting: of what the `Ready`
    /// asked to persist, only a prefix reached the disk (entries not yet
    /// synced vanish), and nothing was sent but what a leader sends first.
    /// The committed entries that were durable before it
    /// ([`durable_before`]) were applied (and their proposers answered)
    /// before persisting began: they are recorded as applied.
    fn tear(&mut self, raft: &mut Raft<MemStorage>, ready: &Ready) -> StorageError {
        self.node.torn_crashes += 1;
        if self.check_invariants {
            self.inv
                .on_committed(self.node.id, &ready.committed_entries);
        }
        for entry in &ready.committed_entries[..durable_before(ready)] {
            self.record_applied(entry);
        }
        if let Some(snap) = &ready.snapshot {
            if self.rng.random_bool(0.5) {
                return StorageError::Fatal(CRASHED.into());
            }
            raft.storage_mut()
                .apply_snapshot(snap.clone())
                .expect("in-memory storage does not fail");
        }
        let kept = self.rng.random_range(0..=ready.entries.len());
        if self.check_invariants {
            self.inv
                .on_persist(self.node.id, raft.storage(), &ready.entries[..kept]);
        }
        // The hard state is written after the entries, so it can only have
        // reached the disk if every entry did.
        let hard_state = if kept == ready.entries.len() && self.rng.random_bool(0.5) {
            ready.hard_state
        } else {
            None
        };
        raft.storage_mut()
            .save(hard_state.as_ref(), &ready.entries[..kept])
            .expect("in-memory storage does not fail");
        StorageError::Fatal(CRASHED.into())
    }
}

impl Effects<MemStorage, NodeStateMachine> for SimEffects<'_> {
    type Proposal = Proposal;
    type Read = Read;

    /// In a run that defers syncs, the entries are written (a crash may
    /// take a suffix of them away, [`SimNode::lose_unsynced`]) and their
    /// sync finishes a random time later, in order.
    fn persist(
        &mut self,
        raft: &mut Raft<MemStorage>,
        ready: &Ready,
        write: u64,
    ) -> Result<Persisted, StorageError> {
        if self.node.crash_mid_persist && ready.must_persist() {
            return Err(self.tear(raft, ready));
        }
        self.check_ready(raft.storage(), ready, &ready.entries);
        let before = raft.storage().hard_state();
        let last_before = raft.storage().last_index();
        if ready
            .hard_state
            .is_some_and(|hs| (hs.term, hs.vote) != (before.term, before.vote))
        {
            // The storage syncs what it wrote before a new term or vote.
            self.node.sync_floor = raft.storage().last_index();
        }
        raft.storage_mut()
            .save(ready.hard_state.as_ref(), &ready.entries)
            .expect("in-memory storage does not fail");
        self.after_persist(raft, ready);
        let Some(first) = ready.entries.first() else {
            return Ok(Persisted::Durable);
        };
        if !self.deferred_sync {
            return Ok(Persisted::Durable);
        }
        if first.index <= last_before {
            // A write that cuts the log is synced at once, as the disk
            // storage does, and with it everything written before: the
            // step then counts it durable while earlier syncs are still
            // to report.
            self.node.sync_floor = raft.storage().last_index();
            return Ok(Persisted::Durable);
        }
        if self.inline_sync
            && raft.soft_state().role == Role::Follower
            && self.node.syncing.is_empty()
            && ready.entries.iter().map(Entry::size_bytes).sum::<u64>() <= INLINE_BYTES_MAX
            && self.rng.random_bool(0.5)
        {
            // The driver's choice on a fast disk (`driver/log_sync.rs`),
            // here at random: synced before the step goes on.
            self.node.sync_floor = raft.storage().last_index();
            self.node.syncs_inline += 1;
            return Ok(Persisted::Durable);
        }
        let due = self.now + self.rng.random_range(0..=self.sync_delay_max);
        let due = self.node.syncing.back().map_or(due, |s| s.due.max(due));
        self.node.syncing.push_back(PendingSync {
            write,
            first: first.index,
            due,
        });
        Ok(Persisted::Syncing)
    }

    fn install_snapshot(
        &mut self,
        raft: &mut Raft<MemStorage>,
        sm: &mut NodeStateMachine,
        snapshot: &Snapshot,
        ready: &Ready,
    ) -> Result<(), StorageError> {
        if self.node.crash_mid_persist {
            return Err(self.tear(raft, ready));
        }
        raft.storage_mut()
            .apply_snapshot(snapshot.clone())
            .expect("in-memory storage does not fail");
        self.check_ready(raft.storage(), ready, &ready.entries);
        raft.storage_mut()
            .save(ready.hard_state.as_ref(), &ready.entries)
            .expect("in-memory storage does not fail");
        // Installing is synchronous: it syncs everything written before.
        self.node.sync_floor = raft.storage().last_index();
        flotilla_node::driver::StateMachine::restore(sm, snapshot)
            .map_err(|e| StorageError::Fatal(format!("cannot restore snapshot: {e}")))?;
        self.node.event_revision = sm.kv().revision();
        self.node.snapshots_installed += 1;
        self.node.snapshot_bytes_buffered = 0;
        self.inv
            .on_snapshot(self.node.id, snapshot.meta.index, snapshot.meta.term);
        self.after_persist(raft, ready);
        Ok(())
    }

    fn send(&mut self, messages: Vec<Message>) {
        for mut m in messages {
            if self.node.previous_release
                && let MessageBody::InstallSnapshotResponse { snapshot_index, .. } = &mut m.body
            {
                *snapshot_index = 0;
            }
            note_sent(&mut self.node.snapshot_bytes_buffered, &m);
            self.net.send(m, self.now, self.rng);
        }
    }

    fn answer(&mut self, proposal: Proposal, outcome: Result<(LogIndex, KvOutput), DriverError>) {
        self.events.push(Event::Answered {
            node: self.node.id,
            proposal,
            outcome,
        });
    }

    /// As the API: a one-key Range runs here, on the driver; any other is
    /// checked here and handed a frozen view, on which it runs later (a
    /// random delay) while the member goes on applying.
    fn serve(&mut self, read: Read, sm: Result<&NodeStateMachine, DriverError>) {
        let node = self.node.id;
        if read.ctx == STALE_READ_CTX {
            let sm = sm.expect("a stale read runs on the spot");
            let expected = self
                .node
                .stale_expected
                .take()
                .expect("a stale read is checked against the store as its state machine left");
            assert_eq!(
                contents(sm),
                expected,
                "member {node}: a stale read while a run applied elsewhere saw another state than the one before the run"
            );
            return;
        }
        let sm = match sm {
            Ok(sm) => sm,
            Err(error) => {
                self.events.push(Event::ReadFailed {
                    node,
                    ctx: read.ctx,
                    error,
                });
                return;
            }
        };
        if read.on_driver() {
            let resp = sm
                .kv()
                .range(&read.request)
                .expect("the workload's ranges are valid");
            self.events.push(Event::ReadDone {
                node,
                ctx: read.ctx,
                kvs: pairs(&resp),
                more: resp.more,
            });
            return;
        }
        let view = sm
            .kv()
            .range_view(&read.request)
            .expect("the workload's ranges are valid");
        let due = self.now + self.rng.random_range(0..=self.view_delay_max);
        self.view_reads.push(ViewRead {
            due,
            node,
            ctx: read.ctx,
            view,
            request: read.request,
        });
    }

    fn snapshot_due(
        &mut self,
        raft: &mut Raft<MemStorage>,
        sm: &NodeStateMachine,
    ) -> Result<(), StorageError> {
        // As the driver: one snapshot at a time; the core asks again after
        // later `Ready`s.
        if self.node.writing.is_some() {
            return Ok(());
        }
        let encode = flotilla_node::driver::StateMachine::freeze(sm);
        let Some(writer) = raft.storage().snapshot_writer() else {
            let mut data = Vec::new();
            encode(&mut data)
                .map_err(|e| StorageError::Fatal(format!("encoding a snapshot: {e}")))?;
            raft.compact(data.into())?;
            self.node.snapshots_taken += 1;
            return Ok(());
        };
        let snapshot = raft.prepare_snapshot(Bytes::new())?;
        let due = match self.snapshot_write_delay_max {
            0 => self.now,
            max => self.now + self.rng.random_range(0..=max),
        };
        self.node.writing = Some(SnapshotWrite {
            due,
            snapshot,
            encode,
            writer,
            frozen: contents(sm),
        });
        Ok(())
    }

    /// At once, or (the seeded choice, a third of the time) later: at a
    /// random time within `apply_delay_max`, while the member goes on (see
    /// [`DeferredApply`]). Deferring every run would slow the clients
    /// down enough to change what the runs are about.
    fn apply_elsewhere(
        &mut self,
        sm: NodeStateMachine,
        entries: Vec<Entry>,
    ) -> Option<Applied<NodeStateMachine>> {
        assert!(
            self.node.applying.is_none(),
            "one run away at a time (seed's member {})",
            self.node.id
        );
        if self.apply_delay_max == 0 || self.rng.random_bool(2.0 / 3.0) {
            self.node.applies_at_once += 1;
            let mut sm = sm;
            let outputs = apply_run(&mut sm, &entries);
            return Some((sm, outputs));
        }
        self.node.applies_deferred += 1;
        self.node.applying = Some(DeferredApply {
            due: self.now + self.rng.random_range(1..=self.apply_delay_max),
            before: contents(&sm),
            sm,
            entries,
        });
        None
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
