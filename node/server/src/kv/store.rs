//! [`KvStore`]: the key-value state machine the driver applies entries to.

use super::alarm::{AlarmTable, LEASE_COST_BYTES, Quota, put_cost};
use super::command::{KvCommand, KvOp, QuotaStamp};
use super::lease::LeaseTable;
use super::mvcc::{EventKeys, MvccStore, WriteBatch};
use super::range::range_at;
use super::session::{Dedup, KvResult, SessionTable};
use super::validate::{check_key, validate_op};
use super::{KvConfig, KvError, KvOutput, KvResponse, KvView, LeaseChange};
use crate::driver::StateMachine;
use flotilla_proto::etcdserverpb::alarm_request::AlarmAction;
use flotilla_proto::etcdserverpb::{
    AlarmRequest, AlarmResponse, AlarmType, CompactionRequest, CompactionResponse,
    DeleteRangeRequest, DeleteRangeResponse, LeaseGrantRequest, LeaseGrantResponse,
    LeaseRevokeRequest, LeaseRevokeResponse, LeaseStatus, Member, PutRequest, PutResponse,
    RangeRequest, RangeResponse, ResponseHeader,
};
use flotilla_proto::mvccpb::Event;
use flotilla_raft::{Bytes, LogIndex, Snapshot};
use prost::bytes::Buf;
use std::collections::{BTreeMap, BTreeSet};

/// The replicated key-value state: MVCC history, leases and exactly-once
/// sessions. Pure and deterministic: no clock, no IO, no randomness, so
/// every replica that applies the same entries holds the same state and
/// gives the same answers.
#[derive(Clone, Debug, PartialEq)]
pub struct KvStore {
    pub(crate) config: KvConfig,
    pub(crate) mvcc: MvccStore,
    pub(crate) leases: LeaseTable,
    pub(crate) sessions: SessionTable,
    pub(crate) applied_index: LogIndex,
    /// The member table (etcd's membership store), by id.
    pub(crate) members: BTreeMap<u64, Member>,
    /// Ids of removed members.
    pub(crate) removed_members: BTreeSet<u64>,
    /// The raised alarms (etcd's alarm store).
    pub(crate) alarms: AlarmTable,
    /// Whose changes build watch events ([`KvOutput::events`]).
    pub(crate) event_keys: EventKeys,
}

pub(super) fn header(revision: i64) -> Option<ResponseHeader> {
    Some(ResponseHeader {
        revision,
        ..Default::default()
    })
}

impl KvStore {
    /// An empty store.
    pub fn new(config: KvConfig) -> Self {
        KvStore {
            config,
            mvcc: MvccStore::new(),
            leases: LeaseTable::default(),
            sessions: SessionTable::default(),
            applied_index: 0,
            members: BTreeMap::new(),
            removed_members: BTreeSet::new(),
            alarms: AlarmTable::default(),
            event_keys: EventKeys::All,
        }
    }

    /// Whether applied commands build watch events (the default): a node
    /// turns them off while nobody watches, since watchers that come later
    /// read what they missed from the history. Copying every written value
    /// into events nobody reads would cost each write several allocations.
    pub fn set_record_events(&mut self, on: bool) {
        self.event_keys = if on { EventKeys::All } else { EventKeys::None };
    }

    /// Which changes build watch events: [`Self::set_record_events`] for
    /// all or none, or those of the ranges watchers watch.
    pub fn set_event_keys(&mut self, keys: EventKeys) {
        self.event_keys = keys;
    }

    /// The limits in force.
    pub fn config(&self) -> &KvConfig {
        &self.config
    }

    /// The revision of the last write.
    pub fn revision(&self) -> i64 {
        self.mvcc.revision()
    }

    /// The compaction point.
    pub fn compact_revision(&self) -> i64 {
        self.mvcc.compact_revision()
    }

    /// The last log index applied.
    pub fn applied_index(&self) -> LogIndex {
        self.applied_index
    }

    /// The MVCC history, for reads and watch catch-up.
    pub fn mvcc(&self) -> &MvccStore {
        &self.mvcc
    }

    /// The lease table.
    pub fn leases(&self) -> &LeaseTable {
        &self.leases
    }

    /// The exactly-once sessions.
    pub fn sessions(&self) -> &SessionTable {
        &self.sessions
    }

    /// The member table, in id order.
    pub fn members(&self) -> Vec<Member> {
        self.members.values().cloned().collect()
    }

    /// One member's entry.
    pub fn member(&self, id: u64) -> Option<&Member> {
        self.members.get(&id)
    }

    /// Whether `id` was removed from the cluster.
    pub fn is_removed_member(&self, id: u64) -> bool {
        self.removed_members.contains(&id)
    }

    /// Ids of every removed member.
    pub fn removed_members(&self) -> &BTreeSet<u64> {
        &self.removed_members
    }

    /// The raised alarms.
    pub fn alarms(&self) -> &AlarmTable {
        &self.alarms
    }

    /// etcd's LeaseLeases.
    pub fn lease_statuses(&self) -> Vec<LeaseStatus> {
        self.leases
            .iter()
            .map(|(id, _)| LeaseStatus { id })
            .collect()
    }

    /// etcd's Range: a read, run by the node on a linearizable or
    /// serializable path; never in the log.
    pub fn range(&self, req: &RangeRequest) -> Result<RangeResponse, KvError> {
        check_key(&self.config.limits(), &req.key)?;
        let at = self.mvcc.check_read_revision(req.revision)?;
        Ok(range_at(&self.mvcc, req, at))
    }

    /// Range's checks, run where the read is confirmed (the driver); the
    /// range itself then runs on the returned view, anywhere
    /// ([`KvView::range`]). O(1).
    pub fn range_view(&self, req: &RangeRequest) -> Result<KvView, KvError> {
        check_key(&self.config.limits(), &req.key)?;
        let at = self.mvcc.check_read_revision(req.revision)?;
        Ok(KvView::new(self.mvcc.clone(), at))
    }

    /// A copy for reads that may be stale while this store applies a run
    /// elsewhere ([`crate::driver::StateMachine::read_copy`]): the key
    /// space in O(1) (persistent trees), the member table and alarms
    /// cloned (small); the lease and session tables left empty, as no
    /// such read uses them and they can be large (every leased key, the
    /// sessions' cached answers).
    pub fn read_copy(&self) -> KvStore {
        KvStore {
            config: self.config.clone(),
            mvcc: self.mvcc.clone(),
            leases: LeaseTable::default(),
            sessions: SessionTable::default(),
            applied_index: self.applied_index,
            members: self.members.clone(),
            removed_members: self.removed_members.clone(),
            alarms: self.alarms.clone(),
            event_keys: EventKeys::None,
        }
    }

    /// The key space frozen at the current revision, for watch history
    /// ([`KvView::events`]). O(1).
    pub fn view(&self) -> KvView {
        KvView::new(self.mvcc.clone(), self.mvcc.revision())
    }

    /// Watch catch-up: see [`MvccStore::events`].
    pub fn events(
        &self,
        key: &[u8],
        range_end: &[u8],
        start_revision: i64,
        limit: usize,
    ) -> Result<Vec<Event>, KvError> {
        self.mvcc.events(key, range_end, start_revision, limit)
    }

    /// Applies the entry at `index`: dedups by session, runs the operation,
    /// then does the bounded housekeeping (auto-compaction, session expiry).
    pub fn apply_entry(&mut self, index: LogIndex, data: impl Buf) -> KvOutput {
        self.applied_index = index;
        let output = match KvCommand::decode_from(data) {
            Ok(cmd) => self.apply_command(index, cmd),
            Err(e) => self.rejected(e),
        };
        let every = self.config.session_check_interval_entries.max(1);
        if index.is_multiple_of(every) {
            self.sessions.expire(index, self.config.session_ttl_entries);
        }
        output
    }

    pub(super) fn rejected(&self, e: KvError) -> KvOutput {
        KvOutput {
            result: Err(e),
            events: Vec::new(),
            lease_changes: Vec::new(),
            revision: self.revision(),
            duplicate: false,
        }
    }

    fn apply_command(&mut self, index: LogIndex, cmd: KvCommand) -> KvOutput {
        let mark = cmd.mark();
        let batched_compaction = cmd.batched_compaction;
        if cmd.client_id != 0
            && let Dedup::Answer(result) = self.sessions.check(
                cmd.client_id,
                cmd.seq,
                mark,
                index,
                self.config.session_window_max,
            )
        {
            return KvOutput {
                result,
                events: Vec::new(),
                lease_changes: Vec::new(),
                revision: self.revision(),
                duplicate: true,
            };
        }
        let Some(op) = cmd.op else {
            return self.rejected(KvError::BadRequest("command without an operation".into()));
        };
        let mut changes = Vec::new();
        let mut w = self.mvcc.begin(self.event_keys.clone());
        let result = self.execute(index, &mut w, op, cmd.quota, &mut changes);
        // A write may compact about as much as it wrote, so compaction
        // keeps up with any mix of writes, and at least the configured
        // batch, so a small write never pays for a large one's history.
        let budget = w.changes().max(self.config.compaction_batch_max);
        let (changed, events) = self.mvcc.end(w);
        if changed {
            if batched_compaction {
                self.mvcc.auto_compact(self.config.retain_revisions, budget);
            } else {
                self.mvcc
                    .auto_compact_every_write(self.config.retain_revisions);
            }
        }
        let result = result.map(|r| with_revision(r, self.revision()));
        if cmd.client_id != 0 {
            let max = self.config.sessions_max;
            self.sessions
                .record(cmd.client_id, cmd.seq, mark, index, result.clone(), max);
        }
        KvOutput {
            result,
            events,
            lease_changes: changes,
            revision: self.revision(),
            duplicate: false,
        }
    }

    fn execute(
        &mut self,
        index: LogIndex,
        w: &mut WriteBatch,
        op: KvOp,
        quota: Option<QuotaStamp>,
        changes: &mut Vec<LeaseChange>,
    ) -> KvResult {
        validate_op(&op, &self.config.limits())?;
        let at = self.revision();
        Ok(match op {
            KvOp::Put(p) => {
                self.check_put(&p, at)?;
                self.check_space(quota, put_cost(&p))?;
                KvResponse::Put(self.put_op(w, &p))
            }
            KvOp::DeleteRange(d) => KvResponse::DeleteRange(self.delete_op(w, &d)),
            KvOp::Txn(t) => {
                let path = self.txn_path(&t, at);
                self.check_txn_path(&t, &path, at)?;
                self.check_space(quota, Self::path_cost(&t, &path))?;
                KvResponse::Txn(self.apply_txn(w, &t, &path))
            }
            KvOp::Compaction(c) => KvResponse::Compaction(self.compaction(&c)?),
            KvOp::LeaseGrant(g) => {
                self.check_space(quota, LEASE_COST_BYTES)?;
                KvResponse::LeaseGrant(self.lease_grant(index, &g, changes)?)
            }
            KvOp::LeaseRevoke(r) => KvResponse::LeaseRevoke(self.lease_revoke(w, &r, changes)?),
            KvOp::MemberUpsert(m) => KvResponse::Members(self.member_upsert(m)?),
            // Earlier versions logged a removal as a command of its own
            // beside the configuration entry.
            KvOp::MemberRemove(r) => KvResponse::Members(self.member_remove(r.id)?),
            KvOp::MemberPublish(m) => KvResponse::Members(self.member_publish(m)?),
            KvOp::MemberUpdate(u) => KvResponse::Members(self.member_update(u)?),
            KvOp::MemberSeed(seed) => KvResponse::Members(self.member_seed(seed.members)),
            KvOp::MemberAdd(_) | KvOp::MemberPromote(_) => {
                return Err(KvError::BadRequest(
                    "a membership change must travel in a membership entry".into(),
                ));
            }
            KvOp::LeaseKeepAlive(_) | KvOp::LeaseTimeToLive(_) => {
                return Err(KvError::BadRequest(
                    "the leader serves this request; it is never logged".into(),
                ));
            }
            KvOp::Alarm(a) => KvResponse::Alarm(self.alarm(&a)),
        })
    }

    /// Whether a write that may add `cost` bytes can apply, as etcd's
    /// capped applier and quota decide it: never while NOSPACE is raised
    /// (unless it adds nothing: deletes, compactions and read-only or
    /// delete-only transactions always pass), and not past the quota it
    /// was admitted under. A write past the quota raises NOSPACE for the
    /// member whose quota it is, in the same entry, so every replica raises
    /// it at the same log position.
    fn check_space(&mut self, quota: Option<QuotaStamp>, cost: u64) -> Result<(), KvError> {
        if cost == 0 {
            return Ok(());
        }
        if self.alarms.is_raised(AlarmType::Nospace) {
            return Err(KvError::NoSpace);
        }
        if let Some(q) = quota
            && !(Quota { bytes: q.bytes }).admits(self.mvcc.size_bytes(), cost)
        {
            self.alarms.activate(q.member_id, AlarmType::Nospace);
            return Err(KvError::NoSpace);
        }
        Ok(())
    }

    /// etcd's alarm ACTIVATE and DEACTIVATE (validated: a known action and
    /// kind, not a GET).
    fn alarm(&mut self, req: &AlarmRequest) -> AlarmResponse {
        let alarm = AlarmType::try_from(req.alarm).unwrap_or(AlarmType::None);
        let changed = match AlarmAction::try_from(req.action) {
            Ok(AlarmAction::Activate) => self.alarms.activate(req.member_id, alarm),
            Ok(AlarmAction::Deactivate) => self.alarms.deactivate(req.member_id, alarm),
            Ok(AlarmAction::Get) | Err(_) => None,
        };
        AlarmResponse {
            header: header(self.revision()),
            alarms: changed.into_iter().collect(),
        }
    }

    /// A checked Put: writes the new version and moves the key's lease.
    pub(crate) fn put_op(&mut self, w: &mut WriteBatch, req: &PutRequest) -> PutResponse {
        let value = (!req.ignore_value).then_some(&req.value[..]);
        let lease = (!req.ignore_lease).then_some(req.lease);
        let put = self.mvcc.put(w, &req.key, value, lease, req.prev_kv);
        self.leases.reattach(&req.key, put.prev_lease, put.lease);
        PutResponse {
            header: header(w.read_revision()),
            prev_kv: put.prev_kv,
        }
    }

    /// A checked DeleteRange: tombstones every live key of the range.
    pub(crate) fn delete_op(
        &mut self,
        w: &mut WriteBatch,
        req: &DeleteRangeRequest,
    ) -> DeleteRangeResponse {
        let out = self
            .mvcc
            .delete_range(w, &req.key, &req.range_end, req.prev_kv);
        for (key, lease) in &out.leased {
            self.leases.reattach(key.as_bytes(), *lease, 0);
        }
        DeleteRangeResponse {
            header: header(w.read_revision()),
            deleted: out.deleted,
            prev_kvs: out.prev_kvs,
        }
    }

    fn compaction(&mut self, req: &CompactionRequest) -> Result<CompactionResponse, KvError> {
        self.mvcc.compact(req.revision)?;
        Ok(CompactionResponse {
            header: header(self.revision()),
        })
    }

    fn lease_grant(
        &mut self,
        index: LogIndex,
        req: &LeaseGrantRequest,
        changes: &mut Vec<LeaseChange>,
    ) -> Result<LeaseGrantResponse, KvError> {
        let id = if req.id == 0 {
            self.leases.free_id(index)
        } else {
            req.id
        };
        if self.leases.contains(id) {
            return Err(KvError::LeaseExists);
        }
        let ttl = req.ttl.max(self.config.lease_ttl_min_secs);
        self.leases.insert(id, ttl);
        changes.push(LeaseChange::Granted { id, ttl_secs: ttl });
        Ok(LeaseGrantResponse {
            header: header(self.revision()),
            id,
            ttl,
            error: String::new(),
        })
    }

    /// Revokes a lease and deletes its keys, all in one revision.
    fn lease_revoke(
        &mut self,
        w: &mut WriteBatch,
        req: &LeaseRevokeRequest,
        changes: &mut Vec<LeaseChange>,
    ) -> Result<LeaseRevokeResponse, KvError> {
        let keys = self.leases.remove(req.id).ok_or(KvError::LeaseNotFound)?;
        for key in keys {
            self.mvcc.delete(w, &key, false);
        }
        changes.push(LeaseChange::Revoked { id: req.id });
        Ok(LeaseRevokeResponse {
            header: header(w.read_revision()),
        })
    }
}

/// Sets the outer response header to the revision after the command.
fn with_revision(mut r: KvResponse, revision: i64) -> KvResponse {
    *r.header_mut() = header(revision);
    r
}

impl StateMachine for KvStore {
    type Output = KvOutput;

    fn apply(&mut self, index: LogIndex, command: &Bytes) -> KvOutput {
        self.apply_entry(index, command.clone())
    }

    /// Ranged deletes (alone or in a Txn), compactions and revokes of
    /// leases with many keys: see `heavy.rs`.
    fn is_heavy(&self, command: &Bytes) -> bool {
        super::heavy::is_heavy(&self.leases, command)
    }

    fn apply_conf_change(&mut self, index: LogIndex, context: &Bytes) -> KvOutput {
        self.apply_membership_entry(index, context)
    }

    fn snapshot(&self) -> Bytes {
        Bytes::from(self.encode_snapshot())
    }

    /// A clone: O(1) for the key space (persistent trees), O(n) only for
    /// the small tables (leases, sessions, members, alarms). The encoder
    /// writes it in pieces ([`KvStore::encode_snapshot_to`]).
    fn freeze(&self) -> flotilla_raft::SnapshotEncoder {
        let frozen = self.clone();
        Box::new(move |sink| frozen.encode_snapshot_to(sink))
    }

    fn restore(&mut self, snapshot: &Snapshot) -> Result<(), String> {
        *self = KvStore::decode_snapshot(self.config.clone(), &snapshot.data)?;
        Ok(())
    }

    /// Decoded as it is read: see [`KvStore::decode_snapshot_from`].
    fn restore_from(
        &mut self,
        _meta: &flotilla_raft::SnapshotMeta,
        data: &mut dyn std::io::Read,
    ) -> Result<(), String> {
        *self = KvStore::decode_snapshot_from(self.config.clone(), data)?;
        Ok(())
    }
}
