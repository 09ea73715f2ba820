//! `nats-load`: the load of `flotilla bench produce`, against a JetStream
//! stream through async-nats.
//!
//! `flotilla bench produce` sends `--messages` records of `--size` bytes to
//! one partition as produce requests of `--batch` records, `--concurrency`
//! requests in flight, each answered once stored (acks=leader at rf 1,
//! acks=all at rf 3). JetStream has no batch publish (before 2.12), so the
//! same shape here is: `--concurrency` tasks, each publishing `--batch`
//! messages back to back to one stream (one subject) and then waiting for
//! their `--batch` publish acks (a JetStream ack means stored on the
//! stream's leader and, with replicas, on a quorum of them) before the next
//! batch. The stream is created fresh (file storage, `--replicas`) and
//! deleted afterwards. Prints one JSON object.
//!
//! Usage: nats-load --url nats://127.0.0.1:4222 --replicas 3
//!        [--messages 300000] [--size 1024] [--batch 1000] [--concurrency 4]
//!        [--stream NAME]

use async_nats::jetstream::{self, stream};
use bytes::Bytes;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

type Error = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug)]
struct Args {
    url: String,
    stream: String,
    replicas: usize,
    messages: u64,
    size: usize,
    batch: u64,
    concurrency: u64,
}

fn parse() -> Result<Args, Error> {
    let mut a = Args {
        url: "nats://127.0.0.1:4222".into(),
        stream: "bench".into(),
        replicas: 1,
        messages: 300_000,
        size: 1024,
        batch: 1000,
        concurrency: 4,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--url" => a.url = value()?,
            "--stream" => a.stream = value()?,
            "--replicas" => a.replicas = value()?.parse()?,
            "--messages" => a.messages = value()?.parse()?,
            "--size" => a.size = value()?.parse()?,
            "--batch" => a.batch = value()?.parse()?,
            "--concurrency" => a.concurrency = value()?.parse()?,
            "-h" | "--help" => {
                println!(
                    "nats-load --url URL --replicas R [--messages N] [--size B] [--batch N] [--concurrency N] [--stream NAME]"
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown flag {other:?}").into()),
        }
    }
    if a.replicas == 0 || a.replicas > 5 {
        return Err("--replicas must be from 1 to 5".into());
    }
    if a.messages == 0 || a.batch == 0 || a.concurrency == 0 || a.size == 0 {
        return Err("--messages, --batch, --concurrency and --size must be positive".into());
    }
    Ok(a)
}

/// Publishes one message until it is acknowledged (the stream's leader may
/// still be being elected right after the stream is created).
async fn warm_up(js: &jetstream::Context, subject: &str) -> Result<(), Error> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let attempt = async {
            js.publish(subject.to_string(), Bytes::from_static(b"warm-up"))
                .await?
                .await?;
            Ok::<_, Error>(())
        };
        match tokio::time::timeout(Duration::from_secs(5), attempt).await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(e)) if Instant::now() >= deadline => return Err(e),
            Err(_) if Instant::now() >= deadline => return Err("warm-up timed out".into()),
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let a = parse()?;
    let client = async_nats::connect(&a.url).await?;
    let js = jetstream::new(client);
    let _ = js.delete_stream(&a.stream).await;
    let subject = format!("{}.records", a.stream);
    js.create_stream(stream::Config {
        name: a.stream.clone(),
        subjects: vec![subject.clone()],
        num_replicas: a.replicas,
        storage: stream::StorageType::File,
        ..Default::default()
    })
    .await?;
    warm_up(&js, &subject).await?;

    let payload = Bytes::from(vec![b'x'; a.size]);
    let batches = a.messages.div_ceil(a.batch);
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..a.concurrency {
        let (js, next, payload, subject, batch) = (
            js.clone(),
            next.clone(),
            payload.clone(),
            subject.clone(),
            a.batch,
        );
        tasks.push(tokio::spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < batches {
                let mut acks = Vec::with_capacity(batch as usize);
                for _ in 0..batch {
                    acks.push(js.publish(subject.clone(), payload.clone()).await?);
                }
                for ack in acks {
                    ack.await?;
                }
            }
            Ok::<_, Error>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let seconds = started.elapsed().as_secs_f64();
    let messages = batches * a.batch;
    let _ = js.delete_stream(&a.stream).await;
    println!(
        "{}",
        serde_json::json!({
            "system": "jetstream",
            "replicas": a.replicas,
            "messages": messages,
            "size_bytes": a.size,
            "batch": a.batch,
            "concurrency": a.concurrency,
            "seconds": seconds,
            "msgs_per_sec": messages as f64 / seconds,
            "mb_per_sec": messages as f64 * a.size as f64 / seconds / 1e6,
        })
    );
    Ok(())
}
