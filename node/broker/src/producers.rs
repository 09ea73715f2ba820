//! Idempotent producers: each replica remembers, per producer id, its
//! producer epoch and the last few runs of records it wrote (sequence range
//! and offsets), so that a retried batch (same producer, epoch and
//! sequences) is answered with the original offsets instead of being written
//! again, and a batch that skips or repeats sequence numbers out of order is
//! refused.
//!
//! The table survives leader changes and restarts because it is derived from
//! the log: every record of an idempotent batch carries its producer's id,
//! epoch and sequence (`flotilla_log::record::ProducerStamp`); the leader
//! stamps them, followers copy them and feed their own table record by
//! record, and a replica opening its log loads the last producer-state
//! snapshot and replays the records after it (see [`Snapshot`]).
//!
//! Rules:
//! 1. A producer not (or no longer) known, or one with a newer epoch than
//!    the one known, may start at any sequence; an older epoch is fenced.
//! 2. A batch whose sequences lie within one remembered run is a duplicate;
//!    its offsets are the run's (runs have contiguous sequences and
//!    offsets, so the answer is exact whether the run was one batch or
//!    several merged).
//! 3. Otherwise the batch must start at the next sequence after the last
//!    run.
//!
//! Bounded: [`BATCHES_PER_PRODUCER`] runs per producer, [`PRODUCERS_MAX`]
//! producers per partition (the least recently active is forgotten first).

use serde::{Deserialize, Serialize};
use std::collections::{HashMap, VecDeque};

/// Runs remembered per producer (Kafka's window is 5 in-flight batches).
pub const BATCHES_PER_PRODUCER: usize = 5;
/// Producers remembered per partition.
pub const PRODUCERS_MAX: usize = 10_000;

/// A run of records a producer wrote: contiguous sequences at contiguous
/// offsets (one batch, or several adjacent ones merged).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WrittenBatch {
    /// Sequence of its first record.
    pub base_sequence: u64,
    /// Records in it.
    pub count: u64,
    /// Offset of its first record.
    pub base_offset: u64,
}

/// What to do with an incoming batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// Write it.
    Append,
    /// Already written at this base offset: answer without writing.
    Duplicate(u64),
    /// A gap or a reordering: refuse (the producer expected `expected`).
    OutOfOrder {
        /// The next sequence expected.
        expected: u64,
    },
    /// An older epoch than `current`: refuse.
    Fenced {
        /// The epoch seen.
        current: i16,
    },
}

#[derive(Debug, Default, Clone)]
struct Producer {
    epoch: i16,
    batches: VecDeque<WrittenBatch>,
    last_used: u64,
}

/// The producer table of one partition replica.
#[derive(Debug, Default, Clone)]
pub struct Producers {
    by_id: HashMap<u64, Producer>,
    clock: u64,
}

/// One producer in a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotProducer {
    /// Producer id.
    pub id: u64,
    /// Its epoch.
    pub epoch: i16,
    /// Its runs, oldest first.
    pub batches: Vec<WrittenBatch>,
}

/// The producer table as of a log offset: what a replica writes beside its
/// log (`producer-state-snapshot`) so that opening replays only the records
/// from `end`, not the whole log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Format version (1).
    pub version: u32,
    /// The table covers every record below this offset.
    pub end: u64,
    /// The producers, least recently active first.
    pub producers: Vec<SnapshotProducer>,
}

impl Producers {
    /// Decides about a batch of `count` records from `producer` in `epoch`
    /// starting at `base_sequence` (rules 1-3).
    pub fn check(&self, producer: u64, epoch: i16, base_sequence: u64, count: u64) -> Check {
        let Some(p) = self.by_id.get(&producer) else {
            return Check::Append;
        };
        if epoch < p.epoch {
            return Check::Fenced { current: p.epoch };
        }
        if epoch > p.epoch {
            return Check::Append;
        }
        if let Some(b) = p.batches.iter().find(|b| {
            b.base_sequence <= base_sequence
                && base_sequence.saturating_add(count) <= b.base_sequence + b.count
        }) {
            return Check::Duplicate(b.base_offset + (base_sequence - b.base_sequence));
        }
        let expected = p.batches.back().map_or(0, |b| b.base_sequence + b.count);
        if base_sequence == expected || p.batches.is_empty() {
            Check::Append
        } else {
            Check::OutOfOrder { expected }
        }
    }

    /// Records a written batch (or one record, count 1, as followers and
    /// replays do). A run that continues the producer's last one in both
    /// sequence and offset extends it; a new epoch starts the producer
    /// afresh.
    pub fn record(&mut self, producer: u64, epoch: i16, batch: WrittenBatch) {
        self.clock += 1;
        if !self.by_id.contains_key(&producer)
            && self.by_id.len() >= PRODUCERS_MAX
            && let Some((&oldest, _)) = self.by_id.iter().min_by_key(|(_, p)| p.last_used)
        {
            self.by_id.remove(&oldest);
        }
        let p = self.by_id.entry(producer).or_insert_with(|| Producer {
            epoch,
            ..Producer::default()
        });
        p.last_used = self.clock;
        if epoch != p.epoch {
            p.epoch = epoch;
            p.batches.clear();
        }
        if let Some(last) = p.batches.back_mut()
            && last.base_sequence + last.count == batch.base_sequence
            && last.base_offset + last.count == batch.base_offset
        {
            last.count += batch.count;
            return;
        }
        if p.batches.len() == BATCHES_PER_PRODUCER {
            p.batches.pop_front();
        }
        p.batches.push_back(batch);
    }

    /// Forgets records at or after `offset` (the log was truncated there).
    /// A producer left with no run is forgotten: it may start anywhere.
    pub fn truncate_from(&mut self, offset: u64) {
        self.by_id.retain(|_, p| {
            while let Some(last) = p.batches.back_mut() {
                if last.base_offset >= offset {
                    p.batches.pop_back();
                } else {
                    last.count = last.count.min(offset - last.base_offset);
                    break;
                }
            }
            !p.batches.is_empty()
        });
    }

    /// Forgets everything.
    pub fn clear(&mut self) {
        self.by_id.clear();
    }

    /// Producers remembered.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Whether none is remembered.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// The table as a snapshot covering records below `end`.
    pub fn snapshot(&self, end: u64) -> Snapshot {
        let mut ps: Vec<(&u64, &Producer)> = self.by_id.iter().collect();
        ps.sort_by_key(|(_, p)| p.last_used);
        Snapshot {
            version: 1,
            end,
            producers: ps
                .into_iter()
                .map(|(&id, p)| SnapshotProducer {
                    id,
                    epoch: p.epoch,
                    batches: p.batches.iter().copied().collect(),
                })
                .collect(),
        }
    }

    /// The table of a snapshot (bounds applied as if recorded in order).
    pub fn from_snapshot(s: &Snapshot) -> Producers {
        let mut t = Producers::default();
        for p in &s.producers {
            for b in &p.batches {
                t.record(p.id, p.epoch, *b);
            }
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(base_sequence: u64, count: u64, base_offset: u64) -> WrittenBatch {
        WrittenBatch {
            base_sequence,
            count,
            base_offset,
        }
    }

    #[test]
    fn retries_are_duplicates_and_gaps_are_refused() {
        let mut t = Producers::default();
        assert_eq!(t.check(7, 0, 0, 3), Check::Append);
        t.record(7, 0, written(0, 3, 100));
        assert_eq!(t.check(7, 0, 0, 3), Check::Duplicate(100));
        assert_eq!(t.check(7, 0, 3, 2), Check::Append);
        t.record(7, 0, written(3, 2, 110));
        assert_eq!(t.check(7, 0, 0, 3), Check::Duplicate(100));
        assert_eq!(t.check(7, 0, 3, 2), Check::Duplicate(110));
        assert_eq!(t.check(7, 0, 9, 1), Check::OutOfOrder { expected: 5 });
        assert_eq!(t.check(7, 0, 4, 1), Check::Duplicate(111), "within a run");
        assert_eq!(t.check(7, 0, 4, 2), Check::OutOfOrder { expected: 5 });
        assert_eq!(
            t.check(8, 0, 42, 1),
            Check::Append,
            "other producers are apart"
        );
    }

    /// Records copied one by one (a follower, a replay) merge into runs
    /// that answer the leader's batches exactly.
    #[test]
    fn record_by_record_runs_answer_whole_batches() {
        let mut t = Producers::default();
        for i in 0..10 {
            t.record(3, 0, written(i, 1, 50 + i));
        }
        assert_eq!(t.check(3, 0, 0, 4), Check::Duplicate(50));
        assert_eq!(t.check(3, 0, 4, 6), Check::Duplicate(54));
        assert_eq!(t.check(3, 0, 10, 1), Check::Append);
        // A gap in offsets (another producer between) starts a new run.
        t.record(3, 0, written(10, 1, 70));
        assert_eq!(t.check(3, 0, 9, 2), Check::OutOfOrder { expected: 11 });
        assert_eq!(t.check(3, 0, 10, 1), Check::Duplicate(70));
    }

    #[test]
    fn epochs_fence_and_restart_producers() {
        let mut t = Producers::default();
        t.record(1, 2, written(0, 5, 0));
        assert_eq!(t.check(1, 1, 5, 1), Check::Fenced { current: 2 });
        assert_eq!(t.check(1, 3, 0, 1), Check::Append, "a new epoch restarts");
        t.record(1, 3, written(0, 1, 9));
        assert_eq!(t.check(1, 3, 0, 1), Check::Duplicate(9));
        assert_eq!(t.check(1, 2, 0, 5), Check::Fenced { current: 3 });
    }

    #[test]
    fn truncation_forgets_the_cut_records() {
        let mut t = Producers::default();
        t.record(1, 0, written(0, 10, 0));
        t.record(2, 0, written(0, 5, 20));
        t.truncate_from(6);
        assert_eq!(t.check(1, 0, 0, 6), Check::Duplicate(0));
        assert_eq!(t.check(1, 0, 6, 4), Check::Append, "6.. was cut");
        assert_eq!(t.len(), 1, "producer 2 had nothing left");
    }

    #[test]
    fn snapshots_round_trip() {
        let mut t = Producers::default();
        t.record(1, 0, written(0, 10, 0));
        t.record(2, 4, written(7, 5, 20));
        let s = t.snapshot(25);
        let json = serde_json::to_vec(&s).unwrap();
        let back: Snapshot = serde_json::from_slice(&json).unwrap();
        assert_eq!(back, s);
        let u = Producers::from_snapshot(&back);
        assert_eq!(u.check(2, 4, 7, 5), Check::Duplicate(20));
        assert_eq!(u.check(1, 0, 10, 1), Check::Append);
        assert_eq!(u.snapshot(25), s);
    }

    #[test]
    fn the_window_and_the_table_are_bounded() {
        let mut t = Producers::default();
        for i in 0..10 {
            // Offsets apart, so each batch is its own run.
            t.record(1, 0, written(i, 1, i * 10));
        }
        assert_eq!(t.check(1, 0, 0, 1), Check::OutOfOrder { expected: 10 });
        assert_eq!(t.check(1, 0, 9, 1), Check::Duplicate(90));
        assert_eq!(t.check(1, 0, 5, 1), Check::Duplicate(50));
        for id in 0..(PRODUCERS_MAX as u64 + 5) {
            t.record(1000 + id, 0, written(0, 1, 0));
        }
        assert_eq!(t.len(), PRODUCERS_MAX);
    }
}
