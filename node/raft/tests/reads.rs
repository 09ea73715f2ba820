//! Linearizable reads without log writes (thesis §6.4): ReadIndex through
//! heartbeat rounds, forwarded reads, and leader leases.

mod common;

use common::*;
use flotilla_raft::{Bytes, Config, MemStorage, MessageBody, NodeId, ReadMode, ReadState};

fn leader_with(tweak: impl FnOnce(&mut Config)) -> Core {
    let mut config = config(1);
    tweak(&mut config);
    let mut leader = core_with(config, MemStorage::new_with_voters(&voters(3)));
    elect(&mut leader);
    leader
}

fn read(index: u64, ctx: &'static [u8]) -> ReadState {
    ReadState {
        index,
        ctx: Bytes::from_static(ctx),
    }
}

/// Thesis §6.4 steps 1–3: a new leader does not know the commit index until
/// it committed an entry of its term, so a read waits for the no-op; then the
/// leader records its commit index and sends a fresh heartbeat round, and
/// answers once a quorum acknowledged that round — an answer to an earlier
/// round does not count.
#[test]
fn read_index_waits_for_the_noop_then_for_a_quorum_of_its_round() {
    let mut leader = leader_with(|_| {});
    leader
        .read_index(Bytes::from_static(b"early"))
        .expect("queued");
    let ready = handle(&mut leader);
    assert!(ready.read_states.is_empty());
    assert!(
        !kinds(&ready.messages).contains(&"Heartbeat"),
        "no confirmation round before the no-op commits"
    );

    // The no-op commits; the waiting read now gets its round.
    leader.step(append_ack(2, 1, 1, 1));
    let ready = handle(&mut leader);
    assert_eq!(ready.hard_state.map(|hs| hs.commit), Some(1));
    assert!(ready.read_states.is_empty());
    let early_round = heartbeat_rounds(&ready, 3)[0];
    leader.step(msg(
        3,
        1,
        1,
        MessageBody::HeartbeatResponse { round: early_round },
    ));
    let ready = handle(&mut leader);
    assert_eq!(ready.read_states, [read(1, b"early")]);

    // A later read needs a round sent after it arrived.
    let stale_round = heartbeat_rounds(&tick_n(&mut leader, HEARTBEAT_TICKS).pop().unwrap(), 2)[0];
    leader
        .read_index(Bytes::from_static(b"late"))
        .expect("queued");
    let ready = handle(&mut leader);
    let round = heartbeat_rounds(&ready, 2)[0];
    assert!(round > stale_round);
    assert_eq!(heartbeat_rounds(&ready, 3), [round], "broadcast to all");

    leader.step(msg(
        2,
        1,
        1,
        MessageBody::HeartbeatResponse { round: stale_round },
    ));
    assert!(handle(&mut leader).read_states.is_empty(), "earlier round");
    leader.step(msg(2, 1, 1, MessageBody::HeartbeatResponse { round }));
    assert_eq!(handle(&mut leader).read_states, [read(1, b"late")]);
}

/// Thesis §6.4 ("followers ... can also offload reads"): a follower forwards
/// the reads it gathered since its last `Ready` to its leader as one
/// `ReadIndex`; the leader confirms it like its own reads and answers once
/// with the index, and the follower hands out one `ReadState` per read, with
/// its caller's context, in the order they were asked.
#[test]
fn follower_reads_go_to_the_leader_together_and_come_back_apart() {
    let mut net = Net::new(3);
    net.elect(1);

    for ctx in [&b"f1"[..], b"f2", b"f3"] {
        net.core(2)
            .read_index(Bytes::from_static(ctx))
            .expect("leader known");
    }
    let ready = handle(net.core(2));
    assert_eq!(kinds(&ready.messages), ["ReadIndex"], "one for the three");
    assert_eq!(ready.messages[0].to, NodeId(1));
    let readies = net.deliver(ready.messages);
    let answers: Vec<_> = readies
        .iter()
        .flat_map(|(_, r)| r.messages.iter())
        .filter(|m| m.kind() == "ReadIndexResponse")
        .collect();
    assert_eq!(answers.len(), 1, "one answer for the batch");
    assert!(matches!(
        answers[0].body,
        MessageBody::ReadIndexResponse { index: 1, .. }
    ));
    let served: Vec<_> = readies
        .iter()
        .filter(|(id, _)| *id == NodeId(2))
        .flat_map(|(_, r)| r.read_states.clone())
        .collect();
    assert_eq!(served, [read(1, b"f1"), read(1, b"f2"), read(1, b"f3")]);

    // A read asked after the batch left needs a batch of its own: the
    // answer to the first says nothing about the leader after it was sent.
    net.core(2)
        .read_index(Bytes::from_static(b"g"))
        .expect("leader known");
    let ready = handle(net.core(2));
    assert_eq!(kinds(&ready.messages), ["ReadIndex"]);
    let served: Vec<_> = net
        .deliver(ready.messages)
        .iter()
        .filter(|(id, _)| *id == NodeId(2))
        .flat_map(|(_, r)| r.read_states.clone())
        .collect();
    assert_eq!(served, [read(1, b"g")]);
}

/// An answer to no batch the follower waits on (an earlier life's, or a
/// duplicate) serves nothing.
#[test]
fn a_stray_read_answer_serves_nothing() {
    let mut net = Net::new(3);
    net.elect(1);
    net.core(2)
        .read_index(Bytes::from_static(b"f"))
        .expect("leader known");
    let ready = handle(net.core(2));
    let MessageBody::ReadIndex { ctx } = ready.messages[0].body.clone() else {
        panic!("a ReadIndex: {:?}", ready.messages);
    };
    let answer = |ctx: Bytes| msg(1, 2, 1, MessageBody::ReadIndexResponse { index: 1, ctx });
    net.core(2).step(answer(Bytes::from_static(b"other")));
    net.core(2)
        .step(answer(Bytes::copy_from_slice(&u64::MAX.to_le_bytes())));
    assert!(handle(net.core(2)).read_states.is_empty());
    net.core(2).step(answer(ctx.clone()));
    assert_eq!(handle(net.core(2)).read_states, [read(1, b"f")]);
    net.core(2).step(answer(ctx));
    assert!(handle(net.core(2)).read_states.is_empty(), "answered once");
}

/// Thesis §6.4.1 (leases): with lease-based reads, once a quorum acknowledged
/// a heartbeat round the leader answers reads at once, with no round trip,
/// for `lease_ticks` after that round was sent; after that, without newer
/// acknowledgements, a read goes through a round again.
#[test]
fn lease_read_is_answered_at_once_only_while_the_lease_holds() {
    let mut leader = leader_with(|c| c.read_mode = ReadMode::LeaseBased);
    let lease_ticks = leader.config().lease_ticks() as u32;
    assert!(lease_ticks > 0 && lease_ticks < ELECTION_TICKS);
    leader.step(append_ack(2, 1, 1, 1)); // the no-op commits
    handle(&mut leader);

    // No lease yet: the first read pays for a round; its acknowledgement
    // starts the lease, counted from when the round was sent.
    leader
        .read_index(Bytes::from_static(b"r0"))
        .expect("queued");
    let round = heartbeat_rounds(&handle(&mut leader), 2)[0];
    leader.step(msg(2, 1, 1, MessageBody::HeartbeatResponse { round }));
    assert_eq!(handle(&mut leader).read_states, [read(1, b"r0")]);

    // Inside the lease (heartbeats go out on their own but are not answered).
    tick_n(&mut leader, lease_ticks - 1);
    leader
        .read_index(Bytes::from_static(b"r1"))
        .expect("served");
    let ready = handle(&mut leader);
    assert_eq!(ready.read_states, [read(1, b"r1")]);
    assert!(
        !kinds(&ready.messages).contains(&"Heartbeat"),
        "no round trip"
    );

    // The lease has run out: the read waits for a quorum again.
    tick_n(&mut leader, 1);
    leader
        .read_index(Bytes::from_static(b"r2"))
        .expect("queued");
    let ready = handle(&mut leader);
    assert!(ready.read_states.is_empty(), "served on an expired lease");
    let round = heartbeat_rounds(&ready, 2)[0];
    leader.step(msg(2, 1, 1, MessageBody::HeartbeatResponse { round }));
    assert_eq!(handle(&mut leader).read_states, [read(1, b"r2")]);
}

/// Thesis §6.4: with the default (safe) read mode the leader never answers
/// from a lease, however recently a quorum answered.
#[test]
fn safe_reads_always_wait_for_a_round() {
    let mut leader = leader_with(|_| {});
    leader.step(append_ack(2, 1, 1, 1));
    handle(&mut leader);
    let beat = tick_n(&mut leader, HEARTBEAT_TICKS).pop().unwrap();
    let round = heartbeat_rounds(&beat, 2)[0];
    leader.step(msg(2, 1, 1, MessageBody::HeartbeatResponse { round }));
    handle(&mut leader);

    leader.read_index(Bytes::from_static(b"s")).expect("queued");
    let ready = handle(&mut leader);
    assert!(ready.read_states.is_empty());
    assert!(kinds(&ready.messages).contains(&"Heartbeat"));
}

/// A lease is real time, not timer events: ticks the driver could not run
/// (a paused process) but reports with `skip_ticks` end it like ticks run.
#[test]
fn skipped_ticks_end_the_lease() {
    let mut leader = leader_with(|c| c.read_mode = ReadMode::LeaseBased);
    let lease_ticks = leader.config().lease_ticks();
    leader.step(append_ack(2, 1, 1, 1));
    handle(&mut leader);
    leader
        .read_index(Bytes::from_static(b"r0"))
        .expect("queued");
    let round = heartbeat_rounds(&handle(&mut leader), 2)[0];
    leader.step(msg(2, 1, 1, MessageBody::HeartbeatResponse { round }));
    assert_eq!(handle(&mut leader).read_states, [read(1, b"r0")]);

    leader.skip_ticks(lease_ticks);
    leader
        .read_index(Bytes::from_static(b"r1"))
        .expect("queued");
    let ready = handle(&mut leader);
    assert!(
        ready.read_states.is_empty(),
        "served on a lease that ran out while paused"
    );
    let (_, leads) = leader.state();
    assert!(leads, "skipped ticks do not make a leader step down");
}
