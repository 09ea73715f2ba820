//! What watchers see, checked against the store's history.
//!
//! Every member's state machine hands each applied entry's events to its
//! live watchers (a broadcast the simulation reads). [`EventHistory`] keeps
//! the first member's events of each revision and checks that every other
//! member produces the same events at that revision (so a key attached to a
//! revoked or expired lease disappears at one revision everywhere), and
//! that each member's live events move one revision at a time (no gap, no
//! duplicate). A watcher's history catch-up ([`EventHistory::check_catch_up`])
//! must return exactly the events of the history from its start revision
//! on, in order, or the compacted error when its start is compacted.

use flotilla_node::kv::{KvError, KvView};
use flotilla_node::state::AppliedEvents;
use flotilla_proto::mvccpb::Event;
use flotilla_proto::mvccpb::event::EventType;
use flotilla_raft::NodeId;
use std::collections::BTreeMap;

/// A delete a lease's revoke made (the keys attached to it go when it is
/// revoked or expires): first applied at `applied_at`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseDelete {
    /// The key.
    pub key: String,
    /// The lease it was attached to.
    pub lease: i64,
    /// Virtual time the first member applied it.
    pub applied_at: u64,
}

/// Each revision's events, as the first member to apply it produced them.
#[derive(Debug, Default)]
pub struct EventHistory {
    by_revision: BTreeMap<i64, Vec<Event>>,
    /// Deletes of keys attached to leases not yet handed to the clients'
    /// history.
    pub lease_deletes: Vec<LeaseDelete>,
    /// Catch-ups checked, and events they compared.
    pub catch_ups: u64,
    /// Catch-ups refused because their start was compacted.
    pub catch_ups_compacted: u64,
    /// Revisions whose events more than one member produced (compared).
    pub revisions_compared: u64,
    violation: Option<String>,
}

impl EventHistory {
    /// The first inconsistency found, if any.
    pub fn violation(&self) -> Option<&str> {
        self.violation.as_deref()
    }

    /// Records an inconsistency found elsewhere.
    pub fn fail(&mut self, what: String) {
        self.violation.get_or_insert(what);
    }

    /// Member `node` applied an entry: its events at `applied.revision`,
    /// after its live events had reached `*revision`.
    pub fn on_applied(
        &mut self,
        node: NodeId,
        applied: &AppliedEvents,
        revision: &mut i64,
        now: u64,
    ) {
        if applied.revision != *revision + 1 {
            self.fail(format!(
                "node {node}: live events of revision {} follow revision {}: a watcher would see a {}",
                applied.revision,
                revision,
                if applied.revision <= *revision {
                    "duplicate"
                } else {
                    "gap"
                }
            ));
        }
        *revision = applied.revision;
        match self.by_revision.get(&applied.revision) {
            Some(first) => {
                self.revisions_compared += 1;
                if *first != applied.events {
                    let first = first.clone();
                    self.fail(format!(
                        "node {node}: revision {} has events {:?}, another member's had {first:?}",
                        applied.revision, applied.events
                    ));
                }
            }
            None => {
                for e in &applied.events {
                    let lease = e.prev_kv.as_ref().map_or(0, |kv| kv.lease);
                    let key = e.kv.as_ref().map(|kv| kv.key.clone()).unwrap_or_default();
                    if e.r#type == EventType::Delete as i32 && lease != 0 {
                        self.lease_deletes.push(LeaseDelete {
                            key: String::from_utf8_lossy(&key).into_owned(),
                            lease,
                            applied_at: now,
                        });
                    }
                }
                self.by_revision
                    .insert(applied.revision, applied.events.clone());
            }
        }
    }

    /// A watcher of the whole key space starting at `start` catches up on
    /// `view` (member `node`'s store) in pages of about `page` events, as
    /// the watch service does: it must get exactly the history's events of
    /// revisions `start..=` the view's, in order, or the compacted error
    /// if `start` is below the view's compaction (etcd keeps the compacted
    /// revision itself).
    pub fn check_catch_up(&mut self, node: NodeId, view: &KvView, start: i64, page: usize) {
        let (compacted, revision) = (view.compact_revision(), view.store_revision());
        let mut got = Vec::new();
        let mut from = start;
        while from <= revision {
            match view.events(&[0], &[0], from, page) {
                Ok(events) => {
                    let Some(last) = events.last() else { break };
                    from = last.kv.as_ref().map_or(i64::MAX, |kv| kv.mod_revision) + 1;
                    got.extend(events);
                }
                Err(KvError::Compacted { compact_revision }) => {
                    if from >= compacted || compact_revision != compacted {
                        self.fail(format!(
                            "node {node}: a watch from revision {from} was refused as compacted at {compact_revision}, \
                             but the store is compacted at {compacted}"
                        ));
                    }
                    self.catch_ups_compacted += 1;
                    return;
                }
                Err(e) => {
                    self.fail(format!("node {node}: a watch from {from} failed: {e}"));
                    return;
                }
            }
        }
        if start < compacted {
            self.fail(format!(
                "node {node}: a watch from revision {start} caught up although the store is compacted at {compacted}"
            ));
            return;
        }
        self.catch_ups += 1;
        let expected: Vec<Event> = self
            .by_revision
            .range(start..revision + 1)
            .flat_map(|(_, events)| events.iter().cloned())
            .map(without_prev)
            .collect();
        let got: Vec<Event> = got.into_iter().map(without_prev).collect();
        // Compaction at revision C keeps the versions live at C but drops
        // a deletion at C (as etcd's does): a watch from C itself may not
        // see deletes of revision C. Nothing else may differ.
        let kept = |e: &Event| {
            !(start == compacted
                && e.r#type == EventType::Delete as i32
                && e.kv.as_ref().is_some_and(|kv| kv.mod_revision == compacted))
        };
        let (got, expected): (Vec<Event>, Vec<Event>) = (
            got.into_iter().filter(kept).collect(),
            expected.into_iter().filter(kept).collect(),
        );
        if got != expected {
            self.fail(format!(
                "node {node}: a watch from revision {start} (store at {revision}, compacted at {compacted}) caught up on {} events {}, the history has {} {}",
                got.len(),
                summary(&got),
                expected.len(),
                summary(&expected)
            ));
        }
    }
}

/// An event as catch-up and live delivery agree on it: live events carry
/// the previous version where it is retained, catch-up may not.
fn without_prev(mut e: Event) -> Event {
    e.prev_kv = None;
    e
}

fn summary(events: &[Event]) -> String {
    let parts: Vec<String> = events
        .iter()
        .map(|e| {
            let kv = e.kv.clone().unwrap_or_default();
            format!(
                "{}{}@{}",
                if e.r#type == EventType::Delete as i32 {
                    "-"
                } else {
                    "+"
                },
                String::from_utf8_lossy(&kv.key),
                kv.mod_revision
            )
        })
        .collect();
    format!("[{}]", parts.join(" "))
}
