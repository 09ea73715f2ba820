//! The core's view of the log: what storage holds, plus entries appended since
//! the last `Ready` that are not yet saved ("unstable"), and how much of the
//! saved log is durable (all of it, unless the driver defers its syncs).

use crate::error::StorageError;
use crate::storage::Storage;
use crate::types::{Entry, LogIndex, Snapshot, Term};

/// Log state of one core.
#[derive(Debug)]
pub(crate) struct RaftLog<S> {
    pub(crate) storage: S,
    /// Entries after `storage.last_index()`-or-earlier that are not yet saved.
    /// `unstable[0].index == unstable_offset` when non-empty.
    unstable: Vec<Entry>,
    unstable_offset: LogIndex,
    /// The last index known durable: entries up to it survive a crash.
    /// `unstable_offset - 1` unless the driver wrote entries without
    /// waiting for them to be durable ([`crate::Raft::advance_written`]),
    /// which [`crate::Raft::persisted`] later reports.
    durable: LogIndex,
    /// Highest index known committed (Raft Figure 2, `commitIndex`).
    pub(crate) committed: LogIndex,
    /// Highest index handed to the application for applying.
    pub(crate) applied: LogIndex,
    /// A snapshot received from the leader that replaces the whole log, not
    /// yet installed by the driver; `unstable` follows it.
    pending_snapshot: Option<Snapshot>,
}

impl<S: Storage> RaftLog<S> {
    pub(crate) fn new(storage: S, committed: LogIndex, applied: LogIndex) -> RaftLog<S> {
        let unstable_offset = storage.last_index() + 1;
        let snapshot_index = storage.snapshot_index();
        // The application's own applied index is committed by definition;
        // storage may keep the commit index lazily, so never go below it.
        let committed = committed
            .max(snapshot_index)
            .max(applied.min(storage.last_index()));
        RaftLog {
            storage,
            unstable: Vec::new(),
            unstable_offset,
            durable: unstable_offset - 1,
            committed,
            applied: applied.max(snapshot_index).min(committed),
            pending_snapshot: None,
        }
    }

    pub(crate) fn last_index(&self) -> LogIndex {
        match (self.unstable.last(), &self.pending_snapshot) {
            (Some(e), _) => e.index,
            (None, Some(s)) => s.meta.index,
            (None, None) => self.storage.last_index(),
        }
    }

    /// Index of the latest snapshot: one pending installation, or the
    /// storage's.
    pub(crate) fn snapshot_index(&self) -> LogIndex {
        match &self.pending_snapshot {
            Some(s) => s.meta.index,
            None => self.storage.snapshot_index(),
        }
    }

    /// Index of the first entry held: after the latest snapshot, or before
    /// it when a compaction kept catch-up entries.
    pub(crate) fn first_index(&self) -> LogIndex {
        match &self.pending_snapshot {
            Some(s) => s.meta.index + 1,
            None => self.storage.first_index(),
        }
    }

    pub(crate) fn last_term(&self) -> Term {
        self.term(self.last_index()).unwrap_or_default()
    }

    /// Term of the entry at `index`.
    pub(crate) fn term(&self, index: LogIndex) -> Result<Term, StorageError> {
        if index > self.last_index() {
            return Err(StorageError::Unavailable(index));
        }
        if let Some(s) = &self.pending_snapshot {
            if index == s.meta.index {
                return Ok(s.meta.term);
            }
            if index < s.meta.index {
                return Err(StorageError::Compacted(index));
            }
        }
        if index >= self.unstable_offset && !self.unstable.is_empty() {
            return Ok(self.unstable[(index - self.unstable_offset) as usize].term);
        }
        self.storage.term(index)
    }

    /// Whether the log holds an entry at `index` with `term`.
    pub(crate) fn match_term(&self, index: LogIndex, term: Term) -> bool {
        self.term(index).is_ok_and(|t| t == term)
    }

    /// Raft §5.4.1: is a log ending at (`last_index`, `last_term`) at least as
    /// up to date as ours?
    pub(crate) fn is_up_to_date(&self, last_index: LogIndex, last_term: Term) -> bool {
        let our_term = self.last_term();
        last_term > our_term || (last_term == our_term && last_index >= self.last_index())
    }

    /// Entries in `[lo, hi)` within `max_bytes` (at least one).
    pub(crate) fn entries(
        &self,
        lo: LogIndex,
        hi: LogIndex,
        max_bytes: u64,
    ) -> Result<Vec<Entry>, StorageError> {
        let hi = hi.min(self.last_index() + 1);
        if lo >= hi {
            return Ok(Vec::new());
        }
        if lo < self.first_index() {
            return Err(StorageError::Compacted(lo));
        }
        let mut out = Vec::new();
        let mut used_bytes = 0u64;
        if lo < self.unstable_offset {
            let stable_hi = hi.min(self.unstable_offset);
            out = self.storage.entries(lo, stable_hi, max_bytes)?;
            if (out.len() as u64) < stable_hi - lo {
                return Ok(out); // the budget ran out inside the stable part
            }
            used_bytes = out.iter().map(Entry::size_bytes).sum();
        }
        let from = lo.max(self.unstable_offset);
        if from < hi {
            let start = (from - self.unstable_offset) as usize;
            let end = (hi - self.unstable_offset) as usize;
            for entry in &self.unstable[start..end] {
                if !out.is_empty() && used_bytes + entry.size_bytes() > max_bytes {
                    break;
                }
                used_bytes += entry.size_bytes();
                out.push(entry.clone());
            }
        }
        Ok(out)
    }

    /// Appends entries that follow on from (or overwrite a suffix of) the log.
    /// The caller guarantees none overwrites a committed entry.
    pub(crate) fn append(&mut self, entries: &[Entry]) {
        let Some(first) = entries.first() else { return };
        assert!(
            first.index > self.committed,
            "append at {} would overwrite committed entries up to {}",
            first.index,
            self.committed
        );
        assert!(first.index <= self.last_index() + 1, "append leaves a gap");
        // What is replaced no longer counts as durable, written or not.
        self.durable = self.durable.min(first.index - 1);
        if first.index >= self.unstable_offset {
            self.unstable
                .truncate((first.index - self.unstable_offset) as usize);
        } else {
            // The new entries replace part of the stable log: everything from
            // `first.index` on becomes unstable and `save` will overwrite it.
            self.unstable.clear();
            self.unstable_offset = first.index;
        }
        self.unstable.extend_from_slice(entries);
    }

    /// Follower side of AppendEntries (Raft §5.3): appends `entries` (which
    /// follow `prev`) skipping those already present, truncating at the first
    /// conflict. Returns the index of the last new entry and the position in
    /// `entries` from which the log changed, if it did.
    pub(crate) fn append_after(
        &mut self,
        prev: LogIndex,
        entries: &[Entry],
    ) -> (LogIndex, Option<usize>) {
        let last_new = prev + entries.len() as u64;
        let conflict = entries
            .iter()
            .position(|e| !self.match_term(e.index, e.term));
        if let Some(pos) = conflict {
            self.append(&entries[pos..]);
        }
        (last_new, conflict)
    }

    /// Fast backtracking (thesis §5.3): the largest index at or below `index`
    /// whose term is at most `term`.
    pub(crate) fn find_conflict_by_term(&self, index: LogIndex, term: Term) -> (LogIndex, Term) {
        let mut i = index.min(self.last_index());
        loop {
            match self.term(i) {
                Ok(t) if t <= term => return (i, t),
                Ok(_) if i > 0 => i -= 1,
                _ => return (i, Term(0)),
            }
        }
    }

    pub(crate) fn commit_to(&mut self, index: LogIndex) {
        if index > self.committed {
            assert!(
                index <= self.last_index(),
                "commit index {index} beyond last index {}",
                self.last_index()
            );
            self.committed = index;
        }
    }

    /// Entries not yet saved, for the next `Ready`.
    pub(crate) fn unstable_entries(&self) -> &[Entry] {
        &self.unstable
    }

    /// The last index known durable. Meaningful for a leader, which never
    /// holds a pending snapshot.
    pub(crate) fn durable_last_index(&self) -> LogIndex {
        self.durable
    }

    /// Marks every unstable entry up to `index` (of `term`) as saved:
    /// handed to the storage, and durable too when `durable` is set (a
    /// storage write that returned only once its data was on disk, which
    /// also made every earlier write durable).
    pub(crate) fn stable_to(&mut self, index: LogIndex, term: Term, durable: bool) {
        if index < self.unstable_offset || self.unstable.is_empty() {
            return;
        }
        let pos = (index - self.unstable_offset) as usize;
        if pos < self.unstable.len() && self.unstable[pos].term == term {
            self.unstable.drain(..=pos);
            self.unstable_offset = index + 1;
            if durable {
                self.durable = index;
            }
        }
    }

    /// A deferred write's data reached the disk: the saved entries up to
    /// `index` are durable, if the log still holds `index` at `term` (a
    /// follower may have replaced them meanwhile; by Log Matching the
    /// same index and term mean the same entries before it too).
    pub(crate) fn persisted_to(&mut self, index: LogIndex, term: Term) {
        if index > self.durable && index < self.unstable_offset && self.match_term(index, term) {
            self.durable = index;
        }
    }

    /// The index the next committed entry to apply follows: the applied
    /// index, or a pending snapshot's, which is applied first.
    fn apply_base(&self) -> LogIndex {
        match &self.pending_snapshot {
            Some(s) => self.applied.max(s.meta.index),
            None => self.applied,
        }
    }

    /// Committed entries not yet handed out for applying, within a byte budget.
    pub(crate) fn next_committed_entries(
        &self,
        max_bytes: u64,
    ) -> Result<Vec<Entry>, StorageError> {
        let base = self.apply_base();
        if self.committed <= base {
            return Ok(Vec::new());
        }
        self.entries(base + 1, self.committed + 1, max_bytes)
    }

    pub(crate) fn has_next_committed_entries(&self) -> bool {
        self.committed > self.apply_base()
    }

    /// Replaces the whole log by a snapshot from the leader (thesis §5.1):
    /// the driver installs it with the next `Ready`.
    pub(crate) fn restore(&mut self, snapshot: Snapshot) {
        let index = snapshot.meta.index;
        assert!(
            index > self.committed,
            "restoring a snapshot at {index} below commit {}",
            self.committed
        );
        self.unstable.clear();
        self.unstable_offset = index + 1;
        self.durable = self.durable.min(index);
        self.committed = index;
        self.pending_snapshot = Some(snapshot);
    }

    /// The snapshot the next `Ready` must install, if any.
    pub(crate) fn pending_snapshot(&self) -> Option<&Snapshot> {
        self.pending_snapshot.as_ref()
    }

    /// The driver installed the pending snapshot at `index`.
    pub(crate) fn snapshot_installed(&mut self, index: LogIndex) {
        if self
            .pending_snapshot
            .as_ref()
            .is_some_and(|s| s.meta.index == index)
        {
            self.pending_snapshot = None;
            self.applied = self.applied.max(index);
            // Installing writes the snapshot durably and discards the log.
            self.durable = index;
        }
    }

    pub(crate) fn applied_to(&mut self, index: LogIndex) {
        assert!(
            index <= self.committed && index >= self.applied,
            "applied {index} outside [{}, {}]",
            self.applied,
            self.committed
        );
        self.applied = index;
    }
}
