//! One Kafka consumer group at its coordinator: the rendezvous of Kafka's
//! group protocol with client-side assignment (JoinGroup, SyncGroup,
//! Heartbeat, LeaveGroup, session expiry). Pure: no IO, no clock of its own;
//! every call takes `now`, and answers to requests that had to wait come back
//! as [`Reply`]s addressed to the [`Waiter`] the caller gave.
//!
//! States (Kafka's names):
//!
//! - `Empty`: no members.
//! - `PreparingRebalance`: a rebalance started; every member must send
//!   JoinGroup again. The round completes when every member has rejoined,
//!   or when the rebalance timeout (the largest of the members') passes;
//!   members that did not rejoin by then are removed.
//! - `CompletingRebalance`: the new generation is out; members wait in
//!   SyncGroup for the leader's assignments.
//! - `Stable`: the leader's assignments were handed out.
//!
//! A rebalance starts when a member joins (or rejoins with other protocols,
//! or is the leader), leaves, or its session expires (no heartbeat, join or
//! sync for its session timeout). A member waiting in JoinGroup or SyncGroup
//! does not expire while it waits.
//!
//! Static membership (`group.instance.id`) is not implemented: a member's
//! instance id is kept and shown, but the member is treated as dynamic.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// Who waits for an answer: a number the caller chooses, unique among its
/// outstanding requests.
pub type Waiter = u64;

/// Kafka error codes the group protocol answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupError {
    /// `UNKNOWN_SERVER_ERROR` (-1).
    UnknownServer,
    /// `UNKNOWN_TOPIC_OR_PARTITION` (3).
    UnknownTopicOrPartition,
    /// `OFFSET_METADATA_TOO_LARGE` (12).
    OffsetMetadataTooLarge,
    /// `COORDINATOR_NOT_AVAILABLE` (15).
    CoordinatorNotAvailable,
    /// `NOT_COORDINATOR` (16).
    NotCoordinator,
    /// `ILLEGAL_GENERATION` (22).
    IllegalGeneration,
    /// `INCONSISTENT_GROUP_PROTOCOL` (23).
    InconsistentGroupProtocol,
    /// `INVALID_GROUP_ID` (24).
    InvalidGroupId,
    /// `UNKNOWN_MEMBER_ID` (25).
    UnknownMemberId,
    /// `INVALID_SESSION_TIMEOUT` (26).
    InvalidSessionTimeout,
    /// `REBALANCE_IN_PROGRESS` (27).
    RebalanceInProgress,
    /// `INVALID_COMMIT_OFFSET_SIZE` (28).
    InvalidCommitOffsetSize,
    /// `INVALID_REQUEST` (42).
    InvalidRequest,
    /// `MEMBER_ID_REQUIRED` (79).
    MemberIdRequired,
    /// `GROUP_MAX_SIZE_REACHED` (81).
    GroupMaxSizeReached,
}

impl GroupError {
    /// Kafka's numeric code.
    pub fn code(self) -> i16 {
        match self {
            GroupError::UnknownServer => -1,
            GroupError::UnknownTopicOrPartition => 3,
            GroupError::OffsetMetadataTooLarge => 12,
            GroupError::CoordinatorNotAvailable => 15,
            GroupError::NotCoordinator => 16,
            GroupError::IllegalGeneration => 22,
            GroupError::InconsistentGroupProtocol => 23,
            GroupError::InvalidGroupId => 24,
            GroupError::UnknownMemberId => 25,
            GroupError::InvalidSessionTimeout => 26,
            GroupError::RebalanceInProgress => 27,
            GroupError::InvalidCommitOffsetSize => 28,
            GroupError::InvalidRequest => 42,
            GroupError::MemberIdRequired => 79,
            GroupError::GroupMaxSizeReached => 81,
        }
    }
}

/// Bounds of one group.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most members (joined or with a member id handed out).
    pub members_max: usize,
    /// Session timeouts accepted.
    pub session_timeout: (Duration, Duration),
    /// Longest rebalance timeout honoured (longer ones are capped).
    pub rebalance_timeout_max: Duration,
    /// Most protocols one member offers.
    pub protocols_max: usize,
    /// Most bytes of one member's protocol metadata (all protocols) or of
    /// one assignment.
    pub metadata_bytes_max: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            members_max: 1000,
            session_timeout: (Duration::from_millis(1000), Duration::from_secs(300)),
            rebalance_timeout_max: Duration::from_secs(300),
            protocols_max: 16,
            metadata_bytes_max: 256 << 10,
        }
    }
}

/// Kafka's group states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// No members.
    Empty,
    /// Waiting for the members to rejoin.
    PreparingRebalance,
    /// Waiting for the leader's assignments.
    CompletingRebalance,
    /// Assignments handed out.
    Stable,
}

impl State {
    /// The name Kafka's DescribeGroups and ListGroups use.
    pub fn name(self) -> &'static str {
        match self {
            State::Empty => "Empty",
            State::PreparingRebalance => "PreparingRebalance",
            State::CompletingRebalance => "CompletingRebalance",
            State::Stable => "Stable",
        }
    }
}

/// A JoinGroup request.
#[derive(Debug, Clone, Default)]
pub struct JoinRequest {
    /// Empty for a new member.
    pub member_id: String,
    /// `group.instance.id` (kept, not acted on).
    pub group_instance_id: Option<String>,
    /// The client's id.
    pub client_id: String,
    /// The client's address.
    pub client_host: String,
    /// Session timeout.
    pub session_timeout: Duration,
    /// Rebalance timeout (JoinGroup v0 has none: the session timeout).
    pub rebalance_timeout: Duration,
    /// E.g. `consumer`.
    pub protocol_type: String,
    /// (name, metadata) in the member's order of preference.
    pub protocols: Vec<(String, Vec<u8>)>,
    /// JoinGroup v4+: a new member first gets MEMBER_ID_REQUIRED with its id
    /// and joins again with it.
    pub require_known_member_id: bool,
}

/// A member as the leader sees it in the JoinGroup answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinedMember {
    /// Member id.
    pub member_id: String,
    /// Its instance id.
    pub group_instance_id: Option<String>,
    /// Its metadata for the chosen protocol.
    pub metadata: Vec<u8>,
}

/// The answer to a JoinGroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinResponse {
    /// Error, if any (the other fields may still be set, e.g. the member
    /// id with MEMBER_ID_REQUIRED).
    pub error: Option<GroupError>,
    /// The generation (-1 on error).
    pub generation: i32,
    /// The protocol type.
    pub protocol_type: String,
    /// The protocol chosen.
    pub protocol: String,
    /// The leader's member id.
    pub leader: String,
    /// The member's id.
    pub member_id: String,
    /// Every member, to the leader only.
    pub members: Vec<JoinedMember>,
}

impl JoinResponse {
    /// An error answer.
    pub fn error(error: GroupError, member_id: &str) -> JoinResponse {
        JoinResponse {
            error: Some(error),
            generation: -1,
            protocol_type: String::new(),
            protocol: String::new(),
            leader: String::new(),
            member_id: member_id.to_string(),
            members: Vec::new(),
        }
    }
}

/// The answer to a SyncGroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncResponse {
    /// Error, if any.
    pub error: Option<GroupError>,
    /// The protocol type.
    pub protocol_type: String,
    /// The protocol.
    pub protocol: String,
    /// The member's assignment.
    pub assignment: Vec<u8>,
}

impl SyncResponse {
    /// An error answer.
    pub fn error(error: GroupError) -> SyncResponse {
        SyncResponse {
            error: Some(error),
            protocol_type: String::new(),
            protocol: String::new(),
            assignment: Vec::new(),
        }
    }
}

/// An answer to a request that waited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// To a JoinGroup.
    Join(JoinResponse),
    /// To a SyncGroup.
    Sync(SyncResponse),
}

/// Answers to deliver: (waiter, answer).
pub type Replies = Vec<(Waiter, Reply)>;

/// A member as DescribeGroups shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberDescription {
    /// Member id.
    pub member_id: String,
    /// Instance id.
    pub group_instance_id: Option<String>,
    /// Client id.
    pub client_id: String,
    /// Client host.
    pub client_host: String,
    /// Metadata for the chosen protocol.
    pub metadata: Vec<u8>,
    /// Its assignment.
    pub assignment: Vec<u8>,
}

#[derive(Debug, Clone)]
struct Member {
    group_instance_id: Option<String>,
    client_id: String,
    client_host: String,
    session_timeout: Duration,
    rebalance_timeout: Duration,
    protocols: Vec<(String, Vec<u8>)>,
    assignment: Vec<u8>,
    last_seen: Instant,
    join_waiter: Option<Waiter>,
    sync_waiter: Option<Waiter>,
}

/// One group's state at its coordinator.
#[derive(Debug, Clone)]
pub struct Group {
    limits: Limits,
    state: State,
    generation: i32,
    protocol_type: String,
    protocol: String,
    leader: String,
    members: BTreeMap<String, Member>,
    /// Ids handed out with MEMBER_ID_REQUIRED, not yet joined, with when
    /// they expire.
    pending: BTreeMap<String, Instant>,
    rebalance_deadline: Option<Instant>,
}

impl Group {
    /// A group with no members whose last generation was `generation` (the
    /// next one is `generation + 1`).
    pub fn new(generation: i32, limits: Limits) -> Group {
        Group {
            limits,
            state: State::Empty,
            generation,
            protocol_type: String::new(),
            protocol: String::new(),
            leader: String::new(),
            members: BTreeMap::new(),
            pending: BTreeMap::new(),
            rebalance_deadline: None,
        }
    }

    /// The state.
    pub fn state(&self) -> State {
        self.state
    }

    /// The current generation.
    pub fn generation(&self) -> i32 {
        self.generation
    }

    /// The protocol type (empty before the first member).
    pub fn protocol_type(&self) -> &str {
        &self.protocol_type
    }

    /// The protocol chosen in the current generation.
    pub fn protocol(&self) -> &str {
        &self.protocol
    }

    /// The leader's member id.
    pub fn leader(&self) -> &str {
        &self.leader
    }

    /// Member ids.
    pub fn member_ids(&self) -> Vec<String> {
        self.members.keys().cloned().collect()
    }

    /// Whether the group has no members (and no member ids pending).
    pub fn is_empty(&self) -> bool {
        self.members.is_empty() && self.pending.is_empty()
    }

    /// Whether any request waits on this group.
    pub fn has_waiters(&self) -> bool {
        self.members
            .values()
            .any(|m| m.join_waiter.is_some() || m.sync_waiter.is_some())
    }

    /// The members as DescribeGroups shows them.
    pub fn describe(&self) -> Vec<MemberDescription> {
        self.members
            .iter()
            .map(|(id, m)| MemberDescription {
                member_id: id.clone(),
                group_instance_id: m.group_instance_id.clone(),
                client_id: m.client_id.clone(),
                client_host: m.client_host.clone(),
                metadata: m
                    .protocols
                    .iter()
                    .find(|(n, _)| *n == self.protocol)
                    .map(|(_, md)| md.clone())
                    .unwrap_or_default(),
                assignment: m.assignment.clone(),
            })
            .collect()
    }

    fn check_join(&self, req: &JoinRequest) -> Result<(), GroupError> {
        let (lo, hi) = self.limits.session_timeout;
        if req.session_timeout < lo || req.session_timeout > hi {
            return Err(GroupError::InvalidSessionTimeout);
        }
        if req.protocol_type.is_empty()
            || req.protocols.is_empty()
            || req.protocols.len() > self.limits.protocols_max
            || req.protocols.iter().map(|(_, m)| m.len()).sum::<usize>()
                > self.limits.metadata_bytes_max
        {
            return Err(GroupError::InconsistentGroupProtocol);
        }
        if !self.members.is_empty() {
            if req.protocol_type != self.protocol_type {
                return Err(GroupError::InconsistentGroupProtocol);
            }
            // Some protocol every other member also offers.
            let shared = req.protocols.iter().any(|(name, _)| {
                self.members
                    .iter()
                    .filter(|(id, _)| **id != req.member_id)
                    .all(|(_, m)| m.protocols.iter().any(|(n, _)| n == name))
            });
            if !shared {
                return Err(GroupError::InconsistentGroupProtocol);
            }
        }
        Ok(())
    }

    /// JoinGroup from `waiter`. `new_member_id` names a member that joins
    /// with an empty id (the caller makes it unique). The answer, to
    /// `waiter` and to others, is in the returned replies; none for
    /// `waiter` means it waits (see [`Group::tick`] for the bound).
    pub fn join(
        &mut self,
        now: Instant,
        waiter: Waiter,
        mut req: JoinRequest,
        new_member_id: &str,
    ) -> Replies {
        let mut out = Replies::new();
        self.expire(now, &mut out);
        if let Err(e) = self.check_join(&req) {
            out.push((waiter, Reply::Join(JoinResponse::error(e, &req.member_id))));
            return out;
        }
        req.rebalance_timeout = req
            .rebalance_timeout
            .clamp(req.session_timeout, self.limits.rebalance_timeout_max);
        let full = self.members.len() + self.pending.len() >= self.limits.members_max;
        if req.member_id.is_empty() {
            if full {
                out.push((
                    waiter,
                    Reply::Join(JoinResponse::error(GroupError::GroupMaxSizeReached, "")),
                ));
                return out;
            }
            if req.require_known_member_id {
                self.pending
                    .insert(new_member_id.to_string(), now + req.session_timeout);
                out.push((
                    waiter,
                    Reply::Join(JoinResponse::error(
                        GroupError::MemberIdRequired,
                        new_member_id,
                    )),
                ));
                return out;
            }
            req.member_id = new_member_id.to_string();
            self.add_member(now, waiter, req, &mut out);
            return out;
        }
        if self.pending.remove(&req.member_id).is_some() {
            self.add_member(now, waiter, req, &mut out);
            return out;
        }
        let Some(m) = self.members.get_mut(&req.member_id) else {
            out.push((
                waiter,
                Reply::Join(JoinResponse::error(
                    GroupError::UnknownMemberId,
                    &req.member_id,
                )),
            ));
            return out;
        };
        // A second JoinGroup from the same member replaces the first.
        if let Some(old) = m.join_waiter.take() {
            out.push((
                old,
                Reply::Join(JoinResponse::error(
                    GroupError::RebalanceInProgress,
                    &req.member_id,
                )),
            ));
        }
        if let Some(old) = m.sync_waiter.take() {
            out.push((
                old,
                Reply::Sync(SyncResponse::error(GroupError::RebalanceInProgress)),
            ));
        }
        let same = m.protocols == req.protocols;
        m.group_instance_id = req.group_instance_id;
        m.client_id = req.client_id;
        m.client_host = req.client_host;
        m.session_timeout = req.session_timeout;
        m.rebalance_timeout = req.rebalance_timeout;
        m.protocols = req.protocols;
        m.last_seen = now;
        m.join_waiter = Some(waiter);
        let id = req.member_id;
        match self.state {
            State::Stable | State::CompletingRebalance if same && id != self.leader => {
                // Nothing changed: the current generation stands.
                let m = self.members.get_mut(&id).expect("member present");
                m.join_waiter = None;
                out.push((waiter, Reply::Join(self.join_response(&id))));
            }
            _ => self.prepare_rebalance(now, &mut out),
        }
        out
    }

    fn add_member(&mut self, now: Instant, waiter: Waiter, req: JoinRequest, out: &mut Replies) {
        if self.members.is_empty() {
            self.protocol_type = req.protocol_type.clone();
        }
        self.members.insert(
            req.member_id.clone(),
            Member {
                group_instance_id: req.group_instance_id,
                client_id: req.client_id,
                client_host: req.client_host,
                session_timeout: req.session_timeout,
                rebalance_timeout: req.rebalance_timeout,
                protocols: req.protocols,
                assignment: Vec::new(),
                last_seen: now,
                join_waiter: Some(waiter),
                sync_waiter: None,
            },
        );
        self.prepare_rebalance(now, out);
    }

    /// Starts a rebalance (if none is under way) and completes it at once
    /// if every member has rejoined.
    fn prepare_rebalance(&mut self, now: Instant, out: &mut Replies) {
        if self.state != State::PreparingRebalance {
            // Members waiting for the leader's assignments must rejoin.
            for m in self.members.values_mut() {
                m.assignment.clear();
                if let Some(w) = m.sync_waiter.take() {
                    out.push((
                        w,
                        Reply::Sync(SyncResponse::error(GroupError::RebalanceInProgress)),
                    ));
                }
            }
            self.state = State::PreparingRebalance;
            let timeout = self
                .members
                .values()
                .map(|m| m.rebalance_timeout)
                .max()
                .unwrap_or_default();
            self.rebalance_deadline = Some(now + timeout);
        }
        self.maybe_complete_join(now, false, out);
    }

    /// Completes the join round when every member has rejoined, or when
    /// `deadline_passed` (members that did not rejoin are dropped).
    fn maybe_complete_join(&mut self, now: Instant, deadline_passed: bool, out: &mut Replies) {
        if self.state != State::PreparingRebalance {
            return;
        }
        let all = self.members.values().all(|m| m.join_waiter.is_some());
        if !all && !deadline_passed {
            return;
        }
        self.members.retain(|_, m| m.join_waiter.is_some());
        self.generation = self.generation.wrapping_add(1).max(1);
        self.rebalance_deadline = None;
        if self.members.is_empty() {
            self.state = State::Empty;
            self.protocol.clear();
            self.protocol_type.clear();
            self.leader.clear();
            return;
        }
        self.protocol = self.choose_protocol();
        if !self.members.contains_key(&self.leader) {
            self.leader = self.members.keys().next().cloned().unwrap_or_default();
        }
        self.state = State::CompletingRebalance;
        let ids: Vec<String> = self.members.keys().cloned().collect();
        for id in ids {
            let m = self.members.get_mut(&id).expect("member present");
            m.last_seen = now;
            let w = m.join_waiter.take().expect("every member rejoined");
            out.push((w, Reply::Join(self.join_response(&id))));
        }
    }

    /// The protocol every member offers that most members prefer (each
    /// member votes for the first of its protocols all offer); ties go to
    /// the smallest name.
    fn choose_protocol(&self) -> String {
        let common: BTreeSet<&String> = self
            .members
            .values()
            .map(|m| m.protocols.iter().map(|(n, _)| n).collect::<BTreeSet<_>>())
            .reduce(|a, b| a.intersection(&b).copied().collect())
            .unwrap_or_default();
        let mut votes: BTreeMap<&String, usize> = BTreeMap::new();
        for m in self.members.values() {
            if let Some((n, _)) = m.protocols.iter().find(|(n, _)| common.contains(n)) {
                *votes.entry(n).or_default() += 1;
            }
        }
        let best = votes.values().copied().max().unwrap_or(0);
        votes
            .into_iter()
            .find(|(_, v)| *v == best)
            .map(|(n, _)| n.clone())
            .unwrap_or_default()
    }

    fn join_response(&self, id: &str) -> JoinResponse {
        let members = if id == self.leader {
            self.members
                .iter()
                .map(|(mid, m)| JoinedMember {
                    member_id: mid.clone(),
                    group_instance_id: m.group_instance_id.clone(),
                    metadata: m
                        .protocols
                        .iter()
                        .find(|(n, _)| *n == self.protocol)
                        .map(|(_, md)| md.clone())
                        .unwrap_or_default(),
                })
                .collect()
        } else {
            Vec::new()
        };
        JoinResponse {
            error: None,
            generation: self.generation,
            protocol_type: self.protocol_type.clone(),
            protocol: self.protocol.clone(),
            leader: self.leader.clone(),
            member_id: id.to_string(),
            members,
        }
    }

    fn sync_response(&self, id: &str) -> SyncResponse {
        SyncResponse {
            error: None,
            protocol_type: self.protocol_type.clone(),
            protocol: self.protocol.clone(),
            assignment: self
                .members
                .get(id)
                .map(|m| m.assignment.clone())
                .unwrap_or_default(),
        }
    }

    /// SyncGroup from `waiter`: the leader hands out `assignments`; the
    /// others wait for it (see [`Group::tick`] for the bound).
    pub fn sync(
        &mut self,
        now: Instant,
        waiter: Waiter,
        member_id: &str,
        generation: i32,
        assignments: Vec<(String, Vec<u8>)>,
    ) -> Replies {
        let mut out = Replies::new();
        self.expire(now, &mut out);
        let reply = |e| vec![(waiter, Reply::Sync(SyncResponse::error(e)))];
        let Some(m) = self.members.get_mut(member_id) else {
            out.extend(reply(GroupError::UnknownMemberId));
            return out;
        };
        if generation != self.generation {
            out.extend(reply(GroupError::IllegalGeneration));
            return out;
        }
        m.last_seen = now;
        match self.state {
            State::Empty => out.extend(reply(GroupError::UnknownMemberId)),
            State::PreparingRebalance => out.extend(reply(GroupError::RebalanceInProgress)),
            State::Stable => out.push((waiter, Reply::Sync(self.sync_response(member_id)))),
            State::CompletingRebalance => {
                if let Some(old) = m.sync_waiter.replace(waiter) {
                    out.push((
                        old,
                        Reply::Sync(SyncResponse::error(GroupError::RebalanceInProgress)),
                    ));
                }
                if member_id != self.leader {
                    return out;
                }
                if assignments
                    .iter()
                    .any(|(_, a)| a.len() > self.limits.metadata_bytes_max)
                {
                    self.members
                        .get_mut(member_id)
                        .expect("member present")
                        .sync_waiter = None;
                    out.extend(reply(GroupError::InvalidRequest));
                    return out;
                }
                for (id, a) in assignments {
                    if let Some(m) = self.members.get_mut(&id) {
                        m.assignment = a;
                    }
                }
                self.state = State::Stable;
                let ids: Vec<String> = self.members.keys().cloned().collect();
                for id in ids {
                    let m = self.members.get_mut(&id).expect("member present");
                    m.last_seen = now;
                    if let Some(w) = m.sync_waiter.take() {
                        out.push((w, Reply::Sync(self.sync_response(&id))));
                    }
                }
            }
        }
        out
    }

    /// Heartbeat: `Ok` while the member's generation is current and no
    /// rebalance is under way.
    pub fn heartbeat(
        &mut self,
        now: Instant,
        member_id: &str,
        generation: i32,
    ) -> (Result<(), GroupError>, Replies) {
        let mut out = Replies::new();
        self.expire(now, &mut out);
        let Some(m) = self.members.get_mut(member_id) else {
            return (Err(GroupError::UnknownMemberId), out);
        };
        if generation != self.generation {
            return (Err(GroupError::IllegalGeneration), out);
        }
        m.last_seen = now;
        let r = match self.state {
            State::Empty => Err(GroupError::UnknownMemberId),
            State::PreparingRebalance => Err(GroupError::RebalanceInProgress),
            State::CompletingRebalance | State::Stable => Ok(()),
        };
        (r, out)
    }

    /// LeaveGroup of one member.
    pub fn leave(&mut self, now: Instant, member_id: &str) -> (Result<(), GroupError>, Replies) {
        let mut out = Replies::new();
        self.expire(now, &mut out);
        if self.pending.remove(member_id).is_some() {
            return (Ok(()), out);
        }
        if !self.members.contains_key(member_id) {
            return (Err(GroupError::UnknownMemberId), out);
        }
        self.remove_member(now, member_id, &mut out);
        (Ok(()), out)
    }

    fn remove_member(&mut self, now: Instant, id: &str, out: &mut Replies) {
        let Some(m) = self.members.remove(id) else {
            return;
        };
        if let Some(w) = m.join_waiter {
            out.push((
                w,
                Reply::Join(JoinResponse::error(GroupError::UnknownMemberId, id)),
            ));
        }
        if let Some(w) = m.sync_waiter {
            out.push((
                w,
                Reply::Sync(SyncResponse::error(GroupError::UnknownMemberId)),
            ));
        }
        match self.state {
            State::Empty => {}
            State::PreparingRebalance => self.maybe_complete_join(now, false, out),
            State::CompletingRebalance | State::Stable => self.prepare_rebalance(now, out),
        }
    }

    /// Whether the commit of a member at `generation` is allowed now:
    /// generation < 0 with no member id is a simple commit, allowed while
    /// the group has no members.
    pub fn check_commit(
        &mut self,
        now: Instant,
        member_id: &str,
        generation: i32,
    ) -> (Result<(), GroupError>, Replies) {
        let mut out = Replies::new();
        self.expire(now, &mut out);
        if generation < 0 && member_id.is_empty() {
            let r = if self.members.is_empty() {
                Ok(())
            } else {
                Err(GroupError::IllegalGeneration)
            };
            return (r, out);
        }
        let Some(m) = self.members.get_mut(member_id) else {
            return (Err(GroupError::UnknownMemberId), out);
        };
        if generation != self.generation {
            return (Err(GroupError::IllegalGeneration), out);
        }
        m.last_seen = now;
        let r = match self.state {
            State::CompletingRebalance => Err(GroupError::RebalanceInProgress),
            _ => Ok(()),
        };
        (r, out)
    }

    /// Time passes: expires members whose session ran out, member ids
    /// never used, and the join round whose rebalance timeout passed.
    pub fn tick(&mut self, now: Instant) -> Replies {
        let mut out = Replies::new();
        self.expire(now, &mut out);
        out
    }

    /// The next instant [`Group::tick`] has something to do (or `None`).
    pub fn next_deadline(&self) -> Option<Instant> {
        let sessions = self
            .members
            .values()
            .filter(|m| m.join_waiter.is_none() && m.sync_waiter.is_none())
            .map(|m| m.last_seen + m.session_timeout);
        let syncs = self
            .members
            .values()
            .filter(|m| m.sync_waiter.is_some())
            .map(|m| m.last_seen + m.rebalance_timeout);
        sessions
            .chain(syncs)
            .chain(self.pending.values().copied())
            .chain(self.rebalance_deadline)
            .min()
    }

    fn expire(&mut self, now: Instant, out: &mut Replies) {
        self.pending.retain(|_, until| *until > now);
        // A member waiting in SyncGroup longer than its rebalance timeout
        // (the leader never synced) is answered and rejoins.
        for m in self.members.values_mut() {
            if m.sync_waiter.is_some() && m.last_seen + m.rebalance_timeout <= now {
                let w = m.sync_waiter.take().expect("checked");
                m.last_seen = now;
                out.push((
                    w,
                    Reply::Sync(SyncResponse::error(GroupError::RebalanceInProgress)),
                ));
            }
        }
        let expired: Vec<String> = self
            .members
            .iter()
            .filter(|(_, m)| {
                m.join_waiter.is_none()
                    && m.sync_waiter.is_none()
                    && m.last_seen + m.session_timeout <= now
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in expired {
            self.remove_member(now, &id, out);
        }
        if self.rebalance_deadline.is_some_and(|d| d <= now) {
            self.maybe_complete_join(now, true, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(10);

    fn req(member: &str, protocols: &[&str]) -> JoinRequest {
        JoinRequest {
            member_id: member.into(),
            client_id: "c".into(),
            client_host: "/127.0.0.1".into(),
            session_timeout: S,
            rebalance_timeout: Duration::from_secs(30),
            protocol_type: "consumer".into(),
            protocols: protocols
                .iter()
                .map(|p| (p.to_string(), format!("md-{member}-{p}").into_bytes()))
                .collect(),
            ..Default::default()
        }
    }

    fn join_of(out: &Replies, w: Waiter) -> Option<JoinResponse> {
        out.iter().find_map(|(x, r)| match r {
            Reply::Join(j) if *x == w => Some(j.clone()),
            _ => None,
        })
    }

    fn sync_of(out: &Replies, w: Waiter) -> Option<SyncResponse> {
        out.iter().find_map(|(x, r)| match r {
            Reply::Sync(s) if *x == w => Some(s.clone()),
            _ => None,
        })
    }

    /// Two members a and b in a stable generation; returns it.
    fn two_stable(g: &mut Group, t: Instant) -> i32 {
        let out = g.join(t, 1, req("", &["range"]), "a");
        let ja = join_of(&out, 1).unwrap();
        assert_eq!(ja.error, None);
        assert_eq!(ja.members.len(), 1, "a leads alone");
        let out = g.sync(t, 2, "a", ja.generation, vec![("a".into(), b"A".to_vec())]);
        assert_eq!(sync_of(&out, 2).unwrap().assignment, b"A");
        // b joins: a rebalance; a learns it by heartbeat and rejoins.
        let out = g.join(t, 3, req("", &["range"]), "b");
        assert!(out.is_empty(), "b waits for a: {out:?}");
        assert_eq!(g.state(), State::PreparingRebalance);
        assert_eq!(
            g.heartbeat(t, "a", ja.generation).0,
            Err(GroupError::RebalanceInProgress)
        );
        let out = g.join(t, 4, req("a", &["range"]), "unused");
        let (ja, jb) = (join_of(&out, 4).unwrap(), join_of(&out, 3).unwrap());
        assert_eq!(ja.generation, jb.generation);
        assert_eq!(ja.generation, 2);
        assert_eq!(ja.leader, "a");
        assert_eq!(jb.leader, "a");
        assert_eq!(jb.member_id, "b");
        assert_eq!(ja.protocol, "range");
        assert_eq!(
            ja.members
                .iter()
                .map(|m| (m.member_id.as_str(), m.metadata.clone()))
                .collect::<Vec<_>>(),
            vec![("a", b"md-a-range".to_vec()), ("b", b"md--range".to_vec())],
            "the leader gets every member's metadata"
        );
        assert!(jb.members.is_empty(), "followers get no member list");
        assert_eq!(g.state(), State::CompletingRebalance);
        // b syncs first and waits for the leader.
        assert!(g.sync(t, 5, "b", 2, vec![]).is_empty());
        let out = g.sync(
            t,
            6,
            "a",
            2,
            vec![("a".into(), b"A2".to_vec()), ("b".into(), b"B2".to_vec())],
        );
        assert_eq!(sync_of(&out, 6).unwrap().assignment, b"A2");
        assert_eq!(sync_of(&out, 5).unwrap().assignment, b"B2");
        assert_eq!(g.state(), State::Stable);
        2
    }

    #[test]
    fn join_sync_rendezvous_of_two_members() {
        let t = Instant::now();
        let mut g = Group::new(0, Limits::default());
        let gn = two_stable(&mut g, t);
        assert_eq!(g.heartbeat(t, "a", gn).0, Ok(()));
        assert_eq!(g.heartbeat(t, "b", gn).0, Ok(()));
        assert_eq!(
            g.heartbeat(t, "b", gn - 1).0,
            Err(GroupError::IllegalGeneration)
        );
        assert_eq!(g.heartbeat(t, "x", gn).0, Err(GroupError::UnknownMemberId));
        // A late sync in Stable gets the member's assignment at once.
        let out = g.sync(t, 9, "b", gn, vec![]);
        assert_eq!(sync_of(&out, 9).unwrap().assignment, b"B2");
        let d = g.describe();
        assert_eq!(d.len(), 2);
        assert_eq!(d[1].assignment, b"B2");
        assert_eq!(d[1].metadata, b"md--range");
    }

    #[test]
    fn a_member_that_does_not_rejoin_is_dropped_at_the_rebalance_timeout() {
        let t = Instant::now();
        let mut g = Group::new(0, Limits::default());
        let gn = two_stable(&mut g, t);
        // c joins; a rejoins; b keeps heartbeating but never rejoins.
        assert!(g.join(t, 10, req("", &["range"]), "c").is_empty());
        assert!(g.join(t, 11, req("a", &["range"]), "-").is_empty());
        for s in [5, 12, 19, 26] {
            let (r, out) = g.heartbeat(t + Duration::from_secs(s), "b", gn);
            assert_eq!(r, Err(GroupError::RebalanceInProgress));
            assert!(out.is_empty());
        }
        assert!(g.tick(t + Duration::from_secs(29)).is_empty());
        let deadline = g.next_deadline().unwrap();
        assert_eq!(deadline, t + Duration::from_secs(30));
        let out = g.tick(deadline);
        let (ja, jc) = (join_of(&out, 11).unwrap(), join_of(&out, 10).unwrap());
        assert_eq!(ja.generation, gn + 1);
        assert_eq!(jc.generation, gn + 1);
        assert_eq!(g.member_ids(), vec!["a".to_string(), "c".to_string()]);
        assert_eq!(
            g.heartbeat(deadline, "b", gn).0,
            Err(GroupError::UnknownMemberId)
        );
    }

    #[test]
    fn leave_starts_a_rebalance_and_the_last_leave_empties_the_group() {
        let t = Instant::now();
        let mut g = Group::new(0, Limits::default());
        let gn = two_stable(&mut g, t);
        let (r, out) = g.leave(t, "a");
        assert_eq!(r, Ok(()));
        assert!(out.is_empty());
        assert_eq!(g.state(), State::PreparingRebalance);
        assert_eq!(
            g.heartbeat(t, "b", gn).0,
            Err(GroupError::RebalanceInProgress)
        );
        let out = g.join(t, 20, req("b", &["range"]), "-");
        let jb = join_of(&out, 20).unwrap();
        assert_eq!(jb.generation, gn + 1);
        assert_eq!(jb.leader, "b", "leadership moves to a remaining member");
        assert_eq!(jb.members.len(), 1);
        assert_eq!(g.leave(t, "b").0, Ok(()));
        assert_eq!(g.state(), State::Empty);
        assert_eq!(g.generation(), gn + 2);
        assert!(g.is_empty());
        assert_eq!(g.leave(t, "b").0, Err(GroupError::UnknownMemberId));
    }

    #[test]
    fn a_silent_member_expires_and_its_waiting_sync_is_released() {
        let t = Instant::now();
        let mut g = Group::new(0, Limits::default());
        let gn = two_stable(&mut g, t);
        // a heartbeats, b goes silent.
        let t1 = t + Duration::from_secs(6);
        assert_eq!(g.heartbeat(t1, "a", gn).0, Ok(()));
        assert!(g.tick(t + S - Duration::from_millis(1)).is_empty());
        assert_eq!(g.next_deadline(), Some(t + S));
        assert!(g.tick(t + S).is_empty());
        assert_eq!(g.member_ids(), vec!["a".to_string()]);
        assert_eq!(g.state(), State::PreparingRebalance);
        let out = g.join(t + S, 30, req("a", &["range"]), "-");
        let ja = join_of(&out, 30).unwrap();
        assert_eq!(ja.generation, gn + 1);

        // A follower waiting in SyncGroup for a leader that never syncs is
        // answered once its rebalance timeout passes, and a leader that went
        // silent expires.
        let t2 = t + S;
        let out = g.join(t2, 31, req("", &["range"]), "d");
        assert!(out.is_empty());
        let out = g.join(t2, 32, req("a", &["range"]), "-");
        let jd = join_of(&out, 31).unwrap();
        assert!(g.sync(t2, 33, "d", jd.generation, vec![]).is_empty());
        let out = g.tick(t2 + Duration::from_secs(30));
        assert_eq!(
            sync_of(&out, 33).unwrap().error,
            Some(GroupError::RebalanceInProgress)
        );
        // a (the leader) never synced nor heartbeated: expired.
        assert_eq!(g.member_ids(), vec!["d".to_string()]);
    }

    #[test]
    fn member_id_required_then_join_with_it() {
        let t = Instant::now();
        let mut g = Group::new(7, Limits::default());
        let mut r = req("", &["range"]);
        r.require_known_member_id = true;
        let out = g.join(t, 1, r, "m-1");
        let j = join_of(&out, 1).unwrap();
        assert_eq!(j.error, Some(GroupError::MemberIdRequired));
        assert_eq!(j.member_id, "m-1");
        assert!(!g.is_empty());
        let out = g.join(t, 2, req("m-1", &["range"]), "-");
        let j = join_of(&out, 2).unwrap();
        assert_eq!(j.error, None);
        assert_eq!(j.generation, 8, "continues after the stored generation");
        // A made-up id is refused.
        let out = g.join(t, 3, req("m-2", &["range"]), "-");
        assert_eq!(
            join_of(&out, 3).unwrap().error,
            Some(GroupError::UnknownMemberId)
        );
        // An id handed out but never used expires.
        let mut r = req("", &["range"]);
        r.require_known_member_id = true;
        g.join(t, 4, r, "m-3");
        g.tick(t + S);
        let out = g.join(t + S, 5, req("m-3", &["range"]), "-");
        assert_eq!(
            join_of(&out, 5).unwrap().error,
            Some(GroupError::UnknownMemberId)
        );
    }

    #[test]
    fn protocols_must_be_shared_and_the_most_preferred_wins() {
        let t = Instant::now();
        let mut g = Group::new(0, Limits::default());
        let out = g.join(t, 1, req("", &["range", "roundrobin"]), "a");
        let ja = join_of(&out, 1).unwrap();
        g.sync(t, 2, "a", ja.generation, vec![]);
        let out = g.join(t, 3, req("", &["sticky"]), "x");
        assert_eq!(
            join_of(&out, 3).unwrap().error,
            Some(GroupError::InconsistentGroupProtocol)
        );
        let mut other = req("", &["range"]);
        other.protocol_type = "connect".into();
        let out = g.join(t, 4, other, "y");
        assert_eq!(
            join_of(&out, 4).unwrap().error,
            Some(GroupError::InconsistentGroupProtocol)
        );
        assert!(
            g.join(t, 5, req("", &["roundrobin", "range"]), "b")
                .is_empty()
        );
        let out = g.join(t, 6, req("", &["roundrobin"]), "c");
        assert!(out.is_empty());
        let out = g.join(t, 7, req("a", &["range", "roundrobin"]), "-");
        assert_eq!(join_of(&out, 7).unwrap().protocol, "roundrobin");
        assert_eq!(join_of(&out, 5).unwrap().protocol, "roundrobin");
    }

    #[test]
    fn commits_are_checked_against_generation_and_member() {
        let t = Instant::now();
        let mut g = Group::new(0, Limits::default());
        assert_eq!(g.check_commit(t, "", -1).0, Ok(()), "simple commit");
        let gn = two_stable(&mut g, t);
        assert_eq!(g.check_commit(t, "a", gn).0, Ok(()));
        assert_eq!(
            g.check_commit(t, "a", gn - 1).0,
            Err(GroupError::IllegalGeneration)
        );
        assert_eq!(
            g.check_commit(t, "z", gn).0,
            Err(GroupError::UnknownMemberId)
        );
        assert_eq!(
            g.check_commit(t, "", -1).0,
            Err(GroupError::IllegalGeneration),
            "no simple commits while the group has members"
        );
        // During a rebalance the old generation may still commit (before
        // rejoining); once the new generation is out it must sync first.
        g.join(t, 40, req("", &["range"]), "c");
        assert_eq!(g.check_commit(t, "a", gn).0, Ok(()));
        g.join(t, 41, req("a", &["range"]), "-");
        g.join(t, 42, req("b", &["range"]), "-");
        assert_eq!(g.state(), State::CompletingRebalance);
        assert_eq!(
            g.check_commit(t, "a", gn + 1).0,
            Err(GroupError::RebalanceInProgress)
        );
        assert_eq!(
            g.check_commit(t, "a", gn).0,
            Err(GroupError::IllegalGeneration)
        );
    }

    #[test]
    fn bounds_and_bad_requests() {
        let t = Instant::now();
        let limits = Limits {
            members_max: 2,
            ..Limits::default()
        };
        let mut g = Group::new(0, limits);
        let mut bad = req("", &["range"]);
        bad.session_timeout = Duration::from_millis(10);
        let out = g.join(t, 1, bad, "a");
        assert_eq!(
            join_of(&out, 1).unwrap().error,
            Some(GroupError::InvalidSessionTimeout)
        );
        let out = g.join(t, 2, req("", &[]), "a");
        assert_eq!(
            join_of(&out, 2).unwrap().error,
            Some(GroupError::InconsistentGroupProtocol)
        );
        g.join(t, 3, req("", &["range"]), "a");
        g.join(t, 4, req("", &["range"]), "b");
        let out = g.join(t, 5, req("", &["range"]), "c");
        assert_eq!(
            join_of(&out, 5).unwrap().error,
            Some(GroupError::GroupMaxSizeReached)
        );
        // A second JoinGroup from a waiting member answers the first.
        let out = g.join(t, 6, req("b", &["range"]), "-");
        assert_eq!(
            join_of(&out, 4).unwrap().error,
            Some(GroupError::RebalanceInProgress)
        );
        assert!(join_of(&out, 6).is_none(), "the second waits for a");
    }
}
