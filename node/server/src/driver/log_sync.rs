//! The thread that makes deferred log writes durable.
//!
//! With [`DriverConfig::deferred_sync`](super::DriverConfig), a `Ready`'s
//! entries are written to the page cache on the driver's thread
//! ([`flotilla_raft::Storage::save_deferred`]) and their `fdatasync` runs
//! here, so that the driver goes on meanwhile: it counts the followers'
//! acknowledgements, takes new proposals and sends the commit index while
//! the disk flushes. Writes that queue while a sync runs share the next
//! one (one `fdatasync` flushes every write made before it), so a busy
//! member syncs back to back, each sync covering what the driver wrote
//! during the previous one. The thread reports the last write each sync
//! covered; the driver then calls [`super::Step::synced`].

use std::sync::Arc;
use std::time::Instant;

use flotilla_raft::{LogSync, NodeId, StorageError};
use tokio::sync::mpsc;

use super::worker::Worker;
use crate::metrics::Metrics;

/// Writes queued for the thread before the driver waits for room (the
/// thread is behind by this many `Ready`s: the disk is the limit).
const QUEUE_MAX: usize = 1024;

/// What the thread reports: every write up to this one is durable, or the
/// sync failed (the member must stop).
pub(super) type SyncDone = Result<u64, StorageError>;

/// A write to sync: its number and the storage's handle.
type SyncJob = (u64, Arc<dyn LogSync>);

/// The sync thread of one driver, started with its first deferred write
/// and ended with the driver.
pub(super) struct Syncer {
    worker: Worker<SyncJob>,
    id: NodeId,
    /// The thread could not be started: syncs run inline from then on.
    unavailable: bool,
    /// Where the thread reports. Unbounded, yet bounded by the job queue:
    /// each report covers at least one job.
    pub(super) done: (
        mpsc::UnboundedSender<SyncDone>,
        mpsc::UnboundedReceiver<SyncDone>,
    ),
}

impl Syncer {
    pub(super) fn new(id: NodeId) -> Self {
        Syncer {
            worker: Worker::new(format!("raft-sync-{id}"), QUEUE_MAX),
            id,
            unavailable: false,
            done: mpsc::unbounded_channel(),
        }
    }

    /// Hands write `write` to the thread, starting it if it is not running,
    /// and waiting for room when its queue is full. `Ok(Some(sync))` gives
    /// the handle back when the thread cannot start: the caller syncs
    /// inline. An error when the thread has stopped (a sync failed, which
    /// the driver learns from its report): the member must stop, and no
    /// later sync may stand in for the failed one.
    pub(super) fn send(
        &mut self,
        write: u64,
        sync: Arc<dyn LogSync>,
        metrics: Option<Arc<Metrics>>,
        owns_thread: bool,
    ) -> Result<Option<Arc<dyn LogSync>>, StorageError> {
        if self.unavailable {
            return Ok(Some(sync));
        }
        let done = self.done.0.clone();
        let jobs = match self.worker.queue(move |queue| run(queue, done, metrics)) {
            Ok(jobs) => jobs,
            Err(e) => {
                tracing::warn!(id = %self.id, error = %e, "cannot start the log sync thread: syncing on the driver");
                self.unavailable = true;
                return Ok(Some(sync));
            }
        };
        let stopped = || StorageError::Fatal("the log sync thread stopped".into());
        match jobs.try_send((write, sync)) {
            Ok(()) => Ok(None),
            Err(std::sync::mpsc::TrySendError::Full(job)) => {
                super::task::blocking(owns_thread, || jobs.send(job)).map_err(|_| stopped())?;
                Ok(None)
            }
            Err(std::sync::mpsc::TrySendError::Disconnected(_)) => Err(stopped()),
        }
    }

    /// Ends the thread (after the sync it is in, if any) and waits for it.
    pub(super) fn stop(&mut self, owns_thread: bool) {
        self.worker.stop(owns_thread);
    }
}

/// The thread's loop: takes every write queued, syncs each file they
/// went to once (nearly always one: the active segment), reports the last.
fn run(
    queue: std::sync::mpsc::Receiver<SyncJob>,
    done: mpsc::UnboundedSender<SyncDone>,
    metrics: Option<Arc<Metrics>>,
) {
    while let Ok((mut last, first)) = queue.recv() {
        let mut files = vec![first];
        while let Ok((write, sync)) = queue.try_recv() {
            last = write;
            if !files.last().is_some_and(|f| same(f, &sync)) {
                files.push(sync);
            }
        }
        let started = Instant::now();
        let synced = files.iter().try_for_each(|f| f.sync());
        if let Some(m) = &metrics {
            m.observe_fsync(started.elapsed());
        }
        let failed = synced.is_err();
        if done.send(synced.map(|()| last)).is_err() || failed {
            return;
        }
    }
}

/// Whether two handles are one (by address: the vtable part of a `dyn`
/// pointer may differ between codegen units).
fn same(a: &Arc<dyn LogSync>, b: &Arc<dyn LogSync>) -> bool {
    std::ptr::addr_eq(Arc::as_ptr(a), Arc::as_ptr(b))
}
