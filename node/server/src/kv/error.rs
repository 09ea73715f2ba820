//! Why the state machine rejects a request.

/// A request the state machine rejected. The entry is still consumed: every
/// replica rejects it the same way, and the revision does not move. The
/// messages of the variants etcd has are etcd's, so etcd clients that match
/// on them keep working.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KvError {
    /// The revision asked for is below the compaction point.
    #[error("etcdserver: mvcc: required revision has been compacted")]
    Compacted {
        /// The compaction point.
        compact_revision: i64,
    },
    /// The revision asked for is above the current revision.
    #[error("etcdserver: mvcc: required revision is a future revision")]
    FutureRevision,
    /// An empty key.
    #[error("etcdserver: key is not provided")]
    EmptyKey,
    /// `ignore_value` or `ignore_lease` on a key that does not exist.
    #[error("etcdserver: key not found")]
    KeyNotFound,
    /// A value given together with `ignore_value`.
    #[error("etcdserver: value is provided")]
    ValueProvided,
    /// A lease given together with `ignore_lease`.
    #[error("etcdserver: lease is provided")]
    LeaseProvided,
    /// A transaction puts a key twice, or puts and deletes it.
    #[error("etcdserver: duplicate key given in txn request")]
    DuplicateKey,
    /// A transaction with more compares or operations than allowed.
    #[error("etcdserver: too many operations in txn request")]
    TooManyOps,
    /// The lease does not exist.
    #[error("etcdserver: requested lease not found")]
    LeaseNotFound,
    /// A grant for a lease id already in use.
    #[error("etcdserver: lease already exists")]
    LeaseExists,
    /// A grant with a TTL above the maximum.
    #[error("etcdserver: too large lease TTL")]
    LeaseTtlTooLarge,
    /// A key longer than [`super::KvConfig::key_bytes_max`].
    #[error("flotilla: key of {len} bytes exceeds the limit of {max}")]
    KeyTooLarge {
        /// The key's length.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// A value longer than [`super::KvConfig::value_bytes_max`].
    #[error("etcdserver: request is too large (value of {len} bytes, limit {max})")]
    ValueTooLarge {
        /// The value's length.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// A command from a client session whose response was already given and
    /// is no longer kept: below the client's mark (its lowest unanswered
    /// seq, as last reported), or, from a client that sends no mark, below
    /// the last one applied.
    #[error("flotilla: stale sequence number {seq} (last applied {last})")]
    StaleSequence {
        /// The command's sequence number.
        seq: u64,
        /// The session's last applied one.
        last: u64,
    },
    /// A new command from a client session that already has as many
    /// responses cached for it as a session may keep
    /// ([`KvConfig::session_window_max`](super::KvConfig)): the client has
    /// too many writes unanswered. Not applied; the client may send it
    /// again once earlier writes are answered.
    #[error(
        "flotilla: too many unanswered writes in this client session (seq {seq}, at most {max} kept)"
    )]
    SessionWindowFull {
        /// The command's sequence number.
        seq: u64,
        /// The most responses a session keeps.
        max: u64,
    },
    /// A malformed command (undecodable, missing its operation, bad id).
    #[error("flotilla: bad request: {0}")]
    BadRequest(String),
    /// A member with this id is in the table already.
    #[error("etcdserver: member ID already exist")]
    MemberExists,
    /// Another member advertises one of these peer URLs.
    #[error("etcdserver: Peer URLs already exists")]
    PeerUrlExists,
    /// No member has this id.
    #[error("etcdserver: member not found")]
    MemberNotFound,
    /// This id belonged to a member that was removed; it never comes back.
    #[error("membership: ID removed")]
    MemberRemoved,
    /// Promoting a member that already votes.
    #[error("etcdserver: can only promote a learner member")]
    MemberNotLearner,
    /// Peer URLs missing or not `http(s)://host:port`.
    #[error("etcdserver: given member URLs are invalid")]
    MemberBadUrls,
    /// A write past the space quota, or while the NOSPACE alarm is raised.
    #[error("etcdserver: mvcc: database space exceeded")]
    NoSpace,
}

/// [`KvError`] as stored in a snapshot, for the responses exactly-once
/// sessions cache.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct ErrorRecord {
    #[prost(uint32, tag = "1")]
    pub code: u32,
    #[prost(int64, tag = "2")]
    pub a: i64,
    #[prost(int64, tag = "3")]
    pub b: i64,
    #[prost(string, tag = "4")]
    pub detail: String,
}

impl KvError {
    pub(crate) fn to_record(&self) -> ErrorRecord {
        let (code, a, b, detail) = match self {
            KvError::Compacted { compact_revision } => (1, *compact_revision, 0, String::new()),
            KvError::FutureRevision => (2, 0, 0, String::new()),
            KvError::EmptyKey => (3, 0, 0, String::new()),
            KvError::KeyNotFound => (4, 0, 0, String::new()),
            KvError::ValueProvided => (5, 0, 0, String::new()),
            KvError::LeaseProvided => (6, 0, 0, String::new()),
            KvError::DuplicateKey => (7, 0, 0, String::new()),
            KvError::TooManyOps => (8, 0, 0, String::new()),
            KvError::LeaseNotFound => (9, 0, 0, String::new()),
            KvError::LeaseExists => (10, 0, 0, String::new()),
            KvError::LeaseTtlTooLarge => (11, 0, 0, String::new()),
            KvError::KeyTooLarge { len, max } => (12, *len as i64, *max as i64, String::new()),
            KvError::ValueTooLarge { len, max } => (13, *len as i64, *max as i64, String::new()),
            KvError::StaleSequence { seq, last } => (14, *seq as i64, *last as i64, String::new()),
            KvError::BadRequest(s) => (15, 0, 0, s.clone()),
            KvError::SessionWindowFull { seq, max } => {
                (17, *seq as i64, *max as i64, String::new())
            }
            KvError::MemberExists => (20, 0, 0, String::new()),
            KvError::PeerUrlExists => (21, 0, 0, String::new()),
            KvError::MemberNotFound => (22, 0, 0, String::new()),
            KvError::MemberRemoved => (23, 0, 0, String::new()),
            KvError::MemberNotLearner => (24, 0, 0, String::new()),
            KvError::MemberBadUrls => (25, 0, 0, String::new()),
            KvError::NoSpace => (16, 0, 0, String::new()),
        };
        ErrorRecord { code, a, b, detail }
    }

    pub(crate) fn from_record(r: &ErrorRecord) -> Result<KvError, String> {
        Ok(match r.code {
            1 => KvError::Compacted {
                compact_revision: r.a,
            },
            2 => KvError::FutureRevision,
            3 => KvError::EmptyKey,
            4 => KvError::KeyNotFound,
            5 => KvError::ValueProvided,
            6 => KvError::LeaseProvided,
            7 => KvError::DuplicateKey,
            8 => KvError::TooManyOps,
            9 => KvError::LeaseNotFound,
            10 => KvError::LeaseExists,
            11 => KvError::LeaseTtlTooLarge,
            12 => KvError::KeyTooLarge {
                len: r.a as u64,
                max: r.b as u64,
            },
            13 => KvError::ValueTooLarge {
                len: r.a as u64,
                max: r.b as u64,
            },
            14 => KvError::StaleSequence {
                seq: r.a as u64,
                last: r.b as u64,
            },
            15 => KvError::BadRequest(r.detail.clone()),
            17 => KvError::SessionWindowFull {
                seq: r.a as u64,
                max: r.b as u64,
            },
            20 => KvError::MemberExists,
            21 => KvError::PeerUrlExists,
            22 => KvError::MemberNotFound,
            23 => KvError::MemberRemoved,
            24 => KvError::MemberNotLearner,
            25 => KvError::MemberBadUrls,
            16 => KvError::NoSpace,
            c => return Err(format!("unknown error code {c} in snapshot")),
        })
    }
}
