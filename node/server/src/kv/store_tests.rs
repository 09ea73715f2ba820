//! Tests of [`KvStore`] driven through encoded log entries, asserting on
//! what it returns (responses, events, revisions), as the node sees it.

use super::*;
use flotilla_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use flotilla_proto::etcdserverpb::range_request::{SortOrder, SortTarget};
use flotilla_proto::etcdserverpb::request_op::Request;
use flotilla_proto::etcdserverpb::response_op::Response;
use flotilla_proto::etcdserverpb::{
    CompactionRequest, Compare, DeleteRangeRequest, LeaseGrantRequest, LeaseRevokeRequest,
    PutRequest, RangeRequest, RequestOp, TxnRequest, TxnResponse,
};
use flotilla_proto::mvccpb::KeyValue;
use flotilla_proto::mvccpb::event::EventType;

pub(crate) struct Harness {
    pub s: KvStore,
    pub index: u64,
    /// Whether its commands compact in batches, as a cluster whose members
    /// all understand that proposes them.
    pub batched: bool,
}

impl Harness {
    pub fn new() -> Self {
        Self::with(KvConfig::default())
    }

    pub fn with(config: KvConfig) -> Self {
        Harness {
            s: KvStore::new(config),
            index: 0,
            batched: true,
        }
    }

    pub fn cmd(&mut self, cmd: KvCommand) -> KvOutput {
        self.index += 1;
        let cmd = cmd.with_batched_compaction(self.batched);
        self.s.apply_entry(self.index, cmd.encode_to_bytes())
    }

    pub fn op(&mut self, op: KvOp) -> KvOutput {
        self.cmd(KvCommand::new(op))
    }

    pub fn put(&mut self, k: &str, v: &str) -> KvOutput {
        self.op(KvOp::Put(put_req(k, v)))
    }

    pub fn del(&mut self, k: &str, end: &str) -> KvOutput {
        self.op(KvOp::DeleteRange(DeleteRangeRequest {
            key: k.into(),
            range_end: end.into(),
            prev_kv: true,
        }))
    }

    pub fn get_at(&self, k: &str, rev: i64) -> Result<Option<KeyValue>, KvError> {
        let r = self.s.range(&RangeRequest {
            key: k.into(),
            revision: rev,
            ..Default::default()
        })?;
        Ok(r.kvs.into_iter().next())
    }

    pub fn get(&self, k: &str) -> Option<KeyValue> {
        self.get_at(k, 0).unwrap()
    }

    fn txn(&mut self, t: TxnRequest) -> Result<TxnResponse, KvError> {
        match self.op(KvOp::Txn(t)).result? {
            KvResponse::Txn(t) => Ok(t),
            other => panic!("not a txn response: {other:?}"),
        }
    }
}

pub(crate) fn put_req(k: &str, v: &str) -> PutRequest {
    PutRequest {
        key: k.into(),
        value: v.into(),
        ..Default::default()
    }
}

fn put_op(k: &str, v: &str) -> RequestOp {
    RequestOp {
        request: Some(Request::RequestPut(put_req(k, v))),
    }
}

fn cmp(k: &str, result: CompareResult, target: CompareTarget, u: TargetUnion) -> Compare {
    Compare {
        result: result as i32,
        target: target as i32,
        key: k.into(),
        target_union: Some(u),
        range_end: Vec::new(),
    }
}

#[test]
fn revisions_and_versions_across_put_delete_reput() {
    let mut h = Harness::new();
    assert_eq!(h.s.revision(), 1);
    h.put("a", "1");
    h.put("a", "2");
    let kv = h.get("a").unwrap();
    assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (2, 3, 2));
    let out = h.del("a", "");
    assert_eq!(out.revision, 4);
    assert!(h.get("a").is_none());
    h.put("a", "3");
    let kv = h.get("a").unwrap();
    assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (5, 5, 1));
    // Deleting nothing does not make a revision.
    let out = h.del("zz", "");
    assert_eq!(out.revision, 5);
    let KvResponse::DeleteRange(d) = out.result.unwrap() else {
        panic!()
    };
    assert_eq!(d.deleted, 0);
}

#[test]
fn range_at_past_revisions() {
    let mut h = Harness::new();
    h.put("a", "1"); // 2
    h.put("a", "2"); // 3
    h.del("a", ""); // 4
    assert_eq!(h.get_at("a", 2).unwrap().unwrap().value, b"1");
    assert_eq!(h.get_at("a", 3).unwrap().unwrap().value, b"2");
    assert_eq!(h.get_at("a", 4).unwrap(), None);
    assert_eq!(h.get_at("a", 1).unwrap(), None);
    assert_eq!(h.get_at("a", 5), Err(KvError::FutureRevision));
}

#[test]
fn compaction_errors_and_kept_versions() {
    let mut h = Harness::new();
    h.put("a", "1"); // 2
    h.put("b", "1"); // 3
    h.put("a", "2"); // 4
    h.del("b", ""); // 5
    let out = h.op(KvOp::Compaction(CompactionRequest {
        revision: 4,
        physical: false,
    }));
    assert!(out.result.is_ok());
    assert_eq!(
        h.get_at("a", 3),
        Err(KvError::Compacted {
            compact_revision: 4
        })
    );
    assert_eq!(h.get_at("a", 4).unwrap().unwrap().value, b"2");
    assert_eq!(h.get_at("b", 4).unwrap().unwrap().value, b"1");
    let e = h
        .op(KvOp::Compaction(CompactionRequest {
            revision: 4,
            physical: false,
        }))
        .result;
    assert_eq!(
        e,
        Err(KvError::Compacted {
            compact_revision: 4
        })
    );
    assert_eq!(
        e.unwrap_err().to_string(),
        "etcdserver: mvcc: required revision has been compacted"
    );
    let e = h
        .op(KvOp::Compaction(CompactionRequest {
            revision: 9,
            physical: false,
        }))
        .result;
    assert_eq!(
        e.unwrap_err().to_string(),
        "etcdserver: mvcc: required revision is a future revision"
    );
    // Compacting past b's tombstone drops b entirely.
    h.op(KvOp::Compaction(CompactionRequest {
        revision: 5,
        physical: false,
    }))
    .result
    .unwrap();
    assert_eq!(h.s.mvcc().key_count(), 1);
}

#[test]
fn auto_compaction_bounds_history() {
    let mut h = Harness::with(KvConfig {
        retain_revisions: 10,
        ..KvConfig::default()
    });
    for i in 0..100 {
        h.put("k", &i.to_string());
    }
    assert_eq!(h.s.revision(), 101);
    assert_eq!(h.s.compact_revision(), 91);
    assert!(h.get_at("k", 90).is_err());
    assert_eq!(h.get_at("k", 91).unwrap().unwrap().value, b"89");
    assert_eq!(h.s.events(b"k", b"", 91, 1000).unwrap().len(), 11);
}

fn range(h: &Harness, r: RangeRequest) -> flotilla_proto::etcdserverpb::RangeResponse {
    h.s.range(&r).unwrap()
}

fn keys(r: &flotilla_proto::etcdserverpb::RangeResponse) -> Vec<String> {
    r.kvs
        .iter()
        .map(|kv| String::from_utf8(kv.key.clone()).unwrap())
        .collect()
}

#[test]
fn range_limit_sort_prefix_count_keys_only() {
    let mut h = Harness::new();
    for (k, v) in [
        ("a", "3"),
        ("b/1", "1"),
        ("b/2", "2"),
        ("b/3", "0"),
        ("c", "9"),
    ] {
        h.put(k, v);
    }
    h.put("b/1", "1b");
    let prefix = RangeRequest {
        key: "b/".into(),
        range_end: "b0".into(),
        ..Default::default()
    };
    let r = range(&h, prefix.clone());
    assert_eq!(keys(&r), ["b/1", "b/2", "b/3"]);
    assert_eq!((r.count, r.more), (3, false));
    let r = range(
        &h,
        RangeRequest {
            limit: 2,
            ..prefix.clone()
        },
    );
    assert_eq!(keys(&r), ["b/1", "b/2"]);
    assert_eq!((r.count, r.more), (3, true));
    let r = range(
        &h,
        RangeRequest {
            sort_target: SortTarget::Value as i32,
            ..prefix.clone()
        },
    );
    assert_eq!(keys(&r), ["b/3", "b/1", "b/2"]);
    let r = range(
        &h,
        RangeRequest {
            sort_order: SortOrder::Descend as i32,
            limit: 1,
            ..prefix.clone()
        },
    );
    assert_eq!(keys(&r), ["b/3"]);
    let r = range(
        &h,
        RangeRequest {
            sort_target: SortTarget::Version as i32,
            sort_order: SortOrder::Descend as i32,
            ..prefix.clone()
        },
    );
    assert_eq!(keys(&r)[0], "b/1");
    let r = range(
        &h,
        RangeRequest {
            sort_target: SortTarget::Mod as i32,
            ..prefix.clone()
        },
    );
    assert_eq!(keys(&r), ["b/2", "b/3", "b/1"]);
    let r = range(
        &h,
        RangeRequest {
            sort_target: SortTarget::Create as i32,
            ..prefix.clone()
        },
    );
    assert_eq!(keys(&r), ["b/1", "b/2", "b/3"]);
    let r = range(
        &h,
        RangeRequest {
            count_only: true,
            ..prefix.clone()
        },
    );
    assert!(r.kvs.is_empty());
    assert_eq!(r.count, 3);
    let r = range(
        &h,
        RangeRequest {
            keys_only: true,
            ..prefix.clone()
        },
    );
    assert!(r.kvs.iter().all(|kv| kv.value.is_empty() && kv.version > 0));
    // "\0" as range_end: every key from key on.
    let r = range(
        &h,
        RangeRequest {
            key: "b/2".into(),
            range_end: vec![0],
            ..Default::default()
        },
    );
    assert_eq!(keys(&r), ["b/2", "b/3", "c"]);
    let r = range(
        &h,
        RangeRequest {
            key: vec![0],
            range_end: vec![0],
            ..Default::default()
        },
    );
    assert_eq!(r.count, 5);
    // Revision filters apply before the limit; count does not see them.
    let r = range(
        &h,
        RangeRequest {
            min_mod_revision: 5,
            ..prefix.clone()
        },
    );
    assert_eq!(keys(&r), ["b/1", "b/3"]);
    assert_eq!(r.count, 3);
    let r = range(
        &h,
        RangeRequest {
            max_create_revision: 3,
            ..prefix.clone()
        },
    );
    assert_eq!(keys(&r), ["b/1"]);
    let r = range(
        &h,
        RangeRequest {
            min_create_revision: 4,
            max_mod_revision: 4,
            ..prefix
        },
    );
    assert_eq!(keys(&r), ["b/2"]);
    assert_eq!(h.s.range(&RangeRequest::default()), Err(KvError::EmptyKey));
}

#[test]
fn put_prev_kv_ignore_value_and_lease_rules() {
    let mut h = Harness::new();
    let e = h
        .op(KvOp::Put(PutRequest {
            lease: 7,
            ..put_req("a", "1")
        }))
        .result;
    assert_eq!(e, Err(KvError::LeaseNotFound));
    let e = h
        .op(KvOp::Put(PutRequest {
            ignore_value: true,
            ..put_req("a", "")
        }))
        .result;
    assert_eq!(e, Err(KvError::KeyNotFound));
    let e = h
        .op(KvOp::Put(PutRequest {
            ignore_value: true,
            ..put_req("a", "x")
        }))
        .result;
    assert_eq!(e, Err(KvError::ValueProvided));
    let e = h
        .op(KvOp::Put(PutRequest {
            ignore_lease: true,
            lease: 3,
            ..put_req("a", "x")
        }))
        .result;
    assert_eq!(e, Err(KvError::LeaseProvided));
    assert_eq!(h.s.revision(), 1, "rejected puts make no revision");
    h.op(KvOp::LeaseGrant(LeaseGrantRequest { ttl: 10, id: 7 }))
        .result
        .unwrap();
    h.op(KvOp::Put(PutRequest {
        lease: 7,
        ..put_req("a", "1")
    }))
    .result
    .unwrap();
    let out = h.op(KvOp::Put(PutRequest {
        ignore_value: true,
        ignore_lease: true,
        prev_kv: true,
        ..put_req("a", "")
    }));
    let KvResponse::Put(p) = out.result.unwrap() else {
        panic!()
    };
    assert_eq!(p.prev_kv.unwrap().value, b"1");
    let kv = h.get("a").unwrap();
    assert_eq!(
        (kv.value.as_slice(), kv.lease, kv.version),
        (&b"1"[..], 7, 2)
    );
    assert_eq!(p.header.unwrap().revision, 3);
}

#[test]
fn bounds_on_keys_values_and_txn_ops() {
    let cfg = KvConfig {
        key_bytes_max: 4,
        value_bytes_max: 8,
        txn_ops_max: 2,
        ..KvConfig::default()
    };
    let mut h = Harness::with(cfg);
    assert_eq!(
        h.put("abcde", "v").result,
        Err(KvError::KeyTooLarge { len: 5, max: 4 })
    );
    assert_eq!(
        h.put("a", "123456789").result,
        Err(KvError::ValueTooLarge { len: 9, max: 8 })
    );
    assert_eq!(h.put("", "v").result, Err(KvError::EmptyKey));
    let t = TxnRequest {
        success: vec![put_op("a", "1"), put_op("b", "1"), put_op("c", "1")],
        ..Default::default()
    };
    assert_eq!(h.txn(t), Err(KvError::TooManyOps));
    assert_eq!(
        KvError::TooManyOps.to_string(),
        "etcdserver: too many operations in txn request"
    );
    let out = h.s.apply_entry(99, &b"\xff\xff\xff"[..]);
    assert!(
        matches!(out.result, Err(KvError::BadRequest(_))),
        "{:?}",
        out.result
    );
    assert_eq!(h.s.revision(), 1);
}

#[test]
fn txn_compares_every_target_and_result() {
    let mut h = Harness::new();
    h.op(KvOp::LeaseGrant(LeaseGrantRequest { ttl: 10, id: 5 }))
        .result
        .unwrap();
    h.put("a", "m"); // rev 2, version 1
    h.put("a", "m"); // rev 3, version 2
    h.op(KvOp::Put(PutRequest {
        lease: 5,
        ..put_req("l", "x")
    })); // rev 4
    use CompareResult::*;
    use CompareTarget as T;
    let cases: Vec<(Compare, bool)> = vec![
        (
            cmp("a", Equal, T::Value, TargetUnion::Value("m".into())),
            true,
        ),
        (
            cmp("a", Greater, T::Value, TargetUnion::Value("a".into())),
            true,
        ),
        (
            cmp("a", Less, T::Value, TargetUnion::Value("z".into())),
            true,
        ),
        (
            cmp("a", NotEqual, T::Value, TargetUnion::Value("m".into())),
            false,
        ),
        (cmp("a", Equal, T::Version, TargetUnion::Version(2)), true),
        (
            cmp("a", Greater, T::Version, TargetUnion::Version(2)),
            false,
        ),
        (cmp("a", Less, T::Version, TargetUnion::Version(3)), true),
        (
            cmp("a", NotEqual, T::Version, TargetUnion::Version(2)),
            false,
        ),
        (
            cmp("a", Equal, T::Create, TargetUnion::CreateRevision(2)),
            true,
        ),
        (
            cmp("a", Greater, T::Create, TargetUnion::CreateRevision(1)),
            true,
        ),
        (cmp("a", Equal, T::Mod, TargetUnion::ModRevision(3)), true),
        (cmp("a", Less, T::Mod, TargetUnion::ModRevision(3)), false),
        (cmp("l", Equal, T::Lease, TargetUnion::Lease(5)), true),
        (cmp("a", Equal, T::Lease, TargetUnion::Lease(0)), true),
        (cmp("l", NotEqual, T::Lease, TargetUnion::Lease(5)), false),
        // A missing key: create_revision 0 (PutIfAbsent), value compares fail.
        (
            cmp("nope", Equal, T::Create, TargetUnion::CreateRevision(0)),
            true,
        ),
        (
            cmp("nope", Equal, T::Version, TargetUnion::Version(0)),
            true,
        ),
        (
            cmp("nope", Equal, T::Value, TargetUnion::Value(Vec::new())),
            false,
        ),
        (
            cmp("nope", NotEqual, T::Value, TargetUnion::Value("x".into())),
            false,
        ),
    ];
    for (i, (c, want)) in cases.into_iter().enumerate() {
        let t = TxnRequest {
            compare: vec![c],
            ..Default::default()
        };
        assert_eq!(h.txn(t).unwrap().succeeded, want, "case {i}");
    }
    // A compare over a range must hold for every key in it.
    let mut c = cmp("a", Greater, T::Version, TargetUnion::Version(0));
    c.range_end = vec![0];
    assert!(
        h.txn(TxnRequest {
            compare: vec![c.clone()],
            ..Default::default()
        })
        .unwrap()
        .succeeded
    );
    c.target_union = Some(TargetUnion::Version(1));
    assert!(
        !h.txn(TxnRequest {
            compare: vec![c],
            ..Default::default()
        })
        .unwrap()
        .succeeded
    );
    assert_eq!(h.s.revision(), 4, "read-only txns make no revision");
}

#[test]
fn txn_branches_nested_and_one_revision() {
    let mut h = Harness::new();
    h.put("a", "1"); // 2
    let absent = cmp(
        "x",
        CompareResult::Equal,
        CompareTarget::Create,
        TargetUnion::CreateRevision(0),
    );
    let nested = TxnRequest {
        compare: vec![absent.clone()],
        success: vec![put_op("n", "yes")],
        failure: vec![put_op("n", "no")],
    };
    let t = TxnRequest {
        compare: vec![absent],
        success: vec![
            put_op("x", "1"),
            RequestOp {
                request: Some(Request::RequestTxn(nested)),
            },
            RequestOp {
                request: Some(Request::RequestRange(RangeRequest {
                    key: "x".into(),
                    ..Default::default()
                })),
            },
            RequestOp {
                request: Some(Request::RequestDeleteRange(DeleteRangeRequest {
                    key: "a".into(),
                    ..Default::default()
                })),
            },
        ],
        failure: vec![],
    };
    let r = h.txn(t.clone()).unwrap();
    assert!(r.succeeded);
    assert_eq!(r.header.unwrap().revision, 3);
    assert_eq!(h.s.revision(), 3, "one revision for the whole txn");
    // Nested compares see the state before the txn: x was absent.
    assert_eq!(h.get("n").unwrap().value, b"yes");
    let Some(Response::ResponseRange(rr)) = &r.responses[2].response else {
        panic!()
    };
    assert_eq!(rr.kvs[0].value, b"1", "reads see the txn's own writes");
    assert!(h.get("a").is_none());
    assert_eq!(h.get("x").unwrap().mod_revision, 3);
    // Again: now the failure branch, which is empty.
    let r = h.txn(t).unwrap();
    assert!(!r.succeeded && r.responses.is_empty());
    assert_eq!(h.s.revision(), 3);
}

#[test]
fn txn_duplicate_key_error() {
    let mut h = Harness::new();
    let dup = TxnRequest {
        success: vec![put_op("a", "1"), put_op("a", "2")],
        ..Default::default()
    };
    let e = h.txn(dup).unwrap_err();
    assert_eq!(
        e.to_string(),
        "etcdserver: duplicate key given in txn request"
    );
    let del = RequestOp {
        request: Some(Request::RequestDeleteRange(DeleteRangeRequest {
            key: "a".into(),
            range_end: "b".into(),
            prev_kv: false,
        })),
    };
    let put_del = TxnRequest {
        success: vec![del, put_op("a1", "x")],
        ..Default::default()
    };
    assert_eq!(h.txn(put_del), Err(KvError::DuplicateKey));
    let nested = TxnRequest {
        success: vec![put_op("a", "1")],
        failure: vec![put_op("a", "2")],
        ..Default::default()
    };
    let ok = TxnRequest {
        success: vec![RequestOp {
            request: Some(Request::RequestTxn(nested.clone())),
        }],
        ..Default::default()
    };
    assert!(
        h.txn(ok).is_ok(),
        "a nested txn's two branches may share keys"
    );
    let bad = TxnRequest {
        success: vec![
            put_op("a", "0"),
            RequestOp {
                request: Some(Request::RequestTxn(nested)),
            },
        ],
        ..Default::default()
    };
    assert_eq!(h.txn(bad), Err(KvError::DuplicateKey));
    // Puts of the same key in success and failure are fine.
    let ok = TxnRequest {
        success: vec![put_op("a", "1")],
        failure: vec![put_op("a", "2")],
        ..Default::default()
    };
    assert!(h.txn(ok).is_ok());
}

#[test]
fn txn_rejected_on_taken_path_changes_nothing() {
    let mut h = Harness::new();
    let t = TxnRequest {
        success: vec![
            put_op("a", "1"),
            RequestOp {
                request: Some(Request::RequestPut(PutRequest {
                    lease: 9,
                    ..put_req("b", "1")
                })),
            },
        ],
        ..Default::default()
    };
    assert_eq!(h.txn(t), Err(KvError::LeaseNotFound));
    assert!(h.get("a").is_none());
    assert_eq!(h.s.revision(), 1);
}

#[test]
fn lease_grant_revoke_and_attached_keys() {
    let mut h = Harness::new();
    let out = h.op(KvOp::LeaseGrant(LeaseGrantRequest { ttl: 0, id: 0 }));
    let KvResponse::LeaseGrant(g) = out.result.unwrap() else {
        panic!()
    };
    assert_eq!(g.id, 1, "id 0 takes the log index");
    assert_eq!(g.ttl, 1, "ttl raised to the minimum");
    assert_eq!(
        out.lease_changes,
        vec![LeaseChange::Granted { id: 1, ttl_secs: 1 }]
    );
    let e = h
        .op(KvOp::LeaseGrant(LeaseGrantRequest { ttl: 5, id: 1 }))
        .result;
    assert_eq!(e, Err(KvError::LeaseExists));
    let e = h
        .op(KvOp::LeaseGrant(LeaseGrantRequest {
            ttl: i64::MAX,
            id: 2,
        }))
        .result;
    assert_eq!(e, Err(KvError::LeaseTtlTooLarge));
    // index 4 is taken by a user's id: the next free one is chosen.
    h.op(KvOp::LeaseGrant(LeaseGrantRequest { ttl: 5, id: 5 }))
        .result
        .unwrap();
    let KvResponse::LeaseGrant(g) = h
        .op(KvOp::LeaseGrant(LeaseGrantRequest { ttl: 5, id: 0 }))
        .result
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(g.id, 6);
    for k in ["a", "b", "c"] {
        h.op(KvOp::Put(PutRequest {
            lease: 1,
            ..put_req(k, "v")
        }))
        .result
        .unwrap();
    }
    h.put("c", "no lease"); // detaches c
    assert_eq!(h.s.leases().get(1).unwrap().keys.len(), 2);
    assert_eq!(h.s.lease_statuses().len(), 3);
    let rev = h.s.revision();
    let out = h.op(KvOp::LeaseRevoke(LeaseRevokeRequest { id: 1 }));
    assert!(out.result.is_ok());
    assert_eq!(out.revision, rev + 1, "one revision for all attached keys");
    assert_eq!(out.events.len(), 2);
    assert!(
        out.events
            .iter()
            .all(|e| e.r#type == EventType::Delete as i32)
    );
    assert_eq!(out.lease_changes, vec![LeaseChange::Revoked { id: 1 }]);
    assert!(h.get("a").is_none() && h.get("b").is_none());
    assert_eq!(h.get("c").unwrap().value, b"no lease");
    let e = h.op(KvOp::LeaseRevoke(LeaseRevokeRequest { id: 1 })).result;
    assert_eq!(e, Err(KvError::LeaseNotFound));
}

#[test]
fn dedup_returns_cached_response_without_new_revision() {
    let mut h = Harness::new();
    let cmd = KvCommand::with_session(42, 1, KvOp::Put(put_req("a", "1")));
    let first = h.cmd(cmd.clone());
    assert!(!first.duplicate);
    assert_eq!(first.events.len(), 1);
    let again = h.cmd(cmd);
    assert!(again.duplicate);
    assert_eq!(again.result, first.result);
    assert!(again.events.is_empty());
    assert_eq!(h.s.revision(), 2);
    assert_eq!(h.get("a").unwrap().version, 1);
    // An older seq is stale; a rejected command is cached like any other.
    let bad = KvCommand::with_session(42, 2, KvOp::Put(put_req("", "x")));
    assert_eq!(h.cmd(bad.clone()).result, Err(KvError::EmptyKey));
    assert_eq!(h.cmd(bad).result, Err(KvError::EmptyKey));
    let stale = h.cmd(KvCommand::with_session(42, 1, KvOp::Put(put_req("a", "1"))));
    assert_eq!(
        stale.result,
        Err(KvError::StaleSequence { seq: 1, last: 2 })
    );
    // Without a session, the same put applies twice (etcd semantics).
    h.put("a", "1");
    h.put("a", "1");
    assert_eq!(h.get("a").unwrap().version, 3);
}

#[test]
fn sessions_expire_by_idle_entries_and_are_capped() {
    let cfg = KvConfig {
        session_ttl_entries: 10,
        session_check_interval_entries: 5,
        sessions_max: 3,
        ..KvConfig::default()
    };
    let mut h = Harness::with(cfg);
    for c in 1..=4 {
        h.cmd(KvCommand::with_session(c, 1, KvOp::Put(put_req("k", "v"))));
    }
    // Cap 3: client 1, least recently used, is gone.
    assert_eq!(h.s.sessions().len(), 3);
    assert!(h.s.sessions().get(1).is_none());
    let again = h.cmd(KvCommand::with_session(1, 1, KvOp::Put(put_req("k", "v"))));
    assert!(!again.duplicate, "an evicted session applies again");
    // Client 1 (index 5) is now the most recent; 2 is the LRU.
    assert!(h.s.sessions().get(2).is_none());
    for _ in 0..20 {
        h.put("other", "x");
    }
    assert!(h.s.sessions().is_empty(), "idle sessions expired");
}

#[test]
fn snapshot_round_trip_is_equal() {
    let mut h = Harness::new();
    h.op(KvOp::LeaseGrant(LeaseGrantRequest { ttl: 30, id: 3 }));
    h.op(KvOp::Put(PutRequest {
        lease: 3,
        ..put_req("a", "1")
    }));
    h.put("b", "1");
    h.put("b", "2");
    h.del("b", "");
    h.put("c", "1");
    h.op(KvOp::Compaction(CompactionRequest {
        revision: 3,
        physical: false,
    }));
    h.cmd(KvCommand::with_session(7, 1, KvOp::Put(put_req("d", "1"))));
    h.cmd(KvCommand::with_session(8, 1, KvOp::Put(put_req("", "1"))));
    let bytes = h.s.encode_snapshot();
    let restored = KvStore::decode_snapshot(KvConfig::default(), &bytes).unwrap();
    assert_eq!(restored, h.s);
    assert_eq!(restored.encode_snapshot(), bytes);
    let snap = flotilla_raft::Snapshot {
        meta: flotilla_raft::SnapshotMeta {
            index: h.index,
            term: flotilla_raft::Term(1),
            conf_state: Default::default(),
        },
        data: crate::driver::StateMachine::snapshot(&h.s),
    };
    let mut other = KvStore::new(KvConfig::default());
    crate::driver::StateMachine::restore(&mut other, &snap).unwrap();
    assert_eq!(other, h.s);
    // The restored store goes on identically.
    let mut h2 = Harness {
        s: other,
        index: h.index,
        batched: true,
    };
    let dup = KvCommand::with_session(7, 1, KvOp::Put(put_req("d", "1")));
    assert_eq!(h.cmd(dup.clone()), h2.cmd(dup));
    assert_eq!(h.put("e", "1"), h2.put("e", "1"));
    assert!(KvStore::decode_snapshot(KvConfig::default(), b"\xff\xff").is_err());
}

#[test]
fn watch_events_from_past_revision_with_prev_kv_and_compacted_error() {
    let mut h = Harness::new();
    let out = h.put("w/a", "1"); // 2
    assert_eq!(out.events.len(), 1);
    assert_eq!(out.events[0].prev_kv, None);
    h.put("w/a", "2"); // 3
    h.put("other", "x"); // 4
    let out = h.del("w/", "w0"); // 5
    assert_eq!(out.events[0].prev_kv.as_ref().unwrap().value, b"2");
    let ev = h.s.events(b"w/", b"w0", 3, 100).unwrap();
    assert_eq!(ev.len(), 2);
    assert_eq!(ev[0].r#type, EventType::Put as i32);
    assert_eq!(ev[0].kv.as_ref().unwrap().value, b"2");
    assert_eq!(ev[0].prev_kv.as_ref().unwrap().value, b"1");
    assert_eq!(ev[1].r#type, EventType::Delete as i32);
    assert_eq!(ev[1].kv.as_ref().unwrap().mod_revision, 5);
    assert_eq!(ev[1].prev_kv.as_ref().unwrap().value, b"2");
    // The live events of apply equal the history's.
    assert_eq!(h.s.events(b"w/", b"w0", 5, 100).unwrap(), out.events);
    // A limit never splits a revision.
    h.op(KvOp::Txn(TxnRequest {
        success: vec![put_op("w/x", "1"), put_op("w/y", "1")],
        ..Default::default()
    }));
    let ev = h.s.events(b"w/", b"w0", 5, 2).unwrap();
    assert_eq!(ev.len(), 3);
    h.op(KvOp::Compaction(CompactionRequest {
        revision: 4,
        physical: false,
    }));
    assert_eq!(
        h.s.events(b"w/", b"w0", 3, 10),
        Err(KvError::Compacted {
            compact_revision: 4
        })
    );
    assert_eq!(h.s.events(b"w/", b"w0", 4, 10).unwrap().len(), 3);
}

#[test]
fn member_table_upserts_removes_and_survives_a_snapshot() {
    use flotilla_proto::etcdserverpb::{Member, MemberRemoveRequest};
    let mut h = Harness::new();
    let member = |id: u64, client: &str| Member {
        id,
        name: format!("n{id}"),
        peer_ur_ls: vec![format!("http://p{id}:2380")],
        client_ur_ls: vec![client.to_string()],
        is_learner: false,
    };
    let before = h.put("a", "1").revision;
    let out = h.op(KvOp::MemberUpsert(member(1, "")));
    assert_eq!(
        out.revision, before,
        "membership does not move the revision"
    );
    assert!(out.events.is_empty());
    h.op(KvOp::MemberUpsert(member(2, "http://c2:2379")));
    // Idempotent: the same upsert again leaves one entry, updated in place.
    h.op(KvOp::MemberUpsert(member(1, "http://c1:2379")));
    let ids: Vec<u64> = h.s.members().iter().map(|m| m.id).collect();
    assert_eq!(ids, vec![1, 2]);
    assert_eq!(h.s.member(1).unwrap().client_ur_ls, vec!["http://c1:2379"]);
    let out = h.op(KvOp::MemberRemove(MemberRemoveRequest { id: 2 }));
    let Ok(KvResponse::Members(list)) = out.result else {
        panic!("expected the member list: {:?}", out.result);
    };
    assert_eq!(list.members.len(), 1);
    assert!(h.s.is_removed_member(2));
    // A removed member cannot publish itself back.
    let out = h.op(KvOp::MemberUpsert(member(2, "http://c2:2379")));
    assert_eq!(out.result, Err(KvError::MemberRemoved));
    let restored = KvStore::decode_snapshot(KvConfig::default(), &h.s.encode_snapshot()).unwrap();
    assert_eq!(restored, h.s);
}

/// Updates proposed from racing reads of the table merge: a promotion
/// built from a copy read before the member published its name keeps the
/// name, and a publish built from a copy read before the promotion does not
/// make the member a learner again.
#[test]
fn member_updates_from_stale_reads_do_not_undo_each_other() {
    use flotilla_proto::etcdserverpb::Member;
    let mut h = Harness::new();
    let added = Member {
        id: 4,
        name: String::new(),
        peer_ur_ls: vec!["http://p4:2380".into()],
        client_ur_ls: Vec::new(),
        is_learner: true,
    };
    h.op(KvOp::MemberUpsert(added.clone()));
    let published = Member {
        name: "n4".into(),
        client_ur_ls: vec!["http://c4:2379".into()],
        ..added.clone()
    };
    let promoted_from_stale_copy = Member {
        is_learner: false,
        ..added.clone()
    };
    h.op(KvOp::MemberUpsert(published.clone()));
    h.op(KvOp::MemberUpsert(promoted_from_stale_copy));
    let m = h.s.member(4).unwrap().clone();
    assert_eq!(
        (m.name.as_str(), m.client_ur_ls.clone(), m.is_learner),
        ("n4", vec!["http://c4:2379".to_string()], false)
    );
    // The other order: a publish built from the learner entry.
    h.op(KvOp::MemberUpsert(published));
    assert!(!h.s.member(4).unwrap().is_learner, "promotion is one-way");
}

#[test]
fn size_estimate_follows_writes_compaction_and_snapshots() {
    let mut h = Harness::new();
    assert_eq!(h.s.mvcc().size_bytes(), 0);
    h.put("key", &"x".repeat(1000));
    let one = h.s.mvcc().size_bytes();
    assert!(one >= 1003, "at least the key and value text: {one}");
    h.put("key", &"y".repeat(1000));
    let two = h.s.mvcc().size_bytes();
    assert!(two >= one + 1003, "every version counts: {two}");
    h.del("key", "");
    let deleted = h.s.mvcc().size_bytes();
    assert!(deleted > two, "a tombstone is a version too");

    let restored = KvStore::decode_snapshot(KvConfig::default(), &h.s.encode_snapshot()).unwrap();
    assert_eq!(
        restored.mvcc().size_bytes(),
        deleted,
        "recounted on restore"
    );

    let rev = h.s.revision();
    h.op(KvOp::Compaction(CompactionRequest {
        revision: rev,
        physical: false,
    }))
    .result
    .unwrap();
    assert_eq!(
        h.s.mvcc().size_bytes(),
        0,
        "compacting past a deletion drops the key's whole history"
    );
}

/// A store that records no events (nobody watches), or only those of
/// watched ranges, answers every command exactly as one that records all,
/// and ends in the same state; the one of ranges records exactly the
/// events of keys in them.
#[test]
fn without_events_the_answers_and_the_state_are_the_same() {
    let mut with = Harness::new();
    let mut without = Harness::new();
    without.s.set_record_events(false);
    let mut ranged = Harness::new();
    let watched: Vec<(Vec<u8>, Vec<u8>)> = vec![(b"b".to_vec(), Vec::new())];
    ranged.s.set_event_keys(EventKeys::Ranges(watched.into()));
    let lease = KvOp::LeaseGrant(LeaseGrantRequest { ttl: 60, id: 7 });
    let ops = vec![
        lease,
        KvOp::Put(put_req("a", "1")),
        KvOp::Put(PutRequest {
            prev_kv: true,
            lease: 7,
            ..put_req("a", "2")
        }),
        KvOp::Put(PutRequest {
            ignore_value: true,
            prev_kv: true,
            ..put_req("a", "")
        }),
        KvOp::Put(PutRequest {
            ignore_lease: true,
            ..put_req("a", "3")
        }),
        KvOp::Put(put_req("b", "1")),
        KvOp::DeleteRange(DeleteRangeRequest {
            key: "a".into(),
            range_end: "c".into(),
            prev_kv: true,
        }),
        KvOp::Put(PutRequest {
            ignore_value: true,
            ..put_req("a", "")
        }),
        KvOp::Put(put_req("a", "again")),
        KvOp::LeaseRevoke(LeaseRevokeRequest { id: 7 }),
    ];
    let mut revisions = Vec::new();
    let mut ranged_events = 0;
    for op in ops {
        let a = with.op(op.clone());
        let b = without.op(op.clone());
        let c = ranged.op(op);
        for other in [&b, &c] {
            assert_eq!(a.result, other.result);
            assert_eq!(a.revision, other.revision);
            assert_eq!(a.lease_changes, other.lease_changes);
        }
        assert!(b.events.is_empty());
        let of_b: Vec<_> = a
            .events
            .iter()
            .filter(|e| e.kv.as_ref().is_some_and(|kv| kv.key == b"b"))
            .cloned()
            .collect();
        assert_eq!(c.events, of_b);
        ranged_events += c.events.len();
        revisions.push(b.revision);
    }
    assert_eq!(ranged_events, 2, "b's put and its deletion");
    assert_eq!(with.s.encode_snapshot(), without.s.encode_snapshot());
    assert_eq!(with.s.encode_snapshot(), ranged.s.encode_snapshot());
    // The ignore_value put kept the value and, given no lease, detached
    // it (as etcd); the ignore_lease put kept that (none).
    for h in [&with, &without] {
        let kept = h.get_at("a", revisions[3]).unwrap().unwrap();
        assert_eq!(
            (kept.value.as_slice(), kept.lease, kept.version),
            (&b"2"[..], 0, 3)
        );
        let relet = h.get_at("a", revisions[4]).unwrap().unwrap();
        assert_eq!((relet.value.as_slice(), relet.lease), (&b"3"[..], 0));
        assert_eq!(h.get("a").unwrap().value, b"again");
        assert_eq!(h.get("a").unwrap().version, 1, "recreated after the delete");
    }
}
