//! Batched write forwarding. A follower proposes plain writes through the
//! peer stream (the driver's peer proposals); everything else — membership
//! changes, keepalives, what the leader refused there, and every write to a
//! leader that does not take peer proposals — its [`WriteForwarder`]
//! gathers and hands to the leader in batches over one long-lived
//! `Forward/WriteStream` stream, where [`ForwardService`] serves them. A
//! batch carries every write that queued while the previous batches were in
//! flight, and a batch on an open stream costs one HTTP/2 data frame each
//! way.
//!
//! Forwarding is one hop: the leader proposes what it receives itself and
//! answers `NotLeader` failures rather than forwarding again. When the
//! leader changes, the follower opens a stream to the new one; batches still
//! unanswered on a stream that breaks, or that goes `stall_timeout` without
//! answering anything, fail with `UNAVAILABLE`; clients retry, and writes
//! with exactly-once ids stay exactly-once.

use super::context::ApiContext;
use super::errors::{kv_status, request_too_large};
use super::gate::FeatureGate;
use super::write::{WriteError, serve_here};
use crate::kv::{KvCommand, KvOp, KvResponse};
use crate::transport::WINDOWED_SESSIONS;
use crate::watch::StreamCloser;
use flotilla_proto::forward::forward_client::ForwardClient;
use flotilla_proto::forward::forward_server::{Forward, ForwardServer};
use flotilla_proto::forward::write_result::Outcome;
use flotilla_proto::forward::{WriteBatch, WriteFailure, WriteResult, WriteResults};
use flotilla_raft::Bytes;
use prost::Message as _;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Request, Response, Status, Streaming};

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
    /// How long a stream with unanswered batches may go without answering
    /// any before the follower gives up on it.
    pub stall_timeout: Duration,
}

impl WriteForwardConfig {
    /// Defaults for a node accepting requests of `max_request_bytes`.
    pub fn for_request_limit(max_request_bytes: usize) -> Self {
        WriteForwardConfig {
            queue: 4096,
            batch_max: 512,
            batch_bytes_max: 4 << 20,
            in_flight: 4,
            command_bytes_max: max_request_bytes + super::write::COMMAND_OVERHEAD_BYTES,
            stall_timeout: Duration::from_secs(5),
        }
    }
}

/// Applied-or-refused, as the follower answers its client.
type WriteOutcome = Result<KvResponse, Status>;

struct Pending {
    command: Bytes,
    reply: oneshot::Sender<WriteOutcome>,
}

/// The follower side: a queue drained by one task into batches on a stream
/// to the leader. Cheap to clone.
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

/// A batch on its way: the callers to answer, and its in-flight permit.
struct InFlight {
    replies: Vec<oneshot::Sender<WriteOutcome>>,
    _permit: OwnedSemaphorePermit,
}

impl InFlight {
    fn answer(self, outcomes: Vec<WriteOutcome>) {
        for (reply, outcome) in self.replies.into_iter().zip(outcomes) {
            let _ = reply.send(outcome);
        }
    }

    fn fail(self, status: &Status) {
        for reply in self.replies {
            let _ = reply.send(Err(status.clone()));
        }
    }
}

/// The unanswered batches of one stream by id; `None` once the stream has
/// ended (and failed what it left).
type Unanswered = Arc<Mutex<Option<HashMap<u64, InFlight>>>>;

/// One open stream to one leader.
struct Session {
    leader: u64,
    batches: mpsc::Sender<WriteBatch>,
    unanswered: Unanswered,
}

impl Session {
    /// Opens a stream over `channel`; a task reads its answers.
    fn open(
        leader: u64,
        channel: tonic::transport::Channel,
        config: &WriteForwardConfig,
    ) -> Session {
        let (batches, rx) = mpsc::channel(config.in_flight.max(1));
        let unanswered: Unanswered = Arc::new(Mutex::new(Some(HashMap::new())));
        let mut client = ForwardClient::new(channel)
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX);
        let reader = unanswered.clone();
        let stall = config.stall_timeout;
        tokio::spawn(async move {
            let end = match client.write_stream(ReceiverStream::new(rx)).await {
                Ok(results) => read_results(results.into_inner(), &reader, stall).await,
                Err(status) => status,
            };
            let left = lock(&reader).take().unwrap_or_default();
            for (_, batch) in left {
                batch.fail(&end);
            }
        });
        Session {
            leader,
            batches,
            unanswered,
        }
    }

    /// Sends `batch`; gives it back when the stream has ended.
    async fn send(&self, batch: WriteBatch, in_flight: InFlight) -> Result<(), InFlight> {
        let id = batch.batch_id;
        match lock(&self.unanswered).as_mut() {
            Some(unanswered) => unanswered.insert(id, in_flight),
            None => return Err(in_flight),
        };
        if self.batches.send(batch).await.is_err() {
            let back = lock(&self.unanswered).as_mut().and_then(|u| u.remove(&id));
            // Not there: the reader failed it already.
            return back.map_or(Ok(()), Err);
        }
        Ok(())
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Answers batches as results arrive; returns the status that ended the
/// stream.
async fn read_results(
    mut results: Streaming<WriteResults>,
    unanswered: &Unanswered,
    stall: Duration,
) -> Status {
    loop {
        match tokio::time::timeout(stall, results.message()).await {
            Ok(Ok(Some(r))) => {
                let batch = lock(unanswered)
                    .as_mut()
                    .and_then(|u| u.remove(&r.batch_id));
                if let Some(batch) = batch {
                    let outcomes = decode_results(r, batch.replies.len());
                    batch.answer(outcomes);
                }
            }
            Ok(Ok(None)) => {
                return Status::unavailable("flotilla: the leader ended the forwarding stream");
            }
            Ok(Err(status)) => return status,
            Err(_) => {
                if lock(unanswered).as_ref().is_some_and(|u| !u.is_empty()) {
                    return Status::unavailable(
                        "etcdserver: request timed out (the leader stopped answering forwarded writes)",
                    );
                }
            }
        }
    }
}

async fn run(
    ctx: ApiContext,
    cluster_id: u64,
    config: WriteForwardConfig,
    mut queue: mpsc::Receiver<Pending>,
) {
    let permits = Arc::new(Semaphore::new(config.in_flight.max(1)));
    let mut session: Option<Session> = None;
    let mut next_id = 0u64;
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
        let (commands, replies): (Vec<Bytes>, Vec<_>) =
            batch.into_iter().map(|p| (p.command, p.reply)).unzip();
        let in_flight = InFlight {
            replies,
            _permit: permit,
        };
        let leader = ctx.raft.status().leader.0;
        let current = session
            .as_ref()
            .is_some_and(|s| s.leader == leader && !s.batches.is_closed());
        if !current {
            session = None;
            match ctx.leader_channel().await {
                Ok(Some(channel)) => session = Some(Session::open(leader, channel, &config)),
                Ok(None) => {
                    // This member has become the leader since: serve here.
                    let ctx = ctx.clone();
                    let command_bytes_max = config.command_bytes_max;
                    tokio::spawn(async move {
                        let outcomes = serve_forwarded(&ctx, commands, command_bytes_max).await;
                        in_flight.answer(outcomes);
                    });
                    continue;
                }
                Err(status) => {
                    in_flight.fail(&status);
                    continue;
                }
            }
        }
        let open = session.as_ref().expect("opened above");
        // A leader of the previous release would propose the mark as it
        // is, for its followers to ignore and new members to honour: only
        // a leader heard advertising marks gets them.
        let commands = if ctx.features.understood_by(open.leader, WINDOWED_SESSIONS) {
            commands
        } else {
            commands.into_iter().map(FeatureGate::strip_mark).collect()
        };
        next_id += 1;
        let batch = WriteBatch {
            cluster_id,
            commands,
            batch_id: next_id,
        };
        if let Err(back) = open.send(batch, in_flight).await {
            session = None;
            back.fail(&Status::unavailable(
                "flotilla: the forwarding stream to the leader ended",
            ));
        }
    }
}

/// A state machine response as the `Forward` service carries it.
#[derive(Clone, PartialEq, prost::Message)]
struct ForwardedResponse {
    #[prost(oneof = "KvResponse", tags = "11, 12, 13, 14, 15, 16, 17, 18, 19, 20")]
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

/// Serves forwarded `commands` here, in order, as the answers to send
/// back. Each is checked again (the leader trusts no follower's checks);
/// the node's own commands (lease expiry, the legacy upsert) are never
/// accepted from a peer.
async fn serve_forwarded(
    ctx: &ApiContext,
    commands: Vec<Bytes>,
    command_bytes_max: usize,
) -> Vec<WriteOutcome> {
    let checked: Vec<Result<Bytes, Status>> = commands
        .into_iter()
        .map(|c| check_command(c, command_bytes_max, &ctx.admission.config().limits))
        .collect();
    let valid: Vec<Bytes> = checked.iter().filter_map(|c| c.clone().ok()).collect();
    let mut served = serve_here(ctx, valid).await.into_iter();
    checked
        .into_iter()
        .map(|c| {
            c?;
            match served.next() {
                Some(outcome) => outcome.map_err(WriteError::into_status),
                None => Err(Status::internal("flotilla: write outcome missing")),
            }
        })
        .collect()
}

/// A forwarded command the leader proposes: within the size limit, a KV
/// write, and valid under the leader's own limits (the follower admitted
/// it under its own; the store checks it again as it applies).
fn check_command(
    command: Bytes,
    command_bytes_max: usize,
    limits: &crate::kv::RequestLimits,
) -> Result<Bytes, Status> {
    check_forwarded(&command, command_bytes_max, limits).map(|_| command)
}

/// [`check_command`]'s checks, giving the decoded command: also how the
/// leader checks what a follower proposes through the peer stream.
pub(super) fn check_forwarded(
    command: &Bytes,
    command_bytes_max: usize,
    limits: &crate::kv::RequestLimits,
) -> Result<KvCommand, Status> {
    if command.len() > command_bytes_max {
        return Err(request_too_large());
    }
    let decoded = KvCommand::decode(command.clone()).map_err(|e| {
        Status::invalid_argument(format!("flotilla: undecodable forwarded write: {e}"))
    })?;
    match &decoded.op {
        Some(KvOp::MemberUpsert(_)) | None => Err(Status::invalid_argument(
            "flotilla: this command may not be forwarded",
        )),
        Some(op) => {
            crate::kv::validate_op(op, limits).map_err(|e| kv_status(&e))?;
            Ok(decoded)
        }
    }
}

/// The leader side of forwarding: the `Forward` service.
#[derive(Clone, Debug)]
pub struct ForwardService {
    ctx: ApiContext,
    cluster_id: u64,
    command_bytes_max: usize,
    batch_max: usize,
    in_flight_max: usize,
    message_bytes_max: usize,
    closing: StreamCloser,
}

impl ForwardService {
    /// The service of a member of cluster `cluster_id`, with the limits of
    /// `config` (batches and batches in flight up to four times the
    /// forwarders' own, so a peer with other settings is not refused for a
    /// slightly larger batch).
    pub fn new(ctx: ApiContext, cluster_id: u64, config: &WriteForwardConfig) -> Self {
        ForwardService {
            ctx,
            cluster_id,
            command_bytes_max: config.command_bytes_max,
            batch_max: config.batch_max.saturating_mul(4).max(1),
            in_flight_max: config.in_flight.saturating_mul(4).max(1),
            message_bytes_max: config
                .batch_bytes_max
                .max(config.command_bytes_max)
                .saturating_mul(4)
                .saturating_add(1 << 16),
            closing: StreamCloser::new(),
        }
    }

    /// Ends the open forwarding streams when the server shuts down:
    /// followers never end theirs, and a graceful shutdown would wait.
    pub fn stream_closer(&self) -> StreamCloser {
        self.closing.clone()
    }

    /// The tonic server for this service.
    pub fn into_server(self) -> ForwardServer<ForwardService> {
        let message_bytes_max = self.message_bytes_max;
        ForwardServer::new(self)
            .max_decoding_message_size(message_bytes_max)
            .max_encoding_message_size(usize::MAX)
    }

    /// Why `batch` is refused, if it is.
    fn check(&self, batch: &WriteBatch) -> Result<(), Status> {
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
        Ok(())
    }

    /// Proposes `batch` and gathers its outcomes.
    async fn answer(&self, batch: WriteBatch) -> WriteResults {
        let outcomes = serve_forwarded(&self.ctx, batch.commands, self.command_bytes_max).await;
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
        WriteResults {
            results,
            batch_id: batch.batch_id,
        }
    }
}

/// What the leader streams back: each batch's results, or the status that
/// ends the stream.
type ResultStream = ReceiverStream<Result<WriteResults, Status>>;

#[tonic::async_trait]
impl Forward for ForwardService {
    type WriteStreamStream = ResultStream;

    async fn write_stream(
        &self,
        request: Request<Streaming<WriteBatch>>,
    ) -> Result<Response<ResultStream>, Status> {
        let mut batches = request.into_inner();
        let (results, rx) = mpsc::channel(self.in_flight_max);
        let service = self.clone();
        let mut closing = self.closing.subscribe();
        tokio::spawn(async move {
            // At most `in_flight_max` batches are being proposed; the
            // follower's further batches wait in the stream (HTTP/2 flow
            // control), as do results the follower is slow to read.
            let permits = Arc::new(Semaphore::new(service.in_flight_max));
            loop {
                let next = tokio::select! {
                    () = crate::watch::closed(&mut closing) => {
                        let _ = results.send(Err(Status::unavailable("etcdserver: server stopped"))).await;
                        return;
                    }
                    next = batches.message() => next,
                };
                let batch = match next {
                    Ok(Some(batch)) => batch,
                    // The follower ended the stream or broke it.
                    Ok(None) | Err(_) => return,
                };
                if let Err(status) = service.check(&batch) {
                    let _ = results.send(Err(status)).await;
                    return;
                }
                let Ok(permit) = permits.clone().acquire_owned().await else {
                    return;
                };
                let (service, results) = (service.clone(), results.clone());
                tokio::spawn(async move {
                    let answered = service.answer(batch).await;
                    let _ = results.send(Ok(answered)).await;
                    drop(permit);
                });
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_proto::etcdserverpb::{Member, PutRequest, PutResponse, ResponseHeader};

    /// A command with exactly-once ids and a mark: the leader checks the
    /// follower's bytes and passes them on unchanged, so the mark reaches
    /// the gate of what the leader proposes.
    fn command(op: KvOp) -> Bytes {
        KvCommand::with_session(7, 1, op)
            .with_first_unanswered(1)
            .encode_to_bytes()
    }

    #[test]
    fn only_kv_writes_within_the_limit_may_be_forwarded() {
        let limits = crate::kv::KvConfig::default().limits();
        let empty_key = command(KvOp::Put(PutRequest::default()));
        assert_eq!(
            check_command(empty_key, 1024, &limits)
                .unwrap_err()
                .message(),
            "etcdserver: key is not provided"
        );
        let put = command(KvOp::Put(PutRequest {
            key: b"k".to_vec(),
            value: vec![1; 100],
            ..Default::default()
        }));
        assert_eq!(check_command(put.clone(), 1024, &limits).unwrap(), put);
        assert_eq!(
            check_command(put, 50, &limits).unwrap_err().message(),
            "etcdserver: request is too large"
        );
        let member = command(KvOp::MemberUpsert(Member {
            id: 9,
            ..Default::default()
        }));
        let promote = command(KvOp::MemberPromote(
            flotilla_proto::etcdserverpb::MemberPromoteRequest { id: 9 },
        ));
        assert_eq!(
            check_command(promote.clone(), 1024, &limits).unwrap(),
            promote
        );
        assert_eq!(
            check_command(member, 1024, &limits).unwrap_err().code(),
            Code::InvalidArgument
        );
        let garbage = Bytes::from_static(&[0xff, 0xff, 0xff]);
        assert_eq!(
            check_command(garbage, 1024, &limits).unwrap_err().code(),
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
            batch_id: 1,
        };
        let decoded = decode_results(results, 2);
        assert_eq!(decoded[0].as_ref().unwrap(), &response);
        let e = decoded[1].as_ref().unwrap_err();
        assert_eq!(
            (e.code(), e.message()),
            (Code::Unavailable, "etcdserver: leader changed")
        );
        let short = decode_results(
            WriteResults {
                results: vec![ok],
                batch_id: 2,
            },
            2,
        );
        assert!(
            short
                .iter()
                .all(|r| r.as_ref().unwrap_err().code() == Code::Internal)
        );
    }

    /// How a scripted leader treats the batches it receives.
    #[derive(Clone, Copy)]
    enum Script {
        /// Answers each pair of batches in reverse order.
        Reverse,
        /// Reads batches and never answers.
        Silent,
        /// Ends the stream after reading one batch.
        HangUp,
    }

    /// A leader stand-in answering every command of a batch with a put
    /// response whose revision is the batch id.
    #[derive(Clone, Copy)]
    struct Scripted(Script);

    fn answer(batch: &WriteBatch) -> WriteResults {
        let response = KvResponse::Put(PutResponse {
            header: Some(ResponseHeader {
                revision: batch.batch_id as i64,
                ..Default::default()
            }),
            prev_kv: None,
        });
        let encoded = Bytes::from(
            ForwardedResponse {
                response: Some(response),
            }
            .encode_to_vec(),
        );
        WriteResults {
            results: batch
                .commands
                .iter()
                .map(|_| WriteResult {
                    outcome: Some(Outcome::Response(encoded.clone())),
                })
                .collect(),
            batch_id: batch.batch_id,
        }
    }

    #[tonic::async_trait]
    impl Forward for Scripted {
        type WriteStreamStream = ResultStream;

        async fn write_stream(
            &self,
            request: Request<Streaming<WriteBatch>>,
        ) -> Result<Response<ResultStream>, Status> {
            let mut batches = request.into_inner();
            let (tx, rx) = mpsc::channel(8);
            let script = self.0;
            tokio::spawn(async move {
                let mut held = Vec::new();
                while let Ok(Some(batch)) = batches.message().await {
                    match script {
                        Script::Reverse => {
                            held.push(batch);
                            if held.len() == 2 {
                                for b in held.drain(..).rev() {
                                    let _ = tx.send(Ok(answer(&b))).await;
                                }
                            }
                        }
                        Script::Silent => held.push(batch),
                        Script::HangUp => return,
                    }
                }
            });
            Ok(Response::new(ReceiverStream::new(rx)))
        }
    }

    /// A session to a scripted leader on loopback.
    async fn session_to(script: Script) -> Session {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(ForwardServer::new(Scripted(script)))
                .serve_with_incoming(flotilla_client::coalesce::incoming(listener)),
        );
        let channel = tonic::transport::Endpoint::from_shared(url)
            .unwrap()
            .connect_with_connector_lazy(flotilla_client::coalesce::Connector::default());
        let config = WriteForwardConfig {
            stall_timeout: Duration::from_millis(300),
            ..WriteForwardConfig::for_request_limit(1024)
        };
        Session::open(2, channel, &config)
    }

    /// Sends a batch of `n` writes with id `id`; the receivers of their
    /// outcomes.
    async fn send(session: &Session, id: u64, n: usize) -> Vec<oneshot::Receiver<WriteOutcome>> {
        let permit = Arc::new(Semaphore::new(1)).acquire_owned().await.unwrap();
        let (replies, answers): (Vec<_>, Vec<_>) = (0..n).map(|_| oneshot::channel()).unzip();
        let batch = WriteBatch {
            cluster_id: 1,
            commands: (0..n).map(|_| Bytes::from_static(b"w")).collect(),
            batch_id: id,
        };
        let in_flight = InFlight {
            replies,
            _permit: permit,
        };
        assert!(session.send(batch, in_flight).await.is_ok());
        answers
    }

    /// The outcome, which must come within ten seconds.
    async fn within(answer: oneshot::Receiver<WriteOutcome>) -> WriteOutcome {
        tokio::time::timeout(Duration::from_secs(10), answer)
            .await
            .expect("no outcome within 10 s")
            .expect("the reply was dropped unanswered")
    }

    fn revision(outcome: WriteOutcome) -> i64 {
        match outcome.unwrap() {
            KvResponse::Put(p) => p.header.unwrap().revision,
            other => panic!("unexpected {other:?}"),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn answers_reach_their_batches_in_any_order() {
        let session = session_to(Script::Reverse).await;
        let first = send(&session, 7, 2).await;
        let second = send(&session, 8, 3).await;
        for answer in first {
            assert_eq!(revision(within(answer).await), 7);
        }
        for answer in second {
            assert_eq!(revision(within(answer).await), 8);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_silent_leader_fails_the_batches_after_the_stall_timeout() {
        let session = session_to(Script::Silent).await;
        let answers = send(&session, 1, 2).await;
        for answer in answers {
            let e = within(answer).await.unwrap_err();
            assert_eq!(e.code(), Code::Unavailable, "{e:?}");
        }
        // The stream is given up: the next batch is refused at once, so the
        // forwarder opens a new one.
        let permit = Arc::new(Semaphore::new(1)).acquire_owned().await.unwrap();
        let refused = session
            .send(
                WriteBatch::default(),
                InFlight {
                    replies: Vec::new(),
                    _permit: permit,
                },
            )
            .await;
        assert!(refused.is_err());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stream_the_leader_ends_fails_what_it_left() {
        let session = session_to(Script::HangUp).await;
        let answers = send(&session, 1, 2).await;
        for answer in answers {
            let e = within(answer).await.unwrap_err();
            assert_eq!(e.code(), Code::Unavailable, "{e:?}");
        }
    }
}
