//! The `Groups` gRPC service: consumer groups kept entirely in the KV, so
//! any broker serves any group and none holds state another needs.
//!
//! 1. A member is the key `group:<g>/member:<id>` attached to its own lease
//!    (TTL = its session timeout); Heartbeat renews the lease, so a member
//!    that stops heartbeating disappears.
//! 2. The generation record `group:<g>/generation` names the members (and
//!    the topics with their partition counts) of the current generation.
//!    Whenever the live members (or the topics) differ from it, whoever
//!    notices (a join, heartbeat or leave) writes generation + 1 by a Txn on
//!    the record's mod_revision: exactly one writer wins each bump.
//! 3. The assignment is a pure function of the generation record
//!    ([`crate::assign::range_assign`]), so every member computes the same.
//! 4. A commit carries the member's generation; it is written by a Txn that
//!    requires the generation record unchanged since it was checked and the
//!    member's key alive. A member of an old generation cannot commit.

use crate::assign::range_assign;
use crate::core::BrokerCore;
use crate::error::kv_status;
use crate::kv;
use crate::metadata::{self, CommittedRecord, GenerationRecord, MemberRecord, TopicSpec};
use flotilla_proto::broker as pb;
use flotilla_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use flotilla_proto::etcdserverpb::{Compare, RangeRequest};
use std::collections::BTreeMap;
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// Session timeout when the member does not give one.
pub const SESSION_TIMEOUT_DEFAULT_MS: u32 = 10_000;
/// Bounds of the session timeout.
pub const SESSION_TIMEOUT_MS_RANGE: (u32, u32) = (1_000, 300_000);
/// Most topics one group consumes.
pub const GROUP_TOPICS_MAX: usize = 100;
/// Most offsets per commit.
pub const COMMIT_OFFSETS_MAX: usize = 1000;
/// Rounds of the generation Txn before giving up (each lost round means
/// another broker bumped it).
const BUMP_ROUNDS_MAX: usize = 10;

/// Serves `flotilla.broker.v1.Groups`.
#[derive(Debug, Clone)]
pub struct GroupsService {
    core: Arc<BrokerCore>,
}

fn code_error(code: pb::ErrorCode, message: String) -> pb::BrokerError {
    pb::BrokerError {
        code: code as i32,
        message,
        ..Default::default()
    }
}

fn random_suffix() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one((std::process::id(), std::time::SystemTime::now()))
}

impl GroupsService {
    /// The service over `core`.
    pub fn new(core: Arc<BrokerCore>) -> GroupsService {
        GroupsService { core }
    }

    /// The tonic server.
    pub fn into_server(self) -> pb::groups_server::GroupsServer<GroupsService> {
        pb::groups_server::GroupsServer::new(self)
    }

    async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        key: &str,
    ) -> Result<Option<(T, i64, i64)>, Status> {
        let r = self
            .core
            .kv
            .range(RangeRequest {
                key: key.as_bytes().to_vec(),
                ..Default::default()
            })
            .await
            .map_err(kv_status)?;
        match r.kvs.first() {
            None => Ok(None),
            Some(kv) => {
                let v = serde_json::from_slice(&kv.value)
                    .map_err(|e| Status::internal(format!("{key}: {e}")))?;
                Ok(Some((v, kv.mod_revision, kv.lease)))
            }
        }
    }

    async fn members(&self, group: &str) -> Result<BTreeMap<String, MemberRecord>, Status> {
        let prefix = metadata::member_prefix(group);
        let (kvs, _) = self
            .core
            .kv
            .range_prefix(prefix.as_bytes())
            .await
            .map_err(kv_status)?;
        Ok(kvs
            .into_iter()
            .filter_map(|kv| {
                let key = String::from_utf8(kv.key).ok()?;
                let id = key.strip_prefix(&prefix)?.to_string();
                serde_json::from_slice::<MemberRecord>(&kv.value)
                    .ok()
                    .map(|m| (id, m))
            })
            .collect())
    }

    async fn partition_counts(&self, topics: &[String]) -> Result<BTreeMap<String, u32>, Status> {
        let mut out = BTreeMap::new();
        for t in topics {
            if let Some((spec, _, _)) = self.get_json::<TopicSpec>(&metadata::topic_key(t)).await? {
                out.insert(t.clone(), spec.partitions);
            }
        }
        Ok(out)
    }

    /// Rule 2: the current generation, bumped first if the live members or
    /// the topics moved on. Returns it with its mod_revision.
    async fn current_generation(&self, group: &str) -> Result<(GenerationRecord, i64), Status> {
        let key = metadata::generation_key(group);
        for _ in 0..BUMP_ROUNDS_MAX {
            let (gen_rec, rev) = self
                .get_json::<GenerationRecord>(&key)
                .await?
                .map_or((GenerationRecord::default(), 0), |(g, r, _)| (g, r));
            let members = self.members(group).await?;
            let ids: Vec<String> = members.keys().cloned().collect();
            let mut topics: Vec<String> = members.values().flat_map(|m| m.topics.clone()).collect();
            topics.sort();
            topics.dedup();
            let counts = self.partition_counts(&topics).await?;
            if gen_rec.members == ids && gen_rec.topics == counts && rev != 0 {
                return Ok((gen_rec, rev));
            }
            if ids.is_empty() && gen_rec.members.is_empty() && rev != 0 {
                return Ok((gen_rec, rev));
            }
            let next = GenerationRecord {
                generation: gen_rec.generation + 1,
                members: ids,
                topics: counts,
            };
            let resp = self
                .core
                .kv
                .txn(kv::txn(
                    vec![kv::mod_revision_is(&key, rev)],
                    vec![kv::put(&key, kv::json(&next), 0)],
                    vec![],
                ))
                .await
                .map_err(kv_status)?;
            if resp.succeeded {
                let rev = resp.header.map_or(0, |h| h.revision);
                tracing::info!(group, generation = next.generation, members = ?next.members, "group generation");
                return Ok((next, rev));
            }
        }
        Err(Status::aborted("the group kept changing; retry"))
    }

    fn assignment_of(generation: &GenerationRecord, member: &str) -> Vec<pb::TopicPartition> {
        range_assign(&generation.members, &generation.topics)
            .remove(member)
            .unwrap_or_default()
            .into_iter()
            .map(|(topic, partition)| pb::TopicPartition { topic, partition })
            .collect()
    }

    async fn join(
        &self,
        req: pb::JoinGroupRequest,
    ) -> Result<Result<pb::JoinGroupResponse, pb::BrokerError>, Status> {
        metadata::validate_name("group", &req.group).map_err(Status::invalid_argument)?;
        if req.topics.is_empty() || req.topics.len() > GROUP_TOPICS_MAX {
            return Err(Status::invalid_argument(format!(
                "a member consumes 1 to {GROUP_TOPICS_MAX} topics"
            )));
        }
        for t in &req.topics {
            metadata::validate_name("topic", t).map_err(Status::invalid_argument)?;
        }
        let timeout_ms = match req.session_timeout_ms {
            0 => SESSION_TIMEOUT_DEFAULT_MS,
            t if (SESSION_TIMEOUT_MS_RANGE.0..=SESSION_TIMEOUT_MS_RANGE.1).contains(&t) => t,
            t => {
                return Err(Status::invalid_argument(format!(
                    "session timeout {t} ms must be from {} to {} ms",
                    SESSION_TIMEOUT_MS_RANGE.0, SESSION_TIMEOUT_MS_RANGE.1
                )));
            }
        };
        let member_id = if req.member_id.is_empty() {
            let base = if req.client_id.is_empty() {
                "member"
            } else {
                &req.client_id
            };
            let base: String = base
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
                .take(64)
                .collect();
            format!("{base}-{:016x}", random_suffix())
        } else {
            metadata::validate_name("member", &req.member_id).map_err(Status::invalid_argument)?;
            req.member_id.clone()
        };
        let key = metadata::member_key(&req.group, &member_id);
        let mut topics = req.topics.clone();
        topics.sort();
        topics.dedup();
        let existing = self.get_json::<MemberRecord>(&key).await?;
        let lease = match existing {
            Some((m, _, _)) if m.topics == topics => {
                if self
                    .core
                    .kv
                    .lease_keep_alive(m.lease)
                    .await
                    .map_err(kv_status)?
                    > 0
                {
                    Some(m.lease)
                } else {
                    None
                }
            }
            Some((m, _, _)) => {
                let _ = self.core.kv.lease_revoke(m.lease).await;
                None
            }
            None => None,
        };
        let lease = match lease {
            Some(l) => l,
            None => {
                let ttl = i64::from(timeout_ms.div_ceil(1000));
                let (lease, _) = self.core.kv.lease_grant(ttl).await.map_err(kv_status)?;
                let record = MemberRecord {
                    client_id: req.client_id.clone(),
                    topics,
                    lease,
                };
                self.core
                    .kv
                    .txn(kv::txn(
                        vec![],
                        vec![kv::put(&key, kv::json(&record), lease)],
                        vec![],
                    ))
                    .await
                    .map_err(kv_status)?;
                lease
            }
        };
        let (generation, _) = self.current_generation(&req.group).await?;
        Ok(Ok(pb::JoinGroupResponse {
            error: None,
            generation: generation.generation,
            assignment: Self::assignment_of(&generation, &member_id),
            member_id,
            lease_id: lease,
        }))
    }

    async fn heartbeat_inner(
        &self,
        req: &pb::HeartbeatRequest,
    ) -> Result<Result<u64, pb::BrokerError>, Status> {
        let key = metadata::member_key(&req.group, &req.member_id);
        let Some((m, _, _)) = self.get_json::<MemberRecord>(&key).await? else {
            return Ok(Err(code_error(
                pb::ErrorCode::UnknownMember,
                format!(
                    "member {:?} is not in group {:?} (expired?); join again",
                    req.member_id, req.group
                ),
            )));
        };
        if self
            .core
            .kv
            .lease_keep_alive(m.lease)
            .await
            .map_err(kv_status)?
            <= 0
        {
            return Ok(Err(code_error(
                pb::ErrorCode::UnknownMember,
                format!("member {:?}'s session expired; join again", req.member_id),
            )));
        }
        let (generation, _) = self.current_generation(&req.group).await?;
        if generation.generation != req.generation {
            return Ok(Err(code_error(
                pb::ErrorCode::IllegalGeneration,
                format!(
                    "group {:?} is at generation {}, the member at {}; join again",
                    req.group, generation.generation, req.generation
                ),
            )));
        }
        Ok(Ok(generation.generation))
    }

    async fn commit_inner(
        &self,
        req: &pb::CommitOffsetsRequest,
    ) -> Result<Result<(), pb::BrokerError>, Status> {
        metadata::validate_name("group", &req.group).map_err(Status::invalid_argument)?;
        if req.offsets.len() > COMMIT_OFFSETS_MAX {
            return Err(Status::invalid_argument(format!(
                "at most {COMMIT_OFFSETS_MAX} offsets per commit"
            )));
        }
        let gen_key = metadata::generation_key(&req.group);
        let (generation, rev) = self
            .get_json::<GenerationRecord>(&gen_key)
            .await?
            .map_or((GenerationRecord::default(), 0), |(g, r, _)| (g, r));
        let mut compare = vec![kv::mod_revision_is(&gen_key, rev)];
        if req.member_id.is_empty() && req.generation == 0 {
            // A standalone commit (no group membership): only while the group
            // has no members, as Kafka's simple consumers.
            if !self.members(&req.group).await?.is_empty() || !generation.members.is_empty() {
                return Ok(Err(code_error(
                    pb::ErrorCode::IllegalGeneration,
                    format!("group {:?} has members: commit as one of them", req.group),
                )));
            }
        } else {
            if generation.generation != req.generation {
                return Ok(Err(code_error(
                    pb::ErrorCode::IllegalGeneration,
                    format!(
                        "commit from generation {} refused: group {:?} is at generation {}",
                        req.generation, req.group, generation.generation
                    ),
                )));
            }
            if !generation.members.contains(&req.member_id) {
                return Ok(Err(code_error(
                    pb::ErrorCode::UnknownMember,
                    format!(
                        "member {:?} is not in generation {}",
                        req.member_id, generation.generation
                    ),
                )));
            }
            compare.push(Compare {
                result: CompareResult::Greater as i32,
                target: CompareTarget::Create as i32,
                key: metadata::member_key(&req.group, &req.member_id).into_bytes(),
                range_end: Vec::new(),
                target_union: Some(TargetUnion::CreateRevision(0)),
            });
        }
        let mut ops = Vec::with_capacity(req.offsets.len());
        for o in &req.offsets {
            metadata::validate_name("topic", &o.topic).map_err(Status::invalid_argument)?;
            ops.push(kv::put(
                &metadata::committed_key(&req.group, &o.topic, o.partition),
                kv::json(&CommittedRecord {
                    offset: o.offset,
                    metadata: o.metadata.clone(),
                    generation: req.generation,
                }),
                0,
            ));
        }
        for chunk in ops.chunks(90) {
            let resp = self
                .core
                .kv
                .txn(kv::txn(compare.clone(), chunk.to_vec(), vec![]))
                .await
                .map_err(kv_status)?;
            if !resp.succeeded {
                return Ok(Err(code_error(
                    pb::ErrorCode::IllegalGeneration,
                    format!(
                        "group {:?} moved to a new generation during the commit; join again",
                        req.group
                    ),
                )));
            }
        }
        Ok(Ok(()))
    }

    async fn committed(&self, group: &str) -> Result<Vec<pb::CommittedOffset>, Status> {
        let prefix = metadata::committed_prefix(group);
        let (kvs, _) = self
            .core
            .kv
            .range_prefix(prefix.as_bytes())
            .await
            .map_err(kv_status)?;
        let mut out = Vec::new();
        for kv in kvs {
            let Ok(key) = String::from_utf8(kv.key) else {
                continue;
            };
            let Some(rest) = key.strip_prefix(&prefix) else {
                continue;
            };
            let Some((t, p)) = rest.split_once("/partition:") else {
                continue;
            };
            let Some(topic) = t.strip_prefix("topic:") else {
                continue;
            };
            let Ok(partition) = p.parse::<u32>() else {
                continue;
            };
            let Ok(rec) = serde_json::from_slice::<CommittedRecord>(&kv.value) else {
                continue;
            };
            out.push(pb::CommittedOffset {
                topic: topic.to_string(),
                partition,
                offset: rec.offset as i64,
                metadata: rec.metadata,
            });
        }
        Ok(out)
    }
}

#[tonic::async_trait]
impl pb::groups_server::Groups for GroupsService {
    async fn join_group(
        &self,
        request: Request<pb::JoinGroupRequest>,
    ) -> Result<Response<pb::JoinGroupResponse>, Status> {
        Ok(Response::new(
            match self.join(request.into_inner()).await? {
                Ok(r) => r,
                Err(e) => pb::JoinGroupResponse {
                    error: Some(e),
                    ..Default::default()
                },
            },
        ))
    }

    async fn heartbeat(
        &self,
        request: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        let req = request.into_inner();
        Ok(Response::new(match self.heartbeat_inner(&req).await? {
            Ok(generation) => pb::HeartbeatResponse {
                error: None,
                generation,
            },
            Err(e) => pb::HeartbeatResponse {
                error: Some(e),
                generation: 0,
            },
        }))
    }

    async fn leave_group(
        &self,
        request: Request<pb::LeaveGroupRequest>,
    ) -> Result<Response<pb::LeaveGroupResponse>, Status> {
        let req = request.into_inner();
        let key = metadata::member_key(&req.group, &req.member_id);
        if let Some((m, _, _)) = self.get_json::<MemberRecord>(&key).await? {
            self.core
                .kv
                .lease_revoke(m.lease)
                .await
                .map_err(kv_status)?;
            self.current_generation(&req.group).await?;
        }
        Ok(Response::new(pb::LeaveGroupResponse { error: None }))
    }

    async fn commit_offsets(
        &self,
        request: Request<pb::CommitOffsetsRequest>,
    ) -> Result<Response<pb::CommitOffsetsResponse>, Status> {
        let req = request.into_inner();
        Ok(Response::new(pb::CommitOffsetsResponse {
            error: self.commit_inner(&req).await?.err(),
        }))
    }

    async fn fetch_offsets(
        &self,
        request: Request<pb::FetchOffsetsRequest>,
    ) -> Result<Response<pb::FetchOffsetsResponse>, Status> {
        let req = request.into_inner();
        metadata::validate_name("group", &req.group).map_err(Status::invalid_argument)?;
        let all = self.committed(&req.group).await?;
        let offsets = if req.partitions.is_empty() {
            all
        } else {
            req.partitions
                .iter()
                .map(|tp| {
                    all.iter()
                        .find(|c| c.topic == tp.topic && c.partition == tp.partition)
                        .cloned()
                        .unwrap_or(pb::CommittedOffset {
                            topic: tp.topic.clone(),
                            partition: tp.partition,
                            offset: -1,
                            metadata: String::new(),
                        })
                })
                .collect()
        };
        Ok(Response::new(pb::FetchOffsetsResponse {
            error: None,
            offsets,
        }))
    }

    async fn describe_group(
        &self,
        request: Request<pb::DescribeGroupRequest>,
    ) -> Result<Response<pb::DescribeGroupResponse>, Status> {
        let req = request.into_inner();
        metadata::validate_name("group", &req.group).map_err(Status::invalid_argument)?;
        let generation = self
            .get_json::<GenerationRecord>(&metadata::generation_key(&req.group))
            .await?
            .map(|(g, _, _)| g)
            .unwrap_or_default();
        let members = self.members(&req.group).await?;
        let mut described: Vec<pb::GroupMember> = members
            .iter()
            .map(|(id, m)| pb::GroupMember {
                member_id: id.clone(),
                client_id: m.client_id.clone(),
                assignment: Self::assignment_of(&generation, id),
            })
            .collect();
        let mut generation_id = generation.generation;
        if generation_id == 0 && described.is_empty() {
            // A group of Kafka clients (crate::kcoord): its last generation
            // and members as its coordinator stored them; their assignments
            // are the clients' own, opaque here.
            if let Some((k, _, _)) = self
                .get_json::<metadata::KafkaGenerationRecord>(&metadata::kafka_generation_key(
                    &req.group,
                ))
                .await?
            {
                generation_id = u64::try_from(k.generation).unwrap_or(0);
                described = k
                    .members
                    .into_iter()
                    .map(|member_id| pb::GroupMember {
                        member_id,
                        client_id: "(kafka client)".into(),
                        assignment: Vec::new(),
                    })
                    .collect();
            }
        }
        Ok(Response::new(pb::DescribeGroupResponse {
            error: None,
            group: req.group.clone(),
            generation: generation_id,
            topics: generation.topics.keys().cloned().collect(),
            members: described,
            offsets: self.committed(&req.group).await?,
        }))
    }

    async fn list_groups(
        &self,
        _request: Request<pb::ListGroupsRequest>,
    ) -> Result<Response<pb::ListGroupsResponse>, Status> {
        let mut groups = std::collections::BTreeSet::new();
        for prefix in ["group:", "cg:"] {
            let resp = self
                .core
                .kv
                .range(RangeRequest {
                    key: prefix.as_bytes().to_vec(),
                    range_end: flotilla_client::prefix_end(prefix.as_bytes()),
                    keys_only: true,
                    ..Default::default()
                })
                .await
                .map_err(kv_status)?;
            for kv in resp.kvs {
                let key = String::from_utf8_lossy(&kv.key);
                if let Some((g, _)) = key.strip_prefix(prefix).and_then(|r| r.split_once('/')) {
                    groups.insert(g.to_string());
                }
            }
        }
        Ok(Response::new(pb::ListGroupsResponse {
            groups: groups.into_iter().collect(),
        }))
    }
}
