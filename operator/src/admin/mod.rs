//! The operator's view of a Flotilla cluster's membership: the [`NodeAdmin`]
//! trait over etcd's Cluster and Maintenance APIs, its gRPC implementation
//! ([`GrpcAdmin`]) and, for tests, an in-memory cluster (`fake`); the
//! broker's topic calls ([`broker::BrokerAdmin`]) and an in-memory broker
//! (`broker_fake`).

pub mod broker;
#[cfg(test)]
pub mod broker_fake;
mod broker_grpc;
#[cfg(test)]
pub mod fake;
mod grpc;

pub use grpc::GrpcAdmin;

use std::fmt;
use std::future::Future;

/// A Raft member id (etcd's `ID`); 0 is "none".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MemberId(pub u64);

impl fmt::Display for MemberId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:x}", self.0)
    }
}

/// One entry of the member list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// Its id.
    pub id: MemberId,
    /// Its name; empty for a member added but never started.
    pub name: String,
    /// Its peer URLs (the operator matches members to pods by these).
    pub peer_urls: Vec<String>,
    /// Whether it is a learner.
    pub is_learner: bool,
}

/// What one member says about itself (Maintenance.Status).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeStatus {
    /// The answering member.
    pub member_id: MemberId,
    /// The leader it knows; `MemberId(0)` when it knows none.
    pub leader: MemberId,
    /// Its term.
    pub term: u64,
    /// Its commit index (etcd's `raftIndex`).
    pub commit_index: u64,
    /// Its applied index.
    pub applied_index: u64,
    /// Whether it is a learner.
    pub is_learner: bool,
}

/// Why a call to the nodes failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AdminError {
    /// No endpoint answered (connect failure or timeout on each).
    #[error("no member answered ({endpoints}): {reason}")]
    Unreachable {
        /// The endpoints tried.
        endpoints: String,
        /// The last failure.
        reason: String,
    },
    /// A member answered with an error (e.g. not caught up, not leader).
    #[error("{endpoint} refused: {message}")]
    Refused {
        /// Who refused.
        endpoint: String,
        /// The gRPC status code, as text.
        code: String,
        /// Its message.
        message: String,
    },
    /// There was nobody to ask.
    #[error("no endpoints to ask")]
    NoEndpoints,
}

impl AdminError {
    /// A short label for metrics and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            AdminError::Unreachable { .. } => "node_unreachable",
            AdminError::Refused { .. } => "node_refused",
            AdminError::NoEndpoints => "node_no_endpoints",
        }
    }
}

/// The membership calls the operator makes. Calls that any member can
/// serve take a list of endpoints (client URLs), tried in order until one
/// answers; the caller puts the leader first. Status asks one member; a
/// leadership transfer must be asked of the leader.
pub trait NodeAdmin: Send + Sync + 'static {
    /// The member list.
    fn member_list(
        &self,
        endpoints: &[String],
    ) -> impl Future<Output = Result<Vec<Member>, AdminError>> + Send;
    /// Adds a member by its peer URL (as a learner when `learner`); the
    /// cluster assigns its id.
    fn member_add(
        &self,
        endpoints: &[String],
        peer_url: &str,
        learner: bool,
    ) -> impl Future<Output = Result<Member, AdminError>> + Send;
    /// Promotes learner `id` to voter.
    fn member_promote(
        &self,
        endpoints: &[String],
        id: MemberId,
    ) -> impl Future<Output = Result<(), AdminError>> + Send;
    /// Removes member `id`.
    fn member_remove(
        &self,
        endpoints: &[String],
        id: MemberId,
    ) -> impl Future<Output = Result<(), AdminError>> + Send;
    /// The status of the member at `endpoint`.
    fn status(&self, endpoint: &str)
    -> impl Future<Output = Result<NodeStatus, AdminError>> + Send;
    /// Asks the leader at `leader_endpoint` to hand leadership to `to`.
    fn move_leader(
        &self,
        leader_endpoint: &str,
        to: MemberId,
    ) -> impl Future<Output = Result<(), AdminError>> + Send;
}
