//! Flotilla's Raft consensus core: a pure, deterministic state machine.
//!
//! The core does no IO, reads no clock and draws no global randomness. Time is
//! [`Raft::tick`]; randomness comes from [`Config::seed`]; messages arrive
//! through [`Raft::step`] and leave in a [`Ready`]. That makes it testable by
//! seeded simulation and lets the same code run under a tokio driver in the
//! node.
//!
//! # Layout
//!
//! | module | what |
//! |---|---|
//! | `types` | ids, terms, entries, hard and soft state |
//! | `message` | the messages between members |
//! | `config` | tuning and every bound the core keeps |
//! | `storage` | the [`Storage`] trait (the spec's Persister) and [`MemStorage`] |
//! | `raft` | the [`Raft`] core: inputs, role changes, `Ready`/`advance` |
//! | `election` | elections, pre-vote, the vote lease |
//! | `replication` | pipelined, batched AppendEntries and commitment |
//! | `read` | ReadIndex and lease reads |
//! | `snapshot` | compaction and chunked InstallSnapshot |
//! | `membership` | learners and one-voter-at-a-time changes |
//! | `progress` | the leader's per-follower flow control |
//!
//! # The driver contract
//!
//! A driver owns one [`Raft`] and loops:
//!
//! 1. Feed inputs: [`Raft::tick`] on a timer, [`Raft::step`] for each message
//!    received, [`Raft::propose`] / [`Raft::read_index`] /
//!    [`Raft::transfer_leader`] for clients.
//! 2. When [`Raft::has_ready`] says so, take a [`Ready`] with [`Raft::ready`].
//! 3. **Persist**: first `ready.snapshot`, if any, with
//!    [`Storage::apply_snapshot`]; then `ready.hard_state` and `ready.entries`
//!    with one [`Storage::save`] call; wait until both are durable. Entries
//!    replace any saved at or after the first one's index.
//!    **Or defer the sync**: [`Storage::save_deferred`] writes them and
//!    returns a [`LogSync`] to make them durable later, on another thread,
//!    while this loop goes on. The driver then calls
//!    [`Raft::advance_written`] instead of [`Raft::advance`] in step 6,
//!    and, once the sync returns, [`Raft::persisted`] with the last
//!    entry's index and term (a leader counts its own entries toward
//!    commitment only from then on, as with a synchronous save). A term
//!    or vote is still saved before `save_deferred` returns.
//! 4. **Send** `ready.messages` — only now: a vote or an append acknowledgement
//!    promises that step 3 is on disk. Sending may be asynchronous and lossy.
//!    Exception: when `ready.messages_first` is set (a leader whose term and
//!    vote are durable), the driver may send them before or while doing
//!    step 3, so that the leader's disk write overlaps the followers'.
//!    After a deferred sync, the messages that promise the log durable
//!    (`AppendEntriesResponse`, `RequestVoteResponse`) wait for it, and so
//!    do those of any later `Ready` while a sync begun before it is not
//!    done (an acknowledgement may cover entries an earlier `Ready`
//!    wrote); the others promise nothing and may go at once. A `Ready`
//!    saved durably (with [`Raft::advance`]) must also have made every
//!    earlier deferred write durable, as one `fdatasync` does.
//! 5. **Apply**: restore the state machine from `ready.snapshot`, if any
//!    (from [`Storage::snapshot_reader`] when the storage kept the received
//!    chunks in a file and `ready.snapshot.data` is empty);
//!    then apply `ready.committed_entries` in order (a [`EntryKind::Noop`]
//!    carries no command; a [`EntryKind::ConfChange`] carries the new
//!    configuration and the proposer's context, read with
//!    [`ConfChangeData::decode`]);
//!    then serve `ready.read_states` whose index is applied. Committed
//!    entries before the first of `ready.entries` (all of them, when it has
//!    none, and no snapshot comes) were written with earlier `Ready`s: a
//!    driver may apply them before step 3, answering their proposers while
//!    the disk writes the new entries (the commit index that covers them
//!    may be this `Ready`'s hard state, not yet saved: a member that
//!    crashes first learns it again from the leader). A driver may
//!    apply entries later, off its loop (the core counts them as applied
//!    once handed out: snapshot only after applying them), and hold further
//!    committed entries back meanwhile with [`Raft::hold_committed`].
//! 6. Call [`Raft::advance`]. No other input may come between steps 2 and 6.
//! 7. When [`Raft::snapshot_due`], serialize the state machine (as of the
//!    applied index) and hand it to [`Raft::compact`], which stores the
//!    snapshot and discards the log before it — all but the last
//!    [`Config::snapshot_catchup_entries`], kept so that a follower a little
//!    behind catches up by AppendEntries rather than the whole snapshot.
//!
//! A storage failure in step 3 is fatal: the driver stops the node; it never
//! sends the messages of a `Ready` it could not persist.
//!
//! ```
//! use bytes::Bytes;
//! use flotilla_raft::{Config, MemStorage, NodeId, Raft, Storage};
//!
//! let id = NodeId(1);
//! let mut raft = Raft::new(Config::new(id), MemStorage::new_with_voters(&[id])).unwrap();
//! let mut applied = Vec::new();
//! // A single member elects itself after an election timeout.
//! for _ in 0..20 {
//!     raft.tick();
//! }
//! raft.propose(Bytes::from_static(b"x=1")).unwrap();
//! while raft.has_ready() {
//!     let ready = raft.ready().unwrap();
//!     raft.storage_mut()
//!         .save(ready.hard_state.as_ref(), &ready.entries)
//!         .unwrap(); // step 3
//!     assert!(ready.messages.is_empty()); // step 4: nobody to send to
//!     for entry in ready.committed_entries {
//!         applied.push(entry.data); // step 5
//!     }
//!     raft.advance(); // step 6
//! }
//! assert_eq!(applied.last().unwrap(), &Bytes::from_static(b"x=1"));
//! ```

mod config;
mod election;
mod error;
mod log;
mod membership;
mod message;
mod progress;
mod raft;
mod read;
mod ready;
mod replication;
mod snapshot;
mod storage;
mod types;

pub use config::{Config, ReadMode};
pub use error::{ConfigError, ProposeError, ReadError, StorageError, TransferError};
pub use membership::{ConfChange, ConfChangeData};
pub use message::{Message, MessageBody, ProposeRefusal};
pub use progress::ProgressState;
pub use raft::{Raft, Status};
pub use ready::Ready;
pub use storage::{
    InitialState, LogSync, MemStorage, SnapshotEncoder, SnapshotSource, SnapshotWriter, Storage,
    chunk_of, take_within_budget,
};
pub use types::{
    ConfState, Entry, EntryKind, HardState, LogIndex, NodeId, ReadState, Role, Snapshot,
    SnapshotMeta, SoftState, Term,
};

/// Re-exported so that drivers and tests name the same `Bytes` type.
pub use bytes::Bytes;
