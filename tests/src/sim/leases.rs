//! Leases and watches in the cluster: each member's live events read
//! after every `Ready` and checked against the history
//! ([`super::watch::EventHistory`]), the leader's lease expiry loop run on
//! the virtual clock, and watchers catching up from old revisions.

use super::cluster::Cluster;
use super::node::Proposal;
use flotilla_node::kv::{KvCommand, KvOp};
use flotilla_proto::etcdserverpb::LeaseRevokeRequest;
use flotilla_raft::NodeId;
use rand::Rng;

impl Cluster {
    /// Reads what member `i`'s live watchers would have been sent since
    /// the last call, and checks it against the history.
    pub(super) fn drain_events(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        let Some(rx) = node.applied_events.as_mut() else {
            return;
        };
        loop {
            match rx.try_recv() {
                Ok(applied) => self.event_history.on_applied(
                    node.id,
                    &applied,
                    &mut node.event_revision,
                    self.now,
                ),
                Err(tokio::sync::broadcast::error::TryRecvError::Lagged(n)) => {
                    panic!(
                        "node {}: {n} applied events lost: the simulation reads them after every Ready (seed {})",
                        node.id, self.seed
                    );
                }
                Err(_) => return,
            }
        }
    }

    /// A leader's lease expiry loop, one round on every running member (the
    /// node's own round: promote or demote the lessor, then revoke what
    /// expired, through the log).
    pub(super) fn expire_leases(&mut self) {
        let now = self.instant();
        for i in 0..self.nodes.len() {
            let node = &self.nodes[i];
            let (Some(lessor), Some(role)) = (node.lessor.clone(), node.role()) else {
                continue;
            };
            let id = node.id;
            let expired = {
                let mut lessor = lessor.lock().unwrap_or_else(|p| p.into_inner());
                flotilla_node::lease::expiry_round(
                    &mut lessor,
                    role == flotilla_raft::Role::Leader,
                    now,
                )
            };
            for lease in expired {
                self.check_expiry(lease);
                let command = KvCommand::new(KvOp::LeaseRevoke(LeaseRevokeRequest { id: lease }))
                    .with_batched_compaction(true);
                let proposal = Proposal { client: 0, seq: 0 };
                if let Some(Ok(())) = self.propose(id, command.encode_to_bytes(), proposal) {
                    self.expiry_revokes += 1;
                    self.note_revoke(lease);
                }
            }
        }
    }

    /// A client granted `lease` (asked now) or a leader renewed it now: it
    /// may not expire before `ttl_secs` from now.
    pub fn note_renewed(&mut self, lease: i64, ttl_secs: i64) {
        self.lease_renewed.insert(lease, (self.now, ttl_secs));
    }

    /// A leader's expiry round reports `lease` expired now: no grant or
    /// keepalive of it may be more recent than its TTL.
    fn check_expiry(&mut self, lease: i64) {
        let Some(&(renewed, ttl_secs)) = self.lease_renewed.get(&lease) else {
            return;
        };
        // A time unit is a millisecond.
        if self.now < renewed + ttl_secs as u64 * 1000 {
            self.event_history.fail(format!(
                "lease {lease} (TTL {ttl_secs} s) expired at {} ms, {} ms after it was last granted or kept alive",
                self.now,
                self.now - renewed
            ));
        }
    }

    /// A revoke of `lease` is proposed now.
    pub fn note_revoke(&mut self, lease: i64) {
        self.revokes_proposed.entry(lease).or_insert(self.now);
    }

    /// A watcher of the whole key space catches up from an old revision on
    /// a random running member, from its store as it stands.
    pub(super) fn catch_up_watch(&mut self) {
        let up: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| self.nodes[i].is_up())
            .collect();
        if up.is_empty() {
            return;
        }
        let i = up[self.check_rng.random_range(0..up.len())];
        // Not while its state machine applies a run elsewhere.
        let Some(sm) = self.nodes[i].sm() else {
            return;
        };
        let view = sm.kv().view();
        let (compacted, revision) = (view.compact_revision(), view.store_revision());
        let start = self
            .check_rng
            .random_range((compacted - 2).max(1)..=revision + 1);
        let page = self.check_rng.random_range(1..=4);
        let id = self.nodes[i].id;
        self.event_history.check_catch_up(id, &view, start, page);
        if let Some(orphan) = self.orphan_leased_key(id) {
            self.event_history.fail(orphan);
        }
    }

    /// A key member `id` holds attached to a lease its lease table no
    /// longer has (a revoke must delete every key attached to the lease, in
    /// the same revision), if any.
    pub fn orphan_leased_key(&self, id: NodeId) -> Option<String> {
        let kv = self.node(id).sm()?.kv();
        let all = super::kv::scan_request("\0", "\u{7f}", 0);
        let resp = kv.range(&all).expect("a range is valid");
        resp.kvs
            .iter()
            .find(|e| e.lease != 0 && !kv.leases().contains(e.lease))
            .map(|e| {
                format!(
                    "node {id}: key {} is attached to lease {}, which its lease table no longer holds",
                    String::from_utf8_lossy(&e.key),
                    e.lease
                )
            })
    }
}
