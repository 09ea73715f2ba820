//! Packing queued messages into `PeerBatch`es within the configured bounds.

use super::stats::{Counter, TransportMetrics};
use flotilla_proto::raft::{PeerBatch, RaftMessage};
use flotilla_raft::{Message, NodeId};
use prost::Message as _;
use tokio::sync::mpsc;

/// A message in wire form with the bytes it adds to a batch (its field tag
/// and length prefix included).
#[derive(Debug)]
struct Framed {
    wire: RaftMessage,
    bytes: usize,
}

/// Builds the batches for one peer. A message that does not fit the batch
/// being built is carried over to start the next one, so nothing taken from
/// the queue is lost between batches.
#[derive(Debug)]
pub(crate) struct Batcher {
    peer: NodeId,
    cluster_id: u64,
    max_messages: usize,
    max_bytes: usize,
    max_message_bytes: usize,
    features: u64,
    metrics: TransportMetrics,
    carry: Option<Framed>,
}

impl Batcher {
    pub(crate) fn new(
        peer: NodeId,
        cluster_id: u64,
        config: &super::TransportConfig,
        metrics: TransportMetrics,
    ) -> Self {
        Batcher {
            peer,
            cluster_id,
            // A batch of zero messages could never make progress.
            max_messages: config.max_batch_messages.max(1),
            max_bytes: config.max_batch_bytes,
            max_message_bytes: config.max_message_bytes,
            features: config.advertised_features,
            metrics,
            carry: None,
        }
    }

    /// Whether a message is waiting to start the next batch.
    pub(crate) fn has_carry(&self) -> bool {
        self.carry.is_some()
    }

    /// Forgets the carried message (its stream broke), counting it dropped.
    pub(crate) fn drop_carry(&mut self) {
        if self.carry.take().is_some() {
            self.metrics.incr(Counter::DroppedDisconnected);
        }
    }

    /// Encodes `m`, or drops it with an error log when it exceeds the hard
    /// limit: the receiver would refuse it, and with it the whole stream.
    fn frame(&self, m: Message) -> Option<Framed> {
        let wire = RaftMessage::from(&m);
        let len = wire.encoded_len();
        if len > self.max_message_bytes {
            tracing::error!(
                peer = %self.peer,
                kind = m.kind(),
                bytes = len,
                max_message_bytes = self.max_message_bytes,
                "dropping a Raft message larger than the transport's limit"
            );
            self.metrics.incr(Counter::DroppedOversize);
            return None;
        }
        let bytes = 1 + prost::length_delimiter_len(len) + len;
        Some(Framed { wire, bytes })
    }

    /// One batch: the carried message, then `first`, then whatever the queue
    /// holds right now, while it stays within the message and byte limits.
    /// The first message always goes in, so one above the byte limit (but
    /// within the hard limit) travels alone. `None` when every message taken
    /// was oversized.
    pub(crate) fn fill(
        &mut self,
        first: Option<Message>,
        queue: &mut mpsc::Receiver<Message>,
    ) -> Option<PeerBatch> {
        let first = first.and_then(|m| self.frame(m));
        let mut lead = [self.carry.take(), first].into_iter().flatten();
        let mut messages = Vec::new();
        let mut bytes = 0;
        while messages.len() < self.max_messages {
            let next = match lead.next() {
                Some(f) => f,
                None => match queue.try_recv() {
                    Ok(m) => match self.frame(m) {
                        Some(f) => f,
                        None => continue,
                    },
                    Err(_) => break,
                },
            };
            if !messages.is_empty() && bytes + next.bytes > self.max_bytes {
                self.carry = Some(next);
                break;
            }
            bytes += next.bytes;
            messages.push(next.wire);
        }
        // `lead` holds at most two messages and at most one was carried, so
        // it can only be non-empty here when the batch filled by count.
        if let Some(rest) = lead.next() {
            debug_assert!(self.carry.is_none());
            self.carry = Some(rest);
        }
        (!messages.is_empty()).then(|| PeerBatch {
            cluster_id: self.cluster_id,
            messages,
            features: self.features,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::TransportConfig;
    use flotilla_raft::{Bytes, Entry, EntryKind, MessageBody, Term};

    fn append(data_bytes: usize) -> Message {
        Message {
            from: NodeId(1),
            to: NodeId(2),
            term: Term(1),
            body: MessageBody::AppendEntries {
                prev_log_index: 0,
                prev_log_term: Term(0),
                entries: vec![Entry {
                    term: Term(1),
                    index: 1,
                    kind: EntryKind::Normal,
                    data: Bytes::from(vec![7u8; data_bytes]),
                }],
                leader_commit: 0,
                quiet: false,
            },
        }
    }

    fn batcher(max_messages: usize, max_bytes: usize, max_message_bytes: usize) -> Batcher {
        let config = TransportConfig {
            max_batch_messages: max_messages,
            max_batch_bytes: max_bytes,
            max_message_bytes,
            ..TransportConfig::default()
        };
        Batcher::new(NodeId(2), 9, &config, TransportMetrics::default())
    }

    fn queue(messages: impl IntoIterator<Item = Message>) -> mpsc::Receiver<Message> {
        let (tx, rx) = mpsc::channel(64);
        for m in messages {
            tx.try_send(m).expect("room");
        }
        rx
    }

    #[test]
    fn batches_are_bounded_by_count_and_nothing_is_lost() {
        let mut b = batcher(3, 1 << 20, 1 << 20);
        let mut q = queue((0..7).map(|_| append(10)));
        let sizes: Vec<usize> = std::iter::from_fn(|| b.fill(None, &mut q))
            .map(|batch| {
                assert_eq!(batch.cluster_id, 9);
                batch.messages.len()
            })
            .collect();
        assert_eq!(sizes, vec![3, 3, 1]);
    }

    #[test]
    fn batches_are_bounded_by_bytes_and_the_overflow_starts_the_next() {
        let mut b = batcher(100, 250, 1 << 20);
        let mut q = queue((0..5).map(|_| append(100)));
        let sizes: Vec<usize> = std::iter::from_fn(|| b.fill(None, &mut q))
            .map(|batch| batch.messages.len())
            .collect();
        assert_eq!(sizes, vec![2, 2, 1]);
    }

    #[test]
    fn a_message_above_the_batch_limit_travels_alone() {
        let mut b = batcher(100, 50, 1 << 20);
        let mut q = queue([append(10)]);
        let batch = b.fill(Some(append(500)), &mut q).expect("batch");
        assert_eq!(batch.messages.len(), 1);
        assert!(b.has_carry(), "the small one waits for the next batch");
        assert_eq!(b.fill(None, &mut q).expect("batch").messages.len(), 1);
    }

    #[test]
    fn a_message_above_the_hard_limit_is_dropped_and_counted() {
        let mut b = batcher(100, 1 << 20, 200);
        let mut q = queue([append(1000), append(10)]);
        let batch = b.fill(None, &mut q).expect("batch");
        assert_eq!(batch.messages.len(), 1);
        assert_eq!(b.metrics.snapshot().dropped_oversize, 1);
        assert!(b.fill(Some(append(1000)), &mut q).is_none());
        assert_eq!(b.metrics.snapshot().dropped_oversize, 2);
    }
}
