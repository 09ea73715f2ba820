//! A member's lifecycle under an orchestrator: handing leadership away
//! before it stops ([`HandOff`], run on SIGTERM and by `GET /prestop`, the
//! Kubernetes preStop hook), and knowing when it may take traffic
//! ([`track_readiness`], behind `/readyz`).

use crate::driver::{DriverError, RaftHandle, StateMachine};
use flotilla_raft::{NodeId, Role};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// How a [`HandOff`] ended well.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HandedOff {
    /// This member did not lead: nothing to hand over.
    NotLeader,
    /// Leadership went to `leader` (normally the voter asked, `to`), which
    /// this member now follows.
    Transferred {
        /// The voter the transfer was started towards.
        to: NodeId,
        /// The leader this member now knows.
        leader: NodeId,
    },
    /// This member is the only voter: it stops leading only by stopping.
    NoOtherVoter,
}

impl std::fmt::Display for HandedOff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HandedOff::NotLeader => write!(f, "this member does not lead"),
            HandedOff::Transferred { leader, .. } => {
                write!(f, "leadership handed to member {:x}", leader.0)
            }
            HandedOff::NoOtherVoter => write!(f, "this member is the only voter"),
        }
    }
}

/// Why a [`HandOff`] did not complete.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HandOffError {
    /// The bound passed with this member still leading, or with no new
    /// leader known yet.
    #[error("leadership was not handed over within {bound:?}: {detail}")]
    TimedOut {
        /// The bound.
        bound: Duration,
        /// Where it stood.
        detail: String,
    },
    /// The driver stopped.
    #[error("the raft driver has stopped")]
    Stopped,
}

/// Hands leadership away from this member, bounded in time: on the leader,
/// a transfer (TimeoutNow, thesis §3.10) to the most caught-up other voter,
/// then a wait until this member knows the new leader. Proposals are
/// refused meanwhile with a hint naming the target, so clients move on
/// with it; nothing acknowledged is lost, since the target is sent
/// TimeoutNow only once it holds the whole log. A transfer the core
/// abandons (after an election timeout) is started again while time is
/// left. Cheap to clone; running two at once is harmless.
#[derive(Debug)]
pub struct HandOff<M: StateMachine> {
    raft: RaftHandle<M>,
    bound: Duration,
    retry: Duration,
}

impl<M: StateMachine> Clone for HandOff<M> {
    fn clone(&self) -> Self {
        HandOff {
            raft: self.raft.clone(),
            bound: self.bound,
            retry: self.retry,
        }
    }
}

impl<M: StateMachine> HandOff<M> {
    /// A hand-off through `raft` that gives up after `bound`, starting the
    /// transfer again every `retry` (an election timeout: when the core
    /// abandons one) while this member still leads.
    pub fn new(raft: RaftHandle<M>, bound: Duration, retry: Duration) -> Self {
        HandOff {
            raft,
            bound,
            retry: retry.max(Duration::from_millis(10)),
        }
    }

    /// Its bound.
    pub fn bound(&self) -> Duration {
        self.bound
    }

    /// Runs the hand-off; see the type's docs.
    pub async fn run(&self) -> Result<HandedOff, HandOffError> {
        self.run_until(Instant::now() + self.bound).await
    }

    /// [`HandOff::run`] with its own deadline.
    pub async fn run_until(&self, deadline: Instant) -> Result<HandedOff, HandOffError> {
        let mut status = self.raft.watch_status();
        let mut target: Option<NodeId> = None;
        let mut next_try = Instant::now();
        loop {
            let s = *status.borrow_and_update();
            if s.role != Role::Leader {
                match target {
                    None => return Ok(HandedOff::NotLeader),
                    Some(to) if s.leader.is_some() && s.leader != s.id => {
                        return Ok(HandedOff::Transferred {
                            to,
                            leader: s.leader,
                        });
                    }
                    // Stepped down; the new leader is not known yet.
                    Some(_) => {}
                }
            } else if Instant::now() >= next_try {
                match self.raft.transfer_away().await {
                    Ok(Some(to)) => {
                        if target != Some(to) {
                            tracing::info!(to = %format!("{:x}", to.0), "handing leadership over");
                        }
                        target = Some(to);
                    }
                    Ok(None) => return Ok(HandedOff::NoOtherVoter),
                    // Lost leadership in between: the loop sees it.
                    Err(DriverError::NotLeader { .. }) => {}
                    Err(DriverError::Stopped) => return Err(HandOffError::Stopped),
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot start a leadership transfer");
                    }
                }
                next_try = Instant::now() + self.retry;
                continue;
            }
            let now = Instant::now();
            if now >= deadline {
                let detail = if s.role == Role::Leader {
                    match target {
                        Some(to) => format!("still leading; transferring to {:x}", to.0),
                        None => "still leading; no transfer started".to_string(),
                    }
                } else {
                    "stepped down, but no new leader is known yet".to_string()
                };
                return Err(HandOffError::TimedOut {
                    bound: self.bound,
                    detail,
                });
            }
            let wake = deadline.min(if s.role == Role::Leader {
                next_try
            } else {
                deadline
            });
            // A change or the wake-up time: look again either way.
            if let Ok(Err(_)) = tokio::time::timeout_at(wake, status.changed()).await {
                return Err(HandOffError::Stopped);
            }
        }
    }
}

/// How long [`track_readiness`] waits before trying again after a read
/// barrier failed (no leader yet, or its confirmation timed out).
const READINESS_RETRY: Duration = Duration::from_millis(100);

/// Sets `caught_up` once this member has applied everything committed when
/// it started or joined, then returns; returns early when `stop` is set or
/// the driver stops. It waits for a known leader, then runs a read barrier:
/// a ReadIndex, which asks the leader for its commit index and completes
/// once this member has applied up to it. That index is at least what was
/// committed when the member first saw the leader (a heartbeat's commit
/// index is capped at what the leader knows the member holds, so the
/// barrier is the stricter test), and once it passes the member stays
/// ready while it knows a leader (`/readyz`), so a follower busy applying
/// does not flap.
pub async fn track_readiness<M: StateMachine>(
    raft: RaftHandle<M>,
    caught_up: watch::Sender<bool>,
    mut stop: watch::Receiver<bool>,
) {
    let mut status = raft.watch_status();
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            known = status.wait_for(|s| s.leader.is_some()) => if known.is_err() {
                return;
            },
        }
        let barrier = tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            read = raft.read(|_| ()) => read,
        };
        match barrier {
            Ok(()) => {
                let applied = raft.status().applied;
                tracing::info!(applied, "caught up with the leader: ready for traffic");
                caught_up.send_replace(true);
                return;
            }
            Err(DriverError::Stopped) => return,
            Err(e) => tracing::debug!(error = %e, "read barrier failed; trying again"),
        }
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = tokio::time::sleep(READINESS_RETRY) => {}
        }
    }
}
