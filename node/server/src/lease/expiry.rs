//! The leader's lease expiry loop.

use crate::driver::{DriverError, RaftHandle};
use crate::kv::{KvCommand, KvError, KvOp, Lessor};
use crate::state::NodeStateMachine;
use flotilla_proto::etcdserverpb::LeaseRevokeRequest;
use flotilla_raft::Role;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::task::{JoinHandle, JoinSet};

/// Timing of [`spawn_lease_expiry`]. How many leases one round revokes is
/// the lessor's own bound (`StateConfig::expired_per_call_max`).
#[derive(Clone, Debug)]
pub struct LeaseExpiryConfig {
    /// How often the leader checks for expired leases.
    pub check_interval: Duration,
}

impl Default for LeaseExpiryConfig {
    fn default() -> Self {
        LeaseExpiryConfig {
            check_interval: Duration::from_millis(100),
        }
    }
}

/// Runs the expiry loop until `shutdown` completes. It follows the driver's
/// status: on becoming leader it promotes the lessor (every lease restarts
/// at its full TTL, never dropped early); on losing leadership it demotes
/// it. While leading, every [`LeaseExpiryConfig::check_interval`] it
/// proposes a LeaseRevoke for each expired lease the lessor reports and
/// waits for that round's proposals before the next. A revoke that does not
/// go through is reported again by the lessor after its retry interval.
pub fn spawn_lease_expiry(
    handle: RaftHandle<NodeStateMachine>,
    lessor: Arc<Mutex<Lessor>>,
    config: LeaseExpiryConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        tokio::select! {
            () = shutdown => {}
            () = expiry_loop(handle, lessor.clone(), config) => {}
        }
        lock(&lessor).demote();
    })
}

fn lock(lessor: &Mutex<Lessor>) -> std::sync::MutexGuard<'_, Lessor> {
    lessor.lock().unwrap_or_else(|p| p.into_inner())
}

async fn expiry_loop(
    handle: RaftHandle<NodeStateMachine>,
    lessor: Arc<Mutex<Lessor>>,
    config: LeaseExpiryConfig,
) {
    // Leadership alone: the full status changes with every commit, and
    // waking this loop on each would cost every write a thread wake-up.
    let mut status = handle.watch_leadership();
    let every = config.check_interval.max(Duration::from_millis(1));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let leading = status.borrow_and_update().role == Role::Leader;
        let expired = expiry_round(&mut lock(&lessor), leading, Instant::now());
        if !expired.is_empty() && revoke_all(&handle, expired).await.is_err() {
            // The driver stopped.
            return;
        }
        tokio::select! {
            changed = status.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            _ = tick.tick() => {}
        }
    }
}

/// One round of the expiry loop's decisions, at `now`: a member that
/// became leader promotes its lessor (every lease restarts at its full
/// TTL), one that stopped leading demotes it, and a leader gets the leases
/// that expired, whose revokes it then proposes.
pub fn expiry_round(lessor: &mut Lessor, leading: bool, now: Instant) -> Vec<i64> {
    match (leading, lessor.is_primary()) {
        (true, false) => {
            tracing::info!(leases = lessor.len(), "leader: lease timers restarted");
            lessor.promote(now);
        }
        (false, true) => lessor.demote(),
        _ => {}
    }
    if leading {
        lessor.expired(now)
    } else {
        Vec::new()
    }
}

/// Proposes one round's revokes concurrently and waits for them all.
async fn revoke_all(
    handle: &RaftHandle<NodeStateMachine>,
    ids: Vec<i64>,
) -> Result<(), DriverError> {
    let mut proposals = JoinSet::new();
    for id in ids {
        let handle = handle.clone();
        proposals.spawn(async move {
            let command = KvCommand::new(KvOp::LeaseRevoke(LeaseRevokeRequest { id }));
            (id, handle.propose(command.encode_to_bytes()).await)
        });
    }
    let mut stopped = false;
    while let Some(done) = proposals.join_next().await {
        match done {
            Ok((_, Ok(output))) => match output.result {
                Ok(_) | Err(KvError::LeaseNotFound) => {}
                Err(e) => tracing::warn!(error = %e, "lease revoke rejected"),
            },
            Ok((_, Err(DriverError::Stopped))) => stopped = true,
            // Lost leadership, busy, ...: the lessor reports it again.
            Ok((id, Err(e))) => tracing::debug!(id, error = %e, "lease revoke not applied"),
            Err(e) => tracing::warn!(error = %e, "lease revoke task failed"),
        }
    }
    if stopped {
        Err(DriverError::Stopped)
    } else {
        Ok(())
    }
}
