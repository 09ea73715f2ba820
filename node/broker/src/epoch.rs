//! The leader-epoch cache of a partition replica (Kafka's
//! `leader-epoch-checkpoint`): for each leader epoch that wrote records
//! here, the offset of its first record. It answers KIP-101/279's question
//! "where does epoch E end in your log?" and gives the truncation point of a
//! follower after a leader change.
//!
//! The rules (KIP-279):
//! 1. A leader appends `(epoch, log end)` when it takes over, before it
//!    writes; a follower appends `(epoch, offset)` when it copies the first
//!    record of a newer epoch.
//! 2. `end_offset(E)`: the largest epoch `E' <= E` in the cache and the start
//!    of the first epoch after `E'` (the log end if `E'` is the latest).
//!    No such epoch: `(-1, start of the earliest epoch)`.
//! 3. After a leader change the follower sends its latest epoch `E_f`; the
//!    leader answers `(E', end)`; the follower truncates to
//!    `min(end, its own end_offset(E'))`: every record after that point was
//!    written by a leader the new leader does not descend from.

use std::io::Write;
use std::path::{Path, PathBuf};

/// The file name inside the partition's directory.
pub const CHECKPOINT_FILE: &str = "leader-epoch-checkpoint";

/// One epoch's start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochEntry {
    /// The leader epoch (the leader key's create_revision).
    pub epoch: i64,
    /// The offset of its first record.
    pub start_offset: u64,
}

/// The epochs of one replica's log, ascending by epoch and by offset.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EpochCache {
    entries: Vec<EpochEntry>,
}

impl EpochCache {
    /// A cache of `entries` (checked ascending).
    pub fn from_entries(entries: Vec<EpochEntry>) -> Result<EpochCache, String> {
        for w in entries.windows(2) {
            if w[1].epoch <= w[0].epoch || w[1].start_offset < w[0].start_offset {
                return Err(format!(
                    "epoch entries out of order: {:?} then {:?}",
                    w[0], w[1]
                ));
            }
        }
        Ok(EpochCache { entries })
    }

    /// The entries, ascending.
    pub fn entries(&self) -> &[EpochEntry] {
        &self.entries
    }

    /// The latest epoch, or -1.
    pub fn latest_epoch(&self) -> i64 {
        self.entries.last().map_or(-1, |e| e.epoch)
    }

    /// Records that `epoch` starts at `start_offset`. A start at or below
    /// the starts of later-or-equal epochs replaces them (a leader taking
    /// over at a log end below an older epoch's start cannot happen after a
    /// truncation; this keeps the cache ordered regardless). Returns whether
    /// the cache changed. An epoch older than the latest is ignored.
    pub fn assign(&mut self, epoch: i64, start_offset: u64) -> bool {
        if let Some(last) = self.entries.last()
            && epoch <= last.epoch
        {
            return false;
        }
        self.entries.retain(|e| e.start_offset < start_offset);
        self.entries.push(EpochEntry {
            epoch,
            start_offset,
        });
        true
    }

    /// The epoch that wrote `offset` (the last entry starting at or before
    /// it), or -1.
    pub fn epoch_of(&self, offset: u64) -> i64 {
        let i = self.entries.partition_point(|e| e.start_offset <= offset);
        if i == 0 {
            -1
        } else {
            self.entries[i - 1].epoch
        }
    }

    /// Rule 2: `(E', end offset of E')` for the asked `epoch`, given this
    /// log's end.
    pub fn end_offset_for(&self, epoch: i64, log_end: u64) -> (i64, u64) {
        let i = self.entries.partition_point(|e| e.epoch <= epoch);
        if i == 0 {
            let start = self.entries.first().map_or(log_end, |e| e.start_offset);
            return (-1, start);
        }
        let found = self.entries[i - 1].epoch;
        let end = self
            .entries
            .get(i)
            .map_or(log_end, |next| next.start_offset);
        (found, end)
    }

    /// Rule 3: where a follower whose log ends at `log_end` truncates, given
    /// the leader's answer `(leader_epoch, leader_end)`.
    pub fn truncation_point(&self, leader_epoch: i64, leader_end: u64, log_end: u64) -> u64 {
        if leader_epoch < 0 {
            return leader_end.min(log_end);
        }
        // If the leader's epoch is not in our log, `my_end` is the end of
        // our largest epoch below it: what follows may diverge, and the next
        // round (asking with our then latest epoch) settles it.
        let (_, my_end) = self.end_offset_for(leader_epoch, log_end);
        leader_end.min(my_end).min(log_end)
    }

    /// Drops the entries of records at or after `offset` (after a log
    /// truncation to `offset`).
    pub fn truncate_from(&mut self, offset: u64) {
        self.entries.retain(|e| e.start_offset < offset);
    }

    /// Drops entries of records before `offset` except the one covering it
    /// (after retention removed segments).
    pub fn truncate_before(&mut self, offset: u64) {
        let i = self.entries.partition_point(|e| e.start_offset <= offset);
        if i > 1 {
            self.entries.drain(..i - 1);
        }
    }
}

/// A checkpoint file: `version`, `count`, then `epoch offset` per line
/// (Kafka's format). Written whole to a temporary file, fsynced, renamed.
#[derive(Debug, Clone)]
pub struct CheckpointFile {
    path: PathBuf,
}

impl CheckpointFile {
    /// The checkpoint named `name` in `dir`.
    pub fn new(dir: &Path, name: &str) -> CheckpointFile {
        CheckpointFile {
            path: dir.join(name),
        }
    }

    /// Reads the pairs; an absent file is empty.
    pub fn read(&self) -> std::io::Result<Vec<(i64, u64)>> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let bad = |why: &str| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{}: {why}", self.path.display()),
            )
        };
        let mut lines = text.lines();
        if lines.next() != Some("0") {
            return Err(bad("unknown version"));
        }
        let count: usize = lines
            .next()
            .and_then(|l| l.parse().ok())
            .ok_or_else(|| bad("bad count"))?;
        let mut out = Vec::with_capacity(count.min(1 << 16));
        for line in lines.take(count) {
            let (a, b) = line.split_once(' ').ok_or_else(|| bad("bad line"))?;
            out.push((
                a.parse().map_err(|_| bad("bad epoch"))?,
                b.parse().map_err(|_| bad("bad offset"))?,
            ));
        }
        if out.len() != count {
            return Err(bad("fewer lines than the count"));
        }
        Ok(out)
    }

    /// Replaces the file's content with `pairs`, durably.
    pub fn write(&self, pairs: &[(i64, u64)]) -> std::io::Result<()> {
        let mut text = format!("0\n{}\n", pairs.len());
        for (a, b) in pairs {
            text.push_str(&format!("{a} {b}\n"));
        }
        let tmp = self.path.with_extension("tmp");
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, &self.path)?;
        if let Some(dir) = self.path.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(pairs: &[(i64, u64)]) -> EpochCache {
        EpochCache::from_entries(
            pairs
                .iter()
                .map(|&(epoch, start_offset)| EpochEntry {
                    epoch,
                    start_offset,
                })
                .collect(),
        )
        .unwrap()
    }

    #[test]
    fn end_offset_follows_kip_279() {
        let c = cache(&[(5, 0), (9, 100), (12, 250)]);
        assert_eq!(c.end_offset_for(5, 300), (5, 100));
        assert_eq!(c.end_offset_for(7, 300), (5, 100), "largest epoch <= asked");
        assert_eq!(
            c.end_offset_for(12, 300),
            (12, 300),
            "latest ends at the log end"
        );
        assert_eq!(c.end_offset_for(40, 300), (12, 300));
        assert_eq!(
            c.end_offset_for(3, 300),
            (-1, 0),
            "none: start of the earliest"
        );
        assert_eq!(EpochCache::default().end_offset_for(3, 7), (-1, 7));
        assert_eq!(c.epoch_of(99), 5);
        assert_eq!(c.epoch_of(100), 9);
        assert_eq!(c.epoch_of(1000), 12);
    }

    /// KIP-101's scenario: the old leader wrote 50..60 in epoch 9 that never
    /// reached the new leader (epoch 12 started at 50): it truncates to 50.
    #[test]
    fn divergent_suffix_is_cut_at_the_new_epoch_start() {
        let leader = cache(&[(5, 0), (12, 50)]);
        let follower = cache(&[(5, 0), (9, 50)]);
        let (e, end) = leader.end_offset_for(follower.latest_epoch(), 80);
        assert_eq!((e, end), (5, 50));
        assert_eq!(follower.truncation_point(e, end, 60), 50);
    }

    /// A follower that is merely behind loses nothing.
    #[test]
    fn a_lagging_follower_keeps_its_log() {
        let leader = cache(&[(5, 0), (12, 50)]);
        let follower = cache(&[(5, 0)]);
        let (e, end) = leader.end_offset_for(follower.latest_epoch(), 80);
        assert_eq!(follower.truncation_point(e, end, 40), 40);
        // ... and one that has all of epoch 5 too.
        assert_eq!(follower.truncation_point(e, end, 50), 50);
    }

    /// KIP-279: a follower with an epoch the leader never had truncates to
    /// where the leader's matching epoch ended.
    #[test]
    fn unknown_epochs_are_resolved_by_the_largest_common_one() {
        let leader = cache(&[(1, 0), (3, 20), (6, 30)]);
        let follower = cache(&[(1, 0), (2, 15), (4, 25)]);
        let (e, end) = leader.end_offset_for(follower.latest_epoch(), 40);
        assert_eq!((e, end), (3, 30));
        // The follower's own end of epoch 3 (it never had it) is the start of
        // its next epoch after 2: 25; it had diverged from 15 though, which
        // the next round (asking with epoch 2) finds.
        let cut = follower.truncation_point(e, end, 28);
        assert_eq!(cut, 25);
        let mut f = follower.clone();
        f.truncate_from(cut);
        let (e2, end2) = leader.end_offset_for(f.latest_epoch(), 40);
        assert_eq!((e2, end2), (1, 20));
        assert_eq!(f.truncation_point(e2, end2, cut), 15);
    }

    #[test]
    fn assign_keeps_order_and_truncation_drops_entries() {
        let mut c = EpochCache::default();
        assert!(c.assign(3, 0));
        assert!(!c.assign(3, 5), "same epoch: no new entry");
        assert!(!c.assign(2, 5), "older epoch ignored");
        assert!(c.assign(7, 10));
        assert!(c.assign(9, 10), "an empty epoch is replaced");
        assert_eq!(c.entries().len(), 2);
        c.truncate_from(10);
        assert_eq!(c.latest_epoch(), 3);
        c.assign(11, 40);
        c.assign(12, 50);
        c.truncate_before(45);
        assert_eq!(c.entries()[0].epoch, 11);
    }

    #[test]
    fn checkpoint_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let f = CheckpointFile::new(dir.path(), CHECKPOINT_FILE);
        assert_eq!(f.read().unwrap(), vec![]);
        f.write(&[(3, 0), (9, 120)]).unwrap();
        assert_eq!(f.read().unwrap(), vec![(3, 0), (9, 120)]);
        std::fs::write(dir.path().join(CHECKPOINT_FILE), "0\n2\n3 0\n").unwrap();
        assert!(f.read().is_err(), "a short file is refused");
    }
}
