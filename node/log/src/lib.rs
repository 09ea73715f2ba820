//! Flotilla's partition log: the broker's append-only segment store (the
//! write-ahead log of the spec's Project 3, DESIGN §4 "Partition log").
//!
//! # Layout
//!
//! ```text
//! <root>/<topic>-<partition>/
//!     00000000000000000000.log     records with offsets 0 ..
//!     00000000000000000000.index   12 bytes per record: offset u64, position u32
//!     00000000000000004096.log     the next segment, base offset 4096
//!     00000000000000004096.index
//! ```
//!
//! A record on disk (see [`record`]), **all integers little-endian**:
//!
//! ```text
//! offset u64 | timestamp_ns i64 | key_size u32 | body_size u32 | key | body | crc32 u32
//! ```
//!
//! `key_size = 0xFFFF_FFFF` marks an absent key. A plain record's body is its
//! value; the top bit of `body_size` marks an extended record, whose body is
//! an extension block (an idempotent producer's id, epoch and sequence, and
//! record headers) followed by the value. Files of the first format are
//! plain records and read unchanged. The CRC-32 (IEEE polynomial,
//! computed with `crc32fast`) covers every preceding byte of the record. The
//! index (see [`index`]) is dense, so finding an offset is one 12-byte read.
//! Segments roll by size (`segment_bytes_max`, at most 4 GiB so positions fit
//! a `u32`) and by age (`segment_age_max_ms`).
//!
//! # Modules
//!
//! | module | what |
//! |---|---|
//! | [`record`] | the record codec and its decoder for untrusted bytes |
//! | [`index`] | the 12-byte index entries |
//! | `segment` | one `.log` + `.index` pair, positional reads |
//! | [`recovery`] | the rules run on open: torn tail vs. corruption |
//! | `commit` | group commit: one fsync for many waiting appenders |
//! | `log` | [`Log`]: append, read, sync |
//! | `maintenance` | `truncate_to` and retention |
//! | [`config`] | [`LogConfig`] and [`FsyncPolicy`] |
//!
//! # The IO contract
//!
//! 1. An append encodes its records into a user-space buffer and writes it
//!    to the OS (one `pwrite` per call, more only if the batch exceeds
//!    `write_buffer_bytes`) before it publishes the new log end to readers.
//!    So a record is readable, and survives a crash of the process, once its
//!    append returns.
//! 2. If the [`FsyncPolicy`] asks for it, the append then waits until an
//!    fsync covers its records. One fsync covers every appender waiting at
//!    the time (group commit); the writer lock is not held during fsync.
//! 3. When a segment is closed by a roll it is fsynced (log and index),
//!    whatever the policy, so only the last segment can have a torn tail.
//! 4. On open, recovery validates the last segment record by record and
//!    truncates a torn tail; damage followed by valid records is an error
//!    naming the file and byte offset. The index is rebuilt from the log
//!    whenever it cannot be shown to match.
//!
//! # Example
//!
//! ```
//! use flotilla_log::{Log, LogConfig, NewRecord, Offset};
//!
//! let dir = tempfile::tempdir()?;
//! let log = Log::open_partition(dir.path(), "orders", 0, LogConfig::default())?;
//! let first = log.append(Some(b"id-1"), b"hello")?;
//! log.append_batch(&[NewRecord::new(None, b"a"), NewRecord::new(None, b"")])?;
//! assert_eq!(first, Offset(0));
//! assert_eq!(log.log_end_offset(), Offset(3));
//! let records = log.read_from(Offset(0), 1 << 20)?;
//! assert_eq!(records[0].value, b"hello");
//! assert_eq!(records[2].value, b"");
//! drop(log);
//! // Reopening recovers the same log.
//! let log = Log::open_partition(dir.path(), "orders", 0, LogConfig::default())?;
//! assert_eq!(log.log_end_offset(), Offset(3));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod commit;
pub mod config;
mod error;
pub mod index;
mod log;
mod maintenance;
mod offset;
pub mod record;
pub mod recovery;
mod segment;

pub use config::{FsyncPolicy, LogConfig, SEGMENT_BYTES_LIMIT};
pub use error::{LogError, Result};
pub use log::{Log, SegmentInfo, unix_now_ns};
pub use maintenance::RetentionOutcome;
pub use offset::Offset;
pub use record::{NewRecord, Record};

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn log_is_send_and_sync() {
        assert_send_sync::<Log>();
    }
}
