//! The partition log's error type.
//!
//! Errors a caller can act on (an offset out of range, a record too large, an
//! empty batch, a bad config) are apart from fatal ones (corruption, I/O, a
//! log stopped after a storage failure): see [`LogError::is_fatal`].

use std::io;
use std::path::{Path, PathBuf};

use crate::Offset;

/// Everything that can go wrong in the partition log.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// A read asked for an offset the log does not hold: below the log start
    /// (deleted by retention) or past the log end.
    #[error("offset {requested} is out of range: the log holds [{log_start}, {log_end})")]
    OffsetOutOfRange {
        /// The offset asked for.
        requested: Offset,
        /// The first offset still held.
        log_start: Offset,
        /// The offset the next append will get.
        log_end: Offset,
    },
    /// A record's encoded size (header, key, value and CRC) is above the
    /// configured `record_bytes_max`.
    #[error("record of {bytes} bytes (encoded) exceeds record_bytes_max of {max} bytes")]
    RecordTooLarge {
        /// The encoded size of the rejected record.
        bytes: u64,
        /// The configured limit.
        max: u32,
    },
    /// `append_batch` was called with no records.
    #[error("append_batch needs at least one record")]
    EmptyBatch,
    /// The configuration is inconsistent.
    #[error("invalid log config: {0}")]
    InvalidConfig(String),
    /// Stored data failed validation: a bad CRC, size or offset that is not a
    /// torn tail, or an index that disagrees with its log.
    #[error("corrupt log data in {}: at byte {byte_offset}: {reason}", file.display())]
    Corrupt {
        /// The damaged file.
        file: PathBuf,
        /// Where in that file the first invalid byte range starts.
        byte_offset: u64,
        /// What was wrong.
        reason: String,
    },
    /// The operating system failed a file operation.
    #[error("I/O error on {}: {source}", path.display())]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// An earlier write or fsync failed, so the log no longer knows what is on
    /// disk. It refuses further appends; reopening it runs recovery.
    #[error("the log stopped after an earlier storage failure; reopen it to recover")]
    Failed,
}

impl LogError {
    /// True for errors after which this log should not be used (reopen it, or
    /// stop the node); false for errors about one request.
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            LogError::Corrupt { .. } | LogError::Io { .. } | LogError::Failed
        )
    }

    /// An IO failure on `path`, as a [`LogError::Io`]: for code that does
    /// its own file IO beside a log (the benchmark drivers compare the log
    /// with plain files) and reports it the same way.
    pub fn io(path: &Path) -> impl FnOnce(io::Error) -> LogError + '_ {
        move |source| LogError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    pub(crate) fn corrupt(file: &Path, byte_offset: u64, reason: impl Into<String>) -> LogError {
        LogError::Corrupt {
            file: file.to_path_buf(),
            byte_offset,
            reason: reason.into(),
        }
    }
}

/// The partition log's result type.
pub type Result<T, E = LogError> = std::result::Result<T, E>;
