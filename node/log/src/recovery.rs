//! Recovery on open: make the directory's segments consistent before any
//! append, trusting the log over the index.
//!
//! The rules, in order:
//!
//! 1. Segment files are found by name (`%020d.log`); an `.index` without its
//!    `.log` is deleted. Trailing *empty* segments (a crash right after a
//!    roll) are deleted, so the last non-empty segment is recovered as the
//!    tail.
//! 2. **Closed segments** (all but the last) were fsynced when they were
//!    closed, so they must be whole. Each one's index is checked cheaply: a
//!    multiple of 12 bytes, first entry `(base, 0)`, last entry pointing at a
//!    record that decodes (CRC included), has the entry's offset and ends
//!    exactly at the end of the file. If that fails the segment is scanned
//!    fully and its index rewritten; any invalid record in that scan is a
//!    [`LogError::Corrupt`] naming the file and byte offset. With
//!    `verify_closed_segments_on_open` every closed segment is scanned fully.
//!    Consecutive segments must be contiguous (`end == next base`).
//! 3. **The last segment** is scanned record by record: size within
//!    `record_bytes_max` and the file, CRC, and offsets contiguous from the
//!    base. At the first invalid record, the rest of the file is searched for
//!    any plausible later record (offset at or after the expected one, sizes
//!    in bounds, valid CRC).
//!    - None found: it is a **torn tail** (an interrupted write, or a bad
//!      CRC on the last records). The file is truncated there and the
//!      truncation fsynced.
//!    - One found: whole valid records follow the damage, so it is **not** a
//!      torn tail. Open fails with [`LogError::Corrupt`] naming the file, the
//!      byte offset of the damage, and where the later record is. Records
//!      are never silently dropped; an operator decides.
//!
//!    The last segment's index is always rewritten from the scan.
//!
//! The scanning functions work on anything implementing [`ReadAt`], which
//! includes `[u8]`, so the fuzz targets and property tests drive them
//! directly on arbitrary bytes.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use crate::Offset;
use crate::config::{LogConfig, SEGMENT_BYTES_LIMIT};
use crate::error::{LogError, Result};
use crate::index::{self, INDEX_ENTRY_BYTES};
use crate::record::{self, HEADER_BYTES, Header, RECORD_OVERHEAD_BYTES};
use crate::segment::{self, NO_TIMESTAMP, Segment};

/// Bytes read per step while scanning.
const SCAN_CHUNK_BYTES: usize = 1 << 20;

/// Positional reads over a file or a byte slice.
pub trait ReadAt {
    /// Total length in bytes.
    fn len_bytes(&self) -> io::Result<u64>;
    /// Fills `buf` from `position`, or fails.
    fn read_exact_at_pos(&self, buf: &mut [u8], position: u64) -> io::Result<()>;
}

impl ReadAt for File {
    fn len_bytes(&self) -> io::Result<u64> {
        Ok(self.metadata()?.len())
    }

    fn read_exact_at_pos(&self, buf: &mut [u8], position: u64) -> io::Result<()> {
        self.read_exact_at(buf, position)
    }
}

impl ReadAt for [u8] {
    fn len_bytes(&self) -> io::Result<u64> {
        Ok(self.len() as u64)
    }

    fn read_exact_at_pos(&self, buf: &mut [u8], position: u64) -> io::Result<()> {
        let start = usize::try_from(position).ok().filter(|s| *s <= self.len());
        let src = start
            .and_then(|s| self.get(s..s.checked_add(buf.len())?))
            .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
        buf.copy_from_slice(src);
        Ok(())
    }
}

/// What a scan of one segment found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scan {
    /// Byte position of each valid record, in offset order from the base.
    pub positions: Vec<u32>,
    /// Bytes covered by the valid records (where a truncation would cut).
    pub valid_bytes: u64,
    /// Timestamp of the first valid record, or `i64::MIN`.
    pub first_timestamp_ns: i64,
    /// Timestamp of the last valid record, or `i64::MIN`.
    pub last_timestamp_ns: i64,
    /// The first invalid record, if the valid ones do not reach the end.
    pub damage: Option<Damage>,
}

/// The first invalid record of a scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    /// Where it starts (equals `Scan::valid_bytes`).
    pub byte_offset: u64,
    /// What is wrong with it.
    pub reason: String,
    /// A valid record found after it: `(byte position, offset)`. `None`
    /// means the damage is a torn tail.
    pub later_record: Option<(u64, Offset)>,
}

/// Scans records from the start of `src`, expecting offsets from `base`.
pub fn scan<S: ReadAt + ?Sized>(src: &S, base: Offset, record_bytes_max: u32) -> io::Result<Scan> {
    let len = src.len_bytes()?;
    let mut window = Window::default();
    let mut found = Scan {
        positions: Vec::new(),
        valid_bytes: 0,
        first_timestamp_ns: NO_TIMESTAMP,
        last_timestamp_ns: NO_TIMESTAMP,
        damage: None,
    };
    let mut position = 0u64;
    let mut expected = base;
    let reason = loop {
        if position == len {
            break None;
        }
        let remaining = len - position;
        if remaining < HEADER_BYTES as u64 {
            break Some(format!(
                "torn record header: {remaining} of {HEADER_BYTES} bytes"
            ));
        }
        if position > u64::from(u32::MAX) {
            break Some("record starts beyond the 4 GiB a segment can address".to_string());
        }
        let header = Header::parse(window.get(src, len, position, HEADER_BYTES)?)
            .expect("window holds a whole header");
        let frame_bytes = header.frame_bytes();
        if frame_bytes > u64::from(record_bytes_max) {
            break Some(format!(
                "record claims {frame_bytes} bytes, above record_bytes_max {record_bytes_max}"
            ));
        }
        if frame_bytes > remaining {
            break Some(format!(
                "torn record: claims {frame_bytes} bytes, {remaining} remain in the file"
            ));
        }
        let bytes = window.get(src, len, position, frame_bytes as usize)?;
        match record::decode(bytes, record_bytes_max) {
            Ok((record, _)) if record.offset != expected => {
                break Some(format!(
                    "record has offset {}, expected {expected}",
                    record.offset
                ));
            }
            Ok((record, used)) => {
                if found.positions.is_empty() {
                    found.first_timestamp_ns = record.timestamp_ns;
                }
                found.last_timestamp_ns = record.timestamp_ns;
                found.positions.push(position as u32);
                position += used as u64;
                expected = expected.plus(1);
            }
            Err(e) => break Some(e.to_string()),
        }
    };
    found.valid_bytes = position;
    if let Some(reason) = reason {
        let later_record = find_later_record(src, len, position + 1, expected, record_bytes_max)?;
        found.damage = Some(Damage {
            byte_offset: position,
            reason,
            later_record,
        });
    }
    Ok(found)
}

/// Searches `[from, len)` for a plausible record at or after offset
/// `expected`: sizes in bounds, offset no further ahead than the remaining
/// bytes could hold, valid CRC. Headers are checked in memory a chunk at a
/// time; only plausible ones cost a CRC.
fn find_later_record<S: ReadAt + ?Sized>(
    src: &S,
    len: u64,
    from: u64,
    expected: Offset,
    record_bytes_max: u32,
) -> io::Result<Option<(u64, Offset)>> {
    let mut chunk = Vec::new();
    let mut frame = Vec::new();
    let mut start = from;
    while start + HEADER_BYTES as u64 <= len {
        let chunk_len =
            (SCAN_CHUNK_BYTES as u64 + HEADER_BYTES as u64 - 1).min(len - start) as usize;
        chunk.resize(chunk_len, 0);
        src.read_exact_at_pos(&mut chunk, start)?;
        for i in 0..=chunk_len - HEADER_BYTES {
            let header = Header::parse(&chunk[i..]).expect("a whole header");
            let position = start + i as u64;
            let remaining = len - position;
            let frame_bytes = header.frame_bytes();
            let plausible = header.offset >= expected
                && header.offset.records_since(expected)
                    <= remaining / RECORD_OVERHEAD_BYTES as u64
                && frame_bytes <= u64::from(record_bytes_max)
                && frame_bytes <= remaining;
            if !plausible {
                continue;
            }
            let frame_len = frame_bytes as usize;
            let bytes = if i + frame_len <= chunk.len() {
                &chunk[i..i + frame_len]
            } else {
                frame.resize(frame_len, 0);
                src.read_exact_at_pos(&mut frame, position)?;
                &frame[..]
            };
            if record::decode(bytes, record_bytes_max).is_ok() {
                return Ok(Some((position, header.offset)));
            }
        }
        start += (chunk_len - HEADER_BYTES + 1) as u64;
    }
    Ok(None)
}

/// A buffered sequential view of a source: refills a chunk at a time.
#[derive(Debug, Default)]
struct Window {
    buf: Vec<u8>,
    at: u64,
}

impl Window {
    /// `len` bytes at `position`; the caller checked they exist in `src`.
    fn get<'a, S: ReadAt + ?Sized>(
        &'a mut self,
        src: &S,
        src_len: u64,
        position: u64,
        len: usize,
    ) -> io::Result<&'a [u8]> {
        let covered =
            position >= self.at && position + len as u64 <= self.at + self.buf.len() as u64;
        if !covered {
            let read_len = (len.max(SCAN_CHUNK_BYTES) as u64).min(src_len - position) as usize;
            self.buf.resize(read_len, 0);
            src.read_exact_at_pos(&mut self.buf, position)?;
            self.at = position;
        }
        let start = (position - self.at) as usize;
        Ok(&self.buf[start..start + len])
    }
}

/// The segments of a recovered directory, oldest first, all published.
#[derive(Debug)]
pub(crate) struct Recovered {
    pub segments: Vec<Arc<Segment>>,
    /// Timestamp of the active segment's first record, if any.
    pub active_first_timestamp_ns: Option<i64>,
}

/// Runs the recovery rules on `dir` (which exists).
pub(crate) fn recover_dir(dir: &Path, config: &LogConfig) -> Result<Recovered> {
    let mut bases = list_segments(dir)?;
    while bases.len() > 1 {
        let last = *bases.last().expect("non-empty");
        let path = dir.join(segment::file_name(last, "log"));
        let len = std::fs::metadata(&path).map_err(LogError::io(&path))?.len();
        if len > 0 {
            break;
        }
        tracing::info!(path = %path.display(), "removing empty trailing segment");
        Segment::open(dir, last)?.remove_files()?;
        bases.pop();
    }
    if bases.is_empty() {
        let segment = Segment::create(dir, Offset::ZERO)?;
        segment::sync_dir(dir)?;
        return Ok(Recovered {
            segments: vec![Arc::new(segment)],
            active_first_timestamp_ns: None,
        });
    }
    let mut segments = Vec::with_capacity(bases.len());
    for window in bases.windows(2) {
        let segment = Segment::open(dir, window[0])?;
        check_closed(&segment, config)?;
        if segment.end() != window[1] {
            let next = dir.join(segment::file_name(window[1], "log"));
            return Err(LogError::corrupt(
                &next,
                0,
                format!(
                    "segment starts at offset {} but the previous one ends at {}",
                    window[1],
                    segment.end()
                ),
            ));
        }
        segments.push(Arc::new(segment));
    }
    let last = Segment::open(dir, *bases.last().expect("non-empty"))?;
    let active_first_timestamp_ns = recover_tail(&last, config)?;
    segments.push(Arc::new(last));
    segment::sync_dir(dir)?;
    Ok(Recovered {
        segments,
        active_first_timestamp_ns,
    })
}

/// Base offsets of the `.log` files in `dir`, sorted; deletes orphan indexes.
fn list_segments(dir: &Path) -> Result<Vec<Offset>> {
    let mut logs = Vec::new();
    let mut indexes = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(LogError::io(dir))? {
        let entry = entry.map_err(LogError::io(dir))?;
        let name = entry.file_name();
        match name.to_str().and_then(segment::parse_file_name) {
            Some((base, "log")) => logs.push(base),
            Some((base, "index")) => indexes.push(base),
            _ => tracing::debug!(file = ?name, "ignoring a file that is not a segment"),
        }
    }
    logs.sort_unstable();
    for base in indexes {
        if logs.binary_search(&base).is_err() {
            let path = dir.join(segment::file_name(base, "index"));
            std::fs::remove_file(&path).map_err(LogError::io(&path))?;
        }
    }
    Ok(logs)
}

/// Rule 2: a closed segment must be whole; publishes its extent.
fn check_closed(segment: &Segment, config: &LogConfig) -> Result<()> {
    let log_bytes = segment
        .log
        .len_bytes()
        .map_err(LogError::io(&segment.log_path))?;
    if log_bytes > SEGMENT_BYTES_LIMIT {
        return Err(LogError::corrupt(
            &segment.log_path,
            SEGMENT_BYTES_LIMIT,
            "segment is larger than u32 index positions can address",
        ));
    }
    if !config.verify_closed_segments_on_open {
        if let Some((count, last_timestamp_ns)) = index_matches_log(segment, log_bytes, config)? {
            segment.publish(segment.base.plus(count), log_bytes, last_timestamp_ns);
            return Ok(());
        }
        tracing::warn!(index = %segment.index_path.display(), "index does not match its log; rebuilding");
    }
    let scan = scan(&segment.log, segment.base, config.record_bytes_max)
        .map_err(LogError::io(&segment.log_path))?;
    if let Some(damage) = scan.damage {
        return Err(LogError::corrupt(
            &segment.log_path,
            damage.byte_offset,
            format!("{}; a closed segment must be whole", damage.reason),
        ));
    }
    write_index(segment, &scan.positions, true)?;
    segment.publish(
        segment.base.plus(scan.positions.len() as u64),
        log_bytes,
        scan.last_timestamp_ns,
    );
    Ok(())
}

/// The cheap index check of rule 2: `Some((records, last timestamp))` if the
/// index provably covers the whole log, `None` if it must be rebuilt.
fn index_matches_log(
    segment: &Segment,
    log_bytes: u64,
    config: &LogConfig,
) -> Result<Option<(u64, i64)>> {
    let index_bytes = segment
        .index
        .len_bytes()
        .map_err(LogError::io(&segment.index_path))?;
    if log_bytes == 0 || index_bytes == 0 || index_bytes % INDEX_ENTRY_BYTES as u64 != 0 {
        return Ok(None);
    }
    let count = index_bytes / INDEX_ENTRY_BYTES as u64;
    let entry = |i: u64| -> Result<(Offset, u32)> {
        let mut bytes = [0u8; INDEX_ENTRY_BYTES];
        segment
            .index
            .read_exact_at(&mut bytes, i * INDEX_ENTRY_BYTES as u64)
            .map_err(LogError::io(&segment.index_path))?;
        Ok(index::decode_entry(&bytes))
    };
    if entry(0)? != (segment.base, 0) {
        return Ok(None);
    }
    let (last_offset, last_position) = entry(count - 1)?;
    let last_position = u64::from(last_position);
    if last_offset != segment.base.plus(count - 1)
        || last_position + RECORD_OVERHEAD_BYTES as u64 > log_bytes
    {
        return Ok(None);
    }
    let record = match segment.read_record_at(last_position, config.record_bytes_max) {
        Ok(record) => record,
        Err(LogError::Corrupt { .. }) => return Ok(None),
        Err(LogError::Io { source, .. }) if source.kind() == io::ErrorKind::UnexpectedEof => {
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    let whole = record.offset == last_offset && last_position + record.encoded_bytes() == log_bytes;
    Ok(whole.then_some((count, record.timestamp_ns)))
}

/// Rule 3: recovers the last segment and publishes it; returns the first
/// record's timestamp.
fn recover_tail(segment: &Segment, config: &LogConfig) -> Result<Option<i64>> {
    let scan = scan(&segment.log, segment.base, config.record_bytes_max)
        .map_err(LogError::io(&segment.log_path))?;
    if let Some(damage) = &scan.damage {
        if let Some((at, offset)) = damage.later_record {
            return Err(LogError::corrupt(
                &segment.log_path,
                damage.byte_offset,
                format!(
                    "{}; a valid record (offset {offset}) follows at byte {at}, \
                     so this is damage, not a torn tail",
                    damage.reason
                ),
            ));
        }
        tracing::warn!(
            path = %segment.log_path.display(),
            byte_offset = damage.byte_offset,
            reason = %damage.reason,
            "truncating torn tail"
        );
        segment
            .log
            .set_len(scan.valid_bytes)
            .and_then(|()| segment.log.sync_data())
            .map_err(LogError::io(&segment.log_path))?;
    }
    write_index(segment, &scan.positions, false)?;
    segment.publish(
        segment.base.plus(scan.positions.len() as u64),
        scan.valid_bytes,
        scan.last_timestamp_ns,
    );
    Ok((!scan.positions.is_empty()).then_some(scan.first_timestamp_ns))
}

/// Replaces a segment's index with entries for `positions`.
fn write_index(segment: &Segment, positions: &[u32], sync: bool) -> Result<()> {
    let bytes = index::encode_all(segment.base, positions);
    let io = LogError::io(&segment.index_path);
    let result = segment
        .index
        .write_all_at(&bytes, 0)
        .and_then(|()| segment.index.set_len(bytes.len() as u64))
        .and_then(|()| {
            if sync {
                segment.index.sync_data()
            } else {
                Ok(())
            }
        });
    result.map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(offsets: std::ops::Range<u64>) -> Vec<u8> {
        let mut buf = Vec::new();
        for o in offsets {
            record::encode_into(&mut buf, Offset(o), o as i64, None, &[o as u8; 10]);
        }
        buf
    }

    #[test]
    fn clean_bytes_scan_whole() {
        let bytes = encoded(5..9);
        let found = scan(&bytes[..], Offset(5), 1024).unwrap();
        assert_eq!(found.positions.len(), 4);
        assert_eq!(found.valid_bytes, bytes.len() as u64);
        assert_eq!(found.damage, None);
    }

    #[test]
    fn torn_tail_has_no_later_record() {
        let bytes = encoded(0..3);
        let cut = &bytes[..bytes.len() - 3];
        let found = scan(cut, Offset(0), 1024).unwrap();
        assert_eq!(found.positions.len(), 2);
        let damage = found.damage.unwrap();
        assert_eq!(damage.later_record, None);
    }

    #[test]
    fn damage_before_valid_records_is_reported_with_the_later_record() {
        let mut bytes = encoded(0..3);
        let second = 38; // 28 + 10 bytes per record
        bytes[second + 30] ^= 0x40;
        let found = scan(&bytes[..], Offset(0), 1024).unwrap();
        let damage = found.damage.unwrap();
        assert_eq!(damage.byte_offset, second as u64);
        assert_eq!(damage.later_record, Some((2 * 38, Offset(2))));
    }
}
