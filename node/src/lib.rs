//! The Flotilla node: a Raft member serving the key-value store and the
//! broker over gRPC, and the `flotilla` CLI.
//!
//! | module | what |
//! |---|---|
//! | [`client`] | the Rust client: leader discovery, exactly-once writes, get/put/delete/put_if_absent |
//! | [`config`] | flags, environment and file, validated into a [`config::NodeConfig`] |
//! | [`driver`] | the tokio task that owns the Raft core and runs its `Ready` loop |
//! | [`http`] | `/livez`, `/readyz`, `/metrics` |
//! | [`kv`] | the etcd-compatible MVCC key-value state machine, leases, exactly-once sessions |
//! | [`metrics`] | the Prometheus registry |
//! | [`state`] | the node's state machine: the KV store with watch fan-out and lease tracking |
//! | [`transport`] | the gRPC peer transport: per-peer streams, batching, reconnects, a fault layer for tests |

pub mod client;
pub mod config;
pub mod driver;
pub mod http;
pub mod kv;
pub mod metrics;
pub mod state;
pub mod transport;

#[cfg(test)]
mod test_support;
