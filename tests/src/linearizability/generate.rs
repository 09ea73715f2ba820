//! Random histories that are linearizable by construction, for testing and
//! benchmarking the checker.
//!
//! Each operation gets a real-time interval and a linearization point
//! inside it; outputs come from replaying the operations on a sequential
//! map in linearization-point order. The checker must therefore accept the
//! result, and changing any output to something never written must make it
//! reject it.

use std::collections::HashMap;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::history::{History, OpKind, Operation, Outcome, Output};

/// Shape of a generated history.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GenerateConfig {
    /// Seed; the same config always yields the same history.
    pub seed: u64,
    /// Number of operations.
    pub operations: usize,
    /// Number of distinct keys (`k0`, `k1`, ...).
    pub keys: usize,
    /// Number of clients issuing operations concurrently.
    pub clients: usize,
    /// Probability that an operation's outcome is unknown; half of those
    /// take effect (at some time after the call), half never do.
    pub unknown_probability: f64,
}

impl Default for GenerateConfig {
    fn default() -> Self {
        Self {
            seed: 1,
            operations: 2_000,
            keys: 20,
            clients: 10,
            unknown_probability: 0.02,
        }
    }
}

struct Planned {
    operation: Operation,
    /// When it takes effect; `None` if never.
    linearize_ns: Option<u64>,
}

/// Generates a linearizable KV history.
pub fn random_kv_history(config: &GenerateConfig) -> History {
    let mut rng = SmallRng::seed_from_u64(config.seed);
    let clients = config.clients.max(1);
    let keys = config.keys.max(1);
    let mut free_at_ns: Vec<u64> = (0..clients).map(|_| rng.random_range(0..1_000)).collect();
    // Values written per key, so that a cas often expects a current value.
    let mut written: HashMap<usize, Vec<String>> = HashMap::new();
    let mut planned = Vec::with_capacity(config.operations);
    for index in 0..config.operations {
        let client = (0..clients)
            .min_by_key(|&c| (free_at_ns[c], c))
            .unwrap_or(0);
        let key = rng.random_range(0..keys);
        let call_ns = free_at_ns[client] + rng.random_range(0..500);
        let mut linearize_ns = Some(call_ns + rng.random_range(1..2_000));
        let mut return_ns = linearize_ns.map(|l| l + rng.random_range(1..2_000));
        let mut outcome = Outcome::Ok;
        if rng.random_bool(config.unknown_probability) {
            outcome = Outcome::Unknown;
            return_ns = None;
            linearize_ns = rng
                .random_bool(0.5)
                .then(|| call_ns + rng.random_range(1..50_000));
        }
        free_at_ns[client] = return_ns.unwrap_or(call_ns + 4_000);
        let value = format!("v{index}");
        let (op, value, expected) = match rng.random_range(0..100) {
            0..45 => (OpKind::Get, None, None),
            45..75 => (OpKind::Put, Some(value), None),
            75..90 => {
                let previous = written.get(&key).and_then(|v| v.last()).cloned();
                let expected = if rng.random_bool(0.8) { previous } else { None };
                (OpKind::Cas, Some(value), Some(expected))
            }
            _ => (OpKind::Delete, None, None),
        };
        if let Some(v) = &value {
            written.entry(key).or_default().push(v.clone());
        }
        planned.push(Planned {
            operation: Operation {
                client_id: client as u64,
                op,
                key: format!("k{key}"),
                value,
                expected,
                call_ns,
                return_ns,
                outcome,
                output: None,
            },
            linearize_ns,
        });
    }
    apply_in_linearization_order(&mut planned);
    History {
        model: "kv".to_owned(),
        operations: planned.into_iter().map(|p| p.operation).collect(),
    }
}

/// Replays operations on a sequential map in linearization-point order and
/// fills in the outputs of those with a known outcome.
fn apply_in_linearization_order(planned: &mut [Planned]) {
    let mut order: Vec<(u64, usize)> = planned
        .iter()
        .enumerate()
        .filter_map(|(i, p)| p.linearize_ns.map(|t| (t, i)))
        .collect();
    order.sort_unstable();
    let mut map: HashMap<String, String> = HashMap::new();
    for (_, i) in order {
        let operation = &mut planned[i].operation;
        let current = map.get(&operation.key).cloned();
        let output = match operation.op {
            OpKind::Get => Some(Output::value(current)),
            OpKind::Put => {
                map.insert(
                    operation.key.clone(),
                    operation.value.clone().unwrap_or_default(),
                );
                None
            }
            OpKind::Delete => {
                map.remove(&operation.key);
                None
            }
            OpKind::Cas => {
                let swaps = operation.expected.clone().flatten() == current;
                if swaps {
                    map.insert(
                        operation.key.clone(),
                        operation.value.clone().unwrap_or_default(),
                    );
                }
                Some(Output::succeeded(swaps))
            }
        };
        if operation.outcome == Outcome::Ok {
            operation.output = output;
        }
    }
}
