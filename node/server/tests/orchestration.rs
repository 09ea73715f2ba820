//! The node under an orchestrator, with real `flotilla-node` processes
//! (fsync on): SIGTERM of the leader under a write load (leadership handed
//! over, nothing acknowledged lost), members that know each other by host
//! names which do not resolve yet at start and later move to another
//! address, a failed fsync that ends the process with a non-zero exit, a
//! corrupt data directory refused at start, and a member down for a moment
//! that catches up from the log rather than a snapshot.
//!
//! Children are killed when a test ends, however it ends; a failing test
//! prints the end of each member's log. Waits are bounded; durations are
//! printed, never asserted.

#![cfg(unix)]

#[path = "common/processes.rs"]
mod processes;

use flotilla_client::{Client, ClientConfig};
use flotilla_proto::etcdserverpb::kv_client::KvClient;
use flotilla_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use flotilla_proto::etcdserverpb::{PutRequest, RangeRequest, StatusRequest};
use processes::{PROCESS_WAIT, ProcessCluster, ProcessOptions, channel, status_at};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn hint(test: &str) -> String {
    format!("replay: cargo test -p flotilla-node --test orchestration -- {test} --exact")
}

/// Bounded calls that move on from a stopped member quickly.
fn client_config() -> ClientConfig {
    ClientConfig {
        request_timeout: Duration::from_secs(5),
        attempt_timeout: Duration::from_secs(1),
        max_attempts: 40,
        connect_timeout: Duration::from_millis(300),
        backoff_min: Duration::from_millis(5),
        backoff_max: Duration::from_millis(100),
    }
}

/// Polls `f` until it gives `Some`, for at most [`PROCESS_WAIT`].
async fn eventually<T, F: Future<Output = Option<T>>>(what: &str, mut f: impl FnMut() -> F) -> T {
    let deadline = tokio::time::Instant::now() + PROCESS_WAIT;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The Raft term member `url` is in, if it answers.
async fn term_at(url: &str) -> Option<u64> {
    let mut req = tonic::Request::new(StatusRequest {});
    req.set_timeout(Duration::from_millis(500));
    let s = MaintenanceClient::new(channel(url))
        .status(req)
        .await
        .ok()?
        .into_inner();
    Some(s.raft_term)
}

/// The member that leads now, waiting (bounded) for one.
async fn leader(c: &ProcessCluster) -> usize {
    eventually("a leader", || c.leader()).await
}

/// One put to the member at `url` (it forwards to whoever leads):
/// whether it was acknowledged by a member already in a term after
/// `old_term`, that is, committed under a new leader. A put the old leader
/// still took before it handed over answers in the old term and does not
/// count.
async fn put_in_new_term(url: &str, key: String, old_term: u64) -> bool {
    let mut req = tonic::Request::new(PutRequest {
        key: key.into_bytes(),
        value: b"probe".to_vec(),
        ..PutRequest::default()
    });
    req.set_timeout(Duration::from_millis(250));
    let mut kv = KvClient::new(channel(url));
    match tokio::time::timeout(Duration::from_millis(300), kv.put(req)).await {
        Ok(Ok(r)) => r
            .into_inner()
            .header
            .is_some_and(|h| h.raft_term > old_term),
        _ => false,
    }
}

/// Every key and value at `url`, read linearizably.
async fn read_all(url: &str) -> Option<BTreeMap<Vec<u8>, Vec<u8>>> {
    let mut req = tonic::Request::new(RangeRequest {
        key: vec![0],
        range_end: vec![0],
        ..RangeRequest::default()
    });
    req.set_timeout(Duration::from_secs(2));
    let r = KvClient::new(channel(url)).range(req).await.ok()?;
    Some(
        r.into_inner()
            .kvs
            .into_iter()
            .map(|kv| (kv.key, kv.value))
            .collect(),
    )
}

/// Writers putting keys of their own through the whole cluster until
/// stopped; what was acknowledged, key → value.
struct Load {
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<BTreeMap<String, String>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(endpoints: &[String], writers: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(BTreeMap::new()));
        let tasks = (0..writers)
            .map(|w| {
                let client = Client::new(endpoints, client_config()).expect("client");
                let (stop, acked) = (stop.clone(), acked.clone());
                tokio::spawn(async move {
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        n += 1;
                        let (key, value) = (format!("w{w}/{n}"), format!("v{n}"));
                        if client.put(key.as_bytes(), value.as_bytes()).await.is_ok() {
                            acked.lock().expect("lock").insert(key, value);
                        }
                    }
                })
            })
            .collect();
        Load { stop, acked, tasks }
    }

    /// Stops the writers; what they had acknowledged.
    async fn finish(self) -> BTreeMap<String, String> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.expect("writer");
        }
        std::mem::take(&mut *self.acked.lock().expect("lock"))
    }
}

/// Checks that every acknowledged write is at every member.
async fn assert_all_there(c: &ProcessCluster, acked: &BTreeMap<String, String>) {
    for (i, url) in c.endpoints().iter().enumerate() {
        let all = eventually("a linearizable read of every key", || read_all(url)).await;
        for (key, value) in acked {
            assert_eq!(
                all.get(key.as_bytes()).map(Vec::as_slice),
                Some(value.as_bytes()),
                "member {i} lacks acknowledged write {key}"
            );
        }
    }
}

/// SIGTERM of the leader, as Kubernetes stops a pod, while writers keep
/// putting: the leader hands leadership to the most caught-up voter
/// (TimeoutNow, so no election timeout is waited out), then exits 0; no
/// acknowledged write is lost. Prints the time from the signal to the
/// first write the new leader accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_of_the_leader_under_load_hands_over_and_loses_nothing() {
    let test = "sigterm_of_the_leader_under_load_hands_over_and_loses_nothing";
    let mut c = ProcessCluster::start(ProcessOptions::default(), hint(test)).await;
    let load = Load::start(&c.endpoints(), 4);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let old = leader(&c).await;
    let old_term = term_at(&c.members[old].url()).await.expect("leader's term");
    let others: Vec<String> = (0..3)
        .filter(|i| *i != old)
        .map(|i| c.members[i].url())
        .collect();
    // Puts through the other members, counted once one is acknowledged in
    // a later term than the old leader's.
    let probe = tokio::spawn(async move {
        let deadline = Instant::now() + PROCESS_WAIT;
        let mut n = 0u64;
        while Instant::now() < deadline {
            for url in &others {
                n += 1;
                if put_in_new_term(url, format!("probe/{n}"), old_term).await {
                    return Some(Instant::now());
                }
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        None
    });
    let signalled = Instant::now();
    let (exit, stop_took) = c.terminate(old).await;
    let first_write = probe
        .await
        .expect("probe")
        .expect("the new leader accepted a write within the wait");
    assert!(exit.success(), "a SIGTERM stop exits 0: {exit}");
    println!(
        "SIGTERM of the leader -> first write accepted by the new leader after {:.1} ms; \
         the old leader exited after {:.1} ms",
        first_write.duration_since(signalled).as_secs_f64() * 1e3,
        stop_took.as_secs_f64() * 1e3
    );
    let log = c.log(old);
    assert!(
        log.contains("leadership handed to member"),
        "the stop went through the hand-off:\n{log}"
    );
    let new = leader(&c).await;
    assert_ne!(new, old);
    let new_term = term_at(&c.members[new].url()).await.expect("term");
    println!("terms: {old_term} -> {new_term}");
    assert!(new_term > old_term);

    tokio::time::sleep(Duration::from_millis(300)).await;
    let acked = load.finish().await;
    assert!(!acked.is_empty(), "the writers got writes through");
    c.restart(old).await;
    c.wait_ready().await;
    assert_all_there(&c, &acked).await;
    println!("{} acknowledged writes, all there", acked.len());
}

/// Members that know each other by host names (as a StatefulSet's pods do
/// through a headless Service) start while no name resolves yet — pods
/// come up in parallel — and stay up, live and retrying, until the names
/// resolve. A member that stops and comes back on another address under
/// the same name is found there: with the third member down, commits need
/// it, and writes go through.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn names_that_resolve_late_and_a_member_that_moves() {
    let test = "names_that_resolve_late_and_a_member_that_moves";
    let options = ProcessOptions {
        named: true,
        ..ProcessOptions::default()
    };
    let mut c = ProcessCluster::spawn_all(options, hint(test), false);
    for i in 0..3 {
        eventually("the member to be live with no name resolving", || async {
            let failures = c.metric(i, "flotilla_resolve_failures_total").await?;
            let (code, _) = c.http_get(i, "/livez").await?;
            (code == 200 && failures >= 1.0).then_some(())
        })
        .await;
    }
    c.assert_running();
    for i in 0..3 {
        let (code, body) = c.http_get(i, "/readyz").await.expect("answers");
        assert_eq!(code, 503, "no leader without peers: {body}");
    }
    assert!(
        c.log(0).contains("cannot resolve a member's name"),
        "resolution failures are logged"
    );

    let all: Vec<(usize, String)> = (0..3).map(|i| (i, "127.0.0.1".to_string())).collect();
    c.set_hosts(&all);
    for i in 0..3 {
        c.wait_serving(i).await;
    }
    c.wait_ready().await;
    let client = Client::new(&c.endpoints(), client_config()).expect("client");
    let mut acked = BTreeMap::new();
    for n in 0..20 {
        let (key, value) = (format!("before/{n}"), format!("{n}"));
        client
            .put(key.as_bytes(), value.as_bytes())
            .await
            .expect("put");
        acked.insert(key, value);
    }

    let lead = leader(&c).await;
    let moved = (lead + 1) % 3;
    let third = 3 - lead - moved;
    let (exit, _) = c.terminate(moved).await;
    assert!(exit.success(), "{exit}");
    c.members[moved].ip = "127.0.0.3".into();
    let hosts: Vec<(usize, String)> = (0..3).map(|i| (i, c.members[i].ip.clone())).collect();
    c.set_hosts(&hosts);
    c.restart(moved).await;
    // With the third member down, every commit needs the moved one.
    let (exit, _) = c.terminate(third).await;
    assert!(exit.success(), "{exit}");
    let endpoints = vec![c.members[lead].url(), c.members[moved].url()];
    let client = Client::new(&endpoints, client_config()).expect("client");
    for n in 0..20 {
        let (key, value) = (format!("after/{n}"), format!("{n}"));
        eventually("a write committed with the moved member", || {
            let client = &client;
            let (key, value) = (&key, &value);
            async move { client.put(key.as_bytes(), value.as_bytes()).await.ok() }
        })
        .await;
        acked.insert(key, value);
    }
    c.restart(third).await;
    c.wait_ready().await;
    assert_all_there(&c, &acked).await;
}

/// A failed fsync (injected with the test-only hook on one follower) ends
/// that member's process with exit code 1 and a `fatal:` line, instead of a
/// process that lives on serving nothing. Restarted without the hook, it
/// recovers and catches up. A data directory damaged while it is down is
/// refused at start, with the file named and exit code 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_fsync_ends_the_process_and_a_corrupt_directory_is_refused() {
    let test = "a_failed_fsync_ends_the_process_and_a_corrupt_directory_is_refused";
    let mut c = ProcessCluster::start(ProcessOptions::default(), hint(test)).await;
    let lead = leader(&c).await;
    let f = (lead + 1) % 3;
    let (exit, _) = c.terminate(f).await;
    assert!(exit.success(), "{exit}");
    c.members[f].env = vec![(
        "FLOTILLA_TEST_ONLY_FAIL_FSYNC_AFTER".to_string(),
        "30".to_string(),
    )];
    c.restart(f).await;
    c.members[f].env.clear();

    let client = Client::new(&[c.members[lead].url()], client_config()).expect("client");
    let deadline = Instant::now() + PROCESS_WAIT;
    let mut n = 0;
    let exit = loop {
        assert!(
            Instant::now() < deadline,
            "member {f} still runs after its fsyncs failed"
        );
        n += 1;
        let _ = client.put(format!("k{n}").as_bytes(), b"v").await;
        if let Some(exit) = c.wait_exit(f, Duration::ZERO).await {
            break exit;
        }
    };
    assert_eq!(
        exit.code(),
        Some(1),
        "a fatal storage error exits 1: {exit}"
    );
    let log = c.log(f);
    assert!(log.contains("fatal: the member cannot go on"), "{log}");
    assert!(log.contains("injected fsync failure"), "{log}");
    let at = |needle: &str| {
        log.lines()
            .find(|l| l.contains(needle))
            .and_then(seconds_of_day)
    };
    if let (Some(failed), Some(fatal)) = (at("raft storage failed"), at("fatal: the member")) {
        println!(
            "member {f}: storage failure -> exit line {:.1} ms later (after {n} writes through the leader)",
            (fatal - failed).rem_euclid(86_400.0) * 1e3
        );
    }

    c.restart(f).await;
    c.wait_ready().await;
    let (exit, _) = c.terminate(f).await;
    assert!(exit.success(), "{exit}");
    let hardstate = c.members[f].data_dir.path().join("hardstate");
    std::fs::write(&hardstate, b"not a hard state").expect("damage");
    c.spawn_again(f);
    let exit = c
        .wait_exit(f, PROCESS_WAIT)
        .await
        .expect("a member with a corrupt directory exits");
    assert_eq!(exit.code(), Some(1), "{exit}");
    let log = c.log(f);
    assert!(
        log.contains("cannot open the data directory") && log.contains("hardstate"),
        "the error names the damage:\n{log}"
    );
}

/// The time of day (seconds) a log line was written at: its timestamp
/// starts `YYYY-MM-DDTHH:MM:SS.ffffffZ`.
fn seconds_of_day(line: &str) -> Option<f64> {
    let time = line.get(11..26)?;
    let mut parts = time.split(':');
    let h: f64 = parts.next()?.parse().ok()?;
    let m: f64 = parts.next()?.parse().ok()?;
    let s: f64 = parts.next()?.parse().ok()?;
    Some(h * 3600.0 + m * 60.0 + s)
}

/// What a member stopped while `writes` entries commit (snapshots every
/// 100) needs to catch up after it restarts: (snapshots it installed,
/// snapshots the leader started sending), from their metrics.
async fn catch_up_after_a_short_stop(test: &str, extra_args: &[&str], writes: u64) -> (f64, f64) {
    let options = ProcessOptions {
        snapshot_count: 100,
        extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
        ..ProcessOptions::default()
    };
    let mut c = ProcessCluster::start(options, hint(test)).await;
    let lead = leader(&c).await;
    let f = (lead + 1) % 3;
    let (exit, _) = c.terminate(f).await;
    assert!(exit.success(), "{exit}");
    let client = Client::new(&[c.members[lead].url()], client_config()).expect("client");
    for n in 0..writes {
        client
            .put(format!("k{n}").as_bytes(), b"v")
            .await
            .expect("put");
    }
    let target = status_at(&c.members[lead].url(), Duration::from_secs(1))
        .await
        .expect("leader status")
        .applied;
    let down = Instant::now();
    c.restart(f).await;
    let url = c.members[f].url();
    eventually("the restarted member to catch up", || async {
        let s = status_at(&url, Duration::from_millis(300)).await?;
        (s.applied >= target).then_some(())
    })
    .await;
    println!(
        "member {f} caught up to {target} {:.0} ms after its restart began",
        down.elapsed().as_secs_f64() * 1e3
    );
    let installed = c
        .metric(f, "flotilla_raft_snapshots_installed_total")
        .await
        .expect("metric");
    let sent = c
        .metric(lead, "flotilla_raft_snapshots_sent_total")
        .await
        .expect("metric");
    (installed, sent)
}

/// Rolling restarts: with the default catch-up entries (5,000 kept before
/// each snapshot), a member down while 300 entries commit — three
/// snapshots' worth — catches up by AppendEntries, no snapshot sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_member_down_briefly_catches_up_from_the_log() {
    let test = "a_member_down_briefly_catches_up_from_the_log";
    let (installed, sent) = catch_up_after_a_short_stop(test, &[], 300).await;
    assert_eq!((installed, sent), (0.0, 0.0), "no snapshot needed");
}

/// The same stop with `--snapshot-catchup-entries 0` needs the snapshot:
/// the test above would see one if the entries were not kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_catchup_entries_the_member_needs_a_snapshot() {
    let test = "without_catchup_entries_the_member_needs_a_snapshot";
    let (installed, sent) =
        catch_up_after_a_short_stop(test, &["--snapshot-catchup-entries", "0"], 300).await;
    assert!(installed >= 1.0, "installed {installed}");
    assert!(sent >= 1.0, "sent {sent}");
}
