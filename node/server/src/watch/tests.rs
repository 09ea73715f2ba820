//! The Watch service over real gRPC on loopback, against one member.

use super::stream::StreamTask;
use super::test_node::TestNode;
use super::{WatchConfig, WatchResponseStream};
use crate::kv::KvOp;
use crate::state::{AppliedEvents, StateConfig};
use flotilla_proto::etcdserverpb::watch_client::WatchClient;
use flotilla_proto::etcdserverpb::watch_create_request::FilterType;
use flotilla_proto::etcdserverpb::watch_request::RequestUnion;
use flotilla_proto::etcdserverpb::{
    CompactionRequest, WatchCancelRequest, WatchCreateRequest, WatchProgressRequest, WatchRequest,
    WatchResponse,
};
use flotilla_proto::mvccpb::Event;
use flotilla_proto::mvccpb::event::EventType;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

/// How long a test waits for a response that must come.
const PATIENCE: Duration = Duration::from_secs(10);

/// One client watch stream.
struct WatchConn {
    tx: mpsc::Sender<WatchRequest>,
    rx: Streaming<WatchResponse>,
}

impl WatchConn {
    async fn open(node: &TestNode) -> WatchConn {
        let (tx, requests) = mpsc::channel(16);
        let rx = WatchClient::new(node.channel.clone())
            .watch(ReceiverStream::new(requests))
            .await
            .expect("watch stream")
            .into_inner();
        WatchConn { tx, rx }
    }

    async fn send(&self, request: RequestUnion) {
        self.tx
            .send(WatchRequest {
                request_union: Some(request),
            })
            .await
            .expect("stream open");
    }

    /// Creates a watcher and returns its id.
    async fn create(&mut self, create: WatchCreateRequest) -> i64 {
        self.send(RequestUnion::CreateRequest(create)).await;
        let created = self.next().await;
        assert!(created.created && !created.canceled, "{created:?}");
        created.watch_id
    }

    async fn next(&mut self) -> WatchResponse {
        tokio::time::timeout(PATIENCE, self.rx.message())
            .await
            .expect("a response in time")
            .expect("stream healthy")
            .expect("stream open")
    }

    /// Collects events until `n` have arrived, checking each response's
    /// header revision covers its events.
    async fn events(&mut self, n: usize) -> Vec<(i64, Event)> {
        let mut out = Vec::new();
        while out.len() < n {
            let r = self.next().await;
            let header = r.header.as_ref().expect("header").revision;
            for e in r.events {
                let rev = e.kv.as_ref().expect("kv").mod_revision;
                assert!(header >= rev, "header {header} below event revision {rev}");
                out.push((r.watch_id, e));
            }
        }
        out
    }
}

fn create(key: &str) -> WatchCreateRequest {
    WatchCreateRequest {
        key: key.into(),
        ..Default::default()
    }
}

fn prefix(p: &str) -> WatchCreateRequest {
    let mut end = p.as_bytes().to_vec();
    *end.last_mut().expect("non-empty prefix") += 1;
    WatchCreateRequest {
        key: p.into(),
        range_end: end,
        ..Default::default()
    }
}

fn key_of(e: &Event) -> String {
    String::from_utf8(e.kv.as_ref().expect("kv").key.clone()).expect("utf8")
}

fn value_of(e: &Event) -> String {
    String::from_utf8(e.kv.as_ref().expect("kv").value.clone()).expect("utf8")
}

async fn node() -> TestNode {
    TestNode::start(WatchConfig::default(), StateConfig::default()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watching_a_key_delivers_its_puts_and_only_its() {
    let node = node().await;
    let mut w = WatchConn::open(&node).await;
    let id = w.create(create("a")).await;
    node.put("b", "other", 0).await;
    let rev = node.put("a", "1", 0).await;
    let events = w.events(1).await;
    assert_eq!(events.len(), 1);
    let (wid, e) = &events[0];
    assert_eq!(*wid, id);
    assert_eq!(e.r#type, EventType::Put as i32);
    assert_eq!((key_of(e), value_of(e)), ("a".into(), "1".into()));
    assert_eq!(e.kv.as_ref().expect("kv").mod_revision, rev);
    node.stop();
}

/// Catch-up in small pages while writes go on: every put under the prefix
/// arrives once, in revision order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prefix_from_a_past_revision_gets_history_then_live_events_without_gaps() {
    let config = WatchConfig {
        history_page_events_max: 2,
        // One revision per catch-up response.
        response_bytes_max: 1,
        ..WatchConfig::default()
    };
    let node = std::sync::Arc::new(TestNode::start(config, StateConfig::default()).await);
    let first = node.put("p/00", "v", 0).await;
    for i in 1..10 {
        node.put(&format!("p/{i:02}"), "v", 0).await;
        node.put("q", "outside", 0).await;
    }
    let mut w = WatchConn::open(&node).await;
    w.create(WatchCreateRequest {
        start_revision: first,
        ..prefix("p/")
    })
    .await;
    let writer = {
        let node = node.clone();
        tokio::spawn(async move {
            for i in 10..40 {
                node.put(&format!("p/{i:02}"), "v", 0).await;
            }
        })
    };
    let events = w.events(40).await;
    writer.await.expect("writer");
    let keys: Vec<String> = events.iter().map(|(_, e)| key_of(e)).collect();
    let expected: Vec<String> = (0..40).map(|i| format!("p/{i:02}")).collect();
    assert_eq!(keys, expected, "no gap, no duplicate, in order");
    let revs: Vec<i64> = events
        .iter()
        .map(|(_, e)| e.kv.as_ref().expect("kv").mod_revision)
        .collect();
    assert!(revs.windows(2).all(|p| p[0] < p[1]), "{revs:?}");
}

/// A broadcast buffer of one entry, flooded with empty entries between
/// concurrent writes, makes the stream lag; it must catch up from history
/// without losing or repeating an event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_stream_catches_up_from_history() {
    let state = StateConfig {
        watch_buffer: 1,
        ..StateConfig::default()
    };
    let node = std::sync::Arc::new(TestNode::start(WatchConfig::default(), state).await);
    let mut w = WatchConn::open(&node).await;
    w.create(prefix("l/")).await;
    let mut writers = tokio::task::JoinSet::new();
    for t in 0..4 {
        let node = node.clone();
        writers.spawn(async move {
            for i in 0..50 {
                node.put(&format!("l/{t}/{i:02}"), "v", 0).await;
                // Below every watcher's next revision: ignored, but they
                // overflow the receiver.
                for _ in 0..4 {
                    let _ = node.events.send(std::sync::Arc::new(AppliedEvents {
                        revision: 0,
                        events: Vec::new(),
                    }));
                }
            }
        });
    }
    let events = w.events(200).await;
    writers.join_all().await;
    let revs: Vec<i64> = events
        .iter()
        .map(|(_, e)| e.kv.as_ref().expect("kv").mod_revision)
        .collect();
    assert!(revs.windows(2).all(|p| p[0] < p[1]), "{revs:?}");
    let mut keys: Vec<String> = events.iter().map(|(_, e)| key_of(e)).collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prev_kv_and_filters_shape_the_events() {
    let node = node().await;
    let mut w = WatchConn::open(&node).await;
    let deletes = w
        .create(WatchCreateRequest {
            prev_kv: true,
            filters: vec![FilterType::Noput as i32],
            ..create("x")
        })
        .await;
    let puts = w
        .create(WatchCreateRequest {
            filters: vec![FilterType::Nodelete as i32],
            ..create("x")
        })
        .await;
    node.put("x", "1", 0).await;
    node.put("x", "2", 0).await;
    node.delete("x").await;
    let events = w.events(3).await;
    let of = |id: i64| -> Vec<&Event> {
        events
            .iter()
            .filter(|(w, _)| *w == id)
            .map(|(_, e)| e)
            .collect()
    };
    let d = of(deletes);
    assert_eq!(d.len(), 1, "{events:?}");
    assert_eq!(d[0].r#type, EventType::Delete as i32);
    let prev = d[0].prev_kv.as_ref().expect("prev_kv asked for");
    assert_eq!(prev.value, b"2");
    let p = of(puts);
    assert_eq!(p.len(), 2, "{events:?}");
    assert!(p.iter().all(|e| e.r#type == EventType::Put as i32));
    assert!(
        p.iter().all(|e| e.prev_kv.is_none()),
        "prev_kv not asked for"
    );
    node.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_watcher_gets_no_more_events() {
    let node = node().await;
    let mut w = WatchConn::open(&node).await;
    let first = w.create(create("c")).await;
    w.send(RequestUnion::CancelRequest(WatchCancelRequest {
        watch_id: first,
    }))
    .await;
    let cancelled = w.next().await;
    assert!(
        cancelled.canceled && cancelled.watch_id == first,
        "{cancelled:?}"
    );
    let second = w.create(create("c")).await;
    assert_ne!(first, second);
    node.put("c", "1", 0).await;
    let events = w.events(1).await;
    assert!(events.iter().all(|(id, _)| *id == second), "{events:?}");
    node.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_watch_id_is_refused() {
    let node = node().await;
    let mut w = WatchConn::open(&node).await;
    let id = w
        .create(WatchCreateRequest {
            watch_id: 7,
            ..create("d")
        })
        .await;
    assert_eq!(id, 7);
    w.send(RequestUnion::CreateRequest(WatchCreateRequest {
        watch_id: 7,
        ..create("e")
    }))
    .await;
    let refused = w.next().await;
    assert!(refused.created && refused.canceled, "{refused:?}");
    assert!(refused.cancel_reason.contains("duplicate"), "{refused:?}");
    node.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compacted_start_revision_is_cancelled_with_the_compact_revision() {
    let node = node().await;
    let old = node.put("k", "1", 0).await;
    node.put("k", "2", 0).await;
    let compact_at = node.put("k", "3", 0).await;
    node.apply(KvOp::Compaction(CompactionRequest {
        revision: compact_at,
        physical: false,
    }))
    .await;
    let mut w = WatchConn::open(&node).await;
    let id = w
        .create(WatchCreateRequest {
            start_revision: old,
            ..create("k")
        })
        .await;
    let cancelled = w.next().await;
    assert_eq!(cancelled.watch_id, id);
    assert!(cancelled.canceled, "{cancelled:?}");
    assert_eq!(cancelled.compact_revision, compact_at);
    assert!(cancelled.events.is_empty());
    node.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_requests_and_notifications_carry_the_revision() {
    let config = WatchConfig {
        progress_interval: Duration::from_millis(50),
        ..WatchConfig::default()
    };
    let node = TestNode::start(config, StateConfig::default()).await;
    let mut w = WatchConn::open(&node).await;
    // A stream without watchers answers with the store's revision.
    let rev = node.put("elsewhere", "v", 0).await;
    w.send(RequestUnion::ProgressRequest(WatchProgressRequest {}))
        .await;
    let progress = w.next().await;
    assert_eq!(progress.watch_id, -1);
    assert_eq!(progress.header.expect("header").revision, rev);

    let quiet = w.create(create("quiet")).await;
    let rev = node.put("elsewhere", "w", 0).await;
    w.send(RequestUnion::ProgressRequest(WatchProgressRequest {}))
        .await;
    let progress = w.next().await;
    assert_eq!(progress.watch_id, -1, "{progress:?}");
    assert_eq!(progress.header.expect("header").revision, rev);

    let notified = w
        .create(WatchCreateRequest {
            progress_notify: true,
            ..create("quiet")
        })
        .await;
    loop {
        let r = w.next().await;
        assert_ne!(
            r.watch_id, quiet,
            "no notifications without progress_notify"
        );
        if r.watch_id == notified {
            assert!(r.events.is_empty());
            assert_eq!(r.header.expect("header").revision, rev);
            break;
        }
    }
    node.stop();
}

/// A client that leaves the outbound queue full past the timeout loses
/// its stream, and the status overtakes the responses still queued. (Over
/// loopback, HTTP/2 and socket buffers absorb megabytes before the queue
/// fills, so this drives the stream task's send path directly.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_does_not_read_loses_its_stream() {
    let node = node().await;
    let config = WatchConfig {
        outbound_queue_max: 1,
        slow_client_timeout: Duration::from_millis(50),
        ..WatchConfig::default()
    };
    let (out, rx) = mpsc::channel(config.outbound_queue_max);
    let (abort, abort_rx) = tokio::sync::oneshot::channel();
    let mut task = StreamTask::new(node.handle.clone(), std::sync::Arc::new(config), out, abort);
    task.send(WatchResponse::default())
        .await
        .expect("room for one response");
    let end = task
        .send(WatchResponse::default())
        .await
        .expect_err("the queue stays full");
    task.finish(Err(end));
    let mut stream = WatchResponseStream::new(rx, abort_rx);
    let status = stream
        .next()
        .await
        .expect("an item")
        .expect_err("the status comes first");
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("too slow"), "{status:?}");
    assert!(stream.next().await.is_none(), "nothing after the status");
    node.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_future_start_revision_skips_the_revisions_before_it() {
    let node = node().await;
    let now = node.put("f", "0", 0).await;
    let mut w = WatchConn::open(&node).await;
    w.create(WatchCreateRequest {
        start_revision: now + 3,
        ..create("f")
    })
    .await;
    for i in 1..=3 {
        node.put("f", &i.to_string(), 0).await;
    }
    let events = w.events(1).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(value_of(&events[0].1), "3");
    assert_eq!(events[0].1.kv.as_ref().expect("kv").mod_revision, now + 3);
    node.stop();
}

/// Reads one logical response: fragments until the one not marked.
async fn whole_response(conn: &mut WatchConn) -> Vec<WatchResponse> {
    let mut pieces = Vec::new();
    loop {
        let piece = conn.next().await;
        let more = piece.fragment;
        pieces.push(piece);
        if !more {
            return pieces;
        }
    }
}

/// etcd's `fragment`: a revision of twenty 300-byte puts reaches a watcher
/// that asked for fragments in pieces below the limit, all but the last
/// marked, joined in order; live and from history alike. A watcher that
/// did not ask gets it whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_revision_comes_in_fragments_to_watchers_that_ask() {
    use flotilla_proto::etcdserverpb::request_op::Request;
    use flotilla_proto::etcdserverpb::{PutRequest, RequestOp, TxnRequest};
    use prost::Message as _;
    const LIMIT: usize = 2048;
    let config = WatchConfig {
        fragment_bytes_max: LIMIT,
        ..WatchConfig::default()
    };
    let node = TestNode::start(config, StateConfig::default()).await;
    let mut fragmenting = WatchConn::open(&node).await;
    let mut whole = WatchConn::open(&node).await;
    fragmenting
        .create(WatchCreateRequest {
            fragment: true,
            ..prefix("big/")
        })
        .await;
    whole.create(prefix("big/")).await;

    let keys: Vec<String> = (0..20).map(|i| format!("big/{i:02}")).collect();
    let puts = keys
        .iter()
        .map(|k| RequestOp {
            request: Some(Request::RequestPut(PutRequest {
                key: k.clone().into_bytes(),
                value: vec![b'v'; 300],
                ..Default::default()
            })),
        })
        .collect();
    let revision = node
        .apply(KvOp::Txn(TxnRequest {
            success: puts,
            ..Default::default()
        }))
        .await
        .revision;

    let check = |pieces: &[WatchResponse]| {
        assert!(pieces.len() > 1, "split: {} pieces", pieces.len());
        for (i, p) in pieces.iter().enumerate() {
            assert_eq!(p.fragment, i + 1 < pieces.len(), "piece {i}");
            assert!(
                p.encoded_len() < LIMIT,
                "piece {i}: {} bytes",
                p.encoded_len()
            );
            assert_eq!(p.header.as_ref().expect("header").revision, revision);
        }
        let got: Vec<String> = pieces.iter().flat_map(|p| &p.events).map(key_of).collect();
        assert_eq!(got, keys, "every event once, in order");
    };
    check(&whole_response(&mut fragmenting).await);

    let unsplit = whole.next().await;
    assert!(!unsplit.fragment);
    assert_eq!(unsplit.events.len(), 20, "whole without fragment");
    assert!(unsplit.encoded_len() >= LIMIT);

    // From history too.
    let mut late = WatchConn::open(&node).await;
    late.create(WatchCreateRequest {
        fragment: true,
        start_revision: revision,
        ..prefix("big/")
    })
    .await;
    check(&whole_response(&mut late).await);
    node.stop();
}

/// Only entries that touch a watched range reach the live broadcast: a
/// write nobody watches wakes no stream, and a progress request still
/// reports the store's revision past it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_watched_keys_reach_the_broadcast() {
    let node = node().await;
    let mut applied = node.events.subscribe();
    let mut w = WatchConn::open(&node).await;
    w.create(prefix("a/")).await;
    node.put("b/1", "unwatched", 0).await;
    let watched = node.put("a/1", "watched", 0).await;
    let unwatched = node.put("b/2", "unwatched", 0).await;
    let first = tokio::time::timeout(PATIENCE, applied.recv())
        .await
        .expect("an entry in time")
        .expect("broadcast open");
    assert_eq!(first.revision, watched, "{first:?}");
    assert_eq!(first.events.len(), 1);
    assert_eq!(key_of(&first.events[0]), "a/1");
    let events = w.events(1).await;
    assert_eq!(key_of(&events[0].1), "a/1");
    w.send(RequestUnion::ProgressRequest(WatchProgressRequest {}))
        .await;
    let progress = w.next().await;
    assert_eq!(progress.watch_id, -1, "{progress:?}");
    assert_eq!(progress.header.expect("header").revision, unwatched);
    assert!(
        matches!(
            applied.try_recv(),
            Err(tokio::sync::broadcast::error::TryRecvError::Empty)
        ),
        "nothing for the unwatched write after it"
    );
    node.stop();
}
