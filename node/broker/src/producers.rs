//! Idempotent producers: the leader remembers, per producer id, the last few
//! batches it wrote for a partition, so that a retried batch (same producer,
//! same base sequence) is answered with the original offsets instead of
//! being written again, and a batch that skips or repeats sequence numbers
//! out of order is refused. Bounded: [`BATCHES_PER_PRODUCER`] batches per
//! producer, [`PRODUCERS_MAX`] producers per partition (the least recently
//! active is forgotten first).

use std::collections::{HashMap, VecDeque};

/// Batches remembered per producer (Kafka's window is 5 in-flight batches).
pub const BATCHES_PER_PRODUCER: usize = 5;
/// Producers remembered per partition.
pub const PRODUCERS_MAX: usize = 10_000;

/// A batch that was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
}

#[derive(Debug, Default)]
struct Producer {
    batches: VecDeque<WrittenBatch>,
    last_used: u64,
}

/// The producer table of one partition leader.
#[derive(Debug, Default)]
pub struct Producers {
    by_id: HashMap<u64, Producer>,
    clock: u64,
}

impl Producers {
    /// Decides about a batch of `count` records from `producer` starting at
    /// `base_sequence`. A producer not (or no longer) known may start
    /// anywhere.
    pub fn check(&self, producer: u64, base_sequence: u64, count: u64) -> Check {
        let Some(p) = self.by_id.get(&producer) else {
            return Check::Append;
        };
        if let Some(b) = p
            .batches
            .iter()
            .find(|b| b.base_sequence == base_sequence && b.count == count)
        {
            return Check::Duplicate(b.base_offset);
        }
        let expected = p.batches.back().map_or(0, |b| b.base_sequence + b.count);
        if base_sequence == expected {
            Check::Append
        } else {
            Check::OutOfOrder { expected }
        }
    }

    /// Records a written batch.
    pub fn record(&mut self, producer: u64, batch: WrittenBatch) {
        self.clock += 1;
        if !self.by_id.contains_key(&producer)
            && self.by_id.len() >= PRODUCERS_MAX
            && let Some((&oldest, _)) = self.by_id.iter().min_by_key(|(_, p)| p.last_used)
        {
            self.by_id.remove(&oldest);
        }
        let p = self.by_id.entry(producer).or_default();
        p.last_used = self.clock;
        if p.batches.len() == BATCHES_PER_PRODUCER {
            p.batches.pop_front();
        }
        p.batches.push_back(batch);
    }

    /// Forgets everything (a leader taking over starts afresh).
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
        assert_eq!(t.check(7, 0, 3), Check::Append);
        t.record(7, written(0, 3, 100));
        assert_eq!(t.check(7, 0, 3), Check::Duplicate(100));
        assert_eq!(t.check(7, 3, 2), Check::Append);
        t.record(7, written(3, 2, 110));
        assert_eq!(t.check(7, 0, 3), Check::Duplicate(100));
        assert_eq!(t.check(7, 3, 2), Check::Duplicate(110));
        assert_eq!(t.check(7, 9, 1), Check::OutOfOrder { expected: 5 });
        assert_eq!(t.check(7, 4, 1), Check::OutOfOrder { expected: 5 });
        assert_eq!(
            t.check(8, 42, 1),
            Check::Append,
            "other producers are apart"
        );
    }

    #[test]
    fn the_window_and_the_table_are_bounded() {
        let mut t = Producers::default();
        for i in 0..10 {
            t.record(1, written(i, 1, i));
        }
        assert_eq!(t.check(1, 0, 1), Check::OutOfOrder { expected: 10 });
        assert_eq!(t.check(1, 9, 1), Check::Duplicate(9));
        assert_eq!(t.check(1, 5, 1), Check::Duplicate(5));
        for id in 0..(PRODUCERS_MAX as u64 + 5) {
            t.record(1000 + id, written(0, 1, 0));
        }
        assert_eq!(t.len(), PRODUCERS_MAX);
    }
}
