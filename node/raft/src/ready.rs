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
    /// Messages to send once the above is durable.
    pub messages: Vec<Message>,
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
