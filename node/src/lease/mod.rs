//! etcd's Lease service (DESIGN §5) and the leader's expiry loop.
//!
//! Grants and revokes go through Raft as [`crate::kv::KvCommand`]s. Expiry
//! is decided by the leader alone, with the shared [`crate::kv::Lessor`]:
//! [`spawn_lease_expiry`] follows the driver's status, promotes the lessor
//! when this member becomes leader (every lease restarts at its full TTL,
//! etcd's rule: a new leader never drops a lease early) and demotes it when
//! leadership is lost; while leading it proposes a LeaseRevoke for each
//! lease the lessor reports expired, a bounded number per round.
//! Keepalives renew the leader's timers directly, without the log.
//!
//! Any member serves any call: a follower forwards grants, revokes,
//! TimeToLive and Leases to the leader (one hop, as the KV service forwards
//! writes), and relays each keepalive stream over one stream of its own to
//! the leader, which follows the leader when it moves.
//!
//! | file | what |
//! |---|---|
//! | `service.rs` | [`LeaseService`]: Grant, Revoke, KeepAlive, TimeToLive, Leases |
//! | `keepalive.rs` | the task behind one keepalive stream: renew here, or relay to the leader |
//! | `expiry.rs` | [`spawn_lease_expiry`] and [`LeaseExpiryConfig`] |

mod expiry;
mod keepalive;
mod service;

pub use expiry::{LeaseExpiryConfig, spawn_lease_expiry};
pub use service::{KeepAliveStream, LeaseService};

#[cfg(test)]
mod tests;
