//! The task behind one LeaseKeepAlive stream.
//!
//! On the leader a keepalive renews the lessor's timer directly. Anywhere
//! else the stream is relayed: the task opens one stream to the leader's
//! client URL (marked as forwarded, so the leader serves it itself) and
//! passes requests up and answers down, one answer per request, in order.
//!
//! Leadership may move while the client's stream stays open. Requests sent
//! upstream and not yet answered are remembered (a bounded queue), so when
//! the upstream fails, stalls, or the leader changes, the task opens a
//! stream to the new leader (or serves locally, if that is now this member)
//! and sends them again; renewing twice is harmless. The client sees one
//! unbroken stream. When no leader can be reached after a bounded number of
//! attempts the stream ends with `UNAVAILABLE`, on which etcd's clients
//! open a new one.

use crate::api::{ApiContext, LeaderHint, driver_status, mark_forwarded};
use crate::driver::{DriverError, RaftHandle};
use crate::kv::{KeepAliveError, Lessor};
use crate::state::NodeStateMachine;
use flotilla_proto::etcdserverpb::lease_client::LeaseClient;
use flotilla_proto::etcdserverpb::{LeaseKeepAliveRequest, LeaseKeepAliveResponse};
use flotilla_raft::{NodeId, Role};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::MetadataMap;
use tonic::{Code, Request, Status, Streaming};

/// Requests relayed to the leader and not yet answered, per stream. The
/// client's stream is not read further while this many are outstanding.
pub(super) const PENDING_MAX: usize = 16;
/// How often a stream with unanswered relayed requests checks whether the
/// leader moved.
const LEADER_CHECK_INTERVAL: Duration = Duration::from_millis(100);
/// How long a relayed request may stay unanswered before its upstream is
/// taken as broken.
const UPSTREAM_ANSWER_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a relay waits for an election before it gives up.
const LEADER_WAIT: Duration = Duration::from_secs(5);
/// Upstream failures in a row (without an answer between them) after which
/// the client's stream ends with `UNAVAILABLE`.
const UPSTREAM_FAILURES_MAX: u32 = 5;
/// Pause after an upstream failure, times the failures in a row.
const UPSTREAM_RETRY_BACKOFF: Duration = Duration::from_millis(50);
/// How long a new leader's lessor may take to be promoted (the expiry loop
/// does it on the status change) before a keepalive gives up on it.
const PROMOTION_WAIT: Duration = Duration::from_millis(500);
const PROMOTION_POLL: Duration = Duration::from_millis(10);

/// Why the stream ends early.
#[derive(Debug)]
enum End {
    /// The client went away; nothing to tell it.
    ClientGone,
    /// End the stream with this status.
    Status(Status),
}

impl From<Status> for End {
    fn from(status: Status) -> End {
        End::Status(status)
    }
}

/// What a local renewal gave.
enum Renewal {
    /// The answer for the client.
    Answer(LeaseKeepAliveResponse),
    /// This member does not lead: the lessor holds no deadlines.
    NotHere,
}

/// How a relayed stream reaches the leader.
pub(super) struct RelayTo {
    /// Finds the leader's URL and holds the channels to it.
    pub(super) ctx: ApiContext,
    /// The client's request metadata, passed on upstream.
    pub(super) metadata: MetadataMap,
}

/// One open stream to the leader.
struct Upstream {
    leader: NodeId,
    requests: mpsc::Sender<LeaseKeepAliveRequest>,
    responses: Streaming<LeaseKeepAliveResponse>,
}

/// The task behind one keepalive stream.
pub(super) struct KeepAliveTask {
    handle: RaftHandle<NodeStateMachine>,
    lessor: Arc<Mutex<Lessor>>,
    cluster_id: u64,
    out: mpsc::Sender<Result<LeaseKeepAliveResponse, Status>>,
    closing: watch::Receiver<bool>,
    /// Set when requests may be relayed: forwarding is configured and the
    /// stream is not itself a forwarded one (forwarding takes one hop).
    relay: Option<RelayTo>,
    /// The stream to the leader, while requests are relayed.
    upstream: Option<Upstream>,
    /// Relayed requests not yet answered, oldest first, with when each was
    /// (last) sent.
    pending: VecDeque<(i64, Instant)>,
    /// Upstream failures since the last answer.
    failures: u32,
}

impl KeepAliveTask {
    pub(super) fn new(
        handle: RaftHandle<NodeStateMachine>,
        lessor: Arc<Mutex<Lessor>>,
        cluster_id: u64,
        out: mpsc::Sender<Result<LeaseKeepAliveResponse, Status>>,
        closing: watch::Receiver<bool>,
        relay: Option<RelayTo>,
    ) -> KeepAliveTask {
        KeepAliveTask {
            handle,
            lessor,
            cluster_id,
            out,
            closing,
            relay,
            upstream: None,
            pending: VecDeque::new(),
            failures: 0,
        }
    }

    /// Serves the stream until the client leaves, the server closes it, or
    /// it fails; a failure reaches the client as the stream's last item.
    pub(super) async fn run(mut self, inbound: Streaming<LeaseKeepAliveRequest>) {
        if let Err(End::Status(status)) = self.serve(inbound).await {
            tracing::debug!(%status, "keepalive stream ended");
            let _ = self.out.send(Err(status)).await;
        }
    }

    async fn serve(&mut self, mut inbound: Streaming<LeaseKeepAliveRequest>) -> Result<(), End> {
        let mut closing = self.closing.clone();
        loop {
            let room = self.pending.len() < PENDING_MAX;
            let waiting = !self.pending.is_empty();
            let upstream = &mut self.upstream;
            tokio::select! {
                biased;
                () = crate::watch::closed(&mut closing) => return Err(shutting_down()),
                answer = next_answer(upstream), if upstream.is_some() => {
                    self.on_upstream(answer).await?;
                }
                request = inbound.next(), if room => match request {
                    Some(Ok(request)) => self.on_request(request.id).await?,
                    // The client closed its side or broke the stream.
                    Some(Err(_)) | None => return Ok(()),
                },
                () = tokio::time::sleep(LEADER_CHECK_INTERVAL), if waiting => self.check_upstream().await?,
            }
        }
    }

    async fn on_request(&mut self, id: i64) -> Result<(), End> {
        self.reroute().await?;
        if self.upstream.is_none() {
            match self.renew_local(id).await? {
                Renewal::Answer(answer) => return self.send(answer).await,
                Renewal::NotHere
                    if self.relay.is_some() && self.handle.status().role != Role::Leader =>
                {
                    // Leadership moved between the check and the renewal.
                    self.reroute().await?;
                    if self.upstream.is_none() {
                        return Err(self.not_leader());
                    }
                }
                Renewal::NotHere => return Err(self.not_leader()),
            }
        }
        self.pending.push_back((id, Instant::now()));
        if !self.send_upstream(id) {
            return self.upstream_failed().await;
        }
        Ok(())
    }

    async fn on_upstream(
        &mut self,
        answer: Option<Result<LeaseKeepAliveResponse, Status>>,
    ) -> Result<(), End> {
        match answer {
            Some(Ok(mut answer)) => {
                let asked = self.pending.pop_front().map(|(id, _)| id);
                if asked != Some(answer.id) {
                    tracing::warn!(?asked, answered = answer.id, "keepalive relay out of step");
                }
                self.failures = 0;
                // The client hears from the member it talks to, as etcd's
                // followers answer: this member's header, the leader's
                // revision.
                let revision = answer.header.as_ref().map_or(0, |h| h.revision);
                answer.header = Some(super::service::header(
                    &self.handle,
                    self.cluster_id,
                    revision,
                ));
                self.send(answer).await
            }
            // The leader stepped down, stopped or is unreachable: find the
            // next one. Anything else is the leader's answer to the client.
            Some(Err(status)) if status.code() != Code::Unavailable => Err(End::Status(status)),
            Some(Err(status)) => {
                tracing::debug!(%status, "keepalive upstream failed");
                self.upstream_failed().await
            }
            None => self.upstream_failed().await,
        }
    }

    /// Runs while relayed requests wait: follows a leader change, and
    /// gives up on an upstream that stopped answering.
    async fn check_upstream(&mut self) -> Result<(), End> {
        let stalled = self
            .pending
            .front()
            .is_some_and(|(_, sent)| sent.elapsed() >= UPSTREAM_ANSWER_TIMEOUT);
        if stalled {
            tracing::debug!("keepalive upstream stalled");
            return self.upstream_failed().await;
        }
        self.reroute().await
    }

    /// Drops the upstream and, after a pause that grows with the failures
    /// in a row, resends the unanswered requests wherever the leader is now.
    async fn upstream_failed(&mut self) -> Result<(), End> {
        self.upstream = None;
        self.back_off().await?;
        self.reroute().await
    }

    /// Counts an upstream failure and pauses; ends the stream when there
    /// were too many in a row.
    async fn back_off(&mut self) -> Result<(), End> {
        self.failures += 1;
        if self.failures > UPSTREAM_FAILURES_MAX {
            return Err(End::Status(Status::unavailable(
                "etcdserver: leader changed",
            )));
        }
        let mut closing = self.closing.clone();
        tokio::select! {
            () = crate::watch::closed(&mut closing) => Err(shutting_down()),
            () = tokio::time::sleep(UPSTREAM_RETRY_BACKOFF * self.failures) => Ok(()),
        }
    }

    /// Points the stream at the current leader: local when this member
    /// leads (unanswered relayed requests are then answered here), else an
    /// upstream to the leader, opened anew (with every unanswered request
    /// sent again) if the one open goes elsewhere. An upstream that cannot
    /// be opened is retried after a pause, a bounded number of times.
    async fn reroute(&mut self) -> Result<(), End> {
        if self.relay.is_none() {
            return Ok(());
        }
        loop {
            let mut status = self.handle.status();
            if status.role != Role::Leader && !status.leader.is_some() {
                status = self.wait_for_leader().await?;
            }
            if status.role == Role::Leader {
                self.upstream = None;
                while let Some((id, _)) = self.pending.pop_front() {
                    match self.renew_local(id).await? {
                        Renewal::Answer(answer) => self.send(answer).await?,
                        Renewal::NotHere => return Err(self.not_leader()),
                    }
                }
                return Ok(());
            }
            if self
                .upstream
                .as_ref()
                .is_some_and(|u| u.leader == status.leader)
            {
                return Ok(());
            }
            self.upstream = None;
            match self.open(status.leader).await? {
                Ok(upstream) => {
                    self.upstream = Some(upstream);
                    break;
                }
                Err(e) => {
                    tracing::debug!(status = %e, "cannot open a keepalive stream to the leader");
                    self.back_off().await?;
                }
            }
        }
        let now = Instant::now();
        for (_, sent) in &mut self.pending {
            *sent = now;
        }
        let ids: Vec<i64> = self.pending.iter().map(|(id, _)| *id).collect();
        for id in ids {
            if !self.send_upstream(id) {
                // Closed already: the next poll of its answers reports it.
                break;
            }
        }
        Ok(())
    }

    /// Waits, bounded, until some member leads.
    async fn wait_for_leader(&mut self) -> Result<crate::driver::NodeStatus, End> {
        let mut status = self.handle.watch_status();
        let mut closing = self.closing.clone();
        let known = |s: &crate::driver::NodeStatus| s.role == Role::Leader || s.leader.is_some();
        tokio::select! {
            () = crate::watch::closed(&mut closing) => Err(shutting_down()),
            found = tokio::time::timeout(LEADER_WAIT, async {
                // The guard must not live across an await.
                status.wait_for(known).await.map(|s| *s)
            }) => match found {
                Ok(Ok(s)) => Ok(s),
                Ok(Err(_)) => Err(End::Status(driver_status(&DriverError::Stopped, &LeaderHint::default()))),
                Err(_) => Err(End::Status(Status::unavailable("etcdserver: no leader"))),
            },
        }
    }

    /// Opens a keepalive stream to `leader`'s client URL: the stream, or
    /// why it could not be opened.
    async fn open(&self, leader: NodeId) -> Result<Result<Upstream, Status>, End> {
        let Some(relay) = self.relay.as_ref() else {
            return Err(self.not_leader());
        };
        let hint = relay.ctx.leader_hint(Some(leader)).await;
        let Some(url) = hint
            .endpoint
            .filter(|_| hint.id != Some(relay.ctx.member_id))
        else {
            return Ok(Err(Status::unavailable(format!(
                "flotilla: no client URL known for leader {:x}",
                leader.0
            ))));
        };
        let channel = match relay.ctx.forwarder.channel(&url) {
            Ok(channel) => channel,
            Err(e) => return Ok(Err(e)),
        };
        let (requests, rx) = mpsc::channel(PENDING_MAX);
        let mut request = Request::new(ReceiverStream::new(rx));
        *request.metadata_mut() = relay.metadata.clone();
        let mut client = LeaseClient::new(channel);
        let call = client.lease_keep_alive(mark_forwarded(request));
        let mut closing = self.closing.clone();
        // The channel's timeout bounds the wait for the response headers.
        let opened = tokio::select! {
            () = crate::watch::closed(&mut closing) => return Err(shutting_down()),
            opened = call => opened,
        };
        Ok(opened.map(|responses| {
            tracing::debug!(leader = %format!("{:x}", leader.0), %url, "keepalive relayed to the leader");
            Upstream {
                leader,
                requests,
                responses: responses.into_inner(),
            }
        }))
    }

    /// Queues `id` on the upstream; false if it is gone.
    fn send_upstream(&mut self, id: i64) -> bool {
        // The queue holds `PENDING_MAX` and no more are ever outstanding.
        self.upstream
            .as_ref()
            .is_some_and(|u| u.requests.try_send(LeaseKeepAliveRequest { id }).is_ok())
    }

    /// Renews on this member's lessor: etcd's answers, the TTL on success
    /// and TTL 0 for a lease that is gone. A member just elected may see
    /// its lessor not yet promoted; that is waited for, briefly.
    async fn renew_local(&self, id: i64) -> Result<Renewal, End> {
        let deadline = Instant::now() + PROMOTION_WAIT;
        let ttl = loop {
            let renewed = lock(&self.lessor).keepalive(id, std::time::Instant::now());
            match renewed {
                Ok(ttl) => break ttl,
                Err(KeepAliveError::NotFound) => break 0,
                Err(KeepAliveError::NotPrimary) => {
                    if self.handle.status().role != Role::Leader || Instant::now() >= deadline {
                        return Ok(Renewal::NotHere);
                    }
                    tokio::time::sleep(PROMOTION_POLL).await;
                }
            }
        };
        let revision = self
            .handle
            .read_local(|sm| sm.kv().revision())
            .await
            .map_err(|e| driver_status(&e, &LeaderHint::default()))?;
        Ok(Renewal::Answer(LeaseKeepAliveResponse {
            header: Some(super::service::header(
                &self.handle,
                self.cluster_id,
                revision,
            )),
            id,
            ttl,
        }))
    }

    fn not_leader(&self) -> End {
        let leader = self.handle.status().leader;
        End::Status(driver_status(
            &DriverError::NotLeader {
                leader_hint: leader.is_some().then_some(leader),
            },
            &LeaderHint::default(),
        ))
    }

    async fn send(&self, answer: LeaseKeepAliveResponse) -> Result<(), End> {
        self.out.send(Ok(answer)).await.map_err(|_| End::ClientGone)
    }
}

/// The next answer on the upstream (never completes without one).
async fn next_answer(
    upstream: &mut Option<Upstream>,
) -> Option<Result<LeaseKeepAliveResponse, Status>> {
    match upstream {
        Some(u) => u.responses.next().await,
        None => std::future::pending().await,
    }
}

fn lock(lessor: &Mutex<Lessor>) -> std::sync::MutexGuard<'_, Lessor> {
    lessor.lock().unwrap_or_else(|p| p.into_inner())
}

fn shutting_down() -> End {
    End::Status(Status::unavailable("flotilla: server is shutting down"))
}
