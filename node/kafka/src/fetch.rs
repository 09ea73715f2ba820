//! Fetch: each partition is read through the broker's fetch path (the
//! gRPC `Fetch`'s), never past the high watermark. The request as a whole
//! long-polls: it answers once `min_bytes` are there, a partition has an
//! error, or `max_wait_ms` (bounded by the broker's longest wait) passed.
//! `max_bytes` bounds the whole answer and `partition_max_bytes` each
//! partition, both softly as in Kafka: the first record is returned
//! whatever its size, so a large record cannot stall a consumer.

use crate::{Context, errors, records};
use flotilla_proto::broker as pb;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::{BrokerId, FetchRequest, FetchResponse};
use std::time::Duration;

/// Handles a Fetch.
pub async fn handle(ctx: &Context, req: FetchRequest) -> FetchResponse {
    let wait = Duration::from_millis(u64::try_from(req.max_wait_ms).unwrap_or(0))
        .min(ctx.core.config.fetch_wait_max);
    let deadline = tokio::time::Instant::now() + wait;
    let min_bytes = usize::try_from(req.min_bytes).unwrap_or(0);
    loop {
        // Subscribed before reading, so a change after the read wakes us.
        let mut changes: Vec<_> = req
            .topics
            .iter()
            .flat_map(|t| {
                t.partitions.iter().filter_map(|p| {
                    let partition = u32::try_from(p.partition).ok()?;
                    ctx.core.replica(t.topic.0.as_str(), partition)
                })
            })
            .map(|r| r.subscribe())
            .collect();
        let (resp, bytes, failed) = pass(ctx, &req).await;
        if bytes >= min_bytes.max(1) || failed || tokio::time::Instant::now() >= deadline {
            return resp;
        }
        if changes.is_empty() {
            tokio::time::sleep_until(deadline).await;
            continue;
        }
        let any = futures::future::select_all(changes.iter_mut().map(|rx| Box::pin(rx.changed())));
        if tokio::time::timeout_at(deadline, any).await.is_err() {
            return pass(ctx, &req).await.0;
        }
    }
}

/// One read of every partition without waiting: the response, its record
/// bytes, and whether a partition failed.
async fn pass(ctx: &Context, req: &FetchRequest) -> (FetchResponse, usize, bool) {
    let mut budget = usize::try_from(req.max_bytes).unwrap_or(0);
    if budget == 0 {
        budget = ctx.core.config.fetch_max_bytes as usize;
    }
    let mut total = 0usize;
    let mut failed = false;
    let mut topics = Vec::with_capacity(req.topics.len());
    for t in &req.topics {
        let topic = t.topic.0.as_str();
        let mut partitions = Vec::with_capacity(t.partitions.len());
        for p in &t.partitions {
            let left = budget.saturating_sub(total).max(1);
            let max = usize::try_from(p.partition_max_bytes)
                .unwrap_or(0)
                .clamp(1, left);
            let data = partition(ctx, topic, p, max).await;
            failed |= data.error_code != 0;
            total += data.records.as_ref().map_or(0, |r| r.len());
            partitions.push(data);
        }
        topics.push(
            FetchableTopicResponse::default()
                .with_topic(t.topic.clone())
                .with_partitions(partitions),
        );
    }
    (
        FetchResponse::default().with_responses(topics),
        total,
        failed,
    )
}

fn empty(index: i32, code: i16) -> PartitionData {
    PartitionData::default()
        .with_partition_index(index)
        .with_error_code(code)
        .with_high_watermark(-1)
        .with_last_stable_offset(-1)
        .with_log_start_offset(-1)
        .with_preferred_read_replica(BrokerId(-1))
        .with_aborted_transactions(Some(Vec::new()))
        .with_records(Some(Default::default()))
}

async fn partition(
    ctx: &Context,
    topic: &str,
    p: &kafka_protocol::messages::fetch_request::FetchPartition,
    max_bytes: usize,
) -> PartitionData {
    let (Ok(partition), Ok(offset)) = (u32::try_from(p.partition), u64::try_from(p.fetch_offset))
    else {
        return empty(p.partition, ResponseError::OffsetOutOfRange.code());
    };
    let req = pb::FetchRequest {
        topic: topic.to_string(),
        partition,
        offset,
        max_bytes: u32::try_from(max_bytes).unwrap_or(u32::MAX),
        max_wait_ms: 0,
        replica_id: 0,
        leader_epoch: errors::epoch_from_kafka(p.current_leader_epoch),
    };
    match ctx.broker.fetch_inner(&req).await {
        Ok(r) => {
            let bytes = match records::encode_fetched(
                &r.records,
                errors::epoch_to_kafka(r.leader_epoch),
            ) {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(topic, partition, error = %e, "cannot encode fetched records");
                    return empty(p.partition, ResponseError::UnknownServerError.code());
                }
            };
            PartitionData::default()
                .with_partition_index(p.partition)
                .with_high_watermark(r.high_watermark as i64)
                .with_last_stable_offset(r.high_watermark as i64)
                .with_log_start_offset(r.log_start_offset as i64)
                .with_preferred_read_replica(BrokerId(-1))
                .with_aborted_transactions(Some(Vec::new()))
                .with_records(Some(bytes))
        }
        Err(e) => empty(p.partition, errors::code(&e)),
    }
}
