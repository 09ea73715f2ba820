//! [`ClusterService`]: etcd's Cluster service over the replicated member
//! table.
//!
//! Every change goes through [`Writes`], the one path of every write: a
//! follower hands it to the leader, which checks it against the table as
//! applied up to its commit index and proposes it. MemberAdd, MemberPromote
//! and MemberRemove each become **one** log entry that changes Raft's
//! configuration and the member table together, so no crash or leader
//! change can leave the two disagreeing; MemberUpdate (new peer URLs)
//! changes the table alone.
//!
//! As etcd's:
//! - MemberAdd gives the new member an id from its peer URLs and the time,
//!   so a member added again at the same address is a new member. It starts
//!   with `--initial-cluster-state existing` and learns its id and the
//!   cluster's from the running members ([`crate::join`]); until it runs and
//!   publishes itself its entry has no name.
//! - `isLearner` adds a learner (the safe way: it catches up before it
//!   counts); without it the member is a voter at once, refused when the
//!   voters that answered recently would not make the larger quorum
//!   ("re-configuration failed due to not enough started members").
//! - MemberPromote refuses a learner that is not caught up, and MemberRemove
//!   a removal that would leave no quorum that answered recently.

use super::context::ApiContext;
use super::write::Writes;
use crate::kv::{KvCommand, KvOp, KvResponse};
use flotilla_proto::etcdserverpb::cluster_server::Cluster;
use flotilla_proto::etcdserverpb::{
    Member, MemberAddRequest, MemberAddResponse, MemberListRequest, MemberListResponse,
    MemberPromoteRequest, MemberPromoteResponse, MemberRemoveRequest, MemberRemoveResponse,
    MemberUpdateRequest, MemberUpdateResponse,
};
use tonic::{Request, Response, Status};

/// etcd's Cluster service on one member.
#[derive(Clone, Debug)]
pub struct ClusterService {
    ctx: ApiContext,
    writes: Writes,
}

impl ClusterService {
    /// The service over `ctx`; changes take `writes`.
    pub fn new(ctx: ApiContext, writes: Writes) -> Self {
        ClusterService { ctx, writes }
    }

    /// Submits a membership operation; the member table afterwards, with
    /// this member's header.
    async fn change(&self, op: KvOp) -> Result<MemberListResponse, Status> {
        match self.writes.submit(KvCommand::new(op)).await? {
            KvResponse::Members(mut list) => {
                self.ctx.header.fill(&mut list.header);
                Ok(list)
            }
            _ => Err(Status::internal("flotilla: mismatched response kind")),
        }
    }
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn member_add(
        &self,
        request: Request<MemberAddRequest>,
    ) -> Result<Response<MemberAddResponse>, Status> {
        let req = request.into_inner();
        if req.peer_ur_ls.is_empty() || !req.peer_ur_ls.iter().all(|u| crate::kv::valid_peer_url(u))
        {
            return Err(Status::invalid_argument(
                "etcdserver: given member URLs are invalid",
            ));
        }
        let asked = req.peer_ur_ls.clone();
        let list = self
            .change(KvOp::MemberAdd(Member {
                id: 0,
                name: String::new(),
                peer_ur_ls: req.peer_ur_ls,
                client_ur_ls: Vec::new(),
                is_learner: req.is_learner,
            }))
            .await?;
        let member = list
            .members
            .iter()
            .find(|m| m.peer_ur_ls == asked)
            .cloned()
            .ok_or_else(|| Status::internal("flotilla: the added member is not in the table"))?;
        Ok(Response::new(MemberAddResponse {
            header: list.header,
            member: Some(member),
            members: list.members,
        }))
    }

    async fn member_remove(
        &self,
        request: Request<MemberRemoveRequest>,
    ) -> Result<Response<MemberRemoveResponse>, Status> {
        let list = self
            .change(KvOp::MemberRemove(request.into_inner()))
            .await?;
        Ok(Response::new(MemberRemoveResponse {
            header: list.header,
            members: list.members,
        }))
    }

    async fn member_update(
        &self,
        request: Request<MemberUpdateRequest>,
    ) -> Result<Response<MemberUpdateResponse>, Status> {
        let list = self
            .change(KvOp::MemberUpdate(request.into_inner()))
            .await?;
        Ok(Response::new(MemberUpdateResponse {
            header: list.header,
            members: list.members,
        }))
    }

    async fn member_list(
        &self,
        request: Request<MemberListRequest>,
    ) -> Result<Response<MemberListResponse>, Status> {
        let read = |sm: &crate::state::NodeStateMachine| (sm.kv().revision(), sm.kv().members());
        let result = if request.into_inner().linearizable {
            self.ctx.raft.read(read).await
        } else {
            self.ctx.raft.read_stale(read).await
        };
        match result {
            Ok((revision, members)) => Ok(Response::new(MemberListResponse {
                header: Some(self.ctx.header.header(revision)),
                members,
            })),
            Err(e) => Err(self.ctx.status_of(&e).await),
        }
    }

    async fn member_promote(
        &self,
        request: Request<MemberPromoteRequest>,
    ) -> Result<Response<MemberPromoteResponse>, Status> {
        let list = self
            .change(KvOp::MemberPromote(request.into_inner()))
            .await?;
        Ok(Response::new(MemberPromoteResponse {
            header: list.header,
            members: list.members,
        }))
    }
}
