//! etcd's Txn: compares, and applying a branch in one revision (the checks
//! that need no state are in `validate.rs`). Follows etcd's
//! `applierV3backend.Txn`: every compare, nested ones included, is
//! evaluated against the state before the transaction; then the chosen path
//! is checked (leases exist, keys for `ignore_*` exist, read revisions are
//! readable) before anything is written, so a rejected transaction changes
//! nothing.

use super::alarm::put_cost;
use super::mvcc::WriteBatch;
use super::range::range_at;
use super::{KvError, KvStore};
use flotilla_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use flotilla_proto::etcdserverpb::request_op::Request;
use flotilla_proto::etcdserverpb::response_op::Response;
use flotilla_proto::etcdserverpb::{
    Compare, PutRequest, RangeRequest, ResponseHeader, ResponseOp, TxnRequest, TxnResponse,
};
use flotilla_proto::mvccpb::KeyValue;
use std::cmp::Ordering;

/// Which branch each transaction on the taken path takes: the outer one's,
/// then those of the nested transactions of that branch, in order.
#[derive(Debug)]
pub(crate) struct TxnPath {
    succeeded: bool,
    nested: Vec<TxnPath>,
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

    /// What the branches `path` takes may add to the store's size: their
    /// puts, nested ones included (the quota's measure).
    pub(crate) fn path_cost(req: &TxnRequest, path: &TxnPath) -> u64 {
        let branch = if path.succeeded {
            &req.success
        } else {
            &req.failure
        };
        let mut nested = path.nested.iter();
        branch
            .iter()
            .map(|op| match &op.request {
                Some(Request::RequestPut(p)) => put_cost(p),
                Some(Request::RequestTxn(t)) => nested.next().map_or(0, |p| Self::path_cost(t, p)),
                _ => 0,
            })
            .fold(0u64, u64::saturating_add)
    }
}
