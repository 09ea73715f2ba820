//! Leader election as the core emits it: timeouts, pre-vote, votes, the vote
//! lease and check-quorum.

mod common;

use common::*;
use flotilla_raft::{Bytes, EntryKind, HardState, MessageBody, NodeId, Role, SoftState, Term};
use std::collections::BTreeSet;

/// Raft §5.2: "election timeouts are chosen randomly from a fixed interval".
/// A follower that hears nothing starts an election after a number of ticks
/// in `[election_ticks, 2 * election_ticks)`, and different seeds spread it.
#[test]
fn election_timeout_is_randomized_within_one_to_two_minimum_timeouts() {
    let mut seen = BTreeSet::new();
    for seed in 0..32 {
        let mut config = config(1);
        config.seed = seed;
        let mut core = core_with(
            config,
            flotilla_raft::MemStorage::new_with_voters(&voters(3)),
        );
        let (ticks, ready) = tick_until_ready(&mut core, 2 * ELECTION_TICKS);
        assert!(
            (ELECTION_TICKS..2 * ELECTION_TICKS).contains(&ticks),
            "seed {seed}: campaigned after {ticks} ticks"
        );
        assert_eq!(kinds(&ready.messages), ["PreVote", "PreVote"]);
        seen.insert(ticks);
    }
    assert!(seen.len() > 1, "every seed timed out after the same ticks");
}

/// Thesis §9.6 (pre-vote): a node whose election timeout fires first asks
/// whether it could win in term + 1, without changing its own term: nothing
/// is persisted, only its role changes.
#[test]
fn pre_candidate_asks_for_next_term_without_changing_its_own() {
    let mut core = core(1, 3);
    let (_, ready) = tick_until_ready(&mut core, 2 * ELECTION_TICKS);

    assert_eq!(ready.hard_state, None, "pre-vote must not touch the term");
    assert!(ready.entries.is_empty());
    assert_eq!(
        ready.soft_state,
        Some(SoftState {
            leader: NodeId::NONE,
            role: Role::PreCandidate
        })
    );
    assert_eq!(ready.messages.len(), 2);
    for (m, to) in ready.messages.iter().zip([2, 3]) {
        assert_eq!(m.to, NodeId(to));
        assert_eq!(m.term, Term(1), "asks for the term it would campaign in");
        assert_eq!(
            m.body,
            MessageBody::PreVote {
                last_log_index: 0,
                last_log_term: Term(0)
            }
        );
    }
    assert_eq!(core.storage().hard_state().term, Term(0));
}

/// Raft §5.2 and Figure 2 ("persistent state ... updated on stable storage
/// before responding to RPCs"): once a quorum granted the pre-vote, the node
/// campaigns in term + 1 and votes for itself; the `Ready` that carries the
/// RequestVotes also carries that hard state, so the driver persists the
/// vote before the requests leave.
#[test]
fn granted_pre_vote_quorum_starts_a_campaign_with_the_vote_persisted_first() {
    let mut core = core(1, 3);
    tick_until_ready(&mut core, 2 * ELECTION_TICKS);
    core.step(msg(2, 1, 1, MessageBody::PreVoteResponse { reject: false }));
    let ready = handle(&mut core);

    assert_eq!(
        ready.hard_state,
        Some(HardState {
            term: Term(1),
            vote: NodeId(1),
            commit: 0
        })
    );
    assert_eq!(ready.soft_state.map(|s| s.role), Some(Role::Candidate));
    assert_eq!(kinds(&ready.messages), ["RequestVote", "RequestVote"]);
    for m in &ready.messages {
        assert_eq!(m.term, Term(1));
        assert_eq!(
            m.body,
            MessageBody::RequestVote {
                last_log_index: 0,
                last_log_term: Term(0),
                leader_transfer: false
            }
        );
    }
}

/// Thesis §9.6: a refused pre-vote quorum sends the node back to follower in
/// the same term; it never asked anybody to change theirs.
#[test]
fn refused_pre_vote_quorum_returns_to_follower_in_the_same_term() {
    let mut core = core(1, 3);
    tick_until_ready(&mut core, 2 * ELECTION_TICKS);
    core.step(msg(2, 1, 0, MessageBody::PreVoteResponse { reject: true }));
    core.step(msg(3, 1, 0, MessageBody::PreVoteResponse { reject: true }));
    let ready = handle(&mut core);

    assert_eq!(ready.hard_state, None);
    assert_eq!(ready.soft_state.map(|s| s.role), Some(Role::Follower));
    assert!(ready.messages.is_empty());
}

/// Raft §5.2: "each server will vote for at most one candidate in a given
/// term, on a first-come-first-served basis". The vote is in the hard state
/// of the `Ready` that carries the grant; a second candidate of that term is
/// refused; the first one asking again (a retransmission) is granted again.
///
/// Check-quorum is off so that the vote lease (tested below) stays out of
/// the way.
#[test]
fn voter_grants_one_vote_per_term() {
    let mut config = config(3);
    config.check_quorum = false;
    let mut voter = core_with(
        config,
        flotilla_raft::MemStorage::new_with_voters(&voters(3)),
    );
    let request = |from| {
        msg(
            from,
            3,
            1,
            MessageBody::RequestVote {
                last_log_index: 0,
                last_log_term: Term(0),
                leader_transfer: false,
            },
        )
    };

    voter.step(request(1));
    let ready = handle(&mut voter);
    assert_eq!(
        ready.hard_state,
        Some(HardState {
            term: Term(1),
            vote: NodeId(1),
            commit: 0
        })
    );
    assert_eq!(
        ready.messages,
        [msg(
            3,
            1,
            1,
            MessageBody::RequestVoteResponse { reject: false }
        )]
    );

    voter.step(request(2));
    let ready = handle(&mut voter);
    assert_eq!(ready.hard_state, None, "the vote stands");
    assert_eq!(
        ready.messages,
        [msg(
            3,
            2,
            1,
            MessageBody::RequestVoteResponse { reject: true }
        )]
    );

    voter.step(request(1));
    let ready = handle(&mut voter);
    assert_eq!(
        ready.messages,
        [msg(
            3,
            1,
            1,
            MessageBody::RequestVoteResponse { reject: false }
        )]
    );
}

/// Raft §5.4.1 (election restriction): a voter refuses a candidate whose log
/// is less up to date than its own — an older last term, or the same last
/// term and a shorter log — even though the request's term is adopted.
#[test]
fn voter_refuses_a_candidate_whose_log_is_less_up_to_date() {
    let mut config = config(3);
    config.check_quorum = false;
    // The voter's log ends at index 3, term 2.
    let mut voter = core_with(config, storage_with_log(3, &[1, 1, 2], 2));
    let request = |from, term, last_log_index, last_log_term| {
        msg(
            from,
            3,
            term,
            MessageBody::RequestVote {
                last_log_index,
                last_log_term: Term(last_log_term),
                leader_transfer: false,
            },
        )
    };

    // Longer, but ends in an older term.
    voter.step(request(1, 3, 5, 1));
    let ready = handle(&mut voter);
    assert_eq!(
        ready.hard_state,
        Some(HardState {
            term: Term(3),
            vote: NodeId::NONE,
            commit: 0
        }),
        "the higher term is adopted, the vote is not cast"
    );
    assert_eq!(
        ready.messages,
        [msg(
            3,
            1,
            3,
            MessageBody::RequestVoteResponse { reject: true }
        )]
    );

    // Same last term, shorter.
    voter.step(request(2, 3, 2, 2));
    let ready = handle(&mut voter);
    assert_eq!(ready.hard_state, None);
    assert_eq!(
        ready.messages,
        [msg(
            3,
            2,
            3,
            MessageBody::RequestVoteResponse { reject: true }
        )]
    );

    // Same last term, as long: at least as up to date.
    voter.step(request(2, 3, 3, 2));
    let ready = handle(&mut voter);
    assert_eq!(ready.hard_state.map(|hs| hs.vote), Some(NodeId(2)));
    assert_eq!(
        ready.messages,
        [msg(
            3,
            2,
            3,
            MessageBody::RequestVoteResponse { reject: false }
        )]
    );
}

/// Raft §5.4.2 and §8: a new leader appends an empty entry of its own term at
/// once, so that it can commit (and learn the commit index) without waiting
/// for a client; the entry goes to every follower.
#[test]
fn new_leader_appends_a_noop_entry_of_its_term() {
    let mut leader = core_with(config(1), storage_with_log(3, &[1, 1], 1));
    let ready = elect(&mut leader);

    assert_eq!(
        ready.soft_state,
        Some(SoftState {
            leader: NodeId(1),
            role: Role::Leader
        })
    );
    assert_eq!(ready.entries.len(), 1);
    let noop = &ready.entries[0];
    assert_eq!((noop.index, noop.term), (3, Term(2)));
    assert_eq!(noop.kind, EntryKind::Noop);
    assert_eq!(noop.data, Bytes::new());
    for to in [2, 3] {
        let appends = sent_to(&ready, to);
        assert_eq!(kinds(appends.iter().copied()), ["AppendEntries"]);
        assert_eq!(
            appends[0].body,
            MessageBody::AppendEntries {
                prev_log_index: 2,
                prev_log_term: Term(1),
                entries: vec![noop.clone()],
                leader_commit: 0,
                quiet: false,
            }
        );
    }
}

/// Thesis §4.2.3 and §6.2 (disruptive servers): a follower that heard from
/// its leader within the minimum election timeout ignores RequestVote and
/// PreVote of a higher term: no answer, no term change. A RequestVote marked
/// as a leadership transfer (thesis §3.10) is the exception.
#[test]
fn follower_in_leader_lease_ignores_higher_term_vote_requests() {
    let mut follower = core(2, 3);
    follower.step(msg(
        1,
        2,
        1,
        MessageBody::Heartbeat {
            commit: 0,
            round: 1,
        },
    ));
    let ready = handle(&mut follower);
    assert_eq!(ready.hard_state.map(|hs| hs.term), Some(Term(1)));

    let vote = |leader_transfer| {
        msg(
            3,
            2,
            2,
            MessageBody::RequestVote {
                last_log_index: 0,
                last_log_term: Term(0),
                leader_transfer,
            },
        )
    };
    follower.step(vote(false));
    follower.step(msg(
        3,
        2,
        2,
        MessageBody::PreVote {
            last_log_index: 0,
            last_log_term: Term(0),
        },
    ));
    let ready = handle(&mut follower);
    assert!(ready.is_empty(), "ignored entirely, got {ready:?}");

    follower.step(vote(true));
    let ready = handle(&mut follower);
    assert_eq!(
        ready.hard_state,
        Some(HardState {
            term: Term(2),
            vote: NodeId(3),
            commit: 0
        })
    );
    assert_eq!(
        ready.messages,
        [msg(
            2,
            3,
            2,
            MessageBody::RequestVoteResponse { reject: false }
        )]
    );
}

/// Thesis §4.2.3: the lease lasts one minimum election timeout after the
/// follower last heard from its leader; after that a higher-term vote is
/// considered (and here granted).
#[test]
fn follower_considers_vote_requests_once_the_leader_is_silent_for_an_election_timeout() {
    let mut follower = core(2, 3);
    follower.step(msg(
        1,
        2,
        1,
        MessageBody::Heartbeat {
            commit: 0,
            round: 1,
        },
    ));
    handle(&mut follower);
    // The follower may itself start a pre-vote on the last tick; that changes
    // neither its term nor its vote.
    tick_n(&mut follower, ELECTION_TICKS);

    follower.step(msg(
        3,
        2,
        2,
        MessageBody::RequestVote {
            last_log_index: 0,
            last_log_term: Term(0),
            leader_transfer: false,
        },
    ));
    let ready = handle(&mut follower);
    assert_eq!(
        ready.hard_state.map(|hs| (hs.term, hs.vote)),
        Some((Term(2), NodeId(3)))
    );
    assert_eq!(
        sent_to(&ready, 3),
        [&msg(
            2,
            3,
            2,
            MessageBody::RequestVoteResponse { reject: false }
        )]
    );
}

/// Thesis §4.2.3 applied to restarts: a member that just started may have
/// acknowledged a leader before it crashed, so it keeps quiet for one
/// election timeout and grants no vote of a higher term.
#[test]
fn freshly_started_member_ignores_vote_requests_for_an_election_timeout() {
    let mut follower = core(2, 3);
    let request = msg(
        3,
        2,
        1,
        MessageBody::RequestVote {
            last_log_index: 0,
            last_log_term: Term(0),
            leader_transfer: false,
        },
    );
    follower.step(request.clone());
    assert!(handle(&mut follower).is_empty());

    tick_n(&mut follower, ELECTION_TICKS);
    follower.step(request);
    let ready = handle(&mut follower);
    assert_eq!(
        sent_to(&ready, 3),
        [&msg(
            2,
            3,
            1,
            MessageBody::RequestVoteResponse { reject: false }
        )]
    );
}

/// Thesis §6.2 (check-quorum): a leader that heard from no quorum for an
/// election timeout steps down to follower in its own term.
#[test]
fn leader_without_quorum_contact_steps_down_after_an_election_timeout() {
    let mut leader = core(1, 3);
    elect(&mut leader);

    let readies = tick_n(&mut leader, ELECTION_TICKS);
    let (last, before) = readies.split_last().expect("ticked");
    assert!(before.iter().all(|r| r.soft_state.is_none()));
    assert_eq!(
        last.soft_state,
        Some(SoftState {
            leader: NodeId::NONE,
            role: Role::Follower
        })
    );
    assert_eq!(last.hard_state, None, "stepping down keeps the term");
}

/// Thesis §6.2: a single follower's answers make a quorum of three with the
/// leader, which then keeps leading past the election timeout.
#[test]
fn leader_hearing_from_a_quorum_keeps_leading() {
    let mut leader = core(1, 3);
    elect(&mut leader);
    for _ in 0..3 * ELECTION_TICKS {
        leader.tick();
        let ready = handle(&mut leader);
        assert_eq!(ready.soft_state, None, "stepped down");
        for round in heartbeat_rounds(&ready, 2) {
            leader.step(msg(2, 1, 1, MessageBody::HeartbeatResponse { round }));
        }
    }
    assert!(leader.state().1);
}

/// The minimum election timeout of the split-vote tests: long enough that a
/// quarter and a half of it are distinct tick counts.
const SPLIT_ELECTION_TICKS: u32 = 20;

/// Raft §5.2 (split votes), as a `kill -9` of a 3-member cluster's leader
/// produces it: members 2 and 3 time out on the same tick, each grants the
/// other's pre-vote, both campaign in term 2, each refuses the other, and
/// member 1 never answers, so neither reaches a quorum of grants or of
/// refusals. Returns the cluster in that state.
fn split_vote_after_leader_crash(seed: u64) -> Net {
    let mut net = Net::with_config(3, |c| {
        c.election_ticks = SPLIT_ELECTION_TICKS;
        c.seed = (seed << 8) | c.id.0;
    });
    net.elect(1);
    net.crash(1);
    // Both time out before either hears the other: their pre-votes are held
    // until each has sent its own.
    let mut held = Vec::new();
    let mut asked = BTreeSet::new();
    for _ in 0..2 * SPLIT_ELECTION_TICKS {
        for (id, core) in net.cores.iter_mut() {
            core.tick();
            let ready = handle(core);
            if kinds(&ready.messages).contains(&"PreVote") {
                asked.insert(*id);
            }
            held.extend(ready.messages);
        }
        if asked.len() == 2 {
            break;
        }
    }
    net.deliver(held);
    for n in [2, 3] {
        let status = net.core(n).status();
        assert_eq!(
            (
                status.soft_state.role,
                status.hard_state.term,
                status.hard_state.vote
            ),
            (Role::Candidate, Term(2), NodeId(n)),
            "seed {seed}: member {n} is not a split candidate of term 2"
        );
    }
    net
}

/// Ticks `core` until it sends something, at most two split-test election
/// timeouts; that must be a pre-vote to each of the other two members.
/// Returns the ticks it took.
fn ticks_until_pre_votes(core: &mut Core, seed: u64) -> u32 {
    let (ticks, ready) = tick_until_ready(core, 2 * SPLIT_ELECTION_TICKS);
    assert_eq!(
        kinds(&ready.messages),
        ["PreVote", "PreVote"],
        "seed {seed}"
    );
    ticks
}

/// Raft §5.2 (split votes): a candidate that is asked for its vote by
/// another candidate of its own term knows the vote is split; it asks for
/// pre-votes again within a quarter to a half of the minimum election
/// timeout, instead of a whole randomized timeout of one to two.
#[test]
fn split_candidates_ask_again_within_half_the_minimum_election_timeout() {
    for seed in 0..16 {
        let mut net = split_vote_after_leader_crash(seed);
        for n in [2, 3] {
            let core = net.core(n);
            let ticks = ticks_until_pre_votes(core, seed);
            assert!(
                (SPLIT_ELECTION_TICKS / 4..=SPLIT_ELECTION_TICKS / 2).contains(&ticks),
                "seed {seed}: member {n} asked again after {ticks} ticks"
            );
        }
    }
}

/// Raft §5.2 (split votes) end to end: after the split, the first candidate
/// to ask again gets the other's pre-vote and vote (it has no leader, so no
/// lease to keep) and leads. Over 64 seeds most elections end within half
/// the minimum election timeout of the split; without the early retry none
/// could end before a whole minimum timeout. The retries are random, so two
/// candidates ticking in lockstep sometimes split again; every seed still
/// elects a leader.
#[test]
fn split_vote_after_a_leader_crash_elects_within_half_an_election_timeout() {
    let mut ticks_to_leader = Vec::new();
    for seed in 0..64 {
        let mut net = split_vote_after_leader_crash(seed);
        let ticks = (1..=4 * SPLIT_ELECTION_TICKS)
            .find(|_| {
                net.tick();
                net.leader().is_some()
            })
            .unwrap_or_else(|| panic!("seed {seed}: no leader after the split"));
        ticks_to_leader.push(ticks);
    }
    let fast = ticks_to_leader
        .iter()
        .filter(|t| **t <= SPLIT_ELECTION_TICKS / 2)
        .count();
    assert!(
        fast * 4 >= ticks_to_leader.len() * 3,
        "ticks from the split to a leader, per seed: {ticks_to_leader:?}"
    );
}

/// The early retry is for the split round only: the candidate that lost
/// follows the new leader, and when that leader is gone too it waits a whole
/// minimum election timeout again before asking for pre-votes (so a live
/// leader's lease is not cut short by a timeout left over from the split).
#[test]
fn after_a_split_vote_the_loser_waits_a_whole_election_timeout_again() {
    for seed in 0..16 {
        let mut net = split_vote_after_leader_crash(seed);
        let leader = (0..4 * SPLIT_ELECTION_TICKS)
            .find_map(|_| {
                net.tick();
                net.leader()
            })
            .unwrap_or_else(|| panic!("seed {seed}: no leader after the split"));
        net.crash(leader.0);
        let loser = *net.cores.keys().next().expect("one member left");
        let core = net.core(loser.0);
        assert_eq!(core.status().soft_state.leader, leader, "seed {seed}");
        // The leader's last heartbeat before it crashed.
        let term = core.state().0;
        core.step(msg(
            leader.0,
            loser.0,
            term.0,
            MessageBody::Heartbeat {
                commit: 0,
                round: 1,
            },
        ));
        handle(core);
        let ticks = ticks_until_pre_votes(core, seed);
        assert!(
            ticks >= SPLIT_ELECTION_TICKS,
            "seed {seed}: member {loser} asked for pre-votes {ticks} ticks after its leader's last heartbeat"
        );
    }
}
