//! The on-disk history format of `HISTORY.md`, as serde types.
//!
//! These types mirror the JSON field for field (and in the same order), so a
//! history saved here is byte-compatible with what other tools write and
//! read. Interpretation (which fields an operation needs, what an output
//! means) lives in [`super::kv`], so that a malformed file is reported with
//! the index of the offending operation instead of a serde error.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer, Serialize};

/// Environment variable naming the folder histories are exported to.
pub const HISTORY_DIR_ENV: &str = "FLOTILLA_HISTORY_DIR";

/// Errors from reading, writing or interpreting a history.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// File or folder involved.
        path: PathBuf,
        /// Underlying error.
        source: io::Error,
    },
    /// The text is not a history in `HISTORY.md`'s JSON format.
    #[error("{context}: not a valid history: {source}")]
    Json {
        /// Where the text came from (a path, or "string").
        context: String,
        /// Underlying error.
        source: serde_json::Error,
    },
    /// The history names a model this checker does not know.
    #[error("unsupported model {0:?} (supported: \"kv\")")]
    UnsupportedModel(String),
    /// One operation is inconsistent (e.g. an `ok` get without output).
    #[error("operation {index}: {reason}")]
    InvalidOperation {
        /// Index in `History::operations`.
        index: usize,
        /// What is wrong with it.
        reason: String,
    },
}

/// A recorded history: one JSON document of `HISTORY.md`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    /// The model the operations are checked against; `"kv"` today.
    pub model: String,
    /// Operations in any order (the checker sorts by time).
    pub operations: Vec<Operation>,
}

/// One client operation, from call to (maybe) return.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Operation {
    /// The client that issued it; one timeline row per client in the HTML.
    pub client_id: u64,
    /// Which operation.
    pub op: OpKind,
    /// The key it touches; histories are partitioned by key.
    pub key: String,
    /// Value written by `put` and `cas`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// For `cas` only: `Some(None)` is JSON `null` (key absent). Kept as a
    /// double option so that `"expected": null` survives a round trip
    /// instead of disappearing.
    #[serde(
        default,
        deserialize_with = "present_or_null",
        skip_serializing_if = "Option::is_none"
    )]
    pub expected: Option<Option<String>>,
    /// When the client sent it, on the clock shared by the whole history.
    pub call_ns: u64,
    /// When the response arrived; `None` (JSON `null`) if never.
    pub return_ns: Option<u64>,
    /// What the client learned.
    pub outcome: Outcome,
    /// Response payload for `ok` gets and cases.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Output>,
}

/// The four KV operations of `HISTORY.md`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OpKind {
    /// Read a key.
    Get,
    /// Write a key.
    Put,
    /// Remove a key.
    Delete,
    /// Compare-and-set.
    Cas,
}

/// What the client learned about an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// The response arrived; the operation took effect.
    Ok,
    /// The server said it did not and will not take effect; ignored.
    Fail,
    /// Timeout or lost connection: may take effect at any time after the
    /// call, or never.
    Unknown,
}

/// The response payload: `{"value": ...}` for gets, `{"succeeded": ...}`
/// for cas. A struct rather than an untagged enum so that a payload with
/// the wrong field is reported as such instead of silently matching the
/// other variant.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Output {
    /// For `get`: `Some(None)` is JSON `null` (key absent).
    #[serde(
        default,
        deserialize_with = "present_or_null",
        skip_serializing_if = "Option::is_none"
    )]
    pub value: Option<Option<String>>,
    /// For `cas`: whether the value was set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub succeeded: Option<bool>,
}

impl Output {
    /// The output of a `get` that read `value` (`None`: key absent).
    pub fn value(value: Option<String>) -> Self {
        Self {
            value: Some(value),
            succeeded: None,
        }
    }

    /// The output of a `cas`.
    pub fn succeeded(succeeded: bool) -> Self {
        Self {
            value: None,
            succeeded: Some(succeeded),
        }
    }
}

/// Distinguishes a field that is present but `null` (`Some(None)`) from an
/// absent one (`None`, via `#[serde(default)]`).
fn present_or_null<'de, D>(deserializer: D) -> Result<Option<Option<String>>, D::Error>
where
    D: Deserializer<'de>,
{
    Option::<String>::deserialize(deserializer).map(Some)
}

impl History {
    /// An empty history for the KV model.
    pub fn new_kv() -> Self {
        Self {
            model: "kv".to_owned(),
            operations: Vec::new(),
        }
    }

    /// Parses a history from JSON text.
    pub fn from_json(text: &str) -> Result<Self, HistoryError> {
        serde_json::from_str(text).map_err(|source| HistoryError::Json {
            context: "string".to_owned(),
            source,
        })
    }

    /// Renders the history as pretty-printed JSON.
    pub fn to_json(&self) -> String {
        // Serialising plain strings, integers and enums cannot fail; fall
        // back to an empty document rather than panic if serde ever does.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// Reads a history file.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, HistoryError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| HistoryError::Io {
            path: path.to_owned(),
            source,
        })?;
        serde_json::from_str(&text).map_err(|source| HistoryError::Json {
            context: path.display().to_string(),
            source,
        })
    }

    /// Writes the history to `path`, replacing any file there.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<(), HistoryError> {
        let path = path.as_ref();
        std::fs::write(path, self.to_json()).map_err(|source| HistoryError::Io {
            path: path.to_owned(),
            source,
        })
    }

    /// Writes `<$FLOTILLA_HISTORY_DIR>/<test_name>-<seed_or_ts>.json` when the
    /// variable is set, creating the folder if needed; returns the path
    /// written, or `None` when export was not requested. Characters other
    /// than letters, digits, `-`, `_` and `.` in `test_name` become `-`, so
    /// `module::test` names are safe file names.
    pub fn export_if_requested(
        &self,
        test_name: &str,
        seed_or_ts: impl fmt::Display,
    ) -> Result<Option<PathBuf>, HistoryError> {
        match std::env::var_os(HISTORY_DIR_ENV) {
            Some(dir) => self
                .export_to(Path::new(&dir), test_name, seed_or_ts)
                .map(Some),
            None => Ok(None),
        }
    }

    /// Writes `<dir>/<test_name>-<seed_or_ts>.json`, creating `dir` if
    /// needed, and returns the path; [`History::export_if_requested`]
    /// without the environment variable.
    pub fn export_to(
        &self,
        dir: &Path,
        test_name: &str,
        seed_or_ts: impl fmt::Display,
    ) -> Result<PathBuf, HistoryError> {
        std::fs::create_dir_all(dir).map_err(|source| HistoryError::Io {
            path: dir.to_owned(),
            source,
        })?;
        let path = dir.join(format!("{}-{seed_or_ts}.json", sanitize(test_name)));
        self.save(&path)?;
        Ok(path)
    }
}

fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '-'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expected_null_survives_round_trip() {
        let text = r#"{"model":"kv","operations":[{"client_id":3,"op":"cas","key":"k2",
            "expected":null,"value":"b","call_ns":1,"return_ns":null,"outcome":"unknown"}]}"#;
        let history = History::from_json(text).expect("parses");
        assert_eq!(history.operations[0].expected, Some(None));
        let json = history.to_json();
        assert!(json.contains("\"expected\": null"), "{json}");
        assert!(json.contains("\"return_ns\": null"), "{json}");
        assert_eq!(History::from_json(&json).expect("parses"), history);
    }

    #[test]
    fn sanitize_keeps_names_file_safe() {
        assert_eq!(sanitize("sim::kv/partition 1"), "sim--kv-partition-1");
    }
}
