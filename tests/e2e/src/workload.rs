//! Workloads: clients that run against the cluster while faults happen,
//! and the invariants checked once it has healed.
//!
//! A [`Workload`] starts its clients on the cluster's current endpoints
//! (they follow address changes through the watch channel) and, after they
//! stopped and the cluster converged, verifies what it recorded. The suite
//! holds a list of them and runs them at once: this KV workload and the
//! broker's producers and consumers on a topic with rf=3 and acks=all
//! ([`crate::broker`]).
//!
//! [`KvWorkload`]: concurrent KV clients — puts, gets, deletes and
//! compare-and-set transactions on a few shared keys, and puts to keys of
//! their own — recording a history in the format of `HISTORY.md`. Checks:
//! the history is linearizable (the project's checker, flotilla-tests), no
//! acknowledged write is lost, and every member reads the same final
//! values. Keys carry the fault phase in their name, so the checker's
//! per-key partitions stay small however long the run.

use crate::cluster::channel;
use anyhow::{Context, Result, bail};
use flotilla_client::{Client, ClientConfig};
use flotilla_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use flotilla_proto::etcdserverpb::kv_client::KvClient;
use flotilla_proto::etcdserverpb::request_op::Request as Op;
use flotilla_proto::etcdserverpb::{Compare, PutRequest, RangeRequest, RequestOp, TxnRequest};
use flotilla_tests::linearizability::{
    Budget, History, HistoryRecorder, KvInput, KvOutput, OpKind, Operation, Outcome,
    check_and_report,
};
use futures::future::BoxFuture;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What every workload's clients share.
#[derive(Clone, Debug)]
pub struct WorkloadContext {
    /// The members' client URLs, updated when a pod gets a new address.
    pub endpoints: watch::Receiver<Vec<String>>,
    /// Set when the clients must stop.
    pub stop: Arc<AtomicBool>,
    /// The fault phase now running (keys of different phases differ).
    pub phase: Arc<AtomicU64>,
    /// The run's seed.
    pub seed: u64,
}

/// A workload run during the faults and verified after healing.
pub trait Workload: Send {
    /// Its name, in the summary.
    fn name(&self) -> &str;
    /// Starts the clients; they run until `ctx.stop` is set.
    fn start(&mut self, ctx: &WorkloadContext) -> Vec<JoinHandle<()>>;
    /// After the clients stopped and the cluster healed: checks the
    /// invariants against the members at `endpoints`. `Ok` is a summary
    /// line; `Err` says what was violated.
    fn verify<'a>(&'a mut self, endpoints: &'a [String]) -> BoxFuture<'a, Result<String>>;
}

/// Shared keys per phase: few, so operations contend.
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

/// The KV workload (see the module's text).
#[derive(Debug)]
pub struct KvWorkload {
    name: String,
    clients: u64,
    recorder: Arc<HistoryRecorder>,
    clock: Instant,
}

impl KvWorkload {
    /// `clients` concurrent clients; `name` names the exported history.
    pub fn new(name: &str, clients: u64) -> KvWorkload {
        KvWorkload {
            name: name.to_string(),
            clients,
            recorder: Arc::default(),
            clock: Instant::now(),
        }
    }

    /// The history so far.
    pub fn history(&self) -> History {
        self.recorder.history()
    }
}

fn now(clock: Instant) -> u64 {
    u64::try_from(clock.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// The Txn that sets `key` to `value` iff its value is `expected`
/// (`None`: the key is absent).
fn cas_txn(key: &str, expected: Option<&str>, value: &str) -> TxnRequest {
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

async fn kv_client(
    id: u64,
    mut ctx: WorkloadContext,
    recorder: Arc<HistoryRecorder>,
    clock: Instant,
) {
    let mut rng = SmallRng::seed_from_u64(ctx.seed ^ (id + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let mut client: Option<Client> = None;
    let mut seen: BTreeMap<String, Option<String>> = BTreeMap::new();
    let mut n = 0u64;
    while !ctx.stop.load(Ordering::Relaxed) {
        if client.is_none() || ctx.endpoints.has_changed().unwrap_or(false) {
            let mut urls = ctx.endpoints.borrow_and_update().clone();
            // Clients start at different members.
            let len = urls.len().max(1);
            urls.rotate_left(id as usize % len);
            client = Client::new(&urls, client_config()).ok();
        }
        let Some(c) = client.as_ref() else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        n += 1;
        let phase = ctx.phase.load(Ordering::Relaxed);
        let key = format!("p{phase}/k{}", rng.random_range(0..KEYS));
        match rng.random_range(0..20u32) {
            // Puts, a third of them to a key of their own that nothing
            // overwrites: those must all be there at the end.
            0..9 => {
                let key = if rng.random_bool(0.3) {
                    format!("p{phase}/d/{id}/{n}")
                } else {
                    key
                };
                let v = format!("p{id}.{n}");
                let op = recorder.call(id, KvInput::put(key.as_str(), v.as_str()), now(clock));
                match c.put(key.as_bytes(), v.as_bytes()).await {
                    Ok(_) => recorder.ok(op, now(clock), None),
                    Err(_) => recorder.unknown(op),
                }
            }
            9..15 => {
                let op = recorder.call(id, KvInput::get(key.as_str()), now(clock));
                match c.get(key.as_bytes()).await {
                    Ok(v) => match v.map(String::from_utf8).transpose() {
                        Ok(v) => {
                            seen.insert(key.clone(), v.clone());
                            recorder.ok(op, now(clock), Some(KvOutput::Value(v)));
                        }
                        Err(_) => recorder.fail(op, now(clock)),
                    },
                    Err(_) => recorder.fail(op, now(clock)),
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
                let op = recorder.call(id, input, now(clock));
                match c.txn(cas_txn(&key, expected.as_deref(), &v)).await {
                    Ok(r) => recorder.ok(op, now(clock), Some(KvOutput::Succeeded(r.succeeded))),
                    Err(_) => recorder.unknown(op),
                }
            }
            _ => {
                let op = recorder.call(id, KvInput::delete(key.as_str()), now(clock));
                match c.delete(key.as_bytes()).await {
                    Ok(_) => recorder.ok(op, now(clock), None),
                    Err(_) => recorder.unknown(op),
                }
            }
        }
        // A bounded rate: the history stays checkable in seconds.
        tokio::time::sleep(Duration::from_millis(rng.random_range(2..12))).await;
    }
}

/// One linearizable Range of every key at `url`: key → value.
async fn read_all_at(url: &str) -> Result<BTreeMap<String, String>> {
    let mut req = tonic::Request::new(RangeRequest {
        key: vec![0],
        range_end: vec![0],
        ..RangeRequest::default()
    });
    req.set_timeout(Duration::from_secs(3));
    let mut kv = KvClient::new(channel(url));
    let r = kv.range(req).await?.into_inner();
    r.kvs
        .into_iter()
        .map(|kv| Ok((String::from_utf8(kv.key)?, String::from_utf8(kv.value)?)))
        .collect()
}

impl Workload for KvWorkload {
    fn name(&self) -> &str {
        &self.name
    }

    fn start(&mut self, ctx: &WorkloadContext) -> Vec<JoinHandle<()>> {
        (0..self.clients)
            .map(|id| {
                tokio::spawn(kv_client(
                    id,
                    ctx.clone(),
                    self.recorder.clone(),
                    self.clock,
                ))
            })
            .collect()
    }

    fn verify<'a>(&'a mut self, endpoints: &'a [String]) -> BoxFuture<'a, Result<String>> {
        Box::pin(async move {
            // Final reads: one linearizable Range at each member, recorded
            // as a get of every key the clients touched (client 100 + i).
            let keys: BTreeSet<String> = self
                .recorder
                .history()
                .operations
                .into_iter()
                .map(|o| o.key)
                .collect();
            let mut seen: Vec<BTreeMap<String, Option<String>>> = Vec::new();
            for (i, url) in endpoints.iter().enumerate() {
                let mut tries = 0;
                let (call_ns, all, return_ns) = loop {
                    let call_ns = now(self.clock);
                    match read_all_at(url).await {
                        Ok(all) => break (call_ns, all, now(self.clock)),
                        Err(e) if tries >= 50 => {
                            return Err(e).with_context(|| format!("final read at {url}"));
                        }
                        Err(_) => tries += 1,
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                };
                let mut values = BTreeMap::new();
                for key in &keys {
                    let value = all.get(key).cloned();
                    let op =
                        self.recorder
                            .call(100 + i as u64, KvInput::get(key.as_str()), call_ns);
                    self.recorder
                        .ok(op, return_ns, Some(KvOutput::Value(value.clone())));
                    values.insert(key.clone(), value);
                }
                seen.push(values);
            }
            let mut problems = Vec::new();
            for key in &keys {
                let values: Vec<&Option<String>> = seen.iter().map(|m| &m[key]).collect();
                if values.iter().any(|v| *v != values[0]) {
                    problems.push(format!("the members disagree on {key}: {values:?}"));
                }
            }
            let history = self.recorder.history();
            if let Some(finals) = seen.first() {
                problems.extend(lost_writes(&history, finals));
            }
            let seed = u64::from(std::process::id());
            let report = check_and_report(&history, Budget::default(), &self.name, seed)
                .context("a well-formed history")?;
            if !report.is_ok() {
                problems.push(format!("the history is not linearizable: {report}"));
            }
            if !problems.is_empty() {
                bail!("{}: {}", self.name, problems.join("; "));
            }
            Ok(format!(
                "{}: {}; linearizable; no acknowledged write lost; {} members agree on {} keys",
                self.name,
                summarize(&history),
                endpoints.len(),
                keys.len()
            ))
        })
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
/// overwritten (the rule of node/server/tests/common/workload.rs): the
/// final value of a key comes from some write (values are unique); that
/// write took effect before it returned, so an acknowledged write sent
/// after it returned must be visible instead. One line per lost write.
pub fn lost_writes(history: &History, finals: &BTreeMap<String, Option<String>>) -> Vec<String> {
    let mut lost = Vec::new();
    for (key, last) in finals {
        let on_key: Vec<&Operation> = history
            .operations
            .iter()
            .filter(|o| &o.key == key && o.outcome != Outcome::Fail && o.client_id < 100)
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
        let written_by = writers
            .iter()
            .map(|o| o.return_ns.unwrap_or(u64::MAX))
            .max()
            .unwrap_or(0);
        for o in &on_key {
            if acked_write(o) && !may_have_written(o) && o.call_ns > written_by {
                lost.push(format!(
                    "{key}: acknowledged {:?} {:?} (client {}, call {} ns) is lost: the final \
                     value {last:?} was written by {written_by} ns",
                    o.op, o.value, o.client_id, o.call_ns
                ));
            }
        }
    }
    lost
}

/// Operation counts.
pub fn summarize(history: &History) -> String {
    let count = |f: &dyn Fn(&Operation) -> bool| history.operations.iter().filter(|o| f(o)).count();
    format!(
        "{} operations ({} acknowledged writes, {} writes of unknown outcome, {} reads)",
        history.operations.len(),
        count(&acked_write),
        count(&|o| o.op != OpKind::Get && o.outcome == Outcome::Unknown),
        count(&|o| o.op == OpKind::Get && o.outcome == Outcome::Ok),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finals(pairs: &[(&str, Option<&str>)]) -> BTreeMap<String, Option<String>> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.map(str::to_string)))
            .collect()
    }

    #[test]
    fn a_lost_acknowledged_write_is_named() {
        let r = HistoryRecorder::new();
        let a = r.call(0, KvInput::put("k", "a"), 10);
        r.ok(a, 20, None);
        let b = r.call(1, KvInput::put("k", "b"), 30);
        r.ok(b, 40, None);
        let h = r.history();
        let lost = lost_writes(&h, &finals(&[("k", Some("a"))]));
        assert_eq!(lost.len(), 1, "{lost:?}");
        assert!(lost[0].contains("\"b\""), "{lost:?}");
        assert!(lost_writes(&h, &finals(&[("k", Some("b"))])).is_empty());
        assert_eq!(lost_writes(&h, &finals(&[("k", Some("z"))])).len(), 1);
    }

    #[test]
    fn an_unknown_write_may_win() {
        let r = HistoryRecorder::new();
        let c = r.call(2, KvInput::put("k", "c"), 20);
        r.unknown(c);
        let d = r.call(0, KvInput::put("k", "d"), 40);
        r.ok(d, 50, None);
        assert!(lost_writes(&r.history(), &finals(&[("k", Some("c"))])).is_empty());
    }
}
