//! The client API under faults, over real gRPC on loopback (the harness is
//! in `common`): partitions made with each member's transport fault layer,
//! members killed and restarted from their data folders, exactly-once
//! retries, and client histories checked for linearizability (exported per
//! `shared/HISTORY.md` when `FLOTILLA_HISTORY_DIR` is set). Every wait is
//! bounded; nothing asserts on durations. The random fault schedules take
//! their seed from `SIM_SEED` when it is set.

mod common;

use common::*;
use flotilla_client::{CLIENT_ID_HEADER, Client, ClientConfig, SEQ_HEADER};
use flotilla_node::config::ReadModeSetting;
use flotilla_proto::etcdserverpb::kv_client::KvClient;
use flotilla_proto::etcdserverpb::{PutResponse, RangeResponse};
use flotilla_raft::Role;
use flotilla_tests::linearizability::{
    Budget, KvInput, KvOutput, OpKind, Outcome, check_and_report,
};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::sync::atomic::Ordering;
use std::time::Duration;
use tonic::transport::Channel;

/// How long a request to a member that should not answer is given.
const SHORT: Duration = Duration::from_millis(700);

/// The seed of a random fault schedule: `SIM_SEED` if set, else `default`.
fn seed(default: u64) -> u64 {
    match std::env::var("SIM_SEED") {
        Ok(s) => s.trim().parse().expect("SIM_SEED is a u64"),
        Err(_) => default,
    }
}

/// A lazily connected channel to `url` that gives up connecting quickly.
fn lazy_channel(url: &str) -> Channel {
    Channel::from_shared(url.to_string())
        .expect("url")
        .connect_timeout(SHORT)
        .connect_lazy()
}

/// One Put to the member at `url`, with exactly-once ids if given, bounded
/// by `deadline` (sent as the gRPC timeout and enforced here too).
async fn put_at(
    url: &str,
    key: &str,
    value: &str,
    ids: Option<(u64, u64)>,
    deadline: Duration,
) -> Result<PutResponse, tonic::Status> {
    let mut req = tonic::Request::new(put_req(key, value));
    req.set_timeout(deadline);
    if let Some((client, seq)) = ids {
        req.metadata_mut().insert(CLIENT_ID_HEADER, client.into());
        req.metadata_mut().insert(SEQ_HEADER, seq.into());
    }
    let mut kv = KvClient::new(lazy_channel(url));
    match tokio::time::timeout(deadline + SHORT, kv.put(req)).await {
        Ok(r) => r.map(|r| r.into_inner()),
        Err(_) => Err(tonic::Status::deadline_exceeded("put timed out")),
    }
}

/// One Range of `key` at the member at `url`, bounded by `deadline`.
async fn get_at(
    url: &str,
    key: &str,
    serializable: bool,
    deadline: Duration,
) -> Result<RangeResponse, tonic::Status> {
    let mut req = get_req(key);
    req.serializable = serializable;
    let mut req = tonic::Request::new(req);
    req.set_timeout(deadline);
    let mut kv = KvClient::new(lazy_channel(url));
    match tokio::time::timeout(deadline + SHORT, kv.range(req)).await {
        Ok(r) => r.map(|r| r.into_inner()),
        Err(_) => Err(tonic::Status::deadline_exceeded("range timed out")),
    }
}

fn value(r: &RangeResponse) -> Option<String> {
    r.kvs
        .first()
        .map(|kv| String::from_utf8_lossy(&kv.value).into_owned())
}

/// Retries a Put at `url` until it succeeds, for at most [`WAIT`].
async fn put_eventually(url: &str, key: &str, value: &str) -> PutResponse {
    eventually("a put to succeed", || async {
        put_at(url, key, value, None, Duration::from_secs(2))
            .await
            .ok()
    })
    .await
}

/// Waits until a linearizable read of `key` at `url` gives `want`.
async fn read_eventually(url: &str, key: &str, want: &str) {
    eventually("a linearizable read of the new value", || async {
        let r = get_at(url, key, false, Duration::from_secs(1)).await.ok()?;
        (value(&r).as_deref() == Some(want)).then_some(())
    })
    .await;
}

/// Linearizable reads of `k` at the cut-off `minority`, started every few
/// milliseconds after the majority's new write was acknowledged, for as
/// long as the member still believes it leads (bounded by
/// [`PROBE_READS`]): each is strictly after that write, so one that answers
/// at all (with `old`, the only value the minority has) is stale. This is
/// the window in which a leader lease that outlived the election would
/// show; a follower is probed a few times as well.
async fn probe_minority_reads(c: &Cluster, minority: usize, old: &str) {
    let url = c.url(minority);
    let mut probes = Vec::new();
    for n in 0..PROBE_READS {
        let url = url.clone();
        probes.push(tokio::spawn(async move {
            get_at(&url, "k", false, Duration::from_millis(300)).await
        }));
        let leads = c.nodes[minority].raft().status().role == Role::Leader;
        if !leads && n >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for probe in probes {
        let read = tokio::time::timeout(WAIT, probe)
            .await
            .expect("a probe ends within the wait")
            .expect("probe task");
        assert!(
            read.is_err(),
            "the cut-off member {minority} served a linearizable read after the majority \
             overwrote {old:?}: {:?}",
            read.map(|r| value(&r))
        );
    }
}

/// Most reads [`probe_minority_reads`] sends.
const PROBE_READS: usize = 60;

/// Cuts `minority` off, checks that it can neither write nor serve a
/// linearizable read while the others go on, heals, and checks that it
/// catches up. `round` makes the values of each call distinct.
async fn check_minority(c: &Cluster, minority: usize, round: u32) {
    let majority: Vec<usize> = (0..c.nodes.len()).filter(|i| *i != minority).collect();
    let old = format!("old{round}");
    let new = format!("new{round}");
    let leader = c.leader();
    put_eventually(&c.url(leader), "k", &old).await;
    // Every member has applied the old value before the cut.
    for i in 0..c.nodes.len() {
        read_eventually(&c.url(i), "k", &old).await;
    }
    c.isolate(minority);
    // The majority elects (or keeps) a leader and goes on writing.
    let new_leader = c.leader_among(&majority).await;
    put_eventually(&c.url(new_leader), "k", &new).await;
    // Right after the majority's write, while a cut-off leader may still
    // believe it leads (until check-quorum deposes it), every linearizable
    // read there must be refused: it can only know the old value.
    probe_minority_reads(c, minority, &old).await;
    // The minority has stopped believing in the majority's leader: before
    // that it would forward writes over the client network, which is not a
    // minority write.
    let majority_leader_id = c.id(new_leader);
    eventually("the minority to lose the leader", || async {
        (c.nodes[minority].raft().status().leader != majority_leader_id).then_some(())
    })
    .await;
    let url = c.url(minority);
    let write = put_at(&url, "k", "minority", None, SHORT).await;
    assert!(
        write.is_err(),
        "the cut-off member {minority} accepted a write: {write:?}"
    );
    let read = get_at(&url, "k", false, SHORT).await;
    assert!(
        read.is_err(),
        "the cut-off member {minority} served a linearizable read: {:?}",
        read.map(|r| value(&r))
    );
    // Its own (serializable) view is the stale one: the refusal above is
    // what keeps a linearizable read from returning it.
    let stale = get_at(&url, "k", true, SHORT)
        .await
        .expect("serializable read");
    assert_eq!(value(&stale).as_deref(), Some(old.as_str()));
    // The majority serves linearizable reads, on the follower too.
    for i in &majority {
        let r = get_at(&c.url(*i), "k", false, Duration::from_secs(5))
            .await
            .expect("majority read");
        assert_eq!(value(&r).as_deref(), Some(new.as_str()), "member {i}");
    }
    c.heal();
    read_eventually(&url, "k", &new).await;
    c.wait_ready().await;
    // The refused write never took effect anywhere.
    for i in 0..c.nodes.len() {
        read_eventually(&c.url(i), "k", &new).await;
    }
}

/// A minority (one member of three) can neither write nor serve a stale
/// linearizable read; the majority goes on; after healing the minority
/// catches up. Once with a follower cut off, twice with the leader (the
/// race between a new election and the old leader's step-down is where a
/// stale read would show).
async fn one_partition_with(read_mode: ReadModeSetting) {
    let c = Cluster::start_read_mode(read_mode).await;
    check_minority(&c, c.follower(), 1).await;
    check_minority(&c, c.leader(), 2).await;
    check_minority(&c, c.leader(), 3).await;
    c.shutdown().await;
}

/// [`one_partition_with`], reads confirmed by ReadIndex.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_partition() {
    one_partition_with(ReadModeSetting::Safe).await;
}

/// [`one_partition_with`], reads served from the leader's lease: the
/// deposed leader's lease must have run out before the majority elects
/// another, so its linearizable reads are refused, not stale.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_partition_lease_reads() {
    one_partition_with(ReadModeSetting::Lease).await;
}

/// A Put whose response is lost and which is sent again with the same
/// `flotilla-client-id` / `flotilla-seq` applies once: at another member,
/// and after a partition made the first attempt time out.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dedup() {
    let c = Cluster::start().await;
    let client = 4242;
    let long = Duration::from_secs(5);
    // 1. Answered at the leader, the answer "lost", sent again through a
    // follower (which forwards it with the ids).
    let first = put_at(&c.url(c.leader()), "d1", "a", Some((client, 1)), long)
        .await
        .expect("put");
    let again = put_at(&c.url(c.follower()), "d1", "a", Some((client, 1)), long)
        .await
        .expect("retried put");
    let rev = |h: &Option<flotilla_proto::etcdserverpb::ResponseHeader>| {
        h.as_ref().expect("header").revision
    };
    assert_eq!(rev(&again.header), rev(&first.header), "the same revision");
    let r = get_at(&c.url(c.leader()), "d1", false, long)
        .await
        .expect("range");
    assert_eq!(r.kvs[0].version, 1, "applied once");
    assert_eq!(rev(&r.header), rev(&first.header), "no revision since");

    // 2. The leader is cut off holding the put: the attempt times out
    // (the client cannot know whether it applied), then the client retries
    // at the new leader, and once more at the old one after healing.
    let old = c.leader();
    c.isolate(old);
    let lost = put_at(&c.url(old), "d2", "b", Some((client, 2)), SHORT).await;
    assert!(lost.is_err(), "a cut-off leader committed: {lost:?}");
    let majority: Vec<usize> = (0..c.nodes.len()).filter(|i| *i != old).collect();
    let new = c.leader_among(&majority).await;
    let retried = eventually("the retry to succeed", || async {
        put_at(&c.url(new), "d2", "b", Some((client, 2)), long)
            .await
            .ok()
    })
    .await;
    c.heal();
    c.wait_ready().await;
    let third = eventually("the second retry to succeed", || async {
        put_at(&c.url(old), "d2", "b", Some((client, 2)), long)
            .await
            .ok()
    })
    .await;
    assert_eq!(
        rev(&third.header),
        rev(&retried.header),
        "the same revision"
    );
    assert_eq!(rev(&retried.header), rev(&first.header) + 1, "one revision");
    for i in 0..c.nodes.len() {
        let r = get_at(&c.url(i), "d2", false, long).await.expect("range");
        assert_eq!(value(&r).as_deref(), Some("b"));
        assert_eq!(r.kvs[0].version, 1, "applied once (member {i})");
        assert_eq!(r.kvs[0].mod_revision, rev(&retried.header));
        assert_eq!(rev(&r.header), rev(&retried.header), "no revision since");
    }

    // 3. The client gives up on each first attempt after 0–8 ms (its
    // answer lost whether or not it applied) and retries at once, at
    // another member, so the retry may race the original through the log.
    let base = rev(&retried.header);
    let puts = 10u64;
    for i in 0..puts {
        let key = format!("d3/{i}");
        let ids = Some((client, 3 + i));
        let abandon = Duration::from_millis(2 * (i % 5));
        let leader_url = c.url(c.leader());
        let _ = tokio::time::timeout(abandon, put_at(&leader_url, &key, "c", ids, long)).await;
        let at = c.url(i as usize % c.nodes.len());
        eventually("the retry to succeed", || async {
            put_at(&at, &key, "c", ids, long).await.ok()
        })
        .await;
    }
    for i in 0..puts {
        let r = get_at(&c.url(c.leader()), &format!("d3/{i}"), false, long)
            .await
            .expect("range");
        assert_eq!(r.kvs[0].version, 1, "d3/{i} applied once");
        assert_eq!(rev(&r.header), base + puts as i64, "one revision per put");
    }
    c.shutdown().await;
}

/// A client configuration for runs with faults: short attempts so a call
/// moves on from a cut-off member quickly, bounded calls.
fn faulty_client_config() -> ClientConfig {
    ClientConfig {
        request_timeout: Duration::from_secs(2),
        attempt_timeout: Duration::from_millis(400),
        max_attempts: 20,
        connect_timeout: Duration::from_millis(300),
        backoff_min: Duration::from_millis(10),
        backoff_max: Duration::from_millis(100),
    }
}

/// Acknowledged writes, and answered reads, that a history must hold to be
/// worth checking (a passing run on this 2-core machine holds hundreds of
/// each; the floor only tells a run of failures from a real one).
const MIN_ANSWERED: usize = 20;

impl Run {
    /// Client `id` doing random puts, gets and (if `deletes`) deletes on a
    /// few keys until stopped, recording every call. A failed write may
    /// still take effect, so it is recorded as unknown; a failed read has
    /// no effect and is left out.
    async fn client(self, id: u64, client: Client, seed: u64, deletes: bool) {
        let mut rng = SmallRng::seed_from_u64(seed ^ (id + 1).wrapping_mul(0x9e37_79b9));
        let mut n = 0u64;
        while !self.stop.load(Ordering::Relaxed) {
            n += 1;
            let key = format!("k{}", rng.random_range(0..3u32));
            let kind = rng.random_range(0..if deletes { 10u32 } else { 9 });
            if kind < 4 {
                let v = format!("c{id}.{n}");
                let op = self
                    .recorder
                    .call(id, KvInput::put(key.as_str(), v.as_str()), self.now());
                match client.put(key.as_bytes(), v.as_bytes()).await {
                    Ok(_) => self.recorder.ok(op, self.now(), None),
                    Err(_) => self.recorder.unknown(op),
                }
            } else if kind < 9 {
                let op = self
                    .recorder
                    .call(id, KvInput::get(key.as_str()), self.now());
                match client.get(key.as_bytes()).await {
                    Ok(v) => {
                        let v = v.map(|v| String::from_utf8(v).expect("utf-8 value"));
                        self.recorder.ok(op, self.now(), Some(KvOutput::Value(v)));
                    }
                    Err(_) => self.recorder.fail(op, self.now()),
                }
            } else {
                let op = self
                    .recorder
                    .call(id, KvInput::delete(key.as_str()), self.now());
                match client.delete(key.as_bytes()).await {
                    Ok(_) => self.recorder.ok(op, self.now(), None),
                    Err(_) => self.recorder.unknown(op),
                }
            }
        }
    }

    /// Stops the clients, waits for them (bounded), and checks the history.
    async fn finish(self, tasks: Vec<tokio::task::JoinHandle<()>>, test: &str, seed: u64) {
        self.stop.store(true, Ordering::Relaxed);
        for t in tasks {
            tokio::time::timeout(WAIT, t)
                .await
                .expect("a client stops within the wait")
                .expect("client task");
        }
        let history = self.recorder.history();
        // These histories take milliseconds to check; the cap only keeps a
        // pathological one from holding the suite up.
        let budget = Budget {
            wall_time_max: Some(Duration::from_secs(20)),
            ..Budget::default()
        };
        // Failed reads are left out and failed writes become unknown, so a
        // run in which every request failed would check as linearizable:
        // ask for operations with a known outcome, writes and reads both.
        let answered = |read: bool| {
            history
                .operations
                .iter()
                .filter(|o| o.outcome == Outcome::Ok && (o.op == OpKind::Get) == read)
                .count()
        };
        let (writes, reads) = (answered(false), answered(true));
        eprintln!(
            "{test}: {} operations, {writes} acknowledged writes, {reads} answered reads",
            history.operations.len()
        );
        assert!(
            writes >= MIN_ANSWERED && reads >= MIN_ANSWERED,
            "{test}: only {writes} acknowledged writes and {reads} answered reads of {} \
             operations (at least {MIN_ANSWERED} of each wanted): the history proves little \
             (seed {seed})",
            history.operations.len()
        );
        let report = check_and_report(&history, budget, test, seed).expect("a well-formed history");
        assert!(
            report.is_ok(),
            "{test}: the history is not linearizable (seed {seed}; replay the fault schedule: \
             SIM_SEED={seed} cargo test -p flotilla-node --test kv_faults -- {test} --exact)\n{report}"
        );
    }
}

/// One client (the Rust client over every endpoint) doing puts and gets
/// on a few keys while the test cuts random members off and heals, round
/// after round; the history is checked for linearizability.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_partitions_one_client() {
    let seed = seed(0xf107_0001);
    let c = Cluster::start().await;
    let run = Run::new();
    let client = Client::new(&c.endpoints(), faulty_client_config()).expect("client");
    let tasks = vec![tokio::spawn(run.clone().client(0, client, seed, false))];
    let mut rng = SmallRng::seed_from_u64(seed);
    for _ in 0..8 {
        let n = c.nodes.len();
        match rng.random_range(0..5u32) {
            // One member, maybe the leader, on its own.
            0 | 1 => c.isolate(rng.random_range(0..n)),
            2 => c.isolate(c.try_leader().unwrap_or(0)),
            // Nobody can reach anybody: no quorum anywhere.
            3 => c.partition(&[]),
            _ => c.heal(),
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(200..500))).await;
        c.heal();
        tokio::time::sleep(Duration::from_millis(rng.random_range(50..250))).await;
    }
    // A calm spell at the end, so the last writes settle.
    c.wait_ready().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    run.finish(tasks, "many_partitions_one_client", seed).await;
    c.shutdown().await;
}

/// Several concurrent clients doing puts, gets and deletes on a few keys
/// while members are stopped and restarted from disk and cut off; the
/// history is exported and checked for linearizability. `test` names the
/// calling test in the report and the replay command.
async fn linearizability_with(read_mode: ReadModeSetting, test: &str) {
    let seed = seed(0xf107_0002);
    let mut c = Cluster::start_read_mode(read_mode).await;
    let run = Run::new();
    let mut tasks = Vec::new();
    for id in 0..4 {
        let client = Client::new(&c.endpoints(), faulty_client_config()).expect("client");
        tasks.push(tokio::spawn(run.clone().client(id, client, seed, true)));
    }
    let mut rng = SmallRng::seed_from_u64(seed);
    for round in 0..6 {
        let n = c.nodes.len();
        match round % 3 {
            // Kill a member (the leader now and then) and restart it from
            // its data folder.
            0 => {
                let victim = if rng.random_bool(0.5) {
                    c.try_leader().unwrap_or(0)
                } else {
                    rng.random_range(0..n)
                };
                let down = Duration::from_millis(rng.random_range(100..400));
                c.restart(victim, down).await;
            }
            // Cut a member off.
            1 => c.isolate(rng.random_range(0..n)),
            // Cut the leader off.
            _ => c.isolate(c.try_leader().unwrap_or(0)),
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(200..500))).await;
        c.heal();
        tokio::time::sleep(Duration::from_millis(rng.random_range(50..250))).await;
    }
    c.wait_ready().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    run.finish(tasks, test, seed).await;
    c.shutdown().await;
}

/// [`linearizability_with`], reads confirmed by ReadIndex.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn linearizability() {
    linearizability_with(ReadModeSetting::Safe, "linearizability").await;
}

/// [`linearizability_with`], reads served from the leader's lease (a
/// member restarted from disk stays quiet for an election timeout, so it
/// cannot help depose a leader whose lease it acknowledged).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn linearizability_lease_reads() {
    linearizability_with(ReadModeSetting::Lease, "linearizability_lease_reads").await;
}
