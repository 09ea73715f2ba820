//! [`publish_self`]: a member's own name and client URLs in the member
//! table, like etcd's `publish`, and the founders' table of a new cluster.

use super::write::Writes;
use crate::driver::RaftHandle;
use crate::kv::{KvCommand, KvOp, MemberSeed};
use crate::state::NodeStateMachine;
use flotilla_proto::etcdserverpb::Member;
use std::time::Duration;
use tokio::sync::watch;

/// Pause between attempts.
const RETRY: Duration = Duration::from_millis(100);
/// Longest pause between attempts that keep failing.
const RETRY_MAX: Duration = Duration::from_secs(2);

/// What this member's table says about it.
enum Standing {
    /// The cluster's table was never filled: the founders must be seeded.
    Unseeded,
    /// Listed as `me` says.
    Published,
    /// Listed, without this name or these client URLs yet.
    Listed,
    /// Not in the table (not yet replicated here, or not a member).
    Missing,
    /// Removed from the cluster.
    Removed,
}

async fn standing(raft: &RaftHandle<NodeStateMachine>, me: &Member) -> Option<Standing> {
    let me = me.clone();
    raft.read_local(move |sm| {
        let kv = sm.kv();
        if kv.members_unseeded() {
            return Standing::Unseeded;
        }
        if kv.is_removed_member(me.id) {
            return Standing::Removed;
        }
        match kv.member(me.id) {
            Some(m) if m.name == me.name && m.client_ur_ls == me.client_ur_ls => {
                Standing::Published
            }
            Some(_) => Standing::Listed,
            None => Standing::Missing,
        }
    })
    .await
    .ok()
}

/// Once a leader is known: seeds the founders (`founders`, this member's
/// bootstrap configuration, empty for a member that joined) into a table
/// that was never filled, then records this member's name and client URLs
/// (`me`) through the one write path, and retries until its own table
/// shows them. Returns once published, when this member turns out to be
/// removed, or when `shutdown` turns true.
pub async fn publish_self(
    raft: RaftHandle<NodeStateMachine>,
    writes: Writes,
    me: Member,
    founders: Vec<Member>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut status = raft.watch_status();
    let mut pause = RETRY;
    loop {
        if *shutdown.borrow() {
            return;
        }
        if status.borrow().leader.is_some() {
            let op = match standing(&raft, &me).await {
                Some(Standing::Published) => {
                    tracing::info!(member = %format!("{:x}", me.id), "published to the member table");
                    return;
                }
                Some(Standing::Removed) => {
                    tracing::error!(member = %format!("{:x}", me.id), "this member was removed from the cluster; not publishing");
                    return;
                }
                Some(Standing::Unseeded) if !founders.is_empty() => {
                    Some(KvOp::MemberSeed(MemberSeed {
                        members: founders.clone(),
                    }))
                }
                Some(Standing::Listed) => Some(KvOp::MemberPublish(me.clone())),
                // Wait for the table to reach this member.
                Some(Standing::Unseeded | Standing::Missing) | None => None,
            };
            if let Some(op) = op {
                match writes.submit(KvCommand::new(op)).await {
                    // Applied on the leader; look again once it reached
                    // this member's table.
                    Ok(_) => pause = RETRY,
                    Err(e) => {
                        tracing::debug!(error = %e, "publishing to the member table; retrying");
                        pause = (pause * 2).min(RETRY_MAX);
                    }
                }
            }
        }
        tokio::select! {
            _ = shutdown.changed() => {}
            _ = status.changed() => {}
            _ = tokio::time::sleep(pause) => {}
        }
    }
}
