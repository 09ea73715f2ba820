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
//! 1. a leader whose term is durable sends first (`messages_first`);
//! 2. persist: [`Effects::persist`], or [`Effects::install_snapshot`] for a
//!    `Ready` that carries the leader's snapshot;
//! 3. send the rest;
//! 4. apply: the snapshot jumps the applied index, then each committed
//!    entry, answering its proposal if the entry is of the proposal's term;
//! 5. read states confirm reads, in order; advance the core;
//! 6. serve confirmed reads whose index is applied; after a role change,
//!    answer what a former leader can no longer decide; offer a due
//!    snapshot ([`Effects::snapshot_due`]).
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
use super::state_machine::StateMachine;
use flotilla_raft::{
    Bytes, ConfChangeData, Entry, EntryKind, LogIndex, Message, Raft, ReadError, ReadState, Ready,
    Role, Snapshot, Storage, StorageError, Term,
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
    /// snapshot). An error stops the member.
    fn persist(&mut self, raft: &mut Raft<S>, ready: &Ready) -> Result<(), StorageError>;

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
}

/// A `Ready` taken from the core by [`Step::begin_one`], waiting for
/// [`Step::finish_one`].
#[derive(Debug)]
pub struct Taken {
    ready: Ready,
    sent_first: bool,
}

impl Taken {
    /// Whether messages were sent before persisting (a leader's appends).
    pub fn sent_first(&self) -> bool {
        self.sent_first
    }

    /// Whether the `Ready` carries entries (or a snapshot) to write: the
    /// persisting step that takes a disk write. A leader that sent first
    /// kept its term and vote, so without entries it has at most a new
    /// commit index to record, which the storage need not write.
    pub fn appends(&self) -> bool {
        !self.ready.entries.is_empty() || self.ready.snapshot.is_some()
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
    sm: M,
    /// index → (term, proposer).
    proposals: BTreeMap<LogIndex, (Term, P)>,
    /// Reads sent for confirmation, by context id.
    confirming: HashMap<u64, Confirming<R>>,
    /// Confirmed reads waiting for their index to be applied, in order.
    confirmed: VecDeque<(LogIndex, R)>,
    next_read_id: u64,
    applied: LogIndex,
}

impl<S: Storage, M: StateMachine, P, R> std::fmt::Debug for Step<S, M, P, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Step")
            .field("id", &self.raft.id())
            .field("applied", &self.applied)
            .field("proposals", &self.proposals.len())
            .field("reads", &self.pending_reads())
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
            sm,
            proposals: BTreeMap::new(),
            confirming: HashMap::new(),
            confirmed: VecDeque::new(),
            next_read_id: 0,
            applied,
        }
    }

    /// The core.
    pub fn raft(&self) -> &Raft<S> {
        &self.raft
    }

    /// The core, to step messages, tick and propose.
    pub fn raft_mut(&mut self) -> &mut Raft<S> {
        &mut self.raft
    }

    /// The state machine, as applied up to [`Self::applied`].
    pub fn sm(&self) -> &M {
        &self.sm
    }

    /// The highest index applied to the state machine.
    pub fn applied(&self) -> LogIndex {
        self.applied
    }

    /// Proposals waiting for their entries.
    pub fn pending_proposals(&self) -> usize {
        self.proposals.len()
    }

    /// Reads waiting for confirmation or for their index.
    pub fn pending_reads(&self) -> usize {
        self.confirming.len() + self.confirmed.len()
    }

    /// The core, giving up the state machine and the waiters (a crash in
    /// the simulation: only storage survives).
    pub fn into_raft(self) -> Raft<S> {
        self.raft
    }

    /// Waits for the entry the core appended at `index` in `term`: it is
    /// answered when that entry applies, or failed if another entry takes
    /// the index.
    pub fn track_proposal(&mut self, index: LogIndex, term: Term, proposal: P) {
        assert!(
            index > self.applied,
            "a proposal at index {index} but {} is applied",
            self.applied
        );
        self.proposals.insert(index, (term, proposal));
    }

    /// Asks the core to confirm a linearizable read (ReadIndex, or the
    /// lease); `now` is the caller's tick count, for [`Self::expire_reads`].
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

    /// Fails reads sent for confirmation more than `timeout` ticks before
    /// `now` (a forwarded read or its answer may be lost).
    pub fn expire_reads<E>(&mut self, now: u64, timeout: u64, fx: &mut E)
    where
        E: Effects<S, M, Proposal = P, Read = R>,
    {
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
        for (_, c) in std::mem::take(&mut self.confirming) {
            fx.serve(c.read, Err(e.clone()));
        }
        for (_, read) in std::mem::take(&mut self.confirmed) {
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
        if !self.raft.has_ready() {
            return Ok(None);
        }
        let mut ready = self.raft.ready()?;
        // A leader whose term is durable sends first, so that its disk
        // write overlaps the followers' (step 4 early, see the core).
        let sent_first = ready.messages_first && !ready.messages.is_empty();
        if sent_first {
            fx.send(std::mem::take(&mut ready.messages));
        }
        Ok(Some(Taken { ready, sent_first }))
    }

    /// The second half of [`Self::process_one`]: persists, sends the rest,
    /// applies and serves for the `Ready` [`Self::begin_one`] took.
    pub fn finish_one<E>(&mut self, taken: Taken, fx: &mut E) -> Result<(), StorageError>
    where
        E: Effects<S, M, Proposal = P, Read = R>,
    {
        let mut ready = taken.ready;
        // Step 3: persist.
        match &ready.snapshot {
            None => fx.persist(&mut self.raft, &ready)?,
            Some(snapshot) => {
                fx.install_snapshot(&mut self.raft, &mut self.sm, snapshot, &ready)?
            }
        }
        // Step 4: send.
        if !ready.messages.is_empty() {
            fx.send(std::mem::take(&mut ready.messages));
        }
        // Step 5: apply.
        if let Some(snapshot) = &ready.snapshot {
            self.installed(snapshot.meta.index, fx);
        }
        for entry in &ready.committed_entries {
            self.apply(entry, fx);
        }
        for rs in &ready.read_states {
            self.confirm(rs);
        }
        let role_changed = ready.soft_state.is_some();
        // Step 6.
        self.raft.advance();
        self.serve_applied_reads(fx);
        if role_changed {
            self.on_role_change(fx);
        }
        if self.raft.snapshot_due() {
            fx.snapshot_due(&mut self.raft, &self.sm)?;
        }
        Ok(())
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
        self.applied = index;
        // Proposals the snapshot covers were decided elsewhere.
        let later = self.proposals.split_off(&(index + 1));
        for (_, (_, proposal)) in std::mem::replace(&mut self.proposals, later) {
            fx.answer(proposal, Err(DriverError::OutcomeUnknown));
        }
    }

    /// Applies one committed entry and answers its proposal, if any: with
    /// the output when the entry is of the proposal's term, else (another
    /// leader's entry took the index) as unknown.
    fn apply<E>(&mut self, entry: &Entry, fx: &mut E)
    where
        E: Effects<S, M, Proposal = P, Read = R>,
    {
        assert_eq!(
            entry.index,
            self.applied + 1,
            "entries apply one after another"
        );
        self.applied = entry.index;
        let output = match entry.kind {
            EntryKind::Normal => Some(self.sm.apply(entry.index, &entry.data)),
            EntryKind::ConfChange => {
                // The core decoded the same bytes when the entry was
                // appended; a malformed one never gets this far.
                let context = ConfChangeData::decode(&entry.data)
                    .map(|d| d.context)
                    .unwrap_or_default();
                Some(self.sm.apply_conf_change(entry.index, &context))
            }
            EntryKind::Noop => None,
        };
        let Some((term, proposal)) = self.proposals.remove(&entry.index) else {
            return;
        };
        match output {
            Some(output) if term == entry.term => fx.answer(proposal, Ok((entry.index, output))),
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
            fx.serve(read, Ok(&self.sm));
        }
    }

    /// A member that stopped leading cannot tell what becomes of its
    /// uncommitted proposals or unconfirmed reads: answer them so callers
    /// retry (with their request ids, proposals stay exactly-once).
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
        for (_, (_, proposal)) in std::mem::take(&mut self.proposals) {
            fx.answer(proposal, Err(DriverError::OutcomeUnknown));
        }
        if status.soft_state.role != Role::Follower || hint.is_none() {
            for (_, c) in std::mem::take(&mut self.confirming) {
                fx.serve(c.read, Err(DriverError::NotLeader { leader_hint: hint }));
            }
        }
    }
}
