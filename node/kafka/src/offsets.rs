//! ListOffsets: earliest (-2), latest (-1, the high watermark), or the
//! first record at or after a timestamp (ms), through the broker's
//! list-offsets path (the gRPC `ListOffsets`'s).

use crate::{Context, errors};
use flotilla_proto::broker as pb;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};

/// Kafka's "latest" timestamp.
pub const LATEST: i64 = -1;
/// Kafka's "earliest" timestamp.
pub const EARLIEST: i64 = -2;

/// The broker's offset spec for a Kafka timestamp, with the timestamp in
/// nanoseconds; `None` for specs not served (max timestamp, -3, and the
/// tiered-storage ones).
pub fn spec(timestamp: i64) -> Option<(pb::OffsetSpec, i64)> {
    match timestamp {
        LATEST => Some((pb::OffsetSpec::Latest, 0)),
        EARLIEST => Some((pb::OffsetSpec::Earliest, 0)),
        t if t >= 0 => Some((pb::OffsetSpec::Timestamp, t.saturating_mul(1_000_000))),
        _ => None,
    }
}

/// Handles a ListOffsets.
pub async fn handle(ctx: &Context, req: ListOffsetsRequest, version: i16) -> ListOffsetsResponse {
    let mut topics = Vec::with_capacity(req.topics.len());
    for t in &req.topics {
        let topic = t.name.0.as_str();
        let mut partitions = Vec::with_capacity(t.partitions.len());
        for p in &t.partitions {
            let mut r = partition(ctx, topic, p.partition_index, p.timestamp).await;
            if version < 4 {
                // The leader epoch is in v4 and later only.
                r.leader_epoch = -1;
            }
            partitions.push(r);
        }
        topics.push(
            ListOffsetsTopicResponse::default()
                .with_name(t.name.clone())
                .with_partitions(partitions),
        );
    }
    ListOffsetsResponse::default().with_topics(topics)
}

async fn partition(
    ctx: &Context,
    topic: &str,
    index: i32,
    timestamp: i64,
) -> ListOffsetsPartitionResponse {
    let resp = ListOffsetsPartitionResponse::default()
        .with_partition_index(index)
        .with_timestamp(-1)
        .with_offset(-1)
        .with_leader_epoch(-1);
    let Ok(partition) = u32::try_from(index) else {
        return resp.with_error_code(ResponseError::UnknownTopicOrPartition.code());
    };
    let Some((spec, timestamp_ns)) = spec(timestamp) else {
        return resp.with_error_code(ResponseError::UnsupportedVersion.code());
    };
    let req = pb::ListOffsetsRequest {
        topic: topic.to_string(),
        partition,
        spec: spec as i32,
        timestamp_ns,
    };
    match ctx.broker.list_offsets_inner(&req).await {
        Ok((offset, found_ns)) => {
            let epoch = ctx
                .core
                .replica(topic, partition)
                .and_then(|r| r.leader_epoch().ok())
                .map_or(-1, errors::epoch_to_kafka);
            let ts = if spec == pb::OffsetSpec::Timestamp && found_ns != 0 {
                found_ns / 1_000_000
            } else {
                -1
            };
            resp.with_offset(offset as i64)
                .with_timestamp(ts)
                .with_leader_epoch(epoch)
        }
        Err(e) => resp.with_error_code(errors::code(&e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kafka_timestamps_map_to_offset_specs() {
        assert_eq!(spec(-1), Some((pb::OffsetSpec::Latest, 0)));
        assert_eq!(spec(-2), Some((pb::OffsetSpec::Earliest, 0)));
        assert_eq!(
            spec(1_700_000_000_000),
            Some((pb::OffsetSpec::Timestamp, 1_700_000_000_000_000_000))
        );
        assert_eq!(spec(0), Some((pb::OffsetSpec::Timestamp, 0)));
        assert_eq!(spec(-3), None, "max timestamp is not served");
    }
}
