//! The core: one member's Raft state machine. Inputs are method calls; outputs
//! are collected into a [`Ready`].

use crate::config::Config;
use crate::error::{ConfigError, ProposeError, ReadError, StorageError, TransferError};
use crate::log::RaftLog;
use crate::membership::ConfHistory;
use crate::message::{Message, MessageBody};
use crate::progress::Tracker;
use crate::read::{ForwardedReads, Reads};
use crate::ready::Ready;
use crate::snapshot::IncomingSnapshot;
use crate::storage::Storage;
use crate::types::{
    ConfState, Entry, EntryKind, HardState, LogIndex, NodeId, ReadState, Role, SoftState, Term,
};
use bytes::Bytes;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// What was handed out in the last [`Ready`], settled by `advance`.
#[derive(Clone, Copy, Debug)]
struct ReadyMarks {
    snapshot_index: Option<LogIndex>,
    last_entry: Option<(LogIndex, Term)>,
    last_committed: Option<LogIndex>,
    committed_bytes: u64,
    committed_count: u64,
    applied_bytes: u64,
    hard_state: HardState,
}

/// A snapshot of a core's state, for status pages and tests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    /// This member.
    pub id: NodeId,
    /// Current term, vote and commit index.
    pub hard_state: HardState,
    /// Role and known leader.
    pub soft_state: SoftState,
    /// Highest index handed out for applying.
    pub applied: LogIndex,
    /// Last index of the log (including entries not yet persisted).
    pub last_index: LogIndex,
    /// On a leader: each member's match index.
    pub match_indexes: Vec<(NodeId, LogIndex)>,
    /// The configuration in force.
    pub conf_state: ConfState,
}

/// One member's Raft consensus core. Pure and deterministic: no clock, no IO,
/// no global randomness. See the crate docs for how a driver uses it.
#[derive(Debug)]
pub struct Raft<S: Storage> {
    pub(crate) id: NodeId,
    pub(crate) config: Config,
    pub(crate) term: Term,
    pub(crate) vote: NodeId,
    pub(crate) leader: NodeId,
    pub(crate) role: Role,
    pub(crate) log: RaftLog<S>,
    pub(crate) tracker: Tracker,
    /// Configuration history of the log.
    pub(crate) confs: ConfHistory,
    /// A snapshot being received from the leader.
    pub(crate) incoming_snapshot: Option<IncomingSnapshot>,
    /// Bytes of entries applied since the last snapshot (this life).
    pub(crate) applied_bytes_since_snapshot: u64,
    /// Bytes of data of the last snapshot this member took or installed in
    /// this life, or else the one it was restored from
    /// ([`crate::Config::restored_snapshot_bytes`]; 0: unknown): what
    /// [`crate::Config::snapshot_min_log_percent`] weighs the log against.
    pub(crate) last_snapshot_bytes: u64,
    /// Votes received in the current (pre-)campaign: true = granted.
    pub(crate) votes: std::collections::BTreeMap<NodeId, bool>,
    pub(crate) msgs: Vec<Message>,
    pub(crate) election_elapsed: u32,
    pub(crate) heartbeat_elapsed: u32,
    pub(crate) randomized_election_ticks: u32,
    /// True from start until an election timeout passes or a leader is heard
    /// from: a restarted node must not grant votes at once, or a leader's
    /// lease could be broken by a member that forgot it acknowledged it.
    pub(crate) boot_quiet: bool,
    pub(crate) rng: SmallRng,
    /// Ticks since this core started (the lease clock).
    pub(crate) now_ticks: u64,
    /// Leadership transfer target, or NONE.
    pub(crate) lead_transferee: NodeId,
    pub(crate) uncommitted_bytes: u64,
    pub(crate) uncommitted_entries: u64,
    pub(crate) reads: Reads,
    /// A follower's reads on their way to the leader.
    pub(crate) forwarded: ForwardedReads,
    pub(crate) read_states: Vec<ReadState>,
    /// Appends must be (re)sent to followers at the next flush.
    pub(crate) replication_dirty: bool,
    /// While set, `Ready`s hand out no committed entries
    /// ([`Raft::hold_committed`]).
    hold_committed: bool,
    prev_hard_state: HardState,
    prev_soft_state: SoftState,
    pending_ready: Option<ReadyMarks>,
    pub(crate) fatal: Option<StorageError>,
}

impl<S: Storage> Raft<S> {
    /// Builds a core over `storage`, resuming from what it holds.
    pub fn new(config: Config, storage: S) -> Result<Raft<S>, ConfigError> {
        config.validate()?;
        let initial = storage
            .initial_state()
            .map_err(|e| ConfigError(format!("cannot read initial state: {e}")))?;
        let hs = initial.hard_state;
        if hs.commit > storage.last_index() {
            return Err(ConfigError(format!(
                "saved commit index {} is beyond the saved log's last index {}",
                hs.commit,
                storage.last_index()
            )));
        }
        let applied = config.applied;
        let mut raft = Raft {
            id: config.id,
            term: hs.term,
            vote: hs.vote,
            leader: NodeId::NONE,
            role: Role::Follower,
            log: RaftLog::new(storage, hs.commit, applied),
            tracker: Tracker::default(),
            confs: ConfHistory::default(),
            incoming_snapshot: None,
            applied_bytes_since_snapshot: 0,
            last_snapshot_bytes: config.restored_snapshot_bytes,
            votes: Default::default(),
            msgs: Vec::new(),
            election_elapsed: 0,
            heartbeat_elapsed: 0,
            randomized_election_ticks: config.election_ticks,
            boot_quiet: true,
            rng: SmallRng::seed_from_u64(config.seed),
            now_ticks: 0,
            lead_transferee: NodeId::NONE,
            uncommitted_bytes: 0,
            uncommitted_entries: 0,
            reads: Reads::default(),
            forwarded: ForwardedReads::default(),
            read_states: Vec::new(),
            replication_dirty: false,
            hold_committed: false,
            prev_hard_state: hs,
            prev_soft_state: SoftState {
                leader: NodeId::NONE,
                role: Role::Follower,
            },
            pending_ready: None,
            fatal: None,
            config,
        };
        raft.load_conf_history(initial.conf_state)
            .map_err(|e| ConfigError(format!("cannot read the log: {e}")))?;
        raft.reset_randomized_election_timeout();
        Ok(raft)
    }

    // ---- inputs -------------------------------------------------------------

    /// Tells the core that `n` tick intervals passed that [`Raft::tick`]
    /// was not called for: the process was paused, or the driver ran late.
    /// They count for the leader lease, which must never outlive real time
    /// (a leader whose clock stood still would go on serving reads from a
    /// lease while the others elect a new leader). Election timeouts,
    /// heartbeats and check-quorum do not see them, so a member that merely
    /// woke late neither campaigns nor steps down at once because of it.
    pub fn skip_ticks(&mut self, n: u64) {
        self.now_ticks = self.now_ticks.saturating_add(n);
    }

    /// Advances the logical clock by one tick.
    pub fn tick(&mut self) {
        if self.fatal.is_some() {
            return;
        }
        self.now_ticks += 1;
        match self.role {
            Role::Leader => self.tick_leader(),
            _ => self.tick_election(),
        }
    }

    fn tick_election(&mut self) {
        self.election_elapsed += 1;
        if self.election_elapsed >= self.config.election_ticks {
            self.boot_quiet = false;
        }
        if self.promotable() && self.election_elapsed >= self.randomized_election_ticks {
            self.election_elapsed = 0;
            self.start_election(false);
        }
    }

    fn tick_leader(&mut self) {
        self.heartbeat_elapsed += 1;
        self.election_elapsed += 1;
        if self.election_elapsed >= self.config.election_ticks {
            self.election_elapsed = 0;
            if self.config.check_quorum && !self.quorum_recently_active() {
                tracing::info!(id = %self.id, term = %self.term, "no quorum heard from: stepping down");
                self.become_follower(self.term, NodeId::NONE);
                return;
            }
            if self.lead_transferee.is_some() {
                tracing::info!(id = %self.id, to = %self.lead_transferee, "leadership transfer timed out");
                self.lead_transferee = NodeId::NONE;
            }
        }
        if self.heartbeat_elapsed >= self.config.heartbeat_ticks {
            self.heartbeat_elapsed = 0;
            self.broadcast_heartbeat();
        }
    }

    /// Check-quorum (thesis §6.2): did a quorum of voters answer since the
    /// last check? Resets the marks for the next round.
    fn quorum_recently_active(&mut self) -> bool {
        let id = self.id;
        let active: Vec<NodeId> = self
            .tracker
            .progress
            .iter()
            .filter(|(pid, p)| **pid == id || p.recent_active)
            .map(|(pid, _)| *pid)
            .collect();
        for (pid, p) in self.tracker.progress.iter_mut() {
            if *pid != id {
                p.recent_active = false;
            }
        }
        self.tracker.has_quorum(active.iter())
    }

    /// Proposes one command (the spec's `Start`). On success returns the index
    /// and term it will have if committed.
    pub fn propose(&mut self, data: Bytes) -> Result<(LogIndex, Term), ProposeError> {
        self.propose_batch(std::iter::once(data))
    }

    /// Proposes several commands as consecutive entries; returns the first
    /// index and the term. All or none are appended.
    pub fn propose_batch(
        &mut self,
        commands: impl IntoIterator<Item = Bytes>,
    ) -> Result<(LogIndex, Term), ProposeError> {
        self.check_can_propose()?;
        let first = self.log.last_index() + 1;
        let entries: Vec<Entry> = commands
            .into_iter()
            .enumerate()
            .map(|(i, data)| Entry {
                term: self.term,
                index: first + i as u64,
                kind: EntryKind::Normal,
                data,
            })
            .collect();
        if entries.is_empty() {
            return Err(ProposeError::EmptyBatch);
        }
        let bytes: u64 = entries.iter().map(Entry::size_bytes).sum();
        let count = entries.len() as u64;
        // A single entry always fits when nothing is outstanding, so a large
        // command cannot be refused forever.
        let outstanding = self.uncommitted_entries > 0;
        if outstanding
            && (self.uncommitted_bytes + bytes > self.config.max_uncommitted_bytes
                || self.uncommitted_entries + count > self.config.max_uncommitted_entries)
        {
            return Err(ProposeError::UncommittedLimit {
                uncommitted_bytes: self.uncommitted_bytes,
                uncommitted_entries: self.uncommitted_entries,
                max_bytes: self.config.max_uncommitted_bytes,
                max_entries: self.config.max_uncommitted_entries,
            });
        }
        self.uncommitted_bytes += bytes;
        self.uncommitted_entries += count;
        self.append_as_leader(&entries);
        Ok((first, self.term))
    }

    /// Only a leader that is not handing over accepts proposals.
    pub(crate) fn check_can_propose(&self) -> Result<(), ProposeError> {
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader {
                leader_hint: self.leader.is_some().then_some(self.leader),
            });
        }
        if self.lead_transferee.is_some() {
            return Err(ProposeError::TransferInProgress {
                to: self.lead_transferee,
            });
        }
        Ok(())
    }

    /// Requests a linearizable read. The answer is a [`ReadState`] carrying
    /// `ctx` in a later `Ready`; serve the read once that index is applied.
    pub fn read_index(&mut self, ctx: Bytes) -> Result<(), ReadError> {
        match self.role {
            Role::Leader => self.leader_read(self.id, ctx),
            _ if self.leader.is_some() => self.follower_read(ctx),
            _ => Err(ReadError::NoLeader),
        }
    }

    /// Asks the leader to hand leadership to `to` (thesis §3.10): proposals
    /// are refused until it completes or an election timeout passes.
    pub fn transfer_leader(&mut self, to: NodeId) -> Result<(), TransferError> {
        if self.role != Role::Leader {
            return Err(TransferError::NotLeader {
                leader_hint: self.leader.is_some().then_some(self.leader),
            });
        }
        if to == self.id {
            return Ok(());
        }
        if !self.tracker.is_voter(to) {
            return Err(TransferError::NotVoter(to));
        }
        if self.lead_transferee == to {
            return Ok(());
        }
        tracing::info!(id = %self.id, %to, term = %self.term, "transferring leadership");
        self.lead_transferee = to;
        self.election_elapsed = 0;
        if self.tracker.progress[&to].match_index == self.log.last_index() {
            self.send(to, MessageBody::TimeoutNow);
        } else {
            self.replication_dirty = true;
        }
        Ok(())
    }

    /// On a leader: the voter to hand leadership to when this member
    /// stops — the other voter with the highest match index (the one that
    /// needs the least before a TimeoutNow) among those heard from since
    /// the last check-quorum round, so that a voter that went silent while
    /// caught up (stopped too, or cut off) is not chosen over a live one;
    /// then the lowest id. When none was heard from yet this round, the
    /// highest match index alone decides. `None` on a follower, or when no
    /// other voter exists.
    pub fn transfer_target(&self) -> Option<NodeId> {
        if self.role != Role::Leader {
            return None;
        }
        self.tracker
            .progress
            .iter()
            .filter(|(id, p)| **id != self.id && !p.is_learner)
            .max_by_key(|(id, p)| (p.recent_active, p.match_index, std::cmp::Reverse(**id)))
            .map(|(id, _)| *id)
    }

    /// Feeds one message from another member.
    pub fn step(&mut self, m: Message) {
        if self.fatal.is_some() || m.to != self.id || m.body.for_driver() {
            return;
        }
        if m.term > self.term {
            if self.ignores_higher_term_vote(&m) {
                tracing::debug!(id = %self.id, from = %m.from, kind = m.kind(), "ignoring vote request inside leader lease");
                return;
            }
            match m.body {
                MessageBody::PreVote { .. } | MessageBody::PreVoteResponse { reject: false } => {}
                MessageBody::AppendEntries { .. }
                | MessageBody::Heartbeat { .. }
                | MessageBody::InstallSnapshot { .. } => self.become_follower(m.term, m.from),
                _ => self.become_follower(m.term, NodeId::NONE),
            }
        } else if m.term < self.term {
            self.step_lower_term(m);
            return;
        }
        match m.body {
            MessageBody::PreVote { .. } | MessageBody::RequestVote { .. } => {
                self.handle_vote_request(m)
            }
            _ => match self.role {
                Role::Leader => self.step_leader(m),
                Role::Candidate | Role::PreCandidate => self.step_candidate(m),
                Role::Follower => self.step_follower(m),
            },
        }
    }

    /// A message from an older term. A stale leader (or pre-candidate) is told
    /// the current term so that it steps down; everything else is dropped.
    fn step_lower_term(&mut self, m: Message) {
        match m.body {
            MessageBody::AppendEntries { .. }
            | MessageBody::Heartbeat { .. }
            | MessageBody::InstallSnapshot { .. }
                if self.config.check_quorum || self.config.pre_vote =>
            {
                self.send(
                    m.from,
                    MessageBody::AppendEntriesResponse {
                        reject: true,
                        index: 0,
                        hint_index: 0,
                        hint_term: Term(0),
                    },
                );
            }
            MessageBody::PreVote { .. } => {
                self.send(m.from, MessageBody::PreVoteResponse { reject: true });
            }
            _ => {}
        }
    }

    fn step_leader(&mut self, m: Message) {
        match m.body {
            MessageBody::AppendEntriesResponse { .. } => self.handle_append_response(m),
            MessageBody::HeartbeatResponse { round } => {
                self.handle_heartbeat_response(m.from, round)
            }
            MessageBody::ReadIndex { ctx } => {
                // A refused forwarded read is dropped; the follower's caller
                // times out and retries.
                let _ = self.leader_read(m.from, ctx);
            }
            MessageBody::InstallSnapshotResponse {
                accepted,
                next_offset,
                snapshot_index,
            } => self.handle_snapshot_response(m.from, accepted, next_offset, snapshot_index),
            _ => {}
        }
    }

    fn step_follower(&mut self, m: Message) {
        match m.body {
            MessageBody::AppendEntries { .. } => {
                self.hear_from_leader(m.from);
                self.handle_append_entries(m);
            }
            MessageBody::Heartbeat { commit, round } => {
                self.hear_from_leader(m.from);
                self.handle_heartbeat(m.from, commit, round);
            }
            MessageBody::ReadIndexResponse { index, ctx } => {
                self.on_forwarded_read_answer(index, &ctx);
            }
            MessageBody::TimeoutNow if self.promotable() => {
                tracing::info!(id = %self.id, from = %m.from, "TimeoutNow: campaigning at once");
                self.start_campaign(true);
            }
            MessageBody::InstallSnapshot { .. } => {
                self.hear_from_leader(m.from);
                self.step_install_snapshot(m);
            }
            _ => {}
        }
    }

    fn step_install_snapshot(&mut self, m: Message) {
        if let MessageBody::InstallSnapshot {
            meta,
            offset,
            data,
            chunk_crc,
            done,
            total_bytes,
            snapshot_crc,
        } = m.body
        {
            self.handle_install_snapshot(
                m.from,
                meta,
                offset,
                data,
                chunk_crc,
                done,
                total_bytes,
                snapshot_crc,
            );
        }
    }

    fn step_candidate(&mut self, m: Message) {
        match m.body {
            MessageBody::AppendEntries { .. } => {
                self.become_follower(m.term, m.from);
                self.handle_append_entries(m);
            }
            MessageBody::Heartbeat { commit, round } => {
                self.become_follower(m.term, m.from);
                self.handle_heartbeat(m.from, commit, round);
            }
            MessageBody::InstallSnapshot { .. } => {
                self.become_follower(m.term, m.from);
                self.step_install_snapshot(m);
            }
            MessageBody::PreVoteResponse { reject } if self.role == Role::PreCandidate => {
                self.record_vote(m.from, !reject)
            }
            MessageBody::RequestVoteResponse { reject } if self.role == Role::Candidate => {
                self.record_vote(m.from, !reject)
            }
            _ => {}
        }
    }

    fn hear_from_leader(&mut self, leader: NodeId) {
        self.election_elapsed = 0;
        self.leader = leader;
        self.boot_quiet = false;
    }

    // ---- role changes -------------------------------------------------------

    pub(crate) fn become_follower(&mut self, term: Term, leader: NodeId) {
        self.reset(term);
        self.role = Role::Follower;
        self.leader = leader;
    }

    pub(crate) fn become_leader(&mut self) {
        assert_ne!(
            self.role,
            Role::Follower,
            "a follower cannot become leader directly"
        );
        self.reset(self.term);
        self.role = Role::Leader;
        self.leader = self.id;
        let last = self.log.last_index();
        let durable = self.log.durable_last_index();
        let id = self.id;
        for (pid, p) in self.tracker.progress.iter_mut() {
            // Its own match counts only what it has made durable.
            p.match_index = if *pid == id { durable } else { 0 };
            p.next_index = last + 1;
            p.become_probe();
            p.next_index = last + 1;
            p.recent_active = *pid == id;
        }
        tracing::info!(id = %self.id, term = %self.term, "became leader");
        // Raft §5.4.2/§8: a leader commits entries of earlier terms only through
        // one of its own, so it appends an empty entry at once.
        let noop = Entry {
            term: self.term,
            index: last + 1,
            kind: EntryKind::Noop,
            data: Bytes::new(),
        };
        self.append_as_leader(&[noop]);
    }

    /// Clears per-term volatile state.
    fn reset(&mut self, term: Term) {
        if term != self.term {
            self.term = term;
            self.vote = NodeId::NONE;
        }
        self.leader = NodeId::NONE;
        self.election_elapsed = 0;
        self.heartbeat_elapsed = 0;
        self.reset_randomized_election_timeout();
        self.lead_transferee = NodeId::NONE;
        self.votes.clear();
        self.reads.clear();
        self.uncommitted_bytes = 0;
        self.uncommitted_entries = 0;
        for p in self.tracker.progress.values_mut() {
            p.acked_round = 0;
            p.inflights.reset();
            p.probe_sent = false;
        }
    }

    fn reset_randomized_election_timeout(&mut self) {
        let min = self.config.election_ticks;
        self.randomized_election_ticks = self.rng.random_range(min..2 * min);
    }

    /// Whether this member may campaign: it must be a voter (a learner
    /// never campaigns).
    pub fn promotable(&self) -> bool {
        self.tracker.is_voter(self.id)
    }

    // ---- output -------------------------------------------------------------

    pub(crate) fn send(&mut self, to: NodeId, body: MessageBody) {
        let term = self.term;
        self.send_with_term(to, term, body);
    }

    pub(crate) fn send_with_term(&mut self, to: NodeId, term: Term, body: MessageBody) {
        debug_assert_ne!(to, self.id, "a core never messages itself");
        self.msgs.push(Message {
            from: self.id,
            to,
            term,
            body,
        });
    }

    /// Sends whatever deferred work is due: read confirmation rounds and
    /// batched appends. Called before a `Ready` is built, so that everything
    /// proposed since the last one leaves in as few messages as possible.
    fn flush(&mut self) {
        if self.role != Role::Leader {
            self.send_forwarded_reads();
            return;
        }
        if self.reads.round_wanted() {
            self.broadcast_heartbeat();
        }
        if self.replication_dirty {
            self.replication_dirty = false;
            self.broadcast_append();
        }
    }

    /// Whether [`Raft::ready`] would return anything.
    pub fn has_ready(&mut self) -> bool {
        if self.fatal.is_some() {
            return true;
        }
        self.flush();
        !self.msgs.is_empty()
            || self.log.pending_snapshot().is_some()
            || !self.log.unstable_entries().is_empty()
            || (!self.hold_committed && self.log.has_next_committed_entries())
            || !self.read_states.is_empty()
            || self.hard_state() != self.prev_hard_state
            || self.soft_state() != self.prev_soft_state
    }

    /// Collects the work for the driver. Call [`Raft::advance`] once it is
    /// done, before any other input.
    ///
    /// Fails only when storage failed fatally; the node must then stop.
    pub fn ready(&mut self) -> Result<Ready, StorageError> {
        if let Some(err) = self.fatal.take() {
            let message = err.to_string();
            self.fatal = Some(StorageError::Fatal(message.clone()));
            return Err(StorageError::Fatal(message));
        }
        assert!(
            self.pending_ready.is_none(),
            "ready() called twice without advance()"
        );
        self.flush();
        let hard_state = self.hard_state();
        let soft_state = self.soft_state();
        let snapshot = self.log.pending_snapshot().cloned();
        let entries = self.log.unstable_entries().to_vec();
        let committed_entries = if self.hold_committed {
            Vec::new()
        } else {
            match self
                .log
                .next_committed_entries(self.config.max_committed_bytes_per_ready)
            {
                Ok(e) => e,
                Err(e) => {
                    self.fatal = Some(StorageError::Fatal(e.to_string()));
                    return Err(e);
                }
            }
        };
        // Only this leader's own proposals were counted as uncommitted (the
        // count restarts every term), so only they give room back: not the
        // no-op, nor entries of earlier terms committed through it.
        let counted = committed_entries
            .iter()
            .filter(|e| e.term == self.term && e.kind != EntryKind::Noop);
        self.pending_ready = Some(ReadyMarks {
            snapshot_index: snapshot.as_ref().map(|s| s.meta.index),
            applied_bytes: committed_entries.iter().map(Entry::size_bytes).sum(),
            last_entry: entries.last().map(|e| (e.index, e.term)),
            last_committed: committed_entries.last().map(|e| e.index),
            committed_bytes: counted.clone().map(Entry::size_bytes).sum(),
            committed_count: counted.count() as u64,
            hard_state,
        });
        let soft_changed = soft_state != self.prev_soft_state;
        self.prev_soft_state = soft_state;
        Ok(Ready {
            snapshot,
            soft_state: soft_changed.then_some(soft_state),
            hard_state: (hard_state != self.prev_hard_state).then_some(hard_state),
            entries,
            messages: std::mem::take(&mut self.msgs),
            messages_first: self.role == Role::Leader
                && hard_state.term == self.prev_hard_state.term
                && hard_state.vote == self.prev_hard_state.vote,
            committed_entries,
            read_states: std::mem::take(&mut self.read_states),
        })
    }

    /// Acknowledges the last [`Ready`]: its entries and hard state are
    /// durable, its messages sent and its committed entries applied.
    pub fn advance(&mut self) {
        self.advance_ready(true);
    }

    /// Acknowledges the last [`Ready`] whose entries were written but are
    /// not yet durable (a deferred sync, step 3 of the crate docs): like
    /// [`Raft::advance`], but a leader counts them toward commitment only
    /// once [`Raft::persisted`] reports them. The `Ready`'s append answers
    /// and votes must wait for that report too (see the crate docs).
    pub fn advance_written(&mut self) {
        self.advance_ready(false);
    }

    /// A deferred write is durable: the entries up to `index`, which had
    /// `term`, and everything written before them. Ignored when the log
    /// no longer holds that entry as saved (a newer leader's entries or a
    /// snapshot replaced it). A leader counts them toward commitment now.
    pub fn persisted(&mut self, index: LogIndex, term: Term) {
        self.log.persisted_to(index, term);
        if self.role == Role::Leader {
            self.leader_persisted(self.log.durable_last_index());
        }
    }

    fn advance_ready(&mut self, durable: bool) {
        let Some(marks) = self.pending_ready.take() else {
            return;
        };
        if let Some(index) = marks.snapshot_index {
            self.log.snapshot_installed(index);
            self.applied_bytes_since_snapshot = 0;
        }
        self.applied_bytes_since_snapshot += marks.applied_bytes;
        if let Some((index, term)) = marks.last_entry {
            self.log.stable_to(index, term, durable);
            if durable && self.role == Role::Leader {
                self.leader_persisted(self.log.durable_last_index());
            }
        }
        if let Some(index) = marks.last_committed {
            self.log.applied_to(index);
        }
        if self.role == Role::Leader {
            self.uncommitted_bytes = self.uncommitted_bytes.saturating_sub(marks.committed_bytes);
            self.uncommitted_entries = self
                .uncommitted_entries
                .saturating_sub(marks.committed_count);
        }
        self.prev_hard_state = marks.hard_state;
    }

    /// Stops (`true`) or resumes (`false`) handing out committed entries:
    /// while held, [`Raft::ready`] returns none and [`Raft::has_ready`]
    /// does not count them, but everything else goes on — the commit index
    /// advances, entries are persisted and acknowledged, messages and read
    /// states come out. For a driver whose state machine is busy with
    /// entries it was handed earlier and whose queue of entries not yet
    /// applied is full.
    ///
    /// The core takes entries as applied once they are handed out and the
    /// `Ready` is advanced: [`Status::applied`], [`Raft::snapshot_due`] and
    /// the index of [`Raft::compact`] / [`Raft::prepare_snapshot`] count
    /// them. A driver that applies them later must therefore snapshot only
    /// once it applied all it was handed. Nothing else in the core depends
    /// on the applied index: membership changes are gated on the commit
    /// index, and a leader's count of uncommitted entries is given back as
    /// entries are handed out, so holding them keeps that count up (and
    /// may refuse proposals) until they are.
    pub fn hold_committed(&mut self, hold: bool) {
        self.hold_committed = hold;
    }

    /// Whether a leader's snapshot waits to be installed by the next
    /// [`Ready`] (it comes before any other entry that `Ready` carries).
    pub fn has_snapshot_to_install(&self) -> bool {
        self.log.pending_snapshot().is_some()
    }

    pub(crate) fn pending_ready_is_none(&self) -> bool {
        self.pending_ready.is_none()
    }

    pub(crate) fn hard_state(&self) -> HardState {
        HardState {
            term: self.term,
            vote: self.vote,
            commit: self.log.committed,
        }
    }

    /// Role and known leader; [`Self::status`] without the copies.
    pub fn soft_state(&self) -> SoftState {
        SoftState {
            leader: self.leader,
            role: self.role,
        }
    }

    // ---- inspection ---------------------------------------------------------

    /// This member's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The spec's `GetState`: current term and whether this node leads.
    pub fn state(&self) -> (Term, bool) {
        (self.term, self.role == Role::Leader)
    }

    /// Role, leader, term, commit and apply indexes.
    pub fn status(&self) -> Status {
        Status {
            id: self.id,
            hard_state: self.hard_state(),
            soft_state: self.soft_state(),
            applied: self.log.applied,
            last_index: self.log.last_index(),
            match_indexes: if self.role == Role::Leader {
                self.tracker
                    .progress
                    .iter()
                    .map(|(id, p)| (*id, p.match_index))
                    .collect()
            } else {
                Vec::new()
            },
            conf_state: self.confs.current().clone(),
        }
    }

    /// The storage, for reading what was saved.
    pub fn storage(&self) -> &S {
        &self.log.storage
    }

    /// The storage, for the driver's `save` while handling a `Ready`.
    pub fn storage_mut(&mut self) -> &mut S {
        &mut self.log.storage
    }

    /// Gives the storage back, e.g. to restart a crashed member from it.
    pub fn into_storage(self) -> S {
        self.log.storage
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Whether this member leads and may serve reads from its lease alone
    /// (lease-based reads only).
    pub fn has_lease(&self) -> bool {
        self.role == Role::Leader && self.lease_valid()
    }

    /// Entries the leader appended but has not yet seen committed.
    pub fn uncommitted(&self) -> (u64, u64) {
        (self.uncommitted_entries, self.uncommitted_bytes)
    }

    /// Entries in the log past the commit index, as the messages stepped
    /// so far leave it: on a leader, those it appended that a quorum does
    /// not hold yet (unlike [`Raft::uncommitted`], an entry leaves this
    /// count as soon as it commits, before a `Ready` hands it out).
    pub fn entries_past_commit(&self) -> u64 {
        self.log.last_index().saturating_sub(self.log.committed)
    }
}
