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
/// Request metadata: the lowest sequence number whose answer the client
/// has not yet seen (its mark). Optional: without it a session keeps the
/// original one-write-at-a-time rule (see [`crate::kv::SessionTable`]).
pub const FIRST_UNANSWERED_METADATA: &str = "flotilla-first-unanswered";

/// Reads a decimal `u64` metadata value, if given.
fn metadata_u64(md: &MetadataMap, name: &str) -> Result<Option<u64>, Status> {
    let Some(v) = md.get(name) else {
        return Ok(None);
    };
    v.to_str()
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .map(Some)
        .ok_or_else(|| Status::invalid_argument(format!("flotilla: malformed {name} metadata")))
}

/// Reads the exactly-once ids from request metadata: `(0, 0)` when absent
/// (etcd's semantics), `INVALID_ARGUMENT` when malformed or only one of the
/// two is given.
pub fn session_ids(md: &MetadataMap) -> Result<(u64, u64), Status> {
    match (
        metadata_u64(md, CLIENT_ID_METADATA)?,
        metadata_u64(md, SEQ_METADATA)?,
    ) {
        (None, None) | (Some(0), _) => Ok((0, 0)),
        (Some(client), Some(seq)) => Ok((client, seq)),
        _ => Err(Status::invalid_argument(format!(
            "flotilla: {CLIENT_ID_METADATA} and {SEQ_METADATA} must be given together"
        ))),
    }
}

/// The command of write `op` with the exactly-once ids and mark of request
/// metadata `md`: without a session when there are none, `INVALID_ARGUMENT`
/// when malformed, or when the mark is given without a session, is 0, or
/// is above the request's own seq (the client cannot have seen its answer).
pub fn session_command(md: &MetadataMap, op: KvOp) -> Result<KvCommand, Status> {
    let (client_id, seq) = session_ids(md)?;
    let mark = metadata_u64(md, FIRST_UNANSWERED_METADATA)?;
    let command = KvCommand::with_session(client_id, seq, op);
    match mark {
        None => Ok(command),
        Some(_) if md.get(CLIENT_ID_METADATA).is_none() => Err(Status::invalid_argument(format!(
            "flotilla: {FIRST_UNANSWERED_METADATA} without {CLIENT_ID_METADATA}"
        ))),
        // A client id of 0 means no session: the mark goes with it.
        Some(_) if client_id == 0 => Ok(command),
        Some(mark) if mark == 0 || mark > seq => Err(Status::invalid_argument(format!(
            "flotilla: {FIRST_UNANSWERED_METADATA} must be from 1 to the request's {SEQ_METADATA}"
        ))),
        Some(mark) => Ok(command.with_first_unanswered(mark)),
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
    /// (linearizable: ReadIndex, or the lease; `serializable`: at once, on
    /// the store as it is, or while a heavy entry applies, on the store as
    /// it was before it).
    async fn confirmed_read<T: Send + 'static>(
        &self,
        req: RangeRequest,
        read: impl FnOnce(&NodeStateMachine, RangeRequest) -> Result<T, KvError> + Send + 'static,
    ) -> Result<T, Status> {
        let serializable = req.serializable;
        let read = move |sm: &NodeStateMachine| read(sm, req);
        let result = if serializable {
            self.ctx.raft.read_stale(read).await
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
        let (metadata, _, message) = request.into_parts();
        let command = session_command(&metadata, message.into_op())?;
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

    #[test]
    fn the_mark_from_metadata() {
        let op = || KvOp::Compaction(CompactionRequest::default());
        let mark = |pairs: &[(&'static str, &'static str)]| {
            session_command(&md(pairs), op()).map(|c| (c.client_id, c.seq, c.mark()))
        };
        assert_eq!(mark(&[]).unwrap(), (0, 0, None));
        let ids = [(CLIENT_ID_METADATA, "7"), (SEQ_METADATA, "5")];
        assert_eq!(mark(&ids).unwrap(), (7, 5, None), "no mark: as before");
        for (m, want) in [("1", 1), ("5", 5)] {
            let with = [ids[0], ids[1], (FIRST_UNANSWERED_METADATA, m)];
            assert_eq!(mark(&with).unwrap(), (7, 5, Some(want)));
        }
        let no_session = [(CLIENT_ID_METADATA, "0"), (FIRST_UNANSWERED_METADATA, "3")];
        assert_eq!(mark(&no_session).unwrap(), (0, 0, None));
        for m in ["0", "6", "x"] {
            let with = [ids[0], ids[1], (FIRST_UNANSWERED_METADATA, m)];
            assert_eq!(mark(&with).unwrap_err().code(), Code::InvalidArgument);
        }
        let alone = [(FIRST_UNANSWERED_METADATA, "1")];
        assert_eq!(mark(&alone).unwrap_err().code(), Code::InvalidArgument);
    }
}
