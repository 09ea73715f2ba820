//! Log compaction with catch-up entries (Raft §7; etcd's
//! `SnapshotCatchUpEntries`): a compaction keeps the last entries before
//! the snapshot, so a follower a little behind is sent entries, and only one
//! further behind than that is sent the snapshot.

mod common;

use common::*;
use flotilla_raft::{Bytes, MemStorage, Message, MessageBody, NodeId, Storage};

/// Snapshot every this many applied entries in these tests.
const SNAPSHOT_EVERY: u64 = 10;

/// A leader of three (term 1) keeping `keep` entries before each snapshot,
/// whose log holds its no-op and 20 commands (indexes 1..=21), all
/// committed through member 2 and applied; member 3 has answered nothing.
/// It then snapshots at 21.
fn compacted_leader(keep: u64) -> Core {
    let mut config = config(1);
    config.snapshot_catchup_entries = keep;
    let mut leader = leader_of_21(config);
    assert!(leader.snapshot_due());
    let meta = leader
        .compact(Bytes::from_static(b"state"))
        .expect("compact");
    assert_eq!(meta.index, 21);
    leader
}

/// A leader of three (term 1) with `config` (snapshots every
/// [`SNAPSHOT_EVERY`] entries), whose log holds its no-op and 20 commands
/// (indexes 1..=21), all committed through member 2 and applied; member 3
/// has answered nothing.
fn leader_of_21(mut config: flotilla_raft::Config) -> Core {
    config.snapshot_after_entries = SNAPSHOT_EVERY;
    let mut leader = core_with(config, MemStorage::new_with_voters(&voters(3)));
    elect(&mut leader);
    propose_applied(&mut leader, 0..20, 21);
    leader
}

/// What the leader sends member 3 once 3 says its log matches up to
/// `matched`.
fn sent_after_ack(leader: &mut Core, matched: u64) -> Vec<Message> {
    leader.step(append_ack(3, 1, 1, matched));
    sent_to_3(leader)
}

/// Raft §7 with catch-up entries: the compaction at 21 keeps 17..=21, so a
/// follower that matches up to 18 is sent 19..=21 by AppendEntries, not the
/// snapshot.
#[test]
fn a_follower_within_the_kept_entries_is_sent_entries() {
    let mut leader = compacted_leader(5);
    assert_eq!(leader.storage().snapshot_index(), 21);
    assert_eq!(leader.storage().first_index(), 17, "16 entries compacted");

    let sent = sent_after_ack(&mut leader, 18);
    assert!(!sent.is_empty(), "the follower is sent something");
    for m in &sent {
        match &m.body {
            MessageBody::AppendEntries {
                prev_log_index,
                entries,
                ..
            } => {
                assert_eq!(*prev_log_index, 18);
                let indexes: Vec<u64> = entries.iter().map(|e| e.index).collect();
                assert_eq!(indexes, [19, 20, 21]);
            }
            other => panic!("expected AppendEntries, got {other:?}"),
        }
    }
}

/// The kept entries' first one is reachable too: a follower matching right
/// before it (16) is sent AppendEntries whose previous entry is the last
/// compacted one, whose term the storage still knows.
#[test]
fn a_follower_right_at_the_compaction_point_is_sent_entries() {
    let mut leader = compacted_leader(5);
    let sent = sent_after_ack(&mut leader, 16);
    assert!(
        !sent.is_empty()
            && sent.iter().all(|m| matches!(
                m.body,
                MessageBody::AppendEntries {
                    prev_log_index: 16,
                    ..
                }
            )),
        "{sent:?}"
    );
}

/// Raft §7: a follower that needs an entry before the kept ones (it matches
/// only up to 10) is sent the snapshot.
#[test]
fn a_follower_behind_the_kept_entries_is_sent_the_snapshot() {
    let mut leader = compacted_leader(5);
    let sent = sent_after_ack(&mut leader, 10);
    let kinds = kinds(&sent);
    assert!(kinds.contains(&"InstallSnapshot"), "{kinds:?}");
    assert!(!kinds.contains(&"AppendEntries"), "{kinds:?}");
    let MessageBody::InstallSnapshot { meta, offset, .. } = &sent[0].body else {
        panic!("expected InstallSnapshot, got {:?}", sent[0]);
    };
    assert_eq!((meta.index, *offset), (21, 0));
}

/// Without catch-up entries (the core's default) the same follower at 18
/// needs the snapshot: the compaction discarded everything it covers.
#[test]
fn without_catchup_entries_a_follower_behind_the_snapshot_is_sent_it() {
    let mut leader = compacted_leader(0);
    assert_eq!(leader.storage().first_index(), 22);
    let sent = sent_after_ack(&mut leader, 18);
    assert!(kinds(&sent).contains(&"InstallSnapshot"), "{sent:?}");
}

/// The next snapshot is due `snapshot_after_entries` after the last
/// snapshot, not after the first kept entry: keeping entries does not make
/// snapshots more frequent.
#[test]
fn snapshots_are_due_counting_from_the_snapshot_not_the_kept_entries() {
    let mut leader = compacted_leader(5);
    assert!(!leader.snapshot_due());
    leader.step(append_ack(3, 1, 1, 21));
    handle(&mut leader);
    for i in 0..SNAPSHOT_EVERY {
        assert!(!leader.snapshot_due(), "due after {i} entries");
        leader
            .propose(Bytes::from(format!("d{i}")))
            .expect("leader");
        handle(&mut leader);
        leader.step(append_ack(2, 1, 1, 22 + i));
        while leader.has_ready() {
            handle(&mut leader);
        }
    }
    assert!(leader.snapshot_due());
    leader.compact(Bytes::from_static(b"s2")).expect("compact");
    assert_eq!(
        (
            leader.storage().snapshot_index(),
            leader.storage().first_index()
        ),
        (31, 27)
    );
}

/// A member restarted over storage holding kept entries resumes with the
/// snapshot's configuration and its applied index, and as leader again
/// sends a follower within the kept entries what it lacks.
#[test]
fn a_restart_over_kept_entries_resumes_from_the_snapshot() {
    let leader = compacted_leader(5);
    let storage = leader.into_storage();
    let mut config = config(1);
    config.snapshot_catchup_entries = 5;
    config.applied = storage.snapshot_index();
    let mut restarted = core_with(config, storage);
    assert_eq!(restarted.status().applied, 21);
    assert_eq!(restarted.conf_state().voters, voters(3));
    elect(&mut restarted);
    let sent = sent_after_ack_term(&mut restarted, 19, 2);
    assert!(
        !sent.is_empty()
            && sent.iter().all(|m| matches!(
                m.body,
                MessageBody::AppendEntries {
                    prev_log_index: 19,
                    ..
                }
            )),
        "{sent:?}"
    );
}

/// [`sent_after_ack`] for a leader of `term`.
fn sent_after_ack_term(leader: &mut Core, matched: u64, term: u64) -> Vec<Message> {
    leader.step(append_ack(3, 1, term, matched));
    sent_to_3(leader)
}

/// A leader keeping `keep` entries whose storage has a snapshot writer,
/// with its no-op and 20 commands committed and applied (1..=21).
fn leader_with_writer(keep: u64) -> Core {
    let mut config = config(1);
    config.snapshot_catchup_entries = keep;
    config.snapshot_after_entries = SNAPSHOT_EVERY;
    let storage = MemStorage::new_with_voters(&voters(3)).with_snapshot_writer();
    let mut leader = core_with(config, storage);
    elect(&mut leader);
    propose_applied(&mut leader, 0..20, 21);
    leader
}

/// Proposes one command per `i`, has member 2 acknowledge up to `last` and
/// applies everything.
fn propose_applied(leader: &mut Core, range: std::ops::Range<u32>, last: u64) {
    for i in range {
        leader
            .propose(Bytes::from(format!("c{i}")))
            .expect("leader");
        handle(leader);
    }
    leader.step(append_ack(2, 1, 1, last));
    while leader.has_ready() {
        handle(leader);
    }
    assert_eq!(leader.status().applied, last);
}

/// Has the storage's `writer` store `snapshot`, its data streamed.
fn write_snapshot(writer: flotilla_raft::SnapshotWriter, snapshot: &flotilla_raft::Snapshot) {
    let data = snapshot.data.clone();
    writer(
        &snapshot.meta,
        Box::new(move |sink: &mut dyn std::io::Write| sink.write_all(&data)),
    )
    .expect("written");
}

/// A snapshot written off the driver thread: its meta is taken at the
/// applied index (21), entries go on applying while it is written (to 25),
/// and only then is the log compacted — to the snapshot's index, never to
/// what is applied by then: 22..=25 stay, with the catch-up entries.
#[test]
fn a_snapshot_written_meanwhile_compacts_to_its_own_index() {
    let mut leader = leader_with_writer(5);
    let mut snapshot = leader.prepare_snapshot(Bytes::new()).expect("prepare");
    assert_eq!(snapshot.meta.index, 21);
    let writer = leader.storage().snapshot_writer().expect("a writer");
    propose_applied(&mut leader, 20..24, 25);
    snapshot.data = Bytes::from_static(b"state at 21");
    write_snapshot(writer, &snapshot);
    leader
        .compact_written(&snapshot.meta, snapshot.data.len() as u64)
        .expect("compacted");
    let storage = leader.storage();
    assert_eq!(storage.snapshot_index(), 21);
    assert_eq!(
        storage.first_index(),
        17,
        "the catch-up entries 17..=21 stay"
    );
    assert_eq!(storage.last_index(), 25, "nothing after the snapshot goes");
    assert_eq!(storage.snapshot().expect("held").data, snapshot.data);
}

/// A crash after the snapshot was written but before the log was compacted
/// to it: a restart reads back the written snapshot and the log after it.
#[test]
fn a_snapshot_written_but_not_compacted_to_is_recovered() {
    let mut leader = leader_with_writer(5);
    let mut snapshot = leader.prepare_snapshot(Bytes::new()).expect("prepare");
    let writer = leader.storage().snapshot_writer().expect("a writer");
    propose_applied(&mut leader, 20..24, 25);
    snapshot.data = Bytes::from_static(b"state at 21");
    write_snapshot(writer, &snapshot);
    let mut storage = leader.into_storage();
    assert_eq!(storage.snapshot_index(), 0, "not recorded before the crash");
    storage.recover();
    assert_eq!(storage.snapshot_index(), 21);
    assert_eq!(storage.first_index(), 22);
    assert_eq!(storage.last_index(), 25);
    assert_eq!(storage.snapshot().expect("held").data, snapshot.data);
}

/// The offsets of the snapshot chunks in `sent`.
fn chunk_offsets(sent: &[Message]) -> Vec<u64> {
    sent.iter()
        .filter_map(|m| match m.body {
            MessageBody::InstallSnapshot { offset, .. } => Some(offset),
            _ => None,
        })
        .collect()
}

/// Ticks `leader` until it sends member 3 a heartbeat; returns its round.
fn next_round(leader: &mut Core) -> u64 {
    for _ in 0..20 {
        let round = tick_n(leader, 1)
            .iter()
            .flat_map(|r| heartbeat_rounds(r, 3))
            .max();
        if let Some(round) = round {
            return round;
        }
    }
    panic!("no heartbeat in 20 ticks");
}

/// What `leader` sends member 3 in its next `Ready`.
fn sent_to_3(leader: &mut Core) -> Vec<Message> {
    handle(leader)
        .messages
        .into_iter()
        .filter(|m| m.to == NodeId(3))
        .collect()
}

/// A heartbeat answer from member 3 to round `round`.
fn heartbeat_answer(round: u64) -> Message {
    msg(3, 1, 1, MessageBody::HeartbeatResponse { round })
}

/// The index of the snapshot [`sending_snapshot`]'s leader sends.
const SENT_SNAPSHOT: u64 = 21;

/// Member 3's answer to a chunk of the snapshot being sent: it holds
/// `next_offset` bytes.
fn chunk_answer(accepted: bool, next_offset: u64) -> Message {
    answer_about(SENT_SNAPSHOT, accepted, next_offset)
}

/// Member 3's answer to a chunk of snapshot `snapshot_index` (0: a member
/// of an earlier release, which names none).
fn answer_about(snapshot_index: u64, accepted: bool, next_offset: u64) -> Message {
    msg(
        3,
        1,
        1,
        MessageBody::InstallSnapshotResponse {
            accepted,
            next_offset,
            snapshot_index,
        },
    )
}

/// A leader of three whose log (21 entries) is compacted into a snapshot
/// holding `state`, sent in chunks of `chunk` bytes with at most `window`
/// in flight, and what it sent member 3 first once 3 said it matches
/// only up to 5 (so 3 needs the snapshot). Also a heartbeat round started
/// before the chunks left.
fn sending_snapshot(state: &'static [u8], chunk: u64, window: usize) -> (Core, Vec<u64>, u64) {
    let mut config = config(1);
    config.snapshot_catchup_entries = 0;
    config.max_snapshot_chunk_bytes = chunk;
    config.max_inflight_msgs = window;
    let mut leader = leader_of_21(config);
    let early = next_round(&mut leader);
    leader.compact(Bytes::from_static(state)).expect("compact");
    let first = chunk_offsets(&sent_after_ack(&mut leader, 5));
    (leader, first, early)
}

/// The chunks `leader` sends member 3 after it takes `m`.
fn chunks_after(leader: &mut Core, m: Message) -> Vec<u64> {
    leader.step(m);
    chunk_offsets(&sent_to_3(leader))
}

/// A follower back from a pause first answers the heartbeats queued during
/// it, while the snapshot's chunks are still on their way behind them:
/// those answers, to rounds started before the chunks left, must not make
/// the leader send the snapshot again from the start (on a real cluster
/// each such answer restarted a 28 MB send). The answer to a round started
/// after the chunks, with chunks still unacknowledged, proves them lost:
/// the send resumes from the acknowledged offset, and the resend counts
/// as the newest send.
#[test]
fn only_the_answer_to_a_later_heartbeat_resends_unacknowledged_chunks() {
    // "state" in chunks of 2 bytes: 0, 2, 4, all within the window.
    let (mut leader, first, early) = sending_snapshot(b"state", 2, 256);
    assert_eq!(first, [0, 2, 4]);
    for _ in 0..3 {
        assert_eq!(
            chunks_after(&mut leader, heartbeat_answer(early)),
            [0u64; 0]
        );
    }
    // The first chunk is acknowledged; then a round starts (a tick) and is
    // answered while 2 and 4 are still unacknowledged.
    assert_eq!(chunks_after(&mut leader, chunk_answer(true, 2)), [0u64; 0]);
    let later = next_round(&mut leader);
    assert!(later > early);
    assert_eq!(chunks_after(&mut leader, heartbeat_answer(later)), [2, 4]);
    // Those were sent in round `later`: its answer, or an earlier one's,
    // says nothing about them.
    for round in [later, early] {
        assert_eq!(
            chunks_after(&mut leader, heartbeat_answer(round)),
            [0u64; 0]
        );
    }
    // 2 arrives, the last chunk's answer is lost: the next round's answer
    // sends the last chunk again.
    assert_eq!(chunks_after(&mut leader, chunk_answer(true, 4)), [0u64; 0]);
    let next = next_round(&mut leader);
    assert_eq!(chunks_after(&mut leader, heartbeat_answer(next)), [4]);
}

/// A follower that starts over (it restarted mid-transfer) refuses the next
/// chunk, saying it holds nothing: what it acknowledged before no longer
/// counts. With the window's resend lost as well, the answer to a later
/// heartbeat sends it again (before, the old acknowledgement stood, the
/// send looked complete up to it, and nothing was ever resent).
#[test]
fn a_follower_that_starts_over_is_resent_the_snapshot_even_through_losses() {
    // 20 bytes in chunks of 2, two in flight at a time.
    let (mut leader, first, _) = sending_snapshot(b"abcdefghijklmnopqrst", 2, 2);
    assert_eq!(first, [0, 2]);
    let mut acked = 0;
    while acked < 16 {
        acked += 2;
        chunks_after(&mut leader, chunk_answer(true, acked));
    }
    // In flight: 16 and 18. The follower restarted and refuses 16.
    assert_eq!(chunks_after(&mut leader, chunk_answer(false, 0)), [0, 2]);
    // Both are lost; so is any answer. A later round's answer resends.
    let later = next_round(&mut leader);
    assert_eq!(chunks_after(&mut leader, heartbeat_answer(later)), [0, 2]);
}

/// A lost chunk makes the follower refuse every chunk in flight behind it,
/// each refusal naming the same offset: only the first resends the window.
#[test]
fn the_refusals_behind_a_lost_chunk_resend_the_window_once() {
    // 20 bytes in chunks of 2, four in flight at a time: 0 is lost.
    let (mut leader, first, _) = sending_snapshot(b"abcdefghijklmnopqrst", 2, 4);
    assert_eq!(first, [0, 2, 4, 6]);
    assert_eq!(
        chunks_after(&mut leader, chunk_answer(false, 0)),
        [0, 2, 4, 6]
    );
    for _ in 0..2 {
        assert_eq!(chunks_after(&mut leader, chunk_answer(false, 0)), [0u64; 0]);
    }
    // The resend arrives: the window moves on.
    assert_eq!(chunks_after(&mut leader, chunk_answer(true, 2)), [8]);
    // A gap further on is a new refusal, and resends.
    assert_eq!(
        chunks_after(&mut leader, chunk_answer(false, 2)),
        [2, 4, 6, 8]
    );
}

/// A late answer about another snapshot (one sent to this follower before,
/// or the one a newer snapshot replaced mid-send) counts for nothing. When
/// answers named no snapshot, a late acknowledgement of 16 bytes of the
/// old one moved the new send past bytes the follower never received,
/// and a loss then went unrecovered until the leader changed. An answer
/// that names none, from a member of an earlier release, still counts.
#[test]
fn an_answer_about_another_snapshot_moves_nothing() {
    // 20 bytes in chunks of 2, two in flight at a time.
    let (mut leader, first, _) = sending_snapshot(b"abcdefghijklmnopqrst", 2, 2);
    assert_eq!(first, [0, 2]);
    let older = SENT_SNAPSHOT - 6;
    assert_eq!(
        chunks_after(&mut leader, answer_about(older, true, 16)),
        [0u64; 0]
    );
    assert_eq!(
        chunks_after(&mut leader, answer_about(older, false, 0)),
        [0u64; 0]
    );
    // The snapshot's own answers go on from where they were.
    assert_eq!(chunks_after(&mut leader, chunk_answer(true, 2)), [4]);
    assert_eq!(chunks_after(&mut leader, answer_about(0, true, 4)), [6]);
}

/// A follower's answer to a chunk names the snapshot the chunk belongs to.
#[test]
fn a_follower_names_the_snapshot_it_answers_about() {
    let (mut leader, _, _) = sending_snapshot(b"state", 2, 256);
    // Member 3 says it holds nothing: the leader resends from 0.
    leader.step(chunk_answer(false, 0));
    let first = sent_to_3(&mut leader).swap_remove(0);
    assert!(matches!(
        first.body,
        MessageBody::InstallSnapshot { offset: 0, .. }
    ));
    let mut follower = core(3, 3);
    let answers = answers_to(&mut follower, first);
    assert!(
        matches!(
            answers[..],
            [MessageBody::InstallSnapshotResponse {
                accepted: true,
                next_offset: 2,
                snapshot_index: SENT_SNAPSHOT,
            }]
        ),
        "{answers:?}"
    );
}

/// What `follower` sends once it takes `m`.
fn answers_to(follower: &mut Core, m: Message) -> Vec<MessageBody> {
    follower.step(m);
    handle(follower)
        .messages
        .into_iter()
        .map(|m| m.body)
        .collect()
}

/// A late chunk of a snapshot the follower's log already covers (one sent
/// before) is answered as nothing new and leaves the snapshot being
/// received alone; it used to drop it, and the next chunk was refused.
#[test]
fn a_late_chunk_of_an_older_snapshot_leaves_the_transfer_alone() {
    let (mut leader, _, _) = sending_snapshot(b"state", 2, 256);
    leader.step(chunk_answer(false, 0));
    let chunks = sent_to_3(&mut leader);
    let mut follower = core(3, 3);
    answers_to(&mut follower, chunks[0].clone());
    // Its log covers index 0: a snapshot at 0 is an older one.
    let mut late = chunks[0].clone();
    if let MessageBody::InstallSnapshot { meta, .. } = &mut late.body {
        meta.index = 0;
    }
    let answers = answers_to(&mut follower, late);
    assert!(
        matches!(
            answers[..],
            [MessageBody::AppendEntriesResponse { reject: false, .. }]
        ),
        "{answers:?}"
    );
    let answers = answers_to(&mut follower, chunks[1].clone());
    assert!(
        matches!(
            answers[..],
            [MessageBody::InstallSnapshotResponse {
                accepted: true,
                next_offset: 4,
                snapshot_index: SENT_SNAPSHOT,
            }]
        ),
        "{answers:?}"
    );
}

/// Proposes and applies commands of `data_bytes` bytes one at a time until
/// a snapshot is due, at most `most`; returns how many it took.
fn commands_until_due(leader: &mut Core, data_bytes: usize, most: u64) -> u64 {
    for n in 1..=most {
        leader
            .propose(Bytes::from(vec![b'v'; data_bytes]))
            .expect("leader");
        handle(leader);
        let status = leader.status();
        let last = status.last_index;
        leader.step(append_ack(2, 1, status.hard_state.term.0, last));
        while leader.has_ready() {
            handle(leader);
        }
        assert_eq!(leader.status().applied, last);
        if leader.snapshot_due() {
            return n;
        }
    }
    panic!("no snapshot due after {most} commands");
}

/// The bytes a command of `data_bytes` counts for in the log.
fn entry_bytes(data_bytes: usize) -> u64 {
    flotilla_raft::Entry::OVERHEAD_BYTES + data_bytes as u64
}

/// With `snapshot_min_log_percent` at its default (100), the entry count
/// makes a snapshot due only once the log applied since the last snapshot
/// is as large as that snapshot: a large state written in small pieces is
/// not written out whole every `snapshot_after_entries` entries.
#[test]
fn the_entry_count_waits_for_the_log_to_reach_the_last_snapshots_size() {
    let mut leader = leader_of_21(config(1));
    let state_bytes = 40 * entry_bytes(100) + 1;
    leader
        .compact(Bytes::from(vec![b's'; state_bytes as usize]))
        .expect("compact");
    let n = commands_until_due(&mut leader, 100, 1000);
    assert_eq!(n, 41, "{SNAPSHOT_EVERY} entries, then {state_bytes} bytes");

    // A snapshot smaller than the entries' bytes: the count decides.
    leader
        .compact(Bytes::from(vec![b's'; 100]))
        .expect("compact");
    assert_eq!(commands_until_due(&mut leader, 100, 1000), SNAPSHOT_EVERY);

    // A snapshot written off the core weighs the same way.
    let mut leader = leader_with_writer(0);
    let snapshot = flotilla_raft::Snapshot {
        data: Bytes::from(vec![b's'; state_bytes as usize]),
        ..leader.prepare_snapshot(Bytes::new()).expect("prepare")
    };
    let writer = leader.storage().snapshot_writer().expect("a writer");
    write_snapshot(writer, &snapshot);
    leader
        .compact_written(&snapshot.meta, state_bytes)
        .expect("compacted");
    assert_eq!(commands_until_due(&mut leader, 100, 1000), 41);
}

/// At 0 the count alone decides, and at any percentage
/// `snapshot_after_bytes` makes a snapshot due: it bounds the log kept
/// since the last snapshot.
#[test]
fn without_a_percentage_the_count_decides_and_the_byte_bound_always_holds() {
    let mut count_alone = config(1);
    count_alone.snapshot_min_log_percent = 0;
    let mut leader = leader_of_21(count_alone);
    leader
        .compact(Bytes::from(vec![b's'; 1 << 20]))
        .expect("compact");
    assert_eq!(commands_until_due(&mut leader, 100, 1000), SNAPSHOT_EVERY);

    let mut bounded = config(1);
    bounded.snapshot_min_log_percent = 10_000;
    bounded.snapshot_after_bytes = 25 * entry_bytes(100);
    let mut leader = leader_of_21(bounded);
    leader
        .compact(Bytes::from(vec![b's'; 1 << 20]))
        .expect("compact");
    assert_eq!(commands_until_due(&mut leader, 100, 1000), 25);
}

/// A member restarted from a snapshot weighs its log against that
/// snapshot's size when told it (`restored_snapshot_bytes`, as the node
/// does from its snapshot file); told nothing, the count alone decides
/// until its first snapshot.
#[test]
fn a_restarted_member_weighs_its_log_against_the_snapshot_it_restored() {
    let state_bytes = 40 * entry_bytes(100) + 1;
    let restart = |told: bool| {
        let mut leader = leader_of_21(config(1));
        leader
            .compact(Bytes::from(vec![b's'; state_bytes as usize]))
            .expect("compact");
        let storage = leader.into_storage();
        let mut config = config(1);
        config.snapshot_after_entries = SNAPSHOT_EVERY;
        config.applied = storage.snapshot_index();
        if told {
            config.restored_snapshot_bytes = state_bytes;
        }
        let mut restarted = core_with(config, storage);
        elect(&mut restarted);
        while restarted.has_ready() {
            handle(&mut restarted);
        }
        restarted
    };
    // The new term's no-op counts as an entry, and its bytes too: 40
    // commands and it pass the 40 commands' bytes plus one.
    let noop = 1;
    let mut told = restart(true);
    let n = commands_until_due(&mut told, 100, 1000);
    assert_eq!(n, 41 - noop, "the restored snapshot's {state_bytes} bytes");
    let mut untold = restart(false);
    let n = commands_until_due(&mut untold, 100, 1000);
    assert_eq!(n, SNAPSHOT_EVERY - noop, "the count alone");
}

/// A follower that installed a leader's snapshot weighs its log against
/// that snapshot's size.
#[test]
fn an_installed_snapshot_is_what_a_follower_weighs_its_log_against() {
    let state: &'static [u8] = &[b's'; 1000];
    let (mut leader, _, _) = sending_snapshot(state, 1024, 256);
    leader.step(chunk_answer(false, 0));
    let chunks = sent_to_3(&mut leader);
    assert_eq!(chunks.len(), 1, "{chunks:?}");
    let mut follower_config = config(3);
    follower_config.snapshot_after_entries = SNAPSHOT_EVERY;
    let mut follower = core_with(follower_config, MemStorage::new_with_voters(&voters(3)));
    follower.step(chunks[0].clone());
    assert!(handle(&mut follower).snapshot.is_some(), "installed");
    assert_eq!(follower.status().applied, SENT_SNAPSHOT);
    assert!(!follower.snapshot_due());
    // The entries after it, as the leader would send them: `SNAPSHOT_EVERY`
    // entries are not enough, their bytes must reach 1,000.
    let term = flotilla_raft::Term(1);
    let mut next = SENT_SNAPSHOT + 1;
    let mut applied_bytes = 0;
    while !follower.snapshot_due() {
        assert!(applied_bytes < 1000, "due only at 1000 bytes");
        let entry = flotilla_raft::Entry {
            index: next,
            term,
            kind: flotilla_raft::EntryKind::Normal,
            data: Bytes::from(vec![b'v'; 50]),
        };
        applied_bytes += entry.size_bytes();
        follower.step(msg(
            1,
            3,
            1,
            MessageBody::AppendEntries {
                prev_log_index: next - 1,
                prev_log_term: term,
                entries: vec![entry],
                leader_commit: next,
                quiet: false,
            },
        ));
        while follower.has_ready() {
            handle(&mut follower);
        }
        assert_eq!(follower.status().applied, next);
        next += 1;
    }
    assert!(next - SENT_SNAPSHOT > SNAPSHOT_EVERY);
    assert!(applied_bytes >= 1000);
}
