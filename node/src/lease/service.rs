//! [`LeaseService`]: etcd's Lease calls over the driver and the lessor.

use super::keepalive::{KeepAliveTask, RelayTo};
use crate::api::{
    ApiContext, FORWARDED_METADATA, LeaderHint, driver_status, kv_status, mark_forwarded,
    session_ids,
};
use crate::driver::RaftHandle;
use crate::kv::{KvCommand, KvConfig, KvOp, KvResponse, Lessor, validate_op};
use crate::state::NodeStateMachine;
use crate::watch::StreamCloser;
use flotilla_proto::etcdserverpb::lease_client::LeaseClient;
use flotilla_proto::etcdserverpb::lease_server::{Lease, LeaseServer};
use flotilla_proto::etcdserverpb::{
    LeaseGrantRequest, LeaseGrantResponse, LeaseKeepAliveRequest, LeaseKeepAliveResponse,
    LeaseLeasesRequest, LeaseLeasesResponse, LeaseRevokeRequest, LeaseRevokeResponse,
    LeaseTimeToLiveRequest, LeaseTimeToLiveResponse, ResponseHeader,
};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status, Streaming};

/// Keepalive responses queued per stream before it waits on the client.
const KEEPALIVE_QUEUE_MAX: usize = 16;

/// The server side of a LeaseKeepAlive stream.
pub type KeepAliveStream = ReceiverStream<Result<LeaseKeepAliveResponse, Status>>;

/// Serves etcd's Lease service. Grants and revokes are proposed through
/// the driver; keepalives renew the shared [`Lessor`]'s timers, which only
/// the leader's lessor (promoted by [`super::spawn_lease_expiry`]) accepts.
/// With forwarding, a follower sends grants, revokes, TimeToLive and Leases
/// to the leader and relays keepalive streams there.
#[derive(Clone)]
pub struct LeaseService {
    handle: RaftHandle<NodeStateMachine>,
    lessor: Arc<Mutex<Lessor>>,
    cluster_id: u64,
    closing: StreamCloser,
    /// Set: calls reaching a follower go to the leader.
    forward: Option<ApiContext>,
}

impl std::fmt::Debug for LeaseService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaseService")
            .field("cluster_id", &self.cluster_id)
            .finish_non_exhaustive()
    }
}

impl LeaseService {
    /// A service over `handle` and the lessor from
    /// [`NodeStateMachine::new`].
    pub fn new(handle: RaftHandle<NodeStateMachine>, lessor: Arc<Mutex<Lessor>>) -> LeaseService {
        LeaseService {
            handle,
            lessor,
            cluster_id: 0,
            closing: StreamCloser::new(),
            forward: None,
        }
    }

    /// Forwards calls that reach a follower to the leader (one hop), as
    /// etcd does, so clients may talk to any member: grants, revokes,
    /// TimeToLive and Leases are forwarded; a keepalive stream is relayed
    /// over a stream to the leader that follows leadership changes.
    pub fn with_forwarding(mut self, ctx: ApiContext) -> LeaseService {
        self.forward = Some(ctx);
        self
    }

    /// A channel to the leader when this request must be forwarded.
    async fn leader_channel(
        &self,
        metadata: &tonic::metadata::MetadataMap,
    ) -> Result<Option<tonic::transport::Channel>, Status> {
        match &self.forward {
            Some(ctx) => ctx.leader_channel(metadata).await,
            None => Ok(None),
        }
    }

    /// Sets the cluster id put in response headers.
    pub fn with_cluster_id(mut self, cluster_id: u64) -> LeaseService {
        self.cluster_id = cluster_id;
        self
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

    fn header(&self, revision: i64) -> ResponseHeader {
        header(&self.handle, self.cluster_id, revision)
    }

    /// The leader's answer to a forwarded call, with this member's header
    /// and the leader's revision: as on etcd, the member a client asked
    /// answers in its own name.
    fn own_header<T>(
        &self,
        mut response: Response<T>,
        header: impl FnOnce(&mut T) -> &mut Option<ResponseHeader>,
    ) -> Response<T> {
        let h = header(response.get_mut());
        let revision = h.as_ref().map_or(0, |h| h.revision);
        *h = Some(self.header(revision));
        response
    }

    /// Proposes `op`, exactly-once when `metadata` carries a client session
    /// (as KV writes are: a retried grant must not leak a second lease).
    async fn propose(&self, metadata: &MetadataMap, op: KvOp) -> Result<KvResponse, Status> {
        let (client_id, seq) = session_ids(metadata)?;
        // The node's admission when it has one; the store's own checks
        // (no quota) when this service runs alone, as in tests.
        let command = match &self.forward {
            Some(ctx) => ctx.admit(client_id, seq, op)?,
            None => {
                validate_op(&op, &KvConfig::default().limits()).map_err(|e| kv_status(&e))?;
                KvCommand::with_session(client_id, seq, op).encode_to_bytes()
            }
        };
        let output = self
            .handle
            .propose(command)
            .await
            .map_err(|e| driver_status(&e, &LeaderHint::default()))?;
        output.result.map_err(|e| kv_status(&e))
    }
}

/// A response header from this member.
pub(super) fn header(
    handle: &RaftHandle<NodeStateMachine>,
    cluster_id: u64,
    revision: i64,
) -> ResponseHeader {
    let status = handle.status();
    ResponseHeader {
        cluster_id,
        member_id: status.id.0,
        revision,
        raft_term: status.term.0,
    }
}

fn lessor(lessor: &Mutex<Lessor>) -> std::sync::MutexGuard<'_, Lessor> {
    lessor.lock().unwrap_or_else(|p| p.into_inner())
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
        if let Some(channel) = self.leader_channel(request.metadata()).await? {
            // Checked here too, as a write this member received: a bad
            // grant goes no further, and the quota is this member's.
            if let Some(ctx) = &self.forward {
                ctx.check(&KvOp::LeaseGrant(*request.get_ref()))?;
            }
            return LeaseClient::new(channel)
                .lease_grant(mark_forwarded(request))
                .await
                .map(|r| self.own_header(r, |r| &mut r.header));
        }
        let metadata = request.metadata().clone();
        match self
            .propose(&metadata, KvOp::LeaseGrant(request.into_inner()))
            .await?
        {
            KvResponse::LeaseGrant(mut r) => {
                let revision = r.header.as_ref().map_or(0, |h| h.revision);
                r.header = Some(self.header(revision));
                Ok(Response::new(r))
            }
            _ => Err(unexpected("LeaseGrant")),
        }
    }

    async fn lease_revoke(
        &self,
        request: Request<LeaseRevokeRequest>,
    ) -> Result<Response<LeaseRevokeResponse>, Status> {
        if let Some(channel) = self.leader_channel(request.metadata()).await? {
            return LeaseClient::new(channel)
                .lease_revoke(mark_forwarded(request))
                .await
                .map(|r| self.own_header(r, |r| &mut r.header));
        }
        let metadata = request.metadata().clone();
        match self
            .propose(&metadata, KvOp::LeaseRevoke(request.into_inner()))
            .await?
        {
            KvResponse::LeaseRevoke(mut r) => {
                let revision = r.header.as_ref().map_or(0, |h| h.revision);
                r.header = Some(self.header(revision));
                Ok(Response::new(r))
            }
            _ => Err(unexpected("LeaseRevoke")),
        }
    }

    type LeaseKeepAliveStream = KeepAliveStream;

    async fn lease_keep_alive(
        &self,
        request: Request<Streaming<LeaseKeepAliveRequest>>,
    ) -> Result<Response<KeepAliveStream>, Status> {
        let (tx, rx) = mpsc::channel(KEEPALIVE_QUEUE_MAX);
        let forwarded = request.metadata().contains_key(FORWARDED_METADATA);
        let relay = self
            .forward
            .clone()
            .filter(|_| !forwarded)
            .map(|ctx| RelayTo {
                ctx,
                metadata: request.metadata().clone(),
            });
        let task = KeepAliveTask::new(
            self.handle.clone(),
            self.lessor.clone(),
            self.cluster_id,
            tx,
            self.closing.subscribe(),
            relay,
        );
        tokio::spawn(task.run(request.into_inner()));
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn lease_time_to_live(
        &self,
        request: Request<LeaseTimeToLiveRequest>,
    ) -> Result<Response<LeaseTimeToLiveResponse>, Status> {
        // Only the leader's lessor knows how long a lease has left.
        if let Some(channel) = self.leader_channel(request.metadata()).await? {
            return LeaseClient::new(channel)
                .lease_time_to_live(mark_forwarded(request))
                .await
                .map(|r| self.own_header(r, |r| &mut r.header));
        }
        let req = request.into_inner();
        let (id, want_keys) = (req.id, req.keys);
        let (entry, revision) = self
            .handle
            .read(move |sm| {
                let kv = sm.kv();
                let entry = kv.leases().get(id).map(|e| {
                    let keys = if want_keys {
                        e.keys.iter().cloned().collect()
                    } else {
                        Vec::new()
                    };
                    (e.ttl_secs, keys)
                });
                (entry, kv.revision())
            })
            .await
            .map_err(|e| driver_status(&e, &LeaderHint::default()))?;
        let header = Some(self.header(revision));
        // etcd answers a missing lease with TTL -1, not an error.
        let Some((granted, keys)) = entry else {
            return Ok(Response::new(LeaseTimeToLiveResponse {
                header,
                id,
                ttl: -1,
                ..Default::default()
            }));
        };
        let (ttl, granted_ttl) = lessor(&self.lessor)
            .time_to_live(id, Instant::now())
            .unwrap_or((granted, granted));
        Ok(Response::new(LeaseTimeToLiveResponse {
            header,
            id,
            ttl,
            granted_ttl,
            keys,
        }))
    }

    async fn lease_leases(
        &self,
        request: Request<LeaseLeasesRequest>,
    ) -> Result<Response<LeaseLeasesResponse>, Status> {
        if let Some(channel) = self.leader_channel(request.metadata()).await? {
            return LeaseClient::new(channel)
                .lease_leases(mark_forwarded(request))
                .await
                .map(|r| self.own_header(r, |r| &mut r.header));
        }
        let (leases, revision) = self
            .handle
            .read(|sm| (sm.kv().lease_statuses(), sm.kv().revision()))
            .await
            .map_err(|e| driver_status(&e, &LeaderHint::default()))?;
        Ok(Response::new(LeaseLeasesResponse {
            header: Some(self.header(revision)),
            leases,
        }))
    }
}
