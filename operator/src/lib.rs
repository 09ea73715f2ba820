//! Flotilla's Kubernetes operator (crate docs written below).

pub mod admin;
pub mod crd;
pub mod error;
pub mod names;
pub mod observed;
pub mod plan;
pub mod resources;
