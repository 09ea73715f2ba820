//! [`AlarmTable`]: the raised alarms, replicated like etcd's alarm store, so
//! every member refuses the same writes while NOSPACE is raised and a new
//! leader finds it raised; and the space quota's arithmetic ([`Quota`]).

use flotilla_proto::etcdserverpb::request_op::Request;
use flotilla_proto::etcdserverpb::{AlarmMember, AlarmType, PutRequest, RequestOp, TxnRequest};
use std::collections::BTreeSet;

/// The raised alarms, as `(member id, alarm type)`, in order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AlarmTable {
    raised: BTreeSet<(u64, i32)>,
}

fn member(id: u64, alarm: i32) -> AlarmMember {
    AlarmMember {
        member_id: id,
        alarm,
    }
}

impl AlarmTable {
    /// The raised alarms of kind `alarm` (every kind for NONE), ordered by
    /// member and kind.
    pub fn get(&self, alarm: AlarmType) -> Vec<AlarmMember> {
        self.raised
            .iter()
            .filter(|(_, a)| alarm == AlarmType::None || *a == alarm as i32)
            .map(|&(id, a)| member(id, a))
            .collect()
    }

    /// Whether any member raised an alarm of kind `alarm`.
    pub fn is_raised(&self, alarm: AlarmType) -> bool {
        self.raised.iter().any(|(_, a)| *a == alarm as i32)
    }

    /// Whether no alarm is raised.
    pub fn is_empty(&self) -> bool {
        self.raised.is_empty()
    }

    /// Raises `alarm` for `member_id`, as etcd's `Activate`: the alarm, new
    /// or already raised; nothing for NONE.
    pub(crate) fn activate(&mut self, member_id: u64, alarm: AlarmType) -> Option<AlarmMember> {
        if alarm == AlarmType::None {
            return None;
        }
        self.raised.insert((member_id, alarm as i32));
        Some(member(member_id, alarm as i32))
    }

    /// Clears `alarm` of `member_id`, as etcd's `Deactivate`: the alarm
    /// cleared, or nothing if it was not raised.
    pub(crate) fn deactivate(&mut self, member_id: u64, alarm: AlarmType) -> Option<AlarmMember> {
        self.raised
            .remove(&(member_id, alarm as i32))
            .then(|| member(member_id, alarm as i32))
    }

    /// Restores a raised alarm from a snapshot.
    pub(crate) fn insert_restored(&mut self, a: &AlarmMember) {
        self.raised.insert((a.member_id, a.alarm));
    }
}

/// What a write may add to [`super::MvccStore::size_bytes`], counted as the
/// store counts its size, so the quota and `db_size_in_use` agree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quota {
    /// The quota in bytes; writes that would take the store above it fail.
    pub bytes: u64,
}

/// What a lease takes, as etcd's `leaseOverhead` counts it.
pub const LEASE_COST_BYTES: u64 = 64;

impl Quota {
    /// Whether a write of `cost` bytes fits beside `size_bytes` already
    /// used. A write that adds nothing always fits.
    pub fn admits(&self, size_bytes: u64, cost: u64) -> bool {
        cost == 0 || size_bytes.saturating_add(cost) <= self.bytes
    }
}

/// A put's most growth: a new version, and a new key if it is one.
pub fn put_cost(req: &PutRequest) -> u64 {
    super::mvcc::put_cost_bytes(&req.key, req.value.len())
}

/// The most a transaction's branch can add: its puts, and the costlier
/// branch of each nested transaction. etcd counts puts the same way
/// (`costTxn`), though not those of nested transactions.
pub fn branch_cost(ops: &[RequestOp]) -> u64 {
    ops.iter()
        .map(|op| match &op.request {
            Some(Request::RequestPut(p)) => put_cost(p),
            Some(Request::RequestTxn(t)) => txn_cost(t),
            _ => 0,
        })
        .fold(0u64, u64::saturating_add)
}

/// The most a transaction can add, whichever branch runs: what a member
/// checks before proposing it, when it cannot know the branch yet.
pub fn txn_cost(req: &TxnRequest) -> u64 {
    branch_cost(&req.success).max(branch_cost(&req.failure))
}
