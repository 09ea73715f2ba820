//! Runs the RaftCluster controller: a kube-runtime Controller per watched
//! namespace (or one for all), reconciles measured and retried with
//! backoff, stopped by a shutdown signal.

use crate::admin::NodeAdmin;
use crate::crd::RaftCluster;
use crate::error::Error;
use crate::names::FIELD_MANAGER;
use crate::reconcile::Context;
use crate::reconcile::raft_cluster::reconcile;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::Controller;
use kube::runtime::controller::Action;
use kube::runtime::watcher;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::watch;

fn key(rc: &RaftCluster) -> String {
    format!("{}/{}", rc.namespace().unwrap_or_default(), rc.name_any())
}

async fn measured<A: NodeAdmin>(
    rc: Arc<RaftCluster>,
    ctx: Arc<Context<A>>,
) -> Result<Action, Error> {
    let start = Instant::now();
    let result = reconcile(rc.clone(), ctx.clone()).await;
    ctx.metrics
        .reconciled(start.elapsed(), result.as_ref().err().map(Error::reason));
    if result.is_ok() {
        ctx.backoff.succeeded(&key(&rc));
    }
    result
}

fn error_policy<A: NodeAdmin>(rc: Arc<RaftCluster>, error: &Error, ctx: Arc<Context<A>>) -> Action {
    let delay = ctx.backoff.failed(&key(&rc));
    tracing::warn!(cluster = %key(&rc), reason = error.reason(), %error, retry_in_ms = delay.as_millis() as u64, "reconcile failed");
    Action::requeue(delay)
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
