//! The Flotilla node: a Raft member serving the key-value store and the
//! broker over gRPC, and the `flotilla` CLI.
//!
//! | module | what |
//! |---|---|
//! | [`config`] | flags, environment and file, validated into a [`config::NodeConfig`] |
//! | [`driver`] | the tokio task that owns the Raft core and runs its `Ready` loop |

pub mod config;
pub mod driver;
