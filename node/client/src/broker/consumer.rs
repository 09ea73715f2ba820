//! A consumer: of a group (partitions assigned by the group, positions from
//! its committed offsets) or of chosen partitions.
//!
//! At-least-once: a record's offset is committed only after the
//! application had it — with `auto_commit`, at the next `poll` (the records
//! the previous poll returned count as processed) and on `close`; otherwise
//! when the application calls `commit`. A crash before the commit means the
//! records are delivered again to whoever owns the partition next.

use super::{BrokerClient, BrokerClientError};
use flotilla_proto::broker as pb;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Where a partition without a committed offset starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartFrom {
    /// The log start.
    Earliest,
    /// The high watermark (only new records).
    Latest,
}

/// Consumer settings.
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// The group (None: no group; use `assign`).
    pub group: Option<String>,
    /// Name shown in the group's description.
    pub client_id: String,
    /// Group session timeout.
    pub session_timeout: Duration,
    /// Heartbeat period (a third of the session timeout is usual).
    pub heartbeat_interval: Duration,
    /// Commit automatically (see the module docs).
    pub auto_commit: bool,
    /// Where partitions without a committed offset start.
    pub start_from: StartFrom,
    /// Bytes per partition fetch.
    pub fetch_max_bytes: u32,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        ConsumerConfig {
            group: None,
            client_id: "flotilla-consumer".into(),
            session_timeout: Duration::from_secs(10),
            heartbeat_interval: Duration::from_secs(3),
            auto_commit: true,
            start_from: StartFrom::Latest,
            fetch_max_bytes: 1 << 20,
        }
    }
}

/// A record as consumed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumedRecord {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: u32,
    /// Offset.
    pub offset: u64,
    /// Unix nanoseconds.
    pub timestamp_ns: i64,
    /// Key, if any.
    pub key: Option<bytes::Bytes>,
    /// Value.
    pub value: bytes::Bytes,
}

/// A consumer.
#[derive(Debug)]
pub struct Consumer {
    client: Arc<BrokerClient>,
    config: ConsumerConfig,
    topics: Vec<String>,
    member_id: String,
    generation: u64,
    /// Next offset per assigned partition.
    positions: BTreeMap<(String, u32), u64>,
    /// Positions as of the last poll's records (what auto-commit commits).
    consumed: BTreeMap<(String, u32), u64>,
    last_heartbeat: Instant,
    next_partition: usize,
}

impl Consumer {
    /// A consumer of `topics` in `config.group` (joins at once), or with no
    /// group (then call [`Consumer::assign`]).
    pub async fn new(
        client: Arc<BrokerClient>,
        topics: Vec<String>,
        config: ConsumerConfig,
    ) -> Result<Consumer, BrokerClientError> {
        let mut c = Consumer {
            client,
            config,
            topics,
            member_id: String::new(),
            generation: 0,
            positions: BTreeMap::new(),
            consumed: BTreeMap::new(),
            last_heartbeat: Instant::now(),
            next_partition: 0,
        };
        if c.config.group.is_some() {
            c.join().await?;
        }
        Ok(c)
    }

    /// The member id (group consumers).
    pub fn member_id(&self) -> &str {
        &self.member_id
    }

    /// The generation (group consumers).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The assigned partitions and their next offsets.
    pub fn positions(&self) -> &BTreeMap<(String, u32), u64> {
        &self.positions
    }

    /// Consumes `partition` of `topic` from `offset` (None: per
    /// `start_from`), without a group.
    pub async fn assign(
        &mut self,
        topic: &str,
        partition: u32,
        offset: Option<u64>,
    ) -> Result<(), BrokerClientError> {
        let offset = match offset {
            Some(o) => o,
            None => self.start_offset(topic, partition).await?,
        };
        self.positions
            .insert((topic.to_string(), partition), offset);
        self.consumed.insert((topic.to_string(), partition), offset);
        Ok(())
    }

    async fn start_offset(&self, topic: &str, partition: u32) -> Result<u64, BrokerClientError> {
        let spec = match self.config.start_from {
            StartFrom::Earliest => pb::OffsetSpec::Earliest,
            StartFrom::Latest => pb::OffsetSpec::Latest,
        };
        self.client.list_offset(topic, partition, spec, 0).await
    }

    async fn join(&mut self) -> Result<(), BrokerClientError> {
        let group = self.config.group.clone().expect("a group consumer");
        let resp = self
            .client
            .groups()
            .join_group(pb::JoinGroupRequest {
                group: group.clone(),
                topics: self.topics.clone(),
                member_id: self.member_id.clone(),
                session_timeout_ms: self.config.session_timeout.as_millis() as u32,
                client_id: self.config.client_id.clone(),
            })
            .await
            .map_err(BrokerClientError::Status)?
            .into_inner();
        if let Some(e) = resp.error.filter(|e| e.code != 0) {
            return Err(BrokerClientError::Broker(e));
        }
        self.member_id = resp.member_id;
        self.generation = resp.generation;
        self.last_heartbeat = Instant::now();
        let committed = self
            .client
            .groups()
            .fetch_offsets(pb::FetchOffsetsRequest {
                group,
                partitions: resp.assignment.clone(),
            })
            .await
            .map_err(BrokerClientError::Status)?
            .into_inner();
        let committed: HashMap<(String, u32), i64> = committed
            .offsets
            .into_iter()
            .map(|c| ((c.topic, c.partition), c.offset))
            .collect();
        let mut positions = BTreeMap::new();
        for tp in resp.assignment {
            let key = (tp.topic.clone(), tp.partition);
            let offset = match committed.get(&key) {
                Some(&o) if o >= 0 => o as u64,
                _ => self.start_offset(&tp.topic, tp.partition).await?,
            };
            positions.insert(key, offset);
        }
        self.consumed = positions.clone();
        self.positions = positions;
        Ok(())
    }

    async fn heartbeat(&mut self) -> Result<(), BrokerClientError> {
        let Some(group) = self.config.group.clone() else {
            return Ok(());
        };
        if self.last_heartbeat.elapsed() < self.config.heartbeat_interval {
            return Ok(());
        }
        let resp = self
            .client
            .groups()
            .heartbeat(pb::HeartbeatRequest {
                group,
                member_id: self.member_id.clone(),
                generation: self.generation,
            })
            .await
            .map_err(BrokerClientError::Status)?
            .into_inner();
        self.last_heartbeat = Instant::now();
        match resp.error.filter(|e| e.code != 0) {
            None => Ok(()),
            Some(e)
                if e.code == pb::ErrorCode::IllegalGeneration as i32
                    || e.code == pb::ErrorCode::UnknownMember as i32 =>
            {
                // A rebalance: commit what was processed (may be refused if
                // the generation moved on; then the next owner re-reads it),
                // then join the new generation.
                if self.config.auto_commit {
                    let _ = self.commit_positions(&self.consumed.clone()).await;
                }
                if e.code == pb::ErrorCode::UnknownMember as i32 {
                    self.member_id.clear();
                }
                self.join().await
            }
            Some(e) => Err(BrokerClientError::Broker(e)),
        }
    }

    /// Fetches the next records from the assigned partitions, waiting up to
    /// `max_wait` when none is there. With auto-commit, first commits what
    /// the previous poll returned.
    pub async fn poll(
        &mut self,
        max_wait: Duration,
    ) -> Result<Vec<ConsumedRecord>, BrokerClientError> {
        if self.config.auto_commit && self.consumed != self.positions {
            let _ = self.commit().await;
        }
        self.heartbeat().await?;
        self.consumed = self.positions.clone();
        let parts: Vec<(String, u32)> = self.positions.keys().cloned().collect();
        if parts.is_empty() {
            tokio::time::sleep(max_wait.min(self.config.heartbeat_interval)).await;
            return Ok(Vec::new());
        }
        // Round robin over the partitions; long-poll only on the last one
        // asked, so one idle partition does not delay the others.
        let mut out = Vec::new();
        for i in 0..parts.len() {
            let tp = &parts[(self.next_partition + i) % parts.len()];
            let last = i + 1 == parts.len();
            let wait = if last && out.is_empty() {
                max_wait
            } else {
                Duration::ZERO
            };
            let offset = self.positions[tp];
            let resp = self
                .client
                .fetch(pb::FetchRequest {
                    topic: tp.0.clone(),
                    partition: tp.1,
                    offset,
                    max_bytes: self.config.fetch_max_bytes,
                    max_wait_ms: wait.as_millis() as u32,
                    replica_id: 0,
                    leader_epoch: 0,
                })
                .await;
            let resp = match resp {
                Ok(r) => r,
                Err(e) if e.code() == Some(pb::ErrorCode::OffsetOutOfRange) => {
                    let o = self.start_offset(&tp.0, tp.1).await?;
                    self.positions.insert(tp.clone(), o);
                    continue;
                }
                Err(e) => return Err(e),
            };
            if let Some(r) = resp.records.last() {
                self.positions.insert(tp.clone(), r.offset + 1);
            }
            out.extend(resp.records.into_iter().map(|r| ConsumedRecord {
                topic: tp.0.clone(),
                partition: tp.1,
                offset: r.offset,
                timestamp_ns: r.timestamp_ns,
                key: r.has_key.then_some(r.key),
                value: r.value,
            }));
        }
        self.next_partition = (self.next_partition + 1) % parts.len();
        Ok(out)
    }

    /// Commits the positions after everything polled so far.
    pub async fn commit(&mut self) -> Result<(), BrokerClientError> {
        let positions = self.positions.clone();
        self.commit_positions(&positions).await?;
        self.consumed = positions;
        Ok(())
    }

    /// Commits exactly `positions` (next offsets per partition), for an
    /// application that processed only part of what it polled.
    pub async fn commit_offsets(
        &self,
        positions: &BTreeMap<(String, u32), u64>,
    ) -> Result<(), BrokerClientError> {
        self.commit_positions(positions).await
    }

    async fn commit_positions(
        &self,
        positions: &BTreeMap<(String, u32), u64>,
    ) -> Result<(), BrokerClientError> {
        let Some(group) = self.config.group.clone() else {
            return Ok(());
        };
        let resp = self
            .client
            .groups()
            .commit_offsets(pb::CommitOffsetsRequest {
                group,
                member_id: self.member_id.clone(),
                generation: self.generation,
                offsets: positions
                    .iter()
                    .map(|((topic, partition), offset)| pb::OffsetCommit {
                        topic: topic.clone(),
                        partition: *partition,
                        offset: *offset,
                        metadata: String::new(),
                    })
                    .collect(),
            })
            .await
            .map_err(BrokerClientError::Status)?
            .into_inner();
        match resp.error.filter(|e| e.code != 0) {
            None => Ok(()),
            Some(e) => Err(BrokerClientError::Broker(e)),
        }
    }

    /// Commits (with auto-commit) and leaves the group.
    pub async fn close(mut self) -> Result<(), BrokerClientError> {
        if self.config.auto_commit {
            self.commit().await?;
        }
        self.leave().await
    }

    /// Leaves the group without committing.
    pub async fn leave(self) -> Result<(), BrokerClientError> {
        if let Some(group) = self.config.group.clone() {
            self.client
                .groups()
                .leave_group(pb::LeaveGroupRequest {
                    group,
                    member_id: self.member_id.clone(),
                })
                .await
                .map_err(BrokerClientError::Status)?;
        }
        Ok(())
    }
}
