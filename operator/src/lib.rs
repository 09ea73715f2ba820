//! Flotilla's Kubernetes operator (crate docs written below).

pub mod admin;
pub mod controller;
pub mod crd;
pub mod error;
pub mod http;
pub mod leader;
pub mod metrics;
pub mod names;
pub mod observed;
pub mod plan;
pub mod reconcile;
pub mod resources;
pub mod status;
#[cfg(test)]
pub(crate) mod testing;
