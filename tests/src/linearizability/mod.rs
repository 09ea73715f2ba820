//! Linearizability checker for client histories (DESIGN.md §8, layer 3).
//!
//! Porcupine's algorithm: the Wing–Gong/Lowe depth-first search with
//! memoisation of (linearized set, model state), run per partition (per key
//! for the KV model). Operations with unknown outcome may take effect at
//! any time after their call, or never; `fail` operations are ignored.
//!
//! Layout:
//! - [`history`]: the JSON format of `HISTORY.md` (load, save, export to
//!   `$FLOTILLA_HISTORY_DIR`).
//! - [`recorder`]: [`HistoryRecorder`], for recording while a test runs,
//!   with times from the caller's (possibly virtual) clock.
//! - [`model`]: the [`Model`] trait, a sequential specification.
//! - [`kv`]: [`KvModel`] and [`check_kv`], the entry point for KV histories.
//! - [`checker`]: the search, [`Budget`] and [`CheckResult`].
//! - [`html`]: [`write_html`], a timeline of a failing history.
//! - [`report`]: [`check_and_report`], check + export + HTML in one call.
//! - [`generate`]: random linearizable histories for tests and benches.
//!
//! Typical use in a test (times come from the test's clock, virtual in a
//! simulation):
//!
//! ```
//! use flotilla_tests::linearizability::{
//!     Budget, HistoryRecorder, KvInput, KvOutput, check_and_report,
//! };
//!
//! let recorder = HistoryRecorder::new();
//! let put = recorder.call(0, KvInput::put("k", "a"), 10);
//! let get = recorder.call(1, KvInput::get("k"), 15);
//! recorder.ok(put, 20, None);
//! recorder.ok(get, 25, Some(KvOutput::Value(Some("a".into()))));
//!
//! let seed = 42;
//! let report = check_and_report(&recorder.history(), Budget::default(), "doc_example", seed)
//!     .expect("well-formed history");
//! // On failure the report names the history JSON and the HTML timeline.
//! assert!(report.is_ok(), "seed {seed}: {report}");
//! ```
//!
//! Lower level: [`check_kv`] returns the [`CheckResult`], and
//! [`write_html`] draws it.

mod cache;
pub mod checker;
mod events;
pub mod generate;
pub mod history;
pub mod html;
pub mod kv;
pub mod model;
pub mod recorder;
pub mod report;

pub use checker::{Budget, CheckResult, PartialLinearization, check_operations};
pub use generate::{GenerateConfig, random_kv_history};
pub use history::{HISTORY_DIR_ENV, History, HistoryError, OpKind, Operation, Outcome, Output};
pub use html::{render_html, write_html};
pub use kv::{KvInput, KvModel, KvOp, KvOperations, KvOutput, check_kv, kv_operations};
pub use model::{Model, ModelOp, Partition};
pub use recorder::{HistoryRecorder, OpId};
pub use report::{Report, check_and_report, default_report_dir};
