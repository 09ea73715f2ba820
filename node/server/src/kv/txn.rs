//! etcd's Txn: request checks, compares, and applying a branch in one
//! revision. Follows etcd's `applierV3backend.Txn`: every compare, nested
//! ones included, is evaluated against the state before the transaction;
//! then the chosen path is checked (leases exist, keys for `ignore_*`
//! exist, read revisions are readable) before anything is written, so a
//! rejected transaction changes nothing.

use super::mvcc::{WriteBatch, in_range};
use super::range::range_at;
use super::{KvConfig, KvError, KvStore};
use flotilla_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use flotilla_proto::etcdserverpb::request_op::Request;
use flotilla_proto::etcdserverpb::response_op::Response;
use flotilla_proto::etcdserverpb::{
    Compare, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, ResponseHeader, ResponseOp,
    TxnRequest, TxnResponse,
};
use flotilla_proto::mvccpb::KeyValue;
use std::cmp::Ordering;
use std::collections::BTreeSet;

/// Which branch each transaction on the taken path takes: the outer one's,
/// then those of the nested transactions of that branch, in order.
#[derive(Debug)]
pub(crate) struct TxnPath {
    succeeded: bool,
    nested: Vec<TxnPath>,
}

fn check_key(cfg: &KvConfig, key: &[u8]) -> Result<(), KvError> {
    if key.is_empty() {
        return Err(KvError::EmptyKey);
    }
    if key.len() > cfg.key_bytes_max {
        return Err(KvError::KeyTooLarge {
            len: key.len() as u64,
            max: cfg.key_bytes_max as u64,
        });
    }
    Ok(())
}

/// The checks of a Put that need no state.
pub(crate) fn validate_put(cfg: &KvConfig, req: &PutRequest) -> Result<(), KvError> {
    check_key(cfg, &req.key)?;
    if req.value.len() > cfg.value_bytes_max {
        return Err(KvError::ValueTooLarge {
            len: req.value.len() as u64,
            max: cfg.value_bytes_max as u64,
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

/// The checks of a Range or DeleteRange that need no state.
pub(crate) fn validate_key_range(cfg: &KvConfig, key: &[u8]) -> Result<(), KvError> {
    check_key(cfg, key)
}

/// The checks of a Txn that need no state: sizes of every op of both
/// branches, recursively, and etcd's duplicate-key rule.
pub(crate) fn validate_txn(cfg: &KvConfig, req: &TxnRequest) -> Result<(), KvError> {
    validate_txn_ops(cfg, req)?;
    check_intervals(&req.success)?;
    check_intervals(&req.failure)?;
    Ok(())
}

fn validate_txn_ops(cfg: &KvConfig, req: &TxnRequest) -> Result<(), KvError> {
    let max = cfg.txn_ops_max;
    if req.compare.len() > max || req.success.len() > max || req.failure.len() > max {
        return Err(KvError::TooManyOps);
    }
    for c in &req.compare {
        check_key(cfg, &c.key)?;
    }
    for op in req.success.iter().chain(&req.failure) {
        match &op.request {
            Some(Request::RequestRange(r)) => validate_key_range(cfg, &r.key)?,
            Some(Request::RequestPut(p)) => validate_put(cfg, p)?,
            Some(Request::RequestDeleteRange(d)) => validate_key_range(cfg, &d.key)?,
            Some(Request::RequestTxn(t)) => validate_txn_ops(cfg, t)?,
            None => return Err(KvError::BadRequest("txn op without a request".into())),
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

fn compare_kv(c: &Compare, target: CompareTarget, kv: &KeyValue) -> bool {
    let int = |want: Option<i64>, have: i64| have.cmp(&want.unwrap_or(0));
    let ord = match (target, &c.target_union) {
        (CompareTarget::Value, Some(TargetUnion::Value(v))) => kv.value.as_slice().cmp(v),
        (CompareTarget::Value, _) => kv.value.as_slice().cmp(&[][..]),
        (CompareTarget::Version, Some(TargetUnion::Version(v))) => int(Some(*v), kv.version),
        (CompareTarget::Version, _) => int(None, kv.version),
        (CompareTarget::Create, Some(TargetUnion::CreateRevision(v))) => {
            int(Some(*v), kv.create_revision)
        }
        (CompareTarget::Create, _) => int(None, kv.create_revision),
        (CompareTarget::Mod, Some(TargetUnion::ModRevision(v))) => int(Some(*v), kv.mod_revision),
        (CompareTarget::Mod, _) => int(None, kv.mod_revision),
        (CompareTarget::Lease, Some(TargetUnion::Lease(v))) => int(Some(*v), kv.lease),
        (CompareTarget::Lease, _) => int(None, kv.lease),
    };
    match CompareResult::try_from(c.result) {
        Ok(CompareResult::Equal) => ord == Ordering::Equal,
        Ok(CompareResult::Greater) => ord == Ordering::Greater,
        Ok(CompareResult::Less) => ord == Ordering::Less,
        Ok(CompareResult::NotEqual) => ord != Ordering::Equal,
        Err(_) => false,
    }
}

impl KvStore {
    /// etcd's `applyCompare`: every key of the range must satisfy it; a
    /// missing key compares as a zero KeyValue, except that a value compare
    /// on a missing key always fails.
    fn compare(&self, c: &Compare, at: i64) -> bool {
        let Ok(target) = CompareTarget::try_from(c.target) else {
            return false;
        };
        let kvs = self.mvcc.scan(&c.key, &c.range_end, at);
        if kvs.is_empty() {
            return target != CompareTarget::Value && compare_kv(c, target, &KeyValue::default());
        }
        kvs.iter().all(|kv| compare_kv(c, target, kv))
    }

    pub(crate) fn txn_path(&self, req: &TxnRequest, at: i64) -> TxnPath {
        let succeeded = req.compare.iter().all(|c| self.compare(c, at));
        let branch = if succeeded {
            &req.success
        } else {
            &req.failure
        };
        let nested = branch
            .iter()
            .filter_map(|op| match &op.request {
                Some(Request::RequestTxn(t)) => Some(self.txn_path(t, at)),
                _ => None,
            })
            .collect();
        TxnPath { succeeded, nested }
    }

    /// The checks of a Put that read the state before the write.
    pub(crate) fn check_put(&self, req: &PutRequest, at: i64) -> Result<(), KvError> {
        if req.lease != 0 && !self.leases.contains(req.lease) {
            return Err(KvError::LeaseNotFound);
        }
        if (req.ignore_value || req.ignore_lease) && self.mvcc.get(&req.key, at).is_none() {
            return Err(KvError::KeyNotFound);
        }
        Ok(())
    }

    pub(crate) fn check_txn_path(
        &self,
        req: &TxnRequest,
        path: &TxnPath,
        at: i64,
    ) -> Result<(), KvError> {
        let branch = if path.succeeded {
            &req.success
        } else {
            &req.failure
        };
        let mut nested = path.nested.iter();
        for op in branch {
            match &op.request {
                Some(Request::RequestPut(p)) => self.check_put(p, at)?,
                Some(Request::RequestRange(r)) => {
                    self.mvcc.check_read_revision(r.revision)?;
                }
                Some(Request::RequestTxn(t)) => {
                    let p = nested.next().expect("a path entry per nested txn");
                    self.check_txn_path(t, p, at)?;
                }
                Some(Request::RequestDeleteRange(_)) | None => {}
            }
        }
        Ok(())
    }

    /// Applies the branch `path` chose. Reads see the transaction's own
    /// earlier writes, as in etcd.
    pub(crate) fn apply_txn(
        &mut self,
        w: &mut WriteBatch,
        req: &TxnRequest,
        path: &TxnPath,
    ) -> TxnResponse {
        let branch = if path.succeeded {
            &req.success
        } else {
            &req.failure
        };
        let mut nested = path.nested.iter();
        let mut responses = Vec::with_capacity(branch.len());
        for op in branch {
            let response = match &op.request {
                Some(Request::RequestRange(r)) => Response::ResponseRange(self.txn_range(w, r)),
                Some(Request::RequestPut(p)) => Response::ResponsePut(self.put_op(w, p)),
                Some(Request::RequestDeleteRange(d)) => {
                    Response::ResponseDeleteRange(self.delete_op(w, d))
                }
                Some(Request::RequestTxn(t)) => {
                    let p = nested.next().expect("a path entry per nested txn");
                    Response::ResponseTxn(self.apply_txn(w, t, p))
                }
                None => unreachable!("validated: every op has a request"),
            };
            responses.push(ResponseOp {
                response: Some(response),
            });
        }
        let header = Some(ResponseHeader {
            revision: w.read_revision(),
            ..Default::default()
        });
        TxnResponse {
            header,
            succeeded: path.succeeded,
            responses,
        }
    }

    fn txn_range(
        &self,
        w: &WriteBatch,
        r: &RangeRequest,
    ) -> flotilla_proto::etcdserverpb::RangeResponse {
        let at = if r.revision > 0 {
            r.revision
        } else {
            w.read_revision()
        };
        range_at(&self.mvcc, r, at)
    }

    /// Validated Txn → its response (header revision: after the txn).
    pub(crate) fn txn(
        &mut self,
        w: &mut WriteBatch,
        req: &TxnRequest,
    ) -> Result<TxnResponse, KvError> {
        validate_txn(&self.config, req)?;
        let at = self.mvcc.revision();
        let path = self.txn_path(req, at);
        self.check_txn_path(req, &path, at)?;
        Ok(self.apply_txn(w, req, &path))
    }

    /// Ensures `d` is a well-formed DeleteRange.
    pub(crate) fn validate_delete(&self, d: &DeleteRangeRequest) -> Result<(), KvError> {
        validate_key_range(&self.config, &d.key)
    }
}
