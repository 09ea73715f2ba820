//! Against a real Kubernetes API server (any: kind, a dev cluster, a bare
//! kube-apiserver). Ignored by default; run with
//!
//! ```sh
//! KUBECONFIG=~/.kube/config cargo test -p flotilla-operator --test kube_api -- --ignored --test-threads 1
//! ```
//!
//! Each test works in a namespace of its own and deletes it at the end.
//! The CRDs are applied from `crds/` (server-side, field manager
//! `flotilla-operator-tests`). No node needs to run: the tests stop at what
//! the operator does before members answer (and, for Topics, before a
//! broker answers).

use flotilla_operator::admin::GrpcAdmin;
use flotilla_operator::crd::{Phase, RaftCluster};
use flotilla_operator::metrics::Metrics;
use flotilla_operator::reconcile::Context;
use flotilla_operator::reconcile::raft_cluster::reconcile;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Service};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::events::Reporter;
use kube::runtime::wait::{await_condition, conditions};
use kube::{Client, Resource, ResourceExt};
use std::sync::Arc;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

async fn client() -> Client {
    assert!(
        std::env::var_os("KUBECONFIG").is_some(),
        "these tests need a Kubernetes API server: set KUBECONFIG"
    );
    Client::try_default()
        .await
        .expect("a client from KUBECONFIG")
}

async fn install_crds(client: &Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../crds");
    for name in ["raftclusters.flotilla.dev", "topics.flotilla.dev"] {
        let text = std::fs::read_to_string(dir.join(format!("{name}.yaml"))).expect("a CRD file");
        let crd: CustomResourceDefinition = serde_yaml::from_str(&text).expect("a CRD");
        crds.patch(
            name,
            &PatchParams::apply("flotilla-operator-tests").force(),
            &Patch::Apply(&crd),
        )
        .await
        .unwrap_or_else(|e| panic!("the API server refused CRD {name}: {e}"));
        tokio::time::timeout(
            WAIT,
            await_condition(crds.clone(), name, conditions::is_crd_established()),
        )
        .await
        .unwrap_or_else(|_| panic!("CRD {name} not Established in time"))
        .expect("watching the CRD");
    }
}

async fn namespace(client: &Client, test: &str) -> String {
    let name = format!("flotilla-{test}-{}", std::process::id());
    let ns: Namespace =
        serde_json::from_value(serde_json::json!({"metadata": {"name": name}})).expect("ns");
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .expect("creating the test namespace");
    name
}

async fn delete_namespace(client: &Client, name: &str) {
    let _ = Api::<Namespace>::all(client.clone())
        .delete(name, &DeleteParams::default())
        .await;
}

async fn create_cluster(client: &Client, ns: &str) -> RaftCluster {
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/raftcluster.yaml"),
    )
    .expect("the example");
    let rc: RaftCluster = serde_yaml::from_str(&text).expect("a RaftCluster");
    Api::<RaftCluster>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &rc)
        .await
        .expect("the API server accepts the example RaftCluster")
}

fn context(client: &Client) -> Arc<Context<GrpcAdmin>> {
    let reporter = Reporter {
        controller: "flotilla-operator".to_string(),
        instance: Some("kube-api-test".to_string()),
    };
    let admin = GrpcAdmin::new(Duration::from_millis(500), Duration::from_secs(1));
    Arc::new(Context::new(
        client.clone(),
        admin,
        reporter,
        Arc::new(Metrics::default()),
    ))
}

#[tokio::test]
#[ignore = "needs a Kubernetes API server (KUBECONFIG)"]
async fn crds_are_accepted_and_established() {
    let client = client().await;
    install_crds(&client).await;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for name in ["raftclusters.flotilla.dev", "topics.flotilla.dev"] {
        let crd = crds.get(name).await.expect("the CRD");
        let established = crd.status.and_then(|s| s.conditions).is_some_and(|cs| {
            cs.iter()
                .any(|c| c.type_ == "Established" && c.status == "True")
        });
        assert!(established, "{name}");
    }
    // Schema validation is the API server's: replicas below the minimum is refused.
    let ns = namespace(&client, "schema").await;
    let bad: RaftCluster = serde_json::from_value(serde_json::json!({
        "apiVersion": "flotilla.dev/v1alpha1", "kind": "RaftCluster",
        "metadata": {"name": "bad"}, "spec": {"replicas": 0, "image": "x"}
    }))
    .expect("typed");
    let refused = Api::<RaftCluster>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &bad)
        .await;
    delete_namespace(&client, &ns).await;
    assert!(
        matches!(refused, Err(kube::Error::Api(ref e)) if e.code == 422),
        "{refused:?}"
    );
}

#[tokio::test]
#[ignore = "needs a Kubernetes API server (KUBECONFIG)"]
async fn a_raft_cluster_yields_exactly_the_expected_objects_status_and_event() {
    let client = client().await;
    install_crds(&client).await;
    let ns = namespace(&client, "objects").await;
    let rc = create_cluster(&client, &ns).await;
    reconcile(Arc::new(rc.clone()), context(&client))
        .await
        .expect("the first reconcile");

    let uid = rc.uid().expect("uid");
    let selector = ListParams::default().labels("app.kubernetes.io/managed-by=flotilla-operator");
    let owned_by_rc = |meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| {
        meta.owner_references
            .iter()
            .flatten()
            .any(|o| o.uid == uid && o.controller == Some(true))
    };
    let names = |v: Vec<String>| {
        let mut v = v;
        v.sort();
        v
    };
    let services = Api::<Service>::namespaced(client.clone(), &ns)
        .list(&selector)
        .await
        .expect("services");
    assert!(services.items.iter().all(|s| owned_by_rc(&s.metadata)));
    assert_eq!(
        names(services.items.iter().map(|s| s.name_any()).collect()),
        ["demo-client", "demo-peers"]
    );
    let cms = Api::<ConfigMap>::namespaced(client.clone(), &ns)
        .list(&selector)
        .await
        .expect("configmaps");
    assert_eq!(
        cms.items.iter().map(|c| c.name_any()).collect::<Vec<_>>(),
        ["demo-config"]
    );
    let sts = Api::<StatefulSet>::namespaced(client.clone(), &ns)
        .list(&selector)
        .await
        .expect("statefulsets");
    assert_eq!(sts.items.len(), 1);
    assert!(owned_by_rc(&sts.items[0].metadata));
    assert_eq!(sts.items[0].spec.as_ref().and_then(|s| s.replicas), Some(3));
    let pdbs = Api::<PodDisruptionBudget>::namespaced(client.clone(), &ns)
        .list(&selector)
        .await
        .expect("pdbs");
    assert_eq!(
        pdbs.items.iter().map(|p| p.name_any()).collect::<Vec<_>>(),
        ["demo"]
    );

    let stored = Api::<RaftCluster>::namespaced(client.clone(), &ns)
        .get("demo")
        .await
        .expect("the RaftCluster");
    let status = stored.status.expect("a status");
    assert_eq!(status.phase, Some(Phase::Creating));
    assert_eq!(status.founding_members, Some(3));
    assert_eq!(status.observed_generation, stored.metadata.generation);
    let events = Api::<Event>::namespaced(client.clone(), &ns)
        .list(&ListParams::default())
        .await
        .expect("events");
    let ours: Vec<_> = events
        .items
        .iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.uid.as_deref()) == Some(uid.as_str()))
        .filter_map(|e| e.reason.clone())
        .collect();
    assert_eq!(ours, ["Creating"]);

    // A second reconcile changes nothing (no member answers: no step).
    let again = Api::<RaftCluster>::namespaced(client.clone(), &ns)
        .get("demo")
        .await
        .expect("rc");
    reconcile(Arc::new(again), context(&client))
        .await
        .expect("the second reconcile");
    let sts = Api::<StatefulSet>::namespaced(client.clone(), &ns)
        .get("demo")
        .await
        .expect("sts");
    assert_eq!(sts.spec.and_then(|s| s.replicas), Some(3));
    delete_namespace(&client, &ns).await;
}

#[tokio::test]
#[ignore = "needs a Kubernetes API server (KUBECONFIG)"]
async fn the_controller_picks_up_a_new_raft_cluster() {
    let client = client().await;
    install_crds(&client).await;
    let ns = namespace(&client, "controller").await;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let controller = tokio::spawn(flotilla_operator::controller::run(
        client.clone(),
        context(&client),
        vec![ns.clone()],
        stopped,
    ));
    create_cluster(&client, &ns).await;
    let api = Api::<RaftCluster>::namespaced(client.clone(), &ns);
    let has_status = |rc: Option<&RaftCluster>| {
        rc.and_then(|r| r.status.as_ref())
            .is_some_and(|s| s.phase.is_some())
    };
    let seen = tokio::time::timeout(WAIT, await_condition(api, "demo", has_status)).await;
    stop.send(true).expect("stop");
    controller.await.expect("the controller task");
    delete_namespace(&client, &ns).await;
    let rc = seen
        .expect("the controller wrote a status in time")
        .expect("watch");
    assert!(rc.is_some_and(|r| r.meta().name.as_deref() == Some("demo")));
}

#[tokio::test]
#[ignore = "needs a Kubernetes API server (KUBECONFIG)"]
async fn a_topic_waits_for_its_cluster_and_is_released_when_the_cluster_goes() {
    use flotilla_operator::crd::Topic;
    use flotilla_operator::reconcile::topic::{
        FINALIZER, TopicContext, reconcile as reconcile_topic,
    };
    let client = client().await;
    install_crds(&client).await;
    let ns = namespace(&client, "topic").await;
    create_cluster(&client, &ns).await;
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/topic.yaml"),
    )
    .expect("the example");
    let mut topic: Topic = serde_yaml::from_str(&text).expect("a Topic");
    // Delete, so the cleanup has to find the cluster gone to let go.
    topic.spec.deletion_policy = flotilla_operator::crd::DeletionPolicy::Delete;
    let topics: Api<Topic> = Api::namespaced(client.clone(), &ns);
    topics
        .create(&PostParams::default(), &topic)
        .await
        .expect("the API server accepts the example Topic");
    let ctx = Arc::new(TopicContext::new(
        client.clone(),
        GrpcAdmin::new(Duration::from_millis(500), Duration::from_secs(1)),
        Reporter {
            controller: "flotilla-operator".to_string(),
            instance: Some("kube-api-test".to_string()),
        },
        Arc::new(Metrics::default()),
    ));
    let name = topic.name_any();
    // First the finalizer (a JSON patch whose test of a missing list the
    // real API server passes), then the status: the cluster has no members.
    for _ in 0..2 {
        let t = topics.get(&name).await.expect("the Topic");
        reconcile_topic(Arc::new(t), ctx.clone())
            .await
            .expect("reconcile");
    }
    let t = topics.get(&name).await.expect("the Topic");
    assert_eq!(t.finalizers(), [FINALIZER.to_string()]);
    let ready = t
        .status
        .unwrap_or_default()
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .expect("a Ready condition");
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "ClusterNotReady")
    );
    // The cluster goes first, then the Topic: the finalizer lets go.
    Api::<RaftCluster>::namespaced(client.clone(), &ns)
        .delete("demo", &DeleteParams::default())
        .await
        .expect("deleting the cluster");
    topics
        .delete(&name, &DeleteParams::default())
        .await
        .expect("deleting the Topic");
    let t = topics.get(&name).await.expect("held by the finalizer");
    reconcile_topic(Arc::new(t), ctx.clone())
        .await
        .expect("cleanup");
    let gone = topics.get_opt(&name).await.expect("a read");
    delete_namespace(&client, &ns).await;
    assert!(gone.is_none(), "the Topic is released: {gone:?}");
}
