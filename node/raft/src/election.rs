//! Leader election (Raft §5.2, §5.4.1) with pre-vote (thesis §9.6) and the
//! leader-lease vote check that check-quorum relies on (thesis §4.2.3, §6.2).

use crate::message::{Message, MessageBody};
use crate::raft::Raft;
use crate::storage::Storage;
use crate::types::{NodeId, Role};
use rand::Rng;

impl<S: Storage> Raft<S> {
    /// A vote request of a higher term that arrives while this member heard
    /// from a live leader within the minimum election timeout is ignored:
    /// it comes from a member that was cut off, and granting it would depose
    /// a healthy leader (and break its lease). A leadership transfer is the
    /// one exception.
    pub(crate) fn ignores_higher_term_vote(&self, m: &Message) -> bool {
        let forced = match m.body {
            MessageBody::PreVote { .. } => false,
            MessageBody::RequestVote {
                leader_transfer, ..
            } => leader_transfer,
            _ => return false,
        };
        let in_lease = (self.leader.is_some() || self.boot_quiet)
            && self.election_elapsed < self.config.election_ticks;
        self.config.check_quorum && !forced && in_lease
    }

    /// RequestVote and PreVote receiver rules (Raft Figure 2, §5.4.1).
    pub(crate) fn handle_vote_request(&mut self, m: Message) {
        let (last_index, last_term, pre) = match m.body {
            MessageBody::PreVote {
                last_log_index,
                last_log_term,
            } => (last_log_index, last_log_term, true),
            MessageBody::RequestVote {
                last_log_index,
                last_log_term,
                ..
            } => (last_log_index, last_log_term, false),
            _ => return,
        };
        // A real vote goes to one candidate per term; a pre-vote promises
        // nothing, so it may be given for any future term.
        let can_vote = self.vote == m.from
            || (self.vote == NodeId::NONE && self.leader == NodeId::NONE)
            || (pre && m.term > self.term);
        let granted = can_vote && self.log.is_up_to_date(last_index, last_term);
        if pre {
            // A granted pre-vote answers in the asked-for term so that the
            // pre-candidate counts it; a refusal carries ours.
            let term = if granted { m.term } else { self.term };
            self.send_with_term(
                m.from,
                term,
                MessageBody::PreVoteResponse { reject: !granted },
            );
        } else {
            if granted {
                self.vote = m.from;
                self.election_elapsed = 0;
            } else if self.role == Role::Candidate {
                // Another candidate of our own term (a higher term would have
                // made us a follower): it voted for itself as we did, so the
                // vote is split. See `retry_split_vote_soon`.
                self.retry_split_vote_soon();
            }
            self.send(
                m.from,
                MessageBody::RequestVoteResponse { reject: !granted },
            );
        }
        tracing::debug!(id = %self.id, candidate = %m.from, term = %m.term, pre, granted, "vote request");
    }

    /// Brings the next election forward to between a quarter and a half of
    /// the minimum election timeout, drawn from the seeded RNG as every
    /// timeout is.
    ///
    /// Two candidates that campaign in one term each vote for themselves
    /// and refuse the other; when no third voter answers (a 3-member cluster
    /// whose leader died) neither collects a quorum of grants or of
    /// refusals, and each would sit out a whole new randomized timeout
    /// (Raft §5.2's split vote) — in the failover benchmark that added
    /// 270–330 ms to about one leader kill in twenty. The long timeout is
    /// there to protect a live leader's lease, and there is none here: with
    /// pre-vote, each candidate got a quorum of pre-votes, so a quorum had
    /// heard from no leader for a minimum election timeout. The retry starts
    /// with a pre-vote again, which the followers of a leader elected
    /// meanwhile ignore (its lease), so hurrying disturbs nobody; the other
    /// candidate, still leaderless, grants it. The quarter timeout first
    /// leaves time for a third voter's answer, fsync included, to land (it
    /// may still elect one of the two); randomness still separates the two
    /// retries. Without pre-vote a retry raises every term at once and could
    /// depose the leader that such an answer just elected, so the normal
    /// timeout stands.
    ///
    /// Only the current round is shortened: every role change (a campaign,
    /// hearing a leader, stepping down) draws a normal timeout again.
    fn retry_split_vote_soon(&mut self) {
        if !self.config.pre_vote {
            return;
        }
        let half = (self.config.election_ticks / 2).max(1);
        let quarter = (self.config.election_ticks / 4).clamp(1, half);
        let retry_at = self.election_elapsed + self.rng.random_range(quarter..=half);
        if retry_at < self.randomized_election_ticks {
            tracing::debug!(id = %self.id, term = %self.term, retry_at, "split vote: retrying soon");
            self.randomized_election_ticks = retry_at;
        }
    }

    /// An election timeout passed: start a pre-vote, or a campaign.
    pub(crate) fn start_election(&mut self, transfer: bool) {
        if self.config.pre_vote && !transfer {
            self.become_pre_candidate();
        } else {
            self.start_campaign(transfer);
        }
    }

    fn become_pre_candidate(&mut self) {
        // The term does not change: a pre-candidate disturbs nobody.
        self.role = Role::PreCandidate;
        self.leader = NodeId::NONE;
        self.votes.clear();
        self.lead_transferee = NodeId::NONE;
        self.reads.clear();
        self.forwarded.drop_queued();
        tracing::debug!(id = %self.id, term = %self.term, "starting pre-vote");
        let term = self.term.next();
        let body = MessageBody::PreVote {
            last_log_index: self.log.last_index(),
            last_log_term: self.log.last_term(),
        };
        self.record_vote_then_ask(term, body);
    }

    /// Become a candidate of the next term and ask every voter (Raft §5.2).
    pub(crate) fn start_campaign(&mut self, transfer: bool) {
        let term = self.term.next();
        self.become_follower(term, NodeId::NONE);
        self.role = Role::Candidate;
        self.vote = self.id;
        self.forwarded.drop_queued();
        tracing::info!(id = %self.id, term = %self.term, transfer, "campaigning");
        let body = MessageBody::RequestVote {
            last_log_index: self.log.last_index(),
            last_log_term: self.log.last_term(),
            leader_transfer: transfer,
        };
        self.record_vote_then_ask(term, body);
    }

    fn record_vote_then_ask(&mut self, term: crate::types::Term, body: MessageBody) {
        let voters: Vec<NodeId> = self
            .tracker
            .voters()
            .map(|(id, _)| *id)
            .filter(|id| *id != self.id)
            .collect();
        for to in voters {
            self.send_with_term(to, term, body.clone());
        }
        self.record_vote(self.id, true);
    }

    /// Counts a vote; wins or loses once a quorum decided.
    pub(crate) fn record_vote(&mut self, from: NodeId, granted: bool) {
        self.votes.entry(from).or_insert(granted);
        let granted_quorum = self
            .tracker
            .has_quorum(self.votes.iter().filter(|(_, g)| **g).map(|(id, _)| id));
        let rejected_quorum = self
            .tracker
            .has_quorum(self.votes.iter().filter(|(_, g)| !**g).map(|(id, _)| id));
        if granted_quorum {
            match self.role {
                Role::PreCandidate => self.start_campaign(false),
                Role::Candidate => self.become_leader(),
                _ => {}
            }
        } else if rejected_quorum {
            let term = self.term;
            self.become_follower(term, NodeId::NONE);
        }
    }
}
