//! Arbitrary bytes as a request frame (after its size prefix): the header
//! prefix, then, for an API and version the listener serves, the bounded
//! walk and the codec (`frame::decode_request`), as the dispatcher runs
//! them; and, as a produced partition's records, the record-batch checks
//! and decoder. No panic; errors only; run with `-malloc_limit_mb` so an
//! allocation sized by a claimed length is a crash too.
#![no_main]

use bytes::Bytes;
use flotilla_kafka::{dispatch, frame, records};
use kafka_protocol::messages::ApiKey;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(prefix) = frame::header_prefix(data)
        && let Ok(api) = ApiKey::try_from(prefix.api_key)
        && dispatch::supported(api)
            .is_some_and(|(min, max)| (min..=max).contains(&prefix.api_version))
    {
        let _ = frame::decode_request(Bytes::copy_from_slice(data), api);
    }
    let _ = records::decode_produced(Bytes::copy_from_slice(data), 1 << 20);
});
