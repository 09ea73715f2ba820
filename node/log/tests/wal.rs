//! The partition log's behaviour on a real (temporary) directory: the spec's
//! `wal_append_read` and `wal_recovery`, plus bit flips, index rebuilds,
//! retention, truncation, limits and concurrency.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use flotilla_log::record::{self, RECORD_OVERHEAD_BYTES};
use flotilla_log::{FsyncPolicy, Log, LogConfig, LogError, NewRecord, Offset, Record};

const SEGMENT: &str = "00000000000000000000";

fn config() -> LogConfig {
    LogConfig::default()
}

fn small_segments(segment_bytes_max: u64) -> LogConfig {
    LogConfig {
        segment_bytes_max,
        record_bytes_max: segment_bytes_max.min(4096) as u32,
        ..LogConfig::default()
    }
}

fn value_for(i: u64) -> Vec<u8> {
    format!("value-{i}-{}", "x".repeat((i % 7) as usize)).into_bytes()
}

fn read_all(log: &Log) -> Vec<Record> {
    let mut out = Vec::new();
    let mut offset = log.log_start_offset();
    let end = log.log_end_offset();
    while offset < end {
        let batch = log.read_from(offset, 4096).expect("read");
        assert!(!batch.is_empty(), "read below the end returned nothing");
        offset = batch.last().unwrap().offset.plus(1);
        out.extend(batch);
    }
    out
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

fn log_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.log"))
}

fn index_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.index"))
}

fn flip_bit(path: &Path, byte: u64, bit: u8) {
    let mut bytes = fs::read(path).unwrap();
    bytes[byte as usize] ^= 1 << bit;
    fs::write(path, bytes).unwrap();
}

/// Spec Project 3, WAL: 1,000 records written, read back, CRCs verified.
#[test]
fn wal_append_read() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open_partition(dir.path(), "events", 3, config()).unwrap();
    assert!(
        dir.path()
            .join("events-3")
            .join(format!("{SEGMENT}.log"))
            .exists()
    );
    for i in 0..1000u64 {
        let key = (!i.is_multiple_of(3)).then(|| i.to_be_bytes());
        let offset = log
            .append(key.as_ref().map(|k| &k[..]), &value_for(i))
            .unwrap();
        assert_eq!(offset, Offset(i));
    }
    assert_eq!(log.log_end_offset(), Offset(1000));
    let check = |records: &[Record]| {
        assert_eq!(records.len(), 1000);
        for (i, r) in records.iter().enumerate() {
            let i = i as u64;
            assert_eq!(r.offset, Offset(i));
            assert_eq!(
                r.key,
                (!i.is_multiple_of(3)).then(|| i.to_be_bytes().to_vec())
            );
            assert_eq!(r.value, value_for(i));
        }
    };
    // Reads decode every record, which checks its CRC and offset.
    check(&read_all(&log));
    drop(log);
    // And the raw file: every record's stored CRC matches its bytes.
    let bytes = fs::read(dir.path().join("events-3").join(format!("{SEGMENT}.log"))).unwrap();
    let mut at = 0;
    let mut count = 0;
    while at < bytes.len() {
        let (record, used) = record::decode(&bytes[at..], 1 << 20).expect("valid CRC");
        assert_eq!(record.offset, Offset(count));
        at += used;
        count += 1;
    }
    assert_eq!(count, 1000);
    let log = Log::open_partition(dir.path(), "events", 3, config()).unwrap();
    check(&read_all(&log));
}

/// Spec Project 3, WAL: cut the last segment at every byte of its last
/// records; every whole record survives, the partial one is gone, and the
/// next append gets the right offset.
#[test]
fn wal_recovery() {
    let source = tempfile::tempdir().unwrap();
    let total = 12u64;
    {
        let log = Log::open(source.path(), config()).unwrap();
        for i in 0..total {
            log.append(Some(b"k"), &value_for(i)).unwrap();
        }
    }
    let full = fs::read(log_path(source.path(), 0)).unwrap();
    let starts: Vec<usize> = {
        let mut at = 0;
        let mut starts = Vec::new();
        while at < full.len() {
            starts.push(at);
            at += record::decode(&full[at..], 1 << 20).unwrap().1;
        }
        starts
    };
    let cut_from = starts[total as usize - 3];
    for cut in cut_from..=full.len() {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(source.path(), dir.path());
        fs::write(log_path(dir.path(), 0), &full[..cut]).unwrap();
        let whole = starts.iter().filter(|s| **s < cut).count() as u64
            - u64::from(!starts.contains(&cut) && cut != full.len());
        let log = Log::open(dir.path(), config()).unwrap();
        assert_eq!(log.log_end_offset(), Offset(whole), "cut at byte {cut}");
        let records = read_all(&log);
        assert_eq!(records.len() as u64, whole);
        for r in &records {
            assert_eq!(r.value, value_for(r.offset.0));
        }
        assert_eq!(
            log.append(None, b"next").unwrap(),
            Offset(whole),
            "cut at byte {cut}"
        );
        drop(log);
        let log = Log::open(dir.path(), config()).unwrap();
        assert_eq!(log.log_end_offset(), Offset(whole + 1));
        assert_eq!(log.read_from(Offset(whole), 1).unwrap()[0].value, b"next");
    }
}

#[test]
fn bit_flip_in_the_last_record_is_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), config()).unwrap();
    for i in 0..5 {
        log.append(None, &value_for(i)).unwrap();
    }
    let size = log.size_bytes();
    drop(log);
    flip_bit(&log_path(dir.path(), 0), size - 6, 3);
    let log = Log::open(dir.path(), config()).unwrap();
    assert_eq!(log.log_end_offset(), Offset(4));
}

#[test]
fn bit_flip_before_valid_records_refuses_to_open_naming_file_and_byte() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), config()).unwrap();
    let mut positions = Vec::new();
    for i in 0..10 {
        positions.push(log.size_bytes());
        log.append(None, &value_for(i)).unwrap();
    }
    drop(log);
    let path = log_path(dir.path(), 0);
    // Every bit of record 4's value and CRC, and of its header fields.
    for byte in positions[4]..positions[5] {
        let before = fs::read(&path).unwrap();
        flip_bit(&path, byte, (byte % 8) as u8);
        match Log::open(dir.path(), config()) {
            Err(LogError::Corrupt {
                file, byte_offset, ..
            }) => {
                assert_eq!(file, path);
                assert_eq!(byte_offset, positions[4], "flip at byte {byte}");
            }
            other => panic!("flip at byte {byte}: expected Corrupt, got {other:?}"),
        }
        fs::write(&path, before).unwrap();
    }
    let message = {
        flip_bit(&path, positions[4] + 30, 0);
        Log::open(dir.path(), config()).unwrap_err().to_string()
    };
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(
        message.contains(&format!("byte {}", positions[4])),
        "{message}"
    );
}

#[test]
fn bit_flip_in_a_closed_segment_is_detected_on_read_or_full_verification() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_segments(400)).unwrap();
    for i in 0..30 {
        log.append(None, &value_for(i)).unwrap();
    }
    let segments = log.segments();
    assert!(segments.len() >= 3, "{segments:?}");
    let first = &segments[0];
    drop(log);
    // Flip a bit inside the first record of the first (closed) segment.
    flip_bit(&first.log_path, 30, 1);
    let log = Log::open(dir.path(), small_segments(400)).unwrap();
    assert!(matches!(
        log.read_from(Offset(0), 100),
        Err(LogError::Corrupt { byte_offset: 0, .. })
    ));
    drop(log);
    let strict = LogConfig {
        verify_closed_segments_on_open: true,
        ..small_segments(400)
    };
    match Log::open(dir.path(), strict) {
        Err(LogError::Corrupt {
            file, byte_offset, ..
        }) => {
            assert_eq!(file, first.log_path);
            assert_eq!(byte_offset, 0);
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    // A flip in a closed segment's last record fails the cheap check too.
    let last_record_at = {
        let bytes = fs::read(&first.log_path).unwrap();
        let mut at = 0;
        let mut last = 0;
        while at < bytes.len() {
            last = at;
            let header = record::Header::parse(&bytes[at..]).unwrap();
            at += header.frame_bytes() as usize;
        }
        last as u64
    };
    flip_bit(&first.log_path, 30, 1);
    flip_bit(&first.log_path, last_record_at + 26, 5);
    assert!(matches!(
        Log::open(dir.path(), small_segments(400)),
        Err(LogError::Corrupt { byte_offset, .. }) if byte_offset == last_record_at
    ));
}

#[test]
fn index_is_rebuilt_when_deleted_stale_or_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let config = small_segments(500);
    let expected = {
        let log = Log::open(dir.path(), config.clone()).unwrap();
        for i in 0..40 {
            log.append(Some(&[i as u8]), &value_for(i)).unwrap();
        }
        assert!(log.segments().len() >= 3);
        read_all(&log)
    };
    let bases: Vec<u64> = {
        let log = Log::open(dir.path(), config.clone()).unwrap();
        log.segments().iter().map(|s| s.base.0).collect()
    };
    let damage: [&dyn Fn(&Path); 4] = [
        &|p| fs::remove_file(p).unwrap(),
        &|p| {
            let len = fs::metadata(p).unwrap().len();
            fs::OpenOptions::new()
                .write(true)
                .open(p)
                .unwrap()
                .set_len(len - 12)
                .unwrap();
        },
        &|p| {
            let len = fs::metadata(p).unwrap().len();
            fs::OpenOptions::new()
                .write(true)
                .open(p)
                .unwrap()
                .set_len(len - 5)
                .unwrap();
        },
        &|p| {
            let mut bytes = fs::read(p).unwrap();
            let n = bytes.len();
            bytes[n - 2] ^= 0xff; // the last entry's position
            bytes[12] ^= 0x01; // the second entry's offset
            fs::write(p, bytes).unwrap();
        },
    ];
    for (i, damage) in damage.iter().enumerate() {
        for base in &bases {
            damage(&index_path(dir.path(), *base));
        }
        let log = Log::open(dir.path(), config.clone()).unwrap();
        assert_eq!(read_all(&log), expected, "damage {i}");
        for offset in [0, 7, 13, 39] {
            assert_eq!(
                log.read_from(Offset(offset), 1).unwrap()[0],
                expected[offset as usize]
            );
        }
    }
}

#[test]
fn segments_roll_by_size_and_stay_within_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_segments(300)).unwrap();
    for i in 0..50 {
        log.append(None, &value_for(i)).unwrap();
    }
    let segments = log.segments();
    assert!(segments.len() > 5);
    for pair in segments.windows(2) {
        assert_eq!(pair[0].end, pair[1].base);
        assert!(pair[0].size_bytes <= 300);
        assert_eq!(
            pair[0].log_path.file_name().unwrap().to_str().unwrap(),
            format!("{:020}.log", pair[0].base.0)
        );
    }
    assert_eq!(read_all(&log).len(), 50);
}

#[test]
fn segments_roll_by_age() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        segment_age_max_ms: Some(1),
        ..LogConfig::default()
    };
    let log = Log::open(dir.path(), config).unwrap();
    log.append(None, b"a").unwrap();
    std::thread::sleep(std::time::Duration::from_millis(5));
    log.append(None, b"b").unwrap();
    assert_eq!(log.segments().len(), 2);
    assert_eq!(log.segments()[1].base, Offset(1));
}

#[test]
fn retention_by_age_deletes_whole_closed_segments_and_moves_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        retention_ms: Some(1000),
        ..small_segments(300)
    };
    let log = Log::open(dir.path(), config.clone()).unwrap();
    let ms = 1_000_000i64;
    for i in 0..40u64 {
        let value = value_for(i);
        let record = NewRecord {
            key: None,
            value: &value,
            timestamp_ns: Some(i as i64 * 100 * ms),
            ..NewRecord::default()
        };
        log.append_batch(&[record]).unwrap();
    }
    let before = log.segments();
    // At t = 2.5 s, records older than 1.5 s (timestamps below 1.5 s) expire,
    // but only whole segments whose last record is that old.
    let outcome = log.apply_retention_at(2500 * ms).unwrap();
    let start = log.log_start_offset();
    assert!(outcome.segments_deleted > 0);
    assert_eq!(outcome.log_start, start);
    assert!(
        before.iter().any(|s| s.base == start),
        "start is a segment base"
    );
    for s in before.iter().filter(|s| s.base < start) {
        assert!(s.end.0 <= 16, "deleted a segment with young records: {s:?}");
        assert!(!s.log_path.exists());
    }
    let kept = before.iter().find(|s| s.base == start).unwrap();
    assert!(kept.end.0 > 16, "kept an expired segment: {kept:?}");
    match log.read_from(Offset(0), 100) {
        Err(LogError::OffsetOutOfRange {
            requested,
            log_start,
            log_end,
        }) => {
            assert_eq!(
                (requested, log_start, log_end),
                (Offset(0), start, Offset(40))
            );
        }
        other => panic!("expected OffsetOutOfRange, got {other:?}"),
    }
    assert_eq!(log.read_from(start, 1).unwrap()[0].offset, start);
    drop(log);
    let log = Log::open(dir.path(), config).unwrap();
    assert_eq!(log.log_start_offset(), start);
    // The active segment survives even when everything is expired.
    log.apply_retention_at(i64::MAX).unwrap();
    assert_eq!(log.segments().len(), 1);
    assert_eq!(log.log_end_offset(), Offset(40));
}

#[test]
fn retention_by_bytes_keeps_the_log_under_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        retention_ms: None,
        retention_bytes: Some(1000),
        ..small_segments(300)
    };
    let log = Log::open(dir.path(), config).unwrap();
    for i in 0..60 {
        log.append(None, &value_for(i)).unwrap();
    }
    let outcome = log.apply_retention().unwrap();
    assert!(outcome.segments_deleted > 0);
    assert!(log.size_bytes() <= 1000, "{} bytes left", log.size_bytes());
    assert!(log.log_start_offset() > Offset(0));
    assert_eq!(read_all(&log).len() as u64, 60 - log.log_start_offset().0);
}

#[test]
fn truncate_to_discards_a_suffix_across_segments() {
    let dir = tempfile::tempdir().unwrap();
    let config = small_segments(300);
    let log = Log::open(dir.path(), config.clone()).unwrap();
    for i in 0..40 {
        log.append(None, &value_for(i)).unwrap();
    }
    let segments_before = log.segments().len();
    log.truncate_to(Offset(50)).unwrap(); // past the end: no-op
    assert_eq!(log.log_end_offset(), Offset(40));
    log.truncate_to(Offset(13)).unwrap();
    assert_eq!(log.log_end_offset(), Offset(13));
    assert!(log.segments().len() < segments_before);
    assert!(matches!(
        log.read_from(Offset(13), 10),
        Ok(records) if records.is_empty()
    ));
    assert!(matches!(
        log.read_from(Offset(14), 10),
        Err(LogError::OffsetOutOfRange { .. })
    ));
    assert_eq!(log.append(None, b"replacement").unwrap(), Offset(13));
    drop(log);
    let log = Log::open(dir.path(), config).unwrap();
    let records = read_all(&log);
    assert_eq!(records.len(), 14);
    assert_eq!(records[13].value, b"replacement");
    for r in &records[..13] {
        assert_eq!(r.value, value_for(r.offset.0));
    }
    // To a segment boundary, then to zero.
    let base = log.segments()[1].base;
    log.truncate_to(base).unwrap();
    assert_eq!(log.log_end_offset(), base);
    log.truncate_to(Offset(0)).unwrap();
    assert_eq!(log.log_end_offset(), Offset(0));
    assert_eq!(log.append(None, b"again").unwrap(), Offset(0));
}

#[test]
fn truncate_below_the_start_is_out_of_range() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        retention_bytes: Some(1),
        ..small_segments(200)
    };
    let log = Log::open(dir.path(), config).unwrap();
    for i in 0..20 {
        log.append(None, &value_for(i)).unwrap();
    }
    log.apply_retention().unwrap();
    let start = log.log_start_offset();
    assert!(start > Offset(0));
    assert!(matches!(
        log.truncate_to(Offset(0)),
        Err(LogError::OffsetOutOfRange { .. })
    ));
}

#[test]
fn oversized_records_are_rejected_and_empty_values_and_absent_keys_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        record_bytes_max: 100,
        ..LogConfig::default()
    };
    let log = Log::open(dir.path(), config).unwrap();
    let fits = vec![1u8; 100 - RECORD_OVERHEAD_BYTES];
    let too_big = vec![1u8; 101 - RECORD_OVERHEAD_BYTES];
    assert_eq!(log.append(None, &fits).unwrap(), Offset(0));
    match log.append(None, &too_big) {
        Err(LogError::RecordTooLarge { bytes, max }) => assert_eq!((bytes, max), (101, 100)),
        other => panic!("expected RecordTooLarge, got {other:?}"),
    }
    // A batch with one oversized record writes nothing.
    let batch = [NewRecord::new(None, b"ok"), NewRecord::new(None, &too_big)];
    assert!(matches!(
        log.append_batch(&batch),
        Err(LogError::RecordTooLarge { .. })
    ));
    assert!(matches!(log.append_batch(&[]), Err(LogError::EmptyBatch)));
    assert_eq!(log.append(None, b"").unwrap(), Offset(1));
    assert_eq!(log.append(Some(b""), b"").unwrap(), Offset(2));
    let records = log.read_from(Offset(1), 1000).unwrap();
    assert_eq!(records.len(), 2);
    assert_eq!(
        (records[0].key.clone(), records[0].value.clone()),
        (None, vec![])
    );
    assert_eq!(
        (records[1].key.clone(), records[1].value.clone()),
        (Some(vec![]), vec![])
    );
}

#[test]
fn a_read_returns_at_least_one_whole_record_and_respects_max_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), config()).unwrap();
    let big = vec![7u8; 5000];
    log.append(None, &big).unwrap();
    for i in 0..10 {
        log.append(None, &[i; 10]).unwrap();
    }
    let records = log.read_from(Offset(0), 1).unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].value, big);
    let per_record = RECORD_OVERHEAD_BYTES + 10;
    let records = log.read_from(Offset(1), per_record * 3 + 5).unwrap();
    assert_eq!(records.len(), 3);
    assert_eq!(log.read_from(Offset(11), 100).unwrap(), vec![]);
    assert!(matches!(
        log.read_from(Offset(12), 100),
        Err(LogError::OffsetOutOfRange { .. })
    ));
}

#[test]
fn empty_trailing_segment_is_dropped_on_open() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = Log::open(dir.path(), config()).unwrap();
        for i in 0..3 {
            log.append(None, &value_for(i)).unwrap();
        }
    }
    // As if the process died right after rolling to segment 3.
    fs::write(log_path(dir.path(), 3), b"").unwrap();
    fs::write(index_path(dir.path(), 3), b"").unwrap();
    // And an orphan index.
    fs::write(index_path(dir.path(), 99), b"junk").unwrap();
    let log = Log::open(dir.path(), config()).unwrap();
    assert_eq!(log.segments().len(), 1);
    assert_eq!(log.log_end_offset(), Offset(3));
    assert!(!index_path(dir.path(), 99).exists());
}

#[test]
fn a_gap_between_segments_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = Log::open(dir.path(), small_segments(200)).unwrap();
        for i in 0..20 {
            log.append(None, &value_for(i)).unwrap();
        }
        assert!(log.segments().len() >= 3);
    }
    let middle = {
        let log = Log::open(dir.path(), small_segments(200)).unwrap();
        log.segments()[1].clone()
    };
    fs::remove_file(&middle.log_path).unwrap();
    assert!(matches!(
        Log::open(dir.path(), small_segments(200)),
        Err(LogError::Corrupt { .. })
    ));
}

#[test]
fn concurrent_appenders_and_readers_see_every_acknowledged_record() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        fsync: FsyncPolicy::Always,
        ..small_segments(4096)
    };
    let log = Arc::new(Log::open(dir.path(), config).unwrap());
    let appenders = 4u8;
    let per_appender = 50u32;
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    std::thread::scope(|scope| {
        for reader in 0..2 {
            let (log, done) = (log.clone(), done.clone());
            scope.spawn(move || {
                let mut offset = Offset(0);
                let mut last_seen = [None::<u32>; 4];
                while !done.load(std::sync::atomic::Ordering::Acquire)
                    || offset < log.log_end_offset()
                {
                    for r in log.read_from(offset, 300 + reader * 100).unwrap() {
                        assert_eq!(r.offset, offset);
                        let (thread, seq) = (
                            r.value[0],
                            u32::from_le_bytes(r.value[1..5].try_into().unwrap()),
                        );
                        let slot = &mut last_seen[thread as usize];
                        assert!(slot.is_none_or(|prev| prev < seq), "per-appender order");
                        *slot = Some(seq);
                        offset = offset.plus(1);
                    }
                }
            });
        }
        let handles: Vec<_> = (0..appenders)
            .map(|thread| {
                let log = log.clone();
                scope.spawn(move || {
                    for seq in 0..per_appender {
                        let mut value = vec![thread];
                        value.extend_from_slice(&seq.to_le_bytes());
                        let offset = if seq % 5 == 0 {
                            log.append_batch(&[NewRecord::new(None, &value)]).unwrap()
                        } else {
                            log.append(Some(b"k"), &value).unwrap()
                        };
                        // Acknowledged means durable and readable now.
                        assert!(log.durable_end_offset() > offset);
                        assert_eq!(log.read_from(offset, 1).unwrap()[0].value, value);
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        done.store(true, std::sync::atomic::Ordering::Release);
    });
    let total = u64::from(appenders) * u64::from(per_appender);
    assert_eq!(log.log_end_offset(), Offset(total));
    assert!(log.fsync_count() <= total);
    let records = read_all(&log);
    for thread in 0..appenders {
        let seqs: Vec<u32> = records
            .iter()
            .filter(|r| r.value[0] == thread)
            .map(|r| u32::from_le_bytes(r.value[1..5].try_into().unwrap()))
            .collect();
        assert_eq!(seqs, (0..per_appender).collect::<Vec<_>>());
    }
}

#[test]
fn every_policy_round_trips_and_sync_makes_everything_durable() {
    for policy in [
        FsyncPolicy::Never,
        FsyncPolicy::EveryRecords(3),
        FsyncPolicy::EveryMs(1),
        FsyncPolicy::Always,
    ] {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(
            dir.path(),
            LogConfig {
                fsync: policy,
                ..small_segments(500)
            },
        )
        .unwrap();
        for i in 0..20 {
            log.append(None, &value_for(i)).unwrap();
        }
        match policy {
            FsyncPolicy::Always => assert_eq!(log.durable_end_offset(), Offset(20)),
            FsyncPolicy::EveryRecords(3) => assert!(log.durable_end_offset() >= Offset(18)),
            _ => {}
        }
        log.sync().unwrap();
        assert_eq!(log.durable_end_offset(), Offset(20), "{policy}");
        assert_eq!(read_all(&log).len(), 20);
    }
}

#[test]
fn bad_topic_names_and_configs_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    for topic in ["", ".", "..", "a/b", "a b"] {
        assert!(matches!(
            Log::open_partition(dir.path(), topic, 0, config()),
            Err(LogError::InvalidConfig(_))
        ));
    }
    let bad = LogConfig {
        segment_bytes_max: u64::from(u32::MAX) + 1,
        ..config()
    };
    assert!(matches!(
        Log::open(dir.path(), bad),
        Err(LogError::InvalidConfig(_))
    ));
}

/// Producer stamps and headers (extended records) survive a reopen, beside
/// plain records of the first format in the same segments, and a torn
/// extended tail is cut like any torn tail.
#[test]
fn extended_records_survive_reopen_beside_plain_ones() {
    let dir = tempfile::tempdir().unwrap();
    let config = small_segments(400);
    let headers: [flotilla_log::record::HeaderRef<'_>; 1] = [(b"h", b"v")];
    {
        let log = Log::open(dir.path(), config.clone()).unwrap();
        for i in 0..20u64 {
            let value = value_for(i);
            let new = NewRecord {
                producer: i
                    .is_multiple_of(2)
                    .then_some(flotilla_log::record::ProducerStamp {
                        id: 5,
                        epoch: 0,
                        sequence: i,
                    }),
                headers: if i.is_multiple_of(3) { &headers } else { &[] },
                ..NewRecord::new(None, &value)
            };
            log.append_batch(&[new]).unwrap();
        }
        assert!(log.segments().len() > 1, "several segments");
    }
    let log = Log::open(dir.path(), config.clone()).unwrap();
    let mut at = 0u64;
    while at < 20 {
        for r in log.read_from(Offset(at), 1 << 20).unwrap() {
            assert_eq!(r.offset, Offset(at));
            assert_eq!(r.value, value_for(at));
            assert_eq!(
                r.producer.map(|p| p.sequence),
                at.is_multiple_of(2).then_some(at)
            );
            assert_eq!(r.headers.len(), usize::from(at.is_multiple_of(3)));
            at += 1;
        }
    }
    // Tear the last record (extended: offset 18 is stamped, 19 is not, so
    // append one stamped record and cut it).
    log.append_batch(&[NewRecord {
        producer: Some(flotilla_log::record::ProducerStamp {
            id: 5,
            epoch: 0,
            sequence: 20,
        }),
        ..NewRecord::new(None, b"torn")
    }])
    .unwrap();
    let last = log.segments().last().unwrap().clone();
    drop(log);
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&last.log_path)
        .unwrap();
    f.set_len(last.size_bytes - 3).unwrap();
    let log = Log::open(dir.path(), config).unwrap();
    assert_eq!(log.log_end_offset(), Offset(20), "the torn record is cut");
}

/// A new configuration applies to the open log: retention set after the
/// records were written deletes them (below the limit given only), and a
/// smaller segment size rolls sooner.
#[test]
fn set_config_applies_retention_and_segment_size_while_open() {
    let dir = tempfile::tempdir().unwrap();
    let config = small_segments(300);
    let log = Log::open(dir.path(), config.clone()).unwrap();
    for i in 0..40u64 {
        log.append(None, &value_for(i)).unwrap();
    }
    let segments = log.segments();
    assert!(segments.len() > 3);
    assert_eq!(log.apply_retention().unwrap().segments_deleted, 0);
    log.set_config(LogConfig {
        retention_ms: Some(1),
        ..config.clone()
    })
    .unwrap();
    assert_eq!(log.config().retention_ms, Some(1));
    std::thread::sleep(std::time::Duration::from_millis(5));
    // Only segments wholly below the limit go.
    let limit = Offset(segments[2].end.0 - 1);
    let out = log
        .apply_retention_below(flotilla_log::unix_now_ns(), limit)
        .unwrap();
    assert_eq!(out.segments_deleted, 2);
    assert_eq!(log.log_start_offset(), segments[2].base);
    let out = log.apply_retention().unwrap();
    assert_eq!(log.segments().len(), 1, "all closed segments expired");
    assert_eq!(out.log_start, log.log_start_offset());
    // A bigger segment size: the next records stay in one segment.
    log.set_config(LogConfig {
        segment_bytes_max: 1 << 20,
        ..config.clone()
    })
    .unwrap();
    for i in 0..40u64 {
        log.append(None, &value_for(i)).unwrap();
    }
    assert_eq!(log.segments().len(), 1);
    let bad = log.set_config(LogConfig {
        record_bytes_max: 100,
        ..config
    });
    assert!(bad.is_err(), "record_bytes_max is fixed while open");
}

/// reset_to empties the log and starts it at an offset beyond its end; the
/// next append gets that offset, and a reopen keeps it.
#[test]
fn reset_to_starts_an_empty_log_at_the_offset() {
    let dir = tempfile::tempdir().unwrap();
    let config = small_segments(300);
    let log = Log::open(dir.path(), config.clone()).unwrap();
    for i in 0..20u64 {
        log.append(None, &value_for(i)).unwrap();
    }
    log.reset_to(Offset(500)).unwrap();
    assert_eq!(log.log_start_offset(), Offset(500));
    assert_eq!(log.log_end_offset(), Offset(500));
    assert!(log.read_from(Offset(3), 1 << 20).is_err());
    assert_eq!(log.append(None, b"next").unwrap(), Offset(500));
    drop(log);
    let log = Log::open(dir.path(), config).unwrap();
    assert_eq!(log.log_start_offset(), Offset(500));
    assert_eq!(log.log_end_offset(), Offset(501));
    assert_eq!(
        log.read_from(Offset(500), 1 << 20).unwrap()[0].value,
        b"next"
    );
}
