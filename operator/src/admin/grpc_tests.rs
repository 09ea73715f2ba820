//! [`GrpcAdmin`] against a recording etcd Cluster/Maintenance server on
//! loopback: what it sends, how it reads the answers, and which failures
//! make it try the next endpoint.

use super::*;
use flotilla_proto::etcdserverpb::cluster_server::{Cluster, ClusterServer};
use flotilla_proto::etcdserverpb::maintenance_server::{Maintenance, MaintenanceServer};
use flotilla_proto::etcdserverpb::{
    AlarmRequest, AlarmResponse, DefragmentRequest, DefragmentResponse, SnapshotRequest,
    SnapshotResponse,
};
use flotilla_proto::etcdserverpb::{
    Member as PbMember, MemberAddResponse, MemberListResponse, MemberPromoteResponse,
    MemberRemoveResponse, MemberUpdateRequest, MemberUpdateResponse, MoveLeaderResponse,
    ResponseHeader, StatusResponse,
};
use std::sync::{Arc, Mutex};
use tonic::{Request, Response, Status};

#[derive(Clone, Default)]
struct Recording {
    calls: Arc<Mutex<Vec<String>>>,
}

impl Recording {
    fn record(&self, call: String) {
        self.calls.lock().expect("lock").push(call);
    }
    fn calls(&self) -> Vec<String> {
        self.calls.lock().expect("lock").clone()
    }
}

fn pb_member(id: u64, name: &str, learner: bool) -> PbMember {
    PbMember {
        id,
        name: name.to_string(),
        peer_ur_ls: vec![format!("http://{name}:2380")],
        client_ur_ls: vec![],
        is_learner: learner,
    }
}

#[tonic::async_trait]
impl Cluster for Recording {
    async fn member_add(
        &self,
        r: Request<MemberAddRequest>,
    ) -> Result<Response<MemberAddResponse>, Status> {
        let r = r.into_inner();
        self.record(format!("add {:?} learner={}", r.peer_ur_ls, r.is_learner));
        let mut m = pb_member(0x42, "", true);
        m.peer_ur_ls = r.peer_ur_ls;
        Ok(Response::new(MemberAddResponse {
            member: Some(m),
            ..MemberAddResponse::default()
        }))
    }
    async fn member_remove(
        &self,
        r: Request<MemberRemoveRequest>,
    ) -> Result<Response<MemberRemoveResponse>, Status> {
        self.record(format!("remove {:x}", r.into_inner().id));
        Ok(Response::new(MemberRemoveResponse::default()))
    }
    async fn member_update(
        &self,
        _: Request<MemberUpdateRequest>,
    ) -> Result<Response<MemberUpdateResponse>, Status> {
        Err(Status::unimplemented("not used by the operator"))
    }
    async fn member_list(
        &self,
        r: Request<MemberListRequest>,
    ) -> Result<Response<MemberListResponse>, Status> {
        self.record(format!("list linearizable={}", r.into_inner().linearizable));
        Ok(Response::new(MemberListResponse {
            header: None,
            members: vec![pb_member(1, "demo-0", false), pb_member(0x42, "", true)],
        }))
    }
    async fn member_promote(
        &self,
        r: Request<MemberPromoteRequest>,
    ) -> Result<Response<MemberPromoteResponse>, Status> {
        let id = r.into_inner().id;
        self.record(format!("promote {id:x}"));
        if id == 7 {
            return Err(Status::failed_precondition(
                "etcdserver: can only promote a learner member which is in sync with leader",
            ));
        }
        Ok(Response::new(MemberPromoteResponse::default()))
    }
}

#[tonic::async_trait]
impl Maintenance for Recording {
    async fn status(&self, _: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        self.record("status".to_string());
        Ok(Response::new(StatusResponse {
            header: Some(ResponseHeader {
                member_id: 9,
                ..ResponseHeader::default()
            }),
            leader: 9,
            raft_term: 3,
            raft_index: 100,
            raft_applied_index: 99,
            is_learner: false,
            ..StatusResponse::default()
        }))
    }
    async fn move_leader(
        &self,
        r: Request<MoveLeaderRequest>,
    ) -> Result<Response<MoveLeaderResponse>, Status> {
        self.record(format!("move-leader {:x}", r.into_inner().target_id));
        Ok(Response::new(MoveLeaderResponse::default()))
    }
    async fn alarm(&self, _: Request<AlarmRequest>) -> Result<Response<AlarmResponse>, Status> {
        Err(Status::unimplemented("not used by the operator"))
    }
    async fn defragment(
        &self,
        _: Request<DefragmentRequest>,
    ) -> Result<Response<DefragmentResponse>, Status> {
        Err(Status::unimplemented("not used by the operator"))
    }
    type SnapshotStream = tokio_stream::wrappers::ReceiverStream<Result<SnapshotResponse, Status>>;
    async fn snapshot(
        &self,
        _: Request<SnapshotRequest>,
    ) -> Result<Response<Self::SnapshotStream>, Status> {
        Err(Status::unimplemented("not used by the operator"))
    }
}

/// A recording server on a loopback port, and its URL.
async fn server() -> (Recording, String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let rec = Recording::default();
    let service = rec.clone();
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(ClusterServer::new(service.clone()))
            .add_service(MaintenanceServer::new(service))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await
            .expect("serve");
    });
    (rec, url)
}

/// A loopback URL nobody listens on.
async fn dead_url() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    drop(listener);
    url
}

fn admin() -> GrpcAdmin {
    GrpcAdmin::new(Duration::from_secs(2), Duration::from_secs(5))
}

#[tokio::test]
async fn calls_carry_what_the_operator_means() {
    let (rec, url) = server().await;
    let a = admin();
    let eps = [url.clone()];
    let members = a.member_list(&eps).await.expect("list");
    assert_eq!(
        members,
        vec![
            Member {
                id: MemberId(1),
                name: "demo-0".into(),
                peer_urls: vec!["http://demo-0:2380".into()],
                is_learner: false
            },
            Member {
                id: MemberId(0x42),
                name: String::new(),
                peer_urls: vec!["http://:2380".into()],
                is_learner: true
            },
        ]
    );
    let added = a
        .member_add(&eps, "http://demo-3.x:2380", true)
        .await
        .expect("add");
    assert_eq!((added.id, added.is_learner), (MemberId(0x42), true));
    assert_eq!(added.peer_urls, vec!["http://demo-3.x:2380".to_string()]);
    a.member_promote(&eps, MemberId(0x42))
        .await
        .expect("promote");
    a.member_remove(&eps, MemberId(0x43)).await.expect("remove");
    a.move_leader(&url, MemberId(0x44))
        .await
        .expect("move leader");
    let status = a.status(&url).await.expect("status");
    assert_eq!(
        status,
        NodeStatus {
            member_id: MemberId(9),
            leader: MemberId(9),
            term: 3,
            commit_index: 100,
            applied_index: 99,
            is_learner: false
        }
    );
    assert_eq!(
        rec.calls(),
        vec![
            "list linearizable=true",
            "add [\"http://demo-3.x:2380\"] learner=true",
            "promote 42",
            "remove 43",
            "move-leader 44",
            "status",
        ]
    );
}

#[tokio::test]
async fn an_unreachable_endpoint_is_skipped_a_refusal_is_final() {
    let (rec, url) = server().await;
    let (rec2, url2) = server().await;
    let dead = dead_url().await;
    let a = admin();
    // The dead endpoint first: the next one answers.
    a.member_list(&[dead.clone(), url.clone()])
        .await
        .expect("list via the second endpoint");
    assert_eq!(rec.calls(), vec!["list linearizable=true"]);
    // A refusal is the cluster's answer: the next endpoint is not asked.
    let refused = a
        .member_promote(&[url.clone(), url2.clone()], MemberId(7))
        .await;
    match refused {
        Err(AdminError::Refused { code, message, .. }) => {
            assert_eq!(code, "FailedPrecondition");
            assert!(message.contains("in sync with leader"), "{message}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(rec2.calls().is_empty(), "{:?}", rec2.calls());
    // Nobody answers: unreachable, naming every endpoint tried.
    match a.member_list(std::slice::from_ref(&dead)).await {
        Err(AdminError::Unreachable { endpoints, .. }) => assert_eq!(endpoints, dead),
        other => panic!("expected unreachable, got {other:?}"),
    }
    assert_eq!(a.member_list(&[]).await, Err(AdminError::NoEndpoints));
    assert!(matches!(
        a.status(&dead).await,
        Err(AdminError::Unreachable { .. })
    ));
}
