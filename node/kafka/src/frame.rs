//! Kafka framing: a request is a big-endian `int32` size followed by that
//! many bytes (request header, then the body); a response is the same size
//! prefix, the response header, then the body.
//!
//! Nothing here trusts a length it read: the frame size is checked against
//! a bound before anything is read, the frame's bytes are read as they
//! arrive (the buffer grows with what was actually sent, never to the size
//! claimed), and the header is taken apart only after checking there are
//! enough bytes for it. The body goes to the codec only after
//! [`crate::walk`] has checked every length and count in the frame against
//! the bytes present, so no allocation is sized by a claim alone.

use bytes::{Buf, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseHeader, ResponseKind};
use kafka_protocol::protocol::{Decodable, Encodable};
use tokio::io::{AsyncRead, AsyncReadExt};

/// The default bound on a request frame (Kafka's `socket.request.max.bytes`
/// is the same 100 MiB).
pub const FRAME_BYTES_MAX_DEFAULT: u32 = 100 << 20;

/// Bytes of the fixed start of every request header: api key, api version,
/// correlation id.
pub const HEADER_PREFIX_BYTES: usize = 8;

/// Why a frame could not be read or taken apart.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The peer closed the connection between frames.
    #[error("connection closed")]
    Closed,
    /// The size prefix is negative or above the bound.
    #[error("request frame of {size} bytes is outside 0..={max} (--kafka-max-frame-bytes)")]
    Size {
        /// The size the peer claimed.
        size: i64,
        /// The bound.
        max: u32,
    },
    /// The connection ended inside a frame.
    #[error("connection closed {got} bytes into a frame of {size}")]
    Truncated {
        /// Bytes received.
        got: usize,
        /// Bytes announced.
        size: usize,
    },
    /// The frame is too short for a request header.
    #[error("request frame of {0} bytes is shorter than a request header")]
    Short(usize),
    /// The header or body does not decode.
    #[error("malformed {api:?} v{version} request (correlation id {correlation_id}): {reason}")]
    Malformed {
        /// The API key as sent.
        api: i16,
        /// The version as sent.
        version: i16,
        /// The correlation id.
        correlation_id: i32,
        /// The decoder's complaint.
        reason: String,
    },
    /// Reading the socket failed.
    #[error("read: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads one request frame (without its size prefix). The buffer grows as
/// bytes arrive, so a peer that announces a large frame and sends little
/// costs what it sent, not what it announced.
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R, max: u32) -> Result<Bytes, FrameError> {
    let mut size = [0u8; 4];
    match r.read_exact(&mut size).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Err(FrameError::Closed),
        Err(e) => return Err(FrameError::Io(e)),
    }
    let size = i32::from_be_bytes(size);
    if size < 0 || size as u32 > max {
        return Err(FrameError::Size {
            size: i64::from(size),
            max,
        });
    }
    let size = size as usize;
    // A small first allocation; `read_to_end` grows it as data comes.
    let mut buf = Vec::with_capacity(size.min(64 << 10));
    let got = r.take(size as u64).read_to_end(&mut buf).await?;
    if got < size {
        return Err(FrameError::Truncated { got, size });
    }
    Ok(Bytes::from(buf))
}

/// The fixed start of a request header, readable from any request of any
/// API and version: enough to answer even a request we cannot decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderPrefix {
    /// The API key as sent (possibly unknown).
    pub api_key: i16,
    /// The API version as sent.
    pub api_version: i16,
    /// The correlation id to echo.
    pub correlation_id: i32,
}

/// Reads the header prefix of `frame`.
pub fn header_prefix(frame: &[u8]) -> Result<HeaderPrefix, FrameError> {
    if frame.len() < HEADER_PREFIX_BYTES {
        return Err(FrameError::Short(frame.len()));
    }
    let mut b = &frame[..HEADER_PREFIX_BYTES];
    Ok(HeaderPrefix {
        api_key: b.get_i16(),
        api_version: b.get_i16(),
        correlation_id: b.get_i32(),
    })
}

/// A request taken apart.
#[derive(Debug)]
pub struct Decoded {
    /// Its header.
    pub header: RequestHeader,
    /// Its API.
    pub api: ApiKey,
    /// Its body.
    pub body: RequestKind,
}

/// Decodes the header and body of a request whose API and version the
/// caller has checked it supports (see [`crate::dispatch::supported`]).
/// The frame is walked first ([`crate::walk::check`]); only a frame whose
/// lengths all fit in it reaches the codec.
pub fn decode_request(frame: Bytes, api: ApiKey) -> Result<Decoded, FrameError> {
    let prefix = header_prefix(&frame)?;
    let malformed = |reason: String| FrameError::Malformed {
        api: prefix.api_key,
        version: prefix.api_version,
        correlation_id: prefix.correlation_id,
        reason,
    };
    crate::walk::check(&frame, api, prefix.api_version)
        .map_err(|e| malformed(format!("refused before decoding: {e}")))?;
    let mut buf = frame;
    let header_version = api.request_header_version(prefix.api_version);
    let header = RequestHeader::decode(&mut buf, header_version)
        .map_err(|e| malformed(format!("header: {e}")))?;
    let body = RequestKind::decode(api, &mut buf, prefix.api_version)
        .map_err(|e| malformed(format!("body: {e}")))?;
    Ok(Decoded { header, api, body })
}

/// Encodes a response frame (size prefix, header, body) for a request of
/// `api` at `version` with `correlation_id`.
pub fn encode_response(
    api: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &ResponseKind,
) -> Result<Bytes, String> {
    let mut buf = BytesMut::with_capacity(256);
    buf.extend_from_slice(&[0; 4]);
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    header
        .encode(&mut buf, api.response_header_version(version))
        .map_err(|e| format!("{api:?} v{version} response header: {e}"))?;
    body.encode(&mut buf, version)
        .map_err(|e| format!("{api:?} v{version} response: {e}"))?;
    finish(buf)
}

/// The answer to a request of an API or version this listener does not
/// serve, when no response schema of that API can be used: the response
/// header (v0) and the error code UNSUPPORTED_VERSION, which is where every
/// response of the original API versions carried its error.
pub fn encode_unsupported(correlation_id: i32) -> Bytes {
    let mut buf = BytesMut::with_capacity(10);
    buf.extend_from_slice(&6i32.to_be_bytes());
    buf.extend_from_slice(&correlation_id.to_be_bytes());
    buf.extend_from_slice(
        &kafka_protocol::ResponseError::UnsupportedVersion
            .code()
            .to_be_bytes(),
    );
    buf.freeze()
}

fn finish(mut buf: BytesMut) -> Result<Bytes, String> {
    let size = i32::try_from(buf.len() - 4).map_err(|_| "response above 2 GiB".to_string())?;
    buf[..4].copy_from_slice(&size.to_be_bytes());
    Ok(buf.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_are_bounded_and_truncation_is_an_error() {
        let mut ok: &[u8] = &[0, 0, 0, 3, 1, 2, 3, 9];
        assert_eq!(&read_frame(&mut ok, 10).await.unwrap()[..], &[1, 2, 3]);
        let mut big: &[u8] = &[0, 0, 0, 11];
        assert!(matches!(
            read_frame(&mut big, 10).await,
            Err(FrameError::Size { size: 11, max: 10 })
        ));
        let mut negative: &[u8] = &[0xff, 0xff, 0xff, 0xff];
        assert!(matches!(
            read_frame(&mut negative, 10).await,
            Err(FrameError::Size { size: -1, .. })
        ));
        // A lying length: 1000 bytes announced, 2 sent.
        let mut lying: &[u8] = &[0, 0, 3, 232, 1, 2];
        assert!(matches!(
            read_frame(&mut lying, 2000).await,
            Err(FrameError::Truncated { got: 2, size: 1000 })
        ));
        let mut empty: &[u8] = &[];
        assert!(matches!(
            read_frame(&mut empty, 10).await,
            Err(FrameError::Closed)
        ));
    }

    #[test]
    fn short_headers_are_errors_not_panics() {
        for n in 0..HEADER_PREFIX_BYTES {
            assert!(matches!(
                header_prefix(&vec![0; n]),
                Err(FrameError::Short(m)) if m == n
            ));
            assert!(decode_request(Bytes::from(vec![0; n]), ApiKey::Metadata).is_err());
        }
        let p = header_prefix(&[0, 18, 0, 3, 0, 0, 0, 7]).unwrap();
        assert_eq!(
            p,
            HeaderPrefix {
                api_key: 18,
                api_version: 3,
                correlation_id: 7
            }
        );
    }

    #[test]
    fn the_unsupported_answer_is_a_header_and_an_error_code() {
        let b = encode_unsupported(42);
        assert_eq!(&b[..], &[0, 0, 0, 6, 0, 0, 0, 42, 0, 35]);
    }
}
