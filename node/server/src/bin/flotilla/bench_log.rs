//! `flotilla bench log`: the partition log's benchmark.

use std::path::PathBuf;

use crate::WriteOut;
use anyhow::{Context, Result};
use clap::Args;
use flotilla_benches::log::{self as bench, AppendScenario, Plan, PlanReport};
use flotilla_log::FsyncPolicy;

/// Options of `flotilla bench log`.
#[derive(Debug, Args)]
pub struct LogBenchArgs {
    /// Records per scenario for policies other than `always`.
    #[arg(long, default_value_t = 1_000_000)]
    records: u64,
    /// Records per `always` scenario (one fsync per batch is slow, so fewer).
    #[arg(long, default_value_t = 20_000)]
    always_records: u64,
    /// Value size in bytes (records have no key).
    #[arg(long, default_value_t = 1024)]
    value_bytes: usize,
    /// Fsync policies to run: always, never, every-records:N, every-ms:T.
    #[arg(
        long = "policy",
        value_delimiter = ',',
        default_value = "never,every-records:1000,always"
    )]
    policies: Vec<FsyncPolicy>,
    /// Concurrent appender counts to run for each policy.
    #[arg(long, value_delimiter = ',', default_value = "1,4,16")]
    appenders: Vec<usize>,
    /// Records per append call (a produce request) for policies other than
    /// `always`.
    #[arg(long, default_value_t = 100)]
    batch: usize,
    /// Records per append call for `always` (1: every record is acknowledged
    /// after an fsync, the case group commit exists for).
    #[arg(long, default_value_t = 1)]
    always_batch: usize,
    /// Skip the extra `never` row with single-record appends (batch 1).
    #[arg(long)]
    no_single_append: bool,
    /// Bytes per read call in the sequential read benchmark (0 skips it).
    #[arg(long, default_value_t = 1 << 20)]
    read_bytes: usize,
    /// Scratch directory (default: a new one in the system temp dir, removed
    /// afterwards). Put it on the disk you want to measure.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Shorthand for `-w json`.
    #[arg(long)]
    json: bool,
}

/// Runs the benchmark and prints its report.
pub fn bench_log(args: LogBenchArgs, out: WriteOut) -> Result<()> {
    let (dir, temporary) = match &args.dir {
        Some(dir) => (dir.clone(), false),
        None => (
            std::env::temp_dir().join(format!("flotilla-bench-log-{}", std::process::id())),
            true,
        ),
    };
    let plan = Plan {
        dir: dir.clone(),
        scenarios: scenarios(&args),
        read_bytes_max: args.read_bytes,
    };
    let json = args.json || out == WriteOut::Json;
    let total = plan.scenarios.len();
    let mut step = 0;
    let result = bench::run_plan(&plan, |what| {
        if what.starts_with("log:") {
            step += 1;
            eprintln!("[{step}/{total}] {what}");
        } else {
            eprintln!("      {what}");
        }
    });
    if temporary {
        let _ = std::fs::remove_dir_all(&dir);
    }
    let report = result.with_context(|| format!("benchmark in {}", dir.display()))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&to_json(&report))?);
    } else {
        print!("{}", bench::render_table(&report));
        println!(
            "MB/s counts encoded record bytes ({} B per record), MB = 10^6 B. \
             `always` scenarios use --always-records ({}) records.",
            args.value_bytes + flotilla_log::record::RECORD_OVERHEAD_BYTES,
            args.always_records
        );
    }
    Ok(())
}

fn scenarios(args: &LogBenchArgs) -> Vec<AppendScenario> {
    let mut out = Vec::new();
    for &policy in &args.policies {
        let (records, batch_records) = match policy {
            FsyncPolicy::Always => (args.always_records, args.always_batch),
            _ => (args.records, args.batch),
        };
        for &appenders in &args.appenders {
            out.push(AppendScenario {
                policy,
                appenders,
                records,
                value_bytes: args.value_bytes,
                batch_records,
            });
        }
        if policy == FsyncPolicy::Never && !args.no_single_append && batch_records != 1 {
            out.push(AppendScenario {
                policy,
                appenders: 1,
                records,
                value_bytes: args.value_bytes,
                batch_records: 1,
            });
        }
    }
    out
}

fn to_json(report: &PlanReport) -> serde_json::Value {
    let appends: Vec<_> = report
        .appends
        .iter()
        .map(|r| {
            serde_json::json!({
                "policy": r.scenario.policy.to_string(),
                "appenders": r.scenario.appenders,
                "batch_records": r.scenario.batch_records,
                "records": r.scenario.records,
                "value_bytes": r.scenario.value_bytes,
                "msgs_per_s": r.log.msgs_per_s(),
                "mb_per_s": r.log.mb_per_s(),
                "fsyncs": r.fsyncs,
                "baseline_msgs_per_s": r.baseline.msgs_per_s(),
                "baseline_mb_per_s": r.baseline.mb_per_s(),
                "ratio": r.ratio(),
            })
        })
        .collect();
    let read = report.read.map(|t| {
        serde_json::json!({
            "records": t.records,
            "msgs_per_s": t.msgs_per_s(),
            "mb_per_s": t.mb_per_s(),
            "gb_per_s": t.mb_per_s() / 1000.0,
        })
    });
    serde_json::json!({ "appends": appends, "sequential_read": read })
}
