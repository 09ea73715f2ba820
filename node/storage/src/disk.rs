//! [`DiskStorage`]: the Raft log, hard state and snapshot on disk, with the
//! entries since the last snapshot mirrored in memory for reads. The
//! snapshot's data stays on disk only: it is about the size of the whole
//! state machine, which the application already holds, and is read back
//! only to send it to a follower or to restore it at start.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use flotilla_raft::{
    Entry, HardState, InitialState, LogIndex, LogSync, MemStorage, Snapshot, SnapshotEncoder,
    SnapshotMeta, SnapshotSource, SnapshotWriter, Storage, StorageError, Term,
};

use crate::error::OpenError;
use crate::frame;
use crate::fs::{AppendFile, FileSync, FileSystem, RealFs};
use crate::meta_files::{
    self, encode_hard_state, snapshot_name, write_atomic, write_snapshot_atomic,
    write_snapshot_streamed,
};
use crate::options::{FsyncMode, StorageOptions};
use crate::recovery;
use crate::segment::segment_name;
use crate::snapshot_stream::{Receiving, SnapshotSums};

/// File name of the hard state, in the data directory.
pub const HARD_STATE_FILE: &str = "hardstate";
/// File name of the identity stamp, in the data directory.
pub const IDENTITY_FILE: &str = "IDENTITY";
/// Subdirectory of the log segments.
pub const LOG_DIR: &str = "log";
/// Subdirectory of the snapshot files.
pub const SNAPSHOT_DIR: &str = "snapshot";

/// One segment file: its first index and the bytes of valid frames in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Segment {
    pub(crate) first_index: LogIndex,
    pub(crate) len_bytes: u64,
}

/// Raft storage in a data directory (see the crate docs for the layout).
///
/// Reads are served from memory: the entries after the last snapshot, the
/// snapshot and the hard state are loaded at [`DiskStorage::open`] and kept
/// up to date, so the disk is only written (the write-ahead copy) after
/// open. Memory is therefore the size of the uncompacted log, which the
/// application bounds by taking snapshots ([`Storage::compact`]).
///
/// After any IO failure the storage is *fatal*: every later call returns
/// [`StorageError::Fatal`], because what reached the disk is unknown and
/// carrying on could acknowledge writes that are not durable.
pub struct DiskStorage {
    pub(crate) fs: Arc<dyn FileSystem>,
    pub(crate) dir: PathBuf,
    pub(crate) options: StorageOptions,
    /// The in-memory copy that serves reads: the hard state as the core last
    /// saved it, the snapshot's metadata (its data is left empty; see
    /// [`Storage::snapshot`]) and the entries after it. A mutation reaches
    /// it only after the disk write it depends on succeeded.
    pub(crate) mirror: MemStorage,
    /// Term and vote as last written to the hard-state file.
    pub(crate) durable_vote: HardState,
    /// The byte offset of each of the mirror's entries in its segment.
    pub(crate) offsets: Vec<u64>,
    /// Every segment file, by first index; the last one is `active`.
    pub(crate) segments: Vec<Segment>,
    pub(crate) active: Box<dyn AppendFile>,
    /// The active segment file's length: its valid frames, then perhaps
    /// zeros written ahead ([`StorageOptions::preallocate_bytes`]).
    pub(crate) file_bytes: u64,
    /// The encode buffer, reused across saves.
    pub(crate) buf: Vec<u8>,
    pub(crate) fatal: Option<String>,
    /// Length and data checksum of the newest snapshot file, for sending
    /// it without reading it whole.
    pub(crate) snapshot_sums: SnapshotSums,
    /// A snapshot being received from the leader.
    pub(crate) receiving: Option<Receiving>,
    /// Whether log writes of [`Storage::save_deferred`] may not be synced
    /// yet: the next synchronous step that depends on them (a new segment,
    /// a hard state, a snapshot) syncs the active file first.
    pub(crate) unsynced: bool,
    /// The deferred syncs' handle on the active segment, made at its first
    /// deferred write.
    pub(crate) active_sync: Option<Arc<dyn LogSync>>,
    /// Why a deferred sync failed, if one did: the storage is then fatal
    /// as after any failed IO (a later sync may succeed only because the
    /// failed one consumed the error, its pages dropped).
    pub(crate) sync_failure: Arc<OnceLock<String>>,
    /// How far the log is written and known synced, shared with the
    /// deferred syncs' handles; each frame records `synced` as it is
    /// written (see [`crate::frame`]).
    pub(crate) marks: Arc<Mutex<SyncMarks>>,
}

/// How far the log is written and known durable.
#[derive(Debug)]
pub(crate) struct SyncMarks {
    /// Bumped when the log is cut, a segment rolls or the log is discarded:
    /// a handle made before then covers another file, or indexes that no
    /// longer hold the entries it synced, and records nothing.
    era: u64,
    /// The last index written to the active segment.
    written: LogIndex,
    /// Every entry up to this index is durable. Never more than `written`.
    synced: LogIndex,
}

impl SyncMarks {
    /// The marks of a log recovered up to `written`, durable up to `synced`.
    pub(crate) fn recovered(written: LogIndex, synced: LogIndex) -> SyncMarks {
        SyncMarks {
            era: 0,
            written,
            synced,
        }
    }
}

/// [`LogSync`] of the active segment.
#[derive(Debug)]
struct SegmentSync {
    file: Arc<dyn FileSync>,
    dir: PathBuf,
    failure: Arc<OnceLock<String>>,
    marks: Arc<Mutex<SyncMarks>>,
    /// The marks' era this handle's file and indexes belong to.
    era: u64,
}

impl LogSync for SegmentSync {
    /// Fails for good once any sync failed. On success, what was written
    /// before the sync began counts as synced.
    fn sync(&self) -> Result<(), StorageError> {
        if let Some(reason) = self.failure.get() {
            return Err(StorageError::Fatal(reason.clone()));
        }
        let covers = {
            let marks = self.marks.lock().expect("sync marks");
            (marks.era == self.era).then_some(marks.written)
        };
        self.file.sync_data().map_err(|e| {
            let reason = format!("syncing the log in {}: {e}", self.dir.display());
            tracing::error!(%reason, "raft storage failed; the node must stop");
            let _ = self.failure.set(reason.clone());
            StorageError::Fatal(reason)
        })?;
        if let Some(covers) = covers {
            let mut marks = self.marks.lock().expect("sync marks");
            if marks.era == self.era {
                marks.synced = marks.synced.max(covers);
            }
        }
        Ok(())
    }
}

impl fmt::Debug for DiskStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DiskStorage")
            .field("dir", &self.dir)
            .field("hard_state", &self.mirror.hard_state())
            .field("snapshot_index", &self.mirror.snapshot_index())
            .field("first_index", &self.first_index())
            .field("last_index", &self.last_index())
            .field("segments", &self.segments.len())
            .field("fatal", &self.fatal)
            .finish()
    }
}

impl DiskStorage {
    /// Opens (on first start: creates and stamps) the data directory `dir`,
    /// recovering the log as the crate docs describe.
    pub fn open(dir: impl AsRef<Path>, options: StorageOptions) -> Result<DiskStorage, OpenError> {
        DiskStorage::open_with_fs(Arc::new(RealFs), dir, options)
    }

    /// The `(cluster_id, member_id)` a data directory is stamped with, or
    /// `None` when it holds no stamp (a new or never-initialised
    /// directory). Lets a member that restarts learn who it is before it
    /// opens the directory; a damaged stamp is an error.
    pub fn read_identity(dir: impl AsRef<Path>) -> Result<Option<(u64, u64)>, OpenError> {
        let path = dir.as_ref().join(IDENTITY_FILE);
        match std::fs::read(&path) {
            Ok(buf) => crate::meta_files::decode_identity(&path, &buf).map(|(ids, _)| Some(ids)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(OpenError::io(&path)(e)),
        }
    }

    /// [`DiskStorage::open`] over another file layer (tests inject faults).
    pub fn open_with_fs(
        fs: Arc<dyn FileSystem>,
        dir: impl AsRef<Path>,
        options: StorageOptions,
    ) -> Result<DiskStorage, OpenError> {
        recovery::open(fs, dir.as_ref(), options)
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The hard state as last saved (the commit index may be newer than the
    /// copy on disk; see the crate docs).
    pub fn hard_state(&self) -> HardState {
        self.mirror.hard_state()
    }

    /// Why the storage stopped, once an IO operation failed.
    pub fn fatal_error(&self) -> Option<&str> {
        self.fatal.as_deref()
    }

    /// The log segment files, oldest first (for tests and tools).
    pub fn segment_paths(&self) -> Vec<PathBuf> {
        self.segments
            .iter()
            .map(|s| self.segment_path(s.first_index))
            .collect()
    }

    pub(crate) fn segment_path(&self, first_index: LogIndex) -> PathBuf {
        self.dir.join(LOG_DIR).join(segment_name(first_index))
    }

    pub(crate) fn sync(&self) -> bool {
        self.options.fsync == FsyncMode::Always
    }

    fn check(&self) -> Result<(), StorageError> {
        if let Some(reason) = self.sync_failure.get() {
            return Err(StorageError::Fatal(format!(
                "storage stopped earlier: {reason}"
            )));
        }
        match &self.fatal {
            Some(reason) => Err(StorageError::Fatal(format!(
                "storage stopped earlier: {reason}"
            ))),
            None => Ok(()),
        }
    }

    /// Runs an IO step; a failure makes the storage fatal for good.
    fn io<T>(
        &mut self,
        what: &str,
        step: impl FnOnce(&mut Self) -> io::Result<T>,
    ) -> Result<T, StorageError> {
        step(self).map_err(|e| {
            let reason = format!("{what} in {}: {e}", self.dir.display());
            tracing::error!(%reason, "raft storage failed; the node must stop");
            self.fatal = Some(reason.clone());
            // Deferred syncs' handles fail from now on too.
            let _ = self.sync_failure.set(reason.clone());
            StorageError::Fatal(reason)
        })
    }

    /// The index before the first held entry (the snapshot's, or below it
    /// when a compaction kept catch-up entries): `offsets[i]` is that of
    /// entry `offset() + 1 + i`.
    fn offset(&self) -> LogIndex {
        self.mirror.first_index() - 1
    }

    fn check_batch(&self, entries: &[Entry]) -> Result<(), StorageError> {
        self.mirror.check_save(entries)?;
        if let Some(w) = entries.windows(2).find(|w| w[1].index != w[0].index + 1) {
            return Err(StorageError::Fatal(format!(
                "save of non-contiguous entries: {} then {}",
                w[0].index, w[1].index
            )));
        }
        Ok(())
    }

    /// Cuts the log back to before `index`: segments after the one holding
    /// it are removed, that one is truncated at its frame and becomes the
    /// active segment. The caller's append and fsync make the cut durable.
    fn truncate_from(&mut self, index: LogIndex) -> io::Result<()> {
        let pos = (index - self.offset() - 1) as usize;
        let offset = self.offsets[pos];
        let keep = self.segments.partition_point(|s| s.first_index <= index);
        if keep < self.segments.len() {
            // Newest first, so a crash part-way leaves a contiguous prefix.
            while self.segments.len() > keep {
                let seg = self.segments.pop().expect("non-empty");
                self.fs.remove_file(&self.segment_path(seg.first_index))?;
            }
            if self.sync() {
                // A removed segment that came back after a crash would put
                // stale entries after the new ones.
                self.fs.sync_dir(&self.dir.join(LOG_DIR))?;
            }
            let path = self.segment_path(self.segments[keep - 1].first_index);
            self.active = self.fs.open_append(&path, false)?;
        }
        self.restart_marks(index - 1, None);
        // Cut the file itself, not just the valid length: frames past the
        // cut must not survive, or recovery could read them as following
        // the new ones.
        self.active.truncate(offset)?;
        self.file_bytes = offset;
        self.segments[keep - 1].len_bytes = offset;
        self.offsets.truncate(pos);
        Ok(())
    }

    /// Starts a new segment at `first_index` once the active one is full.
    fn maybe_roll(&mut self, first_index: LogIndex) -> io::Result<()> {
        let active = self.segments.last().expect("always one segment");
        if active.len_bytes == 0 || active.len_bytes < self.options.segment_bytes_max {
            return Ok(());
        }
        // Deferred writes to the full segment are made durable before any
        // reach the next one: a crash must not leave a gap between them.
        self.sync_written()?;
        self.active = self.create_segment(first_index)?;
        self.restart_marks(first_index - 1, None);
        self.file_bytes = 0;
        self.segments.push(Segment {
            first_index,
            len_bytes: 0,
        });
        Ok(())
    }

    /// Creates an empty segment file and makes its name durable.
    pub(crate) fn create_segment(&self, first_index: LogIndex) -> io::Result<Box<dyn AppendFile>> {
        let mut file = self.fs.open_append(&self.segment_path(first_index), true)?;
        file.truncate(0)?; // a leftover of the same name is stale
        if self.sync() {
            self.fs.sync_dir(&self.dir.join(LOG_DIR))?;
        }
        Ok(file)
    }

    /// Before a write that ends at `end` passes the active file's end,
    /// fills `preallocate_bytes` more of it with zeros (never past
    /// `segment_bytes_max`). The same fsync makes both durable.
    fn fill_ahead(&mut self, end: u64) -> io::Result<()> {
        let ahead = self.options.preallocate_bytes;
        if ahead == 0 || end <= self.file_bytes {
            return Ok(());
        }
        let target = (end + ahead).min(self.options.segment_bytes_max);
        if target > self.file_bytes {
            self.active
                .fill_zeros(self.file_bytes, target - self.file_bytes)?;
            self.file_bytes = target;
        }
        Ok(())
    }

    /// The group commit: every frame of the batch in one write, one fsync
    /// (none when `sync` is off: a deferred sync follows, unless the batch
    /// cuts a conflicting suffix, which is synced at once so that no old
    /// frame can outlive the cut behind a new one). Returns whether it
    /// synced.
    fn append(&mut self, entries: &[Entry], sync: bool) -> io::Result<bool> {
        let first = entries[0].index;
        let cut = first <= self.last_index();
        if cut {
            self.truncate_from(first)?;
        }
        let sync = sync || (cut && self.sync());
        self.maybe_roll(first)?;
        let base = self.segments.last().expect("always one segment").len_bytes;
        let synced = self.marks.lock().expect("sync marks").synced;
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        for entry in entries {
            self.offsets.push(base + buf.len() as u64);
            frame::encode(entry, synced, &mut buf);
        }
        let len = buf.len() as u64;
        let written = self
            .fill_ahead(base + len)
            .and_then(|()| self.active.write_at(base, &buf));
        self.buf = buf;
        written?;
        self.file_bytes = self.file_bytes.max(base + len);
        let last = entries[entries.len() - 1].index;
        self.marks.lock().expect("sync marks").written = last;
        if sync {
            self.active.sync_data()?;
            self.unsynced = false;
            self.marks.lock().expect("sync marks").synced = last;
        } else {
            self.unsynced = true;
        }
        self.segments
            .last_mut()
            .expect("always one segment")
            .len_bytes += len;
        Ok(sync)
    }

    /// [`Storage::save`] and [`Storage::save_deferred`]: checks the batch;
    /// when the term or vote changed, syncs what the log holds and writes
    /// the hard-state file, its commit index capped at what is durable
    /// (recovery refuses a commit index past the log it finds, and this
    /// write's entries may not be synced yet); then writes the entries,
    /// fsynced when `sync` is set. Returns whether they are durable.
    fn write_batch(
        &mut self,
        hard_state: Option<&HardState>,
        entries: &[Entry],
        sync: bool,
    ) -> Result<bool, StorageError> {
        self.check()?;
        if !entries.is_empty() {
            self.check_batch(entries)?;
        }
        if let Some(hs) = hard_state {
            if self.vote_changes(hs) {
                self.io("syncing the log", Self::sync_written)?;
                let durable = entries
                    .first()
                    .map_or(self.last_index(), |e| (e.index - 1).min(self.last_index()));
                let capped = HardState {
                    commit: hs.commit.min(durable),
                    ..*hs
                };
                self.io("writing the hard state", |s| s.write_hard_state(&capped))?;
            }
            self.mirror.save(Some(hs), &[])?;
        }
        if entries.is_empty() {
            return Ok(true);
        }
        let synced = self.io("appending to the log", |s| s.append(entries, sync))?;
        self.mirror.save(None, entries)?;
        Ok(synced)
    }

    /// Syncs the active segment if deferred writes may be unsynced in it
    /// (never without fsync).
    fn sync_written(&mut self) -> io::Result<()> {
        if self.unsynced && self.sync() {
            self.active.sync_data()?;
            self.unsynced = false;
            let mut marks = self.marks.lock().expect("sync marks");
            marks.synced = marks.written;
        }
        Ok(())
    }

    /// Starts a new era of the sync marks after the log was cut back to
    /// `written`, a segment rolled, or the log was discarded (then `synced`
    /// is the snapshot's index): earlier handles record nothing more, and
    /// the next deferred write makes a new one.
    fn restart_marks(&mut self, written: LogIndex, synced: Option<LogIndex>) {
        let mut marks = self.marks.lock().expect("sync marks");
        marks.era += 1;
        marks.written = written;
        marks.synced = synced.unwrap_or(marks.synced.min(written));
        self.active_sync = None;
    }

    /// The handle a deferred sync of the active segment uses.
    fn active_sync(&mut self) -> io::Result<Arc<dyn LogSync>> {
        if let Some(handle) = &self.active_sync {
            return Ok(handle.clone());
        }
        let handle: Arc<dyn LogSync> = Arc::new(SegmentSync {
            file: self.active.sync_handle()?,
            dir: self.dir.clone(),
            failure: self.sync_failure.clone(),
            marks: self.marks.clone(),
            era: self.marks.lock().expect("sync marks").era,
        });
        self.active_sync = Some(handle.clone());
        Ok(handle)
    }

    /// Whether `hs` has another term or vote than the durable hard state
    /// (only then is the hard-state file written).
    fn vote_changes(&self, hs: &HardState) -> bool {
        hs.term != self.durable_vote.term || hs.vote != self.durable_vote.vote
    }

    fn write_hard_state(&mut self, hs: &HardState) -> io::Result<()> {
        let data = encode_hard_state(hs);
        write_atomic(&*self.fs, &self.dir, HARD_STATE_FILE, &data, self.sync())?;
        self.durable_vote = *hs;
        Ok(())
    }

    fn write_snapshot(&self, snapshot: &Snapshot) -> io::Result<()> {
        let dir = self.dir.join(SNAPSHOT_DIR);
        let name = snapshot_name(&snapshot.meta);
        let crc = write_snapshot_atomic(&*self.fs, &dir, &name, snapshot, self.sync())?;
        self.note_sums(&snapshot.meta, snapshot.data.len() as u64, crc);
        Ok(())
    }

    /// Reads the snapshot file of `meta` back, checked.
    fn read_snapshot(&self, meta: &SnapshotMeta) -> Result<Snapshot, StorageError> {
        let path = self.dir.join(SNAPSHOT_DIR).join(snapshot_name(meta));
        let buf = self.fs.read_file(&path).map_err(|e| {
            StorageError::Fatal(format!("cannot read snapshot {}: {e}", path.display()))
        })?;
        let snapshot = decode_snapshot_file(&path, Bytes::from(buf))
            .map_err(|e| StorageError::Fatal(e.to_string()))?;
        if snapshot.meta != *meta {
            return Err(StorageError::Fatal(format!(
                "snapshot {} holds {:?}, expected {meta:?}",
                path.display(),
                snapshot.meta
            )));
        }
        Ok(snapshot)
    }

    /// Removes snapshot files older than the one at `meta`. Not needed for
    /// correctness (recovery takes the newest), so failures only warn.
    fn remove_old_snapshots(&self, meta: &SnapshotMeta) {
        let dir = self.dir.join(SNAPSHOT_DIR);
        let current = snapshot_name(meta);
        let names = match self.fs.list_dir(&dir) {
            Ok(names) => names,
            Err(e) => return tracing::warn!(dir = %dir.display(), %e, "cannot list snapshots"),
        };
        for name in names
            .iter()
            .filter(|n| n.ends_with(".snap") && **n != current)
        {
            if let Err(e) = self.fs.remove_file(&dir.join(name)) {
                tracing::warn!(file = %name, %e, "cannot remove an old snapshot");
            }
        }
    }

    /// Records the snapshot at `meta` (already durable) and drops the
    /// entries to `compact_to` from memory; false if a newer snapshot made
    /// it moot. The files are the caller's to remove.
    fn compact_mirror(
        &mut self,
        meta: &SnapshotMeta,
        compact_to: LogIndex,
    ) -> Result<bool, StorageError> {
        self.check()?;
        if !self.mirror.check_compact(meta)? {
            return Ok(false);
        }
        let before = self.offset();
        self.mirror.compact(
            Snapshot {
                meta: meta.clone(),
                data: Bytes::new(),
            },
            compact_to,
        )?;
        let covered = (self.offset() - before) as usize;
        self.offsets.drain(..covered);
        Ok(true)
    }

    /// Removes segments whose entries all precede the snapshot. Their
    /// removal need not be durable: recovery skips entries the snapshot
    /// covers.
    fn remove_covered_segments(&mut self) -> io::Result<()> {
        while self.segments.len() > 1 && self.segments[1].first_index <= self.offset() + 1 {
            let seg = self.segments.remove(0);
            self.fs.remove_file(&self.segment_path(seg.first_index))?;
        }
        Ok(())
    }

    /// Discards the whole log and starts an empty segment after the
    /// snapshot. Segments go newest first, then the new one is created, so
    /// a crash part-way leaves what recovery can finish (see `recovery`).
    fn reset_log(&mut self) -> io::Result<()> {
        while let Some(seg) = self.segments.pop() {
            self.fs.remove_file(&self.segment_path(seg.first_index))?;
        }
        if self.sync() {
            self.fs.sync_dir(&self.dir.join(LOG_DIR))?;
        }
        let first_index = self.offset() + 1;
        self.active = self.create_segment(first_index)?;
        self.restart_marks(self.offset(), Some(self.offset()));
        self.unsynced = false;
        self.file_bytes = 0;
        self.segments.push(Segment {
            first_index,
            len_bytes: 0,
        });
        self.offsets.clear();
        Ok(())
    }
}

impl Storage for DiskStorage {
    fn initial_state(&self) -> Result<InitialState, StorageError> {
        self.check()?;
        self.mirror.initial_state()
    }

    fn entries(
        &self,
        lo: LogIndex,
        hi: LogIndex,
        max_bytes: u64,
    ) -> Result<Vec<Entry>, StorageError> {
        self.check()?;
        self.mirror.entries(lo, hi, max_bytes)
    }

    fn term(&self, index: LogIndex) -> Result<Term, StorageError> {
        self.check()?;
        self.mirror.term(index)
    }

    fn first_index(&self) -> LogIndex {
        self.mirror.first_index()
    }

    fn snapshot_index(&self) -> LogIndex {
        self.mirror.snapshot_index()
    }

    fn last_index(&self) -> LogIndex {
        self.mirror.last_index()
    }

    /// Writes the hard-state file first when the term or vote changed (they
    /// must never be lost), then the entries with one write and one fsync.
    /// A commit-index-only change is kept in memory and reaches the file
    /// with the next term/vote change; see the crate docs for why.
    fn save(
        &mut self,
        hard_state: Option<&HardState>,
        entries: &[Entry],
    ) -> Result<(), StorageError> {
        let sync = self.sync();
        self.write_batch(hard_state, entries, sync).map(|_| ())
    }

    /// Writes as [`Storage::save`] does, without the log's fsync: the
    /// returned handle syncs the active segment. A write that cuts a
    /// conflicting suffix is synced at once (rare: a new leader's first
    /// appends).
    fn save_deferred(
        &mut self,
        hard_state: Option<&HardState>,
        entries: &[Entry],
    ) -> Result<Option<Arc<dyn LogSync>>, StorageError> {
        if !self.sync() {
            self.save(hard_state, entries)?;
            return Ok(None);
        }
        if self.write_batch(hard_state, entries, false)? {
            return Ok(None);
        }
        self.io("opening the log for syncing", Self::active_sync)
            .map(Some)
    }

    /// Entries, or a hard state with a new term or vote: a commit index
    /// alone is kept in memory.
    fn save_syncs(&self, hard_state: Option<&HardState>, entries: &[Entry]) -> bool {
        !entries.is_empty() || hard_state.is_some_and(|hs| self.vote_changes(hs))
    }

    /// Reads the snapshot file back (the data is not kept in memory). The
    /// snapshot at index 0 (none yet, or the bootstrap configuration) has
    /// no data. A file that cannot be read or fails its checks is a fatal
    /// error, though it does not stop the storage: the caller stops.
    fn snapshot(&self) -> Result<Snapshot, StorageError> {
        self.check()?;
        let held = self.mirror.snapshot()?;
        if held.meta.index == 0 {
            return Ok(held);
        }
        self.read_snapshot(&held.meta)
    }

    fn snapshot_source(&self) -> Result<SnapshotSource, StorageError> {
        self.check()?;
        self.source()
    }

    /// One `pread` of the snapshot's file.
    fn snapshot_chunk(
        &self,
        meta: &SnapshotMeta,
        offset: u64,
        max_bytes: u64,
    ) -> Result<Bytes, StorageError> {
        self.check()?;
        self.read_chunk(meta, offset, max_bytes)
    }

    /// Appends to a temporary file of the snapshot folder.
    fn receive_snapshot_chunk(
        &mut self,
        meta: &SnapshotMeta,
        offset: u64,
        data: &[u8],
    ) -> Result<(), StorageError> {
        self.check()?;
        self.receive_chunk(meta, offset, data)
    }

    /// The data stays in the file: the snapshot comes back without it.
    fn received_snapshot(&mut self, meta: &SnapshotMeta) -> Result<Snapshot, StorageError> {
        self.check()?;
        self.finish_receiving(meta)
    }

    fn snapshot_reader(
        &self,
        meta: &SnapshotMeta,
    ) -> Result<Option<Box<dyn std::io::Read + Send>>, StorageError> {
        self.check()?;
        Ok(self
            .reader(meta)?
            .map(|r| Box::new(r) as Box<dyn std::io::Read + Send>))
    }

    /// A snapshot received chunk by chunk (empty data, see
    /// [`Storage::received_snapshot`]) is installed from its file; any
    /// other is written.
    fn apply_snapshot(&mut self, snapshot: Snapshot) -> Result<(), StorageError> {
        self.check()?;
        let index = snapshot.meta.index;
        if index <= self.mirror.snapshot_index() {
            return Ok(()); // older than what we hold
        }
        let keep =
            index > self.offset() && self.mirror.term(index).ok() == Some(snapshot.meta.term);
        // A snapshot received chunk by chunk is already in its file.
        if !self.io("installing a received snapshot", |s| {
            s.install_received(&snapshot)
        })? {
            self.io("writing a snapshot", |s| s.write_snapshot(&snapshot))?;
        }
        let (meta, covered) = (snapshot.meta.clone(), (index - self.offset()) as usize);
        // The mirror raises its commit index to at least the snapshot's. On
        // disk recovery does that, so no hard-state write is needed here.
        self.mirror.apply_snapshot(without_data(snapshot))?;
        if keep {
            self.offsets.drain(..covered);
            self.io("removing compacted segments", Self::remove_covered_segments)?;
        } else {
            self.io("discarding the log", Self::reset_log)?;
        }
        self.remove_old_snapshots(&meta);
        Ok(())
    }

    fn compact(&mut self, snapshot: Snapshot, compact_to: LogIndex) -> Result<(), StorageError> {
        self.check()?;
        if !self.mirror.check_compact(&snapshot.meta)? {
            return Ok(());
        }
        // A durable snapshot must not cover log entries that a crash can
        // still take away.
        self.io("syncing the log", Self::sync_written)?;
        self.io("writing a snapshot", |s| s.write_snapshot(&snapshot))?;
        let meta = snapshot.meta;
        if self.compact_mirror(&meta, compact_to)? {
            self.io("removing compacted segments", Self::remove_covered_segments)?;
            self.remove_old_snapshots(&meta);
        }
        Ok(())
    }

    /// Writes the snapshot file as [`Storage::compact`] does (an atomic
    /// replace, fsynced), on whatever thread calls it, streaming the
    /// encoder's bytes into the file as they come (synced in pieces, see
    /// [`crate::pacing`]): the data is never in
    /// memory whole. It shares nothing with the storage but the file layer:
    /// the log is untouched until [`Storage::compact_written`].
    fn snapshot_writer(&self) -> Option<SnapshotWriter> {
        if self.fatal.is_some() {
            return None;
        }
        let (fs, dir, sync) = (self.fs.clone(), self.dir.join(SNAPSHOT_DIR), self.sync());
        let sums = self.snapshot_sums.clone();
        Some(Box::new(
            move |meta: &SnapshotMeta, encode: SnapshotEncoder| {
                let name = snapshot_name(meta);
                let (len_bytes, crc) = write_snapshot_streamed(
                    &*fs, &dir, &name, meta, encode, sync,
                )
                .map_err(|e| {
                    StorageError::Fatal(format!(
                        "writing snapshot {}: {e}",
                        dir.join(&name).display()
                    ))
                })?;
                let mut sums = sums.lock().expect("never poisoned");
                if sums.as_ref().is_none_or(|s| s.meta.index <= meta.index) {
                    *sums = Some(SnapshotSource {
                        meta: meta.clone(),
                        len_bytes,
                        crc,
                    });
                }
                Ok(len_bytes)
            },
        ))
    }

    /// Entries between `compact_to` and the snapshot stay in memory and on
    /// disk; recovery does not load them again (a restarted member's log
    /// starts after its snapshot).
    fn compact_written(
        &mut self,
        meta: SnapshotMeta,
        compact_to: LogIndex,
    ) -> Result<(), StorageError> {
        // As in `compact` (the snapshot is already durable: sync before its
        // log goes).
        self.io("syncing the log", Self::sync_written)?;
        if !self.compact_mirror(&meta, compact_to)? {
            return Ok(());
        }
        // Removing files waits on the file system's journal, which the
        // snapshot writer keeps busy, and the old snapshot's file can be
        // hundreds of megabytes: the covered segments and the older
        // snapshots are removed on a thread of its own, not the caller's
        // (the Raft driver's). Neither removal needs to be durable or
        // prompt: recovery skips what the snapshot covers and reads the
        // newest snapshot. Only snapshots older than this one are removed,
        // so a newer one being written meanwhile is never touched.
        let mut segments = Vec::new();
        while self.segments.len() > 1 && self.segments[1].first_index <= self.offset() + 1 {
            let seg = self.segments.remove(0);
            segments.push(self.segment_path(seg.first_index));
        }
        let (fs, dir) = (self.fs.clone(), self.dir.join(SNAPSHOT_DIR));
        let current = snapshot_name(&meta);
        let spawned = std::thread::Builder::new()
            .name("log-remove".into())
            .spawn(move || {
                crate::priority::lower_this_thread();
                for path in segments {
                    if let Err(e) = fs.remove_file(&path) {
                        tracing::warn!(file = %path.display(), %e, "cannot remove a compacted segment");
                    }
                }
                remove_snapshots_before(&*fs, &dir, &current)
            });
        if let Err(e) = spawned {
            tracing::warn!(%e, "cannot start a thread to remove old snapshots");
        }
        Ok(())
    }
}

/// Removes the snapshot files of `dir` older than `current` (names sort by
/// index); a failure is logged, not fatal: recovery reads the newest.
fn remove_snapshots_before(fs: &dyn FileSystem, dir: &Path, current: &str) {
    let names = match fs.list_dir(dir) {
        Ok(names) => names,
        Err(e) => return tracing::warn!(dir = %dir.display(), %e, "cannot list snapshots"),
    };
    for name in names
        .iter()
        .filter(|n| n.ends_with(".snap") && n.as_str() < current)
    {
        if let Err(e) = fs.remove_file(&dir.join(name)) {
            tracing::warn!(file = %name, %e, "cannot remove an old snapshot");
        }
    }
}

/// The snapshot as the mirror keeps it: metadata only.
pub(crate) fn without_data(snapshot: Snapshot) -> Snapshot {
    Snapshot {
        meta: snapshot.meta,
        data: Bytes::new(),
    }
}

/// Decodes a snapshot file with its name checked (reading the snapshot back
/// whole, for [`Storage::snapshot`]).
fn decode_snapshot_file(path: &Path, buf: Bytes) -> Result<Snapshot, OpenError> {
    let snap = meta_files::decode_snapshot(path, buf)?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
    if name.as_deref() != Some(snapshot_name(&snap.meta).as_str()) {
        return Err(OpenError::corrupt(
            path,
            0,
            "header does not match the file name",
        ));
    }
    Ok(snap)
}
