//! Test doubles for reconcile scenarios: an in-memory API server behind a
//! tower-test mock service ([`api_server`]) and a harness that plays the
//! StatefulSet controller and the kubelet around it ([`harness`]). The node
//! side is [`crate::admin::fake`].

pub mod api_server;
pub mod harness;
