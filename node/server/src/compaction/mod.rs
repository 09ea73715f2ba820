//! Auto-compaction (DESIGN §5), as etcd's compactor does it: a task on
//! every member samples the applied revision, and the leader alone proposes
//! a Compact through Raft when one is due.
//!
//! - **Periodic** (`--auto-compaction-mode periodic`, retention a
//!   duration): the revision is sampled every tenth of the retention (of an
//!   hour at most); one retention after start, and then every retention (at
//!   most hourly), the store is compacted at the newest sample at least one
//!   retention old, so the history of the last retention is always kept.
//! - **Revision** (`--auto-compaction-mode revision`, retention a count):
//!   every check interval (five minutes from the flags, as etcd) the store is compacted at the
//!   current revision less the count, so the last N revisions are kept.
//!
//! Off by default, as in etcd. Independently, the store itself bounds its
//! history at [`crate::kv::KvConfig::retain_revisions`].
//!
//! | file | what |
//! |---|---|
//! | `policy.rs` | [`AutoCompaction`] and [`CompactionPolicy`]: the arithmetic, pure, on a clock passed in |
//! | `task.rs` | [`spawn_auto_compaction`]: the sampling and proposing task |

mod policy;
mod task;

pub use policy::{AutoCompaction, CompactionPolicy};
pub use task::spawn_auto_compaction;
