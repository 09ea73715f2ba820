//! Pure functions from a [`RaftCluster`] (and the few facts the plan
//! decides) to the objects the operator applies: nothing here talks to the
//! API server or the nodes, so every builder is unit-tested on its output.

mod config;
mod pdb;
mod services;
mod statefulset;

pub use config::{config_file, config_map};
pub use pdb::{max_unavailable, pod_disruption_budget};
pub use services::{client_service, peers_service};
pub use statefulset::statefulset;

use crate::crd::RaftCluster;
use crate::error::Error;
use crate::names::ClusterNames;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;

/// What the builders need beyond the RaftCluster itself; the plan decides
/// these from the observed cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BuildInputs {
    /// Founding members: `--initial-cluster` lists ordinals `0..founders`.
    pub founders: u32,
    /// The StatefulSet's replica count.
    pub replicas: i32,
    /// Voting members, for the disruption budget.
    pub voters: u32,
}

/// Every object a RaftCluster owns, as the operator wants it.
#[derive(Clone, Debug)]
pub struct Desired {
    /// The headless Service.
    pub peers_service: Service,
    /// The client Service.
    pub client_service: Service,
    /// The shared config file.
    pub config_map: ConfigMap,
    /// The members.
    pub statefulset: StatefulSet,
    /// The quorum-aware disruption budget.
    pub pdb: PodDisruptionBudget,
}

impl Desired {
    /// Builds them all.
    pub fn build(rc: &RaftCluster, inputs: BuildInputs) -> Result<Desired, Error> {
        let owned = Owned::of(rc)?;
        let config_map = config_map(rc, &owned, inputs.founders)?;
        Ok(Desired {
            peers_service: peers_service(&owned),
            client_service: client_service(rc, &owned),
            statefulset: statefulset(rc, &owned, inputs, &config_map)?,
            pdb: pod_disruption_budget(&owned, inputs.voters),
            config_map,
        })
    }
}

/// The identity every owned object derives from: names, uid and the owner
/// reference back to the RaftCluster.
#[derive(Clone, Debug)]
pub struct Owned {
    /// Names and addresses.
    pub names: ClusterNames,
    /// The RaftCluster's uid.
    pub uid: String,
    owner: k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference,
}

impl Owned {
    /// The identity of `rc`'s objects; it must have been read from the API
    /// (name, namespace and uid set).
    pub fn of(rc: &RaftCluster) -> Result<Owned, Error> {
        let name = rc
            .metadata
            .name
            .as_deref()
            .ok_or(Error::MissingField("metadata.name"))?;
        let namespace = rc
            .metadata
            .namespace
            .as_deref()
            .ok_or(Error::MissingField("metadata.namespace"))?;
        let uid = rc
            .metadata
            .uid
            .clone()
            .ok_or(Error::MissingField("metadata.uid"))?;
        let owner = rc
            .controller_owner_ref(&())
            .ok_or(Error::MissingField("metadata.uid"))?;
        Ok(Owned {
            names: ClusterNames::new(name, namespace),
            uid,
            owner,
        })
    }

    /// Metadata of an owned object called `name`.
    pub fn meta(&self, name: String) -> ObjectMeta {
        ObjectMeta {
            name: Some(name),
            namespace: Some(self.names.namespace().to_string()),
            labels: Some(self.names.labels()),
            owner_references: Some(vec![self.owner.clone()]),
            ..ObjectMeta::default()
        }
    }
}

#[cfg(test)]
pub(crate) mod test_cluster {
    use crate::crd::{RaftCluster, RaftClusterSpec};

    /// A RaftCluster as the API server would hand it over.
    pub fn raft_cluster(name: &str, replicas: i32) -> RaftCluster {
        let spec: RaftClusterSpec = serde_json::from_value(serde_json::json!({
            "replicas": replicas,
            "image": "flotilla/flotilla-node:0.1.0",
        }))
        .expect("valid spec");
        let mut rc = RaftCluster::new(name, spec);
        rc.metadata.namespace = Some("prod".to_string());
        rc.metadata.uid = Some("0c6e2a1e-uid".to_string());
        rc.metadata.generation = Some(1);
        rc
    }
}
