//! [`KvService`]: etcd's KV service. Range is confirmed by the driver
//! (ReadIndex, or local when `serializable`) and, unless it names one key,
//! runs on a frozen view of the store in the [`ReadPool`], off the driver; Put, DeleteRange, Txn and
//! Compact go through [`Writes`], the one path of every write: the leader
//! proposes them, a follower hands them to the leader in batches.

use super::context::ApiContext;
use super::errors::kv_status;
use super::read_pool::ReadPool;
use super::write::Writes;
use crate::kv::{KvCommand, KvError, KvOp, KvResponse};
use crate::state::NodeStateMachine;
use flotilla_proto::etcdserverpb::kv_server::Kv;
use flotilla_proto::etcdserverpb::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, PutRequest,
    PutResponse, RangeRequest, RangeResponse, ResponseHeader, TxnRequest, TxnResponse,
};
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status};

/// Request metadata: the exactly-once client session id (decimal `u64`).
pub const CLIENT_ID_METADATA: &str = "flotilla-client-id";
/// Request metadata: the request's sequence number in its session.
pub const SEQ_METADATA: &str = "flotilla-seq";

/// Reads the exactly-once ids from request metadata: `(0, 0)` when absent
/// (etcd's semantics), `INVALID_ARGUMENT` when malformed or only one of the
/// two is given.
pub fn session_ids(md: &MetadataMap) -> Result<(u64, u64), Status> {
    let parse = |name: &str| -> Result<Option<u64>, Status> {
        let Some(v) = md.get(name) else {
            return Ok(None);
        };
        v.to_str()
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .map(Some)
            .ok_or_else(|| Status::invalid_argument(format!("flotilla: malformed {name} metadata")))
    };
    match (parse(CLIENT_ID_METADATA)?, parse(SEQ_METADATA)?) {
        (None, None) | (Some(0), _) => Ok((0, 0)),
        (Some(client), Some(seq)) => Ok((client, seq)),
        _ => Err(Status::invalid_argument(format!(
            "flotilla: {CLIENT_ID_METADATA} and {SEQ_METADATA} must be given together"
        ))),
    }
}

/// A write request: how it goes into the log and comes out of it.
trait KvWrite: Send + 'static {
    type Reply: Send + 'static;
    fn into_op(self) -> KvOp;
    fn reply(response: KvResponse) -> Option<Self::Reply>;
    fn header(reply: &mut Self::Reply) -> &mut Option<ResponseHeader>;
}

macro_rules! kv_write {
    ($req:ty, $reply:ty, $op:ident, $resp:ident) => {
        impl KvWrite for $req {
            type Reply = $reply;
            fn into_op(self) -> KvOp {
                KvOp::$op(self)
            }
            fn reply(response: KvResponse) -> Option<$reply> {
                match response {
                    KvResponse::$resp(r) => Some(r),
                    _ => None,
                }
            }
            fn header(reply: &mut $reply) -> &mut Option<ResponseHeader> {
                &mut reply.header
            }
        }
    };
}

kv_write!(PutRequest, PutResponse, Put, Put);
kv_write!(
    DeleteRangeRequest,
    DeleteRangeResponse,
    DeleteRange,
    DeleteRange
);
kv_write!(TxnRequest, TxnResponse, Txn, Txn);
kv_write!(
    CompactionRequest,
    CompactionResponse,
    Compaction,
    Compaction
);

/// etcd's KV service on one member.
#[derive(Clone, Debug)]
pub struct KvService {
    ctx: ApiContext,
    writes: Writes,
    reads: ReadPool,
}

impl KvService {
    /// The service over `ctx`; writes take `writes`.
    pub fn new(ctx: ApiContext, writes: Writes) -> Self {
        KvService {
            ctx,
            writes,
            reads: ReadPool::shared(),
        }
    }

    /// Runs `read` on the driver once the request's read is confirmed
    /// (linearizable: ReadIndex, or the lease; `serializable`: at once).
    async fn confirmed_read<T: Send + 'static>(
        &self,
        req: RangeRequest,
        read: impl FnOnce(&NodeStateMachine, RangeRequest) -> Result<T, KvError> + Send + 'static,
    ) -> Result<T, Status> {
        let serializable = req.serializable;
        let read = move |sm: &NodeStateMachine| read(sm, req);
        let result = if serializable {
            self.ctx.raft.read_local(read).await
        } else {
            self.ctx.raft.read(read).await
        };
        match result {
            Ok(Ok(t)) => Ok(t),
            Ok(Err(e)) => Err(kv_status(&e)),
            Err(e) => Err(self.ctx.status_of(&e).await),
        }
    }

    /// A write, through the one path of every write.
    async fn write<W: KvWrite>(&self, request: Request<W>) -> Result<Response<W::Reply>, Status> {
        let (client_id, seq) = session_ids(request.metadata())?;
        let command = KvCommand::with_session(client_id, seq, request.into_inner().into_op());
        let response = self.writes.submit(command).await?;
        let mut reply = W::reply(response)
            .ok_or_else(|| Status::internal("flotilla: mismatched response kind"))?;
        self.ctx.header.fill(W::header(&mut reply));
        Ok(Response::new(reply))
    }
}

#[tonic::async_trait]
impl Kv for KvService {
    async fn range(
        &self,
        request: Request<RangeRequest>,
    ) -> Result<Response<RangeResponse>, Status> {
        let req = request.into_inner();
        let mut reply = if req.range_end.is_empty() {
            // One key: a lookup, answered on the driver.
            self.confirmed_read(req, |sm, req| sm.kv().range(&req))
                .await?
        } else {
            // Anything longer runs on a frozen view, off the driver. The
            // turn is taken once the read is confirmed: a read that waits
            // for a leader holds no turn that other reads need.
            let (view, req) = self
                .confirmed_read(req, |sm, req| {
                    sm.kv().range_view(&req).map(|view| (view, req))
                })
                .await?;
            let turn = self.reads.turn().await?;
            turn.run(move || view.range(&req)).await?
        };
        self.ctx.header.fill(&mut reply.header);
        Ok(Response::new(reply))
    }

    async fn put(&self, request: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        self.write(request).await
    }

    async fn delete_range(
        &self,
        request: Request<DeleteRangeRequest>,
    ) -> Result<Response<DeleteRangeResponse>, Status> {
        self.write(request).await
    }

    async fn txn(&self, request: Request<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
        self.write(request).await
    }

    async fn compact(
        &self,
        request: Request<CompactionRequest>,
    ) -> Result<Response<CompactionResponse>, Status> {
        self.write(request).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;
    use tonic::metadata::MetadataValue;

    fn md(pairs: &[(&'static str, &'static str)]) -> MetadataMap {
        let mut m = MetadataMap::new();
        for (k, v) in pairs {
            m.insert(*k, MetadataValue::from_static(v));
        }
        m
    }

    #[test]
    fn session_ids_from_metadata() {
        assert_eq!(session_ids(&md(&[])).unwrap(), (0, 0));
        assert_eq!(
            session_ids(&md(&[(CLIENT_ID_METADATA, "7"), (SEQ_METADATA, "3")])).unwrap(),
            (7, 3)
        );
        for bad in [
            md(&[(CLIENT_ID_METADATA, "x"), (SEQ_METADATA, "3")]),
            md(&[(CLIENT_ID_METADATA, "7")]),
            md(&[(SEQ_METADATA, "-1")]),
        ] {
            assert_eq!(session_ids(&bad).unwrap_err().code(), Code::InvalidArgument);
        }
    }
}
