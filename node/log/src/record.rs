//! The record codec: one record's bytes on disk.
//!
//! ```text
//! offset u64 | timestamp_ns i64 | key_size u32 | body_size u32 | key | body | crc32 u32
//! ```
//!
//! All integers are little-endian (the native order of the machines Flotilla
//! runs on, so encoding is a plain copy). `key_size == u32::MAX` means the
//! record has no key, which is distinct from an empty key. The CRC-32
//! (IEEE, via `crc32fast`) covers every preceding byte of the record.
//!
//! The top bit of `body_size` ([`EXTENDED_FLAG`]) marks an **extended**
//! record; its low 31 bits are the body's length either way. A plain
//! record's body is its value (the format of the first version, so old
//! files read unchanged). An extended record's body is an extension block
//! followed by the value:
//!
//! ```text
//! body     = ext_size u32 | ext (ext_size bytes) | value
//! ext      = flags u8 | producer? | headers?
//! producer = producer_id u64 | producer_epoch i16 | sequence u64     (flags bit 0)
//! headers  = count u32 | (key_size u32 | key | value_size u32 | value) * count  (flags bit 1)
//! ```
//!
//! Unknown flag bits and extension bytes left over are errors: a future
//! writer must not be half-read. The frame's size still comes from the
//! fixed 24-byte header alone, so scanners and recovery are unchanged.
//!
//! The decoder never trusts a size field: it checks it against
//! `record_bytes_max` and against the bytes it was given before slicing, so
//! arbitrary input yields a [`DecodeError`], never a panic.

use crate::Offset;

/// Bytes before the key: offset, timestamp, key size, body size.
pub const HEADER_BYTES: usize = 24;
/// Bytes of the trailing CRC.
pub const CRC_BYTES: usize = 4;
/// Bytes a record takes beyond its key and value.
pub const RECORD_OVERHEAD_BYTES: usize = HEADER_BYTES + CRC_BYTES;
/// The `key_size` that marks a record without a key.
pub const KEY_ABSENT: u32 = u32::MAX;
/// The bit of `body_size` that marks an extended record.
pub const EXTENDED_FLAG: u32 = 1 << 31;
/// The largest body a record can have (31 bits).
pub const BODY_BYTES_MAX: u32 = EXTENDED_FLAG - 1;
/// Extension flag: a producer stamp follows.
const EXT_PRODUCER: u8 = 1;
/// Extension flag: headers follow.
const EXT_HEADERS: u8 = 2;
/// Bytes of a producer stamp.
const PRODUCER_BYTES: usize = 8 + 2 + 8;

/// An idempotent producer's stamp on a record: who wrote it, in which
/// producer epoch, and the record's sequence number (per producer and
/// partition). Followers and restarted brokers rebuild the producer windows
/// from these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ProducerStamp {
    /// The producer id (never 0: 0 means not idempotent).
    pub id: u64,
    /// The producer epoch (Kafka's; 0 when the client has none).
    pub epoch: i16,
    /// The record's sequence number.
    pub sequence: u64,
}

/// A header (key/value byte pair) of a record to append.
pub type HeaderRef<'a> = (&'a [u8], &'a [u8]);

/// A record to append. The log assigns the offset; the timestamp defaults to
/// the wall clock at append time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NewRecord<'a> {
    /// The key, if any. `Some(&[])` is an empty key, kept apart from `None`.
    pub key: Option<&'a [u8]>,
    /// The value; may be empty.
    pub value: &'a [u8],
    /// Unix nanoseconds; `None` stamps the record with the append time.
    /// Replication passes the leader's timestamp so replicas agree.
    pub timestamp_ns: Option<i64>,
    /// The idempotent producer's stamp, if any.
    pub producer: Option<ProducerStamp>,
    /// Headers, in order (Kafka record headers).
    pub headers: &'a [HeaderRef<'a>],
}

impl<'a> NewRecord<'a> {
    /// A record stamped at append time.
    pub fn new(key: Option<&'a [u8]>, value: &'a [u8]) -> Self {
        NewRecord {
            key,
            value,
            ..NewRecord::default()
        }
    }

    /// Its size once encoded.
    pub fn encoded_bytes(&self) -> u64 {
        frame_bytes_of(
            self.key,
            self.value.len(),
            self.producer.is_some(),
            self.headers.iter().map(|(k, v)| (k.len(), v.len())),
        )
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
    /// The idempotent producer's stamp, if any.
    pub producer: Option<ProducerStamp>,
    /// Headers, in order.
    pub headers: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Record {
    /// Its size once encoded.
    pub fn encoded_bytes(&self) -> u64 {
        frame_bytes_of(
            self.key.as_deref(),
            self.value.len(),
            self.producer.is_some(),
            self.headers.iter().map(|(k, v)| (k.len(), v.len())),
        )
    }
}

/// The headers of a decoded record: validated bytes, iterated as pairs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HeadersRef<'a> {
    count: u32,
    bytes: &'a [u8],
}

impl<'a> HeadersRef<'a> {
    /// How many.
    pub fn len(&self) -> usize {
        self.count as usize
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The pairs, in order.
    pub fn iter(&self) -> impl Iterator<Item = HeaderRef<'a>> + 'a {
        let mut rest = self.bytes;
        (0..self.count).map_while(move |_| {
            let (k, r) = take_sized(rest)?;
            let (v, r) = take_sized(r)?;
            rest = r;
            Some((k, v))
        })
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
    /// The idempotent producer's stamp, if any.
    pub producer: Option<ProducerStamp>,
    /// Headers.
    pub headers: HeadersRef<'a>,
}

impl RecordRef<'_> {
    /// Copies it out of the buffer.
    pub fn to_record(&self) -> Record {
        Record {
            offset: self.offset,
            timestamp_ns: self.timestamp_ns,
            key: self.key.map(<[u8]>::to_vec),
            value: self.value.to_vec(),
            producer: self.producer,
            headers: self
                .headers
                .iter()
                .map(|(k, v)| (k.to_vec(), v.to_vec()))
                .collect(),
        }
    }

    /// Its size once encoded.
    pub fn encoded_bytes(&self) -> u64 {
        frame_bytes_of(
            self.key,
            self.value.len(),
            self.producer.is_some(),
            self.headers.iter().map(|(k, v)| (k.len(), v.len())),
        )
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
    /// Body length: the value, plus the extension block if `extended`.
    pub value_bytes: u32,
    /// Whether the body starts with an extension block.
    pub extended: bool,
}

impl Header {
    /// Parses the first [`HEADER_BYTES`] of `buf`; `None` if it is shorter.
    pub fn parse(buf: &[u8]) -> Option<Header> {
        let header: &[u8; HEADER_BYTES] = buf.get(..HEADER_BYTES)?.try_into().ok()?;
        let u64_at = |i: usize| u64::from_le_bytes(header[i..i + 8].try_into().expect("8 bytes"));
        let u32_at = |i: usize| u32::from_le_bytes(header[i..i + 4].try_into().expect("4 bytes"));
        let key_size = u32_at(16);
        let body_size = u32_at(20);
        Some(Header {
            offset: Offset(u64_at(0)),
            timestamp_ns: u64_at(8) as i64,
            key_bytes: (key_size != KEY_ABSENT).then_some(key_size),
            value_bytes: body_size & BODY_BYTES_MAX,
            extended: body_size & EXTENDED_FLAG != 0,
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
    /// The CRC matches but the extension block does not parse (a writer
    /// newer than this reader, or damage the CRC missed).
    #[error("bad record extension: {0}")]
    BadExtension(&'static str),
}

/// The size of a plain record with this key and value once encoded.
pub fn encoded_bytes(key: Option<&[u8]>, value: &[u8]) -> u64 {
    RECORD_OVERHEAD_BYTES as u64 + key.map_or(0, |k| k.len() as u64) + value.len() as u64
}

/// The size of a record once encoded, from its parts' lengths.
pub fn frame_bytes_of(
    key: Option<&[u8]>,
    value_len: usize,
    producer: bool,
    headers: impl Iterator<Item = (usize, usize)>,
) -> u64 {
    let plain = RECORD_OVERHEAD_BYTES as u64 + key.map_or(0, |k| k.len() as u64) + value_len as u64;
    let mut headers = headers.peekable();
    if !producer && headers.peek().is_none() {
        return plain;
    }
    plain + 4 + ext_bytes(producer, headers)
}

fn ext_bytes(producer: bool, headers: impl Iterator<Item = (usize, usize)>) -> u64 {
    let mut ext = 1u64;
    if producer {
        ext += PRODUCER_BYTES as u64;
    }
    let mut any = false;
    for (k, v) in headers {
        any = true;
        ext += 8 + k as u64 + v as u64;
    }
    if any {
        ext += 4;
    }
    ext
}

/// Appends one plain encoded record to `buf`; see [`encode_record_into`].
pub fn encode_into(
    buf: &mut Vec<u8>,
    offset: Offset,
    timestamp_ns: i64,
    key: Option<&[u8]>,
    value: &[u8],
) {
    encode_record_into(buf, offset, timestamp_ns, &NewRecord::new(key, value));
}

/// Appends one encoded record to `buf`: plain if it has neither producer
/// stamp nor headers, extended otherwise.
///
/// The caller has checked the size against `record_bytes_max` (below
/// 2 GiB), so every length fits its field and a key is never
/// `KEY_ABSENT` bytes long.
pub fn encode_record_into(buf: &mut Vec<u8>, offset: Offset, timestamp_ns: i64, r: &NewRecord<'_>) {
    let fits = |n: usize| u32::try_from(n).expect("size checked against record_bytes_max");
    let key_size = r.key.map_or(KEY_ABSENT, |k| fits(k.len()));
    debug_assert!(r.key.is_none() || key_size != KEY_ABSENT);
    let extended = r.producer.is_some() || !r.headers.is_empty();
    let ext_len = if extended {
        ext_bytes(
            r.producer.is_some(),
            r.headers.iter().map(|(k, v)| (k.len(), v.len())),
        ) as usize
    } else {
        0
    };
    let body_len = if extended {
        4 + ext_len + r.value.len()
    } else {
        r.value.len()
    };
    let body_size = fits(body_len);
    debug_assert!(body_size <= BODY_BYTES_MAX);
    let start = buf.len();
    buf.reserve(r.encoded_bytes() as usize);
    buf.extend_from_slice(&offset.0.to_le_bytes());
    buf.extend_from_slice(&timestamp_ns.to_le_bytes());
    buf.extend_from_slice(&key_size.to_le_bytes());
    let flag = if extended { EXTENDED_FLAG } else { 0 };
    buf.extend_from_slice(&(body_size | flag).to_le_bytes());
    if let Some(key) = r.key {
        buf.extend_from_slice(key);
    }
    if extended {
        buf.extend_from_slice(&fits(ext_len).to_le_bytes());
        let mut flags = 0u8;
        if r.producer.is_some() {
            flags |= EXT_PRODUCER;
        }
        if !r.headers.is_empty() {
            flags |= EXT_HEADERS;
        }
        buf.push(flags);
        if let Some(p) = r.producer {
            buf.extend_from_slice(&p.id.to_le_bytes());
            buf.extend_from_slice(&p.epoch.to_le_bytes());
            buf.extend_from_slice(&p.sequence.to_le_bytes());
        }
        if !r.headers.is_empty() {
            buf.extend_from_slice(&fits(r.headers.len()).to_le_bytes());
            for (k, v) in r.headers {
                buf.extend_from_slice(&fits(k.len()).to_le_bytes());
                buf.extend_from_slice(k);
                buf.extend_from_slice(&fits(v.len()).to_le_bytes());
                buf.extend_from_slice(v);
            }
        }
    }
    buf.extend_from_slice(r.value);
    let crc = crc32fast::hash(&buf[start..]);
    buf.extend_from_slice(&crc.to_le_bytes());
}

/// Splits `n` bytes off the front.
fn take(buf: &[u8], n: usize) -> Option<(&[u8], &[u8])> {
    (buf.len() >= n).then(|| buf.split_at(n))
}

/// Splits a `u32` length and that many bytes off the front.
fn take_sized(buf: &[u8]) -> Option<(&[u8], &[u8])> {
    let (len, rest) = take(buf, 4)?;
    let len = u32::from_le_bytes(len.try_into().ok()?) as usize;
    take(rest, len)
}

/// Parses an extended body into (producer, headers, value), trusting no
/// size in it.
fn parse_body(body: &[u8]) -> Result<(Option<ProducerStamp>, HeadersRef<'_>, &[u8]), DecodeError> {
    let (ext, value) =
        take_sized(body).ok_or(DecodeError::BadExtension("block overruns the body"))?;
    let (&flags, mut rest) = ext
        .split_first()
        .ok_or(DecodeError::BadExtension("empty block"))?;
    if flags & !(EXT_PRODUCER | EXT_HEADERS) != 0 {
        return Err(DecodeError::BadExtension("unknown flags"));
    }
    let mut producer = None;
    if flags & EXT_PRODUCER != 0 {
        let (p, r) = take(rest, PRODUCER_BYTES).ok_or(DecodeError::BadExtension(
            "producer stamp overruns the block",
        ))?;
        producer = Some(ProducerStamp {
            id: u64::from_le_bytes(p[0..8].try_into().expect("8 bytes")),
            epoch: i16::from_le_bytes(p[8..10].try_into().expect("2 bytes")),
            sequence: u64::from_le_bytes(p[10..18].try_into().expect("8 bytes")),
        });
        rest = r;
    }
    let mut headers = HeadersRef::default();
    if flags & EXT_HEADERS != 0 {
        let (count, r) =
            take(rest, 4).ok_or(DecodeError::BadExtension("header count overruns the block"))?;
        let count = u32::from_le_bytes(count.try_into().expect("4 bytes"));
        let start = r;
        let mut cursor = r;
        for _ in 0..count {
            let (_, r) =
                take_sized(cursor).ok_or(DecodeError::BadExtension("header overruns the block"))?;
            let (_, r) =
                take_sized(r).ok_or(DecodeError::BadExtension("header overruns the block"))?;
            cursor = r;
        }
        headers = HeadersRef {
            count,
            bytes: &start[..start.len() - cursor.len()],
        };
        rest = cursor;
    }
    if !rest.is_empty() {
        return Err(DecodeError::BadExtension("bytes left over in the block"));
    }
    Ok((producer, headers, value))
}

/// Decodes the record at the start of `buf`, returning it and its size.
///
/// Checks, in order: a whole header, the claimed size against
/// `record_bytes_max`, a whole record, the CRC, the extension block. The
/// offset is not checked here: contiguity is the caller's business.
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
    let body = &buf[key_end..crc_at];
    let (producer, headers, value) = if header.extended {
        parse_body(body)?
    } else {
        (None, HeadersRef::default(), body)
    };
    let record = RecordRef {
        offset: header.offset,
        timestamp_ns: header.timestamp_ns,
        key: header.key_bytes.map(|_| &buf[HEADER_BYTES..key_end]),
        value,
        producer,
        headers,
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

    fn stamp() -> ProducerStamp {
        ProducerStamp {
            id: 42,
            epoch: -3,
            sequence: 1 << 40,
        }
    }

    #[test]
    fn extended_records_round_trip_and_plain_ones_stay_plain() {
        let headers: [HeaderRef<'_>; 2] = [(b"trace", b"abc"), (b"", b"")];
        let cases = [
            NewRecord {
                producer: Some(stamp()),
                ..NewRecord::new(Some(b"k"), b"v")
            },
            NewRecord {
                headers: &headers,
                ..NewRecord::new(None, b"")
            },
            NewRecord {
                producer: Some(stamp()),
                headers: &headers,
                ..NewRecord::new(Some(b""), b"value")
            },
        ];
        for (i, new) in cases.iter().enumerate() {
            let mut buf = Vec::new();
            encode_record_into(&mut buf, Offset(i as u64), 9, new);
            assert_eq!(buf.len() as u64, new.encoded_bytes());
            let header = Header::parse(&buf).unwrap();
            assert!(header.extended);
            assert_eq!(header.frame_bytes(), buf.len() as u64);
            let (r, used) = decode(&buf, 1 << 20).unwrap();
            assert_eq!(used, buf.len());
            assert_eq!(r.encoded_bytes(), buf.len() as u64);
            assert_eq!(
                (r.key, r.value, r.producer),
                (new.key, new.value, new.producer)
            );
            assert_eq!(r.headers.iter().collect::<Vec<_>>(), new.headers.to_vec());
            assert_eq!(r.to_record().encoded_bytes(), buf.len() as u64);
        }
        // No stamp, no headers: the first version's bytes exactly.
        let mut plain = Vec::new();
        encode_record_into(&mut plain, Offset(1), 1, &NewRecord::new(None, b"x"));
        let mut old = Vec::new();
        encode_into(&mut old, Offset(1), 1, None, b"x");
        assert_eq!(plain, old);
        assert!(!Header::parse(&plain).unwrap().extended);
    }

    #[test]
    fn every_single_bit_flip_of_an_extended_record_is_detected() {
        let headers: [HeaderRef<'_>; 1] = [(b"h", b"hv")];
        let mut buf = Vec::new();
        let new = NewRecord {
            producer: Some(stamp()),
            headers: &headers,
            ..NewRecord::new(Some(b"key"), b"some value")
        };
        encode_record_into(&mut buf, Offset(7), 11, &new);
        for bit in 0..buf.len() * 8 {
            let mut damaged = buf.clone();
            damaged[bit / 8] ^= 1 << (bit % 8);
            if let Ok((record, _)) = decode(&damaged, 1 << 20) {
                panic!("flip of bit {bit} went unnoticed: {record:?}");
            }
        }
    }

    /// An extension block whose own sizes lie, under a valid CRC, is an
    /// error and never a panic or an out-of-bounds slice.
    #[test]
    fn lying_extension_sizes_are_errors() {
        let frame = |body: &[u8]| {
            let mut buf = Vec::new();
            buf.extend_from_slice(&5u64.to_le_bytes());
            buf.extend_from_slice(&0i64.to_le_bytes());
            buf.extend_from_slice(&KEY_ABSENT.to_le_bytes());
            buf.extend_from_slice(&(body.len() as u32 | EXTENDED_FLAG).to_le_bytes());
            buf.extend_from_slice(body);
            let crc = crc32fast::hash(&buf);
            buf.extend_from_slice(&crc.to_le_bytes());
            buf
        };
        let bodies: [&[u8]; 7] = [
            b"",
            &[9, 0, 0, 0, 1],
            &[0, 0, 0, 0],
            &[1, 0, 0, 0, 4],
            &[3, 0, 0, 0, 1, 0, 0],
            &[5, 0, 0, 0, 2, 1, 0, 0, 0],
            &[10, 0, 0, 0, 2, 1, 0, 0, 0, 255, 255, 255, 255, 0],
        ];
        for body in bodies {
            let buf = frame(body);
            assert!(
                matches!(decode(&buf, 1 << 20), Err(DecodeError::BadExtension(_))),
                "{body:?}"
            );
        }
        // A well-formed empty block (flags only) is fine.
        let ok = frame(&[1, 0, 0, 0, 0, b'v']);
        let (r, _) = decode(&ok, 1 << 20).unwrap();
        assert_eq!((r.value, r.producer, r.headers.len()), (&b"v"[..], None, 0));
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
