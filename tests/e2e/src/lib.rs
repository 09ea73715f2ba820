//! Flotilla's end-to-end suites.
//!
//! - The local container suite ([`scenario`], binary `flotilla-e2e`): a
//!   3-member and a 5-member cluster of the node image in Docker containers
//!   on a private network, each container configured exactly as the
//!   operator's StatefulSet builder configures its pod ([`pod`],
//!   [`cluster`]), under kill -9, pause, disconnection, restarts with a new
//!   address, a rolling restart in the operator's order and mixed faults,
//!   while [`workload`]s run (the KV clients, and the [`broker`]'s
//!   producers and consumers on an rf=3 acks=all topic); then convergence and the workloads' checks.
//! - The kind + chaos-mesh suite: `tests/e2e/kind/` (shell and manifests).
//!
//! Every Docker object carries the label `flotilla-e2e` and is removed at
//! the end, on failure, panic or Ctrl-C ([`docker`]).

pub mod broker;
pub mod cluster;
pub mod docker;
pub mod pod;
pub mod scenario;
pub mod workload;
