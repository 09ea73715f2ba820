//! [`ApiContext`]: what the client services share.

use super::admission::{Admission, Refusal};
use super::errors::{LeaderHint, driver_status, kv_status};
use super::forward::FORWARDED_METADATA;
use super::forward::Forwarder;
use super::header::HeaderSource;
use crate::driver::{DriverError, RaftHandle};
use crate::kv::KvOp;
use crate::state::NodeStateMachine;
use flotilla_proto::etcdserverpb::alarm_request::AlarmAction;
use flotilla_proto::etcdserverpb::{AlarmRequest, AlarmType};
use flotilla_raft::{Bytes, NodeId, Role};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tonic::Status;
use tonic::metadata::MetadataMap;
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
    /// The checks every client write passes before it is proposed.
    pub admission: Admission,
    /// Set while this member is raising the NOSPACE alarm, so a burst of
    /// writes past the quota raises it once.
    pub raising_nospace: Arc<AtomicBool>,
}

impl ApiContext {
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

    /// A channel to the leader when this member does not lead and the
    /// request was not forwarded already; `None` to serve it here. A
    /// follower that cannot name the leader's client URL answers
    /// `UNAVAILABLE`.
    pub async fn leader_channel(&self, md: &MetadataMap) -> Result<Option<Channel>, Status> {
        let s = self.raft.status();
        if s.role == Role::Leader || md.contains_key(FORWARDED_METADATA) {
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

    /// Admits a client write (see [`Admission`]): the command to propose
    /// or forward, or the status to answer. A write past the quota also
    /// raises the NOSPACE alarm for this member, as etcd's quota check
    /// does, unless it is raised already.
    pub fn admit(&self, client_id: u64, seq: u64, op: KvOp) -> Result<Bytes, Status> {
        self.admission
            .admit(client_id, seq, op)
            .map_err(|refusal| self.refused(&refusal))
    }

    /// [`ApiContext::admit`]'s checks alone, for a write this member
    /// passes on to the leader as it is.
    pub fn check(&self, op: &KvOp) -> Result<(), Status> {
        self.admission
            .check(op)
            .map_err(|refusal| self.refused(&refusal))
    }

    fn refused(&self, refusal: &Refusal) -> Status {
        if *refusal == Refusal::NoSpace {
            self.raise_nospace();
        }
        kv_status(&refusal.error())
    }

    /// Proposes NOSPACE for this member, in the background, once at a
    /// time, and only while this member has not seen it raised.
    fn raise_nospace(&self) {
        if self.admission.nospace_raised() || self.raising_nospace.swap(true, Ordering::AcqRel) {
            return;
        }
        let ctx = self.clone();
        tokio::spawn(async move {
            let request = AlarmRequest {
                action: AlarmAction::Activate as i32,
                member_id: ctx.member_id,
                alarm: AlarmType::Nospace as i32,
            };
            match super::maintenance::change_alarm(&ctx, request, &MetadataMap::new()).await {
                Ok(_) => tracing::warn!(
                    member = %format!("{:x}", ctx.member_id),
                    "space quota exhausted: NOSPACE alarm raised; writes that add data are refused until it is disarmed"
                ),
                Err(status) => tracing::warn!(%status, "cannot raise the NOSPACE alarm"),
            }
            ctx.raising_nospace.store(false, Ordering::Release);
        });
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
