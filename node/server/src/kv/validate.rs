//! The checks of a write that need no state: one function,
//! [`validate_op`], that the API runs on every write before it is proposed
//! (so a bad request costs no log entry) and the store runs again as it
//! applies the entry (so every replica rejects the same entries alike,
//! whatever reached the log). Both use etcd's errors (`v3rpc/key.go`'s
//! `checkPutRequest`, `checkTxnRequest`, `checkIntervals`).
//!
//! The API checks against the member's configured [`RequestLimits`]; the
//! store against [`super::KvConfig::limits`], fixed and equal to the
//! largest limits a member may be configured with, so that whatever one
//! member admits every replica applies.

use super::mvcc::in_range;
use super::{KvConfig, KvError, KvOp};
use flotilla_proto::etcdserverpb::alarm_request::AlarmAction;
use flotilla_proto::etcdserverpb::request_op::Request;
use flotilla_proto::etcdserverpb::{
    AlarmRequest, AlarmType, Member, MemberPromoteRequest, MemberRemoveRequest,
    MemberUpdateRequest, PutRequest, RequestOp, TxnRequest,
};
use std::collections::BTreeSet;

/// The sizes a write is checked against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestLimits {
    /// Longest key, in bytes.
    pub key_bytes_max: usize,
    /// Longest value, in bytes.
    pub value_bytes_max: usize,
    /// Most compares, and most operations per branch, of a transaction; a
    /// nested transaction gets what its parent leaves (etcd's
    /// `--max-txn-ops` rule).
    pub txn_ops_max: usize,
    /// Largest lease TTL, in seconds.
    pub lease_ttl_max_secs: i64,
}

impl KvConfig {
    /// The limits the store applies with.
    pub fn limits(&self) -> RequestLimits {
        RequestLimits {
            key_bytes_max: self.key_bytes_max,
            value_bytes_max: self.value_bytes_max,
            txn_ops_max: self.txn_ops_max,
            lease_ttl_max_secs: self.lease_ttl_max_secs,
        }
    }
}

/// Whether `op` is a well-formed write within `limits`.
pub fn validate_op(op: &KvOp, limits: &RequestLimits) -> Result<(), KvError> {
    match op {
        KvOp::Put(p) => validate_put(limits, p),
        KvOp::DeleteRange(d) => check_key(limits, &d.key),
        KvOp::Txn(t) => validate_txn(limits, t),
        KvOp::Compaction(_) | KvOp::LeaseRevoke(_) => Ok(()),
        KvOp::LeaseGrant(g) => {
            if g.ttl > limits.lease_ttl_max_secs {
                return Err(KvError::LeaseTtlTooLarge);
            }
            if g.id < 0 {
                return Err(KvError::BadRequest(format!("negative lease id {}", g.id)));
            }
            Ok(())
        }
        KvOp::MemberUpsert(Member { id: 0, .. })
        | KvOp::MemberPublish(Member { id: 0, .. })
        | KvOp::MemberRemove(MemberRemoveRequest { id: 0 })
        | KvOp::MemberPromote(MemberPromoteRequest { id: 0 })
        | KvOp::MemberUpdate(MemberUpdateRequest { id: 0, .. }) => {
            Err(KvError::BadRequest("member id 0".into()))
        }
        KvOp::MemberAdd(m) => check_peer_urls(&m.peer_ur_ls),
        KvOp::MemberUpdate(u) => check_peer_urls(&u.peer_ur_ls),
        KvOp::MemberUpsert(_)
        | KvOp::MemberPublish(_)
        | KvOp::MemberRemove(_)
        | KvOp::MemberPromote(_)
        | KvOp::MemberSeed(_)
        | KvOp::LeaseTimeToLive(_) => Ok(()),
        KvOp::LeaseKeepAlive(k) if k.id <= 0 => Err(KvError::LeaseNotFound),
        KvOp::LeaseKeepAlive(_) => Ok(()),
        KvOp::Alarm(a) => validate_alarm(a),
    }
}

/// Peer URLs of a member add or update: at least one, each
/// `http(s)://host:port`.
fn check_peer_urls(urls: &[String]) -> Result<(), KvError> {
    if urls.is_empty() || !urls.iter().all(|u| super::valid_peer_url(u)) {
        return Err(KvError::MemberBadUrls);
    }
    Ok(())
}

/// An empty key is etcd's "key is not provided"; a key above the limit is
/// refused as etcd refuses a request above its size limit.
pub(crate) fn check_key(limits: &RequestLimits, key: &[u8]) -> Result<(), KvError> {
    if key.is_empty() {
        return Err(KvError::EmptyKey);
    }
    if key.len() > limits.key_bytes_max {
        return Err(KvError::KeyTooLarge {
            len: key.len() as u64,
            max: limits.key_bytes_max as u64,
        });
    }
    Ok(())
}

fn validate_put(limits: &RequestLimits, req: &PutRequest) -> Result<(), KvError> {
    check_key(limits, &req.key)?;
    if req.value.len() > limits.value_bytes_max {
        return Err(KvError::ValueTooLarge {
            len: req.value.len() as u64,
            max: limits.value_bytes_max as u64,
        });
    }
    if req.ignore_value && !req.value.is_empty() {
        return Err(KvError::ValueProvided);
    }
    if req.ignore_lease && req.lease != 0 {
        return Err(KvError::LeaseProvided);
    }
    Ok(())
}

/// etcd's `checkTxnRequest` (with every op's own checks) and then its
/// duplicate-key rule on both branches.
fn validate_txn(limits: &RequestLimits, req: &TxnRequest) -> Result<(), KvError> {
    validate_txn_ops(limits, req, limits.txn_ops_max)?;
    check_intervals(&req.success)?;
    check_intervals(&req.failure)?;
    Ok(())
}

/// `budget` is the most compares or ops per branch allowed here: the limit
/// for the outer transaction, what its parent leaves for a nested one.
fn validate_txn_ops(
    limits: &RequestLimits,
    req: &TxnRequest,
    budget: usize,
) -> Result<(), KvError> {
    let ops = req
        .compare
        .len()
        .max(req.success.len())
        .max(req.failure.len());
    if ops > budget {
        return Err(KvError::TooManyOps);
    }
    for c in &req.compare {
        check_key(limits, &c.key)?;
    }
    for op in req.success.iter().chain(&req.failure) {
        match &op.request {
            Some(Request::RequestRange(r)) => check_key(limits, &r.key)?,
            Some(Request::RequestPut(p)) => validate_put(limits, p)?,
            Some(Request::RequestDeleteRange(d)) => check_key(limits, &d.key)?,
            Some(Request::RequestTxn(t)) => validate_txn_ops(limits, t, budget - ops)?,
            // etcd's answer to an empty op.
            None => return Err(KvError::KeyNotFound),
        }
    }
    Ok(())
}

type Deletes = Vec<(Vec<u8>, Vec<u8>)>;

/// etcd's `checkIntervals`: within a branch, no key may be put twice, nor
/// put and deleted, counting the nested transactions' branches (whose own
/// success and failure may overlap, since only one runs).
fn check_intervals(ops: &[RequestOp]) -> Result<(BTreeSet<Vec<u8>>, Deletes), KvError> {
    let mut dels: Deletes = ops
        .iter()
        .filter_map(|op| match &op.request {
            Some(Request::RequestDeleteRange(d)) => Some((d.key.clone(), d.range_end.clone())),
            _ => None,
        })
        .collect();
    let deleted = |dels: &Deletes, k: &[u8]| dels.iter().any(|(s, e)| in_range(k, s, e));
    let mut puts = BTreeSet::new();
    for op in ops {
        let Some(Request::RequestTxn(t)) = &op.request else {
            continue;
        };
        let (puts_then, dels_then) = check_intervals(&t.success)?;
        let (puts_else, dels_else) = check_intervals(&t.failure)?;
        for k in puts_then.iter().chain(&puts_else) {
            if puts.contains(k) || deleted(&dels, k) {
                return Err(KvError::DuplicateKey);
            }
        }
        puts.extend(puts_then);
        puts.extend(puts_else);
        dels.extend(dels_then);
        dels.extend(dels_else);
    }
    for op in ops {
        let Some(Request::RequestPut(p)) = &op.request else {
            continue;
        };
        if !puts.insert(p.key.clone()) || deleted(&dels, &p.key) {
            return Err(KvError::DuplicateKey);
        }
    }
    Ok((puts, dels))
}

/// An alarm change names a known action and kind. Only NOSPACE may be
/// raised: nothing here detects corruption, so a CORRUPT alarm would only
/// stop the cluster without a cause to look for.
fn validate_alarm(req: &AlarmRequest) -> Result<(), KvError> {
    let action = AlarmAction::try_from(req.action)
        .map_err(|_| KvError::BadRequest(format!("unknown alarm action {}", req.action)))?;
    let alarm = AlarmType::try_from(req.alarm)
        .map_err(|_| KvError::BadRequest(format!("unknown alarm type {}", req.alarm)))?;
    match (action, alarm) {
        (AlarmAction::Get, _) => Err(KvError::BadRequest(
            "an alarm listing is a read, never a log entry".into(),
        )),
        (AlarmAction::Activate, AlarmType::Corrupt) => Err(KvError::BadRequest(
            "CORRUPT alarms cannot be raised here: nothing in this store detects corruption".into(),
        )),
        _ => Ok(()),
    }
}
