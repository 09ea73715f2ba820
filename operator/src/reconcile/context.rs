//! What every reconcile shares: clients, settings, metrics, backoff.

use crate::admin::NodeAdmin;
use crate::metrics::Metrics;
use crate::plan::PlanLimits;
use kube::runtime::events::{Recorder, Reporter};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// When to look at a cluster again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Requeue {
    /// After a step: soon, to take the next one.
    pub after_step: Duration,
    /// While waiting for members or pods.
    pub waiting: Duration,
    /// Converged: a periodic status refresh.
    pub idle: Duration,
}

impl Default for Requeue {
    fn default() -> Self {
        Requeue {
            after_step: Duration::from_secs(2),
            waiting: Duration::from_secs(5),
            idle: Duration::from_secs(60),
        }
    }
}

/// Exponential backoff of failed reconciles, per object, bounded. This is
/// retry pacing only: no reconcile reads it to decide what to do.
#[derive(Debug)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    failures: Mutex<HashMap<String, u32>>,
}

impl Backoff {
    /// Doubling from `base` up to `max`.
    pub fn new(base: Duration, max: Duration) -> Self {
        Backoff {
            base,
            max,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Records a failure of `key`; the delay before its next try.
    pub fn failed(&self, key: &str) -> Duration {
        let mut f = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        // Bounded: at most one entry per object, and the exponent stops growing.
        let n = f.entry(key.to_string()).or_insert(0);
        *n = (*n + 1).min(20);
        self.base.saturating_mul(1 << (*n - 1)).min(self.max)
    }

    /// Forgets the failures of `key`.
    pub fn succeeded(&self, key: &str) {
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }
}

/// Shared by all reconciles.
pub struct Context<A> {
    /// The API server.
    pub client: kube::Client,
    /// The nodes' admin API.
    pub admin: A,
    /// Publishes Events.
    pub recorder: Recorder,
    /// The plan's bounds.
    pub limits: PlanLimits,
    /// Requeue intervals.
    pub requeue: Requeue,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Retry pacing.
    pub backoff: Backoff,
}

impl<A: NodeAdmin> Context<A> {
    /// A context with default limits, intervals and backoff (1 s to 5 min).
    pub fn new(client: kube::Client, admin: A, reporter: Reporter, metrics: Arc<Metrics>) -> Self {
        Context {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            admin,
            limits: PlanLimits::default(),
            requeue: Requeue::default(),
            metrics,
            backoff: Backoff::new(Duration::from_secs(1), Duration::from_secs(300)),
        }
    }
}

impl<A> std::fmt::Debug for Context<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("limits", &self.limits)
            .field("requeue", &self.requeue)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_bound_and_resets() {
        let b = Backoff::new(Duration::from_secs(1), Duration::from_secs(10));
        let delays: Vec<_> = (0..6).map(|_| b.failed("a").as_secs()).collect();
        assert_eq!(delays, vec![1, 2, 4, 8, 10, 10]);
        assert_eq!(b.failed("b").as_secs(), 1, "per object");
        b.succeeded("a");
        assert_eq!(b.failed("a").as_secs(), 1);
        for _ in 0..100 {
            b.failed("c");
        }
        assert_eq!(b.failed("c").as_secs(), 10);
    }
}
