//! Membership changes (thesis §4): learners, and one voter change at a time.
//!
//! A change is a [`EntryKind::ConfChange`] entry carrying the whole new
//! configuration. Each member uses the latest configuration in its log,
//! committed or not (thesis §4.1), and falls back to the previous one if that
//! entry is truncated away. The leader accepts a change only when
//!
//! 1. it has committed an entry of its own term (the fix to the
//!    single-server-change bug, thesis §4.1 / Ongaro's 2015 raft-dev post), and
//! 2. no earlier change is still uncommitted,
//!
//! so configurations in any two adjacent log positions differ by one voter
//! and all majorities overlap. A leader that removes itself keeps leading
//! (without counting itself) until the change commits, then steps down.

use crate::error::ProposeError;
use crate::progress::{Inflights, Progress};
use crate::raft::Raft;
use crate::storage::Storage;
use crate::types::{ConfState, Entry, EntryKind, LogIndex, NodeId, Role, Term};
use bytes::Bytes;

/// One step of membership change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConfChange {
    /// Add a member that receives the log but does not vote.
    AddLearner(NodeId),
    /// Add a voter directly (etcd's plain member add). It counts toward
    /// every quorum from this entry on, before it holds any of the log, so
    /// prefer [`ConfChange::AddLearner`] then
    /// [`ConfChange::PromoteLearner`]; with the strict check, refused when
    /// the voters already there that answered recently would not make the
    /// larger quorum on their own.
    AddVoter(NodeId),
    /// Make a caught-up learner a voter.
    PromoteLearner(NodeId),
    /// Remove a voter or learner.
    RemoveNode(NodeId),
}

/// What a [`EntryKind::ConfChange`] entry carries: the whole configuration
/// after the change, then the application's context for it (for example the
/// member record the change adds): the application's view of the membership
/// and Raft's configuration change in one entry, so that no crash or leader
/// change can leave the two disagreeing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConfChangeData {
    /// The configuration in force from this entry on.
    pub conf: ConfState,
    /// The application's bytes, handed back when the entry is applied.
    pub context: Bytes,
}

impl ConfChangeData {
    /// The entry's bytes: [`ConfState::encode`] followed by the context.
    pub fn encode(&self) -> Bytes {
        let conf = self.conf.encode();
        let mut out = Vec::with_capacity(conf.len() + self.context.len());
        out.extend_from_slice(&conf);
        out.extend_from_slice(&self.context);
        Bytes::from(out)
    }

    /// Reads an entry's bytes; None when the configuration is malformed.
    /// Entries written before contexts existed decode with an empty one.
    pub fn decode(data: &Bytes) -> Option<ConfChangeData> {
        let (conf, used) = ConfState::decode_prefix(data)?;
        Some(ConfChangeData {
            conf,
            context: data.slice(used..),
        })
    }
}

/// The configuration history the log holds.
#[derive(Clone, Debug, Default)]
pub(crate) struct ConfHistory {
    /// In force at the snapshot (or the bootstrap configuration).
    pub(crate) base: ConfState,
    /// (index, configuration) of each change entry in the log, in order.
    pub(crate) changes: Vec<(LogIndex, ConfState)>,
}

impl ConfHistory {
    pub(crate) fn current(&self) -> &ConfState {
        self.changes.last().map_or(&self.base, |(_, c)| c)
    }

    /// The configuration in force at `index`.
    pub(crate) fn at(&self, index: LogIndex) -> &ConfState {
        self.changes
            .iter()
            .rev()
            .find(|(i, _)| *i <= index)
            .map_or(&self.base, |(_, c)| c)
    }

    pub(crate) fn last_change_index(&self) -> Option<LogIndex> {
        self.changes.last().map(|(i, _)| *i)
    }

    /// Entries from `entries[0].index` on replaced whatever the log held
    /// there: forget changes at or after it, record the new ones.
    pub(crate) fn on_append(&mut self, entries: &[Entry]) {
        let Some(first) = entries.first() else { return };
        self.changes.retain(|(i, _)| *i < first.index);
        for e in entries.iter().filter(|e| e.kind == EntryKind::ConfChange) {
            match ConfChangeData::decode(&e.data) {
                Some(data) => self.changes.push((e.index, data.conf)),
                None => tracing::error!(index = e.index, "undecodable configuration entry ignored"),
            }
        }
    }

    /// The log up to `index` became a snapshot.
    pub(crate) fn compact_to(&mut self, index: LogIndex) {
        self.base = self.at(index).clone();
        self.changes.retain(|(i, _)| *i > index);
    }

    pub(crate) fn reset(&mut self, base: ConfState) {
        self.base = base;
        self.changes.clear();
    }
}

impl<S: Storage> Raft<S> {
    /// Proposes one membership change. See the module docs for the rules.
    pub fn propose_conf_change(
        &mut self,
        change: ConfChange,
    ) -> Result<(LogIndex, Term), ProposeError> {
        self.propose_conf_change_with_context(change, Bytes::new())
    }

    /// Proposes one membership change carrying `context`, which the entry
    /// holds beside the new configuration ([`ConfChangeData`]) and the
    /// application reads when it applies the entry.
    pub fn propose_conf_change_with_context(
        &mut self,
        change: ConfChange,
        context: Bytes,
    ) -> Result<(LogIndex, Term), ProposeError> {
        self.check_can_propose()?;
        let reject = |reason: String| Err(ProposeError::ConfChangeRejected(reason));
        if !self.log.match_term(self.log.committed, self.term) {
            return reject(
                "the leader has not committed an entry of its term yet; retry shortly".into(),
            );
        }
        if self
            .confs
            .last_change_index()
            .is_some_and(|i| i > self.log.committed)
        {
            return reject("an earlier membership change is not committed yet".into());
        }
        let mut conf = self.confs.current().clone();
        match change {
            ConfChange::AddLearner(id) => {
                if !id.is_some() || conf.contains(id) {
                    return reject(format!("{id} is already a member (or invalid)"));
                }
                conf.learners.push(id);
            }
            ConfChange::AddVoter(id) => {
                if !id.is_some() || conf.contains(id) {
                    return reject(format!("{id} is already a member (or invalid)"));
                }
                let active = conf
                    .voters
                    .iter()
                    .filter(|v| self.recently_heard(**v))
                    .count();
                conf.voters.push(id);
                let quorum = conf.voters.len() / 2 + 1;
                // Growing a single member to two is how a cluster restored
                // from a backup grows back, as etcd allows.
                let regrowing = conf.voters.len() == 2 && active == 1;
                if self.config.strict_reconfig_check && active < quorum && !regrowing {
                    return reject(format!(
                        "adding {id} would need {quorum} voters for a quorum while {active} answered recently, below a quorum of {quorum}"
                    ));
                }
            }
            ConfChange::PromoteLearner(id) => {
                if !conf.learners.contains(&id) {
                    return reject(format!("{id} is not a learner"));
                }
                let matched = self.tracker.progress.get(&id).map_or(0, |p| p.match_index);
                if matched == 0 {
                    // However short the log, a learner that never answered
                    // may not be running at all: as a voter it would count
                    // against every quorum.
                    return reject(format!(
                        "learner {id} has acknowledged no entry yet; promote it once it is running and caught up"
                    ));
                }
                let lag = self.log.last_index().saturating_sub(matched);
                if lag > self.config.max_promote_lag_entries {
                    return reject(format!(
                        "learner {id} is {lag} entries behind (limit {}); promote it once caught up",
                        self.config.max_promote_lag_entries
                    ));
                }
                conf.learners.retain(|l| *l != id);
                conf.voters.push(id);
            }
            ConfChange::RemoveNode(id) => {
                if !conf.contains(id) {
                    return reject(format!("{id} is not a member"));
                }
                if conf.voters == [id] {
                    return reject("cannot remove the last voter".into());
                }
                conf.voters.retain(|v| *v != id);
                conf.learners.retain(|l| *l != id);
                if self.config.strict_reconfig_check {
                    let active = conf
                        .voters
                        .iter()
                        .filter(|v| self.recently_heard(**v))
                        .count();
                    let quorum = conf.voters.len() / 2 + 1;
                    if active < quorum {
                        return reject(format!(
                            "removing {id} would leave {active} of {} voters that answered recently, below a quorum of {quorum}",
                            conf.voters.len()
                        ));
                    }
                }
            }
        }
        tracing::info!(id = %self.id, ?change, "proposing membership change");
        let entry = Entry {
            term: self.term,
            index: self.log.last_index() + 1,
            kind: EntryKind::ConfChange,
            data: ConfChangeData { conf, context }.encode(),
        };
        let index = entry.index;
        self.uncommitted_bytes += entry.size_bytes();
        self.uncommitted_entries += 1;
        self.append_as_leader(&[entry]);
        Ok((index, self.term))
    }

    /// Whether `id` is this member or answered within the last election
    /// timeout.
    fn recently_heard(&self, id: NodeId) -> bool {
        id == self.id
            || self
                .tracker
                .progress
                .get(&id)
                .and_then(|p| p.last_heard_tick)
                .is_some_and(|t| {
                    self.now_ticks.saturating_sub(t) <= u64::from(self.config.election_ticks)
                })
    }

    /// The configuration in force (the latest in the log).
    pub fn conf_state(&self) -> ConfState {
        self.confs.current().clone()
    }

    /// Re-derives the tracker from the current configuration, keeping the
    /// progress of members that stay.
    pub(crate) fn sync_tracker(&mut self) {
        let conf = self.confs.current().clone();
        let next = self.log.last_index() + 1;
        let (max_msgs, max_bytes) = (
            self.config.max_inflight_msgs,
            self.config.max_inflight_bytes,
        );
        self.tracker.progress.retain(|id, _| conf.contains(*id));
        for (ids, learner) in [(&conf.voters, false), (&conf.learners, true)] {
            for id in ids {
                let p = self.tracker.progress.entry(*id).or_insert_with(|| {
                    Progress::new(next, Inflights::new(max_msgs, max_bytes), learner)
                });
                p.is_learner = learner;
            }
        }
        if self.role == Role::Leader
            && let Some(p) = self.tracker.progress.get_mut(&self.id)
        {
            // Its own match counts only what it has made durable.
            p.match_index = p.match_index.max(self.log.durable_last_index());
        }
    }

    /// Entries were appended (by the leader, or by a follower from `entries`
    /// on): track configuration entries among them.
    pub(crate) fn note_appended(&mut self, entries: &[Entry]) {
        let had_change = self
            .confs
            .changes
            .iter()
            .any(|(i, _)| entries.first().is_some_and(|e| *i >= e.index));
        let has_change = entries.iter().any(|e| e.kind == EntryKind::ConfChange);
        if had_change || has_change {
            self.confs.on_append(entries);
            self.sync_tracker();
            if self.role == Role::Leader {
                // The quorum may have changed.
                self.maybe_commit();
            }
        }
    }

    /// After the commit index moved: a leader whose own removal committed
    /// steps down (thesis §4.2.2).
    pub(crate) fn check_self_removal(&mut self) {
        if self.role == Role::Leader
            && !self.confs.current().contains(self.id)
            && self
                .confs
                .last_change_index()
                .is_some_and(|i| i <= self.log.committed)
        {
            tracing::info!(id = %self.id, "removed from the configuration: stepping down");
            let term = self.term;
            self.become_follower(term, NodeId::NONE);
        }
    }

    /// Scans the log after the snapshot for configuration entries, on
    /// start; `base` is the configuration at the snapshot. (Entries a
    /// compaction kept before the snapshot are only there to be sent.)
    pub(crate) fn load_conf_history(
        &mut self,
        base: ConfState,
    ) -> Result<(), crate::error::StorageError> {
        self.confs.reset(base);
        let first = self.log.snapshot_index() + 1;
        let last = self.log.last_index();
        if first <= last {
            let entries = self.log.entries(first, last + 1, u64::MAX)?;
            let changes: Vec<Entry> = entries
                .into_iter()
                .filter(|e| e.kind == EntryKind::ConfChange)
                .collect();
            self.confs.on_append(&changes);
        }
        self.sync_tracker();
        Ok(())
    }
}
