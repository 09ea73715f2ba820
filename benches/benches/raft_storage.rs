//! On-disk Raft log (issue #3): durable append throughput of `DiskStorage`
//! against a raw write + fsync baseline measured in the same run, and the
//! recovery time of a 1 GiB log.
//!
//! Each save carries one batch of 256-byte entries (a driver saves as many
//! proposals as arrived during the previous fsync) and a hard state whose
//! commit index advances, as a leader's `Ready` does. The baseline writes
//! the same bytes per batch (frames included) to a plain file with one
//! `write` and one `sync_data`, the same call the storage uses.
//!
//! `cargo bench --bench raft_storage -- --test` is a quick smoke run.
//! `FLOTILLA_BENCH_FULL=1 cargo bench --bench raft_storage` prints the full
//! figures and the 1 GiB recovery time.

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use flotilla_benches::{full_run, smoke_run};
use flotilla_raft::{Bytes, ConfState, Entry, EntryKind, HardState, NodeId, Storage, Term};
use flotilla_storage::{DiskStorage, FsyncMode, StorageOptions};

const ENTRY_BYTES: usize = 256;
/// Frame bytes per entry on disk: 33 bytes of header, then the payload.
const FRAME_BYTES: usize = 33 + ENTRY_BYTES;
const BATCHES: [usize; 3] = [1, 16, 256];

/// Saves per measurement: enough fsyncs for a stable figure in a full run.
fn saves_for(batch: usize) -> usize {
    match (full_run(), smoke_run()) {
        (_, true) => 8,
        (true, _) => (2000 / batch.max(4)).max(200),
        _ => 50,
    }
}

fn options(fsync: FsyncMode) -> StorageOptions {
    StorageOptions {
        fsync,
        bootstrap: Some(ConfState {
            voters: vec![NodeId(1)],
            learners: vec![],
        }),
        ..StorageOptions::new(1, 1)
    }
}

/// Batches of entries from index 1, payloads slicing one buffer.
fn batches(batch: usize, saves: usize, entry_bytes: usize) -> Vec<Vec<Entry>> {
    let payload = Bytes::from(vec![0xA5u8; entry_bytes]);
    (0..saves)
        .map(|s| {
            (0..batch)
                .map(|k| Entry {
                    term: Term(1),
                    index: (s * batch + k) as u64 + 1,
                    kind: EntryKind::Normal,
                    data: payload.clone(),
                })
                .collect()
        })
        .collect()
}

/// Time of `saves` durable saves of `batch` entries each.
fn durable_run(dir: &Path, batch: usize, saves: usize) -> Duration {
    let mut storage = DiskStorage::open(dir, options(FsyncMode::Always)).expect("open");
    let work = batches(batch, saves, ENTRY_BYTES);
    let mut hs = HardState {
        term: Term(1),
        vote: NodeId(1),
        commit: 0,
    };
    storage.save(Some(&hs), &[]).expect("vote");
    let start = Instant::now();
    for entries in &work {
        storage.save(Some(&hs), entries).expect("save");
        hs.commit = entries.last().expect("non-empty").index;
    }
    start.elapsed()
}

/// Time of the same bytes written as `saves` write + `sync_data` pairs.
fn raw_run(dir: &Path, batch: usize, saves: usize) -> Duration {
    let mut file = File::create(dir.join("raw-baseline.bin")).expect("create");
    let buf = vec![0xA5u8; batch * FRAME_BYTES];
    let start = Instant::now();
    for _ in 0..saves {
        file.write_all(&buf).expect("write");
        file.sync_data().expect("sync_data");
    }
    start.elapsed()
}

fn median(mut xs: Vec<Duration>) -> Duration {
    xs.sort();
    xs[xs.len() / 2]
}

/// Runs durable and raw alternately (so drift hits both) and prints the
/// medians side by side.
fn side_by_side_report() {
    let rounds = if full_run() { 7 } else { 1 };
    println!(
        "raft storage durable append, {ENTRY_BYTES} B entries ({FRAME_BYTES} B frames), fsync=always, {} rounds (median):",
        rounds
    );
    println!(
        "{:>6} {:>7} | {:>12} {:>9} | {:>12} {:>9} | {:>6}",
        "batch", "saves", "durable e/s", "MB/s", "raw e/s", "MB/s", "ratio"
    );
    for batch in BATCHES {
        let saves = saves_for(batch);
        let (mut durable, mut raw) = (Vec::new(), Vec::new());
        for round in 0..rounds {
            let dir = tempfile::tempdir().expect("temp dir");
            // Alternate which goes first, so neither always inherits the
            // other's writeback.
            if round % 2 == 1 {
                raw.push(raw_run(dir.path(), batch, saves));
            }
            durable.push(durable_run(&dir.path().join("raft"), batch, saves));
            if round % 2 == 0 {
                raw.push(raw_run(dir.path(), batch, saves));
            }
        }
        let entries = (batch * saves) as f64;
        let rate = |d: Duration| entries / d.as_secs_f64();
        let mb = |d: Duration| entries * FRAME_BYTES as f64 / 1e6 / d.as_secs_f64();
        let (d, r) = (median(durable), median(raw));
        println!(
            "{batch:>6} {saves:>7} | {:>12.0} {:>9.2} | {:>12.0} {:>9.2} | {:>5.1}%",
            rate(d),
            mb(d),
            rate(r),
            mb(r),
            100.0 * r.as_secs_f64() / d.as_secs_f64()
        );
    }
}

/// Writes a 1 GiB log of 4 KiB entries without fsync, then times `open`.
fn recovery_report() {
    const RECOVERY_ENTRY_BYTES: usize = 4096;
    const LOG_BYTES: usize = 1 << 30;
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("raft");
    let batch = 256;
    let saves = LOG_BYTES / (RECOVERY_ENTRY_BYTES * batch);
    {
        let mut storage = DiskStorage::open(&path, options(FsyncMode::Never)).expect("open");
        for entries in batches(batch, saves, RECOVERY_ENTRY_BYTES) {
            storage.save(None, &entries).expect("save");
        }
    }
    let start = Instant::now();
    let storage = DiskStorage::open(&path, options(FsyncMode::Always)).expect("recover");
    let elapsed = start.elapsed();
    let bytes = (batch * saves * (RECOVERY_ENTRY_BYTES + 25)) as f64;
    println!(
        "recovery: {} entries of {RECOVERY_ENTRY_BYTES} B ({:.2} GiB in {} segments) opened in {:.3} s ({:.2} GB/s; page cache warm)",
        storage.last_index(),
        bytes / (1u64 << 30) as f64,
        storage.segment_paths().len(),
        elapsed.as_secs_f64(),
        bytes / 1e9 / elapsed.as_secs_f64()
    );
}

fn durable_append(c: &mut Criterion) {
    side_by_side_report();
    if full_run() && !smoke_run() {
        recovery_report();
    }
    let mut group = c.benchmark_group("raft_storage_save");
    group.sample_size(10);
    for batch in BATCHES {
        let saves = saves_for(batch);
        group.throughput(Throughput::Bytes((batch * saves * FRAME_BYTES) as u64));
        group.bench_function(format!("durable/batch-{batch}"), |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| {
                        let dir = tempfile::tempdir().expect("temp dir");
                        durable_run(&dir.path().join("raft"), batch, saves)
                    })
                    .sum()
            });
        });
        group.bench_function(format!("raw/batch-{batch}"), |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| {
                        let dir = tempfile::tempdir().expect("temp dir");
                        raw_run(dir.path(), batch, saves)
                    })
                    .sum()
            });
        });
    }
    group.finish();
}

criterion_group!(benches, durable_append);
criterion_main!(benches);
