//! Partition-level errors, carried inside responses as
//! [`pb::BrokerError`], and the one place they are built.

use flotilla_proto::broker as pb;
use pb::ErrorCode;

/// Why a partition request failed: what a caller can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PartitionError {
    /// Another broker leads (or none is known yet).
    #[error("this broker does not lead {topic}-{partition}{}", hint(*.leader_id, .leader_addr))]
    NotLeader {
        /// Topic.
        topic: String,
        /// Partition.
        partition: u32,
        /// The leader known (0: none).
        leader_id: u64,
        /// Its address.
        leader_addr: String,
        /// Its epoch.
        leader_epoch: i64,
    },
    /// Topic or partition unknown here.
    #[error("unknown topic or partition {topic}-{partition}")]
    Unknown {
        /// Topic.
        topic: String,
        /// Partition.
        partition: u32,
    },
    /// Offset outside the log.
    #[error("offset {requested} is out of range [{start}, {end}]")]
    OffsetOutOfRange {
        /// Asked for.
        requested: u64,
        /// Log start.
        start: u64,
        /// Log end (or high watermark).
        end: u64,
    },
    /// The caller's epoch is older than ours.
    #[error("leader epoch {requested} is fenced: the current epoch is {current}")]
    FencedEpoch {
        /// Sent.
        requested: i64,
        /// Ours.
        current: i64,
    },
    /// The caller's epoch is newer than ours.
    #[error("leader epoch {requested} is not known here yet (current {current})")]
    UnknownEpoch {
        /// Sent.
        requested: i64,
        /// Ours.
        current: i64,
    },
    /// Too few in-sync replicas for acks=all.
    #[error("{isr} in-sync replica(s), min.insync.replicas is {min}")]
    NotEnoughReplicas {
        /// ISR size.
        isr: usize,
        /// Needed.
        min: u32,
    },
    /// Written, but the ISR shrank below the minimum before confirming.
    #[error("written, but only {isr} in-sync replica(s) remain (min.insync.replicas {min})")]
    NotEnoughReplicasAfterAppend {
        /// ISR size.
        isr: usize,
        /// Needed.
        min: u32,
    },
    /// acks=all timed out.
    #[error("acks=all: the in-sync replicas did not confirm within {timeout_ms} ms")]
    Timeout {
        /// The wait.
        timeout_ms: u64,
    },
    /// Producer sequence out of order.
    #[error("producer {producer}: base sequence {got}, expected {expected}")]
    OutOfOrderSequence {
        /// Producer id.
        producer: u64,
        /// Sent.
        got: u64,
        /// Expected.
        expected: u64,
    },
    /// A newer epoch of the same producer id wrote here.
    #[error("producer {producer}: epoch {got} is older than epoch {current} seen here")]
    ProducerFenced {
        /// Producer id.
        producer: u64,
        /// Sent.
        got: i16,
        /// Seen.
        current: i16,
    },
    /// Request too large.
    #[error("request of {bytes} bytes is above the {max} byte bound (--broker-max-batch-bytes)")]
    TooLarge {
        /// Size.
        bytes: u64,
        /// Bound.
        max: u64,
    },
    /// The leader's lease may be lapsing.
    #[error("the leader's lease is not confirmed recently enough; writes are refused until it is")]
    LeaseExpiring,
    /// Not available now.
    #[error("{0}")]
    NotAvailable(String),
    /// Storage failure.
    #[error("storage: {0}")]
    Storage(String),
    /// Malformed.
    #[error("{0}")]
    Invalid(String),
}

fn hint(id: u64, addr: &str) -> String {
    if id == 0 {
        "; no leader is known yet".to_string()
    } else {
        format!("; broker {id} at {addr} does")
    }
}

impl PartitionError {
    /// The wire form.
    pub fn to_proto(&self) -> pb::BrokerError {
        let code = match self {
            PartitionError::NotLeader { .. } => ErrorCode::NotLeader,
            PartitionError::Unknown { .. } => ErrorCode::UnknownTopicOrPartition,
            PartitionError::OffsetOutOfRange { .. } => ErrorCode::OffsetOutOfRange,
            PartitionError::FencedEpoch { .. } => ErrorCode::FencedLeaderEpoch,
            PartitionError::UnknownEpoch { .. } => ErrorCode::UnknownLeaderEpoch,
            PartitionError::NotEnoughReplicas { .. } => ErrorCode::NotEnoughReplicas,
            PartitionError::NotEnoughReplicasAfterAppend { .. } => {
                ErrorCode::NotEnoughReplicasAfterAppend
            }
            PartitionError::Timeout { .. } => ErrorCode::RequestTimedOut,
            PartitionError::OutOfOrderSequence { .. } => ErrorCode::OutOfOrderSequence,
            PartitionError::ProducerFenced { .. } => ErrorCode::InvalidProducerEpoch,
            PartitionError::TooLarge { .. } => ErrorCode::MessageTooLarge,
            PartitionError::LeaseExpiring => ErrorCode::LeaseExpiring,
            PartitionError::NotAvailable(_) => ErrorCode::NotAvailable,
            PartitionError::Storage(_) => ErrorCode::StorageError,
            PartitionError::Invalid(_) => ErrorCode::InvalidRequest,
        };
        let (leader_id, leader_addr, leader_epoch) = match self {
            PartitionError::NotLeader {
                leader_id,
                leader_addr,
                leader_epoch,
                ..
            } => (*leader_id, leader_addr.clone(), *leader_epoch),
            PartitionError::FencedEpoch { current, .. }
            | PartitionError::UnknownEpoch { current, .. } => (0, String::new(), *current),
            _ => (0, String::new(), 0),
        };
        pb::BrokerError {
            code: code as i32,
            message: self.to_string(),
            leader_id,
            leader_addr,
            leader_epoch,
        }
    }
}

/// Whether a client should retry a request that failed with `code` (after
/// refreshing its view of the leaders).
pub fn is_retryable(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::NotLeader
            | ErrorCode::NotAvailable
            | ErrorCode::LeaseExpiring
            | ErrorCode::NotEnoughReplicas
            | ErrorCode::FencedLeaderEpoch
            | ErrorCode::UnknownLeaderEpoch
            | ErrorCode::RequestTimedOut
            | ErrorCode::UnknownTopicOrPartition
    )
}

/// Why an admin or KV step failed, as a gRPC status.
pub fn kv_status(e: flotilla_client::ClientError) -> tonic::Status {
    match e {
        flotilla_client::ClientError::Status(s) => {
            tonic::Status::unavailable(format!("metadata store: {}", s.message()))
        }
        other => tonic::Status::unavailable(format!("metadata store: {other}")),
    }
}
