//! The search: Wing–Gong/Lowe depth-first search with memoisation, as in
//! Porcupine.
//!
//! Each partition's operations become call and return events in one doubly
//! linked list sorted by time. Walking from the head, any call seen before
//! the first return may be linearized next (it is concurrent with
//! everything still pending); linearizing it unlinks its call and return.
//! Reaching a return means that operation has not been linearized although
//! its response was seen, so the search backtracks. A cache of
//! (linearized set, model state) pairs already explored makes the search
//! polynomial for most real histories instead of factorial.
//!
//! Operations with unknown outcome return "at +infinity": their return
//! events sort after everything else, so they never force a backtrack, and
//! the search succeeds as soon as every operation with a known outcome is
//! linearized; unknown ones left over simply never took effect.

use std::collections::HashSet;
use std::fmt;
use std::hash::BuildHasherDefault;
use std::time::{Duration, Instant};

use super::cache::{Bitset, FxHasher};
use super::events::EventList;
use super::model::{Model, ModelOp};

/// Limits on the work one check may do, so that a pathological history
/// (say, hundreds of concurrent unknown writes to one key) comes back as
/// [`CheckResult::Timeout`] instead of hanging the test. Shared by all
/// partitions of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Search steps across all partitions. Each step adds at most one
    /// cache entry, so this also bounds the checker's memory.
    pub steps_max: Option<u64>,
    /// Wall-clock time for the whole check.
    pub wall_time_max: Option<Duration>,
}

impl Budget {
    /// No limits at all; for histories known to be small.
    pub fn unlimited() -> Self {
        Self {
            steps_max: None,
            wall_time_max: None,
        }
    }

    /// At most `steps` search steps; deterministic, so preferred in tests.
    pub fn steps(steps: u64) -> Self {
        Self {
            steps_max: Some(steps),
            wall_time_max: None,
        }
    }

    /// At most `wall_time` of wall-clock time.
    pub fn wall_time(wall_time: Duration) -> Self {
        Self {
            steps_max: None,
            wall_time_max: Some(wall_time),
        }
    }
}

impl Default for Budget {
    /// 20 million steps (a few GB of cache at worst) or one minute.
    fn default() -> Self {
        Self {
            steps_max: Some(20_000_000),
            wall_time_max: Some(Duration::from_secs(60)),
        }
    }
}

/// The verdict on a history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckResult {
    /// Every partition is linearizable.
    Ok,
    /// Partition `key` has no linearization.
    Illegal {
        /// Label of the failing partition (the key, for the KV model).
        key: String,
        /// How far the search got, for the report and the HTML.
        partial: PartialLinearization,
    },
    /// The budget ran out before a verdict; no partition checked so far
    /// was illegal.
    Timeout {
        /// Label of the partition being checked when the budget ran out.
        key: String,
        /// Partitions fully checked (all linearizable).
        partitions_checked: usize,
        /// Partitions in the history.
        partitions_total: usize,
    },
}

/// The best the search did on an illegal partition. Operation indices
/// refer to the checked slice (or, from [`super::check_kv`], to
/// `History::operations`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartialLinearization {
    /// Every operation of the partition.
    pub partition_ops: Vec<usize>,
    /// The largest set of operations that could be linearized, in
    /// linearization order.
    pub longest: Vec<usize>,
    /// The model state after `longest`.
    pub state_after: String,
    /// The operation whose return the search reached without being able to
    /// linearize it, from the point `longest` was found.
    pub stuck_op: Option<usize>,
    /// `stuck_op` described by the model.
    pub stuck_description: Option<String>,
}

impl CheckResult {
    /// True for [`CheckResult::Ok`].
    pub fn is_ok(&self) -> bool {
        matches!(self, CheckResult::Ok)
    }

    /// True for [`CheckResult::Illegal`].
    pub fn is_illegal(&self) -> bool {
        matches!(self, CheckResult::Illegal { .. })
    }

    /// Rewrites operation indices, e.g. from the checker's slice to the
    /// history's.
    pub fn map_indices(self, f: impl Fn(usize) -> usize) -> Self {
        match self {
            CheckResult::Illegal { key, partial } => CheckResult::Illegal {
                key,
                partial: PartialLinearization {
                    partition_ops: partial.partition_ops.into_iter().map(&f).collect(),
                    longest: partial.longest.into_iter().map(&f).collect(),
                    stuck_op: partial.stuck_op.map(&f),
                    ..partial
                },
            },
            other => other,
        }
    }
}

impl fmt::Display for CheckResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CheckResult::Ok => write!(f, "linearizable"),
            CheckResult::Illegal { key, partial } => {
                write!(
                    f,
                    "not linearizable: key {key:?}: {} of {} operations linearized (state {})",
                    partial.longest.len(),
                    partial.partition_ops.len(),
                    partial.state_after
                )?;
                match (&partial.stuck_op, &partial.stuck_description) {
                    (Some(op), Some(text)) => write!(f, ", then stuck at operation {op}: {text}"),
                    _ => Ok(()),
                }
            }
            CheckResult::Timeout {
                key,
                partitions_checked,
                partitions_total,
            } => write!(
                f,
                "unknown: budget exhausted on key {key:?} after {partitions_checked} of \
                 {partitions_total} partitions"
            ),
        }
    }
}

/// Checks `ops` against `model`, partition by partition, in the order the
/// model returns them; stops at the first illegal partition.
pub fn check_operations<M: Model>(
    model: &M,
    ops: &[ModelOp<M::Input, M::Output>],
    budget: Budget,
) -> CheckResult {
    let partitions = model.partition(ops);
    let mut meter = Meter::new(budget);
    for (checked, partition) in partitions.iter().enumerate() {
        match search(model, ops, &partition.ops, &mut meter) {
            Search::Linearizable => {}
            Search::Exhausted => {
                return CheckResult::Timeout {
                    key: partition.label.clone(),
                    partitions_checked: checked,
                    partitions_total: partitions.len(),
                };
            }
            Search::Illegal(partial) => {
                return CheckResult::Illegal {
                    key: partition.label.clone(),
                    partial,
                };
            }
        }
    }
    CheckResult::Ok
}

enum Search {
    Linearizable,
    Illegal(PartialLinearization),
    Exhausted,
}

/// Counts steps against the budget; reads the clock only every 1024 steps
/// because `Instant::now` costs more than a step.
struct Meter {
    steps: u64,
    steps_max: Option<u64>,
    deadline: Option<Instant>,
}

impl Meter {
    fn new(budget: Budget) -> Self {
        Self {
            steps: 0,
            steps_max: budget.steps_max,
            deadline: budget.wall_time_max.map(|d| Instant::now() + d),
        }
    }

    /// Returns false once the budget is spent.
    fn tick(&mut self) -> bool {
        self.steps += 1;
        if self.steps_max.is_some_and(|max| self.steps > max) {
            return false;
        }
        !(self.steps.is_multiple_of(1024) && self.deadline.is_some_and(|d| Instant::now() >= d))
    }
}

fn search<M: Model>(
    model: &M,
    ops: &[ModelOp<M::Input, M::Output>],
    partition: &[usize],
    meter: &mut Meter,
) -> Search {
    let op = |local: usize| &ops[partition[local]];
    let mut list = EventList::new(
        partition
            .iter()
            .map(|&i| (ops[i].call_ns, ops[i].return_ns)),
    );
    let mut known_left = partition
        .iter()
        .filter(|&&i| ops[i].return_ns.is_some())
        .count();
    if known_left == 0 {
        return Search::Linearizable;
    }
    let mut state = model.init();
    let mut linearized = Bitset::new(partition.len());
    let mut cache: HashSet<(Bitset, M::State), BuildHasherDefault<FxHasher>> = HashSet::default();
    // Linearized calls, innermost last, with the state before each.
    let mut stack: Vec<(usize, M::State)> = Vec::new();
    let mut best: Option<(Vec<usize>, M::State, usize)> = None;
    let mut entry = list.first();
    loop {
        if !meter.tick() {
            return Search::Exhausted;
        }
        let event = list.events[entry];
        if event.is_call {
            let candidate = op(event.op);
            if let Some(next) = model.step(&state, &candidate.input, candidate.output.as_ref()) {
                linearized.set(event.op);
                if cache.insert((linearized.clone(), next.clone())) {
                    stack.push((entry, std::mem::replace(&mut state, next)));
                    list.lift(entry);
                    if candidate.return_ns.is_some() {
                        known_left -= 1;
                        if known_left == 0 {
                            return Search::Linearizable;
                        }
                    }
                    entry = list.first();
                    continue;
                }
                linearized.clear(event.op);
            }
            entry = list.next(entry);
        } else {
            // A response arrived for an operation not yet linearized: every
            // ordering of this prefix fails, so undo the last choice.
            if best.as_ref().is_none_or(|(b, _, _)| stack.len() > b.len()) {
                let order = stack.iter().map(|&(e, _)| list.events[e].op).collect();
                best = Some((order, state.clone(), event.op));
            }
            let Some((call, previous)) = stack.pop() else {
                return Search::Illegal(illegal(model, ops, partition, best));
            };
            let undone = list.events[call].op;
            linearized.clear(undone);
            state = previous;
            list.unlift(call);
            if op(undone).return_ns.is_some() {
                known_left += 1;
            }
            entry = list.next(call);
        }
    }
}

fn illegal<M: Model>(
    model: &M,
    ops: &[ModelOp<M::Input, M::Output>],
    partition: &[usize],
    best: Option<(Vec<usize>, M::State, usize)>,
) -> PartialLinearization {
    let (order, state, stuck) = best.unwrap_or_else(|| (Vec::new(), model.init(), usize::MAX));
    let stuck_op = partition.get(stuck).copied();
    PartialLinearization {
        partition_ops: partition.to_vec(),
        longest: order.into_iter().map(|local| partition[local]).collect(),
        state_after: model.describe_state(&state),
        stuck_op,
        stuck_description: stuck_op
            .map(|i| model.describe_operation(&ops[i].input, ops[i].output.as_ref())),
    }
}
