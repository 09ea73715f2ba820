//! Leader election (Raft §5.2, §5.4.1) with pre-vote (thesis §9.6) and the
//! leader-lease vote check that check-quorum relies on (thesis §4.2.3, §6.2).

use crate::message::{Message, MessageBody};
use crate::raft::Raft;
use crate::storage::Storage;
use crate::types::{NodeId, Role};

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
            }
            self.send(
                m.from,
                MessageBody::RequestVoteResponse { reject: !granted },
            );
        }
        tracing::debug!(id = %self.id, candidate = %m.from, term = %m.term, pre, granted, "vote request");
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
