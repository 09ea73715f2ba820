//! The multi-version key space: every version of every key since the
//! compaction point, and one global revision counter.

use super::KvError;
use super::key::Key;
use super::version::{Version, VersionList, Warmed};
use flotilla_proto::mvccpb::{Event, KeyValue, event::EventType};
use imbl::OrdMap;
use std::ops::Bound;
use std::sync::Arc;

/// A position in the history: the write transaction's revision (`main`) and
/// the change's place within it (`sub`), as in etcd.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Revision {
    /// The revision of the write transaction.
    pub main: i64,
    /// The change's index within that transaction.
    pub sub: i64,
}

fn to_kv(key: &[u8], v: &Version) -> KeyValue {
    let (meta, value) = v.parts();
    KeyValue {
        key: key.to_vec(),
        create_revision: meta.create_revision,
        mod_revision: meta.revision.main,
        version: meta.version,
        value: value.to_vec(),
        lease: meta.lease,
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
    /// Whose changes get `events`.
    event_keys: EventKeys,
}

impl WriteBatch {
    /// Whether a change of `key` builds an event.
    fn records(&self, key: &[u8]) -> bool {
        match &self.event_keys {
            EventKeys::All => true,
            EventKeys::None => false,
            EventKeys::Ranges(ranges) => ranges.iter().any(|(k, end)| in_range(key, k, end)),
        }
    }
}

/// Key ranges, each `(key, range_end)` with etcd's range conventions;
/// shared, so handing them to every write costs a reference count.
pub type KeyRanges = Arc<[(Vec<u8>, Vec<u8>)]>;

/// Which changes a write builds watch events for. Building one copies the
/// key and the value (and the replaced version's, for `prev_kv`), so
/// changes nobody watches are better left without.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum EventKeys {
    /// Every change (the default).
    #[default]
    All,
    /// None: nobody watches.
    None,
    /// Changes of keys in these ranges: the ranges watchers watch.
    Ranges(KeyRanges),
}

/// What [`MvccStore::put`] replaced.
#[derive(Debug)]
pub(crate) struct PutOutcome {
    /// The lease of the version replaced (0 when there was none, or no live one).
    pub prev_lease: i64,
    /// The lease of the version written.
    pub lease: i64,
    /// The version replaced, if live and asked for.
    pub prev_kv: Option<KeyValue>,
}

/// What [`MvccStore::delete`] deleted.
#[derive(Debug)]
pub(crate) struct Deleted {
    /// The lease of the version deleted (0 for none).
    pub lease: i64,
    /// The version deleted, if asked for.
    pub prev_kv: Option<KeyValue>,
}

/// What [`MvccStore::delete_range`] deleted.
#[derive(Debug, Default)]
pub(crate) struct RangeDeleted {
    /// How many keys.
    pub deleted: i64,
    /// The keys that had a lease, with it.
    pub leased: Vec<(Key, i64)>,
    /// The versions deleted, in key order, if asked for.
    pub prev_kvs: Vec<KeyValue>,
}

impl WriteBatch {
    /// How many changes the transaction made so far.
    pub fn changes(&self) -> usize {
        self.sub as usize
    }

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
///
/// Both indexes are persistent B-trees ([`imbl::OrdMap`]): a clone costs
/// O(1) and shares every node with the original until one of them writes
/// there, when the write copies the nodes on its path (a few kilobytes)
/// instead of changing them. So the driver hands a read or a snapshot a
/// frozen view of the whole store for the price of a reference count, and
/// goes on applying while the view is read on another thread.
///
/// Memory: one allocation per retained version, the key once
/// per key (inline when short, else shared with the revision index), and
/// the revision index only for the history since the compaction point —
/// the part that watch catch-up and the next compaction read. Versions
/// the compaction released may stay held a while: the sweep works them
/// back under half of [`MvccStore::size_bytes`], a bounded number of
/// keys per compaction step, so a large key space with few such keys can
/// hold more for a while.
#[derive(Clone, Debug, Default)]
pub struct MvccStore {
    /// Each key's retained versions, oldest first.
    keys: OrdMap<Key, VersionList>,
    /// Which key changed at each retained revision at or after the
    /// compaction point, and what passing that change releases: watch
    /// catch-up and incremental compaction walk this instead of every key.
    /// Older versions are not listed: no read needs them by revision. (While the compaction of one large revision
    /// is split over several writes, its unfinished entries are those at
    /// the compaction point from `split` on.)
    by_revision: OrdMap<Revision, Change>,
    /// Keys whose latest version is live (not a tombstone): the count of a
    /// whole-keyspace range at the current revision, without a scan.
    live_keys: u64,
    revision: i64,
    compact_revision: i64,
    /// Set while the compaction of the revision at the compaction point
    /// is split over several writes: the change number (`sub`) there from
    /// which it goes on. See [`MvccStore::compaction_split`].
    split: Option<i64>,
    /// [`MvccStore::size_bytes`], kept up to date by every change.
    size_bytes: u64,
    /// The bytes of versions the compaction has released but that are
    /// still held: a key's released versions go on its next change, or
    /// when the sweep passes it (see [`MvccStore::compact_toward`]). Not
    /// replicated state: a store restored from a snapshot holds none.
    released_held: u64,
    /// Where the sweep of released versions goes on: the last key it
    /// looked at (`None`: from the first key).
    sweep_from: Option<Key>,
}

/// A change in the revision index: the key it changed, and what passing
/// it releases — so that the compaction of a put, the usual case, needs
/// no lookup of its key.
#[derive(Clone, Debug)]
struct Change {
    key: Key,
    /// Bit 63: the change is a deletion. Bit 62: a put whose key the same
    /// revision deleted (see [`MvccStore::drop_deleted_put`]). The rest:
    /// [`version_bytes`] of the live version it superseded, 0 for none (a
    /// new key, or a key whose last version was a deletion: that
    /// deletion's own change releases it).
    packed: u64,
}

impl Change {
    const DELETION: u64 = 1 << 63;
    const DELETED_IN_ITS_REVISION: u64 = 1 << 62;
    const BYTES: u64 = Self::DELETED_IN_ITS_REVISION - 1;

    fn new(key: Key, superseded_bytes: u64, deletion: bool) -> Change {
        debug_assert!(superseded_bytes <= Self::BYTES);
        Change {
            key,
            packed: superseded_bytes | if deletion { Self::DELETION } else { 0 },
        }
    }

    /// The bytes passing this change releases from the version it
    /// superseded.
    fn superseded_bytes(&self) -> u64 {
        self.packed & Self::BYTES
    }

    fn is_deletion(&self) -> bool {
        self.packed & Self::DELETION != 0
    }

    /// Whether this is a put whose key a later change of the same revision
    /// deleted.
    fn deleted_in_its_revision(&self) -> bool {
        self.packed & Self::DELETED_IN_ITS_REVISION != 0
    }

    fn mark_deleted_in_its_revision(&mut self) {
        self.packed |= Self::DELETED_IN_ITS_REVISION;
    }
}

/// Whether the compaction has passed the change at `rev` when its point
/// is `compact` and `split` says where an unfinished revision there goes
/// on: every change below the point, and those at it but the unfinished
/// ones.
fn passed(compact: i64, split: Option<i64>, rev: Revision) -> bool {
    rev.main < compact || (rev.main == compact && split.is_none_or(|sub| rev.sub < sub))
}

/// [`passed`] for a version's change, reading its change number only at
/// the point itself.
fn passed_version(v: &Version, compact: i64, split: Option<i64>) -> bool {
    let main = v.main();
    main < compact || (main == compact && passed(compact, split, v.revision()))
}

/// How many of a key's oldest versions the compaction (at `compact`,
/// `split`) has released: those superseded by a change it passed, and a
/// deletion it passed. Always a prefix of the list.
fn released(versions: &[Version], compact: i64, split: Option<i64>) -> usize {
    let passed_count = versions.partition_point(|v| passed_version(v, compact, split));
    match passed_count.checked_sub(1) {
        None => 0,
        Some(newest) if versions[newest].is_tombstone() => passed_count,
        Some(newest) => newest,
    }
}

/// The most keys one compaction step's sweep drops released versions of
/// (it looks at four times as many): also on the paths that compact
/// without a budget (an explicit Compact, and entries of the previous
/// release that compact every write).
const SWEEP_KEYS_MAX: usize = 10_000;

/// Refuses a snapshot's key history that holds what the compaction at
/// `compact` released, whatever its split: a second version below the
/// point, or a deletion below it. No store writes one, and one would be
/// counted in the size although no snapshot of the restored store holds it.
pub(super) fn check_unreleased(versions: &[Version], compact: i64) -> Result<(), String> {
    if released(versions, compact, Some(0)) > 0 {
        return Err("snapshot: a key history holds versions compaction removed".into());
    }
    Ok(())
}

/// The first change at the compaction point `compact` in a snapshot's key
/// history whose passing releases a version the history holds: a deletion
/// there, or a change there with a version before it. The snapshot's split
/// must leave it unpassed ([`check_split`]).
pub(super) fn first_releasing_at_point(versions: &[Version], compact: i64) -> Option<i64> {
    versions
        .iter()
        .enumerate()
        .find(|(i, v)| v.main() == compact && (v.is_tombstone() || *i > 0))
        .map(|(_, v)| v.revision().sub)
}

/// Refuses a snapshot whose split says the compaction passed a change at
/// the point that releases a version the snapshot holds (`first`: the
/// least [`first_releasing_at_point`] over its keys).
pub(super) fn check_split(split: Option<i64>, first: Option<i64>) -> Result<(), String> {
    match first {
        Some(sub) if split.is_none_or(|s| sub < s) => {
            Err("snapshot: a key history holds versions its compaction point removed".into())
        }
        _ => Ok(()),
    }
}

/// Stores are equal when they hold the same history: released versions a
/// key still holds, and the sweep's place, are not part of it (a store
/// restored from a snapshot of another holds none).
impl PartialEq for MvccStore {
    fn eq(&self, other: &MvccStore) -> bool {
        self.revision == other.revision
            && self.compact_revision == other.compact_revision
            && self.split == other.split
            && self.size_bytes == other.size_bytes
            && self.live_keys == other.live_keys
            && self.histories().eq(other.histories())
            && self.changes().eq(other.changes())
    }
}

impl MvccStore {
    /// The revision index as equality sees it: what a passed change
    /// superseded is counted off already, so it is not compared.
    fn changes(&self) -> impl Iterator<Item = (&Revision, &Key, bool, u64)> {
        self.by_revision.iter().map(|(rev, change)| {
            let passed = passed(self.compact_revision, self.split, *rev);
            let superseded = if passed { 0 } else { change.superseded_bytes() };
            (rev, &change.key, change.is_deletion(), superseded)
        })
    }
}

/// Estimated bytes a key takes beside its text: its index entry.
const KEY_OVERHEAD_BYTES: u64 =
    (std::mem::size_of::<Key>() + std::mem::size_of::<VersionList>()) as u64;
/// Estimated bytes a version takes beside its value: the version itself
/// and its revision index entry. Part of [`MvccStore::size_bytes`], which
/// quota decisions read on every replica: members of different releases
/// must count alike, so this stays as it was when a revision index entry
/// was a [`Key`] alone.
pub(super) const VERSION_OVERHEAD_BYTES: u64 = (std::mem::size_of::<Version>()
    + std::mem::size_of::<Revision>()
    + std::mem::size_of::<Key>()) as u64;

pub(super) fn key_bytes(key: &[u8]) -> u64 {
    key.len() as u64 + KEY_OVERHEAD_BYTES
}

/// The most a put of `key` with a value of `value_len` bytes adds to
/// [`MvccStore::size_bytes`]: a version, and the key's entry if it is new.
pub(crate) fn put_cost_bytes(key: &[u8], value_len: usize) -> u64 {
    key_bytes(key) + value_len as u64 + VERSION_OVERHEAD_BYTES
}

/// A version's share: its value and the fixed overhead.
fn version_bytes(v: &Version) -> u64 {
    v.parts().1.len() as u64 + VERSION_OVERHEAD_BYTES
}

fn versions_bytes(versions: &[Version]) -> u64 {
    versions.iter().map(version_bytes).sum()
}

/// Drops the versions of a key's list that the compaction (at `compact`,
/// `split`) has released and returns their bytes. The newest version
/// stays: a key whose every version is released (a passed deletion is its
/// newest) is the compaction's to remove.
fn drop_released(versions: &mut VersionList, compact: i64, split: Option<i64>) -> u64 {
    let (n, bytes) = match versions {
        // One version is released only as a passed deletion.
        VersionList::One(_) => return 0,
        // Nothing released unless the second oldest version's change was
        // passed (a passed deletion is dropped as the step passes it, and a
        // snapshot holding one is refused, so none is oldest here): one
        // header read on a put's path.
        VersionList::Many(list) if !passed_version(&list[1], compact, split) => {
            debug_assert!(!(list[0].is_tombstone() && passed_version(&list[0], compact, split)));
            return 0;
        }
        VersionList::Many(list) => {
            let n = released(list, compact, split).min(list.len() - 1);
            (n, versions_bytes(&list[..n]))
        }
    };
    versions.drop_oldest(n);
    bytes
}

/// The upper bound of etcd's range `[key, range_end)` over the key index;
/// `None` when the range is empty.
fn upper_bound<'a>(key: &'a [u8], range_end: &'a [u8]) -> Option<Bound<&'a [u8]>> {
    if range_end.is_empty() {
        Some(Bound::Included(key))
    } else if range_end == [0] {
        Some(Bound::Unbounded)
    } else if range_end <= key {
        None
    } else {
        Some(Bound::Excluded(range_end))
    }
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
    /// every key's text and every retained version's value, plus fixed
    /// per-key and per-version overheads (headers and the revision index;
    /// allocator and tree-node slack not counted). Updated with every
    /// change, so reading it costs nothing; a compaction lowers it. The
    /// same on every replica at the same log position.
    pub fn size_bytes(&self) -> u64 {
        self.size_bytes
    }

    /// Number of keys with retained history (live or tombstoned).
    pub fn key_count(&self) -> usize {
        self.keys.len()
    }

    /// Number of keys live at the current revision.
    pub fn live_key_count(&self) -> u64 {
        self.live_keys
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

    fn visible(versions: &[Version], at: i64) -> Option<&Version> {
        let n = versions.partition_point(|v| v.main() <= at);
        let v = versions[..n].last()?;
        (!v.is_tombstone()).then_some(v)
    }

    /// The key's live version at revision `at`, if any. No revision checks.
    pub fn get(&self, key: &[u8], at: i64) -> Option<KeyValue> {
        let versions = self.keys.get(key)?;
        Self::visible(versions.as_slice(), at).map(|v| to_kv(key, v))
    }

    /// Every live key-value of `[key, range_end)` at revision `at`, in key
    /// order. No revision checks: callers use [`Self::check_read_revision`].
    pub fn scan(&self, key: &[u8], range_end: &[u8], at: i64) -> Vec<KeyValue> {
        let Some(upper) = upper_bound(key, range_end) else {
            return Vec::new();
        };
        Warmed::new(self.keys.range::<_, [u8]>((Bound::Included(key), upper)))
            .filter_map(|(k, versions)| {
                Self::visible(versions.as_slice(), at).map(|v| to_kv(k.as_bytes(), v))
            })
            .collect()
    }

    /// The live keys of `[key, range_end)` at revision `at`, in key order
    /// (`reverse`: from the last), each with its visible version, lazily:
    /// a caller that takes `n` pays for `n` (read ahead in batches of
    /// [`Warmed`]'s) and a descent of the tree.
    pub(crate) fn visible_range<'a>(
        &'a self,
        key: &'a [u8],
        range_end: &'a [u8],
        at: i64,
        reverse: bool,
    ) -> Box<dyn Iterator<Item = (&'a [u8], &'a Version)> + 'a> {
        let Some(upper) = upper_bound(key, range_end) else {
            return Box::new(std::iter::empty());
        };
        let range = self.keys.range::<_, [u8]>((Bound::Included(key), upper));
        let visible = move |(k, versions): (&'a Key, &'a VersionList)| {
            Self::visible(versions.as_slice(), at).map(|v| (k.as_bytes(), v))
        };
        if reverse {
            Box::new(Warmed::new(range.rev()).filter_map(visible))
        } else {
            Box::new(Warmed::new(range).filter_map(visible))
        }
    }

    /// How many keys of `[key, range_end)` are live at `at`, without copying
    /// any: O(1) for the whole key space at the current revision, else one
    /// pass over the range's keys.
    pub fn count(&self, key: &[u8], range_end: &[u8], at: i64) -> u64 {
        // Keys are never empty, so every key is at or after "\0".
        let whole = (key.is_empty() || key == [0]) && range_end == [0];
        if whole && at == self.revision {
            return self.live_keys;
        }
        self.visible_range(key, range_end, at, false).count() as u64
    }

    /// The key-value of a visible version (for [`Self::visible_range`]'s
    /// callers), without its value when `keys_only`.
    pub(crate) fn key_value(key: &[u8], v: &Version, keys_only: bool) -> KeyValue {
        if keys_only {
            let meta = v.meta();
            KeyValue {
                key: key.to_vec(),
                create_revision: meta.create_revision,
                mod_revision: meta.revision.main,
                version: meta.version,
                value: Vec::new(),
                lease: meta.lease,
            }
        } else {
            to_kv(key, v)
        }
    }

    /// Opens a write transaction at the next revision; it builds watch
    /// events only for the changes of `event_keys`.
    pub(crate) fn begin(&self, event_keys: EventKeys) -> WriteBatch {
        WriteBatch {
            main: self.revision + 1,
            sub: 0,
            events: Vec::new(),
            event_keys,
        }
    }

    /// Writes a new version of `key`: `value` and `lease`, or where `None`
    /// those of the live version it replaces (etcd's `ignore_value` and
    /// `ignore_lease`; with no live version, empty and 0). One lookup; the
    /// replaced version is copied out only when `want_prev` asks for it or
    /// an event needs it.
    pub(crate) fn put(
        &mut self,
        w: &mut WriteBatch,
        key: &[u8],
        value: Option<&[u8]>,
        lease: Option<i64>,
        want_prev: bool,
    ) -> PutOutcome {
        let rev = Revision {
            main: w.main,
            sub: w.sub,
        };
        let (compact, split) = (self.compact_revision, self.split);
        let mut existing = self.keys.get_key_value_mut(key);
        if let Some((_, versions)) = existing.as_mut() {
            self.released_held -= drop_released(versions, compact, split);
        }
        let prev = existing
            .as_ref()
            .map(|(_, versions)| versions.last())
            .filter(|p| !p.is_tombstone());
        let prev_meta = prev.map(Version::meta);
        let prev_lease = prev_meta.map_or(0, |m| m.lease);
        let lease = lease.unwrap_or(prev_lease);
        let (create_revision, version) =
            prev_meta.map_or((w.main, 1), |m| (m.create_revision, m.version + 1));
        let value = value.unwrap_or_else(|| prev.map_or(&[][..], |p| p.parts().1));
        let record = Version::live(rev, create_revision, version, lease, value);
        let record_event = w.records(key);
        let mut outcome = PutOutcome {
            prev_lease,
            lease,
            prev_kv: prev
                .filter(|_| want_prev || record_event)
                .map(|p| to_kv(key, p)),
        };
        let superseded = prev.map_or(0, version_bytes);
        let event_kv = record_event.then(|| to_kv(key, &record));
        self.size_bytes += version_bytes(&record);
        let shared = match existing {
            Some((shared, versions)) => {
                let shared = shared.clone();
                if versions.last().is_tombstone() {
                    self.live_keys += 1;
                }
                versions.push(record);
                shared
            }
            None => {
                self.live_keys += 1;
                let shared = Key::from(key);
                self.size_bytes += key_bytes(key);
                self.keys.insert(shared.clone(), VersionList::One(record));
                shared
            }
        };
        self.by_revision
            .insert(rev, Change::new(shared, superseded, false));
        w.sub += 1;
        if let Some(kv) = event_kv {
            let prev_kv = if want_prev {
                outcome.prev_kv.clone()
            } else {
                outcome.prev_kv.take()
            };
            w.events.push(Event {
                r#type: EventType::Put as i32,
                kv: Some(kv),
                prev_kv,
            });
        }
        outcome
    }

    /// Tombstones `key` if it is live, with one lookup; returns its lease
    /// and, when `want_prev` asks for it, the version deleted. The version
    /// is copied out only for `want_prev` or an event.
    pub(crate) fn delete(
        &mut self,
        w: &mut WriteBatch,
        key: &[u8],
        want_prev: bool,
    ) -> Option<Deleted> {
        let (compact, split) = (self.compact_revision, self.split);
        let (shared, versions) = self.keys.get_key_value_mut(key)?;
        self.released_held -= drop_released(versions, compact, split);
        let last = versions.last();
        if last.is_tombstone() {
            return None;
        }
        let lease = last.meta().lease;
        let superseded = version_bytes(last);
        if last.main() == w.main {
            // The transaction put the key before deleting it (nested
            // transactions can).
            self.by_revision
                .get_mut(&last.revision())
                .expect("a change of the open revision is indexed")
                .mark_deleted_in_its_revision();
        }
        let record_event = w.records(key);
        let mut prev = (want_prev || record_event).then(|| to_kv(key, last));
        let shared = shared.clone();
        let rev = Revision {
            main: w.main,
            sub: w.sub,
        };
        let tomb = Version::tombstone(rev);
        self.size_bytes += version_bytes(&tomb);
        versions.push(tomb);
        self.live_keys -= 1;
        self.by_revision
            .insert(rev, Change::new(shared, superseded, true));
        w.sub += 1;
        if record_event {
            let kv = KeyValue {
                key: key.to_vec(),
                mod_revision: w.main,
                ..Default::default()
            };
            let prev_kv = if want_prev { prev.clone() } else { prev.take() };
            w.events.push(Event {
                r#type: EventType::Delete as i32,
                kv: Some(kv),
                prev_kv,
            });
        }
        Some(Deleted {
            lease,
            prev_kv: prev,
        })
    }

    /// Tombstones every live key of `[key, range_end)`: the keys are found
    /// by one walk of the range and taken as shared handles (no key or
    /// value copied), then each is deleted with one lookup. Values are
    /// copied only for `want_prev` or events.
    pub(crate) fn delete_range(
        &mut self,
        w: &mut WriteBatch,
        key: &[u8],
        range_end: &[u8],
        want_prev: bool,
    ) -> RangeDeleted {
        let mut out = RangeDeleted::default();
        let Some(upper) = upper_bound(key, range_end) else {
            return out;
        };
        // Live at the transaction's read revision is live now: nothing is
        // newer than the versions the transaction itself wrote.
        let doomed: Vec<Key> = self
            .keys
            .range::<_, [u8]>((Bound::Included(key), upper))
            .filter(|(_, versions)| !versions.last().is_tombstone())
            .map(|(k, _)| k.clone())
            .collect();
        if want_prev {
            out.prev_kvs.reserve_exact(doomed.len());
        }
        for k in doomed {
            let d = self
                .delete(w, k.as_bytes(), want_prev)
                .expect("a key found live above");
            out.deleted += 1;
            if d.lease != 0 {
                out.leased.push((k, d.lease));
            }
            out.prev_kvs.extend(d.prev_kv);
        }
        out
    }

    /// Closes a write transaction: the revision moves if it changed
    /// anything. Returns whether it did, and its events in change order
    /// (none unless it recorded them).
    pub(crate) fn end(&mut self, w: WriteBatch) -> (bool, Vec<Event>) {
        let changed = w.sub > 0;
        if changed {
            self.revision = w.main;
        }
        (changed, w.events)
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

    /// Compacts at `at` (> the compaction point) whatever it costs: an
    /// unfinished revision at the compaction point first, then everything
    /// up to `at`.
    fn compact_unchecked(&mut self, at: i64) {
        while self.compact_revision < at || self.split.is_some() {
            self.compact_toward(at, usize::MAX);
        }
    }

    /// Auto-compaction: keeps about `retain` revisions below the current
    /// one, in batches. It waits until the history is 1 % of `retain`
    /// (at least one revision) longer than that, so the fixed costs of a
    /// batch are shared by many revisions; a batch then touches at most
    /// `budget` revision-index entries (see [`Self::compact_toward`]), and
    /// a revision left unfinished is finished by the next calls. Depends
    /// only on the replicated state, so every replica compacts the same.
    pub(crate) fn auto_compact(&mut self, retain: i64, budget: usize) {
        if retain <= 0 {
            return;
        }
        let target = self.revision - retain;
        let slack = (retain / 100).max(1);
        if target - self.compact_revision >= slack || self.split.is_some() {
            self.compact_toward(target, budget);
        }
    }

    /// Auto-compaction as entries without
    /// [`super::KvCommand::batched_compaction`] run it (those of the
    /// previous release, and any proposed while a member may not know
    /// batches): every write compacts all of the history past `retain`
    /// revisions at once, an unfinished revision first.
    pub(crate) fn auto_compact_every_write(&mut self, retain: i64) {
        if retain <= 0 {
            return;
        }
        let target = self.revision - retain;
        if target > self.compact_revision || self.split.is_some() {
            self.compact_unchecked(target.max(self.compact_revision));
        }
    }

    /// One bounded step of compaction toward `target`: it processes at
    /// most `budget` revision-index entries, and at least one when there
    /// is work; then the sweep may look at up to four times as many keys
    /// (and change at most `budget` keys in all, nor more than
    /// [`SWEEP_KEYS_MAX`]).
    ///
    /// The compaction point moves only over whole revisions: as many, up
    /// to `target`, as fit in `budget` entries. The one exception is a
    /// revision that alone has more entries than `budget` (a DeleteRange
    /// of many keys): the point moves onto it and its keys are compacted
    /// `budget` at a time, in revision-index order, on this call and the
    /// next ones — until done, no step goes further. That is safe because
    /// nothing readable depends on what is left: reads below the point
    /// fail, a read at or above it sees a key's latest version at or below
    /// its revision, never the superseded ones still held, and
    /// [`Self::events`] leaves out, at the point, what compaction drops
    /// there (deletions, and what a change replaced). Where the revision's
    /// compaction goes on is [`Self::compaction_split`], which a snapshot
    /// carries (entries there are compacted in revision-index order; which
    /// ones are done cannot be told from the data: a put that created its
    /// key needs nothing done, before or after).
    ///
    /// The revision index entries of an unfinished revision that are done
    /// stay (a put's, for watch catch-up from the point); when the point
    /// moves past them they go, uncounted: at most the puts of one
    /// revision, each a tree removal.
    ///
    /// What passing a change releases (the version it superseded, and a
    /// deletion itself) is counted off [`Self::size_bytes`] from its entry
    /// alone. Only a deletion's key is looked up, to remove the key if the
    /// deletion is still its newest version; the other released versions
    /// stay where they are until their key's next change drops them, or
    /// the sweep ([`Self::sweep`]) does. Looking up the key of every
    /// passed put cost a put about 15 % of a cluster's throughput once the
    /// history bound was reached (every random key lookup a cache miss,
    /// and a copy of the tree path a published view shares). Nothing
    /// readable sees the difference: a read at or above the point never
    /// sees a version superseded at or below it, and snapshots and
    /// equality leave released versions out.
    fn compact_toward(&mut self, target: i64, budget: usize) {
        let c = self.compact_revision;
        let (start, end) = match self.first_pending() {
            // An unfinished revision: finish it before going further.
            Some(rev) => (
                rev,
                Revision {
                    main: c + 1,
                    sub: 0,
                },
            ),
            None if target > c => (
                Revision {
                    main: c + 1,
                    sub: 0,
                },
                Revision {
                    main: target + 1,
                    sub: 0,
                },
            ),
            None => return,
        };
        let budget = budget.max(1);
        let mut at = end.main - 1;
        let mut split = None;
        let mut batch: Vec<(Revision, Change)> = Vec::new();
        for (rev, change) in self.by_revision.range(start..end) {
            if batch.len() == budget {
                if batch[0].0.main < rev.main {
                    // Stop after the last whole revision.
                    batch.retain(|(r, _)| r.main < rev.main);
                    at = rev.main - 1;
                } else {
                    // One revision bigger than the budget: go onto it,
                    // and on from here next time.
                    at = rev.main;
                    split = Some(rev.sub);
                }
                break;
            }
            batch.push((*rev, change.clone()));
        }
        self.compact_revision = at;
        self.split = split;
        // Passing a change releases the version it superseded, and a
        // deletion itself: counted from the entry, with no lookup. That is
        // what the previous release counted off as it dropped them at each
        // step (a step that splits a revision holds only that revision's
        // changes, and a key's put and deletion there go together: see
        // `drop_deleted_put`), so `size_bytes`, which quota decisions
        // read, stays what its members compute while they share the log.
        for (_, change) in &batch {
            let mut bytes = change.superseded_bytes();
            if change.is_deletion() {
                // A deletion's version: no value.
                bytes += VERSION_OVERHEAD_BYTES;
            }
            self.size_bytes -= bytes;
            self.released_held += bytes;
        }
        // Only a deletion's key is looked up: it goes if the deletion is
        // still its newest version (and a put its own revision deleted, if
        // this step splits the revision between the two). A put's key drops what it released on
        // its next change, or when the sweep passes it.
        let mut lookups = 0;
        for (rev, change) in &batch {
            if change.is_deletion() {
                self.drop_released_of(&change.key);
                lookups += 1;
            } else if change.deleted_in_its_revision() && split.is_some() && rev.main == at {
                self.drop_deleted_put(&change.key, *rev);
                lookups += 1;
            }
            if rev.main < at {
                self.by_revision.remove(rev);
            }
        }
        // What is left below `at`: the done entries of the old point.
        while let Some(&(rev, _)) = self.by_revision.get_min()
            && rev.main < at
        {
            self.by_revision.remove(&rev);
        }
        let sweep_keys = budget.min(SWEEP_KEYS_MAX);
        self.sweep(sweep_keys.saturating_sub(lookups), sweep_keys * 4);
    }

    /// Drops what the compaction released of `key`'s versions, and the
    /// key when that is all of them (its newest is a passed deletion), with
    /// the revision index entries of dropped versions at the point (a
    /// deletion there, and a put the same revision deleted; those below it
    /// are the caller's). Each version's
    /// bytes were counted off when its change was passed.
    fn drop_released_of(&mut self, key: &Key) {
        let (compact, split) = (self.compact_revision, self.split);
        let Some(versions) = self.keys.get_mut(key) else {
            // Gone with all its versions earlier in the batch.
            return;
        };
        let slice = versions.as_slice();
        let n = released(slice, compact, split);
        if n == 0 {
            return;
        }
        for v in slice[..n].iter().filter(|v| v.main() >= compact) {
            self.by_revision.remove(&v.revision());
        }
        self.released_held -= versions_bytes(&slice[..n]);
        if n == slice.len() {
            self.size_bytes -= key_bytes(key.as_bytes());
            self.keys.remove(key);
        } else {
            versions.drop_oldest(n);
        }
    }

    /// A put and a deletion of one key in one revision (nested transactions
    /// can make them), when a step passes the put but splits the revision
    /// before the deletion: the previous release dropped both at that step,
    /// the key too if nothing newer was left, with both index entries — so
    /// the deletion was never passed on its own, and the later steps split
    /// the rest of the revision as if it had not been there. Done alike
    /// here: that decides the store size, where later steps stop and what
    /// a snapshot holds, all of which members of both releases must agree
    /// on.
    fn drop_deleted_put(&mut self, key: &Key, put: Revision) {
        let (compact, split) = (self.compact_revision, self.split);
        let Some(versions) = self.keys.get_mut(key) else {
            return;
        };
        let slice = versions.as_slice();
        let i = slice.partition_point(|v| v.revision() < put);
        let Some(deletion) = slice.get(i + 1).map(Version::revision) else {
            return;
        };
        debug_assert!(slice[i + 1].is_tombstone() && deletion.main == put.main);
        if passed(compact, split, deletion) {
            // In this step too: passed on its own, as before.
            return;
        }
        // Before the put: released already (the version it superseded, as
        // the step passed it).
        self.released_held -= versions_bytes(&slice[..i]);
        self.size_bytes -= versions_bytes(&slice[i..i + 2]);
        self.by_revision.remove(&put);
        self.by_revision.remove(&deletion);
        if i + 2 == slice.len() {
            self.size_bytes -= key_bytes(key.as_bytes());
            self.keys.remove(key);
        } else {
            versions.drop_oldest(i + 2);
        }
    }

    /// Bounds the memory of released versions that keys hold until their
    /// next change: while those are more than half of
    /// [`Self::size_bytes`], each compaction step walks on through the
    /// keys from where the last one stopped, at most `visits` keys, and
    /// drops what it finds released in at most `lookups` of them, stopping
    /// once that is enough to get back under. Changes nothing a read, a
    /// snapshot or the size sees.
    fn sweep(&mut self, lookups: usize, visits: usize) {
        let bound = self.size_bytes / 2;
        if lookups == 0 || self.released_held <= bound {
            return;
        }
        // Only as much as gets back under the bound.
        let mut excess = self.released_held - bound;
        let (compact, split) = (self.compact_revision, self.split);
        let from = self.sweep_from.take();
        let lower = from
            .as_ref()
            .map_or(Bound::Unbounded, |k| Bound::Excluded(k.as_bytes()));
        let mut found = Vec::new();
        let mut last: Option<&Key> = None;
        let keys = self.keys.range::<_, [u8]>((lower, Bound::Unbounded));
        for (visited, (k, versions)) in keys.enumerate() {
            if visited == visits || found.len() == lookups {
                // On from the last key looked at next time; past the
                // last key, from the first.
                self.sweep_from = last.map(|k| Key::from(k.as_bytes()));
                break;
            }
            last = Some(k);
            if let VersionList::Many(list) = versions {
                let n = released(list, compact, split).min(list.len() - 1);
                if n > 0 {
                    found.push(k.clone());
                    excess = excess.saturating_sub(versions_bytes(&list[..n]));
                    if excess == 0 {
                        self.sweep_from = Some(k.clone());
                        break;
                    }
                }
            }
        }
        for k in &found {
            if let Some(versions) = self.keys.get_mut(k) {
                self.released_held -= drop_released(versions, compact, split);
            }
        }
    }

    /// While the compaction of the revision at the compaction point is
    /// split over several writes ([`Self::compact_toward`]): the change
    /// number there from which it goes on. A snapshot carries it.
    pub(crate) fn compaction_split(&self) -> Option<i64> {
        self.split
    }

    /// Restores [`Self::compaction_split`] (from a snapshot).
    pub(crate) fn restore_compaction_split(&mut self, split: Option<i64>) -> Result<(), String> {
        if split.is_some_and(|sub| sub < 0) {
            return Err(format!("snapshot: bad compaction split {split:?}"));
        }
        let c = self.compact_revision;
        let at_point = Revision { main: c, sub: 0 }..Revision {
            main: c + 1,
            sub: 0,
        };
        // The same rule as the copy's check, over the keys changed at the
        // point.
        let first = self
            .by_revision
            .range(at_point)
            .filter_map(|(_, change)| {
                let versions = self.keys.get(&change.key)?.as_slice();
                first_releasing_at_point(versions, c)
            })
            .min();
        check_split(split, first)?;
        self.split = split;
        Ok(())
    }

    fn first_pending(&self) -> Option<Revision> {
        self.split.map(|sub| Revision {
            main: self.compact_revision,
            sub,
        })
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
        for (rev, change) in self.by_revision.range(from..) {
            let k = &change.key;
            if out.len() >= limit && last_main != Some(rev.main) {
                break;
            }
            if !in_range(k.as_bytes(), key, range_end) {
                continue;
            }
            let versions = self
                .keys
                .get(k)
                .expect("the revision index names retained keys")
                .as_slice();
            let i = versions.partition_point(|v| v.revision() < *rev);
            let v = &versions[i];
            // At the compaction point, only what compaction keeps: a
            // change still held there while a split compaction finishes
            // (see `compact_toward`) shows as it will once done — a
            // deletion not at all, a put without what it replaced.
            let at_point = rev.main == self.compact_revision;
            if at_point
                && (v.is_tombstone()
                    || versions
                        .get(i + 1)
                        .is_some_and(|next| next.main() == rev.main))
            {
                continue;
            }
            let prev_kv = i
                .checked_sub(1)
                .filter(|_| !at_point)
                .map(|p| &versions[p])
                .filter(|p| !p.is_tombstone())
                .map(|p| to_kv(k.as_bytes(), p));
            let (ty, kv) = if v.is_tombstone() {
                (
                    EventType::Delete,
                    KeyValue {
                        key: k.as_bytes().to_vec(),
                        mod_revision: v.main(),
                        ..Default::default()
                    },
                )
            } else {
                (EventType::Put, to_kv(k.as_bytes(), v))
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

    /// Every key with its retained versions, in key order (for a
    /// snapshot): not those the compaction released that a key still holds.
    pub(crate) fn histories(&self) -> impl Iterator<Item = (&[u8], &[Version])> {
        let (compact, split) = (self.compact_revision, self.split);
        Warmed::new(self.keys.iter()).filter_map(move |(k, v)| {
            let versions = v.as_slice();
            let kept = &versions[released(versions, compact, split)..];
            (!kept.is_empty()).then_some((k.as_bytes(), kept))
        })
    }

    /// An empty store at these revisions, to be filled by
    /// [`Self::restore_key`] (restoring a snapshot).
    pub(crate) fn restoring(revision: i64, compact_revision: i64) -> Result<Self, String> {
        if revision < 1 || compact_revision < 0 || compact_revision > revision {
            return Err(format!(
                "snapshot: bad revisions {revision} (compacted at {compact_revision})"
            ));
        }
        Ok(MvccStore {
            revision,
            compact_revision,
            ..Default::default()
        })
    }

    /// Adds a key and its versions from a snapshot, checking they are
    /// coherent: in order, none after the store's revision, none at a
    /// revision another key holds, keys in increasing order.
    pub(crate) fn restore_key(&mut self, key: &[u8], versions: Vec<Version>) -> Result<(), String> {
        if !versions.is_sorted_by(|a, b| a.revision() < b.revision()) {
            return Err("snapshot: key history out of order".into());
        }
        if self
            .keys
            .get_max()
            .is_some_and(|(last, _)| last.as_bytes() >= key)
        {
            return Err("snapshot: keys out of order or repeated".into());
        }
        check_unreleased(&versions, self.compact_revision)?;
        let key = Key::from(key);
        for (i, v) in versions.iter().enumerate() {
            if v.main() > self.revision {
                return Err("snapshot: a version after the store's revision".into());
            }
            if v.main() < self.compact_revision {
                continue;
            }
            // What the change superseded, if held and live (a snapshot
            // holds no version the compaction released).
            let superseded = i
                .checked_sub(1)
                .map(|p| &versions[p])
                .filter(|p| !p.is_tombstone())
                .map_or(0, version_bytes);
            let mut change = Change::new(key.clone(), superseded, v.is_tombstone());
            if !v.is_tombstone()
                && versions
                    .get(i + 1)
                    .is_some_and(|next| next.is_tombstone() && next.main() == v.main())
            {
                change.mark_deleted_in_its_revision();
            }
            if self.by_revision.insert(v.revision(), change).is_some() {
                return Err("snapshot: two changes at one revision".into());
            }
        }
        self.size_bytes +=
            key_bytes(key.as_bytes()) + versions.iter().map(version_bytes).sum::<u64>();
        let list = VersionList::from_vec(versions).ok_or("snapshot: key without versions")?;
        if !list.last().is_tombstone() {
            self.live_keys += 1;
        }
        self.keys.insert(key, list);
        Ok(())
    }

    /// [`Self::live_key_count`] counted from scratch, to check the running
    /// count against.
    #[cfg(test)]
    pub(crate) fn live_keys_recounted(&self) -> u64 {
        self.keys
            .values()
            .filter(|v| !v.last().is_tombstone())
            .count() as u64
    }

    /// [`Self::size_bytes`] counted from scratch, to check the running
    /// count against.
    #[cfg(test)]
    pub(crate) fn size_bytes_recounted(&self) -> u64 {
        self.histories()
            .map(|(k, versions)| key_bytes(k) + versions_bytes(versions))
            .sum()
    }

    /// The bytes of released versions keys hold, counted from scratch, to
    /// check [`Self::released_held`]'s running count against.
    #[cfg(test)]
    pub(crate) fn released_held_recounted(&self) -> (u64, u64) {
        let (compact, split) = (self.compact_revision, self.split);
        let recounted = self
            .keys
            .values()
            .map(|v| {
                let versions = v.as_slice();
                versions_bytes(&versions[..released(versions, compact, split)])
            })
            .sum();
        (self.released_held, recounted)
    }

    /// Whether a revision's compaction is split and unfinished.
    #[cfg(test)]
    pub(crate) fn compaction_pending(&self) -> bool {
        self.split.is_some()
    }

    /// How many keys differ from `before` (added, removed or changed).
    #[cfg(test)]
    pub(crate) fn keys_changed_since(&self, before: &MvccStore) -> usize {
        before.keys.diff(&self.keys).count()
    }

    /// Each key's live value at the current revision: (key, lease).
    pub(crate) fn live_leases(&self) -> impl Iterator<Item = (&[u8], i64)> {
        self.keys.iter().filter_map(|(k, v)| {
            let last = v.last().meta();
            (last.version != 0 && last.lease != 0).then_some((k.as_bytes(), last.lease))
        })
    }
}
