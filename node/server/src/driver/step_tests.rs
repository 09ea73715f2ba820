//! [`Step`] on its own: three members over in-memory storage, messages
//! routed by hand, and effects that record what the step did in which
//! order.

use super::error::DriverError;
use super::step::{Applied, Effects, Persisted, Step, apply_run, carries_data};
use crate::test_support::Recorder;
use flotilla_raft::{
    Bytes, Config, Entry, LogIndex, MemStorage, Message, MessageBody, NodeId, Raft, Ready,
    Snapshot, Storage, StorageError,
};

/// What a step did, in order: `persist <entries>`, `answer <index>`.
#[derive(Default)]
struct Log {
    did: Vec<String>,
    sent: Vec<Message>,
    /// Whether writes defer their sync: they are then durable only once
    /// the test calls [`Step::synced`] with the write's number.
    deferred: bool,
    /// The last write whose sync is under way, if any.
    syncing: Option<u64>,
    /// Whether heavy runs stay away until the test brings them home.
    defer_apply: bool,
    /// A heavy run away: the state machine and its entries.
    away: Option<(Recorder, Vec<Entry>)>,
    /// For each read served: how many commands the state it ran on held.
    served: Vec<usize>,
    /// Whether sends are logged too, as `send <n messages>`.
    log_sends: bool,
}

impl Effects<MemStorage, Recorder> for Log {
    type Proposal = u64;
    type Read = ();

    fn persist(
        &mut self,
        raft: &mut Raft<MemStorage>,
        ready: &Ready,
        write: u64,
    ) -> Result<Persisted, StorageError> {
        if !ready.entries.is_empty() {
            let indexes: Vec<u64> = ready.entries.iter().map(|e| e.index).collect();
            self.did.push(format!("persist {indexes:?}"));
        }
        raft.storage_mut()
            .save(ready.hard_state.as_ref(), &ready.entries)?;
        if self.deferred && !ready.entries.is_empty() {
            self.syncing = Some(write);
            return Ok(Persisted::Syncing);
        }
        Ok(Persisted::Durable)
    }

    fn install_snapshot(
        &mut self,
        _: &mut Raft<MemStorage>,
        _: &mut Recorder,
        _: &Snapshot,
        _: &Ready,
    ) -> Result<(), StorageError> {
        unreachable!("no snapshot is taken here")
    }

    fn send(&mut self, messages: Vec<Message>) {
        if self.log_sends {
            self.did.push(format!("send {}", messages.len()));
        }
        self.sent.extend(messages);
    }

    fn answer(&mut self, proposal: u64, outcome: Result<(LogIndex, usize), DriverError>) {
        let (index, _) = outcome.expect("every proposal here commits");
        assert_eq!(index, proposal, "each proposal waits for its own entry");
        self.did.push(format!("answer {index}"));
    }

    fn serve(&mut self, _: (), sm: Result<&Recorder, DriverError>) {
        self.served
            .push(sm.expect("a read here runs").commands.len());
    }

    fn apply_elsewhere(
        &mut self,
        mut sm: Recorder,
        entries: Vec<Entry>,
    ) -> Option<Applied<Recorder>> {
        if self.defer_apply {
            self.away = Some((sm, entries));
            return None;
        }
        let outputs = apply_run(&mut sm, &entries);
        Some((sm, outputs))
    }

    fn snapshot_due(&mut self, _: &mut Raft<MemStorage>, _: &Recorder) -> Result<(), StorageError> {
        Ok(())
    }
}

type TestStep = Step<MemStorage, Recorder, u64, ()>;

fn members() -> Vec<(TestStep, Log)> {
    let ids = [NodeId(1), NodeId(2), NodeId(3)];
    ids.iter()
        .map(|&id| {
            let mut config = Config::new(id);
            config.seed = id.0;
            let raft = Raft::new(config, MemStorage::new_with_voters(&ids)).expect("valid");
            (Step::new(raft, Recorder::default()), Log::default())
        })
        .collect()
}

/// Three members whose writes defer their syncs.
fn deferring_members() -> Vec<(TestStep, Log)> {
    let mut members = members();
    for (_, log) in members.iter_mut() {
        log.deferred = true;
    }
    members
}

/// Elects a leader (ticking everyone, delivering everything, syncing
/// every write at once) and returns its position.
fn elect(members: &mut [(TestStep, Log)]) -> usize {
    for _ in 0..100 {
        for (step, _) in members.iter_mut() {
            step.raft_mut().tick();
        }
        for _ in 0..10 {
            settle(members, None);
            for i in 0..members.len() {
                sync(members, i);
            }
        }
        if let Some(leader) = members.iter().position(|(s, _)| s.raft().state().1) {
            return leader;
        }
    }
    panic!("no leader within 100 ticks");
}

/// Proposes `command` at member `leader`, its proposal waiting under its
/// own index (which [`Log::answer`] checks); returns the index.
fn propose_at(members: &mut [(TestStep, Log)], leader: usize, command: &'static [u8]) -> LogIndex {
    let (step, _) = &mut members[leader];
    let (index, term) = step
        .raft_mut()
        .propose(Bytes::from_static(command))
        .expect("the leader takes it");
    assert!(step.track_proposal(index, term, index).is_none());
    index
}

/// Member `i`'s deferred writes are durable.
fn sync(members: &mut [(TestStep, Log)], i: usize) {
    let (step, log) = &mut members[i];
    if let Some(write) = log.syncing.take() {
        step.synced(write, log);
    }
}

/// Processes every member's `Ready`s and delivers what they sent, until
/// nothing moves; the messages to `held` (if any) are kept back and
/// returned instead.
fn settle(members: &mut [(TestStep, Log)], held: Option<NodeId>) -> Vec<Message> {
    let mut kept = Vec::new();
    for _ in 0..1000 {
        let mut moved = false;
        for (step, log) in members.iter_mut() {
            while step.process_one(log).expect("memory storage") {
                moved = true;
            }
        }
        let sent: Vec<Message> = members
            .iter_mut()
            .flat_map(|(_, log)| std::mem::take(&mut log.sent))
            .collect();
        for m in sent {
            moved = true;
            if Some(m.to) == held {
                kept.push(m);
            } else {
                let (step, log) = &mut members[(m.to.0 - 1) as usize];
                step.step_message(m, usize::MAX, log);
            }
        }
        if !moved {
            return kept;
        }
    }
    panic!("the members did not settle");
}

/// A leader answers a proposal whose entry committed while it was writing
/// others before it writes the next ones: what committed was durable
/// already, and its proposer need not wait for an unrelated disk write.
#[test]
fn committed_entries_apply_before_the_next_entries_persist() {
    let mut members = members();
    for _ in 0..100 {
        for (step, _) in members.iter_mut() {
            step.raft_mut().tick();
        }
        settle(&mut members, None);
        if members.iter().any(|(s, _)| s.raft().state().1) {
            break;
        }
    }
    let leader = members
        .iter()
        .position(|(s, _)| s.raft().state().1)
        .expect("a leader within 100 ticks");
    let id = NodeId(leader as u64 + 1);
    let propose = |members: &mut [(TestStep, Log)], command: &'static [u8]| {
        propose_at(members, leader, command)
    };
    let first = propose(&mut members, b"a");
    // The followers' acknowledgements of `first` reach the leader only
    // once it has the next proposal, so that one `Ready` commits the one
    // and appends the other.
    let acks = settle(&mut members, Some(id));
    members[leader].1.did.clear();
    let second = propose(&mut members, b"b");
    for m in acks {
        let (step, log) = &mut members[leader];
        step.step_message(m, usize::MAX, log);
    }
    let (step, log) = &mut members[leader];
    assert!(step.process_one(log).expect("memory storage"));
    assert_eq!(
        log.did,
        [format!("answer {first}"), format!("persist [{second}]")],
        "the committed entry's proposer is answered before the new entry is written"
    );
    settle(&mut members, None);
    assert_eq!(
        members[leader].1.did.last(),
        Some(&format!("answer {second}"))
    );
    for (step, _) in &members {
        assert_eq!(step.sm().expect("home").commands, [&b"a"[..], &b"b"[..]]);
    }
}

/// A leader that learns an entry committed, with nothing new to write,
/// answers its proposer before it sends the followers the new commit
/// index: nothing is written that sending first would overlap, and no
/// client waits for those messages.
#[test]
fn a_commit_with_nothing_to_write_answers_before_it_sends() {
    let mut members = members();
    let leader = elect(&mut members);
    let id = NodeId(leader as u64 + 1);
    let index = propose_at(&mut members, leader, b"a");
    let acks = settle(&mut members, Some(id));
    assert!(!acks.is_empty(), "the followers acknowledged the entry");
    let (step, log) = &mut members[leader];
    log.did.clear();
    log.log_sends = true;
    for m in acks {
        step.step_message(m, usize::MAX, log);
    }
    let taken = step
        .begin_one(log)
        .expect("memory storage")
        .expect("a Ready");
    assert!(!taken.sent_first());
    assert!(
        taken.answers_first(),
        "the caller learns that the answers go first"
    );
    step.finish_one(taken, log).expect("memory storage");
    assert_eq!(
        log.did,
        [format!("answer {index}"), "send 2".to_string()],
        "the proposer is answered, then the followers learn the commit index"
    );
    // A Ready with an entry to write sends first, as before.
    let next = propose_at(&mut members, leader, b"b");
    let (step, log) = &mut members[leader];
    log.did.clear();
    let taken = step
        .begin_one(log)
        .expect("memory storage")
        .expect("a Ready");
    assert!(taken.sent_first() && !taken.answers_first());
    step.finish_one(taken, log).expect("memory storage");
    assert_eq!(log.did, ["send 2".to_string(), format!("persist [{next}]")]);
}

/// What a leader's `Ready` with nothing to write holds back for its
/// answers: appends without entries and heartbeats; entries, snapshot
/// chunks and a hand-over go first.
#[test]
fn only_messages_without_data_wait_for_the_answers() {
    let message = |body| Message {
        from: NodeId(1),
        to: NodeId(2),
        term: flotilla_raft::Term(3),
        body,
    };
    let append = |entries: Vec<Entry>| {
        message(MessageBody::AppendEntries {
            prev_log_index: 4,
            prev_log_term: flotilla_raft::Term(3),
            entries,
            leader_commit: 4,
            quiet: true,
        })
    };
    assert!(!carries_data(&append(Vec::new())));
    let entry = Entry {
        index: 5,
        term: flotilla_raft::Term(3),
        kind: flotilla_raft::EntryKind::Normal,
        data: Bytes::from_static(b"x"),
    };
    assert!(carries_data(&append(vec![entry])));
    assert!(!carries_data(&message(MessageBody::Heartbeat {
        commit: 4,
        round: 9
    })));
    assert!(carries_data(&message(MessageBody::TimeoutNow)));
}

/// With deferred syncs, nothing counts a write before its sync: a
/// follower's acknowledgement leaves only once its write is durable, and
/// a leader counts its own entry only then, so an entry commits when two
/// of the three members synced it (either two).
#[test]
fn deferred_syncs_hold_acknowledgements_and_the_leaders_own_count() {
    let mut members = deferring_members();
    let leader = elect(&mut members);
    let followers: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    let (step, _) = &mut members[leader];
    let (index, term) = step
        .raft_mut()
        .propose(Bytes::from_static(b"a"))
        .expect("the leader takes it");
    assert!(step.track_proposal(index, term, index).is_none());
    settle(&mut members, None);
    for (step, log) in &members {
        assert!(
            step.raft().status().hard_state.commit < index,
            "nothing synced yet"
        );
        assert!(log.syncing.is_some(), "every member wrote the entry");
    }
    // The leader's own sync alone is one of three.
    sync(&mut members, leader);
    settle(&mut members, None);
    assert!(members[leader].0.raft().status().hard_state.commit < index);
    // One follower's sync releases its acknowledgement: two of three.
    sync(&mut members, followers[0]);
    settle(&mut members, None);
    assert!(members[leader].0.raft().status().hard_state.commit >= index);
    assert_eq!(
        members[leader].1.did.last(),
        Some(&format!("answer {index}"))
    );
    // The other follower applies it once it learns the commit index, but
    // its own acknowledgement still waits for its sync.
    assert_eq!(
        members[followers[1]].0.sm().expect("home").commands,
        [&b"a"[..]]
    );
    assert!(members[followers[1]].0.syncing() > 0);
}

/// A follower's answer to an append waits for the sync of the writes
/// before it even when its own `Ready` wrote nothing: it may promise
/// entries an earlier write holds.
#[test]
fn messages_of_a_ready_without_entries_wait_for_an_earlier_sync() {
    let mut members = deferring_members();
    let leader = elect(&mut members);
    let follower = (leader + 1) % 3;
    let (step, _) = &mut members[leader];
    step.raft_mut()
        .propose(Bytes::from_static(b"a"))
        .expect("the leader takes it");
    settle(&mut members, None);
    assert!(members[follower].0.syncing() > 0);
    // Heartbeats come and go while the follower's write syncs (their
    // answers go at once); its answers to appends queue behind the sync.
    for _ in 0..5 {
        for (step, _) in members.iter_mut() {
            step.raft_mut().tick();
        }
        settle(&mut members, None);
    }
    // The follower's match index on the leader, and the leader's last.
    let matched = |members: &[(TestStep, Log)]| {
        let status = members[leader].0.raft().status();
        let m = status
            .match_indexes
            .iter()
            .find(|(id, _)| *id == NodeId(follower as u64 + 1))
            .map(|(_, m)| *m);
        (m, status.last_index)
    };
    let (m, last) = matched(&members);
    assert!(
        m < Some(last),
        "the leader heard no acknowledgement of the unsynced entry"
    );
    sync(&mut members, follower);
    settle(&mut members, None);
    let (m, last) = matched(&members);
    assert_eq!(m, Some(last));
}

/// While a heavy run applies elsewhere, a read that may be stale runs at
/// once on the copy the state machine left behind, and sees the state
/// before the run; a plain local read waits for the state machine. Once it
/// is home, the copy is gone: both run on the state machine, which holds
/// the run. A copy is left only when such a read came since the state
/// machine last left; otherwise the read waits too.
#[test]
fn a_stale_read_runs_on_the_copy_while_the_state_machine_is_away() {
    let mut members = members();
    for (_, log) in members.iter_mut() {
        log.defer_apply = true;
    }
    let leader = elect(&mut members);
    // Proposes `commands` at the leader and lets everything settle; the
    // state machine may go away with a heavy run.
    let propose = |members: &mut [(TestStep, Log)], commands: &[&'static [u8]]| {
        for &command in commands {
            propose_at(members, leader, command);
        }
        settle(members, None);
    };
    // Brings the leader's heavy run home.
    let home = |members: &mut [(TestStep, Log)]| {
        let (step, log) = &mut members[leader];
        let (mut sm, entries) = log.away.take().expect("a heavy run went away");
        let outputs = apply_run(&mut sm, &entries);
        step.applied_elsewhere(sm, outputs, log)
            .expect("memory storage");
    };

    propose(&mut members, &[b"a"]);
    let (step, log) = &mut members[leader];
    step.read_stale((), log);
    assert_eq!(log.served, [1], "home: on the state machine");
    assert!(!step.has_read_copy());

    propose(&mut members, &[b"slow:0", b"b"]);
    let (step, log) = &mut members[leader];
    assert!(step.sm().is_none(), "the heavy run went away");
    assert!(step.has_read_copy(), "a stale read came before it left");
    step.read_stale((), log);
    assert_eq!(
        log.served,
        [1, 1],
        "at once, on the copy: the state before the run"
    );
    step.read_local((), log);
    assert_eq!(
        log.served,
        [1, 1],
        "a local read waits for the state machine"
    );
    assert_eq!(step.stale_reads(), 1);
    home(&mut members);
    let (step, log) = &mut members[leader];
    assert_eq!(
        log.served,
        [1, 1, 3],
        "the local read ran on the state machine, home"
    );
    assert!(!step.has_read_copy(), "no copy once home");
    step.read_stale((), log);
    assert_eq!(log.served, [1, 1, 3, 3], "home: on the state machine again");

    // That read came since the run left: the next run leaves a copy too.
    propose(&mut members, &[b"slow:0"]);
    assert!(members[leader].0.has_read_copy());
    home(&mut members);
    // No stale read since: the next run leaves none, and one waits.
    propose(&mut members, &[b"slow:0"]);
    let (step, log) = &mut members[leader];
    assert!(step.sm().is_none() && !step.has_read_copy());
    step.read_stale((), log);
    assert_eq!(log.served, [1, 1, 3, 3], "no copy: it waits");
    home(&mut members);
    let (step, log) = &mut members[leader];
    assert_eq!(log.served, [1, 1, 3, 3, 5]);
    assert_eq!(step.stale_reads(), 1);
}
