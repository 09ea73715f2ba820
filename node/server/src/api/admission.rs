//! [`Admission`]: the one step every client write passes before it is
//! proposed or forwarded (STYLE 15: validate, then propose or forward).
//! It runs the store's own stateless checks ([`validate_op`]) with this
//! member's limits, refuses a request above `--max-request-bytes` and a
//! write past the space quota, and encodes the command with its quota
//! stamp. A refused request costs no log entry.

use crate::kv::{
    KvCommand, KvError, KvOp, LEASE_COST_BYTES, Quota, QuotaStamp, RequestLimits, put_cost,
    txn_cost, validate_op,
};
use crate::state::StoreGauge;
use flotilla_raft::Bytes;
use std::sync::Arc;

/// What a member admits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AdmissionConfig {
    /// This member.
    pub member_id: u64,
    /// Key, value, transaction and lease TTL bounds.
    pub limits: RequestLimits,
    /// Largest request, in encoded bytes (`--max-request-bytes`).
    pub max_request_bytes: usize,
    /// The space quota (`--quota-backend-bytes`), or `None` when off.
    pub quota_bytes: Option<u64>,
}

/// Why a write was not admitted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The request is malformed or too large.
    Invalid(KvError),
    /// It would take the store past the quota.
    NoSpace,
}

impl Refusal {
    /// The store error a client is answered with.
    pub fn error(&self) -> KvError {
        match self {
            Refusal::Invalid(e) => e.clone(),
            Refusal::NoSpace => KvError::NoSpace,
        }
    }
}

/// Admits client writes on one member. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Admission {
    config: AdmissionConfig,
    gauge: Arc<StoreGauge>,
}

/// The encoded size of the request inside `op`, as the client sent it.
fn request_bytes(op: &KvOp) -> usize {
    use prost::Message as _;
    match op {
        KvOp::Put(r) => r.encoded_len(),
        KvOp::DeleteRange(r) => r.encoded_len(),
        KvOp::Txn(r) => r.encoded_len(),
        KvOp::Compaction(r) => r.encoded_len(),
        KvOp::LeaseGrant(r) => r.encoded_len(),
        KvOp::LeaseRevoke(r) => r.encoded_len(),
        KvOp::MemberUpsert(r) | KvOp::MemberAdd(r) | KvOp::MemberPublish(r) => r.encoded_len(),
        KvOp::MemberRemove(r) => r.encoded_len(),
        KvOp::MemberPromote(r) => r.encoded_len(),
        KvOp::MemberUpdate(r) => r.encoded_len(),
        KvOp::MemberSeed(r) => r.encoded_len(),
        KvOp::LeaseKeepAlive(r) => r.encoded_len(),
        KvOp::LeaseTimeToLive(r) => r.encoded_len(),
        KvOp::Alarm(r) => r.encoded_len(),
    }
}

/// What `op` may add to the store, if it is a write the quota governs.
pub fn space_cost(op: &KvOp) -> u64 {
    match op {
        KvOp::Put(p) => put_cost(p),
        KvOp::Txn(t) => txn_cost(t),
        KvOp::LeaseGrant(_) => LEASE_COST_BYTES,
        _ => 0,
    }
}

impl Admission {
    /// Admission under `config`, checking the quota against `gauge` (the
    /// state machine's, [`crate::state::NodeStateMachine::gauge`]).
    pub fn new(config: AdmissionConfig, gauge: Arc<StoreGauge>) -> Admission {
        Admission { config, gauge }
    }

    /// What this member admits.
    pub fn config(&self) -> &AdmissionConfig {
        &self.config
    }

    /// Checks `op` without encoding it: [`Admission::admit`]'s checks.
    pub fn check(&self, op: &KvOp) -> Result<(), Refusal> {
        let len = request_bytes(op);
        if len > self.config.max_request_bytes {
            return Err(Refusal::Invalid(KvError::ValueTooLarge {
                len: len as u64,
                max: self.config.max_request_bytes as u64,
            }));
        }
        validate_op(op, &self.config.limits).map_err(Refusal::Invalid)?;
        if let Some(bytes) = self.config.quota_bytes
            && !(Quota { bytes }).admits(self.gauge.size_bytes(), space_cost(op))
        {
            return Err(Refusal::NoSpace);
        }
        Ok(())
    }

    /// The bytes to propose for `command` (its operation and its session
    /// ids), stamped with this member's quota; or why it is refused.
    pub fn admit(&self, mut command: KvCommand) -> Result<Bytes, Refusal> {
        let Some(op) = &command.op else {
            return Err(Refusal::Invalid(KvError::BadRequest(
                "a write without an operation".into(),
            )));
        };
        self.check(op)?;
        let governed = space_cost(op) > 0;
        if governed && let Some(bytes) = self.config.quota_bytes {
            command = command.with_quota(QuotaStamp {
                member_id: self.config.member_id,
                bytes,
            });
        }
        Ok(command.encode_to_bytes())
    }

    /// Whether NOSPACE is raised, as of the last entry this member applied.
    pub fn nospace_raised(&self) -> bool {
        self.gauge.nospace()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::KvConfig;
    use flotilla_proto::etcdserverpb::request_op::Request;
    use flotilla_proto::etcdserverpb::{
        DeleteRangeRequest, LeaseGrantRequest, PutRequest, RequestOp, TxnRequest,
    };

    fn admission(quota_bytes: Option<u64>) -> Admission {
        let limits = RequestLimits {
            txn_ops_max: 4,
            ..KvConfig::default().limits()
        };
        Admission::new(
            AdmissionConfig {
                member_id: 9,
                limits,
                max_request_bytes: 1024,
                quota_bytes,
            },
            Arc::new(StoreGauge::default()),
        )
    }

    fn put(k: &str, v: &str) -> KvOp {
        KvOp::Put(PutRequest {
            key: k.into(),
            value: v.into(),
            ..Default::default()
        })
    }

    fn put_op(k: &str) -> RequestOp {
        RequestOp {
            request: Some(Request::RequestPut(PutRequest {
                key: k.into(),
                ..Default::default()
            })),
        }
    }

    #[test]
    fn bad_requests_are_refused_with_etcds_errors() {
        let a = admission(None);
        let refused = |op: KvOp| a.admit(KvCommand::new(op)).unwrap_err().error().to_string();
        assert_eq!(refused(put("", "v")), "etcdserver: key is not provided");
        assert!(
            refused(put("k", &"x".repeat(2000))).starts_with("etcdserver: request is too large")
        );
        let too_many = TxnRequest {
            success: (0..5).map(|i| put_op(&format!("k{i}"))).collect(),
            ..Default::default()
        };
        assert_eq!(
            refused(KvOp::Txn(too_many)),
            "etcdserver: too many operations in txn request"
        );
        let duplicate = TxnRequest {
            success: vec![put_op("a"), put_op("a")],
            ..Default::default()
        };
        assert_eq!(
            refused(KvOp::Txn(duplicate)),
            "etcdserver: duplicate key given in txn request"
        );
        let empty_delete = KvOp::DeleteRange(DeleteRangeRequest::default());
        assert_eq!(refused(empty_delete), "etcdserver: key is not provided");
        let empty_op = TxnRequest {
            success: vec![RequestOp { request: None }],
            ..Default::default()
        };
        assert_eq!(refused(KvOp::Txn(empty_op)), "etcdserver: key not found");
        // A nested transaction gets what its parent leaves: 2 of 4 here.
        let nested = TxnRequest {
            success: vec![
                put_op("a"),
                RequestOp {
                    request: Some(Request::RequestTxn(TxnRequest {
                        success: vec![put_op("b"), put_op("c"), put_op("d")],
                        ..Default::default()
                    })),
                },
            ],
            ..Default::default()
        };
        assert_eq!(
            refused(KvOp::Txn(nested)),
            "etcdserver: too many operations in txn request"
        );
        assert!(a.admit(KvCommand::new(put("k", "v"))).is_ok());
    }

    #[test]
    fn the_quota_refuses_growth_only_and_is_stamped() {
        use prost::Message as _;
        let small = put("k", "v");
        let cost = space_cost(&small);
        assert!(cost > 2, "a put costs its key, value and overheads");
        let fits = admission(Some(cost));
        let cmd = KvCommand::decode(
            fits.admit(KvCommand::with_session(3, 4, small.clone()).with_first_unanswered(2))
                .unwrap(),
        )
        .unwrap();
        assert_eq!(
            cmd.quota,
            Some(QuotaStamp {
                member_id: 9,
                bytes: cost
            })
        );
        assert_eq!((cmd.client_id, cmd.seq, cmd.mark()), (3, 4, Some(2)));
        let full = admission(Some(cost - 1));
        assert_eq!(
            full.admit(KvCommand::new(small.clone())),
            Err(Refusal::NoSpace)
        );
        let grant = KvOp::LeaseGrant(LeaseGrantRequest::default());
        assert!(admission(Some(LEASE_COST_BYTES)).check(&grant).is_ok());
        assert_eq!(
            admission(Some(LEASE_COST_BYTES - 1)).check(&grant),
            Err(Refusal::NoSpace)
        );
        let delete = KvOp::DeleteRange(DeleteRangeRequest {
            key: "k".into(),
            ..Default::default()
        });
        let cmd =
            KvCommand::decode(admission(Some(0)).admit(KvCommand::new(delete)).unwrap()).unwrap();
        assert_eq!(cmd.quota, None, "a delete is not governed by the quota");
        let off = admission(None);
        let cmd = KvCommand::decode(off.admit(KvCommand::new(small)).unwrap()).unwrap();
        assert_eq!(cmd.quota, None);
    }
}
