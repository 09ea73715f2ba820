//! An operator's recovery paths, on three real `flotilla-node` processes,
//! driven the way a person would: with Debian's `etcdctl` and the
//! `flotilla` CLI where they serve.
//!
//! - `space_quota_alarm_and_recovery`: writes past `--quota-backend-bytes`
//!   fail with etcd's NOSPACE error and raise the alarm on every member;
//!   reads, deletes and compaction work; the alarm outlives the leader;
//!   `etcdctl compact`, `defrag` and `alarm disarm` bring writes back.
//! - `snapshot_save_and_restore_into_a_new_cluster`: `etcdctl snapshot
//!   save` → `flotilla snapshot restore` → a new 3-member cluster with the
//!   same keys, revisions and leases; damaged files and a directory of
//!   another cluster are refused.
//! - `bad_requests_cost_no_log_entry`: malformed and oversized requests
//!   are refused with etcd's errors and the Raft index does not move.
//!
//! Every child process is killed when a test ends, however it ends; every
//! wait is bounded; nothing asserts on durations.

#![cfg(unix)]

mod common;
#[path = "common/processes.rs"]
mod processes;

use flotilla_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use flotilla_proto::etcdserverpb::kv_client::KvClient;
use flotilla_proto::etcdserverpb::lease_client::LeaseClient;
use flotilla_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use flotilla_proto::etcdserverpb::request_op::Request as Op;
use flotilla_proto::etcdserverpb::{
    Compare, DeleteRangeRequest, LeaseGrantRequest, LeaseTimeToLiveRequest, PutRequest,
    RangeRequest, RangeResponse, RequestOp, StatusRequest, StatusResponse, TxnRequest,
};
use processes::{PROCESS_WAIT, ProcessCluster, ProcessOptions, channel};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;
use tonic::Code;

/// The `flotilla` CLI built for these tests.
const FLOTILLA_BIN: &str = env!("CARGO_BIN_EXE_flotilla");
/// The member binary.
const NODE_BIN: &str = env!("CARGO_BIN_EXE_flotilla-node");

/// Whether etcdctl can run here; in CI it must (`.ci/run` installs it).
fn have_etcdctl() -> bool {
    if Command::new("etcdctl").arg("version").output().is_ok() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "etcdctl is missing in CI: .ci/run installs Debian's etcd-client"
    );
    eprintln!("etcdctl not installed: skipping (apt-get install etcd-client)");
    false
}

/// Runs etcdctl against `endpoint`.
fn etcdctl(endpoint: &str, args: &[&str]) -> Output {
    Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg("--endpoints")
        .arg(endpoint)
        .arg("--command-timeout=5s")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("etcdctl runs")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// etcdctl that must succeed; its stdout.
fn etcdctl_ok(endpoint: &str, args: &[&str]) -> String {
    let out = etcdctl(endpoint, args);
    assert!(
        out.status.success(),
        "etcdctl {args:?} failed: {}",
        text(&out)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// etcdctl that must fail with `message`.
fn etcdctl_fails(endpoint: &str, args: &[&str], message: &str) {
    let out = etcdctl(endpoint, args);
    assert!(!out.status.success(), "etcdctl {args:?} succeeded");
    assert!(
        text(&out).contains(message),
        "etcdctl {args:?}: wanted {message:?}, got {}",
        text(&out)
    );
}

/// Runs the `flotilla` CLI.
fn flotilla(args: &[&str]) -> Output {
    Command::new(FLOTILLA_BIN)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("flotilla runs")
}

fn endpoint(url: &str) -> String {
    url.trim_start_matches("http://").to_string()
}

async fn status(url: &str) -> StatusResponse {
    MaintenanceClient::new(channel(url))
        .status(StatusRequest {})
        .await
        .expect("status")
        .into_inner()
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
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn put(key: &str, value: &[u8]) -> PutRequest {
    PutRequest {
        key: key.into(),
        value: value.to_vec(),
        ..Default::default()
    }
}

const NOSPACE: &str = "etcdserver: mvcc: database space exceeded";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn space_quota_alarm_and_recovery() {
    if !have_etcdctl() {
        return;
    }
    let quota = 256 * 1024;
    let options = ProcessOptions {
        token: "quota",
        extra_args: vec!["--quota-backend-bytes".into(), quota.to_string()],
        ..ProcessOptions::default()
    };
    let mut c = ProcessCluster::start(options, "space_quota_alarm_and_recovery".into()).await;
    let urls = c.endpoints();
    let e: Vec<String> = urls.iter().map(|u| endpoint(u)).collect();
    etcdctl_ok(&e[0], &["put", "keep", "me"]);
    assert_eq!(etcdctl_ok(&e[0], &["alarm", "list"]), "");

    // Fill the store until a write fails: at most twice the quota's worth.
    let mut kv = KvClient::new(channel(&urls[1]));
    let value = vec![b'x'; 2048];
    let mut refused = None;
    for i in 0..(2 * quota / value.len()) {
        match kv.put(put(&format!("fill/{i:05}"), &value)).await {
            Ok(_) => {}
            Err(s) => {
                refused = Some(s);
                break;
            }
        }
    }
    let refused = refused.expect("a write past the quota fails");
    assert_eq!(
        (refused.code(), refused.message()),
        (Code::ResourceExhausted, NOSPACE)
    );
    // Raised cluster-wide: every member lists it and refuses writes.
    for ep in &e {
        eventually("the alarm listed on every member", || async {
            etcdctl_ok(ep, &["alarm", "list"])
                .contains("alarm:NOSPACE")
                .then_some(())
        })
        .await;
        etcdctl_fails(ep, &["put", "more", "x"], NOSPACE);
    }
    let listed = etcdctl_ok(&e[2], &["alarm", "list"]);
    assert!(listed.starts_with("memberID:"), "{listed}");
    let st = status(&urls[0]).await;
    assert!(
        st.errors.iter().any(|x| x.contains("alarm:NOSPACE")),
        "{st:?}"
    );
    assert_eq!(st.db_size_quota, quota as i64);
    // Reads work.
    assert_eq!(
        etcdctl_ok(&e[2], &["get", "keep", "--print-value-only"]),
        "me\n"
    );

    // Free space: deletes and compaction are allowed.
    let deleted = etcdctl_ok(&e[0], &["del", "fill/", "--prefix"]);
    assert!(deleted.trim().parse::<u64>().expect("a count") > 0);
    let revision = status(&urls[0]).await.header.expect("header").revision;
    let compacted = etcdctl_ok(&e[1], &["compact", &revision.to_string()]);
    assert!(compacted.contains(&format!("compacted revision {revision}")));
    for url in &urls {
        eventually("the space freed on every member", || async {
            (status(url).await.db_size_in_use < quota as i64 / 4).then_some(())
        })
        .await;
    }
    // Space is free, but the alarm still stops writes until disarmed,
    // also after the leader is gone.
    etcdctl_fails(&e[0], &["put", "more", "x"], NOSPACE);
    let leader = eventually("a leader", || c.leader()).await;
    c.kill(leader);
    let next = eventually("a new leader", || c.leader_other_than(Some(leader))).await;
    let survivor = &e[next];
    assert!(etcdctl_ok(survivor, &["alarm", "list"]).contains("alarm:NOSPACE"));
    etcdctl_fails(survivor, &["put", "more", "x"], NOSPACE);
    c.restart(leader).await;
    c.wait_ready().await;

    // etcd's recovery procedure, unchanged.
    let defrag = etcdctl_ok(survivor, &["defrag"]);
    assert!(defrag.contains("Finished defragmenting"), "{defrag}");
    let disarmed = etcdctl_ok(survivor, &["alarm", "disarm"]);
    assert!(disarmed.contains("alarm:NOSPACE"), "{disarmed}");
    for ep in &e {
        eventually("writes accepted again", || async {
            etcdctl(ep, &["put", "more", "x"])
                .status
                .success()
                .then_some(())
        })
        .await;
        assert_eq!(etcdctl_ok(ep, &["alarm", "list"]), "");
    }
    assert_eq!(
        etcdctl_ok(&e[1], &["get", "keep", "--print-value-only"]),
        "me\n"
    );
    c.assert_running();
}

/// Every key's full range answer, as a comparable list.
async fn all_keys(url: &str) -> RangeResponse {
    let mut r = KvClient::new(channel(url))
        .range(RangeRequest {
            key: vec![0],
            range_end: vec![0],
            ..Default::default()
        })
        .await
        .expect("range")
        .into_inner();
    r.header = r
        .header
        .map(|h| flotilla_proto::etcdserverpb::ResponseHeader {
            revision: h.revision,
            ..Default::default()
        });
    r
}

/// Restores `file` for member `name` into `dir`; the CLI's output.
fn restore(file: &Path, name: &str, cluster: &str, token: &str, dir: &Path) -> Output {
    flotilla(&[
        "snapshot",
        "restore",
        file.to_str().expect("path"),
        "--name",
        name,
        "--initial-cluster",
        cluster,
        "--initial-cluster-token",
        token,
        "--data-dir",
        dir.to_str().expect("path"),
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_save_and_restore_into_a_new_cluster() {
    if !have_etcdctl() {
        return;
    }
    let work = tempfile::tempdir().expect("tempdir");
    let file = work.path().join("backup.db");
    let (before, lease_id) = {
        let a = ProcessCluster::start(
            ProcessOptions {
                token: "cluster-a",
                ..ProcessOptions::default()
            },
            "snapshot_save_and_restore_into_a_new_cluster (cluster A)".into(),
        )
        .await;
        let urls = a.endpoints();
        let mut kv = KvClient::new(channel(&urls[0]));
        for i in 0..50 {
            kv.put(put(&format!("k/{i:02}"), format!("v{i}").as_bytes()))
                .await
                .expect("put");
        }
        kv.put(put("k/07", b"again")).await.expect("put");
        kv.delete_range(DeleteRangeRequest {
            key: "k/13".into(),
            ..Default::default()
        })
        .await
        .expect("delete");
        let lease = LeaseClient::new(channel(&urls[1]))
            .lease_grant(LeaseGrantRequest { ttl: 600, id: 0 })
            .await
            .expect("grant")
            .into_inner()
            .id;
        kv.put(PutRequest {
            lease,
            ..put("leased", b"yes")
        })
        .await
        .expect("put");
        let before = all_keys(&urls[2]).await;
        // The snapshot comes from a follower's own state.
        let out = etcdctl(
            &endpoint(&urls[2]),
            &["snapshot", "save", file.to_str().expect("path")],
        );
        assert!(out.status.success(), "snapshot save: {}", text(&out));
        assert!(text(&out).contains("Snapshot saved at"), "{}", text(&out));
        (before, lease)
    }; // cluster A is gone: every process killed.

    let status = flotilla(&[
        "snapshot",
        "status",
        file.to_str().expect("path"),
        "-w",
        "json",
    ]);
    assert!(status.status.success(), "{}", text(&status));
    let summary: serde_json::Value = serde_json::from_slice(&status.stdout).expect("json");
    let revision = before.header.as_ref().expect("header").revision;
    assert_eq!(summary["revision"], revision);
    assert_eq!(summary["total_key"], 50);

    // Damaged copies are refused before anything is written.
    let bytes = std::fs::read(&file).expect("read");
    let truncated = work.path().join("truncated.db");
    std::fs::write(&truncated, &bytes[..bytes.len() - 100]).expect("write");
    let mut flipped = bytes.clone();
    flipped[bytes.len() / 2] ^= 0x04;
    let damaged = work.path().join("damaged.db");
    std::fs::write(&damaged, &flipped).expect("write");
    for (bad, why) in [(&truncated, "truncated"), (&damaged, "damaged")] {
        let dir = work.path().join(format!("never-{why}"));
        let out = restore(bad, "n1", "n1=http://127.0.0.1:1", "t", &dir);
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
        assert!(text(&out).contains(why), "{}", text(&out));
        assert!(!dir.exists(), "nothing written for a bad file");
    }

    // A new cluster B from the file.
    let mut b = ProcessCluster::prepare(
        ProcessOptions {
            token: "cluster-b",
            ..ProcessOptions::default()
        },
        "snapshot_save_and_restore_into_a_new_cluster (cluster B)".into(),
    );
    let cluster = b.initial_cluster().to_string();
    for m in &b.members {
        let out = restore(&file, &m.name, &cluster, "cluster-b", m.data_dir.path());
        assert!(out.status.success(), "restore {}: {}", m.name, text(&out));
        assert!(text(&out).contains(&format!("Restored revision {revision}")));
    }
    // The same file restored for cluster B, started as another cluster.
    let foreign = work.path().join("foreign");
    let out = restore(&file, "n1", &cluster, "cluster-b", &foreign);
    assert!(out.status.success(), "{}", text(&out));
    let refusal = run_member_until_exit(&foreign, &cluster, "cluster-c");
    assert!(
        refusal.contains("belongs to cluster"),
        "a member of another cluster must refuse it: {refusal}"
    );

    b.start_prepared().await;
    let urls = b.endpoints();
    for url in &urls {
        let after = all_keys(url).await;
        assert_eq!(after, before, "keys, versions and revisions at {url}");
    }
    let ttl = LeaseClient::new(channel(&urls[0]))
        .lease_time_to_live(LeaseTimeToLiveRequest {
            id: lease_id,
            keys: true,
        })
        .await
        .expect("time to live")
        .into_inner();
    assert_eq!(ttl.granted_ttl, 600);
    assert!(ttl.ttl > 0, "{ttl:?}");
    assert_eq!(ttl.keys, vec![b"leased".to_vec()]);
    // The member table is the new cluster's; writes go on from the
    // restored revision.
    let members = etcdctl_ok(&endpoint(&urls[1]), &["member", "list"]);
    for m in &b.members {
        assert!(
            members.contains(&format!("127.0.0.1:{}", m.peer_port)),
            "{members}"
        );
    }
    let r = KvClient::new(channel(&urls[1]))
        .put(put("after", b"restore"))
        .await
        .expect("put")
        .into_inner();
    assert_eq!(r.header.expect("header").revision, revision + 1);
    b.assert_running();
}

/// Starts a member on `dir` with `token` and waits (bounded) for it to
/// exit; its output. A member still running at the deadline is killed and
/// the test fails.
fn run_member_until_exit(dir: &Path, cluster: &str, token: &str) -> String {
    let log = dir.with_extension("log");
    let file = std::fs::File::create(&log).expect("log");
    let mut child = Command::new(NODE_BIN)
        .args(["--name", "n1", "--initial-cluster", cluster])
        .args(["--initial-cluster-token", token])
        .arg("--data-dir")
        .arg(dir)
        // Loopback addresses of their own: distinct, and apart from the
        // ports cluster B is about to use.
        .args(["--listen-client-urls", "127.0.0.2:0"])
        .args(["--listen-peer-urls", "127.0.0.3:0"])
        .args(["--listen-metrics-urls", "127.0.0.4:0"])
        .stdin(Stdio::null())
        .stdout(file.try_clone().expect("log"))
        .stderr(file)
        .spawn()
        .expect("spawn flotilla-node");
    let deadline = std::time::Instant::now() + PROCESS_WAIT;
    let exit = loop {
        if let Some(exit) = child.try_wait().expect("try_wait") {
            break exit;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the member kept running on another cluster's data");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(!exit.success(), "the member must refuse to start");
    std::fs::read_to_string(&log).expect("log")
}

fn put_op(key: &str) -> RequestOp {
    RequestOp {
        request: Some(Op::RequestPut(put(key, b"v"))),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_cost_no_log_entry() {
    let options = ProcessOptions {
        token: "bad-requests",
        extra_args: vec![
            "--max-txn-ops".into(),
            "8".into(),
            "--max-request-bytes".into(),
            "16384".into(),
        ],
        ..ProcessOptions::default()
    };
    let c = ProcessCluster::start(options, "bad_requests_cost_no_log_entry".into()).await;
    let urls = c.endpoints();
    let leader = eventually("a leader", || c.leader()).await;
    let indexes = || async {
        let mut all = Vec::new();
        for url in &urls {
            let s = status(url).await;
            all.push((s.raft_index, s.raft_applied_index));
        }
        all
    };
    // Settled: every member has applied the same last entry.
    let start = eventually("every member caught up", || async {
        let all = indexes().await;
        all.iter()
            .all(|x| *x == all[0] && x.0 == x.1)
            .then_some(all)
    })
    .await;
    let too_many = TxnRequest {
        success: (0..9).map(|i| put_op(&format!("t{i}"))).collect(),
        ..Default::default()
    };
    let duplicate = TxnRequest {
        success: vec![put_op("d"), put_op("d")],
        ..Default::default()
    };
    let empty_compare = TxnRequest {
        compare: vec![Compare {
            result: CompareResult::Equal as i32,
            target: CompareTarget::Version as i32,
            key: Vec::new(),
            target_union: Some(TargetUnion::Version(0)),
            range_end: Vec::new(),
        }],
        ..Default::default()
    };
    for url in [&urls[leader], &urls[(leader + 1) % 3]] {
        let mut kv = KvClient::new(channel(url));
        let refused = |r: Result<_, tonic::Status>| {
            let s = r.expect_err("refused");
            (s.code(), s.message().to_string())
        };
        let invalid = |m: &str| (Code::InvalidArgument, m.to_string());
        assert_eq!(
            refused(kv.put(put("", b"v")).await.map(|_| ())),
            invalid("etcdserver: key is not provided")
        );
        assert_eq!(
            refused(kv.put(put("big", &[7; 20_000])).await.map(|_| ())),
            invalid("etcdserver: request is too large")
        );
        assert_eq!(
            refused(kv.txn(too_many.clone()).await.map(|_| ())),
            invalid("etcdserver: too many operations in txn request")
        );
        assert_eq!(
            refused(kv.txn(duplicate.clone()).await.map(|_| ())),
            invalid("etcdserver: duplicate key given in txn request")
        );
        assert_eq!(
            refused(kv.txn(empty_compare.clone()).await.map(|_| ())),
            invalid("etcdserver: key is not provided")
        );
        assert_eq!(
            refused(
                kv.delete_range(DeleteRangeRequest::default())
                    .await
                    .map(|_| ())
            ),
            invalid("etcdserver: key is not provided")
        );
        // Past the gRPC limit (max request bytes + 512 KiB): refused while
        // decoding, before any handler runs.
        let huge = refused(kv.put(put("huge", &vec![7; 600 * 1024])).await.map(|_| ()));
        assert!(
            matches!(huge.0, Code::OutOfRange | Code::ResourceExhausted),
            "{huge:?}"
        );
        assert_eq!(
            refused(
                LeaseClient::new(channel(url))
                    .lease_grant(LeaseGrantRequest {
                        ttl: i64::MAX,
                        id: 0
                    })
                    .await
                    .map(|_| ())
            ),
            (Code::OutOfRange, "etcdserver: too large lease TTL".into())
        );
    }
    if have_etcdctl() {
        let ep = endpoint(&urls[0]);
        etcdctl_fails(&ep, &["put", "", "v"], "key is not provided");
    }
    assert_eq!(indexes().await, start, "no entry was proposed");
    // A good request still works, and takes one entry.
    KvClient::new(channel(&urls[0]))
        .put(put("good", b"v"))
        .await
        .expect("put");
    let after = indexes().await;
    assert!(after[0].0 > start[0].0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_connections_past_the_limit_are_closed() {
    let limit = 4;
    let options = ProcessOptions {
        token: "connections",
        extra_args: vec!["--max-client-connections".into(), limit.to_string()],
        ..ProcessOptions::default()
    };
    let c = ProcessCluster::start(
        options,
        "client_connections_past_the_limit_are_closed".into(),
    )
    .await;
    let leader = eventually("a leader", || c.leader()).await;
    let follower = &c.members[(leader + 1) % 3];
    let addr = ("127.0.0.1", follower.client_port);
    // More idle connections than the limit: every place is taken.
    let mut held = Vec::new();
    for _ in 0..limit + 3 {
        held.push(tokio::net::TcpStream::connect(addr).await.expect("connect"));
    }
    // One more is accepted after them and closed at once: the call fails.
    let mut client = MaintenanceClient::new(channel(&follower.url()));
    let refused = client
        .status(StatusRequest {})
        .await
        .expect_err("no place left");
    // The connection is reset: grpc-go calls that UNAVAILABLE; tonic's
    // client reports a transport error, or a cancelled call when the reset
    // reaches it as the connection closing under the request.
    assert!(
        matches!(
            refused.code(),
            Code::Unavailable | Code::Unknown | Code::Cancelled
        ),
        "{refused:?}"
    );
    // Closing connections frees their places.
    drop(held);
    eventually("a place again", || async {
        let mut client = MaintenanceClient::new(channel(&follower.url()));
        client.status(StatusRequest {}).await.ok().map(|_| ())
    })
    .await;
}
