//! `bench stall`'s watch phase: watch streams that each watch the whole
//! keyspace (every put reaches every one of them, as with the API server's
//! watch of a resource prefix) and drain what comes, counting the events
//! they received and the streams that ended before the phase did.

use anyhow::Result;
use flotilla_proto::etcdserverpb::watch_client::WatchClient;
use flotilla_proto::etcdserverpb::{WatchCreateRequest, WatchRequest, watch_request};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

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

/// Responses larger than this fail the stream (the members send one
/// applied entry's events per response; the fill's transactions carry 64).
const RESPONSE_BYTES_MAX: usize = 64 << 20;

/// One watch stream with one watcher on the whole keyspace from now on,
/// drained until `stop`.
pub(crate) fn stream(channel: Channel, stop: Arc<AtomicBool>) -> JoinHandle<Tally> {
    tokio::spawn(async move {
        // Kept open until the end: closing the request side ends the stream.
        let (requests, rx) = tokio::sync::mpsc::channel(1);
        let create = WatchRequest {
            request_union: Some(watch_request::RequestUnion::CreateRequest(
                WatchCreateRequest {
                    key: b"\0".to_vec(),
                    range_end: b"\0".to_vec(),
                    ..Default::default()
                },
            )),
        };
        if requests.send(create).await.is_err() {
            return (0, Some("the request side closed".to_string()));
        }
        let mut client = WatchClient::new(channel).max_decoding_message_size(RESPONSE_BYTES_MAX);
        let mut responses = match client
            .watch(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
        {
            Ok(r) => r.into_inner(),
            Err(e) => return (0, Some(e.to_string())),
        };
        let mut events = 0;
        while !stop.load(Ordering::Relaxed) {
            match tokio::time::timeout(STOP_POLL, responses.message()).await {
                Err(_) => {}
                Ok(Ok(Some(r))) if r.canceled => {
                    return (events, Some(format!("cancelled: {}", r.cancel_reason)));
                }
                Ok(Ok(Some(r))) => events += r.events.len() as u64,
                Ok(Ok(None)) => return (events, Some("the member closed it".to_string())),
                Ok(Err(e)) => return (events, Some(e.to_string())),
            }
        }
        drop(requests);
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
