//! [`publish_self`]: a member's own entry in the member table, like etcd's
//! `publish`.

use super::cluster::{ClusterService, publish_request};
use crate::driver::RaftHandle;
use crate::state::NodeStateMachine;
use flotilla_proto::etcdserverpb::Member;
use std::time::Duration;
use tokio::sync::watch;

/// Pause between attempts.
const RETRY: Duration = Duration::from_millis(100);

/// Records this member (`me`: id, name, peer and client URLs) in the member
/// table once a leader is known, through `cluster` (which forwards to the
/// leader), and retries until this member's own table shows it. Idempotent;
/// keeps the learner flag the table has. Returns once published, or when
/// `shutdown` turns true.
pub async fn publish_self(
    raft: RaftHandle<NodeStateMachine>,
    cluster: ClusterService,
    me: Member,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut status = raft.watch_status();
    loop {
        if *shutdown.borrow() {
            return;
        }
        if status.borrow().leader.is_some() {
            let id = me.id;
            let current = raft
                .read_local(move |sm| sm.kv().member(id).cloned())
                .await
                .ok()
                .flatten();
            let published = current.as_ref().is_some_and(|m| {
                m.name == me.name
                    && m.client_ur_ls == me.client_ur_ls
                    && m.peer_ur_ls == me.peer_ur_ls
            });
            if published {
                tracing::info!(member = %format!("{:x}", me.id), "published to the member table");
                return;
            }
            match publish_request(&cluster, &me).await {
                Ok(()) => {}
                // Refused for good (this member was removed): stop trying.
                Err(e) if e.code() == tonic::Code::InvalidArgument => {
                    tracing::warn!(error = %e, "cannot publish to the member table");
                    return;
                }
                Err(e) => tracing::debug!(error = %e, "publishing to the member table; retrying"),
            }
        }
        tokio::select! {
            _ = shutdown.changed() => {}
            _ = status.changed() => {}
            _ = tokio::time::sleep(RETRY) => {}
        }
    }
}
