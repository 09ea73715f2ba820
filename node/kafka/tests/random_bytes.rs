//! Random bytes into the listener's decoders: the frame reader, the header
//! prefix, the request bodies of every API served (walked before they are
//! decoded), and produced record batches (whose counts the listener checks
//! itself). Nothing panics; errors only. `alloc_bound.rs` checks what the
//! decoding allocates; the cargo-fuzz target in `node/kafka/fuzz` runs the
//! same decoders unbounded.

use bytes::Bytes;
use flotilla_kafka::frame::{self, FrameError};
use flotilla_kafka::{dispatch, group, records};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn frames_of_random_bytes(data in proptest::collection::vec(any::<u8>(), 0..256)) {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let mut r: &[u8] = &data;
        match rt.block_on(frame::read_frame(&mut r, 128)) {
            Ok(f) => {
                let size = i32::from_be_bytes(data[..4].try_into().unwrap());
                prop_assert_eq!(f.len() as i32, size);
                prop_assert!(f.len() <= 128);
            }
            Err(FrameError::Size { size, .. }) => prop_assert!(!(0..=128).contains(&size)),
            Err(FrameError::Truncated { got, size }) => prop_assert!(got < size),
            Err(FrameError::Closed) => prop_assert!(data.len() < 4),
            Err(e) => prop_assert!(false, "unexpected {e}"),
        }
    }

    #[test]
    fn request_headers_and_bodies_of_every_api(
        pick in any::<u16>(),
        rest in proptest::collection::vec(any::<u8>(), 0..128),
    ) {
        for &(api, min, max) in dispatch::VERSIONS.iter().chain(group::VERSIONS) {
            let version = min + (pick % (max - min + 1) as u16) as i16;
            let mut data = Vec::new();
            data.extend_from_slice(&(api as i16).to_be_bytes());
            data.extend_from_slice(&version.to_be_bytes());
            data.extend_from_slice(&rest);
            let _ = frame::header_prefix(&data);
            let _ = frame::decode_request(Bytes::from(data), api);
        }
    }

    #[test]
    fn produced_batches_of_random_bytes(data in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = records::decode_produced(Bytes::from(data), 1 << 16);
    }

    #[test]
    fn produced_batches_with_random_tails(
        count in any::<i32>(),
        tail in proptest::collection::vec(any::<u8>(), 0..256),
    ) {
        // A well-formed v2 header (uncompressed) before random records.
        let mut b = vec![0u8; 61];
        let length = (49 + tail.len()) as i32;
        b[8..12].copy_from_slice(&length.to_be_bytes());
        b[16] = 2;
        b[57..61].copy_from_slice(&count.to_be_bytes());
        b.extend_from_slice(&tail);
        let crc = crc32c::crc32c(&b[21..]);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
        let _ = records::decode_produced(Bytes::from(b), 1 << 16);
    }
}
