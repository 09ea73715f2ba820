//! One call for tests: check a history, export it, and on failure leave a
//! timeline and the history on disk where the failure message points.

use std::fmt;
use std::path::PathBuf;

use super::checker::{Budget, CheckResult};
use super::history::{HISTORY_DIR_ENV, History, HistoryError};
use super::html::write_html;
use super::kv::check_kv;

/// The verdict on a history and the files written for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The checker's verdict.
    pub result: CheckResult,
    /// The history JSON, if it was written.
    pub history_path: Option<PathBuf>,
    /// The HTML timeline, written when the result is not `Ok`.
    pub html_path: Option<PathBuf>,
}

impl Report {
    /// True if the history is linearizable.
    pub fn is_ok(&self) -> bool {
        self.result.is_ok()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.result)?;
        if let Some(path) = &self.history_path {
            write!(f, "\n  history:  {}", path.display())?;
        }
        if let Some(path) = &self.html_path {
            write!(f, "\n  timeline: {}", path.display())?;
        }
        Ok(())
    }
}

/// Checks a KV history and writes files for whoever debugs it:
///
/// 1. the history goes to `$FLOTILLA_HISTORY_DIR/<test_name>-<seed>.json`
///    when the variable is set, whatever the verdict;
/// 2. if the verdict is not `Ok`, the history (if not already written) and
///    an HTML timeline go to that folder, or to the system temp folder when
///    the variable is unset, so a failure can always be inspected and
///    re-checked.
pub fn check_and_report(
    history: &History,
    budget: Budget,
    test_name: &str,
    seed_or_ts: impl fmt::Display,
) -> Result<Report, HistoryError> {
    let result = check_kv(history, budget)?;
    let seed = seed_or_ts.to_string();
    let mut history_path = history.export_if_requested(test_name, &seed)?;
    let mut html_path = None;
    if !result.is_ok() {
        let dir = std::env::var_os(HISTORY_DIR_ENV).map_or_else(default_report_dir, PathBuf::from);
        let json = match history_path.take() {
            Some(path) => path,
            None => history.export_to(&dir, test_name, &seed)?,
        };
        let html = json.with_extension("html");
        write_html(history, &result, &html)?;
        history_path = Some(json);
        html_path = Some(html);
    }
    Ok(Report {
        result,
        history_path,
        html_path,
    })
}

/// Where [`check_and_report`] puts files when `$FLOTILLA_HISTORY_DIR` is
/// unset.
pub fn default_report_dir() -> PathBuf {
    std::env::temp_dir().join("flotilla-histories")
}
