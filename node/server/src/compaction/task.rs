//! [`spawn_auto_compaction`]: the compactor task of one member.

use super::policy::{AutoCompaction, CompactionPolicy};
use crate::driver::{DriverError, RaftHandle};
use crate::kv::{KvCommand, KvError, KvOp};
use crate::state::NodeStateMachine;
use flotilla_proto::etcdserverpb::CompactionRequest;
use flotilla_raft::Role;
use std::time::Instant;
use tokio::task::JoinHandle;

/// Runs auto-compaction as `config` says until `shutdown` completes (at
/// once when it is off). Every member samples its applied revision; the
/// leader alone proposes a Compact through Raft when the policy says one
/// is due, so every replica compacts at the same log position. A proposal
/// that fails (lost leadership, a busy driver) is tried again at a later
/// sample; one refused because the store is compacted further already
/// counts as done, as in etcd.
pub fn spawn_auto_compaction(
    handle: RaftHandle<NodeStateMachine>,
    config: AutoCompaction,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let Some(policy) = CompactionPolicy::new(config, Instant::now()) else {
            return;
        };
        tracing::info!(?config, "auto-compaction on");
        tokio::select! {
            () = shutdown => {}
            () = compaction_loop(handle, policy) => {}
        }
    })
}

async fn compaction_loop(handle: RaftHandle<NodeStateMachine>, mut policy: CompactionPolicy) {
    let mut tick = tokio::time::interval(policy.sample_interval());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Ok((revision, compact_revision)) = handle
            .read_local(|sm| (sm.kv().revision(), sm.kv().compact_revision()))
            .await
        else {
            // The driver stopped.
            return;
        };
        let now = Instant::now();
        policy.record(now, revision);
        if handle.status().role != Role::Leader {
            continue;
        }
        let Some(at) = policy.due(now, compact_revision) else {
            continue;
        };
        let command = KvCommand::new(KvOp::Compaction(CompactionRequest {
            revision: at,
            physical: false,
        }));
        match handle.propose(command.encode_to_bytes()).await {
            Ok(output) => match output.result {
                Ok(_) | Err(KvError::Compacted { .. }) => {
                    tracing::info!(revision = at, "auto-compacted");
                    policy.compacted(Instant::now(), at);
                }
                Err(e) => tracing::warn!(revision = at, error = %e, "auto-compaction refused"),
            },
            Err(DriverError::Stopped) => return,
            Err(e) => tracing::debug!(revision = at, error = %e, "auto-compaction not applied"),
        }
    }
}
