//! Helpers for scripted protocol tests, in the manner of the spec's test
//! harness: propose a command and wait until enough members commit it.

use super::TICK_UNITS;
use super::cluster::Cluster;
use flotilla_raft::{Bytes, LogIndex, NodeId, Storage};

impl Cluster {
    /// How many running members have applied `index`, and the command there.
    /// Panics if two members applied different commands at `index` (the
    /// invariant checker would also catch it).
    pub fn n_committed(&self, index: LogIndex) -> (usize, Option<Bytes>) {
        let mut count = 0;
        let mut data: Option<Bytes> = None;
        for node in &self.nodes {
            let Some(raft) = node.raft.as_ref() else {
                continue;
            };
            if node.applied < index {
                continue;
            }
            let entry = raft
                .storage()
                .entries(index, index + 1, u64::MAX)
                .ok()
                .and_then(|mut e| e.pop());
            let Some(entry) = entry else { continue };
            if let Some(d) = &data {
                assert_eq!(
                    d, &entry.data,
                    "members applied different commands at {index}"
                );
            }
            data = Some(entry.data);
            count += 1;
        }
        (count, data)
    }

    /// Proposes `cmd` at whichever running member leads (trying each in turn
    /// and waiting out elections), until at least `expected` members applied
    /// it. Returns its index, or None if that did not happen within
    /// `max_ticks`. With `retry`, a command lost to a leader change is
    /// proposed again.
    pub fn one(
        &mut self,
        cmd: &[u8],
        expected: usize,
        retry: bool,
        max_ticks: u64,
    ) -> Option<LogIndex> {
        let cmd = Bytes::copy_from_slice(cmd);
        let deadline = self.now + max_ticks * TICK_UNITS;
        let mut start = 0usize;
        while self.now < deadline {
            let mut placed = None;
            for k in 0..self.nodes.len() {
                let id = NodeId(((start + k) % self.nodes.len()) as u64 + 1);
                if let Some(raft) = self.raft(id)
                    && let Ok((index, _)) = raft.propose(cmd.clone())
                {
                    placed = Some(index);
                    start = (start + k) % self.nodes.len();
                    break;
                }
            }
            if let Some(index) = placed {
                // Give it two election timeouts to commit.
                let wait_until = self.now + 40 * TICK_UNITS;
                while self.now < wait_until {
                    self.step();
                    let (n, data) = self.n_committed(index);
                    if n >= expected && data.as_ref() == Some(&cmd) {
                        return Some(index);
                    }
                }
                if !retry {
                    return None;
                }
                // That leader may be cut off: start the next try elsewhere.
                start += 1;
            } else {
                self.run_ticks(5);
            }
        }
        None
    }

    /// Runs until `index` is applied by at least `n` running members or
    /// `max_ticks` pass; returns how many applied it.
    pub fn wait_applied(&mut self, index: LogIndex, n: usize, max_ticks: u64) -> usize {
        for _ in 0..max_ticks * TICK_UNITS {
            let (count, _) = self.n_committed(index);
            if count >= n {
                return count;
            }
            self.step();
        }
        self.n_committed(index).0
    }

    /// Runs until every running member applied everything it holds, or
    /// `max_ticks` pass.
    pub fn settle_all(&mut self, max_ticks: u64) {
        for _ in 0..max_ticks {
            let done = self.nodes.iter().all(|n| match &n.raft {
                Some(r) => {
                    let s = r.status();
                    s.applied == s.last_index && s.hard_state.commit == s.last_index
                }
                None => true,
            });
            if done {
                return;
            }
            self.run_ticks(1);
        }
    }
}
