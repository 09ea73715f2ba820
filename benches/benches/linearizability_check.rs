//! Checking a 10,000-operation KV history over 100 keys with 10 concurrent
//! clients: the size a simulation run produces. Generation is seeded, so
//! every run checks the same history.

use std::hint::black_box;
use std::time::Instant;

use criterion::{Criterion, criterion_group, criterion_main};
use flotilla_tests::linearizability::{Budget, GenerateConfig, check_kv, random_kv_history};

const CONFIG: GenerateConfig = GenerateConfig {
    seed: 0x5eed,
    operations: 10_000,
    keys: 100,
    clients: 10,
    unknown_probability: 0.02,
};

fn linearizability_check(c: &mut Criterion) {
    let history = random_kv_history(&CONFIG);

    // One timed check up front so the figure shows even under `--test`.
    let started = Instant::now();
    let result = check_kv(&history, Budget::default());
    let elapsed = started.elapsed();
    match &result {
        Ok(verdict) => println!(
            "linearizability_check: {} ops over {} keys, {} clients: {verdict} in {elapsed:?}",
            CONFIG.operations, CONFIG.keys, CONFIG.clients
        ),
        Err(error) => println!("linearizability_check: invalid generated history: {error}"),
    }
    assert!(
        matches!(result, Ok(ref verdict) if verdict.is_ok()),
        "generated history must be linearizable"
    );

    let mut group = c.benchmark_group("linearizability");
    group.sample_size(10);
    group.bench_function("check_kv_10k_ops_100_keys", |b| {
        b.iter(|| check_kv(black_box(&history), Budget::default()))
    });
    group.finish();
}

criterion_group!(benches, linearizability_check);
criterion_main!(benches);
