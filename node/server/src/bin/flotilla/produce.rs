//! `flotilla produce`: records from stdin (one per line, kcat's `-P`), or
//! generated load (`--count N --size B`), through the batching, idempotent
//! producer.

use crate::WriteOut;
use anyhow::{Result, bail};
use clap::{Args, ValueEnum};
use flotilla_client::broker::{BrokerClient, Producer, ProducerConfig};
use flotilla_proto::broker as pb;
use serde_json::json;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncBufReadExt;

/// Acknowledgement levels, as Kafka's `acks`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AcksArg {
    /// Every in-sync replica (acks=-1).
    All,
    /// The leader only (acks=1).
    Leader,
    /// No wait for durability (acks=0).
    None,
}

impl AcksArg {
    /// The wire value.
    pub fn proto(self) -> pb::Acks {
        match self {
            AcksArg::All => pb::Acks::All,
            AcksArg::Leader => pb::Acks::Leader,
            AcksArg::None => pb::Acks::None,
        }
    }
}

/// Options of `flotilla produce`.
#[derive(Debug, Args)]
pub struct ProduceArgs {
    /// Topic.
    topic: String,
    /// Partition (default: by key hash, or round robin without keys).
    #[arg(short, long)]
    partition: Option<u32>,
    /// Split each line at the first DELIM into key and value (kcat's -K).
    #[arg(short = 'K', long)]
    key_delimiter: Option<String>,
    /// Durability to wait for.
    #[arg(long, value_enum, default_value_t = AcksArg::All)]
    acks: AcksArg,
    /// Generate N records instead of reading stdin.
    #[arg(long)]
    count: Option<u64>,
    /// Value size of generated records, in bytes.
    #[arg(long, default_value_t = 100)]
    size: usize,
    /// How long the producer waits to fill a batch, in milliseconds.
    #[arg(long, default_value_t = 1)]
    linger_ms: u64,
}

/// Acknowledgements awaited at most at once before reading more input.
const OUTSTANDING_MAX: usize = 100_000;

/// Runs `flotilla produce`.
pub async fn run(args: ProduceArgs, endpoints: &[String], out: WriteOut) -> Result<()> {
    let client = Arc::new(BrokerClient::new(endpoints)?);
    let producer = Producer::new(
        client,
        ProducerConfig {
            acks: args.acks.proto(),
            linger: Duration::from_millis(args.linger_ms),
            ..ProducerConfig::default()
        },
    )?;
    let started = Instant::now();
    let mut pending = VecDeque::new();
    let (mut ok, mut failed, mut first_error) = (0u64, 0u64, None::<String>);
    let mut settle =
        |r: Result<Result<(u32, u64), flotilla_client::broker::BrokerClientError>, _>| match r {
            Ok(Ok(_)) => ok += 1,
            Ok(Err(e)) => {
                failed += 1;
                first_error.get_or_insert(e.to_string());
            }
            Err(_) => {
                failed += 1;
                first_error.get_or_insert("the producer stopped".into());
            }
        };
    if let Some(count) = args.count {
        if args.size > 64 << 20 {
            bail!("--size must be at most 64 MiB");
        }
        let value = bytes::Bytes::from(vec![b'x'; args.size]);
        for _ in 0..count {
            pending.push_back(
                producer
                    .send(&args.topic, args.partition, None, value.clone())
                    .await?,
            );
            if pending.len() >= OUTSTANDING_MAX {
                settle(pending.pop_front().expect("not empty").await);
            }
        }
    } else {
        let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
        while let Some(line) = lines.next_line().await? {
            let (key, value) = match &args.key_delimiter {
                Some(d) => match line.split_once(d.as_str()) {
                    Some((k, v)) => (Some(bytes::Bytes::from(k.to_string())), v.to_string()),
                    None => (None, line),
                },
                None => (None, line),
            };
            pending.push_back(
                producer
                    .send(&args.topic, args.partition, key, value.into())
                    .await?,
            );
            if pending.len() >= OUTSTANDING_MAX {
                settle(pending.pop_front().expect("not empty").await);
            }
        }
    }
    for rx in pending {
        settle(rx.await);
    }
    let secs = started.elapsed().as_secs_f64();
    match out {
        WriteOut::Json => println!(
            "{}",
            json!({"topic": args.topic, "produced": ok, "failed": failed, "seconds": secs, "error": first_error})
        ),
        WriteOut::Table => {
            eprintln!(
                "produced {ok} record(s) to {} in {secs:.3} s ({:.0} msgs/s){}",
                args.topic,
                ok as f64 / secs.max(1e-9),
                if failed > 0 {
                    format!("; {failed} failed")
                } else {
                    String::new()
                }
            );
        }
    }
    if let Some(e) = first_error {
        bail!("{failed} record(s) failed; first error: {e}");
    }
    Ok(())
}
