//! [`MaintenanceService`]: etcd's Status and MoveLeader.

use super::context::ApiContext;
use flotilla_proto::etcdserverpb::maintenance_server::Maintenance;
use flotilla_proto::etcdserverpb::{
    MoveLeaderRequest, MoveLeaderResponse, StatusRequest, StatusResponse,
};
use flotilla_raft::NodeId;
use tonic::{Request, Response, Status};

/// The version Status reports: the etcd API level served, with Flotilla's
/// own version as a semver build suffix (etcdctl shows it as is).
pub const VERSION: &str = concat!("3.5.0+flotilla.", env!("CARGO_PKG_VERSION"));

/// etcd's Maintenance service on one member (Status, MoveLeader).
#[derive(Clone, Debug)]
pub struct MaintenanceService {
    ctx: ApiContext,
}

impl MaintenanceService {
    /// The service over `ctx`.
    pub fn new(ctx: ApiContext) -> Self {
        MaintenanceService { ctx }
    }
}

#[tonic::async_trait]
impl Maintenance for MaintenanceService {
    async fn status(
        &self,
        _request: Request<StatusRequest>,
    ) -> Result<Response<StatusResponse>, Status> {
        let me = self.ctx.member_id;
        let (revision, is_learner) = self
            .ctx
            .raft
            .read_local(move |sm| {
                let kv = sm.kv();
                (kv.revision(), kv.member(me).is_some_and(|m| m.is_learner))
            })
            .await
            .map_err(|e| super::errors::driver_status(&e, &Default::default()))?;
        let s = self.ctx.raft.status();
        Ok(Response::new(StatusResponse {
            header: Some(self.ctx.header.header(revision)),
            version: VERSION.to_string(),
            // The store keeps no byte count yet.
            db_size: 0,
            leader: s.leader.0,
            raft_index: s.commit,
            raft_term: s.term.0,
            raft_applied_index: s.applied,
            is_learner,
            ..Default::default()
        }))
    }

    async fn move_leader(
        &self,
        request: Request<MoveLeaderRequest>,
    ) -> Result<Response<MoveLeaderResponse>, Status> {
        let target = request.into_inner().target_id;
        if target == 0 {
            return Err(Status::invalid_argument(
                "etcdserver: bad leader transferee",
            ));
        }
        if let Err(e) = self.ctx.raft.transfer_leader(NodeId(target)).await {
            return Err(self.ctx.status_of(&e).await);
        }
        Ok(Response::new(MoveLeaderResponse {
            header: Some(self.ctx.header.header(0)),
        }))
    }
}
