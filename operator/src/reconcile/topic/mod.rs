//! One reconcile of a Topic: find its RaftCluster, settle which Topic
//! resource owns the broker topic when two name the same one, compare the
//! spec with what the broker describes, make the changes the broker allows
//! (create, add partitions, alter settings) and say in the status where it
//! stands. A finalizer deletes the broker topic with the resource when the
//! deletion policy is `Delete`, and lets go when the cluster is gone.
//!
//! ```text
//!   deleting? ──yes──▶ Retain, not the owner, or cluster gone/deleting? ──yes──▶ release
//!      │no                         │no
//!      │                           ▼
//!      │                DeleteTopic ──ok──▶ release   (unreachable: retry with backoff)
//!      ▼
//!   RaftCluster exists? ──no──▶ Ready=False ClusterNotReady
//!      │yes
//!   older Topic names the same topic? ──yes──▶ Ready=False ResourceConflict
//!      │no
//!   cluster Available? ──no──▶ Ready=False ClusterNotReady
//!      │yes
//!   DescribeTopic ──unreachable──▶ Ready=False ClusterNotReady
//!      │
//!   absent: CreateTopic · fewer partitions: AddPartitions · settings differ: AlterTopic
//!   more partitions or another replication factor than the broker has: NotSupported
//!      │
//!   Ready=True Created (or the reason above), partitions with leader and ISR
//! ```

mod plan;

pub use plan::{TopicPlan, plan};

use super::context::Requeue;
use crate::admin::AdminError;
use crate::admin::broker::{BrokerAdmin, FsyncPolicy, TopicInfo, TopicSettings};
use crate::crd::{ConditionStatus, set_condition};
use crate::crd::{
    PartitionStatus, RaftCluster, Topic, TopicFsync, TopicFsyncMode, TopicReadyReason, TopicStatus,
};
use crate::error::Error;
use crate::metrics::Metrics;
use crate::names::{ClusterNames, FIELD_MANAGER};
use crate::reconcile::context::Backoff;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{self, finalizer};
use kube::{Resource, ResourceExt};
use std::sync::Arc;
use std::time::Duration;

/// The finalizer a Topic carries while the operator may still have to
/// delete its broker topic.
pub const FINALIZER: &str = "flotilla.dev/topic";

/// Shared by all Topic reconciles.
pub struct TopicContext<B> {
    /// The API server.
    pub client: kube::Client,
    /// The broker's admin API.
    pub broker: B,
    /// Publishes Events.
    pub recorder: Recorder,
    /// Requeue intervals.
    pub requeue: Requeue,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Retry pacing.
    pub backoff: Backoff,
}

impl<B: BrokerAdmin> TopicContext<B> {
    /// A context with default intervals and backoff (1 s to 5 min).
    pub fn new(client: kube::Client, broker: B, reporter: Reporter, metrics: Arc<Metrics>) -> Self {
        TopicContext {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            broker,
            requeue: Requeue::default(),
            metrics,
            backoff: Backoff::new(Duration::from_secs(1), Duration::from_secs(300)),
        }
    }
}

impl<B> std::fmt::Debug for TopicContext<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TopicContext")
            .field("requeue", &self.requeue)
            .finish_non_exhaustive()
    }
}

/// Reconciles `topic` once.
pub async fn reconcile<B: BrokerAdmin>(
    topic: Arc<Topic>,
    ctx: Arc<TopicContext<B>>,
) -> Result<Action, Error> {
    let namespace = topic
        .namespace()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    let api: Api<Topic> = Api::namespaced(ctx.client.clone(), &namespace);
    let result = finalizer(&api, FINALIZER, topic, |event| async {
        match event {
            finalizer::Event::Apply(t) => apply(&t, &namespace, &ctx).await,
            finalizer::Event::Cleanup(t) => cleanup(&t, &namespace, &ctx).await,
        }
    })
    .await;
    result.map_err(|e| match e {
        finalizer::Error::ApplyFailed(e) | finalizer::Error::CleanupFailed(e) => e,
        finalizer::Error::AddFinalizer(e) | finalizer::Error::RemoveFinalizer(e) => Error::Kube(e),
        finalizer::Error::UnnamedObject | finalizer::Error::InvalidFinalizer => {
            Error::MissingField("metadata.name")
        }
    })
}

/// What the reconcile found out about the cluster and the other Topics.
enum Standing {
    /// The RaftCluster is missing, being deleted or not Available.
    ClusterNotReady(String),
    /// An older Topic resource names the same broker topic.
    Conflict(String),
    /// This resource owns the topic; ask the broker at these endpoints.
    Owner(Vec<String>),
}

async fn standing(
    topic: &Topic,
    namespace: &str,
    client: &kube::Client,
) -> Result<Standing, Error> {
    let cluster_name = &topic.spec.cluster_ref.name;
    let clusters: Api<RaftCluster> = Api::namespaced(client.clone(), namespace);
    let Some(cluster) = clusters.get_opt(cluster_name).await? else {
        return Ok(Standing::ClusterNotReady(format!(
            "RaftCluster {cluster_name} does not exist in namespace {namespace}"
        )));
    };
    if let Some(older) = older_claim(topic, namespace, client).await? {
        return Ok(Standing::Conflict(format!(
            "topic {} of RaftCluster {cluster_name} is already managed by Topic {older}, which is older; this resource changes nothing while that one exists",
            topic.topic_name()
        )));
    }
    if cluster.meta().deletion_timestamp.is_some() {
        return Ok(Standing::ClusterNotReady(format!(
            "RaftCluster {cluster_name} is being deleted"
        )));
    }
    let status = cluster.status.clone().unwrap_or_default();
    let available = status
        .conditions
        .iter()
        .any(|c| c.type_ == "Available" && c.status == "True");
    if !available {
        return Ok(Standing::ClusterNotReady(format!(
            "RaftCluster {cluster_name} is not Available (phase {})",
            status
                .phase
                .map(|p| format!("{p:?}"))
                .unwrap_or_else(|| "unknown".to_string())
        )));
    }
    Ok(Standing::Owner(endpoints(&cluster, namespace)))
}

/// The client URLs to ask: the leader's first, then every member's.
pub fn endpoints(cluster: &RaftCluster, namespace: &str) -> Vec<String> {
    let names = ClusterNames::new(&cluster.name_any(), namespace);
    let status = cluster.status.clone().unwrap_or_default();
    let mut ordinals: Vec<u32> = Vec::new();
    let leader = status
        .leader
        .as_deref()
        .and_then(|l| names.ordinal_of_pod(l));
    ordinals.extend(leader);
    let members: Vec<u32> = if status.members.is_empty() {
        (0..u32::try_from(cluster.spec.replicas.max(1)).unwrap_or(1)).collect()
    } else {
        status
            .members
            .iter()
            .filter_map(|m| names.ordinal_of_pod(&m.name))
            .collect()
    };
    for o in members {
        if !ordinals.contains(&o) {
            ordinals.push(o);
        }
    }
    ordinals.into_iter().map(|o| names.client_url(o)).collect()
}

/// The name of an older Topic (by creation time, then name) in the
/// namespace that names the same broker topic of the same cluster.
async fn older_claim(
    topic: &Topic,
    namespace: &str,
    client: &kube::Client,
) -> Result<Option<String>, Error> {
    let api: Api<Topic> = Api::namespaced(client.clone(), namespace);
    let all = api.list(&ListParams::default()).await?;
    let key = |t: &Topic| {
        (
            t.meta().creation_timestamp.as_ref().map(|c| c.0),
            t.name_any(),
        )
    };
    let mine = key(topic);
    Ok(all
        .items
        .iter()
        .filter(|t| t.uid() != topic.uid() && t.name_any() != topic.name_any())
        .filter(|t| {
            t.spec.cluster_ref.name == topic.spec.cluster_ref.name
                && t.topic_name() == topic.topic_name()
        })
        .map(key)
        .filter(|k| *k < mine)
        .min()
        .map(|(_, name)| name))
}

async fn apply<B: BrokerAdmin>(
    topic: &Topic,
    namespace: &str,
    ctx: &TopicContext<B>,
) -> Result<Action, Error> {
    let endpoints = match standing(topic, namespace, &ctx.client).await? {
        Standing::ClusterNotReady(why) => {
            let reason = TopicReadyReason::ClusterNotReady;
            write_status(ctx, topic, namespace, None, reason, why).await?;
            return Ok(Action::requeue(ctx.requeue.waiting));
        }
        Standing::Conflict(why) => {
            let reason = TopicReadyReason::ResourceConflict;
            write_status(ctx, topic, namespace, None, reason, why).await?;
            return Ok(Action::requeue(ctx.requeue.waiting));
        }
        Standing::Owner(endpoints) => endpoints,
    };
    let name = topic.topic_name().to_string();
    let current = match ctx.broker.describe_topic(&endpoints, &name).await {
        Ok(current) => current,
        Err(e @ (AdminError::Unreachable { .. } | AdminError::NoEndpoints)) => {
            let why = format!("the cluster's broker did not answer: {e}");
            let reason = TopicReadyReason::ClusterNotReady;
            write_status(ctx, topic, namespace, None, reason, why).await?;
            return Ok(Action::requeue(ctx.requeue.waiting));
        }
        Err(e) => return Err(e.into()),
    };
    let plan = plan(topic, current.as_ref());
    let changed = !plan.steps.is_empty();
    for step in &plan.steps {
        let result = step.run(&ctx.broker, &endpoints, &name).await;
        publish(ctx, topic, step.reason(), step.describe(&name), &result).await;
        if let Err(e) = result {
            if let AdminError::Refused { message, .. } = &e {
                let why = format!("the broker refused to {}: {message}", step.describe(&name));
                let reason = TopicReadyReason::BrokerRefused;
                write_status(ctx, topic, namespace, current.as_ref(), reason, why).await?;
            }
            return Err(e.into());
        }
    }
    let now = if changed {
        ctx.broker.describe_topic(&endpoints, &name).await?
    } else {
        current
    };
    let (reason, why) = match &plan.not_supported {
        Some(why) => (TopicReadyReason::NotSupported, why.clone()),
        None => (
            TopicReadyReason::Created,
            format!("topic {name} exists as specified"),
        ),
    };
    write_status(ctx, topic, namespace, now.as_ref(), reason, why).await?;
    Ok(Action::requeue(if changed {
        ctx.requeue.after_step
    } else {
        ctx.requeue.idle
    }))
}

async fn cleanup<B: BrokerAdmin>(
    topic: &Topic,
    namespace: &str,
    ctx: &TopicContext<B>,
) -> Result<Action, Error> {
    let name = topic.topic_name().to_string();
    if topic.spec.deletion_policy == crate::crd::DeletionPolicy::Retain {
        tracing::info!(topic = %name, "deletionPolicy Retain: the broker topic stays");
        return Ok(Action::await_change());
    }
    let endpoints = match standing(topic, namespace, &ctx.client).await? {
        Standing::Owner(endpoints) => endpoints,
        Standing::Conflict(why) => {
            tracing::info!(topic = %name, %why, "not the owner: the broker topic stays");
            return Ok(Action::await_change());
        }
        // A cluster that is gone or going takes its topics with it; one
        // that exists but is not Available may come back: wait for it.
        Standing::ClusterNotReady(why) => {
            let clusters: Api<RaftCluster> = Api::namespaced(ctx.client.clone(), namespace);
            match clusters.get_opt(&topic.spec.cluster_ref.name).await? {
                Some(c) if c.meta().deletion_timestamp.is_none() => {
                    return Err(AdminError::Unreachable {
                        endpoints: String::new(),
                        reason: format!("cannot delete topic {name} yet: {why}"),
                    }
                    .into());
                }
                _ => {
                    tracing::info!(topic = %name, %why, "the cluster is gone: nothing to delete");
                    return Ok(Action::await_change());
                }
            }
        }
    };
    let result = ctx.broker.delete_topic(&endpoints, &name).await;
    publish(
        ctx,
        topic,
        "TopicDeleted",
        format!("delete topic {name}"),
        &result,
    )
    .await;
    result?;
    Ok(Action::await_change())
}

/// Publishes a Normal Event for a step that worked, a Warning for one
/// that failed. A failed publish changes nothing.
async fn publish<B>(
    ctx: &TopicContext<B>,
    topic: &Topic,
    reason: &str,
    what: String,
    result: &Result<(), AdminError>,
) {
    let (type_, note) = match result {
        Ok(()) => (EventType::Normal, what),
        Err(e) => (EventType::Warning, format!("{what} failed: {e}")),
    };
    let event = Event {
        type_,
        reason: reason.to_string(),
        note: Some(note),
        action: reason.to_string(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &topic.object_ref(&())).await {
        tracing::warn!(error = %e, "publishing an event failed");
    }
}

/// The status for `reason`, with the partitions of `info` when known
/// (the last known ones otherwise).
async fn write_status<B>(
    ctx: &TopicContext<B>,
    topic: &Topic,
    namespace: &str,
    info: Option<&TopicInfo>,
    reason: TopicReadyReason,
    message: String,
) -> Result<(), Error> {
    let old = topic.status.clone().unwrap_or_default();
    let mut conditions = old.conditions.clone();
    let ready = if reason == TopicReadyReason::Created {
        ConditionStatus::True
    } else {
        ConditionStatus::False
    };
    let generation = topic.meta().generation;
    set_condition(
        &mut conditions,
        "Ready",
        ready,
        reason.as_str(),
        message,
        generation,
        Timestamp::now(),
    );
    let status = TopicStatus {
        observed_generation: generation,
        partitions: match info {
            Some(info) => partitions(info),
            None if reason == TopicReadyReason::ResourceConflict => Vec::new(),
            None => old.partitions,
        },
        conditions,
    };
    let api: Api<Topic> = Api::namespaced(ctx.client.clone(), namespace);
    let patch = serde_json::json!({
        "apiVersion": "flotilla.dev/v1alpha1",
        "kind": "Topic",
        "status": status,
    });
    api.patch_status(
        &topic.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    Ok(())
}

fn partitions(info: &TopicInfo) -> Vec<PartitionStatus> {
    info.partitions
        .iter()
        .map(|p| PartitionStatus {
            id: i32::try_from(p.id).unwrap_or(i32::MAX),
            leader: p.leader.clone(),
            isr: p.isr.clone(),
        })
        .collect()
}

/// The spec's settings as the broker takes them. A retention of 0 or
/// less keeps records for ever, written -1 as the broker reports it.
pub fn settings(topic: &Topic) -> TopicSettings {
    let c = &topic.spec.config;
    let retention = |v: Option<i64>| v.map(|v| if v <= 0 { -1 } else { v });
    TopicSettings {
        retention_ms: retention(c.retention_ms),
        retention_bytes: retention(c.retention_bytes),
        segment_bytes: c.segment_bytes,
        min_insync_replicas: c.min_insync_replicas,
        fsync: c.fsync.as_ref().map(fsync),
    }
}

fn fsync(f: &TopicFsync) -> FsyncPolicy {
    match f.mode {
        TopicFsyncMode::Always => FsyncPolicy::Always,
        TopicFsyncMode::EveryRecords => FsyncPolicy::EveryRecords(f.records.unwrap_or(1)),
        TopicFsyncMode::EveryInterval => FsyncPolicy::EveryIntervalMs(f.interval_ms.unwrap_or(1)),
        TopicFsyncMode::Never => FsyncPolicy::Never,
    }
}

#[cfg(test)]
mod tests;
