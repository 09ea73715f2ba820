//! What the driver needs from the application and from the network.

use flotilla_raft::{Bytes, LogIndex, Message, Snapshot, SnapshotEncoder, SnapshotMeta};

/// The replicated state machine the driver applies committed commands to.
/// It runs on the driver task: keep `apply` short and free of IO. A
/// command that cannot be short says so ([`Self::is_heavy`]) and is applied
/// on a thread of its own, the state machine moved there meanwhile.
pub trait StateMachine: Send + 'static {
    /// What applying one command returns to its proposer.
    type Output: Send + 'static;

    /// Applies the command committed at `index`.
    fn apply(&mut self, index: LogIndex, command: &Bytes) -> Self::Output;

    /// Whether applying `command` may take long (a scan or a deletion of
    /// many keys): the driver then applies it, and the entries queued
    /// after it, off its own thread, and keeps ticking and answering its
    /// peers meanwhile (see [`super::Step`]). Called for each command
    /// before it applies, on the driver: decide from the command and
    /// cheap lookups alone. A wrong guess costs time, never correctness.
    fn is_heavy(&self, command: &Bytes) -> bool {
        let _ = command;
        false
    }

    /// Applies the membership change committed at `index`: `context` is
    /// what its proposer put beside the new configuration (see
    /// [`RaftHandle::change_membership`](super::RaftHandle::change_membership));
    /// empty for changes proposed without one. Raft's configuration changed
    /// with the entry whatever this returns, so it must not refuse a change
    /// its proposer validated.
    fn apply_conf_change(&mut self, index: LogIndex, context: &Bytes) -> Self::Output;

    /// The whole state, for a snapshot at the applied index.
    fn snapshot(&self) -> Bytes;

    /// The whole state frozen at the applied index: the returned encoder
    /// writes it (the bytes [`Self::snapshot`] would give) into the sink
    /// it is given — the snapshot's file — on another thread while the
    /// driver goes on applying. Override it where the state can be frozen
    /// cheaply, and write it in pieces so the encoded state is never held
    /// whole; this default encodes at once.
    fn freeze(&self) -> SnapshotEncoder {
        let data = self.snapshot();
        Box::new(move |sink| sink.write_all(&data))
    }

    /// A copy of the state as it is now, taken when this state machine
    /// leaves to apply a heavy run elsewhere: reads that may be stale
    /// (serializable: [`super::RaftHandle::read_stale`]) run on it
    /// meanwhile instead of waiting. It is only read, never applied to,
    /// and dropped when the state machine comes home. Return `None` (the
    /// default) where no cheap copy can be had: such reads then wait.
    fn read_copy(&self) -> Option<Self>
    where
        Self: Sized,
    {
        None
    }

    /// Called on a copy from [`Self::read_copy`]: whether reads may still
    /// run on it, i.e. no client can yet have seen anything the state
    /// machine applied since the copy was taken (a watch event sent from
    /// the run). Once false, reads that may be stale wait for the state
    /// machine, so that none returns a state older than what its client
    /// was already sent. The default: true (nothing leaves before the run
    /// comes home).
    fn copy_is_current(&self) -> bool {
        true
    }

    /// Replaces the state by a snapshot's.
    fn restore(&mut self, snapshot: &Snapshot) -> Result<(), String>;

    /// Replaces the state by that of the snapshot at `meta`, whose data
    /// (the bytes [`Self::snapshot`] gave) is read from `data`: a file of
    /// the storage's, as large as the state, so decode it as a stream where
    /// the encoding allows. This default reads it whole, then calls
    /// [`Self::restore`].
    fn restore_from(
        &mut self,
        meta: &SnapshotMeta,
        data: &mut dyn std::io::Read,
    ) -> Result<(), String> {
        let mut buf = Vec::new();
        data.read_to_end(&mut buf)
            .map_err(|e| format!("cannot read snapshot {}: {e}", meta.index))?;
        self.restore(&Snapshot {
            meta: meta.clone(),
            data: Bytes::from(buf),
        })
    }
}

/// Delivers messages to peers. `send` must not block: queue, and drop when a
/// peer's queue is full (Raft tolerates lost messages).
pub trait Transport: Send + 'static {
    /// Sends each message to its `to`.
    fn send(&mut self, messages: Vec<Message>);
}
