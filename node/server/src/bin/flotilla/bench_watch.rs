//! `bench stall`'s watch phase: watch streams that each watch the whole
//! keyspace (every put reaches every one of them, as with the API server's
//! watch of a resource prefix) and drain what comes, counting the events
//! they received and the streams that ended before the phase did.

use anyhow::{Context, Result, anyhow, bail};
use flotilla_proto::etcdserverpb::watch_client::WatchClient;
use flotilla_proto::etcdserverpb::{
    WatchCreateRequest, WatchRequest, WatchResponse, watch_request,
};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tonic::Streaming;
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

/// How long opening a stream may take, until the member confirms the
/// watcher.
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);

/// A watch stream whose one watcher, on the whole keyspace from now on,
/// the member has confirmed.
pub(crate) struct Opened {
    /// Kept open until the end: closing the request side ends the stream.
    requests: mpsc::Sender<WatchRequest>,
    responses: Streaming<WatchResponse>,
}

/// Opens a stream and creates its watcher, waiting for the member to
/// confirm it, so that every write after this reaches it.
pub(crate) async fn open(channel: Channel) -> Result<Opened> {
    let (requests, rx) = mpsc::channel(1);
    let create = WatchRequest {
        request_union: Some(watch_request::RequestUnion::CreateRequest(
            WatchCreateRequest {
                key: b"\0".to_vec(),
                range_end: b"\0".to_vec(),
                ..Default::default()
            },
        )),
    };
    requests
        .send(create)
        .await
        .map_err(|_| anyhow!("the request side of a watch stream closed"))?;
    let mut client = WatchClient::new(channel).max_decoding_message_size(RESPONSE_BYTES_MAX);
    let opening = async {
        let mut responses = client
            .watch(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await?
            .into_inner();
        let first = responses.message().await?;
        Ok::<_, tonic::Status>((responses, first))
    };
    let (responses, first) = tokio::time::timeout(OPEN_TIMEOUT, opening)
        .await
        .context("no watch stream within 10 s")?
        .context("cannot open a watch stream")?;
    match first {
        Some(r) if r.created && !r.canceled => Ok(Opened {
            requests,
            responses,
        }),
        Some(r) => bail!("the watcher was not created: {}", r.cancel_reason),
        None => bail!("the member closed the watch stream at once"),
    }
}

/// Drains an opened stream until `stop`.
pub(crate) fn drain(opened: Opened, stop: Arc<AtomicBool>) -> JoinHandle<Tally> {
    let Opened {
        requests,
        mut responses,
    } = opened;
    tokio::spawn(async move {
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
