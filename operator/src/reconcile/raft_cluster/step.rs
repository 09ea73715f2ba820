//! Takes the plan's one step and records it as a Kubernetes Event.

use crate::admin::NodeAdmin;
use crate::crd::RaftCluster;
use crate::error::Error;
use crate::observed::Observed;
use crate::plan::{Plan, Step};
use crate::reconcile::Context;
use crate::resources::Owned;
use crate::status::{describe, reason_of};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::Resource;
use kube::api::{Api, DeleteParams, Preconditions};
use kube::runtime::events::{Event, EventType};

/// Takes `step`; publishes a Normal Event when it succeeded and a Warning
/// when it failed.
pub async fn take<A: NodeAdmin>(
    ctx: &Context<A>,
    rc: &RaftCluster,
    owned: &Owned,
    observed: &Observed,
    plan: &Plan,
    step: &Step,
) -> Result<(), Error> {
    let result = run(ctx, owned, observed, plan, step).await;
    let (type_, note) = match &result {
        Ok(()) => (EventType::Normal, describe(step)),
        Err(e) => (
            EventType::Warning,
            format!("{} failed: {e}", describe(step)),
        ),
    };
    ctx.metrics.step(reason_of(step), result.is_ok());
    let event = Event {
        type_,
        reason: reason_of(step).to_string(),
        note: Some(note),
        action: reason_of(step).to_string(),
        secondary: None,
    };
    // An event that cannot be written must not undo or repeat the step.
    if let Err(e) = ctx.recorder.publish(&event, &rc.object_ref(&())).await {
        tracing::warn!(error = %e, "publishing an event failed");
    }
    tracing::info!(cluster = %owned.names.name(), namespace = %owned.names.namespace(), step = ?step, ok = result.is_ok(), "membership step");
    result
}

async fn run<A: NodeAdmin>(
    ctx: &Context<A>,
    owned: &Owned,
    observed: &Observed,
    plan: &Plan,
    step: &Step,
) -> Result<(), Error> {
    let names = &owned.names;
    let endpoints = plan
        .view
        .as_ref()
        .map(|v| v.endpoints(|o| names.client_url(o)))
        .unwrap_or_default();
    match *step {
        // The server-side apply before this made these changes.
        Step::CreateCluster { .. } | Step::ScaleStatefulSet { .. } => Ok(()),
        Step::AddLearner { ordinal } => {
            ctx.admin
                .member_add(&endpoints, &names.peer_url(ordinal), true)
                .await?;
            Ok(())
        }
        Step::PromoteLearner { id, .. } => Ok(ctx.admin.member_promote(&endpoints, id).await?),
        Step::MoveLeader { from, to, .. } => {
            Ok(ctx.admin.move_leader(&names.client_url(from), to).await?)
        }
        Step::RemoveMember { id, .. } => Ok(ctx.admin.member_remove(&endpoints, id).await?),
        Step::DeleteVolume { ordinal } => {
            let uid = observed
                .pvcs
                .iter()
                .find(|p| p.ordinal == ordinal)
                .and_then(|p| p.uid.clone());
            let api =
                Api::<PersistentVolumeClaim>::namespaced(ctx.client.clone(), names.namespace());
            api.delete(&names.pvc(ordinal), &only(uid)).await?;
            Ok(())
        }
        Step::ReplacePod { ordinal } => {
            let uid = observed.pod(ordinal).and_then(|p| p.uid.clone());
            let api = Api::<Pod>::namespaced(ctx.client.clone(), names.namespace());
            api.delete(&names.pod(ordinal), &only(uid)).await?;
            Ok(())
        }
    }
}

/// Deletes only the object that was observed, not a namesake created since.
fn only(uid: Option<String>) -> DeleteParams {
    DeleteParams {
        preconditions: Some(Preconditions {
            uid,
            resource_version: None,
        }),
        ..DeleteParams::default()
    }
}
