//! Decompression of produced record batches with a bound on the output:
//! the crate's own codecs read to the end (and its raw-snappy path
//! allocates the length a header claims), so a small compressed batch
//! could expand without limit. Here every codec stops one byte past the
//! bound, and a snappy length is checked before anything is allocated.

use bytes::Bytes;
use kafka_protocol::records::Compression;
use std::io::Read;

/// Why a batch's records could not be decompressed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecompressError {
    /// They expand past the bound.
    #[error("records decompress to more than {0} bytes (--broker-max-batch-bytes)")]
    TooLarge(usize),
    /// They do not decompress.
    #[error("{0:?} records do not decompress: {1}")]
    Corrupt(Compression, String),
}

/// xerial's snappy framing (Kafka's Java clients): magic, version 1,
/// compatible version 1, then blocks of `u32` length + raw snappy.
const XERIAL_HEADER: &[u8; 16] = b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01";

/// Decompresses `raw` with `c`, refusing more than `limit` bytes of output.
pub fn decompress(raw: &[u8], c: Compression, limit: usize) -> Result<Bytes, DecompressError> {
    let corrupt = |e: &dyn std::fmt::Display| DecompressError::Corrupt(c, e.to_string());
    let mut out = Vec::new();
    let bounded = |r: &mut dyn Read, out: &mut Vec<u8>| -> Result<(), DecompressError> {
        r.take(limit as u64 + 1)
            .read_to_end(out)
            .map_err(|e| DecompressError::Corrupt(c, e.to_string()))?;
        Ok(())
    };
    match c {
        Compression::None => out.extend_from_slice(raw),
        Compression::Gzip => bounded(&mut flate2::read::GzDecoder::new(raw), &mut out)?,
        Compression::Zstd => bounded(
            &mut zstd::stream::read::Decoder::new(raw).map_err(|e| corrupt(&e))?,
            &mut out,
        )?,
        Compression::Lz4 => bounded(
            &mut lz4::Decoder::new(raw).map_err(|e| corrupt(&e))?,
            &mut out,
        )?,
        Compression::Snappy => snappy(raw, limit, &mut out)?,
    }
    if out.len() > limit {
        return Err(DecompressError::TooLarge(limit));
    }
    Ok(Bytes::from(out))
}

fn snappy(raw: &[u8], limit: usize, out: &mut Vec<u8>) -> Result<(), DecompressError> {
    let corrupt =
        |e: &dyn std::fmt::Display| DecompressError::Corrupt(Compression::Snappy, e.to_string());
    let block = |b: &[u8], out: &mut Vec<u8>| -> Result<(), DecompressError> {
        let n = snap::raw::decompress_len(b).map_err(|e| corrupt(&e))?;
        if n > limit.saturating_sub(out.len()) {
            return Err(DecompressError::TooLarge(limit));
        }
        let start = out.len();
        out.resize(start + n, 0);
        snap::raw::Decoder::new()
            .decompress(b, &mut out[start..])
            .map_err(|e| corrupt(&e))?;
        Ok(())
    };
    let Some(mut rest) = raw.strip_prefix(&XERIAL_HEADER[..]) else {
        return block(raw, out);
    };
    while !rest.is_empty() {
        let Some((len, tail)) = rest.split_first_chunk::<4>() else {
            return Err(corrupt(&"a truncated block length"));
        };
        let len = u32::from_be_bytes(*len) as usize;
        if len > tail.len() {
            return Err(corrupt(&format!(
                "a block of {len} bytes, {} left",
                tail.len()
            )));
        }
        block(&tail[..len], out)?;
        rest = &tail[len..];
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use kafka_protocol::compression::{Compressor, Gzip, Lz4, Snappy, Zstd};

    fn compress(c: Compression, data: &[u8]) -> Vec<u8> {
        let mut out = BytesMut::new();
        let put = |b: &mut BytesMut| {
            b.extend_from_slice(data);
            Ok(())
        };
        match c {
            Compression::None => out.extend_from_slice(data),
            Compression::Gzip => Gzip::compress(&mut out, put).unwrap(),
            Compression::Snappy => Snappy::compress(&mut out, put).unwrap(),
            Compression::Lz4 => Lz4::compress(&mut out, put).unwrap(),
            Compression::Zstd => Zstd::compress(&mut out, put).unwrap(),
        }
        out.to_vec()
    }

    #[test]
    fn every_codec_round_trips_and_stops_at_the_bound() {
        let data = vec![7u8; 100_000];
        for c in [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let z = compress(c, &data);
            assert_eq!(&decompress(&z, c, 100_000).unwrap()[..], &data[..], "{c:?}");
            assert_eq!(
                decompress(&z, c, 99_999).unwrap_err(),
                DecompressError::TooLarge(99_999),
                "{c:?}"
            );
            // A truncated stream errs or gives less (some codecs return what
            // they could decode); the record walk refuses what is missing.
            if let Ok(part) = decompress(&z[..z.len() / 2], c, 1 << 20) {
                assert!(part.len() <= data.len(), "{c:?}");
            }
        }
    }

    #[test]
    fn a_raw_snappy_length_is_checked_before_allocating() {
        // A raw snappy stream whose header claims 4 GiB - 1.
        let claim = [0xff, 0xff, 0xff, 0xff, 0x0f, 0x00];
        assert_eq!(
            decompress(&claim, Compression::Snappy, 1 << 20).unwrap_err(),
            DecompressError::TooLarge(1 << 20)
        );
    }
}
