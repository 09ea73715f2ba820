use super::*;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;
use serde_json::json;

fn columns(crd: &CustomResourceDefinition) -> Vec<String> {
    crd.spec.versions[0]
        .additional_printer_columns
        .iter()
        .flatten()
        .map(|c| c.name.clone())
        .collect()
}

#[test]
fn names_short_names_and_the_shared_category() {
    let rc = RaftCluster::crd();
    assert_eq!(
        rc.metadata.name.as_deref(),
        Some("raftclusters.flotilla.dev")
    );
    assert_eq!(rc.spec.scope, "Namespaced");
    assert_eq!(
        rc.spec.names.short_names,
        Some(vec!["raft".to_string()]),
        "not rc: kubectl resolves that to ReplicationController"
    );
    assert_eq!(rc.spec.names.categories, Some(vec!["flotilla".to_string()]));
    assert_eq!(rc.spec.versions[0].name, "v1alpha1");
    assert_eq!(
        columns(&rc),
        ["Replicas", "Ready", "Leader", "Phase", "Age"]
    );
    let sub = rc.spec.versions[0]
        .subresources
        .clone()
        .expect("subresources");
    assert!(sub.status.is_some());
    assert_eq!(
        sub.scale.map(|s| s.spec_replicas_path),
        Some(".spec.replicas".to_string())
    );
    let topic = Topic::crd();
    assert_eq!(topic.metadata.name.as_deref(), Some("topics.flotilla.dev"));
    assert_eq!(topic.spec.names.short_names, Some(vec!["ft".to_string()]));
    assert_eq!(
        topic.spec.names.categories,
        Some(vec!["flotilla".to_string()])
    );
    assert!(
        topic.spec.versions[0]
            .subresources
            .as_ref()
            .is_some_and(|s| s.status.is_some())
    );
}

#[test]
fn the_schema_validates_minimums_and_enums() {
    let rc = serde_json::to_value(RaftCluster::crd()).expect("json");
    let spec = &rc["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
    assert_eq!(spec["properties"]["replicas"]["minimum"], 1.0);
    assert_eq!(spec["properties"]["replicas"]["default"], 3);
    assert_eq!(
        spec["properties"]["fsync"]["enum"],
        json!(["Always", "Never"])
    );
    assert_eq!(
        spec["properties"]["readMode"]["enum"],
        json!(["Safe", "Lease"])
    );
    assert_eq!(
        spec["properties"]["service"]["properties"]["type"]["enum"],
        json!(["ClusterIP", "NodePort", "LoadBalancer"])
    );
    assert_eq!(
        spec["properties"]["raft"]["properties"]["tickMs"]["minimum"],
        1.0
    );
    assert_eq!(spec["required"], json!(["image"]));
    let topic = serde_json::to_value(Topic::crd()).expect("json");
    let tspec = &topic["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
    assert_eq!(
        tspec["properties"]["deletionPolicy"]["enum"],
        json!(["Delete", "Retain"])
    );
    assert_eq!(tspec["properties"]["partitions"]["minimum"], 1.0);
    assert_eq!(tspec["required"], json!(["clusterRef", "partitions"]));
}

/// Every field of `written` survives a round trip through the typed
/// resource: a misspelt field would be dropped (and pruned by the API
/// server), so it fails here.
fn assert_known_fields(written: &serde_json::Value, typed: &serde_json::Value, path: &str) {
    match (written, typed) {
        (serde_json::Value::Object(w), serde_json::Value::Object(t)) => {
            for (k, v) in w {
                let t = t
                    .get(k)
                    .unwrap_or_else(|| panic!("unknown field {path}.{k}"));
                assert_known_fields(v, t, &format!("{path}.{k}"));
            }
        }
        (serde_json::Value::Array(w), serde_json::Value::Array(t)) => {
            for (i, (w, t)) in w.iter().zip(t).enumerate() {
                assert_known_fields(w, t, &format!("{path}[{i}]"));
            }
        }
        _ => {}
    }
}

fn example<K: serde::de::DeserializeOwned + serde::Serialize>(file: &str) -> K {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples")
        .join(file);
    let text = std::fs::read_to_string(&path).expect("the example");
    let written: serde_json::Value = serde_yaml::from_str(&text).expect("YAML");
    let typed: K = serde_yaml::from_str(&text).expect("a resource of its kind");
    assert_known_fields(&written, &serde_json::to_value(&typed).expect("json"), file);
    typed
}

#[test]
fn the_examples_are_valid_resources() {
    let rc: RaftCluster = example("raftcluster.yaml");
    assert_eq!(rc.spec.replicas, 3);
    let topic: Topic = example("topic.yaml");
    assert_eq!(
        topic.spec.cluster_ref.name,
        rc.metadata.name.clone().expect("name")
    );
    assert_eq!(topic.topic_name(), "orders");
}

/// The checked-in files are what crdgen writes now (CI also regenerates
/// them and fails on a diff).
#[test]
fn the_checked_in_crds_are_current() {
    let top = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for dir in ["crds", "helm/flotilla/crds"] {
        for (name, yaml) in crd_files().expect("crds") {
            let path = top.join(dir).join(name);
            let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
            assert!(
                on_disk == yaml,
                "{} is stale: run `cargo run -p flotilla-operator --bin crdgen -- crds helm/flotilla/crds`",
                path.display()
            );
        }
    }
}
