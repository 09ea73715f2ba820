//! [`Lessor`]: when leases expire. Kept out of [`super::KvStore`] because
//! it needs a clock: only the leader decides expiry, and it does so by
//! proposing a LeaseRevoke through Raft, so every replica deletes the keys
//! at the same log position.

use super::LeaseChange;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Timer {
    ttl: Duration,
    /// Set only while this node is the leader (the "primary").
    expiry: Option<Instant>,
}

/// Why a keepalive was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeepAliveError {
    /// This node is not the leader; the client must keep alive there.
    #[error("etcdserver: not primary")]
    NotPrimary,
    /// No such lease.
    #[error("etcdserver: requested lease not found")]
    NotFound,
}

/// Lease expiry timers. Pure: every method takes `now`. Every node keeps one
/// in step with the applied [`LeaseChange`]s; only the leader's has
/// deadlines. A new leader restarts every lease at its full TTL (etcd's
/// rule: it cannot know how long the old leader had been counting, and
/// expiring too early would delete keys a client is still keeping alive).
#[derive(Clone, Debug)]
pub struct Lessor {
    timers: BTreeMap<i64, Timer>,
    /// (deadline, id), earliest first.
    queue: BTreeSet<(Instant, i64)>,
    primary: bool,
    expired_per_call_max: usize,
    /// How long after reporting a lease expired it is reported again if its
    /// revoke has not been applied by then (the proposal may have been lost).
    revoke_retry: Duration,
}

impl Lessor {
    /// A follower's lessor.
    pub fn new(expired_per_call_max: usize, revoke_retry: Duration) -> Self {
        Lessor {
            timers: BTreeMap::new(),
            queue: BTreeSet::new(),
            primary: false,
            expired_per_call_max: expired_per_call_max.max(1),
            revoke_retry,
        }
    }

    /// Whether this node's lessor decides expiry.
    pub fn is_primary(&self) -> bool {
        self.primary
    }

    /// Number of leases tracked.
    pub fn len(&self) -> usize {
        self.timers.len()
    }

    /// Whether none are tracked.
    pub fn is_empty(&self) -> bool {
        self.timers.is_empty()
    }

    /// Follows the lease table after an entry was applied.
    pub fn apply(&mut self, changes: &[LeaseChange], now: Instant) {
        for c in changes {
            match *c {
                LeaseChange::Granted { id, ttl_secs } => self.grant(id, ttl_secs, now),
                LeaseChange::Revoked { id } => self.revoke(id),
            }
        }
    }

    /// Replaces every timer after a snapshot was restored: `leases` are
    /// (id, TTL in seconds) of the restored table.
    pub fn reset(&mut self, leases: impl IntoIterator<Item = (i64, i64)>, now: Instant) {
        self.timers.clear();
        self.queue.clear();
        for (id, ttl) in leases {
            self.grant(id, ttl, now);
        }
    }

    fn grant(&mut self, id: i64, ttl_secs: i64, now: Instant) {
        self.revoke(id);
        let ttl = Duration::from_secs(ttl_secs.max(0).unsigned_abs());
        let expiry = self.primary.then(|| now + ttl);
        if let Some(e) = expiry {
            self.queue.insert((e, id));
        }
        self.timers.insert(id, Timer { ttl, expiry });
    }

    fn revoke(&mut self, id: i64) {
        if let Some(Timer {
            expiry: Some(e), ..
        }) = self.timers.remove(&id)
        {
            self.queue.remove(&(e, id));
        }
    }

    fn set_expiry(&mut self, id: i64, expiry: Option<Instant>) {
        let Some(t) = self.timers.get_mut(&id) else {
            return;
        };
        if let Some(old) = t.expiry {
            self.queue.remove(&(old, id));
        }
        t.expiry = expiry;
        if let Some(e) = expiry {
            self.queue.insert((e, id));
        }
    }

    /// This node became leader: every lease gets its full TTL from `now`.
    pub fn promote(&mut self, now: Instant) {
        self.primary = true;
        let all: Vec<(i64, Duration)> = self.timers.iter().map(|(id, t)| (*id, t.ttl)).collect();
        for (id, ttl) in all {
            self.set_expiry(id, Some(now + ttl));
        }
    }

    /// This node is no longer leader: it stops deciding expiry.
    pub fn demote(&mut self) {
        self.primary = false;
        self.queue.clear();
        for t in self.timers.values_mut() {
            t.expiry = None;
        }
    }

    /// A keepalive: the lease gets its full TTL from `now`. Returns the TTL
    /// in seconds.
    pub fn keepalive(&mut self, id: i64, now: Instant) -> Result<i64, KeepAliveError> {
        if !self.primary {
            return Err(KeepAliveError::NotPrimary);
        }
        let ttl = self.timers.get(&id).ok_or(KeepAliveError::NotFound)?.ttl;
        self.set_expiry(id, Some(now + ttl));
        Ok(ttl.as_secs() as i64)
    }

    /// Leases whose deadline has passed, at most the configured number per
    /// call, earliest first. Each is pushed back by the retry interval, so it
    /// is reported again only if its revoke was not applied in time.
    pub fn expired(&mut self, now: Instant) -> Vec<i64> {
        let mut out = Vec::new();
        while out.len() < self.expired_per_call_max {
            let Some(&(deadline, id)) = self.queue.first() else {
                break;
            };
            if deadline > now {
                break;
            }
            self.set_expiry(id, Some(now + self.revoke_retry));
            out.push(id);
        }
        out
    }

    /// (remaining, granted) TTL of lease `id` in seconds, as LeaseTimeToLive
    /// answers: remaining is rounded up, and 0 once expired. On a node that
    /// is not the leader, remaining is the granted TTL (it has no deadline).
    pub fn time_to_live(&self, id: i64, now: Instant) -> Option<(i64, i64)> {
        let t = self.timers.get(&id)?;
        let granted = t.ttl.as_secs() as i64;
        let remaining = match t.expiry {
            Some(e) => e.saturating_duration_since(now).as_secs_f64().ceil() as i64,
            None => granted,
        };
        Some((remaining, granted))
    }
}
