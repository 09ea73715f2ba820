//! The broker's errors as Kafka error codes: one table, used by every
//! handler.

use flotilla_broker::error::PartitionError;
use flotilla_proto::broker::ErrorCode;
use kafka_protocol::ResponseError as K;

/// The Kafka error code of a broker partition error.
pub fn code(e: &PartitionError) -> i16 {
    let code = ErrorCode::try_from(e.to_proto().code).unwrap_or(ErrorCode::InvalidRequest);
    code_of(code).code()
}

/// The Kafka error for a broker error code.
pub fn code_of(code: ErrorCode) -> K {
    match code {
        ErrorCode::None => K::Unknown(0),
        // A lapsing lease is the leader losing its right to write: the
        // client refreshes its metadata and retries, as after a move.
        ErrorCode::NotLeader | ErrorCode::LeaseExpiring => K::NotLeaderOrFollower,
        ErrorCode::OffsetOutOfRange => K::OffsetOutOfRange,
        ErrorCode::UnknownTopicOrPartition => K::UnknownTopicOrPartition,
        ErrorCode::FencedLeaderEpoch => K::FencedLeaderEpoch,
        ErrorCode::UnknownLeaderEpoch => K::UnknownLeaderEpoch,
        ErrorCode::NotEnoughReplicas => K::NotEnoughReplicas,
        ErrorCode::NotEnoughReplicasAfterAppend => K::NotEnoughReplicasAfterAppend,
        ErrorCode::RequestTimedOut => K::RequestTimedOut,
        ErrorCode::OutOfOrderSequence => K::OutOfOrderSequenceNumber,
        ErrorCode::MessageTooLarge => K::MessageTooLarge,
        ErrorCode::IllegalGeneration => K::IllegalGeneration,
        ErrorCode::UnknownMember => K::UnknownMemberId,
        ErrorCode::NotAvailable => K::LeaderNotAvailable,
        ErrorCode::StorageError => K::KafkaStorageError,
        ErrorCode::InvalidRequest => K::InvalidRequest,
        ErrorCode::InvalidProducerEpoch => K::InvalidProducerEpoch,
    }
}

/// A Flotilla leader epoch (a KV revision, `i64`) as Kafka's `int32`.
/// Revisions past `i32::MAX` are shown as `i32::MAX`, which clients send
/// back and [`epoch_from_kafka`] reads as "no check".
pub fn epoch_to_kafka(epoch: i64) -> i32 {
    i32::try_from(epoch).unwrap_or(i32::MAX)
}

/// A client's `current_leader_epoch` as the broker's epoch check takes it:
/// 0 (no check) for -1 and for the saturated value.
pub fn epoch_from_kafka(epoch: i32) -> i64 {
    if epoch < 0 || epoch == i32::MAX {
        0
    } else {
        i64::from(epoch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_errors_map_to_kafka_codes() {
        let not_leader = PartitionError::NotLeader {
            topic: "t".into(),
            partition: 0,
            leader_id: 2,
            leader_addr: "h:1".into(),
            leader_epoch: 5,
        };
        assert_eq!(code(&not_leader), 6, "NOT_LEADER_OR_FOLLOWER");
        assert_eq!(
            code(&PartitionError::FencedEpoch {
                requested: 1,
                current: 2
            }),
            74,
            "FENCED_LEADER_EPOCH"
        );
        assert_eq!(
            code(&PartitionError::UnknownEpoch {
                requested: 3,
                current: 2
            }),
            75,
            "UNKNOWN_LEADER_EPOCH"
        );
        assert_eq!(
            code(&PartitionError::OffsetOutOfRange {
                requested: 9,
                start: 0,
                end: 3
            }),
            1
        );
        assert_eq!(
            code(&PartitionError::Unknown {
                topic: "t".into(),
                partition: 1
            }),
            3
        );
        assert_eq!(
            code(&PartitionError::OutOfOrderSequence {
                producer: 1,
                got: 5,
                expected: 3
            }),
            45
        );
        assert_eq!(
            code(&PartitionError::NotEnoughReplicas { isr: 1, min: 2 }),
            19
        );
        assert_eq!(code(&PartitionError::TooLarge { bytes: 9, max: 1 }), 10);
        assert_eq!(code(&PartitionError::LeaseExpiring), 6);
        assert_eq!(code(&PartitionError::Timeout { timeout_ms: 1 }), 7);
        assert_eq!(code(&PartitionError::Storage("x".into())), 56);
    }

    #[test]
    fn epochs_saturate_and_saturated_epochs_are_not_checked() {
        assert_eq!(epoch_to_kafka(7), 7);
        assert_eq!(epoch_to_kafka(i64::from(i32::MAX) + 5), i32::MAX);
        assert_eq!(epoch_from_kafka(-1), 0);
        assert_eq!(epoch_from_kafka(i32::MAX), 0);
        assert_eq!(epoch_from_kafka(12), 12);
    }
}
