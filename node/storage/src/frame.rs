//! The log frame: one entry on disk, all integers little-endian.
//!
//! ```text
//! len u32 | crc32 u32 | term u64 | index u64 | kind u8 | payload
//! ```
//!
//! `len` counts the bytes after the `crc32` field (17 + payload length), so a
//! frame occupies `8 + len` bytes. The CRC-32 (IEEE, `crc32fast`) covers
//! exactly those `len` bytes: term, index, kind and payload. `len` itself is
//! not covered; a damaged `len` shows up as a CRC mismatch or as a frame that
//! runs past the end of the file, which recovery treats as such.

use bytes::Bytes;
use flotilla_raft::{Entry, EntryKind, Term};

/// Bytes before the CRC-covered body: `len` and `crc32`.
pub const PREFIX_BYTES: usize = 8;
/// The CRC-covered bytes of a frame with an empty payload.
pub const BODY_MIN_BYTES: usize = 17;
/// The largest payload a frame may carry. Far above any sane entry; a `len`
/// beyond it is damage, not data.
pub const PAYLOAD_MAX_BYTES: usize = 1 << 30;

/// Bytes a frame for `entry` occupies on disk.
pub fn frame_bytes(entry: &Entry) -> usize {
    PREFIX_BYTES + BODY_MIN_BYTES + entry.data.len()
}

/// Appends `entry`'s frame to `out`.
pub fn encode(entry: &Entry, out: &mut Vec<u8>) {
    assert!(entry.data.len() <= PAYLOAD_MAX_BYTES, "entry too large");
    let len = (BODY_MIN_BYTES + entry.data.len()) as u32;
    let start = out.len();
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&[0; 4]); // the CRC, filled in below
    out.extend_from_slice(&entry.term.0.to_le_bytes());
    out.extend_from_slice(&entry.index.to_le_bytes());
    out.push(entry.kind.code());
    out.extend_from_slice(&entry.data);
    let crc = crc32fast::hash(&out[start + PREFIX_BYTES..]);
    out[start + 4..start + PREFIX_BYTES].copy_from_slice(&crc.to_le_bytes());
}

/// Why the bytes at some offset are not a whole, valid frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// The file ends inside the frame (or its `len` points past the end).
    Incomplete,
    /// `len` is too small or too large to be a frame.
    BadLength,
    /// The CRC does not match the body.
    BadCrc,
    /// The CRC matches but the kind code is unknown (a newer format).
    BadKind,
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FrameError::Incomplete => "incomplete frame",
            FrameError::BadLength => "impossible frame length",
            FrameError::BadCrc => "frame CRC mismatch",
            FrameError::BadKind => "unknown entry kind",
        })
    }
}

/// Decodes the frame at the start of `buf[at..]`. The payload is a slice of
/// `buf` (no copy). Returns the entry and the frame's size in bytes.
pub fn decode(buf: &Bytes, at: usize) -> Result<(Entry, usize), FrameError> {
    let rest = &buf[at..];
    if rest.len() < PREFIX_BYTES {
        return Err(FrameError::Incomplete);
    }
    let len = u32::from_le_bytes(rest[0..4].try_into().expect("4 bytes")) as usize;
    if !(BODY_MIN_BYTES..=BODY_MIN_BYTES + PAYLOAD_MAX_BYTES).contains(&len) {
        return Err(FrameError::BadLength);
    }
    if rest.len() < PREFIX_BYTES + len {
        return Err(FrameError::Incomplete);
    }
    let crc = u32::from_le_bytes(rest[4..8].try_into().expect("4 bytes"));
    let body = &rest[PREFIX_BYTES..PREFIX_BYTES + len];
    if crc32fast::hash(body) != crc {
        return Err(FrameError::BadCrc);
    }
    let term = u64::from_le_bytes(body[0..8].try_into().expect("8 bytes"));
    let index = u64::from_le_bytes(body[8..16].try_into().expect("8 bytes"));
    let kind = EntryKind::from_code(body[16]).ok_or(FrameError::BadKind)?;
    let payload_at = at + PREFIX_BYTES + BODY_MIN_BYTES;
    let entry = Entry {
        term: Term(term),
        index,
        kind,
        data: buf.slice(payload_at..at + PREFIX_BYTES + len),
    };
    Ok((entry, PREFIX_BYTES + len))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u64, data: &'static [u8]) -> Entry {
        Entry {
            term: Term(3),
            index,
            kind: EntryKind::Normal,
            data: Bytes::from_static(data),
        }
    }

    #[test]
    fn round_trips_and_reports_size() {
        let mut out = Vec::new();
        encode(&entry(7, b"hello"), &mut out);
        encode(&entry(8, b""), &mut out);
        let buf = Bytes::from(out);
        let (a, n) = decode(&buf, 0).unwrap();
        assert_eq!(
            (a, n),
            (entry(7, b"hello"), frame_bytes(&entry(7, b"hello")))
        );
        let (b, m) = decode(&buf, n).unwrap();
        assert_eq!(b, entry(8, b""));
        assert_eq!(n + m, buf.len());
    }

    #[test]
    fn every_truncation_is_incomplete_and_every_bit_flip_is_caught() {
        let mut out = Vec::new();
        encode(&entry(1, b"abc"), &mut out);
        for cut in 0..out.len() {
            let buf = Bytes::copy_from_slice(&out[..cut]);
            assert_eq!(decode(&buf, 0).unwrap_err(), FrameError::Incomplete);
        }
        for bit in 0..out.len() * 8 {
            let mut damaged = out.clone();
            damaged[bit / 8] ^= 1 << (bit % 8);
            assert!(decode(&Bytes::from(damaged), 0).is_err(), "bit {bit}");
        }
    }
}
