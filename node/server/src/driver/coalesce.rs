//! Proposals a leader under load holds back so that more of them share a
//! `Ready`: one disk write, one append per follower, one answer from each.
//!
//! A leader proposes what arrived as soon as its loop turns, so under load
//! every input (a request, each follower's acknowledgement) can start a
//! `Ready` of a few entries with its own fsync on every member. While
//! entries of the leader's are still past the commit index, a commit is
//! on its way and its `Ready` goes out anyway, so the proposals that
//! arrive wait for it, in order, until one of:
//!
//! - as many wait as there are entries past the commit index (the pipeline
//!   then grows by a batch at least as large as what it holds);
//! - the commit index catches up with the log (they join the `Ready` that
//!   tells the followers the new commit index);
//! - as many wait as the driver takes in one turn, or a tick comes;
//! - the member does not lead (the core refuses them at once).
//!
//! An idle leader has nothing past its commit index when a request arrives,
//! so a single client's proposal never waits. Only proposals wait — a
//! client's, and a follower's batch (`peer_propose`), which counts as its
//! commands: reads, membership changes and transfers are handled as they
//! arrive.

use std::collections::VecDeque;

/// Proposals held back, oldest first, each with how many entries it
/// makes.
#[derive(Debug)]
pub(crate) struct Held<R> {
    queue: VecDeque<(R, usize)>,
    /// The entries the held requests make.
    entries: usize,
}

impl<R> Default for Held<R> {
    fn default() -> Self {
        Held {
            queue: VecDeque::new(),
            entries: 0,
        }
    }
}

impl<R> Held<R> {
    /// Holds `request`, which makes `entries` entries, back behind those
    /// already held.
    pub(crate) fn push(&mut self, request: R, entries: usize) {
        self.entries += entries;
        self.queue.push_back((request, entries));
    }

    /// Whether the held proposals go into the core now: on a member that
    /// does not lead, when they make at least `past_commit` entries (the
    /// entries past the core's commit index, so none once everything
    /// committed), when they make `max`, or when `force`d (a tick).
    pub(crate) fn due(&self, leader: bool, past_commit: u64, max: usize, force: bool) -> bool {
        let held = self.entries;
        !self.queue.is_empty() && (force || !leader || held as u64 >= past_commit || held >= max)
    }

    /// The oldest held proposal.
    pub(crate) fn pop(&mut self) -> Option<R> {
        let (request, entries) = self.queue.pop_front()?;
        self.entries -= entries;
        Some(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(n: usize) -> Held<usize> {
        let mut h = Held::default();
        for i in 0..n {
            h.push(i, 1);
        }
        h
    }

    #[test]
    fn nothing_past_the_commit_index_releases_at_once() {
        assert!(held(1).due(true, 0, 1024, false), "an idle leader");
    }

    #[test]
    fn a_leader_holds_fewer_than_the_entries_past_its_commit_index() {
        assert!(!held(3).due(true, 4, 1024, false));
        assert!(held(4).due(true, 4, 1024, false), "as many as in flight");
        assert!(held(5).due(true, 4, 1024, false));
    }

    #[test]
    fn bounds_ticks_and_followers_release() {
        assert!(held(8).due(true, 100, 8, false), "the per-turn bound");
        assert!(held(1).due(true, 100, 1024, true), "a tick");
        assert!(held(1).due(false, 100, 1024, false), "not leading");
    }

    #[test]
    fn a_batch_counts_as_its_entries() {
        let mut h = Held::default();
        h.push(0, 3);
        assert!(!h.due(true, 4, 1024, false));
        h.push(1, 1);
        assert!(h.due(true, 4, 1024, false), "four entries held");
        assert_eq!(h.pop(), Some(0));
        assert!(!h.due(true, 4, 1024, false), "one left");
        h.push(2, 1024);
        assert!(h.due(true, 10_000, 1024, false), "the per-turn bound");
    }

    #[test]
    fn nothing_held_is_never_due() {
        assert!(!held(0).due(true, 0, 1024, true));
        assert!(!held(0).due(false, 0, 1024, false));
    }

    #[test]
    fn taken_in_arrival_order() {
        let mut h = held(3);
        let taken: Vec<usize> = std::iter::from_fn(|| h.pop()).collect();
        assert_eq!(taken, [0, 1, 2]);
        assert!(!h.due(true, 0, 1024, true), "none left");
    }
}
