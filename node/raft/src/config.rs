//! Tuning and limits of one core. Every queue and batch the core keeps has its
//! bound here.

use crate::error::ConfigError;
use crate::types::NodeId;

/// How linearizable reads are confirmed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadMode {
    /// ReadIndex (thesis §6.4): the leader confirms with a heartbeat quorum
    /// that it still leads. Safe whatever the clocks do.
    Safe,
    /// Leader lease (thesis §6.4.1): no round trip while a heartbeat quorum was
    /// seen recently enough. Relies on bounded clock drift between members;
    /// requires check-quorum.
    LeaseBased,
}

/// Configuration of one core.
#[derive(Clone, Debug)]
pub struct Config {
    /// This member's id (not [`NodeId::NONE`]).
    pub id: NodeId,
    /// Minimum election timeout in ticks; each timeout is drawn from
    /// `[election_ticks, 2 * election_ticks)`.
    pub election_ticks: u32,
    /// Ticks between leader heartbeats; must be below `election_ticks`.
    pub heartbeat_ticks: u32,
    /// Seed of the core's random number generator (election timeouts). Give
    /// each member a different one.
    pub seed: u64,
    /// Pre-vote (thesis §9.6): a node asks before raising its term, so a node
    /// returning from a partition does not depose a healthy leader.
    pub pre_vote: bool,
    /// Check-quorum (thesis §6.2): a leader that has not heard from a quorum
    /// for an election timeout steps down; followers that heard from a leader
    /// within the minimum election timeout ignore vote requests.
    pub check_quorum: bool,
    /// How reads are confirmed.
    pub read_mode: ReadMode,
    /// Ticks subtracted from the minimum election timeout to obtain the lease
    /// length, covering clock drift between members.
    pub lease_drift_ticks: u32,
    /// Most bytes of entries in one AppendEntries message (at least one entry
    /// is always sent).
    pub max_msg_bytes: u64,
    /// Most AppendEntries messages in flight to one follower.
    pub max_inflight_msgs: usize,
    /// Most bytes of entries in flight to one follower.
    pub max_inflight_bytes: u64,
    /// Most bytes of entries appended by the leader but not yet committed; a
    /// proposal beyond it is refused.
    pub max_uncommitted_bytes: u64,
    /// Most entries appended by the leader but not yet committed.
    pub max_uncommitted_entries: u64,
    /// Most bytes of committed entries handed out in one `Ready`.
    pub max_committed_bytes_per_ready: u64,
    /// Most read requests waiting for confirmation.
    pub max_pending_reads: usize,
    /// A learner may be promoted only when at most this many entries behind
    /// the leader, so that a promotion never stalls commits.
    pub max_promote_lag_entries: u64,
    /// Refuse to remove a voter when the voters left would not include a
    /// quorum that answered within the last election timeout (etcd's
    /// `--strict-reconfig-check`): such a removal would leave the cluster
    /// unable to commit. Off by default in the core; the node turns it on.
    pub strict_reconfig_check: bool,
    /// Bytes of snapshot data per InstallSnapshot message.
    pub max_snapshot_chunk_bytes: u64,
    /// Largest snapshot a follower accepts (its storage stages one while
    /// receiving it).
    pub max_snapshot_bytes: u64,
    /// [`Raft::snapshot_due`](crate::Raft::snapshot_due) once this many entries
    /// were applied since the last snapshot...
    pub snapshot_after_entries: u64,
    /// ...or this many bytes of entries (whatever the percentage below:
    /// this bounds the log kept since the last snapshot, which storage may
    /// mirror in memory).
    pub snapshot_after_bytes: u64,
    /// The entry count above makes a snapshot due only once the bytes of
    /// entries applied since the last snapshot reach this percentage of
    /// that snapshot's size (Redis's `auto-aof-rewrite-percentage` plays
    /// the same part). An in-memory state machine encodes its whole state
    /// for a snapshot, so without this a large state with small writes
    /// would cost a write of the whole state every `snapshot_after_entries`
    /// entries; with it, up to `snapshot_after_bytes`, snapshots cost at
    /// most 100 / this bytes written per byte of log. 0 turns it off. The
    /// size is that of the last snapshot this member took or installed, or
    /// else [`Config::restored_snapshot_bytes`]; while neither is known the
    /// entry count alone counts.
    pub snapshot_min_log_percent: u64,
    /// Entries a compaction keeps before the snapshot's index (etcd's
    /// `SnapshotCatchUpEntries`, 5,000 there): a follower that fell at most
    /// this far behind the snapshot catches up by AppendEntries instead of
    /// receiving the whole snapshot. 0 discards everything the snapshot
    /// covers.
    pub snapshot_catchup_entries: u64,
    /// The index the application's state machine has already applied (from
    /// its own snapshot), so that restarts do not re-apply it.
    pub applied: u64,
    /// Bytes of data of the snapshot the state machine was restored from
    /// (the one at `applied`): what [`Config::snapshot_min_log_percent`]
    /// weighs the log against until this member takes or installs a
    /// snapshot. 0 when there is none or its size is not known.
    pub restored_snapshot_bytes: u64,
}

impl Config {
    /// The default [`Config::snapshot_after_bytes`].
    pub const SNAPSHOT_AFTER_BYTES_DEFAULT: u64 = 32 * 1024 * 1024;

    /// Defaults suited to a 100 ms tick: elections after 1–2 s, heartbeats every
    /// 100 ms, pre-vote and check-quorum on.
    pub fn new(id: NodeId) -> Config {
        Config {
            id,
            election_ticks: 10,
            heartbeat_ticks: 1,
            seed: id.0,
            pre_vote: true,
            check_quorum: true,
            read_mode: ReadMode::Safe,
            lease_drift_ticks: 2,
            max_msg_bytes: 1024 * 1024,
            max_inflight_msgs: 256,
            max_inflight_bytes: 32 * 1024 * 1024,
            max_uncommitted_bytes: 64 * 1024 * 1024,
            max_uncommitted_entries: 1 << 20,
            max_committed_bytes_per_ready: 64 * 1024 * 1024,
            max_pending_reads: 65536,
            max_promote_lag_entries: 1000,
            strict_reconfig_check: false,
            max_snapshot_chunk_bytes: 1024 * 1024,
            max_snapshot_bytes: 4 * 1024 * 1024 * 1024,
            snapshot_after_entries: 100_000,
            // The log since the last snapshot that a member keeps (and
            // storage mirrors in memory) once `snapshot_min_log_percent`
            // defers the count: 100,000 entries of a 256-byte put are about
            // this much, so a large state costs no more memory than the
            // count alone kept (at 64 MiB, 1,000,000 such keys' members
            // held 2.04 times the raw bytes against 1.88).
            snapshot_after_bytes: Config::SNAPSHOT_AFTER_BYTES_DEFAULT,
            snapshot_min_log_percent: 100,
            snapshot_catchup_entries: 0,
            applied: 0,
            restored_snapshot_bytes: 0,
        }
    }

    /// Checks the values against each other.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let fail = |reason: &str| Err(ConfigError(reason.to_string()));
        if !self.id.is_some() {
            return fail("id must not be 0");
        }
        if self.heartbeat_ticks == 0 {
            return fail("heartbeat_ticks must be at least 1");
        }
        if self.election_ticks <= self.heartbeat_ticks {
            return fail("election_ticks must be greater than heartbeat_ticks");
        }
        if self.read_mode == ReadMode::LeaseBased && !self.check_quorum {
            return fail("lease-based reads require check_quorum");
        }
        if self.read_mode == ReadMode::LeaseBased && self.lease_drift_ticks >= self.election_ticks {
            return fail("lease_drift_ticks must be below election_ticks");
        }
        if self.max_inflight_msgs == 0 {
            return fail("max_inflight_msgs must be at least 1");
        }
        if self.max_msg_bytes == 0 || self.max_inflight_bytes == 0 {
            return fail("message and inflight byte limits must be positive");
        }
        if self.max_uncommitted_bytes == 0 || self.max_uncommitted_entries == 0 {
            return fail("uncommitted limits must be positive");
        }
        if self.max_committed_bytes_per_ready == 0 || self.max_pending_reads == 0 {
            return fail("per-ready and read queue limits must be positive");
        }
        if self.max_snapshot_chunk_bytes == 0 || self.max_snapshot_bytes == 0 {
            return fail("snapshot chunk and size limits must be positive");
        }
        if self.snapshot_after_entries == 0 || self.snapshot_after_bytes == 0 {
            return fail("snapshot thresholds must be positive");
        }
        Ok(())
    }

    /// Ticks for which a leader may serve lease reads after a heartbeat round
    /// sent at some tick was acknowledged by a quorum.
    pub fn lease_ticks(&self) -> u64 {
        u64::from(self.election_ticks.saturating_sub(self.lease_drift_ticks))
    }
}
