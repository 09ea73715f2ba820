//! An in-memory Flotilla cluster behind [`NodeAdmin`], for reconcile tests:
//! it records every call, keeps the membership rules the nodes enforce
//! (learners only, promotion only when caught up, MoveLeader only on the
//! leader, a quorum to answer linearizable calls) and lets the test play
//! the kubelet: start pods, stop them, make a member lag.

use super::{AdminError, Member, MemberId, NodeAdmin, NodeStatus};
use crate::names::ClusterNames;
use std::sync::{Arc, Mutex, MutexGuard};

/// One call the operator made, as the test asserts it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AdminCall {
    /// MemberAdd of a peer URL.
    Add { peer_url: String, learner: bool },
    /// MemberPromote.
    Promote(MemberId),
    /// MemberRemove.
    Remove(MemberId),
    /// MoveLeader, asked of the member at `via` (its ordinal).
    MoveLeader { via: u32, to: MemberId },
}

#[derive(Clone, Debug)]
struct FakeMember {
    id: MemberId,
    ordinal: u32,
    learner: bool,
    /// A founder is a voter from the start but in the member table only
    /// once it has started and published itself (as Flotilla's nodes do).
    founder: bool,
    started: bool,
    running: bool,
    applied: u64,
    lagging: bool,
}

#[derive(Debug)]
struct State {
    names: ClusterNames,
    members: Vec<FakeMember>,
    leader: Option<MemberId>,
    term: u64,
    commit: u64,
    next_id: u64,
    calls: Vec<AdminCall>,
    lagging: Vec<u32>,
    down: Vec<u32>,
    refuse_next: Option<String>,
}

/// The fake cluster; clones share it.
#[derive(Clone, Debug)]
pub struct FakeCluster {
    state: Arc<Mutex<State>>,
}

const LAG_ENTRIES: u64 = 100_000;

impl FakeCluster {
    /// A cluster founded by `founders` members, none running yet (their
    /// pods do not exist); ordinal 0 leads once they run.
    pub fn founded(names: &ClusterNames, founders: u32) -> Self {
        let members = (0..founders)
            .map(|o| FakeMember {
                id: MemberId(0x1000 + u64::from(o)),
                ordinal: o,
                learner: false,
                founder: true,
                started: false,
                running: false,
                applied: 50,
                lagging: false,
            })
            .collect::<Vec<_>>();
        let leader = members.first().map(|m| m.id);
        FakeCluster {
            state: Arc::new(Mutex::new(State {
                names: names.clone(),
                members,
                leader,
                term: 2,
                commit: 50,
                next_id: 0x2000,
                calls: Vec::new(),
                lagging: Vec::new(),
                down: Vec::new(),
                refuse_next: None,
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("fake cluster lock")
    }

    /// Every membership call so far, in order (Status and MemberList are reads and not recorded).
    pub fn calls(&self) -> Vec<AdminCall> {
        self.lock().calls.clone()
    }

    /// Forgets the recorded calls.
    pub fn clear_calls(&self) {
        self.lock().calls.clear();
    }

    /// Member ordinals in the membership, with whether each is a learner.
    pub fn membership(&self) -> Vec<(u32, bool)> {
        let mut m: Vec<_> = self
            .lock()
            .members
            .iter()
            .map(|m| (m.ordinal, m.learner))
            .collect();
        m.sort();
        m
    }

    /// The id of the member at `ordinal`.
    pub fn id_of(&self, ordinal: u32) -> MemberId {
        self.lock()
            .members
            .iter()
            .find(|m| m.ordinal == ordinal)
            .map(|m| m.id)
            .expect("no such member")
    }

    /// The leader's ordinal.
    pub fn leader_ordinal(&self) -> Option<u32> {
        let s = self.lock();
        let leader = s.leader?;
        s.members.iter().find(|m| m.id == leader).map(|m| m.ordinal)
    }

    /// Makes `ordinal` the leader (a new term).
    pub fn set_leader(&self, ordinal: u32) {
        let mut s = self.lock();
        let id = s
            .members
            .iter()
            .find(|m| m.ordinal == ordinal)
            .map(|m| m.id);
        s.leader = id;
        s.term += 1;
    }

    /// The kubelet's side: pods `0..replicas` run, the others do not. A
    /// member whose pod runs starts (publishes its name) and catches up
    /// unless it is lagging or down ([`FakeCluster::set_running`]). A
    /// running leader stays; a stopped one is replaced by the lowest
    /// running voter.
    pub fn set_pods(&self, replicas: u32) {
        let mut s = self.lock();
        let commit = s.commit;
        let down = s.down.clone();
        for m in &mut s.members {
            m.running = m.ordinal < replicas && !down.contains(&m.ordinal);
            if m.running {
                m.started = true;
                m.applied = if m.lagging {
                    commit.saturating_sub(LAG_ENTRIES)
                } else {
                    commit
                };
            }
        }
        Self::elect_if_needed(&mut s);
    }

    /// Takes the member at `ordinal` down (its process fails, whatever
    /// its pod does) or brings it back.
    pub fn set_running(&self, ordinal: u32, running: bool) {
        let mut s = self.lock();
        let commit = s.commit;
        s.down.retain(|&o| o != ordinal);
        if !running {
            s.down.push(ordinal);
        }
        if let Some(m) = s.members.iter_mut().find(|m| m.ordinal == ordinal) {
            m.running = running;
            if running {
                m.started = true;
                m.applied = if m.lagging {
                    commit.saturating_sub(LAG_ENTRIES)
                } else {
                    commit
                };
            }
        }
        Self::elect_if_needed(&mut s);
    }

    /// Makes the member at `ordinal` (present or added later) never catch up.
    pub fn set_lagging(&self, ordinal: u32) {
        let mut s = self.lock();
        s.lagging.push(ordinal);
        s.commit = s.commit.max(LAG_ENTRIES * 2);
        let commit = s.commit;
        for m in &mut s.members {
            if m.ordinal == ordinal {
                m.lagging = true;
                m.applied = commit.saturating_sub(LAG_ENTRIES);
            } else if m.running {
                m.applied = commit;
            }
        }
    }

    /// The next membership call (add, promote, remove, move leader) is
    /// refused with `message`, after it is recorded.
    pub fn refuse_next(&self, message: &str) {
        self.lock().refuse_next = Some(message.to_string());
    }

    fn take_refusal(s: &mut State) -> Result<(), AdminError> {
        match s.refuse_next.take() {
            Some(m) => Err(Self::refused(&m)),
            None => Ok(()),
        }
    }

    /// Lets a lagging member catch up.
    pub fn set_caught_up(&self, ordinal: u32) {
        let mut s = self.lock();
        let commit = s.commit;
        s.lagging.retain(|&o| o != ordinal);
        if let Some(m) = s.members.iter_mut().find(|m| m.ordinal == ordinal) {
            m.lagging = false;
            if m.running {
                m.applied = commit;
            }
        }
    }

    /// Whether the member at `ordinal` runs, has started and is caught up
    /// (what its `/readyz` would say).
    pub fn ready(&self, ordinal: u32) -> bool {
        let s = self.lock();
        Self::has_quorum(&s)
            && s.members
                .iter()
                .any(|m| m.ordinal == ordinal && m.running && m.started && !m.lagging)
    }

    fn elect_if_needed(s: &mut State) {
        let leader_runs = s
            .members
            .iter()
            .any(|m| Some(m.id) == s.leader && m.running && !m.learner);
        if !leader_runs {
            let voters = s.members.iter().filter(|m| !m.learner).count();
            let running: Vec<_> = s
                .members
                .iter()
                .filter(|m| !m.learner && m.running)
                .collect();
            s.leader = if running.len() > voters / 2 {
                running.iter().min_by_key(|m| m.ordinal).map(|m| m.id)
            } else {
                None
            };
            s.term += 1;
        }
    }

    fn has_quorum(s: &State) -> bool {
        let voters = s.members.iter().filter(|m| !m.learner).count();
        let running = s.members.iter().filter(|m| !m.learner && m.running).count();
        s.leader.is_some() && running > voters / 2
    }

    fn running_endpoint(s: &State, endpoints: &[String]) -> Result<(), AdminError> {
        let reachable = endpoints.iter().any(|e| {
            s.members
                .iter()
                .any(|m| m.running && s.names.client_url(m.ordinal) == *e)
        });
        if endpoints.is_empty() {
            return Err(AdminError::NoEndpoints);
        }
        if !reachable || !Self::has_quorum(s) {
            return Err(AdminError::Unreachable {
                endpoints: endpoints.join(","),
                reason: "connection refused".to_string(),
            });
        }
        Ok(())
    }

    fn refused(message: &str) -> AdminError {
        AdminError::Refused {
            endpoint: "fake".to_string(),
            code: "FailedPrecondition".to_string(),
            message: message.to_string(),
        }
    }
}

impl NodeAdmin for FakeCluster {
    async fn member_list(&self, endpoints: &[String]) -> Result<Vec<Member>, AdminError> {
        let s = self.lock();
        Self::running_endpoint(&s, endpoints)?;
        Ok(s.members
            .iter()
            .filter(|m| m.started || !m.founder)
            .map(|m| Member {
                id: m.id,
                name: if m.started {
                    s.names.pod(m.ordinal)
                } else {
                    String::new()
                },
                peer_urls: vec![s.names.peer_url(m.ordinal)],
                is_learner: m.learner,
            })
            .collect())
    }

    async fn member_add(
        &self,
        endpoints: &[String],
        peer_url: &str,
        learner: bool,
    ) -> Result<Member, AdminError> {
        let mut s = self.lock();
        Self::running_endpoint(&s, endpoints)?;
        s.calls.push(AdminCall::Add {
            peer_url: peer_url.to_string(),
            learner,
        });
        Self::take_refusal(&mut s)?;
        if !learner {
            return Err(Self::refused("add the member as a learner first"));
        }
        let ordinal = s
            .names
            .ordinal_of_peer_url(peer_url)
            .expect("a pod's peer URL");
        if s.members.iter().any(|m| m.ordinal == ordinal) {
            return Err(Self::refused("etcdserver: Peer URLs already exists"));
        }
        let id = MemberId(s.next_id);
        s.next_id += 1;
        let lagging = s.lagging.contains(&ordinal);
        s.members.push(FakeMember {
            id,
            ordinal,
            learner: true,
            founder: false,
            started: false,
            running: false,
            applied: 0,
            lagging,
        });
        Ok(Member {
            id,
            name: String::new(),
            peer_urls: vec![peer_url.to_string()],
            is_learner: true,
        })
    }

    async fn member_promote(&self, endpoints: &[String], id: MemberId) -> Result<(), AdminError> {
        let mut s = self.lock();
        Self::running_endpoint(&s, endpoints)?;
        s.calls.push(AdminCall::Promote(id));
        Self::take_refusal(&mut s)?;
        let commit = s.commit;
        let m = s
            .members
            .iter_mut()
            .find(|m| m.id == id)
            .ok_or_else(|| Self::refused("etcdserver: member not found"))?;
        if !m.learner || !m.running || m.applied + 1000 < commit {
            return Err(Self::refused(
                "etcdserver: can only promote a learner member which is in sync with leader",
            ));
        }
        m.learner = false;
        Ok(())
    }

    async fn member_remove(&self, endpoints: &[String], id: MemberId) -> Result<(), AdminError> {
        let mut s = self.lock();
        Self::running_endpoint(&s, endpoints)?;
        s.calls.push(AdminCall::Remove(id));
        Self::take_refusal(&mut s)?;
        let before = s.members.len();
        s.members.retain(|m| m.id != id);
        if s.members.len() == before {
            return Err(Self::refused("etcdserver: member not found"));
        }
        if s.leader == Some(id) {
            s.leader = None;
            Self::elect_if_needed(&mut s);
        }
        Ok(())
    }

    async fn status(&self, endpoint: &str) -> Result<NodeStatus, AdminError> {
        let s = self.lock();
        let m = s
            .members
            .iter()
            .find(|m| m.running && s.names.client_url(m.ordinal) == endpoint)
            .ok_or_else(|| AdminError::Unreachable {
                endpoints: endpoint.to_string(),
                reason: "connection refused".to_string(),
            })?;
        let leader = if Self::has_quorum(&s) {
            s.leader.unwrap_or_default()
        } else {
            MemberId(0)
        };
        Ok(NodeStatus {
            member_id: m.id,
            leader,
            term: s.term,
            commit_index: s.commit,
            applied_index: m.applied,
            is_learner: m.learner,
        })
    }

    async fn move_leader(&self, leader_endpoint: &str, to: MemberId) -> Result<(), AdminError> {
        let mut s = self.lock();
        let via = s
            .members
            .iter()
            .find(|m| m.running && s.names.client_url(m.ordinal) == leader_endpoint)
            .map(|m| (m.ordinal, m.id))
            .ok_or_else(|| AdminError::Unreachable {
                endpoints: leader_endpoint.to_string(),
                reason: "connection refused".to_string(),
            })?;
        s.calls.push(AdminCall::MoveLeader { via: via.0, to });
        Self::take_refusal(&mut s)?;
        if s.leader != Some(via.1) {
            return Err(Self::refused("etcdserver: not leader"));
        }
        let target_ok = s
            .members
            .iter()
            .any(|m| m.id == to && m.running && !m.learner);
        if !target_ok {
            return Err(Self::refused("etcdserver: bad leader transferee"));
        }
        s.leader = Some(to);
        s.term += 1;
        Ok(())
    }
}
