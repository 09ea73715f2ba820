//! Snapshots written off the driver, as the tokio driver's snapshot thread
//! writes them: the state frozen and the meta prepared when the snapshot is
//! due ([`super::node::SnapshotWrite`]), the encoding and the storage's
//! writer some ticks later, then the log compacted to it
//! (`Raft::compact_written`). A member may crash in between.

use super::cluster::Cluster;
use super::node::{Contents, NodeStep, contents, state_config};
use flotilla_node::state::NodeStateMachine;
use flotilla_raft::{NodeId, Snapshot, Storage};
use rand::Rng;

impl Cluster {
    /// Finishes the snapshot writes that are due, as the driver does when
    /// its writing thread reports: the frozen state is encoded and written,
    /// then the log is compacted to it. Sometimes the member crashes in
    /// between and restarts from what its storage holds.
    pub(super) fn finish_snapshot_writes(&mut self) {
        for i in 0..self.nodes.len() {
            let node = &mut self.nodes[i];
            if !node.is_up() || node.writing.as_ref().is_none_or(|w| w.due > self.now) {
                continue;
            }
            let write = node.writing.take().expect("checked");
            let id = node.id;
            let (snapshot, frozen) = match write.write() {
                Ok(written) => written,
                Err(e) => panic!(
                    "member {id}: snapshot write failed: {e} (seed {})",
                    self.seed
                ),
            };
            self.check_written(id, &snapshot, &frozen);
            if self.crash_after_snapshot_write > 0.0
                && self.rng.random_bool(self.crash_after_snapshot_write)
            {
                self.crash(id);
                self.restart(id);
                let recovered = self.node(id).raft().map(|r| r.storage().snapshot_index());
                if recovered.is_some_and(|r| r >= snapshot.meta.index) {
                    self.snapshots_recovered_unrecorded += 1;
                }
                continue;
            }
            let catchup = self.template.snapshot_catchup_entries;
            let violation = self.with_effects(i, |step, _, _| {
                Ok(compact_written(step, &snapshot, catchup))
            });
            self.snapshots_compacted += 1;
            self.nodes[i].snapshots_taken += 1;
            if let Some(Some(v)) = violation {
                self.snapshot_violation
                    .get_or_insert(format!("node {id}: {v}"));
            }
        }
    }

    /// A written snapshot holds the state as it was frozen, whatever the
    /// member applied while it was written.
    fn check_written(&mut self, id: NodeId, snapshot: &Snapshot, frozen: &Contents) {
        let (mut sm, _) = NodeStateMachine::new(state_config());
        if let Err(e) = flotilla_node::driver::StateMachine::restore(&mut sm, snapshot) {
            self.snapshot_violation.get_or_insert(format!(
                "node {id}: its snapshot at {} does not restore: {e}",
                snapshot.meta.index
            ));
            return;
        }
        let restored = contents(&sm);
        if restored != *frozen || sm.kv().applied_index() > snapshot.meta.index {
            self.snapshot_violation.get_or_insert(format!(
                "node {id}: snapshot at index {} holds revision {} ({} keys, applied {}), but the state frozen for it was revision {} ({} keys)",
                snapshot.meta.index,
                restored.0,
                restored.1.len(),
                sm.kv().applied_index(),
                frozen.0,
                frozen.1.len()
            ));
        }
    }
}

/// Records a written snapshot by compacting the log to it, as the driver
/// does once its writing thread reports, and checks the compaction: the
/// snapshot is held, no entry after it is gone or changed, and the entries
/// kept before it for followers a little behind stay. Returns what went
/// wrong, if anything.
fn compact_written(step: &mut NodeStep, snapshot: &Snapshot, catchup: u64) -> Option<String> {
    let meta = &snapshot.meta;
    let storage = step.raft().storage();
    let (first, last, held) = (
        storage.first_index(),
        storage.last_index(),
        storage.snapshot_index(),
    );
    let after: Vec<_> = (meta.index + 1..=last)
        .map(|i| storage.term(i).ok())
        .collect();
    if let Err(e) = step
        .raft_mut()
        .compact_written(meta, snapshot.data.len() as u64)
    {
        return Some(format!("compact_written at {} failed: {e}", meta.index));
    }
    let storage = step.raft().storage();
    if held >= meta.index {
        // A newer snapshot was installed meanwhile: nothing to do.
        let unchanged = (storage.first_index(), storage.snapshot_index()) == (first, held);
        return (!unchanged).then(|| {
            format!(
                "a snapshot at {} under the held one at {held} changed the log",
                meta.index
            )
        });
    }
    if storage.snapshot_index() != meta.index {
        return Some(format!(
            "compacted to a snapshot at {} but storage holds one at {}",
            meta.index,
            storage.snapshot_index()
        ));
    }
    let after_now: Vec<_> = (meta.index + 1..=last)
        .map(|i| storage.term(i).ok())
        .collect();
    if storage.last_index() != last || after_now != after {
        return Some(format!(
            "compaction to the snapshot at {} changed the log after it (last {last} -> {}, first {})",
            meta.index,
            storage.last_index(),
            storage.first_index()
        ));
    }
    let keep_from = first.max(meta.index.saturating_sub(catchup) + 1);
    if storage.first_index() != keep_from {
        return Some(format!(
            "compaction to the snapshot at {} left the log starting at {}, not {keep_from}",
            meta.index,
            storage.first_index()
        ));
    }
    None
}
