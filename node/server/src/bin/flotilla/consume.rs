//! `flotilla consume`: records of a topic to stdout (kcat's `-C`): values
//! one per line, or one JSON object per record with `-w json`. In a group
//! (`--group`), partitions come from the group and offsets are committed
//! after the records are printed (at-least-once).

use crate::WriteOut;
use anyhow::{Result, bail};
use clap::Args;
use flotilla_client::broker::{BrokerClient, ConsumedRecord, Consumer, ConsumerConfig, StartFrom};
use serde_json::json;
use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Options of `flotilla consume`.
#[derive(Debug, Args)]
pub struct ConsumeArgs {
    /// Topic.
    topic: String,
    /// Consume as a member of this group (partitions assigned by the group,
    /// positions from its committed offsets).
    #[arg(short = 'G', long)]
    group: Option<String>,
    /// Partitions without a committed offset start at the beginning
    /// (default: only new records).
    #[arg(long)]
    from_beginning: bool,
    /// Only this partition (no group).
    #[arg(short, long, conflicts_with = "group")]
    partition: Option<u32>,
    /// Start at this offset (with --partition).
    #[arg(short, long, requires = "partition")]
    offset: Option<u64>,
    /// Stop after N records.
    #[arg(short = 'c', long)]
    count: Option<u64>,
    /// Stop after this many milliseconds without a record (0: never).
    #[arg(long, default_value_t = 0)]
    idle_timeout_ms: u64,
    /// Also print partition, offset and key (table output).
    #[arg(long)]
    verbose: bool,
}

fn print(
    r: &ConsumedRecord,
    out: WriteOut,
    verbose: bool,
    w: &mut impl Write,
) -> std::io::Result<()> {
    let value = String::from_utf8_lossy(&r.value);
    match out {
        WriteOut::Json => writeln!(
            w,
            "{}",
            json!({
                "topic": r.topic,
                "partition": r.partition,
                "offset": r.offset,
                "timestamp_ns": r.timestamp_ns,
                "key": r.key.as_ref().map(|k| String::from_utf8_lossy(k).into_owned()),
                "value": value,
            })
        ),
        WriteOut::Table if verbose => writeln!(
            w,
            "{}-{}@{}\t{}\t{value}",
            r.topic,
            r.partition,
            r.offset,
            r.key
                .as_ref()
                .map_or(String::new(), |k| String::from_utf8_lossy(k).into_owned())
        ),
        WriteOut::Table => writeln!(w, "{value}"),
    }
}

/// Runs `flotilla consume`.
pub async fn run(args: ConsumeArgs, endpoints: &[String], out: WriteOut) -> Result<()> {
    let client = Arc::new(BrokerClient::new(endpoints)?);
    let config = ConsumerConfig {
        group: args.group.clone(),
        client_id: "flotilla-cli".into(),
        auto_commit: false,
        start_from: if args.from_beginning || args.offset.is_some() {
            StartFrom::Earliest
        } else {
            StartFrom::Latest
        },
        ..ConsumerConfig::default()
    };
    let mut consumer = Consumer::new(client.clone(), vec![args.topic.clone()], config).await?;
    if args.group.is_none() {
        match args.partition {
            Some(p) => consumer.assign(&args.topic, p, args.offset).await?,
            None => {
                for p in 0..client.refresh(&args.topic).await? {
                    consumer.assign(&args.topic, p, None).await?;
                }
            }
        }
    }
    let mut seen = 0u64;
    let mut last_record = Instant::now();
    let stdout = std::io::stdout();
    let result = loop {
        if args.count.is_some_and(|c| seen >= c) {
            break Ok(());
        }
        if args.idle_timeout_ms > 0
            && last_record.elapsed() >= Duration::from_millis(args.idle_timeout_ms)
        {
            break Ok(());
        }
        let polled = tokio::select! {
            r = consumer.poll(Duration::from_millis(500)) => r,
            _ = tokio::signal::ctrl_c() => break Ok(()),
        };
        let records = match polled {
            Ok(r) => r,
            Err(e) => break Err(e),
        };
        if records.is_empty() {
            continue;
        }
        last_record = Instant::now();
        let mut done: BTreeMap<(String, u32), u64> = BTreeMap::new();
        {
            let mut w = stdout.lock();
            for r in &records {
                if args.count.is_some_and(|c| seen >= c) {
                    break;
                }
                print(r, out, args.verbose, &mut w)?;
                seen += 1;
                done.insert((r.topic.clone(), r.partition), r.offset + 1);
            }
            w.flush()?;
        }
        // Only what was printed counts as processed.
        if args.group.is_some()
            && let Err(e) = consumer.commit_offsets(&done).await
        {
            break Err(e);
        }
    };
    if args.group.is_some() {
        let _ = consumer.leave().await;
    }
    if let Err(e) = result {
        bail!("{e}");
    }
    Ok(())
}
