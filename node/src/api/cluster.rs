//! [`ClusterService`]: etcd's Cluster service over the replicated member
//! table and Raft membership changes.
//!
//! Choices, documented here because they differ from etcd:
//!
//! - **MemberAdd only adds learners.** A request without `isLearner` is
//!   refused with `FAILED_PRECONDITION`: add the member as a learner, start
//!   it, then MemberPromote it once it has caught up. Adding a voter that
//!   holds no log yet would raise the quorum before the member can help
//!   reach it; etcd needs a flag for the same reason.
//! - **Member ids of added members** come from their first peer URL
//!   ([`member_id_for_peer_url`]); a member started with
//!   `--initial-cluster-state existing` derives its own id the same way,
//!   so both sides agree without a name. Founding members keep the id of
//!   their name (`config.rs`).
//! - **Writes on a follower** (add, remove, promote, update) are forwarded
//!   once to the leader, like KV writes.
//! - **Publishing.** MemberUpdate carrying the `flotilla-publish-name` and
//!   `flotilla-publish-client-urls` metadata also sets the member's name
//!   and client URLs, creating its entry if needed: that is how a member
//!   publishes itself ([`super::publish_self`]) through the leader.

use super::context::ApiContext;
use super::errors::kv_status;
use super::forward::mark_forwarded;
use crate::driver::DriverError;
use crate::kv::{KvCommand, KvOp, KvResponse};
use flotilla_proto::etcdserverpb::cluster_client::ClusterClient;
use flotilla_proto::etcdserverpb::cluster_server::Cluster;
use flotilla_proto::etcdserverpb::{
    Member, MemberAddRequest, MemberAddResponse, MemberListRequest, MemberListResponse,
    MemberPromoteRequest, MemberPromoteResponse, MemberRemoveRequest, MemberRemoveResponse,
    MemberUpdateRequest, MemberUpdateResponse,
};
use flotilla_raft::{ConfChange, NodeId};
use tonic::{Request, Response, Status};

/// Request metadata of a publishing member: its name.
pub const PUBLISH_NAME_METADATA: &str = "flotilla-publish-name";
/// Request metadata of a publishing member: its client URLs, comma-separated.
pub const PUBLISH_CLIENT_URLS_METADATA: &str = "flotilla-publish-client-urls";

/// The id of a member added by its peer URL: FNV-1a of the URL, never 0.
pub fn member_id_for_peer_url(peer_url: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in peer_url.trim_end_matches('/').as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h.max(1)
}

fn member_not_found() -> Status {
    Status::not_found("etcdserver: member not found")
}

/// etcd's Cluster service on one member.
#[derive(Clone, Debug)]
pub struct ClusterService {
    ctx: ApiContext,
}

impl ClusterService {
    /// The service over `ctx`.
    pub fn new(ctx: ApiContext) -> Self {
        ClusterService { ctx }
    }

    async fn client(
        &self,
        md: &tonic::metadata::MetadataMap,
    ) -> Result<Option<ClusterClient<tonic::transport::Channel>>, Status> {
        Ok(self.ctx.leader_channel(md).await?.map(ClusterClient::new))
    }

    async fn propose(&self, op: KvOp) -> Result<MemberListResponse, Status> {
        let command = KvCommand::new(op);
        match self.ctx.raft.propose(command.encode_to_bytes()).await {
            Ok(out) => match out.result {
                Ok(KvResponse::Members(mut list)) => {
                    self.ctx.header.fill(&mut list.header);
                    Ok(list)
                }
                Ok(_) => Err(Status::internal("flotilla: mismatched response kind")),
                Err(e) => Err(kv_status(&e)),
            },
            Err(e) => Err(self.ctx.status_of(&e).await),
        }
    }

    async fn conf_change(&self, change: ConfChange) -> Result<(), Status> {
        match self.ctx.raft.conf_change(change).await {
            Ok(_) => Ok(()),
            Err(DriverError::Rejected(reason)) => Err(Status::failed_precondition(match change {
                ConfChange::PromoteLearner(_) => format!(
                    "etcdserver: can only promote a learner member which is in sync with leader ({reason})"
                ),
                _ => format!("etcdserver: {reason}"),
            })),
            Err(e) => Err(self.ctx.status_of(&e).await),
        }
    }

    async fn member(&self, id: u64) -> Result<Option<Member>, Status> {
        self.ctx
            .raft
            .read_local(move |sm| sm.kv().member(id).cloned())
            .await
            .map_err(|e| super::errors::driver_status(&e, &Default::default()))
    }
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn member_add(
        &self,
        request: Request<MemberAddRequest>,
    ) -> Result<Response<MemberAddResponse>, Status> {
        if let Some(mut c) = self.client(request.metadata()).await? {
            return c.member_add(mark_forwarded(request)).await;
        }
        let req = request.into_inner();
        let Some(first) = req.peer_ur_ls.first() else {
            return Err(Status::invalid_argument(
                "etcdserver: given member URLs are invalid",
            ));
        };
        if !req.is_learner {
            return Err(Status::failed_precondition(
                "flotilla: add the member as a learner first (isLearner / --learner), start it, then promote it with MemberPromote once it has caught up",
            ));
        }
        let id = member_id_for_peer_url(first);
        let (members, removed) = self
            .ctx
            .raft
            .read_local(move |sm| (sm.kv().members(), sm.kv().is_removed_member(id)))
            .await
            .map_err(|e| super::errors::driver_status(&e, &Default::default()))?;
        if removed || members.iter().any(|m| m.id == id) {
            return Err(Status::failed_precondition(
                "etcdserver: member ID already exist",
            ));
        }
        if members
            .iter()
            .any(|m| m.peer_ur_ls.iter().any(|u| req.peer_ur_ls.contains(u)))
        {
            return Err(Status::failed_precondition(
                "etcdserver: Peer URLs already exists",
            ));
        }
        let member = Member {
            id,
            name: String::new(),
            peer_ur_ls: req.peer_ur_ls.clone(),
            client_ur_ls: Vec::new(),
            is_learner: true,
        };
        // The table first, so the new member is a transport peer by the time
        // the leader starts sending it the log.
        self.propose(KvOp::MemberUpsert(member.clone())).await?;
        self.conf_change(ConfChange::AddLearner(NodeId(id))).await?;
        let list = self.propose_list().await?;
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
        if let Some(mut c) = self.client(request.metadata()).await? {
            return c.member_remove(mark_forwarded(request)).await;
        }
        let id = request.into_inner().id;
        if self.member(id).await?.is_none() {
            return Err(member_not_found());
        }
        self.conf_change(ConfChange::RemoveNode(NodeId(id))).await?;
        let list = self
            .propose(KvOp::MemberRemove(MemberRemoveRequest { id }))
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
        if let Some(mut c) = self.client(request.metadata()).await? {
            return c.member_update(mark_forwarded(request)).await;
        }
        let md = request.metadata();
        let text = |name: &str| {
            md.get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let publish_name = text(PUBLISH_NAME_METADATA);
        let publish_urls = text(PUBLISH_CLIENT_URLS_METADATA);
        let req = request.into_inner();
        let mut member = match (self.member(req.id).await?, &publish_name) {
            (Some(m), _) => m,
            (None, Some(_)) => Member {
                id: req.id,
                ..Default::default()
            },
            (None, None) => return Err(member_not_found()),
        };
        member.peer_ur_ls = req.peer_ur_ls;
        if let Some(name) = publish_name {
            member.name = name;
        }
        if let Some(urls) = publish_urls {
            member.client_ur_ls = urls
                .split(',')
                .filter(|u| !u.is_empty())
                .map(str::to_string)
                .collect();
        }
        let list = self.propose(KvOp::MemberUpsert(member)).await?;
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
            self.ctx.raft.read_local(read).await
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
        if let Some(mut c) = self.client(request.metadata()).await? {
            return c.member_promote(mark_forwarded(request)).await;
        }
        let id = request.into_inner().id;
        let Some(mut member) = self.member(id).await? else {
            return Err(member_not_found());
        };
        if !member.is_learner {
            return Err(Status::failed_precondition(
                "etcdserver: can only promote a learner member",
            ));
        }
        self.conf_change(ConfChange::PromoteLearner(NodeId(id)))
            .await?;
        member.is_learner = false;
        let list = self.propose(KvOp::MemberUpsert(member)).await?;
        Ok(Response::new(MemberPromoteResponse {
            header: list.header,
            members: list.members,
        }))
    }
}

impl ClusterService {
    /// The member table as now applied here, with a header.
    async fn propose_list(&self) -> Result<MemberListResponse, Status> {
        let (revision, members) = self
            .ctx
            .raft
            .read_local(|sm| (sm.kv().revision(), sm.kv().members()))
            .await
            .map_err(|e| super::errors::driver_status(&e, &Default::default()))?;
        Ok(MemberListResponse {
            header: Some(self.ctx.header.header(revision)),
            members,
        })
    }
}

/// Asks the leader (through `cluster`, which forwards) to record `me` in
/// the member table: etcd's publish.
pub(crate) async fn publish_request(cluster: &ClusterService, me: &Member) -> Result<(), Status> {
    let mut request = Request::new(MemberUpdateRequest {
        id: me.id,
        peer_ur_ls: me.peer_ur_ls.clone(),
    });
    let md = request.metadata_mut();
    let value = |s: &str| {
        s.parse().map_err(|_| {
            Status::invalid_argument(format!("flotilla: {s:?} cannot be sent as metadata"))
        })
    };
    md.insert(PUBLISH_NAME_METADATA, value(&me.name)?);
    md.insert(
        PUBLISH_CLIENT_URLS_METADATA,
        value(&me.client_ur_ls.join(","))?,
    );
    cluster.member_update(request).await.map(|_| ())
}
