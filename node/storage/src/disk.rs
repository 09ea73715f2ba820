//! [`DiskStorage`]: the Raft log, hard state and snapshot on disk, with the
//! entries since the last snapshot mirrored in memory for reads.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use flotilla_raft::{
    Entry, HardState, InitialState, LogIndex, Snapshot, Storage, StorageError, Term,
    take_within_budget,
};

use crate::error::OpenError;
use crate::frame;
use crate::fs::{AppendFile, FileSystem, RealFs};
use crate::meta_files::{self, encode_hard_state, encode_snapshot, snapshot_name, write_atomic};
use crate::options::{FsyncMode, StorageOptions};
use crate::recovery;
use crate::segment::segment_name;

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
    /// The hard state as the core last saved it.
    pub(crate) hard_state: HardState,
    /// Term and vote as last written to the hard-state file.
    pub(crate) durable_vote: HardState,
    pub(crate) snap: Snapshot,
    /// The entries after `snap.meta.index`.
    pub(crate) entries: Vec<Entry>,
    /// The byte offset of each of `entries` in its segment.
    pub(crate) offsets: Vec<u64>,
    /// Every segment file, by first index; the last one is `active`.
    pub(crate) segments: Vec<Segment>,
    pub(crate) active: Box<dyn AppendFile>,
    /// The encode buffer, reused across saves.
    pub(crate) buf: Vec<u8>,
    pub(crate) fatal: Option<String>,
}

impl fmt::Debug for DiskStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DiskStorage")
            .field("dir", &self.dir)
            .field("hard_state", &self.hard_state)
            .field("snapshot_index", &self.snap.meta.index)
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
        self.hard_state
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

    fn sync(&self) -> bool {
        self.options.fsync == FsyncMode::Always
    }

    fn check(&self) -> Result<(), StorageError> {
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
            StorageError::Fatal(reason)
        })
    }

    fn offset(&self) -> LogIndex {
        self.snap.meta.index
    }

    fn position(&self, index: LogIndex) -> Result<usize, StorageError> {
        if index <= self.offset() {
            return Err(StorageError::Compacted(index));
        }
        if index > self.last_index() {
            return Err(StorageError::Unavailable(index));
        }
        Ok((index - self.offset() - 1) as usize)
    }

    fn check_batch(&self, entries: &[Entry]) -> Result<(), StorageError> {
        let first = entries[0].index;
        if first <= self.offset() || first > self.last_index() + 1 {
            return Err(StorageError::Fatal(format!(
                "save of entries from {first} leaves a gap or overwrites compacted log (held {}..={})",
                self.first_index(),
                self.last_index()
            )));
        }
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
        self.active.truncate(offset)?;
        self.segments[keep - 1].len_bytes = offset;
        self.entries.truncate(pos);
        self.offsets.truncate(pos);
        Ok(())
    }

    /// Starts a new segment at `first_index` once the active one is full.
    fn maybe_roll(&mut self, first_index: LogIndex) -> io::Result<()> {
        let active = self.segments.last().expect("always one segment");
        if active.len_bytes == 0 || active.len_bytes < self.options.segment_bytes_max {
            return Ok(());
        }
        self.active = self.create_segment(first_index)?;
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

    /// The group commit: every frame of the batch in one write, one fsync.
    fn append(&mut self, entries: &[Entry]) -> io::Result<()> {
        let first = entries[0].index;
        if first <= self.last_index() {
            self.truncate_from(first)?;
        }
        self.maybe_roll(first)?;
        let base = self.segments.last().expect("always one segment").len_bytes;
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        for entry in entries {
            self.offsets.push(base + buf.len() as u64);
            frame::encode(entry, &mut buf);
        }
        let written = self.active.append(&buf);
        let len = buf.len() as u64;
        self.buf = buf;
        written?;
        if self.sync() {
            self.active.sync_data()?;
        }
        self.segments
            .last_mut()
            .expect("always one segment")
            .len_bytes += len;
        self.entries.extend_from_slice(entries);
        Ok(())
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
        write_atomic(
            &*self.fs,
            &dir,
            &name,
            &encode_snapshot(snapshot),
            self.sync(),
        )
    }

    /// Removes snapshot files older than the current one. Not needed for
    /// correctness (recovery takes the newest), so failures only warn.
    fn remove_old_snapshots(&self) {
        let dir = self.dir.join(SNAPSHOT_DIR);
        let current = snapshot_name(&self.snap.meta);
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
        self.segments.push(Segment {
            first_index,
            len_bytes: 0,
        });
        self.entries.clear();
        self.offsets.clear();
        Ok(())
    }

    /// Drops the in-memory entries the snapshot covers (up to `index`).
    fn drain_through(&mut self, index: LogIndex) {
        let n = (index - self.offset()) as usize;
        self.entries.drain(..n);
        self.offsets.drain(..n);
    }
}

impl Storage for DiskStorage {
    fn initial_state(&self) -> Result<InitialState, StorageError> {
        self.check()?;
        Ok(InitialState {
            hard_state: self.hard_state,
            conf_state: self.snap.meta.conf_state.clone(),
        })
    }

    fn entries(
        &self,
        lo: LogIndex,
        hi: LogIndex,
        max_bytes: u64,
    ) -> Result<Vec<Entry>, StorageError> {
        self.check()?;
        if lo >= hi {
            return Ok(Vec::new());
        }
        let start = self.position(lo)?;
        let end = self.position(hi - 1)? + 1;
        Ok(take_within_budget(&self.entries[start..end], max_bytes))
    }

    fn term(&self, index: LogIndex) -> Result<Term, StorageError> {
        self.check()?;
        if index == self.offset() {
            return Ok(self.snap.meta.term);
        }
        Ok(self.entries[self.position(index)?].term)
    }

    fn first_index(&self) -> LogIndex {
        self.offset() + 1
    }

    fn last_index(&self) -> LogIndex {
        self.offset() + self.entries.len() as u64
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
        self.check()?;
        if !entries.is_empty() {
            self.check_batch(entries)?;
        }
        if let Some(hs) = hard_state {
            let durable = self.durable_vote;
            if hs.term != durable.term || hs.vote != durable.vote {
                self.io("writing the hard state", |s| s.write_hard_state(hs))?;
            }
            self.hard_state = *hs;
        }
        if !entries.is_empty() {
            self.io("appending to the log", |s| s.append(entries))?;
        }
        Ok(())
    }

    fn snapshot(&self) -> Result<Snapshot, StorageError> {
        self.check()?;
        Ok(self.snap.clone())
    }

    fn apply_snapshot(&mut self, snapshot: Snapshot) -> Result<(), StorageError> {
        self.check()?;
        let index = snapshot.meta.index;
        if index <= self.offset() {
            return Ok(()); // older than what we hold
        }
        let keep = self.term(index).ok() == Some(snapshot.meta.term);
        self.io("writing a snapshot", |s| s.write_snapshot(&snapshot))?;
        if keep {
            self.drain_through(index);
            self.snap = snapshot;
            self.io("removing compacted segments", Self::remove_covered_segments)?;
        } else {
            self.snap = snapshot;
            self.io("discarding the log", Self::reset_log)?;
        }
        // On disk the commit index is raised at recovery (at least the
        // snapshot's index), so no hard-state write is needed here.
        self.hard_state.commit = self.hard_state.commit.max(index);
        self.remove_old_snapshots();
        Ok(())
    }

    fn compact(&mut self, snapshot: Snapshot) -> Result<(), StorageError> {
        self.check()?;
        let index = snapshot.meta.index;
        if index <= self.offset() {
            return Ok(());
        }
        let term = self.entries[self.position(index)?].term;
        if term != snapshot.meta.term {
            return Err(StorageError::Fatal(format!(
                "snapshot at {index} has term {} but the log holds term {term}",
                snapshot.meta.term
            )));
        }
        self.io("writing a snapshot", |s| s.write_snapshot(&snapshot))?;
        self.drain_through(index);
        self.snap = snapshot;
        self.io("removing compacted segments", Self::remove_covered_segments)?;
        self.remove_old_snapshots();
        Ok(())
    }
}

/// Used by recovery to decode the snapshot with its name checked.
pub(crate) fn decode_snapshot_file(path: &Path, buf: &[u8]) -> Result<Snapshot, OpenError> {
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
