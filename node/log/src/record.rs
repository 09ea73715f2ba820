//! The record codec: one record's bytes on disk.
//!
//! ```text
//! offset u64 | timestamp_ns i64 | key_size u32 | value_size u32 | key | value | crc32 u32
//! ```
//!
//! All integers are little-endian (the native order of the machines Flotilla
//! runs on, so encoding is a plain copy). `key_size == u32::MAX` means the
//! record has no key, which is distinct from an empty key. The CRC-32
//! (IEEE, via `crc32fast`) covers every preceding byte of the record.
//!
//! The decoder never trusts a size field: it checks it against
//! `record_bytes_max` and against the bytes it was given before slicing, so
//! arbitrary input yields a [`DecodeError`], never a panic.

use crate::Offset;

/// Bytes before the key: offset, timestamp, key size, value size.
pub const HEADER_BYTES: usize = 24;
/// Bytes of the trailing CRC.
pub const CRC_BYTES: usize = 4;
/// Bytes a record takes beyond its key and value.
pub const RECORD_OVERHEAD_BYTES: usize = HEADER_BYTES + CRC_BYTES;
/// The `key_size` that marks a record without a key.
pub const KEY_ABSENT: u32 = u32::MAX;

/// A record to append. The log assigns the offset; the timestamp defaults to
/// the wall clock at append time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewRecord<'a> {
    /// The key, if any. `Some(&[])` is an empty key, kept apart from `None`.
    pub key: Option<&'a [u8]>,
    /// The value; may be empty.
    pub value: &'a [u8],
    /// Unix nanoseconds; `None` stamps the record with the append time.
    /// Replication passes the leader's timestamp so replicas agree.
    pub timestamp_ns: Option<i64>,
}

impl<'a> NewRecord<'a> {
    /// A record stamped at append time.
    pub fn new(key: Option<&'a [u8]>, value: &'a [u8]) -> Self {
        NewRecord {
            key,
            value,
            timestamp_ns: None,
        }
    }

    /// Its size once encoded.
    pub fn encoded_bytes(&self) -> u64 {
        encoded_bytes(self.key, self.value)
    }
}

/// A record read back from the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Its position in the partition.
    pub offset: Offset,
    /// Unix nanoseconds.
    pub timestamp_ns: i64,
    /// The key, if it had one.
    pub key: Option<Vec<u8>>,
    /// The value.
    pub value: Vec<u8>,
}

impl Record {
    /// Its size once encoded.
    pub fn encoded_bytes(&self) -> u64 {
        encoded_bytes(self.key.as_deref(), &self.value)
    }
}

/// A decoded record borrowing its key and value from the input buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordRef<'a> {
    /// Its position in the partition.
    pub offset: Offset,
    /// Unix nanoseconds.
    pub timestamp_ns: i64,
    /// The key, if it had one.
    pub key: Option<&'a [u8]>,
    /// The value.
    pub value: &'a [u8],
}

impl RecordRef<'_> {
    /// Copies it out of the buffer.
    pub fn to_record(&self) -> Record {
        Record {
            offset: self.offset,
            timestamp_ns: self.timestamp_ns,
            key: self.key.map(<[u8]>::to_vec),
            value: self.value.to_vec(),
        }
    }
}

/// The fixed-size fields at the start of a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The record's offset.
    pub offset: Offset,
    /// Unix nanoseconds.
    pub timestamp_ns: i64,
    /// Key length, `None` for an absent key.
    pub key_bytes: Option<u32>,
    /// Value length.
    pub value_bytes: u32,
}

impl Header {
    /// Parses the first [`HEADER_BYTES`] of `buf`; `None` if it is shorter.
    pub fn parse(buf: &[u8]) -> Option<Header> {
        let header: &[u8; HEADER_BYTES] = buf.get(..HEADER_BYTES)?.try_into().ok()?;
        let u64_at = |i: usize| u64::from_le_bytes(header[i..i + 8].try_into().expect("8 bytes"));
        let u32_at = |i: usize| u32::from_le_bytes(header[i..i + 4].try_into().expect("4 bytes"));
        let key_size = u32_at(16);
        Some(Header {
            offset: Offset(u64_at(0)),
            timestamp_ns: u64_at(8) as i64,
            key_bytes: (key_size != KEY_ABSENT).then_some(key_size),
            value_bytes: u32_at(20),
        })
    }

    /// The whole record's size as this header claims it (computed in `u64`,
    /// so hostile sizes cannot overflow).
    pub fn frame_bytes(&self) -> u64 {
        RECORD_OVERHEAD_BYTES as u64
            + u64::from(self.key_bytes.unwrap_or(0))
            + u64::from(self.value_bytes)
    }
}

/// Why bytes did not decode as a record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The buffer ends before the record does; `needed` is the whole record's
    /// size if the header was readable, else the header size.
    #[error("incomplete record: {needed} bytes needed, {available} available")]
    Incomplete {
        /// Bytes the record needs.
        needed: u64,
        /// Bytes there were.
        available: u64,
    },
    /// The header claims a record larger than allowed.
    #[error("record claims {bytes} bytes, above record_bytes_max {max}")]
    TooLarge {
        /// Claimed size.
        bytes: u64,
        /// The limit.
        max: u32,
    },
    /// The stored CRC does not match the bytes.
    #[error("CRC mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    BadCrc {
        /// The CRC in the record.
        stored: u32,
        /// The CRC of the bytes.
        computed: u32,
    },
}

/// The size of a record with this key and value once encoded.
pub fn encoded_bytes(key: Option<&[u8]>, value: &[u8]) -> u64 {
    RECORD_OVERHEAD_BYTES as u64 + key.map_or(0, |k| k.len() as u64) + value.len() as u64
}

/// Appends one encoded record to `buf`.
///
/// The caller has checked the size against `record_bytes_max` (at most
/// `u32::MAX`), so key and value lengths fit a `u32` and a key is never
/// `KEY_ABSENT` bytes long.
pub fn encode_into(
    buf: &mut Vec<u8>,
    offset: Offset,
    timestamp_ns: i64,
    key: Option<&[u8]>,
    value: &[u8],
) {
    let key_size = key.map_or(KEY_ABSENT, |k| {
        u32::try_from(k.len()).expect("key size checked against record_bytes_max")
    });
    let value_size =
        u32::try_from(value.len()).expect("value size checked against record_bytes_max");
    debug_assert!(key.is_none() || key_size != KEY_ABSENT);
    let start = buf.len();
    buf.reserve(encoded_bytes(key, value) as usize);
    buf.extend_from_slice(&offset.0.to_le_bytes());
    buf.extend_from_slice(&timestamp_ns.to_le_bytes());
    buf.extend_from_slice(&key_size.to_le_bytes());
    buf.extend_from_slice(&value_size.to_le_bytes());
    if let Some(key) = key {
        buf.extend_from_slice(key);
    }
    buf.extend_from_slice(value);
    let crc = crc32fast::hash(&buf[start..]);
    buf.extend_from_slice(&crc.to_le_bytes());
}

/// Decodes the record at the start of `buf`, returning it and its size.
///
/// Checks, in order: a whole header, the claimed size against
/// `record_bytes_max`, a whole record, the CRC. The offset is not checked
/// here: contiguity is the caller's business.
pub fn decode(buf: &[u8], record_bytes_max: u32) -> Result<(RecordRef<'_>, usize), DecodeError> {
    let header = Header::parse(buf).ok_or(DecodeError::Incomplete {
        needed: HEADER_BYTES as u64,
        available: buf.len() as u64,
    })?;
    let frame_bytes = header.frame_bytes();
    if frame_bytes > u64::from(record_bytes_max) {
        return Err(DecodeError::TooLarge {
            bytes: frame_bytes,
            max: record_bytes_max,
        });
    }
    // Fits in usize: at most record_bytes_max, a u32.
    let frame_len = frame_bytes as usize;
    if buf.len() < frame_len {
        return Err(DecodeError::Incomplete {
            needed: frame_bytes,
            available: buf.len() as u64,
        });
    }
    let crc_at = frame_len - CRC_BYTES;
    let stored = u32::from_le_bytes(buf[crc_at..frame_len].try_into().expect("4 bytes"));
    let computed = crc32fast::hash(&buf[..crc_at]);
    if stored != computed {
        return Err(DecodeError::BadCrc { stored, computed });
    }
    let key_len = header.key_bytes.unwrap_or(0) as usize;
    let key_end = HEADER_BYTES + key_len;
    let record = RecordRef {
        offset: header.offset,
        timestamp_ns: header.timestamp_ns,
        key: header.key_bytes.map(|_| &buf[HEADER_BYTES..key_end]),
        value: &buf[key_end..crc_at],
    };
    Ok((record, frame_len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_keys_values_and_absent_keys() {
        let cases: [(Option<&[u8]>, &[u8]); 4] = [
            (None, b""),
            (Some(b""), b""),
            (Some(b"k"), b"value"),
            (None, b"value"),
        ];
        for (i, (key, value)) in cases.into_iter().enumerate() {
            let mut buf = Vec::new();
            encode_into(&mut buf, Offset(i as u64), -5, key, value);
            assert_eq!(buf.len() as u64, encoded_bytes(key, value));
            let (record, used) = decode(&buf, 1 << 20).unwrap();
            assert_eq!(used, buf.len());
            assert_eq!(record.offset, Offset(i as u64));
            assert_eq!(record.timestamp_ns, -5);
            assert_eq!(record.key, key);
            assert_eq!(record.value, value);
        }
    }

    #[test]
    fn layout_is_little_endian_as_documented() {
        let mut buf = Vec::new();
        encode_into(&mut buf, Offset(0x0102), 3, Some(b"ab"), b"xyz");
        assert_eq!(&buf[0..8], &[2, 1, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&buf[8..16], &[3, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&buf[16..20], &[2, 0, 0, 0]);
        assert_eq!(&buf[20..24], &[3, 0, 0, 0]);
        assert_eq!(&buf[24..29], b"abxyz");
        let crc = crc32fast::hash(&buf[..29]);
        assert_eq!(&buf[29..33], &crc.to_le_bytes());
    }

    #[test]
    fn every_single_bit_flip_is_detected() {
        let mut buf = Vec::new();
        encode_into(&mut buf, Offset(7), 11, Some(b"key"), b"some value");
        for bit in 0..buf.len() * 8 {
            let mut damaged = buf.clone();
            damaged[bit / 8] ^= 1 << (bit % 8);
            if let Ok((record, _)) = decode(&damaged, 1 << 20) {
                panic!("flip of bit {bit} went unnoticed: {record:?}");
            }
        }
    }

    #[test]
    fn short_and_oversized_input_are_errors() {
        let mut buf = Vec::new();
        encode_into(&mut buf, Offset(1), 1, None, &[9; 100]);
        for cut in 0..buf.len() {
            assert!(matches!(
                decode(&buf[..cut], 1 << 20),
                Err(DecodeError::Incomplete { .. })
            ));
        }
        assert!(matches!(
            decode(&buf, 64),
            Err(DecodeError::TooLarge { .. })
        ));
    }
}
