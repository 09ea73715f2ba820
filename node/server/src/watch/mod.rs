//! etcd's Watch service (DESIGN §5): a bidirectional stream carrying any
//! number of watchers, each on a key or range, from any retained revision.
//!
//! # How a watcher stays gap-free
//!
//! Each stream subscribes to the state machine's event broadcast *before*
//! it reads anything, so every entry applied after that point reaches it.
//! A watcher is either catching up or synced:
//!
//! 1. Catching up: it reads the store's history from its next revision, a
//!    bounded page at a time (a revision is never split), on a frozen view
//!    of the store taken on the driver (`read_local`) and paged in the
//!    shared read pool, off the driver. A page shorter than the limit ends the history: the
//!    watcher's next revision becomes the store's revision at that read plus
//!    one, and it is synced. A compacted start ends it with etcd's compacted
//!    cancel (`compact_revision` set).
//! 2. Synced: it takes live events of revision ≥ its next revision, and
//!    moves its next revision past every live revision, matching or not.
//!    Live events at or below what the history read covered are skipped, so
//!    nothing is delivered twice.
//! 3. A stream whose broadcast receiver lags puts all its synced watchers
//!    back to catching up from their next revision.
//!
//! A response carries one watcher's events. Catch-up responses close at a
//! revision boundary past [`WatchConfig::response_bytes_max`]; a live one
//! holds one applied entry's events. A watcher created with `fragment` gets
//! any response of [`WatchConfig::fragment_bytes_max`] bytes or more split
//! into fragments (etcd's `fragment`), so one large transaction never makes
//! a message too large for the client.
//!
//! Everything is bounded: watchers per stream, events per history page, and
//! the outbound queue; a client that leaves the queue full for longer than
//! [`WatchConfig::slow_client_timeout`] loses its stream with
//! `RESOURCE_EXHAUSTED`.
//!
//! | file | what |
//! |---|---|
//! | `service.rs` | [`WatchService`], the tonic service, and the response stream |
//! | `stream.rs` | the task behind one stream: requests, live events, catch-up, progress |
//! | `watcher.rs` | one watcher: its range, filters and next revision |
//! | `fragment.rs` | etcd's splitting of a large response for watchers that ask for it |

mod fragment;
mod service;
mod stream;
mod watcher;

pub(crate) use service::closed;
pub use service::{StreamCloser, WatchResponseStream, WatchService};

use std::time::Duration;

/// Limits and timing of the Watch service.
#[derive(Clone, Debug)]
pub struct WatchConfig {
    /// The cluster id put in response headers.
    pub cluster_id: u64,
    /// Watchers one stream may hold at once.
    pub watchers_per_stream_max: usize,
    /// Responses queued for a client before the stream waits on it.
    pub outbound_queue_max: usize,
    /// How long the stream waits on a full outbound queue before it ends
    /// the stream as too slow.
    pub slow_client_timeout: Duration,
    /// Events read from history per page while a watcher catches up.
    pub history_page_events_max: usize,
    /// Encoded bytes of events per catch-up response, about: a response
    /// closes at the first revision boundary past it.
    pub response_bytes_max: usize,
    /// How often watchers created with `progress_notify` get a progress
    /// notification (etcd's default is ten minutes).
    pub progress_interval: Duration,
    /// A watcher created with `fragment` gets a response of at least this
    /// many encoded bytes (and two events or more) split into fragments
    /// below it, as etcd splits at its `--max-request-bytes`; other
    /// watchers get every response whole.
    pub fragment_bytes_max: usize,
}

impl Default for WatchConfig {
    fn default() -> Self {
        WatchConfig {
            cluster_id: 0,
            watchers_per_stream_max: 1024,
            outbound_queue_max: 128,
            slow_client_timeout: Duration::from_secs(5),
            history_page_events_max: 1000,
            response_bytes_max: 1024 * 1024,
            progress_interval: Duration::from_secs(600),
            fragment_bytes_max: 1536 * 1024,
        }
    }
}

#[cfg(test)]
pub(crate) mod test_node;
#[cfg(test)]
mod tests;
