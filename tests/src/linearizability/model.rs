//! The sequential specification a history is checked against.
//!
//! The checker knows nothing about keys or values: it asks a [`Model`] to
//! split the operations into independent partitions and to replay them one
//! at a time. Keeping the model behind a trait lets the broker's log model
//! reuse the same search later.

use std::fmt;
use std::hash::Hash;

/// One operation as the checker sees it: the model's input and output plus
/// the real-time interval in which it must have taken effect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelOp<I, O> {
    /// Client that issued it (for the HTML timeline only).
    pub client_id: u64,
    /// What was asked.
    pub input: I,
    /// What was answered; `None` when the outcome is unknown.
    pub output: Option<O>,
    /// When it was called.
    pub call_ns: u64,
    /// When it returned; `None` (unknown outcome) means it may take effect
    /// at any time after `call_ns`, or never.
    pub return_ns: Option<u64>,
}

/// A set of operations that can be checked on its own, e.g. one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    /// Human-readable name (the key), shown in results and the HTML.
    pub label: String,
    /// Indices into the operation slice given to the checker.
    pub ops: Vec<usize>,
}

/// A sequential object: its initial state and how one operation moves it.
///
/// States are compared and hashed for the memoisation cache, so two states
/// that behave the same should be equal (e.g. no version counters that the
/// outputs never observe).
pub trait Model {
    /// State of one partition.
    type State: Clone + Eq + Hash + fmt::Debug;
    /// An operation's request.
    type Input: fmt::Debug;
    /// An operation's response.
    type Output: fmt::Debug;

    /// State before any operation.
    fn init(&self) -> Self::State;

    /// Applies `input` to `state`. Returns the new state if the operation
    /// could have returned `output` there, `None` if not. `output` is `None`
    /// for operations with unknown outcome: they constrain nothing but may
    /// still change the state.
    fn step(
        &self,
        state: &Self::State,
        input: &Self::Input,
        output: Option<&Self::Output>,
    ) -> Option<Self::State>;

    /// Splits operations into independent partitions; the history is
    /// linearizable iff every partition is. The default is one partition.
    fn partition(&self, ops: &[ModelOp<Self::Input, Self::Output>]) -> Vec<Partition> {
        vec![Partition {
            label: String::new(),
            ops: (0..ops.len()).collect(),
        }]
    }

    /// Short text for an operation, e.g. `put k1 = "a"`.
    fn describe_operation(&self, input: &Self::Input, output: Option<&Self::Output>) -> String;

    /// Short text for a state, e.g. `"a"` or `absent`.
    fn describe_state(&self, state: &Self::State) -> String;
}
