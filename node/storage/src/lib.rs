//! Flotilla's on-disk Raft storage (DESIGN §4): [`DiskStorage`] implements
//! [`flotilla_raft::Storage`] and passes the same test suite as
//! `MemStorage` (`flotilla_tests::storage_suite`).
//!
//! # Layout
//!
//! ```text
//! <dir>/IDENTITY                      cluster id, member id (stamped on first start)
//! <dir>/hardstate                     term, vote, commit
//! <dir>/snapshot/<index>-<term>.snap  the newest snapshot (index 0: bootstrap voters)
//! <dir>/log/<first index>.seg         framed entries; names are %020d
//! ```
//!
//! A log frame is `len u32 | crc32 u32 | term u64 | index u64 | kind u8 |
//! synced u64 | payload`, little-endian (`synced`: how far the log was
//! durable when the frame was written; `IDENTITY` is `FLOTID02` since
//! frames carry it, and a `FLOTID01` directory is restamped at open); `len` counts the bytes after the CRC and the CRC
//! covers exactly them (see [`frame`]). `IDENTITY`, `hardstate` and the
//! snapshots each end with a CRC over their content and are replaced
//! atomically: write `<name>.tmp`, fsync, rename, fsync the directory.
//!
//! # Modules
//!
//! | module | what |
//! |---|---|
//! | `disk` | [`DiskStorage`]: the `Storage` implementation |
//! | `recovery` | opening: identity, hard state, snapshot, segment scan |
//! | `segment` | segment names; the scan that tells a torn tail from damage |
//! | [`frame`] | the frame codec |
//! | `meta_files` | identity, hard state and snapshot files; atomic replace |
//! | [`fs`] | the file operations, behind a trait; [`FaultyFs`] injects faults |
//! | `options` | [`StorageOptions`], [`FsyncMode`] |
//! | [`pacing`] | large files written in one go, synced every few MiB on the way |
//! | [`priority`] | the lowest CPU priority for background threads (snapshot writing, file removal) |
//!
//! # The IO contract
//!
//! 1. **Group commit.** A `save` encodes all its entries into one buffer,
//!    writes it with one `write` to the active segment and fsyncs it once
//!    (`fdatasync`), however many entries it carries. A conflicting suffix is
//!    cut first (the segment is truncated at the frame of the first replaced
//!    index, later segments removed); that same fsync makes the cut durable.
//!    The write lands over zeros written ahead of it: when a save would
//!    pass the active file's end, `preallocate_bytes` more zeros (1 MiB by
//!    default, never past `segment_bytes_max`) are written first, in the
//!    same fsync. Overwriting allocated, written blocks lets `fdatasync`
//!    flush data alone, not the file's size and block map.
//!    **Deferred sync.** `save_deferred` does the same write without the
//!    fsync and returns a handle that syncs the active segment from any
//!    thread (one `fdatasync` covers every write before it); the Raft
//!    driver runs it beside its loop. Whatever must not run ahead of the
//!    log syncs it first: a new term or vote (the hard-state file carries
//!    the commit index, which recovery refuses beyond the log), a new
//!    segment (no gap between segments), and a snapshot.
//! 2. **Term and vote before entries.** When a `save` changes the term or
//!    vote, the log written so far is synced and the hard-state file
//!    replaced atomically before the entries are written, its commit index
//!    capped at what is durable: up to three more fsyncs, but only at
//!    elections.
//! 3. **The commit index is saved lazily.** A change of the commit index
//!    alone does not rewrite the hard-state file: it is written with the
//!    next term/vote change, and recovery raises it to the snapshot index.
//!    Raft needs only term, vote and log durable (Figure 2: `commitIndex` is
//!    volatile); writing it on every `save` would cost three fsyncs per
//!    batch instead of one. After a restart the core may re-learn commits
//!    from the leader, and entries past the saved commit index are applied
//!    again only once re-committed.
//! 4. **Snapshots.** `compact` and `apply_snapshot` write the snapshot file
//!    atomically, then delete whole segments the compaction covers (a
//!    segment straddling it stays; recovery skips covered entries).
//!    `compact` discards the log only up to the compaction point the core
//!    gives (the snapshot's index less its catch-up entries); the entries
//!    between stay in memory and on disk for followers a little behind,
//!    until the next compaction. Recovery loads the log from the snapshot
//!    on, so a restarted member keeps no catch-up entries until its next
//!    snapshot (it holds everything since its last one anyway). When
//!    `apply_snapshot` discards the log, all segments go and an empty one
//!    starts after the snapshot.
//!    `compact` can also run in two halves: a
//!    [`flotilla_raft::SnapshotWriter`] from `snapshot_writer` writes the
//!    file on another thread, touching nothing else, and `compact_written`
//!    then discards the covered log (nothing, if a snapshot installed
//!    meanwhile is newer).
//! 5. **Failure is final.** Any IO error (a failed fsync above all) makes
//!    the storage fatal: that call and every later one return
//!    [`flotilla_raft::StorageError::Fatal`]; the node must stop.
//! 6. **Reads are from memory.** The entries after the snapshot are kept in
//!    memory (at open their payloads are copied out of the segment buffers,
//!    which are then freed), so reads never touch the disk; memory is bounded by how often the application
//!    compacts. The one exception is the snapshot's data: about the size of
//!    the whole state machine, which the application holds anyway, it is
//!    never held whole. A leader reads a chunk at a time from the file to
//!    send it, a follower writes chunks to a file as they arrive, and the
//!    state machine restores from a reader over the file (`snapshot_reader`,
//!    at install and at start), which checks the data's CRC as it reads.
//!    A snapshot the application takes is streamed into its file
//!    (`snapshot_writer` takes a [`flotilla_raft::SnapshotEncoder`]),
//!    synced every few MiB so the final fsync has little left to flush.
//!    `snapshot()` still reads the file back whole, for storage-agnostic
//!    callers and tests; a file that fails its CRC then is
//!    [`flotilla_raft::StorageError::Fatal`].
//!
//! # Recovery
//!
//! 1. `IDENTITY` must name this cluster and member; a directory without it
//!    that holds a vote or log frames is refused.
//! 2. A missing `hardstate` is refused ([`OpenError::HardStateLost`]): the
//!    vote is lost, and guessing could let this member vote twice in a term.
//! 3. The newest snapshot file is checked (header, length, CRC) in one
//!    pass a piece at a time, never held whole; a torn or damaged one is
//!    refused ([`OpenError::Corrupt`]). Leftover `.tmp` files (a write a
//!    crash interrupted) are removed.
//! 4. Segments are scanned in order; where only zeros remain (the fill
//!    ahead), the segment ends cleanly. A bad frame in the last segment is
//!    a torn tail unless a later valid frame was written after it was
//!    synced (each frame records how far the log was durable when it was
//!    written) or carries no such record (an older format): the file is
//!    cut there, dropping any valid frames after it, and fsynced. So a
//!    crash that persisted a later page of the unsynced writes but not an
//!    earlier one is a torn tail too; so, unavoidably, is damage to a frame
//!    synced only after the last surviving frame was written. Any other bad
//!    frame (a CRC that holds over an unknown kind included), an index out
//!    of sequence or a gap between segments is refused with the file and
//!    byte offset ([`OpenError::Corrupt`]). See `segment` for the cases.
//! 5. A saved commit index beyond the recovered log is refused
//!    ([`OpenError::CommittedEntriesLost`]).
//!
//! ```
//! use flotilla_raft::{ConfState, Entry, EntryKind, NodeId, Storage, Term, Bytes};
//! use flotilla_storage::{DiskStorage, StorageOptions};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let options = StorageOptions {
//!     bootstrap: Some(ConfState { voters: vec![NodeId(1)], learners: vec![] }),
//!     ..StorageOptions::new(7, 1)
//! };
//! let mut storage = DiskStorage::open(dir.path(), options.clone()).unwrap();
//! let entry = Entry { term: Term(1), index: 1, kind: EntryKind::Normal, data: Bytes::from("x=1") };
//! storage.save(None, &[entry.clone()]).unwrap();
//! drop(storage);
//! let storage = DiskStorage::open(dir.path(), options).unwrap();
//! assert_eq!(storage.entries(1, 2, u64::MAX).unwrap(), vec![entry]);
//! assert_eq!(storage.initial_state().unwrap().conf_state.voters, vec![NodeId(1)]);
//! ```

mod disk;
mod error;
mod fault;
pub mod frame;
pub mod fs;
mod meta_files;
mod options;
pub mod pacing;
pub mod priority;
mod recovery;
mod segment;
mod snapshot_stream;

pub use disk::{DiskStorage, HARD_STATE_FILE, IDENTITY_FILE, LOG_DIR, SNAPSHOT_DIR};
pub use error::OpenError;
pub use fault::FaultyFs;
pub use options::{FsyncMode, StorageOptions};
pub use snapshot_stream::SnapshotFileReader;
