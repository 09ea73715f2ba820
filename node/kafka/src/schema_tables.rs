//! The tables of [`super`]: one constant per structure, the messages last.

use super::{MAX, Message, Struct, Tagged, Ty, field, nullable};
use kafka_protocol::messages::ApiKey;

/// `ApiVersionsRequest`.
pub const API_VERSIONS_REQUEST: Struct = Struct {
    name: "ApiVersionsRequest",
    fields: &[
        field("client_software_name", 3, MAX, Ty::Str),
        field("client_software_version", 3, MAX, Ty::Str),
    ],
    tags: &[],
};

/// `MetadataRequest`.
pub const METADATA_REQUEST: Struct = Struct {
    name: "MetadataRequest",
    fields: &[
        nullable(
            "topics",
            0,
            MAX,
            Ty::Array(&Ty::Struct(&METADATA_REQUEST_TOPIC)),
        ),
        field("allow_auto_topic_creation", 4, MAX, Ty::Bool),
        field("include_cluster_authorized_operations", 8, 10, Ty::Bool),
        field("include_topic_authorized_operations", 8, MAX, Ty::Bool),
    ],
    tags: &[],
};

/// `MetadataRequestTopic`.
pub const METADATA_REQUEST_TOPIC: Struct = Struct {
    name: "MetadataRequestTopic",
    fields: &[
        field("topic_id", 10, MAX, Ty::Uuid),
        nullable("name", 0, MAX, Ty::Str),
    ],
    tags: &[],
};

/// `CreatableReplicaAssignment`.
pub const CREATABLE_REPLICA_ASSIGNMENT: Struct = Struct {
    name: "CreatableReplicaAssignment",
    fields: &[
        field("partition_index", 2, MAX, Ty::I32),
        field("broker_ids", 2, MAX, Ty::Array(&Ty::I32)),
    ],
    tags: &[],
};

/// `CreatableTopic`.
pub const CREATABLE_TOPIC: Struct = Struct {
    name: "CreatableTopic",
    fields: &[
        field("name", 2, MAX, Ty::Str),
        field("num_partitions", 2, MAX, Ty::I32),
        field("replication_factor", 2, MAX, Ty::I16),
        field(
            "assignments",
            2,
            MAX,
            Ty::Array(&Ty::Struct(&CREATABLE_REPLICA_ASSIGNMENT)),
        ),
        field(
            "configs",
            2,
            MAX,
            Ty::Array(&Ty::Struct(&CREATABLE_TOPIC_CONFIG)),
        ),
    ],
    tags: &[],
};

/// `CreatableTopicConfig`.
pub const CREATABLE_TOPIC_CONFIG: Struct = Struct {
    name: "CreatableTopicConfig",
    fields: &[
        field("name", 2, MAX, Ty::Str),
        nullable("value", 2, MAX, Ty::Str),
    ],
    tags: &[],
};

/// `CreateTopicsRequest`.
pub const CREATE_TOPICS_REQUEST: Struct = Struct {
    name: "CreateTopicsRequest",
    fields: &[
        field("topics", 2, MAX, Ty::Array(&Ty::Struct(&CREATABLE_TOPIC))),
        field("timeout_ms", 2, MAX, Ty::I32),
        field("validate_only", 2, MAX, Ty::Bool),
    ],
    tags: &[],
};

/// `DeleteTopicState`.
pub const DELETE_TOPIC_STATE: Struct = Struct {
    name: "DeleteTopicState",
    fields: &[
        nullable("name", 6, MAX, Ty::Str),
        field("topic_id", 6, MAX, Ty::Uuid),
    ],
    tags: &[],
};

/// `DeleteTopicsRequest`.
pub const DELETE_TOPICS_REQUEST: Struct = Struct {
    name: "DeleteTopicsRequest",
    fields: &[
        field(
            "topics",
            6,
            MAX,
            Ty::Array(&Ty::Struct(&DELETE_TOPIC_STATE)),
        ),
        field("topic_names", 1, 5, Ty::Array(&Ty::Str)),
        field("timeout_ms", 1, MAX, Ty::I32),
    ],
    tags: &[],
};

/// `PartitionProduceData`.
pub const PARTITION_PRODUCE_DATA: Struct = Struct {
    name: "PartitionProduceData",
    fields: &[
        field("index", 3, MAX, Ty::I32),
        nullable("records", 3, MAX, Ty::Bytes),
    ],
    tags: &[],
};

/// `ProduceRequest`.
pub const PRODUCE_REQUEST: Struct = Struct {
    name: "ProduceRequest",
    fields: &[
        nullable("transactional_id", 3, MAX, Ty::Str),
        field("acks", 3, MAX, Ty::I16),
        field("timeout_ms", 3, MAX, Ty::I32),
        field(
            "topic_data",
            3,
            MAX,
            Ty::Array(&Ty::Struct(&TOPIC_PRODUCE_DATA)),
        ),
    ],
    tags: &[],
};

/// `TopicProduceData`.
pub const TOPIC_PRODUCE_DATA: Struct = Struct {
    name: "TopicProduceData",
    fields: &[
        field("name", 3, 12, Ty::Str),
        field("topic_id", 13, MAX, Ty::Uuid),
        field(
            "partition_data",
            3,
            MAX,
            Ty::Array(&Ty::Struct(&PARTITION_PRODUCE_DATA)),
        ),
    ],
    tags: &[],
};

/// `InitProducerIdRequest`.
pub const INIT_PRODUCER_ID_REQUEST: Struct = Struct {
    name: "InitProducerIdRequest",
    fields: &[
        nullable("transactional_id", 0, MAX, Ty::Str),
        field("transaction_timeout_ms", 0, MAX, Ty::I32),
        field("producer_id", 3, MAX, Ty::I64),
        field("producer_epoch", 3, MAX, Ty::I16),
    ],
    tags: &[],
};

/// `FetchPartition`.
pub const FETCH_PARTITION: Struct = Struct {
    name: "FetchPartition",
    fields: &[
        field("partition", 4, MAX, Ty::I32),
        field("current_leader_epoch", 9, MAX, Ty::I32),
        field("fetch_offset", 4, MAX, Ty::I64),
        field("last_fetched_epoch", 12, MAX, Ty::I32),
        field("log_start_offset", 5, MAX, Ty::I64),
        field("partition_max_bytes", 4, MAX, Ty::I32),
    ],
    tags: &[
        Tagged {
            tag: 0,
            field: field("replica_directory_id", 17, MAX, Ty::Uuid),
        },
        Tagged {
            tag: 1,
            field: field("high_watermark", 18, MAX, Ty::I64),
        },
    ],
};

/// `FetchRequest`.
pub const FETCH_REQUEST: Struct = Struct {
    name: "FetchRequest",
    fields: &[
        field("replica_id", 4, 14, Ty::I32),
        field("max_wait_ms", 4, MAX, Ty::I32),
        field("min_bytes", 4, MAX, Ty::I32),
        field("max_bytes", 4, MAX, Ty::I32),
        field("isolation_level", 4, MAX, Ty::I8),
        field("session_id", 7, MAX, Ty::I32),
        field("session_epoch", 7, MAX, Ty::I32),
        field("topics", 4, MAX, Ty::Array(&Ty::Struct(&FETCH_TOPIC))),
        field(
            "forgotten_topics_data",
            7,
            MAX,
            Ty::Array(&Ty::Struct(&FORGOTTEN_TOPIC)),
        ),
        field("rack_id", 11, MAX, Ty::Str),
    ],
    tags: &[
        Tagged {
            tag: 0,
            field: nullable("cluster_id", 4, MAX, Ty::Str),
        },
        Tagged {
            tag: 1,
            field: field("replica_state", 15, MAX, Ty::Struct(&REPLICA_STATE)),
        },
    ],
};

/// `FetchTopic`.
pub const FETCH_TOPIC: Struct = Struct {
    name: "FetchTopic",
    fields: &[
        field("topic", 4, 12, Ty::Str),
        field("topic_id", 13, MAX, Ty::Uuid),
        field(
            "partitions",
            4,
            MAX,
            Ty::Array(&Ty::Struct(&FETCH_PARTITION)),
        ),
    ],
    tags: &[],
};

/// `ForgottenTopic`.
pub const FORGOTTEN_TOPIC: Struct = Struct {
    name: "ForgottenTopic",
    fields: &[
        field("topic", 7, 12, Ty::Str),
        field("topic_id", 13, MAX, Ty::Uuid),
        field("partitions", 7, MAX, Ty::Array(&Ty::I32)),
    ],
    tags: &[],
};

/// `ReplicaState`.
pub const REPLICA_STATE: Struct = Struct {
    name: "ReplicaState",
    fields: &[
        field("replica_id", 15, MAX, Ty::I32),
        field("replica_epoch", 15, MAX, Ty::I64),
    ],
    tags: &[],
};

/// `ListOffsetsPartition`.
pub const LIST_OFFSETS_PARTITION: Struct = Struct {
    name: "ListOffsetsPartition",
    fields: &[
        field("partition_index", 1, MAX, Ty::I32),
        field("current_leader_epoch", 4, MAX, Ty::I32),
        field("timestamp", 1, MAX, Ty::I64),
    ],
    tags: &[],
};

/// `ListOffsetsRequest`.
pub const LIST_OFFSETS_REQUEST: Struct = Struct {
    name: "ListOffsetsRequest",
    fields: &[
        field("replica_id", 1, MAX, Ty::I32),
        field("isolation_level", 2, MAX, Ty::I8),
        field(
            "topics",
            1,
            MAX,
            Ty::Array(&Ty::Struct(&LIST_OFFSETS_TOPIC)),
        ),
        field("timeout_ms", 10, MAX, Ty::I32),
    ],
    tags: &[],
};

/// `ListOffsetsTopic`.
pub const LIST_OFFSETS_TOPIC: Struct = Struct {
    name: "ListOffsetsTopic",
    fields: &[
        field("name", 1, MAX, Ty::Str),
        field(
            "partitions",
            1,
            MAX,
            Ty::Array(&Ty::Struct(&LIST_OFFSETS_PARTITION)),
        ),
    ],
    tags: &[],
};

/// `FindCoordinatorRequest`.
pub const FIND_COORDINATOR_REQUEST: Struct = Struct {
    name: "FindCoordinatorRequest",
    fields: &[
        field("key", 0, 3, Ty::Str),
        field("key_type", 1, MAX, Ty::I8),
        field("coordinator_keys", 4, MAX, Ty::Array(&Ty::Str)),
    ],
    tags: &[],
};

/// `JoinGroupRequest`.
pub const JOIN_GROUP_REQUEST: Struct = Struct {
    name: "JoinGroupRequest",
    fields: &[
        field("group_id", 0, MAX, Ty::Str),
        field("session_timeout_ms", 0, MAX, Ty::I32),
        field("rebalance_timeout_ms", 1, MAX, Ty::I32),
        field("member_id", 0, MAX, Ty::Str),
        nullable("group_instance_id", 5, MAX, Ty::Str),
        field("protocol_type", 0, MAX, Ty::Str),
        field(
            "protocols",
            0,
            MAX,
            Ty::Array(&Ty::Struct(&JOIN_GROUP_REQUEST_PROTOCOL)),
        ),
        nullable("reason", 8, MAX, Ty::Str),
    ],
    tags: &[],
};

/// `JoinGroupRequestProtocol`.
pub const JOIN_GROUP_REQUEST_PROTOCOL: Struct = Struct {
    name: "JoinGroupRequestProtocol",
    fields: &[
        field("name", 0, MAX, Ty::Str),
        field("metadata", 0, MAX, Ty::Bytes),
    ],
    tags: &[],
};

/// `SyncGroupRequest`.
pub const SYNC_GROUP_REQUEST: Struct = Struct {
    name: "SyncGroupRequest",
    fields: &[
        field("group_id", 0, MAX, Ty::Str),
        field("generation_id", 0, MAX, Ty::I32),
        field("member_id", 0, MAX, Ty::Str),
        nullable("group_instance_id", 3, MAX, Ty::Str),
        nullable("protocol_type", 5, MAX, Ty::Str),
        nullable("protocol_name", 5, MAX, Ty::Str),
        field(
            "assignments",
            0,
            MAX,
            Ty::Array(&Ty::Struct(&SYNC_GROUP_REQUEST_ASSIGNMENT)),
        ),
    ],
    tags: &[],
};

/// `SyncGroupRequestAssignment`.
pub const SYNC_GROUP_REQUEST_ASSIGNMENT: Struct = Struct {
    name: "SyncGroupRequestAssignment",
    fields: &[
        field("member_id", 0, MAX, Ty::Str),
        field("assignment", 0, MAX, Ty::Bytes),
    ],
    tags: &[],
};

/// `HeartbeatRequest`.
pub const HEARTBEAT_REQUEST: Struct = Struct {
    name: "HeartbeatRequest",
    fields: &[
        field("group_id", 0, MAX, Ty::Str),
        field("generation_id", 0, MAX, Ty::I32),
        field("member_id", 0, MAX, Ty::Str),
        nullable("group_instance_id", 3, MAX, Ty::Str),
    ],
    tags: &[],
};

/// `LeaveGroupRequest`.
pub const LEAVE_GROUP_REQUEST: Struct = Struct {
    name: "LeaveGroupRequest",
    fields: &[
        field("group_id", 0, MAX, Ty::Str),
        field("member_id", 0, 2, Ty::Str),
        field("members", 3, MAX, Ty::Array(&Ty::Struct(&MEMBER_IDENTITY))),
    ],
    tags: &[],
};

/// `MemberIdentity`.
pub const MEMBER_IDENTITY: Struct = Struct {
    name: "MemberIdentity",
    fields: &[
        field("member_id", 3, MAX, Ty::Str),
        nullable("group_instance_id", 3, MAX, Ty::Str),
        nullable("reason", 5, MAX, Ty::Str),
    ],
    tags: &[],
};

/// `OffsetCommitRequest`.
pub const OFFSET_COMMIT_REQUEST: Struct = Struct {
    name: "OffsetCommitRequest",
    fields: &[
        field("group_id", 2, MAX, Ty::Str),
        field("generation_id_or_member_epoch", 2, MAX, Ty::I32),
        field("member_id", 2, MAX, Ty::Str),
        nullable("group_instance_id", 7, MAX, Ty::Str),
        field("retention_time_ms", 2, 4, Ty::I64),
        field(
            "topics",
            2,
            MAX,
            Ty::Array(&Ty::Struct(&OFFSET_COMMIT_REQUEST_TOPIC)),
        ),
    ],
    tags: &[],
};

/// `OffsetCommitRequestPartition`.
pub const OFFSET_COMMIT_REQUEST_PARTITION: Struct = Struct {
    name: "OffsetCommitRequestPartition",
    fields: &[
        field("partition_index", 2, MAX, Ty::I32),
        field("committed_offset", 2, MAX, Ty::I64),
        field("committed_leader_epoch", 6, MAX, Ty::I32),
        nullable("committed_metadata", 2, MAX, Ty::Str),
    ],
    tags: &[],
};

/// `OffsetCommitRequestTopic`.
pub const OFFSET_COMMIT_REQUEST_TOPIC: Struct = Struct {
    name: "OffsetCommitRequestTopic",
    fields: &[
        field("name", 2, MAX, Ty::Str),
        field(
            "partitions",
            2,
            MAX,
            Ty::Array(&Ty::Struct(&OFFSET_COMMIT_REQUEST_PARTITION)),
        ),
    ],
    tags: &[],
};

/// `OffsetFetchRequest`.
pub const OFFSET_FETCH_REQUEST: Struct = Struct {
    name: "OffsetFetchRequest",
    fields: &[
        field("group_id", 1, 7, Ty::Str),
        nullable(
            "topics",
            1,
            7,
            Ty::Array(&Ty::Struct(&OFFSET_FETCH_REQUEST_TOPIC)),
        ),
        field(
            "groups",
            8,
            MAX,
            Ty::Array(&Ty::Struct(&OFFSET_FETCH_REQUEST_GROUP)),
        ),
        field("require_stable", 7, MAX, Ty::Bool),
    ],
    tags: &[],
};

/// `OffsetFetchRequestGroup`.
pub const OFFSET_FETCH_REQUEST_GROUP: Struct = Struct {
    name: "OffsetFetchRequestGroup",
    fields: &[
        field("group_id", 8, MAX, Ty::Str),
        nullable("member_id", 9, MAX, Ty::Str),
        field("member_epoch", 9, MAX, Ty::I32),
        nullable(
            "topics",
            8,
            MAX,
            Ty::Array(&Ty::Struct(&OFFSET_FETCH_REQUEST_TOPICS)),
        ),
    ],
    tags: &[],
};

/// `OffsetFetchRequestTopic`.
pub const OFFSET_FETCH_REQUEST_TOPIC: Struct = Struct {
    name: "OffsetFetchRequestTopic",
    fields: &[
        field("name", 1, 7, Ty::Str),
        field("partition_indexes", 1, 7, Ty::Array(&Ty::I32)),
    ],
    tags: &[],
};

/// `OffsetFetchRequestTopics`.
pub const OFFSET_FETCH_REQUEST_TOPICS: Struct = Struct {
    name: "OffsetFetchRequestTopics",
    fields: &[
        field("name", 8, MAX, Ty::Str),
        field("partition_indexes", 8, MAX, Ty::Array(&Ty::I32)),
    ],
    tags: &[],
};

/// `DescribeGroupsRequest`.
pub const DESCRIBE_GROUPS_REQUEST: Struct = Struct {
    name: "DescribeGroupsRequest",
    fields: &[
        field("groups", 0, MAX, Ty::Array(&Ty::Str)),
        field("include_authorized_operations", 3, MAX, Ty::Bool),
    ],
    tags: &[],
};

/// `ListGroupsRequest`.
pub const LIST_GROUPS_REQUEST: Struct = Struct {
    name: "ListGroupsRequest",
    fields: &[
        field("states_filter", 4, MAX, Ty::Array(&Ty::Str)),
        field("types_filter", 5, MAX, Ty::Array(&Ty::Str)),
    ],
    tags: &[],
};

/// The request bodies, by API.
pub const MESSAGES: &[Message] = &[
    Message {
        api: ApiKey::ApiVersions,
        versions: (0, 4),
        flexible_from: 3,
        body: &API_VERSIONS_REQUEST,
    },
    Message {
        api: ApiKey::Metadata,
        versions: (0, 13),
        flexible_from: 9,
        body: &METADATA_REQUEST,
    },
    Message {
        api: ApiKey::CreateTopics,
        versions: (2, 7),
        flexible_from: 5,
        body: &CREATE_TOPICS_REQUEST,
    },
    Message {
        api: ApiKey::DeleteTopics,
        versions: (1, 6),
        flexible_from: 4,
        body: &DELETE_TOPICS_REQUEST,
    },
    Message {
        api: ApiKey::Produce,
        versions: (3, 13),
        flexible_from: 9,
        body: &PRODUCE_REQUEST,
    },
    Message {
        api: ApiKey::InitProducerId,
        versions: (0, 5),
        flexible_from: 2,
        body: &INIT_PRODUCER_ID_REQUEST,
    },
    Message {
        api: ApiKey::Fetch,
        versions: (4, 18),
        flexible_from: 12,
        body: &FETCH_REQUEST,
    },
    Message {
        api: ApiKey::ListOffsets,
        versions: (1, 10),
        flexible_from: 6,
        body: &LIST_OFFSETS_REQUEST,
    },
    Message {
        api: ApiKey::FindCoordinator,
        versions: (0, 6),
        flexible_from: 3,
        body: &FIND_COORDINATOR_REQUEST,
    },
    Message {
        api: ApiKey::JoinGroup,
        versions: (0, 9),
        flexible_from: 6,
        body: &JOIN_GROUP_REQUEST,
    },
    Message {
        api: ApiKey::SyncGroup,
        versions: (0, 5),
        flexible_from: 4,
        body: &SYNC_GROUP_REQUEST,
    },
    Message {
        api: ApiKey::Heartbeat,
        versions: (0, 4),
        flexible_from: 4,
        body: &HEARTBEAT_REQUEST,
    },
    Message {
        api: ApiKey::LeaveGroup,
        versions: (0, 5),
        flexible_from: 4,
        body: &LEAVE_GROUP_REQUEST,
    },
    Message {
        api: ApiKey::OffsetCommit,
        versions: (2, 9),
        flexible_from: 8,
        body: &OFFSET_COMMIT_REQUEST,
    },
    Message {
        api: ApiKey::OffsetFetch,
        versions: (1, 9),
        flexible_from: 6,
        body: &OFFSET_FETCH_REQUEST,
    },
    Message {
        api: ApiKey::DescribeGroups,
        versions: (0, 6),
        flexible_from: 5,
        body: &DESCRIBE_GROUPS_REQUEST,
    },
    Message {
        api: ApiKey::ListGroups,
        versions: (0, 5),
        flexible_from: 3,
        body: &LIST_GROUPS_REQUEST,
    },
];
