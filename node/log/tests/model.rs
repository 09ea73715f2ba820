//! Property tests: the log against an in-memory model (a vector of records
//! and a start offset), through appends, batches, reads, truncations,
//! retention and reopens, with segments small enough to roll often.

use flotilla_log::{Log, LogConfig, LogError, NewRecord, Offset};
use proptest::prelude::*;

type Entry = (Option<Vec<u8>>, Vec<u8>);

#[derive(Debug, Clone)]
enum Op {
    Append(Entry),
    AppendBatch(Vec<Entry>),
    Read { at: u64, max_bytes: usize },
    TruncateTo(u64),
    Retain { bytes: u64 },
    Reopen,
}

fn entry() -> impl Strategy<Value = Entry> {
    (
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..8)),
        proptest::collection::vec(any::<u8>(), 0..60),
    )
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => entry().prop_map(Op::Append),
        2 => proptest::collection::vec(entry(), 1..6).prop_map(Op::AppendBatch),
        3 => (0u64..40, 1usize..300).prop_map(|(at, max_bytes)| Op::Read { at, max_bytes }),
        1 => (0u64..40).prop_map(Op::TruncateTo),
        1 => (0u64..800).prop_map(|bytes| Op::Retain { bytes }),
        1 => Just(Op::Reopen),
    ]
}

fn config(retention_bytes: Option<u64>) -> LogConfig {
    LogConfig {
        segment_bytes_max: 256,
        record_bytes_max: 256,
        retention_ms: None,
        retention_bytes,
        ..LogConfig::default()
    }
}

/// The model: `records[i]` has offset `start + i`.
#[derive(Debug, Default)]
struct Model {
    start: u64,
    records: Vec<Entry>,
}

impl Model {
    fn end(&self) -> u64 {
        self.start + self.records.len() as u64
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn log_matches_an_in_memory_model(ops in proptest::collection::vec(op(), 1..40)) {
        let dir = tempfile::tempdir().unwrap();
        let mut log = Log::open(dir.path(), config(None)).unwrap();
        let mut model = Model::default();
        for op in ops {
            match op {
                Op::Append((key, value)) => {
                    let offset = log.append(key.as_deref(), &value).unwrap();
                    prop_assert_eq!(offset, Offset(model.end()));
                    model.records.push((key, value));
                }
                Op::AppendBatch(entries) => {
                    let batch: Vec<_> = entries
                        .iter()
                        .map(|(k, v)| NewRecord::new(k.as_deref(), v))
                        .collect();
                    let first = log.append_batch(&batch).unwrap();
                    prop_assert_eq!(first, Offset(model.end()));
                    model.records.extend(entries);
                }
                Op::Read { at, max_bytes } => match log.read_from(Offset(at), max_bytes) {
                    Ok(records) => {
                        prop_assert!(at >= model.start && at <= model.end());
                        prop_assert_eq!(records.is_empty(), at == model.end());
                        let mut bytes = 0;
                        for (i, r) in records.iter().enumerate() {
                            let expected = &model.records[(at - model.start) as usize + i];
                            prop_assert_eq!(r.offset, Offset(at + i as u64));
                            prop_assert_eq!(&r.key, &expected.0);
                            prop_assert_eq!(&r.value, &expected.1);
                            bytes += r.encoded_bytes() as usize;
                        }
                        prop_assert!(records.len() <= 1 || bytes <= max_bytes);
                    }
                    Err(LogError::OffsetOutOfRange { requested, log_start, log_end }) => {
                        prop_assert!(at < model.start || at > model.end());
                        prop_assert_eq!(requested, Offset(at));
                        prop_assert_eq!(log_start, Offset(model.start));
                        prop_assert_eq!(log_end, Offset(model.end()));
                    }
                    Err(e) => prop_assert!(false, "unexpected error {}", e),
                },
                Op::TruncateTo(to) => match log.truncate_to(Offset(to)) {
                    Ok(()) => {
                        prop_assert!(to >= model.start);
                        let keep = to.min(model.end()) - model.start;
                        model.records.truncate(keep as usize);
                    }
                    Err(LogError::OffsetOutOfRange { .. }) => prop_assert!(to < model.start),
                    Err(e) => prop_assert!(false, "unexpected error {}", e),
                },
                Op::Retain { bytes } => {
                    drop(log);
                    log = Log::open(dir.path(), config(Some(bytes))).unwrap();
                    let outcome = log.apply_retention().unwrap();
                    let start = log.log_start_offset().0;
                    prop_assert_eq!(outcome.log_start, Offset(start));
                    prop_assert!(start >= model.start && start <= model.end());
                    model.records.drain(..(start - model.start) as usize);
                    model.start = start;
                    drop(log);
                    log = Log::open(dir.path(), config(None)).unwrap();
                }
                Op::Reopen => {
                    drop(log);
                    log = Log::open(dir.path(), config(None)).unwrap();
                }
            }
            prop_assert_eq!(log.log_start_offset(), Offset(model.start));
            prop_assert_eq!(log.log_end_offset(), Offset(model.end()));
        }
        // Everything the model holds reads back in order.
        let mut at = model.start;
        while at < model.end() {
            let records = log.read_from(Offset(at), 200).unwrap();
            for r in records {
                let expected = &model.records[(at - model.start) as usize];
                prop_assert_eq!(&r.key, &expected.0);
                prop_assert_eq!(&r.value, &expected.1);
                at += 1;
            }
        }
    }
}
