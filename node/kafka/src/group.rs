//! The Kafka group APIs: FindCoordinator, JoinGroup, SyncGroup, Heartbeat,
//! LeaveGroup, OffsetCommit, OffsetFetch, DescribeGroups, ListGroups.
//!
//! The dispatcher ([`crate::dispatch`]) routes every request of an API
//! listed in [`VERSIONS`], at a version inside its range, to [`handle`], and
//! advertises those ranges in ApiVersions. A request of a group API or
//! version not listed there never reaches this module: the dispatcher
//! answers it UNSUPPORTED_VERSION itself.
//!
//! This module only translates: the coordinator is
//! `flotilla_broker::kcoord` (one broker per group, chosen through the KV;
//! generations stored in the KV) around the pure rendezvous of
//! `flotilla_broker::kgroup`. Committed offsets are the gRPC `Groups`
//! service's `cg:<group>/topic:<t>/partition:<p>` keys, so a group committed
//! through either door reads back through the other.
//!
//! Static membership (`group.instance.id`) is accepted and shown, but the
//! member is treated as a dynamic one.

use crate::Context;
use crate::dispatch::HandlerError;
use crate::ids;
use bytes::Bytes;
use flotilla_broker::kcoord::{self, OffsetToCommit};
use flotilla_broker::kgroup::{GroupError, JoinRequest};
use flotilla_broker::metadata;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{
    ApiKey, BrokerId, DescribeGroupsRequest, DescribeGroupsResponse, FindCoordinatorRequest,
    FindCoordinatorResponse, GroupId, HeartbeatRequest, HeartbeatResponse, JoinGroupRequest,
    JoinGroupResponse, LeaveGroupRequest, LeaveGroupResponse, ListGroupsRequest,
    ListGroupsResponse, OffsetCommitRequest, OffsetCommitResponse, OffsetFetchRequest,
    OffsetFetchResponse, RequestHeader, RequestKind, ResponseKind, SyncGroupRequest,
    SyncGroupResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use std::collections::BTreeMap;
use std::time::Duration;

/// The group APIs this module serves, with the versions it handles
/// (`(api, min, max)`, inclusive). OffsetCommit starts at the first version
/// the codec crate has (2); OffsetFetch at 2, the first with a group-level
/// error code (v1 could not say NOT_COORDINATOR). Versions that belong
/// to the KIP-848 consumer protocol (member epochs: OffsetCommit v9,
/// OffsetFetch v9) or to share groups are left out.
pub const VERSIONS: &[(ApiKey, i16, i16)] = &[
    (ApiKey::FindCoordinator, 0, 4),
    (ApiKey::JoinGroup, 0, 7),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 5),
    (ApiKey::OffsetCommit, 2, 8),
    (ApiKey::OffsetFetch, 2, 8),
    (ApiKey::DescribeGroups, 0, 5),
    (ApiKey::ListGroups, 0, 4),
];

/// FindCoordinator's key type for a group (1 is a transaction).
const KEY_TYPE_GROUP: i8 = 0;
/// Most group keys in one batched FindCoordinator or DescribeGroups.
const KEYS_MAX: usize = 1000;

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

fn code(r: Result<(), GroupError>) -> i16 {
    r.err().map_or(0, GroupError::code)
}

/// Handles one group request.
///
/// - `ctx`: the listener's shared state (the broker core, its gRPC
///   services, the Kafka node-id mapping, the settings).
/// - `header`: the request header (api version, correlation id, client id).
/// - `request`: one of the group variants of [`RequestKind`], decoded at
///   `header.request_api_version`, which is inside this module's
///   [`VERSIONS`] range for its API.
///
/// Returns the matching [`ResponseKind`] variant, which the dispatcher
/// encodes at the same version; or [`HandlerError::Unsupported`] (answered
/// UNSUPPORTED_VERSION, connection kept), or [`HandlerError::Invalid`]
/// (logged, connection closed, as Kafka does with a request it cannot
/// make sense of). Partition- or group-level failures belong in the
/// response's error codes, not in `Err`.
pub async fn handle(
    ctx: &Context,
    header: &RequestHeader,
    request: RequestKind,
) -> Result<ResponseKind, HandlerError> {
    let version = header.request_api_version;
    let client_id = header.client_id.as_deref().unwrap_or("").to_string();
    Ok(match request {
        RequestKind::FindCoordinator(r) => {
            ResponseKind::FindCoordinator(find_coordinator(ctx, version, r).await?)
        }
        RequestKind::JoinGroup(r) => {
            ResponseKind::JoinGroup(join_group(ctx, version, &client_id, r).await)
        }
        RequestKind::SyncGroup(r) => ResponseKind::SyncGroup(sync_group(ctx, r).await),
        RequestKind::Heartbeat(r) => ResponseKind::Heartbeat(heartbeat(ctx, r).await),
        RequestKind::LeaveGroup(r) => ResponseKind::LeaveGroup(leave_group(ctx, version, r).await),
        RequestKind::OffsetCommit(r) => ResponseKind::OffsetCommit(offset_commit(ctx, r).await?),
        RequestKind::OffsetFetch(r) => {
            ResponseKind::OffsetFetch(offset_fetch(ctx, version, r).await?)
        }
        RequestKind::DescribeGroups(r) => {
            ResponseKind::DescribeGroups(describe_groups(ctx, r).await?)
        }
        RequestKind::ListGroups(r) => ResponseKind::ListGroups(list_groups(ctx, r).await),
        _ => return Err(HandlerError::Unsupported),
    })
}

/// The Kafka node id, host and port of broker `id`.
async fn kafka_address(ctx: &Context, id: u64) -> Option<(i32, String, i32)> {
    let addr = if id == ctx.core.id() {
        ctx.config.advertise_addr.clone()
    } else {
        let raw = ctx
            .core
            .kv
            .get(metadata::broker_key(id).as_bytes())
            .await
            .ok()??;
        let rec: metadata::BrokerRecord = serde_json::from_slice(&raw).ok()?;
        rec.kafka_addr
    };
    let (host, port) = addr.rsplit_once(':')?;
    let port: i32 = port.parse().ok()?;
    Some((ids::node_id(id), host.to_string(), port))
}

async fn coordinator_of(ctx: &Context, key: &str, key_type: i8) -> Coordinator {
    let mut c = Coordinator::default()
        .with_key(s(key))
        .with_node_id(BrokerId(-1))
        .with_host(s(""))
        .with_port(-1);
    if key_type != KEY_TYPE_GROUP {
        // Transactions are not served.
        return c
            .with_error_code(GroupError::InvalidRequest.code())
            .with_error_message(Some(s("only group coordinators are served")));
    }
    match kcoord::find(&ctx.core, key).await {
        Ok(broker) => match kafka_address(ctx, broker).await {
            Some((node, host, port)) => {
                c = c
                    .with_node_id(BrokerId(node))
                    .with_host(s(&host))
                    .with_port(port);
            }
            None => {
                c = c
                    .with_error_code(GroupError::CoordinatorNotAvailable.code())
                    .with_error_message(Some(s(&format!(
                        "broker {broker} coordinates the group but has no Kafka listener address"
                    ))));
            }
        },
        Err(e) => c = c.with_error_code(e.code()),
    }
    c
}

async fn find_coordinator(
    ctx: &Context,
    version: i16,
    r: FindCoordinatorRequest,
) -> Result<FindCoordinatorResponse, HandlerError> {
    if version >= 4 {
        if r.coordinator_keys.len() > KEYS_MAX {
            return Err(HandlerError::Invalid(format!(
                "FindCoordinator with {} keys (at most {KEYS_MAX})",
                r.coordinator_keys.len()
            )));
        }
        let mut out = Vec::with_capacity(r.coordinator_keys.len());
        for k in &r.coordinator_keys {
            out.push(coordinator_of(ctx, k, r.key_type).await);
        }
        return Ok(FindCoordinatorResponse::default().with_coordinators(out));
    }
    let c = coordinator_of(ctx, &r.key, r.key_type).await;
    Ok(FindCoordinatorResponse::default()
        .with_error_code(c.error_code)
        .with_error_message(c.error_message)
        .with_node_id(c.node_id)
        .with_host(c.host)
        .with_port(c.port))
}

async fn join_group(
    ctx: &Context,
    version: i16,
    client_id: &str,
    r: JoinGroupRequest,
) -> JoinGroupResponse {
    let session = Duration::from_millis(r.session_timeout_ms.max(0) as u64);
    let rebalance = if version >= 1 {
        Duration::from_millis(r.rebalance_timeout_ms.max(0) as u64)
    } else {
        session
    };
    let req = JoinRequest {
        member_id: r.member_id.to_string(),
        group_instance_id: r.group_instance_id.as_ref().map(|i| i.to_string()),
        client_id: client_id.to_string(),
        client_host: String::new(),
        session_timeout: session,
        rebalance_timeout: rebalance,
        protocol_type: r.protocol_type.to_string(),
        protocols: r
            .protocols
            .iter()
            .map(|p| (p.name.to_string(), p.metadata.to_vec()))
            .collect(),
        require_known_member_id: version >= 4,
    };
    let j = kcoord::join(&ctx.core, &r.group_id, req).await;
    JoinGroupResponse::default()
        .with_error_code(j.error.map_or(0, GroupError::code))
        .with_generation_id(j.generation)
        .with_protocol_type(Some(s(&j.protocol_type)))
        .with_protocol_name(Some(s(&j.protocol)))
        .with_leader(s(&j.leader))
        .with_member_id(s(&j.member_id))
        .with_members(
            j.members
                .into_iter()
                .map(|m| {
                    JoinGroupResponseMember::default()
                        .with_member_id(s(&m.member_id))
                        .with_group_instance_id(m.group_instance_id.map(StrBytes::from_string))
                        .with_metadata(Bytes::from(m.metadata))
                })
                .collect(),
        )
}

async fn sync_group(ctx: &Context, r: SyncGroupRequest) -> SyncGroupResponse {
    let assignments = r
        .assignments
        .iter()
        .map(|a| (a.member_id.to_string(), a.assignment.to_vec()))
        .collect();
    let out = kcoord::sync(
        &ctx.core,
        &r.group_id,
        &r.member_id,
        r.generation_id,
        assignments,
    )
    .await;
    SyncGroupResponse::default()
        .with_error_code(out.error.map_or(0, GroupError::code))
        .with_protocol_type(Some(s(&out.protocol_type)))
        .with_protocol_name(Some(s(&out.protocol)))
        .with_assignment(Bytes::from(out.assignment))
}

async fn heartbeat(ctx: &Context, r: HeartbeatRequest) -> HeartbeatResponse {
    let out = kcoord::heartbeat(&ctx.core, &r.group_id, &r.member_id, r.generation_id).await;
    HeartbeatResponse::default().with_error_code(code(out))
}

async fn leave_group(ctx: &Context, version: i16, r: LeaveGroupRequest) -> LeaveGroupResponse {
    let members: Vec<String> = if version >= 3 {
        r.members.iter().map(|m| m.member_id.to_string()).collect()
    } else {
        vec![r.member_id.to_string()]
    };
    match kcoord::leave(&ctx.core, &r.group_id, &members).await {
        Err(e) => LeaveGroupResponse::default().with_error_code(e.code()),
        Ok(results) if version >= 3 => LeaveGroupResponse::default().with_members(
            r.members
                .iter()
                .zip(results)
                .map(|(m, res)| {
                    MemberResponse::default()
                        .with_member_id(m.member_id.clone())
                        .with_group_instance_id(m.group_instance_id.clone())
                        .with_error_code(code(res))
                })
                .collect(),
        ),
        Ok(results) => LeaveGroupResponse::default()
            .with_error_code(results.into_iter().next().map_or(0, code)),
    }
}

async fn offset_commit(
    ctx: &Context,
    r: OffsetCommitRequest,
) -> Result<OffsetCommitResponse, HandlerError> {
    let mut offsets = Vec::new();
    for t in &r.topics {
        for p in &t.partitions {
            offsets.push(OffsetToCommit {
                topic: t.name.to_string(),
                partition: p.partition_index,
                offset: p.committed_offset,
                metadata: p
                    .committed_metadata
                    .as_deref()
                    .unwrap_or_default()
                    .to_string(),
            });
        }
    }
    if offsets.len() > kcoord::COMMIT_OFFSETS_MAX {
        return Err(HandlerError::Invalid(format!(
            "OffsetCommit of {} offsets (at most {})",
            offsets.len(),
            kcoord::COMMIT_OFFSETS_MAX
        )));
    }
    let results = kcoord::commit(
        &ctx.core,
        &r.group_id,
        &r.member_id,
        r.generation_id_or_member_epoch,
        &offsets,
    )
    .await;
    let mut codes = match results {
        Ok(v) => v.into_iter().map(code).collect::<Vec<_>>(),
        Err(e) => vec![e.code(); offsets.len()],
    }
    .into_iter();
    Ok(OffsetCommitResponse::default().with_topics(
        r.topics
            .iter()
            .map(|t| {
                OffsetCommitResponseTopic::default()
                    .with_name(t.name.clone())
                    .with_partitions(
                        t.partitions
                            .iter()
                            .map(|p| {
                                OffsetCommitResponsePartition::default()
                                    .with_partition_index(p.partition_index)
                                    .with_error_code(codes.next().unwrap_or(0))
                            })
                            .collect(),
                    )
            })
            .collect(),
    ))
}

/// One group's committed offsets: per topic, (partition, offset, metadata,
/// error), or the group's error.
type Fetched = Result<BTreeMap<String, Vec<(i32, i64, String)>>, i16>;

async fn fetch_group(
    ctx: &Context,
    group: &str,
    topics: Option<Vec<(String, Vec<i32>)>>,
) -> Fetched {
    let wanted: Option<Vec<(String, i32)>> = topics.map(|ts| {
        ts.into_iter()
            .flat_map(|(t, ps)| ps.into_iter().map(move |p| (t.clone(), p)))
            .collect()
    });
    let offsets = kcoord::fetch_offsets(&ctx.core, group, wanted.as_deref())
        .await
        .map_err(GroupError::code)?;
    let mut out: BTreeMap<String, Vec<(i32, i64, String)>> = BTreeMap::new();
    for o in offsets {
        out.entry(o.topic)
            .or_default()
            .push((o.partition, o.offset, o.metadata));
    }
    Ok(out)
}

async fn offset_fetch(
    ctx: &Context,
    version: i16,
    r: OffsetFetchRequest,
) -> Result<OffsetFetchResponse, HandlerError> {
    if version >= 8 {
        if r.groups.len() > KEYS_MAX {
            return Err(HandlerError::Invalid(format!(
                "OffsetFetch of {} groups (at most {KEYS_MAX})",
                r.groups.len()
            )));
        }
        let mut groups = Vec::with_capacity(r.groups.len());
        for g in &r.groups {
            let topics = g.topics.as_ref().map(|ts| {
                ts.iter()
                    .map(|t| (t.name.to_string(), t.partition_indexes.clone()))
                    .collect()
            });
            let fetched = fetch_group(ctx, &g.group_id, topics).await;
            let mut out = OffsetFetchResponseGroup::default().with_group_id(g.group_id.clone());
            match fetched {
                Err(code) => out = out.with_error_code(code),
                Ok(by_topic) => {
                    out = out.with_topics(
                        by_topic
                            .into_iter()
                            .map(|(t, ps)| {
                                OffsetFetchResponseTopics::default()
                                    .with_name(TopicName(s(&t)))
                                    .with_partitions(
                                        ps.into_iter()
                                            .map(|(p, o, m)| {
                                                OffsetFetchResponsePartitions::default()
                                                    .with_partition_index(p)
                                                    .with_committed_offset(o)
                                                    .with_committed_leader_epoch(-1)
                                                    .with_metadata(Some(s(&m)))
                                            })
                                            .collect(),
                                    )
                            })
                            .collect(),
                    )
                }
            }
            groups.push(out);
        }
        return Ok(OffsetFetchResponse::default().with_groups(groups));
    }
    let topics = r.topics.as_ref().map(|ts| {
        ts.iter()
            .map(|t| (t.name.to_string(), t.partition_indexes.clone()))
            .collect()
    });
    Ok(match fetch_group(ctx, &r.group_id, topics).await {
        Err(code) => OffsetFetchResponse::default().with_error_code(code),
        Ok(by_topic) => OffsetFetchResponse::default().with_topics(
            by_topic
                .into_iter()
                .map(|(t, ps)| {
                    OffsetFetchResponseTopic::default()
                        .with_name(TopicName(s(&t)))
                        .with_partitions(
                            ps.into_iter()
                                .map(|(p, o, m)| {
                                    OffsetFetchResponsePartition::default()
                                        .with_partition_index(p)
                                        .with_committed_offset(o)
                                        .with_committed_leader_epoch(-1)
                                        .with_metadata(Some(s(&m)))
                                })
                                .collect(),
                        )
                })
                .collect(),
        ),
    })
}

async fn describe_groups(
    ctx: &Context,
    r: DescribeGroupsRequest,
) -> Result<DescribeGroupsResponse, HandlerError> {
    if r.groups.len() > KEYS_MAX {
        return Err(HandlerError::Invalid(format!(
            "DescribeGroups of {} groups (at most {KEYS_MAX})",
            r.groups.len()
        )));
    }
    let mut out = Vec::with_capacity(r.groups.len());
    for g in &r.groups {
        let d = DescribedGroup::default()
            .with_group_id(g.clone())
            .with_authorized_operations(i32::MIN);
        out.push(match kcoord::describe(&ctx.core, g).await {
            Err(e) => d.with_error_code(e.code()).with_group_state(s("Dead")),
            Ok(desc) => d
                .with_group_state(s(desc.state))
                .with_protocol_type(s(&desc.protocol_type))
                .with_protocol_data(s(&desc.protocol))
                .with_members(
                    desc.members
                        .into_iter()
                        .map(|m| {
                            DescribedGroupMember::default()
                                .with_member_id(s(&m.member_id))
                                .with_group_instance_id(
                                    m.group_instance_id.map(StrBytes::from_string),
                                )
                                .with_client_id(s(&m.client_id))
                                .with_client_host(s(&m.client_host))
                                .with_member_metadata(Bytes::from(m.metadata))
                                .with_member_assignment(Bytes::from(m.assignment))
                        })
                        .collect(),
                ),
        });
    }
    Ok(DescribeGroupsResponse::default().with_groups(out))
}

async fn list_groups(ctx: &Context, r: ListGroupsRequest) -> ListGroupsResponse {
    let groups = kcoord::list(&ctx.core)
        .await
        .into_iter()
        .filter(|g| {
            r.states_filter.is_empty()
                || r.states_filter
                    .iter()
                    .any(|f| f.eq_ignore_ascii_case(g.state))
        })
        .map(|g| {
            ListedGroup::default()
                .with_group_id(GroupId(s(&g.group)))
                .with_protocol_type(s(&g.protocol_type))
                .with_group_state(s(g.state))
        })
        .collect();
    ListGroupsResponse::default().with_groups(groups)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::protocol::{Message, VersionRange};

    #[test]
    fn advertised_versions_are_within_the_codecs_of_both_directions() {
        for &(api, min, max) in VERSIONS {
            let (req, resp): (VersionRange, VersionRange) = match api {
                ApiKey::FindCoordinator => (
                    FindCoordinatorRequest::VERSIONS,
                    FindCoordinatorResponse::VERSIONS,
                ),
                ApiKey::JoinGroup => (JoinGroupRequest::VERSIONS, JoinGroupResponse::VERSIONS),
                ApiKey::SyncGroup => (SyncGroupRequest::VERSIONS, SyncGroupResponse::VERSIONS),
                ApiKey::Heartbeat => (HeartbeatRequest::VERSIONS, HeartbeatResponse::VERSIONS),
                ApiKey::LeaveGroup => (LeaveGroupRequest::VERSIONS, LeaveGroupResponse::VERSIONS),
                ApiKey::OffsetCommit => (
                    OffsetCommitRequest::VERSIONS,
                    OffsetCommitResponse::VERSIONS,
                ),
                ApiKey::OffsetFetch => {
                    (OffsetFetchRequest::VERSIONS, OffsetFetchResponse::VERSIONS)
                }
                ApiKey::DescribeGroups => (
                    DescribeGroupsRequest::VERSIONS,
                    DescribeGroupsResponse::VERSIONS,
                ),
                ApiKey::ListGroups => (ListGroupsRequest::VERSIONS, ListGroupsResponse::VERSIONS),
                other => panic!("{other:?} is not a group API"),
            };
            assert!(min <= max, "{api:?}");
            for r in [req, resp] {
                assert!(r.min <= min && max <= r.max, "{api:?} {min}-{max} vs {r:?}");
            }
        }
    }

    #[test]
    fn group_error_codes_are_kafkas() {
        use kafka_protocol::ResponseError as K;
        for (ours, theirs) in [
            (GroupError::NotCoordinator, K::NotCoordinator),
            (
                GroupError::CoordinatorNotAvailable,
                K::CoordinatorNotAvailable,
            ),
            (GroupError::IllegalGeneration, K::IllegalGeneration),
            (
                GroupError::InconsistentGroupProtocol,
                K::InconsistentGroupProtocol,
            ),
            (GroupError::InvalidGroupId, K::InvalidGroupId),
            (GroupError::UnknownMemberId, K::UnknownMemberId),
            (GroupError::InvalidSessionTimeout, K::InvalidSessionTimeout),
            (GroupError::RebalanceInProgress, K::RebalanceInProgress),
            (
                GroupError::InvalidCommitOffsetSize,
                K::InvalidCommitOffsetSize,
            ),
            (
                GroupError::OffsetMetadataTooLarge,
                K::OffsetMetadataTooLarge,
            ),
            (
                GroupError::UnknownTopicOrPartition,
                K::UnknownTopicOrPartition,
            ),
            (GroupError::InvalidRequest, K::InvalidRequest),
            (GroupError::MemberIdRequired, K::MemberIdRequired),
            (GroupError::GroupMaxSizeReached, K::GroupMaxSizeReached),
            (GroupError::UnknownServer, K::UnknownServerError),
        ] {
            assert_eq!(ours.code(), theirs.code(), "{ours:?}");
        }
    }
}
