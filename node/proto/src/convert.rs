//! Conversions between the Raft core's [`Message`] and the wire
//! [`raft::RaftMessage`].
//!
//! Encoding cannot fail. Decoding checks what the core relies on and a
//! protobuf decoder cannot: exactly one body case, required sub-messages
//! present, known entry kinds, no node id 0, and AppendEntries entries that
//! form a log segment (consecutive indexes right after `prev_log_index`,
//! terms that never go down nor exceed the sender's). The core asserts on a
//! gap in appended entries, so a malformed message from a peer must stop here
//! as a [`DecodeError`], never reach it.
//!
//! ```
//! use flotilla_proto::raft::RaftMessage;
//! use flotilla_raft::{Message, MessageBody, NodeId, Term};
//!
//! let m = Message {
//!     from: NodeId(1),
//!     to: NodeId(2),
//!     term: Term(3),
//!     body: MessageBody::Heartbeat { commit: 10, round: 4 },
//! };
//! let wire = RaftMessage::from(&m); // what goes into a PeerBatch
//! assert_eq!(Message::try_from(wire), Ok(m));
//!
//! let empty = RaftMessage { from: 1, to: 2, term: 3, body: None };
//! assert!(Message::try_from(empty).is_err());
//! ```

use crate::raft::{self, raft_message::Body};
use bytes::Bytes;
use flotilla_raft::{
    ConfState, Entry, EntryKind, LogIndex, Message, MessageBody, NodeId, ProposeRefusal,
    SnapshotMeta, Term,
};

/// Why a wire message is not a valid [`Message`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The `body` oneof is not set (or holds a case this build does not know).
    #[error("raft message from {from} to {to} has no body")]
    MissingBody {
        /// Sender, as sent.
        from: u64,
        /// Recipient, as sent.
        to: u64,
    },
    /// A required sub-message is absent.
    #[error("{message} has no `{field}`")]
    MissingField {
        /// The message lacking it.
        message: &'static str,
        /// The field.
        field: &'static str,
    },
    /// An entry kind this build does not know.
    #[error("entry {index} has unknown kind {code}")]
    UnknownEntryKind {
        /// The entry's index.
        index: LogIndex,
        /// The kind code received.
        code: i32,
    },
    /// Node id 0 ("nobody") where a member must be named.
    #[error("node id 0 in `{field}`")]
    ZeroNodeId {
        /// Where it was found.
        field: &'static str,
    },
    /// AppendEntries entries that are not a log segment following
    /// `prev_log_index`.
    #[error(
        "append entries: entry at position {position} has index {index} and term {term}, \
         expected index {expected_index} and a term from {min_term} to {max_term}"
    )]
    BadEntrySequence {
        /// Position of the offending entry in the message.
        position: usize,
        /// Its index.
        index: LogIndex,
        /// Its term.
        term: u64,
        /// The index it should have.
        expected_index: LogIndex,
        /// The lowest term it may have (the previous entry's).
        min_term: u64,
        /// The highest term it may have (the message's).
        max_term: u64,
    },
}

impl From<&Message> for raft::RaftMessage {
    fn from(m: &Message) -> Self {
        raft::RaftMessage {
            from: m.from.0,
            to: m.to.0,
            term: m.term.0,
            body: Some(encode_body(&m.body)),
        }
    }
}

impl From<Message> for raft::RaftMessage {
    fn from(m: Message) -> Self {
        raft::RaftMessage::from(&m)
    }
}

impl TryFrom<raft::RaftMessage> for Message {
    type Error = DecodeError;

    fn try_from(m: raft::RaftMessage) -> Result<Self, DecodeError> {
        let from = node_id(m.from, "from")?;
        let to = node_id(m.to, "to")?;
        let term = Term(m.term);
        let body = m.body.ok_or(DecodeError::MissingBody {
            from: m.from,
            to: m.to,
        })?;
        Ok(Message {
            from,
            to,
            term,
            body: decode_body(body, term)?,
        })
    }
}

impl From<&Entry> for raft::Entry {
    fn from(e: &Entry) -> Self {
        raft::Entry {
            term: e.term.0,
            index: e.index,
            kind: raft::EntryKind::from(e.kind).into(),
            data: e.data.clone(),
        }
    }
}

impl TryFrom<raft::Entry> for Entry {
    type Error = DecodeError;

    fn try_from(e: raft::Entry) -> Result<Self, DecodeError> {
        let kind = raft::EntryKind::try_from(e.kind)
            .map_err(|_| DecodeError::UnknownEntryKind {
                index: e.index,
                code: e.kind,
            })?
            .into();
        Ok(Entry {
            term: Term(e.term),
            index: e.index,
            kind,
            // A copy, not the decoded slice: entries stay in the Raft log
            // until the next snapshot, and a slice would keep its whole
            // receive buffer alive with it (measured on a follower: ~47 MB
            // of buffers for ~27 MB of payloads over 100,000 entries).
            data: Bytes::copy_from_slice(&e.data),
        })
    }
}

impl From<EntryKind> for raft::EntryKind {
    fn from(kind: EntryKind) -> Self {
        match kind {
            EntryKind::Normal => raft::EntryKind::Normal,
            EntryKind::Noop => raft::EntryKind::Noop,
            EntryKind::ConfChange => raft::EntryKind::ConfChange,
        }
    }
}

impl From<raft::EntryKind> for EntryKind {
    fn from(kind: raft::EntryKind) -> Self {
        match kind {
            raft::EntryKind::Normal => EntryKind::Normal,
            raft::EntryKind::Noop => EntryKind::Noop,
            raft::EntryKind::ConfChange => EntryKind::ConfChange,
        }
    }
}

impl From<&ConfState> for raft::ConfState {
    fn from(c: &ConfState) -> Self {
        raft::ConfState {
            voters: c.voters.iter().map(|id| id.0).collect(),
            learners: c.learners.iter().map(|id| id.0).collect(),
        }
    }
}

impl TryFrom<raft::ConfState> for ConfState {
    type Error = DecodeError;

    fn try_from(c: raft::ConfState) -> Result<Self, DecodeError> {
        let ids = |ids: Vec<u64>, field| -> Result<Vec<NodeId>, DecodeError> {
            ids.into_iter().map(|id| node_id(id, field)).collect()
        };
        Ok(ConfState {
            voters: ids(c.voters, "conf_state.voters")?,
            learners: ids(c.learners, "conf_state.learners")?,
        })
    }
}

impl From<&SnapshotMeta> for raft::SnapshotMeta {
    fn from(m: &SnapshotMeta) -> Self {
        raft::SnapshotMeta {
            index: m.index,
            term: m.term.0,
            conf_state: Some((&m.conf_state).into()),
        }
    }
}

impl TryFrom<raft::SnapshotMeta> for SnapshotMeta {
    type Error = DecodeError;

    fn try_from(m: raft::SnapshotMeta) -> Result<Self, DecodeError> {
        let conf_state = m.conf_state.ok_or(DecodeError::MissingField {
            message: "SnapshotMeta",
            field: "conf_state",
        })?;
        Ok(SnapshotMeta {
            index: m.index,
            term: Term(m.term),
            conf_state: conf_state.try_into()?,
        })
    }
}

fn node_id(id: u64, field: &'static str) -> Result<NodeId, DecodeError> {
    let id = NodeId(id);
    if id.is_some() {
        Ok(id)
    } else {
        Err(DecodeError::ZeroNodeId { field })
    }
}

fn encode_body(body: &MessageBody) -> Body {
    match body {
        MessageBody::PreVote {
            last_log_index,
            last_log_term,
        } => Body::PreVote(raft::PreVote {
            last_log_index: *last_log_index,
            last_log_term: last_log_term.0,
        }),
        MessageBody::PreVoteResponse { reject } => {
            Body::PreVoteResponse(raft::PreVoteResponse { reject: *reject })
        }
        MessageBody::RequestVote {
            last_log_index,
            last_log_term,
            leader_transfer,
        } => Body::RequestVote(raft::RequestVote {
            last_log_index: *last_log_index,
            last_log_term: last_log_term.0,
            leader_transfer: *leader_transfer,
        }),
        MessageBody::RequestVoteResponse { reject } => {
            Body::RequestVoteResponse(raft::RequestVoteResponse { reject: *reject })
        }
        MessageBody::AppendEntries {
            prev_log_index,
            prev_log_term,
            entries,
            leader_commit,
            quiet,
        } => Body::AppendEntries(raft::AppendEntries {
            prev_log_index: *prev_log_index,
            prev_log_term: prev_log_term.0,
            entries: entries.iter().map(raft::Entry::from).collect(),
            leader_commit: *leader_commit,
            quiet: *quiet,
        }),
        MessageBody::AppendEntriesResponse {
            reject,
            index,
            hint_index,
            hint_term,
        } => Body::AppendEntriesResponse(raft::AppendEntriesResponse {
            reject: *reject,
            index: *index,
            hint_index: *hint_index,
            hint_term: hint_term.0,
        }),
        MessageBody::Heartbeat { commit, round } => Body::Heartbeat(raft::Heartbeat {
            commit: *commit,
            round: *round,
        }),
        MessageBody::HeartbeatResponse { round } => {
            Body::HeartbeatResponse(raft::HeartbeatResponse { round: *round })
        }
        MessageBody::ReadIndex { ctx } => Body::ReadIndex(raft::ReadIndex { ctx: ctx.clone() }),
        MessageBody::ReadIndexResponse { index, ctx } => {
            Body::ReadIndexResponse(raft::ReadIndexResponse {
                index: *index,
                ctx: ctx.clone(),
            })
        }
        MessageBody::TimeoutNow => Body::TimeoutNow(raft::TimeoutNow {}),
        MessageBody::InstallSnapshot {
            meta,
            offset,
            data,
            chunk_crc,
            done,
            total_bytes,
            snapshot_crc,
        } => Body::InstallSnapshot(raft::InstallSnapshot {
            meta: Some(meta.into()),
            offset: *offset,
            data: data.clone(),
            chunk_crc: *chunk_crc,
            done: *done,
            total_bytes: *total_bytes,
            snapshot_crc: *snapshot_crc,
        }),
        MessageBody::InstallSnapshotResponse {
            accepted,
            next_offset,
            snapshot_index,
        } => Body::InstallSnapshotResponse(raft::InstallSnapshotResponse {
            accepted: *accepted,
            next_offset: *next_offset,
            snapshot_index: *snapshot_index,
        }),
        MessageBody::Propose { id, commands } => Body::Propose(raft::Propose {
            id: *id,
            commands: commands.clone(),
        }),
        MessageBody::ProposeResponse {
            id,
            first_index,
            accepted,
            refusal,
        } => Body::ProposeResponse(raft::ProposeResponse {
            id: *id,
            first_index: *first_index,
            accepted: *accepted,
            refusal: match refusal {
                ProposeRefusal::None => raft::ProposeRefusal::None,
                ProposeRefusal::NotLeader => raft::ProposeRefusal::NotLeader,
                ProposeRefusal::Busy => raft::ProposeRefusal::Busy,
                ProposeRefusal::Unsupported => raft::ProposeRefusal::Unsupported,
            } as i32,
        }),
    }
}

fn decode_body(body: Body, term: Term) -> Result<MessageBody, DecodeError> {
    Ok(match body {
        Body::PreVote(b) => MessageBody::PreVote {
            last_log_index: b.last_log_index,
            last_log_term: Term(b.last_log_term),
        },
        Body::PreVoteResponse(b) => MessageBody::PreVoteResponse { reject: b.reject },
        Body::RequestVote(b) => MessageBody::RequestVote {
            last_log_index: b.last_log_index,
            last_log_term: Term(b.last_log_term),
            leader_transfer: b.leader_transfer,
        },
        Body::RequestVoteResponse(b) => MessageBody::RequestVoteResponse { reject: b.reject },
        Body::AppendEntries(b) => decode_append_entries(b, term)?,
        Body::AppendEntriesResponse(b) => MessageBody::AppendEntriesResponse {
            reject: b.reject,
            index: b.index,
            hint_index: b.hint_index,
            hint_term: Term(b.hint_term),
        },
        Body::Heartbeat(b) => MessageBody::Heartbeat {
            commit: b.commit,
            round: b.round,
        },
        Body::HeartbeatResponse(b) => MessageBody::HeartbeatResponse { round: b.round },
        Body::ReadIndex(b) => MessageBody::ReadIndex { ctx: b.ctx },
        Body::ReadIndexResponse(b) => MessageBody::ReadIndexResponse {
            index: b.index,
            ctx: b.ctx,
        },
        Body::TimeoutNow(raft::TimeoutNow {}) => MessageBody::TimeoutNow,
        Body::InstallSnapshot(b) => {
            let meta = b.meta.ok_or(DecodeError::MissingField {
                message: "InstallSnapshot",
                field: "meta",
            })?;
            MessageBody::InstallSnapshot {
                meta: meta.try_into()?,
                offset: b.offset,
                data: b.data,
                chunk_crc: b.chunk_crc,
                done: b.done,
                total_bytes: b.total_bytes,
                snapshot_crc: b.snapshot_crc,
            }
        }
        Body::InstallSnapshotResponse(b) => MessageBody::InstallSnapshotResponse {
            accepted: b.accepted,
            next_offset: b.next_offset,
            snapshot_index: b.snapshot_index,
        },
        Body::Propose(b) => MessageBody::Propose {
            id: b.id,
            commands: b.commands,
        },
        Body::ProposeResponse(b) => MessageBody::ProposeResponse {
            id: b.id,
            first_index: b.first_index,
            accepted: b.accepted,
            // A refusal this release does not know is still a refusal.
            refusal: match raft::ProposeRefusal::try_from(b.refusal) {
                Ok(raft::ProposeRefusal::None) => ProposeRefusal::None,
                Ok(raft::ProposeRefusal::NotLeader) => ProposeRefusal::NotLeader,
                Ok(raft::ProposeRefusal::Busy) => ProposeRefusal::Busy,
                Ok(raft::ProposeRefusal::Unsupported) | Err(_) => ProposeRefusal::Unsupported,
            },
        },
    })
}

/// Decodes AppendEntries and checks its entries form the log segment right
/// after `prev_log_index` (Raft's log matching property makes any other shape
/// impossible from a correct leader).
fn decode_append_entries(b: raft::AppendEntries, term: Term) -> Result<MessageBody, DecodeError> {
    let mut entries = Vec::with_capacity(b.entries.len());
    let mut expected_index = b.prev_log_index.checked_add(1);
    let mut min_term = b.prev_log_term;
    for (position, entry) in b.entries.into_iter().enumerate() {
        let entry = Entry::try_from(entry)?;
        if Some(entry.index) != expected_index || entry.term.0 < min_term || entry.term > term {
            return Err(DecodeError::BadEntrySequence {
                position,
                index: entry.index,
                term: entry.term.0,
                expected_index: expected_index.unwrap_or(u64::MAX),
                min_term,
                max_term: term.0,
            });
        }
        expected_index = entry.index.checked_add(1);
        min_term = entry.term.0;
        entries.push(entry);
    }
    // Only an append that carries nothing may go unanswered.
    let quiet = b.quiet && entries.is_empty();
    Ok(MessageBody::AppendEntries {
        prev_log_index: b.prev_log_index,
        prev_log_term: Term(b.prev_log_term),
        entries,
        leader_commit: b.leader_commit,
        quiet,
    })
}

#[cfg(test)]
#[path = "convert_tests.rs"]
mod tests;
