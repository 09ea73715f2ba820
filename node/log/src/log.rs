//! `Log`: one partition's segments, its single writer and its readers.
//!
//! Concurrency: appends, truncation and retention serialize on the writer
//! mutex. Readers take a snapshot of the segment list (an `Arc<Vec<_>>`
//! swapped under a short `RwLock`) and read with `pread`, so they never wait
//! for a writer or an fsync. Durability waits happen after the writer mutex
//! is released (see [`crate::commit`]).

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::Offset;
use crate::commit::GroupCommit;
use crate::config::{FsyncPolicy, LogConfig};
use crate::error::{LogError, Result};
use crate::index;
use crate::record::{self, NewRecord, Record};
use crate::recovery;
use crate::segment::{self, Segment};

/// The segment list readers snapshot.
pub(crate) type Segments = Arc<Vec<Arc<Segment>>>;

/// One partition's append-only log. `Send + Sync`: share it in an `Arc`.
#[derive(Debug)]
pub struct Log {
    pub(crate) dir: PathBuf,
    /// The configuration; [`Log::set_config`] swaps it (under the writer
    /// lock) while the log is open.
    pub(crate) config: RwLock<LogConfig>,
    /// `config.record_bytes_max`, which cannot change while open.
    pub(crate) record_bytes_max: u32,
    pub(crate) writer: Mutex<Writer>,
    pub(crate) segments: RwLock<Segments>,
    pub(crate) commit: GroupCommit,
    pub(crate) failed: AtomicBool,
}

/// State only the writer touches.
#[derive(Debug)]
pub(crate) struct Writer {
    pub active: Arc<Segment>,
    /// The offset the next record gets.
    pub next_offset: Offset,
    /// Bytes of the active log handed to the OS.
    pub written_bytes: u64,
    /// Encoded records not yet written.
    pub log_buf: Vec<u8>,
    /// Their index entries.
    pub index_buf: Vec<u8>,
    /// Timestamp of the last encoded record.
    pub last_timestamp_ns: i64,
    /// When the active segment got its first record (for rolling by age).
    pub active_since_ns: Option<i64>,
    /// Records appended since the last fsync request.
    pub unsynced_records: u64,
    /// When the last fsync was requested.
    pub last_sync: Instant,
}

/// What one segment holds, for inspection and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentInfo {
    /// First offset.
    pub base: Offset,
    /// Offset after the last record.
    pub end: Offset,
    /// Bytes of log.
    pub size_bytes: u64,
    /// The `.log` file.
    pub log_path: PathBuf,
}

/// The wall clock in Unix nanoseconds.
pub fn unix_now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

impl Log {
    /// Opens (creating if needed) the log in `dir` and recovers it; see
    /// [`crate::recovery`] for the rules.
    pub fn open(dir: impl AsRef<Path>, config: LogConfig) -> Result<Log> {
        config.validate()?;
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir).map_err(LogError::io(&dir))?;
        let recovered = recovery::recover_dir(&dir, &config)?;
        let active = recovered
            .segments
            .last()
            .expect("recovery leaves at least one segment")
            .clone();
        let commit = GroupCommit::default();
        // Closed segments were fsynced when closed; the tail may not be.
        commit.mark_synced(active.base);
        let writer = Writer {
            next_offset: active.end(),
            written_bytes: active.size(),
            log_buf: Vec::with_capacity(config.write_buffer_bytes),
            index_buf: Vec::new(),
            last_timestamp_ns: active.last_timestamp_ns(),
            active_since_ns: recovered.active_first_timestamp_ns,
            unsynced_records: 0,
            last_sync: Instant::now(),
            active,
        };
        Ok(Log {
            dir,
            record_bytes_max: config.record_bytes_max,
            config: RwLock::new(config),
            writer: Mutex::new(writer),
            segments: RwLock::new(Arc::new(recovered.segments)),
            commit,
            failed: AtomicBool::new(false),
        })
    }

    /// Opens partition `partition` of `topic` under `root`, in the folder
    /// `<topic>-<partition>`. Topic names are `[A-Za-z0-9._-]+` (Kafka's
    /// rule), so they cannot escape `root`.
    pub fn open_partition(
        root: impl AsRef<Path>,
        topic: &str,
        partition: u32,
        config: LogConfig,
    ) -> Result<Log> {
        let legal = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
        if topic.is_empty() || topic == "." || topic == ".." || !topic.chars().all(legal) {
            return Err(LogError::InvalidConfig(format!(
                "topic name {topic:?}: use 1+ characters from [A-Za-z0-9._-], not . or .."
            )));
        }
        Log::open(root.as_ref().join(format!("{topic}-{partition}")), config)
    }

    /// The directory holding the segments.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The configuration in force.
    pub fn config(&self) -> LogConfig {
        self.config
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Replaces the configuration of the open log: segment size and age,
    /// fsync policy and retention take effect from the next append (or
    /// retention pass). `record_bytes_max` cannot change while open (stored
    /// records are decoded with it).
    pub fn set_config(&self, config: LogConfig) -> Result<()> {
        config.validate()?;
        if config.record_bytes_max != self.record_bytes_max {
            return Err(LogError::InvalidConfig(format!(
                "record_bytes_max cannot change on an open log ({} to {})",
                self.record_bytes_max, config.record_bytes_max
            )));
        }
        let _writer = self.lock_writer()?;
        *self.config.write().unwrap_or_else(|e| e.into_inner()) = config;
        Ok(())
    }

    /// Appends one record, stamped now, and returns its offset. Durable per
    /// the fsync policy when this returns; visible to readers in any case.
    pub fn append(&self, key: Option<&[u8]>, value: &[u8]) -> Result<Offset> {
        self.append_batch(&[NewRecord::new(key, value)])
    }

    /// Appends records with consecutive offsets and returns the first. The
    /// whole batch is size-checked before anything is written; it is written
    /// with as few system calls as the write buffer allows, and fsynced (if
    /// the policy asks) once.
    pub fn append_batch(&self, records: &[NewRecord<'_>]) -> Result<Offset> {
        if records.is_empty() {
            return Err(LogError::EmptyBatch);
        }
        let config = self.config();
        let max = self.record_bytes_max;
        if let Some(bytes) = records
            .iter()
            .map(NewRecord::encoded_bytes)
            .find(|bytes| *bytes > u64::from(max))
        {
            return Err(LogError::RecordTooLarge { bytes, max });
        }
        let now_ns = unix_now_ns();
        let mut writer = self.lock_writer()?;
        let first = writer.next_offset;
        if let Err(e) = self.append_locked(&mut writer, &config, records, now_ns) {
            self.fail();
            return Err(e);
        }
        let end = writer.next_offset;
        let sync = writer.sync_due(config.fsync, records.len() as u64);
        drop(writer);
        if sync {
            self.wait_durable(end)?;
        }
        Ok(first)
    }

    fn append_locked(
        &self,
        writer: &mut Writer,
        config: &LogConfig,
        records: &[NewRecord<'_>],
        now_ns: i64,
    ) -> Result<()> {
        for new in records {
            let frame_bytes = new.encoded_bytes();
            if should_roll(config, writer, frame_bytes, now_ns) {
                self.flush(writer)?;
                self.roll(writer)?;
            }
            let position = writer.written_bytes + writer.log_buf.len() as u64;
            let position = u32::try_from(position).expect("segment_bytes_max fits u32 positions");
            let timestamp_ns = new.timestamp_ns.unwrap_or(now_ns);
            index::encode_entry(&mut writer.index_buf, writer.next_offset, position);
            record::encode_record_into(&mut writer.log_buf, writer.next_offset, timestamp_ns, new);
            writer.next_offset = writer.next_offset.plus(1);
            writer.last_timestamp_ns = timestamp_ns;
            writer.active_since_ns.get_or_insert(now_ns);
            if writer.log_buf.len() >= config.write_buffer_bytes {
                self.flush(writer)?;
            }
        }
        self.flush(writer)
    }

    /// Hands the buffered records to the OS and publishes them to readers.
    fn flush(&self, writer: &mut Writer) -> Result<()> {
        if writer.log_buf.is_empty() {
            return Ok(());
        }
        let segment = writer.active.clone();
        segment
            .log
            .write_all_at(&writer.log_buf, writer.written_bytes)
            .map_err(LogError::io(&segment.log_path))?;
        let index_at = index::entry_position(segment.base, segment.end());
        segment
            .index
            .write_all_at(&writer.index_buf, index_at)
            .map_err(LogError::io(&segment.index_path))?;
        writer.written_bytes += writer.log_buf.len() as u64;
        writer.log_buf.clear();
        writer.index_buf.clear();
        segment.publish(
            writer.next_offset,
            writer.written_bytes,
            writer.last_timestamp_ns,
        );
        Ok(())
    }

    /// Closes the active segment (fsyncing it, whatever the policy, so that
    /// closed segments are always whole on disk) and starts a new one.
    fn roll(&self, writer: &mut Writer) -> Result<()> {
        let closed = writer.active.clone();
        closed.sync_all_files()?;
        let segment = Arc::new(Segment::create(&self.dir, writer.next_offset)?);
        segment::sync_dir(&self.dir)?;
        {
            let mut segments = self.segments.write().unwrap_or_else(|e| e.into_inner());
            let mut list = Vec::clone(&segments);
            list.push(segment.clone());
            *segments = Arc::new(list);
        }
        self.commit.mark_synced(closed.end());
        tracing::debug!(base = %segment.base, "rolled to a new segment");
        writer.active = segment;
        writer.written_bytes = 0;
        writer.active_since_ns = None;
        Ok(())
    }

    /// Reads records from `offset`: whole records totalling at most
    /// `max_bytes` encoded bytes, but always at least one if `offset` is
    /// below the log end. Returns an empty vector at the log end. A read
    /// stays within one segment, so fewer bytes do not mean the end of the
    /// log; read again from the next offset. CRCs and offsets are checked.
    pub fn read_from(&self, offset: Offset, max_bytes: usize) -> Result<Vec<Record>> {
        let segments = self.snapshot();
        let log_start = segments[0].base;
        let log_end = segments.last().expect("at least one segment").end();
        if offset < log_start || offset > log_end {
            return Err(LogError::OffsetOutOfRange {
                requested: offset,
                log_start,
                log_end,
            });
        }
        if offset == log_end {
            return Ok(Vec::new());
        }
        let i = segments.partition_point(|s| s.base <= offset) - 1;
        let segment = &segments[i];
        let end = segment.end();
        if offset >= end {
            // A concurrent truncate_to removed it.
            return Err(LogError::OffsetOutOfRange {
                requested: offset,
                log_start,
                log_end: end,
            });
        }
        segment.read(offset, end, max_bytes, self.record_bytes_max)
    }

    /// The first offset still held (moves forward with retention).
    pub fn log_start_offset(&self) -> Offset {
        self.snapshot()[0].base
    }

    /// The offset the next append gets.
    pub fn log_end_offset(&self) -> Offset {
        self.snapshot().last().expect("at least one segment").end()
    }

    /// Total bytes of all segments' logs.
    pub fn size_bytes(&self) -> u64 {
        self.snapshot().iter().map(|s| s.size()).sum()
    }

    /// The segments, oldest first.
    pub fn segments(&self) -> Vec<SegmentInfo> {
        self.snapshot()
            .iter()
            .map(|s| SegmentInfo {
                base: s.base,
                end: s.end(),
                size_bytes: s.size(),
                log_path: s.log_path.clone(),
            })
            .collect()
    }

    /// Offsets below this are on stable storage.
    pub fn durable_end_offset(&self) -> Offset {
        self.commit.synced_end()
    }

    /// Group-commit fsyncs done so far (excluding fsyncs at segment roll).
    pub fn fsync_count(&self) -> u64 {
        self.commit.fsyncs()
    }

    /// Fsyncs everything appended so far, whatever the policy.
    pub fn sync(&self) -> Result<()> {
        self.check_not_failed()?;
        {
            let mut writer = self.lock_writer()?;
            writer.unsynced_records = 0;
            writer.last_sync = Instant::now();
        }
        self.wait_durable(self.log_end_offset())
    }

    /// For `every-ms:T`: fsyncs if records are unsynced and T ms passed since
    /// the last fsync. Call it from a timer so a quiet log still gets synced.
    /// Returns whether it synced.
    pub fn sync_if_due(&self) -> Result<bool> {
        let FsyncPolicy::EveryMs(ms) = self.config().fsync else {
            return Ok(false);
        };
        let end = {
            let mut writer = self.lock_writer()?;
            let due = writer.unsynced_records > 0
                && writer.last_sync.elapsed().as_millis() >= u128::from(ms);
            if !due {
                return Ok(false);
            }
            writer.unsynced_records = 0;
            writer.last_sync = Instant::now();
            writer.next_offset
        };
        self.wait_durable(end)?;
        Ok(true)
    }

    pub(crate) fn wait_durable(&self, end: Offset) -> Result<()> {
        self.commit.wait_durable(end, || self.active_segment())
    }

    pub(crate) fn snapshot(&self) -> Segments {
        self.segments
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub(crate) fn publish_segments(&self, list: Vec<Arc<Segment>>) {
        *self.segments.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(list);
    }

    fn active_segment(&self) -> Arc<Segment> {
        self.snapshot()
            .last()
            .expect("at least one segment")
            .clone()
    }

    pub(crate) fn lock_writer(&self) -> Result<MutexGuard<'_, Writer>> {
        self.check_not_failed()?;
        // A panic while the writer was held may have left buffers and files
        // out of step: treat it like a storage failure.
        let writer = self.writer.lock().map_err(|_| LogError::Failed)?;
        self.check_not_failed()?;
        Ok(writer)
    }

    fn check_not_failed(&self) -> Result<()> {
        if self.failed.load(Ordering::Acquire) {
            return Err(LogError::Failed);
        }
        Ok(())
    }

    /// Stops the log after a storage failure: what is on disk is unknown.
    pub(crate) fn fail(&self) {
        self.failed.store(true, Ordering::Release);
        self.commit.fail();
    }
}

/// Roll before a record that would overflow the segment, or when the
/// segment is older than `segment_age_max_ms`; never roll an empty one.
fn should_roll(config: &LogConfig, writer: &Writer, frame_bytes: u64, now_ns: i64) -> bool {
    let size = writer.written_bytes + writer.log_buf.len() as u64;
    if size == 0 {
        return false;
    }
    let too_big = size + frame_bytes > config.segment_bytes_max;
    let too_old = match (config.segment_age_max_ms, writer.active_since_ns) {
        (Some(age_ms), Some(since_ns)) => {
            now_ns.saturating_sub(since_ns) >= (age_ms as i64).saturating_mul(1_000_000)
        }
        _ => false,
    };
    too_big || too_old
}

impl Writer {
    /// Counts `records` and says whether this append must wait for an fsync.
    fn sync_due(&mut self, policy: FsyncPolicy, records: u64) -> bool {
        self.unsynced_records += records;
        let due = match policy {
            FsyncPolicy::Always => true,
            FsyncPolicy::Never => false,
            FsyncPolicy::EveryRecords(n) => self.unsynced_records >= n,
            FsyncPolicy::EveryMs(ms) => self.last_sync.elapsed().as_millis() >= u128::from(ms),
        };
        if due {
            self.unsynced_records = 0;
            self.last_sync = Instant::now();
        }
        due
    }

    /// Resets timestamps after the active segment was cut to `end`.
    pub(crate) fn reset_after_truncate(&mut self, active: Arc<Segment>, written_bytes: u64) {
        self.next_offset = active.end();
        self.written_bytes = written_bytes;
        self.last_timestamp_ns = active.last_timestamp_ns();
        // The segment is active again: its age for rolling counts from now.
        self.active_since_ns = (written_bytes > 0).then(unix_now_ns);
        self.log_buf.clear();
        self.index_buf.clear();
        self.active = active;
    }
}
