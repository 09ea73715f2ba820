//! The `BrokerAdmin` gRPC service: topics in the KV. Every change is one
//! Txn fenced on what was read, so concurrent admins cannot interleave.

use crate::core::BrokerCore;
use crate::error::kv_status;
use crate::kv;
use crate::metadata::{self, Replicas, TopicSpec};
use crate::view::{View, live_brokers};
use flotilla_proto::broker as pb;
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// Most operations per metadata Txn (etcd's default `--max-txn-ops` is 128).
const TXN_OPS_MAX: usize = 100;

/// Serves `flotilla.broker.v1.BrokerAdmin`.
#[derive(Debug, Clone)]
pub struct AdminService {
    core: Arc<BrokerCore>,
}

impl AdminService {
    /// The service over `core`.
    pub fn new(core: Arc<BrokerCore>) -> AdminService {
        AdminService { core }
    }

    /// The tonic server.
    pub fn into_server(self) -> pb::broker_admin_server::BrokerAdminServer<AdminService> {
        pb::broker_admin_server::BrokerAdminServer::new(self)
    }

    /// The topic's spec with the broker defaults filled in.
    fn spec_from(&self, c: &pb::TopicConfig) -> TopicSpec {
        let rf = if c.replication_factor == 0 {
            self.core.config.default_replication_factor
        } else {
            c.replication_factor
        };
        let min = if c.min_insync_replicas == 0 {
            self.core.config.min_insync_replicas.min(rf)
        } else {
            c.min_insync_replicas
        };
        TopicSpec {
            partitions: c.partitions,
            replication_factor: rf,
            retention_ms: c.retention_ms,
            retention_bytes: c.retention_bytes,
            segment_bytes: c.segment_bytes,
            min_insync_replicas: min,
            fsync_policy: if c.fsync_policy.is_empty() {
                "never".into()
            } else {
                c.fsync_policy.clone()
            },
            unclean_leader_election: c.unclean_leader_election,
        }
    }

    async fn put_replicas(
        &self,
        topic: &str,
        first: u32,
        placed: Vec<Vec<u64>>,
    ) -> Result<(), Status> {
        let ops: Vec<_> = placed
            .into_iter()
            .enumerate()
            .map(|(i, replicas)| {
                kv::put(
                    &metadata::replicas_key(topic, first + i as u32),
                    kv::json(&Replicas { replicas }),
                    0,
                )
            })
            .collect();
        for chunk in ops.chunks(TXN_OPS_MAX) {
            self.core
                .kv
                .txn(kv::txn(vec![], chunk.to_vec(), vec![]))
                .await
                .map_err(kv_status)?;
        }
        Ok(())
    }

    async fn describe(&self, name: &str) -> Result<pb::TopicDescription, Status> {
        let view = View::read(&self.core.kv).await.map_err(kv_status)?;
        view.describe(name)
            .ok_or_else(|| Status::not_found(format!("topic {name:?} does not exist")))
    }

    /// Topic `name`'s key and its stored record; NOT_FOUND when absent.
    async fn stored_topic(
        &self,
        name: &str,
    ) -> Result<(String, flotilla_proto::mvccpb::KeyValue), Status> {
        metadata::validate_name("topic", name).map_err(invalid)?;
        let key = metadata::topic_key(name);
        let existing = self
            .core
            .kv
            .range(flotilla_proto::etcdserverpb::RangeRequest {
                key: key.clone().into_bytes(),
                ..Default::default()
            })
            .await
            .map_err(kv_status)?;
        let record = existing
            .kvs
            .into_iter()
            .next()
            .ok_or_else(|| Status::not_found(format!("topic {name:?} does not exist")))?;
        Ok((key, record))
    }

    async fn live(&self) -> Result<Vec<u64>, Status> {
        Ok(live_brokers(&self.core.kv)
            .await
            .map_err(kv_status)?
            .into_keys()
            .collect())
    }
}

fn invalid(e: impl std::fmt::Display) -> Status {
    Status::invalid_argument(e.to_string())
}

#[tonic::async_trait]
impl pb::broker_admin_server::BrokerAdmin for AdminService {
    async fn create_topic(
        &self,
        request: Request<pb::CreateTopicRequest>,
    ) -> Result<Response<pb::CreateTopicResponse>, Status> {
        let req = request.into_inner();
        metadata::validate_name("topic", &req.name).map_err(invalid)?;
        let spec = self.spec_from(&req.config.unwrap_or_default());
        spec.validate().map_err(invalid)?;
        let placed = metadata::place(
            &self.live().await?,
            0,
            spec.partitions,
            spec.replication_factor,
        )
        .map_err(invalid)?;
        let key = metadata::topic_key(&req.name);
        // The topic key and the first replica lists in one Txn; a topic
        // with more partitions gets the rest right after (the broker ignores
        // partitions whose replica list is not written yet).
        let first: Vec<_> = placed
            .iter()
            .take(TXN_OPS_MAX - 1)
            .enumerate()
            .map(|(p, replicas)| {
                kv::put(
                    &metadata::replicas_key(&req.name, p as u32),
                    kv::json(&Replicas {
                        replicas: replicas.clone(),
                    }),
                    0,
                )
            })
            .chain([kv::put(&key, kv::json(&spec), 0)])
            .collect();
        let n_first = first.len() - 1;
        let resp = self
            .core
            .kv
            .txn(kv::txn(
                vec![kv::create_revision_is(&key, 0)],
                first,
                vec![],
            ))
            .await
            .map_err(kv_status)?;
        if !resp.succeeded {
            return Err(Status::already_exists(format!(
                "topic {:?} already exists",
                req.name
            )));
        }
        if placed.len() > n_first {
            self.put_replicas(&req.name, n_first as u32, placed[n_first..].to_vec())
                .await?;
        }
        tracing::info!(topic = %req.name, ?spec, "topic created");
        Ok(Response::new(pb::CreateTopicResponse {
            topic: Some(self.describe(&req.name).await?),
        }))
    }

    async fn delete_topic(
        &self,
        request: Request<pb::DeleteTopicRequest>,
    ) -> Result<Response<pb::DeleteTopicResponse>, Status> {
        let req = request.into_inner();
        let (key, kv_) = self.stored_topic(&req.name).await?;
        let resp = self
            .core
            .kv
            .txn(kv::txn(
                vec![kv::mod_revision_is(&key, kv_.mod_revision)],
                vec![
                    kv::delete(&key, false),
                    kv::delete(&metadata::partition_prefix(&req.name), true),
                ],
                vec![],
            ))
            .await
            .map_err(kv_status)?;
        if !resp.succeeded {
            return Err(Status::aborted("the topic changed while deleting; retry"));
        }
        tracing::info!(topic = %req.name, "topic deleted");
        Ok(Response::new(pb::DeleteTopicResponse {}))
    }

    async fn list_topics(
        &self,
        _request: Request<pb::ListTopicsRequest>,
    ) -> Result<Response<pb::ListTopicsResponse>, Status> {
        let view = View::read(&self.core.kv).await.map_err(kv_status)?;
        Ok(Response::new(pb::ListTopicsResponse {
            topics: view
                .topics
                .keys()
                .filter_map(|t| view.describe(t))
                .collect(),
        }))
    }

    async fn describe_topic(
        &self,
        request: Request<pb::DescribeTopicRequest>,
    ) -> Result<Response<pb::DescribeTopicResponse>, Status> {
        let req = request.into_inner();
        Ok(Response::new(pb::DescribeTopicResponse {
            topic: Some(self.describe(&req.name).await?),
        }))
    }

    async fn alter_topic(
        &self,
        request: Request<pb::AlterTopicRequest>,
    ) -> Result<Response<pb::AlterTopicResponse>, Status> {
        let req = request.into_inner();
        let (key, current) = self.stored_topic(&req.name).await?;
        let old: TopicSpec = serde_json::from_slice(&current.value)
            .map_err(|e| Status::internal(format!("stored topic record: {e}")))?;
        let mut spec = old.clone();
        if let Some(p) = req.partitions {
            if p < old.partitions {
                return Err(invalid(format!(
                    "partitions can only be added: the topic has {}, asked for {p}",
                    old.partitions
                )));
            }
            spec.partitions = p;
        }
        if let Some(v) = req.retention_ms {
            spec.retention_ms = v;
        }
        if let Some(v) = req.retention_bytes {
            spec.retention_bytes = v;
        }
        if let Some(v) = req.segment_bytes {
            spec.segment_bytes = v;
        }
        if let Some(v) = req.min_insync_replicas {
            spec.min_insync_replicas = v;
        }
        if let Some(v) = req.fsync_policy {
            spec.fsync_policy = v;
        }
        if let Some(v) = req.unclean_leader_election {
            spec.unclean_leader_election = v;
        }
        spec.validate().map_err(invalid)?;
        let added = spec.partitions - old.partitions;
        let placed = if added > 0 {
            metadata::place(
                &self.live().await?,
                old.partitions,
                added,
                spec.replication_factor,
            )
            .map_err(invalid)?
        } else {
            Vec::new()
        };
        // Replica lists of added partitions first: the partitions count
        // only once the topic record says so.
        if !placed.is_empty() {
            self.put_replicas(&req.name, old.partitions, placed).await?;
        }
        let resp = self
            .core
            .kv
            .txn(kv::txn(
                vec![kv::mod_revision_is(&key, current.mod_revision)],
                vec![kv::put(&key, kv::json(&spec), 0)],
                vec![],
            ))
            .await
            .map_err(kv_status)?;
        if !resp.succeeded {
            return Err(Status::aborted("the topic changed concurrently; retry"));
        }
        tracing::info!(topic = %req.name, ?spec, "topic altered");
        Ok(Response::new(pb::AlterTopicResponse {
            topic: Some(self.describe(&req.name).await?),
        }))
    }
}
