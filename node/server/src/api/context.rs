//! [`ApiContext`]: what the client services share.

use super::admission::Admission;
use super::errors::{LeaderHint, driver_status};
use super::forward::Forwarder;
use super::gate::FeatureGate;
use super::header::HeaderSource;
use crate::driver::{DriverError, RaftHandle};
use crate::kv::Lessor;
use crate::state::NodeStateMachine;
use flotilla_raft::{NodeId, Role};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, MutexGuard};
use tonic::Status;
use tonic::transport::Channel;

/// The driver handle, header source, limits and forwarding channels of one
/// member. Cheap to clone.
#[derive(Clone, Debug)]
pub struct ApiContext {
    /// The driver.
    pub raft: RaftHandle<NodeStateMachine>,
    /// Response headers.
    pub header: HeaderSource,
    /// This member's id.
    pub member_id: u64,
    /// Largest request accepted, in encoded bytes.
    pub max_request_bytes: usize,
    /// Channels to other members.
    pub forwarder: Forwarder,
    /// The lease timers (deadlines only on the leader), shared with the
    /// state machine.
    pub lessor: Arc<Mutex<Lessor>>,
    /// The checks every client write passes before it is proposed.
    pub admission: Admission,
    /// Set while this member is raising the NOSPACE alarm, so a burst of
    /// writes past the quota raises it once.
    pub raising_nospace: Arc<AtomicBool>,
    /// Whether what this member proposes may carry marks (every member
    /// understands them).
    pub features: FeatureGate,
}

impl ApiContext {
    /// The lessor, locked.
    pub fn lessor(&self) -> MutexGuard<'_, Lessor> {
        self.lessor.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The leader's id and client URL as far as this member knows: `id`
    /// from the driver, the URL from the member table.
    pub async fn leader_hint(&self, id: Option<NodeId>) -> LeaderHint {
        let Some(id) = id.filter(|id| id.is_some()) else {
            return LeaderHint::default();
        };
        let endpoint = self
            .raft
            .read_local(move |sm| {
                sm.kv()
                    .member(id.0)
                    .and_then(|m| m.client_ur_ls.first().cloned())
            })
            .await
            .ok()
            .flatten();
        LeaderHint {
            id: Some(id.0),
            endpoint,
        }
    }

    /// A channel to the leader when this member does not lead; `None` to
    /// serve here. A follower that cannot name the leader's client URL
    /// answers `UNAVAILABLE`.
    pub async fn leader_channel(&self) -> Result<Option<Channel>, Status> {
        let s = self.raft.status();
        if s.role == Role::Leader {
            return Ok(None);
        }
        let leader = s.leader.is_some().then_some(s.leader);
        let hint = self.leader_hint(leader).await;
        match &hint.endpoint {
            Some(url) if hint.id != Some(self.member_id) => Ok(Some(self.forwarder.channel(url)?)),
            _ => Err(driver_status(
                &DriverError::NotLeader {
                    leader_hint: leader,
                },
                &LeaderHint::default(),
            )),
        }
    }

    /// `e` as a status, with the leader hint looked up when it is a
    /// `NotLeader`.
    pub async fn status_of(&self, e: &DriverError) -> Status {
        let hint = match e {
            DriverError::NotLeader { leader_hint } => self.leader_hint(*leader_hint).await,
            _ => LeaderHint::default(),
        };
        driver_status(e, &hint)
    }
}
