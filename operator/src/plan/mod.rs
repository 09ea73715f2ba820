//! The reconcile's decision, as a pure function of what it observed: at
//! most one step that changes the cluster, or the reason to wait. The
//! rules, in the order they are checked:
//!
//! 1. No StatefulSet: create the cluster with its founding members.
//! 2. Membership unreadable, or naming pods this cluster does not have, or
//!    lacking founders that have not published themselves yet (while the
//!    cluster bootstraps), or with a gap in its ordinals: change nothing.
//! 3. StatefulSet replicas differ from the membership's size: set them
//!    (the second half of a scale-up's MemberAdd or a scale-down's
//!    MemberRemove).
//! 4. A volume of an ordinal beyond the membership: delete it once its pod
//!    is gone (the last step of a scale-down).
//! 5. A pod of an old revision that is broken: replace it (it serves
//!    nobody; this is how a bad image is rolled forward).
//! 6. A learner (unless scaling down): promote it once healthy and caught
//!    up, if the quorum stays whole; otherwise wait for it.
//! 7. Healthy pods of an old revision: replace them one at a time,
//!    followers first, the leader last after moving leadership away, each
//!    only when every member is healthy and caught up.
//! 8. Fewer members than wanted: add the next ordinal as a learner, when
//!    every member is healthy.
//! 9. More members than wanted: move leadership off the highest ordinal if
//!    it leads, else remove it, if the remaining voters keep a quorum.
//! 10. Otherwise converged.
//!
//! Every step is derived from the cluster and the API server alone, so an
//! operator that dies after any step finds the next one on its next
//! reconcile.

mod decision;
mod view;

pub use decision::{Decision, MoveReason, Step, Wait};
pub use view::{ClusterView, MemberView, quorum};

use crate::observed::Observed;

/// Bounds the plan uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlanLimits {
    /// A member further than this behind the leader's commit index is not
    /// healthy: not promoted, and no other pod is restarted meanwhile.
    pub max_lag_entries: u64,
}

impl Default for PlanLimits {
    fn default() -> Self {
        PlanLimits {
            max_lag_entries: 1000,
        }
    }
}

/// The plan: the decision and what the objects must say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// The one step, or why none.
    pub decision: Decision,
    /// The StatefulSet's replicas, once applied.
    pub statefulset_replicas: u32,
    /// Voters, for the disruption budget.
    pub voters: u32,
    /// The judged membership, when it was read.
    pub view: Option<ClusterView>,
}

/// What the plan needs beyond the observation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlanInputs {
    /// `spec.replicas`.
    pub desired: u32,
    /// Founding members.
    pub founders: u32,
    /// Voters last seen (the status), for when the membership is unreadable.
    pub known_voters: Option<u32>,
    /// Whether every founder has been in the member table (the status'
    /// `bootstrapped`): until then, founders missing from it are members
    /// that have not published themselves yet, not removed ones.
    pub bootstrapped: bool,
    /// Bounds.
    pub limits: PlanLimits,
}

/// Decides the next step.
pub fn plan(inputs: PlanInputs, observed: &Observed) -> Plan {
    let Some(sts) = &observed.statefulset else {
        return Plan {
            decision: Decision::Act(Step::CreateCluster {
                founders: inputs.founders,
            }),
            statefulset_replicas: inputs.founders,
            voters: inputs.founders,
            view: None,
        };
    };
    let unchanged = |decision, view: Option<ClusterView>| Plan {
        voters: view
            .as_ref()
            .map(ClusterView::voter_count)
            .or(inputs.known_voters)
            .unwrap_or(inputs.founders),
        decision,
        statefulset_replicas: sts.replicas,
        view,
    };
    let members = match &observed.membership {
        Ok(members) => members,
        Err(reason) => {
            return unchanged(
                Decision::Wait(Wait::MembersUnreachable(reason.clone())),
                None,
            );
        }
    };
    let unknown: Vec<String> = members
        .iter()
        .filter(|m| m.ordinal.is_none())
        .map(|m| format!("{} ({})", m.id, m.name))
        .collect();
    if !unknown.is_empty() {
        return unchanged(Decision::Wait(Wait::UnknownMembers(unknown)), None);
    }
    let view = ClusterView::new(members, observed, inputs.limits.max_lag_entries);
    // A member publishes itself into the table once it runs: while the
    // cluster bootstraps, the table may lack founders that are voters
    // already, and acting on it would shrink a cluster that is starting.
    let unpublished: Vec<u32> = (0..inputs.founders)
        .filter(|o| !view.members.iter().any(|m| m.ordinal == *o))
        .collect();
    if !inputs.bootstrapped && !unpublished.is_empty() {
        return unchanged(
            Decision::Wait(Wait::FoundersStarting(unpublished)),
            Some(view),
        );
    }
    let ordinals: Vec<u32> = view.members.iter().map(|m| m.ordinal).collect();
    let n = u32::try_from(ordinals.len()).unwrap_or(u32::MAX);
    if ordinals.iter().copied().ne(0..n) {
        return unchanged(Decision::Wait(Wait::MembershipGap(ordinals)), Some(view));
    }
    if sts.replicas != n {
        let mut plan = unchanged(
            Decision::Act(Step::ScaleStatefulSet {
                from: sts.replicas,
                to: n,
            }),
            Some(view),
        );
        plan.statefulset_replicas = n;
        return plan;
    }
    let decision = volumes(observed, n)
        .or_else(|| replace_broken(observed, sts, &view, n))
        .or_else(|| learners(inputs, &view, n))
        .or_else(|| rolling_update(observed, sts, &view, n))
        .or_else(|| scale(inputs, &view, n))
        .unwrap_or_else(|| {
            let unhealthy = unhealthy(&view);
            Decision::Wait(if unhealthy.is_empty() {
                Wait::Converged
            } else {
                Wait::MembersUnhealthy(unhealthy)
            })
        });
    unchanged(decision, Some(view))
}

fn unhealthy(view: &ClusterView) -> Vec<u32> {
    view.members
        .iter()
        .filter(|m| !(m.healthy && m.pod_ready))
        .map(|m| m.ordinal)
        .collect()
}

/// Rule 4: volumes of ordinals `>= n` belong to removed members.
fn volumes(observed: &Observed, n: u32) -> Option<Decision> {
    let mut stale: Vec<_> = observed.pvcs.iter().filter(|p| p.ordinal >= n).collect();
    stale.sort_by_key(|p| std::cmp::Reverse(p.ordinal));
    let pvc = stale.first()?;
    Some(if observed.pod(pvc.ordinal).is_some() {
        Decision::Wait(Wait::PodTerminating(pvc.ordinal))
    } else if pvc.terminating {
        Decision::Wait(Wait::VolumeTerminating(pvc.ordinal))
    } else {
        Decision::Act(Step::DeleteVolume {
            ordinal: pvc.ordinal,
        })
    })
}

/// Rule 6: a learner is promoted once caught up, unless it is about to be
/// scaled away.
fn learners(inputs: PlanInputs, view: &ClusterView, n: u32) -> Option<Decision> {
    if inputs.desired < n {
        return None;
    }
    let learner = view.members.iter().find(|m| m.learner)?;
    if !(learner.healthy && learner.started) {
        return Some(Decision::Wait(Wait::LearnerCatchingUp {
            ordinal: learner.ordinal,
            lag: learner.lag,
        }));
    }
    // After the promotion there is one more voter, and it is healthy.
    let voters = view.voter_count() + 1;
    let healthy = view.healthy_voters_except(None) + 1;
    Some(if healthy >= quorum(voters) {
        Decision::Act(Step::PromoteLearner {
            ordinal: learner.ordinal,
            id: learner.id,
        })
    } else {
        Decision::Wait(Wait::QuorumAtRisk {
            step: format!("promote {}", learner.ordinal),
        })
    })
}

/// Pods of an old revision, highest ordinal first; `None` while the
/// StatefulSet controller has not seen the latest template.
fn outdated_pods(
    observed: &Observed,
    sts: &crate::observed::StatefulSetFacts,
    n: u32,
) -> Option<Vec<u32>> {
    if !sts.observed {
        return None;
    }
    let revision = sts.update_revision.as_deref()?;
    let mut outdated: Vec<u32> = observed
        .pods
        .iter()
        .filter(|p| p.ordinal < n && !p.terminating && p.revision.as_deref() != Some(revision))
        .map(|p| p.ordinal)
        .collect();
    outdated.sort_by_key(|o| std::cmp::Reverse(*o));
    Some(outdated)
}

/// Rule 5: a pod of an old revision that is broken (its member
/// unhealthy or its pod not Ready) serves nobody, so it is replaced before
/// anything waits on it — a learner that cannot start included. This is
/// how a bad image is rolled forward.
fn replace_broken(
    observed: &Observed,
    sts: &crate::observed::StatefulSetFacts,
    view: &ClusterView,
    n: u32,
) -> Option<Decision> {
    let outdated = outdated_pods(observed, sts, n)?;
    if observed.pods.iter().any(|p| p.terminating) {
        return None;
    }
    let member = |o: u32| view.members.iter().find(|m| m.ordinal == o);
    let &o = outdated
        .iter()
        .find(|&&o| member(o).is_none_or(|m| !(m.healthy && m.pod_ready)))?;
    Some(Decision::Act(Step::ReplacePod { ordinal: o }))
}

/// Rule 7: replace the healthy pods of an old revision, one at a time.
fn rolling_update(
    observed: &Observed,
    sts: &crate::observed::StatefulSetFacts,
    view: &ClusterView,
    n: u32,
) -> Option<Decision> {
    if !sts.observed {
        return Some(Decision::Wait(Wait::StatefulSetNotObserved));
    }
    let outdated = outdated_pods(observed, sts, n)?;
    if outdated.is_empty() {
        return None;
    }
    if let Some(p) = observed.pods.iter().find(|p| p.terminating) {
        return Some(Decision::Wait(Wait::PodTerminating(p.ordinal)));
    }
    let unhealthy = unhealthy(view);
    if !unhealthy.is_empty() {
        return Some(Decision::Wait(Wait::MembersUnhealthy(unhealthy)));
    }
    let leader = view.leader_member().map(|l| l.ordinal);
    if let Some(&o) = outdated.iter().find(|&&o| Some(o) != leader) {
        return Some(Decision::Act(Step::ReplacePod { ordinal: o }));
    }
    // Only the leader is left.
    let leader = leader?;
    if view.voter_count() == 1 {
        return Some(Decision::Act(Step::ReplacePod { ordinal: leader }));
    }
    let updated = |m: &MemberView| !outdated.contains(&m.ordinal);
    Some(match view.transfer_target(None, updated) {
        Some(t) => Decision::Act(Step::MoveLeader {
            from: leader,
            to_ordinal: t.ordinal,
            to: t.id,
            reason: MoveReason::RollingUpdate,
        }),
        None => Decision::Wait(Wait::NoTransferTarget),
    })
}

/// Rules 8 and 9: one member more or fewer.
fn scale(inputs: PlanInputs, view: &ClusterView, n: u32) -> Option<Decision> {
    if n < inputs.desired {
        let unhealthy = unhealthy(view);
        return Some(if unhealthy.is_empty() {
            Decision::Act(Step::AddLearner { ordinal: n })
        } else {
            Decision::Wait(Wait::MembersUnhealthy(unhealthy))
        });
    }
    if n <= inputs.desired {
        return None;
    }
    let last = view.members.last()?;
    if Some(last.id) == view.leader {
        return Some(match view.transfer_target(Some(last.ordinal), |_| true) {
            Some(t) => Decision::Act(Step::MoveLeader {
                from: last.ordinal,
                to_ordinal: t.ordinal,
                to: t.id,
                reason: MoveReason::ScaleDown,
            }),
            None => Decision::Wait(Wait::NoTransferTarget),
        });
    }
    let voters_after = view.voter_count() - u32::from(!last.learner);
    let healthy_after = view.healthy_voters_except(Some(last.id));
    Some(
        if voters_after >= 1 && healthy_after >= quorum(voters_after) && view.leader.is_some() {
            Decision::Act(Step::RemoveMember {
                ordinal: last.ordinal,
                id: last.id,
            })
        } else {
            Decision::Wait(Wait::QuorumAtRisk {
                step: format!("remove {}", last.ordinal),
            })
        },
    )
}

#[cfg(test)]
mod tests;
