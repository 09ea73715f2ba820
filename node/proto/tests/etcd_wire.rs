//! Pins the exact protobuf bytes of a few etcd messages, computed by hand
//! from the field numbers in etcd's `rpc.proto` and `kv.proto`: a renumbered
//! or retyped field breaks etcd clients and fails here.
//!
//! A protobuf field key is `(field_number << 3) | wire_type`, as a varint;
//! wire type 0 is a varint, 2 a length-delimited value.

use flotilla_proto::etcdserverpb::{
    Compare, DeleteRangeRequest, LeaseGrantRequest, LeaseKeepAliveResponse, Member,
    MemberListResponse, PutRequest, RangeRequest, RequestOp, ResponseHeader, StatusResponse,
    TxnRequest, WatchCreateRequest, WatchRequest, WatchResponse, compare, range_request,
    request_op, watch_request,
};
use flotilla_proto::mvccpb::{Event, KeyValue, event};
use prost::Message;

/// Encodes `m`, compares with `expected`, and decodes `expected` back to `m`.
fn assert_wire<M: Message + Default + PartialEq + std::fmt::Debug>(m: &M, expected: &[u8]) {
    assert_eq!(m.encode_to_vec(), expected, "encoding of {m:?}");
    assert_eq!(&M::decode(expected).unwrap(), m, "decoding");
}

#[test]
fn put_request() {
    let put = PutRequest {
        key: b"foo".to_vec(),
        value: b"bar".to_vec(),
        ..Default::default()
    };
    #[rustfmt::skip]
    assert_wire(&put, &[
        0x0a, 3, b'f', b'o', b'o', // 1 key
        0x12, 3, b'b', b'a', b'r', // 2 value
    ]);

    let put = PutRequest {
        key: b"k".to_vec(),
        value: vec![],
        lease: 0x7f,
        prev_kv: true,
        ignore_value: true,
        ignore_lease: true,
    };
    #[rustfmt::skip]
    assert_wire(&put, &[
        0x0a, 1, b'k', // 1 key
        0x18, 0x7f,    // 3 lease
        0x20, 1,       // 4 prev_kv
        0x28, 1,       // 5 ignore_value
        0x30, 1,       // 6 ignore_lease
    ]);
}

#[test]
fn range_request() {
    let range = RangeRequest {
        key: b"a".to_vec(),
        range_end: b"b".to_vec(),
        limit: 10,
        revision: 300,
        sort_order: range_request::SortOrder::Descend.into(),
        sort_target: range_request::SortTarget::Mod.into(),
        serializable: true,
        keys_only: true,
        count_only: true,
        min_mod_revision: 1,
        max_mod_revision: 2,
        min_create_revision: 3,
        max_create_revision: 4,
    };
    #[rustfmt::skip]
    assert_wire(&range, &[
        0x0a, 1, b'a',    // 1 key
        0x12, 1, b'b',    // 2 range_end
        0x18, 10,         // 3 limit
        0x20, 0xac, 0x02, // 4 revision = 300
        0x28, 2,          // 5 sort_order = DESCEND
        0x30, 3,          // 6 sort_target = MOD
        0x38, 1,          // 7 serializable
        0x40, 1,          // 8 keys_only
        0x48, 1,          // 9 count_only
        0x50, 1,          // 10 min_mod_revision
        0x58, 2,          // 11 max_mod_revision
        0x60, 3,          // 12 min_create_revision
        0x68, 4,          // 13 max_create_revision
    ]);

    // etcd's enum numbers.
    use range_request::{SortOrder, SortTarget};
    assert_eq!(
        [SortOrder::None, SortOrder::Ascend, SortOrder::Descend].map(|o| o as i32),
        [0, 1, 2]
    );
    assert_eq!(
        [
            SortTarget::Key,
            SortTarget::Version,
            SortTarget::Create,
            SortTarget::Mod,
            SortTarget::Value
        ]
        .map(|t| t as i32),
        [0, 1, 2, 3, 4]
    );
}

#[test]
fn compare() {
    let cmp = Compare {
        result: compare::CompareResult::NotEqual.into(),
        target: compare::CompareTarget::Value.into(),
        key: b"k".to_vec(),
        range_end: b"z".to_vec(),
        target_union: Some(compare::TargetUnion::Value(b"v".to_vec())),
    };
    #[rustfmt::skip]
    assert_wire(&cmp, &[
        0x08, 3,             // 1 result = NOT_EQUAL
        0x10, 3,             // 2 target = VALUE
        0x1a, 1, b'k',       // 3 key
        0x3a, 1, b'v',       // 7 target_union.value
        0x82, 0x04, 1, b'z', // 64 range_end: key 514 = 0x82 0x04
    ]);

    // PutIfAbsent's guard, create_revision == 0: a oneof case is on the wire
    // even when it holds the default value (etcd relies on that).
    let absent = Compare {
        result: compare::CompareResult::Equal.into(),
        target: compare::CompareTarget::Create.into(),
        key: b"k".to_vec(),
        range_end: vec![],
        target_union: Some(compare::TargetUnion::CreateRevision(0)),
    };
    #[rustfmt::skip]
    assert_wire(&absent, &[
        0x10, 1,       // 2 target = CREATE
        0x1a, 1, b'k', // 3 key
        0x28, 0,       // 5 target_union.create_revision = 0
    ]);

    for (case, key) in [
        (compare::TargetUnion::Version(1), 0x20),
        (compare::TargetUnion::CreateRevision(1), 0x28),
        (compare::TargetUnion::ModRevision(1), 0x30),
        (compare::TargetUnion::Lease(1), 0x40),
    ] {
        let cmp = Compare {
            target_union: Some(case),
            ..Default::default()
        };
        assert_wire(&cmp, &[key, 1]);
    }
    use compare::{CompareResult, CompareTarget};
    assert_eq!(
        [
            CompareResult::Equal,
            CompareResult::Greater,
            CompareResult::Less,
            CompareResult::NotEqual
        ]
        .map(|r| r as i32),
        [0, 1, 2, 3]
    );
    assert_eq!(
        [
            CompareTarget::Version,
            CompareTarget::Create,
            CompareTarget::Mod,
            CompareTarget::Value,
            CompareTarget::Lease
        ]
        .map(|t| t as i32),
        [0, 1, 2, 3, 4]
    );
}

#[test]
fn txn_request() {
    let txn = TxnRequest {
        compare: vec![Compare {
            key: b"k".to_vec(),
            target_union: Some(compare::TargetUnion::Version(2)),
            ..Default::default()
        }],
        success: vec![RequestOp {
            request: Some(request_op::Request::RequestPut(PutRequest {
                key: b"k".to_vec(),
                ..Default::default()
            })),
        }],
        failure: vec![RequestOp {
            request: Some(request_op::Request::RequestDeleteRange(
                DeleteRangeRequest {
                    key: b"k".to_vec(),
                    range_end: vec![],
                    prev_kv: true,
                },
            )),
        }],
    };
    #[rustfmt::skip]
    assert_wire(&txn, &[
        0x0a, 5, 0x1a, 1, b'k', 0x20, 2,             // 1 compare {3 key, 4 version}
        0x12, 5, 0x12, 3, 0x0a, 1, b'k',             // 2 success {2 request_put {1 key}}
        0x1a, 7, 0x1a, 5, 0x0a, 1, b'k', 0x18, 1,    // 3 failure {3 request_delete_range {1 key, 3 prev_kv}}
    ]);
}

#[test]
fn watch_messages() {
    let create = WatchRequest {
        request_union: Some(watch_request::RequestUnion::CreateRequest(
            WatchCreateRequest {
                key: b"a".to_vec(),
                range_end: b"b".to_vec(),
                start_revision: 5,
                progress_notify: true,
                filters: vec![1],
                prev_kv: true,
                watch_id: 9,
                fragment: true,
            },
        )),
    };
    #[rustfmt::skip]
    assert_wire(&create, &[
        0x0a, 19,      // 1 create_request
        0x0a, 1, b'a', // 1 key
        0x12, 1, b'b', // 2 range_end
        0x18, 5,       // 3 start_revision
        0x20, 1,       // 4 progress_notify
        0x2a, 1, 1,    // 5 filters (packed) = [NODELETE]
        0x30, 1,       // 6 prev_kv
        0x38, 9,       // 7 watch_id
        0x40, 1,       // 8 fragment
    ]);

    let response = WatchResponse {
        header: None,
        watch_id: 9,
        created: false,
        canceled: true,
        compact_revision: 3,
        cancel_reason: "c".into(),
        fragment: true,
        events: vec![Event {
            r#type: event::EventType::Delete.into(),
            kv: Some(KeyValue {
                key: b"a".to_vec(),
                create_revision: 1,
                mod_revision: 2,
                version: 3,
                value: b"v".to_vec(),
                lease: 4,
            }),
            prev_kv: None,
        }],
    };
    #[rustfmt::skip]
    assert_wire(&response, &[
        0x10, 9,             // 2 watch_id
        0x20, 1,             // 4 canceled
        0x28, 3,             // 5 compact_revision
        0x32, 1, b'c',       // 6 cancel_reason
        0x38, 1,             // 7 fragment
        0x5a, 18,            // 11 events
        0x08, 1,             //   Event 1 type = DELETE
        0x12, 14,            //   Event 2 kv
        0x0a, 1, b'a',       //     KeyValue 1 key
        0x10, 1,             //     2 create_revision
        0x18, 2,             //     3 mod_revision
        0x20, 3,             //     4 version
        0x2a, 1, b'v',       //     5 value
        0x30, 4,             //     6 lease
    ]);
}

#[test]
fn lease_messages() {
    #[rustfmt::skip]
    assert_wire(&LeaseGrantRequest { ttl: 5, id: 0x10 }, &[
        0x08, 5,    // 1 TTL
        0x10, 0x10, // 2 ID
    ]);
    // A negative int64 is a ten-byte varint (int64, not sint64, in etcd).
    let expired = LeaseKeepAliveResponse {
        header: None,
        id: 1,
        ttl: -1,
    };
    let mut expected = vec![0x10, 1, 0x18];
    expected.extend_from_slice(&[0xff; 9]);
    expected.push(0x01);
    assert_wire(&expired, &expected);
}

#[test]
fn member_list_and_status() {
    let header = ResponseHeader {
        cluster_id: 1,
        member_id: 2,
        revision: 3,
        raft_term: 4,
    };
    let list = MemberListResponse {
        header: Some(header),
        members: vec![Member {
            id: 5,
            name: "n".into(),
            peer_ur_ls: vec!["p".into()],
            client_ur_ls: vec!["c".into()],
            is_learner: true,
        }],
    };
    #[rustfmt::skip]
    assert_wire(&list, &[
        0x0a, 8, 0x08, 1, 0x10, 2, 0x18, 3, 0x20, 4, // 1 header {cluster_id, member_id, revision, raft_term}
        0x12, 13,      // 2 members
        0x08, 5,       //   1 ID
        0x12, 1, b'n', //   2 name
        0x1a, 1, b'p', //   3 peerURLs
        0x22, 1, b'c', //   4 clientURLs
        0x28, 1,       //   5 isLearner
    ]);

    let status = StatusResponse {
        header: None,
        version: "3".into(),
        db_size: 1,
        leader: 2,
        raft_index: 3,
        raft_term: 4,
        raft_applied_index: 5,
        errors: vec!["e".into()],
        db_size_in_use: 6,
        is_learner: true,
        storage_version: "s".into(),
        db_size_quota: 7,
        downgrade_info: None,
    };
    #[rustfmt::skip]
    assert_wire(&status, &[
        0x12, 1, b'3', // 2 version
        0x18, 1,       // 3 dbSize
        0x20, 2,       // 4 leader
        0x28, 3,       // 5 raftIndex
        0x30, 4,       // 6 raftTerm
        0x38, 5,       // 7 raftAppliedIndex
        0x42, 1, b'e', // 8 errors
        0x48, 6,       // 9 dbSizeInUse
        0x50, 1,       // 10 isLearner
        0x5a, 1, b's', // 11 storageVersion
        0x60, 7,       // 12 dbSizeQuota
    ]);
}
