//! [`PeerService`]: the receiving side, and [`serve`], which runs it on a
//! listener the caller owns.

use super::TransportConfig;
use super::features::PeerFeatures;
use super::stats::{Counter, TransportMetrics, TransportStats};
use crate::driver::{DriverError, RaftHandle, StateMachine};
use flotilla_proto::raft::raft_peer_server::{RaftPeer, RaftPeerServer};
use flotilla_proto::raft::{PeerAck, PeerBatch};
use flotilla_raft::Message;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tonic::{Request, Response, Status, Streaming};

/// What became of a delivered message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// Taken.
    Accepted,
    /// Dropped because the receiver is busy (Raft resends).
    Dropped,
    /// The receiver is gone: end the stream.
    Closed,
}

/// Where received messages go: a driver's [`RaftHandle`], or any
/// `Fn(Message)`. Generic so the service does not depend on the state
/// machine type, and tests can watch what arrives. `deliver` must not block.
pub trait MessageSink: Send + Sync + 'static {
    /// Hands one message over.
    fn deliver(&self, message: Message) -> Delivery;
}

impl<M: StateMachine> MessageSink for RaftHandle<M> {
    fn deliver(&self, message: Message) -> Delivery {
        match self.step(message) {
            Ok(()) => Delivery::Accepted,
            Err(DriverError::Stopped) => Delivery::Closed,
            Err(_) => Delivery::Dropped,
        }
    }
}

impl<F: Fn(Message) + Send + Sync + 'static> MessageSink for F {
    fn deliver(&self, message: Message) -> Delivery {
        self(message);
        Delivery::Accepted
    }
}

/// Ends the open streams of a [`PeerService`]; see
/// [`PeerService::stream_closer`].
#[derive(Clone, Debug)]
pub struct StreamCloser(Arc<watch::Sender<bool>>);

impl StreamCloser {
    /// Ends every open stream with `UNAVAILABLE`, and any opened later.
    pub fn close(&self) {
        self.0.send_replace(true);
    }
}

/// Serves the `RaftPeer` service: checks each batch's cluster id, decodes
/// each message with the checked conversion and hands it to the sink.
pub struct PeerService<S> {
    cluster_id: u64,
    sink: S,
    metrics: TransportMetrics,
    max_frame_bytes: usize,
    keepalive_interval: Duration,
    keepalive_timeout: Duration,
    /// The features each sender's last batch advertised.
    features: PeerFeatures,
    /// Set when the server shuts down, to end the open streams: peers never
    /// close theirs, and the server's graceful shutdown waits for them.
    stop: Arc<watch::Sender<bool>>,
}

impl<S> std::fmt::Debug for PeerService<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerService")
            .field("cluster_id", &self.cluster_id)
            .field("max_frame_bytes", &self.max_frame_bytes)
            .field("stats", &self.metrics.snapshot())
            .finish()
    }
}

impl<S: MessageSink> PeerService<S> {
    /// A service for cluster `cluster_id` delivering to `sink`, counting in
    /// `metrics` (pass [`GrpcTransport::metrics`](super::GrpcTransport::metrics)
    /// to count both directions together).
    pub fn new(
        cluster_id: u64,
        sink: S,
        config: &TransportConfig,
        metrics: TransportMetrics,
    ) -> Self {
        PeerService {
            cluster_id,
            sink,
            metrics,
            max_frame_bytes: config.max_frame_bytes(),
            keepalive_interval: config.keepalive_interval,
            keepalive_timeout: config.keepalive_timeout,
            features: PeerFeatures::default(),
            stop: Arc::new(watch::channel(false).0),
        }
    }

    /// The counters now.
    pub fn stats(&self) -> TransportStats {
        self.metrics.snapshot()
    }

    /// The features each peer advertised in the last batch it sent here,
    /// shared: it changes as batches arrive.
    pub fn peer_features(&self) -> PeerFeatures {
        self.features.clone()
    }

    /// Ends this service's open streams when closed. Only needed when the
    /// service runs on a server built by the caller (through
    /// [`into_server`](Self::into_server)) rather than by [`serve`]: peers
    /// never end their streams, so a graceful shutdown would wait for them
    /// forever.
    pub fn stream_closer(&self) -> StreamCloser {
        StreamCloser(self.stop.clone())
    }

    /// The tonic server for this service, with the message size limits set.
    pub fn into_server(self) -> RaftPeerServer<Self> {
        let frame = self.max_frame_bytes;
        RaftPeerServer::new(self)
            .max_decoding_message_size(frame)
            .max_encoding_message_size(frame)
    }

    /// Checks and delivers one batch; counts what it skips.
    fn receive(&self, batch: PeerBatch, ack: &mut PeerAck) -> Result<(), Status> {
        if batch.cluster_id != self.cluster_id {
            self.metrics.incr(Counter::BatchesRefused);
            tracing::warn!(
                ours = self.cluster_id,
                theirs = batch.cluster_id,
                "refusing a batch from another cluster"
            );
            return Err(Status::failed_precondition(format!(
                "cluster id mismatch: this node belongs to cluster {}, the batch to cluster {}",
                self.cluster_id, batch.cluster_id
            )));
        }
        ack.batches += 1;
        self.metrics.incr(Counter::BatchesReceived);
        // Every message of a batch comes from the member that sends it.
        if let Some(first) = batch.messages.first() {
            self.features.record(first.from, batch.features);
        }
        for wire in batch.messages {
            let message = match Message::try_from(wire) {
                Ok(m) => m,
                Err(e) => {
                    // One bad message must not cost the good ones around it.
                    self.metrics.incr(Counter::DecodeErrors);
                    tracing::warn!(error = %e, "skipping an invalid Raft message");
                    continue;
                }
            };
            ack.messages += 1;
            match self.sink.deliver(message) {
                Delivery::Accepted => self.metrics.incr(Counter::MessagesReceived),
                Delivery::Dropped => self.metrics.incr(Counter::DroppedInboundFull),
                Delivery::Closed => {
                    return Err(Status::unavailable("this node's Raft driver stopped"));
                }
            }
        }
        Ok(())
    }
}

#[tonic::async_trait]
impl<S: MessageSink> RaftPeer for PeerService<S> {
    async fn stream(
        &self,
        request: Request<Streaming<PeerBatch>>,
    ) -> Result<Response<PeerAck>, Status> {
        let mut batches = request.into_inner();
        let mut stop = self.stop.subscribe();
        let mut ack = PeerAck::default();
        loop {
            let next = tokio::select! {
                _ = stop.wait_for(|stopped| *stopped) => {
                    return Err(Status::unavailable("node shutting down"));
                }
                next = batches.message() => next?,
            };
            match next {
                Some(batch) => self.receive(batch, &mut ack)?,
                None => return Ok(Response::new(ack)),
            }
        }
    }
}

/// Serves `service` on `listener` until `shutdown` resolves; then ends the
/// open peer streams, stops accepting and returns once connections closed.
/// The caller binds the listener, so tests can use port 0 and a restarted
/// node its old port.
pub async fn serve<S: MessageSink>(
    listener: tokio::net::TcpListener,
    service: PeerService<S>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    serve_with(
        listener,
        service,
        tonic::service::Routes::default(),
        shutdown,
    )
    .await
}

/// [`serve`], with `routes` (other services of the peer port, such as
/// membership discovery) beside the peer service.
pub async fn serve_with<S: MessageSink>(
    listener: tokio::net::TcpListener,
    service: PeerService<S>,
    routes: tonic::service::Routes,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let closer = service.stream_closer();
    let signal = async move {
        shutdown.await;
        closer.close();
    };
    tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(service.keepalive_interval))
        .http2_keepalive_timeout(Some(service.keepalive_timeout))
        .add_routes(routes)
        .add_service(service.into_server())
        // TCP_NODELAY and coalesced writes on accepted sockets.
        .serve_with_incoming_shutdown(flotilla_client::coalesce::incoming(listener), signal)
        .await
}
