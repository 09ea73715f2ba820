//! The replicated lease table: which leases exist, their TTL, and the keys
//! attached to each. When they expire is not here (that needs a clock); see
//! [`super::Lessor`].

use std::collections::{BTreeMap, BTreeSet};

/// A lease as the state machine knows it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeaseEntry {
    /// The TTL it was granted with, in seconds.
    pub ttl_secs: i64,
    /// The keys whose current version carries it.
    pub keys: BTreeSet<Vec<u8>>,
}

/// Lease id → lease. Ordered so snapshots and listings are deterministic.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeaseTable {
    leases: BTreeMap<i64, LeaseEntry>,
}

impl LeaseTable {
    /// Whether lease `id` exists.
    pub fn contains(&self, id: i64) -> bool {
        self.leases.contains_key(&id)
    }

    /// Lease `id`, if it exists.
    pub fn get(&self, id: i64) -> Option<&LeaseEntry> {
        self.leases.get(&id)
    }

    /// Every lease with its granted TTL, by id.
    pub fn iter(&self) -> impl Iterator<Item = (i64, &LeaseEntry)> {
        self.leases.iter().map(|(id, l)| (*id, l))
    }

    /// Number of leases.
    pub fn len(&self) -> usize {
        self.leases.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.leases.is_empty()
    }

    /// The id a grant without one gets: the log index, or the next free id
    /// above it. Deterministic, unlike etcd's random ids, because every
    /// replica must choose the same.
    pub(crate) fn free_id(&self, index: u64) -> i64 {
        let mut id = i64::try_from(index).unwrap_or(i64::MAX).max(1);
        while self.leases.contains_key(&id) {
            id = id.checked_add(1).unwrap_or(1);
        }
        id
    }

    pub(crate) fn insert(&mut self, id: i64, ttl_secs: i64) {
        self.leases.insert(
            id,
            LeaseEntry {
                ttl_secs,
                keys: BTreeSet::new(),
            },
        );
    }

    /// Removes the lease; returns its keys.
    pub(crate) fn remove(&mut self, id: i64) -> Option<BTreeSet<Vec<u8>>> {
        self.leases.remove(&id).map(|l| l.keys)
    }

    /// Moves `key` from lease `old` to lease `new` (0 = none).
    pub(crate) fn reattach(&mut self, key: &[u8], old: i64, new: i64) {
        if old == new {
            return;
        }
        if let Some(l) = self.leases.get_mut(&old) {
            l.keys.remove(key);
        }
        if let Some(l) = self.leases.get_mut(&new) {
            l.keys.insert(key.to_vec());
        }
    }
}
