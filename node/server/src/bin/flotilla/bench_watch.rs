//! `bench stall`'s watch phase: watch streams that each watch the whole
//! keyspace (every put reaches every one of them, as with the API server's
//! watch of a resource prefix) and drain what comes, counting the events
//! they received and the streams that ended before the phase did.

use anyhow::{Context, Result};
use flotilla_client::{Client, ClientConfig, Watch};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::task::JoinHandle;

/// What the watch streams received during a phase.
#[derive(Debug, Default, serde::Serialize)]
pub(crate) struct Watched {
    /// Streams opened, each with one watcher on the whole keyspace.
    pub(crate) streams: u32,
    /// Events received over all of them.
    pub(crate) events: u64,
    /// Events received per second of the phase.
    pub(crate) events_per_s: f64,
    /// The events received as a share of those the streams should have
    /// seen: each of the phase's writes, times the streams (events still
    /// on their way when the phase ended are missing).
    pub(crate) share: f64,
    /// Streams that ended (cancelled by the member, failed or closed)
    /// before the phase did.
    pub(crate) ended_early: u32,
    /// Why the first of those ended.
    pub(crate) first_end: Option<String>,
}

/// What one stream received, and why it ended early if it did.
type Tally = (u64, Option<String>);

/// How often a stream's task looks at the stop flag while no response comes.
const STOP_POLL: Duration = Duration::from_millis(50);

/// Opens a watch stream on `endpoint` (a connection of its own) with one
/// watcher on the whole keyspace, confirmed by the member, so that every
/// write after this reaches it.
pub(crate) async fn open(endpoint: String) -> Result<Watch> {
    let client = Client::new(&[endpoint], ClientConfig::default())?;
    client
        .watch_ranges(&[(b"\0".to_vec(), b"\0".to_vec())])
        .await
        .context("cannot open a watch stream")
}

/// Drains an opened stream until `stop`.
pub(crate) fn drain(mut watch: Watch, stop: Arc<AtomicBool>) -> JoinHandle<Tally> {
    tokio::spawn(async move {
        let mut events = 0;
        while !stop.load(Ordering::Relaxed) {
            match tokio::time::timeout(STOP_POLL, watch.next()).await {
                Err(_) => {}
                Ok(Ok(Some(r))) => events += r.events.len() as u64,
                Ok(Ok(None)) => return (events, Some("the member closed it".to_string())),
                Ok(Err(e)) => return (events, Some(e.to_string())),
            }
        }
        (events, None)
    })
}

/// The streams' tallies together, over a phase of `seconds` with
/// `writes` successful writes.
pub(crate) async fn collect(
    streams: Vec<JoinHandle<Tally>>,
    seconds: f64,
    writes: usize,
) -> Result<Watched> {
    let mut watched = Watched {
        streams: u32::try_from(streams.len())?,
        ..Watched::default()
    };
    for s in streams {
        let (events, ended) = s.await?;
        watched.events += events;
        if let Some(why) = ended {
            watched.ended_early += 1;
            watched.first_end.get_or_insert(why);
        }
    }
    watched.events_per_s = watched.events as f64 / seconds.max(f64::MIN_POSITIVE);
    let expected = writes as f64 * f64::from(watched.streams);
    watched.share = watched.events as f64 / expected.max(1.0);
    Ok(watched)
}
