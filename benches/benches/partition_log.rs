//! Partition log throughput (issue #5): appends under each fsync policy with
//! 1, 4 and 16 appenders, and a sequential read. Sizes are reduced so
//! `cargo bench -- --test` is a quick smoke run; `flotilla bench log` runs
//! the full 1,000,000-record figures. Both use `flotilla_log::bench`, and
//! this bench first prints the same side-by-side table (log vs. raw
//! write+fsync baseline) at the reduced sizes.

use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use flotilla_benches::log::{self as bench, AppendScenario, Plan};
use flotilla_log::FsyncPolicy;

const VALUE_BYTES: usize = 1024;

fn scenario(policy: FsyncPolicy, appenders: usize) -> AppendScenario {
    let (records, batch_records) = match policy {
        FsyncPolicy::Always => (400, 1),
        _ => (20_000, 100),
    };
    AppendScenario {
        policy,
        appenders,
        records,
        value_bytes: VALUE_BYTES,
        batch_records,
    }
}

fn scenarios() -> Vec<AppendScenario> {
    let mut out = Vec::new();
    for policy in [
        FsyncPolicy::Never,
        FsyncPolicy::EveryRecords(1000),
        FsyncPolicy::Always,
    ] {
        for appenders in [1, 4, 16] {
            out.push(scenario(policy, appenders));
        }
    }
    out
}

fn side_by_side_report() {
    let dir = tempfile::tempdir().expect("temp dir");
    let plan = Plan {
        dir: dir.path().to_path_buf(),
        scenarios: scenarios(),
        read_bytes_max: 1 << 20,
    };
    let report = bench::run_plan(&plan, |_| {}).expect("benchmark plan");
    println!("partition log, reduced sizes (full run: `flotilla bench log`):");
    print!("{}", bench::render_table(&report));
}

fn appends(c: &mut Criterion) {
    side_by_side_report();
    let mut group = c.benchmark_group("partition_log_append");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(5));
    for s in scenarios() {
        group.throughput(Throughput::Bytes(s.records * s.record_bytes()));
        let id = format!(
            "{}/appenders-{}/batch-{}",
            s.policy, s.appenders, s.batch_records
        );
        group.bench_function(id, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let dir = tempfile::tempdir().expect("temp dir");
                    let (throughput, _) =
                        bench::run_append(&dir.path().join("log"), &s).expect("append run");
                    total += throughput.elapsed;
                }
                total
            });
        });
    }
    group.finish();
}

fn sequential_read(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let log_dir = dir.path().join("log");
    let s = scenario(FsyncPolicy::Never, 1);
    bench::run_append(&log_dir, &s).expect("fill the log");
    let mut group = c.benchmark_group("partition_log_read");
    group.sample_size(10);
    group.throughput(Throughput::Bytes(s.records * s.record_bytes()));
    group.bench_function("sequential/1MiB-reads", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| {
                    bench::run_sequential_read(&log_dir, 1 << 20)
                        .expect("read run")
                        .elapsed
                })
                .sum()
        });
    });
    group.finish();
}

criterion_group!(benches, appends, sequential_read);
criterion_main!(benches);
