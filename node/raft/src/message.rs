//! Messages exchanged between cores. The transport is the driver's business;
//! the core only produces and consumes these values.

use crate::types::{Entry, LogIndex, NodeId, SnapshotMeta, Term};
use bytes::Bytes;

/// One message between two members.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// Sender.
    pub from: NodeId,
    /// Recipient.
    pub to: NodeId,
    /// The sender's term (for a pre-vote request: the term it would campaign
    /// in; for a granted pre-vote response: the term of the request).
    pub term: Term,
    /// What it says.
    pub body: MessageBody,
}

/// The kinds of message and their fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MessageBody {
    /// Would you vote for me in `term`? (thesis §9.6). Changes nobody's term.
    PreVote {
        /// Index of the candidate's last entry.
        last_log_index: LogIndex,
        /// Term of the candidate's last entry.
        last_log_term: Term,
    },
    /// Answer to [`MessageBody::PreVote`].
    PreVoteResponse {
        /// True when refused.
        reject: bool,
    },
    /// RequestVote RPC (Raft §5.2, §5.4.1).
    RequestVote {
        /// Index of the candidate's last entry.
        last_log_index: LogIndex,
        /// Term of the candidate's last entry.
        last_log_term: Term,
        /// Set when the campaign follows a leadership transfer: voters then
        /// skip their leader-lease check (thesis §3.10, §6.4.1).
        leader_transfer: bool,
    },
    /// Answer to [`MessageBody::RequestVote`].
    RequestVoteResponse {
        /// True when refused.
        reject: bool,
    },
    /// AppendEntries RPC (Raft §5.3): entries after `prev_log_index`.
    AppendEntries {
        /// Index of the entry before the first one carried.
        prev_log_index: LogIndex,
        /// Term of that entry.
        prev_log_term: Term,
        /// The entries, possibly none (a probe).
        entries: Vec<Entry>,
        /// The leader's commit index.
        leader_commit: LogIndex,
        /// Set on an append without entries that the leader sends only to
        /// pass on its commit index, to a follower that has acknowledged
        /// everything up to `prev_log_index` or whose acknowledgement of it
        /// is on its way: a follower whose log matches then takes the
        /// commit index without answering (the answer would repeat one the
        /// leader has or will get; heartbeats keep telling the leader it is
        /// alive). A mismatch is answered all the same, and so is an append
        /// that carries entries.
        quiet: bool,
    },
    /// Answer to [`MessageBody::AppendEntries`].
    AppendEntriesResponse {
        /// True when the follower's log did not match at `prev_log_index`.
        reject: bool,
        /// On success, the follower's last index matching the leader's log;
        /// on rejection, the `prev_log_index` that was rejected.
        index: LogIndex,
        /// On rejection, a hint for fast backtracking (thesis §5.3 optimisation):
        /// the follower's log holds no entry of a term above `hint_term` at or
        /// before `hint_index`, so the leader may skip to it.
        hint_index: LogIndex,
        /// The term of the follower's entry at `hint_index`.
        hint_term: Term,
    },
    /// Leader heartbeat: keeps followers from starting elections, carries the
    /// commit index the follower can safely use, and confirms leadership for
    /// ReadIndex and leases through the round number `round`.
    Heartbeat {
        /// `min(leader commit, follower's match index)`.
        commit: LogIndex,
        /// Heartbeat round, echoed back in the response.
        round: u64,
    },
    /// Answer to [`MessageBody::Heartbeat`].
    HeartbeatResponse {
        /// The round being acknowledged.
        round: u64,
    },
    /// A follower forwards a linearizable read request to its leader.
    ReadIndex {
        /// The caller's context.
        ctx: Bytes,
    },
    /// The leader's answer to a forwarded read.
    ReadIndexResponse {
        /// The read may be served once this index is applied.
        index: LogIndex,
        /// The caller's context, echoed.
        ctx: Bytes,
    },
    /// Start an election now, skipping pre-vote (leadership transfer, thesis §3.10).
    TimeoutNow,
    /// One chunk of a snapshot (Raft §7, chunked as in Figure 13).
    InstallSnapshot {
        /// Index, term and configuration of the snapshot.
        meta: SnapshotMeta,
        /// Byte offset of this chunk in the snapshot data.
        offset: u64,
        /// The chunk.
        data: Bytes,
        /// CRC-32 of `data`.
        chunk_crc: u32,
        /// Whether this is the last chunk.
        done: bool,
        /// Total size of the snapshot data.
        total_bytes: u64,
        /// CRC-32 of the whole snapshot data, checked before installing.
        snapshot_crc: u32,
    },
    /// Answer to a chunk that was not the completing one (completion is
    /// answered with an [`MessageBody::AppendEntriesResponse`]).
    InstallSnapshotResponse {
        /// Whether the chunk was taken.
        accepted: bool,
        /// The offset the follower expects next.
        next_offset: u64,
        /// The index of the snapshot the answered chunk belongs to, so that
        /// a late answer about another one (sent before, or replaced
        /// mid-send) counts for nothing (a late answer from an earlier send
        /// of the same snapshot still counts); 0 from a member of an
        /// earlier release, which did not say: its answers count for the
        /// snapshot being sent.
        snapshot_index: LogIndex,
    },
    /// A follower's commands for its leader to append, carried for the
    /// drivers: the core never steps it (see [`MessageBody::for_driver`]).
    Propose {
        /// The follower's number for the batch, echoed in the answer.
        id: u64,
        /// The encoded commands, in order.
        commands: Vec<Bytes>,
    },
    /// The leader's answer to [`MessageBody::Propose`], sent before the
    /// appends that carry the accepted entries, so that the follower knows
    /// what to wait for before the entries reach it. Carried for the
    /// drivers, like the proposal. The message's term is the entries' term.
    ProposeResponse {
        /// The batch answered.
        id: u64,
        /// The index of the first accepted command's entry; the others
        /// follow it one by one.
        first_index: LogIndex,
        /// How many commands, from the first, were appended.
        accepted: u64,
        /// Why the rest were not: [`ProposeRefusal`].
        refusal: ProposeRefusal,
    },
}

/// Why a leader did not append the commands of a
/// [`MessageBody::Propose`] past its `accepted` ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProposeRefusal {
    /// None refused.
    None,
    /// The receiver does not lead (or is handing leadership over).
    NotLeader,
    /// Too much is uncommitted or waiting: try later.
    Busy,
    /// The receiver does not take this command from a peer (it must go the
    /// way the follower forwards everything else).
    Unsupported,
}

impl MessageBody {
    /// Whether the message is between drivers rather than cores: a
    /// follower's proposal and its answer. The core ignores these.
    pub fn for_driver(&self) -> bool {
        matches!(
            self,
            MessageBody::Propose { .. } | MessageBody::ProposeResponse { .. }
        )
    }
}

impl Message {
    /// Approximate encoded size, used by byte budgets and by tests that count
    /// replication traffic.
    pub fn size_bytes(&self) -> u64 {
        const HEADER_BYTES: u64 = 32;
        HEADER_BYTES
            + match &self.body {
                MessageBody::AppendEntries { entries, .. } => {
                    24 + entries.iter().map(Entry::size_bytes).sum::<u64>()
                }
                MessageBody::ReadIndex { ctx } | MessageBody::ReadIndexResponse { ctx, .. } => {
                    8 + ctx.len() as u64
                }
                MessageBody::InstallSnapshot { meta, data, .. } => {
                    64 + 8 * (meta.conf_state.voters.len() + meta.conf_state.learners.len()) as u64
                        + data.len() as u64
                }
                MessageBody::Propose { commands, .. } => {
                    8 + commands.iter().map(|c| 4 + c.len() as u64).sum::<u64>()
                }
                _ => 24,
            }
    }

    /// Short name of the kind, for logs and fault filters.
    pub fn kind(&self) -> &'static str {
        match self.body {
            MessageBody::PreVote { .. } => "PreVote",
            MessageBody::PreVoteResponse { .. } => "PreVoteResponse",
            MessageBody::RequestVote { .. } => "RequestVote",
            MessageBody::RequestVoteResponse { .. } => "RequestVoteResponse",
            MessageBody::AppendEntries { .. } => "AppendEntries",
            MessageBody::AppendEntriesResponse { .. } => "AppendEntriesResponse",
            MessageBody::Heartbeat { .. } => "Heartbeat",
            MessageBody::HeartbeatResponse { .. } => "HeartbeatResponse",
            MessageBody::ReadIndex { .. } => "ReadIndex",
            MessageBody::ReadIndexResponse { .. } => "ReadIndexResponse",
            MessageBody::TimeoutNow => "TimeoutNow",
            MessageBody::InstallSnapshot { .. } => "InstallSnapshot",
            MessageBody::InstallSnapshotResponse { .. } => "InstallSnapshotResponse",
            MessageBody::Propose { .. } => "Propose",
            MessageBody::ProposeResponse { .. } => "ProposeResponse",
        }
    }
}
