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
//!
//! With [`DriverConfig::follower_sync_on_loop`](super::DriverConfig) (off
//! by default), a follower whose disk is fast syncs on the driver's thread
//! instead when no sync is under way ([`Syncer::may_sync_inline`]): it has nothing
//! else to do before it can acknowledge, and handing a sync to the thread
//! and its report back costs two thread wake-ups, each on the path of
//! every write a client waits for. A leader always defers: its loop sends
//! the appends and heartbeats that keep the cluster going. The price: a
//! sync that stalls on the loop holds the follower's heartbeat answers
//! for as long (the estimate below moves only after it), and a write that
//! crosses the end of a log segment also flushes the zeros the segment is
//! filled ahead with (1 MiB by default). On a disk another writer shares
//! (other members' snapshots) both followers' loops were seen held 150–220
//! ms at once, near a 200 ms election timeout: hence off by default. Every sync,
//! on either thread, is timed into a moving estimate of the disk's sync
//! time; once it reaches [`INLINE_SLOW`] the follower's syncs go back to
//! the thread, until the syncs made there bring it down again.

use std::sync::Arc;
use std::time::{Duration, Instant};

use flotilla_raft::{LogSync, NodeId, StorageError};
use tokio::sync::mpsc;

use super::worker::Worker;
use crate::metrics::Metrics;

/// Writes queued for the thread before the driver waits for room (the
/// thread is behind by this many `Ready`s: the disk is the limit).
const QUEUE_MAX: usize = 1024;

/// What the thread reports: every write up to this one is durable, and
/// how long the sync took; or the sync failed (the member must stop).
pub(super) type SyncDone = Result<(u64, Duration), StorageError>;

/// A write to sync: its number and the storage's handle.
type SyncJob = (u64, Arc<dyn LogSync>);

/// A disk whose syncs take about this long or more syncs on the thread
/// only: a 2 ms fsync (a network volume) on the driver's thread would hold
/// the follower's loop, and the appends behind it, for all of it.
pub(super) const INLINE_SLOW: Duration = Duration::from_millis(1);

/// The most a write synced on the driver's thread may carry (its entries'
/// [`flotilla_raft::Entry::size_bytes`]): a follower catching up receives
/// appends of megabytes, whose flush would hold its loop for as long as
/// the disk takes to write them, however fast its syncs of a few entries.
pub const INLINE_BYTES_MAX: u64 = 64 * 1024;

/// The weight of the newest sync in the estimate, as a divisor: one sync
/// of 10 ms among fast ones lifts it past [`INLINE_SLOW`], and a few
/// fast ones bring it back.
const ESTIMATE_WEIGHT: u64 = 8;

/// The sync thread of one driver, started with its first deferred write
/// and ended with the driver.
pub(super) struct Syncer {
    worker: Worker<SyncJob>,
    id: NodeId,
    /// The thread could not be started: syncs run inline from then on.
    unavailable: bool,
    /// The last write handed to the thread, and the last the driver
    /// learned durable from its reports ([`Self::reported`]): the thread
    /// has nothing under way when they are equal.
    last_sent: Option<u64>,
    last_reported: Option<u64>,
    /// The moving estimate of one sync's duration, in nanoseconds, over
    /// the syncs of both threads; it starts at zero.
    estimate_ns: u64,
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
            last_sent: None,
            last_reported: None,
            estimate_ns: 0,
            done: mpsc::unbounded_channel(),
        }
    }

    /// Whether a write of `bytes` may sync on the driver's thread rather
    /// than here: only where the driver allows it (`allowed`: a follower
    /// configured to, see [`DriverConfig::follower_sync_on_loop`](super::DriverConfig)),
    /// only a small one ([`INLINE_BYTES_MAX`]), only while no sync is under way here (an
    /// inline sync then covers every write made so far, and the writes'
    /// reports stay in order), and only while syncs have been fast
    /// ([`INLINE_SLOW`]).
    pub(super) fn may_sync_inline(&self, allowed: bool, bytes: u64) -> bool {
        allowed
            && bytes <= INLINE_BYTES_MAX
            && self.last_sent <= self.last_reported
            && self.estimate() < INLINE_SLOW
    }

    /// The moving estimate of one sync's duration.
    pub(super) fn estimate(&self) -> Duration {
        Duration::from_nanos(self.estimate_ns)
    }

    /// A sync, on either thread, took `took`.
    pub(super) fn timed(&mut self, took: Duration) {
        let took = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.estimate_ns = (self.estimate_ns - self.estimate_ns / ESTIMATE_WEIGHT)
            .saturating_add(took / ESTIMATE_WEIGHT);
    }

    /// The driver learned every write up to `write` durable, from a report
    /// of the thread's.
    pub(super) fn reported(&mut self, write: u64) {
        self.last_reported = self.last_reported.max(Some(write));
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
            Ok(()) => {}
            Err(std::sync::mpsc::TrySendError::Full(job)) => {
                super::task::blocking(owns_thread, || jobs.send(job)).map_err(|_| stopped())?;
            }
            Err(std::sync::mpsc::TrySendError::Disconnected(_)) => return Err(stopped()),
        }
        self.last_sent = Some(write);
        Ok(None)
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
        let took = started.elapsed();
        if let Some(m) = &metrics {
            m.observe_fsync(took);
        }
        let failed = synced.is_err();
        if done.send(synced.map(|()| (last, took))).is_err() || failed {
            return;
        }
    }
}

/// Whether two handles are one (by address: the vtable part of a `dyn`
/// pointer may differ between codegen units).
fn same(a: &Arc<dyn LogSync>, b: &Arc<dyn LogSync>) -> bool {
    std::ptr::addr_eq(Arc::as_ptr(a), Arc::as_ptr(b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A write of a few entries.
    const SMALL: u64 = 4096;

    #[derive(Debug, Default)]
    struct CountedSync(AtomicUsize);

    impl LogSync for CountedSync {
        fn sync(&self) -> Result<(), StorageError> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    }

    /// Waits (bounded) for the thread's next report.
    fn next_report(syncer: &mut Syncer) -> (u64, Duration) {
        for _ in 0..500 {
            if let Ok(done) = syncer.done.1.try_recv() {
                return done.expect("the sync succeeded");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("the sync thread did not report within 5 s");
    }

    #[test]
    fn only_a_follower_with_no_sync_under_way_syncs_on_its_loop() {
        let mut syncer = Syncer::new(NodeId(1));
        assert!(syncer.may_sync_inline(true, SMALL));
        assert!(!syncer.may_sync_inline(false, SMALL), "not allowed: defers");
        assert!(syncer.may_sync_inline(true, INLINE_BYTES_MAX));
        assert!(
            !syncer.may_sync_inline(true, INLINE_BYTES_MAX + 1),
            "a large write defers"
        );

        let file = Arc::new(CountedSync::default());
        let handed_back = syncer.send(0, file.clone(), None, true).unwrap();
        assert!(handed_back.is_none(), "the thread took the sync");
        assert!(
            !syncer.may_sync_inline(true, SMALL),
            "an inline sync must not overtake one under way"
        );
        let (write, took) = next_report(&mut syncer);
        assert_eq!(write, 0);
        assert!(
            !syncer.may_sync_inline(true, SMALL),
            "the thread synced, but the driver has not learned it yet"
        );
        syncer.reported(write);
        syncer.timed(took);
        assert!(syncer.may_sync_inline(true, SMALL));
        assert_eq!(file.0.load(Ordering::SeqCst), 1);

        // A later write: an earlier report again does not stand for it,
        // and one that comes late does not take its report back.
        syncer.send(1, file.clone(), None, true).unwrap();
        syncer.reported(0);
        assert!(!syncer.may_sync_inline(true, SMALL));
        let (write, _) = next_report(&mut syncer);
        assert_eq!(write, 1);
        syncer.reported(write);
        assert!(syncer.may_sync_inline(true, SMALL));
        syncer.reported(0);
        assert!(syncer.may_sync_inline(true, SMALL), "a late report");
        syncer.stop(true);
    }

    #[test]
    fn a_slow_disk_keeps_a_followers_syncs_on_the_thread() {
        let mut syncer = Syncer::new(NodeId(1));
        let fast = INLINE_SLOW / 4;
        for _ in 0..100 {
            syncer.timed(fast);
        }
        assert!(syncer.may_sync_inline(true, SMALL));

        // One sync that stalls (a burst of writeback on the disk) is
        // enough to defer, and fast ones bring the loop back.
        syncer.timed(INLINE_SLOW * 10);
        assert!(!syncer.may_sync_inline(true, SMALL));
        let mut fast_ones = 0;
        while !syncer.may_sync_inline(true, SMALL) {
            syncer.timed(fast);
            fast_ones += 1;
            assert!(fast_ones < 100, "the estimate does not come down");
        }
        assert!(fast_ones > 1, "one fast sync should not outweigh a stall");

        // A disk that is slow throughout stays deferred, and one slightly
        // below the bound syncs inline.
        for _ in 0..100 {
            syncer.timed(INLINE_SLOW * 2);
        }
        assert!(!syncer.may_sync_inline(true, SMALL));
        for _ in 0..100 {
            syncer.timed(INLINE_SLOW * 9 / 10);
        }
        assert!(syncer.may_sync_inline(true, SMALL));
    }
}
