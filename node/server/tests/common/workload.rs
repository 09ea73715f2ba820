//! The client workload of the process-level suites: concurrent clients
//! running puts, gets, deletes and compare-and-set transactions on a few
//! shared keys (and puts to keys of their own) against any members, their
//! history recorded for the linearizability checker, and the check that no
//! acknowledged write was lost.

#![allow(dead_code)]

use crate::common::{Run, WAIT};
use crate::processes::channel;
use flotilla_client::{CLIENT_ID_HEADER, Client, ClientConfig, SEQ_HEADER};
use flotilla_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use flotilla_proto::etcdserverpb::kv_client::KvClient;
use flotilla_proto::etcdserverpb::request_op::Request as Op;
use flotilla_proto::etcdserverpb::{Compare, PutRequest, RangeRequest, RequestOp, TxnRequest};
use flotilla_tests::linearizability::{History, KvInput, KvOutput, OpKind, Operation, Outcome};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tonic::transport::Channel;

/// Keys the clients share: few, so operations contend.
pub const KEYS: u32 = 3;

/// Bounded calls that move on from a dead member quickly.
pub fn client_config() -> ClientConfig {
    ClientConfig {
        request_timeout: Duration::from_secs(3),
        attempt_timeout: Duration::from_secs(1),
        max_attempts: 20,
        connect_timeout: Duration::from_millis(300),
        backoff_min: Duration::from_millis(10),
        backoff_max: Duration::from_millis(100),
    }
}

/// Compare-and-set through etcd's Txn, with exactly-once ids so that a
/// retry at another member (after the first one died holding the request)
/// applies at most once. Rotates through the endpoints on errors.
pub struct CasClient {
    channels: Vec<Channel>,
    next: usize,
    client_id: u64,
    seq: u64,
}

impl CasClient {
    pub fn new(endpoints: &[String], client_id: u64, first: usize) -> CasClient {
        CasClient {
            channels: endpoints.iter().map(|u| channel(u)).collect(),
            next: first % endpoints.len(),
            client_id,
            seq: 0,
        }
    }

    /// The Txn that sets `key` to `value` iff its value is `expected`
    /// (`None`: the key is absent, i.e. `put_if_absent`).
    fn txn(key: &str, expected: Option<&str>, value: &str) -> TxnRequest {
        let (target, union) = match expected {
            None => (CompareTarget::Create, TargetUnion::CreateRevision(0)),
            Some(v) => (CompareTarget::Value, TargetUnion::Value(v.into())),
        };
        TxnRequest {
            compare: vec![Compare {
                result: CompareResult::Equal as i32,
                target: target as i32,
                key: key.into(),
                range_end: Vec::new(),
                target_union: Some(union),
            }],
            success: vec![RequestOp {
                request: Some(Op::RequestPut(PutRequest {
                    key: key.into(),
                    value: value.into(),
                    ..PutRequest::default()
                })),
            }],
            failure: Vec::new(),
        }
    }

    /// Whether the swap happened; an error leaves the outcome unknown.
    pub async fn cas(
        &mut self,
        key: &str,
        expected: Option<&str>,
        value: &str,
    ) -> Result<bool, tonic::Status> {
        self.seq += 1;
        let txn = CasClient::txn(key, expected, value);
        let config = client_config();
        let deadline = tokio::time::Instant::now() + config.request_timeout;
        let mut last = tonic::Status::unavailable("no attempt made");
        for attempt in 1..=config.max_attempts {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                break;
            }
            let per_attempt = left.min(config.attempt_timeout);
            let mut req = tonic::Request::new(txn.clone());
            req.set_timeout(per_attempt);
            req.metadata_mut()
                .insert(CLIENT_ID_HEADER, self.client_id.into());
            req.metadata_mut().insert(SEQ_HEADER, self.seq.into());
            let mut kv = KvClient::new(self.channels[self.next].clone());
            match tokio::time::timeout(per_attempt, kv.txn(req)).await {
                Ok(Ok(r)) => return Ok(r.into_inner().succeeded),
                Ok(Err(status)) if status.code() == tonic::Code::InvalidArgument => {
                    return Err(status);
                }
                Ok(Err(status)) => last = status,
                Err(_) => last = tonic::Status::deadline_exceeded("attempt timed out"),
            }
            self.next = (self.next + 1) % self.channels.len();
            let backoff = config.backoff_min * (1 << attempt.min(4));
            tokio::time::sleep(backoff.min(config.backoff_max)).await;
        }
        Err(last)
    }
}

/// One linearizable Range of every key at `url`: key → value.
pub async fn read_all_at(url: &str) -> Result<BTreeMap<String, String>, tonic::Status> {
    let deadline = Duration::from_secs(2);
    let mut req = tonic::Request::new(RangeRequest {
        key: vec![0],
        range_end: vec![0],
        ..RangeRequest::default()
    });
    req.set_timeout(deadline);
    let mut kv = KvClient::new(channel(url));
    let utf8 = |b: Vec<u8>| String::from_utf8(b).expect("utf-8 key or value");
    match tokio::time::timeout(deadline, kv.range(req)).await {
        Ok(Ok(r)) => Ok(r
            .into_inner()
            .kvs
            .into_iter()
            .map(|kv| (utf8(kv.key), utf8(kv.value)))
            .collect()),
        Ok(Err(status)) => Err(status),
        Err(_) => Err(tonic::Status::deadline_exceeded("range timed out")),
    }
}

impl Run {
    /// Client `id`: random puts, gets, compare-and-sets and deletes on
    /// [`KEYS`] shared keys, and puts to keys of its own, until stopped. A write that fails may still take
    /// effect, so it is recorded as unknown; a failed read has no effect
    /// and is recorded as failed (the checker ignores it).
    pub async fn client(self, id: u64, endpoints: Vec<String>, seed: u64) {
        let mut rng = SmallRng::seed_from_u64(seed ^ (id + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let client = Client::new(&endpoints, client_config()).expect("client");
        let mut cas = CasClient::new(&endpoints, rng.random::<u64>().max(1), id as usize);
        // The last value this client read per key: what its compare-and-sets
        // expect when they are not put_if_absent.
        let mut seen: BTreeMap<String, Option<String>> = BTreeMap::new();
        let mut n = 0u64;
        while !self.stop.load(Ordering::Relaxed) {
            n += 1;
            let key = format!("k{}", rng.random_range(0..KEYS));
            match rng.random_range(0..20u32) {
                // Puts, a third of them to a key of their own that nothing
                // overwrites: those must all be there at the end.
                0..9 => {
                    let key = if rng.random_bool(0.3) {
                        format!("d/{id}/{n}")
                    } else {
                        key
                    };
                    let v = format!("p{id}.{n}");
                    let op =
                        self.recorder
                            .call(id, KvInput::put(key.as_str(), v.as_str()), self.now());
                    match client.put(key.as_bytes(), v.as_bytes()).await {
                        Ok(_) => self.recorder.ok(op, self.now(), None),
                        Err(_) => self.recorder.unknown(op),
                    }
                }
                9..15 => {
                    let op = self
                        .recorder
                        .call(id, KvInput::get(key.as_str()), self.now());
                    match client.get(key.as_bytes()).await {
                        Ok(v) => {
                            let v = v.map(|v| String::from_utf8(v).expect("utf-8 value"));
                            seen.insert(key.clone(), v.clone());
                            self.recorder.ok(op, self.now(), Some(KvOutput::Value(v)));
                        }
                        Err(_) => self.recorder.fail(op, self.now()),
                    }
                }
                15..18 => {
                    let v = format!("x{id}.{n}");
                    let expected = if rng.random_bool(0.5) {
                        None
                    } else {
                        seen.get(&key).cloned().flatten()
                    };
                    let input = KvInput::cas(key.as_str(), expected.clone(), v.as_str());
                    let op = self.recorder.call(id, input, self.now());
                    match cas.cas(&key, expected.as_deref(), &v).await {
                        Ok(swapped) => {
                            self.recorder
                                .ok(op, self.now(), Some(KvOutput::Succeeded(swapped)));
                        }
                        Err(_) => self.recorder.unknown(op),
                    }
                }
                _ => {
                    let op = self
                        .recorder
                        .call(id, KvInput::delete(key.as_str()), self.now());
                    match client.delete(key.as_bytes()).await {
                        Ok(_) => self.recorder.ok(op, self.now(), None),
                        Err(_) => self.recorder.unknown(op),
                    }
                }
            }
        }
    }

    /// Once the cluster is calm: one linearizable read of all keys at each
    /// of `endpoints`, recorded as a get of every key the clients touched
    /// (client `100 + member`; one Range is one atomic read, so each get
    /// has its times). Returns each key's value, which every member must
    /// agree on.
    pub async fn final_reads(&self, endpoints: &[String]) -> BTreeMap<String, Option<String>> {
        let keys: std::collections::BTreeSet<String> = self
            .recorder
            .history()
            .operations
            .into_iter()
            .map(|o| o.key)
            .collect();
        let mut seen: Vec<BTreeMap<String, Option<String>>> = Vec::new();
        for (i, url) in endpoints.iter().enumerate() {
            let deadline = tokio::time::Instant::now() + WAIT;
            let (call_ns, all, return_ns) = loop {
                let call_ns = self.now();
                match read_all_at(url).await {
                    Ok(all) => break (call_ns, all, self.now()),
                    Err(e) => assert!(
                        tokio::time::Instant::now() < deadline,
                        "member {i} did not serve a read within the wait: {e}"
                    ),
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            };
            let mut values = BTreeMap::new();
            for key in &keys {
                let value = all.get(key).cloned();
                let op = self
                    .recorder
                    .call(100 + i as u64, KvInput::get(key.as_str()), call_ns);
                self.recorder
                    .ok(op, return_ns, Some(KvOutput::Value(value.clone())));
                values.insert(key.clone(), value);
            }
            seen.push(values);
        }
        for key in &keys {
            let values: Vec<&Option<String>> = seen.iter().map(|m| &m[key]).collect();
            assert!(
                values.iter().all(|v| *v == values[0]),
                "the members disagree on {key} after the crashes: {values:?}"
            );
        }
        seen.swap_remove(0)
    }
}

/// Whether `o` is a write the client saw take effect.
pub fn acked_write(o: &Operation) -> bool {
    o.outcome == Outcome::Ok
        && match o.op {
            OpKind::Put | OpKind::Delete => true,
            OpKind::Cas => o.output.as_ref().and_then(|out| out.succeeded) == Some(true),
            OpKind::Get => false,
        }
}

/// Acknowledged writes that are neither visible at the end nor
/// overwritten. The final value of a key comes from some write (values
/// are unique; `None` comes from a delete, or from no write at all); that
/// write took effect before it returned, so an acknowledged write that was
/// sent after it returned must be visible instead. Returns one line per
/// lost write. (The linearizability check covers this and more; this one
/// names the write.)
pub fn lost_writes(history: &History, finals: &BTreeMap<String, Option<String>>) -> Vec<String> {
    let mut lost = Vec::new();
    for (key, last) in finals {
        let on_key: Vec<&Operation> = history
            .operations
            .iter()
            .filter(|o| &o.key == key && o.outcome != Outcome::Fail)
            .collect();
        let may_have_written = |o: &Operation| match (o.op, last) {
            (OpKind::Put, Some(v)) => o.value.as_ref() == Some(v),
            (OpKind::Cas, Some(v)) => {
                o.value.as_ref() == Some(v)
                    && o.output.as_ref().and_then(|out| out.succeeded) != Some(false)
            }
            (OpKind::Delete, None) => true,
            _ => false,
        };
        let writers: Vec<&&Operation> = on_key.iter().filter(|o| may_have_written(o)).collect();
        if last.is_some() && writers.is_empty() {
            lost.push(format!("{key}: the final value {last:?} was never written"));
            continue;
        }
        // The latest the final value can have been written; an unknown
        // outcome may take effect at any time.
        let written_by = writers
            .iter()
            .map(|o| o.return_ns.unwrap_or(u64::MAX))
            .max()
            .unwrap_or(0);
        for o in &on_key {
            if acked_write(o) && !may_have_written(o) && o.call_ns > written_by {
                lost.push(format!(
                    "{key}: acknowledged {:?} {:?} (client {}, call {} ns, return {:?} ns) is \
                     lost: the final value {last:?} was written by {} ns",
                    o.op, o.value, o.client_id, o.call_ns, o.return_ns, written_by
                ));
            }
        }
    }
    lost
}

pub fn count_acked_writes(history: &History) -> usize {
    history.operations.iter().filter(|o| acked_write(o)).count()
}

/// Operation counts, for the log and failure messages.
pub fn summarize(history: &History) -> String {
    let count = |f: &dyn Fn(&Operation) -> bool| history.operations.iter().filter(|o| f(o)).count();
    format!(
        "{} operations: {} acknowledged writes, {} writes of unknown outcome, {} reads",
        history.operations.len(),
        count_acked_writes(history),
        count(&|o| o.op != OpKind::Get && o.outcome == Outcome::Unknown),
        count(&|o| o.op == OpKind::Get && o.outcome == Outcome::Ok),
    )
}

#[cfg(test)]
mod lost_writes_tests {
    use super::*;
    use flotilla_tests::linearizability::HistoryRecorder;

    fn finals(pairs: &[(&str, Option<&str>)]) -> BTreeMap<String, Option<String>> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.map(str::to_string)))
            .collect()
    }

    #[test]
    fn an_acknowledged_write_that_vanished_is_named() {
        let r = HistoryRecorder::new();
        let a = r.call(0, KvInput::put("k", "a"), 10);
        r.ok(a, 20, None);
        let b = r.call(1, KvInput::put("k", "b"), 30);
        r.ok(b, 40, None);
        let own = r.call(1, KvInput::put("d/1/1", "x"), 50);
        r.ok(own, 60, None);
        let h = r.history();
        // "b" was sent after "a" returned: seeing "a" at the end loses "b".
        let lost = lost_writes(&h, &finals(&[("k", Some("a")), ("d/1/1", Some("x"))]));
        assert_eq!(lost.len(), 1, "{lost:?}");
        assert!(lost[0].contains("\"b\""), "{lost:?}");
        // An acknowledged key of its own that is gone.
        let lost = lost_writes(&h, &finals(&[("k", Some("b")), ("d/1/1", None)]));
        assert_eq!(lost.len(), 1, "{lost:?}");
        assert!(lost[0].starts_with("d/1/1"), "{lost:?}");
        // A value nobody wrote.
        let lost = lost_writes(&h, &finals(&[("k", Some("zz")), ("d/1/1", Some("x"))]));
        assert_eq!(lost.len(), 1, "{lost:?}");
        assert!(lost[0].contains("never written"), "{lost:?}");
        assert!(lost_writes(&h, &finals(&[("k", Some("b")), ("d/1/1", Some("x"))])).is_empty());
    }

    #[test]
    fn concurrent_and_unknown_writes_may_win() {
        let r = HistoryRecorder::new();
        let a = r.call(0, KvInput::put("k", "a"), 10);
        let b = r.call(1, KvInput::put("k", "b"), 15);
        r.ok(a, 30, None);
        r.ok(b, 35, None);
        // Overlapping: either may be last.
        let h = r.history();
        assert!(lost_writes(&h, &finals(&[("k", Some("a"))])).is_empty());
        assert!(lost_writes(&h, &finals(&[("k", Some("b"))])).is_empty());
        // A write of unknown outcome may take effect after everything.
        let c = r.call(2, KvInput::put("k", "c"), 20);
        r.unknown(c);
        let d = r.call(0, KvInput::put("k", "d"), 40);
        r.ok(d, 50, None);
        assert!(lost_writes(&r.history(), &finals(&[("k", Some("c"))])).is_empty());
        // A delete that returned before an acknowledged put cannot win.
        let r = HistoryRecorder::new();
        let del = r.call(0, KvInput::delete("k"), 10);
        r.ok(del, 20, None);
        let p = r.call(1, KvInput::put("k", "p"), 30);
        r.ok(p, 40, None);
        assert_eq!(lost_writes(&r.history(), &finals(&[("k", None)])).len(), 1);
    }
}
