//! Log replication and commitment as the core emits them: consistency check,
//! fast backtracking, suffix truncation, the Figure 8 commit rule and flow
//! control.

mod common;

use common::*;
use flotilla_raft::{Bytes, Entry, HardState, Message, MessageBody, NodeId, Ready, Storage, Term};

/// `follower`'s refusal of the leader's append after `index`, with its
/// backtracking hint (index, term).
fn append_reject(follower: u64, leader: u64, term: u64, index: u64, hint: (u64, u64)) -> Message {
    msg(
        follower,
        leader,
        term,
        MessageBody::AppendEntriesResponse {
            reject: true,
            index,
            hint_index: hint.0,
            hint_term: Term(hint.1),
        },
    )
}

/// The AppendEntries of `ready` to `to`, each as `shape` makes it of its
/// prev_log_index, entries, leader_commit and quiet flag.
fn appends_as<T>(ready: &Ready, to: u64, shape: impl Fn(u64, &[Entry], u64, bool) -> T) -> Vec<T> {
    sent_to(ready, to)
        .into_iter()
        .filter_map(|m| match &m.body {
            MessageBody::AppendEntries {
                prev_log_index,
                entries,
                leader_commit,
                quiet,
                ..
            } => Some(shape(*prev_log_index, entries, *leader_commit, *quiet)),
            _ => None,
        })
        .collect()
}

/// The AppendEntries of `ready` to `to`, as (prev_log_index, entries).
fn appends_to(ready: &Ready, to: u64) -> Vec<(u64, Vec<Entry>)> {
    appends_as(ready, to, |prev, entries, _, _| (prev, entries.to_vec()))
}

/// The AppendEntries of `ready` to `to`, as (prev_log_index, entries
/// carried, leader_commit, quiet).
fn append_shapes(ready: &Ready, to: u64) -> Vec<(u64, usize, u64, bool)> {
    appends_as(ready, to, |prev, entries, commit, quiet| {
        (prev, entries.len(), commit, quiet)
    })
}

/// Raft §5.3 (consistency check, and the optimisation at the end of §5.3 as
/// done in thesis §5.3 / etcd-raft): a follower whose entry at
/// `prev_log_index` has another term rejects the append with a hint; the
/// leader uses it to skip every entry of the conflicting term in one round
/// trip; the follower then truncates its conflicting suffix and takes the
/// leader's entries from the first conflict on.
#[test]
fn rejection_hint_lets_the_leader_skip_a_whole_conflicting_term() {
    // Leader: 1..=2 of term 1, 3..=5 of term 3; it is elected in term 4.
    let mut leader = core_with(config(1), storage_with_log(3, &[1, 1, 3, 3, 3], 3));
    // Follower: 1..=2 of term 1, then 3..=8 of term 2, never committed.
    let mut follower = core_with(config(2), storage_with_log(3, &[1, 1, 2, 2, 2, 2, 2, 2], 2));

    let ready = elect(&mut leader);
    let term = 4;
    assert_eq!(ready.entries[0].index, 6, "no-op after the leader's log");
    let first: Vec<Message> = sent_to(&ready, 2).into_iter().cloned().collect();
    assert_eq!(appends_to(&ready, 2)[0].0, 5, "first probe after index 5");

    // The follower's entry 5 is of term 2, not 3: rejected, and the hint
    // points at the last entry of a term not above 3 at or before 5.
    for m in first {
        follower.step(m);
    }
    let ready = handle(&mut follower);
    assert_eq!(ready.messages, [append_reject(2, 1, term, 5, (5, 2))]);
    assert!(ready.entries.is_empty(), "nothing appended on a mismatch");

    // The leader has no entry of term 2: it goes back past all of them, to
    // index 2 (term 1), in one step instead of one entry at a time.
    for m in ready.messages {
        leader.step(m);
    }
    let ready = handle(&mut leader);
    let appends = appends_to(&ready, 2);
    assert_eq!(appends.len(), 1, "one probe at a time");
    let (prev, entries) = &appends[0];
    assert_eq!(*prev, 2, "skipped from 5 back to 2 in one round trip");
    assert_eq!(
        entries
            .iter()
            .map(|e| (e.index, e.term.0))
            .collect::<Vec<_>>(),
        [(3, 3), (4, 3), (5, 3), (6, 4)]
    );

    // The follower replaces its suffix from the first conflict, index 3.
    for m in ready.messages.into_iter().filter(|m| m.to == NodeId(2)) {
        follower.step(m);
    }
    let ready = handle(&mut follower);
    assert_eq!(ready.entries.first().map(|e| e.index), Some(3));
    assert_eq!(
        ready.messages,
        [append_ack(2, 1, term, 6)],
        "acknowledges the leader's last entry"
    );
    let saved: Vec<(u64, u64)> = follower
        .storage()
        .all_entries()
        .iter()
        .map(|e| (e.index, e.term.0))
        .collect();
    assert_eq!(saved, [(1, 1), (2, 1), (3, 3), (4, 3), (5, 3), (6, 4)]);
}

/// Raft §5.3, Figure 2 receiver rules 3 and 4: entries the follower already
/// holds are not rewritten; at the first conflicting entry the follower's
/// suffix is deleted and replaced, so the `Ready`'s entries start there.
#[test]
fn follower_truncates_a_conflicting_suffix_from_the_first_conflict() {
    let mut follower = core_with(config(2), storage_with_log(3, &[1, 1, 1, 2, 2], 2));
    follower.step(msg(
        1,
        2,
        3,
        MessageBody::AppendEntries {
            prev_log_index: 0,
            prev_log_term: Term(0),
            entries: vec![entry(1, 1), entry(2, 1), entry(3, 1), entry(4, 3)],
            leader_commit: 0,
            quiet: false,
        },
    ));
    let ready = handle(&mut follower);

    assert_eq!(ready.entries, [entry(4, 3)]);
    assert_eq!(ready.messages, [append_ack(2, 1, 3, 4)]);
    let saved: Vec<(u64, u64)> = follower
        .storage()
        .all_entries()
        .iter()
        .map(|e| (e.index, e.term.0))
        .collect();
    assert_eq!(saved, [(1, 1), (2, 1), (3, 1), (4, 3)], "entry 5 is gone");
}

/// Raft §5.3: a follower with a shorter log than `prev_log_index` rejects,
/// and its hint is its own last index, so the leader retries right there.
#[test]
fn follower_with_a_short_log_hints_its_last_index() {
    let mut follower = core_with(config(2), storage_with_log(3, &[1, 1], 1));
    follower.step(msg(
        1,
        2,
        2,
        MessageBody::AppendEntries {
            prev_log_index: 6,
            prev_log_term: Term(2),
            entries: vec![entry(7, 2)],
            leader_commit: 5,
            quiet: false,
        },
    ));
    let ready = handle(&mut follower);
    assert_eq!(ready.messages, [append_reject(2, 1, 2, 6, (2, 1))]);
    assert_eq!(
        ready.hard_state.map(|hs| hs.commit),
        Some(0),
        "commit untouched"
    );
}

/// Raft §5.4.2 and Figure 8: a leader never commits an entry of an earlier
/// term by counting replicas, even when a majority holds it; it commits it
/// only indirectly, once an entry of its own term is on a majority.
#[test]
fn leader_commits_an_older_term_entry_only_through_one_of_its_own() {
    // Entries 1..=2 of term 1, uncommitted; the leader is elected in term 3
    // and appends its no-op at index 3.
    let mut leader = core_with(config(1), storage_with_log(3, &[1, 1], 2));
    let ready = elect(&mut leader);
    assert_eq!(
        (ready.entries[0].index, ready.entries[0].term),
        (3, Term(3))
    );

    // Follower 2 matches up to index 2: with the leader that is a majority,
    // but entry 2 is of term 1.
    leader.step(append_ack(2, 1, 3, 2));
    let ready = handle(&mut leader);
    assert!(
        ready.hard_state.is_none_or(|hs| hs.commit == 0),
        "committed an older-term entry by counting: {:?}",
        ready.hard_state
    );
    assert!(ready.committed_entries.is_empty());

    // Once the no-op (term 3) is on a majority, everything up to it commits.
    leader.step(append_ack(2, 1, 3, 3));
    let ready = handle(&mut leader);
    assert_eq!(
        ready.hard_state,
        Some(HardState {
            term: Term(3),
            vote: NodeId(1),
            commit: 3
        })
    );
    assert_eq!(
        ready
            .committed_entries
            .iter()
            .map(|e| e.index)
            .collect::<Vec<_>>(),
        [1, 2, 3]
    );
    // The new commit index goes out at once to the follower in Replicate
    // state (follower 3 still has its probe outstanding).
    assert!(
        sent_to(&ready, 2).iter().any(|m| matches!(
            m.body,
            MessageBody::AppendEntries {
                leader_commit: 3,
                ..
            }
        )),
        "commit index not sent to 2: {:?}",
        ready.messages
    );
}

/// A new commit index goes to a follower as a quiet append (no answer
/// wanted) when it has acknowledged everything before it, or when its
/// acknowledgement of those entries is on its way: that answer says all
/// the follower would. When its heartbeat answer shows the follower behind
/// (its acknowledgements were lost), the append that follows wants an
/// answer.
#[test]
fn a_commit_index_alone_goes_quietly_where_an_answer_came_or_is_owed() {
    let mut leader = core(1, 3);
    let ready = elect(&mut leader);
    let term = ready.entries[0].term.0;
    // Both followers take the no-op (index 1) and move to Replicate.
    leader.step(append_ack(2, 1, term, 1));
    leader.step(append_ack(3, 1, term, 1));
    handle(&mut leader);

    leader.propose(Bytes::from_static(b"x")).expect("leader");
    let ready = handle(&mut leader);
    assert_eq!(append_shapes(&ready, 2), [(1, 1, 1, false)]);
    assert_eq!(append_shapes(&ready, 3), [(1, 1, 1, false)]);

    // Follower 2's acknowledgement commits index 2; follower 3 owes one.
    leader.step(append_ack(2, 1, term, 2));
    let ready = handle(&mut leader);
    assert_eq!(ready.hard_state.map(|hs| hs.commit), Some(2));
    assert_eq!(append_shapes(&ready, 2), [(2, 0, 2, true)]);
    assert_eq!(append_shapes(&ready, 3), [(2, 0, 2, true)]);

    // Follower 3's acknowledgements were lost: its heartbeat answer shows
    // it behind, and the append that follows wants an answer.
    for _ in 0..HEARTBEAT_TICKS {
        leader.tick();
    }
    let ready = handle(&mut leader);
    let round = heartbeat_rounds(&ready, 3)[0];
    leader.step(msg(3, 1, term, MessageBody::HeartbeatResponse { round }));
    let ready = handle(&mut leader);
    assert_eq!(append_shapes(&ready, 3), [(2, 0, 2, false)]);

    // A leadership transferee's answer is wanted even while one is owed:
    // it may be the one that brings the TimeoutNow.
    leader.step(append_ack(3, 1, term, 2));
    leader.propose(Bytes::from_static(b"y")).expect("leader");
    handle(&mut leader);
    leader.step(append_ack(2, 1, term, 3));
    let ready = handle(&mut leader);
    assert_eq!(append_shapes(&ready, 3), [(3, 0, 3, true)]);
    leader.transfer_leader(NodeId(3)).expect("a voter");
    let ready = handle(&mut leader);
    assert_eq!(append_shapes(&ready, 2), [(3, 0, 3, true)]);
    assert_eq!(append_shapes(&ready, 3), [(3, 0, 3, false)]);
    leader.step(append_ack(3, 1, term, 3));
    let ready = handle(&mut leader);
    assert_eq!(kinds(sent_to(&ready, 3)), ["TimeoutNow"]);
}

/// A follower takes the commit index of a quiet append whose log matches
/// without answering, and answers one that does not match.
#[test]
fn a_follower_answers_a_quiet_append_only_on_a_mismatch() {
    let mut follower = core_with(config(2), storage_with_log(3, &[1, 1, 1], 1));
    let quiet_append = |prev_log_index, leader_commit| {
        msg(
            1,
            2,
            1,
            MessageBody::AppendEntries {
                prev_log_index,
                prev_log_term: Term(1),
                entries: Vec::new(),
                leader_commit,
                quiet: true,
            },
        )
    };
    follower.step(quiet_append(3, 2));
    let ready = handle(&mut follower);
    assert_eq!(ready.hard_state.map(|hs| hs.commit), Some(2));
    assert!(ready.messages.is_empty(), "{:?}", ready.messages);

    // At or below its commit index: nothing to take, nothing to say.
    follower.step(quiet_append(1, 2));
    assert!(handle(&mut follower).messages.is_empty());
    // An append with entries is answered, quiet or not (no leader sends
    // one so), even when they are all committed here already.
    follower.step(msg(
        1,
        2,
        1,
        MessageBody::AppendEntries {
            prev_log_index: 0,
            prev_log_term: Term(0),
            entries: vec![entry(1, 1), entry(2, 1)],
            leader_commit: 2,
            quiet: true,
        },
    ));
    assert_eq!(handle(&mut follower).messages, [append_ack(2, 1, 1, 2)]);

    follower.step(quiet_append(5, 5));
    let ready = handle(&mut follower);
    assert_eq!(ready.messages, [append_reject(2, 1, 1, 5, (3, 1))]);
    assert!(ready.hard_state.is_none_or(|hs| hs.commit == 2));
}

/// Raft §5.3 with the pipelining of thesis §10.2.1 (as in etcd-raft's
/// progress tracking): in Replicate state a leader keeps at most
/// `max_inflight_msgs` AppendEntries unacknowledged per follower, each within
/// `max_msg_bytes`; an acknowledgement frees room for one more. In Probe
/// state it sends one append and waits.
#[test]
fn flow_control_bounds_appends_in_flight_and_their_size() {
    const ENTRY_BYTES: u64 = 32; // 24 bytes overhead + 8 of data
    let mut config = config(1);
    config.max_inflight_msgs = 2;
    config.max_msg_bytes = 2 * ENTRY_BYTES;
    let mut leader = core_with(
        config,
        flotilla_raft::MemStorage::new_with_voters(&voters(3)),
    );
    elect(&mut leader);
    // Follower 2 acknowledges the no-op and moves to Replicate; follower 3
    // never answers and stays in Probe with its first append outstanding.
    leader.step(append_ack(2, 1, 1, 1));
    handle(&mut leader);

    let data = |i: u64| Bytes::from(format!("cmd-{i:04}"));
    assert_eq!(data(0).len() as u64 + Entry::OVERHEAD_BYTES, ENTRY_BYTES);
    for i in 0..10 {
        leader.propose(data(i)).expect("leader accepts");
    }
    let ready = handle(&mut leader);
    assert_eq!(ready.entries.len(), 10);

    let to_2 = appends_to(&ready, 2);
    assert_eq!(to_2.len(), 2, "window of two messages");
    for (_, entries) in &to_2 {
        let bytes: u64 = entries.iter().map(Entry::size_bytes).sum();
        assert!(!entries.is_empty());
        assert!(bytes <= 2 * ENTRY_BYTES, "{bytes} bytes in one append");
    }
    assert_eq!(to_2[0].0, 1);
    assert_eq!(to_2[1].0, 3, "pipelined: the second follows the first");
    assert!(appends_to(&ready, 3).is_empty(), "probe outstanding to 3");

    // Acknowledging the first message frees one slot: one more message.
    leader.step(append_ack(2, 1, 1, 3));
    let ready = handle(&mut leader);
    let to_2 = appends_to(&ready, 2);
    assert_eq!(to_2.len(), 1);
    assert_eq!(to_2[0].0, 5);

    // A heartbeat answer from 3 releases its probe: exactly one append, from
    // where the probe left off, however much is waiting.
    let heartbeat = tick_n(&mut leader, HEARTBEAT_TICKS).pop().expect("ticked");
    let round = heartbeat_rounds(&heartbeat, 3)[0];
    leader.step(msg(3, 1, 1, MessageBody::HeartbeatResponse { round }));
    let ready = handle(&mut leader);
    let to_3 = appends_to(&ready, 3);
    assert_eq!(to_3.len(), 1, "probe state: one at a time");
    assert_eq!(to_3[0].0, 0);
}

/// An entry larger than `max_msg_bytes` still goes, alone in its message
/// (otherwise it could never be replicated).
#[test]
fn an_oversized_entry_travels_alone() {
    let mut config = config(1);
    config.max_msg_bytes = 40;
    let mut leader = core_with(
        config,
        flotilla_raft::MemStorage::new_with_voters(&voters(3)),
    );
    elect(&mut leader);
    leader.step(append_ack(2, 1, 1, 1));
    handle(&mut leader);

    leader
        .propose_batch([Bytes::from(vec![7u8; 100]), Bytes::from_static(b"small")])
        .expect("leader accepts");
    let ready = handle(&mut leader);
    let to_2 = appends_to(&ready, 2);
    assert_eq!(
        to_2.iter().map(|(_, e)| e.len()).collect::<Vec<_>>(),
        [1, 1]
    );
    assert_eq!(to_2[0].1[0].data.len(), 100);
}

/// Raft §5.3 end to end: a leader brings an empty follower up to date and
/// both commit; the follower learns the commit index from the leader.
#[test]
fn leader_replicates_and_followers_learn_the_commit_index() {
    let mut net = Net::new(3);
    net.elect(1);
    net.core(1)
        .propose(Bytes::from_static(b"x=1"))
        .expect("leader");
    let readies = net.deliver(Vec::new());
    for n in [1, 2, 3] {
        let applied: Vec<Bytes> = readies
            .iter()
            .filter(|(id, _)| *id == NodeId(n))
            .flat_map(|(_, r)| r.committed_entries.iter().map(|e| e.data.clone()))
            .collect();
        assert_eq!(applied, [Bytes::from_static(b"x=1")], "member {n}");
        assert_eq!(net.core(n).storage().hard_state().commit, 2);
    }
}

/// Raft thesis §10.2.1: a leader may send new entries before it has made
/// them durable (`Ready::messages_first`), because it counts its own entries
/// toward commitment only after `advance`. Nobody else may: a candidate's
/// vote request or a follower's acknowledgement promises what is on disk.
#[test]
fn leader_sends_before_persisting_and_counts_itself_only_after() {
    let mut net = Net::new(3);
    net.elect(1);
    let own_match = |core: &mut Core| {
        core.status()
            .match_indexes
            .iter()
            .find(|(id, _)| *id == NodeId(1))
            .map(|(_, m)| *m)
            .expect("leader tracks itself")
    };
    let before = net.core(1).status().hard_state.commit;
    assert_eq!(own_match(net.core(1)), before);

    let (index, _) = net
        .core(1)
        .propose(Bytes::from_static(b"x"))
        .expect("leader");
    assert_eq!(own_match(net.core(1)), before, "appended but not durable");
    let ready = net.core(1).ready().expect("memory storage");
    assert!(ready.messages_first);
    assert_eq!(ready.entries.last().map(|e| e.index), Some(index));
    assert!(
        appends_to(&ready, 2)
            .iter()
            .any(|(_, es)| es.iter().any(|e| e.index == index)),
        "the entry goes out in the same Ready that persists it"
    );
    assert_eq!(own_match(net.core(1)), before, "still not durable");
    net.core(1)
        .storage_mut()
        .save(ready.hard_state.as_ref(), &ready.entries)
        .expect("memory storage");
    net.core(1).advance();
    assert_eq!(own_match(net.core(1)), index, "durable after advance");
    assert_eq!(
        net.core(1).status().hard_state.commit,
        before,
        "one durable copy of three is no quorum"
    );

    // The followers store it; their acknowledgements wait for their disks.
    let mut follower_readies = Vec::new();
    for m in ready.messages {
        let to = m.to.0;
        net.core(to).step(m);
        follower_readies.push(handle(net.core(to)));
    }
    assert!(follower_readies.iter().all(|r| !r.messages_first));
    let term = net.core(1).state().0.0;
    net.core(1).step(append_ack(2, 1, term, index));
    assert_eq!(net.core(1).status().hard_state.commit, index);
}

/// A candidate's vote requests must not leave before its vote for itself is
/// durable.
#[test]
fn a_candidate_persists_before_asking_for_votes() {
    let mut candidate = core(1, 3);
    for _ in 0..(2 * ELECTION_TICKS) {
        candidate.tick();
        if candidate.has_ready() {
            break;
        }
    }
    let ready = candidate.ready().expect("memory storage");
    assert!(!ready.messages.is_empty(), "asks for (pre-)votes");
    assert!(!ready.messages_first);
}

/// Raft §5.3: an entry is past the commit index from its append until a
/// quorum holds it; the count drops as the acknowledgement is stepped,
/// before a `Ready` hands the entry out.
#[test]
fn entries_past_commit_drop_when_a_quorum_acknowledges() {
    let mut leader = core(1, 3);
    elect(&mut leader);
    let noop = leader.status().last_index;
    leader.step(append_ack(2, 1, 1, noop));
    handle(&mut leader);
    assert_eq!(leader.entries_past_commit(), 0, "the no-op committed");

    leader.propose(Bytes::from_static(b"a")).expect("leader");
    leader.propose(Bytes::from_static(b"b")).expect("leader");
    assert_eq!(leader.entries_past_commit(), 2, "appended, not committed");
    handle(&mut leader);
    assert_eq!(leader.entries_past_commit(), 2, "durable here alone");

    leader.step(append_ack(2, 1, 1, noop + 1));
    assert_eq!(leader.entries_past_commit(), 1, "a quorum holds the first");
    leader.step(append_ack(3, 1, 1, noop + 2));
    assert_eq!(leader.entries_past_commit(), 0, "and the second");
}
