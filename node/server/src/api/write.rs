//! [`Writes`]: the one path every write takes into consensus, whatever its
//! API (STYLE habit 15, as etcd turns KV, Lease and Cluster writes into one
//! internal request). A write is a [`KvCommand`]; [`Writes::submit`]
//! checks it, then the leader serves it here. A follower has the leader
//! append a command that becomes an entry as it is through the peer
//! stream (the driver's peer proposals, when the leader advertises them:
//! [`PEER_PROPOSALS`]), and answers once it applied the entry itself; it
//! hands anything else to the leader over the forwarding stream
//! ([`WriteForwarder`]), where [`serve_here`] serves it the same way. The
//! leader serves a command by its kind:
//!
//! | kind | how |
//! |---|---|
//! | KV writes, lease grants and revokes, publish, member update, seed | proposed as an entry; consecutive ones share `propose_many` |
//! | member add, promote, remove | checked against the applied table on the driver task, then proposed as one membership entry that changes Raft's configuration and the table together |
//! | keepalive, time-to-live | answered from the leader's lessor; never logged |
//!
//! `ARCHITECTURE.md` tells the whole life of a write.

use super::admission::Refusal;
use super::context::ApiContext;
use super::errors::{LeaderHint, driver_status, kv_status, request_too_large};
use super::gate::FeatureGate;
use super::write_forward::{WriteForwarder, check_forwarded};
use crate::driver::{DriverError, PEER_COMMAND_BYTES_MAX, PeerProposalFilter, PeerSupport};
use crate::kv::{KeepAliveError, KvCommand, KvError, KvOp, KvOutput, KvResponse};
use crate::state::NodeStateMachine;
use crate::transport::PEER_PROPOSALS;
use flotilla_proto::etcdserverpb::alarm_request::AlarmAction;
use flotilla_proto::etcdserverpb::{
    AlarmRequest, AlarmType, LeaseKeepAliveRequest, LeaseKeepAliveResponse, LeaseTimeToLiveRequest,
    LeaseTimeToLiveResponse, Member, ResponseHeader,
};
use flotilla_raft::{Bytes, ConfChange, NodeId, Role};
use prost::Message as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tonic::Status;

/// Room for a command's own fields above `max_request_bytes`.
pub const COMMAND_OVERHEAD_BYTES: usize = 64;

/// How long a newly elected leader's lessor may take to be promoted (the
/// expiry loop does it on the status change) before a keepalive gives up.
const PROMOTION_WAIT: Duration = Duration::from_millis(500);
const PROMOTION_POLL: Duration = Duration::from_millis(10);

/// Why a command served here failed.
#[derive(Debug)]
pub(crate) enum WriteError {
    /// The driver refused or lost it (not leader, leader changed, busy).
    Driver(DriverError),
    /// The state machine refused it (the entry, if any, is consumed).
    Kv(KvError),
    /// Refused with this status.
    Status(Status),
}

impl WriteError {
    /// As etcd would answer it.
    pub(crate) fn into_status(self) -> Status {
        match self {
            WriteError::Driver(e) => driver_status(&e, &LeaderHint::default()),
            WriteError::Kv(e) => kv_status(&e),
            WriteError::Status(s) => s,
        }
    }

    fn is_not_leader(&self) -> bool {
        matches!(self, WriteError::Driver(DriverError::NotLeader { .. }))
    }
}

/// What serving one command gave.
pub(crate) type Served = Result<KvResponse, WriteError>;

/// The front door of every write on one member. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Writes {
    ctx: ApiContext,
    forwarder: WriteForwarder,
}

impl Writes {
    /// Writes of the member of `ctx`; a follower hands them to `forwarder`.
    pub fn new(ctx: ApiContext, forwarder: WriteForwarder) -> Self {
        Writes { ctx, forwarder }
    }

    /// Checks `command`, then serves it here when this member leads, or has
    /// the leader serve it. Returns the response (its header's revision
    /// set; the caller fills in the rest of the header) or the status to
    /// answer.
    pub async fn submit(&self, command: KvCommand) -> Result<KvResponse, Status> {
        let as_entry = proposed_as_entry(&command);
        let bytes = self.admit(command)?;
        // A member that knows it follows hands the write on at once,
        // without asking its driver first; one that believes it leads
        // serves, and hands it on if it turns out not to.
        if !self.ctx.raft.state().1 {
            return self.to_leader(bytes, as_entry).await;
        }
        let served = serve_here(&self.ctx, vec![bytes.clone()]).await.pop();
        match served {
            Some(Ok(response)) => Ok(response),
            Some(Err(e)) if e.is_not_leader() => self.to_leader(bytes, as_entry).await,
            Some(Err(e)) => Err(e.into_status()),
            None => Err(Status::internal("flotilla: write outcome missing")),
        }
    }

    /// On a follower: has the leader append `bytes` through the peer
    /// stream when it is an entry as it is (`as_entry`), and answers once
    /// this member applied it; else, or when it was refused unappended (the
    /// driver's refusal too, when the leader or this member does not take
    /// peer proposals), forwards it.
    async fn to_leader(&self, bytes: Bytes, as_entry: bool) -> Result<KvResponse, Status> {
        if as_entry && bytes.len() <= PEER_COMMAND_BYTES_MAX {
            match self.ctx.raft.propose_via_leader(bytes.clone()).await {
                Ok(output) => return output.result.map_err(|e| kv_status(&e)),
                // Nothing was appended: the forwarding stream finds the
                // leader (or gives the command's own refusal).
                Err(DriverError::NotLeader { .. } | DriverError::Rejected(_)) => {}
                Err(e) => return Err(driver_status(&e, &LeaderHint::default())),
            }
        }
        self.forwarder.forward(bytes).await
    }
}

/// On a follower: whether `leader` takes proposals through the peer
/// stream, by what it advertised.
pub fn peer_leader_takes(features: FeatureGate) -> PeerSupport {
    Arc::new(move |leader: NodeId| features.understood_by(leader.0, PEER_PROPOSALS))
}

/// Whether the leader serves `command` by proposing it as one entry as it
/// is ([`serve_here`]'s plain commands), so that a follower may propose it
/// through the peer stream.
fn proposed_as_entry(command: &KvCommand) -> bool {
    match &command.op {
        Some(op) if op.is_conf_change() => false,
        Some(KvOp::LeaseKeepAlive(_) | KvOp::LeaseTimeToLive(_) | KvOp::MemberUpsert(_)) => false,
        Some(_) => true,
        None => false,
    }
}

/// How the leader takes a command a follower proposes through the peer
/// stream: the checks of a forwarded one (within `command_bytes_max`,
/// valid under the leader's own limits: it trusts no follower's), one that
/// is an entry as it is, with the mark and compaction stamps the leader
/// gives its own proposals (`serve_here`); anything else is refused, and
/// the follower forwards it instead, where the refusal gets its error.
pub fn peer_proposal_filter(
    features: FeatureGate,
    limits: crate::kv::RequestLimits,
    command_bytes_max: usize,
) -> PeerProposalFilter {
    Arc::new(move |bytes: Bytes| {
        let mut command = check_forwarded(&bytes, command_bytes_max, &limits).ok()?;
        if !proposed_as_entry(&command) {
            return None;
        }
        if features.stamp(&mut command) {
            Some(command.encode_to_bytes())
        } else {
            Some(bytes)
        }
    })
}

impl Writes {
    /// The checks every write passes before it costs a log entry or a trip
    /// to the leader ([`Admission`](super::Admission): well formed, within
    /// this member's limits and its space quota); the command's bytes,
    /// stamped with the quota. A write past the quota raises the NOSPACE
    /// alarm for this member, as etcd's quota check does, unless it is
    /// raised already.
    fn admit(&self, command: KvCommand) -> Result<Bytes, Status> {
        let Some(op) = &command.op else {
            return Err(Status::invalid_argument(
                "flotilla: a write without an operation",
            ));
        };
        if matches!(op, KvOp::MemberUpsert(_)) {
            return Err(Status::invalid_argument(format!(
                "flotilla: {} is not accepted any more",
                op.name()
            )));
        }
        let bytes = match self.ctx.admission.admit(command) {
            Ok(bytes) => bytes,
            Err(refusal) => {
                if refusal == Refusal::NoSpace {
                    self.raise_nospace();
                }
                return Err(kv_status(&refusal.error()));
            }
        };
        if bytes.len() > self.ctx.max_request_bytes + COMMAND_OVERHEAD_BYTES {
            return Err(request_too_large());
        }
        Ok(bytes)
    }

    /// Proposes NOSPACE for this member, in the background, once at a
    /// time, and only while this member has not seen it raised.
    fn raise_nospace(&self) {
        if self.ctx.admission.nospace_raised()
            || self.ctx.raising_nospace.swap(true, Ordering::AcqRel)
        {
            return;
        }
        let writes = self.clone();
        tokio::spawn(async move {
            let member_id = writes.ctx.member_id;
            let alarm = KvOp::Alarm(AlarmRequest {
                action: AlarmAction::Activate as i32,
                member_id,
                alarm: AlarmType::Nospace as i32,
            });
            match writes.submit(KvCommand::new(alarm)).await {
                Ok(_) => tracing::warn!(
                    member = %format!("{member_id:x}"),
                    "space quota exhausted: NOSPACE alarm raised; writes that add data are refused until it is disarmed"
                ),
                Err(status) => tracing::warn!(%status, "cannot raise the NOSPACE alarm"),
            }
            writes.ctx.raising_nospace.store(false, Ordering::Release);
        });
    }
}

/// Serves `commands` on this member, which believes it leads, in order:
/// each gets its outcome. Used for this member's own clients and for the
/// batches followers forward.
pub(crate) async fn serve_here(ctx: &ApiContext, commands: Vec<Bytes>) -> Vec<Served> {
    let mut outcomes: Vec<Served> = Vec::with_capacity(commands.len());
    let mut plain: Vec<Bytes> = Vec::new();
    for mut bytes in commands {
        let mut command = match KvCommand::decode(bytes.clone()) {
            Ok(c) => c,
            Err(e) => {
                flush(ctx, &mut plain, &mut outcomes).await;
                outcomes.push(Err(WriteError::Status(Status::invalid_argument(format!(
                    "flotilla: undecodable write: {e}"
                )))));
                continue;
            }
        };
        // A mark reaches the log only when every member understands it;
        // else the write follows the one-response rule on every replica.
        if ctx.features.stamp(&mut command) {
            bytes = command.encode_to_bytes();
        }
        if proposed_as_entry(&command) {
            plain.push(bytes);
            continue;
        }
        match command.op {
            Some(op) if op.is_conf_change() => {
                flush(ctx, &mut plain, &mut outcomes).await;
                outcomes.push(change_membership(ctx, op).await);
            }
            Some(KvOp::LeaseKeepAlive(req)) => {
                flush(ctx, &mut plain, &mut outcomes).await;
                outcomes.push(keep_alive(ctx, req).await);
            }
            Some(KvOp::LeaseTimeToLive(req)) => {
                flush(ctx, &mut plain, &mut outcomes).await;
                outcomes.push(time_to_live(ctx, req).await);
            }
            _ => plain.push(bytes),
        }
    }
    flush(ctx, &mut plain, &mut outcomes).await;
    outcomes
}

/// Proposes the plain commands gathered so far, together.
async fn flush(ctx: &ApiContext, plain: &mut Vec<Bytes>, outcomes: &mut Vec<Served>) {
    if plain.is_empty() {
        return;
    }
    let proposed = ctx.raft.propose_many(std::mem::take(plain)).await;
    outcomes.extend(proposed.into_iter().map(|p| match p {
        Ok(output) => output.result.map_err(WriteError::Kv),
        Err(e) => Err(WriteError::Driver(e)),
    }));
}

/// A member id for a member added with `peer_urls`, unused in `sm`: as
/// etcd, from the URLs and the time, so that a member added again at the
/// same address gets a new id.
fn fresh_member_id(sm: &NodeStateMachine, peer_urls: &[String]) -> u64 {
    let kv = sm.kv();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut salt = now ^ kv.applied_index().rotate_left(32);
    loop {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in peer_urls
            .iter()
            .flat_map(|u| u.as_bytes().iter().chain(b"\0"))
            .chain(salt.to_le_bytes().iter())
        {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        if h != 0 && kv.member(h).is_none() && !kv.is_removed_member(h) {
            return h;
        }
        salt = salt.wrapping_add(1);
    }
}

/// Adds, promotes or removes a member: checked on the leader's driver task
/// against the table as applied up to its commit index, then proposed as
/// one entry changing Raft's configuration and the table together.
/// The check and the entry of a membership change, run on the leader's
/// driver task: the change and its context, or the refusal as the state
/// machine would answer it.
// The refusal is a whole `KvOutput`, as large as the answer to an applied
// change; one is built per membership request, so boxing buys nothing.
#[allow(clippy::result_large_err)]
fn prepare_membership(
    op: KvOp,
) -> impl FnOnce(&NodeStateMachine) -> Result<(ConfChange, Bytes), KvOutput> + Send + 'static {
    move |sm: &NodeStateMachine| {
        let kv = sm.kv();
        let refuse = |e: KvError| KvOutput::rejected(e, kv.revision());
        let (change, op) = match op {
            KvOp::MemberAdd(m) => {
                let id = fresh_member_id(sm, &m.peer_ur_ls);
                kv.check_member_add(id, &m.peer_ur_ls).map_err(refuse)?;
                let change = if m.is_learner {
                    ConfChange::AddLearner(NodeId(id))
                } else {
                    ConfChange::AddVoter(NodeId(id))
                };
                let member = Member {
                    id,
                    name: String::new(),
                    peer_ur_ls: m.peer_ur_ls,
                    client_ur_ls: Vec::new(),
                    is_learner: m.is_learner,
                };
                (change, KvOp::MemberAdd(member))
            }
            KvOp::MemberPromote(p) => {
                kv.check_member_promote(p.id).map_err(refuse)?;
                (
                    ConfChange::PromoteLearner(NodeId(p.id)),
                    KvOp::MemberPromote(p),
                )
            }
            KvOp::MemberRemove(r) => {
                kv.check_member_remove(r.id).map_err(refuse)?;
                (ConfChange::RemoveNode(NodeId(r.id)), KvOp::MemberRemove(r))
            }
            other => {
                return Err(refuse(KvError::BadRequest(format!(
                    "{} is not a membership change",
                    other.name()
                ))));
            }
        };
        Ok((change, KvCommand::new(op).encode_to_bytes()))
    }
}

async fn change_membership(ctx: &ApiContext, op: KvOp) -> Served {
    let what = op.clone();
    let prepare = prepare_membership(op);
    match ctx.raft.change_membership(prepare).await {
        Ok(output) => output.result.map_err(WriteError::Kv),
        Err(DriverError::Rejected(reason)) => Err(WriteError::Status(Status::failed_precondition(
            match &what {
                // etcd's words for the core's two refusals clients act on.
                KvOp::MemberPromote(_)
                    if reason.contains("behind") || reason.contains("acknowledged") =>
                {
                    "etcdserver: can only promote a learner member which is in sync with leader"
                        .to_string()
                }
                KvOp::MemberRemove(_) | KvOp::MemberAdd(_) if reason.contains("below a quorum") => {
                    "etcdserver: re-configuration failed due to not enough started members"
                        .to_string()
                }
                _ => format!("etcdserver: {reason}"),
            },
        ))),
        Err(e) => Err(WriteError::Driver(e)),
    }
}

fn header(revision: i64) -> Option<ResponseHeader> {
    Some(ResponseHeader {
        revision,
        ..Default::default()
    })
}

/// Renews a lease on the leader's lessor: etcd's answers, its TTL, or TTL
/// 0 for a lease that is gone. A member just elected may find its lessor
/// not yet promoted; that is waited for, briefly.
async fn keep_alive(ctx: &ApiContext, req: LeaseKeepAliveRequest) -> Served {
    let deadline = Instant::now() + PROMOTION_WAIT;
    let ttl = loop {
        let renewed = ctx.lessor().keepalive(req.id, Instant::now());
        match renewed {
            Ok(ttl) => break ttl,
            Err(KeepAliveError::NotFound) => break 0,
            Err(KeepAliveError::NotPrimary) => {
                let status = ctx.raft.status();
                if status.role != Role::Leader || Instant::now() >= deadline {
                    let hint = status.leader;
                    return Err(WriteError::Driver(DriverError::NotLeader {
                        leader_hint: hint.is_some().then_some(hint),
                    }));
                }
                tokio::time::sleep(PROMOTION_POLL).await;
            }
        }
    };
    let revision = ctx
        .raft
        .read_local(|sm| sm.kv().revision())
        .await
        .map_err(WriteError::Driver)?;
    Ok(KvResponse::LeaseKeepAlive(LeaseKeepAliveResponse {
        header: header(revision),
        id: req.id,
        ttl,
    }))
}

/// etcd's LeaseTimeToLive on the leader: the lease as of a linearizable
/// read, its time left from the lessor. A missing lease answers TTL -1,
/// not an error, as etcd's does.
async fn time_to_live(ctx: &ApiContext, req: LeaseTimeToLiveRequest) -> Served {
    let (id, want_keys) = (req.id, req.keys);
    let (entry, revision) = ctx
        .raft
        .read(move |sm| {
            let kv = sm.kv();
            let entry = kv.leases().get(id).map(|e| {
                let keys = if want_keys {
                    e.keys.iter().cloned().collect()
                } else {
                    Vec::new()
                };
                (e.ttl_secs, keys)
            });
            (entry, kv.revision())
        })
        .await
        .map_err(WriteError::Driver)?;
    let Some((granted, keys)) = entry else {
        return Ok(KvResponse::LeaseTimeToLive(LeaseTimeToLiveResponse {
            header: header(revision),
            id,
            ttl: -1,
            ..Default::default()
        }));
    };
    let (ttl, granted_ttl) = ctx
        .lessor()
        .time_to_live(id, Instant::now())
        .unwrap_or((granted, granted));
    Ok(KvResponse::LeaseTimeToLive(LeaseTimeToLiveResponse {
        header: header(revision),
        id,
        ttl,
        granted_ttl,
        keys,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::MemberIds;
    use crate::transport::{FEATURES, PeerFeatures};
    use flotilla_proto::etcdserverpb::{LeaseKeepAliveRequest, PutRequest};

    fn put(key: &[u8]) -> KvCommand {
        KvCommand::new(KvOp::Put(PutRequest {
            key: key.to_vec(),
            value: b"v".to_vec(),
            ..Default::default()
        }))
    }

    /// The leader takes a follower's command only as it would take it
    /// forwarded, and stamps it as its own.
    #[test]
    fn the_leader_filters_and_stamps_peer_proposals() {
        let heard = PeerFeatures::default();
        let members = MemberIds::default();
        members.set(vec![1, 2, 3]);
        heard.record(2, FEATURES);
        heard.record(3, FEATURES);
        let gate = FeatureGate::new(1, FEATURES, heard, members);
        let limits = crate::kv::KvConfig::default().limits();
        let filter = peer_proposal_filter(gate, limits, 1024);
        let taken = filter(put(b"k").encode_to_bytes()).expect("a plain put");
        let taken = KvCommand::decode(taken).expect("decodes");
        assert!(taken.batched_compaction, "stamped as the leader's own");
        assert_eq!(taken.op, put(b"k").op);
        // Too large, malformed, invalid under the leader's limits, or not
        // proposed as it is: refused, so the follower forwards it.
        assert!(filter(put(&[b'k'; 2000]).encode_to_bytes()).is_none());
        assert!(filter(Bytes::from_static(b"\xff\xff\xff")).is_none());
        assert!(filter(put(b"").encode_to_bytes()).is_none(), "an empty key");
        let keepalive = KvCommand::new(KvOp::LeaseKeepAlive(LeaseKeepAliveRequest { id: 7 }));
        assert!(filter(keepalive.encode_to_bytes()).is_none());
        assert!(filter(KvCommand::default().encode_to_bytes()).is_none());
    }
}
