//! The StatefulSet: one pod per member, its identity from the pod name and
//! the headless Service's DNS. Pods are replaced only by the operator
//! (`OnDelete`), so a rolling update can go followers first, leader last.

use super::config::data_hash;
use super::{BuildInputs, Owned};
use crate::crd::RaftCluster;
use crate::error::Error;
use crate::names::{
    CLIENT_PORT, CONFIG_FILE, CONFIG_HASH_ANNOTATION, CONFIG_MOUNT, DATA_MOUNT, DATA_VOLUME,
    FOUNDERS_ANNOTATION, METRICS_PORT, PEER_PORT,
};
use k8s_openapi::api::apps::v1::{
    StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec,
    StatefulSetUpdateStrategy,
};
use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort,
    EmptyDirVolumeSource, EnvVar, EnvVarSource, HTTPGetAction, Lifecycle, LifecycleHandler,
    ObjectFieldSelector, PersistentVolumeClaim, PersistentVolumeClaimSpec, PodAffinityTerm,
    PodAntiAffinity, PodSecurityContext, PodSpec, PodTemplateSpec, Probe, SeccompProfile,
    SecurityContext, Volume, VolumeMount, VolumeResourceRequirements, WeightedPodAffinityTerm,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::collections::BTreeMap;

/// The user and group the node runs as (not root; the distroless `nonroot` id).
pub const RUN_AS: i64 = 65532;
/// Seconds a stopping pod has: the preStop hand-off of leadership is bounded well below it.
pub const TERMINATION_GRACE_SECONDS: i64 = 60;

/// The StatefulSet for `rc` with `inputs.replicas` pods.
pub fn statefulset(
    rc: &RaftCluster,
    owned: &Owned,
    inputs: BuildInputs,
    config_map: &ConfigMap,
) -> Result<StatefulSet, Error> {
    let names = &owned.names;
    let mut meta = owned.meta(names.name().to_string());
    meta.annotations = Some(BTreeMap::from([(
        FOUNDERS_ANNOTATION.to_string(),
        inputs.founders.to_string(),
    )]));
    Ok(StatefulSet {
        metadata: meta,
        spec: Some(StatefulSetSpec {
            replicas: Some(inputs.replicas),
            service_name: Some(names.peers_service()),
            pod_management_policy: Some("Parallel".to_string()),
            selector: LabelSelector {
                match_labels: Some(names.selector_labels()),
                match_expressions: None,
            },
            update_strategy: Some(StatefulSetUpdateStrategy {
                type_: Some("OnDelete".to_string()),
                rolling_update: None,
            }),
            // Scaled-away volumes are deleted by the operator once the
            // member is removed; deleting the cluster deletes its data
            // (a re-created cluster gets a new token and could not use it).
            persistent_volume_claim_retention_policy: Some(
                StatefulSetPersistentVolumeClaimRetentionPolicy {
                    when_deleted: Some("Delete".to_string()),
                    when_scaled: Some("Retain".to_string()),
                },
            ),
            template: pod_template(rc, owned, config_map),
            volume_claim_templates: Some(vec![volume_claim(rc, owned)]),
            ..StatefulSetSpec::default()
        }),
        status: None,
    })
}

fn pod_template(rc: &RaftCluster, owned: &Owned, config_map: &ConfigMap) -> PodTemplateSpec {
    let overrides = &rc.spec.pod;
    let mut labels = overrides.labels.clone();
    labels.extend(owned.names.selector_labels());
    let mut annotations = overrides.annotations.clone();
    annotations.insert(CONFIG_HASH_ANNOTATION.to_string(), data_hash(config_map));
    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(labels),
            annotations: Some(annotations),
            ..ObjectMeta::default()
        }),
        spec: Some(PodSpec {
            containers: vec![node_container(rc, owned)],
            automount_service_account_token: Some(false),
            enable_service_links: Some(false),
            termination_grace_period_seconds: Some(TERMINATION_GRACE_SECONDS),
            security_context: Some(PodSecurityContext {
                run_as_non_root: Some(true),
                run_as_user: Some(RUN_AS),
                run_as_group: Some(RUN_AS),
                fs_group: Some(RUN_AS),
                seccomp_profile: Some(SeccompProfile {
                    type_: "RuntimeDefault".to_string(),
                    localhost_profile: None,
                }),
                ..PodSecurityContext::default()
            }),
            affinity: Some(
                overrides
                    .affinity
                    .clone()
                    .unwrap_or_else(|| spread_over_nodes(owned)),
            ),
            tolerations: non_empty(&overrides.tolerations),
            node_selector: (!overrides.node_selector.is_empty())
                .then(|| overrides.node_selector.clone()),
            topology_spread_constraints: non_empty(&overrides.topology_spread_constraints),
            priority_class_name: overrides.priority_class_name.clone(),
            volumes: Some(vec![
                Volume {
                    name: "config".to_string(),
                    config_map: Some(ConfigMapVolumeSource {
                        name: owned.names.config_map(),
                        ..ConfigMapVolumeSource::default()
                    }),
                    ..Volume::default()
                },
                Volume {
                    name: "tmp".to_string(),
                    empty_dir: Some(EmptyDirVolumeSource::default()),
                    ..Volume::default()
                },
            ]),
            ..PodSpec::default()
        }),
    }
}

/// Without the user's affinity: prefer one member per node.
fn spread_over_nodes(owned: &Owned) -> Affinity {
    Affinity {
        pod_anti_affinity: Some(PodAntiAffinity {
            preferred_during_scheduling_ignored_during_execution: Some(vec![
                WeightedPodAffinityTerm {
                    weight: 100,
                    pod_affinity_term: PodAffinityTerm {
                        label_selector: Some(LabelSelector {
                            match_labels: Some(owned.names.selector_labels()),
                            match_expressions: None,
                        }),
                        topology_key: "kubernetes.io/hostname".to_string(),
                        ..PodAffinityTerm::default()
                    },
                },
            ]),
            required_during_scheduling_ignored_during_execution: None,
        }),
        ..Affinity::default()
    }
}

fn non_empty<T: Clone>(v: &[T]) -> Option<Vec<T>> {
    (!v.is_empty()).then(|| v.to_vec())
}

fn env(name: &str, value: String) -> EnvVar {
    EnvVar {
        name: name.to_string(),
        value: Some(value),
        value_from: None,
    }
}

fn field_env(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.to_string(),
        value: None,
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.to_string(),
                api_version: None,
            }),
            ..EnvVarSource::default()
        }),
    }
}

fn http_get(path: &str) -> HTTPGetAction {
    HTTPGetAction {
        path: Some(path.to_string()),
        port: IntOrString::String("metrics".to_string()),
        ..HTTPGetAction::default()
    }
}

fn container_port(name: &str, port: u16) -> ContainerPort {
    ContainerPort {
        name: Some(name.to_string()),
        container_port: i32::from(port),
        protocol: Some("TCP".to_string()),
        ..ContainerPort::default()
    }
}

fn mount(name: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: name.to_string(),
        mount_path: path.to_string(),
        read_only: read_only.then_some(true),
        ..VolumeMount::default()
    }
}

fn node_container(rc: &RaftCluster, owned: &Owned) -> Container {
    let names = &owned.names;
    Container {
        name: "node".to_string(),
        image: Some(rc.spec.image.clone()),
        image_pull_policy: rc.spec.image_pull_policy.map(|p| p.as_str().to_string()),
        command: Some(vec!["flotilla-node".to_string()]),
        args: Some(vec![
            "--config-file".to_string(),
            format!("{CONFIG_MOUNT}/{CONFIG_FILE}"),
        ]),
        // POD_NAME first: the others expand it. The node reads
        // FLOTILLA_<FLAG> over the file.
        env: Some(vec![
            field_env("POD_NAME", "metadata.name"),
            field_env("POD_NAMESPACE", "metadata.namespace"),
            env("FLOTILLA_NAME", "$(POD_NAME)".to_string()),
            env(
                "FLOTILLA_INITIAL_ADVERTISE_PEER_URLS",
                names.peer_url_template(),
            ),
            env(
                "FLOTILLA_ADVERTISE_CLIENT_URLS",
                names.client_url_template(),
            ),
        ]),
        ports: Some(vec![
            container_port("client", CLIENT_PORT),
            container_port("peer", PEER_PORT),
            container_port("metrics", METRICS_PORT),
        ]),
        // Liveness is the process's own health; readiness is "knows a
        // leader and has caught up", which gates the client Service.
        liveness_probe: Some(Probe {
            http_get: Some(http_get("/livez")),
            period_seconds: Some(10),
            timeout_seconds: Some(5),
            failure_threshold: Some(6),
            ..Probe::default()
        }),
        readiness_probe: Some(Probe {
            http_get: Some(http_get("/readyz")),
            period_seconds: Some(5),
            timeout_seconds: Some(3),
            failure_threshold: Some(3),
            ..Probe::default()
        }),
        lifecycle: Some(Lifecycle {
            pre_stop: Some(LifecycleHandler {
                http_get: Some(http_get("/prestop")),
                ..LifecycleHandler::default()
            }),
            ..Lifecycle::default()
        }),
        resources: rc.spec.resources.clone(),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            privileged: Some(false),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".to_string()]),
                add: None,
            }),
            ..SecurityContext::default()
        }),
        volume_mounts: Some(vec![
            mount(DATA_VOLUME, DATA_MOUNT, false),
            mount("config", CONFIG_MOUNT, true),
            mount("tmp", "/tmp", false),
        ]),
        ..Container::default()
    }
}

fn volume_claim(rc: &RaftCluster, owned: &Owned) -> PersistentVolumeClaim {
    PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(DATA_VOLUME.to_string()),
            labels: Some(owned.names.selector_labels()),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".to_string()]),
            storage_class_name: rc.spec.storage.storage_class_name.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_string(),
                    rc.spec.storage.size.clone(),
                )])),
                limits: None,
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        status: None,
    }
}

#[cfg(test)]
#[path = "statefulset_tests.rs"]
mod tests;
