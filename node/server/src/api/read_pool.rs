//! [`ReadPool`]: where reads too long for the driver's thread run.
//!
//! The driver confirms a read (ReadIndex, or its lease) and hands back a
//! frozen view of the store in O(1) ([`crate::kv::KvView`]); the work of
//! the read — walking a range, counting, encoding a snapshot, paging watch
//! history — runs here, on tokio's blocking threads, while the driver goes
//! on applying. At most [`READS_OFF_DRIVER_MAX`] run at once; the others
//! wait their turn. A turn is taken once the driver confirmed the read and
//! made the view, so a read still waiting for a leader holds none (the
//! waiting views pin the tree nodes that writes copy meanwhile: a few
//! kilobytes per write, for as long as the wait).

use std::sync::{Arc, OnceLock};
use tokio::sync::Semaphore;
use tonic::Status;

/// Reads running off the driver at once, per process (one member, in
/// production).
pub const READS_OFF_DRIVER_MAX: usize = 8;

static SHARED: OnceLock<ReadPool> = OnceLock::new();

/// A bounded set of blocking threads for reads. Cheap to clone.
#[derive(Clone, Debug)]
pub struct ReadPool {
    permits: Arc<Semaphore>,
}

impl Default for ReadPool {
    fn default() -> Self {
        ReadPool::new(READS_OFF_DRIVER_MAX)
    }
}

impl ReadPool {
    /// The process's pool, which the KV and Watch services share.
    pub fn shared() -> ReadPool {
        SHARED.get_or_init(ReadPool::default).clone()
    }

    /// A pool that runs at most `max` reads at once.
    pub fn new(max: usize) -> ReadPool {
        ReadPool {
            permits: Arc::new(Semaphore::new(max.max(1))),
        }
    }

    /// Waits for a turn.
    pub async fn turn(&self) -> Result<ReadTurn, Status> {
        self.permits
            .clone()
            .acquire_owned()
            .await
            .map(ReadTurn)
            .map_err(|_| Status::unavailable("flotilla: server stopping"))
    }
}

/// A turn in the [`ReadPool`]: [`ReadTurn::run`] uses it.
#[derive(Debug)]
pub struct ReadTurn(tokio::sync::OwnedSemaphorePermit);

impl ReadTurn {
    /// Runs `read` on a blocking thread and returns what it returns.
    pub async fn run<R: Send + 'static>(
        self,
        read: impl FnOnce() -> R + Send + 'static,
    ) -> Result<R, Status> {
        let permit = self.0;
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            read()
        })
        .await
        .map_err(|e| Status::internal(format!("flotilla: a read failed: {e}")))
    }
}
