//! Per-log configuration: segment rolling, record size limit, durability
//! policy and retention. Every limit has a name here (units last).

use std::fmt;
use std::str::FromStr;

use crate::error::{LogError, Result};
use crate::record::{BODY_BYTES_MAX, RECORD_OVERHEAD_BYTES};

/// The largest segment the format allows: index positions are `u32`, so every
/// record must start below 4 GiB.
pub const SEGMENT_BYTES_LIMIT: u64 = u32::MAX as u64;

/// When appended records are fsynced before the append is acknowledged.
///
/// Whatever the policy, an append returns only after its bytes were handed to
/// the operating system (so they survive a crash of this process, and readers
/// see them), and a segment is fsynced when it is closed by a roll.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// Fsync before acknowledging each batch. Concurrent appenders share one
    /// fsync (group commit).
    Always,
    /// The append that brings the count of unsynced records to N fsyncs (and
    /// waits) before returning.
    EveryRecords(u64),
    /// The first append at least T ms after the last fsync fsyncs (and waits)
    /// before returning. Call [`crate::Log::sync_if_due`] from a timer to
    /// bound the window when appends stop.
    EveryMs(u64),
    /// Never fsync on append: durability comes from replication, as with
    /// Kafka's default.
    Never,
}

impl fmt::Display for FsyncPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FsyncPolicy::Always => write!(f, "always"),
            FsyncPolicy::EveryRecords(n) => write!(f, "every-records:{n}"),
            FsyncPolicy::EveryMs(ms) => write!(f, "every-ms:{ms}"),
            FsyncPolicy::Never => write!(f, "never"),
        }
    }
}

impl FromStr for FsyncPolicy {
    type Err = LogError;

    /// Parses `always`, `never`, `every-records:N` or `every-ms:T`.
    fn from_str(s: &str) -> Result<Self> {
        let bad = || {
            LogError::InvalidConfig(format!(
                "fsync policy {s:?}: expected always, never, every-records:N or every-ms:T (N, T > 0)"
            ))
        };
        let number = |text: &str| text.parse::<u64>().ok().filter(|n| *n > 0).ok_or_else(bad);
        match s {
            "always" => Ok(FsyncPolicy::Always),
            "never" => Ok(FsyncPolicy::Never),
            _ => match s.split_once(':') {
                Some(("every-records", n)) => Ok(FsyncPolicy::EveryRecords(number(n)?)),
                Some(("every-ms", t)) => Ok(FsyncPolicy::EveryMs(number(t)?)),
                _ => Err(bad()),
            },
        }
    }
}

/// Configuration of one partition log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// Roll to a new segment before a record would make the active one larger
    /// than this. At most [`SEGMENT_BYTES_LIMIT`]. Default 1 GiB.
    pub segment_bytes_max: u64,
    /// Roll to a new segment when the active one got its first record at
    /// least this long ago. `None` rolls by size only. Default 7 days.
    pub segment_age_max_ms: Option<u64>,
    /// Largest encoded record (header, key, value, CRC) accepted by append and
    /// by the decoder. Do not lower it below records already stored: they
    /// would read as corrupt. Default 1 MiB.
    pub record_bytes_max: u32,
    /// When appends are fsynced. Default [`FsyncPolicy::Never`].
    pub fsync: FsyncPolicy,
    /// Retention deletes closed segments whose last record is older than
    /// this. `None` keeps them. Default 7 days.
    pub retention_ms: Option<u64>,
    /// Retention deletes the oldest closed segments while the log is larger
    /// than this. `None` keeps them. Default `None`.
    pub retention_bytes: Option<u64>,
    /// Appends are encoded into a user-space buffer this large and written to
    /// the OS when it fills and at the end of each append call. Default 1 MiB.
    pub write_buffer_bytes: usize,
    /// Scan every closed segment fully (CRC of every record) on open, rather
    /// than checking its index against its last record. Default false.
    pub verify_closed_segments_on_open: bool,
}

const DAY_MS: u64 = 24 * 60 * 60 * 1000;

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes_max: 1 << 30,
            segment_age_max_ms: Some(7 * DAY_MS),
            record_bytes_max: 1 << 20,
            fsync: FsyncPolicy::Never,
            retention_ms: Some(7 * DAY_MS),
            retention_bytes: None,
            write_buffer_bytes: 1 << 20,
            verify_closed_segments_on_open: false,
        }
    }
}

impl LogConfig {
    /// Checks that the limits fit the format and each other.
    pub fn validate(&self) -> Result<()> {
        let fail = |why: String| Err(LogError::InvalidConfig(why));
        if self.segment_bytes_max > SEGMENT_BYTES_LIMIT {
            return fail(format!(
                "segment_bytes_max {} is above {SEGMENT_BYTES_LIMIT}: index positions are u32",
                self.segment_bytes_max
            ));
        }
        if (self.record_bytes_max as usize) < RECORD_OVERHEAD_BYTES {
            return fail(format!(
                "record_bytes_max {} is below the {RECORD_OVERHEAD_BYTES}-byte record overhead",
                self.record_bytes_max
            ));
        }
        if self.record_bytes_max > BODY_BYTES_MAX {
            return fail(format!(
                "record_bytes_max {} is above {BODY_BYTES_MAX}: a record's body size has 31 bits",
                self.record_bytes_max
            ));
        }
        if u64::from(self.record_bytes_max) > self.segment_bytes_max {
            return fail(format!(
                "record_bytes_max {} is above segment_bytes_max {}: a record must fit a segment",
                self.record_bytes_max, self.segment_bytes_max
            ));
        }
        match self.fsync {
            FsyncPolicy::EveryRecords(0) | FsyncPolicy::EveryMs(0) => {
                return fail(format!("fsync policy {} needs a count above 0", self.fsync));
            }
            _ => {}
        }
        if self.segment_age_max_ms == Some(0) {
            return fail("segment_age_max_ms must be above 0 (or None)".into());
        }
        if self.write_buffer_bytes == 0 {
            return fail("write_buffer_bytes must be above 0".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_round_trips_through_text() {
        for policy in [
            FsyncPolicy::Always,
            FsyncPolicy::Never,
            FsyncPolicy::EveryRecords(1000),
            FsyncPolicy::EveryMs(5),
        ] {
            assert_eq!(policy.to_string().parse::<FsyncPolicy>().unwrap(), policy);
        }
        for bad in [
            "",
            "sometimes",
            "every-records:0",
            "every-ms:x",
            "every-records",
        ] {
            assert!(bad.parse::<FsyncPolicy>().is_err(), "{bad}");
        }
    }

    #[test]
    fn validate_rejects_limits_the_format_cannot_hold() {
        assert!(LogConfig::default().validate().is_ok());
        let too_big = LogConfig {
            segment_bytes_max: SEGMENT_BYTES_LIMIT + 1,
            ..LogConfig::default()
        };
        assert!(too_big.validate().is_err());
        let record_above_segment = LogConfig {
            segment_bytes_max: 1000,
            record_bytes_max: 1001,
            ..LogConfig::default()
        };
        assert!(record_above_segment.validate().is_err());
    }
}
