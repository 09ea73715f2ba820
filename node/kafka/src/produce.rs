//! Produce: each partition's batches go to the broker's produce path, the
//! same one the gRPC `Produce` takes. Partitions are written concurrently;
//! a partition's batches in the order sent. acks=0 gets no response.

use crate::{Context, errors, records};
use flotilla_broker::service::PendingProduce;
use flotilla_proto::broker as pb;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::produce_request::PartitionProduceData;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};
use kafka_protocol::protocol::StrBytes;

/// Handles a Produce; `None` for acks=0.
pub async fn handle(ctx: &Context, req: ProduceRequest) -> Option<ProduceResponse> {
    start(ctx, req).await.await
}

/// Appends every batch of a Produce, each partition's in the order sent,
/// and returns the rest: the wait (acks=all: until replicated) and the
/// answer (`None` for acks=0). A connection may read and append its next
/// request while this waits.
pub async fn start(
    ctx: &Context,
    req: ProduceRequest,
) -> impl Future<Output = Option<ProduceResponse>> + Send + '_ {
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
                None => Appended::Done(failed(
                    p.index,
                    ResponseError::InvalidRequiredAcks.code(),
                    None,
                )),
                Some(_) if transactional => Appended::Done(failed(
                    p.index,
                    ResponseError::TransactionalIdAuthorizationFailed.code(),
                    Some("transactions are not served".into()),
                )),
                Some(acks) => append(ctx, topic, p, acks, timeout_ms).await,
            }
        }))
        .await;
        topics.push((t.name.clone(), partitions));
    }
    let respond = req.acks != 0;
    async move {
        let mut out = Vec::with_capacity(topics.len());
        for (name, partitions) in topics {
            let partitions =
                futures::future::join_all(partitions.into_iter().map(|a| answer(ctx, a))).await;
            out.push(
                TopicProduceResponse::default()
                    .with_name(name)
                    .with_partition_responses(partitions),
            );
        }
        respond.then(|| ProduceResponse::default().with_responses(out))
    }
}

/// A partition's part of a Produce after its appends.
enum Appended {
    /// Answered already (refused before or during the appends).
    Done(PartitionProduceResponse),
    /// Its batches, appended, to wait for.
    Pending {
        index: i32,
        batches: Vec<PendingProduce>,
    },
}

async fn answer(ctx: &Context, a: Appended) -> PartitionProduceResponse {
    let (index, batches) = match a {
        Appended::Done(r) => return r,
        Appended::Pending { index, batches } => (index, batches),
    };
    let mut base_offset: Option<u64> = None;
    for pending in batches {
        match ctx.broker.produce_wait(pending).await {
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

fn failed(index: i32, code: i16, message: Option<String>) -> PartitionProduceResponse {
    PartitionProduceResponse::default()
        .with_index(index)
        .with_error_code(code)
        .with_base_offset(-1)
        .with_log_append_time_ms(-1)
        .with_log_start_offset(-1)
        .with_error_message(message.map(StrBytes::from_string))
}

async fn append(
    ctx: &Context,
    topic: &str,
    p: &PartitionProduceData,
    acks: pb::Acks,
    timeout_ms: u32,
) -> Appended {
    let Ok(partition) = u32::try_from(p.index) else {
        return Appended::Done(failed(
            p.index,
            ResponseError::UnknownTopicOrPartition.code(),
            None,
        ));
    };
    let batches = match records::decode_produced(p.records.clone().unwrap_or_default()) {
        Ok(b) => b,
        Err(e) => {
            tracing::debug!(topic, partition, error = %e, "refusing a produced record batch");
            return Appended::Done(failed(
                p.index,
                ResponseError::CorruptMessage.code(),
                Some(e),
            ));
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
            Ok(a) => pending.push(a),
            Err(e) => {
                return Appended::Done(failed(p.index, errors::code(&e), Some(e.to_string())));
            }
        }
    }
    Appended::Pending {
        index: p.index,
        batches: pending,
    }
}
