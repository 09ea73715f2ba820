//! How a data directory is opened: whose it is, how durable, how large the
//! segments grow.

use std::fmt;

use flotilla_raft::ConfState;

/// Whether writes are fsynced.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum FsyncMode {
    /// Every durability point (each `save`, each atomic file replace) is
    /// fsynced before the call returns. The only mode a real node may use.
    #[default]
    Always,
    /// Nothing is fsynced: a machine crash can lose acknowledged writes and
    /// break Raft's safety. For benchmarks only; logged loudly at open.
    Never,
}

impl fmt::Display for FsyncMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FsyncMode::Always => "always",
            FsyncMode::Never => "never",
        })
    }
}

/// Options for [`crate::DiskStorage::open`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StorageOptions {
    /// The cluster this member belongs to; stamped on first start and
    /// checked on every later one.
    pub cluster_id: u64,
    /// This member's id; stamped and checked like `cluster_id`.
    pub member_id: u64,
    /// Durability of writes.
    pub fsync: FsyncMode,
    /// A segment is rolled once it holds at least this many bytes. A batch
    /// (one `save`) is never split, so a segment can exceed this by one
    /// batch.
    pub segment_bytes_max: u64,
    /// How far ahead of the log's end the active segment is filled with
    /// zeros, up to `segment_bytes_max`; 0 turns it off. A log write that
    /// would pass the filled end first fills this many bytes more. Writing
    /// over blocks that are already allocated and written lets each
    /// fsync flush data alone, without the file's size and block map: on
    /// ext4 that is about a third less CPU per fsync and half again as
    /// many fsyncs a second (`fallocate` would not do: its blocks are
    /// "unwritten", and the first write over them changes metadata).
    /// Recovery reads a zero tail as the log's clean end.
    pub preallocate_bytes: u64,
    /// On first start: the voters of a new cluster (like
    /// `MemStorage::new_with_voters`), or `None` for a member joining an
    /// existing cluster (like `MemStorage::new_joining`). Ignored later.
    pub bootstrap: Option<ConfState>,
}

impl StorageOptions {
    /// Default segment size: large enough that rolls (one extra directory
    /// fsync each) are rare, small enough that compaction frees space soon.
    pub const SEGMENT_BYTES_MAX_DEFAULT: u64 = 64 << 20;

    /// Default zero fill ahead of the log's end: small enough that the
    /// fsync which carries a fill stays a few milliseconds, large enough
    /// that only about one save in a thousand carries one.
    pub const PREALLOCATE_BYTES_DEFAULT: u64 = 1 << 20;

    /// Options with durable writes and default segments, for a joining
    /// member; set `bootstrap` for a founding one.
    pub fn new(cluster_id: u64, member_id: u64) -> StorageOptions {
        StorageOptions {
            cluster_id,
            member_id,
            fsync: FsyncMode::Always,
            segment_bytes_max: Self::SEGMENT_BYTES_MAX_DEFAULT,
            preallocate_bytes: Self::PREALLOCATE_BYTES_DEFAULT,
            bootstrap: None,
        }
    }
}
