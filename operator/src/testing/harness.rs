//! A RaftCluster `demo` in namespace `prod` with everything around the
//! operator faked: the API server, the StatefulSet controller and kubelet
//! ([`Harness::settle`]) and the nodes. Every [`Harness::reconcile`] runs
//! with a brand-new context and client, as a restarted operator would.

use super::api_server::{ApiServer, Call};
use crate::admin::fake::FakeCluster;
use crate::crd::{RaftCluster, RaftClusterStatus};
use crate::error::Error;
use crate::metrics::Metrics;
use crate::names::ClusterNames;
use crate::reconcile::{Context, raft_cluster::reconcile};
use kube::runtime::controller::Action;
use kube::runtime::events::Reporter;
use serde_json::{Value, json};
use std::sync::Arc;

/// The cluster's namespace.
pub const NS: &str = "prod";
/// The cluster's name.
pub const NAME: &str = "demo";
const RC: &str = "/apis/flotilla.dev/v1alpha1/namespaces/prod/raftclusters/demo";
const STS: &str = "/apis/apps/v1/namespaces/prod/statefulsets/demo";
const PODS: &str = "/api/v1/namespaces/prod/pods";
const PVCS: &str = "/api/v1/namespaces/prod/persistentvolumeclaims";

/// The fake world.
#[derive(Clone, Debug)]
pub struct Harness {
    /// The API server.
    pub api: ApiServer,
    /// The nodes.
    pub nodes: FakeCluster,
    /// The cluster's names.
    pub names: ClusterNames,
}

impl Harness {
    /// A RaftCluster of `replicas`, just created: no objects, no pods.
    pub fn new(replicas: i32) -> Self {
        let names = ClusterNames::new(NAME, NS);
        let api = ApiServer::default();
        api.put(
            RC,
            json!({
                "apiVersion": "flotilla.dev/v1alpha1", "kind": "RaftCluster",
                "metadata": {"name": NAME, "namespace": NS, "uid": "rc-uid-1", "generation": 1},
                "spec": {"replicas": replicas, "image": "flotilla/flotilla-node:1"},
            }),
        );
        let founders = u32::try_from(replicas).expect("replicas");
        let nodes = FakeCluster::founded(&names, founders);
        nodes.set_pods(0);
        Harness { api, nodes, names }
    }

    /// The RaftCluster as stored.
    pub fn raft_cluster(&self) -> RaftCluster {
        serde_json::from_value(self.api.get(RC).expect("the RaftCluster")).expect("a RaftCluster")
    }

    /// Its status.
    pub fn status(&self) -> RaftClusterStatus {
        self.raft_cluster().status.unwrap_or_default()
    }

    /// The `reason` of status condition `type_`, with its status.
    pub fn condition(&self, type_: &str) -> Option<(String, String)> {
        self.status()
            .conditions
            .iter()
            .find(|c| c.type_ == type_)
            .map(|c| (c.status.clone(), c.reason.clone()))
    }

    /// Edits the spec (as `kubectl edit` would), moving the generation.
    pub fn edit_spec(&self, f: impl FnOnce(&mut Value)) {
        let mut rc = self.api.get(RC).expect("the RaftCluster");
        f(&mut rc["spec"]);
        let generation = rc["metadata"]["generation"].as_i64().unwrap_or(1) + 1;
        rc["metadata"]["generation"] = json!(generation);
        self.api.put(RC, rc);
    }

    /// One reconcile by a freshly started operator.
    pub async fn reconcile(&self) -> Result<Action, Error> {
        let reporter = Reporter {
            controller: "flotilla-operator".to_string(),
            instance: None,
        };
        let ctx = Context::new(
            self.api.client(),
            self.nodes.clone(),
            reporter,
            Arc::new(Metrics::default()),
        );
        reconcile(Arc::new(self.raft_cluster()), Arc::new(ctx)).await
    }

    /// A reconcile that must succeed; returns the requests it made that
    /// change something, leaving out reads and the applies of the
    /// ConfigMap, Services and PDB that every reconcile repeats. (The
    /// nodes keep recording their calls.)
    pub async fn step(&self) -> Vec<Call> {
        self.api.take_calls();
        self.reconcile().await.expect("reconcile");
        writes(self.api.take_calls())
    }

    /// The StatefulSet's `spec.replicas`.
    pub fn statefulset_replicas(&self) -> Option<u32> {
        let sts = self.api.get(STS)?;
        sts["spec"]["replicas"]
            .as_u64()
            .and_then(|r| u32::try_from(r).ok())
    }

    /// Names of the pods that exist.
    pub fn pods(&self) -> Vec<String> {
        self.api
            .list(PODS)
            .into_iter()
            .map(|(k, _)| short(&k))
            .collect()
    }

    /// Names of the data volumes that exist.
    pub fn volumes(&self) -> Vec<String> {
        self.api
            .list(PVCS)
            .into_iter()
            .map(|(k, _)| short(&k))
            .collect()
    }

    /// The StatefulSet controller and the kubelet catch up with the
    /// StatefulSet: pods `0..replicas` exist with volumes (a deleted pod
    /// comes back with the current template's revision), pods beyond are
    /// gone, members whose pods run are up, and Ready follows the member.
    pub fn settle(&self) {
        let Some(mut sts) = self.api.get(STS) else {
            return;
        };
        let replicas = self.statefulset_replicas().unwrap_or(0);
        let revision = format!("rev-{:x}", fnv(&sts["spec"]["template"].to_string()));
        let labels = sts["spec"]["template"]["metadata"]["labels"].clone();
        for (path, _) in self.api.list(PODS) {
            if self
                .names
                .ordinal_of_pod(&short(&path))
                .is_none_or(|o| o >= replicas)
            {
                self.api.remove(&path);
            }
        }
        self.nodes.set_pods(replicas);
        for o in 0..replicas {
            let pod_path = format!("{PODS}/{}", self.names.pod(o));
            let mut pod = self.api.get(&pod_path).unwrap_or_else(|| {
                let mut labels = labels.clone();
                labels["controller-revision-hash"] = json!(revision);
                json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": self.names.pod(o), "namespace": NS, "labels": labels}})
            });
            let ready = if self.nodes.ready(o) { "True" } else { "False" };
            pod["status"] = json!({"conditions": [{"type": "Ready", "status": ready}]});
            self.api.put(&pod_path, pod);
            let pvc_path = format!("{PVCS}/{}", self.names.pvc(o));
            if self.api.get(&pvc_path).is_none() {
                self.api.put(
                    &pvc_path,
                    json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                           "metadata": {"name": self.names.pvc(o), "namespace": NS, "labels": self.names.selector_labels()}}),
                );
            }
        }
        let ready = (0..replicas).filter(|&o| self.nodes.ready(o)).count();
        sts["status"] = json!({
            "replicas": replicas, "readyReplicas": ready,
            "observedGeneration": sts["metadata"]["generation"],
            "updateRevision": revision, "currentRevision": revision,
        });
        self.api.put(STS, sts);
    }
}

fn short(path: &str) -> String {
    path.rsplit('/').next().unwrap_or_default().to_string()
}

fn fnv(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The calls that change something, less the applies every reconcile repeats.
pub fn writes(calls: Vec<Call>) -> Vec<Call> {
    calls
        .into_iter()
        .filter(|c| {
            !(c.starts_with("get ")
                || c.starts_with("list ")
                || c.starts_with("apply configmaps/")
                || c.starts_with("apply services/")
                || c.starts_with("apply poddisruptionbudgets/"))
        })
        .collect()
}
