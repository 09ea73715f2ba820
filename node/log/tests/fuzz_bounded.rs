//! The bounded, stable-Rust counterpart of the cargo-fuzz targets in
//! `node/log/fuzz`: arbitrary bytes into the record decoder, the segment
//! scanner and a full open (recovery). None may panic or read out of
//! bounds; each must return a value or a clear error.

use std::fs;

use flotilla_log::record::{self, DecodeError};
use flotilla_log::recovery;
use flotilla_log::{Log, LogConfig, LogError, Offset};
use proptest::prelude::*;

fn valid_records(values: &[Vec<u8>]) -> Vec<u8> {
    let mut buf = Vec::new();
    for (i, v) in values.iter().enumerate() {
        let key = i.is_multiple_of(2).then_some(&v[..v.len().min(3)]);
        // Every other record is extended (producer stamp, headers), so the
        // extension parser sees damaged blocks too.
        let headers: [record::HeaderRef<'_>; 1] = [(&v[..v.len().min(2)], &v[..v.len().min(5)])];
        let new = record::NewRecord {
            producer: (i % 4 == 1).then_some(record::ProducerStamp {
                id: 7,
                epoch: 1,
                sequence: i as u64,
            }),
            headers: if i % 4 == 3 { &headers } else { &[] },
            ..record::NewRecord::new(key, v)
        };
        record::encode_record_into(&mut buf, Offset(i as u64), i as i64, &new);
    }
    buf
}

/// Valid records with some bytes overwritten and maybe a cut: the inputs
/// most likely to reach deep into the decoder.
fn damaged_records() -> impl Strategy<Value = Vec<u8>> {
    (
        proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 0..8),
        proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
        any::<prop::sample::Index>(),
        any::<bool>(),
    )
        .prop_map(|(values, edits, cut, do_cut)| {
            let mut bytes = valid_records(&values);
            if !bytes.is_empty() {
                for (at, byte) in edits {
                    let i = at.index(bytes.len());
                    bytes[i] = byte;
                }
                if do_cut {
                    bytes.truncate(cut.index(bytes.len() + 1));
                }
            }
            bytes
        })
}

fn any_input() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..512),
        damaged_records(),
    ]
}

fn open_and_read_everything(bytes: &[u8]) -> Result<u64, LogError> {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("00000000000000000000.log"), bytes).unwrap();
    fs::write(
        dir.path().join("00000000000000000000.index"),
        &bytes[..bytes.len() / 2],
    )
    .unwrap();
    let config = LogConfig {
        record_bytes_max: 1024,
        ..LogConfig::default()
    };
    let log = Log::open(dir.path(), config)?;
    let mut at = log.log_start_offset();
    while at < log.log_end_offset() {
        let records = log.read_from(at, 100)?;
        assert!(!records.is_empty());
        at = at.plus(records.len() as u64);
    }
    // And it accepts an append after recovery.
    let next = log.append(None, b"after")?;
    assert_eq!(next, at);
    Ok(at.0)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn decoder_never_panics(bytes in any_input(), max in 0u32..2048) {
        match record::decode(&bytes, max) {
            Ok((record, used)) => {
                prop_assert!(used <= bytes.len());
                prop_assert!(used as u64 <= u64::from(max));
                prop_assert_eq!(record.encoded_bytes(), used as u64);
                prop_assert_eq!(record.headers.iter().count(), record.headers.len());
            }
            Err(DecodeError::Incomplete { needed, available }) => {
                prop_assert!(needed > available);
            }
            Err(DecodeError::TooLarge { bytes: size, max: limit }) => prop_assert!(size > u64::from(limit)),
            Err(DecodeError::BadCrc { stored, computed }) => prop_assert_ne!(stored, computed),
            Err(DecodeError::BadExtension(_)) => {}
        }
    }

    #[test]
    fn scanner_never_panics_and_stops_at_a_record_boundary(bytes in any_input()) {
        let scan = recovery::scan(&bytes[..], Offset(0), 1024).unwrap();
        prop_assert!(scan.valid_bytes <= bytes.len() as u64);
        match &scan.damage {
            None => prop_assert_eq!(scan.valid_bytes, bytes.len() as u64),
            Some(damage) => prop_assert_eq!(damage.byte_offset, scan.valid_bytes),
        }
        // The valid prefix re-scans clean.
        let prefix = &bytes[..scan.valid_bytes as usize];
        let again = recovery::scan(prefix, Offset(0), 1024).unwrap();
        prop_assert_eq!(again.damage, None);
        prop_assert_eq!(again.positions, scan.positions);
    }

    #[test]
    fn recovery_on_arbitrary_bytes_opens_or_reports_corruption(bytes in any_input()) {
        match open_and_read_everything(&bytes) {
            Ok(records) => {
                let scan = recovery::scan(&bytes[..], Offset(0), 1024).unwrap();
                prop_assert_eq!(records, scan.positions.len() as u64);
            }
            Err(LogError::Corrupt { byte_offset, .. }) => {
                prop_assert!(byte_offset < bytes.len() as u64);
            }
            Err(e) => prop_assert!(false, "unexpected error: {}", e),
        }
    }
}

#[test]
fn a_torn_tail_of_any_length_recovers_every_whole_record() {
    let values: Vec<Vec<u8>> = (0..5).map(|i| vec![i; 10 + i as usize]).collect();
    let bytes = valid_records(&values);
    for cut in 0..=bytes.len() {
        let recovered = open_and_read_everything(&bytes[..cut]).unwrap();
        let scan = recovery::scan(&bytes[..cut], Offset(0), 1024).unwrap();
        assert_eq!(recovered, scan.positions.len() as u64);
    }
}
