//! The Flotilla node: a Raft member serving the key-value store and the
//! broker over gRPC, and the `flotilla` CLI.
//!
//! | module | what |
//! |---|---|
//! | [`api`] | the client API: etcd's KV, Maintenance and Cluster services over gRPC |
//! | [`backup`] | the snapshot file (Maintenance Snapshot, `etcdctl snapshot save`) and restoring one into a new cluster |
//! | [`compaction`] | auto-compaction: the leader proposes Compacts by age or revision count, as etcd's compactor |
//! | [`config`] | flags, environment and file, validated into a [`config::NodeConfig`] |
//! | [`driver`] | the tokio task that owns the Raft core and runs its `Ready` loop |
//! | [`http`] | `/livez`, `/readyz`, `/metrics` |
//! | [`join`] | who a member is at start: bootstrap, join a running cluster, restart; the discovery service |
//! | [`kv`] | the etcd-compatible MVCC key-value state machine, leases, exactly-once sessions |
//! | [`lease`] | etcd's Lease service and the leader's lease expiry loop |
//! | [`lifecycle`] | handing leadership away before a stop (SIGTERM, `/prestop`); readiness after start |
//! | [`member`] | running one member as a process (the `flotilla-node` binary) |
//! | [`metrics`] | the Prometheus registry |
//! | [`server`] | [`server::start`]: one member assembled from its parts, on listeners the caller binds |
//! | [`state`] | the node's state machine: the KV store with watch fan-out and lease tracking |
//! | [`transport`] | the gRPC peer transport: per-peer streams, batching, reconnects, a fault layer for tests |
//! | [`watch`] | etcd's Watch service: watchers from any retained revision, gap-free into live events |

pub mod api;
pub mod backup;
pub mod compaction;
pub mod config;
pub mod driver;
pub mod http;
pub mod join;
pub mod kv;
pub mod lease;
pub mod lifecycle;
pub mod member;
pub mod metrics;
pub mod server;
pub mod state;
pub mod transport;
pub mod watch;

#[cfg(test)]
mod test_support;
