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
//! Any member serves any call. Grants, revokes, keepalives and TimeToLive
//! take the one path of every write ([`crate::api::Writes`]): the leader
//! serves them, a follower hands them to the leader over the forwarding
//! stream. Leases is a linearizable read of the lease table, on any member.
//!
//! | file | what |
//! |---|---|
//! | `service.rs` | [`LeaseService`]: Grant, Revoke, KeepAlive, TimeToLive, Leases |
//! | `keepalive.rs` | the task behind one keepalive stream: each renewal a request of the write path, answered in order |
//! | `expiry.rs` | [`spawn_lease_expiry`] and [`LeaseExpiryConfig`] |

mod expiry;
mod keepalive;
mod service;

pub use expiry::{LeaseExpiryConfig, expiry_round, spawn_lease_expiry};
pub use service::{KeepAliveStream, LeaseService};

#[cfg(test)]
mod tests;
