//! The `flotilla` CLI as a user runs it: the built binary, against the
//! in-process three-member cluster of `common` on loopback. Every run is
//! bounded by the harness's wait; output is checked as printed (table) or
//! parsed (`-w json`).

mod common;

use common::*;
use flotilla_node::config::{ClusterState, InitialMember};
use flotilla_node::server::{NodeListeners, start};
use serde_json::Value;
use std::process::Stdio;
use tokio::io::AsyncWriteExt;

/// What one run of the CLI printed.
#[derive(Debug)]
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    /// Stdout of a run that must have succeeded.
    fn ok(self) -> String {
        assert_eq!(self.code, Some(0), "the command failed: {self:?}");
        self.stdout
    }

    /// Stderr of a run that must have failed with `code`; a failed command
    /// (1) says why in one `Error:` line, warnings aside, and no backtrace.
    fn failed(self, code: i32) -> String {
        assert_eq!(self.code, Some(code), "wrong exit code: {self:?}");
        if code == 1 {
            let lines: Vec<&str> = self
                .stderr
                .lines()
                .filter(|l| !l.starts_with("warning: "))
                .collect();
            assert_eq!(lines.len(), 1, "one line, no backtrace: {self:?}");
            assert!(lines[0].starts_with("Error: "), "{self:?}");
        }
        self.stderr
    }
}

/// Starts `flotilla --endpoints <endpoints> <args>` with its stdout and
/// stderr piped, and its stdin piped if `stdin`, else empty.
/// RUST_BACKTRACE is set on purpose: user errors must still be one line.
fn spawn_flotilla(endpoints: &[String], args: &[&str], stdin: bool) -> tokio::process::Child {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_flotilla"))
        .arg("--endpoints")
        .arg(endpoints.join(","))
        .args(args)
        .env("RUST_BACKTRACE", "1")
        .env_remove("FLOTILLA_ENDPOINTS")
        .stdin(if stdin { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the flotilla binary runs")
}

/// Runs `flotilla --endpoints <endpoints> <args>`, feeding it `stdin`.
async fn flotilla(endpoints: &[String], args: &[&str], stdin: Option<&str>) -> Run {
    let mut child = spawn_flotilla(endpoints, args, stdin.is_some());
    if let Some(text) = stdin {
        let mut input = child.stdin.take().expect("stdin");
        input.write_all(text.as_bytes()).await.expect("write stdin");
        drop(input);
    }
    let out = tokio::time::timeout(WAIT, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("flotilla {args:?} did not finish within {WAIT:?}"))
        .expect("wait for flotilla");
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kv_put_get_del_and_txn() {
    let c = Cluster::start().await;
    // A follower first: writes are forwarded, reads served there.
    let mut e = c.endpoints();
    e.rotate_left(c.follower());
    let run = |args: &'static [&'static str]| flotilla(&e, args, None);

    assert_eq!(run(&["kv", "put", "fruit/apple", "red"]).await.ok(), "OK\n");
    assert_eq!(
        run(&["kv", "put", "fruit/kiwi", "green"]).await.ok(),
        "OK\n"
    );
    assert_eq!(
        run(&["kv", "put", "fruit/kiwi", "brown", "--prev-kv"])
            .await
            .ok(),
        "OK\nfruit/kiwi\ngreen\n"
    );
    assert_eq!(
        run(&["kv", "get", "fruit/apple"]).await.ok(),
        "fruit/apple\nred\n"
    );
    assert_eq!(run(&["kv", "get", "missing"]).await.ok(), "");
    assert_eq!(
        run(&["kv", "get", "fruit/", "--prefix", "--keys-only"])
            .await
            .ok(),
        "fruit/apple\nfruit/kiwi\n"
    );
    assert_eq!(
        run(&["kv", "get", "fruit/", "--prefix", "--count-only"])
            .await
            .ok(),
        "2\n"
    );
    let all = json(
        &run(&["kv", "get", "fruit/", "--prefix", "-w", "json"])
            .await
            .ok(),
    );
    assert_eq!(all["count"], 2);
    assert_eq!(all["kvs"][1]["key"], "fruit/kiwi");
    assert_eq!(all["kvs"][1]["value"], "brown");
    assert_eq!(all["kvs"][1]["version"], 2);
    // The kiwi as it was before its second put.
    let created = all["kvs"][1]["create_revision"].as_i64().expect("revision");
    let old = flotilla(
        &e,
        &[
            "kv",
            "get",
            "fruit/kiwi",
            "--rev",
            &created.to_string(),
            "--print-value-only",
        ],
        None,
    )
    .await
    .ok();
    assert_eq!(old, "green\n");
    let limited = json(
        &run(&["kv", "get", "", "--from-key", "--limit", "1", "-w", "json"])
            .await
            .ok(),
    );
    assert_eq!(limited["kvs"].as_array().map(Vec::len), Some(1));
    assert_eq!(limited["more"], true);

    // Both branches of a transaction.
    let txn = "value(\"fruit/apple\") = \"red\"\nversion(\"fruit/kiwi\") > \"1\"\n\n\
               put fruit/apple green\nget fruit/kiwi\ndel fruit/kiwi\n\n\
               put fruit/apple unripe\n";
    let out = flotilla(&e, &["kv", "txn"], Some(txn)).await.ok();
    assert_eq!(out, "SUCCESS\n\nOK\n\nfruit/kiwi\nbrown\n\n1\n");
    let out = flotilla(&e, &["kv", "txn", "-w", "json"], Some(txn))
        .await
        .ok();
    let failed = json(&out);
    assert_eq!(failed["succeeded"], false, "{out}");
    assert_eq!(failed["responses"].as_array().map(Vec::len), Some(1));
    assert_eq!(
        run(&["kv", "get", "fruit/apple", "--print-value-only"])
            .await
            .ok(),
        "unripe\n",
        "the failure branch ran"
    );
    let created_absent = "create(\"fruit/pear\") = \"0\"\n\nput \"fruit/pear\" \"a b\"\n\n";
    assert!(
        flotilla(&e, &["kv", "txn"], Some(created_absent))
            .await
            .ok()
            .starts_with("SUCCESS")
    );
    assert_eq!(
        run(&["kv", "get", "fruit/pear", "--print-value-only"])
            .await
            .ok(),
        "a b\n"
    );

    // A parse error names its line and sends nothing.
    let bad = "value(\"fruit/apple\") = \"unripe\"\n\nput fruit/apple ripe\nfrob fruit/apple\n";
    let err = flotilla(&e, &["kv", "txn"], Some(bad)).await.failed(1);
    assert!(
        err.contains("transaction line 4") && err.contains("frob"),
        "{err}"
    );
    assert_eq!(
        run(&["kv", "get", "fruit/apple", "--print-value-only"])
            .await
            .ok(),
        "unripe\n"
    );

    assert_eq!(run(&["kv", "del", "fruit/pear"]).await.ok(), "1\n");
    assert_eq!(run(&["kv", "del", "fruit/pear"]).await.ok(), "0\n");
    let deleted = json(
        &run(&["kv", "del", "fruit/", "--prefix", "-w", "json"])
            .await
            .ok(),
    );
    assert_eq!(deleted["deleted"], 1);
    assert_eq!(run(&["kv", "get", "", "--prefix"]).await.ok(), "");

    // Bad usage is clap's exit code 2; a bad range a plain error.
    run(&["kv", "put", "--lease", "xyz", "k", "v"])
        .await
        .failed(2);
    let err = run(&["kv", "get", "a", "z", "--prefix"]).await.failed(1);
    assert!(err.contains("cannot be combined"), "{err}");
    c.shutdown().await;
}

/// A reader that stops early (`flotilla kv get ... | head -1`) closes the
/// pipe: the CLI ends quietly with the status of a tool killed by SIGPIPE
/// (141), never with a panic's message.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_closed_stdout_ends_the_command_quietly() {
    let c = Cluster::start().await;
    let e = c.endpoints();
    assert_eq!(
        flotilla(&e, &["kv", "put", "k", "v"], None).await.ok(),
        "OK\n"
    );
    let mut child = spawn_flotilla(&e, &["kv", "get", "k"], false);
    // The read end closes before the command has its answer to print.
    drop(child.stdout.take());
    let out = tokio::time::timeout(WAIT, child.wait_with_output())
        .await
        .expect("the command ends")
        .expect("wait for flotilla");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(141), "stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "stderr: {stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lease_grant_attach_keepalive_and_revoke() {
    let c = Cluster::start().await;
    let e = c.endpoints();
    let granted = flotilla(&e, &["lease", "grant", "60"], None).await.ok();
    let id = granted
        .strip_prefix("lease ")
        .and_then(|rest| rest.strip_suffix(" granted with TTL(60s)\n"))
        .unwrap_or_else(|| panic!("etcdctl's grant line: {granted:?}"))
        .to_string();
    assert_eq!(id.len(), 16, "{granted}");
    assert_eq!(
        flotilla(&e, &["kv", "put", "leased", "v", "--lease", &id], None)
            .await
            .ok(),
        "OK\n"
    );
    let ttl = flotilla(&e, &["lease", "timetolive", &id, "--keys"], None)
        .await
        .ok();
    assert!(
        ttl.starts_with(&format!("lease {id} granted with TTL(60s), remaining("))
            && ttl.ends_with(", attached keys([leased])\n"),
        "{ttl}"
    );
    let listed = flotilla(&e, &["lease", "list"], None).await.ok();
    assert_eq!(listed, format!("found 1 leases\n{id}\n"));

    // Keepalives go to the leader, found through a follower.
    let follower_only = vec![c.url(c.follower())];
    assert_eq!(
        flotilla(&follower_only, &["lease", "keepalive", &id, "--once"], None)
            .await
            .ok(),
        format!("lease {id} keepalived with TTL(60)\n")
    );
    let kept = json(
        &flotilla(
            &e,
            &["lease", "keepalive", &id, "--once", "-w", "json"],
            None,
        )
        .await
        .ok(),
    );
    assert_eq!(kept["ttl"], 60);
    assert_eq!(kept["id_hex"], id.as_str());

    assert_eq!(
        flotilla(&e, &["lease", "revoke", &id], None).await.ok(),
        format!("lease {id} revoked\n")
    );
    assert_eq!(flotilla(&e, &["kv", "get", "leased"], None).await.ok(), "");
    assert_eq!(
        flotilla(&e, &["lease", "timetolive", &id], None).await.ok(),
        format!("lease {id} already expired\n")
    );
    let err = flotilla(&e, &["lease", "keepalive", &id, "--once"], None)
        .await
        .failed(1);
    assert!(err.contains("expired or revoked"), "{err}");
    let err = flotilla(&e, &["lease", "revoke", &id], None)
        .await
        .failed(1);
    assert!(err.contains("lease not found"), "{err}");
    flotilla(&e, &["lease", "revoke", "not-hex"], None)
        .await
        .failed(2);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn member_add_learner_promote_and_remove() {
    let mut c = Cluster::start().await;
    let e = c.endpoints();
    let l = NodeListeners {
        client: bind().await,
        peer: bind().await,
        http: bind().await,
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let peer_url = format!("http://{}", l.peer.local_addr().expect("addr"));

    let taken = c.configs[1].peer_advertise.clone();
    let err = flotilla(&e, &["member", "add", "n4", "--peer-urls", &taken], None)
        .await
        .failed(1);
    assert!(err.contains("Peer URLs already exists"), "{err}");
    let added = flotilla(
        &e,
        &["member", "add", "n4", "--peer-urls", &peer_url, "--learner"],
        None,
    )
    .await;
    let out = added.ok();
    let id = out
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("Member "))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("etcdctl's add line: {out}"))
        .to_string();
    for line in [
        "FLOTILLA_NAME=\"n4\"".to_string(),
        format!("n4={peer_url}\""),
        format!("FLOTILLA_INITIAL_ADVERTISE_PEER_URLS=\"{peer_url}\""),
        "FLOTILLA_INITIAL_CLUSTER_STATE=\"existing\"".to_string(),
        format!("flotilla member promote {id}"),
    ] {
        assert!(out.contains(&line), "{line} missing from {out}");
    }
    let members = json(
        &flotilla(&e, &["member", "list", "-w", "json"], None)
            .await
            .ok(),
    );
    let members = members["members"].as_array().expect("members").clone();
    assert_eq!(members.len(), 4);
    let learner = members
        .iter()
        .find(|m| m["id_hex"] == id.as_str())
        .expect("the new member is listed");
    assert_eq!(learner["is_learner"], true);
    assert_eq!(learner["started"], false);

    // The new member starts, joining through the founders.
    let initial: Vec<InitialMember> = (0..3)
        .map(|i| InitialMember {
            name: c.configs[i].name.clone(),
            id: c.configs[i].member_id,
            peer_url: c.configs[i].peer_advertise.clone(),
        })
        .collect();
    let member_id = u64::from_str_radix(&id, 16).expect("hex id");
    let mut config = node_config("n4", 0, &initial, &dir, &l);
    config.cluster_state = ClusterState::Existing;
    c.configs.push(config.clone());
    let joiner = start(config, l).await.expect("start the joiner");
    assert_eq!(joiner.member_id(), member_id);
    c.nodes.push(joiner);
    c.dirs.push(dir);
    // Promotion is refused while the learner lags too far behind.
    let promoted = eventually("the promotion", || {
        let (e, id) = (e.clone(), id.clone());
        async move {
            let run = flotilla(&e, &["member", "promote", &id], None).await;
            (run.code == Some(0)).then_some(run.stdout)
        }
    })
    .await;
    assert!(
        promoted.starts_with(&format!("Member {id} promoted in cluster ")),
        "{promoted}"
    );
    // The table, once the new member has published its name.
    eventually("n4 listed as a started voter", || {
        let (e, id) = (e.clone(), id.clone());
        async move {
            let table = flotilla(&e, &["member", "list"], None).await.ok();
            let row = table.lines().find(|l| l.starts_with(&id))?.to_string();
            let fields: Vec<&str> = row.split_whitespace().take(4).collect();
            (fields == [id.as_str(), "started", "n4", "false"]).then_some(())
        }
    })
    .await;

    assert!(
        flotilla(&e, &["member", "remove", &id], None)
            .await
            .ok()
            .starts_with(&format!("Member {id} removed from cluster "))
    );
    let members = json(
        &flotilla(&e, &["member", "list", "-w", "json"], None)
            .await
            .ok(),
    );
    assert_eq!(members["members"].as_array().map(Vec::len), Some(3));
    let err = flotilla(&e, &["member", "remove", &id], None)
        .await
        .failed(1);
    assert!(err.contains("member not found"), "{err}");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cluster_status_lists_every_member_and_survives_one_down() {
    let mut c = Cluster::start().await;
    let e = c.endpoints();
    let status = json(
        &flotilla(&e[..1], &["cluster", "status", "-w", "json"], None)
            .await
            .ok(),
    );
    let rows = status["members"].as_array().expect("members").clone();
    assert_eq!(rows.len(), 3, "every member, from one endpoint: {status}");
    let leaders: Vec<&Value> = rows.iter().filter(|r| r["is_leader"] == true).collect();
    assert_eq!(leaders.len(), 1, "one leader: {status}");
    assert_eq!(status["leader"], leaders[0]["id"], "{status}");
    let ids: Vec<u64> = c.nodes.iter().map(|n| n.member_id()).collect();
    for row in &rows {
        assert_eq!(row["reachable"], true, "{row}");
        assert!(ids.contains(&row["id"].as_u64().expect("id")), "{row}");
        assert!(row["raft_term"].as_u64() > Some(0), "{row}");
        let (index, applied) = (
            row["raft_index"].as_u64(),
            row["raft_applied_index"].as_u64(),
        );
        assert!(applied > Some(0) && applied <= index, "{row}");
        assert!(
            row["version"].as_str().is_some_and(|v| !v.is_empty()),
            "{row}"
        );
        assert!(e.contains(&row["endpoint"].as_str().expect("endpoint").to_string()));
    }
    let table = flotilla(&e, &["cluster", "status"], None).await.ok();
    assert!(table.starts_with("ENDPOINT"), "{table}");
    assert_eq!(table.lines().count(), 4, "{table}");

    // One member down: listed with its error, the others still shown.
    let down = c.follower();
    let down_url = c.url(down);
    let stopped = c.nodes.remove(down);
    tokio::time::timeout(WAIT, stopped.shutdown())
        .await
        .expect("shutdown within the wait")
        .expect("clean shutdown");
    // The stopped member first: the CLI moves on to one that answers.
    let mut e = e.clone();
    e.sort_by_key(|u| *u != down_url);
    let status = json(
        &flotilla(&e, &["cluster", "status", "-w", "json"], None)
            .await
            .ok(),
    );
    let rows = status["members"].as_array().expect("members").clone();
    assert_eq!(rows.len(), 3, "{status}");
    for row in &rows {
        let is_down = row["endpoint"] == down_url.as_str();
        assert_eq!(row["reachable"], !is_down, "{row}");
        if is_down {
            assert!(
                row["errors"][0].as_str().is_some_and(|e| !e.is_empty()),
                "{row}"
            );
        }
    }
    let table = flotilla(&e, &["cluster", "status"], None).await.ok();
    assert_eq!(table.lines().count(), 4, "{table}");
    // Nothing answering is a failure.
    let err = flotilla(&[down_url], &["cluster", "status"], None)
        .await
        .failed(1);
    assert!(err.contains("no member answered"), "{err}");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bench_kv_put_and_range_report_every_request() {
    let c = Cluster::start().await;
    let e = c.endpoints();
    // 300 sequential keys over every member (two of them forward): each
    // write lands once, as a count of the whole key space shows.
    let put = json(
        &flotilla(
            &e,
            &[
                "bench",
                "kv",
                "put",
                "--clients",
                "8",
                "--conns",
                "3",
                "--total",
                "300",
                "--key-size",
                "8",
                "--val-size",
                "64",
                "--sequential-keys",
                "--key-space-size",
                "300",
                "--no-progress",
                "-w",
                "json",
            ],
            None,
        )
        .await
        .ok(),
    );
    assert_eq!(put["op"], "put", "{put}");
    assert_eq!(
        (put["ok"].as_u64(), put["errors"].as_u64()),
        (Some(300), Some(0)),
        "{put}"
    );
    assert_eq!(put["endpoints"].as_array().map(Vec::len), Some(3), "{put}");
    let p50 = put["latency_ms"]["p50"].as_f64().unwrap_or(0.0);
    let p99 = put["latency_ms"]["p99"].as_f64().unwrap_or(0.0);
    assert!(p50 > 0.0 && p50 <= p99, "{put}");
    assert_eq!(
        flotilla(&e, &["kv", "get", "", "--from-key", "--count-only"], None)
            .await
            .ok(),
        "300\n"
    );

    // Linearizable ranges against the leader alone.
    let range = json(
        &flotilla(
            &e,
            &[
                "bench",
                "kv",
                "range",
                "bench-key",
                "--consistency",
                "l",
                "--clients",
                "4",
                "--conns",
                "2",
                "--total",
                "200",
                "--leader-only",
                "--no-progress",
                "-w",
                "json",
            ],
            None,
        )
        .await
        .ok(),
    );
    assert_eq!(
        (range["ok"].as_u64(), range["errors"].as_u64()),
        (Some(200), Some(0)),
        "{range}"
    );
    assert_eq!(
        range["endpoints"],
        serde_json::json!([e[c.leader()].clone()]),
        "{range}"
    );

    // A member that does not answer: every request fails, and says why.
    let dead = flotilla(
        &["http://127.0.0.1:1".to_string()],
        &["bench", "kv", "put", "--total", "5", "--no-progress"],
        None,
    )
    .await
    .failed(1);
    assert!(dead.contains("cannot connect"), "{dead}");
    c.shutdown().await;
}

/// A base port for `bench stall`'s members whose nine ports (`base + i`,
/// `base + 100 + i`, `base + 200 + i`) can all be bound now.
fn stall_base_port() -> u16 {
    let seed = u64::from(std::process::id()) ^ 0x9e37_79b9;
    for attempt in 0..200u64 {
        let base = 20_000 + ((seed.wrapping_mul(2_654_435_761) + attempt * 7_919) % 11_000) as u16;
        let free = [0u16, 100, 200].iter().all(|block| {
            (0..3).all(|i| std::net::TcpListener::bind(("127.0.0.1", base + block + i)).is_ok())
        });
        if free {
            return base;
        }
    }
    panic!("no free block of ports for bench stall");
}

/// A member that refuses what the benchmark passed it ends the run at
/// once, with the member's own reason, not after the readiness wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_stall_names_a_member_that_refused_its_flags() {
    let dir = tempfile::tempdir().expect("temp dir");
    let base = stall_base_port().to_string();
    let args = [
        "bench",
        "stall",
        "--snapshot-max-log-bytes",
        "1000",
        "--base-port",
        &base,
        "--dir",
        dir.path().to_str().expect("utf-8 path"),
    ];
    // Within `flotilla`'s wait, not after the benchmark's 60 s one.
    let err = flotilla(&[], &args, None).await.failed(1);
    assert!(err.contains("exited with"), "{err}");
    assert!(err.contains("invalid snapshot-max-log-bytes"), "{err}");
    assert!(err.contains(".log"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_stall_reports_its_phases_and_the_catch_up() {
    let dir = tempfile::tempdir().expect("temp dir");
    let base = stall_base_port().to_string();
    let args = [
        "-w",
        "json",
        "bench",
        "stall",
        "--keys",
        "640",
        "--value-bytes",
        "16",
        "--seconds",
        "1",
        "--writers",
        "2",
        "--readers",
        "1",
        "--watchers",
        "2",
        "--catch-up-puts",
        "640",
        // Not the 45 s default: a short pause is as good a smoke test.
        "--pause-seconds",
        "1",
        "--delete-keys",
        "640",
        // Passed on to the members, which refuse a value out of bounds.
        "--snapshot-max-log-bytes",
        "2097152",
        "--base-port",
        &base,
        "--dir",
        dir.path().to_str().expect("utf-8 path"),
    ];
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_flotilla"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the flotilla binary runs");
    // Three members start, fill, five phases, the catch-up, three stop.
    let out = tokio::time::timeout(WAIT * 4, child.wait_with_output())
        .await
        .expect("bench stall finishes")
        .expect("wait for flotilla");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let doc = json(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(doc["snapshot_max_log_bytes"], 2_097_152, "{doc}");
    let phases = doc["phases"].as_array().expect("phases");
    let names: Vec<&str> = phases.iter().filter_map(|p| p["name"].as_str()).collect();
    assert_eq!(
        names,
        ["baseline", "reads", "watch", "delete", "compact"],
        "{doc}"
    );
    for p in phases {
        assert!(p["writes"]["count"].as_u64() > Some(0), "{doc}");
        assert!(p["writes_per_s"].as_f64() > Some(0.0), "{doc}");
    }
    // Only the read phase reads and snapshots.
    assert_eq!(phases[0]["range_limit_1"]["count"], 0, "{doc}");
    assert!(
        phases[1]["range_limit_1"]["count"].as_u64() > Some(0),
        "{doc}"
    );
    assert!(phases[1]["count_only"]["count"].as_u64() > Some(0), "{doc}");
    // Only the watch phase watches: each stream sees the phase's writes,
    // and none is cut off.
    let watch = &phases[2]["watch"];
    assert_eq!(watch["streams"], 2, "{doc}");
    assert!(watch["events"].as_u64() > Some(0), "{doc}");
    assert_eq!(watch["ended_early"], 0, "{doc}");
    assert!(
        phases.iter().filter(|p| !p["watch"].is_null()).count() == 1,
        "{doc}"
    );
    // Only the bulk phases send a bulk request: the delete removes its
    // whole fill, the compact follows it.
    assert!(phases[..3].iter().all(|p| p["bulk"].is_null()), "{doc}");
    let (delete, compact) = (&phases[3]["bulk"], &phases[4]["bulk"]);
    assert_eq!(delete["request"], "delete-range", "{doc}");
    assert_eq!(delete["keys"], 640, "{doc}");
    assert_eq!(delete["deleted"], 640, "{doc}");
    assert_eq!(delete["keys_left"], 0, "{doc}");
    assert!(delete["error"].is_null(), "{doc}");
    assert_eq!(compact["request"], "compact", "{doc}");
    assert_eq!(compact["keys"], 0, "{doc}");
    assert!(
        compact["revision"].as_i64() > delete["revision"].as_i64(),
        "{doc}"
    );
    assert!(compact["error"].is_null(), "{doc}");
    for bulk in [delete, compact] {
        // One term per member (null where Status timed out: not asserted,
        // a loaded machine may be slow to answer).
        for views in [&bulk["before"], &bulk["after"]] {
            assert_eq!(views["terms"].as_array().map(Vec::len), Some(3), "{doc}");
        }
        assert!(bulk["all_applied_ms"].as_f64().is_some(), "{doc}");
    }
    let catch = &doc["catch_up"];
    assert_eq!(catch["puts"], 640, "{doc}");
    assert!(catch["caught_up_ms"].as_f64() >= Some(0.0), "{doc}");
    // Ten transactions stay within the entries the leader keeps: the
    // follower catches up by appends, no snapshot.
    assert_eq!(catch["snapshots_installed"].as_u64(), Some(0), "{doc}");
    assert_eq!(catch["snapshot_sends"].as_u64(), Some(0), "{doc}");
}
