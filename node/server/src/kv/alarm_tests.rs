//! The alarm state machine and the space quota as entries apply: driven
//! through encoded log entries, asserting on responses, the alarm table
//! and the store's revision and size.

use super::store_tests::{Harness, put_req};
use super::*;
use flotilla_proto::etcdserverpb::alarm_request::AlarmAction;
use flotilla_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use flotilla_proto::etcdserverpb::request_op::Request;
use flotilla_proto::etcdserverpb::{
    AlarmMember, AlarmRequest, AlarmType, CompactionRequest, Compare, DeleteRangeRequest,
    LeaseGrantRequest, LeaseRevokeRequest, RequestOp, TxnRequest,
};

const ME: u64 = 0xa1;

fn alarm(action: AlarmAction, member_id: u64, kind: AlarmType) -> KvOp {
    KvOp::Alarm(AlarmRequest {
        action: action as i32,
        member_id,
        alarm: kind as i32,
    })
}

fn alarms_of(out: KvOutput) -> Vec<AlarmMember> {
    match out.result {
        Ok(KvResponse::Alarm(r)) => r.alarms,
        other => panic!("not an alarm response: {other:?}"),
    }
}

fn nospace(member_id: u64) -> AlarmMember {
    AlarmMember {
        member_id,
        alarm: AlarmType::Nospace as i32,
    }
}

/// A put admitted under a quota of `bytes`.
fn put_with_quota(h: &mut Harness, k: &str, v: &str, bytes: u64) -> KvOutput {
    h.cmd(
        KvCommand::new(KvOp::Put(put_req(k, v))).with_quota(QuotaStamp {
            member_id: ME,
            bytes,
        }),
    )
}

fn txn(success: Vec<RequestOp>, failure: Vec<RequestOp>, compare: Vec<Compare>) -> KvOp {
    KvOp::Txn(TxnRequest {
        compare,
        success,
        failure,
    })
}

fn put_op(k: &str) -> RequestOp {
    RequestOp {
        request: Some(Request::RequestPut(put_req(k, "v"))),
    }
}

fn delete_op(k: &str) -> RequestOp {
    RequestOp {
        request: Some(Request::RequestDeleteRange(DeleteRangeRequest {
            key: k.into(),
            ..Default::default()
        })),
    }
}

/// A compare that never holds: `version(k) > 1000`.
fn never(k: &str) -> Compare {
    Compare {
        result: CompareResult::Greater as i32,
        target: CompareTarget::Version as i32,
        key: k.into(),
        target_union: Some(TargetUnion::Version(1000)),
        range_end: Vec::new(),
    }
}

#[test]
fn activate_and_deactivate_answer_as_etcds_alarm_store() {
    let mut h = Harness::new();
    let out = h.op(alarm(AlarmAction::Activate, ME, AlarmType::None));
    assert_eq!(alarms_of(out), vec![], "NONE raises nothing");
    let out = h.op(alarm(AlarmAction::Activate, ME, AlarmType::Nospace));
    assert_eq!(alarms_of(out), vec![nospace(ME)]);
    let again = h.op(alarm(AlarmAction::Activate, ME, AlarmType::Nospace));
    assert_eq!(
        alarms_of(again),
        vec![nospace(ME)],
        "raising twice is one alarm"
    );
    h.op(alarm(AlarmAction::Activate, 7, AlarmType::Nospace));
    assert_eq!(
        h.s.alarms().get(AlarmType::None),
        vec![nospace(7), nospace(ME)]
    );
    let out = h.op(alarm(AlarmAction::Deactivate, ME, AlarmType::Nospace));
    assert_eq!(alarms_of(out), vec![nospace(ME)]);
    let out = h.op(alarm(AlarmAction::Deactivate, ME, AlarmType::Nospace));
    assert_eq!(alarms_of(out), vec![], "clearing what is not raised");
    assert!(
        h.s.alarms().is_raised(AlarmType::Nospace),
        "member 7's alarm still holds"
    );
    h.op(alarm(AlarmAction::Deactivate, 7, AlarmType::Nospace));
    assert!(h.s.alarms().is_empty());
    assert_eq!(h.s.revision(), 1, "alarms are not revisions");
}

#[test]
fn corrupt_alarms_and_unknown_kinds_are_refused() {
    let mut h = Harness::new();
    let out = h.op(alarm(AlarmAction::Activate, ME, AlarmType::Corrupt));
    assert!(matches!(out.result, Err(KvError::BadRequest(_))), "{out:?}");
    let out = h.op(KvOp::Alarm(AlarmRequest {
        action: AlarmAction::Activate as i32,
        member_id: ME,
        alarm: 9,
    }));
    assert!(matches!(out.result, Err(KvError::BadRequest(_))), "{out:?}");
    assert!(h.s.alarms().is_empty());
}

#[test]
fn a_write_past_the_quota_fails_and_raises_nospace_in_the_same_entry() {
    let mut h = Harness::new();
    h.put("a", "1");
    let size = h.s.mvcc().size_bytes();
    let cost = put_cost(&put_req("b", "2"));
    let out = put_with_quota(&mut h, "b", "2", size + cost - 1);
    assert_eq!(out.result, Err(KvError::NoSpace));
    assert_eq!(
        KvError::NoSpace.to_string(),
        "etcdserver: mvcc: database space exceeded"
    );
    assert_eq!(h.s.revision(), 2, "nothing written");
    assert_eq!(h.s.mvcc().size_bytes(), size);
    assert_eq!(h.s.alarms().get(AlarmType::Nospace), vec![nospace(ME)]);
    // Exactly at the quota fits, once the alarm is gone.
    h.op(alarm(AlarmAction::Deactivate, ME, AlarmType::Nospace));
    let out = put_with_quota(&mut h, "b", "2", size + cost);
    assert!(out.result.is_ok(), "{out:?}");
}

#[test]
fn while_nospace_is_raised_only_writes_that_add_nothing_apply() {
    let mut h = Harness::new();
    h.op(KvOp::LeaseGrant(LeaseGrantRequest { ttl: 10, id: 5 }))
        .result
        .unwrap();
    h.put("a", "1");
    h.put("a", "2");
    h.put("b", "1");
    h.op(alarm(AlarmAction::Activate, ME, AlarmType::Nospace));
    // Refused: puts (quota or none), grants, txns whose branch puts.
    assert_eq!(h.put("c", "1").result, Err(KvError::NoSpace));
    let grant = h.op(KvOp::LeaseGrant(LeaseGrantRequest { ttl: 10, id: 6 }));
    assert_eq!(grant.result, Err(KvError::NoSpace));
    let out = h.op(txn(vec![put_op("c")], vec![], vec![]));
    assert_eq!(out.result, Err(KvError::NoSpace));
    let nested = RequestOp {
        request: Some(Request::RequestTxn(TxnRequest {
            success: vec![put_op("c")],
            ..Default::default()
        })),
    };
    let out = h.op(txn(vec![nested], vec![], vec![]));
    assert_eq!(out.result, Err(KvError::NoSpace), "a nested put counts");
    assert_eq!(h.s.revision(), 4);
    // Applied: a txn whose taken branch only deletes or reads, even if
    // the other branch would put; deletes; revokes; compaction.
    let out = h.op(txn(
        vec![put_op("c")],
        vec![delete_op("b")],
        vec![never("a")],
    ));
    assert!(out.result.is_ok(), "{out:?}");
    assert_eq!(h.s.revision(), 5);
    assert!(h.del("a", "").result.is_ok());
    let revoke = h.op(KvOp::LeaseRevoke(LeaseRevokeRequest { id: 5 }));
    assert!(revoke.result.is_ok(), "{revoke:?}");
    let before = h.s.mvcc().size_bytes();
    let compact = h.op(KvOp::Compaction(CompactionRequest {
        revision: h.s.revision(),
        physical: false,
    }));
    assert!(compact.result.is_ok(), "{compact:?}");
    assert!(h.s.mvcc().size_bytes() < before, "compaction frees space");
    // Still refused until disarmed, however much space is free.
    assert_eq!(h.put("c", "1").result, Err(KvError::NoSpace));
    h.op(alarm(AlarmAction::Deactivate, ME, AlarmType::Nospace));
    assert!(h.put("c", "1").result.is_ok());
}

#[test]
fn alarms_survive_a_snapshot() {
    let mut h = Harness::new();
    h.put("a", "1");
    h.op(alarm(AlarmAction::Activate, ME, AlarmType::Nospace));
    let restored = KvStore::decode_snapshot(KvConfig::default(), &h.s.encode_snapshot()).unwrap();
    assert_eq!(restored.alarms(), h.s.alarms());
    assert_eq!(restored, h.s);
}
