//! Tests of the snapshot encoding: the hand-written key histories against
//! prost's encoding, and malformed snapshots.

use super::*;
use crate::kv::store_tests::Harness;

/// The snapshot a plain prost encoding gives: field 4 as messages.
#[derive(Clone, PartialEq, prost::Message)]
struct PlainKeys {
    #[prost(message, repeated, tag = "4")]
    keys: Vec<KeyHistory>,
}

#[test]
fn key_histories_are_the_bytes_prost_writes() {
    let mut h = Harness::new();
    h.put("a", "1");
    h.put("a", "");
    h.put("b", &"x".repeat(300));
    h.del("a", "");
    h.put("c", "3");
    let bytes = h.s.encode_snapshot();
    let r = StoreRecord::decode(Bytes::from(bytes)).unwrap();
    assert_eq!(r.keys.len(), 3);
    let mut written = Vec::new();
    for raw in &r.keys {
        put_delimited(KEYS_TAG, raw.len(), &mut written);
        written.extend_from_slice(raw);
    }
    let plain = PlainKeys {
        keys: h
            .s
            .mvcc()
            .histories()
            .map(|(key, versions)| KeyHistory {
                key: key.to_vec(),
                versions: versions
                    .iter()
                    .map(|v| {
                        let (meta, value) = v.parts();
                        VersionRecord {
                            main: meta.revision.main,
                            sub: meta.revision.sub,
                            create_revision: meta.create_revision,
                            version: meta.version,
                            value: value.to_vec(),
                            lease: meta.lease,
                        }
                    })
                    .collect(),
            })
            .collect(),
    };
    assert_eq!(written, plain.encode_to_vec());
    assert_eq!(
        plain.keys[0].versions.len(),
        3,
        "a: two puts and a deletion"
    );
}

#[test]
fn malformed_key_histories_are_refused() {
    let encode = |keys: Vec<KeyHistory>, revision: i64| {
        Bytes::from(
            StoreRecord {
                revision,
                keys: keys
                    .iter()
                    .map(|k| Bytes::from(k.encode_to_vec()))
                    .collect(),
                ..StoreRecord::default()
            }
            .encode_to_vec(),
        )
    };
    let version = |main: i64, version: i64, value: &str| VersionRecord {
        main,
        create_revision: if version == 0 { 0 } else { main },
        version,
        value: value.into(),
        ..VersionRecord::default()
    };
    let key = |k: &str, versions: Vec<VersionRecord>| KeyHistory {
        key: k.into(),
        versions,
    };
    let ok = encode(vec![key("a", vec![version(2, 1, "x")])], 2);
    assert!(KvStore::decode_snapshot(KvConfig::default(), &ok).is_ok());
    for (why, data) in [
        ("no versions", encode(vec![key("a", vec![])], 2)),
        (
            "after the revision",
            encode(vec![key("a", vec![version(3, 1, "x")])], 2),
        ),
        (
            "out of order",
            encode(
                vec![key("a", vec![version(3, 1, "x"), version(2, 1, "y")])],
                3,
            ),
        ),
        (
            "keys out of order",
            encode(
                vec![
                    key("b", vec![version(2, 1, "x")]),
                    key("a", vec![version(3, 1, "y")]),
                ],
                3,
            ),
        ),
        (
            "one revision twice",
            encode(
                vec![
                    key("a", vec![version(2, 1, "x")]),
                    key("b", vec![version(2, 1, "y")]),
                ],
                2,
            ),
        ),
        (
            "tombstone with a value",
            encode(vec![key("a", vec![version(2, 0, "x")])], 2),
        ),
        ("bad revisions", encode(vec![], 0)),
        (
            "keys of the wrong wire type",
            Bytes::from_static(&[0x08, 0x02, 0x20, 0x01]),
        ),
        (
            "a key history past the end",
            Bytes::from_static(&[0x08, 0x02, 0x22, 0x05, 0x01]),
        ),
    ] {
        assert!(
            KvStore::decode_snapshot(KvConfig::default(), &data).is_err(),
            "{why}"
        );
    }
}

/// A sink that keeps what it is given and the size of each write.
#[derive(Default)]
struct Recording {
    bytes: Vec<u8>,
    writes: Vec<usize>,
}

impl std::io::Write for Recording {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.bytes.extend_from_slice(buf);
        self.writes.push(buf.len());
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn the_streamed_encoding_is_the_snapshot_in_bounded_pieces() {
    let mut h = Harness::new();
    // About four pieces of key histories, some keys with several versions.
    for i in 0..8_000 {
        h.put(&format!("key-{i:05}"), &"v".repeat(100 + i % 50));
    }
    for i in (0..8_000).step_by(7) {
        h.put(&format!("key-{i:05}"), "again");
    }
    h.del("key-00003", "");
    let mut sink = Recording::default();
    h.s.encode_snapshot_to(&mut sink).unwrap();
    assert_eq!(sink.bytes, h.s.encode_snapshot(), "the same bytes");
    assert!(
        sink.writes.len() > 3,
        "written in pieces: {:?}",
        sink.writes
    );
    let largest = sink.writes.iter().max().copied().unwrap_or(0);
    assert!(
        largest < ENCODE_PIECE_BYTES + 1024,
        "a write of {largest} bytes: the encoder held more than a piece"
    );
    let restored = KvStore::decode_snapshot(KvConfig::default(), &sink.bytes).unwrap();
    assert_eq!(restored.encode_snapshot(), sink.bytes);
}
