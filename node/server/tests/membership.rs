//! Membership changes on real `flotilla-node` processes, the way an
//! orchestrator drives them: every founding member replaced one at a time
//! (add a learner, start it, promote it, remove the founder) under a client
//! load whose history must be linearizable; a member joining after every
//! founder is gone; removed members that stop by themselves and refuse to
//! come back on their old data; and the leader killed at each step of an
//! add and a remove, after which the member table and Raft's configuration
//! must still agree. Waits are bounded; nothing asserts on durations.

#![cfg(unix)]

mod common;
#[path = "common/processes.rs"]
mod processes;
#[path = "common/workload.rs"]
mod workload;

use common::{Run, WAIT};
use flotilla_proto::etcdserverpb::cluster_client::ClusterClient;
use flotilla_proto::etcdserverpb::{
    Member, MemberAddRequest, MemberListRequest, MemberPromoteRequest, MemberRemoveRequest,
};
use flotilla_tests::linearizability::{Budget, check_and_report};
use processes::{PROCESS_WAIT, ProcessCluster, ProcessOptions, channel};
use std::sync::atomic::Ordering;
use std::time::Duration;
use tonic::Code;
use workload::{count_acked_writes, lost_writes, summarize};

/// Concurrent clients of the replacement test.
const CLIENTS: u64 = 3;

/// One attempt of a Cluster call at each running member in turn, until one
/// answers for good or the wait runs out: a transient refusal (no leader, a
/// leader change, a learner not caught up yet) is tried again.
async fn cluster_call<T, F, Fut>(
    c: &ProcessCluster,
    what: &str,
    mut call: F,
) -> Result<T, tonic::Status>
where
    F: FnMut(ClusterClient<tonic::transport::Channel>) -> Fut,
    Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    let deadline = tokio::time::Instant::now() + PROCESS_WAIT;
    let mut last = tonic::Status::unavailable("no attempt");
    loop {
        for url in c.running_endpoints() {
            let attempt = call(ClusterClient::new(channel(&url)));
            match tokio::time::timeout(Duration::from_secs(3), attempt).await {
                Ok(Ok(r)) => return Ok(r.into_inner()),
                Ok(Err(s)) if transient(&s) => last = s,
                Ok(Err(s)) => return Err(s),
                Err(_) => last = tonic::Status::deadline_exceeded("attempt timed out"),
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: no member answered for good within the wait; last: {last:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn transient(s: &tonic::Status) -> bool {
    matches!(
        s.code(),
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled
    ) || s.message().contains("in sync with leader")
        || s.message().contains("not committed yet")
        || s.message().contains("not enough started members")
        || s.message()
            .contains("has not committed an entry of its term")
}

/// The member table, read linearizably.
async fn members(c: &ProcessCluster) -> Vec<Member> {
    cluster_call(c, "member list", |mut cl| async move {
        cl.member_list(MemberListRequest { linearizable: true })
            .await
    })
    .await
    .expect("member list")
    .members
}

/// Adds a learner at `peer_url`; its id. A retried add that had gone
/// through is found by its URL.
async fn add_learner(c: &ProcessCluster, peer_url: &str) -> u64 {
    let url = peer_url.to_string();
    let added = cluster_call(c, "member add", |mut cl| {
        let url = url.clone();
        async move {
            cl.member_add(MemberAddRequest {
                peer_ur_ls: vec![url],
                is_learner: true,
            })
            .await
        }
    })
    .await;
    match added {
        Ok(r) => r.member.expect("the added member").id,
        Err(s) if s.message().contains("Peer URLs already exists") => members(c)
            .await
            .iter()
            .find(|m| m.peer_ur_ls == [peer_url])
            .map(|m| m.id)
            .expect("added by an earlier attempt"),
        Err(s) => panic!("member add {peer_url}: {s:?}"),
    }
}

/// Promotes `id`, retrying while it catches up.
async fn promote(c: &ProcessCluster, id: u64) {
    let promoted = cluster_call(c, "member promote", |mut cl| async move {
        cl.member_promote(MemberPromoteRequest { id }).await
    })
    .await;
    match promoted {
        Ok(_) => {}
        // A retried promotion that had gone through.
        Err(s) if s.message().contains("can only promote a learner member") => {}
        Err(s) => panic!("member promote {id:x}: {s:?}"),
    }
}

/// Removes `id`; a retried removal that had gone through is fine.
async fn remove(c: &ProcessCluster, id: u64) {
    let removed = cluster_call(c, "member remove", |mut cl| async move {
        cl.member_remove(MemberRemoveRequest { id }).await
    })
    .await;
    match removed {
        Ok(_) => {}
        Err(s) if s.code() == Code::NotFound => {}
        Err(s) => panic!("member remove {id:x}: {s:?}"),
    }
}

/// The `--initial-cluster` of a new member `name` at `peer_url`, as
/// `etcdctl member add` prints it: every started member, and the new one.
fn initial_cluster_for(members: &[Member], name: &str, peer_url: &str) -> String {
    let mut entries: Vec<String> = members
        .iter()
        .filter(|m| {
            !m.name.is_empty() && m.peer_ur_ls.first().map(String::as_str) != Some(peer_url)
        })
        .flat_map(|m| m.peer_ur_ls.iter().map(move |u| format!("{}={u}", m.name)))
        .collect();
    entries.push(format!("{name}={peer_url}"));
    entries.join(",")
}

/// Adds a spare as a learner, starts it, promotes it once caught up; its
/// index and id.
async fn add_and_promote(c: &mut ProcessCluster) -> (usize, u64) {
    let i = c.add_spare();
    let peer_url = c.members[i].peer_url();
    let id = add_learner(c, &peer_url).await;
    let table = members(c).await;
    c.members[i].join_cluster = Some(initial_cluster_for(&table, &c.members[i].name, &peer_url));
    c.start_member(i).await;
    promote(c, id).await;
    (i, id)
}

/// The id of member `i`, from the table by its peer URL.
async fn id_of(c: &ProcessCluster, i: usize) -> u64 {
    let url = c.members[i].peer_url();
    members(c)
        .await
        .iter()
        .find(|m| m.peer_ur_ls == [url.clone()])
        .map(|m| m.id)
        .unwrap_or_else(|| panic!("member {i} ({url}) is not in the table"))
}

/// Asserts that member `i` stopped by itself, with a non-zero exit and the
/// reason in its log.
async fn assert_stopped_as_removed(c: &mut ProcessCluster, i: usize) {
    let status = c
        .wait_exit(i, PROCESS_WAIT)
        .await
        .unwrap_or_else(|| panic!("removed member {i} still runs; log:\n{}", c.log_tail(i)));
    assert!(
        !status.success(),
        "a removed member exits with an error: {status}"
    );
    let log = c.log_tail(i);
    assert!(
        log.contains("was removed"),
        "member {i} says why it stopped:\n{log}"
    );
}

/// Every founder replaced under load, then a member added after all of
/// them are gone; removed members stop and cannot come back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_founder_replaced_one_at_a_time_under_load() {
    let test = "every_founder_replaced_one_at_a_time_under_load";
    let mut c = ProcessCluster::start(
        ProcessOptions::default(),
        format!(
            "{test}: replay with cargo test -p flotilla-node --test membership -- {test} --exact"
        ),
    )
    .await;
    let founders: Vec<u64> = {
        let mut ids = Vec::new();
        for i in 0..3 {
            ids.push(id_of(&c, i).await);
        }
        ids
    };
    // The clients know every member there will be: the founders and the
    // three that replace them (their ports are taken now, unstarted).
    let spares: Vec<usize> = (0..3).map(|_| c.add_spare()).collect();
    let run = Run::new();
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|id| tokio::spawn(run.clone().client(id, c.endpoints(), 0xf107_3e3b)))
        .collect();

    for (round, founder) in founders.iter().enumerate() {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let spare = spares[round];
        let peer_url = c.members[spare].peer_url();
        let id = add_learner(&c, &peer_url).await;
        let table = members(&c).await;
        let learner = table.iter().find(|m| m.id == id).expect("listed");
        assert!(learner.is_learner && learner.name.is_empty(), "{learner:?}");
        c.members[spare].join_cluster = Some(initial_cluster_for(
            &table,
            &c.members[spare].name,
            &peer_url,
        ));
        c.start_member(spare).await;
        promote(&c, id).await;
        remove(&c, *founder).await;
        // The founder learns it was removed and stops by itself.
        assert_stopped_as_removed(&mut c, round).await;
        let table = members(&c).await;
        assert_eq!(table.len(), 3, "one member in, one out: {table:?}");
        assert!(table.iter().all(|m| !m.is_learner), "{table:?}");
    }
    let table = members(&c).await;
    assert!(
        table.iter().all(|m| !founders.contains(&m.id)),
        "no founder left: {table:?}"
    );

    // A member joins although every founder is gone: it asks the members
    // its --initial-cluster names (today's), not the founders.
    let (late, late_id) = add_and_promote(&mut c).await;
    assert!(c.members[late].is_running());
    assert_eq!(members(&c).await.len(), 4);

    // A removed founder restarted on its old data refuses to run, once it
    // can reach a member of today's cluster: every founder it knew is gone,
    // so it is given the current members to ask, as a StatefulSet's pods
    // are given their headless Service.
    let current: Vec<String> = c
        .members
        .iter()
        .filter(|m| m.is_running())
        .map(|m| format!("127.0.0.1:{}", m.peer_port))
        .collect();
    c.members[0].extra_args = vec!["--discovery-peers".into(), current.join(",")];
    let (status, log) = c.start_expecting_exit(0).await;
    assert!(!status.success(), "{status}");
    assert!(log.contains("was removed"), "{log}");

    c.wait_ready().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    run.stop.store(true, Ordering::Relaxed);
    for t in tasks {
        tokio::time::timeout(WAIT, t)
            .await
            .expect("a client stops within the wait")
            .expect("client task");
    }
    let finals = run.final_reads(&c.running_endpoints()).await;
    let history = run.recorder.history();
    let summary = summarize(&history);
    eprintln!("{test}: {summary}; late member {late_id:x}");
    assert!(
        count_acked_writes(&history) >= 50,
        "too few acknowledged writes to test anything: {summary}"
    );
    let lost = lost_writes(&history, &finals);
    assert!(
        lost.is_empty(),
        "acknowledged writes were lost:\n{}",
        lost.join("\n")
    );
    let budget = Budget {
        wall_time_max: Some(Duration::from_secs(20)),
        ..Budget::default()
    };
    let report = check_and_report(&history, budget, test, 0).expect("a well-formed history");
    assert!(
        report.is_ok(),
        "the history is not linearizable ({summary})\n{report}"
    );
}

/// Where the leader is killed in [`the_leader_killed_at_each_step_of_a_change`].
#[derive(Clone, Copy, Debug)]
enum Step {
    /// While MemberAdd is in flight.
    Add,
    /// After the add, before the new member started.
    AddedNotStarted,
    /// While MemberPromote is in flight.
    Promote,
    /// While MemberRemove is in flight.
    Remove,
}

/// Kills the leader right after sending `request` to it (the change may or
/// may not commit), restarts it, and waits for a leader again.
async fn kill_leader_during<F, Fut>(c: &mut ProcessCluster, request: F)
where
    F: FnOnce(ClusterClient<tonic::transport::Channel>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let leader = wait_leader(c).await;
    let pending = tokio::spawn(request(ClusterClient::new(channel(
        &c.members[leader].url(),
    ))));
    tokio::time::sleep(Duration::from_millis(5)).await;
    c.kill(leader);
    let _ = tokio::time::timeout(Duration::from_secs(5), pending).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    c.restart(leader).await;
    wait_leader(c).await;
}

async fn wait_leader(c: &ProcessCluster) -> usize {
    let deadline = tokio::time::Instant::now() + PROCESS_WAIT;
    loop {
        if let Some(l) = c.leader().await {
            return l;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no leader within the wait"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every running member's own (serializable) member table.
async fn tables(c: &ProcessCluster) -> Vec<Vec<Member>> {
    let mut all = Vec::new();
    for url in c.running_endpoints() {
        let mut cl = ClusterClient::new(channel(&url));
        let list = tokio::time::timeout(
            Duration::from_secs(2),
            cl.member_list(MemberListRequest {
                linearizable: false,
            }),
        )
        .await
        .expect("member list within 2 s")
        .expect("member list")
        .into_inner()
        .members;
        all.push(list);
    }
    all
}

/// The leader SIGKILLed at each step of adding, promoting and removing a
/// member. Whatever committed, the table and Raft's configuration agree:
/// the members converge on one table, a listed learner can be started and
/// promoted (Raft has it as a learner), and a removed member is gone from
/// both (the cluster keeps a working quorum of the members listed).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_leader_killed_at_each_step_of_a_change() {
    let test = "the_leader_killed_at_each_step_of_a_change";
    let mut c = ProcessCluster::start(
        ProcessOptions::default(),
        format!(
            "{test}: replay with cargo test -p flotilla-node --test membership -- {test} --exact"
        ),
    )
    .await;
    for step in [
        Step::Add,
        Step::AddedNotStarted,
        Step::Promote,
        Step::Remove,
    ] {
        let i = c.add_spare();
        let peer_url = c.members[i].peer_url();
        if matches!(step, Step::Add) {
            let url = peer_url.clone();
            kill_leader_during(&mut c, move |mut cl| async move {
                let _ = cl
                    .member_add(MemberAddRequest {
                        peer_ur_ls: vec![url],
                        is_learner: true,
                    })
                    .await;
            })
            .await;
        }
        // Listed or not, the add completes now (a retry finds it listed).
        let id = add_learner(&c, &peer_url).await;
        if matches!(step, Step::AddedNotStarted) {
            kill_leader_during(&mut c, |_| async {}).await;
        }
        let table = members(&c).await;
        c.members[i].join_cluster =
            Some(initial_cluster_for(&table, &c.members[i].name, &peer_url));
        c.start_member(i).await;
        if matches!(step, Step::Promote) {
            kill_leader_during(&mut c, move |mut cl| async move {
                let _ = cl.member_promote(MemberPromoteRequest { id }).await;
            })
            .await;
        }
        // Raft has the member as a learner iff the table does: promotion
        // goes through (the core refuses to promote a non-learner).
        promote(&c, id).await;
        if matches!(step, Step::Remove) {
            kill_leader_during(&mut c, move |mut cl| async move {
                let _ = cl.member_remove(MemberRemoveRequest { id }).await;
            })
            .await;
        }
        remove(&c, id).await;
        assert_stopped_as_removed(&mut c, i).await;
        c.wait_ready().await;
        let all = tables(&c).await;
        assert!(
            all.iter().all(|t| t == &all[0]),
            "after {step:?} the members' tables differ: {all:?}"
        );
        assert_eq!(all[0].len(), 3, "after {step:?}: {:?}", all[0]);
        assert!(all[0].iter().all(|m| m.id != id), "after {step:?}");
        eprintln!("{test}: {step:?} ok");
    }
}

/// Runs etcdctl (v3 API) against `endpoints`; its stdout, or a panic with
/// its stderr.
fn etcdctl(endpoints: &str, args: &[&str]) -> String {
    let out = std::process::Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg("--endpoints")
        .arg(endpoints)
        .arg("--command-timeout=5s")
        .args(args)
        .output()
        .expect("run etcdctl");
    assert!(
        out.status.success(),
        "etcdctl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

/// etcd's own workflow, with etcd's own tool: `etcdctl member add
/// --learner` prints the settings to start the new member with; it starts
/// with exactly those (as flags), joins, and is promoted and removed with
/// etcdctl.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn etcdctl_member_add_promote_remove() {
    if std::process::Command::new("etcdctl")
        .arg("version")
        .output()
        .is_err()
    {
        assert!(
            std::env::var_os("CI").is_none(),
            "etcdctl is missing in CI: .ci/run installs Debian's etcd-client"
        );
        eprintln!("etcdctl not installed: skipping (apt-get install etcd-client)");
        return;
    }
    let test = "etcdctl_member_add_promote_remove";
    let mut c = ProcessCluster::start(
        ProcessOptions::default(),
        format!(
            "{test}: replay with cargo test -p flotilla-node --test membership -- {test} --exact"
        ),
    )
    .await;
    let endpoints = c
        .running_endpoints()
        .iter()
        .map(|u| u.trim_start_matches("http://").to_string())
        .collect::<Vec<_>>()
        .join(",");
    let i = c.add_spare();
    let peer_url = c.members[i].peer_url();
    let name = c.members[i].name.clone();
    let e = endpoints.clone();
    let added = tokio::task::spawn_blocking({
        let (peer_url, name) = (peer_url.clone(), name.clone());
        move || {
            etcdctl(
                &e,
                &[
                    "member",
                    "add",
                    &name,
                    &format!("--peer-urls={peer_url}"),
                    "--learner",
                ],
            )
        }
    })
    .await
    .expect("etcdctl");
    // etcdctl's own output: `Member <hex> added to cluster <hex>`, then
    // ETCD_NAME, ETCD_INITIAL_CLUSTER, ETCD_INITIAL_ADVERTISE_PEER_URLS and
    // ETCD_INITIAL_CLUSTER_STATE="existing".
    let id = added
        .split_whitespace()
        .nth(1)
        .unwrap_or_else(|| panic!("no member id in {added:?}"))
        .to_string();
    let printed = |key: &str| {
        added
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=\"")))
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or_else(|| panic!("{key} missing from {added:?}"))
            .to_string()
    };
    assert_eq!(printed("ETCD_NAME"), name);
    assert_eq!(printed("ETCD_INITIAL_CLUSTER_STATE"), "existing");
    assert_eq!(printed("ETCD_INITIAL_ADVERTISE_PEER_URLS"), peer_url);
    let initial = printed("ETCD_INITIAL_CLUSTER");
    assert!(initial.contains(&format!("{name}={peer_url}")), "{initial}");
    c.members[i].join_cluster = Some(initial);
    c.start_member(i).await;

    let e = endpoints.clone();
    let promote_id = id.clone();
    let deadline = tokio::time::Instant::now() + PROCESS_WAIT;
    loop {
        let (e, id) = (e.clone(), promote_id.clone());
        let out = tokio::task::spawn_blocking(move || {
            std::process::Command::new("etcdctl")
                .env("ETCDCTL_API", "3")
                .args(["--endpoints", &e, "member", "promote", &id])
                .output()
                .expect("run etcdctl")
        })
        .await
        .expect("etcdctl");
        if out.status.success() {
            let text = String::from_utf8_lossy(&out.stdout).to_string();
            assert!(text.contains("promoted"), "{text}");
            break;
        }
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(
            err.contains("in sync with leader") && tokio::time::Instant::now() < deadline,
            "etcdctl member promote: {err}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let e = endpoints.clone();
    let list = tokio::task::spawn_blocking(move || etcdctl(&e, &["member", "list"]))
        .await
        .expect("etcdctl");
    let row = list
        .lines()
        .find(|l| l.starts_with(&id))
        .unwrap_or_else(|| panic!("{id} not listed: {list}"));
    assert!(row.contains(&format!(", started, {name},")), "{row}");
    assert!(row.ends_with(", false"), "a voter now: {row}");

    let e = endpoints.clone();
    let remove_id = id.clone();
    let removed =
        tokio::task::spawn_blocking(move || etcdctl(&e, &["member", "remove", &remove_id]))
            .await
            .expect("etcdctl");
    assert!(removed.contains("removed from cluster"), "{removed}");
    assert_stopped_as_removed(&mut c, i).await;
    c.wait_ready().await;
}
