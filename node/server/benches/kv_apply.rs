//! What the key-value state machine's apply loop pays for history: a put
//! once the store keeps its full history bound (auto-compaction runs), a
//! DeleteRange of many keys, a Compact over many revisions, the longest
//! single apply while auto-compaction passes a DeleteRange of many keys,
//! the encoding of a snapshot of many keys (what the snapshot thread
//! does beside the driver), and puts while that thread holds its frozen
//! view of the store (the first ones copy the tree paths they touch).
//! In process, through `KvStore::apply_entry` as the driver calls it, with
//! watch events off (as a node applies while nobody watches).
//!
//! `cargo bench -p flotilla-node --bench kv_apply` (`-- --test`: smaller
//! stores, each bench once).

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use flotilla_node::kv::{KvCommand, KvConfig, KvOp, KvStore};
use flotilla_proto::etcdserverpb::{CompactionRequest, DeleteRangeRequest, PutRequest};
use std::hint::black_box;
use std::time::{Duration, Instant};

const VALUE_BYTES: usize = 256;

struct Applier {
    store: KvStore,
    index: u64,
}

impl Applier {
    fn new(retain_revisions: i64) -> Applier {
        let mut store = KvStore::new(KvConfig {
            retain_revisions,
            ..KvConfig::default()
        });
        store.set_record_events(false);
        Applier { store, index: 0 }
    }

    fn apply(&mut self, op: KvOp) {
        self.index += 1;
        let out = self.store.apply_entry(
            self.index,
            KvCommand::new(op)
                .with_batched_compaction(true)
                .encode_to_bytes(),
        );
        assert!(out.result.is_ok(), "entry {}: {:?}", self.index, out.result);
    }

    fn put(&mut self, key: String) {
        self.apply(put(key));
    }
}

fn put(key: String) -> KvOp {
    KvOp::Put(PutRequest {
        key: key.into_bytes(),
        value: vec![b'v'; VALUE_BYTES],
        ..Default::default()
    })
}

fn delete_all(prefix: &str) -> KvOp {
    let mut end = prefix.as_bytes().to_vec();
    *end.last_mut().expect("a prefix") += 1;
    KvOp::DeleteRange(DeleteRangeRequest {
        key: prefix.as_bytes().to_vec(),
        range_end: end,
        prev_kv: false,
    })
}

/// `keys` keys under `big/`, one put each, and no history bound.
fn big_store(keys: usize) -> Applier {
    let mut a = Applier::new(0);
    for i in 0..keys {
        a.put(format!("big/{i:08}"));
    }
    a
}

/// The slowest single put while auto-compaction (the default history
/// bound) passes a DeleteRange of `keys` keys, and the mean put.
fn stall(keys: usize) -> (Duration, Duration) {
    let retain = KvConfig::default().retain_revisions;
    let mut a = Applier::new(retain);
    for i in 0..keys {
        a.put(format!("big/{i:08}"));
    }
    a.apply(delete_all("big/"));
    let delete_revision = a.store.revision();
    let (mut slowest, mut total, mut n) = (Duration::ZERO, Duration::ZERO, 0u32);
    let mut i = 0;
    while a.store.mvcc().key_count() > 10_000 || a.store.compact_revision() <= delete_revision {
        let op = put(format!("hot/{:05}", i % 10_000));
        i += 1;
        let start = Instant::now();
        a.apply(op);
        let took = start.elapsed();
        if a.store.revision() > delete_revision + retain - 2_000 {
            slowest = slowest.max(took);
            total += took;
            n += 1;
        }
    }
    (slowest, total / n.max(1))
}

fn bench(c: &mut Criterion) {
    let quick = std::env::args().any(|a| a == "--test");
    let big = if quick { 20_000 } else { 250_000 };

    let (slowest, mean) = stall(if quick { 20_000 } else { 250_000 });
    println!(
        "kv_apply summary: puts while auto-compaction passes a DeleteRange of {big} keys: \
         slowest {:.3} ms, mean {:.2} us",
        slowest.as_secs_f64() * 1e3,
        mean.as_secs_f64() * 1e6
    );

    let mut group = c.benchmark_group("kv_apply");
    group.sample_size(10);

    // Puts of 9,973 keys once the history bound is reached: a count
    // prime to the bound, so the key compacted is not the one just
    // written (whose tree path a put has just brought into the cache).
    let retain = KvConfig::default().retain_revisions;
    let mut a = Applier::new(retain);
    let mut i = 0u64;
    while a.store.compact_revision() < 2 * retain / 10 {
        a.put(format!("hot/{:05}", i % 9_973));
        i += 1;
    }
    group.bench_function("put_past_history_bound", |b| {
        b.iter(|| {
            a.put(format!("hot/{:05}", i % 9_973));
            i += 1;
        })
    });

    let base = big_store(big);
    group.bench_function(format!("delete_range_{big}_keys"), |b| {
        b.iter_batched(
            || Applier {
                store: base.store.clone(),
                index: base.index,
            },
            |mut a| {
                a.apply(delete_all("big/"));
                black_box(a)
            },
            BatchSize::PerIteration,
        )
    });

    let mut deleted = big_store(big);
    deleted.apply(delete_all("big/"));
    group.bench_function(format!("compact_{big}_revisions"), |b| {
        b.iter_batched(
            || Applier {
                store: deleted.store.clone(),
                index: deleted.index,
            },
            |mut a| {
                let revision = a.store.revision();
                a.apply(KvOp::Compaction(CompactionRequest {
                    revision,
                    physical: false,
                }));
                assert_eq!(a.store.mvcc().key_count(), 0);
                black_box(a)
            },
            BatchSize::PerIteration,
        )
    });
    // A snapshot of `big` keys, each with a superseded version held in
    // the history: what the snapshot thread encodes.
    let mut history = Applier::new(KvConfig::default().retain_revisions);
    for round in 0..2 {
        for i in 0..big {
            history.put(format!("snap/{:08}", (i * 7919 + round) % big));
        }
    }
    group.bench_function(format!("snapshot_encode_{big}_keys"), |b| {
        b.iter(|| {
            history
                .store
                .encode_snapshot_to(&mut std::io::sink())
                .expect("a sink takes every byte")
        })
    });

    // Puts while a frozen view of the store is held (the snapshot thread's
    // clone): the first puts after the freeze copy the tree paths they
    // touch; the next ones find most of them copied already. 100,000 keys
    // written three times over at the default history bound, so most keys
    // hold two versions, as under a steady write load.
    let mut steady = Applier::new(retain);
    let keys = if quick { 10_000 } else { 100_000 };
    for i in 0..3 * keys {
        steady.put(format!("k/{:08}", (i * 7919) % keys));
    }
    let burst = keys / 10;
    let puts_from = |a: &mut Applier, from: usize| {
        for i in from..from + burst {
            a.put(format!("k/{:08}", (i * 104_729) % keys));
        }
    };
    group.bench_function(format!("puts_{burst}_just_after_freeze"), |b| {
        b.iter_batched(
            || Applier {
                store: steady.store.clone(),
                index: steady.index,
            },
            |mut a| {
                puts_from(&mut a, 0);
                a
            },
            BatchSize::PerIteration,
        )
    });
    group.bench_function(format!("puts_{burst}_next_after_freeze"), |b| {
        b.iter_batched(
            || {
                let mut a = Applier {
                    store: steady.store.clone(),
                    index: steady.index,
                };
                puts_from(&mut a, 0);
                a
            },
            |mut a| {
                puts_from(&mut a, burst);
                a
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
