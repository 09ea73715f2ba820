//! One segment: a `.log` file of records and its `.index`, named by the
//! segment's base offset (`%020d`), so a directory listing sorts in offset
//! order.
//!
//! A `Segment` is shared (in an `Arc`) between the single writer and any
//! number of readers. Readers use positional reads (`pread`), so they share
//! the file handles without a lock, and learn how far they may read from two
//! atomics the writer publishes after each write: `end` (the next offset) and
//! `size` (bytes of log).

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use crate::Offset;
use crate::error::{LogError, Result};
use crate::index::{self, INDEX_ENTRY_BYTES};
use crate::record::{self, DecodeError, HEADER_BYTES, Header, Record};

/// File name of segment `base` with extension `ext` (`log` or `index`).
pub fn file_name(base: Offset, ext: &str) -> String {
    format!("{:020}.{ext}", base.0)
}

/// The base offset a segment file name encodes, if it is one of ours.
pub fn parse_file_name(name: &str) -> Option<(Offset, &str)> {
    let (stem, ext) = name.split_once('.')?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((Offset(stem.parse().ok()?), ext))
}

/// Reads larger than this use a one-off buffer rather than the scratch one.
const SCRATCH_BYTES_MAX: usize = 8 << 20;

thread_local! {
    /// Per-thread read buffer: a consumer reading sequentially reuses one
    /// allocation instead of a fresh megabyte per call. At most
    /// `SCRATCH_BYTES_MAX`.
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Marks "no timestamp yet" in the timestamp atomics.
pub const NO_TIMESTAMP: i64 = i64::MIN;

/// A segment's files and the extent of it that readers may see.
#[derive(Debug)]
pub struct Segment {
    /// Offset of its first record; also its name.
    pub base: Offset,
    /// Path of the `.log` file.
    pub log_path: PathBuf,
    /// Path of the `.index` file.
    pub index_path: PathBuf,
    /// The records, opened read-write so the segment can become active again
    /// after `truncate_to`.
    pub log: File,
    /// The index.
    pub index: File,
    end: AtomicU64,
    size: AtomicU64,
    last_timestamp_ns: AtomicI64,
}

impl Segment {
    /// Creates empty files for a new segment (replacing any leftovers).
    pub fn create(dir: &Path, base: Offset) -> Result<Segment> {
        let open = |path: &Path| {
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(path)
                .map_err(LogError::io(path))
        };
        let log_path = dir.join(file_name(base, "log"));
        let index_path = dir.join(file_name(base, "index"));
        let log = open(&log_path)?;
        let index = open(&index_path)?;
        Ok(Segment::from_files(base, log_path, index_path, log, index))
    }

    /// Opens an existing segment's log, creating its index if missing. Its
    /// published extent is empty until [`Segment::publish`].
    pub fn open(dir: &Path, base: Offset) -> Result<Segment> {
        let log_path = dir.join(file_name(base, "log"));
        let index_path = dir.join(file_name(base, "index"));
        let log = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&log_path)
            .map_err(LogError::io(&log_path))?;
        let index = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&index_path)
            .map_err(LogError::io(&index_path))?;
        Ok(Segment::from_files(base, log_path, index_path, log, index))
    }

    fn from_files(
        base: Offset,
        log_path: PathBuf,
        index_path: PathBuf,
        log: File,
        index: File,
    ) -> Segment {
        Segment {
            base,
            log_path,
            index_path,
            log,
            index,
            end: AtomicU64::new(base.0),
            size: AtomicU64::new(0),
            last_timestamp_ns: AtomicI64::new(NO_TIMESTAMP),
        }
    }

    /// The offset after its last published record.
    pub fn end(&self) -> Offset {
        Offset(self.end.load(Ordering::Acquire))
    }

    /// Published bytes of log.
    pub fn size(&self) -> u64 {
        self.size.load(Ordering::Acquire)
    }

    /// Timestamp of its last record, [`NO_TIMESTAMP`] if empty.
    pub fn last_timestamp_ns(&self) -> i64 {
        self.last_timestamp_ns.load(Ordering::Acquire)
    }

    /// Lets readers see records up to `end` (exclusive) in the first `size`
    /// bytes. Called after the bytes were written; `size` before `end`, so a
    /// reader that sees an offset also sees its bytes.
    pub fn publish(&self, end: Offset, size: u64, last_timestamp_ns: i64) {
        self.last_timestamp_ns
            .store(last_timestamp_ns, Ordering::Release);
        self.size.store(size, Ordering::Release);
        self.end.store(end.0, Ordering::Release);
    }

    /// Shrinks the published extent before the files are cut (truncate_to).
    pub fn unpublish_to(&self, end: Offset, size: u64, last_timestamp_ns: i64) {
        self.end.store(end.0, Ordering::Release);
        self.size.store(size, Ordering::Release);
        self.last_timestamp_ns
            .store(last_timestamp_ns, Ordering::Release);
    }

    /// Byte position of `offset` (which must be published), via the index.
    /// The entry's own offset must match: the index is never trusted blindly.
    pub fn position_of(&self, offset: Offset) -> Result<u32> {
        let mut entry = [0u8; INDEX_ENTRY_BYTES];
        let at = index::entry_position(self.base, offset);
        self.index
            .read_exact_at(&mut entry, at)
            .map_err(LogError::io(&self.index_path))?;
        let (found, position) = index::decode_entry(&entry);
        if found != offset {
            return Err(LogError::corrupt(
                &self.index_path,
                at,
                format!("index entry is for offset {found}, expected {offset}"),
            ));
        }
        Ok(position)
    }

    /// Reads whole records from `offset` (published, below `end`), up to
    /// `max_bytes` of encoded records but at least one. Stays in this
    /// segment. Every record's CRC and offset is checked.
    pub fn read(
        &self,
        offset: Offset,
        end: Offset,
        max_bytes: usize,
        record_bytes_max: u32,
    ) -> Result<Vec<Record>> {
        let position = u64::from(self.position_of(offset)?);
        let size = self.size();
        if position >= size {
            // Only a concurrent truncate_to can get here: nothing to read.
            return Ok(Vec::new());
        }
        let remaining = size - position;
        let first_len = (max_bytes as u64).max(HEADER_BYTES as u64).min(remaining) as usize;
        if first_len > SCRATCH_BYTES_MAX {
            let buf = self.read_bytes(position, first_len)?;
            return self.decode_run(&buf, offset, end, position, remaining, record_bytes_max);
        }
        SCRATCH.with_borrow_mut(|buf| {
            self.read_into(buf, position, first_len)?;
            self.decode_run(buf, offset, end, position, remaining, record_bytes_max)
        })
    }

    /// Decodes the records of one read (see [`Segment::read`]).
    fn decode_run(
        &self,
        buf: &[u8],
        offset: Offset,
        end: Offset,
        position: u64,
        remaining: u64,
        record_bytes_max: u32,
    ) -> Result<Vec<Record>> {
        let mut records = Vec::with_capacity(buf.len() / 1024 + 1);
        let mut cursor = 0usize;
        let mut expected = offset;
        while expected < end && cursor < buf.len() {
            match record::decode(&buf[cursor..], record_bytes_max) {
                Ok((record, used)) => {
                    self.check_offset(record.offset, expected, position + cursor as u64)?;
                    records.push(record.to_record());
                    cursor += used;
                    expected = expected.plus(1);
                }
                Err(DecodeError::Incomplete { needed, .. })
                    if records.is_empty() && needed <= remaining =>
                {
                    // The first record is larger than max_bytes: return it whole.
                    let frame = self.read_bytes(position, needed as usize)?;
                    let (record, _) = record::decode(&frame, record_bytes_max)
                        .map_err(|e| self.decode_error(position, e))?;
                    self.check_offset(record.offset, expected, position)?;
                    records.push(record.to_record());
                    break;
                }
                Err(DecodeError::Incomplete { .. }) if !records.is_empty() => break,
                Err(e) => return Err(self.decode_error(position + cursor as u64, e)),
            }
        }
        Ok(records)
    }

    /// Reads the header and whole record at `position`, if it decodes.
    pub fn read_record_at(&self, position: u64, record_bytes_max: u32) -> Result<Record> {
        let header_bytes = self.read_bytes(position, HEADER_BYTES)?;
        let header = Header::parse(&header_bytes).expect("read a whole header");
        let frame_bytes = header.frame_bytes();
        if frame_bytes > u64::from(record_bytes_max) {
            return Err(self.decode_error(
                position,
                DecodeError::TooLarge {
                    bytes: frame_bytes,
                    max: record_bytes_max,
                },
            ));
        }
        let frame = self.read_bytes(position, frame_bytes as usize)?;
        let (record, _) =
            record::decode(&frame, record_bytes_max).map_err(|e| self.decode_error(position, e))?;
        Ok(record.to_record())
    }

    /// Fills `buf` with `len` bytes at `position`, reusing its allocation.
    fn read_into(&self, buf: &mut Vec<u8>, position: u64, len: usize) -> Result<()> {
        // `resize` only initializes bytes beyond the old length, so a reused
        // buffer is not zeroed again on every read.
        buf.resize(len, 0);
        self.log
            .read_exact_at(buf, position)
            .map_err(LogError::io(&self.log_path))
    }

    fn read_bytes(&self, position: u64, len: usize) -> Result<Vec<u8>> {
        let mut buf = vec![0u8; len];
        self.log
            .read_exact_at(&mut buf, position)
            .map_err(LogError::io(&self.log_path))?;
        Ok(buf)
    }

    fn check_offset(&self, found: Offset, expected: Offset, position: u64) -> Result<()> {
        if found == expected {
            return Ok(());
        }
        Err(LogError::corrupt(
            &self.log_path,
            position,
            format!("record has offset {found}, expected {expected}"),
        ))
    }

    fn decode_error(&self, position: u64, error: DecodeError) -> LogError {
        LogError::corrupt(&self.log_path, position, error.to_string())
    }

    /// Fsyncs the log and the index (when the segment is closed).
    pub fn sync_all_files(&self) -> Result<()> {
        self.log.sync_data().map_err(LogError::io(&self.log_path))?;
        self.index
            .sync_data()
            .map_err(LogError::io(&self.index_path))
    }

    /// Deletes its files. Readers holding the segment keep reading the
    /// unlinked files until they drop it.
    pub fn remove_files(&self) -> Result<()> {
        for path in [&self.log_path, &self.index_path] {
            match std::fs::remove_file(path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(LogError::io(path)(e)),
            }
        }
        Ok(())
    }
}

/// Fsyncs a directory so file creations and deletions in it are durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(LogError::io(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_sort_by_offset_and_parse_back() {
        assert_eq!(file_name(Offset(42), "log"), "00000000000000000042.log");
        assert_eq!(
            parse_file_name("00000000000000000042.index"),
            Some((Offset(42), "index"))
        );
        assert_eq!(parse_file_name("42.log"), None);
        assert_eq!(parse_file_name("0000000000000000004x.log"), None);
        assert_eq!(parse_file_name("99999999999999999999.log"), None);
    }
}
