//! Snapshot transfer rate between two cores: a leader holding a compacted
//! log and a snapshot of `SIZE` bytes, and a new learner that must receive it
//! through chunked, checksummed InstallSnapshot messages (delivered at once,
//! in process). Measures the core's chunking, checksumming and reassembly:
//! bytes per second until the learner has installed the snapshot.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use flotilla_raft::{Bytes, ConfChange, Config, MemStorage, Message, NodeId, Raft, Storage};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

fn drive(nodes: &mut [Raft<MemStorage>], queue: &mut VecDeque<Message>) -> bool {
    let mut busy = false;
    for node in nodes.iter_mut() {
        if !node.has_ready() {
            continue;
        }
        busy = true;
        let ready = node.ready().expect("memory storage");
        if let Some(snap) = ready.snapshot.clone() {
            node.storage_mut()
                .apply_snapshot(snap)
                .expect("memory storage");
        }
        node.storage_mut()
            .save(ready.hard_state.as_ref(), &ready.entries)
            .expect("memory storage");
        queue.extend(ready.messages);
        node.advance();
    }
    while let Some(m) = queue.pop_front() {
        busy = true;
        let to = (m.to.0 - 1) as usize;
        nodes[to].step(m);
    }
    busy
}

/// A single-voter leader with a snapshot of `size` bytes, and an empty
/// learner; returns the time until the learner installed the snapshot.
fn transfer(size: usize, chunk_bytes: u64) -> Duration {
    let mut config = Config::new(NodeId(1));
    config.max_snapshot_chunk_bytes = chunk_bytes;
    config.max_inflight_msgs = 64;
    config.max_inflight_bytes = 64 * chunk_bytes;
    let leader =
        Raft::new(config.clone(), MemStorage::new_with_voters(&[NodeId(1)])).expect("config");
    config.id = NodeId(2);
    let learner = Raft::new(config, MemStorage::new_joining()).expect("config");
    let mut nodes = vec![leader, learner];
    let mut queue = VecDeque::new();
    for _ in 0..100 {
        nodes[0].tick();
        drive(&mut nodes, &mut queue);
        if nodes[0].state().1 {
            break;
        }
    }
    nodes[0]
        .propose(Bytes::from_static(b"state"))
        .expect("leader");
    while drive(&mut nodes, &mut queue) {}
    let data = Bytes::from(vec![0xA5u8; size]);
    let meta = nodes[0].compact(data).expect("compact");
    let start = Instant::now();
    nodes[0]
        .propose_conf_change(ConfChange::AddLearner(NodeId(2)))
        .expect("add learner");
    while drive(&mut nodes, &mut queue) {}
    let elapsed = start.elapsed();
    assert!(
        nodes[1].storage().snapshot().expect("memory").meta.index >= meta.index,
        "the learner installed the snapshot"
    );
    elapsed
}

fn bench(c: &mut Criterion) {
    let quick = std::env::args().any(|a| a == "--test");
    let size = if quick { 4 << 20 } else { 256 << 20 };
    for chunk in [64u64 << 10, 1 << 20] {
        let elapsed = transfer(size, chunk);
        println!(
            "raft_snapshot summary: {} MiB snapshot in {} KiB chunks: {:.0} MB/s ({:.3} s)",
            size >> 20,
            chunk >> 10,
            size as f64 / elapsed.as_secs_f64() / 1e6,
            elapsed.as_secs_f64()
        );
    }
    let mut group = c.benchmark_group("raft_snapshot");
    group.sample_size(10);
    group.throughput(Throughput::Bytes(16 << 20));
    group.bench_function("transfer_16MiB_1MiB_chunks", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| transfer(16 << 20, 1 << 20)).sum())
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
