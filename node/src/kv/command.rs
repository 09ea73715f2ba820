//! The commands the key-value store puts in the Raft log.

use super::KvError;
use flotilla_proto::etcdserverpb::{
    AlarmRequest, CompactionRequest, DeleteRangeRequest, LeaseGrantRequest, LeaseRevokeRequest,
    Member, MemberRemoveRequest, PutRequest, TxnRequest,
};
use prost::Message as _;

/// One write to the key-value store, as proposed to Raft. A prost message
/// so the log holds the same bytes on every node and old entries stay
/// readable when fields are added.
///
/// `client_id` and `seq` carry the `flotilla-client-id` / `flotilla-seq`
/// metadata of exactly-once writes; `client_id == 0` means none (etcd's
/// at-least-once semantics).
#[derive(Clone, PartialEq, prost::Message)]
pub struct KvCommand {
    /// The client session, 0 for none.
    #[prost(uint64, tag = "1")]
    pub client_id: u64,
    /// The command's sequence number within the session.
    #[prost(uint64, tag = "2")]
    pub seq: u64,
    /// What to do.
    #[prost(oneof = "KvOp", tags = "3, 4, 5, 6, 7, 8, 9, 10, 11")]
    pub op: Option<KvOp>,
    /// The space quota of the member that admitted this write (Put, Txn,
    /// LeaseGrant), checked as the entry applies. It travels in the entry
    /// so that every replica decides alike even if members were given
    /// different quotas; without it (quota off) only a raised NOSPACE
    /// alarm refuses the write.
    #[prost(message, optional, tag = "12")]
    pub quota: Option<QuotaStamp>,
}

/// See [`KvCommand::quota`].
#[derive(Clone, Copy, PartialEq, Eq, prost::Message)]
pub struct QuotaStamp {
    /// The member whose quota it is: the NOSPACE alarm a write past it
    /// raises is that member's.
    #[prost(uint64, tag = "1")]
    pub member_id: u64,
    /// The quota, in bytes of [`super::MvccStore::size_bytes`].
    #[prost(uint64, tag = "2")]
    pub bytes: u64,
}

/// The operation of a [`KvCommand`].
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum KvOp {
    /// etcd Put.
    #[prost(message, tag = "3")]
    Put(PutRequest),
    /// etcd DeleteRange.
    #[prost(message, tag = "4")]
    DeleteRange(DeleteRangeRequest),
    /// etcd Txn.
    #[prost(message, tag = "5")]
    Txn(TxnRequest),
    /// etcd Compact.
    #[prost(message, tag = "6")]
    Compaction(CompactionRequest),
    /// etcd LeaseGrant.
    #[prost(message, tag = "7")]
    LeaseGrant(LeaseGrantRequest),
    /// etcd LeaseRevoke, also proposed by the leader when a lease expires.
    #[prost(message, tag = "8")]
    LeaseRevoke(LeaseRevokeRequest),
    /// Adds a member to the member table, or replaces its entry (etcd's
    /// member add and publish): idempotent.
    #[prost(message, tag = "9")]
    MemberUpsert(Member),
    /// Removes a member from the member table and remembers its id as
    /// removed, so it is never taken for a peer again.
    #[prost(message, tag = "10")]
    MemberRemove(MemberRemoveRequest),
    /// etcd's Alarm ACTIVATE or DEACTIVATE (a GET is a read).
    #[prost(message, tag = "11")]
    Alarm(AlarmRequest),
}

impl KvCommand {
    /// A command without an exactly-once session.
    pub fn new(op: KvOp) -> Self {
        KvCommand {
            client_id: 0,
            seq: 0,
            op: Some(op),
            quota: None,
        }
    }

    /// A command of session `client_id` with sequence number `seq`.
    pub fn with_session(client_id: u64, seq: u64, op: KvOp) -> Self {
        KvCommand {
            client_id,
            seq,
            op: Some(op),
            quota: None,
        }
    }

    /// This command, checked against `stamp` as it applies.
    pub fn with_quota(mut self, stamp: QuotaStamp) -> Self {
        self.quota = Some(stamp);
        self
    }

    /// The bytes to propose.
    pub fn encode_to_bytes(&self) -> flotilla_raft::Bytes {
        flotilla_raft::Bytes::from(self.encode_to_vec())
    }

    /// Reads a command from a log entry. Bytes that are not a command are an
    /// error, never a panic: the entry is then rejected like a bad request.
    pub fn decode_from(data: &[u8]) -> Result<Self, KvError> {
        KvCommand::decode(data)
            .map_err(|e| KvError::BadRequest(format!("undecodable command: {e}")))
    }
}
