//! The fault layer tests drive: partitions, random drops and added delay,
//! applied where this node sends.
//!
//! Faults act on the sending side only, so a partition is one-way from the
//! node that sets it; cutting a node off both ways means blocking it in its
//! own [`FaultControl`] and in every other node's. Randomness comes from a
//! seeded generator, so a run with the same seed and the same message order
//! drops the same messages.

use flotilla_raft::NodeId;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// Controls the faults of one node's transport. Cheap to clone: every clone
/// acts on the same state, so a test keeps one while the transport holds
/// another.
#[derive(Clone, Debug)]
pub struct FaultControl {
    inner: Arc<Mutex<Faults>>,
}

#[derive(Debug)]
struct Faults {
    blocked: BTreeSet<NodeId>,
    drop_probability: f64,
    delay: Duration,
    rng: SmallRng,
}

impl Default for FaultControl {
    fn default() -> Self {
        FaultControl::new(0)
    }
}

impl FaultControl {
    /// No faults; `seed` drives the drop decisions once a drop probability
    /// is set.
    pub fn new(seed: u64) -> Self {
        FaultControl {
            inner: Arc::new(Mutex::new(Faults {
                blocked: BTreeSet::new(),
                drop_probability: 0.0,
                delay: Duration::ZERO,
                rng: SmallRng::seed_from_u64(seed),
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Faults> {
        // A panic while holding this lock cannot leave the plain data
        // inconsistent, so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Drops every message from this node to `peers` until healed.
    pub fn partition(&self, peers: impl IntoIterator<Item = NodeId>) {
        self.lock().blocked.extend(peers);
    }

    /// Lets messages to `peer` through again.
    pub fn unblock(&self, peer: NodeId) {
        self.lock().blocked.remove(&peer);
    }

    /// Removes every partition (drop probability and delay stay).
    pub fn heal(&self) {
        self.lock().blocked.clear();
    }

    /// Removes every fault.
    pub fn clear(&self) {
        let mut f = self.lock();
        f.blocked.clear();
        f.drop_probability = 0.0;
        f.delay = Duration::ZERO;
    }

    /// The peers this node cannot reach.
    pub fn blocked(&self) -> BTreeSet<NodeId> {
        self.lock().blocked.clone()
    }

    /// Drops each message with probability `p` (clamped to 0..=1).
    pub fn set_drop_probability(&self, p: f64) {
        self.lock().drop_probability = if p.is_nan() { 0.0 } else { p.clamp(0.0, 1.0) };
    }

    /// Holds every batch for `delay` before it is written.
    pub fn set_delay(&self, delay: Duration) {
        self.lock().delay = delay;
    }

    /// The delay added to each batch.
    pub fn delay(&self) -> Duration {
        self.lock().delay
    }

    /// Whether a message to `peer` is to be dropped now: it is partitioned
    /// away, or the dice say so.
    pub(crate) fn drops(&self, peer: NodeId) -> bool {
        let mut f = self.lock();
        if f.blocked.contains(&peer) {
            return true;
        }
        let p = f.drop_probability;
        p > 0.0 && f.rng.random::<f64>() < p
    }
}
