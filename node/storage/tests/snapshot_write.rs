//! A snapshot the application takes is streamed into its file and read
//! back at open a piece at a time: neither the writer, nor recovery, nor
//! the reader a restarting member restores from holds the data whole (the
//! bytes they allocate are counted), the file is synced in pieces while it
//! is written, and a torn or damaged file is refused at open.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use flotilla_raft::{Entry, SnapshotMeta, Storage, StorageError, Term};
use flotilla_storage::{DiskStorage, FaultyFs, OpenError, SNAPSHOT_DIR, StorageOptions};

/// Far larger than any buffer on the way: many sync pieces.
const SNAPSHOT_BYTES: usize = 48 << 20;
/// What writing, checking or reading it may allocate at once: buffers of
/// a MiB or so, and bookkeeping.
const PEAK_BYTES_MAX: u64 = 4 << 20;
/// What the encoder hands the writer at once.
const ENCODE_PIECE: usize = 64 << 10;

mod common;

fn options() -> StorageOptions {
    common::one_voter(3)
}

fn open(dir: &Path) -> Result<(DiskStorage, FaultyFs), OpenError> {
    common::open_faulty(dir, options())
}

fn entries(lo: u64, hi: u64) -> Vec<Entry> {
    common::entries(lo, hi, 9, 64)
}

fn meta(index: u64) -> SnapshotMeta {
    SnapshotMeta {
        index,
        term: Term(1),
        conf_state: options().bootstrap.unwrap(),
    }
}

/// Byte `i` of the test snapshot: not periodic at any sync or read piece.
fn byte(i: usize) -> u8 {
    (i.wrapping_mul(2_654_435_761) >> 13) as u8
}

/// Writes `len` bytes of the test data in `ENCODE_PIECE` pieces, as an
/// application's encoder does from its frozen state.
fn encode(len: usize, sink: &mut dyn Write) -> std::io::Result<()> {
    let mut piece = Vec::with_capacity(ENCODE_PIECE);
    let mut at = 0;
    while at < len {
        piece.clear();
        piece.extend((at..len.min(at + ENCODE_PIECE)).map(byte));
        sink.write_all(&piece)?;
        at += piece.len();
    }
    Ok(())
}

/// The length and CRC-32 of the test data of `len` bytes.
fn expected(len: usize) -> (u64, u32) {
    let mut crc = crc32fast::Hasher::new();
    let mut sink = CrcSink(&mut crc, 0);
    encode(len, &mut sink).unwrap();
    let n = sink.1;
    (n, crc.finalize())
}

struct CrcSink<'a>(&'a mut crc32fast::Hasher, u64);

impl Write for CrcSink<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        self.1 += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Reads a snapshot's data through `Storage::snapshot_reader`, as a
/// restarting member restores its state machine: length and CRC-32.
fn read_back(s: &DiskStorage, meta: &SnapshotMeta) -> std::io::Result<(u64, u32)> {
    let mut reader = s
        .snapshot_reader(meta)
        .expect("storage")
        .expect("disk storage reads its snapshot from the file");
    let (mut len, mut crc, mut piece) = (0u64, crc32fast::Hasher::new(), vec![0; 64 << 10]);
    loop {
        let n = reader.read(&mut piece)?;
        if n == 0 {
            return Ok((len, crc.finalize()));
        }
        len += n as u64;
        crc.update(&piece[..n]);
    }
}

/// A data directory holding entries 1..=10 and a snapshot at 8 of `len`
/// bytes written by the storage's writer. Returns the snapshot's file.
fn with_snapshot(dir: &Path, len: usize) -> PathBuf {
    let (mut s, _) = open(dir).unwrap();
    s.save(None, &entries(1, 10)).unwrap();
    let writer = s
        .snapshot_writer()
        .expect("disk storage writes snapshots aside");
    let written = writer(&meta(8), Box::new(move |sink| encode(len, sink))).unwrap();
    assert_eq!(written, len as u64);
    s.compact_written(meta(8), 8).unwrap();
    dir.join(SNAPSHOT_DIR)
        .join(format!("{:020}-{:020}.snap", 8, 1))
}

#[test]
fn a_large_snapshot_is_written_and_recovered_within_a_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let want = expected(SNAPSHOT_BYTES);
    let (mut s, fs) = open(dir.path()).unwrap();
    s.save(None, &entries(1, 10)).unwrap();
    let writer = s
        .snapshot_writer()
        .expect("disk storage writes snapshots aside");
    let fsyncs_before = fs.fsync_count();
    let mut written = None;
    let info = allocation_counter::measure(|| {
        written = Some(writer(
            &meta(8),
            Box::new(|sink| encode(SNAPSHOT_BYTES, sink)),
        ));
    });
    assert_eq!(written.unwrap().unwrap(), SNAPSHOT_BYTES as u64);
    assert!(
        info.bytes_max < PEAK_BYTES_MAX,
        "{} bytes allocated at once while a {SNAPSHOT_BYTES}-byte snapshot was written (bound {PEAK_BYTES_MAX})",
        info.bytes_max
    );
    // Paced: synced every 8 MiB on the way, not once at the end.
    let fsyncs = fs.fsync_count() - fsyncs_before;
    assert!(
        fsyncs >= (SNAPSHOT_BYTES >> 23) as u64,
        "{fsyncs} fsyncs while writing {SNAPSHOT_BYTES} bytes"
    );
    s.compact_written(meta(8), 8).unwrap();
    assert_eq!(s.snapshot_source().unwrap().len_bytes, want.0);
    assert_eq!(s.snapshot_source().unwrap().crc, want.1);
    drop(s);

    // Recovery checks the file (length, CRC) and learns its sums.
    let mut reopened = None;
    let info = allocation_counter::measure(|| reopened = Some(open(dir.path()).unwrap().0));
    let s = reopened.unwrap();
    assert!(
        info.bytes_max < PEAK_BYTES_MAX,
        "{} bytes allocated at once while opening over a {SNAPSHOT_BYTES}-byte snapshot (bound {PEAK_BYTES_MAX})",
        info.bytes_max
    );
    assert_eq!((s.snapshot_index(), s.first_index()), (8, 9));
    let source = s.snapshot_source().unwrap();
    assert_eq!(
        (source.meta, source.len_bytes, source.crc),
        (meta(8), want.0, want.1)
    );

    // The state machine reads it back as a stream.
    let mut read = None;
    let info = allocation_counter::measure(|| read = Some(read_back(&s, &meta(8))));
    assert_eq!(read.unwrap().unwrap(), want);
    assert!(
        info.bytes_max < PEAK_BYTES_MAX,
        "{} bytes allocated at once while reading a {SNAPSHOT_BYTES}-byte snapshot back (bound {PEAK_BYTES_MAX})",
        info.bytes_max
    );
}

/// Every way a snapshot file can be torn or damaged is refused at open,
/// naming the file; an undamaged copy opens.
#[test]
fn a_torn_or_damaged_snapshot_file_is_refused_at_open() {
    const LEN: usize = 3 << 20;
    let dir = tempfile::tempdir().unwrap();
    let path = with_snapshot(dir.path(), LEN);
    let good = fs::read(&path).unwrap();
    let header = good.len() - LEN - 4;
    let mut damages: Vec<(String, Vec<u8>)> = Vec::new();
    for cut in [
        0,
        7,
        20,
        header - 3,
        header,
        header + LEN / 2,
        good.len() - 4,
        good.len() - 1,
    ] {
        damages.push((format!("cut at {cut}"), good[..cut].to_vec()));
    }
    for at in [
        3,
        9,
        30,
        header - 5,
        header + 1,
        header + LEN / 3,
        header + LEN - 1,
        good.len() - 2,
    ] {
        let mut bad = good.clone();
        bad[at] ^= 0x10;
        damages.push((format!("bit flipped at {at}"), bad));
    }
    let mut longer = good.clone();
    longer.push(0);
    damages.push(("a byte after the CRC".into(), longer));
    for (what, bytes) in damages {
        fs::write(&path, &bytes).unwrap();
        match open(dir.path()) {
            Err(OpenError::Corrupt { path: p, .. }) => assert_eq!(p, path, "{what}"),
            other => panic!("{what}: {:?}", other.map(|(s, _)| s)),
        }
    }
    fs::write(&path, &good).unwrap();
    let (s, _) = open(dir.path()).unwrap();
    assert_eq!(read_back(&s, &meta(8)).unwrap(), expected(LEN));
}

/// A write a crash interrupted leaves a temporary file: removed at open,
/// and the snapshot before it is the one recovered.
#[test]
fn a_snapshot_write_interrupted_by_a_crash_leaves_the_one_before() {
    let dir = tempfile::tempdir().unwrap();
    with_snapshot(dir.path(), 1 << 20);
    let tmp = dir
        .path()
        .join(SNAPSHOT_DIR)
        .join(format!("{:020}-{:020}.snap.tmp", 10, 1));
    fs::write(&tmp, vec![1u8; 5 << 20]).unwrap();
    let (s, _) = open(dir.path()).unwrap();
    assert!(!tmp.exists());
    assert_eq!(s.snapshot_index(), 8);
    assert_eq!(read_back(&s, &meta(8)).unwrap(), expected(1 << 20));
}

/// The reader checks the data's CRC as it reads: a file changed after it
/// was checked at open fails the read that reaches its end.
#[test]
fn the_reader_refuses_data_changed_since_the_check() {
    const LEN: usize = 2 << 20;
    let dir = tempfile::tempdir().unwrap();
    let path = with_snapshot(dir.path(), LEN);
    let (s, _) = open(dir.path()).unwrap();
    let mut bytes = fs::read(&path).unwrap();
    let at = bytes.len() - LEN / 2;
    bytes[at] ^= 1;
    fs::write(&path, &bytes).unwrap();
    let err = read_back(&s, &meta(8)).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidData, "{err}");
}

/// A failed fsync while the data streams in fails the writer (the member
/// stops) and leaves no temporary file behind.
#[test]
fn a_failed_sync_during_the_stream_fails_the_write_and_cleans_up() {
    let dir = tempfile::tempdir().unwrap();
    let (mut s, fs) = open(dir.path()).unwrap();
    s.save(None, &entries(1, 10)).unwrap();
    let writer = s.snapshot_writer().unwrap();
    fs.fail_fsync_after(2); // the second 8 MiB piece
    let r = writer(&meta(8), Box::new(|sink| encode(32 << 20, sink)));
    assert!(matches!(r, Err(StorageError::Fatal(_))), "{r:?}");
    let names: Vec<_> = fs::read_dir(dir.path().join(SNAPSHOT_DIR))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.iter().all(|n| !n.ends_with(".tmp")),
        "left behind: {names:?}"
    );
}
