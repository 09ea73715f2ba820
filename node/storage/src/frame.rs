//! The log frame: one entry on disk, all integers little-endian.
//!
//! ```text
//! len u32 | crc32 u32 | term u64 | index u64 | kind u8 | synced u64 | payload
//! ```
//!
//! `len` counts the bytes after the `crc32` field (25 + payload length), so a
//! frame occupies `8 + len` bytes. The CRC-32 (IEEE, `crc32fast`) covers
//! exactly those `len` bytes: term, index, kind, synced mark and payload.
//! `len` itself is not covered; a damaged `len` shows up as a CRC mismatch
//! or as a frame that runs past the end of the file, which recovery treats
//! as such.
//!
//! `synced` is how far the log was known to be durable when the frame was
//! written: every entry up to that index had been fsynced. Recovery uses it
//! to tell a write that a crash tore (it lies past every later frame's
//! mark: nothing had promised it durable) from damage to bytes that were
//! once durable (see the crate docs, Recovery). The kind byte's high bit
//! ([`MARKED`]) says the field is there; frames written before it existed
//! lack it (`kind u8 | payload`) and are still read.
use bytes::Bytes;
use flotilla_raft::{Entry, EntryKind, LogIndex, Term};

/// Bytes before the CRC-covered body: `len` and `crc32`.
pub const PREFIX_BYTES: usize = 8;
/// The fewest CRC-covered bytes a frame can have: one without the synced
/// mark (an older format) and with an empty payload.
pub const BODY_MIN_BYTES: usize = 17;
/// The CRC-covered bytes of a frame written now with an empty payload.
const BODY_MARKED_BYTES: usize = BODY_MIN_BYTES + 8;
/// The kind byte's flag for a frame that carries the synced mark.
pub const MARKED: u8 = 0x80;
/// The largest payload a frame may carry. Far above any sane entry; a `len`
/// beyond it is damage, not data.
pub const PAYLOAD_MAX_BYTES: usize = 1 << 30;

/// Bytes a frame for `entry` occupies on disk.
pub fn frame_bytes(entry: &Entry) -> usize {
    PREFIX_BYTES + BODY_MARKED_BYTES + entry.data.len()
}

/// Appends `entry`'s frame to `out`, marked as written when the log was
/// durable up to index `synced`.
pub fn encode(entry: &Entry, synced: LogIndex, out: &mut Vec<u8>) {
    assert!(entry.data.len() <= PAYLOAD_MAX_BYTES, "entry too large");
    let len = (BODY_MARKED_BYTES + entry.data.len()) as u32;
    let start = out.len();
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&[0; 4]); // the CRC, filled in below
    out.extend_from_slice(&entry.term.0.to_le_bytes());
    out.extend_from_slice(&entry.index.to_le_bytes());
    out.push(entry.kind.code() | MARKED);
    out.extend_from_slice(&synced.to_le_bytes());
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
    /// The CRC matches but the kind code or the layout is unknown (a
    /// newer format): written whole, so never a torn write.
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

/// A frame read back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decoded {
    /// The entry, its payload a slice of the buffer read.
    pub entry: Entry,
    /// The frame's size in bytes.
    pub bytes: usize,
    /// How far the log was durable when it was written (`None` in a frame
    /// of the older format, which does not say).
    pub synced: Option<LogIndex>,
}

/// Decodes the frame at the start of `buf[at..]`. The payload is a slice of
/// `buf` (no copy).
pub fn decode(buf: &Bytes, at: usize) -> Result<Decoded, FrameError> {
    let rest = &buf[at..];
    if rest.len() < PREFIX_BYTES {
        return Err(FrameError::Incomplete);
    }
    let len = u32::from_le_bytes(rest[0..4].try_into().expect("4 bytes")) as usize;
    if !(BODY_MIN_BYTES..=BODY_MARKED_BYTES + PAYLOAD_MAX_BYTES).contains(&len) {
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
    let code = body[16];
    let kind = EntryKind::from_code(code & !MARKED).ok_or(FrameError::BadKind)?;
    let marked = code & MARKED != 0;
    let body_min = if marked {
        BODY_MARKED_BYTES
    } else {
        BODY_MIN_BYTES
    };
    if !(body_min..=body_min + PAYLOAD_MAX_BYTES).contains(&len) {
        return Err(FrameError::BadKind);
    }
    let (synced, payload_at) = if marked {
        let mark = u64::from_le_bytes(body[17..25].try_into().expect("8 bytes"));
        (Some(mark), BODY_MARKED_BYTES)
    } else {
        (None, BODY_MIN_BYTES)
    };
    let entry = Entry {
        term: Term(term),
        index,
        kind,
        data: buf.slice(at + PREFIX_BYTES + payload_at..at + PREFIX_BYTES + len),
    };
    Ok(Decoded {
        entry,
        bytes: PREFIX_BYTES + len,
        synced,
    })
}

/// Appends `entry`'s frame in the format without the synced mark, as
/// versions before it wrote it.
#[cfg(test)]
pub(crate) fn encode_unmarked(entry: &Entry, out: &mut Vec<u8>) {
    let len = (BODY_MIN_BYTES + entry.data.len()) as u32;
    let mut body = Vec::new();
    body.extend_from_slice(&entry.term.0.to_le_bytes());
    body.extend_from_slice(&entry.index.to_le_bytes());
    body.push(entry.kind.code());
    body.extend_from_slice(&entry.data);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
    out.extend_from_slice(&body);
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
        encode(&entry(7, b"hello"), 5, &mut out);
        encode(&entry(8, b""), 7, &mut out);
        let buf = Bytes::from(out);
        let a = decode(&buf, 0).unwrap();
        let n = frame_bytes(&entry(7, b"hello"));
        assert_eq!(
            a,
            Decoded {
                entry: entry(7, b"hello"),
                bytes: n,
                synced: Some(5)
            }
        );
        let b = decode(&buf, n).unwrap();
        assert_eq!((b.entry, b.synced), (entry(8, b""), Some(7)));
        assert_eq!(n + b.bytes, buf.len());
    }

    #[test]
    fn frames_of_the_older_format_are_read_without_a_mark() {
        let mut out = Vec::new();
        encode_unmarked(&entry(4, b"old"), &mut out);
        encode(&entry(5, b"new"), 4, &mut out);
        let buf = Bytes::from(out);
        let old = decode(&buf, 0).unwrap();
        assert_eq!((&old.entry, old.synced), (&entry(4, b"old"), None));
        let new = decode(&buf, old.bytes).unwrap();
        assert_eq!((&new.entry, new.synced), (&entry(5, b"new"), Some(4)));
    }

    #[test]
    fn a_marked_frame_too_short_for_its_mark_is_of_an_unknown_layout() {
        let mut out = Vec::new();
        encode_unmarked(&entry(4, b""), &mut out);
        out[8 + 16] |= MARKED;
        let crc = crc32fast::hash(&out[8..]);
        out[4..8].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(
            decode(&Bytes::from(out), 0).unwrap_err(),
            FrameError::BadKind
        );
    }

    #[test]
    fn every_truncation_is_incomplete_and_every_bit_flip_is_caught() {
        let mut out = Vec::new();
        encode(&entry(1, b"abc"), 0, &mut out);
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
