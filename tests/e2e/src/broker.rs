//! The broker workload: producers and consumers on a topic with
//! replication factor 3, min.insync.replicas 2 and acks=all, run beside
//! the KV clients while the faults happen.
//!
//! At start it creates the topic through the members' client endpoints
//! and waits until every partition has a leader. Producers write records
//! whose value is a unique id (`p<producer>.<n>`), one record per
//! idempotent batch (producer id + sequence), round robin over the
//! partitions, with acks=all; a retriable failure (NotLeader,
//! NotEnoughReplicas, a timeout, an unreachable member) is retried with
//! the same sequence until it is acknowledged or the run stops, and every
//! acknowledgement is recorded as (partition, offset, id). Consumers fetch
//! every partition from offset 0, following leader changes, and record
//! what they saw; a fetch answer whose offsets do not continue exactly
//! where the consumer stood is a violation.
//!
//! Checks, after healing: every consumer drains every partition to its
//! high watermark (bounded), and a fresh read of every partition from
//! offset 0 is the final log. Every acknowledged record is in it at its
//! acknowledged offset with its id (no acks=all record lost); every
//! record a consumer saw is the final log's record at that offset; each
//! consumer's offsets went up by exactly one from 0 to the high watermark.
//! Ids written more than once (a retry of a batch the old leader had
//! written) are allowed, counted and printed.
//!
//! Routing: a partition's leader is learned from `NotLeader` answers,
//! whose address is the leader pod's DNS name
//! (`demo-<n>.demo-peers.<ns>.svc:2379`). Where that name does not
//! resolve (the container suite's driver runs on the host), [`Resolve::Ordinal`]
//! maps it to the endpoint of that ordinal; otherwise the address is
//! dialled as it is.

use crate::cluster::channel;
use crate::workload::{Workload, WorkloadContext};
use anyhow::{Context, Result, bail};
use flotilla_client::broker::{BrokerClient as AdminClient, code_name, is_retryable};
use flotilla_proto::broker as pb;
use futures::future::BoxFuture;
use pb::broker_client::BrokerClient as RawBroker;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How the broker's leader addresses become URLs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resolve {
    /// `<name>-<n>.…:port` is the endpoint of ordinal `n`.
    Ordinal,
    /// Dial the address as it is.
    Direct,
}

/// The topic's settings.
pub const PARTITIONS: u32 = 3;
/// Replicas per partition.
pub const REPLICATION: u32 = 3;
/// acks=all needs this many in-sync replicas.
pub const MIN_INSYNC: u32 = 2;
/// One call's bound (a paused member answers nothing).
const CALL_TIMEOUT: Duration = Duration::from_secs(3);
/// The final drain's bound.
const DRAIN_WAIT: Duration = Duration::from_secs(90);

/// A record's id: (producer, n).
type Id = (u64, u64);

fn encode(id: Id) -> String {
    format!("p{}.{}", id.0, id.1)
}

fn decode(value: &[u8]) -> Option<Id> {
    let s = std::str::from_utf8(value).ok()?.strip_prefix('p')?;
    let (p, n) = s.split_once('.')?;
    Some((p.parse().ok()?, n.parse().ok()?))
}

/// What the clients recorded.
#[derive(Debug, Default)]
struct Record {
    /// Acknowledged: (partition, offset) → id.
    acked: Vec<(u32, u64, Id)>,
    /// Attempts after the first of a record.
    retries: u64,
    /// Acknowledgements the leader flagged as a retry it had written.
    dedup_answers: u64,
    /// New producer ids taken after OutOfOrderSequence.
    new_producer_ids: u64,
    /// Produce attempts that failed, by reason.
    failures: BTreeMap<String, u64>,
    /// The longest time from a record's first attempt to its ack.
    longest_ack: Duration,
    /// Problems seen while running (offsets not continuing).
    violations: Vec<String>,
}

/// A consumer's view of one partition.
#[derive(Debug, Default, Clone)]
struct Seen {
    /// The next offset to fetch.
    next: u64,
    /// Ids by offset (index = offset).
    ids: Vec<Option<Id>>,
    /// Fetch failures.
    errors: u64,
}

/// Routes calls to partitions' leaders over the current endpoints.
#[derive(Debug, Clone)]
struct Router {
    endpoints: watch::Receiver<Vec<String>>,
    resolve: Resolve,
    /// Partition → the URL believed to lead it.
    leaders: Arc<Mutex<HashMap<u32, String>>>,
    /// Rotation over the endpoints when no leader is known.
    next: Arc<AtomicU64>,
}

impl Router {
    fn new(endpoints: watch::Receiver<Vec<String>>, resolve: Resolve) -> Router {
        Router {
            endpoints,
            resolve,
            leaders: Arc::default(),
            next: Arc::default(),
        }
    }

    /// The URL of a broker address.
    fn url_of(&self, addr: &str) -> Option<String> {
        if addr.is_empty() {
            return None;
        }
        let urls = self.endpoints.borrow().clone();
        let direct = if addr.contains("://") {
            addr.to_string()
        } else {
            format!("http://{addr}")
        };
        if urls.contains(&direct) || self.resolve == Resolve::Direct {
            return Some(direct);
        }
        let host = addr.split("://").last()?.split([':', '.']).next()?;
        let ordinal: usize = host.rsplit_once('-')?.1.parse().ok()?;
        urls.get(ordinal).cloned()
    }

    fn any(&self) -> Option<String> {
        let urls = self.endpoints.borrow().clone();
        if urls.is_empty() {
            return None;
        }
        let n = self.next.fetch_add(1, Ordering::Relaxed) as usize;
        Some(urls[n % urls.len()].clone())
    }

    /// Where to send a call for `partition`.
    fn target(&self, partition: u32) -> Option<String> {
        let known = self
            .leaders
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&partition)
            .cloned();
        // A member that got a new address: its old URL is gone.
        match known {
            Some(u) if self.endpoints.borrow().contains(&u) => Some(u),
            _ => self.any(),
        }
    }

    /// Learns from a failure: the leader it names, else another member.
    fn learn(&self, partition: u32, error: Option<&pb::BrokerError>) {
        let url = error
            .and_then(|e| self.url_of(&e.leader_addr))
            .or_else(|| self.any());
        let mut g = self.leaders.lock().unwrap_or_else(|p| p.into_inner());
        match url {
            Some(u) => g.insert(partition, u),
            None => g.remove(&partition),
        };
    }

    fn raw(url: &str) -> RawBroker<tonic::transport::Channel> {
        RawBroker::new(channel(url))
    }
}

/// Why an attempt failed, and whether to try again.
enum Failure {
    Retry(String, Option<pb::BrokerError>),
    Fatal(String),
}

fn status_failure(s: &tonic::Status) -> Failure {
    // A refusal of the request itself is final; anything else is the
    // transport or a member going away (a reset connection is `Internal`
    // "h2 protocol error"), worth another try.
    match s.code() {
        c @ (tonic::Code::InvalidArgument
        | tonic::Code::NotFound
        | tonic::Code::AlreadyExists
        | tonic::Code::PermissionDenied
        | tonic::Code::Unauthenticated
        | tonic::Code::Unimplemented
        | tonic::Code::FailedPrecondition
        | tonic::Code::OutOfRange) => Failure::Fatal(format!("{c:?}: {}", s.message())),
        c => Failure::Retry(format!("{c:?}"), None),
    }
}

/// The broker workload (see the module's text).
#[derive(Debug)]
pub struct BrokerWorkload {
    name: String,
    topic: String,
    producers: u64,
    consumers: u64,
    resolve: Resolve,
    record: Arc<Mutex<Record>>,
    seen: Arc<Mutex<Vec<Vec<Seen>>>>,
    ready: Arc<AtomicBool>,
    setup_error: Arc<Mutex<Option<String>>>,
}

impl BrokerWorkload {
    /// `producers` producers and `consumers` consumers on the topic
    /// `topic`.
    pub fn new(
        name: &str,
        topic: &str,
        producers: u64,
        consumers: u64,
        resolve: Resolve,
    ) -> BrokerWorkload {
        BrokerWorkload {
            name: name.to_string(),
            topic: topic.to_string(),
            producers,
            consumers,
            resolve,
            record: Arc::default(),
            seen: Arc::new(Mutex::new(vec![
                vec![Seen::default(); PARTITIONS as usize];
                consumers as usize
            ])),
            ready: Arc::default(),
            setup_error: Arc::default(),
        }
    }
}

/// Creates the topic (or finds it) and waits until every partition has a
/// leader.
async fn create_topic(urls: &[String], topic: &str) -> Result<()> {
    let admin = AdminClient::new(urls)?;
    let config = pb::TopicConfig {
        partitions: PARTITIONS,
        replication_factor: REPLICATION,
        min_insync_replicas: MIN_INSYNC,
        ..pb::TopicConfig::default()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let created = match admin.create_topic(topic, config.clone()).await {
            Ok(_) => Ok(()),
            Err(flotilla_client::broker::BrokerClientError::Status(s))
                if s.code() == tonic::Code::AlreadyExists =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        };
        let led = match &created {
            Ok(()) => match admin.describe_topic(topic).await {
                Ok(d) => {
                    d.partitions.len() == PARTITIONS as usize
                        && d.partitions.iter().all(|p| !p.leader_addr.is_empty())
                }
                Err(_) => false,
            },
            Err(_) => false,
        };
        if led {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("topic {topic}: no leader for every partition within 60 s ({created:?})");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// One acks=all produce attempt of `id` to `partition`.
async fn produce_once(
    router: &Router,
    topic: &str,
    partition: u32,
    id: Id,
    producer_id: u64,
    sequence: u64,
) -> Result<pb::ProduceResponse, Failure> {
    let Some(url) = router.target(partition) else {
        return Err(Failure::Retry("no endpoints".into(), None));
    };
    let mut req = tonic::Request::new(pb::ProduceRequest {
        topic: topic.to_string(),
        partition,
        records: vec![pb::Record {
            value: encode(id).into_bytes().into(),
            ..pb::Record::default()
        }],
        acks: pb::Acks::All as i32,
        timeout_ms: 2000,
        producer_id,
        base_sequence: sequence,
        producer_epoch: 0,
    });
    req.set_timeout(CALL_TIMEOUT);
    let r = match Router::raw(&url).produce(req).await {
        Ok(r) => r.into_inner(),
        Err(s) => {
            router.learn(partition, None);
            return Err(status_failure(&s));
        }
    };
    match r.error.as_ref() {
        Some(e) if e.code != 0 => {
            router.learn(partition, Some(e));
            let retry = is_retryable(e.code)
                || e.code == pb::ErrorCode::NotEnoughReplicasAfterAppend as i32
                || e.code == pb::ErrorCode::OutOfOrderSequence as i32;
            if retry {
                Err(Failure::Retry(code_name(e.code), Some(e.clone())))
            } else {
                Err(Failure::Fatal(format!(
                    "{}: {}",
                    code_name(e.code),
                    e.message
                )))
            }
        }
        _ => Ok(r),
    }
}

fn fresh_producer_id(seed: u64, producer: u64, generation: u64) -> u64 {
    (seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ (producer << 48) ^ (generation << 32) ^ 0x5a5a)
        .max(1)
}

async fn producer(
    p: u64,
    ctx: WorkloadContext,
    router: Router,
    topic: String,
    record: Arc<Mutex<Record>>,
) {
    let mut generation = 0u64;
    let mut producer_id = fresh_producer_id(ctx.seed, p, generation);
    let mut sequences = [0u64; PARTITIONS as usize];
    let mut n = 0u64;
    while !ctx.stop.load(Ordering::Relaxed) {
        let id = (p, n);
        let partition = (n % u64::from(PARTITIONS)) as u32;
        n += 1;
        let first = Instant::now();
        let mut attempts = 0u64;
        // Until acknowledged, or the run stops (then its fate is unknown).
        while !ctx.stop.load(Ordering::Relaxed) {
            attempts += 1;
            let seq = sequences[partition as usize];
            match produce_once(&router, &topic, partition, id, producer_id, seq).await {
                Ok(r) => {
                    sequences[partition as usize] += 1;
                    let mut g = record.lock().unwrap_or_else(|p| p.into_inner());
                    g.acked.push((partition, r.base_offset, id));
                    g.retries += attempts - 1;
                    g.dedup_answers += u64::from(r.duplicate);
                    g.longest_ack = g.longest_ack.max(first.elapsed());
                    break;
                }
                Err(Failure::Retry(why, e)) => {
                    let out_of_order = e
                        .as_ref()
                        .is_some_and(|e| e.code == pb::ErrorCode::OutOfOrderSequence as i32);
                    {
                        let mut g = record.lock().unwrap_or_else(|p| p.into_inner());
                        *g.failures.entry(why).or_default() += 1;
                        g.new_producer_ids += u64::from(out_of_order);
                    }
                    if out_of_order {
                        // The leader lost this producer's state: start
                        // again under a new id (a possible duplicate).
                        generation += 1;
                        producer_id = fresh_producer_id(ctx.seed, p, generation);
                        sequences = [0; PARTITIONS as usize];
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(Failure::Fatal(why)) => {
                    let mut g = record.lock().unwrap_or_else(|p| p.into_inner());
                    g.violations
                        .push(format!("producer {p}: {} refused: {why}", encode(id)));
                    return;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// One fetch of `partition` from `offset`: the records and the high
/// watermark.
async fn fetch_once(
    router: &Router,
    topic: &str,
    partition: u32,
    offset: u64,
    max_wait_ms: u32,
) -> Result<(Vec<pb::Record>, u64), Failure> {
    let Some(url) = router.target(partition) else {
        return Err(Failure::Retry("no endpoints".into(), None));
    };
    let mut req = tonic::Request::new(pb::FetchRequest {
        topic: topic.to_string(),
        partition,
        offset,
        max_bytes: 64 << 10,
        max_wait_ms,
        ..pb::FetchRequest::default()
    });
    req.set_timeout(CALL_TIMEOUT);
    let r = match Router::raw(&url).fetch(req).await {
        Ok(r) => r.into_inner(),
        Err(s) => {
            router.learn(partition, None);
            return Err(status_failure(&s));
        }
    };
    match r.error.as_ref() {
        Some(e) if e.code != 0 => {
            router.learn(partition, Some(e));
            // A new leader's high watermark may briefly trail the old
            // one's: OffsetOutOfRange is retried; the drain's end bound
            // makes a lasting one a failure.
            if is_retryable(e.code) || e.code == pb::ErrorCode::OffsetOutOfRange as i32 {
                Err(Failure::Retry(code_name(e.code), Some(e.clone())))
            } else {
                Err(Failure::Fatal(format!(
                    "{}: {}",
                    code_name(e.code),
                    e.message
                )))
            }
        }
        _ => Ok((r.records, r.high_watermark)),
    }
}

/// Adds a fetch answer to `seen`; an offset that does not continue
/// exactly where the consumer stood is a violation.
fn take(seen: &mut Seen, records: &[pb::Record], hw: u64, who: &str) -> Result<(), String> {
    for r in records {
        if r.offset != seen.next {
            return Err(format!(
                "{who}: expected offset {} and got {} (a gap or a step back)",
                seen.next, r.offset
            ));
        }
        if r.offset >= hw {
            return Err(format!(
                "{who}: offset {} at or above the high watermark {hw}",
                r.offset
            ));
        }
        seen.ids.push(decode(&r.value));
        seen.next += 1;
    }
    Ok(())
}

async fn consumer(
    c: usize,
    partition: u32,
    ctx: WorkloadContext,
    router: Router,
    topic: String,
    seen: Arc<Mutex<Vec<Vec<Seen>>>>,
    record: Arc<Mutex<Record>>,
) {
    let who = format!("consumer {c} of {topic}-{partition}");
    while !ctx.stop.load(Ordering::Relaxed) {
        let next = seen.lock().unwrap_or_else(|p| p.into_inner())[c][partition as usize].next;
        match fetch_once(&router, &topic, partition, next, 200).await {
            Ok((records, hw)) => {
                let mut g = seen.lock().unwrap_or_else(|p| p.into_inner());
                if let Err(v) = take(&mut g[c][partition as usize], &records, hw, &who) {
                    record
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .violations
                        .push(v);
                    return;
                }
            }
            Err(Failure::Retry(..)) => {
                seen.lock().unwrap_or_else(|p| p.into_inner())[c][partition as usize].errors += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(Failure::Fatal(why)) => {
                record
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .violations
                    .push(format!("{who}: {why}"));
                return;
            }
        }
    }
}

/// Reads `partition` on from `seen.next` until the high watermark, within
/// `deadline`.
async fn drain(
    router: &Router,
    topic: &str,
    partition: u32,
    seen: &mut Seen,
    who: &str,
    deadline: Instant,
) -> Result<u64> {
    let mut last_error = String::new();
    loop {
        if Instant::now() > deadline {
            bail!(
                "{who}: not drained within {DRAIN_WAIT:?} (at offset {}; {last_error})",
                seen.next
            );
        }
        match fetch_once(router, topic, partition, seen.next, 0).await {
            Ok((records, hw)) => {
                take(seen, &records, hw, who).map_err(anyhow::Error::msg)?;
                if seen.next >= hw {
                    return Ok(hw);
                }
            }
            Err(Failure::Retry(why, _)) => {
                last_error = why;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(Failure::Fatal(why)) => bail!("{who}: {why}"),
        }
    }
}

impl Workload for BrokerWorkload {
    fn name(&self) -> &str {
        &self.name
    }

    fn start(&mut self, ctx: &WorkloadContext) -> Vec<JoinHandle<()>> {
        let router = Router::new(ctx.endpoints.clone(), self.resolve);
        let mut handles = Vec::new();
        // Setup, then the clients: the topic must exist first.
        let (topic, producers, consumers) = (self.topic.clone(), self.producers, self.consumers);
        let (record, seen, ready, setup_error) = (
            self.record.clone(),
            self.seen.clone(),
            self.ready.clone(),
            self.setup_error.clone(),
        );
        let ctx = ctx.clone();
        handles.push(tokio::spawn(async move {
            let urls = ctx.endpoints.borrow().clone();
            if let Err(e) = create_topic(&urls, &topic).await {
                *setup_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(format!("{e:#}"));
                return;
            }
            ready.store(true, Ordering::Relaxed);
            let mut tasks = Vec::new();
            for p in 0..producers {
                tasks.push(tokio::spawn(producer(
                    p,
                    ctx.clone(),
                    router.clone(),
                    topic.clone(),
                    record.clone(),
                )));
            }
            for c in 0..consumers as usize {
                for partition in 0..PARTITIONS {
                    tasks.push(tokio::spawn(consumer(
                        c,
                        partition,
                        ctx.clone(),
                        router.clone(),
                        topic.clone(),
                        seen.clone(),
                        record.clone(),
                    )));
                }
            }
            for t in tasks {
                let _ = t.await;
            }
        }));
        handles
    }

    fn verify<'a>(&'a mut self, endpoints: &'a [String]) -> BoxFuture<'a, Result<String>> {
        Box::pin(async move {
            if let Some(e) = self
                .setup_error
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone()
            {
                bail!("{}: setting up: {e}", self.name);
            }
            if !self.ready.load(Ordering::Relaxed) {
                bail!("{}: the topic was never ready", self.name);
            }
            let (_tx, rx) = watch::channel(endpoints.to_vec());
            let router = Router::new(rx, self.resolve);
            let deadline = Instant::now() + DRAIN_WAIT;
            let mut problems = std::mem::take(
                &mut self
                    .record
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .violations,
            );
            // The final log: a fresh read of every partition from 0.
            let mut finals = Vec::new();
            for partition in 0..PARTITIONS {
                let mut s = Seen::default();
                let who = format!("final read of {}-{partition}", self.topic);
                drain(&router, &self.topic, partition, &mut s, &who, deadline)
                    .await
                    .with_context(|| self.name.clone())?;
                finals.push(s.ids);
            }
            // The consumers read on to the end.
            let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner()).clone();
            let mut fetch_errors = 0;
            for (c, parts) in seen.iter_mut().enumerate() {
                for (partition, s) in parts.iter_mut().enumerate() {
                    fetch_errors += s.errors;
                    let who = format!("consumer {c} of {}-{partition}", self.topic);
                    // The producers stopped: the final log is the whole log.
                    if s.next > finals[partition].len() as u64 {
                        problems.push(format!(
                            "{who} read up to offset {} but the final log ends at {}",
                            s.next,
                            finals[partition].len()
                        ));
                        continue;
                    }
                    if let Err(e) =
                        drain(&router, &self.topic, partition as u32, s, &who, deadline).await
                    {
                        problems.push(format!("{e:#}"));
                        continue;
                    }
                    for (offset, id) in s.ids.iter().enumerate() {
                        let f = finals[partition].get(offset).copied().flatten();
                        if *id != f {
                            problems.push(format!(
                                "{who} saw {:?} at offset {offset}, the final log has {:?}",
                                id.map(encode),
                                f.map(encode)
                            ));
                            break;
                        }
                    }
                }
            }
            let record = self.record.lock().unwrap_or_else(|p| p.into_inner());
            let mut lost = 0;
            for &(partition, offset, id) in &record.acked {
                let f = finals[partition as usize]
                    .get(offset as usize)
                    .copied()
                    .flatten();
                if f != Some(id) {
                    lost += 1;
                    if lost <= 10 {
                        problems.push(format!(
                            "acknowledged {} at {}-{partition} offset {offset} is lost: the final \
                             log has {:?}",
                            encode(id),
                            self.topic,
                            f.map(encode)
                        ));
                    }
                }
            }
            if lost > 10 {
                problems.push(format!("{lost} acknowledged records lost in all"));
            }
            // Ids in the final log more than once, and the log's size.
            let mut count: HashMap<Id, u32> = HashMap::new();
            let mut records = 0usize;
            let mut foreign = 0usize;
            for log in &finals {
                records += log.len();
                for id in log {
                    match id {
                        Some(id) => *count.entry(*id).or_default() += 1,
                        None => foreign += 1,
                    }
                }
            }
            if foreign > 0 {
                problems.push(format!(
                    "{foreign} records in the log are not the producers'"
                ));
            }
            let duplicates: u32 = count.values().map(|n| n - 1).sum();
            let acked_ids = record.acked.len();
            let unacked_present = count.len().saturating_sub(acked_ids);
            if !problems.is_empty() {
                bail!("{}: {}", self.name, problems.join("; "));
            }
            let failures = record
                .failures
                .iter()
                .map(|(k, v)| format!("{v} {k}"))
                .collect::<Vec<_>>()
                .join(", ");
            Ok(format!(
                "{}: {acked_ids} records acknowledged (acks=all, {PARTITIONS} partitions, rf \
                 {REPLICATION}, min.insync {MIN_INSYNC}) by {} producers, {} retries ({}), {} \
                 answered as already written, {} new producer ids; none lost; the final log \
                 holds {records} records ({} of unknown outcome, {duplicates} duplicates from \
                 retries); {} consumers read every partition in order with no gap ({fetch_errors} \
                 fetch retries); longest acks=all wait {:.3} s",
                self.name,
                self.producers,
                record.retries,
                if failures.is_empty() {
                    "none"
                } else {
                    &failures
                },
                record.dedup_answers,
                record.new_producer_ids,
                unacked_present,
                self.consumers,
                record.longest_ack.as_secs_f64(),
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(offset: u64, id: Id) -> pb::Record {
        pb::Record {
            offset,
            value: encode(id).into_bytes().into(),
            ..pb::Record::default()
        }
    }

    #[test]
    fn ids_round_trip() {
        assert_eq!(decode(encode((1, 42)).as_bytes()), Some((1, 42)));
        assert_eq!(decode(b"x1.2"), None);
        assert_eq!(decode(b"p1"), None);
    }

    #[test]
    fn a_gap_or_a_step_back_is_a_violation() {
        let mut s = Seen::default();
        take(&mut s, &[rec(0, (0, 0)), rec(1, (0, 1))], 5, "c").unwrap();
        assert_eq!(s.next, 2);
        assert!(take(&mut s.clone(), &[rec(3, (0, 3))], 5, "c").is_err());
        assert!(take(&mut s.clone(), &[rec(1, (0, 1))], 5, "c").is_err());
        assert!(take(&mut s.clone(), &[rec(2, (0, 2))], 2, "c").is_err());
        take(&mut s, &[rec(2, (1, 0))], 5, "c").unwrap();
        assert_eq!(s.ids, vec![Some((0, 0)), Some((0, 1)), Some((1, 0))]);
    }

    #[test]
    fn leader_addresses_map_to_the_ordinals_endpoint() {
        let urls = vec![
            "http://172.20.0.2:2379".to_string(),
            "http://172.20.0.3:2379".to_string(),
            "http://172.20.0.4:2379".to_string(),
        ];
        let (_tx, rx) = watch::channel(urls.clone());
        let r = Router::new(rx.clone(), Resolve::Ordinal);
        assert_eq!(
            r.url_of("demo-2.demo-peers.e2e.svc:2379").as_deref(),
            Some(urls[2].as_str())
        );
        assert_eq!(
            r.url_of("172.20.0.3:2379").as_deref(),
            Some(urls[1].as_str())
        );
        assert_eq!(r.url_of("demo-7.demo-peers.e2e.svc:2379"), None);
        assert_eq!(r.url_of(""), None);
        let d = Router::new(rx, Resolve::Direct);
        assert_eq!(
            d.url_of("demo-2.demo-peers.e2e.svc:2379").as_deref(),
            Some("http://demo-2.demo-peers.e2e.svc:2379")
        );
    }
}
