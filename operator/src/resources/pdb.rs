//! The PodDisruptionBudget: voluntary disruptions (drains, evictions) may
//! take down at most as many pods as the voters can lose and keep a quorum.

use super::Owned;
use crate::plan::quorum;
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// Pods that may be down at once: the failures `voters` tolerate.
///
/// The budget selects learner pods too, and counts any unavailable pod
/// against it. That is why it is `maxUnavailable` of the voters' tolerance
/// and not `minAvailable = quorum`: with `minAvailable`, healthy learners
/// would count toward the minimum and let an eviction take a voter the
/// quorum needs. A learner that is down uses up budget a voter could have
/// had — the safe side. One voter tolerates nothing, so its pod is never
/// evicted voluntarily (drain the node after scaling up, or accept the
/// outage by deleting the pod).
pub fn max_unavailable(voters: u32) -> u32 {
    voters.saturating_sub(quorum(voters))
}

/// The budget over every member pod for a cluster of `voters` voters.
pub fn pod_disruption_budget(owned: &Owned, voters: u32) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: owned.meta(owned.names.name().to_string()),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(
                i32::try_from(max_unavailable(voters)).unwrap_or(i32::MAX),
            )),
            selector: Some(LabelSelector {
                match_labels: Some(owned.names.selector_labels()),
                match_expressions: None,
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::test_cluster::raft_cluster;

    #[test]
    fn the_budget_is_the_voters_failure_tolerance() {
        let expected = [(1, 0), (2, 0), (3, 1), (4, 1), (5, 2), (6, 2), (7, 3)];
        for (voters, budget) in expected {
            assert_eq!(max_unavailable(voters), budget, "{voters} voters");
        }
        assert_eq!(max_unavailable(0), 0);
    }

    /// The budget covers voters and learners alike. For 1-7 voters with
    /// 0-2 learners, from every state of pods already down (voters and
    /// learners), the evictions the budget still allows — all taken from
    /// the voters, the worst case — never leave fewer voters up than a
    /// quorum unless they were already fewer. And the budget is as large
    /// as it may be: one more voter down than it allows loses the quorum.
    #[test]
    fn no_eviction_the_budget_allows_breaks_the_quorum() {
        for voters in 1..=7u32 {
            for learners in 0..=2u32 {
                let budget = max_unavailable(voters);
                for voters_down in 0..=voters {
                    for learners_down in 0..=learners {
                        let allowed = budget.saturating_sub(voters_down + learners_down);
                        let evicted = allowed.min(voters - voters_down);
                        let up = voters - voters_down - evicted;
                        if voters - voters_down >= quorum(voters) && evicted > 0 {
                            assert!(
                                up >= quorum(voters),
                                "{voters} voters, {learners} learners, {voters_down}+{learners_down} down: \
                                 {evicted} evictions leave {up} voters"
                            );
                        }
                    }
                }
                assert!(
                    voters - (budget + 1).min(voters) < quorum(voters),
                    "{voters} voters: a budget of {budget} is smaller than it needs to be"
                );
            }
        }
    }

    #[test]
    fn the_pdb_selects_every_member_pod_with_an_integer_budget() {
        let rc = raft_cluster("demo", 5);
        let owned = Owned::of(&rc).expect("owned");
        let pdb = pod_disruption_budget(&owned, 5);
        assert_eq!(pdb.metadata.name.as_deref(), Some("demo"));
        let spec = pdb.spec.expect("spec");
        assert_eq!(spec.max_unavailable, Some(IntOrString::Int(2)));
        assert_eq!(spec.min_available, None);
        assert_eq!(
            spec.selector.expect("selector").match_labels,
            Some(owned.names.selector_labels())
        );
        let one = pod_disruption_budget(&owned, 1).spec.expect("spec");
        assert_eq!(one.max_unavailable, Some(IntOrString::Int(0)));
    }
}
