use super::*;
use crate::crd::{PullPolicy, RaftCluster};
use crate::resources::config::config_map;
use crate::resources::test_cluster::raft_cluster;
use k8s_openapi::api::core::v1::Toleration;

fn build(rc: &RaftCluster, replicas: i32) -> StatefulSet {
    let owned = Owned::of(rc).expect("owned");
    let cm = config_map(rc, &owned, 3).expect("cm");
    let inputs = BuildInputs {
        founders: 3,
        replicas,
        voters: 3,
    };
    statefulset(rc, &owned, inputs, &cm).expect("sts")
}

fn container(sts: &StatefulSet) -> Container {
    pod_spec(sts).containers[0].clone()
}

fn pod_spec(sts: &StatefulSet) -> PodSpec {
    sts.spec
        .as_ref()
        .and_then(|s| s.template.spec.clone())
        .expect("pod spec")
}

fn env_value(c: &Container, name: &str) -> Option<String> {
    c.env
        .iter()
        .flatten()
        .find(|e| e.name == name)
        .and_then(|e| e.value.clone())
}

#[test]
fn shape_parallel_ondelete_with_a_claim_template() {
    let sts = build(&raft_cluster("demo", 3), 4);
    assert_eq!(sts.metadata.name.as_deref(), Some("demo"));
    assert_eq!(
        sts.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(FOUNDERS_ANNOTATION))
            .map(String::as_str),
        Some("3")
    );
    let spec = sts.spec.clone().expect("spec");
    assert_eq!(
        spec.replicas,
        Some(4),
        "replicas come from the plan, not the spec"
    );
    assert_eq!(spec.service_name.as_deref(), Some("demo-peers"));
    assert_eq!(spec.pod_management_policy.as_deref(), Some("Parallel"));
    assert_eq!(
        spec.update_strategy.and_then(|u| u.type_).as_deref(),
        Some("OnDelete")
    );
    let labels = spec
        .template
        .metadata
        .and_then(|m| m.labels)
        .expect("labels");
    let selector = spec.selector.match_labels.expect("selector");
    assert!(
        selector.iter().all(|(k, v)| labels.get(k) == Some(v)),
        "the template matches the selector"
    );
    let claims = spec.volume_claim_templates.expect("claims");
    assert_eq!(claims.len(), 1);
    assert_eq!(claims[0].metadata.name.as_deref(), Some("data"));
    let claim = claims[0].spec.clone().expect("claim spec");
    assert_eq!(claim.access_modes, Some(vec!["ReadWriteOnce".to_string()]));
    let size = claim
        .resources
        .and_then(|r| r.requests)
        .and_then(|r| r.get("storage").cloned());
    assert_eq!(size.map(|q| q.0).as_deref(), Some("10Gi"));
    assert_eq!(claim.storage_class_name, None);
}

#[test]
fn identity_comes_from_the_pod_name_and_the_headless_service() {
    let c = container(&build(&raft_cluster("demo", 3), 3));
    let env = c.env.clone().expect("env");
    assert_eq!(
        env[0].name, "POD_NAME",
        "POD_NAME must come first for $(POD_NAME) to expand"
    );
    assert_eq!(
        env[0]
            .value_from
            .as_ref()
            .and_then(|v| v.field_ref.as_ref())
            .map(|f| f.field_path.as_str()),
        Some("metadata.name")
    );
    assert_eq!(
        env_value(&c, "FLOTILLA_NAME").as_deref(),
        Some("$(POD_NAME)")
    );
    assert_eq!(
        env_value(&c, "FLOTILLA_INITIAL_ADVERTISE_PEER_URLS").as_deref(),
        Some("http://$(POD_NAME).demo-peers.prod.svc:2380")
    );
    assert_eq!(
        env_value(&c, "FLOTILLA_ADVERTISE_CLIENT_URLS").as_deref(),
        Some("http://$(POD_NAME).demo-peers.prod.svc:2379")
    );
    assert_eq!(c.command, Some(vec!["flotilla-node".to_string()]));
    assert_eq!(
        c.args,
        Some(vec![
            "--config-file".to_string(),
            "/etc/flotilla/flotilla.yaml".to_string()
        ])
    );
    let mounts: Vec<_> = c
        .volume_mounts
        .iter()
        .flatten()
        .map(|m| (m.name.as_str(), m.mount_path.as_str(), m.read_only))
        .collect();
    assert_eq!(
        mounts,
        vec![
            ("data", "/var/lib/flotilla", None),
            ("config", "/etc/flotilla", Some(true)),
            ("tmp", "/tmp", None)
        ]
    );
}

#[test]
fn probes_and_the_prestop_hand_off_use_the_metrics_port() {
    let c = container(&build(&raft_cluster("demo", 3), 3));
    let path = |p: &Option<Probe>| {
        p.as_ref()
            .and_then(|p| p.http_get.as_ref())
            .and_then(|h| h.path.clone())
    };
    assert_eq!(path(&c.liveness_probe).as_deref(), Some("/livez"));
    assert_eq!(path(&c.readiness_probe).as_deref(), Some("/readyz"));
    let pre_stop = c
        .lifecycle
        .and_then(|l| l.pre_stop)
        .and_then(|h| h.http_get)
        .expect("preStop");
    assert_eq!(pre_stop.path.as_deref(), Some("/prestop"));
    assert_eq!(pre_stop.port, IntOrString::String("metrics".to_string()));
    let ports: Vec<_> = c
        .ports
        .iter()
        .flatten()
        .map(|p| (p.name.clone().unwrap_or_default(), p.container_port))
        .collect();
    assert_eq!(
        ports,
        vec![
            ("client".to_string(), 2379),
            ("peer".to_string(), 2380),
            ("metrics".to_string(), 2381)
        ]
    );
}

#[test]
fn the_pod_runs_unprivileged_on_a_read_only_root() {
    let sts = build(&raft_cluster("demo", 3), 3);
    let sc = container(&sts)
        .security_context
        .expect("container security context");
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.run_as_non_root, Some(true));
    assert_eq!(sc.privileged, Some(false));
    assert_eq!(
        sc.capabilities.and_then(|c| c.drop),
        Some(vec!["ALL".to_string()])
    );
    let pod = pod_spec(&sts);
    let psc = pod.security_context.expect("pod security context");
    assert_eq!(psc.run_as_non_root, Some(true));
    assert_eq!(psc.run_as_user, Some(RUN_AS));
    assert_eq!(psc.fs_group, Some(RUN_AS));
    assert_eq!(pod.automount_service_account_token, Some(false));
}

#[test]
fn overrides_reach_the_pod_and_the_operators_labels_win() {
    let mut rc = raft_cluster("demo", 3);
    rc.spec.image_pull_policy = Some(PullPolicy::IfNotPresent);
    rc.spec.storage.storage_class_name = Some("fast".to_string());
    rc.spec.pod.priority_class_name = Some("critical".to_string());
    rc.spec
        .pod
        .node_selector
        .insert("disk".to_string(), "ssd".to_string());
    rc.spec.pod.tolerations.push(Toleration {
        key: Some("dedicated".to_string()),
        operator: Some("Exists".to_string()),
        ..Toleration::default()
    });
    rc.spec
        .pod
        .labels
        .insert("team".to_string(), "storage".to_string());
    rc.spec.pod.labels.insert(
        "app.kubernetes.io/instance".to_string(),
        "hijack".to_string(),
    );
    rc.spec
        .pod
        .annotations
        .insert("prometheus.io/scrape".to_string(), "true".to_string());
    rc.spec.pod.affinity = Some(Affinity::default());
    let sts = build(&rc, 3);
    let pod = pod_spec(&sts);
    assert_eq!(pod.priority_class_name.as_deref(), Some("critical"));
    assert_eq!(
        pod.node_selector
            .and_then(|n| n.get("disk").cloned())
            .as_deref(),
        Some("ssd")
    );
    assert_eq!(pod.tolerations.map(|t| t.len()), Some(1));
    assert_eq!(
        pod.affinity,
        Some(Affinity::default()),
        "the user's affinity replaces the default"
    );
    assert_eq!(
        container(&sts).image_pull_policy.as_deref(),
        Some("IfNotPresent")
    );
    let meta = sts
        .spec
        .as_ref()
        .and_then(|s| s.template.metadata.clone())
        .expect("meta");
    let labels = meta.labels.expect("labels");
    assert_eq!(labels.get("team").map(String::as_str), Some("storage"));
    assert_eq!(
        labels.get("app.kubernetes.io/instance").map(String::as_str),
        Some("demo")
    );
    let annotations = meta.annotations.expect("annotations");
    assert_eq!(
        annotations.get("prometheus.io/scrape").map(String::as_str),
        Some("true")
    );
    assert!(annotations.contains_key(CONFIG_HASH_ANNOTATION));
    let claim = sts
        .spec
        .and_then(|s| s.volume_claim_templates)
        .expect("claims")[0]
        .clone();
    assert_eq!(
        claim.spec.and_then(|s| s.storage_class_name).as_deref(),
        Some("fast")
    );
}

#[test]
fn without_an_affinity_members_prefer_separate_nodes() {
    let pod = pod_spec(&build(&raft_cluster("demo", 3), 3));
    let terms = pod
        .affinity
        .and_then(|a| a.pod_anti_affinity)
        .and_then(|p| p.preferred_during_scheduling_ignored_during_execution)
        .expect("anti-affinity");
    assert_eq!(
        terms[0].pod_affinity_term.topology_key,
        "kubernetes.io/hostname"
    );
    assert_eq!(pod.tolerations, None);
    assert_eq!(pod.node_selector, None);
}

#[test]
fn a_config_change_changes_the_pod_template() {
    let rc = raft_cluster("demo", 3);
    let mut tuned = rc.clone();
    tuned.spec.raft.snapshot_count = Some(100);
    let template = |rc: &RaftCluster| build(rc, 3).spec.map(|s| s.template);
    assert_ne!(template(&rc), template(&tuned));
    let mut scaled = rc.clone();
    scaled.spec.replicas = 5;
    assert_eq!(
        template(&rc),
        template(&scaled),
        "scaling alone must not roll the pods"
    );
}
