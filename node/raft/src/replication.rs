//! Log replication (Raft §5.3) and commitment (§5.4.2): pipelined, batched
//! AppendEntries with per-follower flow control and fast backtracking.

use crate::message::{Message, MessageBody};
use crate::progress::ProgressState;
use crate::raft::Raft;
use crate::storage::Storage;
use crate::types::{Entry, LogIndex, NodeId, Term};

/// What [`Raft::send_appends`] sends a follower that has every entry
/// already (nothing left to carry).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum IfNothingToSend {
    /// Nothing.
    Skip,
    /// An append with the commit index. It goes quietly (no answer wanted)
    /// where the follower has acknowledged, or owes an answer for, every
    /// entry up to its `prev_log_index`: that answer says all the new one
    /// would.
    Commit,
    /// An append to be answered: the follower's answers may have been
    /// lost.
    Ask,
}

impl<S: Storage> Raft<S> {
    /// Appends entries of the leader's own term. They are sent at the next
    /// flush, batched with whatever else arrives; the leader counts them
    /// toward its own match only once they are durable (in `advance`), so it
    /// may send them before persisting them (Raft thesis §10.2.1).
    pub(crate) fn append_as_leader(&mut self, entries: &[Entry]) {
        self.log.append(entries);
        self.note_appended(entries);
        self.replication_dirty = true;
    }

    /// The leader's own entries up to `stable` are durable: count them, and
    /// commit what a quorum now holds (a single voter commits here).
    pub(crate) fn leader_persisted(&mut self, stable: LogIndex) {
        let id = self.id;
        let updated = self
            .tracker
            .progress
            .get_mut(&id)
            .is_some_and(|p| p.maybe_update(stable));
        if updated && self.maybe_commit() {
            // Tell every follower the new commit index promptly.
            self.replication_dirty = true;
        }
    }

    /// Sends entries to every follower that is not paused.
    pub(crate) fn broadcast_append(&mut self) {
        let peers: Vec<NodeId> = self
            .tracker
            .progress
            .keys()
            .copied()
            .filter(|id| *id != self.id)
            .collect();
        for to in peers {
            self.send_appends(to, IfNothingToSend::Commit);
        }
    }

    /// Sends as many AppendEntries to `to` as flow control allows; a
    /// follower with nothing left to send gets what `empty` says.
    pub(crate) fn send_appends(&mut self, to: NodeId, empty: IfNothingToSend) {
        let last = self.log.last_index();
        let mut sent_any = false;
        loop {
            let Some(pr) = self.tracker.progress.get(&to) else {
                return;
            };
            if pr.is_paused() {
                return;
            }
            if pr.state == ProgressState::Snapshot {
                self.send_snapshot_chunk(to);
                continue;
            }
            let has_entries = pr.next_index <= last;
            if !has_entries && (sent_any || empty == IfNothingToSend::Skip) {
                return;
            }
            if !self.send_one_append(to, empty == IfNothingToSend::Commit) {
                return;
            }
            sent_any = true;
            let pr = &self.tracker.progress[&to];
            if pr.state == ProgressState::Probe || !has_entries {
                return;
            }
        }
    }

    /// Builds and queues one AppendEntries for `to`; one without entries
    /// goes quietly when `may_be_quiet` and the follower has answered, or
    /// owes an answer, for everything before it. Returns false when the log
    /// could not be read (a fatal storage error has been recorded).
    fn send_one_append(&mut self, to: NodeId, may_be_quiet: bool) -> bool {
        let next = self.tracker.progress[&to].next_index;
        if next < self.log.first_index() {
            // The entries it needs are compacted away.
            return self.start_snapshot_send(to);
        }
        let prev = next - 1;
        let read = self.log.term(prev).and_then(|prev_term| {
            self.log
                .entries(next, self.log.last_index() + 1, self.config.max_msg_bytes)
                .map(|entries| (prev_term, entries))
        });
        let (prev_term, entries) = match read {
            Ok(v) => v,
            Err(crate::error::StorageError::Compacted(_)) => return self.start_snapshot_send(to),
            Err(e) => {
                tracing::error!(id = %self.id, %to, error = %e, "cannot read log for replication");
                self.fatal = Some(crate::error::StorageError::Fatal(e.to_string()));
                return false;
            }
        };
        let bytes: u64 = entries.iter().map(Entry::size_bytes).sum();
        let count = entries.len();
        let last_sent = entries.last().map_or(prev, |e| e.index);
        let pr = self
            .tracker
            .progress
            .get_mut(&to)
            .expect("progress exists for a peer we send to");
        // Only the commit index, to a follower whose answer through `prev`
        // came or is on its way: a second answer would say nothing new. A
        // probe's answer is always wanted, and so is a transferee's (it
        // may be the one that sends the TimeoutNow).
        let quiet = may_be_quiet
            && count == 0
            && pr.state == ProgressState::Replicate
            && (pr.match_index >= prev || pr.inflights.awaits_answer_through(prev))
            && to != self.lead_transferee;
        pr.sent_entries(last_sent, bytes, count);
        let body = MessageBody::AppendEntries {
            prev_log_index: prev,
            prev_log_term: prev_term,
            entries,
            leader_commit: self.log.committed,
            quiet,
        };
        self.send(to, body);
        true
    }

    /// Follower side of AppendEntries (Raft Figure 2 receiver rules 2–5).
    pub(crate) fn handle_append_entries(&mut self, m: Message) {
        let MessageBody::AppendEntries {
            prev_log_index,
            prev_log_term,
            entries,
            leader_commit,
            quiet,
        } = m.body
        else {
            return;
        };
        // Only an append that carries nothing goes unanswered.
        let quiet = quiet && entries.is_empty();
        let (prev_log_index, prev_log_term, entries) = if prev_log_index < self.log.committed {
            // Everything up to our commit index matches any leader's log
            // (Raft §5.4, leader completeness): skip that part.
            let skip = (self.log.committed - prev_log_index) as usize;
            if skip > entries.len() || entries.is_empty() {
                if quiet {
                    return;
                }
                let index = self.log.committed;
                self.send(
                    m.from,
                    MessageBody::AppendEntriesResponse {
                        reject: false,
                        index,
                        hint_index: 0,
                        hint_term: Term(0),
                    },
                );
                return;
            }
            let mut entries = entries;
            let prev_term = entries[skip - 1].term;
            let rest = entries.split_off(skip);
            (self.log.committed, prev_term, rest)
        } else {
            (prev_log_index, prev_log_term, entries)
        };
        if self.log.match_term(prev_log_index, prev_log_term) {
            let (last_new, changed_from) = self.log.append_after(prev_log_index, &entries);
            if let Some(pos) = changed_from {
                self.note_appended(&entries[pos..]);
            }
            self.log.commit_to(leader_commit.min(last_new));
            if quiet {
                return;
            }
            self.send(
                m.from,
                MessageBody::AppendEntriesResponse {
                    reject: false,
                    index: last_new,
                    hint_index: 0,
                    hint_term: Term(0),
                },
            );
        } else {
            // Tell the leader where our log could match, so it skips a whole
            // term per round trip instead of one entry.
            let probe_at = prev_log_index.min(self.log.last_index());
            let (hint_index, hint_term) = self.log.find_conflict_by_term(probe_at, prev_log_term);
            tracing::debug!(id = %self.id, prev_log_index, %prev_log_term, hint_index, %hint_term, "rejecting append");
            self.send(
                m.from,
                MessageBody::AppendEntriesResponse {
                    reject: true,
                    index: prev_log_index,
                    hint_index,
                    hint_term,
                },
            );
        }
    }

    /// Leader side of an AppendEntries answer.
    pub(crate) fn handle_append_response(&mut self, m: Message) {
        let MessageBody::AppendEntriesResponse {
            reject,
            index,
            hint_index,
            hint_term,
        } = m.body
        else {
            return;
        };
        let now = self.now_ticks;
        let Some(pr) = self.tracker.progress.get_mut(&m.from) else {
            return;
        };
        pr.recent_active = true;
        pr.last_heard_tick = Some(now);
        if reject {
            let next_try = if hint_term > Term(0) {
                self.log.find_conflict_by_term(hint_index, hint_term).0 + 1
            } else {
                hint_index + 1
            };
            let pr = self
                .tracker
                .progress
                .get_mut(&m.from)
                .expect("checked above");
            if pr.maybe_decr_to(index, next_try) {
                tracing::debug!(id = %self.id, follower = %m.from, next = pr.next_index, "backtracking");
                self.send_appends(m.from, IfNothingToSend::Skip);
            }
            return;
        }
        let updated = pr.maybe_update(index);
        match pr.state {
            ProgressState::Probe if updated => pr.become_replicate(),
            ProgressState::Replicate => pr.inflights.free_to(index),
            ProgressState::Probe => {}
            ProgressState::Snapshot => self.snapshot_caught_up(m.from),
        }
        if updated && self.maybe_commit() {
            // Tell every follower the new commit index promptly.
            self.replication_dirty = true;
        } else {
            self.send_appends(m.from, IfNothingToSend::Skip);
        }
        let caught_up = self.tracker.progress[&m.from].match_index == self.log.last_index();
        if m.from == self.lead_transferee && caught_up {
            tracing::info!(id = %self.id, to = %m.from, "transferee caught up: sending TimeoutNow");
            self.send(m.from, MessageBody::TimeoutNow);
        }
    }

    /// Raft §5.3/§5.4.2: advance the commit index to the highest index a
    /// quorum matched, but only through an entry of the current term (the
    /// Figure 8 rule). Returns whether it advanced.
    pub(crate) fn maybe_commit(&mut self) -> bool {
        let candidate = self.tracker.quorum_match_index();
        if candidate <= self.log.committed {
            return false;
        }
        if !self.log.match_term(candidate, self.term) {
            return false;
        }
        let first_in_term = !self.log.match_term(self.log.committed, self.term);
        self.log.commit_to(candidate);
        if first_in_term {
            self.on_first_commit_in_term();
        }
        self.check_self_removal();
        true
    }

    /// Follower side of a heartbeat.
    pub(crate) fn handle_heartbeat(&mut self, from: NodeId, commit: LogIndex, round: u64) {
        self.log.commit_to(commit.min(self.log.last_index()));
        self.send(from, MessageBody::HeartbeatResponse { round });
    }

    /// Leader side of a heartbeat answer.
    pub(crate) fn handle_heartbeat_response(&mut self, from: NodeId, round: u64) {
        let now = self.now_ticks;
        let Some(pr) = self.tracker.progress.get_mut(&from) else {
            return;
        };
        pr.recent_active = true;
        pr.last_heard_tick = Some(now);
        pr.probe_sent = false;
        pr.acked_round = pr.acked_round.max(round);
        // An AppendEntries may have been lost: with a full window, free its
        // oldest slot; and a lagging follower gets an append even when the
        // leader believes everything was sent, which either carries entries
        // or is rejected and restarts probing.
        if pr.state == ProgressState::Replicate && pr.inflights.is_full() {
            pr.inflights.free_first();
        }
        let in_snapshot = pr.state == ProgressState::Snapshot;
        let lagging = pr.match_index < self.log.last_index();
        if in_snapshot {
            self.rewind_snapshot_send(from, round);
        }
        if lagging {
            self.send_appends(from, IfNothingToSend::Ask);
        }
        self.on_round_acked();
    }

    /// Sends a heartbeat of a new round to every other member.
    pub(crate) fn broadcast_heartbeat(&mut self) {
        let round = self.reads.start_round(self.now_ticks);
        let id = self.id;
        if let Some(p) = self.tracker.progress.get_mut(&id) {
            p.acked_round = round;
        }
        let peers: Vec<(NodeId, LogIndex)> = self
            .tracker
            .progress
            .iter()
            .filter(|(pid, _)| **pid != id)
            .map(|(pid, p)| (*pid, p.match_index))
            .collect();
        for (to, matched) in peers {
            let commit = self.log.committed.min(matched);
            self.send(to, MessageBody::Heartbeat { commit, round });
        }
        self.on_round_acked();
    }
}
