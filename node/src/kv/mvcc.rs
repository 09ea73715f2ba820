//! The multi-version key space: every version of every key since the
//! compaction point, and one global revision counter.

use super::KvError;
use flotilla_proto::mvccpb::{Event, KeyValue, event::EventType};
use std::collections::BTreeMap;
use std::ops::Bound;

/// A position in the history: the write transaction's revision (`main`) and
/// the change's place within it (`sub`), as in etcd.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Revision {
    /// The revision of the write transaction.
    pub main: i64,
    /// The change's index within that transaction.
    pub sub: i64,
}

/// One version of a key. A prost message so that a snapshot is just its
/// encoding. `version == 0` marks a tombstone (a deletion).
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct VersionRecord {
    #[prost(int64, tag = "1")]
    pub main: i64,
    #[prost(int64, tag = "2")]
    pub sub: i64,
    #[prost(int64, tag = "3")]
    pub create_revision: i64,
    #[prost(int64, tag = "4")]
    pub version: i64,
    #[prost(bytes = "vec", tag = "5")]
    pub value: Vec<u8>,
    #[prost(int64, tag = "6")]
    pub lease: i64,
}

impl VersionRecord {
    fn is_tombstone(&self) -> bool {
        self.version == 0
    }

    fn revision(&self) -> Revision {
        Revision {
            main: self.main,
            sub: self.sub,
        }
    }

    fn to_kv(&self, key: &[u8]) -> KeyValue {
        KeyValue {
            key: key.to_vec(),
            create_revision: self.create_revision,
            mod_revision: self.main,
            version: self.version,
            value: self.value.clone(),
            lease: self.lease,
        }
    }
}

/// The open write transaction: the revision its changes get and the events
/// they produced. The store's revision moves only if it changed something
/// (etcd: a read-only txn, or a delete that matched nothing, keeps it).
#[derive(Debug)]
pub(crate) struct WriteBatch {
    main: i64,
    sub: i64,
    events: Vec<Event>,
}

impl WriteBatch {
    /// The revision reads inside the transaction see: its own writes.
    pub fn read_revision(&self) -> i64 {
        if self.sub > 0 {
            self.main
        } else {
            self.main - 1
        }
    }
}

/// The MVCC key space. Writes go through a `WriteBatch`; reads name a
/// revision. Pure and deterministic: iteration is in key order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MvccStore {
    /// Each key's retained versions, oldest first.
    keys: BTreeMap<Vec<u8>, Vec<VersionRecord>>,
    /// Which key changed at each retained revision: watch catch-up and
    /// incremental compaction walk this instead of every key.
    by_revision: BTreeMap<Revision, Vec<u8>>,
    revision: i64,
    compact_revision: i64,
    /// [`MvccStore::size_bytes`], kept up to date by every change.
    size_bytes: u64,
}

/// Estimated bytes a key takes beside its text: its own and its version
/// list's headers.
const KEY_OVERHEAD_BYTES: u64 = 2 * std::mem::size_of::<Vec<u8>>() as u64;
/// Estimated bytes a version takes beside its key and value text: the
/// record, and its revision index entry (a revision and a key copy).
const VERSION_OVERHEAD_BYTES: u64 = (std::mem::size_of::<VersionRecord>()
    + std::mem::size_of::<Revision>()
    + std::mem::size_of::<Vec<u8>>()) as u64;

fn key_bytes(key: &[u8]) -> u64 {
    key.len() as u64 + KEY_OVERHEAD_BYTES
}

/// A version's share: its value, the key copy in the revision index, the
/// fixed overhead.
fn version_bytes(key: &[u8], v: &VersionRecord) -> u64 {
    key.len() as u64 + v.value.len() as u64 + VERSION_OVERHEAD_BYTES
}

/// Whether `k` is in etcd's range `[key, range_end)`: an empty `range_end`
/// means `key` alone, `"\0"` means every key from `key` on.
pub fn in_range(k: &[u8], key: &[u8], range_end: &[u8]) -> bool {
    if range_end.is_empty() {
        k == key
    } else if range_end == [0] {
        k >= key
    } else {
        k >= key && k < range_end
    }
}

impl MvccStore {
    /// An empty store. Its revision is 1, as a new etcd cluster's is, so the
    /// first write gets revision 2.
    pub fn new() -> Self {
        MvccStore {
            revision: 1,
            ..Default::default()
        }
    }

    /// The revision of the last write transaction.
    pub fn revision(&self) -> i64 {
        self.revision
    }

    /// History below this revision is gone.
    pub fn compact_revision(&self) -> i64 {
        self.compact_revision
    }

    /// An estimate of the memory the retained history takes, in bytes:
    /// every key's text, and every retained version's key and value text,
    /// plus fixed per-key and per-version overheads (record headers and the
    /// revision index; allocator and tree-node slack not counted). Updated
    /// with every change, so reading it costs nothing; a compaction lowers
    /// it. The same on every replica at the same log position.
    pub fn size_bytes(&self) -> u64 {
        self.size_bytes
    }

    /// Number of keys with retained history (live or tombstoned).
    pub fn key_count(&self) -> usize {
        self.keys.len()
    }

    /// Resolves a requested read revision (0 = current) or says why it
    /// cannot be read.
    pub fn check_read_revision(&self, rev: i64) -> Result<i64, KvError> {
        if rev <= 0 {
            Ok(self.revision)
        } else if rev > self.revision {
            Err(KvError::FutureRevision)
        } else if rev < self.compact_revision {
            Err(KvError::Compacted {
                compact_revision: self.compact_revision,
            })
        } else {
            Ok(rev)
        }
    }

    fn visible_record(versions: &[VersionRecord], at: i64) -> Option<&VersionRecord> {
        let n = versions.partition_point(|v| v.main <= at);
        let v = versions[..n].last()?;
        (!v.is_tombstone()).then_some(v)
    }

    /// The key's live version at revision `at`, if any. No revision checks.
    pub fn get(&self, key: &[u8], at: i64) -> Option<KeyValue> {
        let versions = self.keys.get(key)?;
        Self::visible_record(versions, at).map(|v| v.to_kv(key))
    }

    /// Every live key-value of `[key, range_end)` at revision `at`, in key
    /// order. No revision checks: callers use [`Self::check_read_revision`].
    pub fn scan(&self, key: &[u8], range_end: &[u8], at: i64) -> Vec<KeyValue> {
        let upper = if range_end.is_empty() {
            Bound::Included(key)
        } else if range_end == [0] {
            Bound::Unbounded
        } else if range_end <= key {
            return Vec::new();
        } else {
            Bound::Excluded(range_end)
        };
        self.keys
            .range::<[u8], _>((Bound::Included(key), upper))
            .filter_map(|(k, versions)| Self::visible_record(versions, at).map(|v| v.to_kv(k)))
            .collect()
    }

    /// Opens a write transaction at the next revision.
    pub(crate) fn begin(&self) -> WriteBatch {
        WriteBatch {
            main: self.revision + 1,
            sub: 0,
            events: Vec::new(),
        }
    }

    /// Writes a new version of `key`; returns the version it replaces, if live.
    pub(crate) fn put(
        &mut self,
        w: &mut WriteBatch,
        key: &[u8],
        value: Vec<u8>,
        lease: i64,
    ) -> Option<KeyValue> {
        if !self.keys.contains_key(key) {
            self.size_bytes += key_bytes(key);
        }
        let versions = self.keys.entry(key.to_vec()).or_default();
        let prev = versions.last().filter(|v| !v.is_tombstone()).cloned();
        let (create_revision, version) = match &prev {
            Some(p) => (p.create_revision, p.version + 1),
            None => (w.main, 1),
        };
        let record = VersionRecord {
            main: w.main,
            sub: w.sub,
            create_revision,
            version,
            value,
            lease,
        };
        let kv = record.to_kv(key);
        self.size_bytes += version_bytes(key, &record);
        self.by_revision.insert(record.revision(), key.to_vec());
        versions.push(record);
        w.sub += 1;
        let prev_kv = prev.map(|p| p.to_kv(key));
        w.events.push(Event {
            r#type: EventType::Put as i32,
            kv: Some(kv),
            prev_kv: prev_kv.clone(),
        });
        prev_kv
    }

    /// Deletes `key` if it is live; returns the deleted version.
    pub(crate) fn delete(&mut self, w: &mut WriteBatch, key: &[u8]) -> Option<KeyValue> {
        let versions = self.keys.get_mut(key)?;
        let prev = versions.last().filter(|v| !v.is_tombstone())?.to_kv(key);
        let tomb = VersionRecord {
            main: w.main,
            sub: w.sub,
            ..Default::default()
        };
        self.size_bytes += version_bytes(key, &tomb);
        self.by_revision.insert(tomb.revision(), key.to_vec());
        versions.push(tomb);
        w.sub += 1;
        let kv = KeyValue {
            key: key.to_vec(),
            mod_revision: w.main,
            ..Default::default()
        };
        w.events.push(Event {
            r#type: EventType::Delete as i32,
            kv: Some(kv),
            prev_kv: Some(prev.clone()),
        });
        Some(prev)
    }

    /// Closes a write transaction: the revision moves if it changed
    /// anything. Returns its events, in change order.
    pub(crate) fn end(&mut self, w: WriteBatch) -> Vec<Event> {
        if w.sub > 0 {
            self.revision = w.main;
        }
        w.events
    }

    /// etcd's Compact: drops history below `at`.
    pub fn compact(&mut self, at: i64) -> Result<(), KvError> {
        if at <= self.compact_revision {
            return Err(KvError::Compacted {
                compact_revision: self.compact_revision,
            });
        }
        if at > self.revision {
            return Err(KvError::FutureRevision);
        }
        self.compact_unchecked(at);
        Ok(())
    }

    /// Drops, for every key, the versions superseded at `at`, and the key's
    /// version at `at` too when it is a tombstone. Only keys changed since
    /// the last compaction can have such versions, so only those are visited.
    fn compact_unchecked(&mut self, at: i64) {
        let from = Revision {
            main: self.compact_revision + 1,
            sub: 0,
        };
        let to = Revision {
            main: at + 1,
            sub: 0,
        };
        let mut touched: Vec<Vec<u8>> = self
            .by_revision
            .range(from..to)
            .map(|(_, k)| k.clone())
            .collect();
        touched.sort();
        touched.dedup();
        for key in touched {
            let Some(versions) = self.keys.get_mut(&key) else {
                continue;
            };
            let n = versions.partition_point(|v| v.main <= at);
            let mut drop = n.saturating_sub(1);
            if n > 0 && versions[n - 1].is_tombstone() {
                drop = n;
            }
            for v in versions.drain(..drop) {
                self.size_bytes -= version_bytes(&key, &v);
                self.by_revision.remove(&v.revision());
            }
            if versions.is_empty() {
                self.size_bytes -= key_bytes(&key);
                self.keys.remove(&key);
            }
        }
        self.compact_revision = at;
    }

    /// Auto-compaction: keeps at most `retain` revisions below the current.
    pub(crate) fn auto_compact(&mut self, retain: i64) {
        if retain > 0 && self.revision - retain > self.compact_revision {
            self.compact_unchecked(self.revision - retain);
        }
    }

    /// The changes to `[key, range_end)` from `start_revision` on, with
    /// `prev_kv` set where the previous version is retained and live. At
    /// most about `limit` events: a revision is never split, so a caller
    /// resumes at the revision after the last event's.
    pub fn events(
        &self,
        key: &[u8],
        range_end: &[u8],
        start_revision: i64,
        limit: usize,
    ) -> Result<Vec<Event>, KvError> {
        if start_revision < self.compact_revision {
            return Err(KvError::Compacted {
                compact_revision: self.compact_revision,
            });
        }
        let mut out = Vec::new();
        let from = Revision {
            main: start_revision.max(1),
            sub: 0,
        };
        let mut last_main = None;
        for (rev, k) in self.by_revision.range(from..) {
            if out.len() >= limit && last_main != Some(rev.main) {
                break;
            }
            if !in_range(k, key, range_end) {
                continue;
            }
            let versions = &self.keys[k];
            let i = versions.partition_point(|v| v.revision() < *rev);
            let v = &versions[i];
            let prev_kv = i
                .checked_sub(1)
                .map(|p| &versions[p])
                .filter(|p| !p.is_tombstone())
                .map(|p| p.to_kv(k));
            let (ty, kv) = if v.is_tombstone() {
                (
                    EventType::Delete,
                    KeyValue {
                        key: k.clone(),
                        mod_revision: v.main,
                        ..Default::default()
                    },
                )
            } else {
                (EventType::Put, v.to_kv(k))
            };
            out.push(Event {
                r#type: ty as i32,
                kv: Some(kv),
                prev_kv,
            });
            last_main = Some(rev.main);
        }
        Ok(out)
    }

    /// The whole history, for a snapshot.
    pub(crate) fn to_records(&self) -> Vec<KeyHistory> {
        self.keys
            .iter()
            .map(|(k, v)| KeyHistory {
                key: k.clone(),
                versions: v.clone(),
            })
            .collect()
    }

    /// Rebuilds a store from a snapshot's parts, checking they are coherent.
    pub(crate) fn from_records(
        records: Vec<KeyHistory>,
        revision: i64,
        compact_revision: i64,
    ) -> Result<Self, String> {
        let mut s = MvccStore {
            revision,
            compact_revision,
            ..Default::default()
        };
        for h in records {
            if h.versions.is_empty() || !h.versions.is_sorted_by_key(|v| v.revision()) {
                return Err("snapshot: key history empty or out of order".into());
            }
            for v in &h.versions {
                if v.main > revision || s.by_revision.insert(v.revision(), h.key.clone()).is_some()
                {
                    return Err("snapshot: bad or duplicate revision".into());
                }
            }
            s.size_bytes += key_bytes(&h.key)
                + h.versions
                    .iter()
                    .map(|v| version_bytes(&h.key, v))
                    .sum::<u64>();
            s.keys.insert(h.key, h.versions);
        }
        Ok(s)
    }

    /// [`Self::size_bytes`] counted from scratch, to check the running
    /// count against.
    #[cfg(test)]
    pub(crate) fn size_bytes_recounted(&self) -> u64 {
        self.keys
            .iter()
            .map(|(k, versions)| {
                key_bytes(k) + versions.iter().map(|v| version_bytes(k, v)).sum::<u64>()
            })
            .sum()
    }

    /// Each key's live value at the current revision: (key, lease).
    pub(crate) fn live_leases(&self) -> impl Iterator<Item = (&[u8], i64)> {
        self.keys.iter().filter_map(|(k, v)| {
            v.last()
                .filter(|r| !r.is_tombstone() && r.lease != 0)
                .map(|r| (k.as_slice(), r.lease))
        })
    }
}

/// A key and its retained versions, as stored in a snapshot.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct KeyHistory {
    #[prost(bytes = "vec", tag = "1")]
    pub key: Vec<u8>,
    #[prost(message, repeated, tag = "2")]
    pub versions: Vec<VersionRecord>,
}
