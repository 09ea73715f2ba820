//! The dense offset index: one 12-byte entry per record.
//!
//! ```text
//! offset u64 | position u32      (little-endian, like the records)
//! ```
//!
//! Entry `i` of segment `base` describes offset `base + i`, so finding an
//! offset's byte position is one 12-byte positional read: an O(1) seek. The
//! entry repeats the offset so a stale or misplaced index is caught instead
//! of silently sending a reader to the wrong bytes.
//!
//! The index is derived data. Recovery rebuilds it from the log whenever it
//! cannot be shown to match (see [`crate::recovery`]), so it is never fsynced
//! on the append path, only when its segment is closed.

use crate::Offset;

/// Bytes per index entry.
pub const INDEX_ENTRY_BYTES: usize = 12;

/// Appends the entry for `offset` at byte `position` of its segment.
pub fn encode_entry(buf: &mut Vec<u8>, offset: Offset, position: u32) {
    buf.extend_from_slice(&offset.0.to_le_bytes());
    buf.extend_from_slice(&position.to_le_bytes());
}

/// Parses one entry.
pub fn decode_entry(entry: &[u8; INDEX_ENTRY_BYTES]) -> (Offset, u32) {
    let offset = u64::from_le_bytes(entry[..8].try_into().expect("8 bytes"));
    let position = u32::from_le_bytes(entry[8..].try_into().expect("4 bytes"));
    (Offset(offset), position)
}

/// Byte position of the entry for `offset` in the index of segment `base`.
pub fn entry_position(base: Offset, offset: Offset) -> u64 {
    offset.records_since(base) * INDEX_ENTRY_BYTES as u64
}

/// The whole index for a segment whose records start at `positions`.
pub fn encode_all(base: Offset, positions: &[u32]) -> Vec<u8> {
    let mut buf = Vec::with_capacity(positions.len() * INDEX_ENTRY_BYTES);
    for (i, position) in positions.iter().enumerate() {
        encode_entry(&mut buf, base.plus(i as u64), *position);
    }
    buf
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip() {
        let mut buf = Vec::new();
        encode_entry(&mut buf, Offset(u64::MAX - 1), u32::MAX);
        assert_eq!(buf.len(), INDEX_ENTRY_BYTES);
        let entry: &[u8; INDEX_ENTRY_BYTES] = buf.as_slice().try_into().unwrap();
        assert_eq!(decode_entry(entry), (Offset(u64::MAX - 1), u32::MAX));
        assert_eq!(entry_position(Offset(10), Offset(13)), 36);
    }
}
