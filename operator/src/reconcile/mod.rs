//! Reconcilers. [`raft_cluster`] runs RaftClusters through the nodes'
//! membership API ([`crate::admin::NodeAdmin`]); [`topic`] runs Topics
//! through the broker's admin API ([`crate::admin::broker::BrokerAdmin`]).

mod context;
pub mod raft_cluster;
pub mod topic;

pub use context::{Backoff, Context, Requeue};
