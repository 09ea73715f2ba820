//! The one place that turns driver and store errors into `tonic::Status`,
//! with etcd's gRPC codes and messages (etcd clients match on the message
//! text, so these are etcd's `rpctypes` strings where etcd has one).

use crate::driver::DriverError;
use crate::kv::KvError;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Code, Status};

/// Response metadata naming the leader's member id (hex), when known.
pub const LEADER_ID_METADATA: &str = "flotilla-leader-id";
/// Response metadata naming the leader's client URL, when known.
pub const LEADER_ENDPOINT_METADATA: &str = "flotilla-leader-endpoint";

/// Where the leader is, as far as this member knows.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeaderHint {
    /// The leader's member id.
    pub id: Option<u64>,
    /// The leader's first advertised client URL.
    pub endpoint: Option<String>,
}

impl LeaderHint {
    fn metadata(&self) -> MetadataMap {
        let mut md = MetadataMap::new();
        if let Some(id) = self.id
            && let Ok(v) = MetadataValue::try_from(format!("{id:x}"))
        {
            md.insert(LEADER_ID_METADATA, v);
        }
        if let Some(url) = &self.endpoint
            && let Ok(v) = MetadataValue::try_from(url.as_str())
        {
            md.insert(LEADER_ENDPOINT_METADATA, v);
        }
        md
    }
}

/// A driver error as etcd would report it. A `NotLeader` carries `hint`
/// in the response metadata.
pub fn driver_status(e: &DriverError, hint: &LeaderHint) -> Status {
    match e {
        DriverError::NotLeader { .. } if hint.id.is_none() => {
            Status::unavailable("etcdserver: no leader")
        }
        DriverError::NotLeader { .. } => {
            Status::with_metadata(Code::Unavailable, "etcdserver: not leader", hint.metadata())
        }
        DriverError::OutcomeUnknown => Status::unavailable("etcdserver: leader changed"),
        DriverError::Timeout => Status::unavailable("etcdserver: request timed out"),
        DriverError::Busy(_) => Status::resource_exhausted("etcdserver: too many requests"),
        DriverError::Rejected(reason) => {
            Status::failed_precondition(format!("etcdserver: {reason}"))
        }
        DriverError::Stopped => Status::unavailable("etcdserver: server stopped"),
    }
}

/// A store error as etcd would report it.
pub fn kv_status(e: &KvError) -> Status {
    let message = e.to_string();
    match e {
        KvError::Compacted { .. } | KvError::FutureRevision | KvError::LeaseTtlTooLarge => {
            Status::out_of_range(message)
        }
        KvError::EmptyKey
        | KvError::KeyNotFound
        | KvError::ValueProvided
        | KvError::LeaseProvided
        | KvError::DuplicateKey
        | KvError::TooManyOps
        | KvError::BadRequest(_) => Status::invalid_argument(message),
        // etcd's text exactly: clients match on it. etcd has no key limit
        // of its own; a key past ours is refused as a request past its.
        KvError::KeyTooLarge { .. } | KvError::ValueTooLarge { .. } => request_too_large(),
        KvError::NoSpace | KvError::SessionWindowFull { .. } => Status::resource_exhausted(message),
        KvError::LeaseNotFound => Status::not_found(message),
        KvError::LeaseExists => Status::failed_precondition(message),
        KvError::StaleSequence { .. } => Status::failed_precondition(message),
        KvError::MemberExists | KvError::PeerUrlExists | KvError::MemberNotLearner => {
            Status::failed_precondition(message)
        }
        KvError::MemberNotFound => Status::not_found(message),
        // etcd answers a removed id as an unknown one.
        KvError::MemberRemoved => Status::not_found("etcdserver: member not found"),
        KvError::MemberBadUrls => Status::invalid_argument(message),
    }
}

/// A request above `max_request_bytes`.
pub fn request_too_large() -> Status {
    Status::invalid_argument("etcdserver: request is too large")
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_raft::NodeId;

    #[test]
    fn codes_and_messages_are_etcds() {
        let s = kv_status(&KvError::Compacted {
            compact_revision: 3,
        });
        assert_eq!(s.code(), Code::OutOfRange);
        assert_eq!(
            s.message(),
            "etcdserver: mvcc: required revision has been compacted"
        );
        let s = kv_status(&KvError::LeaseNotFound);
        assert_eq!(
            (s.code(), s.message()),
            (Code::NotFound, "etcdserver: requested lease not found")
        );
        let s = kv_status(&KvError::EmptyKey);
        assert_eq!(
            (s.code(), s.message()),
            (Code::InvalidArgument, "etcdserver: key is not provided")
        );
        let s = kv_status(&KvError::ValueTooLarge { len: 9, max: 1 });
        assert_eq!(s.message(), "etcdserver: request is too large");
        let s = kv_status(&KvError::KeyTooLarge { len: 9, max: 1 });
        assert_eq!(
            (s.code(), s.message()),
            (Code::InvalidArgument, "etcdserver: request is too large")
        );
        let s = kv_status(&KvError::NoSpace);
        assert_eq!(
            (s.code(), s.message()),
            (
                Code::ResourceExhausted,
                "etcdserver: mvcc: database space exceeded"
            )
        );
        let s = kv_status(&KvError::DuplicateKey);
        assert_eq!(
            (s.code(), s.message()),
            (
                Code::InvalidArgument,
                "etcdserver: duplicate key given in txn request"
            )
        );
        let s = driver_status(&DriverError::Busy("q".into()), &LeaderHint::default());
        assert_eq!(
            (s.code(), s.message()),
            (Code::ResourceExhausted, "etcdserver: too many requests")
        );
        let s = driver_status(&DriverError::OutcomeUnknown, &LeaderHint::default());
        assert_eq!(
            (s.code(), s.message()),
            (Code::Unavailable, "etcdserver: leader changed")
        );
    }

    #[test]
    fn not_leader_carries_the_hint() {
        let e = DriverError::NotLeader {
            leader_hint: Some(NodeId(0x2a)),
        };
        let s = driver_status(&e, &LeaderHint::default());
        assert_eq!(
            (s.code(), s.message()),
            (Code::Unavailable, "etcdserver: no leader")
        );
        let hint = LeaderHint {
            id: Some(0x2a),
            endpoint: Some("http://127.0.0.1:2379".into()),
        };
        let s = driver_status(&e, &hint);
        assert_eq!(s.code(), Code::Unavailable);
        let md = s.metadata();
        assert_eq!(md.get(LEADER_ID_METADATA).unwrap(), "2a");
        assert_eq!(
            md.get(LEADER_ENDPOINT_METADATA).unwrap(),
            "http://127.0.0.1:2379"
        );
    }
}
