//! The commands the key-value store puts in the Raft log.

use super::KvError;
use flotilla_proto::etcdserverpb::{
    AlarmRequest, CompactionRequest, DeleteRangeRequest, LeaseGrantRequest, LeaseKeepAliveRequest,
    LeaseRevokeRequest, LeaseTimeToLiveRequest, Member, MemberPromoteRequest, MemberRemoveRequest,
    MemberUpdateRequest, PutRequest, TxnRequest,
};
use prost::Message as _;
use prost::bytes::Buf;

/// One write to the key-value store, as proposed to Raft. A prost message
/// so the log holds the same bytes on every node and old entries stay
/// readable when fields are added.
///
/// `client_id`, `seq` and `first_unanswered` carry the `flotilla-client-id`
/// / `flotilla-seq` / `flotilla-first-unanswered` metadata of exactly-once
/// writes; `client_id == 0` means none (etcd's at-least-once semantics).
#[derive(Clone, PartialEq, prost::Message)]
pub struct KvCommand {
    /// The client session, 0 for none.
    #[prost(uint64, tag = "1")]
    pub client_id: u64,
    /// The command's sequence number within the session.
    #[prost(uint64, tag = "2")]
    pub seq: u64,
    /// What to do.
    #[prost(
        oneof = "KvOp",
        tags = "3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18"
    )]
    pub op: Option<KvOp>,
    /// The space quota of the member that admitted this write (Put, Txn,
    /// LeaseGrant), checked as the entry applies. It travels in the entry
    /// so that every replica decides alike even if members were given
    /// different quotas; without it (quota off) only a raised NOSPACE
    /// alarm refuses the write. (Tags up to 29 are kept for operations.)
    #[prost(message, optional, tag = "30")]
    pub quota: Option<QuotaStamp>,
    /// The session's mark: the lowest seq its client had not yet seen
    /// answered when it sent this command, 0 for none (clients that do not
    /// send it, and every entry written before it existed). It travels in
    /// the entry so that every replica drops the same cached responses
    /// (see [`super::SessionTable`]).
    #[prost(uint64, tag = "31")]
    pub first_unanswered: u64,
    /// Whether this entry's auto-compaction runs in batches, bounded per
    /// write (`MvccStore::auto_compact`) rather than compacting
    /// every write up to the history bound at once. Set by the leader only
    /// when every member understands it: how far an entry compacts is part
    /// of what every replica computes (the compaction point, and the store
    /// size that quota checks read), so members that compacted differently
    /// could refuse a write that others apply. Absent in entries of the
    /// previous release, which all compact the old way.
    #[prost(bool, tag = "32")]
    pub batched_compaction: bool,
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
    /// Adds a member to the member table, or merges into its entry. Written
    /// by earlier versions for member add and publish; still applied when
    /// found in a log, never proposed any more.
    #[prost(message, tag = "9")]
    MemberUpsert(Member),
    /// Removes a member from the member table and remembers its id as
    /// removed, so it is never taken for a peer again. The context of a
    /// membership entry (earlier versions wrote it as a command of its own).
    #[prost(message, tag = "10")]
    MemberRemove(MemberRemoveRequest),
    /// Adds a learner: the context of the membership entry that adds it to
    /// Raft's configuration.
    #[prost(message, tag = "11")]
    MemberAdd(Member),
    /// Makes a learner a voter: the context of the membership entry that
    /// promotes it.
    #[prost(message, tag = "12")]
    MemberPromote(MemberPromoteRequest),
    /// A member's name and client URLs, which it publishes itself once it
    /// runs (etcd's publish). Only for a member in the table.
    #[prost(message, tag = "13")]
    MemberPublish(Member),
    /// etcd's MemberUpdate: a member's new peer URLs.
    #[prost(message, tag = "14")]
    MemberUpdate(MemberUpdateRequest),
    /// The founding members of a new cluster, proposed by a founder once a
    /// leader is known: fills the table of a cluster that has none yet, so
    /// that every voter of the bootstrap configuration is listed before it
    /// publishes, on every member and on every member that joins later
    /// (they replay it from the log or a snapshot).
    #[prost(message, tag = "15")]
    MemberSeed(MemberSeed),
    /// etcd's LeaseKeepAlive, one request of the stream: served by the
    /// leader's lessor, never written to the log.
    #[prost(message, tag = "16")]
    LeaseKeepAlive(LeaseKeepAliveRequest),
    /// etcd's LeaseTimeToLive: served by the leader, which alone knows how
    /// long a lease has left; never written to the log.
    #[prost(message, tag = "17")]
    LeaseTimeToLive(LeaseTimeToLiveRequest),
    /// etcd's Alarm ACTIVATE or DEACTIVATE (a GET is a read).
    #[prost(message, tag = "18")]
    Alarm(AlarmRequest),
}

/// The founding members of a cluster ([`KvOp::MemberSeed`]).
#[derive(Clone, PartialEq, prost::Message)]
pub struct MemberSeed {
    /// One entry per founder: id, name and peer URL from the bootstrap
    /// configuration, no client URLs until it publishes.
    #[prost(message, repeated, tag = "1")]
    pub members: Vec<Member>,
}

impl KvOp {
    /// Whether this operation changes Raft's configuration, and so is
    /// proposed as the context of a membership entry rather than as a
    /// command.
    pub fn is_conf_change(&self) -> bool {
        matches!(
            self,
            KvOp::MemberAdd(_) | KvOp::MemberPromote(_) | KvOp::MemberRemove(_)
        )
    }

    /// Whether the leader answers this operation itself, from state only
    /// it holds (the lessor's deadlines), without writing to the log.
    pub fn is_leader_served(&self) -> bool {
        matches!(self, KvOp::LeaseKeepAlive(_) | KvOp::LeaseTimeToLive(_))
    }

    /// The operation's name, for errors and logs.
    pub fn name(&self) -> &'static str {
        match self {
            KvOp::Put(_) => "Put",
            KvOp::DeleteRange(_) => "DeleteRange",
            KvOp::Txn(_) => "Txn",
            KvOp::Compaction(_) => "Compact",
            KvOp::LeaseGrant(_) => "LeaseGrant",
            KvOp::LeaseRevoke(_) => "LeaseRevoke",
            KvOp::MemberUpsert(_) => "MemberUpsert",
            KvOp::MemberRemove(_) => "MemberRemove",
            KvOp::MemberAdd(_) => "MemberAdd",
            KvOp::MemberPromote(_) => "MemberPromote",
            KvOp::MemberPublish(_) => "MemberPublish",
            KvOp::MemberUpdate(_) => "MemberUpdate",
            KvOp::MemberSeed(_) => "MemberSeed",
            KvOp::LeaseKeepAlive(_) => "LeaseKeepAlive",
            KvOp::LeaseTimeToLive(_) => "LeaseTimeToLive",
            KvOp::Alarm(_) => "Alarm",
        }
    }
}

impl KvCommand {
    /// A command without an exactly-once session.
    pub fn new(op: KvOp) -> Self {
        KvCommand {
            client_id: 0,
            seq: 0,
            op: Some(op),
            quota: None,
            first_unanswered: 0,
            batched_compaction: false,
        }
    }

    /// A command of session `client_id` with sequence number `seq`.
    pub fn with_session(client_id: u64, seq: u64, op: KvOp) -> Self {
        KvCommand {
            client_id,
            seq,
            op: Some(op),
            quota: None,
            first_unanswered: 0,
            batched_compaction: false,
        }
    }

    /// This command, sent while its client waited for the answers of the
    /// seqs from `first_unanswered` up (0: no mark, the original protocol).
    pub fn with_first_unanswered(mut self, first_unanswered: u64) -> Self {
        self.first_unanswered = first_unanswered;
        self
    }

    /// This command, with its auto-compaction in batches or not (see
    /// [`Self::batched_compaction`]).
    pub fn with_batched_compaction(mut self, on: bool) -> Self {
        self.batched_compaction = on;
        self
    }

    /// The session mark, if the command carries one.
    pub fn mark(&self) -> Option<u64> {
        (self.first_unanswered != 0).then_some(self.first_unanswered)
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
    /// Given the entry's `Bytes` (a clone of it costs a reference count),
    /// the key and value are read out of it in place: from a plain slice,
    /// prost first copies each into a buffer of its own, then into the
    /// field.
    pub fn decode_from(data: impl Buf) -> Result<Self, KvError> {
        KvCommand::decode(data)
            .map_err(|e| KvError::BadRequest(format!("undecodable command: {e}")))
    }
}
