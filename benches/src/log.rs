//! The benchmark driver behind `flotilla bench log` and the criterion bench
//! `partition_log`, in one place so both measure the same thing.
//!
//! Each append scenario is paired with a **raw baseline**: one thread writing
//! the same bytes (records of the same encoded size) to a plain file in the
//! same batch sizes, fsyncing on the same schedule. The ratio says how much of
//! what the disk and the kernel can do the log delivers. Throughput is
//! counted in encoded record bytes (header + key + value + CRC), MB = 10^6
//! bytes.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use flotilla_log::record::RECORD_OVERHEAD_BYTES;
use flotilla_log::{FsyncPolicy, Log, LogConfig, LogError, NewRecord, Offset, Result};

/// Records, bytes and time of one timed run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Throughput {
    /// Records moved.
    pub records: u64,
    /// Encoded bytes moved.
    pub bytes: u64,
    /// Wall time.
    pub elapsed: Duration,
}

impl Throughput {
    /// Records per second.
    pub fn msgs_per_s(&self) -> f64 {
        self.records as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Megabytes (10^6) per second.
    pub fn mb_per_s(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// One append run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendScenario {
    /// Fsync policy of the log.
    pub policy: FsyncPolicy,
    /// Concurrent appending threads.
    pub appenders: usize,
    /// Records in total, split across the appenders.
    pub records: u64,
    /// Value size of every record (no key).
    pub value_bytes: usize,
    /// Records per append call (1 uses `append`, more `append_batch`).
    pub batch_records: usize,
}

impl AppendScenario {
    /// Encoded size of one record.
    pub fn record_bytes(&self) -> u64 {
        (RECORD_OVERHEAD_BYTES + self.value_bytes) as u64
    }

    /// The log config used: defaults, this policy, a record limit that fits.
    pub fn config(&self) -> LogConfig {
        let defaults = LogConfig::default();
        LogConfig {
            fsync: self.policy,
            record_bytes_max: (self.record_bytes() as u32).max(defaults.record_bytes_max),
            ..defaults
        }
    }
}

/// A scenario's result next to its baseline.
#[derive(Debug, Clone, PartialEq)]
pub struct AppendReport {
    /// What ran.
    pub scenario: AppendScenario,
    /// The log's throughput.
    pub log: Throughput,
    /// The raw file loop's throughput.
    pub baseline: Throughput,
    /// Group-commit fsyncs the log did.
    pub fsyncs: u64,
}

impl AppendReport {
    /// Log MB/s over baseline MB/s.
    pub fn ratio(&self) -> f64 {
        self.log.mb_per_s() / self.baseline.mb_per_s().max(1e-9)
    }
}

/// A deterministic, incompressible-looking value.
pub fn value(bytes: usize) -> Vec<u8> {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    (0..bytes)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

/// Appends `scenario.records` records to a new log in `dir` (which must
/// not hold one) and times it. Leaves the log in `dir`.
pub fn run_append(dir: &Path, scenario: &AppendScenario) -> Result<(Throughput, u64)> {
    let log = Log::open(dir, scenario.config())?;
    let value = value(scenario.value_bytes);
    let appenders = scenario.appenders.max(1);
    let batch = scenario.batch_records.max(1);
    let barrier = Barrier::new(appenders + 1);
    let mut started = Instant::now();
    let results: Vec<Result<()>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..appenders as u64)
            .map(|i| {
                let share = scenario.records / appenders as u64
                    + u64::from(i < scenario.records % appenders as u64);
                let (log, value, barrier) = (&log, &value, &barrier);
                scope.spawn(move || {
                    let records = vec![NewRecord::new(None, value); batch];
                    barrier.wait();
                    let mut left = share;
                    while left > 0 {
                        let n = left.min(batch as u64) as usize;
                        if n == 1 {
                            log.append(None, value)?;
                        } else {
                            log.append_batch(&records[..n])?;
                        }
                        left -= n as u64;
                    }
                    Ok(())
                })
            })
            .collect();
        barrier.wait();
        started = Instant::now();
        handles
            .into_iter()
            .map(|h| h.join().expect("appender panicked"))
            .collect()
    });
    let elapsed = started.elapsed();
    results.into_iter().collect::<Result<()>>()?;
    debug_assert_eq!(log.log_end_offset(), Offset(scenario.records));
    let throughput = Throughput {
        records: scenario.records,
        bytes: scenario.records * scenario.record_bytes(),
        elapsed,
    };
    Ok((throughput, log.fsync_count()))
}

/// The raw baseline: one thread, a plain file, `write` of the same bytes in
/// the same batch sizes, `fdatasync` on the policy's schedule.
pub fn run_raw_baseline(dir: &Path, scenario: &AppendScenario) -> Result<Throughput> {
    let path = dir.join("raw-baseline.bin");
    let io = |e| LogError::io(&path)(e);
    let mut file = File::create(&path).map_err(io)?;
    let batch = scenario.batch_records.max(1) as u64;
    let record_bytes = scenario.record_bytes() as usize;
    let pattern = value(record_bytes);
    let buf: Vec<u8> = pattern
        .iter()
        .copied()
        .cycle()
        .take(record_bytes * batch as usize)
        .collect();
    let started = Instant::now();
    let mut last_sync = started;
    let mut unsynced = 0u64;
    let mut left = scenario.records;
    while left > 0 {
        let n = left.min(batch);
        file.write_all(&buf[..n as usize * record_bytes])
            .map_err(io)?;
        left -= n;
        unsynced += n;
        let sync = match scenario.policy {
            FsyncPolicy::Always => true,
            FsyncPolicy::Never => false,
            FsyncPolicy::EveryRecords(every) => unsynced >= every,
            FsyncPolicy::EveryMs(ms) => last_sync.elapsed() >= Duration::from_millis(ms),
        };
        if sync {
            file.sync_data().map_err(io)?;
            unsynced = 0;
            last_sync = Instant::now();
        }
    }
    let elapsed = started.elapsed();
    drop(file);
    std::fs::remove_file(&path).map_err(io)?;
    Ok(Throughput {
        records: scenario.records,
        bytes: scenario.records * record_bytes as u64,
        elapsed,
    })
}

/// Reads the whole log in `dir` from its start, `read_bytes_max` per call.
pub fn run_sequential_read(dir: &Path, read_bytes_max: usize) -> Result<Throughput> {
    let log = Log::open(dir, LogConfig::default())?;
    let end = log.log_end_offset();
    let mut offset = log.log_start_offset();
    let mut bytes = 0u64;
    let mut records = 0u64;
    let started = Instant::now();
    while offset < end {
        let batch = log.read_from(offset, read_bytes_max)?;
        let last = batch.last().expect("a read below the end returns a record");
        offset = last.offset.plus(1);
        records += batch.len() as u64;
        bytes += batch.iter().map(|r| r.encoded_bytes()).sum::<u64>();
    }
    Ok(Throughput {
        records,
        bytes,
        elapsed: started.elapsed(),
    })
}

/// A whole benchmark run: scenarios, baselines, and a sequential read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Scratch directory; each scenario uses (and removes) a subdirectory.
    pub dir: PathBuf,
    /// The scenarios, run in order. The first with policy `never` is kept
    /// for the read benchmark.
    pub scenarios: Vec<AppendScenario>,
    /// Bytes per `read_from` call in the read benchmark; 0 skips it.
    pub read_bytes_max: usize,
}

/// Everything a plan measured.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanReport {
    /// One row per scenario.
    pub appends: Vec<AppendReport>,
    /// The sequential read, if run.
    pub read: Option<Throughput>,
}

/// Runs a plan, calling `progress` before each step.
pub fn run_plan(plan: &Plan, mut progress: impl FnMut(&str)) -> Result<PlanReport> {
    std::fs::create_dir_all(&plan.dir).map_err(LogError::io(&plan.dir))?;
    let mut appends: Vec<AppendReport> = Vec::new();
    let mut read_dir: Option<PathBuf> = None;
    for (i, scenario) in plan.scenarios.iter().enumerate() {
        let same_baseline = appends.iter().find(|r| {
            let s = &r.scenario;
            (s.policy, s.records, s.value_bytes, s.batch_records)
                == (
                    scenario.policy,
                    scenario.records,
                    scenario.value_bytes,
                    scenario.batch_records,
                )
        });
        let baseline = match same_baseline {
            Some(report) => report.baseline,
            None => {
                progress(&format!("raw baseline for {}", describe(scenario)));
                run_raw_baseline(&plan.dir, scenario)?
            }
        };
        progress(&format!("log: {}", describe(scenario)));
        let dir = plan.dir.join(format!("scenario-{i}"));
        remove_dir_if_present(&dir)?;
        let (log, fsyncs) = run_append(&dir, scenario)?;
        if read_dir.is_none() && scenario.policy == FsyncPolicy::Never && plan.read_bytes_max > 0 {
            read_dir = Some(dir);
        } else {
            remove_dir_if_present(&dir)?;
        }
        appends.push(AppendReport {
            scenario: scenario.clone(),
            log,
            baseline,
            fsyncs,
        });
    }
    let read = match read_dir {
        Some(dir) => {
            progress("sequential read");
            // Once to make sure it is in the page cache, then timed.
            run_sequential_read(&dir, plan.read_bytes_max)?;
            let read = run_sequential_read(&dir, plan.read_bytes_max)?;
            remove_dir_if_present(&dir)?;
            Some(read)
        }
        None => None,
    };
    Ok(PlanReport { appends, read })
}

fn describe(s: &AppendScenario) -> String {
    format!(
        "policy {}, {} appender(s), batch {}, {} records of {} B",
        s.policy, s.appenders, s.batch_records, s.records, s.value_bytes
    )
}

fn remove_dir_if_present(dir: &Path) -> Result<()> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(LogError::io(dir)(e)),
        _ => Ok(()),
    }
}

/// The report as an aligned text table, log and baseline side by side.
pub fn render_table(report: &PlanReport) -> String {
    let mut out = format!(
        "{:<18} {:>9} {:>6} {:>9} {:>12} {:>9} {:>7} {:>14} {:>9} {:>6}\n",
        "POLICY",
        "APPENDERS",
        "BATCH",
        "RECORDS",
        "MSGS/S",
        "MB/S",
        "FSYNCS",
        "BASE MSGS/S",
        "BASE MB/S",
        "RATIO"
    );
    for r in &report.appends {
        let s = &r.scenario;
        out += &format!(
            "{:<18} {:>9} {:>6} {:>9} {:>12.0} {:>9.1} {:>7} {:>14.0} {:>9.1} {:>6.2}\n",
            s.policy.to_string(),
            s.appenders,
            s.batch_records,
            s.records,
            r.log.msgs_per_s(),
            r.log.mb_per_s(),
            r.fsyncs,
            r.baseline.msgs_per_s(),
            r.baseline.mb_per_s(),
            r.ratio()
        );
    }
    if let Some(read) = &report.read {
        out += &format!(
            "sequential read: {} records, {:.0} msgs/s, {:.1} MB/s ({:.2} GB/s)\n",
            read.records,
            read.msgs_per_s(),
            read.mb_per_s(),
            read.mb_per_s() / 1000.0
        );
    }
    out
}
