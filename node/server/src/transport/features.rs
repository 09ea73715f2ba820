//! What each peer understands: the `features` bits of the last batch heard
//! from it, and the gate that lets a leader use a feature only when every
//! member understands it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Windowed exactly-once sessions: the member applies
/// `KvCommand.first_unanswered` (the client's mark).
pub const WINDOWED_SESSIONS: u64 = 1;

/// Auto-compaction in batches: the member applies
/// `KvCommand.batched_compaction`.
pub const BATCHED_COMPACTION: u64 = 2;

/// Peer proposals: the member, as leader, appends the commands of a
/// follower's `Propose` message and answers it (see the driver). A
/// follower proposes this way only to a leader heard advertising it.
pub const PEER_PROPOSALS: u64 = 4;

/// Every feature this release understands; what its batches advertise.
pub const FEATURES: u64 = WINDOWED_SESSIONS | BATCHED_COMPACTION | PEER_PROPOSALS;

/// The features of the last batch received from each peer since this
/// process started, by member id. Cheap to clone and to read.
#[derive(Clone, Debug, Default)]
pub struct PeerFeatures(Arc<Mutex<HashMap<u64, u64>>>);

impl PeerFeatures {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, u64>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records that the last batch from `member` advertised `features`.
    pub fn record(&self, member: u64, features: u64) {
        let mut heard = self.lock();
        if heard.get(&member) != Some(&features) {
            heard.insert(member, features);
        }
    }

    /// The features `member` advertised last, or `None` when nothing was
    /// heard from it.
    pub fn get(&self, member: u64) -> Option<u64> {
        self.lock().get(&member).copied()
    }

    /// Whether `member` was last heard advertising `feature`.
    pub fn has(&self, member: u64, feature: u64) -> bool {
        self.get(member).is_some_and(|f| f & feature == feature)
    }

    /// [`gate_open`] over what was heard.
    pub fn all_have(&self, me: u64, members: &[u64], feature: u64) -> bool {
        gate_open(me, members, feature, &self.lock())
    }
}

/// Whether `feature` may be used in what this member (`me`) proposes:
/// `members` (the configuration's voters and learners) is known, and every
/// member other than `me` was last heard advertising it. A member never
/// heard from, or heard without the bit, keeps it closed.
pub fn gate_open(me: u64, members: &[u64], feature: u64, heard: &HashMap<u64, u64>) -> bool {
    !members.is_empty()
        && members
            .iter()
            .filter(|m| **m != me)
            .all(|m| heard.get(m).is_some_and(|f| f & feature == feature))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gate_opens_only_when_every_other_member_advertised_the_feature() {
        let heard = |pairs: &[(u64, u64)]| pairs.iter().copied().collect::<HashMap<_, _>>();
        let w = WINDOWED_SESSIONS;
        let all = heard(&[(2, w), (3, w | 8)]);
        assert!(gate_open(1, &[1, 2, 3], w, &all));
        // A single member has nobody to wait for.
        assert!(gate_open(1, &[1], w, &heard(&[])));
        // Unknown configuration: closed.
        assert!(!gate_open(1, &[], w, &all));
        // Never heard from 3.
        assert!(!gate_open(1, &[1, 2, 3], w, &heard(&[(2, w)])));
        // 3 heard without the bit (a previous release).
        assert!(!gate_open(1, &[1, 2, 3], w, &heard(&[(2, w), (3, 0)])));
        assert!(!gate_open(1, &[1, 2, 3], w, &heard(&[(2, w), (3, 8)])));
        // A learner counts as much as a voter; a peer outside the
        // configuration does not count.
        assert!(!gate_open(1, &[1, 2, 3, 4], w, &all));
        assert!(gate_open(
            1,
            &[1, 2, 3],
            w,
            &heard(&[(2, w), (3, w), (9, 0)])
        ));
        // Last heard wins.
        let features = PeerFeatures::default();
        features.record(2, w);
        features.record(3, w);
        assert!(features.all_have(1, &[1, 2, 3], w));
        features.record(3, 0);
        assert!(!features.all_have(1, &[1, 2, 3], w));
        assert!(features.has(2, w) && !features.has(3, w) && !features.has(4, w));
    }
}
