//! One partition replica on this broker: its log, its role (leader of an
//! epoch, follower of a leader, or neither), the high watermark, the epoch
//! cache, and as leader the followers' progress, the ISR and the producer
//! table.
//!
//! The rules a leader follows:
//! 1. It writes only while its role is `Leader` and its lease is within the
//!    safe window ([`crate::lease`]).
//! 2. The high watermark is the smallest log end over the ISR (the leader's
//!    included); it never goes down while the same leader leads.
//! 3. A follower's fetch at offset `o` says it has every record below `o`.
//! 4. ISR changes are written to the KV first (fenced by the epoch), then
//!    applied here.

use crate::epoch::{CHECKPOINT_FILE, CheckpointFile, EpochCache, EpochEntry};
use crate::error::PartitionError;
use crate::producers::{Check, Producers, Snapshot, WrittenBatch};
use bytes::Bytes;
use flotilla_log::record::{HeaderRef, ProducerStamp};
use flotilla_log::{Log, LogConfig, NewRecord, Offset};
use flotilla_proto::broker as pb;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;
use tokio::sync::watch;

/// The high watermark checkpoint file inside the partition directory.
pub const HW_FILE: &str = "high-watermark-checkpoint";
/// The producer-state snapshot inside the partition directory (JSON, see
/// [`Snapshot`]). Not fsynced: a lost or torn one only means a longer
/// replay on open.
pub const PRODUCER_SNAPSHOT_FILE: &str = "producer-state-snapshot";
/// The shortest fetch silence that removes a caught-up follower from the
/// ISR, whatever `--replica-lag-time-max-ms` says: followers long-poll for
/// up to 500 ms, so an idle one fetches only about twice a second.
const FETCH_SILENCE_MIN: std::time::Duration = std::time::Duration::from_secs(1);
/// Bytes read per step when replaying the log into the producer table.
const REPLAY_READ_BYTES: usize = 1 << 20;

/// What this broker is for the partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// Neither (no leader known, or stepping down).
    None,
    /// Leads in `epoch`.
    Leader {
        /// The epoch.
        epoch: i64,
    },
    /// Follows `leader` in `epoch`.
    Follower {
        /// The epoch.
        epoch: i64,
        /// The leader broker.
        leader: u64,
        /// Its address.
        addr: String,
    },
}

/// A follower's progress as the leader sees it.
#[derive(Debug, Clone, Copy)]
pub struct FollowerProgress {
    /// Its log end (the offset of its last fetch).
    pub log_end: u64,
    /// When it was last caught up with the leader's log end.
    pub caught_up_at: Instant,
    /// When it last fetched.
    pub fetched_at: Instant,
}

#[derive(Debug)]
struct State {
    role: Role,
    hw: u64,
    epochs: EpochCache,
    isr: Vec<u64>,
    followers: HashMap<u64, FollowerProgress>,
    producers: Producers,
    min_insync: u32,
    leader_since: Instant,
    /// The broker lease the leadership was taken under: a later lease of
    /// this broker does not hold it.
    lease: i64,
}

/// One partition replica.
#[derive(Debug)]
pub struct Replica {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: u32,
    me: u64,
    log: Arc<Log>,
    dir: PathBuf,
    state: Mutex<State>,
    /// Bumped whenever the log end or the high watermark moves, or the role
    /// changes: what long-polls wait on.
    changed: watch::Sender<u64>,
    /// Serialises appends, so a batch's offsets and its producer record
    /// agree.
    write: tokio::sync::Mutex<()>,
    epoch_file: CheckpointFile,
    hw_file: CheckpointFile,
    /// The log end the last producer snapshot covered.
    producers_saved_at: Mutex<Option<u64>>,
}

/// The outcome of a leader append.
#[derive(Debug, Clone, Copy)]
pub struct Appended {
    /// First offset.
    pub base_offset: u64,
    /// One past the last.
    pub end_offset: u64,
    /// The epoch.
    pub epoch: i64,
    /// A retried batch already written.
    pub duplicate: bool,
}

/// Reads this close to the high watermark (in records) run on the async
/// worker itself: they come from the page cache, and handing the worker's
/// core to another thread ([`tokio::task::block_in_place`]) costs more than
/// the read, a thread wake-up on every fetch. Older reads may touch the disk
/// and do hand it over.
const TAIL_READ_RECORDS: u64 = 65_536;

fn storage(e: impl std::fmt::Display) -> PartitionError {
    PartitionError::Storage(e.to_string())
}

impl Replica {
    /// Opens (or creates) the replica under `root/<topic>-<partition>`,
    /// recovering its log, epoch cache and high watermark.
    pub fn open(
        root: &std::path::Path,
        topic: &str,
        partition: u32,
        me: u64,
        config: LogConfig,
        min_insync: u32,
    ) -> Result<Replica, PartitionError> {
        let log =
            tokio::task::block_in_place(|| Log::open_partition(root, topic, partition, config))
                .map_err(storage)?;
        let dir = log.dir().to_path_buf();
        let epoch_file = CheckpointFile::new(&dir, CHECKPOINT_FILE);
        let hw_file = CheckpointFile::new(&dir, HW_FILE);
        let end = log.log_end_offset().0;
        let mut epochs = EpochCache::from_entries(
            epoch_file
                .read()
                .map_err(storage)?
                .into_iter()
                .map(|(epoch, start_offset)| EpochEntry {
                    epoch,
                    start_offset,
                })
                .collect(),
        )
        .map_err(PartitionError::Storage)?;
        // A crash between a truncation and the checkpoint's rewrite leaves
        // entries past the log end: drop them.
        epochs.truncate_from(end.saturating_add(1));
        let hw = hw_file
            .read()
            .map_err(storage)?
            .first()
            .map_or(0, |&(_, hw)| hw)
            .min(end)
            .max(log.log_start_offset().0);
        let producers = tokio::task::block_in_place(|| load_producers(&log, &dir))?;
        let (changed, _) = watch::channel(0);
        Ok(Replica {
            topic: topic.to_string(),
            partition,
            me,
            log: Arc::new(log),
            dir,
            state: Mutex::new(State {
                role: Role::None,
                hw,
                epochs,
                isr: Vec::new(),
                followers: HashMap::new(),
                producers,
                min_insync,
                leader_since: Instant::now(),
                lease: 0,
            }),
            changed,
            write: tokio::sync::Mutex::new(()),
            epoch_file,
            hw_file,
            producers_saved_at: Mutex::new(None),
        })
    }

    /// Runs a log append: on the worker itself when the log never fsyncs on
    /// append (it only copies into the page cache), else where it may block.
    fn appending<T>(&self, f: impl FnOnce() -> T) -> T {
        if self.log.config().fsync == flotilla_log::FsyncPolicy::Never {
            f()
        } else {
            tokio::task::block_in_place(f)
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn bump(&self) {
        self.changed.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// The partition's directory.
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// The log.
    pub fn log(&self) -> &Arc<Log> {
        &self.log
    }

    /// The role.
    pub fn role(&self) -> Role {
        self.state().role.clone()
    }

    /// The high watermark.
    pub fn high_watermark(&self) -> u64 {
        self.state().hw
    }

    /// The log end offset.
    pub fn log_end(&self) -> u64 {
        self.log.log_end_offset().0
    }

    /// The ISR as this replica knows it (leaders only keep it current).
    pub fn isr(&self) -> Vec<u64> {
        self.state().isr.clone()
    }

    /// The latest epoch in the log's cache.
    pub fn latest_epoch(&self) -> i64 {
        self.state().epochs.latest_epoch()
    }

    /// Sets min.insync.replicas (from the topic's configuration).
    pub fn set_min_insync(&self, min: u32) {
        self.state().min_insync = min;
    }

    fn save_epochs(&self, epochs: &EpochCache) -> Result<(), PartitionError> {
        let pairs: Vec<(i64, u64)> = epochs
            .entries()
            .iter()
            .map(|e| (e.epoch, e.start_offset))
            .collect();
        tokio::task::block_in_place(|| self.epoch_file.write(&pairs)).map_err(storage)
    }

    /// Writes the high watermark checkpoint.
    pub fn checkpoint_hw(&self) -> Result<(), PartitionError> {
        let hw = self.high_watermark();
        tokio::task::block_in_place(|| self.hw_file.write(&[(0, hw)])).map_err(storage)
    }

    /// Applies a (possibly altered) topic configuration to the open log:
    /// segment size and age, fsync policy, retention. Returns whether it
    /// changed anything.
    pub fn apply_config(&self, config: flotilla_log::LogConfig) -> Result<bool, PartitionError> {
        if self.log.config() == config {
            return Ok(false);
        }
        self.log.set_config(config).map_err(storage)?;
        tracing::info!(topic = %self.topic, partition = self.partition, config = ?self.log.config(), "log configuration applied");
        Ok(true)
    }

    /// Runs retention: deletes whole segments expired by time or beyond the
    /// size bound, only below the high watermark (leader and followers
    /// alike), and moves the log start. Returns the segments deleted.
    pub fn apply_retention(&self) -> Result<usize, PartitionError> {
        let hw = self.high_watermark();
        let out = tokio::task::block_in_place(|| {
            self.log
                .apply_retention_below(flotilla_log::unix_now_ns(), Offset(hw))
        })
        .map_err(storage)?;
        if out.segments_deleted == 0 {
            return Ok(0);
        }
        let epochs = {
            let mut s = self.state();
            s.epochs.truncate_before(out.log_start.0);
            s.epochs.clone()
        };
        self.save_epochs(&epochs)?;
        self.bump();
        tracing::info!(
            topic = %self.topic, partition = self.partition,
            segments = out.segments_deleted, bytes = out.bytes_deleted,
            log_start = out.log_start.0, "retention deleted segments"
        );
        Ok(out.segments_deleted)
    }

    /// A follower whose log ends below the leader's log start (retention
    /// there deleted what it lacks) empties its log and starts it at
    /// `offset`: epochs, producer state and the high watermark start there
    /// too. Returns the records dropped.
    pub async fn reset_to(&self, offset: u64) -> Result<u64, PartitionError> {
        let _w = self.write.lock().await;
        let (start, end) = (self.log.log_start_offset().0, self.log_end());
        if offset <= end {
            return Err(PartitionError::Invalid(format!(
                "reset to {offset}: the log already reaches {end}"
            )));
        }
        tokio::task::block_in_place(|| self.log.reset_to(Offset(offset))).map_err(storage)?;
        let epochs = {
            let mut s = self.state();
            s.epochs.truncate_from(0);
            s.producers.clear();
            s.hw = offset;
            s.epochs.clone()
        };
        self.save_epochs(&epochs)?;
        self.save_producers_locked()?;
        self.bump();
        Ok(end - start)
    }

    /// Writes the producer-state snapshot if the log moved since the last
    /// one. Skipped (not waited for) while an append or truncation runs.
    pub fn checkpoint_producers(&self) -> Result<(), PartitionError> {
        let Ok(_w) = self.write.try_lock() else {
            return Ok(());
        };
        self.save_producers_locked()
    }

    /// Writes the snapshot; the caller holds the write lock, so the table
    /// and the log end agree.
    fn save_producers_locked(&self) -> Result<(), PartitionError> {
        let end = self.log_end();
        let mut saved = self
            .producers_saved_at
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if *saved == Some(end) {
            return Ok(());
        }
        let snapshot = self.state().producers.snapshot(end);
        let bytes = serde_json::to_vec(&snapshot).map_err(storage)?;
        let path = self.dir.join(PRODUCER_SNAPSHOT_FILE);
        let tmp = path.with_extension("tmp");
        tokio::task::block_in_place(|| {
            std::fs::write(&tmp, &bytes)?;
            std::fs::rename(&tmp, &path)
        })
        .map_err(storage)?;
        *saved = Some(end);
        Ok(())
    }

    /// Producers in the table (for tests and metrics).
    pub fn producer_count(&self) -> usize {
        self.state().producers.len()
    }

    /// Becomes leader of `epoch` with `isr` (as written to the KV, under
    /// broker lease `lease`): records the epoch's start at the log end
    /// (KIP-101), forgets followers' progress and producers.
    pub fn become_leader(
        &self,
        epoch: i64,
        isr: Vec<u64>,
        lease: i64,
    ) -> Result<(), PartitionError> {
        let end = self.log_end();
        let epochs = {
            let mut s = self.state();
            if s.role == (Role::Leader { epoch }) {
                return Ok(());
            }
            s.role = Role::Leader { epoch };
            s.lease = lease;
            s.isr = isr;
            s.followers.clear();
            s.leader_since = Instant::now();
            if !s.epochs.assign(epoch, end) {
                None
            } else {
                Some(s.epochs.clone())
            }
        };
        if let Some(e) = epochs {
            self.save_epochs(&e)?;
        }
        self.recompute_hw();
        self.bump();
        tracing::info!(topic = %self.topic, partition = self.partition, epoch, log_end = end, "leading");
        Ok(())
    }

    /// Follows `leader` in `epoch` (or steps down to no role).
    pub fn set_role(&self, role: Role) {
        let mut s = self.state();
        if s.role != role {
            s.role = role;
            s.followers.clear();
            drop(s);
            self.bump();
        }
    }

    /// A receiver that sees every change of the log end, the high watermark
    /// or the role.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    fn not_leader(&self, role: &Role) -> PartitionError {
        let (leader_id, leader_addr, leader_epoch) = match role {
            Role::Follower {
                epoch,
                leader,
                addr,
            } => (*leader, addr.clone(), *epoch),
            _ => (0, String::new(), 0),
        };
        PartitionError::NotLeader {
            topic: self.topic.clone(),
            partition: self.partition,
            leader_id,
            leader_addr,
            leader_epoch,
        }
    }

    /// The leader's epoch, or NotLeader.
    pub fn leader_epoch(&self) -> Result<i64, PartitionError> {
        match self.role() {
            Role::Leader { epoch } => Ok(epoch),
            other => Err(self.not_leader(&other)),
        }
    }

    /// Appends a produced batch as leader (rule 1), after the idempotence
    /// check. `lease_valid(id)` says whether broker lease `id`, the one the
    /// leadership was taken under, is inside its safe window now.
    pub async fn append_as_leader(
        &self,
        req: &pb::ProduceRequest,
        acks_all: bool,
        lease_valid: impl Fn(i64) -> bool,
    ) -> Result<Appended, PartitionError> {
        let count = req.records.len() as u64;
        let producer_epoch = i16::try_from(req.producer_epoch).map_err(|_| {
            PartitionError::Invalid(format!(
                "producer epoch {} is outside -32768..=32767",
                req.producer_epoch
            ))
        })?;
        if req.producer_id != 0 && req.base_sequence.checked_add(count).is_none() {
            return Err(PartitionError::Invalid(format!(
                "base sequence {} leaves no room for {count} records",
                req.base_sequence
            )));
        }
        let _w = self.write.lock().await;
        let (epoch, lease) = {
            let s = self.state();
            let Role::Leader { epoch } = s.role else {
                return Err(self.not_leader(&s.role));
            };
            if acks_all && s.isr.len() < s.min_insync as usize {
                return Err(PartitionError::NotEnoughReplicas {
                    isr: s.isr.len(),
                    min: s.min_insync,
                });
            }
            if req.producer_id != 0 {
                match s
                    .producers
                    .check(req.producer_id, producer_epoch, req.base_sequence, count)
                {
                    Check::Append => {}
                    Check::Duplicate(base_offset) => {
                        return Ok(Appended {
                            base_offset,
                            end_offset: base_offset + count,
                            epoch,
                            duplicate: true,
                        });
                    }
                    Check::OutOfOrder { expected } => {
                        return Err(PartitionError::OutOfOrderSequence {
                            producer: req.producer_id,
                            got: req.base_sequence,
                            expected,
                        });
                    }
                    Check::Fenced { current } => {
                        return Err(PartitionError::ProducerFenced {
                            producer: req.producer_id,
                            got: producer_epoch,
                            current,
                        });
                    }
                }
            }
            (epoch, s.lease)
        };
        if !lease_valid(lease) {
            return Err(PartitionError::LeaseExpiring);
        }
        let headers = headers_of(req.records.iter());
        let records: Vec<NewRecord<'_>> = req
            .records
            .iter()
            .zip(&headers)
            .enumerate()
            .map(|(i, (r, h))| NewRecord {
                key: r.has_key.then_some(&r.key[..]),
                value: &r.value,
                timestamp_ns: (r.timestamp_ns != 0).then_some(r.timestamp_ns),
                producer: (req.producer_id != 0).then(|| ProducerStamp {
                    id: req.producer_id,
                    epoch: producer_epoch,
                    sequence: req.base_sequence + i as u64,
                }),
                headers: h,
            })
            .collect();
        let base = self
            .appending(|| self.log.append_batch(&records))
            .map_err(storage)?
            .0;
        let end = base + count;
        if req.producer_id != 0 {
            self.state().producers.record(
                req.producer_id,
                producer_epoch,
                WrittenBatch {
                    base_sequence: req.base_sequence,
                    count,
                    base_offset: base,
                },
            );
        }
        self.recompute_hw();
        self.bump();
        Ok(Appended {
            base_offset: base,
            end_offset: end,
            epoch,
            duplicate: false,
        })
    }

    /// Rule 2: recomputes the high watermark from the ISR's log ends.
    pub fn recompute_hw(&self) {
        let end = self.log_end();
        let mut s = self.state();
        if !matches!(s.role, Role::Leader { .. }) {
            return;
        }
        let mut hw = end;
        for id in &s.isr {
            if *id == self.me {
                continue;
            }
            match s.followers.get(id) {
                Some(f) => hw = hw.min(f.log_end),
                // Not heard from in this epoch: it has at least what the
                // previous leader's high watermark covered, no more is known.
                None => hw = hw.min(s.hw),
            }
        }
        if hw > s.hw {
            s.hw = hw;
            drop(s);
            self.bump();
        }
    }

    /// Waits until the high watermark reaches `end` or the role changes;
    /// returns whether it did. Bounded by `timeout`.
    pub async fn wait_for_hw(&self, end: u64, epoch: i64, timeout: std::time::Duration) -> bool {
        let mut rx = self.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            {
                let s = self.state();
                if s.hw >= end {
                    return true;
                }
                if s.role != (Role::Leader { epoch }) {
                    return false;
                }
            }
            if tokio::time::timeout_at(deadline, rx.changed())
                .await
                .is_err()
            {
                return self.state().hw >= end;
            }
        }
    }

    /// The ISR size and min.insync.replicas.
    pub fn isr_and_min(&self) -> (usize, u32) {
        let s = self.state();
        (s.isr.len(), s.min_insync)
    }

    /// Rule 3: a follower's fetch at `offset` in `epoch`; checks the epoch
    /// and records its progress.
    pub fn follower_fetched(
        &self,
        replica: u64,
        epoch: i64,
        offset: u64,
    ) -> Result<(), PartitionError> {
        let end = self.log_end();
        {
            let mut s = self.state();
            let Role::Leader { epoch: mine } = s.role else {
                return Err(self.not_leader(&s.role));
            };
            if epoch < mine {
                return Err(PartitionError::FencedEpoch {
                    requested: epoch,
                    current: mine,
                });
            }
            if epoch > mine {
                return Err(PartitionError::UnknownEpoch {
                    requested: epoch,
                    current: mine,
                });
            }
            if offset > end {
                return Err(PartitionError::OffsetOutOfRange {
                    requested: offset,
                    start: self.log.log_start_offset().0,
                    end,
                });
            }
            let now = Instant::now();
            let since = s.leader_since;
            let f = s.followers.entry(replica).or_insert(FollowerProgress {
                log_end: offset,
                caught_up_at: since,
                fetched_at: now,
            });
            f.fetched_at = now;
            f.log_end = offset;
            if offset >= end {
                f.caught_up_at = now;
            }
        }
        self.recompute_hw();
        Ok(())
    }

    /// The ISR the leader wants now: members that were caught up within
    /// `lag_max`, plus replicas (of `replicas`) that reached the high
    /// watermark. `None` when unchanged or not leading.
    pub fn desired_isr(&self, replicas: &[u64], lag_max: std::time::Duration) -> Option<Vec<u64>> {
        let now = Instant::now();
        let end = self.log_end();
        let s = self.state();
        if !matches!(s.role, Role::Leader { .. }) {
            return None;
        }
        let mut isr: Vec<u64> = Vec::new();
        for &r in replicas {
            if r == self.me {
                isr.push(r);
                continue;
            }
            let in_isr = s.isr.contains(&r);
            let progress = s.followers.get(&r);
            let keep = match (in_isr, progress) {
                (true, Some(f)) => {
                    // A caught-up follower that stopped fetching (dead,
                    // or cut off) leaves too: an idle partition must not
                    // keep it until the next write makes it lag.
                    now.duration_since(f.fetched_at) <= lag_max.max(FETCH_SILENCE_MIN)
                        && (f.log_end >= end || now.duration_since(f.caught_up_at) <= lag_max)
                }
                (true, None) => now.duration_since(s.leader_since) <= lag_max,
                (false, Some(f)) => f.log_end >= s.hw && f.log_end >= end.min(s.hw),
                (false, None) => false,
            };
            if keep {
                isr.push(r);
            }
        }
        let mut current = s.isr.clone();
        current.sort_unstable();
        let mut want = isr.clone();
        want.sort_unstable();
        (current != want).then_some(isr)
    }

    /// Applies an ISR written to the KV (rule 4).
    pub fn set_isr(&self, isr: Vec<u64>) {
        self.state().isr = isr;
        self.recompute_hw();
        self.bump();
    }

    /// Reads records from `offset` up to `limit` (exclusive), at most
    /// `max_bytes` (at least one record if any). `with_epochs` stamps each
    /// record with the epoch that wrote it (for followers).
    pub fn read(
        &self,
        offset: u64,
        limit: u64,
        max_bytes: usize,
        with_epochs: bool,
    ) -> Result<Vec<pb::Record>, PartitionError> {
        if offset >= limit {
            return Ok(Vec::new());
        }
        let read = || self.log.read_from(Offset(offset), max_bytes);
        let tail = offset.saturating_add(TAIL_READ_RECORDS) >= self.high_watermark();
        let records = if tail {
            read()
        } else {
            tokio::task::block_in_place(read)
        }
        .map_err(|e| match e {
            flotilla_log::LogError::OffsetOutOfRange {
                requested,
                log_start,
                log_end,
            } => PartitionError::OffsetOutOfRange {
                requested: requested.0,
                start: log_start.0,
                end: log_end.0,
            },
            other => storage(other),
        })?;
        let epochs = with_epochs.then(|| self.state().epochs.clone());
        Ok(records
            .into_iter()
            .take_while(|r| r.offset.0 < limit)
            .map(|r| pb::Record {
                offset: r.offset.0,
                timestamp_ns: r.timestamp_ns,
                has_key: r.key.is_some(),
                key: r.key.map(Bytes::from).unwrap_or_default(),
                value: Bytes::from(r.value),
                leader_epoch: epochs.as_ref().map_or(0, |e| e.epoch_of(r.offset.0)),
                headers: r
                    .headers
                    .into_iter()
                    .map(|(key, value)| pb::RecordHeader {
                        key: key.into(),
                        value: value.into(),
                    })
                    .collect(),
                producer_id: r.producer.map_or(0, |p| p.id),
                producer_epoch: r.producer.map_or(0, |p| i32::from(p.epoch)),
                sequence: r.producer.map_or(0, |p| p.sequence),
            })
            .collect())
    }

    /// KIP-101's answer for a follower's `epoch`.
    pub fn end_offset_for(&self, epoch: i64) -> (i64, u64) {
        let end = self.log_end();
        self.state().epochs.end_offset_for(epoch, end)
    }

    /// Where this follower truncates given the leader's answer.
    pub fn truncation_point(&self, leader_epoch: i64, leader_end: u64) -> u64 {
        let end = self.log_end();
        self.state()
            .epochs
            .truncation_point(leader_epoch, leader_end, end)
    }

    /// Truncates the log (and the epoch cache, and the high watermark) to
    /// `offset`; returns how many records were dropped.
    pub async fn truncate_to(&self, offset: u64) -> Result<u64, PartitionError> {
        let _w = self.write.lock().await;
        let end = self.log_end();
        if offset >= end {
            return Ok(0);
        }
        tokio::task::block_in_place(|| self.log.truncate_to(Offset(offset))).map_err(storage)?;
        let epochs = {
            let mut s = self.state();
            s.epochs.truncate_from(offset);
            s.producers.truncate_from(offset);
            s.hw = s.hw.min(offset);
            s.epochs.clone()
        };
        self.save_epochs(&epochs)?;
        // A snapshot past the cut would bring the cut records' producer
        // state back on the next open: replace it now.
        self.save_producers_locked()?;
        self.bump();
        Ok(end - offset)
    }

    /// Appends records fetched from the leader (a follower), continuing the
    /// epoch cache and taking the leader's high watermark up to our log end.
    pub async fn append_as_follower(
        &self,
        records: &[pb::Record],
        leader_hw: u64,
    ) -> Result<(), PartitionError> {
        let _w = self.write.lock().await;
        let end = self.log_end();
        let records: Vec<&pb::Record> = records.iter().filter(|r| r.offset >= end).collect();
        if let Some(first) = records.first() {
            if first.offset != end {
                return Err(PartitionError::Invalid(format!(
                    "replication: record {} does not follow the log end {end}",
                    first.offset
                )));
            }
            let mut changed = false;
            {
                let mut s = self.state();
                for r in &records {
                    if r.leader_epoch > s.epochs.latest_epoch() {
                        changed |= s.epochs.assign(r.leader_epoch, r.offset);
                    }
                }
            }
            if changed {
                let e = self.state().epochs.clone();
                self.save_epochs(&e)?;
            }
            let headers = headers_of(records.iter().copied());
            let mut new: Vec<NewRecord<'_>> = Vec::with_capacity(records.len());
            for (r, h) in records.iter().zip(&headers) {
                new.push(NewRecord {
                    key: r.has_key.then_some(&r.key[..]),
                    value: &r.value,
                    timestamp_ns: Some(r.timestamp_ns),
                    producer: stamp_of(r)?,
                    headers: h,
                });
            }
            self.appending(|| self.log.append_batch(&new))
                .map_err(storage)?;
            let mut s = self.state();
            for r in &records {
                if let Some(p) = stamp_of(r)? {
                    s.producers.record(
                        p.id,
                        p.epoch,
                        WrittenBatch {
                            base_sequence: p.sequence,
                            count: 1,
                            base_offset: r.offset,
                        },
                    );
                }
            }
        }
        let end = self.log_end();
        {
            let mut s = self.state();
            s.hw = s.hw.max(leader_hw.min(end));
        }
        self.bump();
        Ok(())
    }

    /// Records a new epoch the follower learned of with no records yet
    /// (nothing to do: the cache grows with the first record of it).
    pub fn first_offset_at(&self, timestamp_ns: i64) -> Result<Option<(u64, i64)>, PartitionError> {
        // Binary search over offsets: the leader stamps records in append
        // order, so timestamps ascend unless producers set their own.
        let hw = self.high_watermark();
        let mut lo = self.log.log_start_offset().0;
        let mut hi = hw;
        let ts_at = |o: u64| -> Result<i64, PartitionError> {
            let r = self.read(o, o + 1, 1, false)?;
            Ok(r.first().map_or(i64::MAX, |r| r.timestamp_ns))
        };
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if ts_at(mid)? < timestamp_ns {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        if lo >= hw {
            return Ok(None);
        }
        Ok(Some((lo, ts_at(lo)?)))
    }

    /// Removes the replica's files (the topic was deleted).
    pub fn remove_files(&self) -> std::io::Result<()> {
        std::fs::remove_dir_all(&self.dir)
    }
}

/// Each record's headers as the log takes them.
fn headers_of<'a>(records: impl Iterator<Item = &'a pb::Record>) -> Vec<Vec<HeaderRef<'a>>> {
    records
        .map(|r| {
            r.headers
                .iter()
                .map(|h| (&h.key[..], &h.value[..]))
                .collect()
        })
        .collect()
}

/// The producer stamp a replicated record carries.
fn stamp_of(r: &pb::Record) -> Result<Option<ProducerStamp>, PartitionError> {
    if r.producer_id == 0 {
        return Ok(None);
    }
    let epoch = i16::try_from(r.producer_epoch).map_err(|_| {
        PartitionError::Invalid(format!(
            "replication: producer epoch {} is outside i16",
            r.producer_epoch
        ))
    })?;
    Ok(Some(ProducerStamp {
        id: r.producer_id,
        epoch,
        sequence: r.sequence,
    }))
}

/// The producer table of a log being opened: the snapshot beside it (if it
/// is readable and does not claim records past the log end), then every
/// stamped record from the snapshot's end (or the log start) replayed.
fn load_producers(log: &Log, dir: &std::path::Path) -> Result<Producers, PartitionError> {
    let start = log.log_start_offset().0;
    let end = log.log_end_offset().0;
    let snapshot = std::fs::read(dir.join(PRODUCER_SNAPSHOT_FILE))
        .ok()
        .and_then(|b| serde_json::from_slice::<Snapshot>(&b).ok())
        .filter(|s| s.version == 1 && s.end <= end);
    let (mut table, mut at) = match &snapshot {
        Some(s) => (Producers::from_snapshot(s), s.end.max(start)),
        None => (Producers::default(), start),
    };
    let from = at;
    while at < end {
        let records = log
            .read_from(Offset(at), REPLAY_READ_BYTES)
            .map_err(storage)?;
        let Some(last) = records.last() else {
            break;
        };
        at = last.offset.0 + 1;
        for r in &records {
            if let Some(p) = r.producer {
                table.record(
                    p.id,
                    p.epoch,
                    WrittenBatch {
                        base_sequence: p.sequence,
                        count: 1,
                        base_offset: r.offset.0,
                    },
                );
            }
        }
    }
    if end > start {
        tracing::debug!(
            dir = %dir.display(),
            snapshot = snapshot.is_some(),
            replayed = at - from,
            producers = table.len(),
            "producer state rebuilt"
        );
    }
    Ok(table)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(producer_id: u64, base_sequence: u64, values: &[&str]) -> pb::ProduceRequest {
        pb::ProduceRequest {
            topic: "t".into(),
            partition: 0,
            records: values
                .iter()
                .map(|v| pb::Record {
                    value: Bytes::from(v.to_string()),
                    headers: vec![pb::RecordHeader {
                        key: Bytes::from_static(b"h"),
                        value: Bytes::from(v.to_string()),
                    }],
                    ..Default::default()
                })
                .collect(),
            acks: pb::Acks::Leader as i32,
            producer_id,
            base_sequence,
            ..Default::default()
        }
    }

    async fn produce(r: &Replica, req: &pb::ProduceRequest) -> Appended {
        r.append_as_leader(req, false, |_| true)
            .await
            .expect("append")
    }

    /// A follower copies the producer stamps; a restarted replica rebuilds
    /// its table from the snapshot and the records after it. Either, as the
    /// next leader, answers a retry as a duplicate.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn producer_state_survives_a_new_leader_and_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let open = |me: u64, sub: &str| {
            Replica::open(&dir.path().join(sub), "t", 0, me, LogConfig::default(), 1).unwrap()
        };
        let leader = open(1, "a");
        leader.become_leader(5, vec![1], 1).unwrap();
        let first = produce(&leader, &batch(9, 0, &["a", "b", "c"])).await;
        produce(&leader, &batch(4, 0, &["other"])).await;
        leader.checkpoint_producers().unwrap();
        let after_snapshot = produce(&leader, &batch(9, 3, &["d", "e"])).await;
        assert!(
            produce(&leader, &batch(9, 0, &["a", "b", "c"]))
                .await
                .duplicate
        );

        // A follower copies everything, then leads in a newer epoch.
        let follower = open(2, "b");
        let records = leader.read(0, leader.log_end(), 1 << 20, true).unwrap();
        assert_eq!(
            records[0].headers[0].value,
            Bytes::from("a"),
            "headers kept"
        );
        follower
            .append_as_follower(&records, leader.log_end())
            .await
            .unwrap();
        follower.become_leader(7, vec![2], 1).unwrap();
        let retry = produce(&follower, &batch(9, 3, &["d", "e"])).await;
        assert!(retry.duplicate, "the new leader knows the batch");
        assert_eq!(retry.base_offset, after_snapshot.base_offset);
        assert_eq!(
            follower.log_end(),
            leader.log_end(),
            "nothing written twice"
        );
        let gap = follower
            .append_as_leader(&batch(9, 9, &["x"]), false, |_| true)
            .await;
        assert!(matches!(
            gap,
            Err(PartitionError::OutOfOrderSequence { expected: 5, .. })
        ));

        // The old leader restarts: snapshot (3 records of 9, 1 of 4) plus
        // the replay of "d", "e".
        drop(leader);
        let reopened = open(1, "a");
        assert_eq!(reopened.producer_count(), 2);
        reopened.become_leader(9, vec![1], 1).unwrap();
        let retry = produce(&reopened, &batch(9, 0, &["a", "b", "c"])).await;
        assert!(retry.duplicate);
        assert_eq!(retry.base_offset, first.base_offset);
        assert!(
            produce(&reopened, &batch(9, 3, &["d", "e"]))
                .await
                .duplicate
        );
        let next = produce(&reopened, &batch(9, 5, &["f"])).await;
        assert!(!next.duplicate);
        assert_eq!(next.base_offset, 6);

        // A truncation forgets the cut records' sequences.
        reopened.truncate_to(6).await.unwrap();
        assert!(!produce(&reopened, &batch(9, 5, &["f"])).await.duplicate);
    }

    /// A broker that lost its lease and registered again holds a new lease,
    /// valid, but its old leaderships stand on the lost one: until the
    /// controller demotes them, their writes are refused.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_write_needs_the_lease_the_leadership_was_taken_under() {
        let dir = tempfile::tempdir().unwrap();
        let r = Replica::open(dir.path(), "t", 0, 1, LogConfig::default(), 1).unwrap();
        r.become_leader(3, vec![1], 8).unwrap();
        let asked = std::sync::Mutex::new(Vec::new());
        let held_now = |now: i64| {
            let asked = &asked;
            move |held: i64| {
                asked.lock().unwrap().push(held);
                held == now
            }
        };
        let refused = r
            .append_as_leader(&batch(0, 0, &["a"]), false, held_now(9))
            .await;
        assert!(
            matches!(refused, Err(PartitionError::LeaseExpiring)),
            "{refused:?}"
        );
        assert_eq!(
            r.log_end(),
            0,
            "nothing written under a lease that is not held"
        );
        let taken = r
            .append_as_leader(&batch(0, 0, &["a"]), false, held_now(8))
            .await
            .expect("written under its own lease");
        assert_eq!(taken.base_offset, 0);
        assert_eq!(*asked.lock().unwrap(), vec![8, 8]);
    }
}
