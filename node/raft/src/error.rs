//! Errors of the core, split by who can act on them: the caller of `propose`
//! or `read_index` (retry elsewhere, back off), the operator (configuration),
//! or nobody (storage failure: the node must stop).

use crate::types::{LogIndex, NodeId};

/// A configuration that cannot work.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid raft configuration: {0}")]
pub struct ConfigError(pub String);

/// Why a proposal was refused. Nothing was appended.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProposeError {
    /// Only the leader accepts proposals; `leader_hint` names the leader this
    /// node knows of, if any.
    #[error("not the leader (leader hint: {leader_hint:?})")]
    NotLeader {
        /// The leader this node knows of.
        leader_hint: Option<NodeId>,
    },
    /// A leadership transfer is under way; retry at the new leader.
    #[error("leadership transfer to {to} in progress")]
    TransferInProgress {
        /// The transferee.
        to: NodeId,
    },
    /// A membership change that cannot be made now (or at all); the reason
    /// says which.
    #[error("membership change rejected: {0}")]
    ConfChangeRejected(String),
    /// A batch without commands.
    #[error("empty proposal batch")]
    EmptyBatch,
    /// Too much is appended but not yet committed; back off and retry.
    #[error(
        "uncommitted log limit reached: {uncommitted_bytes} bytes in {uncommitted_entries} entries (limits {max_bytes} bytes, {max_entries} entries)"
    )]
    UncommittedLimit {
        /// Bytes appended but not committed.
        uncommitted_bytes: u64,
        /// Entries appended but not committed.
        uncommitted_entries: u64,
        /// The byte limit.
        max_bytes: u64,
        /// The entry limit.
        max_entries: u64,
    },
}

/// Why a read request was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReadError {
    /// No leader is known, so nobody can confirm the read.
    #[error("no leader known")]
    NoLeader,
    /// Too many reads are waiting; back off and retry.
    #[error("too many pending reads (limit {limit})")]
    TooManyPending {
        /// The limit.
        limit: usize,
    },
}

/// Why a leadership transfer was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TransferError {
    /// Only the leader can transfer leadership.
    #[error("not the leader (leader hint: {leader_hint:?})")]
    NotLeader {
        /// The leader this node knows of.
        leader_hint: Option<NodeId>,
    },
    /// The target is not a voter of the current configuration.
    #[error("{0} is not a voter")]
    NotVoter(NodeId),
}

/// A storage failure. Reads of compacted or missing entries are programming
/// errors of the caller; IO failures are fatal to the node.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The entry was compacted away.
    #[error("log index {0} is compacted")]
    Compacted(LogIndex),
    /// The entry does not exist (yet).
    #[error("log index {0} is unavailable")]
    Unavailable(LogIndex),
    /// The storage medium failed; the node must stop.
    #[error("storage failure: {0}")]
    Fatal(String),
}
