//! The Flotilla node: a Raft member serving the key-value store and the
//! broker over gRPC, and the `flotilla` CLI.
//!
//! | module | what |
//! |---|---|
//! | [`config`] | flags, environment and file, validated into a [`config::NodeConfig`] |
//! | [`driver`] | the tokio task that owns the Raft core and runs its `Ready` loop |
//! | [`http`] | `/livez`, `/readyz`, `/metrics` |
//! | [`metrics`] | the Prometheus registry |

pub mod config;
pub mod driver;
pub mod http;
pub mod metrics;

#[cfg(test)]
mod test_support;
