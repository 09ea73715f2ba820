//! Linearizable reads without log writes: ReadIndex and leader leases
//! (thesis §6.4, §6.4.1).
//!
//! Both rest on heartbeat *rounds*. Each broadcast heartbeat carries a round
//! number; followers echo it. When a quorum has acknowledged round `r`, the
//! leader knows it still led when `r` was sent, which confirms every read
//! queued before `r` was sent (ReadIndex), and — as no member that answered
//! will vote for anybody else for a minimum election timeout after hearing
//! from it — it may serve reads without a round trip until that time, less a
//! drift margin, has passed since `r` was sent (the lease).
//!
//! A follower gathers the reads its callers ask for between two `Ready`s
//! and forwards them as one `ReadIndex` ([`ForwardedReads`]): the leader's
//! one answer, an index it confirmed after every one of them arrived,
//! serves them all (etcd's follower does the same in its read loop). Each
//! read still gets its own [`ReadState`] with its caller's context.

use crate::error::ReadError;
use crate::message::MessageBody;
use crate::raft::Raft;
use crate::storage::Storage;
use crate::types::{LogIndex, NodeId, ReadState, Role};
use bytes::Bytes;
use std::collections::VecDeque;

/// Most heartbeat rounds remembered for lease timing; older rounds can no
/// longer extend a lease worth having.
const ROUNDS_REMEMBERED: usize = 1024;

/// Most forwarded read batches a follower waits on. An answer that never
/// comes (a leader deposed or a message lost) leaves its batch here until
/// newer ones push it out; the callers time out and retry meanwhile.
const FORWARDED_BATCHES_MAX: usize = 256;

/// A follower's reads on their way to the leader.
#[derive(Clone, Debug, Default)]
pub(crate) struct ForwardedReads {
    /// Asked for since the last flush: they leave together.
    queued: Vec<Bytes>,
    /// Sent, by the batch id their `ReadIndex` carries; oldest first.
    in_flight: VecDeque<(u64, Vec<Bytes>)>,
    /// Reads in `in_flight`.
    sent: usize,
    /// Id of the last batch sent.
    last_id: u64,
}

impl ForwardedReads {
    /// Reads waiting, queued or sent.
    fn len(&self) -> usize {
        self.queued.len() + self.sent
    }

    /// Forgets the reads not yet sent: the member stopped following, and
    /// its driver answers their callers.
    pub(crate) fn drop_queued(&mut self) {
        self.queued.clear();
    }
}

/// A read waiting for confirmation.
#[derive(Clone, Debug)]
struct PendingRead {
    /// The commit index when the read arrived.
    index: LogIndex,
    /// Who asked: this member or a follower.
    from: NodeId,
    ctx: Bytes,
    /// Confirmed once a quorum acknowledged this round.
    round: u64,
}

/// The leader's read bookkeeping, reset every term.
#[derive(Clone, Debug, Default)]
pub(crate) struct Reads {
    /// Reads that arrived before the leader committed an entry of its term.
    awaiting_commit: VecDeque<(NodeId, Bytes)>,
    /// Reads waiting for a heartbeat round, in round order.
    pending: VecDeque<PendingRead>,
    /// The last round started.
    round: u64,
    /// A read needs a round that has not been started yet.
    round_wanted: bool,
    /// (round, tick it was sent at), oldest first.
    sent_at: VecDeque<(u64, u64)>,
    /// Tick at which the newest quorum-acknowledged round was sent.
    lease_from_tick: Option<u64>,
}

impl Reads {
    pub(crate) fn clear(&mut self) {
        *self = Reads::default();
    }

    pub(crate) fn round_wanted(&self) -> bool {
        self.round_wanted
    }

    pub(crate) fn len(&self) -> usize {
        self.awaiting_commit.len() + self.pending.len()
    }

    /// The last round started (0 before the first).
    pub(crate) fn last_round(&self) -> u64 {
        self.round
    }

    /// Starts a new round sent at `now_ticks`; returns its number.
    pub(crate) fn start_round(&mut self, now_ticks: u64) -> u64 {
        self.round += 1;
        self.round_wanted = false;
        if self.sent_at.len() == ROUNDS_REMEMBERED {
            self.sent_at.pop_front();
        }
        self.sent_at.push_back((self.round, now_ticks));
        self.round
    }
}

impl<S: Storage> Raft<S> {
    /// Queues a read on a follower that knows its leader; it leaves at the
    /// next flush with every other read queued by then.
    pub(crate) fn follower_read(&mut self, ctx: Bytes) -> Result<(), ReadError> {
        debug_assert_ne!(self.role, Role::Leader);
        if self.forwarded.len() >= self.config.max_pending_reads {
            return Err(ReadError::TooManyPending {
                limit: self.config.max_pending_reads,
            });
        }
        self.forwarded.queued.push(ctx);
        Ok(())
    }

    /// Sends the queued reads to the leader as one `ReadIndex`.
    pub(crate) fn send_forwarded_reads(&mut self) {
        if self.forwarded.queued.is_empty() || !self.leader.is_some() {
            return;
        }
        let f = &mut self.forwarded;
        f.last_id += 1;
        let id = f.last_id;
        if f.in_flight.len() == FORWARDED_BATCHES_MAX
            && let Some((_, lost)) = f.in_flight.pop_front()
        {
            f.sent -= lost.len();
        }
        f.sent += f.queued.len();
        f.in_flight.push_back((id, std::mem::take(&mut f.queued)));
        let ctx = Bytes::copy_from_slice(&id.to_le_bytes());
        self.send(self.leader, MessageBody::ReadIndex { ctx });
    }

    /// The leader answered a forwarded batch: every read in it may be
    /// served at `index`. An answer to no batch waiting (pushed out, or
    /// from an earlier life) is ignored.
    pub(crate) fn on_forwarded_read_answer(&mut self, index: LogIndex, ctx: &[u8]) {
        let Ok(id) = <[u8; 8]>::try_from(ctx).map(u64::from_le_bytes) else {
            return;
        };
        let f = &mut self.forwarded;
        let Some(at) = f.in_flight.iter().position(|(i, _)| *i == id) else {
            return;
        };
        let (_, ctxs) = f.in_flight.remove(at).expect("found above");
        f.sent -= ctxs.len();
        self.read_states
            .extend(ctxs.into_iter().map(|ctx| ReadState { index, ctx }));
    }

    /// Serves or queues a read on the leader for `from` (itself or a
    /// follower that forwarded it).
    pub(crate) fn leader_read(&mut self, from: NodeId, ctx: Bytes) -> Result<(), ReadError> {
        debug_assert_eq!(self.role, Role::Leader);
        if self.reads.len() >= self.config.max_pending_reads {
            return Err(ReadError::TooManyPending {
                limit: self.config.max_pending_reads,
            });
        }
        // Thesis §6.4 step 1: until the leader committed an entry of its own
        // term it does not know the latest commit index.
        if !self.log.match_term(self.log.committed, self.term) {
            self.reads.awaiting_commit.push_back((from, ctx));
            return Ok(());
        }
        self.queue_confirmed_read(from, ctx);
        Ok(())
    }

    fn queue_confirmed_read(&mut self, from: NodeId, ctx: Bytes) {
        let index = self.log.committed;
        if self.lease_valid() {
            self.answer_read(from, index, ctx);
            return;
        }
        let round = self.reads.round + 1;
        self.reads.pending.push_back(PendingRead {
            index,
            from,
            ctx,
            round,
        });
        // The round goes out at the next flush, shared by every read that
        // arrives before it.
        self.reads.round_wanted = true;
    }

    fn answer_read(&mut self, from: NodeId, index: LogIndex, ctx: Bytes) {
        if from == self.id {
            self.read_states.push(ReadState { index, ctx });
        } else {
            self.send(from, MessageBody::ReadIndexResponse { index, ctx });
        }
    }

    /// Whether the leader may answer a read from its lease alone.
    pub(crate) fn lease_valid(&self) -> bool {
        if self.config.read_mode != crate::config::ReadMode::LeaseBased
            || !self.config.check_quorum
            || self.lead_transferee.is_some()
        {
            return false;
        }
        match self.reads.lease_from_tick {
            Some(from) => self.now_ticks < from + self.config.lease_ticks(),
            None => false,
        }
    }

    /// The leader committed its first entry of the term: reads that waited
    /// for it now go through confirmation.
    pub(crate) fn on_first_commit_in_term(&mut self) {
        let waiting: Vec<(NodeId, Bytes)> = self.reads.awaiting_commit.drain(..).collect();
        for (from, ctx) in waiting {
            self.queue_confirmed_read(from, ctx);
        }
    }

    /// A follower (or the leader itself) acknowledged a round: release the
    /// reads a quorum has now confirmed and extend the lease.
    pub(crate) fn on_round_acked(&mut self) {
        let acked = self.tracker.quorum_acked_round();
        if acked == 0 {
            return;
        }
        while self.reads.sent_at.front().is_some_and(|(r, _)| *r < acked) {
            self.reads.sent_at.pop_front();
        }
        if let Some((r, tick)) = self.reads.sent_at.front()
            && *r == acked
        {
            self.reads.lease_from_tick = Some(*tick);
        }
        while self.reads.pending.front().is_some_and(|p| p.round <= acked) {
            let read = self.reads.pending.pop_front().expect("checked non-empty");
            self.answer_read(read.from, read.index, read.ctx);
        }
    }
}
