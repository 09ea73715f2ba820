//! Commit throughput of a 3-member in-process cluster on a zero-delay
//! network: entries per second for 16 B and 256 B payloads, with proposals
//! batched per `Ready`. Prints a summary line per payload besides criterion's
//! report.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use flotilla_benches::{InstantCluster, throughput_config};
use std::time::{Duration, Instant};

const ENTRIES_PER_ITER: u64 = 200_000;
const BATCH: usize = 1024;

fn summary(payload_bytes: usize) {
    let config = throughput_config();
    let mut cluster = InstantCluster::new(3, &config);
    let start = Instant::now();
    let total = 2_000_000u64;
    cluster.commit(total, payload_bytes, BATCH);
    let secs = start.elapsed().as_secs_f64();
    println!(
        "raft_commit summary: 3 members, {payload_bytes} B payloads, batch {BATCH}: {:.0} entries/s ({:.1} MB/s of payload), {total} entries in {secs:.2} s",
        total as f64 / secs,
        total as f64 * payload_bytes as f64 / secs / 1e6
    );
}

fn bench(c: &mut Criterion) {
    let quick = std::env::args().any(|a| a == "--test");
    for payload in [16usize, 256] {
        if !quick {
            summary(payload);
        }
        let mut group = c.benchmark_group("raft_commit");
        group.throughput(Throughput::Elements(ENTRIES_PER_ITER));
        group.sample_size(10);
        group.measurement_time(Duration::from_secs(5));
        group.bench_function(format!("3_members_{payload}B_batch{BATCH}"), |b| {
            b.iter_custom(|iters| {
                let mut elapsed = Duration::ZERO;
                for _ in 0..iters {
                    let config = throughput_config();
                    let mut cluster = InstantCluster::new(3, &config);
                    let start = Instant::now();
                    cluster.commit(ENTRIES_PER_ITER, payload, BATCH);
                    elapsed += start.elapsed();
                }
                elapsed
            })
        });
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
