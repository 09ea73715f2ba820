//! The task behind one LeaseKeepAlive stream.
//!
//! Each keepalive on the stream is a request of the one write path
//! ([`Writes`]): the leader renews the lease on its lessor, and a follower
//! hands the request to the leader over the forwarding stream, like any
//! write. Answers go back in the order the requests came, up to
//! [`PENDING_MAX`] at once per stream.
//!
//! Leadership may move while the client's stream stays open: a renewal
//! that fails because the leader changed or could not be reached is tried
//! again once a leader is known (renewing twice is harmless), so the client
//! sees one unbroken stream. When no leader answers after a bounded number
//! of attempts the stream ends with `UNAVAILABLE`, on which etcd's clients
//! open a new one.

use crate::api::{HeaderSource, Writes};
use crate::driver::RaftHandle;
use crate::kv::{KvCommand, KvOp, KvResponse};
use crate::state::NodeStateMachine;
use flotilla_proto::etcdserverpb::{LeaseKeepAliveRequest, LeaseKeepAliveResponse};
use std::collections::VecDeque;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tonic::{Code, Status, Streaming};

/// Renewals in flight per stream; the client's stream is not read further
/// while this many are unanswered.
pub(super) const PENDING_MAX: usize = 16;
/// Attempts at one renewal before the stream ends with `UNAVAILABLE`.
const ATTEMPTS_MAX: u32 = 5;
/// Longest wait for a leader between two attempts.
const LEADER_WAIT: Duration = Duration::from_secs(2);
/// Pause after a failed attempt, times the attempts so far.
const RETRY_BACKOFF: Duration = Duration::from_millis(50);

/// The task behind one keepalive stream.
pub(super) struct KeepAliveTask {
    writes: Writes,
    handle: RaftHandle<NodeStateMachine>,
    header: HeaderSource,
    out: mpsc::Sender<Result<LeaseKeepAliveResponse, Status>>,
    closing: watch::Receiver<bool>,
}

/// Why the stream ends early.
enum End {
    /// The client went away; nothing to tell it.
    ClientGone,
    /// End the stream with this status.
    Status(Status),
}

impl KeepAliveTask {
    pub(super) fn new(
        writes: Writes,
        handle: RaftHandle<NodeStateMachine>,
        header: HeaderSource,
        out: mpsc::Sender<Result<LeaseKeepAliveResponse, Status>>,
        closing: watch::Receiver<bool>,
    ) -> KeepAliveTask {
        KeepAliveTask {
            writes,
            handle,
            header,
            out,
            closing,
        }
    }

    /// Serves the stream until the client leaves, the server closes it, or
    /// it fails; a failure reaches the client as the stream's last item.
    pub(super) async fn run(mut self, inbound: Streaming<LeaseKeepAliveRequest>) {
        let mut pending = VecDeque::new();
        let ended = self.serve(inbound, &mut pending).await;
        for task in pending {
            task.abort();
        }
        if let End::Status(status) = ended {
            tracing::debug!(%status, "keepalive stream ended");
            let _ = self.out.send(Err(status)).await;
        }
    }

    async fn serve(
        &mut self,
        mut inbound: Streaming<LeaseKeepAliveRequest>,
        pending: &mut VecDeque<JoinHandle<Result<LeaseKeepAliveResponse, Status>>>,
    ) -> End {
        let mut client_done = false;
        loop {
            if client_done && pending.is_empty() {
                return End::ClientGone;
            }
            let reading = !client_done && pending.len() < PENDING_MAX;
            tokio::select! {
                () = crate::watch::closed(&mut self.closing) => {
                    return End::Status(Status::unavailable("flotilla: server is shutting down"));
                }
                request = inbound.message(), if reading => match request {
                    Ok(Some(r)) => pending.push_back(tokio::spawn(renew(
                        self.writes.clone(),
                        self.handle.clone(),
                        r.id,
                    ))),
                    Ok(None) => client_done = true,
                    Err(_) => return End::ClientGone,
                },
                answer = front(pending) => {
                    pending.pop_front();
                    let answer = match answer {
                        Ok(Ok(mut answer)) => {
                            let revision = answer.header.as_ref().map_or(0, |h| h.revision);
                            answer.header = Some(self.header.header(revision));
                            answer
                        }
                        Ok(Err(status)) => return End::Status(status),
                        Err(_) => return End::Status(Status::internal("flotilla: keepalive task failed")),
                    };
                    if self.out.send(Ok(answer)).await.is_err() {
                        return End::ClientGone;
                    }
                }
            }
        }
    }
}

/// The oldest renewal's outcome (never completes when none is in flight).
async fn front<T>(pending: &mut VecDeque<JoinHandle<T>>) -> Result<T, tokio::task::JoinError> {
    match pending.front_mut() {
        Some(task) => task.await,
        None => std::future::pending().await,
    }
}

/// Renews lease `id` through the write path; retries a renewal that the
/// leader could not be reached for, up to [`ATTEMPTS_MAX`] times, waiting
/// for a leader in between.
async fn renew(
    writes: Writes,
    handle: RaftHandle<NodeStateMachine>,
    id: i64,
) -> Result<LeaseKeepAliveResponse, Status> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let command = KvCommand::new(KvOp::LeaseKeepAlive(LeaseKeepAliveRequest { id }));
        match writes.submit(command).await {
            Ok(KvResponse::LeaseKeepAlive(answer)) => return Ok(answer),
            Ok(_) => {
                return Err(Status::internal(
                    "flotilla: the leader answered a keepalive with another response",
                ));
            }
            Err(status) if status.code() == Code::Unavailable && attempt < ATTEMPTS_MAX => {
                tokio::time::sleep(RETRY_BACKOFF * attempt).await;
                let mut status = handle.watch_status();
                let _ = tokio::time::timeout(LEADER_WAIT, status.wait_for(|s| s.leader.is_some()))
                    .await;
            }
            Err(status) => return Err(status),
        }
    }
}
