//! What the core asks the driver to do.

use crate::message::Message;
use crate::types::{Entry, HardState, ReadState, Snapshot, SoftState};

/// Work for the driver, handled in the order of the crate docs: persist
/// `hard_state` and `entries`, then send `messages`, then apply
/// `committed_entries` and serve `read_states`, then call `advance`.
#[derive(Debug, Default)]
pub struct Ready {
    /// Changed role or leader, if any (volatile; nothing to persist).
    pub soft_state: Option<SoftState>,
    /// A snapshot from the leader to install before anything else: persist
    /// it with `Storage::apply_snapshot` and restore the state machine from
    /// it. `entries` and `committed_entries` follow it.
    pub snapshot: Option<Snapshot>,
    /// Hard state to persist, when it changed.
    pub hard_state: Option<HardState>,
    /// Entries to persist, replacing any saved at or after the first one's
    /// index.
    pub entries: Vec<Entry>,
    /// Messages to send once the above is durable, or before persisting
    /// when `messages_first` says so.
    pub messages: Vec<Message>,
    /// Whether `messages` may be sent before (or while) persisting: set for
    /// a leader whose term and vote are already durable. Its messages carry
    /// entries that followers may store before it does, since a leader
    /// counts its own entries toward commitment only after `advance`
    /// (Raft thesis §10.2.1). Overlapping the leader's write with the
    /// followers' takes one disk write off each commit's critical path.
    pub messages_first: bool,
    /// Committed entries to apply, in order.
    pub committed_entries: Vec<Entry>,
    /// Confirmed reads: serve each once its index is applied.
    pub read_states: Vec<crate::types::ReadState>,
}

impl Ready {
    /// Whether there is anything to persist.
    pub fn must_persist(&self) -> bool {
        self.snapshot.is_some() || self.hard_state.is_some() || !self.entries.is_empty()
    }

    /// Whether there is nothing at all to do.
    pub fn is_empty(&self) -> bool {
        self.soft_state.is_none()
            && !self.must_persist()
            && self.messages.is_empty()
            && self.committed_entries.is_empty()
            && self.read_states.is_empty()
    }

    /// Read states, by value (convenience for drivers that move them out).
    pub fn take_read_states(&mut self) -> Vec<ReadState> {
        std::mem::take(&mut self.read_states)
    }
}
