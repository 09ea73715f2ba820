//! [`WatchService`]: the tonic service, one task per stream.

use super::WatchConfig;
use super::stream::StreamTask;
use crate::driver::RaftHandle;
use crate::state::{AppliedEvents, NodeStateMachine, WatchedKeys};
use flotilla_proto::etcdserverpb::watch_server::{Watch, WatchServer};
use flotilla_proto::etcdserverpb::{WatchRequest, WatchResponse};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tonic::{Request, Response, Status, Streaming};

/// Serves etcd's Watch over a driver and the state machine's event
/// broadcast (from [`NodeStateMachine::event_sender`]).
pub struct WatchService {
    handle: RaftHandle<NodeStateMachine>,
    events: broadcast::Sender<Arc<AppliedEvents>>,
    config: Arc<WatchConfig>,
    closing: Arc<watch::Sender<bool>>,
    watched: Option<WatchedKeys>,
}

impl std::fmt::Debug for WatchService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatchService")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Ends the open streams of a service; see [`WatchService::stream_closer`].
#[derive(Clone, Debug)]
pub struct StreamCloser(Arc<watch::Sender<bool>>);

impl StreamCloser {
    /// A closer not yet tied to a service, for services that share one.
    pub fn new() -> StreamCloser {
        StreamCloser(Arc::new(watch::channel(false).0))
    }

    /// Ends every open stream with `UNAVAILABLE`, and any opened later.
    pub fn close(&self) {
        self.0.send_replace(true);
    }

    /// A receiver that turns true once [`StreamCloser::close`] is called.
    pub(crate) fn subscribe(&self) -> watch::Receiver<bool> {
        self.0.subscribe()
    }
}

/// Completes once the closer behind `closing` is closed or gone.
pub(crate) async fn closed(closing: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns must not live across an await.
    let _ = closing.wait_for(|closed| *closed).await.map(|_| ());
}

impl Default for StreamCloser {
    fn default() -> Self {
        StreamCloser::new()
    }
}

impl WatchService {
    /// A service reading history through `handle` and live events from
    /// `events`.
    pub fn new(
        handle: RaftHandle<NodeStateMachine>,
        events: broadcast::Sender<Arc<AppliedEvents>>,
        config: WatchConfig,
    ) -> WatchService {
        WatchService {
            handle,
            events,
            config: Arc::new(config),
            closing: StreamCloser::new().0,
            watched: None,
        }
    }

    /// Keeps every watcher's range in `watched` (the state machine's
    /// [`NodeStateMachine::watched_keys`]), which from then on sends only
    /// events someone watches.
    pub fn with_watched(mut self, watched: WatchedKeys) -> WatchService {
        watched.filtering();
        self.watched = Some(watched);
        self
    }

    /// Ends the open streams when the server shuts down: watch clients
    /// never end theirs, and a graceful shutdown would wait for them.
    pub fn stream_closer(&self) -> StreamCloser {
        StreamCloser(self.closing.clone())
    }

    /// The tonic server for this service.
    pub fn into_server(self) -> WatchServer<WatchService> {
        WatchServer::new(self)
    }
}

#[tonic::async_trait]
impl Watch for WatchService {
    type WatchStream = WatchResponseStream;

    async fn watch(
        &self,
        request: Request<Streaming<WatchRequest>>,
    ) -> Result<Response<WatchResponseStream>, Status> {
        // Subscribe before anything is read, so no applied entry falls
        // between the history a watcher reads and the live events.
        let live = self.events.subscribe();
        let (out, rx) = mpsc::channel(self.config.outbound_queue_max.max(1));
        let (abort, abort_rx) = oneshot::channel();
        let task = StreamTask::new(self.handle.clone(), self.config.clone(), out, abort)
            .with_watched(self.watched.clone());
        tokio::spawn(task.run(request.into_inner(), live, self.closing.subscribe()));
        Ok(Response::new(WatchResponseStream::new(rx, abort_rx)))
    }
}

/// The server side of a watch stream: the stream task's responses, or its
/// final status, which overtakes whatever is still queued (a stream ended
/// for a slow client must say so although its queue is full).
#[derive(Debug)]
pub struct WatchResponseStream {
    rx: mpsc::Receiver<Result<WatchResponse, Status>>,
    abort: Option<oneshot::Receiver<Status>>,
    done: bool,
}

impl WatchResponseStream {
    /// The responses queued on `rx`, ended early by a status on `abort`.
    pub(super) fn new(
        rx: mpsc::Receiver<Result<WatchResponse, Status>>,
        abort: oneshot::Receiver<Status>,
    ) -> WatchResponseStream {
        WatchResponseStream {
            rx,
            abort: Some(abort),
            done: false,
        }
    }
}

impl tokio_stream::Stream for WatchResponseStream {
    type Item = Result<WatchResponse, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        if let Some(abort) = self.abort.as_mut() {
            match Pin::new(abort).poll(cx) {
                Poll::Ready(Ok(status)) => {
                    self.done = true;
                    return Poll::Ready(Some(Err(status)));
                }
                // The task ended without a status: drain what it queued.
                Poll::Ready(Err(_)) => self.abort = None,
                Poll::Pending => {}
            }
        }
        self.rx.poll_recv(cx)
    }
}
