//! The task behind one watch stream.

use super::WatchConfig;
use super::fragment::fragments;
use super::watcher::{Watcher, event_revision};
use crate::api::ReadPool;
use crate::driver::{DriverError, RaftHandle};
use crate::kv::KvError;
use crate::state::{AppliedEvents, NodeStateMachine, WatchedKeys};
use flotilla_proto::etcdserverpb::watch_request::RequestUnion;
use flotilla_proto::etcdserverpb::{
    ResponseHeader, WatchCancelRequest, WatchCreateRequest, WatchRequest, WatchResponse,
};
use flotilla_proto::mvccpb::Event;
use prost::Message as _;
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio_stream::StreamExt as _;
use tonic::Status;

/// etcd's reason for a duplicate watch id on one stream.
const DUPLICATE_ID: &str = "mvcc: duplicate watch ID provided on the WatchStream";

/// Why the stream ends early.
#[derive(Debug)]
pub(super) enum End {
    /// The client went away; nothing to tell it.
    ClientGone,
    /// End the stream with this status.
    Status(Status),
}

type Live = broadcast::Receiver<Arc<AppliedEvents>>;

/// One stream's watchers and its way back to the client.
pub(super) struct StreamTask {
    handle: RaftHandle<NodeStateMachine>,
    config: Arc<WatchConfig>,
    watchers: BTreeMap<i64, Watcher>,
    next_auto_id: i64,
    /// The highest store revision this stream has seen.
    revision: i64,
    out: mpsc::Sender<Result<WatchResponse, Status>>,
    abort: Option<oneshot::Sender<Status>>,
    /// Where the watched ranges are kept, when the state machine sends
    /// only watched events.
    watched: Option<WatchedKeys>,
}

impl StreamTask {
    pub(super) fn new(
        handle: RaftHandle<NodeStateMachine>,
        config: Arc<WatchConfig>,
        out: mpsc::Sender<Result<WatchResponse, Status>>,
        abort: oneshot::Sender<Status>,
    ) -> StreamTask {
        StreamTask {
            handle,
            config,
            watchers: BTreeMap::new(),
            next_auto_id: 0,
            revision: 0,
            out,
            abort: Some(abort),
            watched: None,
        }
    }

    /// Registers each watcher's range in `watched`, which the state
    /// machine then sends only the events of.
    pub(super) fn with_watched(mut self, watched: Option<WatchedKeys>) -> StreamTask {
        self.watched = watched;
        self
    }

    /// Serves the stream until the client leaves, the server closes it, or
    /// it fails; a failure reaches the client as the stream's final status.
    pub(super) async fn run(
        mut self,
        inbound: tonic::Streaming<WatchRequest>,
        live: Live,
        closing: watch::Receiver<bool>,
    ) {
        let result = self.serve(inbound, live, closing).await;
        self.finish(result);
    }

    /// Hands a failure to the response stream, ahead of anything queued.
    pub(super) fn finish(&mut self, result: Result<(), End>) {
        if let Err(End::Status(status)) = result {
            tracing::debug!(%status, "watch stream ended");
            if let Some(abort) = self.abort.take() {
                let _ = abort.send(status);
            }
        }
    }

    async fn serve(
        &mut self,
        mut inbound: tonic::Streaming<WatchRequest>,
        mut live: Live,
        mut closing: watch::Receiver<bool>,
    ) -> Result<(), End> {
        let every = self
            .config
            .progress_interval
            .max(std::time::Duration::from_millis(1));
        let mut progress = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        progress.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let catching_up = self.watchers.values().any(|w| !w.synced);
            tokio::select! {
                biased;
                () = super::closed(&mut closing) => {
                    return Err(End::Status(Status::unavailable("flotilla: server is shutting down")));
                }
                request = inbound.next() => match request {
                    Some(Ok(request)) => self.on_request(request, &mut live).await?,
                    // The client closed its side or broke the stream.
                    Some(Err(_)) | None => return Ok(()),
                },
                applied = live.recv() => match applied {
                    Ok(applied) => self.on_live(&applied).await?,
                    Err(RecvError::Lagged(n)) => self.on_lagged(n),
                    Err(RecvError::Closed) => return Err(stopped()),
                },
                _ = progress.tick() => self.on_progress_tick(&mut live).await?,
                () = std::future::ready(()), if catching_up => self.catch_up_round().await?,
            }
        }
    }

    async fn on_request(&mut self, request: WatchRequest, live: &mut Live) -> Result<(), End> {
        match request.request_union {
            Some(RequestUnion::CreateRequest(create)) => self.create(create).await,
            Some(RequestUnion::CancelRequest(cancel)) => self.cancel(cancel).await,
            Some(RequestUnion::ProgressRequest(_)) => self.progress(live).await,
            None => Ok(()),
        }
    }

    async fn create(&mut self, create: WatchCreateRequest) -> Result<(), End> {
        let refuse = |reason: String| WatchResponse {
            watch_id: if create.watch_id != 0 {
                create.watch_id
            } else {
                -1
            },
            created: true,
            canceled: true,
            cancel_reason: reason,
            ..Default::default()
        };
        if self.watchers.len() >= self.config.watchers_per_stream_max {
            let reason = format!(
                "flotilla: too many watchers on this stream (limit {})",
                self.config.watchers_per_stream_max
            );
            return self.send(refuse(reason)).await;
        }
        let id = if create.watch_id != 0 {
            if self.watchers.contains_key(&create.watch_id) {
                return self.send(refuse(DUPLICATE_ID.to_string())).await;
            }
            create.watch_id
        } else {
            // As etcd: ids count up and are not reused on the stream.
            while self.watchers.contains_key(&self.next_auto_id) {
                self.next_auto_id += 1;
            }
            self.next_auto_id += 1;
            self.next_auto_id - 1
        };
        // Registered before the revision is read: every entry applied
        // after the read is checked against the range.
        let registered = self
            .watched
            .as_ref()
            .map(|w| Arc::new(w.register(&create.key, &create.range_end)));
        let current = self.read(|sm| sm.kv().revision()).await?;
        self.seen(current);
        self.watchers
            .insert(id, Watcher::new(&create, current).registered(registered));
        self.send(WatchResponse {
            header: Some(self.header(current)),
            watch_id: id,
            created: true,
            ..Default::default()
        })
        .await
    }

    async fn cancel(&mut self, cancel: WatchCancelRequest) -> Result<(), End> {
        // etcd answers nothing for an id it does not know.
        if self.watchers.remove(&cancel.watch_id).is_none() {
            return Ok(());
        }
        self.send(WatchResponse {
            header: Some(self.header(self.revision)),
            watch_id: cancel.watch_id,
            canceled: true,
            ..Default::default()
        })
        .await
    }

    /// A stream-wide progress notification (watch id -1): every watcher on
    /// the stream has been sent every event up to its revision. Pending live
    /// events are taken first so the revision is as recent as it can be.
    async fn progress(&mut self, live: &mut Live) -> Result<(), End> {
        self.bring_synced_up(live).await?;
        let revision = match self.watchers.values().map(|w| w.next_rev - 1).min() {
            Some(r) => r,
            None => {
                let r = self.read(|sm| sm.kv().revision()).await?;
                self.seen(r);
                r
            }
        };
        self.send(WatchResponse {
            header: Some(self.header(revision)),
            watch_id: -1,
            ..Default::default()
        })
        .await
    }

    async fn on_live(&mut self, applied: &AppliedEvents) -> Result<(), End> {
        self.seen(applied.revision);
        let mut responses = Vec::new();
        for (id, w) in &mut self.watchers {
            if !w.synced || applied.revision < w.next_rev {
                continue;
            }
            let events = w.select(&applied.events);
            w.next_rev = applied.revision + 1;
            if !events.is_empty() {
                responses.push((*id, events, w.fragment));
            }
        }
        for (id, events, fragment) in responses {
            self.send_events(id, applied.revision, events, fragment)
                .await?;
        }
        Ok(())
    }

    fn on_lagged(&mut self, missed: u64) {
        tracing::debug!(missed, "watch stream lagged; catching up from history");
        for w in self.watchers.values_mut() {
            w.synced = false;
        }
    }

    /// Takes the live events queued. When the state machine sends only
    /// watched events, a synced watcher's next revision moves only with
    /// the entries that touch a watched range, so the store's revision is
    /// read too and the queue drained again: every event up to that
    /// revision has then been handled, and the synced watchers move up to
    /// it (what a progress report tells).
    async fn bring_synced_up(&mut self, live: &mut Live) -> Result<(), End> {
        self.drain(live).await?;
        if self.watched.is_none() || !self.watchers.values().any(|w| w.synced) {
            return Ok(());
        }
        let current = self.read(|sm| sm.kv().revision()).await?;
        self.drain(live).await?;
        self.seen(current);
        for w in self.watchers.values_mut().filter(|w| w.synced) {
            w.next_rev = w.next_rev.max(current + 1);
        }
        Ok(())
    }

    async fn drain(&mut self, live: &mut Live) -> Result<(), End> {
        loop {
            match live.try_recv() {
                Ok(applied) => self.on_live(&applied).await?,
                Err(TryRecvError::Lagged(n)) => self.on_lagged(n),
                Err(TryRecvError::Empty) => return Ok(()),
                Err(TryRecvError::Closed) => return Err(stopped()),
            }
        }
    }

    async fn on_progress_tick(&mut self, live: &mut Live) -> Result<(), End> {
        if self
            .watchers
            .values()
            .any(|w| w.synced && w.progress_notify)
        {
            self.bring_synced_up(live).await?;
        }
        let due: Vec<(i64, i64)> = self
            .watchers
            .iter()
            .filter(|(_, w)| w.synced && w.progress_notify)
            .map(|(id, w)| (*id, w.next_rev - 1))
            .collect();
        for (id, revision) in due {
            self.send(WatchResponse {
                header: Some(self.header(revision)),
                watch_id: id,
                ..Default::default()
            })
            .await?;
        }
        Ok(())
    }

    /// One history page for every watcher still catching up.
    async fn catch_up_round(&mut self) -> Result<(), End> {
        let ids: Vec<i64> = self
            .watchers
            .iter()
            .filter(|(_, w)| !w.synced)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.catch_up_page(id).await?;
        }
        Ok(())
    }

    async fn catch_up_page(&mut self, id: i64) -> Result<(), End> {
        let Some(w) = self.watchers.get(&id) else {
            return Ok(());
        };
        let (key, range_end) = w.range();
        let from = w.next_rev;
        let limit = self.config.history_page_events_max.max(1);
        // The history is paged on a frozen view, off the driver.
        let view = self.read(|sm| sm.kv().view()).await?;
        let turn = ReadPool::shared().turn().await.map_err(End::Status)?;
        let page = turn
            .run(move || {
                view.events(&key, &range_end, from, limit)
                    .map(|events| (events, view.store_revision()))
                    .map_err(|e| (e, view.compact_revision(), view.store_revision()))
            })
            .await
            .map_err(End::Status)?;
        let (events, revision) = match page {
            Ok(page) => page,
            Err((e, compact_revision, revision)) => {
                self.seen(revision);
                self.watchers.remove(&id);
                let compact_revision = match e {
                    KvError::Compacted { compact_revision } => compact_revision,
                    _ => compact_revision,
                };
                return self
                    .send(WatchResponse {
                        header: Some(self.header(revision)),
                        watch_id: id,
                        canceled: true,
                        compact_revision,
                        cancel_reason: e.to_string(),
                        ..Default::default()
                    })
                    .await;
            }
        };
        self.seen(revision);
        let w = self.watchers.get_mut(&id).expect("present: checked above");
        let selected = w.select(&events);
        match events.last() {
            // A full page: more history may follow the last revision read.
            Some(last) if events.len() >= limit => w.next_rev = event_revision(last) + 1,
            _ => {
                // Never below where it was: a watcher that starts in the
                // future must not get the revisions before its start.
                w.next_rev = w.next_rev.max(revision + 1);
                w.synced = true;
            }
        }
        let fragment = w.fragment;
        let bytes_max = self.config.response_bytes_max;
        for events in split_at_revisions(selected, bytes_max) {
            self.send_events(id, revision, events, fragment).await?;
        }
        Ok(())
    }

    /// Sends one response of watcher `id`'s events, in fragments if it
    /// asked for them and the response is large.
    async fn send_events(
        &self,
        id: i64,
        revision: i64,
        events: Vec<Event>,
        fragment: bool,
    ) -> Result<(), End> {
        let response = WatchResponse {
            header: Some(self.header(revision)),
            watch_id: id,
            events,
            ..Default::default()
        };
        if !fragment {
            return self.send(response).await;
        }
        for piece in fragments(response, self.config.fragment_bytes_max) {
            self.send(piece).await?;
        }
        Ok(())
    }

    fn seen(&mut self, revision: i64) {
        self.revision = self.revision.max(revision);
    }

    fn header(&self, revision: i64) -> ResponseHeader {
        let status = self.handle.status();
        ResponseHeader {
            cluster_id: self.config.cluster_id,
            member_id: status.id.0,
            revision,
            raft_term: status.term.0,
        }
    }

    async fn read<R: Send + 'static>(
        &self,
        f: impl FnOnce(&NodeStateMachine) -> R + Send + 'static,
    ) -> Result<R, End> {
        self.handle.read_local(f).await.map_err(|e| match e {
            DriverError::Stopped => stopped(),
            other => End::Status(Status::unavailable(format!(
                "flotilla: watch read failed: {other}"
            ))),
        })
    }

    /// Queues a response; a client that leaves the queue full too long
    /// loses the stream.
    pub(super) async fn send(&self, response: WatchResponse) -> Result<(), End> {
        let timeout = self.config.slow_client_timeout;
        match self.out.send_timeout(Ok(response), timeout).await {
            Ok(()) => Ok(()),
            Err(mpsc::error::SendTimeoutError::Closed(_)) => Err(End::ClientGone),
            Err(mpsc::error::SendTimeoutError::Timeout(_)) => {
                Err(End::Status(Status::resource_exhausted(format!(
                    "flotilla: watch client too slow: {} responses queued for {timeout:?}",
                    self.config.outbound_queue_max
                ))))
            }
        }
    }
}

/// Splits catch-up events into responses of about `bytes_max` encoded
/// bytes each, only between revisions (a revision is never split, as etcd
/// does without `fragment`).
fn split_at_revisions(events: Vec<Event>, bytes_max: usize) -> Vec<Vec<Event>> {
    let mut out: Vec<Vec<Event>> = Vec::new();
    let mut current: Vec<Event> = Vec::new();
    let mut bytes = 0;
    for e in events {
        let boundary = current
            .last()
            .is_some_and(|last| event_revision(last) != event_revision(&e));
        if boundary && bytes >= bytes_max {
            out.push(std::mem::take(&mut current));
            bytes = 0;
        }
        bytes += e.encoded_len();
        current.push(e);
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

fn stopped() -> End {
    End::Status(Status::unavailable("etcdserver: server stopped"))
}

#[cfg(test)]
mod split_tests {
    use super::split_at_revisions;
    use flotilla_proto::mvccpb::{Event, KeyValue};

    fn at(revision: i64) -> Event {
        Event {
            kv: Some(KeyValue {
                key: b"k".to_vec(),
                mod_revision: revision,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn responses_split_only_between_revisions() {
        let events = vec![at(2), at(2), at(3), at(4), at(4)];
        let revs = |chunks: Vec<Vec<Event>>| -> Vec<Vec<i64>> {
            chunks
                .iter()
                .map(|c| c.iter().map(super::event_revision).collect())
                .collect()
        };
        assert_eq!(
            revs(split_at_revisions(events.clone(), 1)),
            vec![vec![2, 2], vec![3], vec![4, 4]]
        );
        assert_eq!(
            revs(split_at_revisions(events, usize::MAX)),
            vec![vec![2, 2, 3, 4, 4]]
        );
        assert!(split_at_revisions(Vec::new(), 1).is_empty());
    }
}
