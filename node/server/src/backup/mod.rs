//! Backups: the snapshot file a member streams through etcd's Maintenance
//! Snapshot (so `etcdctl snapshot save FILE` works), and restoring one into
//! the data directories of a new cluster (`flotilla snapshot restore`), the
//! way out after a cluster lost its quorum for good.
//!
//! | file | what |
//! |---|---|
//! | `file.rs` | the file format: header, store, padding, trailing sha256; [`SnapshotReader`] (a file checked as it is read), [`read_snapshot`], [`SnapshotChunks`] |
//! | `spool.rs` | [`spool_snapshot`]: a backup streamed from a temporary file, in bounded memory |
//! | `restore.rs` | [`restore`]: a snapshot file → a data directory a new member starts from; [`summarize`]; both read the file once, as a stream, in bounded memory |
//!
//! A snapshot holds the key-value store at one applied log index: every
//! key with its retained history and revisions, the leases, the alarms, the
//! exactly-once sessions and the member table. Restoring keeps all of it
//! but the member table, which becomes the new cluster's (as
//! `etcdctl snapshot restore` does), and stamps the data directory with
//! the new cluster's and member's ids, so it is refused by any other.

mod file;
mod restore;
mod spool;

pub use file::{
    BLOCK_BYTES, CHECKSUM_BYTES, FORMAT_VERSION, MAGIC, SnapshotChunks, SnapshotDigest,
    SnapshotFile, SnapshotFileError, SnapshotHeader, SnapshotReader, read_snapshot,
};
pub use restore::{
    RestoreError, RestoreReport, SnapshotSummary, restore, restore_from, summarize, summarize_from,
};
pub use spool::{SPOOL_FILE, remove_stale_spool, spool_snapshot};
