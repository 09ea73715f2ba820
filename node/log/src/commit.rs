//! Group commit: many appenders, one fsync.
//!
//! An appender whose policy asks for durability waits here with the offset
//! its batch ends at. If no fsync is running, it becomes the leader: it notes
//! how far the active segment's published data reaches, fsyncs it outside
//! every lock, and then everyone waiting on an offset up to that point is
//! done. Appenders that arrive during an fsync wait for the next one, which
//! covers all of them together. Appends are not blocked by an fsync (the
//! writer lock is not held), and neither are readers.
//!
//! This is correct because every closed segment was fsynced when it was
//! closed (see [`crate::Log`]), so syncing the active segment makes every
//! offset below its published end durable.

use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

use crate::Offset;
use crate::error::{LogError, Result};
use crate::segment::Segment;

/// Shared state of the group commit.
#[derive(Debug, Default)]
pub(crate) struct GroupCommit {
    state: Mutex<CommitState>,
    done: Condvar,
}

#[derive(Debug, Default)]
struct CommitState {
    /// Every offset below this is on stable storage.
    synced_end: Offset,
    /// A leader is in `fsync`.
    syncing: bool,
    /// Bumped by `truncate_to`, so an fsync that started before a truncation
    /// cannot claim offsets written after it.
    generation: u64,
    /// An fsync failed: nothing written since can be called durable.
    failed: bool,
    /// Fsyncs done by leaders (for tests and benchmarks).
    fsyncs: u64,
}

impl GroupCommit {
    fn lock(&self) -> MutexGuard<'_, CommitState> {
        // The state is a few counters updated atomically under the lock, so a
        // panic elsewhere cannot leave it half-updated.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Blocks until every offset below `target` is durable. `active` returns
    /// the current active segment.
    ///
    /// If `truncate_to` runs meanwhile, returns `Ok`: the truncation itself
    /// was fsynced, and records above it no longer exist.
    pub fn wait_durable(&self, target: Offset, active: impl Fn() -> Arc<Segment>) -> Result<()> {
        let mut state = self.lock();
        let entry_generation = state.generation;
        loop {
            if state.failed {
                return Err(LogError::Failed);
            }
            if state.synced_end >= target || state.generation != entry_generation {
                return Ok(());
            }
            if state.syncing {
                state = self
                    .done
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner);
                continue;
            }
            state.syncing = true;
            let generation = state.generation;
            drop(state);

            let segment = active();
            let upto = segment.end();
            let result = segment.log.sync_data();

            state = self.lock();
            state.syncing = false;
            state.fsyncs += 1;
            match result {
                Ok(()) if state.generation == generation => {
                    state.synced_end = state.synced_end.max(upto);
                }
                Ok(()) => {}
                Err(source) => {
                    state.failed = true;
                    self.done.notify_all();
                    return Err(LogError::Io {
                        path: segment.log_path.clone(),
                        source,
                    });
                }
            }
            self.done.notify_all();
        }
    }

    /// Records that everything below `end` was fsynced (a segment was closed).
    pub fn mark_synced(&self, end: Offset) {
        let mut state = self.lock();
        state.synced_end = state.synced_end.max(end);
        self.done.notify_all();
    }

    /// Records a durable truncation to `end`.
    pub fn truncated(&self, end: Offset) {
        let mut state = self.lock();
        state.synced_end = end;
        state.generation += 1;
        self.done.notify_all();
    }

    /// Marks the log failed so waiters stop waiting.
    pub fn fail(&self) {
        self.lock().failed = true;
        self.done.notify_all();
    }

    /// Offsets below this are durable.
    pub fn synced_end(&self) -> Offset {
        self.lock().synced_end
    }

    /// Fsyncs done through the group commit so far.
    pub fn fsyncs(&self) -> u64 {
        self.lock().fsyncs
    }
}
