//! [`NodeAdmin`] over the etcd v3 gRPC API the nodes serve.

use super::{AdminError, Member, MemberId, NodeAdmin, NodeStatus};
use flotilla_proto::etcdserverpb::cluster_client::ClusterClient;
use flotilla_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use flotilla_proto::etcdserverpb::{
    MemberAddRequest, MemberListRequest, MemberPromoteRequest, MemberRemoveRequest,
    MoveLeaderRequest, StatusRequest,
};
use std::future::Future;
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};

/// Talks to members over gRPC, with a connect timeout and a deadline per
/// call, a new connection per call: the operator asks a few members every
/// few seconds, and a cached connection to a pod that was replaced would
/// only add a failure mode.
#[derive(Clone, Debug)]
pub struct GrpcAdmin {
    connect_timeout: Duration,
    request_timeout: Duration,
}

impl GrpcAdmin {
    /// With the given connect and per-call timeouts.
    pub fn new(connect_timeout: Duration, request_timeout: Duration) -> Self {
        GrpcAdmin {
            connect_timeout,
            request_timeout,
        }
    }

    async fn channel(&self, endpoint: &str) -> Result<Channel, AdminError> {
        let unreachable = |reason: String| AdminError::Unreachable {
            endpoints: endpoint.to_string(),
            reason,
        };
        Endpoint::from_shared(endpoint.to_string())
            .map_err(|e| unreachable(e.to_string()))?
            .connect_timeout(self.connect_timeout)
            .timeout(self.request_timeout)
            .connect()
            .await
            .map_err(|e| unreachable(e.to_string()))
    }

    /// Runs `call` against each endpoint in turn until one answers. A
    /// member that answers with an error ends the search: asking the next
    /// would ask the same cluster the same question.
    pub(super) async fn first_answer<T, F, Fut>(
        &self,
        endpoints: &[String],
        call: F,
    ) -> Result<T, AdminError>
    where
        F: Fn(Channel) -> Fut,
        Fut: Future<Output = Result<T, tonic::Status>>,
    {
        let mut last = None;
        for endpoint in endpoints {
            let channel = match self.channel(endpoint).await {
                Ok(c) => c,
                Err(e) => {
                    last = Some(e);
                    continue;
                }
            };
            match call(channel).await {
                Ok(v) => return Ok(v),
                Err(status) if is_transport_failure(&status) => {
                    last = Some(AdminError::Unreachable {
                        endpoints: endpoint.clone(),
                        reason: status.message().to_string(),
                    });
                }
                Err(status) => return Err(refused(endpoint, &status)),
            }
        }
        Err(match last {
            Some(AdminError::Unreachable { reason, .. }) => AdminError::Unreachable {
                endpoints: endpoints.join(","),
                reason,
            },
            Some(other) => other,
            None => AdminError::NoEndpoints,
        })
    }
}

/// Codes a call gets when the member could not be reached or answer in
/// time, as opposed to an answer that refuses.
fn is_transport_failure(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled
    )
}

fn refused(endpoint: &str, status: &tonic::Status) -> AdminError {
    AdminError::Refused {
        endpoint: endpoint.to_string(),
        code: format!("{:?}", status.code()),
        message: status.message().to_string(),
    }
}

fn member(m: flotilla_proto::etcdserverpb::Member) -> Member {
    Member {
        id: MemberId(m.id),
        name: m.name,
        peer_urls: m.peer_ur_ls,
        is_learner: m.is_learner,
    }
}

impl NodeAdmin for GrpcAdmin {
    async fn member_list(&self, endpoints: &[String]) -> Result<Vec<Member>, AdminError> {
        // Linearizable: a follower's applied table may lag a change the
        // operator just made, and acting on a stale list could repeat it.
        self.first_answer(endpoints, |ch| async move {
            let r = ClusterClient::new(ch)
                .member_list(MemberListRequest { linearizable: true })
                .await?;
            Ok(r.into_inner().members.into_iter().map(member).collect())
        })
        .await
    }

    async fn member_add(
        &self,
        endpoints: &[String],
        peer_url: &str,
        learner: bool,
    ) -> Result<Member, AdminError> {
        let peer_url = peer_url.to_string();
        self.first_answer(endpoints, |ch| {
            let peer_url = peer_url.clone();
            async move {
                let r = ClusterClient::new(ch)
                    .member_add(MemberAddRequest {
                        peer_ur_ls: vec![peer_url.clone()],
                        is_learner: learner,
                    })
                    .await?
                    .into_inner();
                r.member
                    .map(member)
                    .ok_or_else(|| tonic::Status::internal("MemberAdd answered without the member"))
            }
        })
        .await
    }

    async fn member_promote(&self, endpoints: &[String], id: MemberId) -> Result<(), AdminError> {
        self.first_answer(endpoints, |ch| async move {
            ClusterClient::new(ch)
                .member_promote(MemberPromoteRequest { id: id.0 })
                .await
                .map(drop)
        })
        .await
    }

    async fn member_remove(&self, endpoints: &[String], id: MemberId) -> Result<(), AdminError> {
        self.first_answer(endpoints, |ch| async move {
            ClusterClient::new(ch)
                .member_remove(MemberRemoveRequest { id: id.0 })
                .await
                .map(drop)
        })
        .await
    }

    async fn status(&self, endpoint: &str) -> Result<NodeStatus, AdminError> {
        self.first_answer(&[endpoint.to_string()], |ch| async move {
            let r = MaintenanceClient::new(ch)
                .status(StatusRequest {})
                .await?
                .into_inner();
            Ok(NodeStatus {
                member_id: MemberId(r.header.map(|h| h.member_id).unwrap_or_default()),
                leader: MemberId(r.leader),
                term: r.raft_term,
                commit_index: r.raft_index,
                applied_index: r.raft_applied_index,
                is_learner: r.is_learner,
            })
        })
        .await
    }

    async fn move_leader(&self, leader_endpoint: &str, to: MemberId) -> Result<(), AdminError> {
        self.first_answer(&[leader_endpoint.to_string()], |ch| async move {
            MaintenanceClient::new(ch)
                .move_leader(MoveLeaderRequest { target_id: to.0 })
                .await
                .map(drop)
        })
        .await
    }
}

#[cfg(test)]
#[path = "grpc_tests.rs"]
mod tests;
