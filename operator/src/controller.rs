//! Runs the RaftCluster and Topic controllers: a kube-runtime Controller
//! per watched namespace (or one for all), reconciles measured and retried
//! with backoff, stopped by a shutdown signal.

use crate::admin::NodeAdmin;
use crate::admin::broker::BrokerAdmin;
use crate::crd::{RaftCluster, Topic};
use crate::error::Error;
use crate::metrics::Metrics;
use crate::names::FIELD_MANAGER;
use crate::reconcile::raft_cluster::reconcile;
use crate::reconcile::topic::{TopicContext, reconcile as reconcile_topic};
use crate::reconcile::{Backoff, Context};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::Controller;
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::watch;

fn key(rc: &RaftCluster) -> String {
    format!("{}/{}", rc.namespace().unwrap_or_default(), rc.name_any())
}

/// Times one reconcile of the object `key` and counts it; a success
/// clears the object's backoff.
async fn timed(
    metrics: &Metrics,
    backoff: &Backoff,
    key: &str,
    reconcile: impl Future<Output = Result<Action, Error>>,
) -> Result<Action, Error> {
    let start = Instant::now();
    let result = reconcile.await;
    metrics.reconciled(start.elapsed(), result.as_ref().err().map(Error::reason));
    if result.is_ok() {
        backoff.succeeded(key);
    }
    result
}

/// The retry of a failed reconcile of the object `key`, paced by `backoff`.
fn retry_later(backoff: &Backoff, key: &str, error: &Error) -> Action {
    let delay = backoff.failed(key);
    tracing::warn!(object = %key, reason = error.reason(), %error, retry_in_ms = delay.as_millis() as u64, "reconcile failed");
    Action::requeue(delay)
}

async fn measured<A: NodeAdmin>(
    rc: Arc<RaftCluster>,
    ctx: Arc<Context<A>>,
) -> Result<Action, Error> {
    let key = key(&rc);
    timed(&ctx.metrics, &ctx.backoff, &key, reconcile(rc, ctx.clone())).await
}

fn error_policy<A: NodeAdmin>(rc: Arc<RaftCluster>, error: &Error, ctx: Arc<Context<A>>) -> Action {
    retry_later(&ctx.backoff, &key(&rc), error)
}

/// Runs until `stop` turns true. `namespaces` empty watches every namespace.
pub async fn run<A: NodeAdmin>(
    client: kube::Client,
    ctx: Arc<Context<A>>,
    namespaces: Vec<String>,
    stop: watch::Receiver<bool>,
) {
    let apis: Vec<(Api<RaftCluster>, Api<StatefulSet>)> = if namespaces.is_empty() {
        vec![(Api::all(client.clone()), Api::all(client.clone()))]
    } else {
        namespaces
            .iter()
            .map(|ns| {
                (
                    Api::namespaced(client.clone(), ns),
                    Api::namespaced(client.clone(), ns),
                )
            })
            .collect()
    };
    let owned =
        watcher::Config::default().labels(&format!("app.kubernetes.io/managed-by={FIELD_MANAGER}"));
    let controllers = apis.into_iter().map(|(clusters, statefulsets)| {
        let mut stop = stop.clone();
        let ctx = ctx.clone();
        Controller::new(clusters, watcher::Config::default())
            .owns(statefulsets, owned.clone())
            .graceful_shutdown_on(async move {
                // An error means the sender is gone: stop as well.
                let _ = stop.wait_for(|s| *s).await;
            })
            .run(measured, error_policy, ctx)
            .for_each(|result| async move {
                match result {
                    Ok((object, _)) => tracing::debug!(cluster = %object.name, "reconciled"),
                    Err(e) => tracing::debug!(error = %e, "controller"),
                }
            })
    });
    futures::future::join_all(controllers).await;
}

fn topic_key(t: &Topic) -> String {
    format!(
        "topic/{}/{}",
        t.namespace().unwrap_or_default(),
        t.name_any()
    )
}

async fn measured_topic<B: BrokerAdmin>(
    t: Arc<Topic>,
    ctx: Arc<TopicContext<B>>,
) -> Result<Action, Error> {
    let key = topic_key(&t);
    timed(
        &ctx.metrics,
        &ctx.backoff,
        &key,
        reconcile_topic(t, ctx.clone()),
    )
    .await
}

fn topic_error_policy<B: BrokerAdmin>(
    t: Arc<Topic>,
    error: &Error,
    ctx: Arc<TopicContext<B>>,
) -> Action {
    retry_later(&ctx.backoff, &topic_key(&t), error)
}

/// Runs the Topic controller until `stop` turns true: Topics, and the
/// Topics of a RaftCluster whenever it changes (so a cluster becoming
/// Available, or going, is seen at once). `namespaces` empty watches every
/// namespace.
pub async fn run_topics<B: BrokerAdmin>(
    client: kube::Client,
    ctx: Arc<TopicContext<B>>,
    namespaces: Vec<String>,
    stop: watch::Receiver<bool>,
) {
    let apis: Vec<(Api<Topic>, Api<RaftCluster>)> = if namespaces.is_empty() {
        vec![(Api::all(client.clone()), Api::all(client.clone()))]
    } else {
        namespaces
            .iter()
            .map(|ns| {
                (
                    Api::namespaced(client.clone(), ns),
                    Api::namespaced(client.clone(), ns),
                )
            })
            .collect()
    };
    let controllers = apis.into_iter().map(|(topics, clusters)| {
        let mut stop = stop.clone();
        let ctx = ctx.clone();
        let controller = Controller::new(topics, watcher::Config::default());
        let store = controller.store();
        controller
            .watches(
                clusters,
                watcher::Config::default(),
                move |rc: RaftCluster| {
                    let ns = rc.namespace();
                    let name = rc.name_any();
                    store
                        .state()
                        .into_iter()
                        .filter(|t| t.namespace() == ns && t.spec.cluster_ref.name == name)
                        .map(|t| ObjectRef::from_obj(&*t))
                        .collect::<Vec<_>>()
                },
            )
            .graceful_shutdown_on(async move {
                let _ = stop.wait_for(|s| *s).await;
            })
            .run(measured_topic, topic_error_policy, ctx)
            .for_each(|result| async move {
                match result {
                    Ok((object, _)) => tracing::debug!(topic = %object.name, "reconciled"),
                    Err(e) => tracing::debug!(error = %e, "topic controller"),
                }
            })
    });
    futures::future::join_all(controllers).await;
}
