//! Batched write forwarding. A follower does not propose: its
//! [`WriteForwarder`] gathers the writes its clients send it and hands them
//! to the leader in batches over the internal `Forward` service, where
//! [`ForwardService`] proposes them. One call carries every write that
//! queued while the previous batches were in flight, so forwarding costs
//! the follower and the leader little beyond the writes themselves, as a
//! Raft proposal forwarded inside the peer protocol would.
//!
//! Forwarding is one hop: the leader proposes what it receives itself and
//! answers `NotLeader` failures rather than forwarding again. A batch whose
//! call fails (leader gone, timeout) fails every write in it with that
//! status; clients retry, and writes with exactly-once ids stay
//! exactly-once.

use super::context::ApiContext;
use super::errors::{LeaderHint, driver_status, kv_status, request_too_large};
use crate::kv::{KvCommand, KvOp, KvResponse};
use flotilla_proto::forward::forward_client::ForwardClient;
use flotilla_proto::forward::forward_server::{Forward, ForwardServer};
use flotilla_proto::forward::write_result::Outcome;
use flotilla_proto::forward::{WriteBatch, WriteFailure, WriteResult, WriteResults};
use flotilla_raft::Bytes;
use prost::Message as _;
use std::sync::Arc;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tonic::metadata::MetadataMap;
use tonic::{Code, Request, Response, Status};

/// Bounds of a [`WriteForwarder`].
#[derive(Clone, Debug)]
pub struct WriteForwardConfig {
    /// Writes queued for forwarding before callers wait (backpressure).
    pub queue: usize,
    /// Most writes in one batch.
    pub batch_max: usize,
    /// Most command bytes in one batch (a batch holds at least one write).
    pub batch_bytes_max: usize,
    /// Batches in flight to the leader at once.
    pub in_flight: usize,
    /// Largest forwarded command the leader accepts, in bytes: the
    /// request limit plus room for the command's own fields.
    pub command_bytes_max: usize,
}

impl WriteForwardConfig {
    /// Defaults for a node accepting requests of `max_request_bytes`.
    pub fn for_request_limit(max_request_bytes: usize) -> Self {
        WriteForwardConfig {
            queue: 4096,
            batch_max: 512,
            batch_bytes_max: 4 << 20,
            in_flight: 4,
            command_bytes_max: max_request_bytes + 64,
        }
    }
}

/// Applied-or-refused, as the follower answers its client.
type WriteOutcome = Result<KvResponse, Status>;

struct Pending {
    command: Bytes,
    reply: oneshot::Sender<WriteOutcome>,
}

/// The follower side: a queue drained by one task into batched calls to
/// the leader. Cheap to clone.
#[derive(Clone, Debug)]
pub struct WriteForwarder {
    queue: mpsc::Sender<Pending>,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending")
            .field("bytes", &self.command.len())
            .finish()
    }
}

impl WriteForwarder {
    /// Starts the batching task of a member of cluster `cluster_id`. It
    /// ends when every clone of the forwarder is dropped.
    pub fn spawn(ctx: ApiContext, cluster_id: u64, config: WriteForwardConfig) -> Self {
        let (queue, rx) = mpsc::channel(config.queue.max(1));
        tokio::spawn(run(ctx, cluster_id, config, rx));
        WriteForwarder { queue }
    }

    /// Has the leader propose `command` (an encoded [`KvCommand`]) and
    /// returns the state machine's response, or the status to answer.
    pub async fn forward(&self, command: Bytes) -> WriteOutcome {
        let (reply, answer) = oneshot::channel();
        let stopped = || Status::unavailable("etcdserver: server stopped");
        self.queue
            .send(Pending { command, reply })
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

async fn run(
    ctx: ApiContext,
    cluster_id: u64,
    config: WriteForwardConfig,
    mut queue: mpsc::Receiver<Pending>,
) {
    let permits = Arc::new(Semaphore::new(config.in_flight.max(1)));
    while let Some(first) = queue.recv().await {
        // Writes queue up while every permit is taken: that is the batch.
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let mut bytes = first.command.len();
        let mut batch = vec![first];
        while batch.len() < config.batch_max && bytes < config.batch_bytes_max {
            match queue.try_recv() {
                Ok(p) => {
                    bytes += p.command.len();
                    batch.push(p);
                }
                Err(_) => break,
            }
        }
        let ctx = ctx.clone();
        let command_bytes_max = config.command_bytes_max;
        tokio::spawn(async move {
            send_batch(&ctx, cluster_id, command_bytes_max, batch).await;
            drop(permit);
        });
    }
}

async fn send_batch(
    ctx: &ApiContext,
    cluster_id: u64,
    command_bytes_max: usize,
    batch: Vec<Pending>,
) {
    let (commands, replies): (Vec<Bytes>, Vec<_>) =
        batch.into_iter().map(|p| (p.command, p.reply)).unzip();
    let outcomes = match ctx.leader_channel(&MetadataMap::new()).await {
        // This member has become the leader since: propose here.
        Ok(None) => propose_writes(ctx, commands, command_bytes_max).await,
        Ok(Some(channel)) => {
            let count = commands.len();
            let mut client = ForwardClient::new(channel)
                .max_decoding_message_size(usize::MAX)
                .max_encoding_message_size(usize::MAX);
            let call = client.writes(WriteBatch {
                cluster_id,
                commands,
            });
            match call.await {
                Ok(results) => decode_results(results.into_inner(), count),
                Err(status) => vec![Err(status); count],
            }
        }
        Err(status) => vec![Err(status); commands.len()],
    };
    for (reply, outcome) in replies.into_iter().zip(outcomes) {
        let _ = reply.send(outcome);
    }
}

/// A state machine response as the `Forward` service carries it.
#[derive(Clone, PartialEq, prost::Message)]
struct ForwardedResponse {
    #[prost(oneof = "KvResponse", tags = "11, 12, 13, 14, 15, 16, 17")]
    response: Option<KvResponse>,
}

fn decode_results(results: WriteResults, count: usize) -> Vec<WriteOutcome> {
    if results.results.len() != count {
        let status = Status::internal(format!(
            "flotilla: the leader answered {} of {count} forwarded writes",
            results.results.len()
        ));
        return vec![Err(status); count];
    }
    results
        .results
        .into_iter()
        .map(|r| match r.outcome {
            Some(Outcome::Response(bytes)) => ForwardedResponse::decode(bytes)
                .ok()
                .and_then(|r| r.response)
                .ok_or_else(|| Status::internal("flotilla: undecodable forwarded response")),
            Some(Outcome::Failure(f)) => Err(Status::new(Code::from(f.code), f.message)),
            None => Err(Status::internal("flotilla: empty forwarded result")),
        })
        .collect()
}

/// Proposes forwarded `commands` here, in order. Only etcd's KV writes may
/// be forwarded: the node's own commands (membership, lease expiry) are
/// proposed by the node, never on a peer's say-so.
async fn propose_writes(
    ctx: &ApiContext,
    commands: Vec<Bytes>,
    command_bytes_max: usize,
) -> Vec<WriteOutcome> {
    let checked: Vec<Result<Bytes, Status>> = commands
        .into_iter()
        .map(|c| check_command(c, command_bytes_max))
        .collect();
    let valid: Vec<Bytes> = checked.iter().filter_map(|c| c.clone().ok()).collect();
    let mut proposed = ctx.raft.propose_many(valid).await.into_iter();
    checked
        .into_iter()
        .map(|c| {
            c?;
            match proposed.next() {
                Some(Ok(output)) => output.result.map_err(|e| kv_status(&e)),
                Some(Err(e)) => Err(driver_status(&e, &LeaderHint::default())),
                None => Err(Status::internal("flotilla: proposal outcome missing")),
            }
        })
        .collect()
}

fn check_command(command: Bytes, command_bytes_max: usize) -> Result<Bytes, Status> {
    if command.len() > command_bytes_max {
        return Err(request_too_large());
    }
    let decoded = KvCommand::decode(command.clone()).map_err(|e| {
        Status::invalid_argument(format!("flotilla: undecodable forwarded write: {e}"))
    })?;
    match decoded.op {
        Some(KvOp::Put(_) | KvOp::DeleteRange(_) | KvOp::Txn(_) | KvOp::Compaction(_)) => {
            Ok(command)
        }
        _ => Err(Status::invalid_argument(
            "flotilla: only Put, DeleteRange, Txn and Compact may be forwarded",
        )),
    }
}

/// The leader side of forwarding: the `Forward` service.
#[derive(Clone, Debug)]
pub struct ForwardService {
    ctx: ApiContext,
    cluster_id: u64,
    command_bytes_max: usize,
    batch_max: usize,
    message_bytes_max: usize,
}

impl ForwardService {
    /// The service of a member of cluster `cluster_id`, with the limits of
    /// `config` (batches up to four times the forwarders' own, so a peer
    /// with other settings is not refused for a slightly larger batch).
    pub fn new(ctx: ApiContext, cluster_id: u64, config: &WriteForwardConfig) -> Self {
        ForwardService {
            ctx,
            cluster_id,
            command_bytes_max: config.command_bytes_max,
            batch_max: config.batch_max.saturating_mul(4).max(1),
            message_bytes_max: config
                .batch_bytes_max
                .max(config.command_bytes_max)
                .saturating_mul(4)
                .saturating_add(1 << 16),
        }
    }

    /// The tonic server for this service.
    pub fn into_server(self) -> ForwardServer<ForwardService> {
        let message_bytes_max = self.message_bytes_max;
        ForwardServer::new(self)
            .max_decoding_message_size(message_bytes_max)
            .max_encoding_message_size(usize::MAX)
    }
}

#[tonic::async_trait]
impl Forward for ForwardService {
    async fn writes(&self, request: Request<WriteBatch>) -> Result<Response<WriteResults>, Status> {
        let batch = request.into_inner();
        if batch.cluster_id != self.cluster_id {
            return Err(Status::failed_precondition(format!(
                "flotilla: forwarded writes for cluster {:x}, this is {:x}",
                batch.cluster_id, self.cluster_id
            )));
        }
        if batch.commands.len() > self.batch_max {
            return Err(Status::invalid_argument(format!(
                "flotilla: {} forwarded writes in one batch, at most {}",
                batch.commands.len(),
                self.batch_max
            )));
        }
        let outcomes = propose_writes(&self.ctx, batch.commands, self.command_bytes_max).await;
        let results = outcomes
            .into_iter()
            .map(|o| WriteResult {
                outcome: Some(match o {
                    Ok(response) => Outcome::Response(Bytes::from(
                        ForwardedResponse {
                            response: Some(response),
                        }
                        .encode_to_vec(),
                    )),
                    Err(status) => Outcome::Failure(WriteFailure {
                        code: status.code() as i32,
                        message: status.message().to_string(),
                    }),
                }),
            })
            .collect();
        Ok(Response::new(WriteResults { results }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_proto::etcdserverpb::{Member, PutRequest, PutResponse, ResponseHeader};

    fn command(op: KvOp) -> Bytes {
        KvCommand::with_session(7, 1, op).encode_to_bytes()
    }

    #[test]
    fn only_kv_writes_within_the_limit_may_be_forwarded() {
        let put = command(KvOp::Put(PutRequest {
            key: b"k".to_vec(),
            value: vec![1; 100],
            ..Default::default()
        }));
        assert_eq!(check_command(put.clone(), 1024).unwrap(), put);
        assert_eq!(
            check_command(put, 50).unwrap_err().message(),
            "etcdserver: request is too large"
        );
        let member = command(KvOp::MemberUpsert(Member {
            id: 9,
            ..Default::default()
        }));
        assert_eq!(
            check_command(member, 1024).unwrap_err().code(),
            Code::InvalidArgument
        );
        let garbage = Bytes::from_static(&[0xff, 0xff, 0xff]);
        assert_eq!(
            check_command(garbage, 1024).unwrap_err().code(),
            Code::InvalidArgument
        );
    }

    #[test]
    fn results_decode_in_order_and_a_short_answer_fails_the_batch() {
        let response = KvResponse::Put(PutResponse {
            header: Some(ResponseHeader {
                revision: 5,
                ..Default::default()
            }),
            prev_kv: None,
        });
        let ok = WriteResult {
            outcome: Some(Outcome::Response(Bytes::from(
                ForwardedResponse {
                    response: Some(response.clone()),
                }
                .encode_to_vec(),
            ))),
        };
        let failed = WriteResult {
            outcome: Some(Outcome::Failure(WriteFailure {
                code: Code::Unavailable as i32,
                message: "etcdserver: leader changed".into(),
            })),
        };
        let results = WriteResults {
            results: vec![ok.clone(), failed],
        };
        let decoded = decode_results(results, 2);
        assert_eq!(decoded[0].as_ref().unwrap(), &response);
        let e = decoded[1].as_ref().unwrap_err();
        assert_eq!(
            (e.code(), e.message()),
            (Code::Unavailable, "etcdserver: leader changed")
        );
        let short = decode_results(WriteResults { results: vec![ok] }, 2);
        assert!(
            short
                .iter()
                .all(|r| r.as_ref().unwrap_err().code() == Code::Internal)
        );
    }
}
