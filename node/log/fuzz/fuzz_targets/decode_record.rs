//! Arbitrary bytes into the record decoder and the segment scanner: no
//! panic, no out-of-bounds read, only `DecodeError`s.
#![no_main]

use flotilla_log::Offset;
use flotilla_log::record::{self, DecodeError};
use flotilla_log::recovery;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match record::decode(data, 1 << 16) {
        Ok((record, used)) => {
            assert!(used <= data.len());
            assert_eq!(used as u64, record.encoded_bytes());
            assert!(record.headers.iter().count() == record.headers.len());
        }
        Err(DecodeError::Incomplete { needed, available }) => assert!(needed > available),
        Err(
            DecodeError::TooLarge { .. }
            | DecodeError::BadCrc { .. }
            | DecodeError::BadExtension(_),
        ) => {}
    }
    let scan = recovery::scan(data, Offset(0), 1 << 16).expect("slices do not fail IO");
    assert!(scan.valid_bytes <= data.len() as u64);
});
