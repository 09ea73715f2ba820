//! Counters of one node's transport, shared by its sending side
//! ([`GrpcTransport`](super::GrpcTransport)) and its receiving side
//! ([`PeerService`](super::PeerService)).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// The live counters: cheap to clone, updated with relaxed atomics (they are
/// statistics, never used to synchronise anything).
#[derive(Clone, Debug, Default)]
pub struct TransportMetrics {
    inner: Arc<Counters>,
}

#[derive(Debug, Default)]
struct Counters {
    messages_sent: AtomicU64,
    batches_sent: AtomicU64,
    dropped_queue_full: AtomicU64,
    dropped_fault: AtomicU64,
    dropped_oversize: AtomicU64,
    dropped_unknown_peer: AtomicU64,
    dropped_disconnected: AtomicU64,
    connects: AtomicU64,
    reconnects: AtomicU64,
    connect_failures: AtomicU64,
    stream_failures: AtomicU64,
    batches_received: AtomicU64,
    messages_received: AtomicU64,
    batches_refused: AtomicU64,
    decode_errors: AtomicU64,
    dropped_inbound_full: AtomicU64,
}

/// A copy of the counters at one moment, for tests and for the Prometheus
/// exporter.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TransportStats {
    /// Messages written into a peer stream.
    pub messages_sent: u64,
    /// Batches written into a peer stream.
    pub batches_sent: u64,
    /// Messages dropped because the peer's queue was full.
    pub dropped_queue_full: u64,
    /// Messages dropped by the fault layer (partition or drop probability).
    pub dropped_fault: u64,
    /// Messages dropped because they exceed `max_message_bytes`.
    pub dropped_oversize: u64,
    /// Messages addressed to a node that is not a known peer.
    pub dropped_unknown_peer: u64,
    /// Messages dropped while their peer was unreachable (queued during a
    /// backoff, or in a batch whose stream broke before it was written).
    pub dropped_disconnected: u64,
    /// Successful connections, first ones included.
    pub connects: u64,
    /// Successful connections after an earlier stream to the same peer ended.
    pub reconnects: u64,
    /// Connection attempts that failed or timed out.
    pub connect_failures: u64,
    /// Streams that ended with an error.
    pub stream_failures: u64,
    /// Batches accepted by this node's service.
    pub batches_received: u64,
    /// Messages decoded and handed to the driver.
    pub messages_received: u64,
    /// Batches refused for a foreign cluster id.
    pub batches_refused: u64,
    /// Received messages that failed the checked conversion and were skipped.
    pub decode_errors: u64,
    /// Received messages dropped because the driver's inbound queue was full.
    pub dropped_inbound_full: u64,
}

/// Names one counter, so call sites read as `metrics.add(Counter::X, n)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Counter {
    MessagesSent,
    BatchesSent,
    DroppedQueueFull,
    DroppedFault,
    DroppedOversize,
    DroppedUnknownPeer,
    DroppedDisconnected,
    Connects,
    Reconnects,
    ConnectFailures,
    StreamFailures,
    BatchesReceived,
    MessagesReceived,
    BatchesRefused,
    DecodeErrors,
    DroppedInboundFull,
}

impl TransportMetrics {
    fn counter(&self, c: Counter) -> &AtomicU64 {
        let k = &self.inner;
        match c {
            Counter::MessagesSent => &k.messages_sent,
            Counter::BatchesSent => &k.batches_sent,
            Counter::DroppedQueueFull => &k.dropped_queue_full,
            Counter::DroppedFault => &k.dropped_fault,
            Counter::DroppedOversize => &k.dropped_oversize,
            Counter::DroppedUnknownPeer => &k.dropped_unknown_peer,
            Counter::DroppedDisconnected => &k.dropped_disconnected,
            Counter::Connects => &k.connects,
            Counter::Reconnects => &k.reconnects,
            Counter::ConnectFailures => &k.connect_failures,
            Counter::StreamFailures => &k.stream_failures,
            Counter::BatchesReceived => &k.batches_received,
            Counter::MessagesReceived => &k.messages_received,
            Counter::BatchesRefused => &k.batches_refused,
            Counter::DecodeErrors => &k.decode_errors,
            Counter::DroppedInboundFull => &k.dropped_inbound_full,
        }
    }

    pub(crate) fn add(&self, c: Counter, n: u64) {
        self.counter(c).fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn incr(&self, c: Counter) {
        self.add(c, 1);
    }

    /// The counters now.
    pub fn snapshot(&self) -> TransportStats {
        let get = |c| self.counter(c).load(Ordering::Relaxed);
        TransportStats {
            messages_sent: get(Counter::MessagesSent),
            batches_sent: get(Counter::BatchesSent),
            dropped_queue_full: get(Counter::DroppedQueueFull),
            dropped_fault: get(Counter::DroppedFault),
            dropped_oversize: get(Counter::DroppedOversize),
            dropped_unknown_peer: get(Counter::DroppedUnknownPeer),
            dropped_disconnected: get(Counter::DroppedDisconnected),
            connects: get(Counter::Connects),
            reconnects: get(Counter::Reconnects),
            connect_failures: get(Counter::ConnectFailures),
            stream_failures: get(Counter::StreamFailures),
            batches_received: get(Counter::BatchesReceived),
            messages_received: get(Counter::MessagesReceived),
            batches_refused: get(Counter::BatchesRefused),
            decode_errors: get(Counter::DecodeErrors),
            dropped_inbound_full: get(Counter::DroppedInboundFull),
        }
    }
}
