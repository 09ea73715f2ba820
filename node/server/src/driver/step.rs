//! The driver's `Ready` processing as a sans-IO step: the Raft core, the
//! state machine and everything waiting on them (proposals by index and
//! term, reads awaiting confirmation, confirmed reads awaiting their index),
//! with every effect — persisting, sending, answering, snapshotting — done
//! through an [`Effects`] the caller passes in. No runtime, no threads, no
//! clock: the tokio driver ([`super::Driver`]) and the seeded simulation in
//! `tests/` run this same code.
//!
//! [`Step::process_one`] follows the core's driver contract for one
//! `Ready`:
//!
//! 1. a leader whose term is durable sends first (`messages_first`) when
//!    it has entries to write or to send (otherwise its answers go
//!    first); the
//!    committed entries before the `Ready`'s first new entry, written by
//!    earlier `Ready`s, apply (step 4 early), so that their answers leave
//!    (on the callers' threads, in the node) while this member writes the
//!    new ones, not after;
//! 2. persist: [`Effects::persist`], or [`Effects::install_snapshot`] for a
//!    `Ready` that carries the leader's snapshot;
//! 3. send the rest, but when the entries' sync is deferred
//!    ([`Persisted::Syncing`]) or an earlier one is still under way, the
//!    append answers and votes wait for it ([`Step::synced`]);
//! 4. apply: the snapshot jumps the applied index, then each committed
//!    entry, answering its proposal if the entry is of the proposal's term;
//! 5. read states confirm reads, in order; advance the core;
//! 6. serve confirmed reads whose index is applied; after a role change,
//!    answer what a former leader can no longer decide; offer a due
//!    snapshot ([`Effects::snapshot_due`]).
//!
//! # Heavy entries apply elsewhere
//!
//! Most entries apply in microseconds, inline in step 4. A few take
//! seconds (a DeleteRange over a large range, a compaction; the state
//! machine says which: [`StateMachine::is_heavy`]). Applied inline, such an
//! entry would stall the member's ticks and answers for as long, and
//! members that apply it at staggered times lose their leader. So the
//! committed entries go through a bounded queue: light ones apply inline
//! as ever; when the next one is heavy, the state machine itself is handed
//! to [`Effects::apply_elsewhere`] with a run of entries starting at it
//! (the tokio driver applies them on a thread of its own), and until it
//! comes back ([`Step::applied_elsewhere`]) the step goes on with
//! everything that does not need it: persisting, sending, confirming
//! reads, queueing newly committed entries. When the queue is full the
//! core holds further committed entries back ([`Raft::hold_committed`]).
//! What needs the state machine waits for it: reads to serve (confirmed
//! or local; a read that may be stale runs at once on a copy taken as the
//! state machine left, where it offers one: [`Step::read_stale`]), and
//! snapshots of our own (the core counts entries as applied
//! when it hands them out, so a snapshot is taken only with the state
//! machine home and the queue empty, when both agree). A leader's snapshot
//! to install waits too, and so does the whole member: no `Ready` is taken
//! until the state machine is home ([`Step::waits_for_state_machine`]; the
//! caller waits for it). Install is rare, and only on a member far behind,
//! which the quorum does not wait for; not taking that `Ready` while going
//! on would leave the core's commit index (raised by the snapshot)
//! unsaved and its messages unsent for as long.
//!
//! At each state change it asserts what the contract guarantees: the
//! applied index moves by one per entry (or forward by a snapshot), and a
//! confirmed read is served only once its index is applied. Reads are
//! served in the order they were confirmed, which is not always the order
//! of their indexes: a follower's confirmations cross a network that may
//! reorder them, and a leader answers a read from its lease at once while
//! an earlier one (at a lower index) still waits for its heartbeat round.
//! Either way each index was the commit index after the read arrived.

use super::error::DriverError;
use super::peer_propose::{
    BATCH_COMMANDS_MAX, Outcome, PeerProposalFilter, PeerProposals, PeerSupport,
};
use super::state_machine::StateMachine;
use flotilla_raft::{
    Bytes, ConfChangeData, Entry, EntryKind, LogIndex, Message, MessageBody, NodeId, ProposeError,
    ProposeRefusal, Raft, ReadError, ReadState, Ready, Role, Snapshot, Storage, StorageError, Term,
};
use std::collections::{BTreeMap, HashMap, VecDeque};

/// What a [`Step`] does to the world, and how it answers the callers
/// waiting on it. The tokio driver writes to disk, sends on the transport
/// and answers on channels; the simulation writes to memory, a simulated
/// network and a client history.
pub trait Effects<S: Storage, M: StateMachine> {
    /// A proposer waiting for its entry to be applied.
    type Proposal;
    /// A read waiting to run against the state machine.
    type Read;

    /// Persists the `Ready`'s hard state and entries (it carries no
    /// snapshot), as the step's write number `write`. Either durably
    /// ([`Persisted::Durable`]), or written with their sync deferred
    /// ([`Persisted::Syncing`]): the effects then sync them beside the
    /// step and call [`Step::synced`] with `write` once they are durable.
    /// An error stops the member.
    fn persist(
        &mut self,
        raft: &mut Raft<S>,
        ready: &Ready,
        write: u64,
    ) -> Result<Persisted, StorageError>;

    /// Persists the leader's `snapshot` (then the `Ready`'s hard state and
    /// entries) and restores the state machine from it.
    fn install_snapshot(
        &mut self,
        raft: &mut Raft<S>,
        sm: &mut M,
        snapshot: &Snapshot,
        ready: &Ready,
    ) -> Result<(), StorageError>;

    /// Sends messages to peers (never blocks; may drop).
    fn send(&mut self, messages: Vec<Message>);

    /// Answers a proposal: its entry's index and what applying it returned,
    /// or why its outcome cannot be told.
    fn answer(
        &mut self,
        proposal: Self::Proposal,
        outcome: Result<(LogIndex, M::Output), DriverError>,
    );

    /// Runs a read against the state machine, confirmed and applied up to
    /// its read index, or tells it why it cannot run.
    fn serve(&mut self, read: Self::Read, sm: Result<&M, DriverError>);

    /// The core asks for a snapshot (its log passed the configured size):
    /// take one now, later, or not at all.
    fn snapshot_due(&mut self, raft: &mut Raft<S>, sm: &M) -> Result<(), StorageError>;

    /// Applies `entries` (consecutive committed entries, the first one
    /// heavy) to `sm` elsewhere, with [`apply_run`]: `Some` with the state
    /// machine and the outputs when done at once, `None` when it comes
    /// back later through [`Step::applied_elsewhere`]. This default
    /// applies them at once, here.
    fn apply_elsewhere(&mut self, mut sm: M, entries: Vec<Entry>) -> Option<Applied<M>> {
        let outputs = apply_run(&mut sm, &entries);
        Some((sm, outputs))
    }

    /// Takes the copy of the state machine that reads ran on while it was
    /// away ([`StateMachine::read_copy`]), no longer needed now it is
    /// home. Dropping the copy frees about as much as the run changed
    /// (milliseconds after a large delete); this default drops it here.
    fn drop_read_copy(&mut self, copy: M) {
        drop(copy);
    }
}

/// How [`Effects::persist`] left a `Ready`'s entries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Persisted {
    /// Durable (or nothing needed writing).
    Durable,
    /// Written, their sync under way ([`flotilla_raft::Storage::save_deferred`]).
    Syncing,
}

/// A write whose sync is under way, with the messages that wait for it.
#[derive(Debug)]
struct Unsynced {
    write: u64,
    /// Its last entry.
    last: (LogIndex, Term),
    /// Messages that promise it durable (acknowledgements, votes), and
    /// those of later `Ready`s that came while it was syncing.
    messages: Vec<Message>,
}

/// Whether `m` waits for the syncs of the writes before it: an append's
/// answer (a match index promises the log durable) and a vote. The rest
/// promise nothing and go at once: heartbeat answers above all, so that a
/// slow disk delays commits but not the leader's check-quorum, leases and
/// read confirmations.
fn waits_for_sync(m: &Message) -> bool {
    matches!(
        m.body,
        MessageBody::AppendEntriesResponse { .. } | MessageBody::RequestVoteResponse { .. }
    )
}

/// A state machine back from [`Effects::apply_elsewhere`], with what
/// applying each entry of its run returned (`None` for an entry that
/// carries no command).
pub type Applied<M> = (M, Vec<Option<<M as StateMachine>::Output>>);

/// Applies one committed entry to `sm`: a command, a membership change
/// with its context, or nothing for a no-op.
fn apply_entry<M: StateMachine>(sm: &mut M, entry: &Entry) -> Option<M::Output> {
    match entry.kind {
        EntryKind::Normal => Some(sm.apply(entry.index, &entry.data)),
        EntryKind::ConfChange => {
            // The core decoded the same bytes when the entry was
            // appended; a malformed one never gets this far.
            let context = ConfChangeData::decode(&entry.data)
                .map(|d| d.context)
                .unwrap_or_default();
            Some(sm.apply_conf_change(entry.index, &context))
        }
        EntryKind::Noop => None,
    }
}

/// Applies a run of consecutive committed entries to `sm`, in order, as
/// the step does inline: what an [`Effects::apply_elsewhere`] runs.
pub fn apply_run<M: StateMachine>(sm: &mut M, entries: &[Entry]) -> Vec<Option<M::Output>> {
    entries.iter().map(|e| apply_entry(sm, e)).collect()
}

/// How many of `ready`'s committed entries were written before it: those
/// before its first new entry (earlier `Ready`s persisted them, perhaps
/// with their sync still under way; committed, they are durable on a
/// quorum), none when it installs a snapshot. [`Step`] applies them before it persists the
/// `Ready`.
pub fn durable_before(ready: &Ready) -> usize {
    if ready.snapshot.is_some() {
        return 0;
    }
    let first_new = ready.entries.first().map_or(LogIndex::MAX, |e| e.index);
    ready
        .committed_entries
        .partition_point(|e| e.index < first_new)
}

/// Bounds of the queue of committed entries waiting to be applied while
/// the state machine is away ([`Effects::apply_elsewhere`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ApplyBounds {
    /// Entries queued before the core holds back further committed ones
    /// (a `Ready` may bring up to the core's
    /// `max_committed_bytes_per_ready` past it).
    pub queue_entries_max: usize,
    /// Bytes of entries queued before the core holds back further ones.
    pub queue_bytes_max: u64,
    /// Most entries handed to [`Effects::apply_elsewhere`] at once (the
    /// heavy one first, then those queued after it).
    pub run_entries_max: usize,
}

impl Default for ApplyBounds {
    /// A queue that holds a few seconds of ordinary writes; what comes
    /// back applies inline, so the entry bound also bounds that stall.
    fn default() -> Self {
        ApplyBounds {
            queue_entries_max: 4096,
            queue_bytes_max: 64 << 20,
            run_entries_max: 1024,
        }
    }
}

/// Whether a leader's message carries more than its commit index and
/// lease: entries, a snapshot, or a hand-over of leadership.
pub(super) fn carries_data(m: &Message) -> bool {
    match &m.body {
        MessageBody::AppendEntries { entries, .. } => !entries.is_empty(),
        MessageBody::InstallSnapshot { .. } | MessageBody::TimeoutNow => true,
        _ => false,
    }
}

/// A `Ready` taken from the core by [`Step::begin_one`], waiting for
/// [`Step::finish_one`].
#[derive(Debug)]
pub struct Taken {
    ready: Ready,
    sent_first: bool,
    answers_first: bool,
}

impl Taken {
    /// Whether it is a leader's `Ready` with nothing to write and messages
    /// that carry no entries (mostly its new commit index): its committed
    /// entries apply, and their proposers are answered, before the
    /// messages are sent. A caller whose answers leave through other
    /// tasks may let them go before it hands the messages on (the tokio
    /// driver does).
    pub fn answers_first(&self) -> bool {
        self.answers_first
    }

    /// Whether messages were sent before persisting: a leader's, when it
    /// has entries to write or its messages carry entries. (A leader that
    /// sends first kept its term and vote, so without entries it has at
    /// most a new commit index to record, which the storage need not
    /// write.)
    pub fn sent_first(&self) -> bool {
        self.sent_first
    }
}

/// A read sent for confirmation.
struct Confirming<R> {
    /// The tick it was sent at.
    at: u64,
    read: R,
}

/// The core, the state machine and their waiters; see the module docs.
pub struct Step<S: Storage, M: StateMachine, P, R> {
    raft: Raft<S>,
    /// The state machine; `None` while [`Effects::apply_elsewhere`] has it.
    sm: Option<M>,
    /// index → (term, proposer).
    proposals: BTreeMap<LogIndex, (Term, P)>,
    /// Reads sent for confirmation, by context id.
    confirming: HashMap<u64, Confirming<R>>,
    /// Confirmed reads waiting for their index to be applied, in order.
    confirmed: VecDeque<(LogIndex, R)>,
    /// Reads of the state machine as it is, waiting for it to come home.
    local_reads: Vec<R>,
    /// While the state machine is away: its [`StateMachine::read_copy`]
    /// as it left, for reads that may be stale ([`Self::read_stale`]).
    copy: Option<M>,
    /// Whether a read that may be stale came since the state machine last
    /// left: only then does it leave a copy (holding one makes the run
    /// copy what it changes, about a tenth longer for a large delete).
    stale_read_seen: bool,
    /// Reads served on `copy`.
    stale_reads: u64,
    next_read_id: u64,
    /// The highest index applied to the state machine.
    applied: LogIndex,
    /// The highest index the core handed out (applied, queued or away).
    handed: LogIndex,
    /// Committed entries handed out and not yet applied, in order: empty
    /// whenever the state machine is home after a call returns.
    queue: VecDeque<Entry>,
    /// Bytes of `queue`'s entries.
    queue_bytes: u64,
    /// The (index, term) of each entry being applied elsewhere, in order.
    away: Vec<(LogIndex, Term)>,
    bounds: ApplyBounds,
    /// On a follower, its proposals on their way to the leader through
    /// the peer stream (see `peer_propose`).
    peer: PeerProposals<P>,
    /// On a leader, how it takes a follower's command; `None`: this member
    /// takes no proposals from peers, and makes none.
    peer_filter: Option<PeerProposalFilter>,
    /// On a follower, whether a leader takes proposals from peers.
    peer_leader_takes: Option<PeerSupport>,
    /// Writes whose sync is under way, oldest first.
    unsynced: VecDeque<Unsynced>,
    /// The number the next write gets.
    next_write: u64,
}

/// What a leader made of a follower's batch of proposals
/// ([`Step::accept_peer_proposal`]), for its metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PeerBatch {
    /// Commands appended.
    pub accepted: u64,
    /// Commands refused (not appended).
    pub refused: u64,
    /// Whether the core refused one (rather than the step's bounds or the
    /// filter).
    pub core_refused: bool,
}

impl<S: Storage, M: StateMachine, P, R> std::fmt::Debug for Step<S, M, P, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Step")
            .field("id", &self.raft.id())
            .field("applied", &self.applied)
            .field("queued", &self.queue.len())
            .field("away", &self.away.len())
            .field("proposals", &self.proposals.len())
            .field("via_leader", &self.peer.len())
            .field("reads", &self.pending_reads())
            .field("syncing", &self.unsynced.len())
            .finish()
    }
}

impl<S: Storage, M: StateMachine, P, R> Step<S, M, P, R> {
    /// A step over `raft`, whose state machine `sm` holds the state of the
    /// storage's snapshot (restore it before calling).
    pub fn new(raft: Raft<S>, sm: M) -> Self {
        let applied = raft.status().applied;
        Step {
            raft,
            sm: Some(sm),
            proposals: BTreeMap::new(),
            confirming: HashMap::new(),
            confirmed: VecDeque::new(),
            local_reads: Vec::new(),
            copy: None,
            stale_read_seen: false,
            stale_reads: 0,
            next_read_id: 0,
            applied,
            handed: applied,
            queue: VecDeque::new(),
            queue_bytes: 0,
            away: Vec::new(),
            bounds: ApplyBounds::default(),
            peer: PeerProposals::default(),
            peer_filter: None,
            peer_leader_takes: None,
            unsynced: VecDeque::new(),
            next_write: 0,
        }
    }

    /// This step taking its followers' proposals as leader, each as
    /// `filter` makes it, and, as follower, sending its own to a leader for
    /// which `leader_takes` holds ([`Self::propose_via_leader`]). Without
    /// it, it refuses them, and makes none.
    pub fn with_peer_proposals(
        mut self,
        filter: PeerProposalFilter,
        leader_takes: PeerSupport,
    ) -> Self {
        self.peer_filter = Some(filter);
        self.peer_leader_takes = Some(leader_takes);
        self
    }

    /// This step with its queue of entries waiting to apply bounded by
    /// `bounds`.
    pub fn with_bounds(mut self, bounds: ApplyBounds) -> Self {
        assert!(
            bounds.queue_entries_max > 0 && bounds.run_entries_max > 0,
            "apply bounds must let entries through: {bounds:?}"
        );
        self.bounds = bounds;
        self
    }

    /// The core.
    pub fn raft(&self) -> &Raft<S> {
        &self.raft
    }

    /// The core, to step messages, tick and propose.
    pub fn raft_mut(&mut self) -> &mut Raft<S> {
        &mut self.raft
    }

    /// The state machine, as applied up to [`Self::applied`]; `None`
    /// while it applies entries elsewhere ([`Effects::apply_elsewhere`]).
    pub fn sm(&self) -> Option<&M> {
        self.sm.as_ref()
    }

    /// The highest index applied to the state machine.
    pub fn applied(&self) -> LogIndex {
        self.applied
    }

    /// Proposals waiting for their entries, here or on their way to the
    /// leader.
    pub fn pending_proposals(&self) -> usize {
        self.proposals.len() + self.peer.len()
    }

    /// Reads waiting for confirmation, for their index, or for the state
    /// machine to come home.
    pub fn pending_reads(&self) -> usize {
        self.confirming.len() + self.confirmed.len() + self.local_reads.len()
    }

    /// Whether the next `Ready` installs a leader's snapshot while the
    /// state machine is away: no `Ready` is taken until it is home (see
    /// the module docs), so the caller should wait for it and hand it
    /// back ([`Self::applied_elsewhere`]).
    pub fn waits_for_state_machine(&self) -> bool {
        self.sm.is_none() && self.raft.has_snapshot_to_install()
    }

    /// Whether [`Self::begin_one`] would take a `Ready`: the core has one,
    /// and it is not a leader's snapshot waiting for the state machine.
    pub fn has_ready(&mut self) -> bool {
        if self.waits_for_state_machine() {
            return false;
        }
        let full = self.queue.len() >= self.bounds.queue_entries_max
            || self.queue_bytes >= self.bounds.queue_bytes_max;
        self.raft.hold_committed(full);
        self.raft.has_ready()
    }

    /// The core, giving up the state machine and the waiters (a crash in
    /// the simulation: only storage survives).
    pub fn into_raft(self) -> Raft<S> {
        self.raft
    }

    /// Waits for the entry the core appended at `index` in `term`: it is
    /// answered when that entry applies, or failed if another entry takes
    /// the index. Returns the proposal that waited at `index` before, if
    /// any (a follower's, for an entry of an earlier term another leader's
    /// entry replaces): its outcome is unknown, and the caller answers it
    /// so.
    pub fn track_proposal(&mut self, index: LogIndex, term: Term, proposal: P) -> Option<P> {
        assert!(
            index > self.applied,
            "a proposal at index {index} but {} is applied",
            self.applied
        );
        self.proposals
            .insert(index, (term, proposal))
            .map(|(_, replaced)| replaced)
    }

    /// [`Self::track_proposal`], answering a proposal it replaces as
    /// unknown.
    pub fn track<E>(&mut self, index: LogIndex, term: Term, proposal: P, fx: &mut E)
    where
        E: Effects<S, M, Proposal = P, Read = R>,
    {
        if let Some(replaced) = self.track_proposal(index, term, proposal) {
            fx.answer(replaced, Err(DriverError::OutcomeUnknown));
        }
    }

    /// The leader this member follows now; none while it leads, campaigns
    /// or knows no leader.
    pub fn followed_leader(&self) -> NodeId {
        let soft = self.raft.soft_state();
        if soft.role == Role::Follower {
            soft.leader
        } else {
            NodeId::NONE
        }
    }

    /// On a follower: adds `command` to this turn's batch to the leader
    /// (sent by [`Self::flush_peer_proposals`], or at once when full);
    /// `proposal` waits for its entry as a leader's own proposals do. The
    /// proposal back with the error when it cannot go that way: no leader
    /// is followed (`NotLeader`), or the leader does not take proposals
    /// from peers, or this member is a learner, which never campaigns, so
    /// nothing would fail its waiters if it lost the leader (`Rejected`:
    /// forward it instead), or `pending_max` proposals wait already
    /// ([`Self::pending_proposals`]; `Busy`).
    pub fn propose_via_leader<E>(
        &mut self,
        command: Bytes,
        proposal: P,
        now: u64,
        pending_max: usize,
        fx: &mut E,
    ) -> Result<(), (DriverError, P)>
    where
        E: Effects<S, M, Proposal = P, Read = R>,
    {
        let leader = self.followed_leader();
        if !leader.is_some() {
            let soft = self.raft.soft_state();
            let leader_hint = soft.leader.is_some().then_some(soft.leader);
            return Err((DriverError::NotLeader { leader_hint }, proposal));
        }
        let takes = self.peer_leader_takes.as_ref().is_some_and(|t| t(leader));
        if !takes || !self.raft.promotable() {
            let e = DriverError::Rejected(
                "this member does not propose through the peer stream now".into(),
            );
            return Err((e, proposal));
        }
        if self.pending_proposals() >= pending_max {
            let e = DriverError::Busy("too many pending proposals".into());
            return Err((e, proposal));
        }
        let (term, _) = self.raft.state();
        let me = self.raft.id();
        if let Some(m) = self.peer.gather(me, term, leader, command, proposal, now) {
            fx.send(vec![m]);
        }
        Ok(())
    }

    /// Sends the batch of proposals gathered this turn to the leader.
    pub fn flush_peer_proposals<E>(&mut self, now: u64, fx: &mut E)
    where
        E: Effects<S, M, Proposal = P, Read = R>,
    {
        let (term, _) = self.raft.state();
        if let Some(m) = self.peer.flush(self.raft.id(), term, now) {
            fx.send(vec![m]);
        }
    }

    /// Steps a message from a peer: a follower's batch of proposals (taken
    /// as [`Self::accept_peer_proposal`] takes it, with at most
    /// `pending_max` proposals waiting) and the answer to one of ours are
    /// the step's, anything else the core's. What became of a batch, when
    /// the message was one.
    pub fn step_message<E>(
        &mut self,
        m: Message,
        pending_max: usize,
        fx: &mut E,
    ) -> Option<PeerBatch>
    where
        E: Effects<S, M, Proposal = P, Read = R>,
    {
        match m.body {
            MessageBody::Propose { .. } => {
                return Some(self.accept_peer_proposal(m, pending_max, fx));
            }
            MessageBody::ProposeResponse { .. } => {
                let leader = self.followed_leader();
                for outcome in self.peer.answered(&m, leader) {
                    self.peer_outcome(outcome, fx);
                }
            }
            _ => self.raft.step(m),
        }
        None
    }

    /// On the leader: appends a follower's commands (`m`, a `Propose`), in
    /// order, as its own proposals, each stamped by the filter, and answers
    /// at once with a `ProposeResponse`, sent ahead of the appends that
    /// will carry them (one ordered stream per peer). The first command it
    /// cannot append stops the batch; the rest are refused with it. With
    /// `pending_max` proposals waiting here, it refuses as busy.
    pub fn accept_peer_proposal<E>(
        &mut self,
        m: Message,
        pending_max: usize,
        fx: &mut E,
    ) -> PeerBatch
    where
        E: Effects<S, M, Proposal = P, Read = R>,
    {
        let MessageBody::Propose { id, commands } = m.body else {
            return PeerBatch::default();
        };
        let mut batch = PeerBatch::default();
        let commands_len = commands.len() as u64;
        let mut first_index = 0;
        let mut refusal = ProposeRefusal::None;
        let (term, leads) = self.raft.state();
        if !leads {
            refusal = ProposeRefusal::NotLeader;
        }
        for command in commands {
            if refusal != ProposeRefusal::None {
                break;
            }
            if self.pending_proposals() >= pending_max
                || batch.accepted as usize >= BATCH_COMMANDS_MAX
            {
                refusal = ProposeRefusal::Busy;
                break;
            }
            let Some(command) = self.peer_filter.as_ref().and_then(|filter| filter(command)) else {
                refusal = ProposeRefusal::Unsupported;
                break;
            };
            match self.raft.propose(command) {
                Ok((index, _)) => {
                    if batch.accepted == 0 {
                        first_index = index;
                    }
                    batch.accepted += 1;
                }
                Err(e) => {
                    batch.core_refused = true;
                    refusal = match e {
                        ProposeError::NotLeader { .. }
                        | ProposeError::TransferInProgress { .. } => ProposeRefusal::NotLeader,
                        ProposeError::UncommittedLimit { .. } => ProposeRefusal::Busy,
                        ProposeError::ConfChangeRejected(_) | ProposeError::EmptyBatch => {
                            ProposeRefusal::Unsupported
                        }
                    };
                }
            }
        }
        batch.refused = commands_len - batch.accepted;
        fx.send(vec![Message {
            from: m.to,
            to: m.from,
            term,
            body: MessageBody::ProposeResponse {
                id,
                first_index,
                accepted: batch.accepted,
                refusal,
            },
        }]);
        batch
    }

    /// What the leader's answer (or its absence) says of a proposal sent
    /// to it.
    fn peer_outcome<E>(&mut self, outcome: Outcome<P>, fx: &mut E)
    where
        E: Effects<S, M, Proposal = P, Read = R>,
    {
        match outcome {
            // The answer travels ahead of the entries, on the same
            // stream; one that finds its index applied (a snapshot, or a
            // stream replaced meanwhile) cannot be told.
            Outcome::Appended(index, _, proposal) if index <= self.applied => {
                fx.answer(proposal, Err(DriverError::OutcomeUnknown));
            }
            Outcome::Appended(index, term, proposal) => self.track(index, term, proposal, fx),
            Outcome::Refused(e, proposal) => fx.answer(proposal, Err(e)),
        }
    }

    /// Fails the batches sent to the leader more than `timeout` ticks
    /// before `now`, and those sent to a member this one no longer follows.
    fn expire_peer<E>(&mut self, now: u64, timeout: u64, fx: &mut E)
    where
        E: Effects<S, M, Proposal = P, Read = R>,
    {
        if self.peer.len() == 0 {
            return;
        }
        let leader = self.followed_leader();
        for outcome in self.peer.expire(now, timeout, leader) {
            self.peer_outcome(outcome, fx);
        }
    }

    /// Runs a read on the state machine as it is (serializable): at once,
    /// or once it comes home.
    pub fn read_local<E>(&mut self, read: R, fx: &mut E)
    where
        E: Effects<S, M, Proposal = P, Read = R>,
    {
        match &self.sm {
            Some(sm) => fx.serve(read, Ok(sm)),
            None => self.local_reads.push(read),
        }
    }

    /// Runs a read that may be stale (serializable) on the state machine
    /// as it is; while it is away applying a heavy run, on the copy taken
    /// as it left ([`StateMachine::read_copy`]), at once, rather than after
    /// the run. The read must only look: it sees nothing of the run. A
    /// copy is left only once such reads come: the first of them after a
    /// quiet spell may wait for a run, as a local read does.
    pub fn read_stale<E>(&mut self, read: R, fx: &mut E)
    where
        E: Effects<S, M, Proposal = P, Read = R>,
    {
        self.stale_read_seen = true;
        match (&self.sm, &self.copy) {
            (Some(sm), _) => fx.serve(read, Ok(sm)),
            (None, Some(copy)) if copy.copy_is_current() => {
                self.stale_reads += 1;
                fx.serve(read, Ok(copy));
            }
            // No copy, or one clients have seen past
            // ([`StateMachine::copy_is_current`]).
            (None, _) => self.local_reads.push(read),
        }
    }

    /// Whether a read that may be stale would wait now
    /// ([`Self::read_stale`]), for the caller's bound on waiting reads.
    pub fn stale_read_waits(&self) -> bool {
        self.sm.is_none() && !self.copy.as_ref().is_some_and(M::copy_is_current)
    }

    /// Reads served on a copy while the state machine was away
    /// ([`Self::read_stale`]).
    pub fn stale_reads(&self) -> u64 {
        self.stale_reads
    }

    /// Whether the state machine is away and left a copy for reads that
    /// may be stale.
    pub fn has_read_copy(&self) -> bool {
        self.copy.is_some()
    }

    /// Asks the core to confirm a linearizable read (ReadIndex, or the
    /// lease); `now` is the caller's tick count, for [`Self::expire`].
    pub fn read<E>(&mut self, read: R, now: u64, fx: &mut E)
    where
        E: Effects<S, M, Proposal = P, Read = R>,
    {
        self.next_read_id += 1;
        let id = self.next_read_id;
        match self
            .raft
            .read_index(Bytes::copy_from_slice(&id.to_le_bytes()))
        {
            Ok(()) => {
                self.confirming.insert(id, Confirming { at: now, read });
            }
            Err(ReadError::NoLeader) => {
                fx.serve(read, Err(DriverError::NotLeader { leader_hint: None }))
            }
            Err(e) => fx.serve(read, Err(DriverError::Busy(e.to_string()))),
        }
    }

    /// Fails reads sent for confirmation, and proposals sent to the
    /// leader, more than `timeout` ticks before `now` (a forwarded read or
    /// proposal, or its answer, may be lost); and proposals sent to a
    /// member this one no longer follows.
    pub fn expire<E>(&mut self, now: u64, timeout: u64, fx: &mut E)
    where
        E: Effects<S, M, Proposal = P, Read = R>,
    {
        self.expire_peer(now, timeout, fx);
        let expired: Vec<u64> = self
            .confirming
            .iter()
            .filter(|(_, c)| now.saturating_sub(c.at) > timeout)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            if let Some(c) = self.confirming.remove(&id) {
                fx.serve(c.read, Err(DriverError::Timeout));
            }
        }
    }

    /// Answers every waiter with `e` (the member stops).
    pub fn fail_all<E>(&mut self, e: DriverError, fx: &mut E)
    where
        E: Effects<S, M, Proposal = P, Read = R>,
    {
        for (_, (_, proposal)) in std::mem::take(&mut self.proposals) {
            fx.answer(proposal, Err(e.clone()));
        }
        for proposal in self.peer.drain() {
            fx.answer(proposal, Err(e.clone()));
        }
        for (_, c) in std::mem::take(&mut self.confirming) {
            fx.serve(c.read, Err(e.clone()));
        }
        for (_, read) in std::mem::take(&mut self.confirmed) {
            fx.serve(read, Err(e.clone()));
        }
        for read in std::mem::take(&mut self.local_reads) {
            fx.serve(read, Err(e.clone()));
        }
    }

    /// Steps 2–6 of the driver contract for one `Ready`, if the core has
    /// one; false when it had nothing. An error is the storage's (or the
    /// effects'): the member must stop.
    pub fn process_one<E>(&mut self, fx: &mut E) -> Result<bool, StorageError>
    where
        E: Effects<S, M, Proposal = P, Read = R>,
    {
        match self.begin_one(fx)? {
            Some(taken) => {
                self.finish_one(taken, fx)?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// The first half of [`Self::process_one`]: takes the core's `Ready`,
    /// if it has one, and sends what a leader sends before persisting.
    /// [`Self::finish_one`] must follow before the core is touched again;
    /// in between, a caller may let the sent messages leave (the tokio
    /// driver yields to the tasks that write them to the network, so that
    /// they leave before its disk write, not after).
    pub fn begin_one<E>(&mut self, fx: &mut E) -> Result<Option<Taken>, StorageError>
    where
        E: Effects<S, M, Proposal = P, Read = R>,
    {
        if !self.has_ready() {
            return Ok(None);
        }
        let mut ready = self.raft.ready()?;
        // A leader whose term is durable sends first, so that its disk
        // write overlaps the followers' (step 4 early, see the core). With
        // nothing to write there is nothing to overlap, and when its
        // messages carry no entries either (the new commit index, a
        // heartbeat, a read's answer) the committed entries apply first,
        // so that their proposers' answers go out before the messages
        // rather than behind them. (A follower's client whose write or
        // read waits for that commit index waits for the apply; entries,
        // a snapshot or a hand-over still go first.)
        let appends = !ready.entries.is_empty() || ready.snapshot.is_some();
        let leads = ready.messages_first && !ready.messages.is_empty();
        let sent_first = leads && (appends || ready.messages.iter().any(carries_data));
        if sent_first {
            fx.send(std::mem::take(&mut ready.messages));
        }
        Ok(Some(Taken {
            answers_first: leads && !sent_first,
            ready,
            sent_first,
        }))
    }

    /// The second half of [`Self::process_one`]: persists, sends the rest,
    /// applies and serves for the `Ready` [`Self::begin_one`] took.
    pub fn finish_one<E>(&mut self, taken: Taken, fx: &mut E) -> Result<(), StorageError>
    where
        E: Effects<S, M, Proposal = P, Read = R>,
    {
        let mut ready = taken.ready;
        // Step 5 of the core's contract, early: committed entries before
        // this `Ready`'s first new one were written by earlier `Ready`s
        // (and are durable on a majority), so they apply now and their
        // answers leave while the disk writes the new ones, not after (a
        // snapshot's `Ready` waits: it replaces the log). The commit index
        // that covers them is this `Ready`'s, saved below: a member that
        // crashes first learns it again from the leader.
        let early = durable_before(&ready);
        if early > 0 {
            self.enqueue(ready.committed_entries[..early].to_vec());
            self.apply_queued(fx);
        }
        // Step 3: persist.
        let persisted = match &ready.snapshot {
            None => fx.persist(&mut self.raft, &ready, self.next_write)?,
            Some(snapshot) => {
                let sm = self
                    .sm
                    .as_mut()
                    .expect("a snapshot's Ready is taken only with the state machine home");
                fx.install_snapshot(&mut self.raft, sm, snapshot, &ready)?;
                Persisted::Durable
            }
        };
        // Step 4: send, or wait for the sync: this `Ready`'s, or an
        // earlier one still under way (an acknowledgement here may cover
        // entries it wrote).
        let mut messages = std::mem::take(&mut ready.messages);
        if persisted == Persisted::Syncing || !self.unsynced.is_empty() {
            // Answers to the leader wait (see `waits_for_sync`); the
            // rest, the leader's own messages above all, go now.
            let (waiting, now): (Vec<Message>, Vec<Message>) =
                messages.into_iter().partition(waits_for_sync);
            messages = now;
            if persisted == Persisted::Syncing {
                let last = ready
                    .entries
                    .last()
                    .expect("only a Ready with entries has a sync to wait for");
                self.unsynced.push_back(Unsynced {
                    write: self.next_write,
                    last: (last.index, last.term),
                    messages: waiting,
                });
                self.next_write += 1;
            } else if let Some(syncing) = self.unsynced.back_mut() {
                syncing.messages.extend(waiting);
            }
        }
        if !messages.is_empty() {
            fx.send(messages);
        }
        // Step 5: apply.
        if let Some(snapshot) = &ready.snapshot {
            self.installed(snapshot.meta.index, fx);
        }
        let mut committed = std::mem::take(&mut ready.committed_entries);
        self.enqueue(committed.split_off(early));
        self.apply_queued(fx);
        for rs in &ready.read_states {
            self.confirm(rs);
        }
        let role_changed = ready.soft_state.is_some();
        // Step 6.
        match persisted {
            Persisted::Durable => self.raft.advance(),
            Persisted::Syncing => self.raft.advance_written(),
        }
        self.serve_applied_reads(fx);
        if role_changed {
            self.on_role_change(fx);
            // Batches sent to a member that no longer leads fail now (an
            // overdue one at `expire`).
            self.expire_peer(0, u64::MAX, fx);
        }
        self.offer_snapshot(fx)
    }

    /// The effects' deferred sync of write `write` is done: it and every
    /// earlier write are durable. The core learns it (a leader may commit)
    /// and the messages that waited for them leave. Call it between
    /// `Ready`s, then process the core's next ones.
    pub fn synced<E>(&mut self, write: u64, fx: &mut E)
    where
        E: Effects<S, M, Proposal = P, Read = R>,
    {
        while self.unsynced.front().is_some_and(|u| u.write <= write) {
            let done = self.unsynced.pop_front().expect("checked");
            self.raft.persisted(done.last.0, done.last.1);
            if !done.messages.is_empty() {
                fx.send(done.messages);
            }
        }
    }

    /// Writes whose sync is under way.
    pub fn syncing(&self) -> usize {
        self.unsynced.len()
    }

    /// The state machine is back from [`Effects::apply_elsewhere`] with
    /// the outputs of its run: answers the run's proposals, applies what
    /// queued meanwhile (or hands it off again at the next heavy entry),
    /// serves the reads that waited, and offers a due snapshot. Call it
    /// between `Ready`s (never between [`Self::begin_one`] and
    /// [`Self::finish_one`]).
    pub fn applied_elsewhere<E>(
        &mut self,
        sm: M,
        outputs: Vec<Option<M::Output>>,
        fx: &mut E,
    ) -> Result<(), StorageError>
    where
        E: Effects<S, M, Proposal = P, Read = R>,
    {
        self.come_home(sm, outputs, fx);
        self.apply_queued(fx);
        self.serve_applied_reads(fx);
        self.offer_snapshot(fx)
    }

    /// Offers the core's due snapshot to the effects, when the state
    /// machine is home and holds everything the core handed out (the core
    /// takes the snapshot at the index it handed out last). Called after
    /// each `Ready` and when the state machine comes home; call it too
    /// when something that held a snapshot back is over (the effects'
    /// previous snapshot finished writing).
    pub fn offer_snapshot<E>(&mut self, fx: &mut E) -> Result<(), StorageError>
    where
        E: Effects<S, M, Proposal = P, Read = R>,
    {
        let Some(sm) = &self.sm else {
            return Ok(());
        };
        if self.handed != self.applied || !self.raft.snapshot_due() {
            return Ok(());
        }
        debug_assert!(self.queue.is_empty(), "the queue drains while home");
        fx.snapshot_due(&mut self.raft, sm)
    }

    /// Queues committed entries the core handed out, which follow one
    /// another and the last one handed out.
    fn enqueue(&mut self, entries: Vec<Entry>) {
        for entry in entries {
            assert_eq!(
                entry.index,
                self.handed + 1,
                "committed entries are handed out one after another"
            );
            self.handed = entry.index;
            self.queue_bytes += entry.size_bytes();
            self.queue.push_back(entry);
        }
    }

    /// Applies the queued entries while the state machine is home: light
    /// ones here, one after another; at a heavy one, the state machine
    /// and a run of entries from it go to [`Effects::apply_elsewhere`].
    fn apply_queued<E>(&mut self, fx: &mut E)
    where
        E: Effects<S, M, Proposal = P, Read = R>,
    {
        loop {
            let Some(sm) = self.sm.as_mut() else {
                return;
            };
            let Some(entry) = self.queue.front() else {
                return;
            };
            if entry.kind == EntryKind::Normal && sm.is_heavy(&entry.data) {
                let count = self.queue.len().min(self.bounds.run_entries_max);
                let run: Vec<Entry> = self.queue.drain(..count).collect();
                self.queue_bytes -= run.iter().map(Entry::size_bytes).sum::<u64>();
                self.away = run.iter().map(|e| (e.index, e.term)).collect();
                if std::mem::take(&mut self.stale_read_seen) {
                    self.copy = sm.read_copy();
                }
                let sm = self.sm.take().expect("checked");
                if let Some((sm, outputs)) = fx.apply_elsewhere(sm, run) {
                    self.come_home(sm, outputs, fx);
                }
                continue;
            }
            let entry = self.queue.pop_front().expect("checked");
            self.queue_bytes -= entry.size_bytes();
            let output = apply_entry(sm, &entry);
            self.applied_one(entry.index, entry.term, output, fx);
        }
    }

    /// The state machine is back with the outputs of the run it took:
    /// each entry of the run is applied, its proposal answered, and the
    /// reads on the state machine as it is run.
    fn come_home<E>(&mut self, sm: M, outputs: Vec<Option<M::Output>>, fx: &mut E)
    where
        E: Effects<S, M, Proposal = P, Read = R>,
    {
        assert!(self.sm.is_none(), "the state machine came home twice");
        assert_eq!(
            outputs.len(),
            self.away.len(),
            "one output for each entry of the run"
        );
        for ((index, term), output) in std::mem::take(&mut self.away).into_iter().zip(outputs) {
            self.applied_one(index, term, output, fx);
        }
        if let Some(copy) = self.copy.take() {
            fx.drop_read_copy(copy);
        }
        let sm = self.sm.insert(sm);
        for read in std::mem::take(&mut self.local_reads) {
            fx.serve(read, Ok(sm));
        }
    }

    /// The state machine now holds the leader's snapshot at `index`.
    fn installed<E>(&mut self, index: LogIndex, fx: &mut E)
    where
        E: Effects<S, M, Proposal = P, Read = R>,
    {
        assert!(
            index > self.applied,
            "a snapshot at {index} installed over applied index {}",
            self.applied
        );
        assert!(
            self.queue.is_empty() && self.away.is_empty(),
            "a snapshot installed with entries waiting to apply"
        );
        self.applied = index;
        self.handed = index;
        // Proposals the snapshot covers were decided elsewhere.
        let later = self.proposals.split_off(&(index + 1));
        for (_, (_, proposal)) in std::mem::replace(&mut self.proposals, later) {
            fx.answer(proposal, Err(DriverError::OutcomeUnknown));
        }
    }

    /// The committed entry at `index`, of `term`, was applied with
    /// `output` (`None`: it carried no command): answers its proposal, if
    /// any, with the output when the entry is of the proposal's term, else
    /// (another leader's entry took the index) as unknown.
    fn applied_one<E>(&mut self, index: LogIndex, term: Term, output: Option<M::Output>, fx: &mut E)
    where
        E: Effects<S, M, Proposal = P, Read = R>,
    {
        assert_eq!(index, self.applied + 1, "entries apply one after another");
        assert!(index <= self.handed, "only entries handed out apply");
        self.applied = index;
        let Some((proposed_term, proposal)) = self.proposals.remove(&index) else {
            return;
        };
        match output {
            Some(output) if proposed_term == term => fx.answer(proposal, Ok((index, output))),
            _ => fx.answer(proposal, Err(DriverError::OutcomeUnknown)),
        }
    }

    /// A read state from the core: the read it confirms waits for its index.
    fn confirm(&mut self, rs: &ReadState) {
        let id = rs
            .ctx
            .as_ref()
            .try_into()
            .map(u64::from_le_bytes)
            .unwrap_or(0);
        if let Some(Confirming { read, .. }) = self.confirming.remove(&id) {
            self.confirmed.push_back((rs.index, read));
        }
    }

    /// Runs the confirmed reads whose index is applied, in order.
    fn serve_applied_reads<E>(&mut self, fx: &mut E)
    where
        E: Effects<S, M, Proposal = P, Read = R>,
    {
        let Some(sm) = &self.sm else {
            return;
        };
        while self
            .confirmed
            .front()
            .is_some_and(|(i, _)| *i <= self.applied)
        {
            let (index, read) = self.confirmed.pop_front().expect("checked");
            assert!(
                index <= self.applied,
                "a read at index {index} served at applied index {}",
                self.applied
            );
            fx.serve(read, Ok(sm));
        }
    }

    /// A member that stopped leading cannot tell what becomes of its
    /// uncommitted proposals or unconfirmed reads: answer them so callers
    /// retry (with their request ids, proposals stay exactly-once). Those
    /// whose entries were handed out to apply (queued, or away with the
    /// state machine) are committed: their outputs answer them.
    fn on_role_change<E>(&mut self, fx: &mut E)
    where
        E: Effects<S, M, Proposal = P, Read = R>,
    {
        let status = self.raft.status();
        if status.soft_state.role == Role::Leader {
            return;
        }
        let hint = status.soft_state.leader;
        let hint = hint.is_some().then_some(hint);
        let uncommitted = self.proposals.split_off(&(self.handed + 1));
        for (_, (_, proposal)) in uncommitted {
            fx.answer(proposal, Err(DriverError::OutcomeUnknown));
        }
        if status.soft_state.role != Role::Follower || hint.is_none() {
            for (_, c) in std::mem::take(&mut self.confirming) {
                fx.serve(c.read, Err(DriverError::NotLeader { leader_hint: hint }));
            }
        }
    }
}
