//! Driver and store errors as gRPC statuses with etcd's codes and messages,
//! so etcd clients that match on them keep working. Kept local to the lease
//! service until the node has one shared mapping for every service.

use crate::driver::DriverError;
use crate::kv::KvError;
use tonic::{Code, Status};

/// etcd's not-leader error. A known leader id goes in the
/// `flotilla-leader` metadata, for clients that want to retry there.
pub(super) fn not_leader(leader_hint: Option<u64>) -> Status {
    let mut status = Status::unavailable("etcdserver: not leader");
    if let Some(id) = leader_hint
        && let Ok(v) = id.to_string().parse()
    {
        status.metadata_mut().insert("flotilla-leader", v);
    }
    status
}

/// A driver error as etcd reports the matching condition.
pub(super) fn from_driver(e: DriverError) -> Status {
    match e {
        DriverError::NotLeader { leader_hint } => not_leader(leader_hint.map(|n| n.0)),
        DriverError::OutcomeUnknown => Status::unavailable("etcdserver: leader changed"),
        DriverError::Timeout => Status::unavailable("etcdserver: request timed out"),
        DriverError::Busy(why) => {
            Status::resource_exhausted(format!("etcdserver: too many requests ({why})"))
        }
        DriverError::Rejected(why) => Status::failed_precondition(why),
        DriverError::Stopped => Status::unavailable("etcdserver: server stopped"),
    }
}

/// A store rejection with etcd's code; the message is the error's, which is
/// etcd's where etcd has the error.
pub(super) fn from_kv(e: KvError) -> Status {
    let code = match e {
        KvError::LeaseNotFound => Code::NotFound,
        KvError::LeaseExists | KvError::StaleSequence { .. } => Code::FailedPrecondition,
        KvError::LeaseTtlTooLarge | KvError::Compacted { .. } | KvError::FutureRevision => {
            Code::OutOfRange
        }
        KvError::EmptyKey
        | KvError::KeyNotFound
        | KvError::ValueProvided
        | KvError::LeaseProvided
        | KvError::DuplicateKey
        | KvError::TooManyOps
        | KvError::KeyTooLarge { .. }
        | KvError::ValueTooLarge { .. }
        | KvError::BadRequest(_) => Code::InvalidArgument,
    };
    Status::new(code, e.to_string())
}
