//! A batching, idempotent producer.
//!
//! 1. `send` waits for room in a bounded byte budget (backpressure), picks
//!    the partition (by key hash, else round robin) and queues the record.
//! 2. One task per partition takes what queued within `linger` (up to
//!    `batch_bytes_max`) and produces it as one batch with the producer's id
//!    and the partition's next sequence number; it has one batch in flight,
//!    so batches land in order.
//! 3. A batch is retried (leader changes, timeouts) with the same sequence:
//!    the leader answers a retry of a batch it already wrote with the
//!    original offsets, so a retry never duplicates within its window.
//! 4. A batch that fails for good fails its records' futures, and the
//!    partition continues under a new producer id (sequences restart).

use super::{BrokerClient, BrokerClientError};
use bytes::Bytes;
use flotilla_proto::broker as pb;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};

/// Producer settings.
#[derive(Debug, Clone)]
pub struct ProducerConfig {
    /// How long a partition's task waits for more records before sending a
    /// batch that is not full.
    pub linger: Duration,
    /// Largest batch (key + value bytes).
    pub batch_bytes_max: usize,
    /// Most bytes queued and in flight over all partitions; `send` waits
    /// for room beyond it.
    pub buffer_bytes_max: usize,
    /// Durability asked for.
    pub acks: pb::Acks,
    /// Idempotent batches (producer id + sequence).
    pub idempotent: bool,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        ProducerConfig {
            linger: Duration::from_millis(1),
            batch_bytes_max: 1 << 20,
            buffer_bytes_max: 32 << 20,
            acks: pb::Acks::All,
            idempotent: true,
        }
    }
}

type Done = oneshot::Sender<Result<(u32, u64), BrokerClientError>>;

struct Item {
    record: pb::Record,
    _permit: OwnedSemaphorePermit,
    done: Done,
}

/// Queue depth per partition (records); the byte budget bounds it first in
/// practice.
const PARTITION_QUEUE_MAX: usize = 65_536;

/// A producer for one cluster. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct Producer {
    client: Arc<BrokerClient>,
    config: ProducerConfig,
    budget: Arc<Semaphore>,
    queues: Mutex<HashMap<(String, u32), mpsc::Sender<Item>>>,
    round_robin: AtomicU64,
}

impl std::fmt::Debug for Item {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Item").finish_non_exhaustive()
    }
}

fn new_producer_id() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new()
        .hash_one((std::process::id(), std::time::SystemTime::now()))
        .max(1)
}

fn key_hash(key: &[u8]) -> u64 {
    // FNV-1a: stable across processes and versions, unlike `RandomState`.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

impl Producer {
    /// A producer over `client`.
    pub fn new(
        client: Arc<BrokerClient>,
        config: ProducerConfig,
    ) -> Result<Producer, BrokerClientError> {
        if config.batch_bytes_max == 0 || config.buffer_bytes_max < config.batch_bytes_max {
            return Err(BrokerClientError::Invalid(
                "buffer_bytes_max must be at least batch_bytes_max, which must be positive".into(),
            ));
        }
        Ok(Producer {
            budget: Arc::new(Semaphore::new(
                config.buffer_bytes_max.min(Semaphore::MAX_PERMITS),
            )),
            client,
            config,
            queues: Mutex::default(),
            round_robin: AtomicU64::new(0),
        })
    }

    /// Queues a record; the returned future resolves to its partition and
    /// offset once the batch holding it is acknowledged. `partition` `None`
    /// picks one by the key's hash (or round robin without a key).
    pub async fn send(
        &self,
        topic: &str,
        partition: Option<u32>,
        key: Option<Bytes>,
        value: Bytes,
    ) -> Result<oneshot::Receiver<Result<(u32, u64), BrokerClientError>>, BrokerClientError> {
        let size = value.len() + key.as_ref().map_or(0, Bytes::len) + 32;
        if size > self.config.batch_bytes_max {
            return Err(BrokerClientError::Invalid(format!(
                "record of {size} bytes is larger than the batch bound {}",
                self.config.batch_bytes_max
            )));
        }
        let permit = self
            .budget
            .clone()
            .acquire_many_owned(size as u32)
            .await
            .map_err(|_| BrokerClientError::Invalid("producer closed".into()))?;
        let n = self.client.partitions(topic).await?;
        if n == 0 {
            return Err(BrokerClientError::Invalid(format!(
                "topic {topic:?} has no partitions"
            )));
        }
        let partition = match (partition, &key) {
            (Some(p), _) if p < n => p,
            (Some(p), _) => {
                return Err(BrokerClientError::Invalid(format!(
                    "topic {topic:?} has {n} partitions, not {p}"
                )));
            }
            (None, Some(k)) => (key_hash(k) % u64::from(n)) as u32,
            (None, None) => {
                (self.round_robin.fetch_add(1, Ordering::Relaxed) % u64::from(n)) as u32
            }
        };
        let (done, rx) = oneshot::channel();
        let item = Item {
            record: pb::Record {
                has_key: key.is_some(),
                key: key.unwrap_or_default(),
                value,
                ..Default::default()
            },
            _permit: permit,
            done,
        };
        let queue = self.queue(topic, partition);
        queue
            .send(item)
            .await
            .map_err(|_| BrokerClientError::Invalid("producer closed".into()))?;
        Ok(rx)
    }

    fn queue(&self, topic: &str, partition: u32) -> mpsc::Sender<Item> {
        let mut g = self.queues.lock().unwrap_or_else(|p| p.into_inner());
        g.entry((topic.to_string(), partition))
            .or_insert_with(|| {
                let (tx, rx) = mpsc::channel(PARTITION_QUEUE_MAX);
                tokio::spawn(run_partition(
                    self.client.clone(),
                    self.config.clone(),
                    topic.to_string(),
                    partition,
                    rx,
                ));
                tx
            })
            .clone()
    }

    /// Sends everything queued and waits for it (dropping the queues; the
    /// producer can be used again afterwards).
    pub async fn flush(&self) {
        let queues: Vec<_> = self
            .queues
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain()
            .map(|(_, q)| q)
            .collect();
        for q in queues {
            drop(q);
        }
        // Every queued byte holds a permit until its batch is answered.
        let all = self.config.buffer_bytes_max.min(Semaphore::MAX_PERMITS) as u32;
        if let Ok(p) = self.budget.acquire_many(all).await {
            drop(p);
        }
    }
}

async fn run_partition(
    client: Arc<BrokerClient>,
    config: ProducerConfig,
    topic: String,
    partition: u32,
    mut rx: mpsc::Receiver<Item>,
) {
    let mut producer_id = if config.idempotent {
        new_producer_id()
    } else {
        0
    };
    let mut sequence: u64 = 0;
    while let Some(first) = rx.recv().await {
        let mut bytes = first.record.value.len() + first.record.key.len();
        let mut batch = vec![first];
        let deadline = tokio::time::Instant::now() + config.linger;
        while bytes < config.batch_bytes_max {
            match rx.try_recv() {
                Ok(item) => {
                    bytes += item.record.value.len() + item.record.key.len();
                    batch.push(item);
                    continue;
                }
                Err(mpsc::error::TryRecvError::Disconnected) => break,
                Err(mpsc::error::TryRecvError::Empty) => {}
            }
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(item)) => {
                    bytes += item.record.value.len() + item.record.key.len();
                    batch.push(item);
                }
                _ => break,
            }
        }
        let count = batch.len() as u64;
        let (records, dones): (Vec<_>, Vec<_>) = batch
            .into_iter()
            .map(|i| (i.record, (i.done, i._permit)))
            .unzip();
        let req = pb::ProduceRequest {
            topic: topic.clone(),
            partition,
            records,
            acks: config.acks as i32,
            timeout_ms: 0,
            producer_id,
            base_sequence: sequence,
            producer_epoch: 0,
        };
        match client.produce(req).await {
            Ok(resp) => {
                sequence += count;
                for (i, (done, _permit)) in dones.into_iter().enumerate() {
                    let _ = done.send(Ok((partition, resp.base_offset + i as u64)));
                }
            }
            Err(e) => {
                if config.idempotent {
                    producer_id = new_producer_id();
                    sequence = 0;
                }
                for (done, _permit) in dones {
                    let _ = done.send(Err(e.clone()));
                }
            }
        }
    }
}
