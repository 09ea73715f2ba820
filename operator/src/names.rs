//! Names and addresses of everything a RaftCluster owns, derived from the
//! cluster's name and namespace alone, so every piece of the operator (and
//! every pod, through its environment) agrees on them.

use std::collections::BTreeMap;

/// Client gRPC port (etcd's 2379).
pub const CLIENT_PORT: u16 = 2379;
/// Peer (Raft) port (etcd's 2380).
pub const PEER_PORT: u16 = 2380;
/// HTTP port: `/livez`, `/readyz`, `/metrics`, `/prestop`.
pub const METRICS_PORT: u16 = 2381;
/// Where the data volume is mounted.
pub const DATA_MOUNT: &str = "/var/lib/flotilla";
/// The node's `--data-dir`, inside the volume.
pub const DATA_DIR: &str = "/var/lib/flotilla/data";
/// Where the ConfigMap is mounted.
pub const CONFIG_MOUNT: &str = "/etc/flotilla";
/// The config file's key in the ConfigMap (and file name in the mount).
pub const CONFIG_FILE: &str = "flotilla.yaml";
/// The volume claim template's name (PVCs are `data-<pod>`).
pub const DATA_VOLUME: &str = "data";
/// The field manager of every server-side apply.
pub const FIELD_MANAGER: &str = "flotilla-operator";
/// Annotation on the StatefulSet recording the founding member count.
pub const FOUNDERS_ANNOTATION: &str = "flotilla.dev/founding-members";
/// Pod-template annotation: hash of the config file, so a config change rolls the pods.
pub const CONFIG_HASH_ANNOTATION: &str = "flotilla.dev/config-hash";

/// The names of one RaftCluster's objects and members.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterNames {
    name: String,
    namespace: String,
}

impl ClusterNames {
    /// Names for cluster `name` in `namespace`.
    pub fn new(name: &str, namespace: &str) -> Self {
        ClusterNames {
            name: name.to_string(),
            namespace: namespace.to_string(),
        }
    }

    /// The RaftCluster's name (also the StatefulSet's and the PDB's).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its namespace.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The headless Service that gives each pod its DNS name.
    pub fn peers_service(&self) -> String {
        format!("{}-peers", self.name)
    }

    /// The client Service.
    pub fn client_service(&self) -> String {
        format!("{}-client", self.name)
    }

    /// The ConfigMap holding the shared config file.
    pub fn config_map(&self) -> String {
        format!("{}-config", self.name)
    }

    /// Pod `ordinal`'s name.
    pub fn pod(&self, ordinal: u32) -> String {
        format!("{}-{ordinal}", self.name)
    }

    /// Pod `ordinal`'s data PVC.
    pub fn pvc(&self, ordinal: u32) -> String {
        format!("{DATA_VOLUME}-{}-{ordinal}", self.name)
    }

    /// The DNS domain under which pods have names.
    fn peers_domain(&self) -> String {
        format!("{}.{}.svc", self.peers_service(), self.namespace)
    }

    /// Pod `ordinal`'s stable DNS name.
    pub fn host(&self, ordinal: u32) -> String {
        format!("{}.{}", self.pod(ordinal), self.peers_domain())
    }

    /// Member `ordinal`'s peer URL, as it advertises it.
    pub fn peer_url(&self, ordinal: u32) -> String {
        format!("http://{}:{PEER_PORT}", self.host(ordinal))
    }

    /// Member `ordinal`'s client URL.
    pub fn client_url(&self, ordinal: u32) -> String {
        format!("http://{}:{CLIENT_PORT}", self.host(ordinal))
    }

    /// The peer URL pattern with `$(POD_NAME)` for the pod template.
    pub fn peer_url_template(&self) -> String {
        format!("http://$(POD_NAME).{}:{PEER_PORT}", self.peers_domain())
    }

    /// The client URL pattern with `$(POD_NAME)` for the pod template.
    pub fn client_url_template(&self) -> String {
        format!("http://$(POD_NAME).{}:{CLIENT_PORT}", self.peers_domain())
    }

    /// `--discovery-peers`: the headless Service, which resolves to every pod.
    pub fn discovery_peers(&self) -> String {
        format!("{}:{PEER_PORT}", self.peers_domain())
    }

    /// The member ordinal a peer URL belongs to, if it is one of this
    /// cluster's pod addresses.
    pub fn ordinal_of_peer_url(&self, url: &str) -> Option<u32> {
        let rest = url.trim_end_matches('/').strip_prefix("http://")?;
        let host = rest.strip_suffix(&format!(":{PEER_PORT}"))?;
        let pod = host.strip_suffix(&format!(".{}", self.peers_domain()))?;
        self.ordinal_of_pod(pod)
    }

    /// The ordinal of a pod (or member) name of this cluster.
    pub fn ordinal_of_pod(&self, pod: &str) -> Option<u32> {
        let digits = pod.strip_prefix(&self.name)?.strip_prefix('-')?;
        if digits.is_empty() || (digits.len() > 1 && digits.starts_with('0')) {
            return None;
        }
        digits.parse().ok()
    }

    /// The ordinal of a PVC name of this cluster's data volumes.
    pub fn ordinal_of_pvc(&self, pvc: &str) -> Option<u32> {
        self.ordinal_of_pod(pvc.strip_prefix(DATA_VOLUME)?.strip_prefix('-')?)
    }

    /// `--initial-cluster` for `founders` founding members (ordinals
    /// `0..founders`).
    pub fn initial_cluster(&self, founders: u32) -> String {
        (0..founders)
            .map(|o| format!("{}={}", self.pod(o), self.peer_url(o)))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// `--initial-cluster-token`: namespace, name and uid, so a cluster
    /// deleted and created again under the same name never accepts a pod
    /// or volume of the old one.
    pub fn token(&self, uid: &str) -> String {
        format!("{}.{}.{uid}", self.namespace, self.name)
    }

    /// Labels that select this cluster's pods (and PVCs).
    pub fn selector_labels(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("app.kubernetes.io/name".to_string(), "flotilla".to_string()),
            ("app.kubernetes.io/instance".to_string(), self.name.clone()),
            (
                "app.kubernetes.io/component".to_string(),
                "node".to_string(),
            ),
        ])
    }

    /// `selector_labels` as a label selector string.
    pub fn label_selector(&self) -> String {
        self.selector_labels()
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Labels of every object the operator creates for this cluster.
    pub fn labels(&self) -> BTreeMap<String, String> {
        let mut labels = self.selector_labels();
        labels.insert(
            "app.kubernetes.io/managed-by".to_string(),
            FIELD_MANAGER.to_string(),
        );
        labels
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_follow_the_headless_service() {
        let n = ClusterNames::new("demo", "prod");
        assert_eq!(n.peer_url(2), "http://demo-2.demo-peers.prod.svc:2380");
        assert_eq!(n.client_url(0), "http://demo-0.demo-peers.prod.svc:2379");
        assert_eq!(n.discovery_peers(), "demo-peers.prod.svc:2380");
        assert_eq!(n.pvc(4), "data-demo-4");
        assert_eq!(
            n.initial_cluster(2),
            "demo-0=http://demo-0.demo-peers.prod.svc:2380,demo-1=http://demo-1.demo-peers.prod.svc:2380"
        );
        assert_eq!(
            n.peer_url_template(),
            "http://$(POD_NAME).demo-peers.prod.svc:2380"
        );
    }

    #[test]
    fn ordinals_are_parsed_back_only_from_this_clusters_names() {
        let n = ClusterNames::new("demo", "prod");
        for o in [0, 1, 7, 12] {
            assert_eq!(n.ordinal_of_peer_url(&n.peer_url(o)), Some(o));
            assert_eq!(n.ordinal_of_pod(&n.pod(o)), Some(o));
            assert_eq!(n.ordinal_of_pvc(&n.pvc(o)), Some(o));
        }
        assert_eq!(
            n.ordinal_of_peer_url("http://demo-1.demo-peers.prod.svc:2380/"),
            Some(1)
        );
        assert_eq!(
            n.ordinal_of_peer_url("http://demo-1.demo-peers.other.svc:2380"),
            None
        );
        assert_eq!(
            n.ordinal_of_peer_url("http://demo-1.demo-peers.prod.svc:2379"),
            None
        );
        assert_eq!(
            n.ordinal_of_peer_url("https://demo-1.demo-peers.prod.svc:2380"),
            None
        );
        assert_eq!(n.ordinal_of_pod("demo-x"), None);
        assert_eq!(n.ordinal_of_pod("demo-01"), None);
        assert_eq!(n.ordinal_of_pod("demo2-1"), None);
        assert_eq!(n.ordinal_of_pod("demo-"), None);
        assert_eq!(n.ordinal_of_pvc("logs-demo-1"), None);
    }

    #[test]
    fn the_token_changes_with_the_uid() {
        let n = ClusterNames::new("demo", "prod");
        assert_ne!(n.token("uid-a"), n.token("uid-b"));
        assert_ne!(
            n.token("uid-a"),
            ClusterNames::new("demo", "dev").token("uid-a")
        );
    }
}
