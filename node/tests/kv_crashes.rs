//! Abrupt faults on real processes: three `flotilla-node` children with
//! fsync on, killed with SIGKILL (no shutdown, nothing flushed on the way
//! out) and started again from their data folders, or frozen with SIGSTOP
//! and let go, while concurrent clients run puts, gets, deletes and
//! compare-and-set transactions (`put_if_absent` and its kin) on a few
//! shared keys, and puts to keys of their own. The clients' history is
//! checked for linearizability (exported per `shared/HISTORY.md` when
//! `FLOTILLA_HISTORY_DIR` is set, and always on failure), and directly for
//! acknowledged writes that were lost.
//!
//! The fault schedule is random, from `SIM_SEED` when set; a failure
//! prints the seed and the command that replays the schedule (the timing
//! of real processes is not replayed). Children are killed when a test
//! ends, however it ends, and a failing test prints the end of each
//! member's log. Every wait is bounded; nothing asserts on durations.

#![cfg(unix)]

mod common;
#[path = "common/processes.rs"]
mod processes;

use common::{Run, WAIT};
use flotilla_node::client::{CLIENT_ID_HEADER, Client, ClientConfig, SEQ_HEADER};
use flotilla_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use flotilla_proto::etcdserverpb::kv_client::KvClient;
use flotilla_proto::etcdserverpb::request_op::Request as Op;
use flotilla_proto::etcdserverpb::{Compare, PutRequest, RangeRequest, RequestOp, TxnRequest};
use flotilla_tests::linearizability::{
    Budget, History, HistoryRecorder, KvInput, KvOutput, OpKind, Operation, Outcome,
    check_and_report,
};
use processes::{ProcessCluster, ProcessOptions, channel};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tonic::transport::Channel;

/// Keys the clients share: few, so operations contend.
const KEYS: u32 = 3;
/// Concurrent clients.
const CLIENTS: u64 = 3;
/// Fault rounds; the last round of a kill run kills every member at once.
const ROUNDS: u32 = 6;

/// The seed of the fault schedule: `SIM_SEED` if set, else `default`.
fn seed(default: u64) -> u64 {
    match std::env::var("SIM_SEED") {
        Ok(s) => s.trim().parse().expect("SIM_SEED is a u64"),
        Err(_) => default,
    }
}

/// The line a failure prints: the seed and the command that replays the
/// schedule.
fn replay_hint(test: &str, seed: u64) -> String {
    format!(
        "{test}: fault schedule seed {seed}; replay it with \
         SIM_SEED={seed} cargo test -p flotilla-node --test kv_crashes -- {test} --exact"
    )
}

/// Bounded calls that move on from a dead member quickly.
fn client_config() -> ClientConfig {
    ClientConfig {
        request_timeout: Duration::from_secs(3),
        attempt_timeout: Duration::from_secs(1),
        max_attempts: 20,
        connect_timeout: Duration::from_millis(300),
        backoff_min: Duration::from_millis(10),
        backoff_max: Duration::from_millis(100),
    }
}

/// Compare-and-set through etcd's Txn, with exactly-once ids so that a
/// retry at another member (after the first one died holding the request)
/// applies at most once. Rotates through the endpoints on errors.
struct CasClient {
    channels: Vec<Channel>,
    next: usize,
    client_id: u64,
    seq: u64,
}

impl CasClient {
    fn new(endpoints: &[String], client_id: u64, first: usize) -> CasClient {
        CasClient {
            channels: endpoints.iter().map(|u| channel(u)).collect(),
            next: first % endpoints.len(),
            client_id,
            seq: 0,
        }
    }

    /// The Txn that sets `key` to `value` iff its value is `expected`
    /// (`None`: the key is absent, i.e. `put_if_absent`).
    fn txn(key: &str, expected: Option<&str>, value: &str) -> TxnRequest {
        let (target, union) = match expected {
            None => (CompareTarget::Create, TargetUnion::CreateRevision(0)),
            Some(v) => (CompareTarget::Value, TargetUnion::Value(v.into())),
        };
        TxnRequest {
            compare: vec![Compare {
                result: CompareResult::Equal as i32,
                target: target as i32,
                key: key.into(),
                range_end: Vec::new(),
                target_union: Some(union),
            }],
            success: vec![RequestOp {
                request: Some(Op::RequestPut(PutRequest {
                    key: key.into(),
                    value: value.into(),
                    ..PutRequest::default()
                })),
            }],
            failure: Vec::new(),
        }
    }

    /// Whether the swap happened; an error leaves the outcome unknown.
    async fn cas(
        &mut self,
        key: &str,
        expected: Option<&str>,
        value: &str,
    ) -> Result<bool, tonic::Status> {
        self.seq += 1;
        let txn = CasClient::txn(key, expected, value);
        let config = client_config();
        let deadline = tokio::time::Instant::now() + config.request_timeout;
        let mut last = tonic::Status::unavailable("no attempt made");
        for attempt in 1..=config.max_attempts {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                break;
            }
            let per_attempt = left.min(config.attempt_timeout);
            let mut req = tonic::Request::new(txn.clone());
            req.set_timeout(per_attempt);
            req.metadata_mut()
                .insert(CLIENT_ID_HEADER, self.client_id.into());
            req.metadata_mut().insert(SEQ_HEADER, self.seq.into());
            let mut kv = KvClient::new(self.channels[self.next].clone());
            match tokio::time::timeout(per_attempt, kv.txn(req)).await {
                Ok(Ok(r)) => return Ok(r.into_inner().succeeded),
                Ok(Err(status)) if status.code() == tonic::Code::InvalidArgument => {
                    return Err(status);
                }
                Ok(Err(status)) => last = status,
                Err(_) => last = tonic::Status::deadline_exceeded("attempt timed out"),
            }
            self.next = (self.next + 1) % self.channels.len();
            let backoff = config.backoff_min * (1 << attempt.min(4));
            tokio::time::sleep(backoff.min(config.backoff_max)).await;
        }
        Err(last)
    }
}

/// One linearizable Range of every key at `url`: key → value.
async fn read_all_at(url: &str) -> Result<BTreeMap<String, String>, tonic::Status> {
    let deadline = Duration::from_secs(2);
    let mut req = tonic::Request::new(RangeRequest {
        key: vec![0],
        range_end: vec![0],
        ..RangeRequest::default()
    });
    req.set_timeout(deadline);
    let mut kv = KvClient::new(channel(url));
    let utf8 = |b: Vec<u8>| String::from_utf8(b).expect("utf-8 key or value");
    match tokio::time::timeout(deadline, kv.range(req)).await {
        Ok(Ok(r)) => Ok(r
            .into_inner()
            .kvs
            .into_iter()
            .map(|kv| (utf8(kv.key), utf8(kv.value)))
            .collect()),
        Ok(Err(status)) => Err(status),
        Err(_) => Err(tonic::Status::deadline_exceeded("range timed out")),
    }
}

impl Run {
    /// Client `id`: random puts, gets, compare-and-sets and deletes on
    /// [`KEYS`] shared keys, and puts to keys of its own, until stopped. A write that fails may still take
    /// effect, so it is recorded as unknown; a failed read has no effect
    /// and is recorded as failed (the checker ignores it).
    async fn client(self, id: u64, endpoints: Vec<String>, seed: u64) {
        let mut rng = SmallRng::seed_from_u64(seed ^ (id + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let client = Client::new(&endpoints, client_config()).expect("client");
        let mut cas = CasClient::new(&endpoints, rng.random::<u64>().max(1), id as usize);
        // The last value this client read per key: what its compare-and-sets
        // expect when they are not put_if_absent.
        let mut seen: BTreeMap<String, Option<String>> = BTreeMap::new();
        let mut n = 0u64;
        while !self.stop.load(Ordering::Relaxed) {
            n += 1;
            let key = format!("k{}", rng.random_range(0..KEYS));
            match rng.random_range(0..20u32) {
                // Puts, a third of them to a key of their own that nothing
                // overwrites: those must all be there at the end.
                0..9 => {
                    let key = if rng.random_bool(0.3) {
                        format!("d/{id}/{n}")
                    } else {
                        key
                    };
                    let v = format!("p{id}.{n}");
                    let op =
                        self.recorder
                            .call(id, KvInput::put(key.as_str(), v.as_str()), self.now());
                    match client.put(key.as_bytes(), v.as_bytes()).await {
                        Ok(_) => self.recorder.ok(op, self.now(), None),
                        Err(_) => self.recorder.unknown(op),
                    }
                }
                9..15 => {
                    let op = self
                        .recorder
                        .call(id, KvInput::get(key.as_str()), self.now());
                    match client.get(key.as_bytes()).await {
                        Ok(v) => {
                            let v = v.map(|v| String::from_utf8(v).expect("utf-8 value"));
                            seen.insert(key.clone(), v.clone());
                            self.recorder.ok(op, self.now(), Some(KvOutput::Value(v)));
                        }
                        Err(_) => self.recorder.fail(op, self.now()),
                    }
                }
                15..18 => {
                    let v = format!("x{id}.{n}");
                    let expected = if rng.random_bool(0.5) {
                        None
                    } else {
                        seen.get(&key).cloned().flatten()
                    };
                    let input = KvInput::cas(key.as_str(), expected.clone(), v.as_str());
                    let op = self.recorder.call(id, input, self.now());
                    match cas.cas(&key, expected.as_deref(), &v).await {
                        Ok(swapped) => {
                            self.recorder
                                .ok(op, self.now(), Some(KvOutput::Succeeded(swapped)));
                        }
                        Err(_) => self.recorder.unknown(op),
                    }
                }
                _ => {
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
    }

    /// Once the cluster is calm: one linearizable read of all keys at each
    /// member, recorded as a get of every key the clients touched (client
    /// `100 + member`; one Range is one atomic read, so each get has its
    /// times). Returns each key's value, which every member must agree on.
    async fn final_reads(&self, c: &ProcessCluster) -> BTreeMap<String, Option<String>> {
        let keys: std::collections::BTreeSet<String> = self
            .recorder
            .history()
            .operations
            .into_iter()
            .map(|o| o.key)
            .collect();
        let mut seen: Vec<BTreeMap<String, Option<String>>> = Vec::new();
        for (i, url) in c.endpoints().iter().enumerate() {
            let deadline = tokio::time::Instant::now() + WAIT;
            let (call_ns, all, return_ns) = loop {
                let call_ns = self.now();
                match read_all_at(url).await {
                    Ok(all) => break (call_ns, all, self.now()),
                    Err(e) => assert!(
                        tokio::time::Instant::now() < deadline,
                        "member {i} did not serve a read within the wait: {e}"
                    ),
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            };
            let mut values = BTreeMap::new();
            for key in &keys {
                let value = all.get(key).cloned();
                let op = self
                    .recorder
                    .call(100 + i as u64, KvInput::get(key.as_str()), call_ns);
                self.recorder
                    .ok(op, return_ns, Some(KvOutput::Value(value.clone())));
                values.insert(key.clone(), value);
            }
            seen.push(values);
        }
        for key in &keys {
            let values: Vec<&Option<String>> = seen.iter().map(|m| &m[key]).collect();
            assert!(
                values.iter().all(|v| *v == values[0]),
                "the members disagree on {key} after the crashes: {values:?}"
            );
        }
        seen.swap_remove(0)
    }
}

/// Whether `o` is a write the client saw take effect.
fn acked_write(o: &Operation) -> bool {
    o.outcome == Outcome::Ok
        && match o.op {
            OpKind::Put | OpKind::Delete => true,
            OpKind::Cas => o.output.as_ref().and_then(|out| out.succeeded) == Some(true),
            OpKind::Get => false,
        }
}

/// Acknowledged writes that are neither visible at the end nor
/// overwritten. The final value of a key comes from some write (values
/// are unique; `None` comes from a delete, or from no write at all); that
/// write took effect before it returned, so an acknowledged write that was
/// sent after it returned must be visible instead. Returns one line per
/// lost write. (The linearizability check covers this and more; this one
/// names the write.)
fn lost_writes(history: &History, finals: &BTreeMap<String, Option<String>>) -> Vec<String> {
    let mut lost = Vec::new();
    for (key, last) in finals {
        let on_key: Vec<&Operation> = history
            .operations
            .iter()
            .filter(|o| &o.key == key && o.outcome != Outcome::Fail)
            .collect();
        let may_have_written = |o: &Operation| match (o.op, last) {
            (OpKind::Put, Some(v)) => o.value.as_ref() == Some(v),
            (OpKind::Cas, Some(v)) => {
                o.value.as_ref() == Some(v)
                    && o.output.as_ref().and_then(|out| out.succeeded) != Some(false)
            }
            (OpKind::Delete, None) => true,
            _ => false,
        };
        let writers: Vec<&&Operation> = on_key.iter().filter(|o| may_have_written(o)).collect();
        if last.is_some() && writers.is_empty() {
            lost.push(format!("{key}: the final value {last:?} was never written"));
            continue;
        }
        // The latest the final value can have been written; an unknown
        // outcome may take effect at any time.
        let written_by = writers
            .iter()
            .map(|o| o.return_ns.unwrap_or(u64::MAX))
            .max()
            .unwrap_or(0);
        for o in &on_key {
            if acked_write(o) && !may_have_written(o) && o.call_ns > written_by {
                lost.push(format!(
                    "{key}: acknowledged {:?} {:?} (client {}, call {} ns, return {:?} ns) is \
                     lost: the final value {last:?} was written by {} ns",
                    o.op, o.value, o.client_id, o.call_ns, o.return_ns, written_by
                ));
            }
        }
    }
    lost
}

/// What the nemesis does to a member.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    /// SIGKILL, then a restart from the data folder; the last round kills
    /// every member at once.
    Kill,
    /// SIGSTOP the leader, then SIGCONT once the others elected a new one
    /// and wrote: it wakes up believing it still leads (see
    /// [`pause_and_probe`]).
    Pause,
}

/// Concurrent clients while the nemesis hits a member [`ROUNDS`] times
/// with `fault` (a kill hits the leader about half the time); then no
/// acknowledged write may be lost and the history must be linearizable.
async fn run_with_faults(test: &str, default_seed: u64, options: ProcessOptions, fault: Fault) {
    let seed = seed(default_seed);
    let hint = replay_hint(test, seed);
    let mut c = ProcessCluster::start(options, hint.clone()).await;
    let run = Run::new();
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|id| tokio::spawn(run.clone().client(id, c.endpoints(), seed)))
        .collect();
    let mut rng = SmallRng::seed_from_u64(seed);
    let n = c.members.len();
    let mut acked_before_last_round = 0;
    for round in 0..ROUNDS {
        tokio::time::sleep(Duration::from_millis(rng.random_range(200..700))).await;
        c.assert_running();
        let down = Duration::from_millis(rng.random_range(100..600));
        let victim = if rng.random_bool(0.5) {
            c.leader().await.unwrap_or_else(|| rng.random_range(0..n))
        } else {
            rng.random_range(0..n)
        };
        match fault {
            Fault::Kill if round + 1 == ROUNDS => {
                acked_before_last_round = count_acked_writes(&run.recorder.history());
                for i in 0..n {
                    c.kill(i);
                }
                tokio::time::sleep(down).await;
                c.restart_stopped().await;
            }
            Fault::Kill => {
                c.kill(victim);
                tokio::time::sleep(down).await;
                c.restart(victim).await;
            }
            Fault::Pause => {
                acked_before_last_round = count_acked_writes(&run.recorder.history());
                let leader = c.leader().await.unwrap_or(victim);
                pause_and_probe(&mut c, &run, leader, round, down).await;
            }
        }
    }
    c.wait_ready().await;
    // A calm spell, so the clients' last writes settle.
    tokio::time::sleep(Duration::from_millis(500)).await;
    run.stop.store(true, Ordering::Relaxed);
    for t in tasks {
        tokio::time::timeout(WAIT, t)
            .await
            .expect("a client stops within the wait")
            .expect("client task");
    }
    c.assert_running();
    let finals = run.final_reads(&c).await;
    let history = run.recorder.history();
    let summary = summarize(&history);
    eprintln!("{test}: {summary}");
    assert!(
        acked_before_last_round > 0,
        "no write was acknowledged before the last fault: the run tested nothing ({summary})"
    );
    let lost = lost_writes(&history, &finals);
    assert!(
        lost.is_empty(),
        "{hint}\nacknowledged writes were lost:\n{}",
        lost.join("\n")
    );
    let budget = Budget {
        wall_time_max: Some(Duration::from_secs(20)),
        ..Budget::default()
    };
    let report = check_and_report(&history, budget, test, seed).expect("a well-formed history");
    assert!(
        report.is_ok(),
        "{hint}\nthe history is not linearizable ({summary})\n{report}"
    );
}

/// The key only [`pause_and_probe`] writes.
const PROBE_KEY: &str = "probe";

/// Pauses the leader, waits for the others to elect a new one and write
/// [`PROBE_KEY`] through it, then sends linearizable reads of the key to
/// the paused member (they wait in its sockets) and lets it go. It wakes
/// up believing it leads, with the lease it had; those reads began after
/// the new write was acknowledged, so each must see it (or fail): the old
/// value is a stale read. Everything is recorded in the history (client
/// 200 writes, client 201 reads).
async fn pause_and_probe(
    c: &mut ProcessCluster,
    run: &Run,
    leader: usize,
    round: u32,
    down: Duration,
) {
    let old_value = (round > 0).then(|| format!("v{round}"));
    let new_value = format!("v{}", round + 1);
    c.pause(leader);
    let new_leader = common::eventually("a new leader while the old one is paused", || async {
        c.leader_other_than(Some(leader)).await
    })
    .await;
    let url = c.members[new_leader].url();
    let op = run
        .recorder
        .call(200, KvInput::put(PROBE_KEY, new_value.as_str()), run.now());
    common::eventually("the probe write at the new leader", || {
        put_at(
            &url,
            PROBE_KEY,
            &new_value,
            (0x9e0b_e000 + u64::from(round), 1),
        )
    })
    .await;
    run.recorder.ok(op, run.now(), None);
    let paused_url = c.members[leader].url();
    let probes: Vec<_> = (0..PROBE_READS)
        .map(|_| {
            let url = paused_url.clone();
            let run = run.clone();
            tokio::spawn(async move {
                let op = run.recorder.call(201, KvInput::get(PROBE_KEY), run.now());
                match read_all_at(&url).await {
                    Ok(all) => {
                        let v = all.get(PROBE_KEY).cloned();
                        run.recorder
                            .ok(op, run.now(), Some(KvOutput::Value(v.clone())));
                        Some(v)
                    }
                    Err(_) => {
                        run.recorder.fail(op, run.now());
                        None
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(down).await;
    c.resume(leader);
    for probe in probes {
        let read = tokio::time::timeout(WAIT, probe)
            .await
            .expect("a probe ends within the wait")
            .expect("probe task");
        let Some(read) = read else {
            continue;
        };
        assert!(
            read.as_deref() == Some(new_value.as_str()),
            "{}\nstale read: member {leader}, paused while it led and let go after member \
             {new_leader} was elected and {PROBE_KEY}={new_value} acknowledged, answered a \
             linearizable read sent after that with {read:?} (the value before: {old_value:?})",
            c.replay_hint
        );
    }
}

/// Linearizable reads [`pause_and_probe`] sends to the paused member.
const PROBE_READS: usize = 4;

/// One Put with exactly-once ids at `url`: `Some` once acknowledged.
async fn put_at(url: &str, key: &str, value: &str, ids: (u64, u64)) -> Option<()> {
    let deadline = Duration::from_secs(1);
    let mut req = tonic::Request::new(PutRequest {
        key: key.into(),
        value: value.into(),
        ..PutRequest::default()
    });
    req.set_timeout(deadline);
    req.metadata_mut().insert(CLIENT_ID_HEADER, ids.0.into());
    req.metadata_mut().insert(SEQ_HEADER, ids.1.into());
    let mut kv = KvClient::new(channel(url));
    tokio::time::timeout(deadline, kv.put(req))
        .await
        .ok()?
        .ok()
        .map(|_| ())
}

/// Members killed with SIGKILL and restarted from disk, round after round,
/// ending with every member killed at once; ReadIndex reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn crash_restart_linearizability() {
    run_with_faults(
        "crash_restart_linearizability",
        0xf107_c4a5,
        ProcessOptions::default(),
        Fault::Kill,
    )
    .await;
}

/// The same crashes with lease reads: a restarted member stays quiet for
/// an election timeout, so it cannot help depose a leader whose lease it
/// acknowledged before dying.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn crash_restart_lease_reads() {
    run_with_faults(
        "crash_restart_lease_reads",
        0xf107_c4a6,
        ProcessOptions {
            read_mode: "lease",
            ..ProcessOptions::default()
        },
        Fault::Kill,
    )
    .await;
}

/// The leader frozen (SIGSTOP) long enough for the others to elect a new
/// one and write, then let go; ReadIndex reads. The woken leader must
/// confirm its leadership with a heartbeat round before it answers, and
/// learns of the new term instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pause_linearizability() {
    run_with_faults(
        "pause_linearizability",
        0xf107_c4a8,
        ProcessOptions::default(),
        Fault::Pause,
    )
    .await;
}

/// [`pause_linearizability`] with lease reads. A leader lease is only as
/// good as the clock that times it: the woken leader must count the time
/// it was frozen against its lease. (The driver ticks its core once per
/// tick interval elapsed, not once per timer wake-up; with tokio's timer
/// alone, ticks missed while stopped were never counted and this test
/// found stale reads.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pause_lease_reads() {
    run_with_faults(
        "pause_lease_reads",
        0xf107_c4a7,
        ProcessOptions {
            read_mode: "lease",
            ..ProcessOptions::default()
        },
        Fault::Pause,
    )
    .await;
}

fn count_acked_writes(history: &History) -> usize {
    history.operations.iter().filter(|o| acked_write(o)).count()
}

/// Operation counts, for the log and failure messages.
fn summarize(history: &History) -> String {
    let count = |f: &dyn Fn(&Operation) -> bool| history.operations.iter().filter(|o| f(o)).count();
    format!(
        "{} operations: {} acknowledged writes, {} writes of unknown outcome, {} reads",
        history.operations.len(),
        count_acked_writes(history),
        count(&|o| o.op != OpKind::Get && o.outcome == Outcome::Unknown),
        count(&|o| o.op == OpKind::Get && o.outcome == Outcome::Ok),
    )
}

#[cfg(test)]
mod lost_writes_tests {
    use super::*;

    fn finals(pairs: &[(&str, Option<&str>)]) -> BTreeMap<String, Option<String>> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.map(str::to_string)))
            .collect()
    }

    #[test]
    fn an_acknowledged_write_that_vanished_is_named() {
        let r = HistoryRecorder::new();
        let a = r.call(0, KvInput::put("k", "a"), 10);
        r.ok(a, 20, None);
        let b = r.call(1, KvInput::put("k", "b"), 30);
        r.ok(b, 40, None);
        let own = r.call(1, KvInput::put("d/1/1", "x"), 50);
        r.ok(own, 60, None);
        let h = r.history();
        // "b" was sent after "a" returned: seeing "a" at the end loses "b".
        let lost = lost_writes(&h, &finals(&[("k", Some("a")), ("d/1/1", Some("x"))]));
        assert_eq!(lost.len(), 1, "{lost:?}");
        assert!(lost[0].contains("\"b\""), "{lost:?}");
        // An acknowledged key of its own that is gone.
        let lost = lost_writes(&h, &finals(&[("k", Some("b")), ("d/1/1", None)]));
        assert_eq!(lost.len(), 1, "{lost:?}");
        assert!(lost[0].starts_with("d/1/1"), "{lost:?}");
        // A value nobody wrote.
        let lost = lost_writes(&h, &finals(&[("k", Some("zz")), ("d/1/1", Some("x"))]));
        assert_eq!(lost.len(), 1, "{lost:?}");
        assert!(lost[0].contains("never written"), "{lost:?}");
        assert!(lost_writes(&h, &finals(&[("k", Some("b")), ("d/1/1", Some("x"))])).is_empty());
    }

    #[test]
    fn concurrent_and_unknown_writes_may_win() {
        let r = HistoryRecorder::new();
        let a = r.call(0, KvInput::put("k", "a"), 10);
        let b = r.call(1, KvInput::put("k", "b"), 15);
        r.ok(a, 30, None);
        r.ok(b, 35, None);
        // Overlapping: either may be last.
        let h = r.history();
        assert!(lost_writes(&h, &finals(&[("k", Some("a"))])).is_empty());
        assert!(lost_writes(&h, &finals(&[("k", Some("b"))])).is_empty());
        // A write of unknown outcome may take effect after everything.
        let c = r.call(2, KvInput::put("k", "c"), 20);
        r.unknown(c);
        let d = r.call(0, KvInput::put("k", "d"), 40);
        r.ok(d, 50, None);
        assert!(lost_writes(&r.history(), &finals(&[("k", Some("c"))])).is_empty());
        // A delete that returned before an acknowledged put cannot win.
        let r = HistoryRecorder::new();
        let del = r.call(0, KvInput::delete("k"), 10);
        r.ok(del, 20, None);
        let p = r.call(1, KvInput::put("k", "p"), 30);
        r.ok(p, 40, None);
        assert_eq!(lost_writes(&r.history(), &finals(&[("k", None)])).len(), 1);
    }
}
