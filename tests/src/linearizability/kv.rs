//! The KV model of `HISTORY.md`: one register per key, with get, put,
//! delete and compare-and-set.

use std::collections::BTreeMap;

use super::checker::{Budget, CheckResult, check_operations};
use super::history::{History, HistoryError, OpKind, Outcome, Output};
use super::model::{Model, ModelOp, Partition};

/// A KV request. The key is here (not in the state) because the model is
/// partitioned per key: each partition's state is a single register.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvInput {
    /// Key the operation touches.
    pub key: String,
    /// What it does.
    pub op: KvOp,
}

/// The operation part of a [`KvInput`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvOp {
    /// Read the key.
    Get,
    /// Set the key to a value.
    Put {
        /// New value.
        value: String,
    },
    /// Remove the key.
    Delete,
    /// Set the key to `value` iff its value equals `expected` (`None`: absent).
    Cas {
        /// Value required for the swap.
        expected: Option<String>,
        /// New value.
        value: String,
    },
}

impl KvInput {
    /// A get of `key`.
    pub fn get(key: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            op: KvOp::Get,
        }
    }

    /// A put of `value` at `key`.
    pub fn put(key: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            op: KvOp::Put {
                value: value.into(),
            },
        }
    }

    /// A delete of `key`.
    pub fn delete(key: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            op: KvOp::Delete,
        }
    }

    /// A compare-and-set of `key` from `expected` (`None`: absent) to `value`.
    pub fn cas(key: impl Into<String>, expected: Option<String>, value: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            op: KvOp::Cas {
                expected,
                value: value.into(),
            },
        }
    }
}

/// A KV response with a payload (puts and deletes have none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvOutput {
    /// A get read this value (`None`: absent).
    Value(Option<String>),
    /// Whether a cas swapped.
    Succeeded(bool),
}

impl From<KvOutput> for Output {
    fn from(output: KvOutput) -> Self {
        match output {
            KvOutput::Value(value) => Output::value(value),
            KvOutput::Succeeded(succeeded) => Output::succeeded(succeeded),
        }
    }
}

/// The KV model: per-key register with state `Option<String>`.
#[derive(Debug, Clone, Copy, Default)]
pub struct KvModel;

impl Model for KvModel {
    type State = Option<String>;
    type Input = KvInput;
    type Output = KvOutput;

    fn init(&self) -> Self::State {
        None
    }

    fn step(
        &self,
        state: &Self::State,
        input: &KvInput,
        output: Option<&KvOutput>,
    ) -> Option<Self::State> {
        match (&input.op, output) {
            (KvOp::Get, Some(KvOutput::Value(read))) => (read == state).then(|| state.clone()),
            (KvOp::Get, None) => Some(state.clone()),
            (KvOp::Put { value }, _) => Some(Some(value.clone())),
            (KvOp::Delete, _) => Some(None),
            (KvOp::Cas { expected, value }, output) => {
                let swaps = expected == state;
                match output {
                    Some(KvOutput::Succeeded(claimed)) if *claimed != swaps => None,
                    _ if swaps => Some(Some(value.clone())),
                    _ => Some(state.clone()),
                }
            }
            // A get answered with a cas payload: `kv_operations` rejects
            // these, so this only guards direct users of the model.
            (KvOp::Get, Some(KvOutput::Succeeded(_))) => None,
        }
    }

    fn partition(&self, ops: &[ModelOp<KvInput, KvOutput>]) -> Vec<Partition> {
        // BTreeMap so partitions come out in key order, deterministically.
        let mut by_key: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for (index, op) in ops.iter().enumerate() {
            by_key.entry(&op.input.key).or_default().push(index);
        }
        by_key
            .into_iter()
            .map(|(key, ops)| Partition {
                label: key.to_owned(),
                ops,
            })
            .collect()
    }

    fn describe_operation(&self, input: &KvInput, output: Option<&KvOutput>) -> String {
        let key = &input.key;
        let result = match output {
            None => String::new(),
            Some(KvOutput::Value(value)) => format!(" -> {}", show(value.as_deref())),
            Some(KvOutput::Succeeded(ok)) => format!(" -> {}", if *ok { "ok" } else { "failed" }),
        };
        let call = match &input.op {
            KvOp::Get => format!("get {key}"),
            KvOp::Put { value } => format!("put {key} = {value:?}"),
            KvOp::Delete => format!("delete {key}"),
            KvOp::Cas { expected, value } => {
                format!("cas {key} {} -> {value:?}", show(expected.as_deref()))
            }
        };
        call + &result
    }

    fn describe_state(&self, state: &Self::State) -> String {
        show(state.as_deref())
    }
}

fn show(value: Option<&str>) -> String {
    value.map_or_else(|| "absent".to_owned(), |v| format!("{v:?}"))
}

/// The operations of a KV history as the checker sees them.
#[derive(Debug, Clone, Default)]
pub struct KvOperations {
    /// Operations that may have taken effect and constrain the check.
    pub ops: Vec<ModelOp<KvInput, KvOutput>>,
    /// For each of `ops`, its index in `History::operations`.
    pub history_index: Vec<usize>,
}

/// Validates a KV history and converts it for the checker. `fail`
/// operations are dropped (they did not take effect), and so are gets with
/// unknown outcome (they change nothing and nobody saw their result).
pub fn kv_operations(history: &History) -> Result<KvOperations, HistoryError> {
    if history.model != "kv" {
        return Err(HistoryError::UnsupportedModel(history.model.clone()));
    }
    let mut converted = KvOperations::default();
    for (index, operation) in history.operations.iter().enumerate() {
        let invalid = |reason: &str| HistoryError::InvalidOperation {
            index,
            reason: reason.to_owned(),
        };
        let return_ns = match (operation.outcome, operation.return_ns) {
            (Outcome::Fail, _) => continue,
            (Outcome::Unknown, _) if operation.op == OpKind::Get => continue,
            (Outcome::Unknown, _) => None,
            (Outcome::Ok, None) => return Err(invalid("outcome ok without return_ns")),
            (Outcome::Ok, Some(ns)) if ns < operation.call_ns => {
                return Err(invalid("return_ns before call_ns"));
            }
            (Outcome::Ok, Some(ns)) => Some(ns),
        };
        let value = || {
            operation
                .value
                .clone()
                .ok_or_else(|| invalid("put or cas without value"))
        };
        let op = match operation.op {
            OpKind::Get => KvOp::Get,
            OpKind::Put => KvOp::Put { value: value()? },
            OpKind::Delete => KvOp::Delete,
            // A missing `expected` reads as null (key absent), its meaning
            // in HISTORY.md, rather than rejecting the whole history.
            OpKind::Cas => KvOp::Cas {
                expected: operation.expected.clone().flatten(),
                value: value()?,
            },
        };
        let output = match (return_ns, operation.op, &operation.output) {
            (None, _, _) => None,
            (Some(_), OpKind::Get, Some(Output { value: Some(v), .. })) => {
                Some(KvOutput::Value(v.clone()))
            }
            (Some(_), OpKind::Get, _) => return Err(invalid("ok get without output.value")),
            (
                Some(_),
                OpKind::Cas,
                Some(Output {
                    succeeded: Some(s), ..
                }),
            ) => Some(KvOutput::Succeeded(*s)),
            (Some(_), OpKind::Cas, _) => return Err(invalid("ok cas without output.succeeded")),
            (Some(_), OpKind::Put | OpKind::Delete, _) => None,
        };
        converted.ops.push(ModelOp {
            client_id: operation.client_id,
            input: KvInput {
                key: operation.key.clone(),
                op,
            },
            output,
            call_ns: operation.call_ns,
            return_ns,
        });
        converted.history_index.push(index);
    }
    Ok(converted)
}

/// Checks a KV history for linearizability within `budget`. Operation
/// indices in the result refer to `history.operations`, ready for
/// [`super::write_html`].
pub fn check_kv(history: &History, budget: Budget) -> Result<CheckResult, HistoryError> {
    let converted = kv_operations(history)?;
    let result = check_operations(&KvModel, &converted.ops, budget);
    Ok(result.map_indices(|i| converted.history_index[i]))
}
