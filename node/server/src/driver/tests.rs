//! Three drivers over on-disk storage in temporary folders, wired by an
//! in-process transport: agreement, linearizable reads from a follower,
//! restart from disk, and catching up through a snapshot.

use super::*;
use crate::test_support::Recorder;
use flotilla_raft::{Bytes, Config, Message, NodeId, Raft, Role};
use flotilla_storage::{DiskStorage, StorageOptions};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

type Routes = Arc<Mutex<HashMap<NodeId, mpsc::Sender<Message>>>>;

/// Delivers to the other drivers' inbound queues; a member not running
/// drops its messages.
struct Wire(Routes);

impl Transport for Wire {
    fn send(&mut self, messages: Vec<Message>) {
        let routes = self.0.lock().expect("routes lock");
        for m in messages {
            if let Some(tx) = routes.get(&m.to) {
                let _ = tx.try_send(m);
            }
        }
    }
}

struct Member {
    handle: RaftHandle<Recorder>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

struct TestCluster {
    dirs: Vec<tempfile::TempDir>,
    routes: Routes,
    members: Vec<Option<Member>>,
    snapshot_after_entries: u64,
    /// Each member's [`Recorder::slower_ms`].
    slower_ms: Vec<Arc<std::sync::atomic::AtomicU64>>,
    /// Each member's metrics, kept across restarts.
    metrics: Vec<Arc<crate::metrics::Metrics>>,
}

impl TestCluster {
    fn new(n: usize, snapshot_after_entries: u64) -> TestCluster {
        TestCluster::new_in(n, snapshot_after_entries, &std::env::temp_dir())
    }

    /// The members' folders under `root`.
    fn new_in(n: usize, snapshot_after_entries: u64, root: &std::path::Path) -> TestCluster {
        let mut c = TestCluster {
            dirs: (0..n)
                .map(|_| tempfile::tempdir_in(root).expect("tempdir"))
                .collect(),
            routes: Arc::default(),
            members: (0..n).map(|_| None).collect(),
            snapshot_after_entries,
            slower_ms: (0..n).map(|_| Arc::default()).collect(),
            metrics: (0..n)
                .map(|_| Arc::new(crate::metrics::Metrics::new()))
                .collect(),
        };
        for i in 0..n {
            c.start(i);
        }
        c
    }

    fn storage_options(&self, i: usize) -> StorageOptions {
        let n = self.members.len() as u64;
        let mut options = StorageOptions::new(7, i as u64 + 1);
        options.bootstrap = Some(flotilla_raft::ConfState {
            voters: (1..=n).map(NodeId).collect(),
            learners: Vec::new(),
        });
        options
    }

    fn start(&mut self, i: usize) {
        let id = NodeId(i as u64 + 1);
        let storage =
            DiskStorage::open(self.dirs[i].path(), self.storage_options(i)).expect("open storage");
        let mut sm = Recorder {
            slower_ms: self.slower_ms[i].clone(),
            ..Recorder::default()
        };
        let snapshot = flotilla_raft::Storage::snapshot(&storage).expect("snapshot");
        if snapshot.meta.index > 0 {
            sm.restore(&snapshot).expect("restore");
        }
        let mut config = Config::new(id);
        config.election_ticks = 10;
        config.heartbeat_ticks = 2;
        config.snapshot_after_entries = self.snapshot_after_entries;
        config.snapshot_min_log_percent = 0;
        let raft = Raft::new(config, storage).expect("raft");
        let (driver, handle) = Driver::new(
            raft,
            sm,
            Wire(self.routes.clone()),
            DriverConfig {
                tick_interval: Duration::from_millis(5),
                // The loop's syncs are what several tests here look at.
                follower_sync_on_loop: true,
                ..DriverConfig::default()
            },
        );
        // Peers' proposals are taken as they are, but for those marked to
        // be refused.
        let driver = driver
            .with_peer_proposals(
                Arc::new(|command: Bytes| (!command.starts_with(b"refuse")).then_some(command)),
                Arc::new(|_| true),
            )
            .with_metrics(self.metrics[i].clone());
        self.routes
            .lock()
            .expect("routes lock")
            .insert(id, handle.inbound.clone());
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            driver
                .run(async {
                    let _ = stop_rx.await;
                })
                .await
                .expect("storage works");
        });
        self.members[i] = Some(Member {
            handle,
            stop: Some(stop_tx),
            task,
        });
    }

    async fn stop(&mut self, i: usize) {
        let id = NodeId(i as u64 + 1);
        self.routes.lock().expect("routes lock").remove(&id);
        if let Some(mut m) = self.members[i].take() {
            if let Some(stop) = m.stop.take() {
                let _ = stop.send(());
            }
            m.task.await.expect("driver task ended cleanly");
        }
    }

    fn handle(&self, i: usize) -> &RaftHandle<Recorder> {
        &self.members[i].as_ref().expect("running").handle
    }

    /// A leader that every running member knows as theirs: with 50 ms
    /// election timeouts on a loaded machine, a member that has not heard
    /// the new leader yet may still start an election.
    async fn leader(&self) -> usize {
        for _ in 0..400 {
            let running = || self.members.iter().flatten();
            let leader = running()
                .map(|m| m.handle.status())
                .find(|s| s.role == Role::Leader);
            if let Some(leader) = leader
                && running().all(|m| m.handle.status().leader == leader.id)
            {
                return (leader.id.0 - 1) as usize;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("no leader elected");
    }

    /// Proposes `prefix0` .. `prefix{count-1}` through member `l`, each
    /// awaited until applied.
    async fn propose_all(&self, l: usize, prefix: &str, count: u32) {
        for i in 0..count {
            if let Err(e) = self
                .handle(l)
                .propose(Bytes::from(format!("{prefix}{i}")))
                .await
            {
                panic!(
                    "{prefix}{i} through member {l} failed: {e:?}; statuses {:?}",
                    self.members
                        .iter()
                        .flatten()
                        .map(|m| m.handle.status())
                        .collect::<Vec<_>>()
                );
            }
        }
    }

    /// Waits until member `i` wrote a snapshot file at `index` or above.
    async fn wait_snapshot_file(&self, i: usize, index: u64) {
        let dir = self.dirs[i].path().join("snapshot");
        for _ in 0..2000 {
            let newest = std::fs::read_dir(&dir)
                .expect("the snapshot folder")
                .filter_map(|e| {
                    let name = e.ok()?.file_name().into_string().ok()?;
                    let stem = name.strip_suffix(".snap")?;
                    stem.split('-').next()?.parse::<u64>().ok()
                })
                .max()
                .unwrap_or(0);
            if newest >= index {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("member {i} wrote no snapshot at {index} or above");
    }

    /// Waits until member `i` applied `count` commands.
    async fn wait_commands(&self, i: usize, count: usize) -> Vec<Bytes> {
        for _ in 0..2000 {
            let commands = self
                .handle(i)
                .read_local(|sm: &Recorder| sm.commands.clone())
                .await
                .expect("read");
            if commands.len() >= count {
                return commands;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("member {i} did not catch up");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_agree_and_read_linearizably() {
    let c = TestCluster::new(3, 100_000);
    let l = c.leader().await;
    for i in 0..50u32 {
        let out = c
            .handle(l)
            .propose(Bytes::from(format!("cmd-{i}")))
            .await
            .expect("proposal applied");
        assert_eq!(out, i as usize + 1, "outputs count the applied commands");
    }
    let follower = (l + 1) % 3;
    // A follower's linearizable read sees every write that completed.
    let seen = c
        .handle(follower)
        .read(|sm: &Recorder| sm.commands.len())
        .await
        .expect("read");
    assert_eq!(seen, 50);
    let err = c
        .handle(follower)
        .propose(Bytes::from_static(b"x"))
        .await
        .expect_err("followers refuse proposals");
    assert!(
        matches!(
            err,
            DriverError::NotLeader {
                leader_hint: Some(_)
            }
        ),
        "{err}"
    );
    let (term, is_leader) = c.handle(l).state();
    assert!(is_leader && term.0 > 0);
}

/// A follower proposes through the peer stream: its commands apply once,
/// in the same order on every member, it answers each with its own
/// state machine's output once applied there (so it reads its own
/// writes), a command the leader refuses is answered unappended, and a
/// batch whose leader went away fails instead of hanging.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_proposes_through_the_peer_stream() {
    let mut c = TestCluster::new(3, 100_000);
    let l = c.leader().await;
    let f = (l + 1) % 3;
    let follower = c.handle(f).clone();
    let sent: Vec<Bytes> = (0..200u32)
        .map(|i| Bytes::from(format!("peer-{i}")))
        .collect();
    let mut proposing = tokio::task::JoinSet::new();
    for command in &sent {
        let follower = follower.clone();
        let command = command.clone();
        proposing.spawn(async move {
            let out = follower.propose_via_leader(command.clone()).await;
            let seen = {
                let command = command.clone();
                follower
                    .read_local(move |sm: &Recorder| sm.commands.contains(&command))
                    .await
            };
            (command, out, seen)
        });
    }
    let mut outputs = Vec::new();
    while let Some(answer) = proposing.join_next().await {
        let (command, out, seen) = answer.expect("proposer ran");
        outputs.push((command, out.expect("applied through the leader")));
        assert!(
            seen.expect("read"),
            "the follower answered before it applied"
        );
    }
    let first = c.wait_commands(0, sent.len()).await;
    for (command, out) in &outputs {
        // The output counts the commands applied up to this one's entry.
        assert_eq!(
            &first[out - 1],
            command,
            "answered with its own entry's output"
        );
    }
    let mut sorted = first[..sent.len()].to_vec();
    sorted.sort();
    let mut expected = sent.clone();
    expected.sort();
    assert_eq!(sorted, expected, "every command applied, once");
    for i in 1..3 {
        let applied = c.wait_commands(i, sent.len()).await;
        assert_eq!(applied[..sent.len()], first[..sent.len()], "member {i}");
    }

    let refused = follower
        .propose_via_leader(Bytes::from_static(b"refuse-me"))
        .await
        .expect_err("the leader refuses it");
    assert!(matches!(refused, DriverError::Rejected(_)), "{refused}");
    // On the leader it is an ordinary proposal.
    let out = c
        .handle(l)
        .propose_via_leader(Bytes::from_static(b"on-the-leader"))
        .await
        .expect("applied");
    assert_eq!(out, sent.len() + 1, "the refused command was not appended");

    // The leader goes away: a batch sent to it fails, in bounded time.
    c.stop(l).await;
    let lost = tokio::time::timeout(
        Duration::from_secs(20),
        follower.propose_via_leader(Bytes::from_static(b"lost")),
    )
    .await
    .expect("the proposal is answered");
    match lost {
        Err(DriverError::Timeout | DriverError::OutcomeUnknown | DriverError::NotLeader { .. }) => {
        }
        // A new leader was elected in time and appended it.
        Ok(_) => {}
        Err(e) => panic!("unexpected: {e}"),
    }
}

/// Proposals that arrive while others are in flight (held back to share
/// a `Ready`) all apply, each proposer's in the order it sent them, and
/// every member applies the same sequence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proposals_arriving_under_load_apply_in_order_on_every_member() {
    let c = TestCluster::new(3, 100_000);
    let l = c.leader().await;
    let proposers: Vec<_> = (0..8u32)
        .map(|p| {
            let handle = c.handle(l).clone();
            tokio::spawn(async move {
                let mut outputs = Vec::new();
                for round in 0..10u32 {
                    // Waves of three at once, then one alone.
                    let wave = if round % 2 == 0 { 3 } else { 1 };
                    let commands =
                        (0..wave).map(move |i| Bytes::from(format!("p{p}-r{round}-{i}")));
                    for out in handle.propose_many(commands).await {
                        outputs.push(out.expect("applied"));
                    }
                }
                outputs
            })
        })
        .collect();
    let mut total = 0;
    for task in proposers {
        let outputs = task.await.expect("proposer");
        assert!(
            outputs.windows(2).all(|w| w[0] < w[1]),
            "a proposer's commands apply in the order it sent them: {outputs:?}"
        );
        total += outputs.len();
    }
    assert_eq!(total, 8 * 20);
    let leader = c.wait_commands(l, total).await;
    for i in 0..3 {
        assert_eq!(c.wait_commands(i, total).await, leader, "member {i}");
    }
}

/// A follower's write too large to sync on its loop goes to the sync
/// thread; once the thread reports it durable, the follower syncs its small
/// writes on its loop again: the report tells the driver that no sync is
/// under way. (Without it, every later write would pay the hand-off to the
/// thread and the wake-up back.) The members write to memory (`/dev/shm`):
/// on a disk whose syncs take a millisecond or more, syncs stay off the
/// loop by design, so without it the test says so and checks nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_large_write_a_follower_syncs_small_ones_on_its_loop_again() {
    let shm = std::path::Path::new("/dev/shm");
    if !shm.is_dir() {
        eprintln!("skipped: no /dev/shm to write to");
        return;
    }
    let c = TestCluster::new_in(3, 100_000, shm);
    let l = c.leader().await;
    let followers: Vec<usize> = (0..3).filter(|i| *i != l).collect();
    let large = vec![b'x'; INLINE_BYTES_MAX as usize + 1];
    c.handle(l)
        .propose(Bytes::from(large))
        .await
        .expect("applied");
    let mut before = Vec::new();
    for &i in &followers {
        c.wait_commands(i, 1).await;
        before.push(c.metrics[i].fsync_inline.get());
    }
    c.propose_all(l, "small", 20).await;
    for (&i, before) in followers.iter().zip(before) {
        c.wait_commands(i, 21).await;
        assert!(
            c.metrics[i].fsync_inline.get() > before,
            "member {i} synced none of 20 small writes on its loop after a large one"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_restarts_from_disk_and_catches_up() {
    let mut c = TestCluster::new(3, 100_000);
    let l = c.leader().await;
    c.propose_all(l, "a", 20).await;
    let victim = (l + 1) % 3;
    c.stop(victim).await;
    c.propose_all(l, "b", 20).await;
    c.start(victim);
    let commands = c.wait_commands(victim, 40).await;
    assert_eq!(commands.len(), 40);
    assert_eq!(commands[39], Bytes::from_static(b"b19"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_member_catches_up_through_a_snapshot() {
    let mut c = TestCluster::new(3, 10);
    let l = c.leader().await;
    let victim = (l + 2) % 3;
    c.stop(victim).await;
    c.propose_all(l, "s", 60).await;
    c.start(victim);
    let commands = c.wait_commands(victim, 60).await;
    assert_eq!(commands.len(), 60);
    assert_eq!(commands[59], Bytes::from_static(b"s59"));
}

/// Snapshots are written on a thread beside the driver; once durable they
/// compact the log, and a stop waits for one still being written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_written_beside_the_driver_compact_the_log() {
    let mut c = TestCluster::new(3, 10);
    let l = c.leader().await;
    c.propose_all(l, "w", 60).await;
    for i in 0..3 {
        c.wait_commands(i, 60).await;
    }
    // The snapshot writer runs at the lowest priority and may lag far
    // behind the entries; a snapshot that came due while it wrote the
    // previous one is taken once it finishes. Wait for the one the checks
    // below expect (a stop then finishes it, and compacts the log to it).
    for i in 0..3 {
        let applied = c.handle(i).status().applied;
        c.wait_snapshot_file(i, applied.saturating_sub(29).max(30))
            .await;
    }
    for i in 0..3 {
        c.stop(i).await;
    }
    for i in 0..3 {
        let storage = DiskStorage::open(c.dirs[i].path(), c.storage_options(i)).expect("open");
        let snapshot = flotilla_raft::Storage::snapshot(&storage).expect("snapshot");
        let last = flotilla_raft::Storage::last_index(&storage);
        assert!(
            snapshot.meta.index + 30 > last && snapshot.meta.index >= 30,
            "member {i}: snapshot at {} with the log at {last}",
            snapshot.meta.index
        );
        assert_eq!(
            flotilla_raft::Storage::first_index(&storage),
            snapshot.meta.index + 1,
            "member {i}: the log is compacted to the snapshot"
        );
    }
    for i in 0..3 {
        c.start(i);
    }
    for i in 0..3 {
        let commands = c.wait_commands(i, 60).await;
        assert_eq!(commands.len(), 60, "member {i}");
        assert_eq!(commands[59], Bytes::from_static(b"w59"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_answers_every_waiting_caller() {
    let mut c = TestCluster::new(3, 100_000);
    let l = c.leader().await;
    // Cut the leader off so that its proposal can never commit, then stop it.
    let leader_id = NodeId(l as u64 + 1);
    c.routes
        .lock()
        .expect("routes")
        .retain(|id, _| *id == leader_id);
    let handle = c.handle(l).clone();
    let pending = tokio::spawn(async move { handle.propose(Bytes::from_static(b"stuck")).await });
    tokio::time::sleep(Duration::from_millis(20)).await;
    c.stop(l).await;
    let result = pending.await.expect("task");
    assert!(
        matches!(
            result,
            Err(DriverError::Stopped) | Err(DriverError::OutcomeUnknown)
        ),
        "{result:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_membership_change_carries_its_context_in_one_entry() {
    let c = TestCluster::new(3, 100_000);
    let l = c.leader().await;
    c.propose_all(l, "before-", 5).await;
    // Commands proposed without waiting are committed or not when the
    // change is prepared; whichever, everything committed is applied then.
    let pending = c.handle(l).clone();
    let burst = tokio::spawn(async move {
        pending
            .propose_many((0..20).map(|i| Bytes::from(format!("burst-{i}"))))
            .await
    });
    let seen = Arc::new(Mutex::new(None));
    let seen_in = seen.clone();
    let output = c
        .handle(l)
        .change_membership(move |sm: &Recorder| {
            *seen_in.lock().expect("lock") = Some(sm.commands.len());
            Ok((
                flotilla_raft::ConfChange::AddLearner(NodeId(9)),
                Bytes::from_static(b"learner-9"),
            ))
        })
        .await
        .expect("applied");
    let before = seen.lock().expect("lock").expect("prepared once");
    assert!(before >= 5, "prepared after the awaited commands applied");
    assert!(output > before, "the output is the entry's own apply");
    for outcome in burst.await.expect("burst task") {
        outcome.expect("burst applied");
    }
    for i in 0..3 {
        let commands = c.wait_commands(i, 26).await;
        let conf: Vec<&Bytes> = commands
            .iter()
            .filter(|c| c.starts_with(b"conf:"))
            .collect();
        assert_eq!(conf, [&Bytes::from_static(b"conf:learner-9")], "member {i}");
        let status = c.handle(i).status();
        assert!(status.applied > 0);
    }

    // A refusal answers with the prepared output and proposes nothing.
    let refused = c
        .handle(l)
        .change_membership(|_: &Recorder| Err(usize::MAX))
        .await
        .expect("answered");
    assert_eq!(refused, usize::MAX);
    let follower = (l + 1) % 3;
    let err = c
        .handle(follower)
        .change_membership(|_: &Recorder| Err(0))
        .await
        .expect_err("a follower does not prepare");
    assert!(matches!(err, DriverError::NotLeader { .. }), "{err:?}");
    // The core's own rules still hold: a learner that never answered is
    // not promoted.
    let err = c
        .handle(l)
        .change_membership(|_: &Recorder| {
            Ok((
                flotilla_raft::ConfChange::PromoteLearner(NodeId(9)),
                Bytes::new(),
            ))
        })
        .await
        .expect_err("learner 9 does not run");
    assert!(matches!(err, DriverError::Rejected(_)), "{err:?}");
    let commands = c.wait_commands(l, 26).await;
    assert_eq!(commands.len(), 26, "no entry for the refused changes");
}

/// A [`Recorder`] whose frozen snapshots are encoded only once the test
/// opens `gate`.
struct Gated {
    inner: Recorder,
    gate: Arc<(Mutex<bool>, std::sync::Condvar)>,
}

impl StateMachine for Gated {
    type Output = usize;

    fn apply(&mut self, index: flotilla_raft::LogIndex, command: &Bytes) -> usize {
        self.inner.apply(index, command)
    }

    fn apply_conf_change(&mut self, index: flotilla_raft::LogIndex, context: &Bytes) -> usize {
        self.inner.apply_conf_change(index, context)
    }

    fn snapshot(&self) -> Bytes {
        self.inner.snapshot()
    }

    fn freeze(&self) -> flotilla_raft::SnapshotEncoder {
        let (encode, gate) = (self.inner.freeze(), self.gate.clone());
        Box::new(move |sink| {
            let (open, opened) = &*gate;
            let mut open = open.lock().expect("gate lock");
            while !*open {
                open = opened.wait(open).expect("gate lock");
            }
            drop(open);
            encode(sink)
        })
    }

    fn restore(&mut self, snapshot: &flotilla_raft::Snapshot) -> Result<(), String> {
        self.inner.restore(snapshot)
    }
}

/// The metrics show a snapshot while it is being written beside the
/// driver, and count it with its duration once durable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_show_a_snapshot_while_it_is_written() {
    let dir = tempfile::tempdir().expect("tempdir");
    let raft = crate::test_support::single_voter_raft(dir.path(), |c| {
        c.snapshot_after_entries = 10;
    });
    let gate = Arc::new((Mutex::new(false), std::sync::Condvar::new()));
    let sm = Gated {
        inner: Recorder::default(),
        gate: gate.clone(),
    };
    let metrics = Arc::new(crate::metrics::Metrics::new());
    let (driver, handle) = Driver::new(
        raft,
        sm,
        Wire(Arc::default()),
        DriverConfig {
            tick_interval: Duration::from_millis(5),
            ..DriverConfig::default()
        },
    );
    let driver = driver.with_metrics(metrics.clone());
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(driver.run(async {
        let _ = stopped.await;
    }));
    let mut proposed = 0;
    for _ in 0..400 {
        if metrics.snapshot_writing.get() == 1 {
            break;
        }
        if handle.status().role == Role::Leader && proposed < 40 {
            handle
                .propose(Bytes::from(format!("c{proposed}")))
                .await
                .expect("applied");
            proposed += 1;
        } else {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    assert_eq!(
        metrics.snapshot_writing.get(),
        1,
        "a snapshot is being written"
    );
    assert_eq!(metrics.snapshots_written.get(), 0, "none is durable yet");
    // Writes go on meanwhile.
    handle
        .propose(Bytes::from_static(b"during"))
        .await
        .expect("applied while the snapshot waits");
    *gate.0.lock().expect("gate lock") = true;
    gate.1.notify_all();
    for _ in 0..400 {
        if metrics.snapshots_written.get() >= 1 && metrics.snapshot_writing.get() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        metrics.snapshots_written.get() >= 1,
        "the snapshot was counted"
    );
    assert_eq!(metrics.snapshot_writing.get(), 0, "and is no longer shown");
    let text = metrics.render(&handle.status());
    assert!(
        text.lines().any(|l| l
            .strip_prefix("flotilla_raft_snapshot_duration_seconds_count ")
            .and_then(|n| n.parse::<u64>().ok())
            .is_some_and(|n| n >= 1)),
        "{text}"
    );
    assert!(text.contains("flotilla_raft_snapshot_writing 0"), "{text}");
    let _ = stop.send(());
    task.await.expect("driver task").expect("storage works");
}

/// What [`TaskWire`] saw: commit notices it wrote, and those it wrote
/// before the leader had applied the entries they tell about.
#[derive(Default)]
struct NoticeLog {
    notices: usize,
    early: Vec<String>,
    /// While a client on the leader's runtime counts the answers its
    /// connection task delivered: the leader's applied index at the last
    /// one (see `a_leaders_answer_leaves_before_its_commit_notices`).
    delivered: Option<u64>,
    /// Commit notices written before the answer of the entry they tell
    /// about was delivered.
    undelivered: Vec<String>,
}

/// Like [`Wire`], but each batch is delivered by a task spawned on the
/// sender's runtime, as the node's peer transport writes to the network
/// from tasks on the driver's thread. Before delivering, it checks each
/// commit notice (an append without entries) from the leader against the
/// leader's published applied index.
struct TaskWire {
    routes: Routes,
    sender: Arc<std::sync::OnceLock<RaftHandle<Recorder>>>,
    log: Arc<Mutex<NoticeLog>>,
}

impl Transport for TaskWire {
    fn send(&mut self, messages: Vec<Message>) {
        let routes = self.routes.clone();
        let sender = self.sender.clone();
        let log = self.log.clone();
        tokio::spawn(async move {
            let status = sender.get().map(|h| h.status());
            for m in messages {
                if let (
                    Some(status),
                    flotilla_raft::MessageBody::AppendEntries {
                        entries,
                        leader_commit,
                        ..
                    },
                ) = (status, &m.body)
                    && status.role == Role::Leader
                    && entries.is_empty()
                    && *leader_commit > 0
                {
                    let mut log = log.lock().expect("log lock");
                    log.notices += 1;
                    if status.applied < *leader_commit {
                        log.early.push(format!(
                            "commit {leader_commit} sent to {} with {} applied",
                            m.to, status.applied
                        ));
                    }
                    if let Some(delivered) = log.delivered
                        && delivered < *leader_commit
                    {
                        log.undelivered.push(format!(
                            "commit {leader_commit} sent to {} with answers out through {delivered}",
                            m.to
                        ));
                    }
                }
                let tx = routes.lock().expect("routes lock").get(&m.to).cloned();
                if let Some(tx) = tx {
                    let _ = tx.try_send(m);
                }
            }
        });
    }
}

/// A member of a [`TaskWire`] cluster: its handle, its stop signal, its
/// driver's task, and the runtime of the driver's thread (tasks spawned
/// there run between the driver's turns, as the node's peer and client
/// servers do).
struct TaskWireMember {
    handle: RaftHandle<Recorder>,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), flotilla_raft::StorageError>>,
    runtime: tokio::runtime::Handle,
}

/// Three members over [`TaskWire`]s, each driver on a thread of its own
/// and its log in a directory of its own: returns the directories (kept
/// until the members stop), the log of commit notices the wires saw, the
/// members and the position of the leader.
async fn task_wire_cluster() -> (
    Vec<tempfile::TempDir>,
    Arc<Mutex<NoticeLog>>,
    Vec<TaskWireMember>,
    usize,
) {
    let dirs: Vec<tempfile::TempDir> = (0..3)
        .map(|_| tempfile::tempdir().expect("tempdir"))
        .collect();
    let log = Arc::new(Mutex::new(NoticeLog::default()));
    let routes: Routes = Arc::default();
    let mut members = Vec::new();
    for (i, dir) in dirs.iter().enumerate() {
        let id = NodeId(i as u64 + 1);
        let mut options = StorageOptions::new(7, id.0);
        options.bootstrap = Some(flotilla_raft::ConfState {
            voters: (1..=3).map(NodeId).collect(),
            learners: Vec::new(),
        });
        let storage = DiskStorage::open(dir.path(), options).expect("open storage");
        let mut config = Config::new(id);
        // 200 ms: a loaded machine stalls the threads for less, so the
        // leader stays (a change would fail the proposals).
        config.election_ticks = 40;
        config.heartbeat_ticks = 2;
        let raft = Raft::new(config, storage).expect("raft");
        let sender = Arc::new(std::sync::OnceLock::new());
        let wire = TaskWire {
            routes: routes.clone(),
            sender: sender.clone(),
            log: log.clone(),
        };
        let (driver, handle) = Driver::new(
            raft,
            Recorder::default(),
            wire,
            DriverConfig {
                tick_interval: Duration::from_millis(5),
                answers_on_thread: true,
                ..DriverConfig::default()
            },
        );
        let _ = sender.set(handle.clone());
        routes
            .lock()
            .expect("routes lock")
            .insert(id, handle.inbound.clone());
        let (stop, stopped) = oneshot::channel::<()>();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let runtime_handle = runtime.handle().clone();
        let task = driver
            .spawn_on_runtime(
                runtime,
                format!("raft-test-{i}"),
                async {
                    let _ = stopped.await;
                },
                std::future::ready(()),
            )
            .expect("driver thread");
        members.push(TaskWireMember {
            handle,
            stop,
            task,
            runtime: runtime_handle,
        });
    }
    for _ in 0..400 {
        if let Some(leader) = members
            .iter()
            .position(|m| m.handle.status().role == Role::Leader)
        {
            return (dirs, log, members, leader);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no leader within 4 s");
}

async fn stop_task_wire_cluster(members: Vec<TaskWireMember>) {
    for m in members {
        let _ = m.stop.send(());
        m.task.await.expect("driver thread").expect("storage works");
    }
}

/// A leader on its own thread answers a proposal as soon as a follower's
/// acknowledgement commits it: it applies the entry before the peer
/// transport's tasks write the new commit index to the followers, rather
/// than yielding to them first as it does before a disk write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_applies_before_it_sends_the_commit_index() {
    let (_dirs, log, members, leader) = task_wire_cluster().await;
    let leader_handle = members[leader].handle.clone();
    for i in 0..30u32 {
        leader_handle
            .propose(Bytes::from(format!("cmd-{i}")))
            .await
            .expect("applied");
    }
    stop_task_wire_cluster(members).await;
    let log = log.lock().expect("log lock");
    assert!(log.notices >= 30, "commit notices seen: {}", log.notices);
    assert!(log.early.is_empty(), "{:?}", log.early);
}

/// An answer that leaves through two tasks on the driver's runtime (in the
/// node: the request's task, then its connection's task, which writes it
/// to the socket) is out before the commit index the same `Ready` sends
/// the followers: the driver holds those messages and yields once before
/// it hands them to the peer transport's tasks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leaders_answer_leaves_before_its_commit_notices() {
    let (_dirs, log, members, leader) = task_wire_cluster().await;
    let handle = members[leader].handle.clone();
    // The term's first entry is applied and announced before the client
    // starts counting.
    for _ in 0..400 {
        let status = handle.status();
        if status.applied >= 1 && status.applied == status.commit {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    log.lock().expect("log lock").delivered = Some(handle.status().applied);
    // The client proposes one command at a time from a task on the
    // leader's runtime and hands each answer to a second task there,
    // which records it delivered; the next command waits for that.
    let delivered = log.clone();
    let client = members[leader].runtime.spawn(async move {
        let (answers, mut to_write) = tokio::sync::mpsc::unbounded_channel::<()>();
        let (written, mut was_written) = tokio::sync::mpsc::unbounded_channel::<()>();
        let status = handle.clone();
        let connection = tokio::spawn(async move {
            while to_write.recv().await.is_some() {
                let applied = status.status().applied;
                delivered.lock().expect("log lock").delivered = Some(applied);
                let _ = written.send(());
            }
        });
        for i in 0..30u32 {
            handle
                .propose(Bytes::from(format!("cmd-{i}")))
                .await
                .expect("applied");
            answers.send(()).expect("the connection task runs");
            was_written.recv().await.expect("written");
        }
        drop(answers);
        connection.await.expect("connection task");
    });
    client.await.expect("client task");
    stop_task_wire_cluster(members).await;
    let log = log.lock().expect("log lock");
    assert!(log.notices >= 30, "commit notices seen: {}", log.notices);
    assert!(log.undelivered.is_empty(), "{:?}", log.undelivered);
}

/// A serializable read (`read_stale`) while a heavy entry applies off the
/// driver runs on the copy the state machine left, at once: it sees the
/// state before the entry, while a local read issued beside it waits for
/// the entry. (The entry takes two seconds: far longer than the reads take
/// to reach the driver.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_serializable_read_does_not_wait_for_a_heavy_entry() {
    let c = TestCluster::new(3, 100_000);
    let l = c.leader().await;
    c.propose_all(l, "before-", 3).await;
    let handle = c.handle(l).clone();
    // Such reads come: the state machine leaves a copy when it goes.
    let home = handle
        .read_stale(|sm: &Recorder| sm.commands.len())
        .await
        .expect("served");
    assert_eq!(home, 3);
    let heavy = {
        let handle = handle.clone();
        tokio::spawn(async move { handle.propose(Bytes::from_static(b"slow:2000")).await })
    };
    let mut away = false;
    for _ in 0..1000 {
        let status = handle.status();
        if status.applied < status.commit {
            away = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert!(away, "the heavy entry never went to apply elsewhere");
    let waiting = {
        let handle = handle.clone();
        tokio::spawn(async move { handle.read_local(|sm: &Recorder| sm.commands.len()).await })
    };
    let stale = handle
        .read_stale(|sm: &Recorder| sm.commands.clone())
        .await
        .expect("served");
    assert_eq!(
        stale.len(),
        3,
        "the state before the heavy entry: {stale:?}"
    );
    // The driver counts the read once it has served it: the answer can
    // arrive here first.
    for _ in 0..1000 {
        if c.metrics[l].stale_reads_on_copy.get() > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert_eq!(c.metrics[l].stale_reads_on_copy.get(), 1);
    let waited = waiting.await.expect("task").expect("served");
    assert!(
        waited >= 4,
        "a local read waits for the entry: saw {waited}"
    );
    assert_eq!(heavy.await.expect("task").expect("applied"), 4);
}

/// Issue #15: a heavy entry (here one whose apply takes a second, about
/// what a DeleteRange of 250,000 keys takes) applies off the drivers'
/// threads. The members keep ticking, answering heartbeats and committing
/// while they apply it at staggered times (the leader first, the
/// followers 300 ms later, longer than an election timeout), so the
/// leader keeps its leadership and term; a command proposed meanwhile
/// commits meanwhile and applies after it. Applied on the drivers, the
/// entry would leave the leader hearing from no follower once it is done,
/// and it would step down. (A worker per driver and one for the test, as
/// each member runs on a thread of its own.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_heavy_entry_applies_off_the_driver_and_the_leader_stays() {
    let c = TestCluster::new(3, 100_000);
    let l = c.leader().await;
    c.propose_all(l, "before-", 3).await;
    for (i, slower) in c.slower_ms.iter().enumerate() {
        if i != l {
            slower.store(300, std::sync::atomic::Ordering::Relaxed);
        }
    }
    let (term, _) = c.handle(l).state();
    let mut leadership: Vec<_> = (0..3).map(|i| c.handle(i).watch_leadership()).collect();
    for w in &mut leadership {
        w.borrow_and_update();
    }
    let heavy = {
        let handle = c.handle(l).clone();
        tokio::spawn(async move { handle.propose(Bytes::from_static(b"slow:1000")).await })
    };
    // Once the leader committed the heavy entry and is applying it, a
    // light command: the core goes on while the state machine is away.
    let mut light = None;
    for _ in 0..500 {
        let status = c.handle(l).status();
        if status.applied < status.commit {
            light = c.handle(l).start(Bytes::from_static(b"light")).await.ok();
            break;
        }
        if heavy.is_finished() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let mut committed_while_away = false;
    while !heavy.is_finished() {
        let status = c.handle(l).status();
        committed_while_away |=
            light.is_some_and(|(index, _)| status.commit >= index && status.applied < index);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let heavy = heavy.await.expect("task");
    for i in 0..3 {
        c.wait_commands(i, 4).await;
    }
    // A leader left alone steps down within two election timeouts.
    tokio::time::sleep(Duration::from_millis(100)).await;
    for (i, w) in leadership.iter().enumerate() {
        assert!(
            !w.has_changed().expect("running"),
            "member {i} saw leadership change: {:?}",
            c.handle(i).status()
        );
    }
    assert_eq!(
        c.handle(l).state(),
        (term, true),
        "the leader kept its term"
    );
    assert_eq!(heavy.expect("applied"), 4);
    assert!(light.is_some(), "the leader took a proposal while applying");
    assert!(
        committed_while_away,
        "the light command committed while the heavy one applied"
    );
    let answer = c
        .handle(l)
        .propose(Bytes::from_static(b"after"))
        .await
        .expect("applied");
    assert_eq!(answer, 6, "the light command applied after the heavy one");
    for i in 0..3 {
        let commands = c.wait_commands(i, 6).await;
        assert_eq!(commands[3], Bytes::from_static(b"slow:1000"), "member {i}");
    }
}
