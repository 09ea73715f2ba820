//! Errors a caller of the driver can act on, apart from the fatal ones.

use flotilla_raft::NodeId;

/// Why a request to the driver did not succeed.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum DriverError {
    /// This member does not lead; retry at `leader_hint` if known.
    #[error("not the leader (leader hint: {leader_hint:?})")]
    NotLeader {
        /// The leader this member knows of.
        leader_hint: Option<NodeId>,
    },
    /// Leadership changed before the outcome was known: the proposal may or
    /// may not take effect. Retry with the same request id to stay
    /// exactly-once.
    #[error("leadership changed before the outcome was known")]
    OutcomeUnknown,
    /// A read was not confirmed in time (the leader may be unreachable).
    #[error("timed out waiting for the leader to confirm the read")]
    Timeout,
    /// Too much work is queued; back off and retry.
    #[error("busy: {0}")]
    Busy(String),
    /// The request was refused for good; the reason says why.
    #[error("rejected: {0}")]
    Rejected(String),
    /// The driver stopped (shutdown or a fatal storage error).
    #[error("the raft driver has stopped")]
    Stopped,
}
