//! The vocabulary of the core: identifiers, terms, log entries and the state
//! that must survive a crash.

use bytes::Bytes;
use std::fmt;

/// A member's identity within one cluster. Zero is reserved for "nobody".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(pub u64);

impl NodeId {
    /// "No node": no vote cast, no leader known.
    pub const NONE: NodeId = NodeId(0);

    /// Whether this names a real member.
    pub fn is_some(self) -> bool {
        self != Self::NONE
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A Raft term (§5.1): a logical clock that only moves forward.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Term(pub u64);

impl Term {
    /// The term after this one.
    pub fn next(self) -> Term {
        Term(self.0 + 1)
    }
}

impl fmt::Display for Term {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A position in the replicated log; the first entry has index 1.
///
/// Kept as a plain integer alias rather than a newtype: indexes are added to,
/// subtracted from and used as vector offsets on nearly every line of the log
/// code, and a wrapper there would hide the arithmetic that matters. Terms and
/// node ids, which are never mixed with arithmetic, are distinct types.
pub type LogIndex = u64;

/// What an entry carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EntryKind {
    /// An application command, handed to the state machine when committed.
    Normal,
    /// The empty entry a new leader appends so that it can commit in its own
    /// term (Raft §5.4.2, §8). Its data is empty; state machines skip it.
    Noop,
    /// A membership change: the data is the whole new [`ConfState`]
    /// ([`ConfState::encode`]). It takes effect as soon as it is appended
    /// (thesis §4.1), and is reverted if the entry is truncated away.
    ConfChange,
}

impl EntryKind {
    /// Wire/disk code of the kind.
    pub fn code(self) -> u8 {
        match self {
            EntryKind::Normal => 0,
            EntryKind::Noop => 1,
            EntryKind::ConfChange => 2,
        }
    }

    /// The kind for a wire/disk code, if known.
    pub fn from_code(code: u8) -> Option<EntryKind> {
        match code {
            0 => Some(EntryKind::Normal),
            1 => Some(EntryKind::Noop),
            2 => Some(EntryKind::ConfChange),
            _ => None,
        }
    }
}

/// One log entry.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Entry {
    /// The term of the leader that created it.
    pub term: Term,
    /// Its position in the log.
    pub index: LogIndex,
    /// What it carries.
    pub kind: EntryKind,
    /// The command bytes (empty for [`EntryKind::Noop`]).
    pub data: Bytes,
}

impl Entry {
    /// Fixed per-entry overhead counted in byte budgets (term, index, kind,
    /// framing), so that empty entries are not free.
    pub const OVERHEAD_BYTES: u64 = 24;

    /// The bytes this entry counts for in message, inflight and uncommitted
    /// budgets.
    pub fn size_bytes(&self) -> u64 {
        Self::OVERHEAD_BYTES + self.data.len() as u64
    }
}

/// The state that must be durable before a message that depends on it is sent
/// (Raft Figure 2, "persistent state on all servers"; the commit index is kept
/// too so that a restarted node can re-apply without waiting for a leader).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct HardState {
    /// The latest term this node has seen.
    pub term: Term,
    /// Whom it voted for in `term`, or [`NodeId::NONE`].
    pub vote: NodeId,
    /// The highest index it knows to be committed.
    pub commit: LogIndex,
}

/// The cluster configuration: who votes and who only follows the log.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct ConfState {
    /// Members counted in elections and commit quorums.
    pub voters: Vec<NodeId>,
    /// Members that receive the log but neither vote nor count.
    pub learners: Vec<NodeId>,
}

impl ConfState {
    /// Whether `id` is a voter or a learner.
    pub fn contains(&self, id: NodeId) -> bool {
        self.voters.contains(&id) || self.learners.contains(&id)
    }

    /// Encodes for a [`EntryKind::ConfChange`] entry or a snapshot header:
    /// voter count, voters, learner count, learners, all u64 little-endian.
    pub fn encode(&self) -> Bytes {
        let mut out = Vec::with_capacity(16 + 8 * (self.voters.len() + self.learners.len()));
        for group in [&self.voters, &self.learners] {
            out.extend_from_slice(&(group.len() as u64).to_le_bytes());
            for id in group {
                out.extend_from_slice(&id.0.to_le_bytes());
            }
        }
        Bytes::from(out)
    }

    /// Decodes [`ConfState::encode`]'s output; None when malformed.
    pub fn decode(data: &[u8]) -> Option<ConfState> {
        match Self::decode_prefix(data)? {
            (conf, used) if used == data.len() => Some(conf),
            _ => None,
        }
    }

    /// Decodes a configuration at the start of `data`; returns it and the
    /// bytes it took.
    pub fn decode_prefix(all: &[u8]) -> Option<(ConfState, usize)> {
        let mut data = all;
        let mut read_u64 = || -> Option<u64> {
            let (head, tail) = data.split_at_checked(8)?;
            data = tail;
            Some(u64::from_le_bytes(head.try_into().ok()?))
        };
        let mut groups: [Vec<NodeId>; 2] = [Vec::new(), Vec::new()];
        for group in &mut groups {
            let n = read_u64()?;
            if n > 1 << 16 {
                return None;
            }
            for _ in 0..n {
                group.push(NodeId(read_u64()?));
            }
        }
        let [voters, learners] = groups;
        Some((ConfState { voters, learners }, all.len() - data.len()))
    }
}

/// Where a snapshot stands in the log, and the configuration at that point.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct SnapshotMeta {
    /// The last log index the snapshot covers.
    pub index: LogIndex,
    /// The term of that entry.
    pub term: Term,
    /// The configuration in force at `index`.
    pub conf_state: ConfState,
}

/// A state machine snapshot: everything up to `meta.index`, in the
/// application's own encoding.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Snapshot {
    /// Position and configuration.
    pub meta: SnapshotMeta,
    /// The application's serialized state.
    pub data: Bytes,
}

/// A node's role (Raft §5.2, plus the pre-vote phase of Ongaro's thesis §9.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// Follows a leader (or waits for one).
    Follower,
    /// Asks whether it could win before disturbing anybody's term.
    PreCandidate,
    /// Campaigns for votes in a new term.
    Candidate,
    /// Leads its term.
    Leader,
}

/// Volatile state the application may want to watch (leader changes, role).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SoftState {
    /// The leader this node knows of, or [`NodeId::NONE`].
    pub leader: NodeId,
    /// This node's role.
    pub role: Role,
}

/// The answer to a read request: once the state machine has applied `index`,
/// a read started before the request reflects every write completed before it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ReadState {
    /// The commit index at the time the read was confirmed.
    pub index: LogIndex,
    /// The caller's request context, echoed back.
    pub ctx: Bytes,
}
