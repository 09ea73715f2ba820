//! Limits of the key-value state machine.

/// The largest request a member may be configured to accept
/// (`--max-request-bytes`): the store applies values up to this size, so
/// whatever a member admits applies on every replica.
pub const REQUEST_BYTES_LIMIT: usize = 64 * 1024 * 1024;

/// The largest `--max-txn-ops` a member may be configured with; the store
/// applies transactions up to it.
pub const TXN_OPS_LIMIT: usize = 65_536;

/// The default [`KvConfig::session_window_max`]: 1024 writes in flight per
/// client, far beyond what one client's connections carry at once, while a
/// session stays at most 1024 cached responses (most are a header of a few
/// dozen bytes).
pub const SESSION_WINDOW_MAX: usize = 1024;

/// Bounds the state machine enforces. Every node of a cluster must use the
/// same values: they decide which commands are rejected and when history and
/// sessions are dropped, so differing values would make replicas diverge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KvConfig {
    /// Longest key accepted, in bytes.
    pub key_bytes_max: usize,
    /// Longest value accepted, in bytes. Members admit requests up to
    /// their `--max-request-bytes`; this is the largest that setting may
    /// be, [`REQUEST_BYTES_LIMIT`].
    pub value_bytes_max: usize,
    /// Most compares, and most operations per branch, in one transaction.
    /// Members admit transactions up to their `--max-txn-ops` (etcd's, 128
    /// by default); this is the largest that setting may be,
    /// [`TXN_OPS_LIMIT`].
    pub txn_ops_max: usize,
    /// The history bound: the store compacts itself, as it applies writes,
    /// so as to keep about this many revisions below the current one (up
    /// to 1 % more between batches: see [`Self::compaction_batch_max`]); 0
    /// turns the bound off. etcd-style auto-compaction by age or count
    /// ([`crate::compaction`]) is separate and proposes Compacts through the
    /// log; this bound is the backstop that keeps memory bounded without it.
    pub retain_revisions: i64,
    /// Auto-compaction's batch: the most revision-index entries (a key's
    /// change each) one write's auto-compaction processes, unless the
    /// write itself made more changes. The bound on history waits until
    /// it is exceeded by 1 % of [`Self::retain_revisions`], then compacts
    /// whole revisions up to this many entries per write, and a revision
    /// with more (a DeleteRange of many keys) over several writes; so no
    /// write stalls the apply loop for a large compaction. (A batch may
    /// also sweep released versions: it looks at up to four times this
    /// many keys and changes at most this many in all.)
    pub compaction_batch_max: usize,
    /// Largest lease TTL accepted (etcd's `MaxLeaseTTL`).
    pub lease_ttl_max_secs: i64,
    /// Smallest lease TTL granted; shorter requests are raised to it, as
    /// etcd raises them to its minimum TTL.
    pub lease_ttl_min_secs: i64,
    /// An exactly-once session idle for more than this many log entries is
    /// dropped.
    pub session_ttl_entries: u64,
    /// How often, in applied log entries, idle sessions are looked for.
    pub session_check_interval_entries: u64,
    /// Most sessions kept; beyond it the least recently used is dropped.
    pub sessions_max: usize,
    /// Most responses one session keeps for writes its client has not
    /// confirmed seeing (those at or above its first-unanswered mark): how
    /// many writes one client may have in flight at once. A new write
    /// beyond it is refused with
    /// [`KvError::SessionWindowFull`](super::KvError::SessionWindowFull).
    pub session_window_max: usize,
    /// How many leases [`super::Lessor::expired`] returns per call at most,
    /// so a burst of expiries becomes a bounded stream of revoke proposals.
    pub expired_leases_per_call_max: usize,
}

impl Default for KvConfig {
    fn default() -> Self {
        KvConfig {
            key_bytes_max: 32 * 1024,
            value_bytes_max: REQUEST_BYTES_LIMIT,
            txn_ops_max: TXN_OPS_LIMIT,
            retain_revisions: 100_000,
            compaction_batch_max: 10_000,
            lease_ttl_max_secs: 9_000_000_000,
            lease_ttl_min_secs: 1,
            session_ttl_entries: 1_000_000,
            session_check_interval_entries: 1024,
            sessions_max: 10_000,
            session_window_max: SESSION_WINDOW_MAX,
            expired_leases_per_call_max: 16,
        }
    }
}
