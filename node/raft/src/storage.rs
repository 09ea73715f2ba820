//! The persistence boundary (the spec's Persister).
//!
//! The core reads its stable log through [`Storage`]; the driver writes to it
//! with [`Storage::save`] while handling a `Ready` (see the crate docs for the
//! order). [`MemStorage`] keeps everything in memory, for tests, simulation
//! and benchmarks; the on-disk implementation lives in its own crate and
//! passes the same test suite.

use crate::error::StorageError;
use crate::types::{ConfState, Entry, HardState, LogIndex, Snapshot, SnapshotMeta, Term};
use bytes::Bytes;

/// What a restarting core needs to resume.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InitialState {
    /// The last saved hard state.
    pub hard_state: HardState,
    /// The last saved configuration.
    pub conf_state: ConfState,
}

/// What a leader needs to send the latest snapshot without holding its
/// data: where it stands, the data's length and its CRC-32 (which the
/// follower checks once it has every chunk).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SnapshotSource {
    /// Position and configuration.
    pub meta: SnapshotMeta,
    /// Bytes of data.
    pub len_bytes: u64,
    /// CRC-32 of the data.
    pub crc: u32,
}

/// Makes a [`Storage::save_deferred`]'s entries durable, with everything
/// the storage wrote before them; callable from any thread, any number of
/// times (a sync with nothing new to flush costs little).
pub trait LogSync: Send + Sync + std::fmt::Debug {
    /// Flushes to disk. An error is fatal: what reached the disk is
    /// unknown, and the member must stop.
    fn sync(&self) -> Result<(), StorageError>;
}

/// Durable storage of the Raft log and hard state.
///
/// Read methods see everything saved so far. Implementations must make
/// [`Storage::save`] durable before returning: the core sends messages that
/// promise the data is on disk right after it.
pub trait Storage {
    /// The saved hard state and configuration.
    fn initial_state(&self) -> Result<InitialState, StorageError>;

    /// Entries in `[lo, hi)`, stopping once `max_bytes` is exceeded but always
    /// returning at least one entry when the range is non-empty.
    fn entries(
        &self,
        lo: LogIndex,
        hi: LogIndex,
        max_bytes: u64,
    ) -> Result<Vec<Entry>, StorageError>;

    /// Term of the entry at `index`, for `index` in
    /// `[first_index() - 1, last_index()]`; index 0 has term 0.
    fn term(&self, index: LogIndex) -> Result<Term, StorageError>;

    /// Index of the first entry still held. At most
    /// `snapshot_index() + 1`: a compaction may keep entries the snapshot
    /// covers, so that a follower slightly behind catches up from the log.
    fn first_index(&self) -> LogIndex;

    /// Index of the most recent snapshot (0 when there is none), without
    /// reading its data.
    fn snapshot_index(&self) -> LogIndex;

    /// Index of the last entry (or `first_index() - 1` when empty).
    fn last_index(&self) -> LogIndex;

    /// Durably saves a hard state (when given) and entries. Entries replace any
    /// held at or after `entries[0].index` (a follower's conflicting suffix).
    /// One call is one durability point: implementations batch the write.
    fn save(
        &mut self,
        hard_state: Option<&HardState>,
        entries: &[Entry],
    ) -> Result<(), StorageError>;

    /// Like [`Storage::save`], but the entries need not be durable when it
    /// returns (a term or vote must be): `Some` when they are not yet, a
    /// [`LogSync`] that makes them — and everything saved before them —
    /// durable, from any thread; `None` when they already are, and so is
    /// everything saved before them. Storage
    /// that writes to a page cache returns at once and lets the driver sync
    /// beside its loop. The default saves durably.
    fn save_deferred(
        &mut self,
        hard_state: Option<&HardState>,
        entries: &[Entry],
    ) -> Result<Option<std::sync::Arc<dyn LogSync>>, StorageError> {
        self.save(hard_state, entries)?;
        Ok(None)
    }

    /// Whether [`Storage::save`] of `hard_state` and `entries` would sync
    /// the disk (for metrics of sync latency). By default every save with
    /// something to save does; storage that keeps a commit-index-only
    /// change in memory says so.
    fn save_syncs(&self, hard_state: Option<&HardState>, entries: &[Entry]) -> bool {
        hard_state.is_some() || !entries.is_empty()
    }

    /// The most recent snapshot; `meta.index == 0` and empty data when there
    /// is none.
    fn snapshot(&self) -> Result<Snapshot, StorageError>;

    /// The latest snapshot's position, length and checksum, without its
    /// data, for a leader about to send it chunk by chunk with
    /// [`Storage::snapshot_chunk`]. The default reads the whole snapshot;
    /// storage that keeps snapshots in files overrides it.
    fn snapshot_source(&self) -> Result<SnapshotSource, StorageError> {
        let s = self.snapshot()?;
        Ok(SnapshotSource {
            len_bytes: s.data.len() as u64,
            crc: crc32fast::hash(&s.data),
            meta: s.meta,
        })
    }

    /// At most `max_bytes` of the data of the snapshot at `meta`, from byte
    /// `offset` (empty at or past the end). [`StorageError::Compacted`]
    /// when that snapshot is no longer held (a newer one replaced it): the
    /// leader then starts over with the newest. The default slices
    /// [`Storage::snapshot`]; storage that keeps snapshots in files reads
    /// only the chunk.
    fn snapshot_chunk(
        &self,
        meta: &SnapshotMeta,
        offset: u64,
        max_bytes: u64,
    ) -> Result<Bytes, StorageError> {
        let s = self.snapshot()?;
        if s.meta != *meta {
            return Err(StorageError::Compacted(meta.index));
        }
        Ok(chunk_of(&s.data, offset, max_bytes))
    }

    /// A chunk of a snapshot a follower is receiving from the leader: `data`
    /// belongs at byte `offset` of the data of the snapshot at `meta`.
    /// Chunks come in order, each right after the previous one; offset 0
    /// starts the snapshot over, dropping whatever was received before
    /// (of this one or another). Nothing here needs to be durable:
    /// [`Storage::apply_snapshot`] makes the complete snapshot so. An error
    /// drops the snapshot being received (the leader sends it again); it
    /// does not stop the node.
    fn receive_snapshot_chunk(
        &mut self,
        meta: &SnapshotMeta,
        offset: u64,
        data: &[u8],
    ) -> Result<(), StorageError>;

    /// The snapshot at `meta`, received completely (the core checked its
    /// length and checksum), as the `Ready` hands it to the application:
    /// with its data when the storage kept the chunks in memory, with empty
    /// data when it keeps them in a file — read them with
    /// [`Storage::snapshot_reader`] and install with
    /// [`Storage::apply_snapshot`], which takes the file as it is.
    fn received_snapshot(&mut self, meta: &SnapshotMeta) -> Result<Snapshot, StorageError>;

    /// The data of the snapshot at `meta` (a received one not yet installed,
    /// or the held one) as a stream, for storage that keeps it in a file;
    /// `None` when the data is in memory, in the [`Snapshot`] itself. The
    /// reader holds the file open, so installing or replacing the snapshot
    /// meanwhile does not disturb it.
    fn snapshot_reader(
        &self,
        meta: &SnapshotMeta,
    ) -> Result<Option<Box<dyn std::io::Read + Send>>, StorageError> {
        let _ = meta;
        Ok(None)
    }

    /// Durably installs a snapshot received from the leader. If the log holds
    /// an entry at the snapshot's index with its term, the entries after it
    /// are kept (thesis §5.1); otherwise the whole log is discarded. Either
    /// way the entries it covers go: the log then starts right after it.
    /// The saved commit index becomes at least the snapshot's index.
    fn apply_snapshot(&mut self, snapshot: Snapshot) -> Result<(), StorageError>;

    /// Durably records a snapshot the application took at `meta.index`
    /// (which must be held in the log, with `meta.term`) and discards the
    /// entries up to `compact_to`, at most the snapshot's index: entries
    /// between the two stay so that a follower a little behind catches up
    /// by AppendEntries rather than the whole snapshot. A snapshot at or
    /// below the held one changes nothing.
    fn compact(&mut self, snapshot: Snapshot, compact_to: LogIndex) -> Result<(), StorageError>;

    /// A writer that stores a snapshot the application took, durably, from
    /// any thread, without touching the log; [`Storage::compact_written`]
    /// then finishes the compaction. Storage that returns one lets the
    /// application keep serving while a large snapshot is written, and
    /// takes the data as a stream ([`SnapshotEncoder`]), so it is never in
    /// memory whole. The default, `None`, means only [`Storage::compact`]
    /// is available.
    fn snapshot_writer(&self) -> Option<SnapshotWriter> {
        None
    }

    /// Finishes [`Storage::compact`] for a snapshot a
    /// [`Storage::snapshot_writer`] wrote: records it and discards the
    /// entries up to `compact_to` (at most the snapshot's index). A snapshot
    /// at or below the current one (a newer one was installed meanwhile)
    /// changes nothing.
    fn compact_written(
        &mut self,
        meta: SnapshotMeta,
        compact_to: LogIndex,
    ) -> Result<(), StorageError> {
        Err(StorageError::Fatal(format!(
            "compact_written({}, {compact_to}) on storage without a snapshot writer",
            meta.index
        )))
    }
}

/// The data of a snapshot as a stream: writes it into the sink it is given
/// (a snapshot file, through a bounded buffer, or memory), so the encoded
/// state need never be held whole. The application makes one from its
/// frozen state.
pub type SnapshotEncoder = Box<dyn FnOnce(&mut dyn std::io::Write) -> std::io::Result<()> + Send>;

/// See [`Storage::snapshot_writer`]: stores the snapshot at the given
/// position, its data streamed from the encoder, durably, or fails.
/// Returns the data's length in bytes.
pub type SnapshotWriter =
    Box<dyn FnOnce(&SnapshotMeta, SnapshotEncoder) -> Result<u64, StorageError> + Send>;

/// In-memory storage: durable as long as the value lives. Simulation keeps it
/// across a node's crash and restart.
#[derive(Clone, Debug, Default)]
pub struct MemStorage {
    hard_state: HardState,
    /// The configuration at the snapshot (or the bootstrap voters).
    conf_state: ConfState,
    /// The last snapshot.
    snap: Snapshot,
    /// The index before the first held entry (`entries[0]` follows it), and
    /// its term: the snapshot's, unless a compaction kept entries the
    /// snapshot covers.
    offset: (LogIndex, Term),
    entries: Vec<Entry>,
    /// A snapshot being received from the leader, and its data so far.
    receiving: Option<(SnapshotMeta, Vec<u8>)>,
    /// Where a [`Storage::snapshot_writer`] stores the newest snapshot it
    /// wrote, from any thread, until [`Storage::compact_written`] records
    /// it; None when this storage offers no writer (only
    /// [`Storage::compact`]). See [`MemStorage::with_snapshot_writer`].
    written: Option<WrittenSnapshot>,
}

/// The newest snapshot a [`MemStorage`]'s writer stored: what a snapshot
/// file is to on-disk storage (written whole or not at all, durable across
/// a crash, picked up by [`MemStorage::recover`]).
type WrittenSnapshot = std::sync::Arc<std::sync::Mutex<Option<Snapshot>>>;

impl MemStorage {
    /// Empty storage for a member of a new cluster with these voters.
    pub fn new_with_voters(voters: &[crate::types::NodeId]) -> MemStorage {
        let conf_state = ConfState {
            voters: voters.to_vec(),
            learners: Vec::new(),
        };
        MemStorage {
            snap: Snapshot {
                meta: SnapshotMeta {
                    conf_state: conf_state.clone(),
                    ..SnapshotMeta::default()
                },
                data: Default::default(),
            },
            conf_state,
            ..MemStorage::default()
        }
    }

    /// Storage for a member joining an existing cluster: empty, knowing no
    /// configuration until the leader sends a snapshot or the log.
    pub fn new_joining() -> MemStorage {
        MemStorage::default()
    }

    /// Storage holding state recovered from elsewhere (the on-disk storage
    /// keeps its in-memory copy of the log in a `MemStorage`): `entries` must
    /// follow `snapshot` contiguously. The configuration is the snapshot's.
    pub fn from_parts(
        hard_state: HardState,
        snapshot: Snapshot,
        entries: Vec<Entry>,
    ) -> MemStorage {
        debug_assert!(
            entries
                .first()
                .is_none_or(|e| e.index == snapshot.meta.index + 1)
        );
        MemStorage {
            hard_state,
            conf_state: snapshot.meta.conf_state.clone(),
            offset: (snapshot.meta.index, snapshot.meta.term),
            snap: snapshot,
            entries,
            receiving: None,
            written: None,
        }
    }

    /// This storage with a [`Storage::snapshot_writer`], as on-disk storage
    /// has: snapshots are then taken in two halves (written from any
    /// thread, then recorded by [`Storage::compact_written`]), and a
    /// written snapshot survives a crash before it is recorded.
    pub fn with_snapshot_writer(mut self) -> MemStorage {
        self.written.get_or_insert_with(Default::default);
        self
    }

    /// What a restart reads back, as on-disk storage recovers: the newest
    /// snapshot written (recorded or not), and the log after it. If the
    /// log does not continue that snapshot it is discarded (as
    /// [`Storage::apply_snapshot`] does); entries a compaction kept before
    /// the snapshot for followers a little behind are not read back.
    pub fn recover(&mut self) {
        self.receiving = None;
        let written = self.written.as_ref().and_then(|w| {
            let w = w.lock().unwrap_or_else(|p| p.into_inner());
            w.clone().filter(|s| s.meta.index > self.snap.meta.index)
        });
        if let Some(snapshot) = written {
            self.apply_snapshot(snapshot)
                .expect("in-memory storage does not fail");
            return;
        }
        let index = self.snap.meta.index;
        if index > self.offset() {
            self.entries.drain(..(index - self.offset()) as usize);
            self.offset = (index, self.snap.meta.term);
        }
    }

    fn offset(&self) -> LogIndex {
        self.offset.0
    }

    /// Drops the entries from `index` on (never the snapshot's), and
    /// lowers the saved commit index to the last entry left: what a
    /// machine crash does to log writes whose sync had not finished. For
    /// simulations of deferred syncs ([`Storage::save_deferred`]).
    pub fn discard_from(&mut self, index: LogIndex) {
        let index = index.max(self.snap.meta.index + 1).max(self.offset() + 1);
        if index <= self.last_index() {
            self.entries.truncate((index - self.offset() - 1) as usize);
        }
        self.hard_state.commit = self.hard_state.commit.min(self.last_index());
    }

    /// The saved hard state.
    pub fn hard_state(&self) -> HardState {
        self.hard_state
    }

    /// All saved entries, for inspection by tests.
    pub fn all_entries(&self) -> &[Entry] {
        &self.entries
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

    /// The error [`Storage::save`] gives for `entries`, if any: they must
    /// start after the snapshot and no later than `last_index() + 1`. Lets
    /// a durable implementation refuse before writing.
    pub fn check_save(&self, entries: &[Entry]) -> Result<(), StorageError> {
        let Some(first) = entries.first() else {
            return Ok(());
        };
        if first.index <= self.offset() || first.index > self.last_index() + 1 {
            return Err(StorageError::Fatal(format!(
                "save of entries from {} leaves a gap or overwrites compacted log (held {}..={})",
                first.index,
                self.first_index(),
                self.last_index()
            )));
        }
        Ok(())
    }

    /// What [`Storage::compact`] would do with a snapshot at `meta`:
    /// `Ok(false)` when it is not newer than the held one (nothing to do),
    /// `Ok(true)` when the log holds `meta.index` with `meta.term`, and the
    /// error otherwise. Lets a durable implementation refuse before writing.
    pub fn check_compact(&self, meta: &SnapshotMeta) -> Result<bool, StorageError> {
        let index = meta.index;
        if index <= self.snap.meta.index {
            return Ok(false);
        }
        let held = self.entries[self.position(index)?].term;
        if held != meta.term {
            return Err(StorageError::Fatal(format!(
                "snapshot at {index} has term {} but the log holds term {held}",
                meta.term
            )));
        }
        Ok(true)
    }
}

impl Storage for MemStorage {
    fn initial_state(&self) -> Result<InitialState, StorageError> {
        Ok(InitialState {
            hard_state: self.hard_state,
            conf_state: self.conf_state.clone(),
        })
    }

    fn entries(
        &self,
        lo: LogIndex,
        hi: LogIndex,
        max_bytes: u64,
    ) -> Result<Vec<Entry>, StorageError> {
        if lo >= hi {
            return Ok(Vec::new());
        }
        let start = self.position(lo)?;
        let end = self.position(hi - 1)? + 1;
        Ok(take_within_budget(&self.entries[start..end], max_bytes))
    }

    fn term(&self, index: LogIndex) -> Result<Term, StorageError> {
        if index == self.offset() {
            return Ok(self.offset.1);
        }
        Ok(self.entries[self.position(index)?].term)
    }

    fn first_index(&self) -> LogIndex {
        self.offset() + 1
    }

    fn snapshot_index(&self) -> LogIndex {
        self.snap.meta.index
    }

    fn last_index(&self) -> LogIndex {
        self.offset() + self.entries.len() as u64
    }

    fn save(
        &mut self,
        hard_state: Option<&HardState>,
        entries: &[Entry],
    ) -> Result<(), StorageError> {
        self.check_save(entries)?;
        if let Some(first) = entries.first() {
            self.entries
                .truncate((first.index - self.offset() - 1) as usize);
            self.entries.extend_from_slice(entries);
        }
        if let Some(hs) = hard_state {
            self.hard_state = *hs;
        }
        Ok(())
    }

    fn snapshot(&self) -> Result<Snapshot, StorageError> {
        Ok(self.snap.clone())
    }

    /// Keeps the chunks in memory: this storage is all in memory.
    fn receive_snapshot_chunk(
        &mut self,
        meta: &SnapshotMeta,
        offset: u64,
        data: &[u8],
    ) -> Result<(), StorageError> {
        if offset == 0 {
            self.receiving = Some((meta.clone(), Vec::new()));
        }
        match &mut self.receiving {
            Some((m, buf)) if m == meta && buf.len() as u64 == offset => {
                buf.extend_from_slice(data);
                Ok(())
            }
            _ => {
                self.receiving = None;
                Err(StorageError::Unavailable(meta.index))
            }
        }
    }

    fn received_snapshot(&mut self, meta: &SnapshotMeta) -> Result<Snapshot, StorageError> {
        match self.receiving.take() {
            Some((m, buf)) if m == *meta => Ok(Snapshot {
                meta: m,
                data: Bytes::from(buf),
            }),
            _ => Err(StorageError::Unavailable(meta.index)),
        }
    }

    fn apply_snapshot(&mut self, snapshot: Snapshot) -> Result<(), StorageError> {
        let meta = &snapshot.meta;
        if meta.index <= self.snap.meta.index {
            return Ok(()); // older than what we hold
        }
        let keep_from =
            if meta.index > self.offset() && self.term(meta.index).ok() == Some(meta.term) {
                (meta.index - self.offset()) as usize
            } else {
                self.entries.len()
            };
        self.entries.drain(..keep_from);
        self.offset = (meta.index, meta.term);
        self.hard_state.commit = self.hard_state.commit.max(meta.index);
        self.conf_state = meta.conf_state.clone();
        self.snap = snapshot;
        Ok(())
    }

    fn compact(&mut self, snapshot: Snapshot, compact_to: LogIndex) -> Result<(), StorageError> {
        if !self.check_compact(&snapshot.meta)? {
            return Ok(());
        }
        let compact_to = compact_to.min(snapshot.meta.index);
        if compact_to > self.offset() {
            let term = self.term(compact_to)?;
            self.entries.drain(..(compact_to - self.offset()) as usize);
            self.offset = (compact_to, term);
        }
        self.conf_state = snapshot.meta.conf_state.clone();
        self.snap = snapshot;
        Ok(())
    }

    /// Stores the snapshot whole, as the newest written, unless a newer one
    /// was written already.
    fn snapshot_writer(&self) -> Option<SnapshotWriter> {
        let written = self.written.clone()?;
        Some(Box::new(
            move |meta: &SnapshotMeta, encode: SnapshotEncoder| {
                let mut data = Vec::new();
                encode(&mut data)
                    .map_err(|e| StorageError::Fatal(format!("encoding a snapshot: {e}")))?;
                let len = data.len() as u64;
                let mut newest = written.lock().unwrap_or_else(|p| p.into_inner());
                if newest.as_ref().is_none_or(|s| s.meta.index <= meta.index) {
                    *newest = Some(Snapshot {
                        meta: meta.clone(),
                        data: data.into(),
                    });
                }
                Ok(len)
            },
        ))
    }

    fn compact_written(
        &mut self,
        meta: SnapshotMeta,
        compact_to: LogIndex,
    ) -> Result<(), StorageError> {
        let written = self.written.as_ref().and_then(|w| {
            let w = w.lock().unwrap_or_else(|p| p.into_inner());
            w.clone().filter(|s| s.meta == meta)
        });
        let Some(snapshot) = written else {
            return Err(StorageError::Fatal(format!(
                "compact_written({}): no such snapshot was written",
                meta.index
            )));
        };
        self.compact(snapshot, compact_to)
    }
}

/// `data[offset..offset + max_bytes]`, cut at the end.
pub fn chunk_of(data: &Bytes, offset: u64, max_bytes: u64) -> Bytes {
    let len = data.len() as u64;
    let start = offset.min(len);
    let end = start.saturating_add(max_bytes).min(len);
    data.slice(start as usize..end as usize)
}

/// The longest prefix of `entries` within `max_bytes`, never empty when
/// `entries` is not.
pub fn take_within_budget(entries: &[Entry], max_bytes: u64) -> Vec<Entry> {
    let mut total = 0u64;
    let mut count = 0usize;
    for entry in entries {
        total += entry.size_bytes();
        if count > 0 && total > max_bytes {
            break;
        }
        count += 1;
    }
    entries[..count].to_vec()
}
