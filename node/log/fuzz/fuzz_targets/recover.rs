//! Arbitrary bytes as the last segment of a partition: opening must recover
//! (and then read every record) or fail with `Corrupt`, never panic.
#![no_main]

use flotilla_log::{Log, LogConfig, LogError};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("00000000000000000000.log"), data).expect("write");
    let config = LogConfig {
        record_bytes_max: 1 << 16,
        ..LogConfig::default()
    };
    match Log::open(dir.path(), config) {
        Ok(log) => {
            let mut at = log.log_start_offset();
            while at < log.log_end_offset() {
                let records = log.read_from(at, 4096).expect("recovered records read back");
                assert!(!records.is_empty());
                at = at.plus(records.len() as u64);
            }
        }
        Err(LogError::Corrupt { .. }) => {}
        Err(e) => panic!("unexpected error: {e}"),
    }
});
