//! How the MVCC store holds a key's versions in memory: each version packed
//! into one allocation, and a key's list of versions with the common case —
//! one version — kept inline.
//!
//! A store of a million keys holds a million of these, so their layout is
//! most of a member's memory. A struct of five `i64`s beside a `Vec<u8>`
//! value would cost two allocations per version (one for the list, one for
//! the value) and a 64-byte slot in every B-tree node of the key index,
//! where sequential inserts leave nodes about half full. Here the slot is
//! [`VersionList`]'s 16 bytes and the only allocation is the version itself,
//! whose header is a few varint bytes (a 256-byte value fits the same
//! allocator size class as the value alone).

use super::mvcc::Revision;
use prost::encoding::{decode_varint, encode_varint};
use std::fmt;
use std::sync::Arc;

/// A version's fields other than its value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct VersionMeta {
    /// The revision of the change.
    pub revision: Revision,
    /// The revision the key was created at (0 for a tombstone).
    pub create_revision: i64,
    /// The key's version number: 1 at creation, +1 per put; 0 for a
    /// tombstone.
    pub version: i64,
    /// The lease the key is attached to, 0 for none.
    pub lease: i64,
}

/// One version of a key: a header of five varints — main, sub,
/// `main - create_revision` (0 for a key's first version), version, lease —
/// then the value, in one exact-size heap allocation. Every `i64` is
/// written as its two's-complement `u64`, so any value round-trips.
/// `version == 0` marks a tombstone (a deletion). Immutable and shared
/// (`Arc`): a frozen view of the store and the store itself hold the same
/// versions, and copying a tree node copies reference counts, not values.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Version(Arc<[u8]>);

/// The longest header: five varints of at most 10 bytes.
const HEADER_BYTES_MAX: usize = 50;

impl Version {
    /// The version `meta` describes, holding `value` (empty for a
    /// tombstone).
    pub fn new(meta: VersionMeta, value: &[u8]) -> Version {
        let mut header = [0u8; HEADER_BYTES_MAX];
        let mut at = &mut header[..];
        let fields = [
            meta.revision.main,
            meta.revision.sub,
            meta.revision.main.wrapping_sub(meta.create_revision),
            meta.version,
            meta.lease,
        ];
        for field in fields {
            encode_varint(field as u64, &mut at);
        }
        let len = HEADER_BYTES_MAX - at.len();
        // Two slice copies into a buffer, then one into the `Arc`: collecting
        // the chained bytes into the `Arc` directly copies them one by one,
        // about seven times slower for a 256-byte value (it was 1.5 % of the
        // members' CPU on a put load).
        let mut bytes = Vec::with_capacity(len + value.len());
        bytes.extend_from_slice(&header[..len]);
        bytes.extend_from_slice(value);
        Version(Arc::from(bytes))
    }

    /// A live version.
    pub fn live(
        revision: Revision,
        create_revision: i64,
        version: i64,
        lease: i64,
        value: &[u8],
    ) -> Version {
        debug_assert!(version > 0, "a live version counts from 1");
        let meta = VersionMeta {
            revision,
            create_revision,
            version,
            lease,
        };
        Version::new(meta, value)
    }

    /// A deletion at `revision`.
    pub fn tombstone(revision: Revision) -> Version {
        let meta = VersionMeta {
            revision,
            create_revision: 0,
            version: 0,
            lease: 0,
        };
        Version::new(meta, &[])
    }

    /// Reads the first `N` header fields; returns them and the rest.
    fn read<const N: usize>(&self) -> ([i64; N], &[u8]) {
        let mut rest: &[u8] = &self.0;
        let mut out = [0i64; N];
        for field in &mut out {
            *field = decode_varint(&mut rest).expect("a version's header is well formed") as i64;
        }
        (out, rest)
    }

    /// The revision of the write transaction that made it.
    pub fn main(&self) -> i64 {
        self.read::<1>().0[0]
    }

    /// Its position: transaction revision and change index within it.
    pub fn revision(&self) -> Revision {
        let ([main, sub], _) = self.read::<2>();
        Revision { main, sub }
    }

    /// Every field but the value.
    pub fn meta(&self) -> VersionMeta {
        self.parts().0
    }

    /// The fields and the value.
    pub fn parts(&self) -> (VersionMeta, &[u8]) {
        let ([main, sub, age, version, lease], value) = self.read::<5>();
        let meta = VersionMeta {
            revision: Revision { main, sub },
            create_revision: main.wrapping_sub(age),
            version,
            lease,
        };
        (meta, value)
    }

    /// The key's version number (0 for a tombstone).
    pub fn version(&self) -> i64 {
        self.read::<4>().0[3]
    }

    /// Whether this version is a deletion.
    pub fn is_tombstone(&self) -> bool {
        self.version() == 0
    }
}

impl fmt::Debug for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (meta, value) = self.parts();
        f.debug_struct("Version")
            .field("meta", &meta)
            .field("value_bytes", &value.len())
            .finish()
    }
}

/// A key's retained versions, oldest first; never empty.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum VersionList {
    /// The usual case once history is compacted: no list allocation.
    One(Version),
    /// Two or more versions, shared: cloning the list (as copying a tree
    /// node does while a frozen view of the store holds it, e.g. the
    /// snapshot thread's) is one reference count, and a write copies the
    /// list only when it is shared. The pointer is thin, which keeps this
    /// enum, stored in every B-tree slot, at 16 bytes instead of 24.
    Many(Arc<Vec<Version>>),
}

impl VersionList {
    /// The versions, oldest first.
    pub fn as_slice(&self) -> &[Version] {
        match self {
            VersionList::One(v) => std::slice::from_ref(v),
            VersionList::Many(vs) => vs,
        }
    }

    /// The newest version.
    pub fn last(&self) -> &Version {
        match self {
            VersionList::One(v) => v,
            VersionList::Many(vs) => vs.last().expect("Many holds two or more"),
        }
    }

    /// Appends a newer version.
    pub fn push(&mut self, version: Version) {
        debug_assert!(self.last().revision() < version.revision());
        match self {
            VersionList::Many(vs) => Arc::make_mut(vs).push(version),
            VersionList::One(first) => {
                // An empty shared slice does not allocate.
                let first = std::mem::replace(first, Version(Arc::default()));
                *self = VersionList::Many(Arc::new(vec![first, version]));
            }
        }
    }

    /// Drops the `n` oldest versions, `n < len`, going back to the inline
    /// form (and freeing the list) when one is left.
    pub fn drop_oldest(&mut self, n: usize) {
        if n == 0 {
            return;
        }
        let VersionList::Many(vs) = self else {
            panic!("cannot drop {n} of one version");
        };
        assert!(n < vs.len(), "cannot drop {n} of {} versions", vs.len());
        if n + 1 == vs.len() {
            // Whether or not the list is shared, only its newest stays.
            let last = vs.last().expect("Many holds two or more").clone();
            *self = VersionList::One(last);
            return;
        }
        let vs = Arc::make_mut(vs);
        vs.drain(..n);
        if vs.capacity() > 2 * vs.len() {
            vs.shrink_to_fit();
        }
    }

    /// Reads the first byte of each version, so that a walk over many
    /// lists can bring a batch of them into the cache together
    /// ([`Warmed`]).
    fn touch(&self) -> u8 {
        self.as_slice()
            .iter()
            .fold(0, |acc, v| acc ^ v.0.first().copied().unwrap_or(0))
    }

    /// A list from versions in order; `None` when empty.
    pub fn from_vec(mut versions: Vec<Version>) -> Option<VersionList> {
        match versions.len() {
            0 => None,
            1 => versions.pop().map(VersionList::One),
            _ => {
                versions.shrink_to_fit();
                Some(VersionList::Many(Arc::new(versions)))
            }
        }
    }
}

/// How many lists [`Warmed`] reads ahead.
const WARM_BATCH: usize = 64;

/// Walks `(key, list)` pairs in batches of [`WARM_BATCH`], reading every
/// version of a batch before yielding the first. The versions are separate
/// allocations, in no order the key order follows, so a walk over a large
/// store (a snapshot's encoding, a long range) otherwise waits on one cache
/// miss after another (a shared list is two more: its count and its
/// buffer). The reads of a batch do not depend on each other, so the
/// processor has many of them in flight at once; the batch then runs from
/// the cache. The first pair comes alone, so a walk that takes one (a
/// single key, `--limit 1`) costs nothing more.
pub(crate) struct Warmed<'a, K, I> {
    inner: I,
    started: bool,
    batch: std::collections::VecDeque<(K, &'a VersionList)>,
}

impl<'a, K, I: Iterator<Item = (K, &'a VersionList)>> Warmed<'a, K, I> {
    pub fn new(inner: I) -> Self {
        Warmed {
            inner,
            started: false,
            batch: std::collections::VecDeque::new(),
        }
    }
}

impl<'a, K, I: Iterator<Item = (K, &'a VersionList)>> Iterator for Warmed<'a, K, I> {
    type Item = (K, &'a VersionList);

    fn next(&mut self) -> Option<Self::Item> {
        if !self.started {
            self.started = true;
            return self.inner.next();
        }
        if self.batch.is_empty() {
            self.batch.extend(self.inner.by_ref().take(WARM_BATCH));
            let touched = self.batch.iter().fold(0, |acc, (_, l)| acc ^ l.touch());
            std::hint::black_box(touched);
        }
        self.batch.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rev(main: i64) -> Revision {
        Revision { main, sub: 0 }
    }

    #[test]
    fn a_version_reads_back_its_fields() {
        for (meta, value) in [
            (
                VersionMeta {
                    revision: Revision { main: 9, sub: 3 },
                    create_revision: 4,
                    version: 2,
                    lease: 7,
                },
                &b"value"[..],
            ),
            (
                VersionMeta {
                    revision: Revision {
                        main: i64::MAX,
                        sub: i64::MAX,
                    },
                    create_revision: i64::MIN,
                    version: -1,
                    lease: i64::MIN,
                },
                &[0xff; 300][..],
            ),
        ] {
            let v = Version::new(meta, value);
            assert_eq!(v.parts(), (meta, value));
            assert_eq!(v.revision(), meta.revision);
            assert_eq!(v.main(), meta.revision.main);
            assert_eq!(v.version(), meta.version);
        }
        let t = Version::tombstone(Revision { main: 5, sub: 1 });
        assert!(t.is_tombstone());
        assert_eq!(t.parts().1, b"");
        assert_eq!(t.meta().create_revision, 0);
    }

    #[test]
    fn a_first_version_costs_a_few_header_bytes() {
        // A key's first version at revision 1,000,000: three bytes of main,
        // one each for sub, creation age, version and lease.
        let v = Version::live(rev(1_000_000), 1_000_000, 1, 0, &[7; 256]);
        assert_eq!(v.0.len(), 256 + 7);
    }

    #[test]
    fn a_list_grows_and_shrinks_back_to_one() {
        let mut l = VersionList::One(Version::live(rev(2), 2, 1, 0, b"a"));
        l.push(Version::live(rev(3), 2, 2, 0, b"b"));
        l.push(Version::tombstone(rev(4)));
        assert_eq!(l.as_slice().len(), 3);
        assert_eq!(l.as_slice()[0].parts().1, b"a");
        assert!(l.last().is_tombstone());
        l.drop_oldest(1);
        assert_eq!(l.as_slice()[0].parts().1, b"b");
        l.drop_oldest(1);
        assert!(matches!(l, VersionList::One(ref v) if v.is_tombstone()));
        assert_eq!(VersionList::from_vec(Vec::new()), None);
        assert_eq!(
            VersionList::from_vec(vec![Version::tombstone(rev(5))]),
            Some(VersionList::One(Version::tombstone(rev(5))))
        );
    }

    #[test]
    fn a_shared_list_is_copied_only_by_a_write_and_the_copy_alone_changes() {
        let mut l = VersionList::One(Version::live(rev(2), 2, 1, 0, b"a"));
        l.push(Version::live(rev(3), 2, 2, 0, b"b"));
        l.push(Version::live(rev(4), 2, 3, 0, b"c"));
        let frozen = l.clone();
        let (VersionList::Many(a), VersionList::Many(b)) = (&l, &frozen) else {
            panic!("three versions are Many");
        };
        assert!(Arc::ptr_eq(a, b), "a clone shares the list");
        l.push(Version::tombstone(rev(5)));
        l.drop_oldest(1);
        assert_eq!(frozen.as_slice().len(), 3, "the frozen list is untouched");
        assert_eq!(frozen.last().main(), 4);
        assert_eq!(l.as_slice().len(), 3);
        assert_eq!(l.as_slice()[0].main(), 3);
        let frozen = l.clone();
        l.drop_oldest(2);
        assert!(matches!(l, VersionList::One(ref v) if v.is_tombstone()));
        assert_eq!(frozen.as_slice().len(), 3);
    }

    #[test]
    fn a_warmed_walk_yields_every_pair_in_order() {
        let lists: Vec<VersionList> = (1..=200)
            .map(|i| VersionList::One(Version::live(rev(i), i, 1, 0, b"v")))
            .collect();
        for n in [0, 1, 2, WARM_BATCH, WARM_BATCH + 1, 200] {
            let walk: Vec<i64> = Warmed::new(lists[..n].iter().enumerate())
                .map(|(i, l)| {
                    assert_eq!(l.last().main(), i as i64 + 1);
                    l.last().main()
                })
                .collect();
            assert_eq!(walk, (1..=n as i64).collect::<Vec<_>>(), "{n} lists");
        }
    }

    #[test]
    fn the_key_index_slot_stays_small() {
        // The persistent B-tree of keys (imbl's OrdMap) stores this inline
        // beside each key, many per node: every byte here is paid per key.
        assert_eq!(std::mem::size_of::<VersionList>(), 16);
    }
}
