//! Raft's safety properties (Raft §5.2 Figure 3), each checked in one place
//! after every step of a simulation.

use flotilla_raft::{Entry, LogIndex, MemStorage, NodeId, Storage, Term};
use std::collections::HashMap;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};

fn digest(entry: &Entry) -> u64 {
    let mut h = DefaultHasher::new();
    entry.kind.hash(&mut h);
    entry.data.hash(&mut h);
    h.finish()
}

/// What the checker remembers across the whole run.
#[derive(Debug, Default)]
pub struct Invariants {
    /// Election safety: the one leader of each term.
    leaders: HashMap<Term, NodeId>,
    /// Log matching: (index, term) → (digest, term of the entry before).
    seen: HashMap<(LogIndex, Term), (u64, Term)>,
    /// The committed prefix as any member learned it (index - 1): entries
    /// a member was handed to apply (whether or not it lived to apply
    /// them), and entries up to each member's commit index in its log.
    committed: Vec<(Term, u64)>,
    /// Per node: highest commit index persisted, highest applied this life.
    commit: HashMap<NodeId, LogIndex>,
    applied_by: HashMap<NodeId, LogIndex>,
    /// The first violation found.
    violation: Option<String>,
    /// Checks performed on logs, commits and applied entries (the costly
    /// ones, skipped when a cluster turns invariant checking off), so runs
    /// can show the checker ran.
    pub checks: u64,
}

impl Invariants {
    /// The first violation, if any.
    pub fn violation(&self) -> Option<&str> {
        self.violation.as_deref()
    }

    fn fail(&mut self, what: String) {
        if self.violation.is_none() {
            self.violation = Some(what);
        }
    }

    /// Entries of the committed prefix known so far.
    pub fn committed_len(&self) -> LogIndex {
        self.committed.len() as LogIndex
    }

    /// Election safety: at most one leader per term.
    pub fn on_leader(&mut self, id: NodeId, term: Term) {
        if let Some(other) = self.leaders.insert(term, id)
            && other != id
        {
            self.fail(format!(
                "election safety: {other} and {id} both led term {term}"
            ));
        }
    }

    /// Leader completeness: a new leader's log (with its snapshot) holds
    /// every entry committed so far, applied by anyone or not.
    pub fn on_leader_log(&mut self, id: NodeId, term: Term, storage: &MemStorage) {
        self.checks += 1;
        let snap = storage.snapshot().map(|s| s.meta).unwrap_or_default();
        if snap.index > 0 {
            self.check_snapshot(id, snap.index, snap.term);
        }
        let first = storage.first_index() as usize;
        let mut failure = None;
        for (i, (t, d)) in self.committed.iter().enumerate().skip(first - 1) {
            let index = i as LogIndex + 1;
            if *t >= term {
                continue;
            }
            let held = storage
                .entries(index, index + 1, u64::MAX)
                .ok()
                .and_then(|e| e.into_iter().next());
            match held {
                Some(e) if e.term == *t && digest(&e) == *d => {}
                other => {
                    failure = Some(format!(
                        "leader completeness: leader {id} of term {term} lacks committed entry {index} (term {t}); holds {other:?}"
                    ));
                    break;
                }
            }
        }
        if let Some(f) = failure {
            self.fail(f);
        }
    }

    fn check_snapshot(&mut self, id: NodeId, index: LogIndex, term: Term) {
        match self.committed.get((index - 1) as usize) {
            Some((t, _)) if *t == term => {}
            Some((t, _)) => self.fail(format!(
                "node {id} holds a snapshot at {index} of term {term}, but term {t} was committed there"
            )),
            None => self.fail(format!(
                "node {id} holds a snapshot at {index}, beyond anything committed ({})",
                self.committed.len()
            )),
        }
    }

    /// A node installed (or restarted from) a snapshot at `index`: it must
    /// match the committed prefix; its state machine continues from there.
    pub fn on_snapshot(&mut self, id: NodeId, index: LogIndex, term: Term) {
        if index > 0 {
            self.check_snapshot(id, index, term);
        }
        self.applied_by.insert(id, index);
    }

    /// Log matching: entries with the same index and term have the same
    /// content and follow entries of the same term, so logs agree on every
    /// prefix ending at a common (index, term).
    pub fn on_persist(&mut self, id: NodeId, storage: &MemStorage, entries: &[Entry]) {
        let Some(first) = entries.first() else { return };
        self.checks += 1;
        let mut prev_term = if first.index == 1 {
            Term(0)
        } else {
            match storage.term(first.index - 1) {
                Ok(t) => t,
                Err(e) => {
                    self.fail(format!(
                        "node {id}: persisting from {} without entry before it: {e}",
                        first.index
                    ));
                    return;
                }
            }
        };
        for e in entries {
            let key = (e.index, e.term);
            let value = (digest(e), prev_term);
            match self.seen.get(&key) {
                Some(v) if *v != value => {
                    self.fail(format!(
                        "log matching: node {id} holds entry {} of term {} that differs from another node's (content or previous term {} vs {})",
                        e.index, e.term, prev_term, v.1
                    ));
                    return;
                }
                Some(_) => {}
                None => {
                    self.seen.insert(key, value);
                }
            }
            prev_term = e.term;
        }
    }

    /// State machine safety: no two members are handed different entries to
    /// apply at one index. Called with a `Ready`'s committed entries when it
    /// persists (those already durable apply just before: a violation is
    /// still caught in the same step, before clients see the answers),
    /// also when the member crashes before applying them: they were
    /// committed all the same.
    pub fn on_committed(&mut self, id: NodeId, entries: &[Entry]) {
        for entry in entries {
            self.checks += 1;
            self.record_committed(id, entry.index, entry.term, digest(entry));
        }
    }

    fn record_committed(&mut self, id: NodeId, index: LogIndex, term: Term, digest: u64) {
        let slot = (index - 1) as usize;
        let value = (term, digest);
        if slot < self.committed.len() {
            if self.committed[slot] != value {
                self.fail(format!(
                    "state machine safety: node {id} holds entry {index} of term {term} as committed, but term {} was committed there",
                    self.committed[slot].0
                ));
            }
        } else if slot == self.committed.len() {
            self.committed.push(value);
        } else {
            self.fail(format!(
                "node {id} committed {index} beyond the known prefix ({})",
                self.committed.len()
            ));
        }
    }

    /// Apply order: apply indexes only move forward, one at a time, within a
    /// node's life (what is applied was checked by [`Self::on_committed`]).
    pub fn on_apply(&mut self, id: NodeId, entry: &Entry) {
        self.checks += 1;
        let last = self.applied_by.get(&id).copied().unwrap_or(0);
        if entry.index != last + 1 {
            self.fail(format!(
                "apply order: node {id} applied {} after {}",
                entry.index, last
            ));
            return;
        }
        self.applied_by.insert(id, entry.index);
    }

    /// Commit indexes never go back, not even across restarts (they are
    /// persisted), and never pass the log's end; the entry a member's commit
    /// index points at is the committed one (by log matching, so is every
    /// entry before it), and entries up to it that its log holds join the
    /// committed prefix even before anyone applies them.
    /// Durability of commitment: the entry a leader committed at `index`
    /// is durable on `holders` of its `voters` (in their storage at its
    /// term and synced, or covered by their snapshot). Fewer than a
    /// majority means a count of the leader's own entries or an
    /// acknowledgement ran ahead of a sync: a crash could lose it.
    pub fn on_committed_durable(
        &mut self,
        leader: NodeId,
        index: LogIndex,
        holders: usize,
        voters: usize,
    ) {
        self.checks += 1;
        if holders * 2 <= voters {
            self.fail(format!(
                "durability: leader {leader} committed entry {index}, durable on only {holders} of {voters} voters"
            ));
        }
    }

    /// A crash took away entries member `id` had written but not synced,
    /// at or below its saved commit index: it restarts with `commit` and
    /// learns the rest from the leader again (Raft's commit index is
    /// volatile; a member's entries count toward commitment only once
    /// synced, so those were durable elsewhere).
    pub fn on_commit_lost(&mut self, id: NodeId, commit: LogIndex) {
        self.commit.insert(id, commit);
    }

    pub fn on_commit(
        &mut self,
        id: NodeId,
        commit: LogIndex,
        last_index: LogIndex,
        storage: &MemStorage,
    ) {
        self.checks += 1;
        let before = self.commit.get(&id).copied().unwrap_or(0);
        if commit < before {
            self.fail(format!(
                "commit index of node {id} went back from {before} to {commit}"
            ));
        }
        if commit > last_index {
            self.fail(format!(
                "node {id} commit {commit} beyond its last index {last_index}"
            ));
        }
        self.commit.insert(id, commit.max(before));
        // Entries the storage holds (not compacted, already persisted).
        let lo = (self.committed.len() as LogIndex + 1)
            .min(commit)
            .max(storage.first_index());
        if commit == 0 || lo > commit.min(storage.last_index()) {
            return;
        }
        let held = storage
            .entries(lo, commit.min(storage.last_index()) + 1, u64::MAX)
            .unwrap_or_default();
        for e in held {
            self.record_committed(id, e.index, e.term, digest(&e));
        }
    }
}
