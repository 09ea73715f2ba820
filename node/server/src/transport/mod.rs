//! The peer transport: Raft messages between nodes over gRPC
//! (`flotilla.raft.v1.RaftPeer`).
//!
//! Sending: [`GrpcTransport`] is the driver's [`Transport`](crate::driver::Transport).
//! Each peer has a bounded queue and a task that connects lazily, keeps one
//! client-streaming call open, packs the queue into `PeerBatch`es bounded by
//! count and bytes, and after a break reconnects with exponential backoff
//! and jitter. Nothing on this side ever blocks the driver: a full queue, an
//! unreachable peer or an oversized message means a dropped message, counted,
//! and Raft resends what still matters.
//!
//! Receiving: [`PeerService`] refuses batches of another cluster
//! (`FAILED_PRECONDITION`), decodes each message with the checked conversion
//! (a bad one is counted and skipped) and steps it into a [`MessageSink`],
//! normally the driver's [`RaftHandle`](crate::driver::RaftHandle). [`serve`]
//! runs it on a listener the caller binds. It records the `features` each
//! peer's last batch advertised ([`PeerFeatures`]), so the leader proposes
//! what only new members understand once every member does.
//!
//! Tests drive faults through [`FaultControl`]: one-way partitions, random
//! drops (seeded) and added delay, applied where this node sends.
//!
//! | module | what |
//! |---|---|
//! | `config` | [`TransportConfig`], every bound |
//! | `client` | [`GrpcTransport`] |
//! | `peer` | one peer's task: connect, stream, backoff |
//! | `batch` | packing queued messages into batches |
//! | `service` | [`PeerService`], [`MessageSink`], [`serve`] |
//! | `fault` | [`FaultControl`] |
//! | `features` | [`PeerFeatures`]: what each peer understands |
//! | `stats` | [`TransportMetrics`] and its snapshot [`TransportStats`] |

mod batch;
mod client;
mod config;
mod fault;
mod features;
mod peer;
mod service;
mod stats;

pub use client::{GrpcTransport, TransportError};
pub use config::TransportConfig;
pub use fault::FaultControl;
pub use features::{
    BATCHED_COMPACTION, FEATURES, PEER_PROPOSALS, PeerFeatures, WINDOWED_SESSIONS, gate_open,
};
pub use service::{Delivery, MessageSink, PeerService, StreamCloser, serve, serve_with};
pub use stats::{TransportMetrics, TransportStats};

#[cfg(test)]
mod service_tests;
#[cfg(test)]
mod tests;
