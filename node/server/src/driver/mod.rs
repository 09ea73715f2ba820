//! The driver: one tokio task that owns a Raft core, its storage and the
//! state machine, and follows the core's driver contract (persist → send →
//! apply → advance) on every `Ready`.
//!
//! Everything else talks to it through a [`RaftHandle`]: proposals, reads,
//! membership changes and inbound peer messages go into bounded queues (a full
//! queue is backpressure, never unbounded growth); answers come back on
//! one-shot channels. The task's ticker drives the core's logical clock.
//!
//! | module | what |
//! |---|---|
//! | `handle` | [`RaftHandle`], the cloneable front door |
//! | `task` | the task itself: the select loop, the step's effects on disk, network and callers, and the thread heavy entries apply on |
//! | `log_sync` | the thread that makes deferred log writes durable |
//! | `coalesce` | proposals a leader under load holds back to share a `Ready` |
//! | `step` | [`Step`]: the `Ready` processing, sans IO, that the simulation in `tests/` runs too |
//! | `snapshot_install` | installing a leader's snapshot: persist and decode at once |
//! | `state_machine` | the [`StateMachine`] and [`Transport`] traits |
//! | `error` | [`DriverError`] |

mod coalesce;
mod error;
mod handle;
mod log_sync;
mod peer_propose;
mod snapshot_install;
mod state_machine;
mod step;
mod task;
mod worker;

pub use error::DriverError;
pub use handle::{NodeStatus, RaftHandle};
pub use log_sync::INLINE_BYTES_MAX;
pub use peer_propose::{
    COMMAND_BYTES_MAX as PEER_COMMAND_BYTES_MAX, PeerProposalFilter, PeerSupport,
};
pub use state_machine::{StateMachine, Transport};
pub use step::{
    Applied, ApplyBounds, Effects, PeerBatch, Persisted, Step, Taken, apply_run, durable_before,
};
pub use task::{Driver, DriverConfig};

#[cfg(test)]
mod step_tests;
#[cfg(test)]
mod tests;
