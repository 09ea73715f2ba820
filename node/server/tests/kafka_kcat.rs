//! The Kafka listener against a client no one here wrote: Debian's `kcat`
//! (librdkafka) reads metadata, produces with acks=all and idempotence,
//! and consumes, over three real `flotilla-node` processes; the records
//! are the same through the gRPC API both ways. Plus the listener's answers
//! to requests it does not serve and to frames it refuses, on a raw socket.
//! `.ci/run` installs kcat; on a machine without it the kcat test says so
//! and passes only outside CI. Every wait is bounded.

#![cfg(unix)]

#[path = "common/broker.rs"]
mod broker;
mod common;
#[path = "common/processes.rs"]
mod processes;

use broker::{BROKER_WAIT, create, member_at, read_all, start_cluster};
use bytes::{Buf, BufMut, BytesMut};
use flotilla_client::broker::BrokerClient;
use flotilla_proto::broker as pb;
use std::collections::BTreeSet;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Longest one kcat run may take (`timeout` ends it after that).
const KCAT_SECS: &str = "60";

fn kcat_installed() -> bool {
    let found = std::process::Command::new("kcat")
        .arg("-V")
        .output()
        .is_ok();
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "kcat is missing in CI: .ci/run installs Debian's kcat"
        );
        eprintln!("kcat not installed: skipping (apt-get install kcat)");
    }
    found
}

/// Runs kcat with `args` (and `stdin`), bounded; returns stdout, and fails
/// the test with stderr if kcat failed.
async fn kcat(args: Vec<String>, stdin: Option<String>) -> String {
    tokio::task::spawn_blocking(move || {
        let mut child = std::process::Command::new("timeout")
            .arg(KCAT_SECS)
            .arg("kcat")
            .args(&args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("kcat runs");
        {
            let mut input = child.stdin.take().expect("stdin");
            if let Some(text) = stdin {
                std::io::Write::write_all(&mut input, text.as_bytes()).expect("write stdin");
            }
        }
        let out = child.wait_with_output().expect("kcat finishes");
        assert!(
            out.status.success(),
            "kcat {args:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    })
    .await
    .expect("kcat task")
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kcat_metadata_produce_and_consume() {
    if !kcat_installed() {
        return;
    }
    let cluster = start_cluster("kafka_kcat::kcat_metadata_produce_and_consume").await;
    let client = BrokerClient::new(&cluster.endpoints()).expect("client");
    create(&client, "kc", 3, 3, 2).await;
    let bootstrap: String = cluster
        .members
        .iter()
        .map(|m| m.kafka_addr())
        .collect::<Vec<_>>()
        .join(",");

    // Metadata: three brokers at their Kafka addresses, three partitions
    // with a leader and a full ISR each.
    let meta = kcat(strings(&["-b", &bootstrap, "-L", "-J", "-t", "kc"]), None).await;
    let meta: serde_json::Value = serde_json::from_str(&meta).expect("kcat -J output");
    let brokers: BTreeSet<String> = meta["brokers"]
        .as_array()
        .expect("brokers")
        .iter()
        .map(|b| b["name"].as_str().expect("name").to_string())
        .collect();
    let expected: BTreeSet<String> = cluster.members.iter().map(|m| m.kafka_addr()).collect();
    assert_eq!(brokers, expected, "{meta}");
    let partitions = meta["topics"][0]["partitions"]
        .as_array()
        .expect("partitions");
    assert_eq!(partitions.len(), 3, "{meta}");
    for p in partitions {
        assert_ne!(p["leader"].as_i64(), Some(-1), "{meta}");
        assert_eq!(p["isrs"].as_array().map(Vec::len), Some(3), "{meta}");
    }

    // Produce keys and values (and a header) with acks=all, idempotent.
    let lines: String = (0..100).map(|i| format!("k{i}:v{i}\n")).collect();
    kcat(
        strings(&[
            "-b",
            &bootstrap,
            "-P",
            "-t",
            "kc",
            "-K:",
            "-H",
            "origin=kcat",
            "-X",
            "acks=all",
            "-X",
            "enable.idempotence=true",
            "-X",
            "compression.codec=lz4",
        ]),
        Some(lines),
    )
    .await;

    // The same records through the gRPC API, once each.
    let mut seen = BTreeSet::new();
    for p in 0..3 {
        for r in read_all(&client, "kc", p).await {
            assert!(r.has_key, "{r:?}");
            let key = String::from_utf8_lossy(&r.key).into_owned();
            let value = String::from_utf8_lossy(&r.value).into_owned();
            assert_eq!(value, key.replacen('k', "v", 1), "{r:?}");
            assert_eq!(r.headers.len(), 1, "{r:?}");
            assert_eq!(&r.headers[0].key[..], b"origin");
            assert_eq!(&r.headers[0].value[..], b"kcat");
            assert!(seen.insert(key), "a record was written twice: {r:?}");
        }
    }
    assert_eq!(seen.len(), 100, "every kcat record reads back through gRPC");

    // Records produced through gRPC read back through kcat, with the rest.
    let grpc: Vec<pb::Record> = (0..10)
        .map(|i| pb::Record {
            key: format!("g{i}").into_bytes().into(),
            has_key: true,
            value: format!("grpc-{i}").into_bytes().into(),
            ..Default::default()
        })
        .collect();
    let resp = client
        .produce(pb::ProduceRequest {
            topic: "kc".into(),
            partition: 1,
            records: grpc,
            acks: pb::Acks::All as i32,
            ..Default::default()
        })
        .await
        .expect("gRPC produce");
    assert!(resp.error.is_none(), "{resp:?}");
    let consumed = kcat(
        strings(&[
            "-b",
            &bootstrap,
            "-C",
            "-t",
            "kc",
            "-o",
            "beginning",
            "-e",
            "-q",
            "-f",
            "%p|%k|%s|%h\n",
        ]),
        None,
    )
    .await;
    let rows: Vec<Vec<&str>> = consumed.lines().map(|l| l.split('|').collect()).collect();
    assert_eq!(rows.len(), 110, "{consumed}");
    let keys: BTreeSet<&str> = rows.iter().map(|r| r[1]).collect();
    assert_eq!(keys.len(), 110, "each record once: {consumed}");
    for i in 0..10 {
        let key = format!("g{i}");
        let row = rows.iter().find(|r| r[1] == key).expect("a gRPC record");
        assert_eq!((row[0], row[2]), ("1", format!("grpc-{i}").as_str()));
    }
    assert!(
        rows.iter()
            .filter(|r| r[1].starts_with('k'))
            .all(|r| r[3] == "origin=kcat"),
        "{consumed}"
    );
}

/// Leader failover while kcat produces with acks=all and idempotence: the
/// leader is SIGKILLed mid-stream; kcat retries on the new leader (the
/// client sees retriable errors only: it delivers everything and exits 0),
/// and every record is in the log exactly once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kcat_idempotent_produce_survives_leader_failover() {
    if !kcat_installed() {
        return;
    }
    let mut cluster =
        start_cluster("kafka_kcat::kcat_idempotent_produce_survives_leader_failover").await;
    let client = BrokerClient::new(&cluster.endpoints()).expect("client");
    create(&client, "fo", 1, 3, 2).await;
    let deadline = tokio::time::Instant::now() + BROKER_WAIT;
    let old = loop {
        let d = client.describe_topic("fo").await.expect("describe");
        if d.partitions[0].isr.len() == 3 {
            break d.partitions[0].clone();
        }
        assert!(tokio::time::Instant::now() < deadline, "ISR never full");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let victim = member_at(&cluster, &old.leader_addr);
    let bootstrap: String = cluster
        .members
        .iter()
        .map(|m| m.kafka_addr())
        .collect::<Vec<_>>()
        .join(",");
    const RECORDS: usize = 3000;
    let mut child = std::process::Command::new("timeout")
        .arg(KCAT_SECS)
        .arg("kcat")
        .args([
            "-b",
            &bootstrap,
            "-P",
            "-t",
            "fo",
            "-p",
            "0",
            "-X",
            "acks=all",
            "-X",
            "enable.idempotence=true",
            "-X",
            "linger.ms=5",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("kcat runs");
    let mut input = child.stdin.take().expect("stdin");
    let (halfway_tx, halfway_rx) = tokio::sync::oneshot::channel();
    let writer = std::thread::spawn(move || {
        let mut halfway = Some(halfway_tx);
        for i in 0..RECORDS {
            std::io::Write::write_all(&mut input, format!("r{i}\n").as_bytes()).expect("write");
            if i % 20 == 0 {
                std::thread::sleep(Duration::from_millis(2));
            }
            if i == RECORDS / 3
                && let Some(tx) = halfway.take()
            {
                let _ = tx.send(());
            }
        }
        // Dropping stdin ends kcat's input: it flushes and exits.
    });
    halfway_rx.await.expect("the writer reached a third");
    cluster.kill(victim);
    writer.join().expect("writer");
    let out = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .expect("join")
        .expect("kcat finishes");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "kcat failed ({}): {stderr}",
        out.status
    );
    let now = client.describe_topic("fo").await.expect("describe");
    assert_ne!(
        now.partitions[0].leader, old.leader,
        "the leader moved while kcat produced"
    );
    let records = read_all(&client, "fo", 0).await;
    let values: Vec<String> = records
        .iter()
        .map(|r| String::from_utf8_lossy(&r.value).into_owned())
        .collect();
    let expected: Vec<String> = (0..RECORDS).map(|i| format!("r{i}")).collect();
    assert_eq!(
        values.len(),
        RECORDS,
        "each record exactly once (kcat: {stderr})"
    );
    assert_eq!(values, expected, "in order");
}

/// Sends one request frame: api key, version, correlation id, client id
/// (null), then `body`.
async fn send(s: &mut TcpStream, api: i16, version: i16, correlation: i32, body: &[u8]) {
    let mut b = BytesMut::new();
    b.put_i32(10 + body.len() as i32);
    b.put_i16(api);
    b.put_i16(version);
    b.put_i32(correlation);
    b.put_i16(-1);
    b.put_slice(body);
    s.write_all(&b).await.expect("send");
}

/// Reads one response frame.
async fn receive(s: &mut TcpStream) -> Option<bytes::Bytes> {
    let mut size = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut size))
        .await
        .expect("an answer or a close in time")
        .ok()?;
    let mut buf = vec![0; i32::from_be_bytes(size) as usize];
    s.read_exact(&mut buf).await.ok()?;
    Some(buf.into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unserved_requests_get_errors_and_bad_frames_close() {
    let cluster =
        start_cluster("kafka_kcat::unserved_requests_get_errors_and_bad_frames_close").await;
    let addr = cluster.members[0].kafka_addr();
    let mut s = TcpStream::connect(&addr).await.expect("connect");

    // An unknown API key: the header and UNSUPPORTED_VERSION (35).
    send(&mut s, 9999, 0, 7, &[]).await;
    let mut r = receive(&mut s).await.expect("an answer");
    assert_eq!((r.get_i32(), r.get_i16()), (7, 35));
    // A known API at a version not served: the same.
    send(&mut s, 3, 99, 8, &[]).await;
    let mut r = receive(&mut s).await.expect("an answer");
    assert_eq!((r.get_i32(), r.get_i16()), (8, 35));
    // ApiVersions above ours: a v0 answer with 35 and our versions.
    send(&mut s, 18, 99, 9, &[]).await;
    let mut r = receive(&mut s).await.expect("an answer");
    assert_eq!((r.get_i32(), r.get_i16()), (9, 35));
    let apis = r.get_i32();
    assert!(apis >= 8, "{apis} APIs listed");
    // The connection still serves: ApiVersions v0 (empty body).
    send(&mut s, 18, 0, 10, &[]).await;
    let mut r = receive(&mut s).await.expect("an answer");
    assert_eq!((r.get_i32(), r.get_i16()), (10, 0));

    // Requests sent back to back are answered in the order sent.
    for c in 20..25 {
        send(&mut s, 18, 0, c, &[]).await;
    }
    for c in 20..25 {
        let mut r = receive(&mut s).await.expect("an answer");
        assert_eq!((r.get_i32(), r.get_i16()), (c, 0));
    }

    // A frame above the bound closes the connection.
    s.write_all(&(200i32 << 20).to_be_bytes())
        .await
        .expect("send");
    assert!(receive(&mut s).await.is_none(), "closed");

    // A lying body (a Metadata v1 topic array of i32::MAX entries, 4
    // bytes sent) is refused and closes the connection; the node lives.
    let mut s = TcpStream::connect(&addr).await.expect("connect");
    send(&mut s, 3, 1, 11, &0x7fff_ffffi32.to_be_bytes()).await;
    assert!(receive(&mut s).await.is_none(), "closed");
    let mut s = TcpStream::connect(&addr)
        .await
        .expect("the node still serves");
    send(&mut s, 18, 0, 12, &[]).await;
    let mut r = receive(&mut s).await.expect("an answer");
    assert_eq!((r.get_i32(), r.get_i16()), (12, 0));
}
