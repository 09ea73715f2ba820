//! The task that owns the connection to one peer: connect lazily, stream
//! batches, and on a break wait out an exponential backoff with jitter before
//! connecting again.

use super::TransportConfig;
use super::batch::Batcher;
use super::fault::FaultControl;
use super::stats::{Counter, TransportMetrics};
use flotilla_proto::raft::raft_peer_client::RaftPeerClient;
use flotilla_proto::raft::{PeerAck, PeerBatch};
use flotilla_raft::{Message, NodeId};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};

/// How a stream ended.
enum Ended {
    /// The transport dropped this peer: stop.
    Shutdown,
    /// The connection or the call failed: reconnect after a backoff.
    Broken,
}

/// Exponential backoff with "equal jitter": each wait is between half and
/// all of the current step, so peers that lost the same node do not all
/// reconnect in the same instant, and no wait is ever near zero.
#[derive(Debug)]
pub(crate) struct Backoff {
    min: Duration,
    max: Duration,
    step: Duration,
    rng: SmallRng,
}

impl Backoff {
    pub(crate) fn new(min: Duration, max: Duration, seed: u64) -> Self {
        let min = min.max(Duration::from_millis(1));
        Backoff {
            min,
            max: max.max(min),
            step: min,
            rng: SmallRng::seed_from_u64(seed),
        }
    }

    /// The next wait; doubles the step up to the maximum.
    pub(crate) fn next_wait(&mut self) -> Duration {
        let step = self.step;
        self.step = (step * 2).min(self.max);
        let half = step / 2;
        half + half.mul_f64(self.rng.random::<f64>())
    }

    /// Back to the minimum step, after a connection proved healthy.
    pub(crate) fn reset(&mut self) {
        self.step = self.min;
    }
}

/// One peer's sending task. Runs until its queue's sender is dropped (the
/// peer was removed or the transport dropped); the transport also aborts it
/// then, so a pending connect or backoff never outlives the transport.
pub(crate) struct PeerTask {
    pub(crate) peer: NodeId,
    pub(crate) endpoint: Endpoint,
    /// Resolves the peer's host afresh on every connection attempt.
    pub(crate) connector: flotilla_client::coalesce::Connector,
    pub(crate) queue: mpsc::Receiver<Message>,
    pub(crate) config: Arc<TransportConfig>,
    pub(crate) faults: FaultControl,
    pub(crate) metrics: TransportMetrics,
    pub(crate) batcher: Batcher,
}

impl PeerTask {
    pub(crate) async fn run(mut self) {
        let seed = self.config.jitter_seed ^ self.peer.0.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let mut backoff = Backoff::new(self.config.backoff_min, self.config.backoff_max, seed);
        let mut connected_before = false;
        loop {
            // Connect lazily: only once there is something to send.
            let first = if self.batcher.has_carry() {
                None
            } else {
                match self.queue.recv().await {
                    Some(m) => Some(m),
                    None => return,
                }
            };
            let channel = match self.connect().await {
                Ok(channel) => channel,
                Err(e) => {
                    // A name that does not resolve is logged (once per
                    // streak) and counted by the resolver.
                    tracing::debug!(peer = %self.peer, error = %e, "cannot connect to peer");
                    self.metrics.incr(Counter::ConnectFailures);
                    self.metrics
                        .add(Counter::DroppedDisconnected, u64::from(first.is_some()));
                    self.batcher.drop_carry();
                    if !self.wait(backoff.next_wait()).await {
                        return;
                    }
                    continue;
                }
            };
            self.metrics.incr(Counter::Connects);
            if connected_before {
                self.metrics.incr(Counter::Reconnects);
            }
            connected_before = true;
            let started = Instant::now();
            match self.stream(channel, first).await {
                Ended::Shutdown => return,
                Ended::Broken => {
                    self.metrics.incr(Counter::StreamFailures);
                    self.batcher.drop_carry();
                    // A stream that lived long was healthy: its break is news,
                    // so reconnect quickly. One refused at once (say, a
                    // foreign cluster) keeps backing off.
                    if started.elapsed() >= self.config.backoff_max {
                        backoff.reset();
                    }
                    if !self.wait(backoff.next_wait()).await {
                        return;
                    }
                }
            }
        }
    }

    async fn connect(&self) -> Result<Channel, String> {
        // The endpoint has the connect timeout too; this one also bounds the
        // HTTP/2 handshake.
        match tokio::time::timeout(
            self.config.connect_timeout,
            self.endpoint.connect_with_connector(self.connector.clone()),
        )
        .await
        {
            Ok(Ok(channel)) => Ok(channel),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("connect timed out".into()),
        }
    }

    /// Sleeps for `wait`, dropping what is queued meanwhile: the peer is
    /// unreachable and Raft resends whatever still matters once it is back.
    /// False when the transport dropped this peer.
    async fn wait(&mut self, wait: Duration) -> bool {
        let sleep = tokio::time::sleep(wait);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                _ = &mut sleep => return true,
                m = self.queue.recv() => match m {
                    Some(_) => self.metrics.incr(Counter::DroppedDisconnected),
                    None => return false,
                },
            }
        }
    }

    /// Runs one client-streaming call until it breaks or the peer is dropped.
    async fn stream(&mut self, channel: Channel, mut first: Option<Message>) -> Ended {
        let frame = self.config.max_frame_bytes();
        let mut client = RaftPeerClient::new(channel)
            .max_encoding_message_size(frame)
            .max_decoding_message_size(frame);
        let (tx, rx) = mpsc::channel::<PeerBatch>(self.config.stream_buffer_batches.max(1));
        let call = client.stream(ReceiverStream::new(rx));
        tokio::pin!(call);
        loop {
            let batch = if first.is_some() || self.batcher.has_carry() {
                self.batcher.fill(first.take(), &mut self.queue)
            } else {
                tokio::select! {
                    result = &mut call => return self.ended(result),
                    m = self.queue.recv() => match m {
                        Some(m) => self.batcher.fill(Some(m), &mut self.queue),
                        None => return Ended::Shutdown,
                    },
                }
            };
            let Some(batch) = batch else { continue };
            let count = batch.messages.len() as u64;
            let delay = self.faults.delay();
            if !delay.is_zero() {
                tokio::select! {
                    result = &mut call => {
                        self.metrics.add(Counter::DroppedDisconnected, count);
                        return self.ended(result);
                    }
                    _ = tokio::time::sleep(delay) => {}
                }
            }
            tokio::select! {
                result = &mut call => {
                    self.metrics.add(Counter::DroppedDisconnected, count);
                    return self.ended(result);
                }
                sent = tx.send(batch) => {
                    if sent.is_err() {
                        // The call dropped its request stream: it is ending;
                        // its result says why.
                        self.metrics.add(Counter::DroppedDisconnected, count);
                        return self.ended(call.await);
                    }
                    self.metrics.incr(Counter::BatchesSent);
                    self.metrics.add(Counter::MessagesSent, count);
                }
            }
        }
    }

    fn ended(&self, result: Result<tonic::Response<PeerAck>, tonic::Status>) -> Ended {
        match result {
            Ok(ack) => {
                let ack = ack.into_inner();
                tracing::debug!(peer = %self.peer, batches = ack.batches, messages = ack.messages, "peer closed the stream");
            }
            Err(status) => {
                tracing::debug!(peer = %self.peer, code = ?status.code(), message = status.message(), "peer stream broke");
            }
        }
        Ended::Broken
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_maximum_with_jitter_and_resets() {
        let min = Duration::from_millis(10);
        let max = Duration::from_millis(80);
        let mut b = Backoff::new(min, max, 1);
        let waits: Vec<Duration> = (0..6).map(|_| b.next_wait()).collect();
        for (w, step) in waits.iter().zip([10u64, 20, 40, 80, 80, 80]) {
            let step = Duration::from_millis(step);
            assert!(
                *w >= step / 2 && *w <= step,
                "{w:?} within [{:?}, {step:?}]",
                step / 2
            );
        }
        b.reset();
        assert!(b.next_wait() <= min);
    }
}
