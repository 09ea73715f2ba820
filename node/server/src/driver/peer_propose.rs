//! Proposals through the peer stream, as etcd's followers make them: a
//! follower sends its clients' commands to the leader in a `Propose`
//! message on the stream that already carries its Raft messages, instead
//! of a second gRPC stream beside it. The leader appends them at once and
//! answers with the index of the first and how many it took, in a
//! `ProposeResponse` it sends *before* the appends that carry them (one
//! ordered stream per peer), so the follower waits for those (index, term)
//! pairs like its own proposals ([`super::Step::track_proposal`]) and
//! answers its clients when it applies the entries itself: the answer
//! costs the leader nothing more, and the client reads its write on the
//! member it wrote to.
//!
//! What can go wrong is what goes wrong with a leader's own proposals,
//! plus a lost message:
//! - another leader's entry takes an index: the step answers the waiter as
//!   unknown, as for a deposed leader's proposal;
//! - the leader refuses (it no longer leads, too much is waiting, or the
//!   command is not one it takes from a peer): the refused commands are
//!   answered with the refusal, and the caller goes the other way;
//! - the answer never comes (a stream broke, the leader changed): the
//!   batch fails as timed out after [`PeerProposals::expire`]'s timeout, or
//!   as unknown as soon as this member sees another leader.
//!
//! The leader stamps what it appends as it stamps its own proposals, with
//! the filter the node gives it ([`PeerProposalFilter`]).

use super::error::DriverError;
use flotilla_raft::{Bytes, LogIndex, Message, MessageBody, NodeId, ProposeRefusal, Term};
use std::collections::HashMap;
use std::sync::Arc;

/// On the leader: the command a follower sent, as the leader appends it
/// (stamped as its own proposals are), or `None` for a command it does not
/// take from a peer.
pub type PeerProposalFilter = Arc<dyn Fn(Bytes) -> Option<Bytes> + Send + Sync>;

/// On a follower: whether the leader `NodeId` takes proposals through the
/// peer stream (it advertised them).
pub type PeerSupport = Arc<dyn Fn(NodeId) -> bool + Send + Sync>;

/// Most commands in one `Propose` message (a leader refuses the rest of a
/// longer one as busy).
pub(crate) const BATCH_COMMANDS_MAX: usize = 1024;

/// Most command bytes in one `Propose` message (a batch holds at least
/// one command); well under the transport's message limit. A larger
/// command is forwarded instead ([`COMMAND_BYTES_MAX`]).
pub(crate) const BATCH_BYTES_MAX: usize = 1 << 20;

/// Largest command proposed through the peer stream.
pub const COMMAND_BYTES_MAX: usize = BATCH_BYTES_MAX;

/// A batch sent to the leader, waiting for its answer.
struct Sent<W> {
    to: NodeId,
    at_tick: u64,
    waiters: Vec<W>,
}

/// A follower's proposals on their way to the leader: those gathered this
/// turn, and the batches sent and not yet answered. Bounded by the
/// driver's proposal bound, which counts [`Self::len`].
pub(crate) struct PeerProposals<W> {
    next_id: u64,
    /// The leader the gathered commands go to.
    gathering_to: NodeId,
    gathering: Vec<Bytes>,
    gathering_waiters: Vec<W>,
    gathering_bytes: usize,
    sent: HashMap<u64, Sent<W>>,
    /// Waiters in `sent`.
    sent_waiters: usize,
}

impl<W> Default for PeerProposals<W> {
    /// Batch ids start from the clock, so that an answer meant for a batch
    /// of an earlier run of this member (a message delayed across a
    /// restart) does not match a batch of this one.
    fn default() -> Self {
        let boot = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        PeerProposals {
            next_id: boot,
            gathering_to: NodeId::NONE,
            gathering: Vec::new(),
            gathering_waiters: Vec::new(),
            gathering_bytes: 0,
            sent: HashMap::new(),
            sent_waiters: 0,
        }
    }
}

/// What the answer to a batch says about each of its waiters.
pub(crate) enum Outcome<W> {
    /// Appended at this index, in the answer's term.
    Appended(LogIndex, Term, W),
    /// Not appended.
    Refused(DriverError, W),
}

impl<W> PeerProposals<W> {
    /// Proposals gathered or sent and not yet answered.
    pub(crate) fn len(&self) -> usize {
        self.gathering_waiters.len() + self.sent_waiters
    }

    /// Adds `command` for `leader` to this turn's batch. A full batch (or
    /// one for another leader) is returned as a message to send first.
    pub(crate) fn gather(
        &mut self,
        from: NodeId,
        term: Term,
        leader: NodeId,
        command: Bytes,
        waiter: W,
        now: u64,
    ) -> Option<Message> {
        let full = !self.gathering.is_empty()
            && (self.gathering_to != leader
                || self.gathering.len() >= BATCH_COMMANDS_MAX
                || self.gathering_bytes + command.len() > BATCH_BYTES_MAX);
        let flushed = if full {
            self.flush(from, term, now)
        } else {
            None
        };
        self.gathering_to = leader;
        self.gathering_bytes += command.len();
        self.gathering.push(command);
        self.gathering_waiters.push(waiter);
        flushed
    }

    /// The batch gathered this turn as a message to the leader, if any.
    pub(crate) fn flush(&mut self, from: NodeId, term: Term, now: u64) -> Option<Message> {
        if self.gathering.is_empty() {
            return None;
        }
        self.next_id = self.next_id.wrapping_add(1);
        let id = self.next_id;
        let waiters = std::mem::take(&mut self.gathering_waiters);
        self.sent_waiters += waiters.len();
        self.sent.insert(
            id,
            Sent {
                to: self.gathering_to,
                at_tick: now,
                waiters,
            },
        );
        self.gathering_bytes = 0;
        Some(Message {
            from,
            to: self.gathering_to,
            term,
            body: MessageBody::Propose {
                id,
                commands: std::mem::take(&mut self.gathering),
            },
        })
    }

    /// The leader's answer `m` (a `ProposeResponse`): what became of each
    /// command of its batch, in order. Nothing for an answer to a batch
    /// already failed (timed out, or its leader replaced) or from another
    /// member than the batch went to. `leader` is the leader this member
    /// follows now: an answer from one it no longer follows cannot be told
    /// apart from a stale one, and fails the batch as unknown (its entries
    /// may still commit, or be replaced).
    pub(crate) fn answered(&mut self, m: &Message, leader: NodeId) -> Vec<Outcome<W>> {
        let MessageBody::ProposeResponse {
            id,
            first_index,
            accepted,
            refusal,
        } = m.body
        else {
            return Vec::new();
        };
        if self.sent.get(&id).is_none_or(|s| s.to != m.from) {
            return Vec::new();
        }
        let sent = self.sent.remove(&id).expect("checked");
        self.sent_waiters -= sent.waiters.len();
        if sent.to != leader {
            return sent
                .waiters
                .into_iter()
                .map(|w| Outcome::Refused(DriverError::OutcomeUnknown, w))
                .collect();
        }
        sent.waiters
            .into_iter()
            .enumerate()
            .map(|(i, waiter)| {
                let i = i as u64;
                if i < accepted && first_index > 0 {
                    Outcome::Appended(first_index + i, m.term, waiter)
                } else {
                    Outcome::Refused(refused(refusal), waiter)
                }
            })
            .collect()
    }

    /// Fails the batches sent more than `timeout` ticks before `now`, and
    /// those sent to another member than `leader` (it changed: their
    /// answers may never come).
    pub(crate) fn expire(&mut self, now: u64, timeout: u64, leader: NodeId) -> Vec<Outcome<W>> {
        if self.sent.is_empty() {
            return Vec::new();
        }
        let gone: Vec<u64> = self
            .sent
            .iter()
            .filter(|(_, s)| s.to != leader || now.saturating_sub(s.at_tick) > timeout)
            .map(|(id, _)| *id)
            .collect();
        let mut failed = Vec::new();
        for id in gone {
            let sent = self.sent.remove(&id).expect("listed above");
            self.sent_waiters -= sent.waiters.len();
            let error = if sent.to != leader {
                DriverError::OutcomeUnknown
            } else {
                DriverError::Timeout
            };
            failed.extend(
                sent.waiters
                    .into_iter()
                    .map(|w| Outcome::Refused(error.clone(), w)),
            );
        }
        failed
    }

    /// Every waiter, gathered or sent, to answer with the same error.
    pub(crate) fn drain(&mut self) -> Vec<W> {
        self.gathering.clear();
        self.gathering_bytes = 0;
        self.sent_waiters = 0;
        let mut all = std::mem::take(&mut self.gathering_waiters);
        for (_, sent) in self.sent.drain() {
            all.extend(sent.waiters);
        }
        all
    }
}

/// The error a refused command is answered with.
fn refused(refusal: ProposeRefusal) -> DriverError {
    match refusal {
        ProposeRefusal::NotLeader => DriverError::NotLeader { leader_hint: None },
        ProposeRefusal::Busy => DriverError::Busy("the leader is busy".into()),
        ProposeRefusal::Unsupported | ProposeRefusal::None => {
            DriverError::Rejected("the leader does not take this proposal from a peer".into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(id: u64, first_index: u64, accepted: u64, refusal: ProposeRefusal) -> Message {
        Message {
            from: NodeId(1),
            to: NodeId(2),
            term: Term(3),
            body: MessageBody::ProposeResponse {
                id,
                first_index,
                accepted,
                refusal,
            },
        }
    }

    /// A proposal's batch id and number of commands.
    fn commands(m: &Message) -> (u64, usize) {
        match &m.body {
            MessageBody::Propose { id, commands } => (*id, commands.len()),
            other => panic!("not a proposal: {other:?}"),
        }
    }

    fn described<W: std::fmt::Display>(outcomes: Vec<Outcome<W>>) -> Vec<String> {
        outcomes
            .into_iter()
            .map(|o| match o {
                Outcome::Appended(i, t, w) => format!("{w}@{i}/{}", t.0),
                Outcome::Refused(e, w) => format!("{w}:{e:?}"),
            })
            .collect()
    }

    #[test]
    fn a_batch_is_answered_command_by_command() {
        let mut p = PeerProposals::default();
        let (me, leader) = (NodeId(2), NodeId(1));
        for w in 0..3u32 {
            assert!(
                p.gather(me, Term(3), leader, Bytes::from_static(b"c"), w, 0)
                    .is_none()
            );
        }
        assert_eq!(p.len(), 3);
        let m = p.flush(me, Term(3), 0).expect("three gathered");
        let (id, count) = commands(&m);
        assert_eq!((m.to, count), (leader, 3));
        assert!(p.flush(me, Term(3), 0).is_none(), "nothing left to send");
        assert_eq!(p.len(), 3, "sent and waiting");
        // An answer with another id, or from another member, is not ours.
        assert!(
            p.answered(&answer(id + 1, 10, 3, ProposeRefusal::None), leader)
                .is_empty()
        );
        let mut elsewhere = answer(id, 10, 3, ProposeRefusal::None);
        elsewhere.from = NodeId(3);
        assert!(p.answered(&elsewhere, leader).is_empty());
        assert_eq!(p.len(), 3);
        let outcomes = described(p.answered(&answer(id, 10, 2, ProposeRefusal::Busy), leader));
        assert_eq!(p.len(), 0);
        assert_eq!(outcomes[..2], ["0@10/3", "1@11/3"]);
        assert!(outcomes[2].starts_with("2:Busy"), "{outcomes:?}");
        // A second answer to the same batch finds nothing.
        assert!(
            p.answered(&answer(id, 10, 3, ProposeRefusal::None), leader)
                .is_empty()
        );
    }

    #[test]
    fn an_answer_from_a_leader_no_longer_followed_is_unknown() {
        let mut p = PeerProposals::default();
        let me = NodeId(2);
        p.gather(me, Term(3), NodeId(1), Bytes::new(), "w", 0);
        let (id, _) = commands(&p.flush(me, Term(3), 0).expect("one"));
        // Member 3 leads now; member 1's late answer may name an index
        // member 3's entries take.
        let outcomes = described(p.answered(&answer(id, 7, 1, ProposeRefusal::None), NodeId(3)));
        assert_eq!(outcomes, ["w:OutcomeUnknown"]);
        assert_eq!(p.len(), 0);
    }

    #[test]
    fn batches_are_bounded_and_go_to_one_leader() {
        let mut p = PeerProposals::default();
        let me = NodeId(2);
        let big = Bytes::from(vec![0u8; BATCH_BYTES_MAX / 2 + 1]);
        assert!(
            p.gather(me, Term(1), NodeId(1), big.clone(), 0, 0)
                .is_none()
        );
        let full = p.gather(me, Term(1), NodeId(1), big.clone(), 1, 0);
        let (first, count) = commands(&full.expect("over the byte bound"));
        assert_eq!(count, 1);
        let moved = p.gather(me, Term(2), NodeId(3), Bytes::new(), 2, 0);
        let moved = moved.expect("a new leader starts a new batch");
        assert_eq!((moved.to, commands(&moved)), (NodeId(1), (first + 1, 1)));
        for w in 3..2 + BATCH_COMMANDS_MAX {
            let flushed = p.gather(me, Term(2), NodeId(3), Bytes::new(), w, 0);
            assert!(flushed.is_none(), "room for {w}");
        }
        let full = p.gather(me, Term(2), NodeId(3), Bytes::new(), 0, 0);
        assert_eq!(
            commands(&full.expect("over the count bound")).1,
            BATCH_COMMANDS_MAX
        );
        assert_eq!(p.len(), BATCH_COMMANDS_MAX + 3);
        assert_eq!(p.drain().len(), BATCH_COMMANDS_MAX + 3);
        assert_eq!(p.len(), 0);
    }

    #[test]
    fn unanswered_batches_fail_on_timeout_or_a_new_leader() {
        let mut p = PeerProposals::default();
        let me = NodeId(2);
        p.gather(me, Term(1), NodeId(1), Bytes::new(), "old", 0);
        p.flush(me, Term(1), 0);
        p.gather(me, Term(1), NodeId(1), Bytes::new(), "new", 5);
        p.flush(me, Term(1), 5);
        assert!(p.expire(10, 10, NodeId(1)).is_empty());
        assert_eq!(described(p.expire(11, 10, NodeId(1))), ["old:Timeout"]);
        assert_eq!(
            described(p.expire(12, 10, NodeId(3))),
            ["new:OutcomeUnknown"]
        );
        assert_eq!(p.len(), 0);
    }
}
