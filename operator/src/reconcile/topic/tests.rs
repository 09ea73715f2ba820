//! Topic reconciles against the fake API server and the fake broker: the
//! exact broker calls, API writes and statuses of create, grow, shrink,
//! settings, conflicts, an unready or unreachable cluster, and deletion
//! with the finalizer (Delete, Retain, the cluster gone first). Every
//! reconcile runs with a fresh context, as a restarted operator would.

use super::{FINALIZER, TopicContext, endpoints, reconcile};
use crate::admin::broker::{FsyncPolicy, NewTopic, TopicSettings};
use crate::admin::broker_fake::{BrokerCall, FakeBroker};
use crate::crd::{RaftCluster, Topic};
use crate::metrics::Metrics;
use crate::testing::api_server::ApiServer;
use crate::testing::harness::writes;
use kube::runtime::controller::Action;
use kube::runtime::events::Reporter;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

const RC: &str = "/apis/flotilla.dev/v1alpha1/namespaces/prod/raftclusters/demo";
const TOPICS: &str = "/apis/flotilla.dev/v1alpha1/namespaces/prod/topics";

struct World {
    api: ApiServer,
    broker: FakeBroker,
}

fn topic_path(name: &str) -> String {
    format!("{TOPICS}/{name}")
}

impl World {
    /// A 3-member RaftCluster `demo`, Available, led by demo-1.
    fn new() -> Self {
        let w = World {
            api: ApiServer::default(),
            broker: FakeBroker::new(&["demo-0", "demo-1", "demo-2"], 3),
        };
        w.api.put(
            RC,
            json!({
                "apiVersion": "flotilla.dev/v1alpha1", "kind": "RaftCluster",
                "metadata": {"name": "demo", "namespace": "prod", "uid": "rc-uid", "generation": 1},
                "spec": {"replicas": 3, "image": "flotilla/flotilla-node:1"},
                "status": {
                    "phase": "Running", "replicas": 3, "readyReplicas": 3, "leader": "demo-1",
                    "members": [
                        {"name": "demo-0", "id": "1", "role": "Follower", "healthy": true},
                        {"name": "demo-1", "id": "2", "role": "Leader", "healthy": true},
                        {"name": "demo-2", "id": "3", "role": "Follower", "healthy": true}
                    ],
                    "conditions": [{"type": "Available", "status": "True", "reason": "QuorumHealthy", "message": "",
                                    "lastTransitionTime": "2026-01-01T00:00:00Z"}]
                }
            }),
        );
        w
    }

    /// Stores a Topic created at `created` (seconds into the day).
    fn add_topic(&self, name: &str, created: u32, spec: Value) {
        self.api.put(
            &topic_path(name),
            json!({
                "apiVersion": "flotilla.dev/v1alpha1", "kind": "Topic",
                "metadata": {"name": name, "namespace": "prod", "generation": 1, "resourceVersion": "1",
                             "creationTimestamp": format!("2026-01-01T00:{:02}:{:02}Z", created / 60, created % 60)},
                "spec": spec,
            }),
        );
    }

    fn topic(&self, name: &str) -> Option<Topic> {
        self.api
            .get(&topic_path(name))
            .map(|v| serde_json::from_value(v).expect("a Topic"))
    }

    /// The Ready condition's status, reason and message.
    fn ready(&self, name: &str) -> (String, String, String) {
        let t = self.topic(name).expect("the topic");
        let c = t
            .status
            .unwrap_or_default()
            .conditions
            .into_iter()
            .find(|c| c.type_ == "Ready")
            .expect("a Ready condition");
        (c.status, c.reason, c.message)
    }

    fn edit_spec(&self, name: &str, f: impl FnOnce(&mut Value)) {
        let path = topic_path(name);
        let mut t = self.api.get(&path).expect("the topic");
        f(&mut t["spec"]);
        let generation = t["metadata"]["generation"].as_i64().unwrap_or(1) + 1;
        t["metadata"]["generation"] = json!(generation);
        self.api.put(&path, t);
    }

    /// One reconcile of Topic `name` by a freshly started operator.
    async fn reconcile(&self, name: &str) -> Result<Action, crate::error::Error> {
        let ctx = TopicContext::new(
            self.api.client(),
            self.broker.clone(),
            Reporter {
                controller: "flotilla-operator".to_string(),
                instance: None,
            },
            Arc::new(Metrics::default()),
        );
        let topic = self.topic(name).expect("the topic");
        reconcile(Arc::new(topic), Arc::new(ctx)).await
    }

    /// A reconcile that must succeed: its API writes and broker calls.
    async fn step(&self, name: &str) -> (Vec<String>, Vec<BrokerCall>) {
        self.api.take_calls();
        self.broker.take_calls();
        self.reconcile(name).await.expect("reconcile");
        (writes(self.api.take_calls()), self.broker.take_calls())
    }

    /// Reconciles until the finalizer is on and a status is written.
    async fn settle(&self, name: &str) -> Vec<BrokerCall> {
        let mut calls = Vec::new();
        for _ in 0..3 {
            calls.extend(self.step(name).await.1);
        }
        calls
    }
}

fn orders(partitions: i32) -> Value {
    json!({"clusterRef": {"name": "demo"}, "topicName": "orders", "partitions": partitions})
}

fn created(partitions: u32, rf: Option<u32>, settings: TopicSettings) -> BrokerCall {
    BrokerCall::Create(NewTopic {
        name: "orders".to_string(),
        partitions,
        replication_factor: rf,
        settings,
    })
}

#[tokio::test]
async fn a_new_topic_gets_the_finalizer_then_is_created_and_ready() {
    let w = World::new();
    let mut spec = orders(6);
    spec["replicationFactor"] = json!(3);
    spec["config"] =
        json!({"retentionMs": 3_600_000, "fsync": {"mode": "EveryRecords", "records": 100}});
    w.add_topic("orders", 0, spec);

    let (api, broker) = w.step("orders").await;
    assert_eq!(api, vec!["patch topics/orders"], "first the finalizer");
    assert!(
        broker.is_empty(),
        "nothing in the broker before the finalizer"
    );
    assert_eq!(
        w.topic("orders").expect("topic").metadata.finalizers,
        Some(vec![FINALIZER.to_string()])
    );

    let (api, broker) = w.step("orders").await;
    let settings = TopicSettings {
        retention_ms: Some(3_600_000),
        fsync: Some(FsyncPolicy::EveryRecords(100)),
        ..TopicSettings::default()
    };
    assert_eq!(broker, vec![created(6, Some(3), settings)]);
    assert_eq!(api, vec!["event TopicCreated", "status topics/orders"]);
    let (status, reason, _) = w.ready("orders");
    assert_eq!((status.as_str(), reason.as_str()), ("True", "Created"));
    let t = w.topic("orders").expect("topic");
    let st = t.status.expect("status");
    assert_eq!(st.observed_generation, Some(1));
    assert_eq!(st.partitions.len(), 6);
    assert_eq!(st.partitions[1].leader.as_deref(), Some("demo-1"));
    assert_eq!(st.partitions[1].isr, vec!["demo-1", "demo-2", "demo-0"]);
    // The leader is asked first, then every member.
    let asked = w.broker.endpoints_seen();
    assert_eq!(
        asked.last().expect("asked"),
        &vec![
            "http://demo-1.demo-peers.prod.svc:2379".to_string(),
            "http://demo-0.demo-peers.prod.svc:2379".to_string(),
            "http://demo-2.demo-peers.prod.svc:2379".to_string(),
        ]
    );

    // Converged: nothing more to do, a status refresh only.
    let (api, broker) = w.step("orders").await;
    assert!(broker.is_empty());
    assert_eq!(api, vec!["status topics/orders"]);
}

#[tokio::test]
async fn the_topic_name_defaults_to_the_resource_name() {
    let w = World::new();
    w.add_topic(
        "payments",
        0,
        json!({"clusterRef": {"name": "demo"}, "partitions": 2}),
    );
    let calls = w.settle("payments").await;
    assert_eq!(
        calls,
        vec![BrokerCall::Create(NewTopic {
            name: "payments".to_string(),
            partitions: 2,
            replication_factor: None,
            settings: TopicSettings::default(),
        })]
    );
    assert_eq!(
        w.broker.topic("payments").expect("made").replication_factor,
        3
    );
}

#[tokio::test]
async fn partitions_grow_and_settings_change_but_a_shrink_is_refused() {
    let w = World::new();
    w.add_topic("orders", 0, orders(3));
    w.settle("orders").await;

    w.edit_spec("orders", |s| {
        s["partitions"] = json!(5);
        s["config"] = json!({"segmentBytes": 1_048_576});
    });
    let (api, broker) = w.step("orders").await;
    assert_eq!(
        broker,
        vec![
            BrokerCall::AddPartitions("orders".to_string(), 5),
            BrokerCall::Alter(
                "orders".to_string(),
                TopicSettings {
                    segment_bytes: Some(1_048_576),
                    ..TopicSettings::default()
                }
            ),
        ]
    );
    assert_eq!(
        api,
        vec![
            "event PartitionsAdded",
            "event TopicConfigChanged",
            "status topics/orders"
        ]
    );
    let st = w.topic("orders").expect("topic").status.expect("status");
    assert_eq!(st.partitions.len(), 5);
    assert_eq!(st.observed_generation, Some(2));

    w.edit_spec("orders", |s| s["partitions"] = json!(2));
    let (_, broker) = w.step("orders").await;
    assert!(broker.is_empty(), "a shrink changes nothing: {broker:?}");
    let (status, reason, message) = w.ready("orders");
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "NotSupported")
    );
    assert!(message.contains("only grow"), "{message}");
    assert_eq!(w.broker.topic("orders").expect("kept").partitions.len(), 5);

    // Back to a size the topic can have: Ready again.
    w.edit_spec("orders", |s| s["partitions"] = json!(5));
    let (_, broker) = w.step("orders").await;
    assert!(broker.is_empty());
    assert_eq!(w.ready("orders").1, "Created");
}

#[tokio::test]
async fn another_replication_factor_is_not_supported_and_changes_nothing() {
    let w = World::new();
    w.add_topic("orders", 0, orders(2));
    w.settle("orders").await;
    w.edit_spec("orders", |s| s["replicationFactor"] = json!(1));
    let (_, broker) = w.step("orders").await;
    assert!(broker.is_empty());
    let (status, reason, message) = w.ready("orders");
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "NotSupported")
    );
    assert!(message.contains("replication factor"), "{message}");
}

#[tokio::test]
async fn a_topic_made_outside_the_operator_is_adopted_not_recreated() {
    let w = World::new();
    w.broker.insert(&NewTopic {
        name: "orders".to_string(),
        partitions: 4,
        replication_factor: Some(3),
        settings: TopicSettings::default(),
    });
    w.add_topic("orders", 0, orders(4));
    let calls = w.settle("orders").await;
    assert!(calls.is_empty(), "{calls:?}");
    assert_eq!(w.ready("orders").1, "Created");
}

#[tokio::test]
async fn the_older_of_two_topics_naming_one_topic_wins() {
    let w = World::new();
    w.add_topic("orders-b", 20, orders(8));
    w.add_topic("orders-a", 10, orders(2));
    // The newer one is reconciled first: it waits, and says why.
    let calls = w.settle("orders-b").await;
    assert!(calls.is_empty(), "{calls:?}");
    let (status, reason, message) = w.ready("orders-b");
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "ResourceConflict")
    );
    assert!(message.contains("orders-a"), "{message}");
    let calls = w.settle("orders-a").await;
    assert_eq!(calls, vec![created(2, None, TopicSettings::default())]);
    assert_eq!(w.ready("orders-a").1, "Created");

    // Deleting the loser leaves the winner's topic alone.
    w.api.delete(&topic_path("orders-b"));
    let (_, broker) = w.step("orders-b").await;
    assert!(broker.is_empty(), "{broker:?}");
    assert!(w.topic("orders-b").is_none(), "the finalizer let go");
    assert!(w.broker.topic("orders").is_some());

    // A topic of the same name on another cluster is no conflict.
    let mut other = orders(1);
    other["clusterRef"] = json!({"name": "other"});
    w.add_topic("orders-c", 5, other);
    w.settle("orders-c").await;
    assert_eq!(w.ready("orders-c").1, "ClusterNotReady");
}

#[tokio::test]
async fn a_missing_or_unready_cluster_or_a_silent_broker_is_cluster_not_ready() {
    let w = World::new();
    let mut spec = orders(1);
    spec["clusterRef"] = json!({"name": "nope"});
    w.add_topic("lost", 0, spec);
    let calls = w.settle("lost").await;
    assert!(calls.is_empty());
    let (status, reason, message) = w.ready("lost");
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "ClusterNotReady")
    );
    assert!(message.contains("nope"), "{message}");

    let mut rc = w.api.get(RC).expect("rc");
    rc["status"]["conditions"][0]["status"] = json!("False");
    w.api.put(RC, rc.clone());
    w.add_topic("orders", 0, orders(1));
    let calls = w.settle("orders").await;
    assert!(calls.is_empty(), "{calls:?}");
    assert_eq!(w.ready("orders").1, "ClusterNotReady");
    assert!(
        w.broker.endpoints_seen().is_empty(),
        "the broker is not asked"
    );

    rc["status"]["conditions"][0]["status"] = json!("True");
    w.api.put(RC, rc);
    w.broker.set_unreachable(true);
    let action = w.reconcile("orders").await.expect("a wait, not an error");
    assert_eq!(action, Action::requeue(Duration::from_secs(5)));
    let (_, reason, message) = w.ready("orders");
    assert_eq!(reason, "ClusterNotReady");
    assert!(message.contains("did not answer"), "{message}");

    w.broker.set_unreachable(false);
    let (_, broker) = w.step("orders").await;
    assert_eq!(broker, vec![created(1, None, TopicSettings::default())]);
    assert_eq!(w.ready("orders").1, "Created");
}

#[tokio::test]
async fn a_refused_create_says_why_and_is_retried() {
    let w = World::new();
    let mut spec = orders(1);
    spec["replicationFactor"] = json!(5);
    w.add_topic("orders", 0, spec);
    w.step("orders").await;
    w.api.take_calls();
    let err = w.reconcile("orders").await.expect_err("refused");
    assert!(err.to_string().contains("replication factor 5"), "{err}");
    let calls = writes(w.api.take_calls());
    assert_eq!(calls, vec!["event TopicCreated", "status topics/orders"]);
    let (status, reason, message) = w.ready("orders");
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "BrokerRefused")
    );
    assert!(message.contains("larger than the 3 brokers"), "{message}");
    assert!(w.broker.topic("orders").is_none());
}

#[tokio::test]
async fn deleting_a_topic_deletes_it_in_the_broker_then_releases() {
    let w = World::new();
    w.add_topic("orders", 0, orders(2));
    w.settle("orders").await;
    w.api.delete(&topic_path("orders"));
    assert!(w.topic("orders").is_some(), "held by the finalizer");

    // The broker does not answer: the finalizer holds and the reconcile fails.
    w.broker.set_unreachable(true);
    assert!(w.reconcile("orders").await.is_err());
    assert!(w.topic("orders").is_some());

    w.broker.set_unreachable(false);
    let (api, broker) = w.step("orders").await;
    assert_eq!(broker, vec![BrokerCall::Delete("orders".to_string())]);
    assert_eq!(api, vec!["event TopicDeleted", "patch topics/orders"]);
    assert!(w.topic("orders").is_none(), "gone once released");
    assert!(w.broker.topic("orders").is_none());
}

#[tokio::test]
async fn retain_keeps_the_broker_topic() {
    let w = World::new();
    let mut spec = orders(2);
    spec["deletionPolicy"] = json!("Retain");
    w.add_topic("orders", 0, spec);
    w.settle("orders").await;
    w.api.delete(&topic_path("orders"));
    let (api, broker) = w.step("orders").await;
    assert!(broker.is_empty());
    assert_eq!(api, vec!["patch topics/orders"]);
    assert!(w.topic("orders").is_none());
    assert!(w.broker.topic("orders").is_some());
}

#[tokio::test]
async fn a_topic_whose_cluster_is_gone_is_released_without_asking_anyone() {
    let w = World::new();
    w.add_topic("orders", 0, orders(2));
    w.settle("orders").await;
    // The namespace is being deleted: the cluster goes first, its pods with it.
    w.api.remove(RC);
    w.broker.set_unreachable(true);
    w.api.delete(&topic_path("orders"));
    let (api, broker) = w.step("orders").await;
    assert!(broker.is_empty());
    assert_eq!(api, vec!["patch topics/orders"]);
    assert!(w.topic("orders").is_none(), "the namespace does not hang");
}

#[tokio::test]
async fn a_cluster_being_deleted_releases_its_topics_too() {
    let w = World::new();
    w.add_topic("orders", 0, orders(2));
    w.settle("orders").await;
    let mut rc = w.api.get(RC).expect("rc");
    rc["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
    w.api.put(RC, rc);
    w.broker.set_unreachable(true);
    w.api.delete(&topic_path("orders"));
    let (_, broker) = w.step("orders").await;
    assert!(broker.is_empty());
    assert!(w.topic("orders").is_none());
}

#[test]
fn endpoints_fall_back_to_the_spec_before_any_status() {
    let rc: RaftCluster = serde_json::from_value(json!({
        "apiVersion": "flotilla.dev/v1alpha1", "kind": "RaftCluster",
        "metadata": {"name": "demo", "namespace": "prod"},
        "spec": {"replicas": 2, "image": "x"},
    }))
    .expect("rc");
    assert_eq!(
        endpoints(&rc, "prod"),
        vec![
            "http://demo-0.demo-peers.prod.svc:2379",
            "http://demo-1.demo-peers.prod.svc:2379"
        ]
    );
}
