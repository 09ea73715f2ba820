use super::*;
use flotilla_raft::Bytes;
use prost::Message as _;

/// Position of a body's variant in [`MessageBody`]. No wildcard arm: a new
/// variant fails to compile here until it is added to [`every_variant`].
fn variant_number(body: &MessageBody) -> usize {
    match body {
        MessageBody::PreVote { .. } => 0,
        MessageBody::PreVoteResponse { .. } => 1,
        MessageBody::RequestVote { .. } => 2,
        MessageBody::RequestVoteResponse { .. } => 3,
        MessageBody::AppendEntries { .. } => 4,
        MessageBody::AppendEntriesResponse { .. } => 5,
        MessageBody::Heartbeat { .. } => 6,
        MessageBody::HeartbeatResponse { .. } => 7,
        MessageBody::ReadIndex { .. } => 8,
        MessageBody::ReadIndexResponse { .. } => 9,
        MessageBody::TimeoutNow => 10,
        MessageBody::InstallSnapshot { .. } => 11,
        MessageBody::InstallSnapshotResponse { .. } => 12,
        MessageBody::Propose { .. } => 13,
        MessageBody::ProposeResponse { .. } => 14,
    }
}
const VARIANTS: usize = 15;

fn msg(body: MessageBody) -> Message {
    Message {
        from: NodeId(1),
        to: NodeId(u64::MAX),
        term: Term(7),
        body,
    }
}

fn entry(term: u64, index: u64, kind: EntryKind, data: &'static [u8]) -> Entry {
    Entry {
        term: Term(term),
        index,
        kind,
        data: Bytes::from_static(data),
    }
}

fn meta() -> SnapshotMeta {
    SnapshotMeta {
        index: 40,
        term: Term(6),
        conf_state: ConfState {
            voters: vec![NodeId(1), NodeId(2), NodeId(3)],
            learners: vec![NodeId(4)],
        },
    }
}

/// Every variant at least once, with non-default values in every field (so a
/// field dropped by the conversion shows), plus the default-valued edge cases
/// proto3 does not put on the wire.
fn every_variant() -> Vec<Message> {
    let conf = ConfState {
        voters: vec![NodeId(1), NodeId(2)],
        learners: vec![],
    };
    vec![
        msg(MessageBody::PreVote {
            last_log_index: 10,
            last_log_term: Term(5),
        }),
        msg(MessageBody::PreVoteResponse { reject: true }),
        msg(MessageBody::PreVoteResponse { reject: false }),
        msg(MessageBody::RequestVote {
            last_log_index: 11,
            last_log_term: Term(6),
            leader_transfer: true,
        }),
        msg(MessageBody::RequestVoteResponse { reject: true }),
        msg(MessageBody::AppendEntries {
            prev_log_index: 20,
            prev_log_term: Term(3),
            entries: vec![
                entry(3, 21, EntryKind::Normal, b"put x"),
                entry(5, 22, EntryKind::Noop, b""),
                entry(5, 23, EntryKind::ConfChange, &[0xff; 3]),
                entry(7, 24, EntryKind::Normal, &[]),
            ],
            leader_commit: 22,
            quiet: false,
        }),
        msg(MessageBody::AppendEntries {
            prev_log_index: 0,
            prev_log_term: Term(0),
            entries: vec![],
            leader_commit: 0,
            quiet: true,
        }),
        msg(MessageBody::AppendEntriesResponse {
            reject: true,
            index: 30,
            hint_index: 25,
            hint_term: Term(4),
        }),
        msg(MessageBody::Heartbeat {
            commit: 17,
            round: 99,
        }),
        msg(MessageBody::HeartbeatResponse { round: 99 }),
        msg(MessageBody::ReadIndex {
            ctx: Bytes::from_static(b"read-1"),
        }),
        msg(MessageBody::ReadIndexResponse {
            index: 31,
            ctx: Bytes::from_static(b"read-1"),
        }),
        msg(MessageBody::TimeoutNow),
        msg(MessageBody::InstallSnapshot {
            meta: meta(),
            offset: 4096,
            data: Bytes::from_static(b"chunk bytes"),
            chunk_crc: 0xdead_beef,
            done: true,
            total_bytes: 4107,
            snapshot_crc: u32::MAX,
        }),
        msg(MessageBody::InstallSnapshot {
            meta: SnapshotMeta {
                index: 0,
                term: Term(0),
                conf_state: ConfState::default(),
            },
            offset: 0,
            data: Bytes::new(),
            chunk_crc: 0,
            done: false,
            total_bytes: 0,
            snapshot_crc: 0,
        }),
        msg(MessageBody::InstallSnapshot {
            meta: SnapshotMeta {
                conf_state: conf,
                ..meta()
            },
            offset: 1,
            data: Bytes::from_static(&[0]),
            chunk_crc: 1,
            done: false,
            total_bytes: 2,
            snapshot_crc: 2,
        }),
        msg(MessageBody::InstallSnapshotResponse {
            accepted: true,
            next_offset: 4107,
            snapshot_index: 77,
        }),
        // From a member of an earlier release: no snapshot named.
        msg(MessageBody::InstallSnapshotResponse {
            accepted: false,
            next_offset: 0,
            snapshot_index: 0,
        }),
        msg(MessageBody::Propose {
            id: u64::MAX,
            commands: vec![Bytes::from_static(b"put"), Bytes::new()],
        }),
        msg(MessageBody::Propose {
            id: 0,
            commands: Vec::new(),
        }),
        msg(MessageBody::ProposeResponse {
            id: 3,
            first_index: 1 << 40,
            accepted: 2,
            refusal: ProposeRefusal::Busy,
        }),
        msg(MessageBody::ProposeResponse {
            id: 4,
            first_index: 0,
            accepted: 0,
            refusal: ProposeRefusal::NotLeader,
        }),
        msg(MessageBody::ProposeResponse {
            id: 5,
            first_index: 9,
            accepted: 1,
            refusal: ProposeRefusal::None,
        }),
        msg(MessageBody::ProposeResponse {
            id: 6,
            first_index: 0,
            accepted: 0,
            refusal: ProposeRefusal::Unsupported,
        }),
    ]
}

/// Encodes to protobuf bytes and back.
fn wire_round_trip(m: &Message) -> Result<Message, DecodeError> {
    let bytes = raft::RaftMessage::from(m).encode_to_vec();
    let wire = raft::RaftMessage::decode(bytes.as_slice()).expect("our own encoding decodes");
    Message::try_from(wire)
}

#[test]
fn the_list_covers_every_variant() {
    let mut seen = [false; VARIANTS];
    for m in every_variant() {
        seen[variant_number(&m.body)] = true;
    }
    let missing: Vec<usize> = (0..VARIANTS).filter(|&i| !seen[i]).collect();
    assert!(
        missing.is_empty(),
        "variants missing from every_variant: {missing:?}"
    );
}

#[test]
fn every_variant_round_trips_through_the_wire() {
    for m in every_variant() {
        assert_eq!(wire_round_trip(&m).as_ref(), Ok(&m), "{}", m.kind());
    }
}

#[test]
fn owned_and_borrowed_encodings_agree() {
    for m in every_variant() {
        assert_eq!(
            raft::RaftMessage::from(&m),
            raft::RaftMessage::from(m.clone())
        );
    }
}

#[test]
fn entry_kind_numbers_are_the_core_codes() {
    for kind in [EntryKind::Normal, EntryKind::Noop, EntryKind::ConfChange] {
        assert_eq!(raft::EntryKind::from(kind) as i32, i32::from(kind.code()));
        assert_eq!(EntryKind::from(raft::EntryKind::from(kind)), kind);
    }
}

#[test]
fn a_batch_round_trips() {
    let batch = raft::PeerBatch {
        cluster_id: 0xc1u64 << 32,
        messages: every_variant()
            .iter()
            .map(raft::RaftMessage::from)
            .collect(),
        features: 1,
    };
    let decoded = raft::PeerBatch::decode(batch.encode_to_vec().as_slice()).unwrap();
    assert_eq!(decoded.cluster_id, batch.cluster_id);
    assert_eq!(decoded.features, 1);
    let messages: Vec<Message> = decoded
        .messages
        .into_iter()
        .map(Message::try_from)
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(messages, every_variant());
}

fn wire(m: &Message) -> raft::RaftMessage {
    raft::RaftMessage::from(m)
}

#[test]
fn a_missing_body_is_an_error() {
    let mut w = wire(&msg(MessageBody::TimeoutNow));
    w.body = None;
    assert_eq!(
        Message::try_from(w),
        Err(DecodeError::MissingBody {
            from: 1,
            to: u64::MAX
        })
    );
}

#[test]
fn an_unknown_body_case_is_a_missing_body() {
    // Field 99 is no case of the oneof: prost skips it, leaving no body.
    let mut bytes = raft::RaftMessage {
        from: 1,
        to: 2,
        term: 3,
        body: None,
    }
    .encode_to_vec();
    bytes.extend_from_slice(&[0x9a, 0x06, 0x00]); // field 99, length 0
    let w = raft::RaftMessage::decode(bytes.as_slice()).unwrap();
    assert_eq!(
        Message::try_from(w),
        Err(DecodeError::MissingBody { from: 1, to: 2 })
    );
}

#[test]
fn node_id_zero_is_an_error() {
    let mut w = wire(&msg(MessageBody::TimeoutNow));
    w.from = 0;
    assert_eq!(
        Message::try_from(w.clone()),
        Err(DecodeError::ZeroNodeId { field: "from" })
    );
    w.from = 1;
    w.to = 0;
    assert_eq!(
        Message::try_from(w),
        Err(DecodeError::ZeroNodeId { field: "to" })
    );

    let mut m = meta();
    m.conf_state.learners.push(NodeId(0));
    let w = wire(&msg(MessageBody::InstallSnapshot {
        meta: m,
        offset: 0,
        data: Bytes::new(),
        chunk_crc: 0,
        done: false,
        total_bytes: 0,
        snapshot_crc: 0,
    }));
    assert_eq!(
        Message::try_from(w),
        Err(DecodeError::ZeroNodeId {
            field: "conf_state.learners"
        })
    );
}

fn snapshot_wire() -> raft::RaftMessage {
    wire(&msg(MessageBody::InstallSnapshot {
        meta: meta(),
        offset: 0,
        data: Bytes::from_static(b"x"),
        chunk_crc: 0,
        done: false,
        total_bytes: 1,
        snapshot_crc: 0,
    }))
}

#[test]
fn a_snapshot_without_meta_or_conf_state_is_an_error() {
    let mut w = snapshot_wire();
    let Some(Body::InstallSnapshot(b)) = &mut w.body else {
        unreachable!()
    };
    b.meta = None;
    assert_eq!(
        Message::try_from(w),
        Err(DecodeError::MissingField {
            message: "InstallSnapshot",
            field: "meta"
        })
    );

    let mut w = snapshot_wire();
    let Some(Body::InstallSnapshot(b)) = &mut w.body else {
        unreachable!()
    };
    b.meta.as_mut().unwrap().conf_state = None;
    assert_eq!(
        Message::try_from(w),
        Err(DecodeError::MissingField {
            message: "SnapshotMeta",
            field: "conf_state"
        })
    );
}

fn append(prev_log_index: u64, prev_log_term: u64, entries: &[(u64, u64)]) -> raft::RaftMessage {
    raft::RaftMessage {
        from: 1,
        to: 2,
        term: 7,
        body: Some(Body::AppendEntries(raft::AppendEntries {
            prev_log_index,
            prev_log_term,
            entries: entries
                .iter()
                .map(|&(term, index)| raft::Entry {
                    term,
                    index,
                    kind: raft::EntryKind::Normal.into(),
                    data: Bytes::new(),
                })
                .collect(),
            leader_commit: 0,
            quiet: false,
        })),
    }
}

/// Only an append without entries goes unanswered: a quiet flag on one
/// that carries entries (no leader sends it) is dropped, and one from a
/// leader of an earlier release (no field) is answered.
#[test]
fn only_an_empty_append_decodes_as_quiet() {
    let quiet = |mut w: raft::RaftMessage| {
        if let Some(Body::AppendEntries(b)) = &mut w.body {
            b.quiet = true;
        }
        match Message::try_from(w).expect("valid").body {
            MessageBody::AppendEntries { quiet, .. } => quiet,
            other => panic!("not an append: {other:?}"),
        }
    };
    assert!(quiet(append(4, 7, &[])));
    assert!(!quiet(append(4, 7, &[(7, 5)])));
    let old_leader =
        raft::RaftMessage::decode(append(4, 7, &[]).encode_to_vec().as_slice()).expect("decodes");
    assert!(matches!(
        Message::try_from(old_leader).expect("valid").body,
        MessageBody::AppendEntries { quiet: false, .. }
    ));
}

#[test]
fn an_unknown_entry_kind_is_an_error() {
    let mut w = append(0, 0, &[(1, 1), (1, 2)]);
    let Some(Body::AppendEntries(b)) = &mut w.body else {
        unreachable!()
    };
    b.entries[1].kind = 3;
    assert_eq!(
        Message::try_from(w),
        Err(DecodeError::UnknownEntryKind { index: 2, code: 3 })
    );
}

#[test]
fn entries_must_form_the_segment_after_prev_log_index() {
    let bad = |w, position, index, term, expected_index, min_term| {
        assert_eq!(
            Message::try_from(w),
            Err(DecodeError::BadEntrySequence {
                position,
                index,
                term,
                expected_index,
                min_term,
                max_term: 7,
            })
        );
    };
    // The segment must start right after prev_log_index...
    bad(append(5, 2, &[(2, 7)]), 0, 7, 2, 6, 2);
    bad(append(5, 2, &[(2, 5)]), 0, 5, 2, 6, 2);
    // ... and leave no gap nor repeat an index.
    bad(append(5, 2, &[(2, 6), (2, 8)]), 1, 8, 2, 7, 2);
    bad(append(5, 2, &[(2, 6), (2, 6)]), 1, 6, 2, 7, 2);
    // Terms never go down, from prev_log_term on...
    bad(append(5, 3, &[(2, 6)]), 0, 6, 2, 6, 3);
    bad(append(5, 2, &[(4, 6), (3, 7)]), 1, 7, 3, 7, 4);
    // ... and never pass the sender's term.
    bad(append(5, 2, &[(8, 6)]), 0, 6, 8, 6, 2);
    // No entry can follow index u64::MAX.
    bad(append(u64::MAX, 2, &[(2, 0)]), 0, 0, 2, u64::MAX, 2);

    assert!(Message::try_from(append(5, 2, &[(2, 6), (2, 7), (7, 8)])).is_ok());
    assert!(Message::try_from(append(u64::MAX, 2, &[])).is_ok());
}

#[test]
fn corrupted_bytes_never_panic() {
    // Truncate and flip every byte of every encoded variant: decoding may
    // fail either in prost or in the conversion, but must not panic.
    for m in every_variant() {
        let bytes = raft::RaftMessage::from(&m).encode_to_vec();
        for cut in 0..bytes.len() {
            if let Ok(w) = raft::RaftMessage::decode(&bytes[..cut]) {
                let _ = Message::try_from(w);
            }
        }
        for at in 0..bytes.len() {
            for flip in [0x01, 0x80, 0xff] {
                let mut corrupt = bytes.clone();
                corrupt[at] ^= flip;
                if let Ok(w) = raft::RaftMessage::decode(corrupt.as_slice()) {
                    let _ = Message::try_from(w);
                }
            }
        }
    }
}

#[test]
fn errors_read_well() {
    let e = Message::try_from(append(5, 2, &[(2, 7)])).unwrap_err();
    assert_eq!(
        e.to_string(),
        "append entries: entry at position 0 has index 7 and term 2, \
         expected index 6 and a term from 2 to 7"
    );
    assert_eq!(
        DecodeError::UnknownEntryKind { index: 4, code: 9 }.to_string(),
        "entry 4 has unknown kind 9"
    );
}

#[test]
fn decoded_entries_do_not_keep_the_receive_buffer_alive() {
    let m = msg(MessageBody::AppendEntries {
        prev_log_index: 4,
        prev_log_term: Term(7),
        entries: vec![entry(7, 5, EntryKind::Normal, &[9; 300])],
        leader_commit: 4,
        quiet: false,
    });
    // Decoding from `Bytes` slices it for `bytes` fields, as tonic's
    // decoder does with its receive buffer.
    let buf = Bytes::from(raft::RaftMessage::from(&m).encode_to_vec());
    let decoded = Message::try_from(raft::RaftMessage::decode(buf.clone()).unwrap()).unwrap();
    assert_eq!(decoded, m);
    let MessageBody::AppendEntries { entries, .. } = &decoded.body else {
        panic!("an AppendEntries");
    };
    let held = entries[0].data.as_ptr_range();
    let received = buf.as_ptr_range();
    assert!(
        held.end <= received.start || held.start >= received.end,
        "the entry's data points into the receive buffer"
    );
}
