//! Produce: each partition's batches go to the broker's produce path, the
//! same one the gRPC `Produce` takes, in two halves: [`append`] writes every
//! batch of the request at its leader, in order; the future it returns
//! waits for the acks=all confirmations and builds the response. The
//! connection starts the next request's appends while this one waits (see
//! [`crate::conn`]), so a producer's batches are appended in the order sent
//! and answered in that order. acks=0 gets no response.

use crate::{Context, errors, records};
use flotilla_broker::service::PendingProduce;
use flotilla_proto::broker as pb;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::produce_request::PartitionProduceData;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use std::future::Future;
use std::pin::Pin;

/// The second half of a Produce: the response once every acks=all batch is
/// confirmed; `None` for acks=0.
pub type Confirm<'a> = Pin<Box<dyn Future<Output = Option<ProduceResponse>> + Send + 'a>>;

/// One partition after the appends: failed, or its pending batches.
enum Appended {
    Failed(PartitionProduceResponse),
    Pending(i32, Vec<PendingProduce>),
}

/// Appends every batch of the request, in order, and returns the wait for
/// their confirmations.
pub async fn append(ctx: &Context, req: ProduceRequest) -> Confirm<'_> {
    let acks = match req.acks {
        0 => Some(pb::Acks::None),
        1 => Some(pb::Acks::Leader),
        -1 => Some(pb::Acks::All),
        _ => None,
    };
    let transactional = req.transactional_id.is_some();
    let timeout_ms = u32::try_from(req.timeout_ms).unwrap_or(0);
    let mut topics: Vec<(TopicName, Vec<Appended>)> = Vec::with_capacity(req.topic_data.len());
    for t in &req.topic_data {
        let topic = t.name.0.as_str();
        let mut partitions = Vec::with_capacity(t.partition_data.len());
        for p in &t.partition_data {
            partitions.push(match acks {
                None => Appended::Failed(failed(
                    p.index,
                    ResponseError::InvalidRequiredAcks.code(),
                    None,
                )),
                Some(_) if transactional => Appended::Failed(failed(
                    p.index,
                    ResponseError::TransactionalIdAuthorizationFailed.code(),
                    Some("transactions are not served".into()),
                )),
                Some(acks) => partition(ctx, topic, p, acks, timeout_ms).await,
            });
        }
        topics.push((t.name.clone(), partitions));
    }
    let silent = req.acks == 0;
    Box::pin(async move {
        let mut out = Vec::with_capacity(topics.len());
        for (name, partitions) in topics {
            let responses = futures::future::join_all(partitions.into_iter().map(|a| async move {
                match a {
                    Appended::Failed(r) => r,
                    Appended::Pending(index, pending) => confirm(ctx, index, pending).await,
                }
            }))
            .await;
            out.push(
                TopicProduceResponse::default()
                    .with_name(name)
                    .with_partition_responses(responses),
            );
        }
        (!silent).then(|| ProduceResponse::default().with_responses(out))
    })
}

fn failed(index: i32, code: i16, message: Option<String>) -> PartitionProduceResponse {
    PartitionProduceResponse::default()
        .with_index(index)
        .with_error_code(code)
        .with_base_offset(-1)
        .with_log_append_time_ms(-1)
        .with_log_start_offset(-1)
        .with_error_message(message.map(StrBytes::from_string))
}

/// Appends one partition's batches, in order; stops at the first failure.
async fn partition(
    ctx: &Context,
    topic: &str,
    p: &PartitionProduceData,
    acks: pb::Acks,
    timeout_ms: u32,
) -> Appended {
    let Ok(partition) = u32::try_from(p.index) else {
        return Appended::Failed(failed(
            p.index,
            ResponseError::UnknownTopicOrPartition.code(),
            None,
        ));
    };
    let bound = usize::try_from(ctx.core.config.max_batch_bytes).unwrap_or(usize::MAX);
    let batches = match records::decode_produced(p.records.clone().unwrap_or_default(), bound) {
        Ok(b) => b,
        Err(e) => {
            tracing::debug!(topic, partition, error = %e, "refusing a produced record batch");
            let code = match e {
                records::BatchError::TooLarge(_) => ResponseError::MessageTooLarge,
                records::BatchError::Invalid(_) => ResponseError::CorruptMessage,
            };
            return Appended::Failed(failed(p.index, code.code(), Some(e.to_string())));
        }
    };
    let mut pending = Vec::with_capacity(batches.len());
    for batch in batches {
        let idempotent = batch.producer_id > 0 && batch.base_sequence >= 0;
        let req = pb::ProduceRequest {
            topic: topic.to_string(),
            partition,
            records: batch.records,
            acks: acks as i32,
            timeout_ms,
            producer_id: if idempotent {
                batch.producer_id as u64
            } else {
                0
            },
            base_sequence: if idempotent {
                batch.base_sequence as u64
            } else {
                0
            },
            producer_epoch: if idempotent {
                i32::from(batch.producer_epoch.max(0))
            } else {
                0
            },
        };
        match ctx.broker.produce_append(&req).await {
            Ok(p) => pending.push(p),
            Err(e) => {
                return Appended::Failed(failed(p.index, errors::code(&e), Some(e.to_string())));
            }
        }
    }
    Appended::Pending(p.index, pending)
}

/// Waits for one partition's batches; answers with the first one's offset.
async fn confirm(
    ctx: &Context,
    index: i32,
    pending: Vec<PendingProduce>,
) -> PartitionProduceResponse {
    let mut base_offset: Option<u64> = None;
    for p in pending {
        match ctx.broker.produce_confirm(p).await {
            Ok(r) => {
                base_offset.get_or_insert(r.base_offset);
            }
            Err(e) => return failed(index, errors::code(&e), Some(e.to_string())),
        }
    }
    PartitionProduceResponse::default()
        .with_index(index)
        .with_base_offset(base_offset.map_or(-1, |o| o as i64))
        .with_log_append_time_ms(-1)
        .with_log_start_offset(-1)
}
