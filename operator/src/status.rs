//! The RaftCluster's status, computed from the plan: members and their
//! roles, the phase, and the Available / Progressing / Degraded conditions.

use crate::crd::{
    ConditionStatus, MemberRole, MemberStatus, Phase, RaftCluster, RaftClusterStatus, set_condition,
};
use crate::names::ClusterNames;
use crate::plan::{ClusterView, Decision, MoveReason, Plan, Step, Wait, quorum};
use k8s_openapi::jiff::Timestamp;

/// Condition types.
pub const AVAILABLE: &str = "Available";
/// See [`AVAILABLE`].
pub const PROGRESSING: &str = "Progressing";
/// See [`AVAILABLE`].
pub const DEGRADED: &str = "Degraded";

/// The status after this reconcile. `step_error` is the failure of the
/// step the plan chose, if it failed.
pub fn compute(
    rc: &RaftCluster,
    names: &ClusterNames,
    plan: &Plan,
    founders: u32,
    step_error: Option<&str>,
    now: Timestamp,
) -> RaftClusterStatus {
    let previous = rc.status.clone().unwrap_or_default();
    let generation = rc.metadata.generation;
    let mut status = RaftClusterStatus {
        observed_generation: generation,
        founding_members: Some(i32::try_from(founders).unwrap_or(i32::MAX)),
        conditions: previous.conditions.clone(),
        warnings: warnings(rc),
        ..RaftClusterStatus::default()
    };
    status.bootstrapped = previous.bootstrapped
        || plan
            .view
            .as_ref()
            .is_some_and(|v| (0..founders).all(|o| v.members.iter().any(|m| m.ordinal == o)));
    match &plan.view {
        Some(view) => {
            status.members = members(names, view);
            status.replicas = count(view.members.len());
            status.ready_replicas = count(view.members.iter().filter(|m| m.healthy).count());
            status.leader = view.leader_member().map(|l| names.pod(l.ordinal));
        }
        None => {
            // Unread: keep what was last seen, marked unhealthy.
            status.members = previous.members.clone();
            status.members.iter_mut().for_each(|m| m.healthy = false);
            status.replicas = previous.replicas;
            status.ready_replicas = 0;
            status.leader = None;
        }
    }
    let creating = previous.members.is_empty() && plan.view.is_none();
    let available = plan.view.as_ref().is_some_and(ClusterView::available);
    let (progressing, degraded, phase) = judge(&plan.decision, creating, step_error);
    let mut set = |type_, s: bool, (reason, message): (String, String)| {
        let s = if s {
            ConditionStatus::True
        } else {
            ConditionStatus::False
        };
        set_condition(
            &mut status.conditions,
            type_,
            s,
            &reason,
            message,
            generation,
            now,
        );
    };
    set(AVAILABLE, available, availability(plan, available));
    set(
        PROGRESSING,
        progressing.is_some(),
        progressing.unwrap_or_else(|| ("Converged".into(), "the cluster matches its spec".into())),
    );
    set(
        DEGRADED,
        degraded.is_some(),
        degraded.unwrap_or_else(|| ("AsExpected".into(), String::new())),
    );
    status.phase = Some(phase);
    status
}

fn count(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

fn warnings(rc: &RaftCluster) -> Vec<String> {
    let r = rc.spec.replicas;
    if r > 0 && r % 2 == 0 {
        vec![format!(
            "spec.replicas is even ({r}): it tolerates {} failed member(s), as {} members would, with one more member to fail",
            (r - 1) / 2,
            r - 1
        )]
    } else {
        Vec::new()
    }
}

fn members(names: &ClusterNames, view: &ClusterView) -> Vec<MemberStatus> {
    view.members
        .iter()
        .map(|m| MemberStatus {
            name: names.pod(m.ordinal),
            id: m.id.to_string(),
            role: if m.learner {
                MemberRole::Learner
            } else if Some(m.id) == view.leader {
                MemberRole::Leader
            } else {
                MemberRole::Follower
            },
            healthy: m.healthy,
            term: m.term.unwrap_or_default(),
            commit_index: m.commit_index.unwrap_or_default(),
            applied_index: m.applied_index.unwrap_or_default(),
            lag: m.lag.unwrap_or_default(),
        })
        .collect()
}

fn availability(plan: &Plan, available: bool) -> (String, String) {
    match &plan.view {
        Some(view) if available => (
            "QuorumHealthy".into(),
            format!(
                "{} of {} voters healthy behind the leader",
                view.healthy_voters_except(None),
                view.voter_count()
            ),
        ),
        Some(view) => (
            "QuorumUnhealthy".into(),
            format!(
                "{} of {} voters healthy, {} needed, leader {}",
                view.healthy_voters_except(None),
                view.voter_count(),
                quorum(view.voter_count()),
                if view.leader.is_some() {
                    "known"
                } else {
                    "unknown"
                }
            ),
        ),
        None => (
            "MembershipUnknown".into(),
            "the membership could not be read".into(),
        ),
    }
}

type Reason = (String, String);

/// (Progressing, Degraded, phase) for a decision.
fn judge(
    decision: &Decision,
    creating: bool,
    step_error: Option<&str>,
) -> (Option<Reason>, Option<Reason>, Phase) {
    let r = |reason: &str, message: String| Some((reason.to_string(), message));
    if let Some(e) = step_error {
        let step = match decision {
            Decision::Act(step) => describe(step),
            Decision::Wait(_) => String::new(),
        };
        return (
            r("StepFailed", step.clone()),
            r("StepFailed", format!("{step}: {e}")),
            Phase::Degraded,
        );
    }
    match decision {
        Decision::Act(step) => {
            let phase = match step {
                Step::CreateCluster { .. } => Phase::Creating,
                Step::ReplacePod { .. }
                | Step::MoveLeader {
                    reason: MoveReason::RollingUpdate,
                    ..
                } => Phase::Upgrading,
                _ => Phase::Scaling,
            };
            (r(reason_of(step), describe(step)), None, phase)
        }
        Decision::Wait(wait) => match wait {
            Wait::Converged => (None, None, Phase::Running),
            Wait::MembersUnreachable(e) if creating => (
                r(
                    "WaitingForMembers",
                    format!("founding members are starting: {e}"),
                ),
                None,
                Phase::Creating,
            ),
            Wait::MembersUnreachable(e) => (
                None,
                r(
                    "MembersUnreachable",
                    format!("no member answered the member list, so nothing is changed: {e}"),
                ),
                Phase::Degraded,
            ),
            Wait::FoundersStarting(o) => (
                r(
                    "WaitingForMembers",
                    format!("founding members {o:?} have not joined the member table yet"),
                ),
                None,
                Phase::Creating,
            ),
            Wait::UnknownMembers(m) => (
                None,
                r(
                    "UnknownMembers",
                    format!(
                        "members with peer URLs outside this cluster: {}",
                        m.join(", ")
                    ),
                ),
                Phase::Degraded,
            ),
            Wait::MembershipGap(o) => (
                None,
                r(
                    "MembershipGap",
                    format!("member ordinals {o:?} are not 0..n; fix the membership by hand"),
                ),
                Phase::Degraded,
            ),
            Wait::StatefulSetNotObserved => (
                r(
                    "StatefulSetUpdating",
                    "waiting for the StatefulSet controller".into(),
                ),
                None,
                Phase::Upgrading,
            ),
            Wait::PodTerminating(o) => (
                r("PodTerminating", format!("waiting for pod {o} to stop")),
                None,
                Phase::Scaling,
            ),
            Wait::VolumeTerminating(o) => (
                r(
                    "VolumeTerminating",
                    format!("waiting for volume {o} to be deleted"),
                ),
                None,
                Phase::Scaling,
            ),
            Wait::LearnerCatchingUp { ordinal, lag } => (
                r(
                    "LearnerCatchingUp",
                    match lag {
                        Some(l) => format!("learner {ordinal} is {l} entries behind"),
                        None => format!("learner {ordinal} has not answered yet"),
                    },
                ),
                None,
                Phase::Scaling,
            ),
            Wait::MembersUnhealthy(o) => (
                None,
                r(
                    "MembersUnhealthy",
                    format!("members {o:?} are not healthy and caught up"),
                ),
                Phase::Degraded,
            ),
            Wait::QuorumAtRisk { step } => (
                None,
                r(
                    "QuorumAtRisk",
                    format!("held back \"{step}\": the voters left would lack a healthy quorum"),
                ),
                Phase::Degraded,
            ),
            Wait::NoTransferTarget => (
                None,
                r(
                    "NoTransferTarget",
                    "no healthy voter can take over leadership".into(),
                ),
                Phase::Degraded,
            ),
        },
    }
}

/// The Event reason (and Progressing reason) of a step.
pub fn reason_of(step: &Step) -> &'static str {
    match step {
        Step::CreateCluster { .. } => "Creating",
        Step::ScaleStatefulSet { .. } => "StatefulSetScaled",
        Step::AddLearner { .. } => "MemberAdded",
        Step::PromoteLearner { .. } => "MemberPromoted",
        Step::MoveLeader { .. } => "LeaderMoved",
        Step::RemoveMember { .. } => "MemberRemoved",
        Step::DeleteVolume { .. } => "VolumeDeleted",
        Step::ReplacePod { .. } => "PodReplaced",
    }
}

/// A sentence about a step, for events and conditions.
pub fn describe(step: &Step) -> String {
    match step {
        Step::CreateCluster { founders } => {
            format!("creating the cluster with {founders} founding member(s)")
        }
        Step::ScaleStatefulSet { from, to } => format!("StatefulSet replicas {from} -> {to}"),
        Step::AddLearner { ordinal } => format!("added member {ordinal} as a learner"),
        Step::PromoteLearner { ordinal, id } => {
            format!("promoted learner {ordinal} ({id}) to voter")
        }
        Step::MoveLeader {
            from,
            to_ordinal,
            reason,
            ..
        } => format!(
            "moved leadership from {from} to {to_ordinal} ({})",
            match reason {
                MoveReason::ScaleDown => "before removing it",
                MoveReason::RollingUpdate => "before replacing its pod",
            }
        ),
        Step::RemoveMember { ordinal, id } => format!("removed member {ordinal} ({id})"),
        Step::DeleteVolume { ordinal } => {
            format!("deleted the data volume of removed member {ordinal}")
        }
        Step::ReplacePod { ordinal } => format!("replaced pod {ordinal} with the new revision"),
    }
}
