//! The operator's Prometheus metrics, served at `/metrics`.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::time::Duration;

type Labels = Vec<(String, String)>;

/// Counters and histograms of reconciles and steps.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    reconciles: Counter,
    failures: Family<Labels, Counter>,
    duration: Histogram,
    steps: Family<Labels, Counter>,
    leader: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("flotilla_operator");
        let reconciles = Counter::default();
        let failures = Family::<Labels, Counter>::default();
        let duration = Histogram::new([
            0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
        ]);
        let steps = Family::<Labels, Counter>::default();
        let leader = Gauge::default();
        registry.register("reconciles", "Reconciles run", reconciles.clone());
        registry.register(
            "reconcile_failures",
            "Reconciles that failed, by reason",
            failures.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Time a reconcile took",
            duration.clone(),
        );
        registry.register(
            "membership_steps",
            "Steps taken, by step and result",
            steps.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica holds the leader lease",
            leader.clone(),
        );
        Metrics {
            registry,
            reconciles,
            failures,
            duration,
            steps,
            leader,
        }
    }
}

impl Metrics {
    /// A reconcile finished after `took`; `failure` is its error's reason.
    pub fn reconciled(&self, took: Duration, failure: Option<&str>) {
        self.reconciles.inc();
        self.duration.observe(took.as_secs_f64());
        if let Some(reason) = failure {
            self.failures
                .get_or_create(&vec![("reason".to_string(), reason.to_string())])
                .inc();
        }
    }

    /// A step (named by its event reason) was taken.
    pub fn step(&self, step: &str, ok: bool) {
        let labels = vec![
            ("step".to_string(), step.to_string()),
            (
                "result".to_string(),
                if ok { "ok" } else { "failed" }.to_string(),
            ),
        ];
        self.steps.get_or_create(&labels).inc();
    }

    /// Whether this replica leads.
    pub fn set_leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }

    /// The text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_show_up_in_the_exposition() {
        let m = Metrics::default();
        m.reconciled(Duration::from_millis(20), None);
        m.reconciled(Duration::from_millis(20), Some("node_unreachable"));
        m.step("MemberAdded", true);
        m.set_leader(true);
        let text = m.render();
        assert!(
            text.contains("flotilla_operator_reconciles_total 2"),
            "{text}"
        );
        assert!(
            text.contains(
                "flotilla_operator_reconcile_failures_total{reason=\"node_unreachable\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "flotilla_operator_membership_steps_total{step=\"MemberAdded\",result=\"ok\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains("flotilla_operator_reconcile_duration_seconds_count 2"),
            "{text}"
        );
        assert!(text.contains("flotilla_operator_leader 1"), "{text}");
    }
}
