//! Tests of the snapshot encoding: the hand-written key histories against
//! prost's encoding, and malformed snapshots.

use super::*;
use crate::kv::store_tests::{Harness, put_req};
use crate::kv::{KvCommand, KvOp};

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
    let compacted = |keys: Vec<KeyHistory>, revision: i64, compact_revision: i64| {
        Bytes::from(
            StoreRecord {
                revision,
                compact_revision,
                keys: keys
                    .iter()
                    .map(|k| Bytes::from(k.encode_to_vec()))
                    .collect(),
                ..StoreRecord::default()
            }
            .encode_to_vec(),
        )
    };
    let encode = |keys: Vec<KeyHistory>, revision: i64| compacted(keys, revision, 0);
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
    let copy = |data: &[u8]| KvStore::copy_snapshot(&mut &*data, &mut std::io::sink(), None);
    assert!(copy(&ok).is_ok());
    // Compacted at 4: the version at 2 is what a read at 4 sees.
    let held = compacted(
        vec![key("a", vec![version(2, 1, "x"), version(5, 2, "y")])],
        5,
        4,
    );
    assert!(KvStore::decode_snapshot(KvConfig::default(), &held).is_ok());
    assert!(copy(&held).is_ok());
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
            "two versions below the compaction point",
            compacted(
                vec![key(
                    "a",
                    vec![version(2, 1, "x"), version(3, 2, "y"), version(5, 3, "z")],
                )],
                5,
                4,
            ),
        ),
        (
            "a deletion at the compaction point",
            compacted(vec![key("a", vec![version(4, 0, "")])], 5, 4),
        ),
        (
            "what the change at the compaction point superseded",
            compacted(
                vec![key("a", vec![version(2, 1, "x"), version(4, 2, "y")])],
                5,
                4,
            ),
        ),
        (
            "a deletion below the compaction point",
            compacted(
                vec![key("a", vec![version(2, 1, "x"), version(3, 0, "")])],
                5,
                4,
            ),
        ),
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
        // The copy checks as the decoder does, without building the store.
        assert!(
            matches!(copy(&data), Err(CopySnapshotError::Invalid(_))),
            "{why} (copied)"
        );
    }
}

/// A store with leases, sessions, an alarm, removed members, compacted
/// history, a transaction's several changes at one revision.
fn rich_store() -> Harness {
    use flotilla_proto::etcdserverpb::{
        CompactionRequest, LeaseGrantRequest, PutRequest, RequestOp, TxnRequest, request_op,
    };
    let mut h = Harness::new();
    h.op(KvOp::LeaseGrant(LeaseGrantRequest { ttl: 30, id: 3 }));
    h.op(KvOp::LeaseGrant(LeaseGrantRequest { ttl: 60, id: 4 }));
    for i in 0..200 {
        h.put(&format!("k{i:03}"), &"v".repeat(i));
    }
    h.op(KvOp::Put(PutRequest {
        lease: 3,
        ..put_req("leased", "1")
    }));
    let put = |k: &str| RequestOp {
        request: Some(request_op::Request::RequestPut(put_req(k, "t"))),
    };
    h.op(KvOp::Txn(TxnRequest {
        success: vec![put("t1"), put("t2"), put("t3")],
        ..Default::default()
    }));
    h.del("k005", "");
    h.put("k007", "again");
    h.op(KvOp::Compaction(CompactionRequest {
        revision: 100,
        physical: false,
    }));
    h.cmd(KvCommand::with_session(7, 1, KvOp::Put(put_req("s", "1"))));
    h.s.replace_members(vec![member(1), member(2)]);
    h.s.removed_members.insert(9);
    h
}

fn member(id: u64) -> Member {
    Member {
        id,
        name: format!("m{id}"),
        peer_ur_ls: vec![format!("http://127.0.0.1:{}", 21000 + id)],
        ..Default::default()
    }
}

#[test]
fn a_copy_is_the_same_snapshot_or_one_with_a_new_member_table() {
    let h = rich_store();
    let bytes = h.s.encode_snapshot();
    let mut copied = Recording::default();
    let facts = KvStore::copy_snapshot(&mut &bytes[..], &mut copied, None).unwrap();
    assert_eq!(copied.bytes, bytes, "a copy of what this store wrote");
    assert_eq!(facts.revision, h.s.revision());
    assert_eq!(facts.compact_revision, h.s.compact_revision());
    assert_eq!(facts.applied_index, h.s.applied_index());
    assert_eq!(facts.live_keys, 200 - 1 + 1 + 3 + 1);
    assert_eq!(facts.leases, 2);
    assert!(
        copied.writes.iter().all(|&w| w < ENCODE_PIECE_BYTES + 1024),
        "written in pieces: {:?}",
        copied.writes
    );

    // Restoring into a new cluster: the member table is replaced.
    let new_members = vec![member(12), member(11)];
    let mut replaced = Recording::default();
    KvStore::copy_snapshot(&mut &bytes[..], &mut replaced, Some(new_members.clone())).unwrap();
    let mut expected = KvStore::decode_snapshot(KvConfig::default(), &bytes).unwrap();
    expected.replace_members(new_members);
    assert_eq!(replaced.bytes, expected.encode_snapshot());
    let decoded = KvStore::decode_snapshot(KvConfig::default(), &replaced.bytes).unwrap();
    assert_eq!(decoded, expected);
}

#[test]
fn a_copy_tells_a_failing_sink_from_a_bad_snapshot() {
    struct Failing;
    impl std::io::Write for Failing {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::Error::other("disk full"))
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let bytes = rich_store().s.encode_snapshot();
    let e = KvStore::copy_snapshot(&mut &bytes[..], &mut Failing, None).unwrap_err();
    assert!(matches!(e, CopySnapshotError::Sink(_)), "{e}");
    assert!(e.to_string().contains("disk full"), "{e}");
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

/// A session as the first release wrote it: one response, no mark.
#[derive(Clone, PartialEq, prost::Message)]
struct FirstReleaseSession {
    #[prost(uint64, tag = "1")]
    client_id: u64,
    #[prost(uint64, tag = "2")]
    last_seq: u64,
    #[prost(uint64, tag = "3")]
    last_index: u64,
    #[prost(message, optional, tag = "4")]
    error: Option<ErrorRecord>,
    #[prost(oneof = "KvResponse", tags = "11, 12, 13, 14, 15, 16, 17, 18, 19, 20")]
    response: Option<KvResponse>,
}

/// The sessions part of a first-release snapshot.
#[derive(Clone, PartialEq, prost::Message)]
struct FirstReleaseSessions {
    #[prost(message, repeated, tag = "6")]
    sessions: Vec<FirstReleaseSession>,
}

/// The sessions part of a snapshot as this release reads it.
#[derive(Clone, PartialEq, prost::Message)]
struct SessionsNow {
    #[prost(message, repeated, tag = "6")]
    sessions: Vec<SessionRecord>,
}

fn session_put(client: u64, seq: u64, mark: u64, key: &str) -> KvCommand {
    let op = KvOp::Put(crate::kv::store_tests::put_req(key, "v"));
    KvCommand::with_session(client, seq, op).with_first_unanswered(mark)
}

#[test]
fn windowed_sessions_round_trip() {
    let mut h = Harness::new();
    // Client 7: out of order, one refused (an error response cached), then
    // a mark that drops 1.
    for (seq, key) in [(3, "c"), (1, "a"), (4, ""), (2, "b")] {
        h.cmd(session_put(7, seq, 1, key));
    }
    h.cmd(session_put(7, 6, 2, "f"));
    // Client 8: without marks.
    h.cmd(KvCommand::with_session(
        8,
        1,
        KvOp::Put(crate::kv::store_tests::put_req("x", "1")),
    ));
    let seven = h.s.sessions().get(7).unwrap();
    assert_eq!(
        seven.responses.keys().copied().collect::<Vec<_>>(),
        [2, 3, 4, 6]
    );
    assert!(seven.responses[&4].is_err());
    let bytes = h.s.encode_snapshot();
    let restored = KvStore::decode_snapshot(KvConfig::default(), &bytes).unwrap();
    assert_eq!(restored, h.s);
    assert_eq!(restored.encode_snapshot(), bytes);
    // The restored store answers and applies alike.
    let mut h2 = Harness {
        s: restored,
        index: h.index,
        batched: true,
    };
    for cmd in [
        session_put(7, 4, 2, ""),
        session_put(7, 2, 2, "b"),
        session_put(7, 1, 2, "a"),
        session_put(7, 5, 2, "e"),
        session_put(7, 7, 7, "g"),
        session_put(7, 3, 7, "c"),
    ] {
        assert_eq!(h.cmd(cmd.clone()), h2.cmd(cmd));
    }
    assert_eq!(h.s, h2.s);
}

#[test]
fn a_first_release_snapshot_loads() {
    let mut h = Harness::new();
    h.put("a", "1");
    h.cmd(KvCommand::with_session(
        7,
        3,
        KvOp::Put(crate::kv::store_tests::put_req("d", "1")),
    ));
    h.cmd(KvCommand::with_session(
        8,
        1,
        KvOp::Put(crate::kv::store_tests::put_req("", "1")),
    ));
    // The same snapshot in the first release's encoding: its sessions as it
    // wrote them (fields 1-4 and the response, nothing else).
    let mut record = StoreRecord::decode(Bytes::from(h.s.encode_snapshot())).unwrap();
    let first_release: Vec<FirstReleaseSession> =
        h.s.sessions()
            .iter()
            .map(|(client_id, s)| {
                let (last_seq, r) = s.responses.last_key_value().unwrap();
                FirstReleaseSession {
                    client_id,
                    last_seq: *last_seq,
                    last_index: s.last_index,
                    error: r.as_ref().err().map(KvError::to_record),
                    response: r.as_ref().ok().cloned(),
                }
            })
            .collect();
    assert_eq!(first_release.len(), 2);
    let old_sessions = FirstReleaseSessions {
        sessions: first_release,
    }
    .encode_to_vec();
    record.sessions = SessionsNow::decode(old_sessions.as_slice())
        .unwrap()
        .sessions;
    let now = SessionsNow {
        sessions: record.sessions.clone(),
    };
    assert_eq!(
        now.encode_to_vec(),
        old_sessions,
        "the snapshot holds the first release's bytes"
    );
    assert!(
        record
            .sessions
            .iter()
            .all(|s| s.mark.is_none() && s.earlier.is_empty())
    );
    let old = record.encode_to_vec();
    let restored = KvStore::decode_snapshot(KvConfig::default(), &old).unwrap();
    assert_eq!(restored, h.s, "the sessions the first release kept");
    let seven = restored.sessions().get(7).unwrap();
    assert_eq!((seven.mark, seven.last_seq()), (3, 3));
    // And they answer as they did: the last seq from the cache, one below
    // it stale, one above it new.
    let mut h2 = Harness {
        s: restored,
        index: h.index,
        batched: true,
    };
    let retry = KvCommand::with_session(7, 3, KvOp::Put(crate::kv::store_tests::put_req("d", "1")));
    assert!(h2.cmd(retry).duplicate);
    assert_eq!(
        h2.cmd(session_put(7, 2, 2, "d")).result,
        Err(KvError::StaleSequence { seq: 2, last: 3 })
    );
    assert!(!h2.cmd(session_put(7, 4, 4, "d")).duplicate);
}

#[test]
fn malformed_sessions_are_refused() {
    let mut h = Harness::new();
    h.cmd(session_put(7, 2, 1, "b"));
    h.cmd(session_put(7, 1, 1, "a"));
    let record = StoreRecord::decode(Bytes::from(h.s.encode_snapshot())).unwrap();
    assert_eq!(record.sessions[0].earlier.len(), 1);
    let ok = record.encode_to_vec();
    assert!(KvStore::decode_snapshot(KvConfig::default(), &ok).is_ok());
    let mut not_below = record.clone();
    not_below.sessions[0].earlier[0].seq = 2;
    let mut below_mark = record.clone();
    below_mark.sessions[0].mark = Some(2);
    let mut no_response = record.clone();
    no_response.sessions[0].earlier[0].response = None;
    for (why, r) in [
        ("a cached seq not below the last", not_below),
        ("a response below the mark", below_mark),
        ("a cached entry without a response", no_response),
    ] {
        assert!(
            KvStore::decode_snapshot(KvConfig::default(), &r.encode_to_vec()).is_err(),
            "{why}"
        );
    }
}
