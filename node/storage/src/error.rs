//! Why a data directory could not be opened. Each of these needs an operator
//! (wrong directory, damaged disk); none is retried. Once open, failures are
//! reported as [`flotilla_raft::StorageError::Fatal`].

use std::io;
use std::path::PathBuf;

use flotilla_raft::{LogIndex, StorageError};

/// A refusal to open a data directory.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// An IO operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The directory was stamped by another cluster.
    #[error(
        "{path}: data directory belongs to cluster {found:#x}, not {expected:#x}; refusing to start on another cluster's data"
    )]
    ForeignCluster {
        /// The identity file.
        path: PathBuf,
        /// The cluster id in the directory.
        found: u64,
        /// The cluster id this node was started with.
        expected: u64,
    },
    /// The directory was stamped by another member of the cluster.
    #[error(
        "{path}: data directory belongs to member {found}, not {expected}; refusing to start on another member's data"
    )]
    ForeignMember {
        /// The identity file.
        path: PathBuf,
        /// The member id in the directory.
        found: u64,
        /// The member id this node was started with.
        expected: u64,
    },
    /// The directory holds Raft state but no identity stamp, so whose it is
    /// cannot be checked.
    #[error(
        "{path} is missing but the data directory holds Raft state; refusing to guess whose it is"
    )]
    Unstamped {
        /// The missing identity file.
        path: PathBuf,
    },
    /// The hard-state file is gone from a stamped directory. The vote it
    /// held is lost, and restarting without it could let this member vote
    /// twice in one term, so the node refuses to start.
    #[error(
        "{path} is missing: the saved term and vote are lost, and starting without them could let this member vote twice in a term; restore it or replace the member"
    )]
    HardStateLost {
        /// The missing hard-state file.
        path: PathBuf,
    },
    /// A file is damaged somewhere other than a torn log tail.
    #[error("{path} is corrupt at byte {offset}: {reason}")]
    Corrupt {
        /// The damaged file.
        path: PathBuf,
        /// Where the damage starts.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// The saved commit index is beyond the recovered log: entries known to
    /// be committed are missing.
    #[error(
        "saved commit index {commit} is beyond the last recovered log index {last_index}: committed entries were lost"
    )]
    CommittedEntriesLost {
        /// The saved commit index.
        commit: LogIndex,
        /// The last index found in the log.
        last_index: LogIndex,
    },
}

impl OpenError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> OpenError {
        let path = path.into();
        move |source| OpenError::Io { path, source }
    }

    pub(crate) fn corrupt(
        path: impl Into<PathBuf>,
        offset: u64,
        reason: impl ToString,
    ) -> OpenError {
        OpenError::Corrupt {
            path: path.into(),
            offset,
            reason: reason.to_string(),
        }
    }
}

impl From<OpenError> for StorageError {
    fn from(e: OpenError) -> StorageError {
        StorageError::Fatal(e.to_string())
    }
}
