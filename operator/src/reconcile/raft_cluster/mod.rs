//! One reconcile of a RaftCluster: read the world (`observe`), decide
//! with [`crate::plan::plan`], apply the desired objects by server-side
//! apply, take the plan's one step (`step`), write the status, requeue.

mod observe;
mod step;

use super::Context;
use crate::admin::NodeAdmin;
use crate::crd::RaftCluster;
use crate::error::Error;
use crate::names::FIELD_MANAGER;
use crate::observed::Observed;
use crate::plan::{Decision, Plan, PlanInputs, Wait, plan};
use crate::resources::{BuildInputs, Desired, Owned};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::sync::Arc;

/// Reconciles `rc` once.
pub async fn reconcile<A: NodeAdmin>(
    rc: Arc<RaftCluster>,
    ctx: Arc<Context<A>>,
) -> Result<Action, Error> {
    let owned = Owned::of(&rc)?;
    let observed = observe::observe(&ctx, &owned).await?;
    let founders = founders(&rc, &observed)?;
    let plan = plan(
        PlanInputs {
            desired: u32::try_from(rc.spec.replicas.max(1)).unwrap_or(1),
            founders,
            known_voters: known_voters(&rc),
            bootstrapped: bootstrapped(&rc, founders, &observed),
            limits: ctx.limits,
        },
        &observed,
    );
    tracing::debug!(cluster = %owned.names.name(), namespace = %owned.names.namespace(), decision = ?plan.decision, "planned");
    let mut desired = Desired::build(
        &rc,
        BuildInputs {
            founders,
            replicas: i32::try_from(plan.statefulset_replicas).unwrap_or(i32::MAX),
            voters: plan.voters,
        },
    )?;
    let warnings = keep_claim_templates(&mut desired, &observed);
    apply_all(&ctx.client, &owned, &desired).await?;
    let step_result = match &plan.decision {
        Decision::Act(s) => step::take(&ctx, &rc, &owned, &observed, &plan, s).await,
        Decision::Wait(_) => Ok(()),
    };
    let step_error = step_result.as_ref().err().map(ToString::to_string);
    let outcome = Outcome {
        founders,
        step_error: step_error.as_deref(),
        warnings,
    };
    write_status(&ctx, &rc, &owned, &plan, outcome).await?;
    step_result?;
    Ok(Action::requeue(match &plan.decision {
        Decision::Act(_) => ctx.requeue.after_step,
        Decision::Wait(Wait::Converged) => ctx.requeue.idle,
        Decision::Wait(_) => ctx.requeue.waiting,
    }))
}

/// The founding member count: recorded in the status, or on the
/// StatefulSet; the spec's replicas only before anything exists.
fn founders(rc: &RaftCluster, observed: &Observed) -> Result<u32, Error> {
    let recorded = rc
        .status
        .as_ref()
        .and_then(|s| s.founding_members)
        .and_then(|f| u32::try_from(f).ok())
        .filter(|f| *f > 0);
    match (recorded, &observed.statefulset) {
        (Some(f), _) => Ok(f),
        (None, Some(sts)) => sts.founders.ok_or(Error::FoundersUnknown),
        (None, None) => Ok(u32::try_from(rc.spec.replicas.max(1)).unwrap_or(1)),
    }
}

/// Whether the founders have all been in the member table: recorded in the
/// status; also true once the StatefulSet is below the founders (only a
/// removal of founders takes it there).
fn bootstrapped(rc: &RaftCluster, founders: u32, observed: &Observed) -> bool {
    rc.status.as_ref().is_some_and(|s| s.bootstrapped)
        || observed
            .statefulset
            .as_ref()
            .is_some_and(|s| s.replicas < founders)
}

fn known_voters(rc: &RaftCluster) -> Option<u32> {
    let members = &rc.status.as_ref()?.members;
    let voters = members
        .iter()
        .filter(|m| m.role != crate::crd::MemberRole::Learner)
        .count();
    u32::try_from(voters).ok().filter(|v| *v > 0)
}

async fn apply<K>(client: &kube::Client, namespace: &str, object: &K) -> Result<(), Error>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + Serialize
        + DeserializeOwned,
    K::DynamicType: Default,
{
    let name = object
        .meta()
        .name
        .clone()
        .ok_or(Error::MissingField("metadata.name"))?;
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(object),
    )
    .await?;
    Ok(())
}

/// Server-side applies every desired object, the config before the pods
/// that read it.
async fn apply_all(client: &kube::Client, owned: &Owned, d: &Desired) -> Result<(), Error> {
    let ns = owned.names.namespace();
    apply::<ConfigMap>(client, ns, &d.config_map).await?;
    apply::<Service>(client, ns, &d.peers_service).await?;
    apply::<Service>(client, ns, &d.client_service).await?;
    apply::<StatefulSet>(client, ns, &d.statefulset).await?;
    apply::<PodDisruptionBudget>(client, ns, &d.pdb).await?;
    Ok(())
}

/// A StatefulSet's volume claim templates cannot change: apply the ones it
/// was created with, and warn when the spec asks for other volumes.
fn keep_claim_templates(desired: &mut Desired, observed: &Observed) -> Vec<String> {
    let Some(existing) = observed
        .statefulset
        .as_ref()
        .and_then(|s| s.claim_templates.clone())
    else {
        return Vec::new();
    };
    let Some(spec) = desired.statefulset.spec.as_mut() else {
        return Vec::new();
    };
    let wanted = spec.volume_claim_templates.replace(existing.clone());
    let storage = |claims: Option<&Vec<PersistentVolumeClaim>>| {
        claims
            .into_iter()
            .flatten()
            .find_map(|c| c.spec.as_ref())
            .map(|s| {
                let requests = s.resources.as_ref().and_then(|r| r.requests.as_ref());
                let size = requests.and_then(|r| r.get("storage")).map(|q| q.0.clone());
                (
                    size.unwrap_or_default(),
                    s.storage_class_name.clone().unwrap_or_default(),
                )
            })
    };
    let (had, want) = (storage(Some(&existing)), storage(wanted.as_ref()));
    if had == want {
        return Vec::new();
    }
    vec![format!(
        "spec.storage (size and class {want:?}) differs from the volumes the cluster was created with ({had:?}): a StatefulSet's volume claim templates cannot change, so every member keeps the old ones; resize the PVCs by hand where the storage class allows it"
    )]
}

/// What the status reports beyond the plan.
struct Outcome<'a> {
    founders: u32,
    step_error: Option<&'a str>,
    warnings: Vec<String>,
}

async fn write_status<A: NodeAdmin>(
    ctx: &Context<A>,
    rc: &RaftCluster,
    owned: &Owned,
    plan: &Plan,
    outcome: Outcome<'_>,
) -> Result<(), Error> {
    let mut status = crate::status::compute(
        rc,
        &owned.names,
        plan,
        outcome.founders,
        outcome.step_error,
        Timestamp::now(),
    );
    status.warnings.extend(outcome.warnings);
    let api: Api<RaftCluster> = Api::namespaced(ctx.client.clone(), owned.names.namespace());
    let patch = serde_json::json!({
        "apiVersion": "flotilla.dev/v1alpha1",
        "kind": "RaftCluster",
        "status": status,
    });
    api.patch_status(
        owned.names.name(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests;
