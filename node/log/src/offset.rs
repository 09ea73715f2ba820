//! The `Offset` newtype: a record's position in its partition.

use std::fmt;

/// A record's position in its partition, counted in records from the first
/// record ever appended (offset 0). Offsets are assigned by the log, grow by
/// one per record and are never reused, except that [`crate::Log::truncate_to`]
/// discards a suffix so replication can overwrite it.
///
/// A distinct type so an offset cannot be confused with a byte position or a
/// record count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Offset(pub u64);

impl Offset {
    /// The first offset of a new partition.
    pub const ZERO: Offset = Offset(0);

    /// The raw number.
    pub fn value(self) -> u64 {
        self.0
    }

    /// The offset `n` records after this one.
    pub fn plus(self, n: u64) -> Offset {
        Offset(self.0 + n)
    }

    /// How many records lie in `[earlier, self)`; zero if `earlier` is later.
    pub fn records_since(self, earlier: Offset) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}

impl fmt::Display for Offset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl From<u64> for Offset {
    fn from(value: u64) -> Self {
        Offset(value)
    }
}
