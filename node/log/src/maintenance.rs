//! Shrinking the log: `truncate_to` (replication discarding a diverged
//! suffix) and retention (deleting whole old segments from the front).
//!
//! Both take the writer mutex, publish the smaller segment list to readers
//! first and only then cut or delete files. A reader still holding an old
//! snapshot keeps its open file handles, so a deleted segment stays readable
//! to it; a reader racing a truncation may see either side of it.

use std::sync::Arc;

use crate::Offset;
use crate::error::{LogError, Result};
use crate::index;
use crate::log::{Log, unix_now_ns};
use crate::segment::{self, NO_TIMESTAMP, Segment};

/// What a retention pass did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionOutcome {
    /// Whole segments deleted.
    pub segments_deleted: usize,
    /// Their bytes of log.
    pub bytes_deleted: u64,
    /// The log start offset afterwards.
    pub log_start: Offset,
}

impl Log {
    /// Discards every record at or after `offset`, so the next append gets
    /// `offset`. A no-op if `offset` is at or past the log end; an
    /// `OffsetOutOfRange` error below the log start. The cut is fsynced
    /// whatever the policy, so a discarded suffix cannot come back after a
    /// crash.
    pub fn truncate_to(&self, offset: Offset) -> Result<()> {
        let mut writer = self.lock_writer()?;
        let segments = self.snapshot();
        let log_start = segments[0].base;
        let log_end = writer.next_offset;
        if offset >= log_end {
            return Ok(());
        }
        if offset < log_start {
            return Err(LogError::OffsetOutOfRange {
                requested: offset,
                log_start,
                log_end,
            });
        }
        let i = segments.partition_point(|s| s.base <= offset) - 1;
        let segment = segments[i].clone();
        let position = u64::from(segment.position_of(offset)?);
        let last_timestamp_ns = if offset > segment.base {
            let previous = segment.position_of(Offset(offset.0 - 1))?;
            segment
                .read_record_at(u64::from(previous), self.record_bytes_max)?
                .timestamp_ns
        } else {
            NO_TIMESTAMP
        };
        segment.unpublish_to(offset, position, last_timestamp_ns);
        self.publish_segments(segments[..=i].to_vec());
        if let Err(e) = self.cut_files(&segment, offset, position, &segments[i + 1..]) {
            self.fail();
            return Err(e);
        }
        self.commit.truncated(offset);
        writer.reset_after_truncate(segment, position);
        tracing::info!(%offset, "truncated log");
        Ok(())
    }

    fn cut_files(
        &self,
        segment: &Segment,
        offset: Offset,
        position: u64,
        later: &[Arc<Segment>],
    ) -> Result<()> {
        segment
            .log
            .set_len(position)
            .map_err(LogError::io(&segment.log_path))?;
        segment
            .index
            .set_len(index::entry_position(segment.base, offset))
            .map_err(LogError::io(&segment.index_path))?;
        segment.sync_all_files()?;
        for gone in later {
            gone.remove_files()?;
        }
        segment::sync_dir(&self.dir)
    }

    /// Runs retention now; see [`Log::apply_retention_at`].
    pub fn apply_retention(&self) -> Result<RetentionOutcome> {
        self.apply_retention_at(unix_now_ns())
    }

    /// Discards the whole log and starts it empty at `offset` (Kafka's
    /// "truncate fully and start at"): a follower whose log end is below
    /// its leader's log start (retention deleted what it lacks) continues
    /// from there. Old segments are deleted oldest first before the new one
    /// is created, so a crash midway leaves a contiguous suffix (or nothing)
    /// and the follower simply resets again.
    pub fn reset_to(&self, offset: Offset) -> Result<()> {
        let mut writer = self.lock_writer()?;
        let segments = self.snapshot();
        let result = (|| {
            for gone in segments.iter() {
                gone.remove_files()?;
            }
            segment::sync_dir(&self.dir)?;
            let fresh = Arc::new(Segment::create(&self.dir, offset)?);
            fresh.sync_all_files()?;
            segment::sync_dir(&self.dir)?;
            Ok(fresh)
        })();
        let fresh = match result {
            Ok(f) => f,
            Err(e) => {
                self.fail();
                return Err(e);
            }
        };
        self.publish_segments(vec![fresh.clone()]);
        self.commit.truncated(offset);
        writer.reset_after_truncate(fresh, 0);
        tracing::info!(%offset, "log reset: every segment deleted, starting empty");
        Ok(())
    }

    /// Deletes closed segments from the front while the oldest is expired
    /// (its last record is at least `retention_ms` older than `now_ns`) or
    /// the log is larger than `retention_bytes`. The active segment is never
    /// deleted. The log start offset moves to the first remaining segment.
    /// The broker calls this periodically; `now_ns` is a parameter so tests
    /// control time.
    pub fn apply_retention_at(&self, now_ns: i64) -> Result<RetentionOutcome> {
        self.apply_retention_below(now_ns, Offset(u64::MAX))
    }

    /// [`Log::apply_retention_at`], deleting only segments whose records are
    /// all below `limit` (a broker passes its high watermark, so nothing
    /// uncommitted goes).
    pub fn apply_retention_below(&self, now_ns: i64, limit: Offset) -> Result<RetentionOutcome> {
        let config = self.config();
        let _writer = self.lock_writer()?;
        let segments = self.snapshot();
        let mut total_bytes: u64 = segments.iter().map(|s| s.size()).sum();
        let retention_ns = config
            .retention_ms
            .map(|ms| (ms as i64).saturating_mul(1_000_000));
        let mut cut = 0;
        while cut + 1 < segments.len() {
            let oldest = &segments[cut];
            if oldest.end() > limit {
                break;
            }
            let over_bytes = config.retention_bytes.is_some_and(|max| total_bytes > max);
            let expired = retention_ns.is_some_and(|ns| {
                let last = oldest.last_timestamp_ns();
                last == NO_TIMESTAMP || now_ns.saturating_sub(last) >= ns
            });
            if !(over_bytes || expired) {
                break;
            }
            total_bytes -= oldest.size();
            cut += 1;
        }
        let mut outcome = RetentionOutcome {
            segments_deleted: cut,
            bytes_deleted: 0,
            log_start: segments[cut].base,
        };
        if cut == 0 {
            return Ok(outcome);
        }
        self.publish_segments(segments[cut..].to_vec());
        for gone in &segments[..cut] {
            outcome.bytes_deleted += gone.size();
            gone.remove_files()?;
        }
        segment::sync_dir(&self.dir)?;
        tracing::info!(
            segments = cut,
            log_start = %outcome.log_start,
            "retention deleted segments"
        );
        Ok(outcome)
    }
}
