//! Kafka consumer groups through clients no one here wrote, over three real
//! `flotilla-node` processes: the Python `confluent-kafka` client (on
//! librdkafka) produces with acks=all and consumes in a group of two with a
//! rebalance on join and on leave (`tests/kafka/clients.py`); `kcat -G`
//! consumes as a group. The committed offsets are the gRPC `Groups`
//! service's: what Kafka clients commit reads back through gRPC, and a
//! gRPC commit is where a Kafka group member starts; a group outlives its
//! coordinator (killed: another broker takes over at a higher generation and
//! the member goes on reading and committing). `.ci/run` installs
//! both clients; on a machine without them the tests say so and pass only
//! outside CI. Every wait is bounded; nothing asserts on durations.

#![cfg(unix)]

#[path = "common/broker.rs"]
mod broker;
mod common;
#[path = "common/processes.rs"]
mod processes;

use broker::{create, start_cluster};
use flotilla_client::broker::BrokerClient;
use flotilla_proto::broker as pb;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// Longest one client run may take (`timeout` ends it after that).
const CLIENT_SECS: &str = "240";

/// Whether `program args` runs; in CI its absence fails the test.
fn installed(what: &str, program: &str, args: &[&str], install: &str) -> bool {
    let ok = Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "{what} is missing in CI: .ci/run installs it ({install})"
        );
        eprintln!("{what} not installed: skipping ({install})");
    }
    ok
}

/// Runs `program args` bounded by [`CLIENT_SECS`]; returns stdout, and
/// fails the test with stderr if it failed.
async fn run(program: &str, args: Vec<String>) -> String {
    let program = program.to_string();
    tokio::task::spawn_blocking(move || {
        let out = Command::new("timeout")
            .arg(CLIENT_SECS)
            .arg(&program)
            .args(&args)
            .stdin(Stdio::null())
            .output()
            .expect("the client runs");
        assert!(
            out.status.success(),
            "{program} {args:?} failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    })
    .await
    .expect("client task")
}

fn bootstrap(cluster: &processes::ProcessCluster) -> String {
    cluster
        .members
        .iter()
        .map(|m| m.kafka_addr())
        .collect::<Vec<_>>()
        .join(",")
}

/// The group's committed offsets through the gRPC service, by partition.
async fn committed(client: &BrokerClient, group: &str, topic: &str) -> BTreeMap<u32, i64> {
    client
        .describe_group(group)
        .await
        .expect("describe group")
        .offsets
        .into_iter()
        .filter(|o| o.topic == topic)
        .map(|o| (o.partition, o.offset))
        .collect()
}

/// Each partition's high watermark.
async fn ends(client: &BrokerClient, topic: &str, partitions: u32) -> BTreeMap<u32, i64> {
    let mut out = BTreeMap::new();
    for p in 0..partitions {
        let end = client
            .list_offset(topic, p, pb::OffsetSpec::Latest, 0)
            .await
            .expect("list offset");
        out.insert(p, end as i64);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn python_client_group_of_two_rebalances_and_commits() {
    if !installed(
        "python3 with confluent-kafka",
        "python3",
        &["-c", "import confluent_kafka"],
        "pip install confluent-kafka",
    ) {
        return;
    }
    let cluster = start_cluster("kafka_groups::python_client_group_of_two").await;
    let client = BrokerClient::new(&cluster.endpoints()).expect("client");
    create(&client, "py-orders", 4, 3, 2).await;
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/kafka/clients.py");
    let out = run(
        "python3",
        vec![
            script.display().to_string(),
            "--bootstrap".into(),
            bootstrap(&cluster),
            "--topic".into(),
            "py-orders".into(),
            "--group".into(),
            "py-readers".into(),
            "--partitions".into(),
            "4".into(),
            "--records".into(),
            "2000".into(),
        ],
    )
    .await;
    let report: serde_json::Value = serde_json::from_str(out.trim().lines().last().unwrap_or(""))
        .unwrap_or_else(|e| panic!("the script's report {out:?}: {e}"));
    eprintln!("clients.py: {report}");
    assert_eq!(report["produced"], 2000, "{report}");
    assert_eq!(
        report["member_b_assignments"]
            .as_array()
            .expect("assignments")
            .len(),
        2,
        "the second member saw the rebalance on its join and on the first's leave: {report}"
    );

    // Through gRPC: every record is there, and the group's commits reach
    // the end of every partition.
    let ends = ends(&client, "py-orders", 4).await;
    assert_eq!(ends.values().sum::<i64>(), 2000);
    assert_eq!(committed(&client, "py-readers", "py-orders").await, ends);
    // Two rebalances after the first generation, and the last (the second
    // member's leave) emptied the group.
    let described = client.describe_group("py-readers").await.expect("describe");
    assert!(described.generation >= 3, "{described:?}");
    assert!(described.members.is_empty(), "{described:?}");
    assert!(
        client
            .list_groups()
            .await
            .expect("list groups")
            .contains(&"py-readers".to_string())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kcat_group_consumer_starts_at_grpc_commits_and_commits_through_kafka() {
    if !installed("kcat", "kcat", &["-V"], "apt-get install kcat") {
        return;
    }
    let cluster = start_cluster("kafka_groups::kcat_group_consumer").await;
    let client = BrokerClient::new(&cluster.endpoints()).expect("client");
    create(&client, "kc-orders", 2, 3, 2).await;
    for p in 0..2 {
        client
            .produce(pb::ProduceRequest {
                topic: "kc-orders".into(),
                partition: p,
                records: broker::records(p, 0, 50),
                acks: pb::Acks::All as i32,
                ..Default::default()
            })
            .await
            .expect("produce");
    }
    // A gRPC standalone commit: partition 0 of the group starts at 20.
    let mut groups =
        pb::groups_client::GroupsClient::new(processes::channel(&cluster.endpoints()[0]));
    let resp = groups
        .commit_offsets(pb::CommitOffsetsRequest {
            group: "kc-readers".into(),
            member_id: String::new(),
            generation: 0,
            offsets: vec![pb::OffsetCommit {
                topic: "kc-orders".into(),
                partition: 0,
                offset: 20,
                metadata: String::new(),
            }],
        })
        .await
        .expect("grpc commit")
        .into_inner();
    assert!(resp.error.is_none(), "{resp:?}");

    let consume = || {
        vec![
            "-b".to_string(),
            bootstrap(&cluster),
            "-G".into(),
            "kc-readers".into(),
            // Not `-o beginning`: with -G, kcat would start every assigned
            // partition there; the group's commits must decide.
            "-X".into(),
            "auto.offset.reset=earliest".into(),
            "-e".into(),
            "-f".into(),
            "%p:%o\n".into(),
            "-X".into(),
            "session.timeout.ms=6000".into(),
            "kc-orders".into(),
        ]
    };
    let first = run("kcat", consume()).await;
    let mut read: BTreeMap<u32, Vec<i64>> = BTreeMap::new();
    for line in first.lines() {
        let (p, o) = line.split_once(':').expect("partition:offset");
        read.entry(p.parse().expect("partition"))
            .or_default()
            .push(o.parse().expect("offset"));
    }
    assert_eq!(
        read.get(&0).map(|o| (o.len(), o.first().copied())),
        Some((30, Some(20))),
        "partition 0 from the gRPC commit on: {first}"
    );
    assert_eq!(read.get(&1).map(Vec::len), Some(50), "{first}");
    // kcat's commits, through gRPC, are at the end of both partitions; a
    // second run of the group has nothing left to read.
    let ends = ends(&client, "kc-orders", 2).await;
    common::eventually("kcat's commits visible through gRPC", || async {
        (committed(&client, "kc-readers", "kc-orders").await == ends).then_some(())
    })
    .await;
    let second = run("kcat", consume()).await;
    assert_eq!(
        second.trim(),
        "",
        "the group's commits are where it resumes"
    );
}

/// A `kcat -G` member running in the background; killed when dropped.
struct Member {
    child: std::process::Child,
    lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Member {
    fn start(bootstrap: &str, group: &str, topic: &str) -> Member {
        let mut child = Command::new("timeout")
            .args([CLIENT_SECS, "kcat", "-b", bootstrap, "-G", group])
            .args(["-X", "auto.offset.reset=earliest"])
            .args(["-X", "session.timeout.ms=6000"])
            .args(["-X", "heartbeat.interval.ms=500"])
            .args(["-X", "auto.commit.interval.ms=500"])
            .args(["-f", "%p:%o\n", "-u", topic])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("kcat runs");
        let out = child.stdout.take().expect("stdout");
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(out).lines() {
                let Ok(line) = line else { return };
                sink.lock().expect("lines").push(line);
            }
        });
        Member { child, lines }
    }

    /// The distinct `partition:offset`s read so far.
    fn distinct(&self) -> std::collections::BTreeSet<String> {
        self.lines.lock().expect("lines").iter().cloned().collect()
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_group_outlives_its_coordinator() {
    if !installed("kcat", "kcat", &["-V"], "apt-get install kcat") {
        return;
    }
    let mut cluster = start_cluster("kafka_groups::a_group_outlives_its_coordinator").await;
    let client = BrokerClient::new(&cluster.endpoints()).expect("client");
    create(&client, "fo-orders", 3, 3, 2).await;
    // 100 records to each partition, retried (bounded) through a leader
    // change; a retry may write a batch twice, so the check below is on
    // offsets, not on counts.
    let produce = |first: u64| {
        let client = &client;
        async move {
            for p in 0..3 {
                common::eventually("an acks=all produce", || async {
                    client
                        .produce(pb::ProduceRequest {
                            topic: "fo-orders".into(),
                            partition: p,
                            records: broker::records(p, first, 100),
                            acks: pb::Acks::All as i32,
                            ..Default::default()
                        })
                        .await
                        .ok()
                })
                .await;
            }
        }
    };
    produce(0).await;
    let member = Member::start(&bootstrap(&cluster), "fo-readers", "fo-orders");
    common::eventually("kcat reading the first 300 records", || async {
        (member.distinct().len() >= 300).then_some(())
    })
    .await;

    // Kill the group's coordinator.
    let kv = flotilla_client::Client::new(
        &cluster.endpoints(),
        flotilla_client::ClientConfig::default(),
    )
    .expect("kv client");
    let record = |key: String| {
        let kv = &kv;
        async move {
            let raw = kv.get(key.as_bytes()).await.ok()??;
            serde_json::from_slice::<serde_json::Value>(&raw).ok()
        }
    };
    let coordinator = record("group:fo-readers/coordinator".into())
        .await
        .expect("a coordinator")["broker"]
        .as_u64()
        .expect("broker id");
    let generation = record("group:fo-readers/kafka-generation".into())
        .await
        .expect("a generation")["generation"]
        .as_i64()
        .expect("generation");
    let addr = record(format!("broker:{coordinator}"))
        .await
        .expect("its registration")["addr"]
        .as_str()
        .expect("addr")
        .to_string();
    let dead = broker::member_at(&cluster, &addr);
    cluster.kill(dead);

    // Another broker coordinates, at a higher generation, and the member
    // reads what is produced after.
    produce(100).await;
    let ends = ends(&client, "fo-orders", 3).await;
    let expected: std::collections::BTreeSet<String> = ends
        .iter()
        .flat_map(|(p, end)| (0..*end).map(move |o| format!("{p}:{o}")))
        .collect();
    assert!(expected.len() >= 600);
    common::eventually("kcat reading every record", || async {
        member.distinct().is_superset(&expected).then_some(())
    })
    .await;
    let now = record("group:fo-readers/coordinator".into())
        .await
        .expect("a coordinator")["broker"]
        .as_u64();
    assert!(now.is_some_and(|b| b != coordinator), "{now:?}");
    let later = record("group:fo-readers/kafka-generation".into())
        .await
        .expect("a generation")["generation"]
        .as_i64()
        .expect("generation");
    assert!(later > generation, "{later} after {generation}");
    assert_eq!(member.distinct(), expected, "nothing past the ends");
    // The rejoined member's commits go through the new coordinator.
    let live = BrokerClient::new(&cluster.running_endpoints()).expect("client");
    common::eventually("the group's commits at the ends", || async {
        (committed(&live, "fo-readers", "fo-orders").await == ends).then_some(())
    })
    .await;
    drop(member);
}
