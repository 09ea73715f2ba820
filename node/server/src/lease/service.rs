//! [`LeaseService`]: etcd's Lease calls.

use super::keepalive::KeepAliveTask;
use crate::api::{ApiContext, LeaderHint, Writes, driver_status, session_command};
use crate::kv::{KvOp, KvResponse};
use crate::watch::StreamCloser;
use flotilla_proto::etcdserverpb::lease_server::{Lease, LeaseServer};
use flotilla_proto::etcdserverpb::{
    LeaseGrantRequest, LeaseGrantResponse, LeaseKeepAliveRequest, LeaseKeepAliveResponse,
    LeaseLeasesRequest, LeaseLeasesResponse, LeaseRevokeRequest, LeaseRevokeResponse,
    LeaseTimeToLiveRequest, LeaseTimeToLiveResponse,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status, Streaming};

/// Keepalive responses queued per stream before it waits on the client.
const KEEPALIVE_QUEUE_MAX: usize = 16;

/// The server side of a LeaseKeepAlive stream.
pub type KeepAliveStream = ReceiverStream<Result<LeaseKeepAliveResponse, Status>>;

/// Serves etcd's Lease service. Grants, revokes, keepalives and TimeToLive
/// go through [`Writes`]: the leader serves them (grants and revokes
/// through the log, keepalives and TimeToLive from its lessor), a follower
/// hands them to the leader. Every answer carries this member's header.
#[derive(Clone, Debug)]
pub struct LeaseService {
    ctx: ApiContext,
    writes: Writes,
    closing: StreamCloser,
}

impl LeaseService {
    /// The service of the member of `ctx`; requests take `writes`.
    pub fn new(ctx: ApiContext, writes: Writes) -> LeaseService {
        LeaseService {
            ctx,
            writes,
            closing: StreamCloser::new(),
        }
    }

    /// Ends the open keepalive streams when the server shuts down: clients
    /// never end theirs, and a graceful shutdown would wait for them.
    pub fn stream_closer(&self) -> StreamCloser {
        self.closing.clone()
    }

    /// The tonic server for this service.
    pub fn into_server(self) -> LeaseServer<LeaseService> {
        LeaseServer::new(self)
    }

    /// Submits `op`, exactly-once when `metadata` carries a client session
    /// (as KV writes are: a retried grant must not leak a second lease).
    async fn submit(&self, metadata: &MetadataMap, op: KvOp) -> Result<KvResponse, Status> {
        let command = session_command(metadata, op)?;
        let mut response = self.writes.submit(command).await?;
        self.ctx.header.fill(response.header_mut());
        Ok(response)
    }
}

fn unexpected(what: &str) -> Status {
    Status::internal(format!(
        "flotilla: the store answered a {what} with another response"
    ))
}

#[tonic::async_trait]
impl Lease for LeaseService {
    async fn lease_grant(
        &self,
        request: Request<LeaseGrantRequest>,
    ) -> Result<Response<LeaseGrantResponse>, Status> {
        let metadata = request.metadata().clone();
        match self
            .submit(&metadata, KvOp::LeaseGrant(request.into_inner()))
            .await?
        {
            KvResponse::LeaseGrant(r) => Ok(Response::new(r)),
            _ => Err(unexpected("LeaseGrant")),
        }
    }

    async fn lease_revoke(
        &self,
        request: Request<LeaseRevokeRequest>,
    ) -> Result<Response<LeaseRevokeResponse>, Status> {
        let metadata = request.metadata().clone();
        match self
            .submit(&metadata, KvOp::LeaseRevoke(request.into_inner()))
            .await?
        {
            KvResponse::LeaseRevoke(r) => Ok(Response::new(r)),
            _ => Err(unexpected("LeaseRevoke")),
        }
    }

    type LeaseKeepAliveStream = KeepAliveStream;

    async fn lease_keep_alive(
        &self,
        request: Request<Streaming<LeaseKeepAliveRequest>>,
    ) -> Result<Response<KeepAliveStream>, Status> {
        let (tx, rx) = mpsc::channel(KEEPALIVE_QUEUE_MAX);
        let task = KeepAliveTask::new(
            self.writes.clone(),
            self.ctx.raft.clone(),
            self.ctx.header.clone(),
            tx,
            self.closing.subscribe(),
        );
        tokio::spawn(task.run(request.into_inner()));
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn lease_time_to_live(
        &self,
        request: Request<LeaseTimeToLiveRequest>,
    ) -> Result<Response<LeaseTimeToLiveResponse>, Status> {
        // Only the leader's lessor knows how long a lease has left.
        let metadata = request.metadata().clone();
        match self
            .submit(&metadata, KvOp::LeaseTimeToLive(request.into_inner()))
            .await?
        {
            KvResponse::LeaseTimeToLive(r) => Ok(Response::new(r)),
            _ => Err(unexpected("LeaseTimeToLive")),
        }
    }

    async fn lease_leases(
        &self,
        _request: Request<LeaseLeasesRequest>,
    ) -> Result<Response<LeaseLeasesResponse>, Status> {
        let (leases, revision) = self
            .ctx
            .raft
            .read(|sm| (sm.kv().lease_statuses(), sm.kv().revision()))
            .await
            .map_err(|e| driver_status(&e, &LeaderHint::default()))?;
        Ok(Response::new(LeaseLeasesResponse {
            header: Some(self.ctx.header.header(revision)),
            leases,
        }))
    }
}
