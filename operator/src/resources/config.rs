//! The ConfigMap `<name>-config`: one YAML file of the settings every member
//! shares (the node's `--config-file`, keys named as its flags). What
//! differs per pod (name, advertised URLs) comes from the pod's own
//! environment, which the node reads over the file.

use super::Owned;
use crate::crd::RaftCluster;
use crate::error::Error;
use crate::names::{CLIENT_PORT, CONFIG_FILE, DATA_DIR, METRICS_PORT, PEER_PORT};
use k8s_openapi::api::core::v1::ConfigMap;
use serde_yaml::{Mapping, Value};
use std::collections::BTreeMap;

/// The shared config file's text for `rc` with `founders` founding members.
pub fn config_file(rc: &RaftCluster, owned: &Owned, founders: u32) -> Result<String, Error> {
    let names = &owned.names;
    let spec = &rc.spec;
    let mut map = Mapping::new();
    let mut set = |key: &str, value: Value| {
        map.insert(Value::from(key), value);
    };
    set("data-dir", DATA_DIR.into());
    set("initial-cluster", names.initial_cluster(founders).into());
    set("initial-cluster-state", "new".into());
    set("initial-cluster-token", names.token(&owned.uid).into());
    set("discovery-peers", names.discovery_peers().into());
    set(
        "listen-client-urls",
        format!("http://0.0.0.0:{CLIENT_PORT}").into(),
    );
    set(
        "listen-peer-urls",
        format!("http://0.0.0.0:{PEER_PORT}").into(),
    );
    set(
        "listen-metrics-urls",
        format!("http://0.0.0.0:{METRICS_PORT}").into(),
    );
    set("fsync", spec.fsync.as_node_value().into());
    set("read-mode", spec.read_mode.as_node_value().into());
    let raft = &spec.raft;
    let optional = [
        ("tick-ms", raft.tick_ms.map(u64::from)),
        ("election-ticks", raft.election_ticks.map(u64::from)),
        ("heartbeat-ticks", raft.heartbeat_ticks.map(u64::from)),
        ("snapshot-count", raft.snapshot_count),
        ("snapshot-min-log-percent", raft.snapshot_min_log_percent),
        ("snapshot-max-log-bytes", raft.snapshot_max_log_bytes),
        (
            "default-replication-factor",
            spec.broker.default_replication_factor.map(u64::from),
        ),
        (
            "min-insync-replicas",
            spec.broker.min_insync_replicas.map(u64::from),
        ),
    ];
    for (key, value) in optional {
        if let Some(v) = value {
            set(key, v.into());
        }
    }
    Ok(serde_yaml::to_string(&map)?)
}

/// The ConfigMap holding [`config_file`].
pub fn config_map(rc: &RaftCluster, owned: &Owned, founders: u32) -> Result<ConfigMap, Error> {
    Ok(ConfigMap {
        metadata: owned.meta(owned.names.config_map()),
        data: Some(BTreeMap::from([(
            CONFIG_FILE.to_string(),
            config_file(rc, owned, founders)?,
        )])),
        ..ConfigMap::default()
    })
}

/// A stable hash of the config map's data (FNV-1a, hex), put on the pod
/// template so a changed file rolls the pods.
pub fn data_hash(cm: &ConfigMap) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (k, v) in cm.data.iter().flatten() {
        for b in k.bytes().chain([0]).chain(v.bytes()).chain([0]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("{h:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::test_cluster::raft_cluster;

    fn parsed(text: &str) -> BTreeMap<String, Value> {
        serde_yaml::from_str(text).expect("yaml")
    }

    #[test]
    fn the_file_names_the_founders_token_and_discovery() {
        let rc = raft_cluster("demo", 3);
        let owned = Owned::of(&rc).expect("owned");
        let file = parsed(&config_file(&rc, &owned, 3).expect("file"));
        let s = |k: &str| file.get(k).and_then(Value::as_str).map(str::to_string);
        assert_eq!(s("initial-cluster"), Some(owned.names.initial_cluster(3)));
        assert_eq!(s("initial-cluster-state").as_deref(), Some("new"));
        assert_eq!(
            s("initial-cluster-token").as_deref(),
            Some("prod.demo.0c6e2a1e-uid")
        );
        assert_eq!(
            s("discovery-peers").as_deref(),
            Some("demo-peers.prod.svc:2380")
        );
        assert_eq!(s("data-dir").as_deref(), Some("/var/lib/flotilla/data"));
        assert_eq!(
            s("listen-peer-urls").as_deref(),
            Some("http://0.0.0.0:2380")
        );
        assert_eq!(s("fsync").as_deref(), Some("always"));
        assert_eq!(s("read-mode").as_deref(), Some("safe"));
        // Unset tuning is left to the node's defaults.
        assert!(!file.contains_key("tick-ms"));
        assert!(!file.contains_key("min-insync-replicas"));
        // Per-pod settings come from the pod's environment, never the file.
        assert!(!file.contains_key("name"));
        assert!(!file.contains_key("initial-advertise-peer-urls"));
    }

    #[test]
    fn tuning_and_broker_defaults_are_written_when_set() {
        let mut rc = raft_cluster("demo", 3);
        rc.spec.raft.tick_ms = Some(50);
        rc.spec.raft.election_ticks = Some(20);
        rc.spec.raft.heartbeat_ticks = Some(2);
        rc.spec.raft.snapshot_count = Some(5000);
        rc.spec.raft.snapshot_min_log_percent = Some(50);
        rc.spec.raft.snapshot_max_log_bytes = Some(64 << 20);
        rc.spec.broker.default_replication_factor = Some(3);
        rc.spec.broker.min_insync_replicas = Some(2);
        rc.spec.fsync = crate::crd::FsyncPolicy::Never;
        rc.spec.read_mode = crate::crd::ReadMode::Lease;
        let owned = Owned::of(&rc).expect("owned");
        let file = parsed(&config_file(&rc, &owned, 3).expect("file"));
        let n = |k: &str| file.get(k).and_then(Value::as_u64);
        assert_eq!(n("tick-ms"), Some(50));
        assert_eq!(n("election-ticks"), Some(20));
        assert_eq!(n("heartbeat-ticks"), Some(2));
        assert_eq!(n("snapshot-count"), Some(5000));
        assert_eq!(n("snapshot-min-log-percent"), Some(50));
        assert_eq!(n("snapshot-max-log-bytes"), Some(64 << 20));
        assert_eq!(n("default-replication-factor"), Some(3));
        assert_eq!(n("min-insync-replicas"), Some(2));
        assert_eq!(file.get("fsync").and_then(Value::as_str), Some("never"));
        assert_eq!(file.get("read-mode").and_then(Value::as_str), Some("lease"));
    }

    #[test]
    fn the_founders_not_the_replicas_make_the_initial_cluster() {
        let mut rc = raft_cluster("demo", 3);
        let owned = Owned::of(&rc).expect("owned");
        let before = config_map(&rc, &owned, 3).expect("cm");
        rc.spec.replicas = 5;
        let after = config_map(&rc, &owned, 3).expect("cm");
        assert_eq!(before, after, "scaling must not change the initial cluster");
        assert_eq!(data_hash(&before), data_hash(&after));
        rc.spec.raft.tick_ms = Some(10);
        assert_ne!(
            data_hash(&before),
            data_hash(&config_map(&rc, &owned, 3).expect("cm"))
        );
    }
}
