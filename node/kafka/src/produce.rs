//! Produce: each partition's batches go to the broker's produce path, the
//! same one the gRPC `Produce` takes. Partitions are written concurrently;
//! a partition's batches in the order sent. acks=0 gets no response.

use crate::{Context, errors, records};
use flotilla_proto::broker as pb;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::produce_request::PartitionProduceData;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};
use kafka_protocol::protocol::StrBytes;

/// Handles a Produce; `None` for acks=0.
pub async fn handle(ctx: &Context, req: ProduceRequest) -> Option<ProduceResponse> {
    let acks = match req.acks {
        0 => Some(pb::Acks::None),
        1 => Some(pb::Acks::Leader),
        -1 => Some(pb::Acks::All),
        _ => None,
    };
    let transactional = req.transactional_id.is_some();
    let timeout_ms = u32::try_from(req.timeout_ms).unwrap_or(0);
    let mut topics = Vec::with_capacity(req.topic_data.len());
    for t in &req.topic_data {
        let topic = t.name.0.as_str();
        let partitions = futures::future::join_all(t.partition_data.iter().map(|p| async move {
            match acks {
                None => failed(p.index, ResponseError::InvalidRequiredAcks.code(), None),
                Some(_) if transactional => failed(
                    p.index,
                    ResponseError::TransactionalIdAuthorizationFailed.code(),
                    Some("transactions are not served".into()),
                ),
                Some(acks) => partition(ctx, topic, p, acks, timeout_ms).await,
            }
        }))
        .await;
        topics.push(
            TopicProduceResponse::default()
                .with_name(t.name.clone())
                .with_partition_responses(partitions),
        );
    }
    (req.acks != 0).then(|| ProduceResponse::default().with_responses(topics))
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

async fn partition(
    ctx: &Context,
    topic: &str,
    p: &PartitionProduceData,
    acks: pb::Acks,
    timeout_ms: u32,
) -> PartitionProduceResponse {
    let Ok(partition) = u32::try_from(p.index) else {
        return failed(p.index, ResponseError::UnknownTopicOrPartition.code(), None);
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
            return failed(p.index, code.code(), Some(e.to_string()));
        }
    };
    let mut base_offset: Option<u64> = None;
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
        match ctx.broker.produce_inner(&req).await {
            Ok(r) => {
                base_offset.get_or_insert(r.base_offset);
            }
            Err(e) => {
                return failed(p.index, errors::code(&e), Some(e.to_string()));
            }
        }
    }
    PartitionProduceResponse::default()
        .with_index(p.index)
        .with_base_offset(base_offset.map_or(-1, |o| o as i64))
        .with_log_append_time_ms(-1)
        .with_log_start_offset(-1)
}
