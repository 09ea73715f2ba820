//! The leader's view of each follower's log (Raft Figure 2, `nextIndex` and
//! `matchIndex`), with the flow control that makes replication pipelined.

use crate::types::{LogIndex, NodeId};
use std::collections::{BTreeMap, VecDeque};

/// How the leader currently sends to a follower.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgressState {
    /// The follower's match point is unknown: one AppendEntries at a time,
    /// backtracking on rejection.
    Probe,
    /// The follower is known to match: entries stream optimistically, bounded
    /// by the inflight window.
    Replicate,
    /// The follower needs entries the leader compacted away: it receives the
    /// snapshot in chunks (pipelined within the inflight window), then the
    /// leader probes after it.
    Snapshot,
}

/// A snapshot being sent to one follower.
#[derive(Clone, Debug)]
pub(crate) struct OutgoingSnapshot {
    /// Which snapshot, its length and checksum: the data stays in storage
    /// and is read a chunk at a time.
    pub(crate) source: crate::storage::SnapshotSource,
    /// Next byte to send.
    pub(crate) next_offset: u64,
    /// Bytes the follower confirmed; a refusal sets it to what the
    /// follower says it holds (it may have started over).
    pub(crate) acked_offset: u64,
    /// The offset a refusal last rewound the send to, until an
    /// acknowledgement passes it: the chunks in flight behind the lost
    /// one are refused too, each naming the same offset, and only the
    /// first of those refusals resends the window.
    pub(crate) rewound_to: Option<u64>,
    /// The last heartbeat round the leader had started when it sent the
    /// newest chunk. The stream to a peer is ordered and the follower
    /// answers in order, so the answer to a heartbeat of a later round
    /// comes after the answers to every chunk sent: if they are not all
    /// in by then, chunks (or answers) were lost. (One exception costs a
    /// resend, no more: the follower's answer to the last chunk, an
    /// append acknowledgement, waits for any sync of its log under way,
    /// and a heartbeat's answer does not.) Answers to earlier rounds
    /// prove nothing: a follower back from a pause answers the
    /// heartbeats queued during it first, while the chunks are on their
    /// way behind them.
    pub(crate) sent_in_round: u64,
}

/// AppendEntries messages sent but not yet acknowledged, bounded by count and
/// by bytes.
#[derive(Clone, Debug)]
pub(crate) struct Inflights {
    /// (last index carried, bytes carried), oldest first.
    queue: VecDeque<(LogIndex, u64)>,
    bytes: u64,
    max_count: usize,
    max_bytes: u64,
}

impl Inflights {
    pub(crate) fn new(max_count: usize, max_bytes: u64) -> Inflights {
        Inflights {
            queue: VecDeque::with_capacity(max_count.min(1024)),
            bytes: 0,
            max_count,
            max_bytes,
        }
    }

    pub(crate) fn is_full(&self) -> bool {
        self.queue.len() >= self.max_count || self.bytes >= self.max_bytes
    }

    /// Whether an append carrying entries up to `index` (or past it) is
    /// still unacknowledged.
    pub(crate) fn awaits_answer_through(&self, index: LogIndex) -> bool {
        self.queue.back().is_some_and(|&(last, _)| last >= index)
    }

    pub(crate) fn add(&mut self, last_index: LogIndex, bytes: u64) {
        self.queue.push_back((last_index, bytes));
        self.bytes += bytes;
    }

    /// Frees every message whose entries are all at or below `index`.
    pub(crate) fn free_to(&mut self, index: LogIndex) {
        while let Some(&(last, bytes)) = self.queue.front() {
            if last > index {
                break;
            }
            self.queue.pop_front();
            self.bytes -= bytes;
        }
    }

    /// Frees the oldest message, so that a lost one cannot stall the window.
    pub(crate) fn free_first(&mut self) {
        if let Some((_, bytes)) = self.queue.pop_front() {
            self.bytes -= bytes;
        }
    }

    pub(crate) fn reset(&mut self) {
        self.queue.clear();
        self.bytes = 0;
    }
}

/// One follower as the leader sees it.
#[derive(Clone, Debug)]
pub(crate) struct Progress {
    /// Highest index known to match the leader's log.
    pub(crate) match_index: LogIndex,
    /// Next index to send.
    pub(crate) next_index: LogIndex,
    pub(crate) state: ProgressState,
    /// In probe state: a probe is outstanding, wait for its answer (or the
    /// next heartbeat) before sending another.
    pub(crate) probe_sent: bool,
    /// Heard from since the last check-quorum round.
    pub(crate) recent_active: bool,
    /// The leader's tick when this follower last answered anything (the
    /// strict reconfiguration check reads it; check-quorum's flag is reset
    /// every round, so it cannot tell "just reset" from "silent").
    pub(crate) last_heard_tick: Option<u64>,
    /// Highest heartbeat round this follower acknowledged in this term.
    pub(crate) acked_round: u64,
    pub(crate) inflights: Inflights,
    /// Counts in elections and commit quorums.
    pub(crate) is_learner: bool,
    /// In snapshot state: what is being sent.
    pub(crate) snapshot: Option<OutgoingSnapshot>,
}

impl Progress {
    pub(crate) fn new(next_index: LogIndex, inflights: Inflights, is_learner: bool) -> Progress {
        Progress {
            match_index: 0,
            next_index,
            state: ProgressState::Probe,
            probe_sent: false,
            recent_active: false,
            last_heard_tick: None,
            acked_round: 0,
            inflights,
            is_learner,
            snapshot: None,
        }
    }

    pub(crate) fn become_snapshot(&mut self, source: crate::storage::SnapshotSource) {
        self.state = ProgressState::Snapshot;
        self.probe_sent = false;
        self.inflights.reset();
        self.snapshot = Some(OutgoingSnapshot {
            source,
            next_offset: 0,
            acked_offset: 0,
            rewound_to: None,
            sent_in_round: 0,
        });
    }

    pub(crate) fn become_probe(&mut self) {
        self.snapshot = None;
        self.state = ProgressState::Probe;
        self.next_index = self.match_index + 1;
        self.probe_sent = false;
        self.inflights.reset();
    }

    pub(crate) fn become_replicate(&mut self) {
        self.snapshot = None;
        self.state = ProgressState::Replicate;
        self.next_index = self.match_index + 1;
        self.probe_sent = false;
        self.inflights.reset();
    }

    /// Whether the leader must hold back new AppendEntries.
    pub(crate) fn is_paused(&self) -> bool {
        match self.state {
            ProgressState::Probe => self.probe_sent,
            ProgressState::Replicate => self.inflights.is_full(),
            ProgressState::Snapshot => {
                self.inflights.is_full()
                    || self
                        .snapshot
                        .as_ref()
                        .is_none_or(|s| s.next_offset >= s.source.len_bytes)
            }
        }
    }

    /// Records a successful append up to `index`. Returns whether anything
    /// changed.
    pub(crate) fn maybe_update(&mut self, index: LogIndex) -> bool {
        let mut updated = false;
        if index > self.match_index {
            self.match_index = index;
            updated = true;
            self.probe_sent = false;
        }
        self.next_index = self.next_index.max(index + 1);
        updated
    }

    /// Handles a rejection of the append whose `prev_log_index` was
    /// `rejected`, with the next index to try. Returns false for a stale
    /// rejection, which is ignored.
    pub(crate) fn maybe_decr_to(&mut self, rejected: LogIndex, next_try: LogIndex) -> bool {
        match self.state {
            ProgressState::Replicate => {
                if rejected <= self.match_index {
                    return false;
                }
                self.become_probe();
                self.next_index = next_try.min(rejected).max(self.match_index + 1);
                true
            }
            ProgressState::Snapshot => false,
            ProgressState::Probe => {
                if self.next_index == 0 || rejected != self.next_index - 1 {
                    return false;
                }
                self.next_index = next_try.min(rejected).max(self.match_index + 1);
                self.probe_sent = false;
                true
            }
        }
    }

    /// Records entries up to `last_index` sent in one message of `bytes`.
    pub(crate) fn sent_entries(&mut self, last_index: LogIndex, bytes: u64, count: usize) {
        match self.state {
            ProgressState::Replicate => {
                if count > 0 {
                    self.next_index = last_index + 1;
                    self.inflights.add(last_index, bytes);
                }
            }
            ProgressState::Probe => self.probe_sent = true,
            ProgressState::Snapshot => {}
        }
    }
}

/// Every member's progress, plus quorum arithmetic over voters.
#[derive(Clone, Debug, Default)]
pub(crate) struct Tracker {
    pub(crate) progress: BTreeMap<NodeId, Progress>,
}

impl Tracker {
    pub(crate) fn voters(&self) -> impl Iterator<Item = (&NodeId, &Progress)> {
        self.progress.iter().filter(|(_, p)| !p.is_learner)
    }

    pub(crate) fn voter_count(&self) -> usize {
        self.voters().count()
    }

    pub(crate) fn quorum(&self) -> usize {
        self.voter_count() / 2 + 1
    }

    pub(crate) fn is_voter(&self, id: NodeId) -> bool {
        self.progress.get(&id).is_some_and(|p| !p.is_learner)
    }

    /// The highest index a quorum of voters has matched.
    pub(crate) fn quorum_match_index(&self) -> LogIndex {
        self.quorum_value(|p| p.match_index)
    }

    /// The highest heartbeat round a quorum of voters has acknowledged.
    pub(crate) fn quorum_acked_round(&self) -> u64 {
        self.quorum_value(|p| p.acked_round)
    }

    fn quorum_value(&self, f: impl Fn(&Progress) -> u64) -> u64 {
        let mut values: Vec<u64> = self.voters().map(|(_, p)| f(p)).collect();
        if values.is_empty() {
            return 0;
        }
        values.sort_unstable_by(|a, b| b.cmp(a));
        values[self.quorum() - 1]
    }

    /// Whether the voters in `granted` form a quorum.
    pub(crate) fn has_quorum<'a>(&self, granted: impl Iterator<Item = &'a NodeId>) -> bool {
        granted.filter(|id| self.is_voter(**id)).count() >= self.quorum()
    }
}
