//! The etcd-compatible key-value state machine (DESIGN §5).
//!
//! Everything here is pure: no tokio, no IO, no clock. [`KvStore`] is the
//! [`crate::driver::StateMachine`] the driver applies committed
//! [`KvCommand`]s to. Reads are confirmed on the driver, which hands out a
//! [`KvView`] (the persistent key space, cloned in O(1)); ranges, counts,
//! watch history and snapshot encoding then run on the view elsewhere. [`Lessor`] is the one piece that knows time: the
//! leader uses it to decide when leases expire and proposes their revokes.
//!
//! | file | what |
//! |---|---|
//! | `command.rs` | [`KvCommand`]: what goes in the log, with its exactly-once session ids |
//! | `store.rs` | [`KvStore`]: apply, Put, DeleteRange, Compact, leases, the `StateMachine` impl |
//! | `heavy.rs` | which commands take long to apply (ranges, compaction), told from their bytes |
//! | `mvcc.rs` | [`MvccStore`]: every version of every key since the compaction point |
//! | `version.rs`, `key.rs` | a key's versions and its bytes in memory: one allocation per version, short keys inline |
//! | `range.rs` | Range: filters, sort, limit, count (pushed down to the tree walk) |
//! | `view.rs` | [`KvView`]: the key space frozen in O(1), for reads off the driver |
//! | `validate.rs` | [`validate_op`]: the stateless checks of a write, run before proposing and again at apply |
//! | `txn.rs` | Txn: compares, applying a branch |
//! | `alarm.rs` | [`AlarmTable`] (etcd's alarms, replicated) and the space quota's costs |
//! | `lease.rs` | [`LeaseTable`]: leases and their attached keys |
//! | `lessor.rs` | [`Lessor`]: lease expiry timing on the leader |
//! | `members.rs` | the member table: checks before a membership change, and its application with the change |
//! | `session.rs` | [`SessionTable`]: exactly-once sessions, bounded by idle entries and count |
//! | `snapshot.rs` | the snapshot encoding, written from and read into the store without a copy of it |
//! | `output.rs` | [`KvOutput`], [`KvResponse`], [`LeaseChange`] |
//! | `config.rs`, `error.rs` | [`KvConfig`], [`KvError`] |
//!
//! # Semantics, as etcd's
//!
//! - The revision starts at 1; each write that changes something (a Put,
//!   a DeleteRange that deletes, a Txn with a write that changes, a
//!   LeaseRevoke that deletes keys) makes one new revision. Reads, read-only
//!   Txns, deletes of nothing, Compact and LeaseGrant do not.
//! - Compact(r) keeps, for each key, its version visible at `r` unless it
//!   is a tombstone; reads below `r` then fail with "required revision has
//!   been compacted". The store keeps about
//!   [`KvConfig::retain_revisions`] revisions of history (compacting itself
//!   in bounded batches as it applies writes); etcd's auto-compaction is
//!   [`crate::compaction`].
//! - Space: while the NOSPACE alarm is raised ([`AlarmTable`], replicated
//!   like etcd's alarm store), Puts, LeaseGrants and Txns whose taken
//!   branch puts fail with [`KvError::NoSpace`]; so does such a write that
//!   would take [`MvccStore::size_bytes`] past the quota stamped into its
//!   command ([`QuotaStamp`]), which also raises NOSPACE for the stamping
//!   member in the same entry. Deletes, delete-only Txns, LeaseRevoke and
//!   Compact always apply, so a full store can be emptied.
//! - Every write is checked by [`validate_op`] as it applies (the API ran
//!   the same check before proposing it), with [`KvConfig::limits`].
//! - Exactly-once: a command with `client_id != 0` whose `seq` the session
//!   has a cached response for gets it, without applying; one below the
//!   session's mark (the client's lowest unanswered seq, carried in the
//!   command) gets [`KvError::StaleSequence`]; any other applies, in any
//!   order, up to [`KvConfig::session_window_max`] cached responses per
//!   session. A command without a mark keeps the one-response rule (see
//!   `session.rs`). Sessions are dropped after
//!   [`KvConfig::session_ttl_entries`] idle entries or beyond
//!   [`KvConfig::sessions_max`]; a retry after that applies again, as
//!   without a session.

mod alarm;
mod command;
mod config;
mod error;
mod heavy;
mod key;
mod lease;
mod lessor;
mod members;
mod mvcc;
mod output;
mod range;
mod session;
mod snapshot;
mod store;
mod txn;
mod validate;
mod version;
mod view;

pub use alarm::{AlarmTable, LEASE_COST_BYTES, Quota, branch_cost, put_cost, txn_cost};
pub use command::{KvCommand, KvOp, MemberSeed, QuotaStamp};
pub use config::{KvConfig, REQUEST_BYTES_LIMIT, SESSION_WINDOW_MAX, TXN_OPS_LIMIT};
pub use error::KvError;
pub use lease::{LeaseEntry, LeaseTable};
pub use lessor::{KeepAliveError, Lessor};
pub use members::valid_peer_url;
pub use mvcc::{EventKeys, KeyRanges, MvccStore, Revision, in_range};
pub use output::{KvOutput, KvResponse, LeaseChange};
pub use session::{KvResult, Session, SessionTable};
pub use snapshot::{CopySnapshotError, SnapshotFacts};
pub use store::KvStore;
pub use validate::{RequestLimits, validate_op};
pub use view::KvView;

#[cfg(test)]
mod alarm_tests;
#[cfg(test)]
mod compaction_release_tests;
#[cfg(test)]
mod compaction_tests;
#[cfg(test)]
mod lessor_tests;
#[cfg(test)]
mod mvcc_tests;
#[cfg(test)]
mod store_tests;
