//! Reconcilers. [`raft_cluster`] runs RaftClusters; the Topic reconciler
//! will be `topic.rs` beside it, calling the broker's admin API (not served
//! by the node yet) the way `raft_cluster` calls [`crate::admin`].

mod context;
pub mod raft_cluster;

pub use context::{Backoff, Context, Requeue};
