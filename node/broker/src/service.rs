//! The `Broker` gRPC service: produce, fetch (consumers and followers),
//! list offsets, OffsetForLeaderEpoch, metadata.

use crate::core::BrokerCore;
use crate::error::{PartitionError, kv_status};
use crate::replica::{Replica, Role};
use crate::view::View;
use flotilla_proto::broker as pb;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tonic::{Request, Response, Status};

/// A batch appended at the leader whose acks=all confirmation is still to
/// come ([`BrokerService::produce_confirm`]).
#[derive(Debug)]
pub struct PendingProduce {
    replica: Arc<Replica>,
    appended: crate::replica::Appended,
    acks_all: bool,
    timeout: Duration,
}

/// Serves `flotilla.broker.v1.Broker`.
#[derive(Debug, Clone)]
pub struct BrokerService {
    core: Arc<BrokerCore>,
}

impl BrokerService {
    /// The service over `core`.
    pub fn new(core: Arc<BrokerCore>) -> BrokerService {
        BrokerService { core }
    }

    /// The tonic server. It decodes messages up to twice the batch bound,
    /// so that a batch somewhat over it gets the broker's own
    /// MESSAGE_TOO_LARGE answer naming the flag; a far larger message is
    /// refused by gRPC itself (OUT_OF_RANGE) before it is read.
    pub fn into_server(self) -> pb::broker_server::BrokerServer<BrokerService> {
        let max = 2 * self.core.config.max_batch_bytes as usize + (1 << 20);
        pb::broker_server::BrokerServer::new(self)
            .max_decoding_message_size(max)
            .max_encoding_message_size(usize::MAX)
    }

    async fn leader_replica(
        &self,
        topic: &str,
        partition: u32,
    ) -> Result<Arc<Replica>, PartitionError> {
        match self.core.replica(topic, partition) {
            Some(r) if matches!(r.role(), Role::Leader { .. }) => Ok(r),
            _ => Err(self.core.not_leader_here(topic, partition).await),
        }
    }

    /// Appends a batch at this broker, the partition's leader, and (for
    /// acks=all) waits for the ISR: [`BrokerService::produce_append`] then
    /// [`BrokerService::produce_confirm`] (the `Produce` RPC and the Kafka
    /// listener's Produce both come through these).
    pub async fn produce_inner(
        &self,
        req: &pb::ProduceRequest,
    ) -> Result<pb::ProduceResponse, PartitionError> {
        let pending = self.produce_append(req).await?;
        self.produce_confirm(pending).await
    }

    /// The first half of a produce: checks, then the append at the leader.
    /// A caller that must append several batches in order (one Kafka
    /// connection's requests) may start the next append before confirming
    /// this one.
    pub async fn produce_append(
        &self,
        req: &pb::ProduceRequest,
    ) -> Result<PendingProduce, PartitionError> {
        if req.records.is_empty() {
            return Err(PartitionError::Invalid(
                "a produce request needs at least one record".into(),
            ));
        }
        let bytes: u64 = req
            .records
            .iter()
            .map(|r| {
                flotilla_log::record::frame_bytes_of(
                    r.has_key.then_some(&r.key[..]),
                    r.value.len(),
                    req.producer_id != 0,
                    r.headers.iter().map(|h| (h.key.len(), h.value.len())),
                )
            })
            .sum();
        if bytes > self.core.config.max_batch_bytes {
            return Err(PartitionError::TooLarge {
                bytes,
                max: self.core.config.max_batch_bytes,
            });
        }
        let acks = pb::Acks::try_from(req.acks)
            .map_err(|_| PartitionError::Invalid(format!("unknown acks value {}", req.acks)))?;
        let replica = self.leader_replica(&req.topic, req.partition).await?;
        let acks_all = acks == pb::Acks::All;
        let core = self.core.clone();
        let appended = replica
            .append_as_leader(req, acks_all, |held| core.lease.holds(held, Instant::now()))
            .await?;
        if !appended.duplicate {
            self.core
                .metrics
                .records_produced
                .inc_by(req.records.len() as u64);
        }
        let timeout = if req.timeout_ms == 0 {
            self.core.config.ack_timeout
        } else {
            Duration::from_millis(u64::from(req.timeout_ms)).min(self.core.config.ack_timeout)
        };
        Ok(PendingProduce {
            replica,
            appended,
            acks_all,
            timeout,
        })
    }

    /// The second half of a produce: for acks=all, waits until the high
    /// watermark covers the batch with at least min.insync.replicas in the
    /// ISR.
    pub async fn produce_confirm(
        &self,
        p: PendingProduce,
    ) -> Result<pb::ProduceResponse, PartitionError> {
        let PendingProduce {
            replica,
            appended,
            acks_all,
            timeout,
        } = p;
        if acks_all {
            if !replica
                .wait_for_hw(appended.end_offset, appended.epoch, timeout)
                .await
            {
                if replica.role()
                    != (Role::Leader {
                        epoch: appended.epoch,
                    })
                {
                    return Err(self
                        .core
                        .not_leader_here(&replica.topic, replica.partition)
                        .await);
                }
                return Err(PartitionError::Timeout {
                    timeout_ms: timeout.as_millis() as u64,
                });
            }
            let (isr, min) = replica.isr_and_min();
            if isr < min as usize {
                return Err(PartitionError::NotEnoughReplicasAfterAppend { isr, min });
            }
        }
        Ok(pb::ProduceResponse {
            error: None,
            base_offset: appended.base_offset,
            leader_epoch: appended.epoch,
            high_watermark: replica.high_watermark(),
            duplicate: appended.duplicate,
        })
    }

    /// Reads at this broker, the partition's leader, long-polling up to
    /// `max_wait_ms` (the `Fetch` RPC and the Kafka listener's Fetch).
    pub async fn fetch_inner(
        &self,
        req: &pb::FetchRequest,
    ) -> Result<pb::FetchResponse, PartitionError> {
        let replica = self.leader_replica(&req.topic, req.partition).await?;
        let epoch = replica.leader_epoch()?;
        let follower = req.replica_id != 0;
        if follower {
            replica.follower_fetched(req.replica_id, req.leader_epoch, req.offset)?;
        } else if req.leader_epoch != 0 && req.leader_epoch != epoch {
            return Err(if req.leader_epoch < epoch {
                PartitionError::FencedEpoch {
                    requested: req.leader_epoch,
                    current: epoch,
                }
            } else {
                PartitionError::UnknownEpoch {
                    requested: req.leader_epoch,
                    current: epoch,
                }
            });
        }
        let start = replica.log().log_start_offset().0;
        let end = replica.log_end();
        if req.offset < start || req.offset > end {
            return Err(PartitionError::OffsetOutOfRange {
                requested: req.offset,
                start,
                end,
            });
        }
        // Consumers read below the high watermark; followers to the log end.
        let limit = |r: &Replica| {
            if follower {
                r.log_end()
            } else {
                r.high_watermark()
            }
        };
        let wait =
            Duration::from_millis(u64::from(req.max_wait_ms)).min(self.core.config.fetch_wait_max);
        if limit(&replica) <= req.offset && !wait.is_zero() {
            let mut rx = replica.subscribe();
            let deadline = tokio::time::Instant::now() + wait;
            while limit(&replica) <= req.offset && replica.role() == (Role::Leader { epoch }) {
                if tokio::time::timeout_at(deadline, rx.changed())
                    .await
                    .is_err()
                {
                    break;
                }
            }
        }
        let max_bytes = if req.max_bytes == 0 {
            self.core.config.fetch_max_bytes
        } else {
            req.max_bytes.min(64 << 20)
        } as usize;
        let hw = replica.high_watermark();
        let records = replica.read(req.offset, limit(&replica), max_bytes, follower)?;
        Ok(pb::FetchResponse {
            error: None,
            records,
            high_watermark: hw,
            log_end_offset: replica.log_end(),
            log_start_offset: replica.log().log_start_offset().0,
            leader_epoch: epoch,
        })
    }

    /// The offset (and the record's timestamp, for a timestamp look-up) a
    /// ListOffsets asks for, at this broker, the partition's leader (the
    /// `ListOffsets` RPC and the Kafka listener's ListOffsets).
    pub async fn list_offsets_inner(
        &self,
        req: &pb::ListOffsetsRequest,
    ) -> Result<(u64, i64), PartitionError> {
        let replica = self.leader_replica(&req.topic, req.partition).await?;
        let spec = pb::OffsetSpec::try_from(req.spec)
            .map_err(|_| PartitionError::Invalid(format!("unknown offset spec {}", req.spec)))?;
        Ok(match spec {
            pb::OffsetSpec::Earliest => (replica.log().log_start_offset().0, 0),
            pb::OffsetSpec::Latest => (replica.high_watermark(), 0),
            pb::OffsetSpec::Timestamp => replica
                .first_offset_at(req.timestamp_ns)?
                .unwrap_or((replica.high_watermark(), 0)),
        })
    }
}

#[tonic::async_trait]
impl pb::broker_server::Broker for BrokerService {
    async fn produce(
        &self,
        request: Request<pb::ProduceRequest>,
    ) -> Result<Response<pb::ProduceResponse>, Status> {
        let req = request.into_inner();
        Ok(Response::new(match self.produce_inner(&req).await {
            Ok(r) => r,
            Err(e) => pb::ProduceResponse {
                error: Some(e.to_proto()),
                ..Default::default()
            },
        }))
    }

    async fn fetch(
        &self,
        request: Request<pb::FetchRequest>,
    ) -> Result<Response<pb::FetchResponse>, Status> {
        let req = request.into_inner();
        Ok(Response::new(match self.fetch_inner(&req).await {
            Ok(r) => r,
            // The log's extent, so a follower below the log start can reset
            // to it and a consumer can see where to resume.
            Err(e @ PartitionError::OffsetOutOfRange { start, end, .. }) => pb::FetchResponse {
                error: Some(e.to_proto()),
                log_start_offset: start,
                log_end_offset: end,
                ..Default::default()
            },
            Err(e) => pb::FetchResponse {
                error: Some(e.to_proto()),
                ..Default::default()
            },
        }))
    }

    async fn list_offsets(
        &self,
        request: Request<pb::ListOffsetsRequest>,
    ) -> Result<Response<pb::ListOffsetsResponse>, Status> {
        let req = request.into_inner();
        let result = self.list_offsets_inner(&req).await;
        Ok(Response::new(match result {
            Ok((offset, timestamp_ns)) => pb::ListOffsetsResponse {
                error: None,
                offset,
                timestamp_ns,
            },
            Err(e) => pb::ListOffsetsResponse {
                error: Some(e.to_proto()),
                ..Default::default()
            },
        }))
    }

    async fn offset_for_leader_epoch(
        &self,
        request: Request<pb::OffsetForLeaderEpochRequest>,
    ) -> Result<Response<pb::OffsetForLeaderEpochResponse>, Status> {
        let req = request.into_inner();
        let result = async {
            let replica = self.leader_replica(&req.topic, req.partition).await?;
            let epoch = replica.leader_epoch()?;
            if req.current_leader_epoch != 0 && req.current_leader_epoch != epoch {
                return Err(if req.current_leader_epoch < epoch {
                    PartitionError::FencedEpoch {
                        requested: req.current_leader_epoch,
                        current: epoch,
                    }
                } else {
                    PartitionError::UnknownEpoch {
                        requested: req.current_leader_epoch,
                        current: epoch,
                    }
                });
            }
            Ok(replica.end_offset_for(req.leader_epoch))
        }
        .await;
        Ok(Response::new(match result {
            Ok((leader_epoch, end_offset)) => pb::OffsetForLeaderEpochResponse {
                error: None,
                leader_epoch,
                end_offset,
            },
            Err(e) => pb::OffsetForLeaderEpochResponse {
                error: Some(e.to_proto()),
                ..Default::default()
            },
        }))
    }

    async fn metadata(
        &self,
        request: Request<pb::MetadataRequest>,
    ) -> Result<Response<pb::MetadataResponse>, Status> {
        let req = request.into_inner();
        let view = View::read(&self.core.kv).await.map_err(kv_status)?;
        let topic = view
            .describe(&req.topic)
            .ok_or_else(|| Status::not_found(format!("topic {:?} does not exist", req.topic)))?;
        Ok(Response::new(pb::MetadataResponse {
            topic: Some(topic),
            brokers: view
                .brokers
                .values()
                .map(|b| pb::BrokerInfo {
                    id: b.id,
                    addr: b.addr.clone(),
                })
                .collect(),
        }))
    }
}
