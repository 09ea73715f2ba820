//! The driver task: a select loop over the ticker, peer messages and client
//! requests, followed after every input batch by the `Ready` loop.

use super::coalesce::Held;
use super::error::DriverError;
use super::handle::{NodeStatus, PrepareFn, RaftHandle, ReadFn, Request};
use super::log_sync::{SyncDone, Syncer};
use super::peer_propose::{PeerProposalFilter, PeerSupport};
use super::snapshot_install::install_snapshot;
use super::state_machine::{StateMachine, Transport};
use super::step::{Applied, ApplyBounds, Effects, PeerBatch, Persisted, Step, apply_run};
use super::worker::Worker;
use crate::metrics::Metrics;
use flotilla_raft::{
    Bytes, Entry, LogIndex, Message, MessageBody, NodeId, ProposeError, Raft, Ready, Role,
    Snapshot, SnapshotMeta, Storage, StorageError,
};
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch};

/// Tuning of a driver; every queue has its bound here.
#[derive(Clone, Debug)]
pub struct DriverConfig {
    /// Wall-clock length of one Raft tick.
    pub tick_interval: Duration,
    /// Client requests queued before senders wait (backpressure).
    pub request_queue: usize,
    /// Peer messages queued before new ones are dropped.
    pub inbound_queue: usize,
    /// Most requests taken from the queue per loop turn: they share one
    /// `Ready`, so one fsync and one message per follower.
    pub max_requests_per_turn: usize,
    /// Most proposals awaiting their outcome.
    pub max_pending_proposals: usize,
    /// Most reads awaiting confirmation or their index to be applied.
    pub max_pending_reads: usize,
    /// Ticks a read may wait for the leader's confirmation (a forwarded
    /// read or its answer may be lost) before it fails with a timeout.
    pub read_timeout_ticks: u64,
    /// Whether storage IO may block the driver's thread directly. Set by
    /// [`Driver::spawn_on_own_thread`]; otherwise IO runs in
    /// `block_in_place`, which hands the runtime's other tasks to another
    /// thread on every call.
    pub owns_thread: bool,
    /// Bounds of the committed entries queued while a heavy one applies
    /// on the apply thread (see [`Step`]).
    pub apply_bounds: ApplyBounds,
    /// Whether a leader with entries past its commit index holds new
    /// proposals back until as many wait or the commit index catches up,
    /// so that they share a `Ready` (see `coalesce`).
    pub hold_proposals: bool,
    /// Whether a `Ready`'s entries are written without waiting for their
    /// `fdatasync`, which runs on a thread of its own (`log_sync`) while
    /// the driver goes on; messages that promise them durable wait for it,
    /// and a leader counts its own entries once it is done. Off: the
    /// driver's thread syncs each `Ready` before going on.
    pub deferred_sync: bool,
    /// With `deferred_sync`: whether a follower on a fast disk syncs a
    /// small write on the driver's thread when no sync is under way,
    /// saving the hand-off to the sync thread and the wake-up back
    /// (`log_sync`). The price: a sync that stalls (a disk's flush held up
    /// by another writer) holds the follower's loop, heartbeat answers
    /// included, for as long; two followers held past the election timeout
    /// cost the leader its check-quorum. Off: every sync is the thread's.
    pub follower_sync_on_loop: bool,
    /// Whether the answers to proposals leave through tasks on the
    /// driver's own runtime (the node runs its client server there when
    /// `--client-thread` says so): then a leader's commit with nothing to
    /// write lets them run before it hands the new commit index to the
    /// peer tasks (see `Driver::process_ready`).
    pub answers_on_thread: bool,
}

impl Default for DriverConfig {
    fn default() -> Self {
        DriverConfig {
            tick_interval: Duration::from_millis(10),
            request_queue: 4096,
            inbound_queue: 8192,
            max_requests_per_turn: 1024,
            max_pending_proposals: 65536,
            max_pending_reads: 65536,
            read_timeout_ticks: 100,
            owns_thread: false,
            apply_bounds: ApplyBounds::default(),
            hold_proposals: true,
            deferred_sync: true,
            follower_sync_on_loop: false,
            answers_on_thread: false,
        }
    }
}

/// A proposal waiting for its entry to be applied.
enum Waiter<O> {
    Output(oneshot::Sender<Result<O, DriverError>>),
    ConfChange(oneshot::Sender<Result<LogIndex, DriverError>>),
}

impl<O> Waiter<O> {
    fn answer(self, outcome: Result<(LogIndex, O), DriverError>) {
        match self {
            Waiter::Output(tx) => {
                let _ = tx.send(outcome.map(|(_, output)| output));
            }
            Waiter::ConfChange(tx) => {
                let _ = tx.send(outcome.map(|(index, _)| index));
            }
        }
    }
}

/// One member's driver task. Build it with [`Driver::new`], run it with
/// [`Driver::run`].
pub struct Driver<S: Storage, M: StateMachine, T: Transport> {
    /// The core, the state machine and their waiters: the `Ready`
    /// processing this driver shares with the simulation.
    step: Step<S, M, Waiter<M::Output>, ReadFn<M>>,
    /// The step's effects on disk, network and callers.
    io: Io<M, T>,
    config: DriverConfig,
    requests: mpsc::Receiver<Request<M>>,
    inbound: mpsc::Receiver<Message>,
    status: watch::Sender<NodeStatus>,
    /// The status when leadership changes ([`RaftHandle::watch_leadership`]).
    leadership: watch::Sender<NodeStatus>,
    /// Ticks since `clock`.
    ticks: u64,
    /// When ticking started.
    clock: Instant,
    /// Membership changes waiting for the leader to apply what it has
    /// committed, so they are checked against the latest membership; at
    /// most [`MEMBERSHIP_WAITING_MAX`].
    membership_waiting: VecDeque<MembershipRequest<M>>,
    /// Proposals held back to share a later `Ready` (see `coalesce`).
    held: Held<HeldProposal<M>>,
}

/// What the tokio driver does for its [`Step`]: blocking storage IO (off
/// the runtime's other tasks), the transport, metrics, snapshots written
/// and heavy entries applied on threads of their own.
struct Io<M: StateMachine, T> {
    transport: T,
    /// Whether storage IO may block this thread (see
    /// [`DriverConfig::owns_thread`]).
    owns_thread: bool,
    metrics: Option<Arc<Metrics>>,
    /// Heartbeats sent and not yet answered, by (peer, round), for the peer
    /// round-trip histogram; at most [`RTT_PROBES_MAX`].
    rtt_probes: HashMap<(NodeId, u64), Instant>,
    /// The snapshot being written off this thread, if any (at most one).
    snapshot_writing: Option<SnapshotWrite>,
    /// Where the writing thread reports; the sender is cloned into it.
    snapshot_written: (mpsc::Sender<WriteResult>, mpsc::Receiver<WriteResult>),
    /// The thread heavy entries apply on.
    applier: Applier<M>,
    /// Whether log writes defer their sync to `syncer`.
    deferred_sync: bool,
    /// Whether a follower may sync a small write here instead
    /// ([`DriverConfig::follower_sync_on_loop`]).
    follower_sync_on_loop: bool,
    /// The thread deferred log writes are synced on.
    syncer: Syncer,
    /// While a `Ready` whose answers go first is processed: the messages
    /// it sends, handed to the transport once the answers are out (see
    /// `Driver::process_ready`).
    held: Option<Vec<Message>>,
    /// Whether a proposer was answered since this was last cleared (which
    /// only a held `Ready` does, and only it reads).
    answered: bool,
}

/// The thread heavy committed entries apply on, with the state machine
/// moved there (see [`Step`]): one per driver, started with the first
/// heavy entry, ended with the driver. Its priority is the driver's: the
/// entries it applies are the cluster's progress, not background work.
struct Applier<M: StateMachine> {
    /// The member, for the logs.
    id: NodeId,
    /// The thread runs go to (one run at a time, and at most one copy to
    /// drop queued before it: never full).
    worker: Worker<ApplyJob<M>>,
    /// Where the thread reports; the sender is cloned into it.
    done: (mpsc::Sender<ApplyDone<M>>, mpsc::Receiver<ApplyDone<M>>),
    /// The run away: its first and last index, and when it left.
    away: Option<(LogIndex, LogIndex, Instant)>,
}

/// What the apply thread is given.
enum ApplyJob<M> {
    /// A run of committed entries to apply, with the state machine.
    Run(M, Vec<Entry>),
    /// A copy of the state machine reads ran on while it was away, to
    /// drop (see [`Effects::drop_read_copy`]).
    Discard(M),
}

/// What the apply thread reports: the state machine with the run's
/// outputs and how long applying took, or that it panicked (the state
/// machine is lost; the member stops).
type ApplyDone<M> = Result<(Applied<M>, Duration), String>;

/// An apply off the driver that took longer than this is logged at info.
const APPLY_ELSEWHERE_NOTABLE: Duration = Duration::from_millis(100);

impl<M: StateMachine> Applier<M> {
    fn new(id: NodeId) -> Self {
        Applier {
            id,
            worker: Worker::new(format!("raft-apply-{id}"), 2),
            done: mpsc::channel(1),
            away: None,
        }
    }

    /// The queue to the thread, starting it if it is not running.
    fn jobs(&mut self) -> std::io::Result<&std::sync::mpsc::SyncSender<ApplyJob<M>>> {
        let done = self.done.0.clone();
        self.worker.queue(move |jobs| {
            while let Ok(job) = jobs.recv() {
                let (mut sm, entries) = match job {
                    ApplyJob::Run(sm, entries) => (sm, entries),
                    ApplyJob::Discard(copy) => {
                        drop(copy);
                        continue;
                    }
                };
                let started = Instant::now();
                let applied = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
                    let outputs = apply_run(&mut sm, &entries);
                    (sm, outputs)
                }));
                let report = applied
                    .map(|applied| (applied, started.elapsed()))
                    .map_err(|_| "the apply thread panicked".to_string());
                if done.blocking_send(report).is_err() {
                    return;
                }
            }
        })
    }

    /// Sends `sm` and `entries` to the thread, starting it if it is not
    /// running; gives them back if it cannot be started.
    fn send(&mut self, sm: M, entries: Vec<Entry>) -> Result<(), (M, Vec<Entry>)> {
        let id = self.id;
        let jobs = match self.jobs() {
            Ok(jobs) => jobs,
            Err(e) => {
                tracing::warn!(id = %id, error = %e, "cannot start the apply thread: applying on the driver");
                return Err((sm, entries));
            }
        };
        let first = entries.first().map_or(0, |e| e.index);
        let last = entries.last().map_or(0, |e| e.index);
        if let Err(e) = jobs.try_send(ApplyJob::Run(sm, entries)) {
            let (std::sync::mpsc::TrySendError::Full(job)
            | std::sync::mpsc::TrySendError::Disconnected(job)) = e;
            let ApplyJob::Run(sm, entries) = job else {
                unreachable!("a run was sent")
            };
            return Err((sm, entries));
        }
        self.away = Some((first, last, Instant::now()));
        Ok(())
    }

    /// Has the thread drop `copy`; drops it here if the thread cannot take
    /// it.
    fn discard(&mut self, copy: M) {
        if let Ok(jobs) = self.jobs() {
            let _ = jobs.try_send(ApplyJob::Discard(copy));
        }
    }

    /// Ends the thread (it finished its run, if any: the driver waited for
    /// it) and waits for it to go.
    fn stop(&mut self, owns_thread: bool) {
        self.worker.stop(owns_thread);
    }
}

/// A membership change to prepare and propose.
type MembershipRequest<M> = (
    PrepareFn<M>,
    oneshot::Sender<Result<<M as StateMachine>::Output, DriverError>>,
);

/// Bound of [`Driver::membership_waiting`]: changes go one at a time, so a
/// few waiting is already a queue of retries.
const MEMBERSHIP_WAITING_MAX: usize = 16;

/// What a snapshot's thread reports: the encoded size and how long the
/// encoding took (less the time its bytes took to reach the file), once
/// the file is durable.
type WriteResult = Result<(usize, Duration), StorageError>;

/// The sink a snapshot's encoder writes into, timing the writes.
struct TimedSink<'a> {
    sink: &'a mut dyn std::io::Write,
    spent: Duration,
}

impl std::io::Write for TimedSink<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let started = Instant::now();
        let written = self.sink.write(buf);
        self.spent += started.elapsed();
        written
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.sink.flush()
    }
}

/// A snapshot the state machine froze, being encoded and written by the
/// storage's [`flotilla_raft::SnapshotWriter`] on a thread of its own.
struct SnapshotWrite {
    meta: SnapshotMeta,
    started: Instant,
}

/// A proposal held back (see `coalesce`).
enum HeldProposal<M: StateMachine> {
    /// A client's, through this member's handle.
    Request(Request<M>),
    /// A follower's batch (`MessageBody::Propose`).
    Peer(Message),
}

/// What woke the driver's loop.
enum Input<M: StateMachine> {
    Tick,
    Peer(Message),
    Request(Request<M>),
    SnapshotWritten(WriteResult),
    Applied(ApplyDone<M>),
    Synced(SyncDone),
}

/// Longest a driver's thread keeps running its runtime's other tasks
/// after the driver stopped ([`Driver::spawn_on_runtime`]).
pub const LINGER_MAX: Duration = Duration::from_secs(5);

/// Ticks missed at once before the driver logs that it fell behind.
const TICKS_LATE_WARNING: u64 = 10;

/// Bound of [`Driver::rtt_probes`]: heartbeats go out every heartbeat tick,
/// so this covers many lost answers before probes are dropped.
const RTT_PROBES_MAX: usize = 256;

impl<S: Storage, M: StateMachine, T: Transport> std::fmt::Debug for Driver<S, M, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver")
            .field("status", &*self.status.borrow())
            .field("step", &self.step)
            .finish()
    }
}

impl<S: Storage, M: StateMachine, T: Transport> Driver<S, M, T> {
    /// A driver over `raft`, whose state machine `sm` must hold the state of
    /// the storage's snapshot (restore it before calling).
    pub fn new(raft: Raft<S>, sm: M, transport: T, config: DriverConfig) -> (Self, RaftHandle<M>) {
        let (req_tx, req_rx) = mpsc::channel(config.request_queue);
        let (in_tx, in_rx) = mpsc::channel(config.inbound_queue);
        let status = raft.status();
        let applied = status.applied;
        let first = NodeStatus {
            id: status.id,
            term: status.hard_state.term,
            role: status.soft_state.role,
            leader: status.soft_state.leader,
            commit: status.hard_state.commit,
            applied,
        };
        let (status_tx, status_rx) = watch::channel(first);
        let (leadership_tx, leadership_rx) = watch::channel(first);
        let io = Io {
            transport,
            owns_thread: config.owns_thread,
            metrics: None,
            rtt_probes: HashMap::new(),
            snapshot_writing: None,
            snapshot_written: mpsc::channel(1),
            applier: Applier::new(status.id),
            deferred_sync: config.deferred_sync,
            follower_sync_on_loop: config.follower_sync_on_loop,
            syncer: Syncer::new(status.id),
            held: None,
            answered: false,
        };
        let driver = Driver {
            step: Step::new(raft, sm).with_bounds(config.apply_bounds),
            io,
            config,
            requests: req_rx,
            inbound: in_rx,
            status: status_tx,
            leadership: leadership_tx,
            ticks: 0,
            clock: Instant::now(),
            membership_waiting: VecDeque::new(),
            held: Held::default(),
        };
        let handle = RaftHandle {
            requests: req_tx,
            inbound: in_tx,
            status: status_rx,
            leadership: leadership_rx,
        };
        (driver, handle)
    }

    /// Has this member, as leader, append the commands its followers send
    /// in `Propose` messages, each as `filter` makes it, and, as follower,
    /// send its own to a leader for which `leader_takes` holds (see
    /// `peer_propose`). Without it, it refuses them, and makes none.
    pub fn with_peer_proposals(
        self,
        filter: PeerProposalFilter,
        leader_takes: PeerSupport,
    ) -> Self {
        Driver {
            step: self.step.with_peer_proposals(filter, leader_takes),
            ..self
        }
    }

    /// Records persist latency and proposal counts in `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.io.metrics = Some(metrics);
        self
    }

    /// Runs the driver on a thread of its own, in a single-threaded
    /// runtime, until `shutdown` resolves or storage fails. The thread then
    /// blocks on fsync without disturbing the caller's runtime, and applying
    /// never waits behind client or peer tasks. The returned task (on the
    /// caller's runtime) ends with the driver's result.
    pub fn spawn_on_own_thread(
        self,
        name: String,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<tokio::task::JoinHandle<Result<(), StorageError>>>
    where
        S: Send + 'static,
        M: Send + 'static,
        T: Send + 'static,
    {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        self.spawn_on_runtime(runtime, name, shutdown, std::future::ready(()))
    }

    /// [`Self::spawn_on_own_thread`] on `runtime`, a current-thread runtime
    /// whose handle the caller may already have spawned tasks on: they run
    /// on the driver's thread, between its turns. The node runs its peer
    /// transport there, so that a message goes from the network to the
    /// driver and back without waking another thread. Once the driver
    /// stopped, the thread keeps running those tasks until `linger`
    /// resolves (at most `LINGER_MAX`).
    pub fn spawn_on_runtime(
        mut self,
        runtime: tokio::runtime::Runtime,
        name: String,
        shutdown: impl Future<Output = ()> + Send + 'static,
        linger: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<tokio::task::JoinHandle<Result<(), StorageError>>>
    where
        S: Send + 'static,
        M: Send + 'static,
        T: Send + 'static,
    {
        self.config.owns_thread = true;
        self.io.owns_thread = true;
        let (done, result) = oneshot::channel();
        std::thread::Builder::new().name(name).spawn(move || {
            runtime.block_on(async move {
                let _ = done.send(self.run(shutdown).await);
                let _ = tokio::time::timeout(LINGER_MAX, linger).await;
            });
        })?;
        Ok(tokio::spawn(async move {
            result
                .await
                .unwrap_or_else(|_| Err(StorageError::Fatal("the driver thread panicked".into())))
        }))
    }

    /// Runs until `shutdown` resolves or storage fails. A storage failure is
    /// returned: the node must stop (it never continues as if a write were
    /// durable). Every waiting caller is answered before returning.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) -> Result<(), StorageError> {
        let mut ticker = tokio::time::interval(self.config.tick_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        self.clock = Instant::now();
        self.ticks = 0;
        tokio::pin!(shutdown);
        let result = loop {
            let input = tokio::select! {
                biased;
                _ = &mut shutdown => break Ok(()),
                _ = ticker.tick() => Input::Tick,
                Some(done) = self.io.syncer.done.1.recv() => Input::Synced(done),
                Some(done) = self.io.applier.done.1.recv() => Input::Applied(done),
                Some(written) = self.io.snapshot_written.1.recv() => Input::SnapshotWritten(written),
                Some(m) = self.inbound.recv() => Input::Peer(m),
                Some(r) = self.requests.recv() => Input::Request(r),
            };
            // Time first: a lease must never be judged on a clock that
            // stood still while this process was paused or starved.
            self.catch_up_ticks();
            let mut tick = false;
            match input {
                Input::Tick => tick = true,
                Input::Applied(done) => {
                    if let Err(e) = self.applied_elsewhere(done) {
                        tracing::error!(id = %self.step.raft().id(), error = %e, "applying failed: stopping");
                        break Err(e);
                    }
                }
                Input::Synced(done) => {
                    if let Err(e) = self.synced(done) {
                        tracing::error!(id = %self.step.raft().id(), error = %e, "storage failed: stopping");
                        break Err(e);
                    }
                }
                Input::SnapshotWritten(written) => {
                    if let Err(e) = self.finish_snapshot(written) {
                        tracing::error!(id = %self.step.raft().id(), error = %e, "storage failed: stopping");
                        break Err(e);
                    }
                }
                Input::Peer(m) => {
                    self.step(m);
                    for _ in 0..self.config.max_requests_per_turn {
                        match self.inbound.try_recv() {
                            Ok(m) => self.step(m),
                            Err(_) => break,
                        }
                    }
                    // Requests already waiting join this turn: on a leader
                    // the followers' acks advance the commit index, and the
                    // core tells the followers in the next `Ready`; with the
                    // new proposals in it too, each follower gets one append
                    // (entries and commit index) instead of an empty one now
                    // and another with the entries a turn later, and answers
                    // one instead of two.
                    for _ in 0..self.config.max_requests_per_turn {
                        match self.requests.try_recv() {
                            Ok(r) => self.take(r),
                            Err(_) => break,
                        }
                    }
                }
                Input::Request(r) => {
                    self.take(r);
                    for _ in 1..self.config.max_requests_per_turn {
                        match self.requests.try_recv() {
                            Ok(r) => self.take(r),
                            Err(_) => break,
                        }
                    }
                }
            }
            self.step.flush_peer_proposals(self.ticks, &mut self.io);
            self.release_held(tick);
            if let Err(e) = self.process_ready().await {
                tracing::error!(id = %self.step.raft().id(), error = %e, "storage failed: stopping");
                break Err(e);
            }
        };
        // A snapshot still being written is waited for (and, after a
        // clean stop, finished), so that no thread of this member outlives
        // it with the data directory. The writer always reports, even when
        // it panics.
        let result = if self.io.snapshot_writing.is_some() {
            let written = self.io.snapshot_written.1.recv().await;
            match (result, written) {
                // Finished without offering the next (a stopping member
                // starts no snapshot).
                (Ok(()), Some(written)) => self
                    .io
                    .finish_snapshot(self.step.raft_mut(), written)
                    .map(|_| ()),
                (result, _) => result,
            }
        } else {
            result
        };
        // Likewise a run of heavy entries applying on the apply thread: it
        // ends by itself (a bounded run, `ApplyBounds::run_entries_max`),
        // and its proposers are answered as stopped with everyone else.
        if self.io.applier.away.is_some() {
            let _ = self.io.applier.done.1.recv().await;
        }
        self.io.applier.stop(self.io.owns_thread);
        self.io.syncer.stop(self.io.owns_thread);
        self.fail_all(DriverError::Stopped);
        result
    }

    /// Keeps the core's clock on real time. Each timer wake-up runs one
    /// [`Raft::tick`]; intervals that passed without one (a process stopped
    /// by SIGSTOP, a starved thread, a long fsync: tokio's timer drops such
    /// missed ticks) are reported with [`Raft::skip_ticks`], so the leader
    /// lease counts them while elections do not — a member that merely ran
    /// late neither campaigns nor steps down because of it, as with etcd's
    /// ticker, but its lease cannot outlive a pause in which the others
    /// elected a new leader. Called before any input is handled. (The
    /// monotonic clock stops while a whole machine is suspended; leases
    /// assume it is not.)
    fn catch_up_ticks(&mut self) {
        let interval = self.config.tick_interval.as_nanos().max(1);
        let due = u64::try_from(self.clock.elapsed().as_nanos() / interval).unwrap_or(u64::MAX);
        if due <= self.ticks {
            return;
        }
        let missed = due - self.ticks;
        if missed > TICKS_LATE_WARNING {
            tracing::warn!(id = %self.step.raft().id(), missed, "the driver fell behind its clock (process paused or starved?)");
        }
        self.step.raft_mut().tick();
        self.step.raft_mut().skip_ticks(missed - 1);
        self.ticks = due;
        self.step
            .expire(self.ticks, self.config.read_timeout_ticks, &mut self.io);
    }

    /// Steps a peer message, timing heartbeat answers; a leader under
    /// load holds a follower's proposals back with its own.
    fn step(&mut self, m: Message) {
        match m.body {
            MessageBody::Propose { ref commands, .. }
                if self.config.hold_proposals && self.step.raft().state().1 =>
            {
                let entries = commands.len();
                return self.held.push(HeldProposal::Peer(m), entries);
            }
            MessageBody::HeartbeatResponse { round } => {
                if let Some(sent) = self.io.rtt_probes.remove(&(m.from, round))
                    && let Some(metrics) = &self.io.metrics
                {
                    metrics.observe_peer_round_trip(sent.elapsed());
                }
            }
            _ => {}
        }
        let pending_max = self.config.max_pending_proposals;
        if let Some(batch) = self.step.step_message(m, pending_max, &mut self.io) {
            self.count_peer_batch(batch);
        }
    }

    /// A follower's batch, as the leader took it ([`Step::accept_peer_proposal`]).
    fn accept_peer_proposal(&mut self, m: Message) {
        let pending_max = self.config.max_pending_proposals;
        let batch = self.step.accept_peer_proposal(m, pending_max, &mut self.io);
        self.count_peer_batch(batch);
    }

    fn count_peer_batch(&self, batch: PeerBatch) {
        if let Some(metrics) = &self.io.metrics {
            metrics.proposals.inc_by(batch.accepted);
            if batch.core_refused {
                metrics.proposals_failed.inc();
            }
            metrics.peer_proposals.inc_by(batch.accepted);
            metrics.peer_proposals_refused.inc_by(batch.refused);
        }
    }

    /// A request from the queue: a proposal is held back while the
    /// leader is under load (see `coalesce`), anything else handled.
    fn take(&mut self, request: Request<M>) {
        match request {
            Request::ProposeViaLeader { command, reply } => {
                let (_, leads) = self.step.raft().state();
                if leads {
                    self.take(Request::Propose { command, reply });
                } else {
                    self.propose_via_leader(command, reply);
                }
            }
            Request::Propose { .. } if self.config.hold_proposals => {
                self.held.push(HeldProposal::Request(request), 1)
            }
            other => self.handle(other),
        }
    }

    /// On a follower: has the step send `command` to the leader with this
    /// turn's batch (see `peer_propose`).
    fn propose_via_leader(
        &mut self,
        command: Bytes,
        reply: oneshot::Sender<Result<M::Output, DriverError>>,
    ) {
        let waiter = Waiter::Output(reply);
        let pending_max = self.config.max_pending_proposals;
        if let Err((e, waiter)) =
            self.step
                .propose_via_leader(command, waiter, self.ticks, pending_max, &mut self.io)
        {
            waiter.answer(Err(e));
        }
    }

    /// Proposes the held proposals if they are due (`force`: a tick).
    fn release_held(&mut self, force: bool) {
        let raft = self.step.raft();
        let due = self.held.due(
            raft.state().1,
            raft.entries_past_commit(),
            self.config.max_requests_per_turn,
            force,
        );
        if !due {
            return;
        }
        while let Some(held) = self.held.pop() {
            match held {
                HeldProposal::Request(request) => self.handle(request),
                HeldProposal::Peer(m) => self.accept_peer_proposal(m),
            }
        }
    }

    fn handle(&mut self, request: Request<M>) {
        match request {
            Request::Propose { command, reply } | Request::ProposeViaLeader { command, reply } => {
                if self.step.pending_proposals() >= self.config.max_pending_proposals {
                    let _ = reply.send(Err(DriverError::Busy("too many pending proposals".into())));
                    return;
                }
                match self.step.raft_mut().propose(command) {
                    Ok((index, term)) => {
                        if let Some(m) = &self.io.metrics {
                            m.proposals.inc();
                        }
                        self.step
                            .track(index, term, Waiter::Output(reply), &mut self.io);
                    }
                    Err(e) => {
                        if let Some(m) = &self.io.metrics {
                            m.proposals_failed.inc();
                        }
                        let _ = reply.send(Err(propose_error(e)));
                    }
                }
            }
            Request::Start { command, reply } => {
                let _ = reply.send(self.step.raft_mut().propose(command).map_err(propose_error));
            }
            Request::ConfChange { change, reply } => {
                match self.step.raft_mut().propose_conf_change(change) {
                    Ok((index, term)) => {
                        self.step
                            .track(index, term, Waiter::ConfChange(reply), &mut self.io);
                    }
                    Err(e) => {
                        let _ = reply.send(Err(propose_error(e)));
                    }
                }
            }
            Request::ChangeMembership { prepare, reply } => {
                self.change_membership(prepare, reply);
            }
            Request::TransferLeader { to, reply } => {
                let result = self
                    .step
                    .raft_mut()
                    .transfer_leader(to)
                    .map_err(transfer_error);
                let _ = reply.send(result);
            }
            Request::TransferAway { reply } => {
                let raft = self.step.raft_mut();
                let result = match raft.transfer_target() {
                    Some(to) => raft
                        .transfer_leader(to)
                        .map(|()| Some(to))
                        .map_err(transfer_error),
                    None if raft.state().1 => Ok(None),
                    None => {
                        let leader = raft.status().soft_state.leader;
                        Err(DriverError::NotLeader {
                            leader_hint: leader.is_some().then_some(leader),
                        })
                    }
                };
                let _ = reply.send(result);
            }
            Request::Read { read } => {
                if self.step.pending_reads() >= self.config.max_pending_reads {
                    read(Err(DriverError::Busy("too many pending reads".into())));
                    return;
                }
                self.step.read(read, self.ticks, &mut self.io);
            }
            Request::ReadLocal { read } => {
                if self.step.pending_reads() >= self.config.max_pending_reads {
                    read(Err(DriverError::Busy("too many pending reads".into())));
                    return;
                }
                self.step.read_local(read, &mut self.io);
            }
            Request::ReadStale { read } => {
                if self.step.stale_read_waits()
                    && self.step.pending_reads() >= self.config.max_pending_reads
                {
                    read(Err(DriverError::Busy("too many pending reads".into())));
                    return;
                }
                let before = self.step.stale_reads();
                self.step.read_stale(read, &mut self.io);
                if self.step.stale_reads() > before
                    && let Some(m) = &self.io.metrics
                {
                    m.stale_reads_on_copy.inc();
                }
            }
        }
    }

    /// Prepares and proposes a membership change on the leader, once it has
    /// applied everything it committed; until then the request waits.
    fn change_membership(
        &mut self,
        prepare: PrepareFn<M>,
        reply: oneshot::Sender<Result<M::Output, DriverError>>,
    ) {
        let status = self.step.raft().status();
        if status.soft_state.role != Role::Leader {
            let hint = status.soft_state.leader;
            let _ = reply.send(Err(DriverError::NotLeader {
                leader_hint: hint.is_some().then_some(hint),
            }));
            return;
        }
        if self.step.applied() < status.hard_state.commit || self.step.sm().is_none() {
            if self.membership_waiting.len() >= MEMBERSHIP_WAITING_MAX {
                let _ = reply.send(Err(DriverError::Busy(
                    "too many membership changes waiting".into(),
                )));
            } else {
                self.membership_waiting.push_back((prepare, reply));
            }
            return;
        }
        let sm = self.step.sm().expect("checked above");
        let (change, context) = match prepare(sm) {
            Ok(prepared) => prepared,
            Err(refused) => {
                let _ = reply.send(Ok(refused));
                return;
            }
        };
        match self
            .step
            .raft_mut()
            .propose_conf_change_with_context(change, context)
        {
            Ok((index, term)) => {
                self.step
                    .track(index, term, Waiter::Output(reply), &mut self.io);
            }
            Err(e) => {
                let _ = reply.send(Err(propose_error(e)));
            }
        }
    }

    /// Membership changes that waited for the apply to catch up.
    fn retry_membership_changes(&mut self) {
        for _ in 0..self.membership_waiting.len() {
            let Some((prepare, reply)) = self.membership_waiting.pop_front() else {
                return;
            };
            self.change_membership(prepare, reply);
        }
    }

    /// Steps 2–6 of the driver contract ([`Step::process_one`]), until the
    /// core has nothing left; after each `Ready`, the status is published
    /// and membership changes waiting for the apply are retried.
    async fn process_ready(&mut self) -> Result<(), StorageError> {
        loop {
            if self.step.waits_for_state_machine() && self.io.applier.away.is_some() {
                // A leader's snapshot to install: the member waits for the
                // run applying elsewhere (see `Step`).
                match self.io.applier.done.1.recv().await {
                    Some(done) => self.applied_elsewhere(done)?,
                    None => break,
                }
                continue;
            }
            let Some(taken) = self.step.begin_one(&mut self.io)? else {
                break;
            };
            if taken.sent_first() && self.config.owns_thread {
                // The peer transport runs on this thread's runtime (see
                // [`Driver::spawn_on_runtime`]): let it write the appends
                // to the network before this thread writes to the disk
                // (and, with `--fsync inline`, blocks on its sync), so the
                // followers' disk writes overlap this one. (Without
                // entries to write, a leader telling the followers its new
                // commit index, nothing is sent first: the proposers are
                // answered before the messages go.)
                tokio::task::yield_now().await;
            }
            // A leader's commit with nothing to write: its proposers are
            // answered first (see `Step::begin_one`). An answer leaves
            // through the proposer's task, then the connection's task,
            // both on this runtime when the client server runs here; the
            // messages, handed to the peer tasks at once, would be
            // written before it. So they are held, and handed on after
            // one yield, which lets those tasks run first. (Clients of
            // followers wait for that commit index: one scheduler pass
            // more.)
            let hold =
                taken.answers_first() && self.config.owns_thread && self.config.answers_on_thread;
            if hold {
                self.io.held = Some(Vec::new());
                self.io.answered = false;
            }
            let finished = self.step.finish_one(taken, &mut self.io);
            let held = if hold { self.io.held.take() } else { None };
            finished?;
            self.publish_status();
            if let Some(held) = held.filter(|h| !h.is_empty()) {
                if self.io.answered {
                    tokio::task::yield_now().await;
                }
                self.io.transmit(held);
            }
            if !self.membership_waiting.is_empty() {
                self.retry_membership_changes();
            }
        }
        Ok(())
    }

    /// Deferred log writes are durable (every one up to the report's, and
    /// those the thread reported meanwhile): the step learns it, and the
    /// messages that waited for them leave. A failed sync stops the member.
    fn synced(&mut self, done: SyncDone) -> Result<(), StorageError> {
        let (mut write, took) = done?;
        self.io.syncer.timed(took);
        while let Ok(next) = self.io.syncer.done.1.try_recv() {
            let took;
            (write, took) = next?;
            self.io.syncer.timed(took);
        }
        self.io.syncer.reported(write);
        self.step.synced(write, &mut self.io);
        Ok(())
    }

    /// The snapshot's file is durable (or failed): compact the log to it.
    /// The core may have asked for another meanwhile, which waited for
    /// this one: it is offered now rather than when the next entry
    /// applies (which may be long on an idle member).
    fn finish_snapshot(&mut self, written: WriteResult) -> Result<(), StorageError> {
        let finished = self.io.finish_snapshot(self.step.raft_mut(), written)?;
        if finished {
            self.publish_status();
        }
        self.step.offer_snapshot(&mut self.io)
    }

    /// The apply thread is back with the state machine and the outputs of
    /// its run (or it panicked: the member stops): the step answers the
    /// run's proposals and goes on applying.
    fn applied_elsewhere(&mut self, done: ApplyDone<M>) -> Result<(), StorageError> {
        let (first, last, sent) = self
            .io
            .applier
            .away
            .take()
            .expect("the apply thread reports only a run it was sent");
        let ((sm, outputs), took) = done.map_err(StorageError::Fatal)?;
        if let Some(m) = &self.io.metrics {
            m.observe_apply_elsewhere(took);
        }
        if took >= APPLY_ELSEWHERE_NOTABLE {
            tracing::info!(
                id = %self.step.raft().id(),
                first,
                last,
                apply_ms = took.as_millis() as u64,
                away_ms = sent.elapsed().as_millis() as u64,
                "applied heavy entries off the driver"
            );
        } else {
            tracing::debug!(id = %self.step.raft().id(), first, last, apply_us = took.as_micros() as u64, "applied heavy entries off the driver");
        }
        self.step.applied_elsewhere(sm, outputs, &mut self.io)?;
        self.publish_status();
        if !self.membership_waiting.is_empty() {
            self.retry_membership_changes();
        }
        Ok(())
    }

    fn publish_status(&self) {
        let s = self.step.raft().status();
        let status = NodeStatus {
            id: s.id,
            term: s.hard_state.term,
            role: s.soft_state.role,
            leader: s.soft_state.leader,
            commit: s.hard_state.commit,
            applied: self.step.applied(),
        };
        self.status.send_if_modified(|old| {
            let changed = *old != status;
            *old = status;
            changed
        });
        self.leadership.send_if_modified(|old| {
            let changed = (old.id, old.term, old.role, old.leader)
                != (status.id, status.term, status.role, status.leader);
            if changed {
                *old = status;
            }
            changed
        });
    }

    fn fail_all(&mut self, e: DriverError) {
        // A follower's held batch goes unanswered: the follower fails it
        // when this member stops leading or its answer is overdue.
        while let Some(held) = self.held.pop() {
            if let HeldProposal::Request(Request::Propose { reply, .. }) = held {
                let _ = reply.send(Err(e.clone()));
            }
        }
        self.step.fail_all(e.clone(), &mut self.io);
        for (_, reply) in std::mem::take(&mut self.membership_waiting) {
            let _ = reply.send(Err(e.clone()));
        }
    }
}

impl<S: Storage, M: StateMachine, T: Transport> Effects<S, M> for Io<M, T> {
    type Proposal = Waiter<M::Output>;
    type Read = ReadFn<M>;

    /// Storage IO blocks; the runtime is told, so other tasks move to
    /// other threads meanwhile.
    fn persist(
        &mut self,
        raft: &mut Raft<S>,
        ready: &Ready,
        write: u64,
    ) -> Result<Persisted, StorageError> {
        if self.deferred_sync {
            let deferred = blocking(self.owns_thread, || {
                raft.storage_mut()
                    .save_deferred(ready.hard_state.as_ref(), &ready.entries)
            })?;
            let Some(sync) = deferred else {
                return Ok(Persisted::Durable);
            };
            // A follower's small write on a fast disk syncs here when the
            // configuration allows it (see `log_sync`); the rest on the
            // sync thread, which times its syncs.
            let on_loop_allowed =
                self.follower_sync_on_loop && raft.soft_state().role == Role::Follower;
            let bytes = ready.entries.iter().map(Entry::size_bytes).sum();
            let sync = if self.syncer.may_sync_inline(on_loop_allowed, bytes) {
                if let Some(m) = &self.metrics {
                    m.fsync_inline.inc();
                }
                sync
            } else {
                match self
                    .syncer
                    .send(write, sync, self.metrics.clone(), self.owns_thread)?
                {
                    None => return Ok(Persisted::Syncing),
                    Some(sync) => sync,
                }
            };
            let started = Instant::now();
            blocking(self.owns_thread, || sync.sync())?;
            let took = started.elapsed();
            self.syncer.timed(took);
            if let Some(m) = &self.metrics {
                m.observe_fsync(took);
            }
            return Ok(Persisted::Durable);
        }
        // Only what syncs is timed: a commit index alone costs no fsync,
        // and counting it would hide the disk's latency among near-zero ones.
        let syncs = raft
            .storage()
            .save_syncs(ready.hard_state.as_ref(), &ready.entries);
        let started = Instant::now();
        blocking(self.owns_thread, || {
            raft.storage_mut()
                .save(ready.hard_state.as_ref(), &ready.entries)
        })?;
        if let Some(m) = &self.metrics
            && syncs
        {
            m.observe_fsync(started.elapsed());
        }
        Ok(Persisted::Durable)
    }

    /// The snapshot is decoded into the state machine on a second thread
    /// while the storage writes it (both take about as long); see
    /// [`install_snapshot`].
    fn install_snapshot(
        &mut self,
        raft: &mut Raft<S>,
        sm: &mut M,
        snapshot: &Snapshot,
        ready: &Ready,
    ) -> Result<(), StorageError> {
        let started = Instant::now();
        let times = blocking(self.owns_thread, || {
            install_snapshot(raft, sm, snapshot, ready)
        })?;
        if let Some(m) = &self.metrics {
            // The persist half alone (not the decode).
            m.observe_fsync(times.persisted);
            m.snapshots_installed.inc();
        }
        tracing::info!(
            id = %raft.id(),
            index = snapshot.meta.index,
            bytes = snapshot.data.len(),
            persist_ms = times.persisted.as_millis() as u64,
            restore_ms = times.restored.as_millis() as u64,
            total_ms = started.elapsed().as_millis() as u64,
            "installed a snapshot from the leader"
        );
        Ok(())
    }

    fn send(&mut self, messages: Vec<Message>) {
        match &mut self.held {
            Some(held) => held.extend(messages),
            None => self.transmit(messages),
        }
    }

    fn answer(
        &mut self,
        proposal: Waiter<M::Output>,
        outcome: Result<(LogIndex, M::Output), DriverError>,
    ) {
        self.answered = true;
        proposal.answer(outcome);
    }

    fn serve(&mut self, read: ReadFn<M>, sm: Result<&M, DriverError>) {
        read(sm);
    }

    /// One snapshot at a time: a due snapshot waits for the one being
    /// written (the core asks again after later `Ready`s).
    /// The snapshot-writing gauge is up from here until
    /// [`Io::finish_snapshot`] (or at once down again when the storage
    /// wrote it on this thread).
    fn snapshot_due(&mut self, raft: &mut Raft<S>, sm: &M) -> Result<(), StorageError> {
        if self.snapshot_writing.is_some() {
            return Ok(());
        }
        let started = Instant::now();
        if let Some(m) = &self.metrics {
            m.snapshot_started();
        }
        let taken = self.take_snapshot(raft, sm);
        if let Some(m) = &self.metrics
            && (taken.is_err() || self.snapshot_writing.is_none())
        {
            m.snapshot_finished(taken.is_ok().then(|| started.elapsed()));
        }
        taken
    }

    /// On the apply thread; the driver's loop takes the state machine back
    /// when the thread reports ([`Driver::applied_elsewhere`]). Applied
    /// here only if the thread cannot be started.
    fn apply_elsewhere(&mut self, sm: M, entries: Vec<Entry>) -> Option<Applied<M>> {
        match self.applier.send(sm, entries) {
            Ok(()) => None,
            Err((mut sm, entries)) => {
                let outputs = apply_run(&mut sm, &entries);
                Some((sm, outputs))
            }
        }
    }

    /// Dropped on the apply thread, which is idle now (here if it cannot
    /// take it).
    fn drop_read_copy(&mut self, copy: M) {
        self.applier.discard(copy);
    }
}

impl<M: StateMachine, T: Transport> Io<M, T> {
    /// Hands `messages` to the transport, noting what left.
    fn transmit(&mut self, messages: Vec<Message>) {
        self.note_sent(&messages);
        self.transport.send(messages);
    }
}

impl<M: StateMachine, T> Io<M, T> {
    /// Remembers when heartbeats left, to time their answers, and counts
    /// snapshots starting on their way.
    fn note_sent(&mut self, messages: &[Message]) {
        let Some(metrics) = &self.metrics else {
            return;
        };
        let now = Instant::now();
        for m in messages {
            if let MessageBody::InstallSnapshot { offset: 0, .. } = m.body {
                metrics.snapshots_sent.inc();
            }
            if let MessageBody::Heartbeat { round, .. } = m.body {
                if self.rtt_probes.len() >= RTT_PROBES_MAX {
                    // Unanswered probes (a peer down): start over.
                    self.rtt_probes.clear();
                }
                self.rtt_probes.insert((m.to, round), now);
            }
        }
    }

    /// Snapshots the state machine and has the storage write it. When the
    /// storage offers a writer, the state is frozen here
    /// ([`StateMachine::freeze`], O(1) for the KV store) and encoded and
    /// written on a thread of its own, so that writes and reads go on
    /// meanwhile; the log is compacted once the file is durable
    /// ([`Self::finish_snapshot`]). Otherwise it is encoded and written
    /// here.
    fn take_snapshot<S: Storage>(
        &mut self,
        raft: &mut Raft<S>,
        sm: &M,
    ) -> Result<(), StorageError> {
        let started = Instant::now();
        let Some(writer) = raft.storage().snapshot_writer() else {
            let data = sm.snapshot();
            let encoded = started.elapsed();
            let bytes = data.len();
            let meta = blocking(self.owns_thread, || raft.compact(data))?;
            log_snapshot(raft, &meta, bytes, encoded, started.elapsed() - encoded);
            return Ok(());
        };
        let encode = sm.freeze();
        // The meta of the applied index, now; the data follows on the thread.
        let meta = raft.prepare_snapshot(Bytes::new())?.meta;
        let done = self.snapshot_written.0.clone();
        let thread_meta = meta.clone();
        std::thread::Builder::new()
            .name("snapshot-write".into())
            .spawn(move || {
                flotilla_storage::priority::lower_this_thread();
                let write = || {
                    // The encoder streams into the storage's file: the time
                    // spent in the file's writes is the write's, the rest
                    // the encoding's.
                    let in_sink = Arc::new(std::sync::Mutex::new(Duration::ZERO));
                    let timed_in_sink = in_sink.clone();
                    let timed: flotilla_raft::SnapshotEncoder = Box::new(move |sink| {
                        let mut timed = TimedSink {
                            sink,
                            spent: Duration::ZERO,
                        };
                        let encoded = encode(&mut timed);
                        *timed_in_sink.lock().expect("never poisoned") = timed.spent;
                        encoded
                    });
                    let encoding = Instant::now();
                    let bytes = writer(&thread_meta, timed)?;
                    let in_sink = *in_sink.lock().expect("never poisoned");
                    Ok((bytes as usize, encoding.elapsed().saturating_sub(in_sink)))
                };
                let written = std::panic::catch_unwind(std::panic::AssertUnwindSafe(write))
                    .unwrap_or_else(|_| {
                        Err(StorageError::Fatal("the snapshot writer panicked".into()))
                    });
                // Capacity 1 and one write at a time: never full.
                let _ = done.try_send(written);
            })
            .map_err(|e| {
                StorageError::Fatal(format!("cannot start a thread to write the snapshot: {e}"))
            })?;
        self.snapshot_writing = Some(SnapshotWrite { meta, started });
        Ok(())
    }

    /// The snapshot's file is durable (or failed): compact the log to it.
    /// False when no snapshot was being written.
    fn finish_snapshot<S: Storage>(
        &mut self,
        raft: &mut Raft<S>,
        written: WriteResult,
    ) -> Result<bool, StorageError> {
        let Some(write) = self.snapshot_writing.take() else {
            return Ok(false);
        };
        let finished = written.and_then(|(bytes, encoded)| {
            blocking(self.owns_thread, || {
                raft.compact_written(&write.meta, bytes as u64)
            })?;
            let written_in = write.started.elapsed().saturating_sub(encoded);
            log_snapshot(raft, &write.meta, bytes, encoded, written_in);
            Ok(())
        });
        if let Some(m) = &self.metrics {
            m.snapshot_finished(finished.is_ok().then(|| write.started.elapsed()));
        }
        finished.map(|()| true)
    }
}

/// Runs blocking IO: directly on a thread the driver owns, else in
/// `block_in_place` so the runtime moves its other tasks elsewhere.
fn log_snapshot<S: Storage>(
    raft: &Raft<S>,
    meta: &SnapshotMeta,
    bytes: usize,
    encoded: Duration,
    written: Duration,
) {
    tracing::info!(
        id = %raft.id(),
        index = meta.index,
        bytes,
        encode_ms = encoded.as_millis() as u64,
        write_ms = written.as_millis() as u64,
        "took a snapshot and compacted the log"
    );
}

pub(super) fn blocking<R>(owns_thread: bool, io: impl FnOnce() -> R) -> R {
    if owns_thread {
        io()
    } else {
        tokio::task::block_in_place(io)
    }
}

fn transfer_error(e: flotilla_raft::TransferError) -> DriverError {
    match e {
        flotilla_raft::TransferError::NotLeader { leader_hint } => {
            DriverError::NotLeader { leader_hint }
        }
        other => DriverError::Rejected(other.to_string()),
    }
}

fn propose_error(e: ProposeError) -> DriverError {
    match e {
        ProposeError::NotLeader { leader_hint } => DriverError::NotLeader { leader_hint },
        ProposeError::TransferInProgress { to } => DriverError::NotLeader {
            leader_hint: Some(to),
        },
        ProposeError::UncommittedLimit { .. } => DriverError::Busy(e.to_string()),
        ProposeError::ConfChangeRejected(_) | ProposeError::EmptyBatch => {
            DriverError::Rejected(e.to_string())
        }
    }
}
