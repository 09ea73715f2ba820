//! Prometheus metrics of a node, in the text exposition format.
//!
//! Gauges that mirror the driver's status (term, role, commit and applied
//! index) are refreshed at scrape time from the status watch, so the hot path
//! only touches the counters and histograms it owns.

use crate::driver::NodeStatus;
use flotilla_raft::Role;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::Mutex;
use std::time::Duration;

/// The node's metrics and their registry.
pub struct Metrics {
    registry: Mutex<Registry>,
    term: Gauge,
    is_leader: Gauge,
    has_leader: Gauge,
    commit_index: Gauge,
    applied_index: Gauge,
    /// Proposals accepted by the local core.
    pub proposals: Counter,
    /// Proposals that failed (not leader, busy, unknown outcome).
    pub proposals_failed: Counter,
    /// Commands appended, as leader, for followers that proposed them
    /// through the peer stream (also counted in `proposals`).
    pub peer_proposals: Counter,
    /// Commands of followers' proposals refused unappended (not leader,
    /// busy, or not taken from a peer: the follower forwards those).
    pub peer_proposals_refused: Counter,
    /// Durations of the Raft log's persist step (one write + fsync).
    pub fsync_seconds: Histogram,
    /// Log syncs a follower made on its Raft loop rather than the sync
    /// thread (a small write on a fast disk, with no sync under way).
    pub fsync_inline: Counter,
    /// Client calls by the thread that served them (`--client-thread`).
    pub client_calls: crate::api::PlacementCounts,
    /// Round trips of peer message batches.
    pub peer_round_trip_seconds: Histogram,
    /// Lookups of a member's host name that failed (each is retried).
    pub resolve_failures: Counter,
    /// Snapshots this member installed from a leader.
    pub snapshots_installed: Counter,
    /// Snapshots this member, as leader, started sending to a follower.
    pub snapshots_sent: Counter,
    /// 1 while one of this member's own Raft snapshots is being encoded
    /// and written (from the freeze until the file is durable), else 0.
    pub snapshot_writing: Gauge,
    /// This member's own Raft snapshots written durably.
    pub snapshots_written: Counter,
    /// How long each of them took, from the freeze until the file was
    /// durable.
    pub snapshot_seconds: Histogram,
    /// How long each run of heavy committed entries (a DeleteRange over
    /// many keys, a compaction) took to apply on the apply thread, off
    /// the driver; its count is the number of such runs.
    pub apply_elsewhere_seconds: Histogram,
    /// Serializable reads served on the copy the state machine left while
    /// a run of heavy entries applied elsewhere, rather than after it.
    pub stale_reads_on_copy: Counter,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("proposals", &self.proposals.get())
            .finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// A registry with every metric registered under the `flotilla_` prefix.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("flotilla");
        let m = Metrics {
            registry: Mutex::new(Registry::default()),
            term: Gauge::default(),
            is_leader: Gauge::default(),
            has_leader: Gauge::default(),
            commit_index: Gauge::default(),
            applied_index: Gauge::default(),
            proposals: Counter::default(),
            proposals_failed: Counter::default(),
            peer_proposals: Counter::default(),
            peer_proposals_refused: Counter::default(),
            // 50 µs .. ~1.6 s
            fsync_seconds: Histogram::new(exponential_buckets(0.000_05, 2.0, 16)),
            fsync_inline: Counter::default(),
            client_calls: crate::api::PlacementCounts::default(),
            peer_round_trip_seconds: Histogram::new(exponential_buckets(0.000_05, 2.0, 16)),
            resolve_failures: Counter::default(),
            snapshots_installed: Counter::default(),
            snapshots_sent: Counter::default(),
            snapshot_writing: Gauge::default(),
            snapshots_written: Counter::default(),
            // 10 ms .. ~5.5 min
            snapshot_seconds: Histogram::new(exponential_buckets(0.01, 2.0, 16)),
            // 1 ms .. ~33 s
            apply_elsewhere_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            stale_reads_on_copy: Counter::default(),
        };
        registry.register("raft_term", "Current Raft term", m.term.clone());
        registry.register(
            "raft_is_leader",
            "1 if this member leads",
            m.is_leader.clone(),
        );
        registry.register(
            "raft_has_leader",
            "1 if a leader is known",
            m.has_leader.clone(),
        );
        registry.register("raft_commit_index", "Commit index", m.commit_index.clone());
        registry.register(
            "raft_applied_index",
            "Applied index",
            m.applied_index.clone(),
        );
        registry.register("raft_proposals", "Proposals accepted", m.proposals.clone());
        registry.register(
            "raft_proposals_failed",
            "Proposals that failed",
            m.proposals_failed.clone(),
        );
        registry.register(
            "raft_peer_proposals",
            "Commands appended as leader for followers that proposed them through the peer stream",
            m.peer_proposals.clone(),
        );
        registry.register(
            "raft_peer_proposals_refused",
            "Commands of followers' peer-stream proposals refused unappended",
            m.peer_proposals_refused.clone(),
        );
        registry.register(
            "raft_fsync_duration_seconds",
            "Raft log persists that synced the disk (write + fsync): entries, or a new term or vote",
            m.fsync_seconds.clone(),
        );
        registry.register(
            "raft_fsync_inline",
            "Log syncs a follower made on its Raft loop rather than the sync thread (small writes on a fast disk)",
            m.fsync_inline.clone(),
        );
        registry.register(
            "client_calls_on_driver",
            "Client calls served on the Raft driver's thread (--client-thread driver, or auto with one worker thread)",
            m.client_calls.on_driver.clone(),
        );
        registry.register(
            "client_calls_on_workers",
            "Client calls a member serving its connections on the driver's thread handed to its worker threads",
            m.client_calls.on_workers.clone(),
        );
        registry.register(
            "peer_round_trip_seconds",
            "Time from a leader's heartbeat to its answer",
            m.peer_round_trip_seconds.clone(),
        );
        registry.register(
            "resolve_failures",
            "Lookups of a member's host name that failed (each is retried with backoff)",
            m.resolve_failures.clone(),
        );
        registry.register(
            "raft_snapshots_installed",
            "Snapshots installed from a leader",
            m.snapshots_installed.clone(),
        );
        registry.register(
            "raft_snapshots_sent",
            "Snapshots started to a follower that needed compacted entries",
            m.snapshots_sent.clone(),
        );
        registry.register(
            "raft_snapshot_writing",
            "1 while this member's own snapshot is being encoded and written",
            m.snapshot_writing.clone(),
        );
        registry.register(
            "raft_snapshots_written",
            "This member's own snapshots written durably",
            m.snapshots_written.clone(),
        );
        registry.register(
            "raft_snapshot_duration_seconds",
            "Time from freezing the state to its snapshot file being durable",
            m.snapshot_seconds.clone(),
        );
        registry.register(
            "raft_apply_elsewhere_duration_seconds",
            "Time a run of heavy committed entries took to apply off the Raft driver's thread",
            m.apply_elsewhere_seconds.clone(),
        );
        registry.register(
            "raft_stale_reads_on_copy",
            "Serializable reads served on a copy of the state while heavy entries applied off the Raft driver's thread",
            m.stale_reads_on_copy.clone(),
        );
        *m.registry.lock().expect("fresh lock") = registry;
        m
    }

    /// Registers more metrics (another part's, such as the broker's) in
    /// the same registry.
    pub fn register(&self, f: impl FnOnce(&mut Registry)) {
        let mut registry = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut registry);
    }

    /// Records one persist step.
    pub fn observe_fsync(&self, elapsed: Duration) {
        self.fsync_seconds.observe(elapsed.as_secs_f64());
    }

    /// Records one run of heavy entries applied off the driver.
    pub fn observe_apply_elsewhere(&self, took: Duration) {
        self.apply_elsewhere_seconds.observe(took.as_secs_f64());
    }

    /// A snapshot of this member's own started being written.
    pub fn snapshot_started(&self) {
        self.snapshot_writing.set(1);
    }

    /// The snapshot being written is durable (`Some` with how long it took
    /// since [`Self::snapshot_started`]) or failed (`None`).
    pub fn snapshot_finished(&self, took: Option<Duration>) {
        self.snapshot_writing.set(0);
        if let Some(took) = took {
            self.snapshots_written.inc();
            self.snapshot_seconds.observe(took.as_secs_f64());
        }
    }

    /// Records the time from a heartbeat to its answer.
    pub fn observe_peer_round_trip(&self, elapsed: Duration) {
        self.peer_round_trip_seconds.observe(elapsed.as_secs_f64());
    }

    /// The exposition text, with gauges refreshed from `status`.
    pub fn render(&self, status: &NodeStatus) -> String {
        self.term.set(status.term.0 as i64);
        self.is_leader.set(i64::from(status.role == Role::Leader));
        self.has_leader.set(i64::from(status.leader.is_some()));
        self.commit_index.set(status.commit as i64);
        self.applied_index.set(status.applied as i64);
        let mut out = String::new();
        let registry = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        encode(&mut out, &registry).expect("writing to a String cannot fail");
        out
    }
}
