//! What applying a command gives back to the node.

use super::KvError;
use flotilla_proto::etcdserverpb::{
    AlarmResponse, CompactionResponse, DeleteRangeResponse, LeaseGrantResponse,
    LeaseKeepAliveResponse, LeaseRevokeResponse, LeaseTimeToLiveResponse, MemberListResponse,
    PutResponse, TxnResponse,
};
use flotilla_proto::mvccpb::Event;

/// The response to an applied command, one case per [`super::KvOp`]. A
/// prost oneof so exactly-once sessions can keep it in snapshots; its tags
/// start at 11 so it can sit beside other fields in a message.
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum KvResponse {
    /// Answer to Put.
    #[prost(message, tag = "11")]
    Put(PutResponse),
    /// Answer to DeleteRange.
    #[prost(message, tag = "12")]
    DeleteRange(DeleteRangeResponse),
    /// Answer to Txn.
    #[prost(message, tag = "13")]
    Txn(TxnResponse),
    /// Answer to Compact.
    #[prost(message, tag = "14")]
    Compaction(CompactionResponse),
    /// Answer to LeaseGrant.
    #[prost(message, tag = "15")]
    LeaseGrant(LeaseGrantResponse),
    /// Answer to LeaseRevoke.
    #[prost(message, tag = "16")]
    LeaseRevoke(LeaseRevokeResponse),
    /// Answer to every membership operation: the member table afterwards.
    #[prost(message, tag = "17")]
    Members(MemberListResponse),
    /// The leader's answer to a keepalive (never from the log).
    #[prost(message, tag = "18")]
    LeaseKeepAlive(LeaseKeepAliveResponse),
    /// The leader's answer to LeaseTimeToLive (never from the log).
    #[prost(message, tag = "19")]
    LeaseTimeToLive(LeaseTimeToLiveResponse),
    /// Answer to Alarm: the alarms raised or cleared.
    #[prost(message, tag = "20")]
    Alarm(AlarmResponse),
}

impl KvResponse {
    /// The response's header.
    pub fn header_mut(&mut self) -> &mut Option<flotilla_proto::etcdserverpb::ResponseHeader> {
        match self {
            KvResponse::Put(x) => &mut x.header,
            KvResponse::DeleteRange(x) => &mut x.header,
            KvResponse::Txn(x) => &mut x.header,
            KvResponse::Compaction(x) => &mut x.header,
            KvResponse::LeaseGrant(x) => &mut x.header,
            KvResponse::LeaseRevoke(x) => &mut x.header,
            KvResponse::Members(x) => &mut x.header,
            KvResponse::LeaseKeepAlive(x) => &mut x.header,
            KvResponse::LeaseTimeToLive(x) => &mut x.header,
            KvResponse::Alarm(x) => &mut x.header,
        }
    }
}

/// A change to the lease table, for the leader's [`super::Lessor`], which
/// must track leases granted and revoked by entries it did not propose.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaseChange {
    /// Lease `id` now exists with this TTL.
    Granted {
        /// The lease.
        id: i64,
        /// Its TTL in seconds.
        ttl_secs: i64,
    },
    /// Lease `id` is gone.
    Revoked {
        /// The lease.
        id: i64,
    },
}

impl KvOutput {
    /// The output of a command refused without being applied (at
    /// `revision`): no events, no lease changes.
    pub fn rejected(error: KvError, revision: i64) -> KvOutput {
        KvOutput {
            result: Err(error),
            events: Vec::new(),
            lease_changes: Vec::new(),
            revision,
            duplicate: false,
        }
    }
}

/// What [`super::KvStore`] returns for each applied entry.
#[derive(Clone, Debug, PartialEq)]
pub struct KvOutput {
    /// The response, or why the command was rejected (the entry is consumed
    /// either way, identically on every replica).
    pub result: Result<KvResponse, KvError>,
    /// The changes the command made, in order, with `prev_kv` set where
    /// there was a live previous version: what live watchers are sent.
    /// Empty for a duplicate, and while the store records no events
    /// ([`super::KvStore::set_record_events`]).
    pub events: Vec<Event>,
    /// Leases granted or revoked.
    pub lease_changes: Vec<LeaseChange>,
    /// The store's revision after the command.
    pub revision: i64,
    /// Whether this was a retry answered from its exactly-once session.
    pub duplicate: bool,
}
