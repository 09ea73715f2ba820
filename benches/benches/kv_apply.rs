//! What a put costs the KV state machine as it applies (issue #15): the
//! time `KvStore::apply_entry` takes per encoded put of 256 bytes to one of
//! 100,000 keys, on a store at the history bound it keeps
//! (`KvConfig::retain_revisions`, 100,000 revisions) against the same store
//! with the bound off (it never compacts; rebuilt, outside the timing,
//! before its history would pass 300,000 revisions). At the bound the
//! writes compact, on average, as much history as they add: the store
//! waits until the history is 1 % over the bound, then one write compacts
//! about 1,000 revisions. Both are measured in the same run; their ratio
//! is the price of the bound, a little under it, since the unbounded
//! store's revision index holds 100,000–300,000 revisions to the bounded
//! one's 100,000.
//!
//! Every member applies every entry on its Raft thread, so this is a floor
//! under the members' CPU per put (`benches/kv-cpu` measures the whole).
//!
//! `cargo bench --bench kv_apply -- --test` is a quick smoke run.
//! `FLOTILLA_BENCH_FULL=1 cargo bench --bench kv_apply` takes more samples.

use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use flotilla_benches::{full_run, smoke_run};
use flotilla_node::kv::{KvCommand, KvConfig, KvOp, KvStore};
use flotilla_proto::etcdserverpb::PutRequest;
use flotilla_raft::Bytes;

const KEY_SPACE: u64 = 100_000;
const VALUE_BYTES: usize = 256;

/// Encoded puts `from..from + n`, as the node proposes them: 8-byte keys
/// spread over the key space by a fixed permutation, 256-byte values.
fn puts(from: u64, n: u64) -> Vec<Bytes> {
    (from..from + n)
        .map(|i| {
            // An odd multiplier permutes the key space; neighbours in time
            // land far apart in the tree, as a load generator's do.
            let key = i.wrapping_mul(2_654_435_761) % KEY_SPACE;
            let put = PutRequest {
                key: format!("{key:08}").into_bytes(),
                value: vec![(i % 251) as u8; VALUE_BYTES],
                ..Default::default()
            };
            KvCommand::new(KvOp::Put(put))
                .with_batched_compaction(true)
                .encode_to_bytes()
        })
        .collect()
}

/// A store configured by `config` that has applied `history` puts
/// (entries 1..=history).
fn store_after(config: &KvConfig, history: u64) -> KvStore {
    let mut store = KvStore::new(config.clone());
    // No watchers, as in the load benchmarks: no events are built.
    store.set_record_events(false);
    for (i, entry) in puts(0, history).iter().enumerate() {
        store.apply_entry(i as u64 + 1, entry.clone());
    }
    store
}

fn bench_apply(c: &mut Criterion) {
    let bounded = KvConfig::default();
    let retain = bounded.retain_revisions as u64;
    let unbounded = KvConfig {
        retain_revisions: 0,
        ..KvConfig::default()
    };
    let batch: u64 = if smoke_run() { 2_000 } else { 10_000 };
    // The bounded store starts past the bound, so every batch compacts;
    // the unbounded one starts with every key written once.
    let cases = [
        ("bound_off", unbounded, KEY_SPACE),
        ("at_bound", bounded, retain + 10_000),
    ];
    let mut group = c.benchmark_group("kv_apply_put");
    group.throughput(Throughput::Elements(batch));
    group.sample_size(10);
    group.warm_up_time(Duration::from_millis(if smoke_run() { 10 } else { 500 }));
    group.measurement_time(Duration::from_secs(match (full_run(), smoke_run()) {
        (_, true) => 1,
        (true, _) => 30,
        _ => 10,
    }));
    for (name, config, history) in cases {
        let mut store = store_after(&config, history);
        let mut applied = history;
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    if config.retain_revisions == 0 && applied + batch > 300_000 {
                        store = store_after(&config, history);
                        applied = history;
                    }
                    let entries = puts(applied, batch);
                    let start = Instant::now();
                    for entry in &entries {
                        applied += 1;
                        store.apply_entry(applied, entry.clone());
                    }
                    total += start.elapsed();
                    assert_eq!(store.revision(), applied as i64 + 1);
                }
                total
            })
        });
        if config.retain_revisions > 0 {
            // Each write compacted about one revision: the history stayed
            // within the bound and its 1 % of slack.
            let kept = store.revision() - store.compact_revision();
            assert!(
                kept <= config.retain_revisions * 101 / 100 + 1,
                "kept {kept}"
            );
        }
    }
    group.finish();
}

criterion_group!(benches, bench_apply);
criterion_main!(benches);
