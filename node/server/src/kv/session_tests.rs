//! Tests of the exactly-once window: commands of one session applied out of
//! order, retried, below the mark, beyond the bound; through the store, as
//! log entries.

use crate::kv::store_tests::{Harness, put_req};
use crate::kv::{KvCommand, KvConfig, KvError, KvOp, KvOutput};

const CLIENT: u64 = 9;

/// Put `k<seq>` as command `seq` of [`CLIENT`], sent while `mark` was the
/// client's lowest unanswered seq.
fn put(h: &mut Harness, seq: u64, mark: u64) -> KvOutput {
    let op = KvOp::Put(put_req(&format!("k{seq}"), &format!("v{seq}")));
    h.cmd(KvCommand::with_session(CLIENT, seq, op).with_first_unanswered(mark))
}

/// The version of `k<seq>`: how many times its put applied.
fn version(h: &Harness, seq: u64) -> i64 {
    h.get(&format!("k{seq}")).map_or(0, |kv| kv.version)
}

#[test]
fn out_of_order_seqs_in_the_window_apply_once_each() {
    let mut h = Harness::new();
    let order = [3, 1, 4, 2, 6, 5];
    let mut first = Vec::new();
    for seq in order {
        let out = put(&mut h, seq, 1);
        assert!(!out.duplicate, "seq {seq} is new");
        assert!(out.result.is_ok(), "seq {seq}: {:?}", out.result);
        first.push((seq, out.result));
    }
    let revision = h.s.revision();
    // Retries of every one of them, in another order, with the mark where
    // the client left it: answered from the cache, nothing applies again.
    for (seq, result) in first.iter().rev() {
        let again = put(&mut h, *seq, 1);
        assert!(again.duplicate, "seq {seq} is a retry");
        assert_eq!(&again.result, result, "seq {seq}: the first answer");
        assert!(again.events.is_empty());
    }
    assert_eq!(h.s.revision(), revision, "no retry applied");
    for seq in order {
        assert_eq!(version(&h, seq), 1, "k{seq} written once");
    }
    let session = h.s.sessions().get(CLIENT).expect("kept");
    assert_eq!(session.last_seq(), 6);
    assert_eq!(session.responses.len(), 6, "all above the mark are kept");
}

#[test]
fn below_the_mark_is_stale_at_and_above_it_cached() {
    let mut h = Harness::new();
    let answers: Vec<_> = (1..=3).map(|seq| put(&mut h, seq, 1).result).collect();
    // The client has seen the answers of 1 and 2: the session drops them.
    let four = put(&mut h, 4, 3);
    assert!(!four.duplicate);
    let session = h.s.sessions().get(CLIENT).expect("kept");
    assert_eq!(session.mark, 3);
    assert_eq!(
        session.responses.keys().copied().collect::<Vec<_>>(),
        [3, 4]
    );
    for seq in [1, 2] {
        let stale = put(&mut h, seq, 3);
        assert_eq!(stale.result, Err(KvError::StaleSequence { seq, last: 4 }));
        assert!(stale.duplicate, "not applied");
    }
    let three = put(&mut h, 3, 3);
    assert!(three.duplicate);
    assert_eq!(three.result, answers[2], "3 is still cached");
    // A new seq below the last applied one, at or above the mark, applies.
    let late = KvOp::Put(put_req("late", "x"));
    let five = h.cmd(KvCommand::with_session(CLIENT, 6, late.clone()).with_first_unanswered(5));
    assert!(!five.duplicate);
    let five = h.cmd(KvCommand::with_session(CLIENT, 5, late).with_first_unanswered(5));
    assert!(!five.duplicate, "5 was never applied: it applies now");
    assert_eq!(h.get("late").unwrap().version, 2);
    for seq in 1..=4 {
        assert_eq!(version(&h, seq), 1);
    }
}

#[test]
fn a_session_keeps_at_most_window_max_responses() {
    let mut h = Harness::with(KvConfig {
        session_window_max: 4,
        ..KvConfig::default()
    });
    for seq in 1..=4 {
        assert!(put(&mut h, seq, 1).result.is_ok());
    }
    let revision = h.s.revision();
    for _ in 0..2 {
        let full = put(&mut h, 5, 1);
        assert_eq!(
            full.result,
            Err(KvError::SessionWindowFull { seq: 5, max: 4 })
        );
        assert!(full.duplicate, "not applied");
    }
    assert_eq!(h.s.revision(), revision);
    assert_eq!(version(&h, 5), 0, "refused, not applied");
    assert_eq!(h.s.sessions().get(CLIENT).unwrap().responses.len(), 4);
    // Cached ones are still answered when the window is full.
    assert!(put(&mut h, 2, 1).duplicate);
    // Once the client has seen 1's answer there is room for 5.
    let five = put(&mut h, 5, 2);
    assert!(!five.duplicate && five.result.is_ok());
    assert_eq!(version(&h, 5), 1);
    assert_eq!(h.s.sessions().get(CLIENT).unwrap().responses.len(), 4);
    assert!(matches!(
        put(&mut h, 6, 2).result,
        Err(KvError::SessionWindowFull { seq: 6, .. })
    ));
}

#[test]
fn commands_without_a_mark_keep_the_one_response_rule() {
    let mut h = Harness::new();
    let legacy = |seq: u64| {
        let op = KvOp::Put(put_req(&format!("k{seq}"), "v"));
        KvCommand::with_session(CLIENT, seq, op)
    };
    let two = h.cmd(legacy(2));
    assert!(!two.duplicate);
    let again = h.cmd(legacy(2));
    assert!(again.duplicate);
    assert_eq!(again.result, two.result);
    assert_eq!(
        h.cmd(legacy(1)).result,
        Err(KvError::StaleSequence { seq: 1, last: 2 }),
        "below the last applied: stale, as before the mark existed"
    );
    assert!(!h.cmd(legacy(4)).duplicate);
    assert_eq!(
        h.cmd(legacy(3)).result,
        Err(KvError::StaleSequence { seq: 3, last: 4 })
    );
    let session = h.s.sessions().get(CLIENT).unwrap();
    assert_eq!(session.responses.len(), 1, "one response, as before");
    assert_eq!(session.mark, 4);
    assert_eq!(version(&h, 1), 0);
    assert_eq!(version(&h, 3), 0);
}
