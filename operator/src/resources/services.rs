//! The two Services: the headless one that names each pod (and answers
//! `--discovery-peers`), and the one clients use.

use super::Owned;
use crate::crd::RaftCluster;
use crate::names::{CLIENT_PORT, METRICS_PORT, PEER_PORT};
use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

fn port(name: &str, number: u16) -> ServicePort {
    ServicePort {
        name: Some(name.to_string()),
        port: i32::from(number),
        target_port: Some(IntOrString::String(name.to_string())),
        protocol: Some("TCP".to_string()),
        ..ServicePort::default()
    }
}

/// The headless Service `<name>-peers`. It publishes pods before they are
/// ready: members must reach each other (and a joining member the cluster)
/// to become ready at all.
pub fn peers_service(owned: &Owned) -> Service {
    Service {
        metadata: owned.meta(owned.names.peers_service()),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".to_string()),
            publish_not_ready_addresses: Some(true),
            selector: Some(owned.names.selector_labels()),
            ports: Some(vec![
                port("client", CLIENT_PORT),
                port("peer", PEER_PORT),
                port("metrics", METRICS_PORT),
            ]),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

/// The client Service `<name>-client`, of the spec's type: ready members only.
pub fn client_service(rc: &RaftCluster, owned: &Owned) -> Service {
    Service {
        metadata: owned.meta(owned.names.client_service()),
        spec: Some(ServiceSpec {
            type_: Some(rc.spec.service.type_.as_str().to_string()),
            selector: Some(owned.names.selector_labels()),
            ports: Some(vec![
                port("client", CLIENT_PORT),
                port("metrics", METRICS_PORT),
            ]),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::ServiceType;
    use crate::resources::test_cluster::raft_cluster;

    #[test]
    fn the_peers_service_is_headless_and_publishes_unready_pods() {
        let rc = raft_cluster("demo", 3);
        let svc = peers_service(&Owned::of(&rc).expect("owned"));
        assert_eq!(svc.metadata.name.as_deref(), Some("demo-peers"));
        assert_eq!(svc.metadata.namespace.as_deref(), Some("prod"));
        let owner = &svc.metadata.owner_references.as_ref().expect("owned")[0];
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str()),
            ("RaftCluster", "demo")
        );
        assert_eq!(owner.controller, Some(true));
        let spec = svc.spec.expect("spec");
        assert_eq!(spec.cluster_ip.as_deref(), Some("None"));
        assert_eq!(spec.publish_not_ready_addresses, Some(true));
        let ports: Vec<_> = spec.ports.expect("ports").iter().map(|p| p.port).collect();
        assert_eq!(ports, vec![2379, 2380, 2381]);
        assert_eq!(
            spec.selector
                .expect("selector")
                .get("app.kubernetes.io/instance")
                .map(String::as_str),
            Some("demo")
        );
    }

    #[test]
    fn the_client_service_has_the_specs_type() {
        let mut rc = raft_cluster("demo", 3);
        let owned = Owned::of(&rc).expect("owned");
        let spec = client_service(&rc, &owned).spec.expect("spec");
        assert_eq!(spec.type_.as_deref(), Some("ClusterIP"));
        assert_eq!(spec.cluster_ip, None);
        assert_eq!(spec.publish_not_ready_addresses, None);
        rc.spec.service.type_ = ServiceType::LoadBalancer;
        let svc = client_service(&rc, &owned);
        assert_eq!(svc.metadata.name.as_deref(), Some("demo-client"));
        assert_eq!(
            svc.spec.expect("spec").type_.as_deref(),
            Some("LoadBalancer")
        );
    }
}
