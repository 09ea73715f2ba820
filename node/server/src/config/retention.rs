//! `--auto-compaction-mode` and `--auto-compaction-retention`, read as etcd
//! reads them.

use super::{AutoCompactionMode, ConfigError, invalid};
use crate::compaction::AutoCompaction;
use crate::kv::KvConfig;
use serde::Deserialize;
use std::time::Duration;

/// An `--auto-compaction-retention` as written: a bare number (hours in
/// periodic mode, a revision count in revision mode, as etcd reads it) or a
/// duration such as `1h30m`. [`super::NodeConfig::resolve`] reads it by the mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retention {
    /// A bare number.
    Number(u64),
    /// A duration with units.
    Span(Duration),
}

impl std::str::FromStr for Retention {
    type Err = String;

    fn from_str(text: &str) -> Result<Retention, String> {
        let text = text.trim();
        if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
            return text
                .parse()
                .map(Retention::Number)
                .map_err(|_| format!("{text:?} is too large"));
        }
        parse_duration(text).map(Retention::Span).ok_or_else(|| {
            format!("{text:?} is neither a number nor a duration such as 1h, 30m, 90s or 500ms")
        })
    }
}

/// A retention in the YAML file: `1000` and `1h` both read.
pub(super) fn retention_from_file<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Retention>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Scalar {
        Text(String),
        Integer(i64),
        Float(f64),
    }
    let Some(scalar) = Option::<Scalar>::deserialize(d)? else {
        return Ok(None);
    };
    let text = match scalar {
        Scalar::Text(s) => s,
        Scalar::Integer(n) => n.to_string(),
        Scalar::Float(f) => f.to_string(),
    };
    text.parse().map(Some).map_err(serde::de::Error::custom)
}

/// Parses a duration such as `1h30m`, `10m`, `90s` or `500ms`.
fn parse_duration(text: &str) -> Option<Duration> {
    let mut rest = text.trim();
    if rest.is_empty() {
        return None;
    }
    let mut total = Duration::ZERO;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let n: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let millis: u64 = match &rest[..unit] {
            "h" => 3_600_000,
            "m" => 60_000,
            "s" => 1_000,
            "ms" => 1,
            _ => return None,
        };
        rest = &rest[unit..];
        total = total.checked_add(Duration::from_millis(n.checked_mul(millis)?))?;
    }
    Some(total)
}

/// Shortest periodic retention: its samples come every tenth of it.
const PERIODIC_RETENTION_MIN: Duration = Duration::from_secs(1);
/// How often revision mode looks at the revision: etcd's fixed interval.
const REVISION_CHECK_INTERVAL: Duration = Duration::from_secs(300);

/// The auto-compaction settings, validated.
pub(super) fn auto_compaction(
    mode: Option<AutoCompactionMode>,
    retention: Option<Retention>,
) -> Result<AutoCompaction, ConfigError> {
    const RETENTION: &str = "auto-compaction-retention";
    let retention = retention.unwrap_or(Retention::Number(0));
    match mode.unwrap_or(AutoCompactionMode::Periodic) {
        AutoCompactionMode::Periodic => {
            let retention = match retention {
                // etcd reads a bare number as hours in periodic mode.
                Retention::Number(hours) => hours
                    .checked_mul(3600)
                    .map(Duration::from_secs)
                    .ok_or_else(|| invalid(RETENTION, format!("{hours} hours is too large")))?,
                Retention::Span(span) => span,
            };
            if retention.is_zero() {
                Ok(AutoCompaction::Off)
            } else if retention < PERIODIC_RETENTION_MIN {
                Err(invalid(
                    RETENTION,
                    format!("{retention:?} is below periodic mode's minimum of 1s"),
                ))
            } else {
                Ok(AutoCompaction::Periodic { retention })
            }
        }
        AutoCompactionMode::Revision => {
            let Retention::Number(revisions) = retention else {
                return Err(invalid(
                    RETENTION,
                    "a duration is not a revision count (revision mode keeps the last N revisions)",
                ));
            };
            let bound = KvConfig::default().retain_revisions;
            let revisions = i64::try_from(revisions)
                .ok()
                .filter(|n| bound <= 0 || *n <= bound)
                .ok_or_else(|| {
                    invalid(
                        RETENTION,
                        format!(
                            "{revisions} is above the {bound} revisions the store keeps at most (it compacts beyond that itself)"
                        ),
                    )
                })?;
            Ok(if revisions == 0 {
                AutoCompaction::Off
            } else {
                AutoCompaction::Revision {
                    revisions,
                    check_interval: REVISION_CHECK_INTERVAL,
                }
            })
        }
    }
}
