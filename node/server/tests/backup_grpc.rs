//! Maintenance Snapshot over real gRPC on loopback (the harness is in
//! `common`): the backup is spooled in the member's data directory while it
//! is sent, the spool goes when a client disconnects mid-stream, and a
//! whole download carries etcd's `remaining_bytes` and reads back as the
//! store. Waits are bounded; nothing asserts on durations.

mod common;

use common::*;
use flotilla_node::api::BACKUP_THREAD;
use flotilla_node::backup::{SPOOL_FILE, read_snapshot};
use flotilla_node::kv::{KvConfig, KvStore};
use flotilla_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use flotilla_proto::etcdserverpb::{RangeRequest, SnapshotRequest};

/// Puts of `VALUE_BYTES`: about 8 MB, more than the HTTP/2 windows and the
/// server's queue hold, so a client that stops reading stops the sender.
const PUTS: usize = 160;
const VALUE_BYTES: usize = 50_000;

/// The nice value of this process's thread named `name`, if one runs.
fn thread_nice(name: &str) -> Option<i32> {
    for task in std::fs::read_dir("/proc/self/task").ok()? {
        let path = task.ok()?.path();
        let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        if comm.trim_end() == name {
            let stat = std::fs::read_to_string(path.join("stat")).ok()?;
            // The fields after the command's parenthesis start at the 3rd;
            // the nice value is the 19th.
            let after = &stat[stat.rfind(')')? + 2..];
            return after.split(' ').nth(16)?.parse().ok();
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_snapshot_is_sent_from_a_spool_that_goes_when_the_client_does() {
    let c = Cluster::start().await;
    let l = c.leader();
    let mut kv = c.kv(l).await;
    let value = "x".repeat(VALUE_BYTES);
    for i in 0..PUTS {
        kv.put(put_req(&format!("big/{i:03}"), &value))
            .await
            .expect("put");
    }
    let spool = c.dirs[l].path().join(SPOOL_FILE);
    let mut maintenance = MaintenanceClient::new(c.channel(l).await);

    // A client that reads one message and goes away.
    {
        let mut stream = maintenance
            .snapshot(SnapshotRequest {})
            .await
            .expect("snapshot")
            .into_inner();
        let first = stream.message().await.expect("a message").expect("one");
        assert!(first.remaining_bytes > 0);
        assert!(spool.exists(), "the backup is sent from its spool");
        // Spooled and sent by a thread of its own, at the lowest priority,
        // as a Raft snapshot is written.
        assert_eq!(
            thread_nice(BACKUP_THREAD),
            Some(flotilla_storage::priority::BACKGROUND_NICE),
            "the backup thread's nice value"
        );
    }
    eventually("the spool to go once its client went away", || async {
        (!spool.exists()).then_some(())
    })
    .await;

    // The next backup is not kept waiting by the abandoned one, and a
    // whole download reads back as the store.
    let mut stream = maintenance
        .snapshot(SnapshotRequest {})
        .await
        .expect("snapshot")
        .into_inner();
    let mut file = Vec::new();
    let mut remaining = Vec::new();
    while let Some(message) = stream.message().await.expect("a message") {
        file.extend_from_slice(&message.blob);
        remaining.push((file.len() as u64, message.remaining_bytes));
    }
    let total = file.len() as u64;
    for (received, left) in remaining {
        assert_eq!(received + left, total, "remaining_bytes: what follows");
    }
    assert!(total > (PUTS * VALUE_BYTES) as u64);
    assert!(!spool.exists(), "the spool goes once the file is sent");
    let snapshot = read_snapshot(&file).expect("a whole, checked file");
    let store = KvStore::decode_snapshot(KvConfig::default(), snapshot.store).expect("a store");
    let count = store
        .range(&RangeRequest {
            key: "big/".into(),
            range_end: "big0".into(),
            count_only: true,
            ..Default::default()
        })
        .expect("range")
        .count;
    assert_eq!(count, PUTS as i64);
    c.shutdown().await;
}
