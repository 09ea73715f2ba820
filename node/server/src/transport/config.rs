//! Every bound of the peer transport, in one place.

use std::time::Duration;

/// Tuning of a [`GrpcTransport`](super::GrpcTransport) and its
/// [`PeerService`](super::PeerService). Every queue, batch and message has
/// its limit here, so memory per peer is bounded by configuration.
#[derive(Clone, Debug)]
pub struct TransportConfig {
    /// Messages queued per peer before new ones are dropped. Raft resends
    /// what is lost, so a full queue drops instead of blocking the driver.
    pub queue_messages: usize,
    /// Most messages in one `PeerBatch`.
    pub max_batch_messages: usize,
    /// Most encoded bytes in one `PeerBatch`. A single message above this is
    /// still sent, alone, when it is within `max_message_bytes`.
    pub max_batch_bytes: usize,
    /// Largest encoded Raft message sent or accepted; larger ones are dropped
    /// by the sender. Must exceed the core's `max_msg_bytes` and
    /// `max_snapshot_chunk_bytes` plus framing, or those messages never pass.
    pub max_message_bytes: usize,
    /// First reconnect delay after a failure.
    pub backoff_min: Duration,
    /// Longest reconnect delay; consecutive failures double the delay up to
    /// here. A stream that stayed up this long resets it.
    pub backoff_max: Duration,
    /// How long one connection attempt may take.
    pub connect_timeout: Duration,
    /// HTTP/2 keep-alive ping interval, so that a peer that vanished without
    /// closing its socket (paused, cable cut) is noticed.
    pub keepalive_interval: Duration,
    /// How long a keep-alive ping may go unanswered before the connection is
    /// considered dead.
    pub keepalive_timeout: Duration,
    /// Batches handed to the HTTP/2 stream but not yet written: a small
    /// buffer, so flow control pushes back on the peer's queue.
    pub stream_buffer_batches: usize,
    /// Seed of the reconnect jitter (each peer's generator mixes in its id).
    pub jitter_seed: u64,
    /// What this member's batches advertise ([`FEATURES`](super::FEATURES)).
    /// Only tests change it, to play a member of the previous release.
    #[doc(hidden)]
    pub advertised_features: u64,
}

impl Default for TransportConfig {
    fn default() -> Self {
        TransportConfig {
            queue_messages: 4096,
            max_batch_messages: 256,
            max_batch_bytes: 1024 * 1024,
            max_message_bytes: 8 * 1024 * 1024,
            backoff_min: Duration::from_millis(20),
            backoff_max: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(1),
            keepalive_interval: Duration::from_secs(1),
            keepalive_timeout: Duration::from_secs(3),
            stream_buffer_batches: 4,
            jitter_seed: 0x5eed,
            advertised_features: super::FEATURES,
        }
    }
}

impl TransportConfig {
    /// Largest encoded `PeerBatch`: the larger of a full batch and one
    /// message at the hard limit, plus the batch's own framing (cluster id,
    /// per-message tag and length). Both sides set tonic's encoding and
    /// decoding limits to this.
    pub fn max_frame_bytes(&self) -> usize {
        const FRAMING_BYTES: usize = 64;
        self.max_batch_bytes.max(self.max_message_bytes) + FRAMING_BYTES
    }
}
