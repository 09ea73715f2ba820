//! Recording a KV history while a test runs.
//!
//! Time is whatever clock the caller uses, in nanoseconds: the virtual
//! clock of a simulation, or a monotonic clock shared by all clients of a
//! real-cluster test. The recorder never reads a clock itself, so a
//! simulation stays deterministic.

use std::fmt;
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};

use super::checker::{Budget, CheckResult};
use super::history::{History, HistoryError, OpKind, Operation, Outcome};
use super::kv::{KvInput, KvOp, KvOutput, check_kv};

/// Handle for an operation between its call and its completion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OpId(usize);

/// Collects operations from any number of clients. `&self` methods behind
/// a mutex, so it can be shared by reference (or `Arc`) between threads
/// or tasks.
#[derive(Debug, Default)]
pub struct HistoryRecorder {
    operations: Mutex<Vec<Operation>>,
}

impl HistoryRecorder {
    /// An empty recorder for the KV model.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Operation>> {
        // A panic in another client while recording leaves the vector
        // consistent (each method makes a single push or field update), so
        // keep going with it rather than poisoning every later call.
        self.operations
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records that `client_id` sent `input` at `call_ns`. Until completed,
    /// the operation counts as `unknown`.
    pub fn call(&self, client_id: u64, input: KvInput, call_ns: u64) -> OpId {
        let (op, value, expected) = match input.op {
            KvOp::Get => (OpKind::Get, None, None),
            KvOp::Put { value } => (OpKind::Put, Some(value), None),
            KvOp::Delete => (OpKind::Delete, None, None),
            KvOp::Cas { expected, value } => (OpKind::Cas, Some(value), Some(expected)),
        };
        let mut operations = self.lock();
        operations.push(Operation {
            client_id,
            op,
            key: input.key,
            value,
            expected,
            call_ns,
            return_ns: None,
            outcome: Outcome::Unknown,
            output: None,
        });
        OpId(operations.len() - 1)
    }

    /// Records a response received at `return_ns`. `output` is the get's
    /// value or the cas's verdict; `None` for put and delete.
    ///
    /// # Panics
    ///
    /// If `id` was already completed: that is a bug in the test harness,
    /// and recording it twice would corrupt the history.
    pub fn ok(&self, id: OpId, return_ns: u64, output: Option<KvOutput>) {
        self.complete(id, Outcome::Ok, Some(return_ns), output);
    }

    /// Records that the server refused the operation (it did not and will
    /// not take effect).
    ///
    /// # Panics
    ///
    /// If `id` was already completed.
    pub fn fail(&self, id: OpId, return_ns: u64) {
        self.complete(id, Outcome::Fail, Some(return_ns), None);
    }

    /// Records that the client gave up (timeout, lost connection): the
    /// operation may take effect at any later time, or never. Operations
    /// never completed are treated the same way.
    ///
    /// # Panics
    ///
    /// If `id` was already completed.
    pub fn unknown(&self, id: OpId) {
        self.complete(id, Outcome::Unknown, None, None);
    }

    fn complete(
        &self,
        id: OpId,
        outcome: Outcome,
        return_ns: Option<u64>,
        output: Option<KvOutput>,
    ) {
        let mut operations = self.lock();
        let operation = &mut operations[id.0];
        assert!(
            operation.outcome == Outcome::Unknown && operation.return_ns.is_none(),
            "operation {id:?} completed twice: {operation:?}"
        );
        operation.outcome = outcome;
        operation.return_ns = return_ns;
        operation.output = output.map(Into::into);
    }

    /// A copy of everything recorded so far.
    pub fn history(&self) -> History {
        History {
            model: "kv".to_owned(),
            operations: self.lock().clone(),
        }
    }

    /// Number of operations recorded.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True if nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// Checks what was recorded so far; see [`check_kv`].
    pub fn check(&self, budget: Budget) -> Result<CheckResult, HistoryError> {
        check_kv(&self.history(), budget)
    }

    /// Writes the history to `$FLOTILLA_HISTORY_DIR` if set; see
    /// [`History::export_if_requested`].
    pub fn export_if_requested(
        &self,
        test_name: &str,
        seed_or_ts: impl fmt::Display,
    ) -> Result<Option<PathBuf>, HistoryError> {
        self.history().export_if_requested(test_name, seed_or_ts)
    }
}
