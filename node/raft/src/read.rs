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
