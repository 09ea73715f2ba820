//! Segment files: naming and the recovery scan of one segment's frames.
//!
//! The rule that tells a torn tail from damage: frames are written in
//! order, and a crash can lose or garble only what was written since the
//! last finished fsync. Each frame carries how far the log was durable when
//! it was written (its synced mark, see [`crate::frame`]). So a bad frame
//! in the **last** segment is a torn tail, cut off with everything after
//! it, unless a later valid frame's mark reaches the bad frame's index:
//! that frame was written after the bad one was durable, so bytes that
//! were once durable changed, and recovery refuses to start rather than
//! drop entries that may be committed. A bad frame in an earlier segment
//! (every segment is synced before the next one starts) is refused too, as
//! is one followed by a valid frame of the older format, which carries no
//! mark, and a frame whose CRC holds but whose kind or layout is unknown
//! (written whole by a newer version, not torn).
//!
//! What the marks cannot tell: damage to a frame that was synced only after
//! the last surviving frame was written looks like a torn write and is cut
//! (the rule has always treated damage to the very last frame so). A
//! saved commit index past the cut is still refused (step 5 of the crate
//! docs' recovery). And where a crash came between cutting a conflicting
//! suffix and the fsync of the entries replacing it, the cut frames may
//! come back after the new ones; their marks may then vouch for a torn
//! frame, and recovery refuses where a cut would have been safe.
//!
//! A segment may end in zeros written ahead of the log
//! ([`crate::StorageOptions::preallocate_bytes`]). A frame's 4-byte length
//! is never zero (it is at least 17), so where the frames stop and only
//! zeros remain, that is the segment's clean end, in any segment.
//! A sealed segment whose last frames were zeroed by damage is still
//! caught: the next segment then does not start at the index after it.

use std::path::Path;

use bytes::Bytes;
use flotilla_raft::{Entry, LogIndex};

use crate::error::OpenError;
use crate::frame::{self, BODY_MIN_BYTES, FrameError, PREFIX_BYTES};

/// Segment file name for a segment whose first frame has `first_index`.
pub fn segment_name(first_index: LogIndex) -> String {
    format!("{first_index:020}.seg")
}

/// The first index named by a segment file name, if it is one.
pub fn parse_segment_name(name: &str) -> Option<LogIndex> {
    let digits = name.strip_suffix(".seg")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// What a scan found.
#[derive(Debug)]
pub struct ScannedSegment {
    /// Each valid frame's entry and byte offset, in order.
    pub frames: Vec<(Entry, u64)>,
    /// Bytes of valid frames: where the file must be cut if `torn` is set.
    /// Anything after them (when `torn` is not set) is zeros.
    pub valid_bytes: u64,
    /// The torn tail's first bad frame and why it is bad.
    pub torn: Option<FrameError>,
}

/// Scans the frames of segment `path` (content `buf`), whose first frame
/// must have `first_index` and each next one the index after. A bad frame is
/// a torn tail only in the last segment and only when no later valid frame
/// shows it was durable (see the module docs).
pub fn scan(
    path: &Path,
    buf: &Bytes,
    first_index: LogIndex,
    is_last: bool,
) -> Result<ScannedSegment, OpenError> {
    let mut frames = Vec::new();
    let mut at = 0usize;
    let mut next = first_index;
    while at < buf.len() {
        if buf[at..].iter().all(|&b| b == 0) {
            break; // the zero tail written ahead
        }
        match frame::decode(buf, at) {
            Ok(frame::Decoded {
                entry, bytes: n, ..
            }) => {
                if entry.index != next {
                    return Err(OpenError::corrupt(
                        path,
                        at as u64,
                        format!("frame holds index {}, expected {next}", entry.index),
                    ));
                }
                frames.push((entry, at as u64));
                at += n;
                next += 1;
            }
            Err(err) if !is_last => {
                return Err(OpenError::corrupt(
                    path,
                    at as u64,
                    format!("{err} in a sealed segment"),
                ));
            }
            Err(err @ FrameError::BadKind) => {
                return Err(OpenError::corrupt(
                    path,
                    at as u64,
                    format!("{err}: a frame of a newer format, or damage"),
                ));
            }
            Err(err) => {
                if let Some((p, why)) = durable_frame_after(buf, at, next) {
                    return Err(OpenError::corrupt(
                        path,
                        at as u64,
                        format!("{err}, yet {why} follows at byte {p}: damage, not a torn tail"),
                    ));
                }
                return Ok(ScannedSegment {
                    frames,
                    valid_bytes: at as u64,
                    torn: Some(err),
                });
            }
        }
    }
    Ok(ScannedSegment {
        frames,
        valid_bytes: at as u64,
        torn: None,
    })
}

/// The first valid frame after the bad one at `from` (whose index is
/// `next`) that shows the bad one was durable: its synced mark reaches
/// `next`, or it has no mark (the older format). Returns its offset and
/// what it is. Cheap checks (length fits, index plausible) come before the
/// CRC, so scanning a long garbled tail stays linear in practice.
fn durable_frame_after(buf: &Bytes, from: usize, next: LogIndex) -> Option<(usize, &'static str)> {
    let frame_min = PREFIX_BYTES + BODY_MIN_BYTES;
    let end = buf.len().checked_sub(frame_min)?;
    let index_max = next.saturating_add((buf.len() - from) as u64 / frame_min as u64);
    let mut p = from + 1;
    while p <= end {
        let len = u32::from_le_bytes(buf[p..p + 4].try_into().expect("4 bytes")) as usize;
        let index = u64::from_le_bytes(buf[p + 16..p + 24].try_into().expect("8 bytes"));
        let plausible = len >= BODY_MIN_BYTES
            && len <= buf.len() - p - PREFIX_BYTES
            && (next..=index_max).contains(&index);
        match plausible.then(|| frame::decode(buf, p)) {
            Some(Ok(frame)) => match frame.synced {
                None => return Some((p, "a valid frame of the older format")),
                // A mark always lies below its own frame's index.
                Some(mark) if mark >= next && mark < frame.entry.index => {
                    return Some((p, "a frame written after it was synced"));
                }
                // Written while the bad frame was not yet durable: part of
                // the same torn tail. Frames follow one another.
                Some(_) => p += frame.bytes,
            },
            _ => p += 1,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::MARKED;
    use flotilla_raft::{EntryKind, Term};

    #[test]
    fn names_round_trip_and_sort_by_index() {
        assert_eq!(parse_segment_name(&segment_name(42)), Some(42));
        assert!(segment_name(9) < segment_name(10));
        assert_eq!(parse_segment_name("42.seg"), None);
        assert_eq!(
            parse_segment_name(&format!("{}.tmp", segment_name(1))),
            None
        );
    }

    #[test]
    fn a_gap_in_indexes_is_corruption() {
        let mut out = Vec::new();
        for index in [1, 3] {
            let entry = Entry {
                term: Term(1),
                index,
                kind: EntryKind::Noop,
                data: Bytes::new(),
            };
            frame::encode(&entry, index - 1, &mut out);
        }
        let err = scan(Path::new("s"), &Bytes::from(out), 1, true).unwrap_err();
        assert!(
            matches!(err, OpenError::Corrupt { offset: 33, .. }),
            "{err}"
        );
    }

    fn noop(index: u64) -> Entry {
        Entry {
            term: Term(1),
            index,
            kind: EntryKind::Noop,
            data: Bytes::from_static(b"payload"),
        }
    }

    /// Frames 1..=4: frame 2 damaged, 3 and 4 written by `rest`.
    fn torn_at_two(rest: impl Fn(&Entry, &mut Vec<u8>)) -> Result<ScannedSegment, OpenError> {
        let mut out = Vec::new();
        frame::encode(&noop(1), 0, &mut out);
        let second = out.len();
        frame::encode(&noop(2), 1, &mut out);
        out[second + 30] ^= 1;
        for index in 3..=4 {
            rest(&noop(index), &mut out);
        }
        scan(Path::new("s"), &Bytes::from(out), 1, true)
    }

    #[test]
    fn only_a_later_frame_that_vouches_for_a_bad_one_makes_it_damage() {
        // Written while frame 2 was not yet durable: one torn tail.
        let scanned = torn_at_two(|e, out| frame::encode(e, 1, out)).unwrap();
        assert_eq!(scanned.frames.len(), 1);
        assert_eq!(scanned.torn, Some(FrameError::BadCrc));
        // Written once frame 2 was durable.
        let err = torn_at_two(|e, out| frame::encode(e, 2, out)).unwrap_err();
        assert!(
            err.to_string().contains("written after it was synced"),
            "{err}"
        );
        // Of the older format, which does not say: refused as before.
        let err = torn_at_two(frame::encode_unmarked).unwrap_err();
        assert!(err.to_string().contains("older format"), "{err}");
        // A mark at or past its own index is no frame of ours: no voucher.
        let scanned = torn_at_two(|e, out| frame::encode(e, e.index, out)).unwrap();
        assert_eq!(scanned.frames.len(), 1);
    }

    #[test]
    fn a_whole_frame_of_an_unknown_kind_is_refused_even_last() {
        let mut out = Vec::new();
        frame::encode(&noop(1), 0, &mut out);
        let second = out.len();
        frame::encode(&noop(2), 1, &mut out);
        out[second + 24] = MARKED | 0x7F;
        let crc = crc32fast::hash(&out[second + 8..]);
        out[second + 4..second + 8].copy_from_slice(&crc.to_le_bytes());
        let err = scan(Path::new("s"), &Bytes::from(out), 1, true).unwrap_err();
        assert!(err.to_string().contains("newer format"), "{err}");
    }
}
