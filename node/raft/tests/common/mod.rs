//! Helpers shared by the protocol tests: build cores over [`MemStorage`],
//! handle a `Ready` the way the driver contract says (persist, then the
//! caller inspects what would be sent), and script elections by hand.
//!
//! Every test drives cores through the public API only and asserts on what a
//! `Ready` emits.

// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use flotilla_raft::MemStorage;
use flotilla_raft::{
    Bytes, Config, Entry, EntryKind, HardState, Message, MessageBody, NodeId, Raft, Ready, Storage,
    Term,
};
use std::collections::BTreeMap;

/// Minimum election timeout of every test core.
pub const ELECTION_TICKS: u32 = 10;
/// Heartbeat interval of every test core.
pub const HEARTBEAT_TICKS: u32 = 3;

/// The core under test.
pub type Core = Raft<MemStorage>;

/// Node ids `1..=size`.
pub fn voters(size: u64) -> Vec<NodeId> {
    (1..=size).map(NodeId).collect()
}

/// The test configuration of member `n`: a fixed seed, pre-vote and
/// check-quorum on (the defaults), short timeouts.
pub fn config(n: u64) -> Config {
    let mut config = Config::new(NodeId(n));
    config.election_ticks = ELECTION_TICKS;
    config.heartbeat_ticks = HEARTBEAT_TICKS;
    config.seed = 0x5eed_0000 + n;
    config
}

/// Member `n` of a fresh cluster of `size` voters.
pub fn core(n: u64, size: u64) -> Core {
    core_with(config(n), MemStorage::new_with_voters(&voters(size)))
}

/// A core with this configuration over this storage.
pub fn core_with(config: Config, storage: MemStorage) -> Core {
    Raft::new(config, storage).expect("test configurations are valid")
}

/// Storage of a member of `size` voters whose log already holds one entry per
/// element of `terms` (index 1 upwards, of that term), with the hard state at
/// `term` and nothing committed.
pub fn storage_with_log(size: u64, terms: &[u64], term: u64) -> MemStorage {
    let mut storage = MemStorage::new_with_voters(&voters(size));
    let entries: Vec<Entry> = terms
        .iter()
        .enumerate()
        .map(|(i, t)| entry(i as u64 + 1, *t))
        .collect();
    let hs = HardState {
        term: Term(term),
        vote: NodeId::NONE,
        commit: 0,
    };
    storage.save(Some(&hs), &entries).expect("in-memory save");
    storage
}

/// A normal entry at `index` of `term` with a recognisable payload.
pub fn entry(index: u64, term: u64) -> Entry {
    Entry {
        term: Term(term),
        index,
        kind: EntryKind::Normal,
        data: Bytes::from(format!("e{index}t{term}")),
    }
}

/// Driver steps 2, 3 and 6: takes the `Ready`, installs its snapshot from
/// the leader if it carries one, persists its hard state and entries, and
/// advances; returns it so that the test can look at what would be sent,
/// applied and served. An empty `Ready` when there is nothing to do.
pub fn handle(core: &mut Core) -> Ready {
    if !core.has_ready() {
        return Ready::default();
    }
    let ready = core.ready().expect("in-memory storage does not fail");
    if let Some(snapshot) = &ready.snapshot {
        core.storage_mut()
            .apply_snapshot(snapshot.clone())
            .expect("in-memory install");
    }
    core.storage_mut()
        .save(ready.hard_state.as_ref(), &ready.entries)
        .expect("in-memory save");
    core.advance();
    ready
}

/// A message from `from` to `to` at `term`.
pub fn msg(from: u64, to: u64, term: u64, body: MessageBody) -> Message {
    Message {
        from: NodeId(from),
        to: NodeId(to),
        term: Term(term),
        body,
    }
}

/// The messages of `ready` addressed to `to`.
pub fn sent_to(ready: &Ready, to: u64) -> Vec<&Message> {
    ready
        .messages
        .iter()
        .filter(|m| m.to == NodeId(to))
        .collect()
}

/// The kinds of `messages`, in order.
pub fn kinds<'a>(messages: impl IntoIterator<Item = &'a Message>) -> Vec<&'static str> {
    messages.into_iter().map(Message::kind).collect()
}

/// Ticks `core` until it has something to emit; returns the number of ticks
/// and the handled `Ready`.
pub fn tick_until_ready(core: &mut Core, max_ticks: u32) -> (u32, Ready) {
    for ticks in 1..=max_ticks {
        core.tick();
        if core.has_ready() {
            return (ticks, handle(core));
        }
    }
    panic!("nothing emitted within {max_ticks} ticks");
}

/// Ticks `core` `n` times, handling every `Ready` on the way; returns them.
pub fn tick_n(core: &mut Core, n: u32) -> Vec<Ready> {
    let mut readies = Vec::new();
    for _ in 0..n {
        core.tick();
        readies.push(handle(core));
    }
    readies
}

/// Makes `core` leader by hand: ticks until it asks for (pre-)votes and grants
/// every request by answering as its peers would. Returns the `Ready` of the
/// new leader (its no-op entry and first appends).
pub fn elect(core: &mut Core) -> Ready {
    let max_ticks = 2 * core.config().election_ticks;
    let (_, mut ready) = tick_until_ready(core, max_ticks);
    loop {
        let asks: Vec<Message> = ready
            .messages
            .iter()
            .filter(|m| matches!(m.kind(), "PreVote" | "RequestVote"))
            .cloned()
            .collect();
        if asks.is_empty() {
            return ready; // a single member elects itself at once
        }
        let final_round = asks[0].kind() == "RequestVote";
        for ask in asks {
            let body = if final_round {
                MessageBody::RequestVoteResponse { reject: false }
            } else {
                MessageBody::PreVoteResponse { reject: false }
            };
            core.step(Message {
                from: ask.to,
                to: ask.from,
                term: ask.term,
                body,
            });
        }
        ready = handle(core);
        if final_round {
            assert!(core.state().1, "every vote granted, yet not leader");
            return ready;
        }
    }
}

/// The leader's acknowledgement that `follower` matched its log up to
/// `index`.
pub fn append_ack(follower: u64, leader: u64, term: u64, index: u64) -> Message {
    msg(
        follower,
        leader,
        term,
        MessageBody::AppendEntriesResponse {
            reject: false,
            index,
            hint_index: 0,
            hint_term: Term(0),
        },
    )
}

/// The heartbeat rounds `ready` sends to `to`.
pub fn heartbeat_rounds(ready: &Ready, to: u64) -> Vec<u64> {
    sent_to(ready, to)
        .into_iter()
        .filter_map(|m| match m.body {
            MessageBody::Heartbeat { round, .. } => Some(round),
            _ => None,
        })
        .collect()
}

/// A few cores wired together by hand: messages are delivered in order, none
/// lost unless a test filters them.
#[derive(Debug)]
pub struct Net {
    /// The members, by id.
    pub cores: BTreeMap<NodeId, Core>,
}

impl Net {
    /// A fresh cluster of `size` members with the test configuration.
    pub fn new(size: u64) -> Net {
        Net {
            cores: (1..=size).map(|n| (NodeId(n), core(n, size))).collect(),
        }
    }

    /// A fresh cluster of `size` members whose test configuration `tune`
    /// changed.
    pub fn with_config(size: u64, tune: impl Fn(&mut Config)) -> Net {
        let cores = (1..=size)
            .map(|n| {
                let mut config = config(n);
                tune(&mut config);
                (
                    NodeId(n),
                    core_with(config, MemStorage::new_with_voters(&voters(size))),
                )
            })
            .collect();
        Net { cores }
    }

    /// Member `n` crashes for good: it is gone, and messages to it are lost.
    pub fn crash(&mut self, n: u64) {
        self.cores.remove(&NodeId(n));
    }

    /// One tick of every member; every message that causes is delivered,
    /// until quiet.
    pub fn tick(&mut self) -> Vec<(NodeId, Ready)> {
        let mut messages = Vec::new();
        for core in self.cores.values_mut() {
            core.tick();
            messages.extend(handle(core).messages);
        }
        self.deliver(messages)
    }

    /// The member that leads in the highest term, if any.
    pub fn leader(&self) -> Option<NodeId> {
        self.cores
            .values()
            .filter(|c| c.state().1)
            .max_by_key(|c| c.state().0)
            .map(|c| c.id())
    }

    /// Member `n`.
    pub fn core(&mut self, n: u64) -> &mut Core {
        self.cores.get_mut(&NodeId(n)).expect("member exists")
    }

    /// Delivers `messages`, then every message they cause, until quiet.
    /// Returns each member's handled `Ready`s in order.
    pub fn deliver(&mut self, messages: Vec<Message>) -> Vec<(NodeId, Ready)> {
        self.deliver_filtered(messages, |_| true)
    }

    /// As [`Net::deliver`], dropping messages for which `keep` is false.
    pub fn deliver_filtered(
        &mut self,
        mut messages: Vec<Message>,
        keep: impl Fn(&Message) -> bool,
    ) -> Vec<(NodeId, Ready)> {
        let mut readies = Vec::new();
        loop {
            for m in messages.drain(..) {
                if !keep(&m) {
                    continue;
                }
                if let Some(core) = self.cores.get_mut(&m.to) {
                    core.step(m);
                }
            }
            for (id, core) in self.cores.iter_mut() {
                let ready = handle(core);
                messages.extend(ready.messages.iter().cloned());
                readies.push((*id, ready));
            }
            if messages.is_empty() {
                return readies;
            }
        }
    }

    /// Elects member `n` by hand and lets the cluster settle: every member
    /// then holds and has committed the leader's no-op.
    pub fn elect(&mut self, n: u64) -> Vec<(NodeId, Ready)> {
        let ready = elect(self.core(n));
        self.deliver(ready.messages)
    }
}
