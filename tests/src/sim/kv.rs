//! The clients' operations as the node's own requests: writes become the
//! [`KvCommand`]s the gRPC API proposes (with exactly-once sessions), reads
//! the Range requests it serves, and the node's answers become the
//! linearizability model's outputs.

use crate::linearizability as lin;
use flotilla_node::kv::KvError;
use flotilla_node::kv::{KvCommand, KvOp, KvOutput, KvResponse};
use flotilla_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use flotilla_proto::etcdserverpb::request_op::Request as TxnOp;
use flotilla_proto::etcdserverpb::{
    Compare, DeleteRangeRequest, LeaseGrantRequest, LeaseRevokeRequest, PutRequest, RangeRequest,
    RangeResponse, RequestOp, TxnRequest,
};
use flotilla_raft::Bytes;

/// A write a simulated client makes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SimWrite {
    /// Set a key.
    Put {
        /// The key.
        key: String,
        /// The value.
        value: String,
    },
    /// Remove a key.
    Delete {
        /// The key.
        key: String,
        /// Whether it is asked as a DeleteRange over the range that holds
        /// just the key (`[key, key + "\0")`): the store takes any ranged
        /// delete for heavy and applies it off the step, while the
        /// linearizability model sees the same one-key delete.
        ranged: bool,
    },
    /// Set `key` to `value` if its value equals `expected` (None = absent):
    /// a Txn comparing the value (or, for absence, the version with 0).
    Cas {
        /// The key.
        key: String,
        /// Expected current value.
        expected: Option<String>,
        /// New value.
        value: String,
    },
    /// Set a key, attached to a lease: it goes when the lease is revoked
    /// or expires.
    PutLease {
        /// The key.
        key: String,
        /// The value.
        value: String,
        /// The lease.
        lease: i64,
    },
    /// Grant a lease with the client's chosen id.
    Grant {
        /// The lease's id.
        id: i64,
        /// Its time to live, in seconds.
        ttl_secs: i64,
    },
    /// Revoke a lease (its keys go).
    Revoke {
        /// The lease's id.
        id: i64,
    },
}

impl SimWrite {
    /// The command a client with session `client` (not 0) proposes as its
    /// `seq`th request; a retry proposes the same bytes, and the store
    /// answers it from the session without applying it twice.
    pub fn command(&self, client: u64, seq: u64) -> Bytes {
        let op = match self {
            SimWrite::Put { key, value } => KvOp::Put(put(key, value)),
            SimWrite::PutLease { key, value, lease } => KvOp::Put(PutRequest {
                lease: *lease,
                ..put(key, value)
            }),
            SimWrite::Grant { id, ttl_secs } => KvOp::LeaseGrant(LeaseGrantRequest {
                id: *id,
                ttl: *ttl_secs,
            }),
            SimWrite::Revoke { id } => KvOp::LeaseRevoke(LeaseRevokeRequest { id: *id }),
            SimWrite::Delete { key, ranged } => KvOp::DeleteRange(DeleteRangeRequest {
                key: key.as_bytes().to_vec(),
                range_end: if *ranged {
                    [key.as_bytes(), b"\0"].concat()
                } else {
                    Vec::new()
                },
                ..Default::default()
            }),
            SimWrite::Cas {
                key,
                expected,
                value,
            } => {
                let compare = match expected {
                    Some(v) => Compare {
                        key: key.as_bytes().to_vec(),
                        target: CompareTarget::Value as i32,
                        result: CompareResult::Equal as i32,
                        target_union: Some(TargetUnion::Value(v.as_bytes().to_vec())),
                        ..Default::default()
                    },
                    None => Compare {
                        key: key.as_bytes().to_vec(),
                        target: CompareTarget::Version as i32,
                        result: CompareResult::Equal as i32,
                        target_union: Some(TargetUnion::Version(0)),
                        ..Default::default()
                    },
                };
                KvOp::Txn(TxnRequest {
                    compare: vec![compare],
                    success: vec![RequestOp {
                        request: Some(TxnOp::RequestPut(put(key, value))),
                    }],
                    failure: Vec::new(),
                })
            }
        };
        KvCommand::with_session(client, seq, op)
            .with_batched_compaction(true)
            .encode_to_bytes()
    }

    /// Whether the store refused the write, as it may (a put attached to a
    /// lease already revoked or expired): it took no effect.
    pub fn refused(&self, output: &KvOutput) -> bool {
        matches!(
            (self, &output.result),
            (SimWrite::PutLease { .. }, Err(KvError::LeaseNotFound))
        )
    }

    /// The model's output for the store's answer; an error for an answer
    /// the workload never expects (the store refused a valid write).
    pub fn outcome(&self, output: &KvOutput) -> Result<Option<lin::KvOutput>, String> {
        match (self, &output.result) {
            (SimWrite::PutLease { .. }, Ok(KvResponse::Put(_)))
            | (SimWrite::Grant { .. }, Ok(KvResponse::LeaseGrant(_)))
            | (SimWrite::Revoke { .. }, Ok(KvResponse::LeaseRevoke(_)))
            | (SimWrite::Revoke { .. }, Err(KvError::LeaseNotFound))
            | (SimWrite::Put { .. }, Ok(KvResponse::Put(_)))
            | (SimWrite::Delete { .. }, Ok(KvResponse::DeleteRange(_))) => Ok(None),
            (SimWrite::Cas { .. }, Ok(KvResponse::Txn(t))) => {
                Ok(Some(lin::KvOutput::Succeeded(t.succeeded)))
            }
            (write, result) => Err(format!("{write:?} answered {result:?}")),
        }
    }
}

fn put(key: &str, value: &str) -> PutRequest {
    PutRequest {
        key: key.as_bytes().to_vec(),
        value: value.as_bytes().to_vec(),
        ..Default::default()
    }
}

/// A Range of the one key `key` (served on the driver, as the API does).
pub fn get_request(key: &str) -> RangeRequest {
    RangeRequest {
        key: key.as_bytes().to_vec(),
        ..Default::default()
    }
}

/// A Range from `start` to the end of the keys starting with `prefix`
/// (served on a frozen view, as the API does for any range), at most
/// `limit` keys (0: all).
pub fn scan_request(start: &str, prefix: &str, limit: i64) -> RangeRequest {
    let mut end = prefix.as_bytes().to_vec();
    *end.last_mut().expect("a non-empty prefix") += 1;
    RangeRequest {
        key: start.as_bytes().to_vec(),
        range_end: end,
        limit,
        ..Default::default()
    }
}

/// The keys and values a Range returned.
pub fn pairs(resp: &RangeResponse) -> Vec<(String, String)> {
    resp.kvs
        .iter()
        .map(|kv| {
            (
                String::from_utf8_lossy(&kv.key).into_owned(),
                String::from_utf8_lossy(&kv.value).into_owned(),
            )
        })
        .collect()
}
