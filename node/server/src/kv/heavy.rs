//! Which commands take long to apply ([`crate::driver::StateMachine::is_heavy`]):
//! those that touch a range of keys or the whole history, told from the
//! command's bytes without applying it.

use super::LeaseTable;
use flotilla_proto::etcdserverpb::request_op::Request;
use flotilla_proto::etcdserverpb::{
    CompactionRequest, DeleteRangeRequest, LeaseRevokeRequest, RequestOp, TxnRequest,
};

/// A LeaseRevoke deletes each key attached to its lease: past this many it
/// is heavy.
pub(crate) const LEASE_KEYS_HEAVY: usize = 256;

/// The operations of a [`super::KvCommand`] that may be heavy, at their
/// tags; decoding into it skips every other field (a Put's value among
/// them) without copying it.
#[derive(Clone, PartialEq, prost::Message)]
struct MaybeHeavy {
    #[prost(message, optional, tag = "4")]
    delete_range: Option<DeleteRangeRequest>,
    #[prost(message, optional, tag = "5")]
    txn: Option<TxnRequest>,
    #[prost(message, optional, tag = "6")]
    compaction: Option<CompactionRequest>,
    #[prost(message, optional, tag = "8")]
    lease_revoke: Option<LeaseRevokeRequest>,
}

/// Whether the command in `data` may take long to apply: a DeleteRange of
/// a range (not of one key), a Txn with one in either branch, a Compact,
/// or the revoke of a lease with more than [`LEASE_KEYS_HEAVY`] keys. An
/// undecodable command is refused at once, so it is light.
pub(crate) fn is_heavy(leases: &LeaseTable, data: &[u8]) -> bool {
    let Ok(op) = <MaybeHeavy as prost::Message>::decode(data) else {
        return false;
    };
    op.delete_range.is_some_and(|d| !d.range_end.is_empty())
        || op.txn.is_some_and(|t| txn_deletes_ranges(&t))
        || op.compaction.is_some()
        || op.lease_revoke.is_some_and(|r| {
            leases
                .get(r.id)
                .is_some_and(|l| l.keys.len() > LEASE_KEYS_HEAVY)
        })
}

/// Whether either branch of `txn`, or of a Txn nested in it, deletes a
/// range.
fn txn_deletes_ranges(txn: &TxnRequest) -> bool {
    txn.success
        .iter()
        .chain(&txn.failure)
        .any(|op: &RequestOp| match &op.request {
            Some(Request::RequestDeleteRange(d)) => !d.range_end.is_empty(),
            Some(Request::RequestTxn(t)) => txn_deletes_ranges(t),
            _ => false,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::{KvCommand, KvOp};
    use flotilla_proto::etcdserverpb::PutRequest;

    fn heavy(op: KvOp) -> bool {
        let leases = LeaseTable::default();
        is_heavy(
            &leases,
            &KvCommand::with_session(1, 2, op).encode_to_bytes(),
        )
    }

    fn delete(key: &str, range_end: &str) -> DeleteRangeRequest {
        DeleteRangeRequest {
            key: key.into(),
            range_end: range_end.into(),
            ..Default::default()
        }
    }

    fn txn_with(op: Request, in_success: bool) -> TxnRequest {
        let ops = vec![RequestOp { request: Some(op) }];
        TxnRequest {
            compare: Vec::new(),
            success: if in_success { ops.clone() } else { Vec::new() },
            failure: if in_success { Vec::new() } else { ops },
        }
    }

    #[test]
    fn ranges_and_compactions_are_heavy_single_keys_are_not() {
        assert!(!heavy(KvOp::Put(PutRequest {
            key: b"k".to_vec(),
            value: vec![7; 4096],
            ..Default::default()
        })));
        assert!(!heavy(KvOp::DeleteRange(delete("k", ""))));
        assert!(heavy(KvOp::DeleteRange(delete("a", "z"))));
        assert!(heavy(KvOp::DeleteRange(delete("\0", "\0"))), "everything");
        assert!(heavy(KvOp::Compaction(CompactionRequest::default())));
        let ranged = Request::RequestDeleteRange(delete("a", "b"));
        assert!(heavy(KvOp::Txn(txn_with(ranged.clone(), true))));
        assert!(heavy(KvOp::Txn(txn_with(ranged.clone(), false))));
        let nested = Request::RequestTxn(txn_with(ranged, false));
        assert!(heavy(KvOp::Txn(txn_with(nested, true))));
        let one_key = Request::RequestDeleteRange(delete("a", ""));
        assert!(!heavy(KvOp::Txn(txn_with(one_key, true))));
        assert!(
            !is_heavy(&LeaseTable::default(), b"\xff\xff"),
            "undecodable"
        );
    }

    #[test]
    fn a_revoke_is_heavy_when_its_lease_has_many_keys() {
        let mut leases = LeaseTable::default();
        leases.insert(5, 60);
        leases.insert(6, 60);
        for i in 0..=LEASE_KEYS_HEAVY {
            leases.reattach(format!("k{i}").as_bytes(), 0, 5);
        }
        leases.reattach(b"one", 0, 6);
        let revoke =
            |id| KvCommand::new(KvOp::LeaseRevoke(LeaseRevokeRequest { id })).encode_to_bytes();
        assert!(is_heavy(&leases, &revoke(5)));
        assert!(!is_heavy(&leases, &revoke(6)));
        assert!(!is_heavy(&leases, &revoke(7)), "no such lease");
    }
}
