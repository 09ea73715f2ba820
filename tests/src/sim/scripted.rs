//! Helpers for scripted protocol tests, in the manner of the spec's test
//! harness: propose a command and wait until enough members commit it.

use super::TICK_UNITS;
use super::cluster::Cluster;
use flotilla_raft::{Bytes, LogIndex, NodeId, Term};

impl Cluster {
    /// How many running members have applied `index`, and the command there
    /// (that members applied the same command at each index is checked by
    /// the invariants).
    pub fn n_committed(&self, index: LogIndex) -> (usize, Option<Bytes>) {
        let Some((_, data)) = self.committed_at(index) else {
            return (0, None);
        };
        let count = self
            .nodes
            .iter()
            .filter(|n| n.is_up() && n.applied() >= index)
            .count();
        (count, Some(data))
    }

    /// The term and command committed at `index`, once some member applied
    /// it.
    pub fn committed_at(&self, index: LogIndex) -> Option<(Term, Bytes)> {
        let slot = usize::try_from(index.checked_sub(1)?).ok()?;
        self.committed_log.get(slot).cloned()
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

    /// Runs until every running member committed and applied everything it
    /// holds, or `max_ticks` pass. Returns whether they did.
    #[must_use = "a cluster that did not settle is usually a failure"]
    pub fn settle_all(&mut self, max_ticks: u64) -> bool {
        let done = |c: &Cluster| {
            c.nodes.iter().all(|n| match n.raft() {
                Some(r) => {
                    let s = r.status();
                    s.applied == s.last_index && s.hard_state.commit == s.last_index
                }
                None => true,
            })
        };
        for _ in 0..max_ticks {
            if done(self) {
                return true;
            }
            self.run_ticks(1);
        }
        done(self)
    }
}
