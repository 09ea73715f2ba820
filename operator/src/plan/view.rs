//! The membership as the plan reasons about it: who leads, how far each
//! member lags, who is healthy.

use crate::admin::MemberId;
use crate::observed::{MemberFacts, Observed};

/// Raft's quorum of `voters`.
pub fn quorum(voters: u32) -> u32 {
    voters / 2 + 1
}

/// One member, judged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberView {
    /// Its id.
    pub id: MemberId,
    /// Its pod ordinal.
    pub ordinal: u32,
    /// A learner.
    pub learner: bool,
    /// Has started at least once (has published its name).
    pub started: bool,
    /// Its term, commit and applied index, when it answered.
    pub term: Option<u64>,
    /// Its commit index.
    pub commit_index: Option<u64>,
    /// Its applied index.
    pub applied_index: Option<u64>,
    /// Entries behind the leader's commit index.
    pub lag: Option<u64>,
    /// Answered, knows a leader and lags at most the bound.
    pub healthy: bool,
    /// Its pod exists and is Ready.
    pub pod_ready: bool,
}

/// The membership, judged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterView {
    /// Members by ordinal (only those with a pod address).
    pub members: Vec<MemberView>,
    /// The leader, as the member with the highest term says.
    pub leader: Option<MemberId>,
}

impl ClusterView {
    /// Judges `members` (all with ordinals) against the pods in `observed`;
    /// a member lagging more than `max_lag_entries` is not healthy.
    pub fn new(members: &[MemberFacts], observed: &Observed, max_lag_entries: u64) -> Self {
        let newest = members
            .iter()
            .filter_map(|m| m.status)
            .filter(|s| s.leader.0 != 0)
            .max_by_key(|s| s.term);
        let leader = newest.map(|s| s.leader);
        let leader_commit = members
            .iter()
            .filter(|m| Some(m.id) == leader)
            .find_map(|m| m.status.map(|s| s.commit_index))
            .or_else(|| {
                members
                    .iter()
                    .filter_map(|m| m.status.map(|s| s.commit_index))
                    .max()
            })
            .unwrap_or(0);
        let mut views: Vec<MemberView> = members
            .iter()
            .filter_map(|m| {
                let ordinal = m.ordinal?;
                let lag = m
                    .status
                    .map(|s| leader_commit.saturating_sub(s.applied_index));
                Some(MemberView {
                    id: m.id,
                    ordinal,
                    learner: m.learner,
                    started: !m.name.is_empty(),
                    term: m.status.map(|s| s.term),
                    commit_index: m.status.map(|s| s.commit_index),
                    applied_index: m.status.map(|s| s.applied_index),
                    lag,
                    healthy: m.status.is_some_and(|s| s.leader.0 != 0)
                        && lag.is_some_and(|l| l <= max_lag_entries),
                    pod_ready: observed
                        .pod(ordinal)
                        .is_some_and(|p| p.ready && !p.terminating),
                })
            })
            .collect();
        views.sort_by_key(|m| m.ordinal);
        ClusterView {
            members: views,
            leader,
        }
    }

    /// Voting members.
    pub fn voters(&self) -> impl Iterator<Item = &MemberView> {
        self.members.iter().filter(|m| !m.learner)
    }

    /// Number of voters.
    pub fn voter_count(&self) -> u32 {
        count(self.voters())
    }

    /// Healthy voters, leaving out `except`.
    pub fn healthy_voters_except(&self, except: Option<MemberId>) -> u32 {
        count(self.voters().filter(|m| m.healthy && Some(m.id) != except))
    }

    /// The member with `id`.
    pub fn member(&self, id: MemberId) -> Option<&MemberView> {
        self.members.iter().find(|m| m.id == id)
    }

    /// The leader's view.
    pub fn leader_member(&self) -> Option<&MemberView> {
        self.leader.and_then(|id| self.member(id))
    }

    /// Whether a healthy quorum of voters stands behind a known leader.
    pub fn available(&self) -> bool {
        self.leader_member().is_some_and(|l| l.healthy)
            && self.healthy_voters_except(None) >= quorum(self.voter_count())
    }

    /// Every member healthy with its pod Ready.
    pub fn all_healthy(&self) -> bool {
        self.members.iter().all(|m| m.healthy && m.pod_ready)
    }

    /// The best voter to hand leadership to, other than the leader and
    /// `except`: healthy, the most caught up, `prefer` first.
    pub fn transfer_target(
        &self,
        except: Option<u32>,
        prefer: impl Fn(&MemberView) -> bool,
    ) -> Option<&MemberView> {
        self.voters()
            .filter(|m| m.healthy && Some(m.id) != self.leader && Some(m.ordinal) != except)
            .max_by_key(|m| (prefer(m), m.applied_index, std::cmp::Reverse(m.ordinal)))
    }

    /// Client endpoints to ask, leader first: members whose pods are up.
    pub fn endpoints(&self, client_url: impl Fn(u32) -> String) -> Vec<String> {
        let mut ordered: Vec<&MemberView> = self.members.iter().filter(|m| m.started).collect();
        ordered.sort_by_key(|m| (Some(m.id) != self.leader, m.ordinal));
        ordered.into_iter().map(|m| client_url(m.ordinal)).collect()
    }
}

fn count<'a>(it: impl Iterator<Item = &'a MemberView>) -> u32 {
    u32::try_from(it.count()).unwrap_or(u32::MAX)
}
