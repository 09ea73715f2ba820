//! Auto-compaction in bounded batches, checked against a model that keeps
//! every version and says what a store compacted at the same point must
//! show: reads at every retained revision, watch history, size and live
//! count. Seeded, bounded; a failure names the seed and step.

use super::store_tests::Harness;
use super::*;
use flotilla_proto::etcdserverpb::request_op::Request;
use flotilla_proto::etcdserverpb::{
    CompactionRequest, DeleteRangeRequest, LeaseGrantRequest, LeaseRevokeRequest, PutRequest,
    RangeRequest, RequestOp, TxnRequest,
};
use flotilla_proto::mvccpb::event::EventType;
use flotilla_proto::mvccpb::{Event, KeyValue};
use std::collections::BTreeMap;

/// xorshift64*: enough randomness, no dependency.
pub(super) struct Rng(pub(super) u64);

impl Rng {
    pub(super) fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}

/// A live version: value, create revision, version, lease.
type Live = (Vec<u8>, i64, i64, i64);

/// A change: main, sub, and the version written or `None` for a deletion.
type Change = (i64, i64, Option<Live>);

/// Every change ever made, by key.
#[derive(Default)]
struct Model {
    history: BTreeMap<Vec<u8>, Vec<Change>>,
    revision: i64,
}

impl Model {
    fn latest(&self, key: &[u8]) -> Option<&Live> {
        self.history.get(key)?.last()?.2.as_ref()
    }

    fn put(&mut self, main: i64, sub: i64, key: &[u8], value: &[u8], lease: i64) {
        let (create, version) = self
            .latest(key)
            .map_or((main, 1), |(_, c, v, _)| (*c, v + 1));
        let live = (value.to_vec(), create, version, lease);
        self.history
            .entry(key.to_vec())
            .or_default()
            .push((main, sub, Some(live)));
    }

    fn delete(&mut self, main: i64, sub: i64, key: &[u8]) {
        self.history
            .get_mut(key)
            .expect("a live key")
            .push((main, sub, None));
    }

    fn live_in(&self, key: &[u8], end: &[u8]) -> Vec<Vec<u8>> {
        self.history
            .keys()
            .filter(|k| in_range(k, key, end) && self.latest(k).is_some())
            .cloned()
            .collect()
    }

    fn kv(key: &[u8], main: i64, (value, create, version, lease): &Live) -> KeyValue {
        KeyValue {
            key: key.to_vec(),
            create_revision: *create,
            mod_revision: main,
            version: *version,
            value: value.clone(),
            lease: *lease,
        }
    }

    /// Every key live at `at`, in key order.
    fn range(&self, at: i64) -> Vec<KeyValue> {
        self.history
            .iter()
            .filter_map(|(k, h)| {
                let (main, _, v) = h.iter().rev().find(|(m, _, _)| *m <= at)?;
                v.as_ref().map(|live| Self::kv(k, *main, live))
            })
            .collect()
    }

    /// Watch history from `start`, as a store compacted at `compacted`
    /// holds it: at the compaction point a deletion is gone and a change
    /// has lost what it replaced.
    fn events(&self, start: i64, compacted: i64) -> Vec<Event> {
        let mut changes: Vec<(i64, i64, Event)> = Vec::new();
        for (k, h) in &self.history {
            for (j, (main, sub, v)) in h.iter().enumerate() {
                if *main < start || (*main == compacted && v.is_none()) {
                    continue;
                }
                let prev_kv = j
                    .checked_sub(1)
                    .filter(|_| *main != compacted)
                    .and_then(|p| h[p].2.as_ref().map(|live| Self::kv(k, h[p].0, live)));
                let (ty, kv) = match v {
                    Some(live) => (EventType::Put, Self::kv(k, *main, live)),
                    None => (
                        EventType::Delete,
                        KeyValue {
                            key: k.clone(),
                            mod_revision: *main,
                            ..Default::default()
                        },
                    ),
                };
                let event = Event {
                    r#type: ty as i32,
                    kv: Some(kv),
                    prev_kv,
                };
                changes.push((*main, *sub, event));
            }
        }
        changes.sort_by_key(|(main, sub, _)| (*main, *sub));
        changes.into_iter().map(|(_, _, e)| e).collect()
    }

    /// `size_bytes` of a store compacted at `compacted`: per key, its
    /// versions after the point and its live one at it.
    fn size_bytes(&self, compacted: i64) -> u64 {
        let mut size = 0;
        for (k, h) in &self.history {
            let kept_at_point = h
                .iter()
                .rev()
                .find(|(m, _, _)| *m <= compacted)
                .filter(|(_, _, v)| v.is_some());
            let kept: Vec<_> = kept_at_point
                .into_iter()
                .chain(h.iter().filter(|(m, _, _)| *m > compacted))
                .collect();
            if kept.is_empty() {
                continue;
            }
            size += mvcc::key_bytes(k);
            for (_, _, v) in kept {
                let value_len = v.as_ref().map_or(0, |live| live.0.len());
                size += value_len as u64 + mvcc::VERSION_OVERHEAD_BYTES;
            }
        }
        size
    }
}

fn put_op(key: &[u8], value: &[u8], lease: i64) -> PutRequest {
    PutRequest {
        key: key.to_vec(),
        value: value.to_vec(),
        lease,
        ..Default::default()
    }
}

const KEYS: usize = 40;

fn key(i: u64) -> Vec<u8> {
    format!("k{i:02}").into_bytes()
}

/// One random write, applied to the store and the model alike.
fn write(rng: &mut Rng, h: &mut Harness, m: &mut Model, leases: &mut Vec<i64>, ctx: &str) {
    let main = m.revision + 1;
    match rng.below(41) {
        0..=21 => {
            let k = key(rng.below(KEYS as u64));
            let v = vec![b'v'; rng.below(20) as usize];
            let lease = match leases.len() {
                0 => 0,
                n if rng.below(4) == 0 => leases[rng.below(n as u64) as usize],
                _ => 0,
            };
            h.op(KvOp::Put(put_op(&k, &v, lease))).result.expect(ctx);
            m.put(main, 0, &k, &v, lease);
        }
        22..=29 => {
            // A range of up to every key: revisions bigger than the batch.
            let from = rng.below(KEYS as u64);
            let (k, end) = if rng.below(3) == 0 {
                (key(from), Vec::new())
            } else {
                (key(from), key(from + 1 + rng.below(KEYS as u64)))
            };
            let prev_kv = rng.below(2) == 0;
            let out = h.op(KvOp::DeleteRange(DeleteRangeRequest {
                key: k.clone(),
                range_end: end.clone(),
                prev_kv,
            }));
            let Ok(KvResponse::DeleteRange(d)) = out.result else {
                panic!("{ctx}: {:?}", out.result)
            };
            let doomed = m.live_in(&k, &end);
            let want_prev: Vec<KeyValue> = m
                .range(m.revision)
                .into_iter()
                .filter(|kv| doomed.contains(&kv.key))
                .collect();
            assert_eq!(d.deleted, doomed.len() as i64, "{ctx}");
            assert_eq!(
                d.prev_kvs,
                if prev_kv { want_prev } else { Vec::new() },
                "{ctx}"
            );
            for (sub, k) in doomed.iter().enumerate() {
                m.delete(main, sub as i64, k);
            }
        }
        30..=33 => {
            // Many puts in one revision.
            let n = 1 + rng.below(12);
            let first = rng.below(KEYS as u64);
            let keys: Vec<Vec<u8>> = (0..n).map(|i| key((first + i) % KEYS as u64)).collect();
            let success = keys
                .iter()
                .map(|k| RequestOp {
                    request: Some(Request::RequestPut(put_op(k, b"t", 0))),
                })
                .collect();
            h.op(KvOp::Txn(TxnRequest {
                success,
                ..Default::default()
            }))
            .result
            .expect(ctx);
            for (sub, k) in keys.iter().enumerate() {
                m.put(main, sub as i64, k, b"t", 0);
            }
        }
        34..=35 => {
            let id = 100 + rng.below(1000) as i64;
            if !leases.contains(&id) {
                h.op(KvOp::LeaseGrant(LeaseGrantRequest { ttl: 10, id }))
                    .result
                    .expect(ctx);
                leases.push(id);
            }
        }
        36..=37 if !leases.is_empty() => {
            let id = leases.swap_remove(rng.below(leases.len() as u64) as usize);
            h.op(KvOp::LeaseRevoke(LeaseRevokeRequest { id }))
                .result
                .expect(ctx);
            let doomed: Vec<Vec<u8>> = m
                .history
                .keys()
                .filter(|k| m.latest(k).is_some_and(|l| l.3 == id))
                .cloned()
                .collect();
            for (sub, k) in doomed.iter().enumerate() {
                m.delete(main, sub as i64, k);
            }
        }
        40 => {
            // Now and then, an explicit Compact a little ahead of the
            // automatic one (which must then catch up to it).
            let c = h.s.compact_revision();
            if m.revision > c + 1 {
                let at = c + 1 + rng.below((m.revision - c).min(20) as u64) as i64;
                h.op(KvOp::Compaction(CompactionRequest {
                    revision: at,
                    physical: false,
                }))
                .result
                .expect(ctx);
                assert_eq!(h.s.compact_revision(), at, "{ctx}");
                assert!(!h.s.mvcc().compaction_pending(), "{ctx}");
            }
        }
        _ => {}
    }
    if h.s.revision() > m.revision {
        m.revision = h.s.revision();
    }
    assert_eq!(h.s.revision(), m.revision, "{ctx}");
}

/// What the store shows against what the model says it must.
fn check(rng: &mut Rng, h: &Harness, m: &Model, ctx: &str) {
    let (c, rev) = (h.s.compact_revision(), h.s.revision());
    let mvcc = h.s.mvcc();
    assert_eq!(mvcc.size_bytes(), mvcc.size_bytes_recounted(), "{ctx}");
    assert_eq!(mvcc.live_key_count(), mvcc.live_keys_recounted(), "{ctx}");
    let (held, recounted) = mvcc.released_held_recounted();
    assert_eq!(held, recounted, "{ctx}: released versions held");
    assert_eq!(
        mvcc.live_key_count(),
        m.range(rev).len() as u64,
        "{ctx}: live keys"
    );
    if mvcc.compaction_pending() {
        // A split revision's superseded versions are still held.
        assert!(mvcc.size_bytes() >= m.size_bytes(c), "{ctx}: size");
    } else {
        assert_eq!(mvcc.size_bytes(), m.size_bytes(c), "{ctx}: size");
    }
    let all = |at: i64| RangeRequest {
        key: vec![0],
        range_end: vec![0],
        revision: at,
        ..Default::default()
    };
    if c > 1 {
        assert!(
            matches!(h.s.range(&all(c - 1)), Err(KvError::Compacted { .. })),
            "{ctx}"
        );
        assert!(
            matches!(
                h.s.events(b"", &[0], c - 1, usize::MAX),
                Err(KvError::Compacted { .. })
            ),
            "{ctx}"
        );
    }
    let span = (rev - c + 1) as u64;
    for at in [c.max(1), rev, c.max(1) + rng.below(span) as i64] {
        let at = at.min(rev);
        let got = h.s.range(&all(at)).expect(ctx).kvs;
        assert_eq!(got, m.range(at), "{ctx}: range at {at} (compacted at {c})");
    }
    for start in [c, c + rng.below(span) as i64] {
        let got = h.s.events(b"", &[0], start, usize::MAX).expect(ctx);
        assert_eq!(got, m.events(start.max(1), c), "{ctx}: events from {start}");
    }
}

/// Runs random writes on a store with a short history (300 revisions: it
/// compacts every 3) and a batch of 1 to 5 entries, against the model;
/// every 50 steps the store is replaced by its snapshot, restored.
fn run(seed: u64, steps: usize) {
    let mut rng = Rng(seed);
    let batch = 1 + rng.below(5) as usize;
    let config = KvConfig {
        retain_revisions: 300,
        compaction_batch_max: batch,
        ..KvConfig::default()
    };
    let mut h = Harness::with(config.clone());
    let mut m = Model {
        revision: 1,
        ..Model::default()
    };
    let mut leases = Vec::new();
    let mut splits = 0;
    for step in 0..steps {
        let ctx =
            format!("seed {seed} step {step} (batch {batch}): replay with run({seed}, {steps})");
        write(&mut rng, &mut h, &mut m, &mut leases, &ctx);
        splits += usize::from(h.s.mvcc().compaction_pending());
        if step % 7 == 0 {
            check(&mut rng, &h, &m, &ctx);
        }
        if step % 50 == 49 {
            let bytes = h.s.encode_snapshot();
            let restored = KvStore::decode_snapshot(config.clone(), &bytes).expect(&ctx);
            assert_eq!(restored, h.s, "{ctx}: restored");
            h.s = restored;
        }
    }
    assert!(h.s.compact_revision() > 1, "seed {seed}: compacted");
    assert!(
        splits > 0,
        "seed {seed}: a revision was compacted in pieces"
    );
}

#[test]
fn batched_compaction_shows_what_compaction_at_its_point_shows() {
    for seed in 1..=12 {
        run(seed, 1500);
    }
}

/// A store past its history bound: `keys` keys deleted in one revision,
/// then more puts than the history keeps.
fn past_a_big_delete(config: KvConfig, keys: usize) -> Harness {
    let mut h = Harness::with(config);
    for i in 0..keys {
        h.put(&format!("big/{i:05}"), "v");
    }
    h.del("big/", "big0");
    h
}

#[test]
fn no_write_compacts_more_than_its_batch() {
    let batch = 50;
    let config = KvConfig {
        retain_revisions: 1000,
        compaction_batch_max: batch,
        ..KvConfig::default()
    };
    let mut h = past_a_big_delete(config, 600);
    let mut most = 0;
    let mut writes = 0;
    while h.s.mvcc().key_count() > 1 {
        let before = h.s.mvcc().clone();
        h.put("small", "v");
        writes += 1;
        // Keys compaction changed: every key the put did not write.
        let touched = h.s.mvcc().keys_changed_since(&before) - 1;
        most = most.max(touched);
        assert!(touched <= batch, "put {writes} compacted {touched} keys");
        assert!(writes < 5000, "the big revision is compacted in the end");
    }
    // The 600 puts' and the delete's revisions, in batches.
    assert!(most > 0 && writes > 600 / batch, "{writes} writes");
    assert!(!h.s.mvcc().compaction_pending());
}

#[test]
fn compaction_waits_for_one_percent_more_history_then_catches_up() {
    let config = KvConfig {
        retain_revisions: 1000,
        ..KvConfig::default()
    };
    let mut h = Harness::with(config);
    let mut points = Vec::new();
    for i in 0..3000 {
        h.put(&format!("k{}", i % 7), "v");
        points.push(h.s.compact_revision());
    }
    points.dedup();
    // Once 1 % (10) revisions more than kept, every 10 revisions.
    assert_eq!(points[..3], [0, 10, 20]);
    assert_eq!(h.s.revision(), 3001);
    assert_eq!(h.s.compact_revision(), 2000);
    // The history bound and what is kept read as before.
    assert!(h.get_at("k0", h.s.compact_revision() - 1).is_err());
    assert!(h.get_at("k0", h.s.compact_revision()).is_ok());
}

#[test]
fn replicas_and_a_restored_replica_compact_alike() {
    let config = KvConfig {
        retain_revisions: 200,
        compaction_batch_max: 7,
        ..KvConfig::default()
    };
    let mut a = past_a_big_delete(config.clone(), 300);
    let mut b = past_a_big_delete(config.clone(), 300);
    let mut restored_mid_split = false;
    for i in 0..400 {
        for h in [&mut a, &mut b] {
            h.put(&format!("p{}", i % 13), &i.to_string());
        }
        assert_eq!(a.s, b.s, "after put {i}");
        if a.s.mvcc().compaction_pending() && !restored_mid_split {
            // b restarts from a snapshot taken in the middle of a split
            // revision, and goes on as a replica that never stopped.
            let bytes = b.s.encode_snapshot();
            b.s = KvStore::decode_snapshot(config.clone(), &bytes).unwrap();
            restored_mid_split = true;
        }
    }
    assert!(restored_mid_split);
    assert_eq!(a.s.encode_snapshot(), b.s.encode_snapshot());
}

/// A store whose compaction point is on the revision of a delete of 100
/// keys, ten keys a write, partly compacted; and that revision.
fn splitting_a_big_delete() -> (Harness, i64) {
    let config = KvConfig {
        retain_revisions: 100,
        compaction_batch_max: 10,
        ..KvConfig::default()
    };
    let mut h = past_a_big_delete(config, 100);
    let big = h.s.revision();
    while h.s.compact_revision() < big {
        h.put("x", "v");
    }
    assert!(h.s.mvcc().compaction_pending());
    assert_eq!(h.s.compact_revision(), big);
    (h, big)
}

#[test]
fn watch_history_from_a_split_revision_shows_it_compacted() {
    let (h, big) = splitting_a_big_delete();
    // Its deletions are gone, as the finished compaction will have them.
    let events = h.s.events(b"big/", b"big0", big, usize::MAX).unwrap();
    assert_eq!(events, Vec::new());
    assert!(h.get_at("big/00001", big).unwrap().is_none());
    assert!(h.get_at("big/00001", big - 1).is_err());
}

#[test]
fn entries_without_batches_compact_every_write_as_before() {
    let config = KvConfig {
        retain_revisions: 1000,
        compaction_batch_max: 50,
        ..KvConfig::default()
    };
    let mut h = Harness::with(config);
    h.batched = false;
    for i in 0..3000 {
        h.put(&format!("k{}", i % 7), "v");
        // The previous release's rule: every write keeps exactly the bound.
        assert_eq!(
            h.s.compact_revision(),
            (h.s.revision() - 1000).max(0),
            "put {i}"
        );
    }
}

#[test]
fn an_entry_without_batches_finishes_a_split_revision() {
    let (mut h, _) = splitting_a_big_delete();
    // A leader that no longer knows every member understands batches (a
    // member of the previous release joined) proposes without them: that
    // entry compacts all of the history past the bound, as the previous
    // release does, so the replicas agree again from there on.
    h.batched = false;
    h.put("x", "v");
    assert!(!h.s.mvcc().compaction_pending());
    assert_eq!(h.s.compact_revision(), h.s.revision() - 100);
    assert_eq!(h.s.mvcc().key_count(), 1, "only \"x\" is left");
    assert_eq!(h.s.mvcc().size_bytes(), h.s.mvcc().size_bytes_recounted());
}

#[test]
fn released_versions_keys_still_hold_are_swept() {
    // Keys written five times each, a generation at a time, then never
    // again: each key's last put drops only what was released by then, so
    // without the sweep every generation would leave its older versions
    // held for good.
    let retain = 100;
    let config = KvConfig {
        retain_revisions: retain,
        ..KvConfig::default()
    };
    let mut h = Harness::with(config);
    let value = "v".repeat(200);
    let mut most_held = 0;
    for generation in 0..60 {
        for round in 0..5 {
            for i in 0..40 {
                h.put(&format!("g{generation:02}/{i:02}"), &value);
                let mvcc = h.s.mvcc();
                let (held, recounted) = mvcc.released_held_recounted();
                let ctx = format!("generation {generation}, round {round}, key {i}");
                assert_eq!(held, recounted, "{ctx}");
                assert_eq!(mvcc.size_bytes(), mvcc.size_bytes_recounted(), "{ctx}");
                // Over half only by what the last step released: a
                // version or two (a compaction step per 1 % of the bound).
                let version = 200 + mvcc::VERSION_OVERHEAD_BYTES;
                assert!(
                    held <= mvcc.size_bytes() / 2 + 2 * version,
                    "{ctx}: {held} bytes released but held, store {}",
                    mvcc.size_bytes()
                );
                most_held = most_held.max(held);
            }
        }
    }
    // The bound was reached, so the sweep had work to do.
    assert!(most_held > h.s.mvcc().size_bytes() / 4, "{most_held}");
}
