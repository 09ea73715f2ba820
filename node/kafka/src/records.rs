//! Kafka record batches (format v2) to and from the broker's records.
//!
//! - Produce: each batch of a partition's `records` becomes one
//!   `ProduceRequest` of the broker: its records (key, value, timestamp),
//!   and for an idempotent batch its producer id and base sequence.
//! - Fetch: the broker's records become batches again, one batch per run of
//!   records, with their own offsets and the partition's leader epoch.
//!
//! Timestamps: Kafka's are milliseconds, the broker's nanoseconds.
//! Headers are kept, in order; a header with a null value comes back with
//! an empty one, and a header key that is not UTF-8 (Kafka's are strings)
//! comes back with its invalid bytes replaced.
//!
//! Before the crate's decoder sees a batch, its header is checked here: the
//! batch length must fit in what was sent and the record count must be
//! possible for that length, so the decoder never sizes an allocation from
//! a count the bytes cannot back.

use crate::decompress::{self, DecompressError};
use bytes::{Buf, Bytes, BytesMut};
use flotilla_proto::broker as pb;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

/// Bytes of a v2 batch header (base offset to record count).
pub const BATCH_HEADER_BYTES: usize = 61;
/// Bytes of the smallest record of a v2 batch (length, attributes,
/// timestamp and offset deltas, key and value lengths, header count).
pub const RECORD_BYTES_MIN: usize = 7;
/// Most records one compressed batch may claim: the uncompressed bytes are
/// not known before decompressing, so the count is bounded on its own.
pub const COMPRESSED_RECORDS_MAX: i32 = 1 << 20;

/// One produced batch, ready for the broker.
#[derive(Debug, Clone, PartialEq)]
pub struct ProducedBatch {
    /// The producer id, or -1 (not idempotent).
    pub producer_id: i64,
    /// The producer epoch.
    pub producer_epoch: i16,
    /// The sequence of the first record, or -1.
    pub base_sequence: i32,
    /// The records.
    pub records: Vec<pb::Record>,
}

/// What a v2 batch header says, read without decoding the records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct BatchHeader {
    /// The whole batch's bytes (12 + batch length).
    total: usize,
    compressed: bool,
    record_count: i32,
}

/// Checks the batch at the start of `b` and returns its header.
fn check_header(b: &[u8]) -> Result<BatchHeader, String> {
    if b.len() < BATCH_HEADER_BYTES {
        return Err(format!(
            "record batch of {} bytes is shorter than a batch header ({BATCH_HEADER_BYTES})",
            b.len()
        ));
    }
    let length = (&b[8..12]).get_i32();
    let magic = b[16] as i8;
    if magic != 2 {
        return Err(format!(
            "record batch format v{magic}: only v2 is served (Kafka 0.11 and later clients)"
        ));
    }
    let total = 12usize
        .checked_add(
            usize::try_from(length).map_err(|_| format!("negative batch length {length}"))?,
        )
        .ok_or("batch length overflows")?;
    if total < BATCH_HEADER_BYTES || total > b.len() {
        return Err(format!(
            "record batch claims {total} bytes, {} were sent",
            b.len()
        ));
    }
    let attributes = (&b[21..23]).get_i16();
    let record_count = (&b[57..61]).get_i32();
    let compressed = attributes & 0x7 != 0;
    let room = (total - BATCH_HEADER_BYTES) / RECORD_BYTES_MIN;
    let possible = if compressed {
        COMPRESSED_RECORDS_MAX as usize
    } else {
        room
    };
    if record_count < 0 || record_count as usize > possible {
        return Err(format!(
            "record batch claims {record_count} records in {total} bytes"
        ));
    }
    Ok(BatchHeader {
        total,
        compressed,
        record_count,
    })
}

/// Why produced records were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    /// A batch decompresses past the bound (MESSAGE_TOO_LARGE).
    #[error("{0}")]
    TooLarge(String),
    /// Not valid record batches (CORRUPT_MESSAGE).
    #[error("{0}")]
    Invalid(String),
}

impl From<String> for BatchError {
    fn from(e: String) -> Self {
        BatchError::Invalid(e)
    }
}

/// Decodes a partition's produced `records` (one or more v2 batches); a
/// batch's records may decompress to at most `decompressed_max` bytes.
pub fn decode_produced(
    mut data: Bytes,
    decompressed_max: usize,
) -> Result<Vec<ProducedBatch>, BatchError> {
    let mut out = Vec::new();
    while data.has_remaining() {
        let header = check_header(&data)?;
        let mut one = data.split_to(header.total);
        let count = header.record_count;
        let too_large = std::cell::Cell::new(None);
        let set = RecordBatchDecoder::decode_with_custom_compression(
            &mut one,
            Some(|raw: &mut Bytes, c: Compression| -> anyhow::Result<Bytes> {
                let records = match decompress::decompress(raw, c, decompressed_max) {
                    Ok(r) => r,
                    Err(e @ DecompressError::TooLarge(_)) => {
                        too_large.set(Some(e.to_string()));
                        return Err(anyhow::Error::new(e));
                    }
                    Err(e) => return Err(anyhow::Error::new(e)),
                };
                check_records(&records, count).map_err(anyhow::Error::msg)?;
                Ok(records)
            }),
        );
        if let Some(e) = too_large.take() {
            return Err(BatchError::TooLarge(e));
        }
        let set = set.map_err(|e| format!("record batch: {e}"))?;
        if header.compressed && set.records.len() != header.record_count as usize {
            return Err(BatchError::Invalid(format!(
                "record batch claims {} records, holds {}",
                header.record_count,
                set.records.len()
            )));
        }
        let Some(first) = set.records.first() else {
            continue;
        };
        if first.transactional || first.control {
            return Err(BatchError::Invalid(
                "transactional batches are not served".into(),
            ));
        }
        out.push(ProducedBatch {
            producer_id: first.producer_id,
            producer_epoch: first.producer_epoch,
            base_sequence: first.sequence,
            records: set.records.iter().map(to_broker).collect(),
        });
    }
    Ok(out)
}

/// Reads a zigzag varint (Kafka's `varint`/`varlong`) from `b`.
fn varint(b: &mut &[u8]) -> Result<i64, String> {
    let mut value: u64 = 0;
    for shift in (0..64).step_by(7) {
        let Some((&byte, rest)) = b.split_first() else {
            return Err("truncated varint".into());
        };
        *b = rest;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok((value >> 1) as i64 ^ -((value & 1) as i64));
        }
    }
    Err("varint longer than 10 bytes".into())
}

fn skip(b: &mut &[u8], n: i64, what: &str) -> Result<(), String> {
    if n < -1 || n > b.len() as i64 {
        return Err(format!("{what} length {n} with {} bytes left", b.len()));
    }
    *b = &b[n.max(0) as usize..];
    Ok(())
}

/// Walks a batch's (decompressed) records and checks every count the
/// crate's decoder would size an allocation by: the record count against
/// the bytes, each record's length, and each record's header count against
/// its own bytes.
fn check_records(mut b: &[u8], count: i32) -> Result<(), String> {
    if count < 0 || count as usize > b.len() / RECORD_BYTES_MIN {
        return Err(format!(
            "record batch claims {count} records in {} bytes of records",
            b.len()
        ));
    }
    for _ in 0..count {
        let len = varint(&mut b)?;
        if len < 0 || len > b.len() as i64 {
            return Err(format!("record length {len} with {} bytes left", b.len()));
        }
        let (mut r, rest) = b.split_at(len as usize);
        b = rest;
        skip(&mut r, 1, "attributes")?;
        varint(&mut r)?; // timestamp delta
        varint(&mut r)?; // offset delta
        let key = varint(&mut r)?;
        skip(&mut r, key, "key")?;
        let value = varint(&mut r)?;
        skip(&mut r, value, "value")?;
        let headers = varint(&mut r)?;
        // Each header takes at least its two lengths.
        if headers < 0 || headers > (r.len() / 2) as i64 {
            return Err(format!(
                "record claims {headers} headers in {} bytes",
                r.len()
            ));
        }
    }
    Ok(())
}

fn to_broker(r: &Record) -> pb::Record {
    pb::Record {
        offset: 0,
        // Kafka's "no timestamp" (-1) and 0 let the leader stamp it.
        timestamp_ns: if r.timestamp > 0 {
            r.timestamp.saturating_mul(1_000_000)
        } else {
            0
        },
        has_key: r.key.is_some(),
        key: r.key.clone().unwrap_or_default(),
        value: r.value.clone().unwrap_or_default(),
        headers: r
            .headers
            .iter()
            .map(|(k, v)| pb::RecordHeader {
                key: k.clone().into_bytes(),
                // A null header value is kept as an empty one.
                value: v.clone().unwrap_or_default(),
            })
            .collect(),
        ..Default::default()
    }
}

/// Encodes fetched records as v2 batches stamped with `leader_epoch`.
pub fn encode_fetched(records: &[pb::Record], leader_epoch: i32) -> Result<Bytes, String> {
    let first = records.first().map_or(0, |r| r.offset);
    let kafka: Vec<Record> = records
        .iter()
        .map(|r| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: leader_epoch,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: r.offset as i64,
            // The encoder starts a new batch wherever offset minus
            // sequence changes; this keeps it constant, with the batch's
            // base sequence -1 (no producer), so one batch holds them all.
            sequence: ((r.offset - first) as i32).wrapping_sub(1),
            timestamp: r.timestamp_ns / 1_000_000,
            key: r.has_key.then(|| r.key.clone()),
            value: Some(r.value.clone()),
            headers: r
                .headers
                .iter()
                .map(|h| {
                    let key = StrBytes::from_utf8(h.key.clone()).unwrap_or_else(|_| {
                        StrBytes::from_string(String::from_utf8_lossy(&h.key).into_owned())
                    });
                    (key, Some(h.value.clone()))
                })
                .collect(),
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &kafka,
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .map_err(|e| format!("encoding fetched records: {e}"))?;
    Ok(buf.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kafka_record(offset: i64, key: Option<&str>, value: &str) -> Record {
        Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id: 42,
            producer_epoch: 0,
            timestamp_type: TimestampType::Creation,
            offset,
            sequence: 10 + offset as i32,
            timestamp: 1_700_000_000_000 + offset,
            key: key.map(|k| Bytes::copy_from_slice(k.as_bytes())),
            value: Some(Bytes::copy_from_slice(value.as_bytes())),
            headers: [(
                StrBytes::from_static_str("trace"),
                Some(Bytes::from(format!("t{offset}"))),
            )]
            .into_iter()
            .collect(),
        }
    }

    fn batch(records: &[Record], compression: Compression) -> Bytes {
        let mut buf = BytesMut::new();
        RecordBatchEncoder::encode(
            &mut buf,
            records,
            &RecordEncodeOptions {
                version: 2,
                compression,
            },
        )
        .unwrap();
        buf.freeze()
    }

    #[test]
    fn produced_batches_keep_keys_values_timestamps_and_the_producer() {
        for compression in [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let data = batch(
                &[
                    kafka_record(0, Some("k1"), "v1"),
                    kafka_record(1, None, "v2"),
                ],
                compression,
            );
            let out = decode_produced(data, 1 << 20).unwrap();
            assert_eq!(out.len(), 1, "{compression:?}");
            let b = &out[0];
            assert_eq!((b.producer_id, b.base_sequence), (42, 10));
            assert_eq!(b.records.len(), 2);
            assert!(b.records[0].has_key && &b.records[0].key[..] == b"k1");
            assert!(!b.records[1].has_key);
            assert_eq!(&b.records[1].value[..], b"v2");
            assert_eq!(b.records[0].timestamp_ns, 1_700_000_000_000 * 1_000_000);
            assert_eq!(b.records[1].headers.len(), 1);
            assert_eq!(&b.records[1].headers[0].key[..], b"trace");
            assert_eq!(&b.records[1].headers[0].value[..], b"t1");
        }
    }

    #[test]
    fn fetched_records_round_trip_with_their_offsets() {
        let records: Vec<pb::Record> = (5..8)
            .map(|o| pb::Record {
                offset: o,
                timestamp_ns: 3_000_000 * o as i64,
                has_key: o == 6,
                key: Bytes::from_static(b"k"),
                value: Bytes::from(format!("v{o}")),
                headers: vec![pb::RecordHeader {
                    key: Bytes::from_static(b"h"),
                    value: Bytes::from(format!("{o}")),
                }],
                ..Default::default()
            })
            .collect();
        let mut bytes = encode_fetched(&records, 9).unwrap();
        let info = RecordBatchDecoder::decode_batch_info(&mut bytes.clone()).unwrap();
        assert_eq!(info.len(), 1, "one batch");
        assert_eq!((info[0].base_sequence, info[0].producer_id), (-1, -1));
        let set = RecordBatchDecoder::decode(&mut bytes).unwrap();
        let offsets: Vec<i64> = set.records.iter().map(|r| r.offset).collect();
        assert_eq!(offsets, vec![5, 6, 7]);
        assert_eq!(set.records[1].key.as_deref(), Some(&b"k"[..]));
        assert_eq!(set.records[0].key, None);
        assert_eq!(set.records[2].value.as_deref(), Some(&b"v7"[..]));
        assert_eq!(set.records[2].timestamp, 21);
        assert!(set.records.iter().all(|r| r.partition_leader_epoch == 9));
        let h = &set.records[2].headers;
        assert_eq!(h.len(), 1);
        let (k, v) = h.first().unwrap();
        assert_eq!((k.as_str(), v.as_deref()), ("h", Some(&b"7"[..])));
    }

    #[test]
    fn a_batch_decompressing_past_the_bound_is_too_large() {
        let big: Vec<Record> = (0..50)
            .map(|i| kafka_record(i, None, &"z".repeat(1000)))
            .collect();
        let zipped = batch(&big, Compression::Zstd);
        assert!(zipped.len() < 10_000, "compresses well");
        assert!(decode_produced(zipped.clone(), 1 << 20).is_ok());
        assert!(matches!(
            decode_produced(zipped, 10_000),
            Err(BatchError::TooLarge(_))
        ));
    }

    #[test]
    fn lying_record_lengths_and_header_counts_are_refused() {
        // One record: length 8, attributes, ts delta 0, offset delta 0, key
        // -1, value 1 byte, then a header count.
        let record = |headers: u8| vec![14, 0, 0, 0, 1, 2, b'v', headers];
        assert!(check_records(&record(0), 1).is_ok());
        // 2^31-1 headers (zigzag varint) in no bytes.
        let mut huge = vec![22, 0, 0, 0, 1, 2, b'v'];
        huge.extend_from_slice(&[0xfe, 0xff, 0xff, 0xff, 0x0f]);
        let e = check_records(&huge, 1).unwrap_err();
        assert!(e.contains("2147483647 headers"), "{e}");
        assert!(check_records(&record(2), 1).is_err(), "1 header in 0 bytes");
        // A record longer than what is left, and a key past the end.
        assert!(check_records(&[100, 0], 1).is_err());
        assert!(check_records(&[14, 0, 0, 0, 100, 0, 0, 0], 1).is_err());
        assert!(
            check_records(&record(0), 2).is_err(),
            "2 records in 8 bytes"
        );
    }

    #[test]
    fn lying_batch_headers_are_refused_before_decoding() {
        let good = batch(&[kafka_record(0, None, "v")], Compression::None);
        assert!(decode_produced(good.clone(), 1 << 20).is_ok());
        // A record count the bytes cannot hold.
        let mut many = BytesMut::from(&good[..]);
        many[57..61].copy_from_slice(&i32::MAX.to_be_bytes());
        let e = decode_produced(many.freeze(), 1 << 20)
            .unwrap_err()
            .to_string();
        assert!(e.contains("claims 2147483647 records"), "{e}");
        // The same count in a compressed batch: checked once decompressed.
        let zipped = batch(&[kafka_record(0, None, "v")], Compression::Gzip);
        let mut many = BytesMut::from(&zipped[..]);
        many[57..61].copy_from_slice(&1000i32.to_be_bytes());
        // With a matching CRC-32C, as a deliberate liar would send it.
        let crc = crc32c::crc32c(&many[21..]);
        many[17..21].copy_from_slice(&crc.to_be_bytes());
        let e = decode_produced(many.freeze(), 1 << 20)
            .unwrap_err()
            .to_string();
        assert!(e.contains("claims 1000 records"), "{e}");
        // A batch length past the end.
        let mut long = BytesMut::from(&good[..]);
        long[8..12].copy_from_slice(&1_000_000i32.to_be_bytes());
        assert!(
            decode_produced(long.freeze(), 1 << 20)
                .unwrap_err()
                .to_string()
                .contains("were sent")
        );
        // Truncated, and an old format.
        assert!(decode_produced(good.slice(..30), 1 << 20).is_err());
        let mut old = BytesMut::from(&good[..]);
        old[16] = 1;
        assert!(
            decode_produced(old.freeze(), 1 << 20)
                .unwrap_err()
                .to_string()
                .contains("v1")
        );
    }
}
