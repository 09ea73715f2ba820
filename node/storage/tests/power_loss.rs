//! A power loss after any mix of synchronous saves, deferred saves and
//! their syncs: every page of the log past the last finished sync may keep
//! its newest bytes, fall back to what it held at that sync (the zeros
//! written ahead), or come back garbled (a torn sector). Recovery must
//! start, keep every entry that was synced, and return a prefix of what
//! was written: never refuse, never invent.

use std::sync::Arc;

use flotilla_raft::{Bytes, Entry, EntryKind, LogSync, Storage, Term};
use flotilla_storage::{DiskStorage, StorageOptions};
use proptest::prelude::*;

mod common;

const PAGE: usize = 4096;
const FRAME_HEADER_BYTES: usize = 8 + 25;

#[derive(Clone, Debug)]
enum Op {
    /// Save entries with these payload sizes, synced at once.
    Save(Vec<usize>),
    /// Save them deferred.
    Deferred(Vec<usize>),
    /// Run the newest deferred write's sync (it covers every earlier one).
    Sync,
}

fn op() -> impl Strategy<Value = Op> {
    let sizes = || prop::collection::vec(1..700usize, 1..12);
    prop_oneof![
        1 => sizes().prop_map(Op::Save),
        4 => sizes().prop_map(Op::Deferred),
        2 => Just(Op::Sync),
    ]
}

/// What a page past the last sync holds after the power loss.
#[derive(Clone, Copy, Debug)]
enum Page {
    Kept,
    Reverted,
    Garbled(u8),
}

fn page() -> impl Strategy<Value = Page> {
    prop_oneof![
        3 => Just(Page::Kept),
        2 => Just(Page::Reverted),
        1 => any::<u8>().prop_map(Page::Garbled),
    ]
}

fn entry(index: u64, len: usize) -> Entry {
    Entry {
        term: Term(1),
        index,
        kind: EntryKind::Normal,
        data: Bytes::from(vec![(index % 251) as u8 | 1; len]),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn recovery_keeps_what_was_synced_and_a_prefix_of_the_rest(
        ops in prop::collection::vec(op(), 1..24),
        pages in prop::collection::vec(page(), 64),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let options = StorageOptions {
            preallocate_bytes: 64 << 10,
            ..common::one_voter(3)
        };
        let mut s = DiskStorage::open(dir.path(), options.clone()).unwrap();
        let mut written: Vec<Entry> = Vec::new();
        let mut synced = 0usize;
        let mut newest: Option<(Arc<dyn LogSync>, usize)> = None;
        for op in &ops {
            match op {
                Op::Save(sizes) | Op::Deferred(sizes) => {
                    let first = written.len() as u64 + 1;
                    let batch: Vec<Entry> = sizes
                        .iter()
                        .enumerate()
                        .map(|(i, &len)| entry(first + i as u64, len))
                        .collect();
                    written.extend(batch.iter().cloned());
                    if matches!(op, Op::Save(_)) {
                        s.save(None, &batch).unwrap();
                        synced = written.len();
                    } else if let Some(handle) = s.save_deferred(None, &batch).unwrap() {
                        newest = Some((handle, written.len()));
                    }
                }
                Op::Sync => {
                    if let Some((handle, covers)) = newest.take() {
                        handle.sync().unwrap();
                        synced = synced.max(covers);
                    }
                }
            }
        }
        let segment = s.segment_paths().last().unwrap().clone();
        prop_assert_eq!(s.segment_paths().len(), 1);
        drop(s);
        // The power loss: bytes past the synced frames, page by page.
        let synced_end: usize = written[..synced]
            .iter()
            .map(|e| FRAME_HEADER_BYTES + e.data.len())
            .sum();
        let mut bytes = std::fs::read(&segment).unwrap();
        for (n, start) in (synced_end / PAGE * PAGE..bytes.len()).step_by(PAGE).enumerate() {
            let from = start.max(synced_end);
            let to = (start + PAGE).min(bytes.len());
            match pages[n % pages.len()] {
                Page::Kept => {}
                Page::Reverted => bytes[from..to].fill(0),
                Page::Garbled(seed) => {
                    for (i, b) in bytes[from..to].iter_mut().enumerate() {
                        *b = seed.wrapping_mul(31).wrapping_add(i as u8);
                    }
                }
            }
        }
        std::fs::write(&segment, &bytes).unwrap();
        let s = match DiskStorage::open(dir.path(), options) {
            Ok(s) => s,
            Err(e) => return Err(TestCaseError::fail(format!(
                "refused after a power loss past entry {synced}: {e}"
            ))),
        };
        let last = s.last_index() as usize;
        prop_assert!(last >= synced, "lost synced entries: kept {last}, synced {synced}");
        prop_assert!(last <= written.len());
        let kept = s.entries(1, last as u64 + 1, u64::MAX).unwrap();
        prop_assert!(kept == written[..last], "recovered entries differ from those written");
    }
}
