//! A randomized check of the store against a simple model: the whole key
//! space copied at every revision. Seeded, bounded, and a failure names
//! the seed and step.

use super::store_tests::Harness;
use super::*;
use flotilla_proto::etcdserverpb::{CompactionRequest, DeleteRangeRequest, RangeRequest};
use flotilla_proto::mvccpb::event::EventType;
use flotilla_proto::mvccpb::{Event, KeyValue};
use std::collections::{BTreeMap, BTreeSet};

/// (value, create_revision, mod_revision, version)
type Model = BTreeMap<Vec<u8>, (Vec<u8>, i64, i64, i64)>;

/// xorshift64*: enough randomness, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const KEYS: [&str; 5] = ["a", "b", "c", "d", "e"];

/// (key, value, create_revision, mod_revision, version)
type Row = (Vec<u8>, Vec<u8>, i64, i64, i64);

fn model_range(m: &Model, key: &[u8], end: &[u8]) -> Vec<Row> {
    m.iter()
        .filter(|(k, _)| in_range(k, key, end))
        .map(|(k, (v, c, md, ver))| (k.clone(), v.clone(), *c, *md, *ver))
        .collect()
}

fn model_kv(key: &[u8], (value, create, md, version): &(Vec<u8>, i64, i64, i64)) -> KeyValue {
    KeyValue {
        key: key.to_vec(),
        create_revision: *create,
        mod_revision: *md,
        version: *version,
        value: value.clone(),
        lease: 0,
    }
}

/// Watch catch-up over every key from `start`, as the model's changes say.
/// A change at the compaction point itself has lost what it replaced (no
/// `prev_kv`), and a deletion there is gone with its tombstone, as in etcd.
fn model_events(history: &[Model], compacted: i64, start: i64) -> Vec<Event> {
    let mut out = Vec::new();
    for r in start.max(2)..history.len() as i64 {
        let (before, after) = (&history[r as usize - 1], &history[r as usize]);
        let keys: BTreeSet<&Vec<u8>> = before.keys().chain(after.keys()).collect();
        for k in keys {
            let (b, a) = (before.get(k), after.get(k));
            if b == a {
                continue;
            }
            let prev_kv = b.filter(|_| r > compacted).map(|x| model_kv(k, x));
            match a {
                Some(x) => out.push(Event {
                    r#type: EventType::Put as i32,
                    kv: Some(model_kv(k, x)),
                    prev_kv,
                }),
                None if r > compacted => out.push(Event {
                    r#type: EventType::Delete as i32,
                    kv: Some(KeyValue {
                        key: k.clone(),
                        mod_revision: r,
                        ..Default::default()
                    }),
                    prev_kv,
                }),
                None => {}
            }
        }
    }
    out
}

fn rows(kvs: Vec<KeyValue>) -> Vec<Row> {
    kvs.into_iter()
        .map(|kv| {
            (
                kv.key,
                kv.value,
                kv.create_revision,
                kv.mod_revision,
                kv.version,
            )
        })
        .collect()
}

fn run(seed: u64, steps: usize) {
    let mut rng = Rng(seed.max(1));
    let mut h = Harness::new();
    // history[r] = the model at revision r (index 0 unused).
    let mut history: Vec<Model> = vec![Model::new(), Model::new()];
    let mut compacted = 0i64;
    let mut frozen: Option<(KvView, i64)> = None;
    for step in 0..steps {
        let ctx = format!("seed {seed} step {step}: replay with run({seed}, {steps})");
        let mut m = history.last().unwrap().clone();
        let rev = history.len() as i64 - 1;
        assert_eq!(h.s.revision(), rev, "{ctx}");
        let size = h.s.mvcc().size_bytes();
        assert_eq!(size, h.s.mvcc().size_bytes_recounted(), "{ctx}");
        let live = h.s.mvcc().live_key_count();
        assert_eq!(live, h.s.mvcc().live_keys_recounted(), "{ctx}");
        assert_eq!(live, m.len() as u64, "{ctx}");
        // A view taken earlier still reads its own revision, whatever was
        // written since (the trees are copied on write, never changed).
        if let Some((view, at)) = &frozen {
            let got = view.range(&RangeRequest {
                key: vec![0],
                range_end: vec![0],
                ..Default::default()
            });
            let want = model_range(&history[*at as usize], &[0], &[0]);
            assert_eq!(rows(got.kvs), want, "{ctx}: the view of revision {at}");
            assert_eq!(got.header.unwrap().revision, *at, "{ctx}");
        }
        if step % 25 == 0 {
            frozen = Some((h.s.view(), rev));
        }
        let k = KEYS[rng.below(5) as usize];
        match rng.below(10) {
            0..=4 => {
                let v = format!("{}", rng.below(100));
                h.put(k, &v);
                let new_rev = rev + 1;
                let e = m.entry(k.into()).or_insert((Vec::new(), new_rev, 0, 0));
                *e = (v.into_bytes(), e.1, new_rev, e.3 + 1);
                history.push(m);
            }
            5..=6 => {
                let end = if rng.below(2) == 0 {
                    String::new()
                } else {
                    KEYS[rng.below(5) as usize].to_string()
                };
                let out = h.op(KvOp::DeleteRange(DeleteRangeRequest {
                    key: k.into(),
                    range_end: end.clone().into(),
                    prev_kv: false,
                }));
                let doomed: Vec<_> = model_range(&m, k.as_bytes(), end.as_bytes())
                    .into_iter()
                    .map(|x| x.0)
                    .collect();
                let KvResponse::DeleteRange(d) = out.result.unwrap() else {
                    panic!("{ctx}")
                };
                assert_eq!(d.deleted as usize, doomed.len(), "{ctx}");
                if !doomed.is_empty() {
                    for d in doomed {
                        m.remove(&d);
                    }
                    history.push(m);
                }
            }
            7 if rev > compacted + 2 => {
                let at = compacted + 1 + rng.below((rev - compacted) as u64) as i64;
                h.op(KvOp::Compaction(CompactionRequest {
                    revision: at,
                    physical: false,
                }))
                .result
                .unwrap();
                compacted = at;
            }
            _ => {
                let end = if rng.below(2) == 0 {
                    vec![0]
                } else {
                    KEYS[rng.below(5) as usize].as_bytes().to_vec()
                };
                let at = rng.below(rev as u64 + 2) as i64;
                let descend = rng.below(3) == 0;
                let req = RangeRequest {
                    key: k.into(),
                    range_end: end.clone(),
                    revision: at,
                    limit: rng.below(4) as i64,
                    keys_only: rng.below(3) == 0,
                    count_only: rng.below(4) == 0,
                    sort_order: if descend { 2 } else { rng.below(2) as i32 },
                    ..Default::default()
                };
                // The same answer from the store and from a view of it.
                let got = h.s.range(&req);
                if let Ok(view) = h.s.range_view(&req) {
                    assert_eq!(Ok(view.range(&req)), got, "{ctx}: view");
                }
                if at > rev {
                    assert_eq!(got, Err(KvError::FutureRevision), "{ctx}");
                } else if at != 0 && at < compacted {
                    assert!(matches!(got, Err(KvError::Compacted { .. })), "{ctx}");
                } else {
                    let model = &history[if at == 0 { rev } else { at } as usize];
                    let mut want = model_range(model, k.as_bytes(), &end);
                    let got = got.unwrap();
                    assert_eq!(got.count, want.len() as i64, "{ctx}");
                    if req.count_only {
                        want.clear();
                    }
                    if descend {
                        want.reverse();
                    }
                    let cut = req.limit > 0 && want.len() > req.limit as usize;
                    if cut {
                        want.truncate(req.limit as usize);
                    }
                    if req.keys_only {
                        for row in &mut want {
                            row.1.clear();
                        }
                    }
                    assert_eq!(got.more, cut, "{ctx}");
                    assert_eq!(rows(got.kvs), want, "{ctx}");
                }
            }
        }
        let rev = history.len() as i64 - 1;
        if step % 5 == 0 {
            let start =
                compacted.max(1) - 1 + rng.below((rev + 3 - compacted.max(1)) as u64) as i64;
            let got = h.s.events(b"", &[0], start, usize::MAX);
            if start < compacted {
                assert!(matches!(got, Err(KvError::Compacted { .. })), "{ctx}");
            } else {
                assert_eq!(
                    got.unwrap(),
                    model_events(&history, compacted, start),
                    "{ctx}"
                );
            }
        }
        if step % 40 == 39 {
            // A snapshot restores the same store, and the run goes on with it.
            let bytes = h.s.encode_snapshot();
            let restored = KvStore::decode_snapshot(KvConfig::default(), &bytes).unwrap();
            assert_eq!(restored, h.s, "{ctx}");
            h.s = restored;
        }
    }
}

#[test]
fn randomized_put_delete_range_matches_model() {
    for seed in 1..=64 {
        run(seed, 300);
    }
}
