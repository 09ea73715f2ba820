//! [`Placement`]: which thread serves a client request.
//!
//! On a member with one worker thread (a 2-core pod), the client server's
//! connections run on the driver's thread (`--client-thread`), so a put
//! goes from the socket to the Raft loop, and its answer back, without
//! waking another thread: each such hand-off costs a context switch on
//! both sides, and on a small VM a context switch costs tens of
//! microseconds of CPU. The driver's thread must never stall, though, so
//! only calls whose answer is small and bounded run there:
//! - the ones in [`ON_DRIVER_THREAD`] (a put, a lease grant or revoke, a
//!   status): request and answer are each at most one value (bounded by
//!   `--max-request-bytes`) plus a header;
//! - a range, a delete or a transaction whose request shows that its
//!   answer is ([`bounded_range`], [`bounded_delete`], [`bounded_txn`]):
//!   one key, or a count, or no previous values; a transaction at most
//!   [`TXN_VALUES_MAX`] values. Its request (at most [`INSPECT_BYTES_MAX`])
//!   is read and decoded first, on the driver's thread.
//!
//! At most [`ON_DRIVER_CALLS_MAX`] calls are in flight on the driver's
//! thread at once (a put holds its turn until its answer): the next go to
//! the workers, so the tasks the Raft loop and the peer transport take
//! turns with stay bounded.
//!
//! Everything else — ranges and transactions over many keys, watch and
//! keepalive streams, snapshots, the broker — runs on the workers, as on a
//! member whose client server runs there: [`Placement`] spawns the call
//! there and relays the answer's frames, encoded on the worker, through a
//! bounded channel ([`FRAMES_IN_FLIGHT`]) to the connection. The
//! connection itself still reads the request's bytes from the socket and
//! writes the answer's, on the driver's thread.

use bytes::{Bytes, BytesMut};
use flotilla_proto::etcdserverpb::request_op::Request as Op;
use flotilla_proto::etcdserverpb::{DeleteRangeRequest, RangeRequest, TxnRequest};
use prometheus_client::metrics::counter::Counter;
use prost::Message as _;
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::runtime::Handle;
use tokio::sync::{Semaphore, mpsc};
use tonic::body::Body;
use tonic::codegen::Service;
use tonic::codegen::http::{Request, Response};

/// The calls served on the driver's thread when the client server runs
/// there: each request and answer is at most one value and a header, so
/// decoding and encoding them is bounded by the request limit. (A put's
/// `prev_kv` is one value.)
pub const ON_DRIVER_THREAD: &[&str] = &[
    "/etcdserverpb.KV/Put",
    "/etcdserverpb.Lease/LeaseGrant",
    "/etcdserverpb.Lease/LeaseRevoke",
    "/etcdserverpb.Maintenance/Status",
];

/// Answer frames (HTTP/2 data or trailers) a call on the workers may have
/// encoded ahead of its connection.
pub const FRAMES_IN_FLIGHT: usize = 8;

/// Where a call runs, by its path.
#[derive(Clone, Copy, Debug)]
enum Place {
    /// Where the connection runs.
    Here,
    /// Here when the request, decoded, passes the check.
    Inspect(fn(&[u8]) -> bool),
    /// On the workers.
    Workers,
}

fn place(path: &str) -> Place {
    match path {
        "/etcdserverpb.KV/Range" => Place::Inspect(bounded_range),
        "/etcdserverpb.KV/DeleteRange" => Place::Inspect(bounded_delete),
        "/etcdserverpb.KV/Txn" => Place::Inspect(bounded_txn),
        path if ON_DRIVER_THREAD.contains(&path) => Place::Here,
        _ => Place::Workers,
    }
}

/// Whether a `RangeRequest` (encoded) answers at most one key, or only a
/// count.
pub fn bounded_range(message: &[u8]) -> bool {
    RangeRequest::decode(message).is_ok_and(|r| range_is_bounded(&r))
}

/// Whether a `DeleteRangeRequest` (encoded) answers at most one previous
/// value.
pub fn bounded_delete(message: &[u8]) -> bool {
    DeleteRangeRequest::decode(message).is_ok_and(|d| delete_is_bounded(&d))
}

/// Whether a `TxnRequest` (encoded) answers a bounded result: every range
/// and delete in it, nested ones included, is, and whichever branches run
/// return at most [`TXN_VALUES_MAX`] values between them (a transaction
/// may hold 128 operations a branch).
pub fn bounded_txn(message: &[u8]) -> bool {
    TxnRequest::decode(message).is_ok_and(|t| txn_values(&t).is_some_and(|n| n <= TXN_VALUES_MAX))
}

/// Most values a transaction served on the driver's thread may answer
/// (Kubernetes' update answers one: the key, when it changed meanwhile).
pub const TXN_VALUES_MAX: usize = 2;

fn range_is_bounded(r: &RangeRequest) -> bool {
    r.range_end.is_empty() || r.count_only
}

fn delete_is_bounded(d: &DeleteRangeRequest) -> bool {
    d.range_end.is_empty() || !d.prev_kv
}

/// The most values `t` can answer (one branch runs), or `None` when an
/// operation in it is not bounded.
fn txn_values(t: &TxnRequest) -> Option<usize> {
    let branch = |ops: &[flotilla_proto::etcdserverpb::RequestOp]| {
        ops.iter().try_fold(0usize, |n, op| {
            let values = match &op.request {
                Some(Op::RequestRange(r)) if range_is_bounded(r) => usize::from(!r.count_only),
                Some(Op::RequestDeleteRange(d)) if delete_is_bounded(d) => usize::from(d.prev_kv),
                Some(Op::RequestPut(p)) => usize::from(p.prev_kv),
                Some(Op::RequestTxn(t)) => txn_values(t)?,
                None => 0,
                Some(Op::RequestRange(_) | Op::RequestDeleteRange(_)) => return None,
            };
            Some(n.saturating_add(values))
        })
    };
    Some(branch(&t.success)?.max(branch(&t.failure)?))
}

/// Calls counted by where they ran, on a member whose client connections
/// run on the driver's thread (`flotilla_client_calls_on_driver_total`,
/// `flotilla_client_calls_on_workers_total`).
#[derive(Clone, Debug, Default)]
pub struct PlacementCounts {
    /// Calls served on the driver's thread.
    pub on_driver: Counter,
    /// Calls handed to the worker threads.
    pub on_workers: Counter,
}

/// Most calls on the driver's thread at once, per member; the next go to
/// the workers until some end. Each is a task on the driver's run queue,
/// where the Raft loop and the peer transport wait their turn behind it.
pub const ON_DRIVER_CALLS_MAX: usize = 128;

/// Largest request read ahead to be inspected; a larger one goes to the
/// workers without being read on the driver's thread.
pub const INSPECT_BYTES_MAX: usize = 64 * 1024;

/// A tower layer of [`Placement`]s.
#[derive(Clone, Debug)]
pub struct PlacementLayer {
    workers: Option<Handle>,
    inspect_bytes_max: usize,
    counts: PlacementCounts,
    on_driver: Arc<Semaphore>,
}

impl PlacementLayer {
    /// Calls that need not run on the driver's thread go to `workers`;
    /// with `None`, every call is served where the connection runs, and
    /// none is counted. A request over `inspect_bytes_max` (at most
    /// [`INSPECT_BYTES_MAX`]) is not read to be inspected: its call goes to
    /// the workers.
    pub fn new(
        workers: Option<Handle>,
        inspect_bytes_max: usize,
        counts: PlacementCounts,
    ) -> PlacementLayer {
        PlacementLayer {
            workers,
            inspect_bytes_max: inspect_bytes_max.min(INSPECT_BYTES_MAX),
            counts,
            on_driver: Arc::new(Semaphore::new(ON_DRIVER_CALLS_MAX)),
        }
    }
}

impl<S> tower_layer::Layer<S> for PlacementLayer {
    type Service = Placement<S>;

    fn layer(&self, inner: S) -> Placement<S> {
        Placement {
            inner,
            workers: self.workers.clone(),
            inspect_bytes_max: self.inspect_bytes_max,
            counts: self.counts.clone(),
            on_driver: self.on_driver.clone(),
        }
    }
}

/// Serves the calls of [`ON_DRIVER_THREAD`], and the ranges, deletes and
/// transactions whose requests show a bounded answer, where it is polled,
/// at most [`ON_DRIVER_CALLS_MAX`] at once; runs
/// every other call, and the encoding of its answer, on `workers` (when
/// there are: else it serves every call where it is polled).
#[derive(Clone, Debug)]
pub struct Placement<S> {
    inner: S,
    workers: Option<Handle>,
    inspect_bytes_max: usize,
    counts: PlacementCounts,
    on_driver: Arc<Semaphore>,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl<S> Service<Request<Body>> for Placement<S>
where
    S: Service<Request<Body>, Response = Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError> + Send + 'static,
{
    type Response = Response<Body>;
    type Error = BoxError;
    type Future = Answer;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        // The clone that was made ready serves this call (tower's rule).
        let fresh = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, fresh);
        let Some(workers) = self.workers.clone() else {
            return here(inner, request);
        };
        // With workers to hand calls to, the connections run on the
        // driver's own (current-thread) runtime.
        debug_assert!(
            Handle::try_current()
                .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::CurrentThread),
            "a placement with workers serves on the driver's runtime"
        );
        let counts = self.counts.clone();
        let place = place(request.uri().path());
        // A turn on the driver's thread, taken before the request is read
        // ahead (which runs there too) and held until the answer's headers.
        let turn = match place {
            Place::Workers => None,
            Place::Here | Place::Inspect(_) => self.on_driver.clone().try_acquire_owned().ok(),
        };
        match (place, turn) {
            (Place::Here, Some(turn)) => {
                counts.on_driver.inc();
                let call = here(inner, request);
                Box::pin(async move {
                    let answer = call.await;
                    drop(turn);
                    answer
                })
            }
            (Place::Inspect(bounded), Some(turn)) => {
                let bytes_max = self.inspect_bytes_max;
                Box::pin(async move {
                    let (parts, body) = request.into_parts();
                    let (read, message) = match ReadAhead::read(body, bytes_max).await {
                        Ok(read) => read,
                        // The client's stream failed: nothing to serve.
                        Err(status) => {
                            counts.on_driver.inc();
                            return Ok(status.into_http());
                        }
                    };
                    let bounded = message.is_some_and(|m| bounded(&m));
                    let request = Request::from_parts(parts, Body::new(read));
                    if bounded {
                        counts.on_driver.inc();
                        let answer = inner.call(request).await.map_err(Into::into);
                        drop(turn);
                        answer
                    } else {
                        drop(turn);
                        counts.on_workers.inc();
                        on_workers(workers, inner, request).await
                    }
                })
            }
            _ => {
                counts.on_workers.inc();
                Box::pin(on_workers(workers, inner, request))
            }
        }
    }
}

type Answer = Pin<Box<dyn Future<Output = Result<Response<Body>, BoxError>> + Send>>;

fn here<S>(mut inner: S, request: Request<Body>) -> Answer
where
    S: Service<Request<Body>, Response = Response<Body>>,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
{
    let call = inner.call(request);
    Box::pin(async move { call.await.map_err(Into::into) })
}

/// Runs the call on `workers`, where its answer is encoded too; the
/// answer's frames come back through a bounded channel ([`relay`]).
async fn on_workers<S>(
    workers: Handle,
    mut inner: S,
    request: Request<Body>,
) -> Result<Response<Body>, BoxError>
where
    S: Service<Request<Body>, Response = Response<Body>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError> + Send + 'static,
{
    let served = AbortOnDrop(workers.spawn(async move {
        let (parts, body) = inner.call(request).await.map_err(Into::into)?.into_parts();
        if http_body::Body::is_end_stream(&body) {
            // A failure's status is in the headers ("trailers-only"): the
            // headers must end the stream, or gRPC clients see an answer
            // without trailers.
            return Ok(Response::from_parts(parts, body));
        }
        let (frames, relayed) = mpsc::channel(FRAMES_IN_FLIGHT);
        tokio::spawn(relay(body, frames));
        Ok::<_, BoxError>(Response::from_parts(parts, Body::new(Relayed(relayed))))
    }));
    match served.await {
        Ok(answer) => answer,
        // A gRPC status, not a reset stream; what failed (a panic's
        // message, say) goes to the log, not to the client.
        Err(e) => {
            tracing::error!(error = %e, "a client call on the worker threads failed");
            Ok(tonic::Status::internal("flotilla: the call failed on the server").into_http())
        }
    }
}

/// A unary call's request, read ahead to see the message: the frames read
/// are replayed, then the rest of the body.
struct ReadAhead {
    read: VecDeque<http_body::Frame<Bytes>>,
    rest: Body,
}

/// gRPC's frame header: a compression flag and a 4-byte length.
const FRAME_HEADER_BYTES: usize = 5;

impl ReadAhead {
    /// Reads `body` up to its first message's end, and gives back that
    /// message when its whole frame, uncompressed and at most `bytes_max`,
    /// was read (a copy, dropped once inspected).
    async fn read(
        mut body: Body,
        bytes_max: usize,
    ) -> Result<(ReadAhead, Option<Bytes>), tonic::Status> {
        let mut read = VecDeque::new();
        let mut data = BytesMut::new();
        let message = loop {
            if data.len() >= FRAME_HEADER_BYTES {
                let compressed = data[0] != 0;
                let len = u32::from_be_bytes([data[1], data[2], data[3], data[4]]) as usize;
                if compressed || len > bytes_max {
                    break None;
                }
                if data.len() >= FRAME_HEADER_BYTES + len {
                    break Some(
                        data.freeze()
                            .slice(FRAME_HEADER_BYTES..FRAME_HEADER_BYTES + len),
                    );
                }
            }
            let frame =
                std::future::poll_fn(|cx| http_body::Body::poll_frame(Pin::new(&mut body), cx));
            match frame.await {
                None => break None,
                Some(Err(status)) => return Err(status),
                Some(Ok(frame)) => {
                    let Some(bytes) = frame.data_ref() else {
                        read.push_back(frame);
                        break None;
                    };
                    data.extend_from_slice(bytes);
                    read.push_back(frame);
                }
            }
        };
        Ok((ReadAhead { read, rest: body }, message))
    }
}

impl http_body::Body for ReadAhead {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, tonic::Status>>> {
        if let Some(frame) = self.read.pop_front() {
            return Poll::Ready(Some(Ok(frame)));
        }
        Pin::new(&mut self.rest).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.read.is_empty() && self.rest.is_end_stream()
    }
}

/// Polls `body` (encoding the answer, on the thread this runs on) and
/// sends its frames on; ends when the body does or the connection dropped
/// the relayed body.
async fn relay(
    mut body: Body,
    frames: mpsc::Sender<Result<http_body::Frame<Bytes>, tonic::Status>>,
) {
    loop {
        let frame = std::future::poll_fn(|cx| http_body::Body::poll_frame(Pin::new(&mut body), cx));
        let next = tokio::select! {
            next = frame => next,
            () = frames.closed() => return,
        };
        let Some(next) = next else { return };
        let failed = next.is_err();
        if frames.send(next).await.is_err() || failed {
            return;
        }
    }
}

/// An answer whose frames another thread encodes ([`relay`]).
struct Relayed(mpsc::Receiver<Result<http_body::Frame<Bytes>, tonic::Status>>);

impl http_body::Body for Relayed {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, tonic::Status>>> {
        self.0.poll_recv(cx)
    }
}

/// A task aborted when its handle is dropped: a call whose client went away
/// before the answer stops on the workers too, and a server's task on the
/// driver's runtime stops with the task awaiting it.
#[derive(Debug)]
pub struct AbortOnDrop<T>(pub tokio::task::JoinHandle<T>);

impl<T> Future for AbortOnDrop<T> {
    type Output = Result<T, tokio::task::JoinError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0).poll(cx)
    }
}

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_proto::etcdserverpb::{PutRequest, RequestOp};
    use std::sync::Mutex;

    fn range(key: &str, range_end: &str, count_only: bool) -> RangeRequest {
        RangeRequest {
            key: key.into(),
            range_end: range_end.into(),
            count_only,
            ..RangeRequest::default()
        }
    }

    fn op(request: Op) -> RequestOp {
        RequestOp {
            request: Some(request),
        }
    }

    #[test]
    fn an_answer_is_bounded_by_one_key_a_count_or_no_previous_values() {
        assert!(bounded_range(&range("a", "", false).encode_to_vec()));
        assert!(bounded_range(&range("a", "b", true).encode_to_vec()));
        assert!(!bounded_range(&range("a", "b", false).encode_to_vec()));
        assert!(!bounded_range(&range("", "\0", false).encode_to_vec()));
        let delete = |range_end: &str, prev_kv| DeleteRangeRequest {
            key: b"a".to_vec(),
            range_end: range_end.into(),
            prev_kv,
        };
        assert!(bounded_delete(&delete("", true).encode_to_vec()));
        assert!(bounded_delete(&delete("b", false).encode_to_vec()));
        assert!(!bounded_delete(&delete("b", true).encode_to_vec()));
        // Kubernetes' update: put if unchanged, else read the one key.
        let update = TxnRequest {
            compare: Vec::new(),
            success: vec![op(Op::RequestPut(PutRequest::default()))],
            failure: vec![op(Op::RequestRange(range("k", "", false)))],
        };
        assert!(bounded_txn(&update.encode_to_vec()));
        let listing = TxnRequest {
            failure: vec![op(Op::RequestRange(range("k", "l", false)))],
            ..update.clone()
        };
        assert!(!bounded_txn(&listing.encode_to_vec()));
        let nested = TxnRequest {
            success: vec![op(Op::RequestTxn(listing))],
            ..update.clone()
        };
        assert!(!bounded_txn(&nested.encode_to_vec()));
        let deleting = TxnRequest {
            success: vec![op(Op::RequestDeleteRange(delete("b", true)))],
            ..update.clone()
        };
        assert!(!bounded_txn(&deleting.encode_to_vec()));
        // A few bytes of request may ask for many values: one branch's
        // values count (only one runs), nested ones included.
        let gets = |n| vec![op(Op::RequestRange(range("k", "", false))); n];
        let counted = |success, failure| TxnRequest {
            compare: Vec::new(),
            success,
            failure,
        };
        assert!(bounded_txn(&counted(gets(2), gets(2)).encode_to_vec()));
        assert!(!bounded_txn(&counted(gets(1), gets(3)).encode_to_vec()));
        assert!(!bounded_txn(
            &counted(gets(128), Vec::new()).encode_to_vec()
        ));
        let with_prev = |prev_kv| {
            op(Op::RequestPut(PutRequest {
                prev_kv,
                ..PutRequest::default()
            }))
        };
        let puts = counted(
            vec![with_prev(true), with_prev(false), with_prev(true)],
            Vec::new(),
        );
        assert!(bounded_txn(&puts.encode_to_vec()));
        let puts = counted(vec![with_prev(true); 3], Vec::new());
        assert!(!bounded_txn(&puts.encode_to_vec()));
        let counts = counted(
            gets(2),
            vec![op(Op::RequestRange(range("a", "b", true))); 8],
        );
        assert!(bounded_txn(&counts.encode_to_vec()));
        let nested = counted(vec![op(Op::RequestTxn(counted(gets(2), gets(1))))], gets(2));
        assert!(bounded_txn(&nested.encode_to_vec()));
        let nested = counted(
            vec![
                op(Op::RequestTxn(counted(gets(2), gets(1)))),
                with_prev(true),
            ],
            Vec::new(),
        );
        assert!(!bounded_txn(&nested.encode_to_vec()));
        assert!(!bounded_txn(b"\xff\xff not a message"));
    }

    /// What a test service answers.
    type Served =
        Pin<Box<dyn Future<Output = Result<Response<Body>, std::convert::Infallible>> + Send>>;

    /// A test service's one method.
    trait Serve {
        fn serve(&mut self, request: Request<Body>) -> Served;
    }

    /// A [`Serve`] as a tower service.
    #[derive(Clone)]
    struct Fake<T>(T);

    impl<T: Serve> Service<Request<Body>> for Fake<T> {
        type Response = Response<Body>;
        type Error = std::convert::Infallible;
        type Future = Served;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, request: Request<Body>) -> Served {
            self.0.serve(request)
        }
    }

    /// Each call's path, thread and request bytes.
    type Calls = Vec<(String, String, Vec<u8>)>;

    /// A service that records the thread each call ran on and the request
    /// body it read, and answers two data frames and trailers.
    #[derive(Clone, Default)]
    struct Recorder {
        calls: Arc<Mutex<Calls>>,
    }

    impl Serve for Recorder {
        fn serve(&mut self, request: Request<Body>) -> Served {
            let calls = self.calls.clone();
            Box::pin(async move {
                let thread = std::thread::current().name().unwrap_or("").to_owned();
                let path = request.uri().path().to_owned();
                let mut body = request.into_body();
                let mut read = Vec::new();
                while let Some(frame) =
                    std::future::poll_fn(|cx| http_body::Body::poll_frame(Pin::new(&mut body), cx))
                        .await
                {
                    read.extend_from_slice(frame.unwrap().data_ref().unwrap());
                }
                calls.lock().unwrap().push((path, thread, read));
                let (tx, rx) = mpsc::channel(4);
                tx.send(Ok(http_body::Frame::data(Bytes::from_static(b"one"))))
                    .await
                    .unwrap();
                tx.send(Ok(http_body::Frame::data(Bytes::from_static(b"two"))))
                    .await
                    .unwrap();
                let mut trailers = tonic::codegen::http::HeaderMap::new();
                trailers.insert("grpc-status", "0".parse().unwrap());
                tx.send(Ok(http_body::Frame::trailers(trailers)))
                    .await
                    .unwrap();
                Ok(Response::new(Body::new(Relayed(rx))))
            })
        }
    }

    fn framed(message: &[u8], compressed: bool) -> Vec<u8> {
        let mut framed = vec![u8::from(compressed)];
        framed.extend_from_slice(&u32::try_from(message.len()).unwrap().to_be_bytes());
        framed.extend_from_slice(message);
        framed
    }

    /// A runtime of one worker thread, named "worker".
    fn workers() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("worker")
            .enable_all()
            .build()
            .unwrap()
    }

    /// `service` behind a [`Placement`] handing calls to `workers`.
    fn placed<T: Serve>(
        workers: &tokio::runtime::Runtime,
        bytes_max: usize,
        service: T,
    ) -> Placement<Fake<T>> {
        let layer = PlacementLayer::new(
            Some(workers.handle().clone()),
            bytes_max,
            PlacementCounts::default(),
        );
        tower_layer::Layer::layer(&layer, Fake(service))
    }

    /// A call of `path` with `body`.
    fn request(path: &str, body: Body) -> Request<Body> {
        Request::builder().uri(path).body(body).unwrap()
    }

    /// Runs `work` on a current-thread runtime on a thread named "driver".
    fn on_driver<T: Send + 'static>(work: impl Future<Output = T> + Send + 'static) -> T {
        std::thread::Builder::new()
            .name("driver".into())
            .spawn(move || {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap()
                    .block_on(work)
            })
            .unwrap()
            .join()
            .unwrap()
    }

    /// The threads `hangs` saw calls on, once there are `n`.
    async fn threads_of(hangs: &Hangs, n: usize) -> Vec<String> {
        for _ in 0..2000 {
            let threads = hangs.0.lock().unwrap().clone();
            if threads.len() >= n {
                return threads;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        panic!("fewer than {n} calls");
    }

    /// A request body of `bytes` in frames of `chunk` bytes.
    fn body(bytes: &[u8], chunk: usize) -> Body {
        let (tx, rx) = mpsc::channel(bytes.len() / chunk + 2);
        for piece in bytes.chunks(chunk) {
            tx.try_send(Ok(http_body::Frame::data(Bytes::copy_from_slice(piece))))
                .unwrap();
        }
        Body::new(Relayed(rx))
    }

    /// Runs `calls` through a [`Placement`] on a thread named "driver",
    /// calls outside it going to a runtime whose thread is "worker"; gives
    /// back what the service recorded and each answer's frames.
    fn serve(
        calls: Vec<(&'static str, Body)>,
        bytes_max: usize,
    ) -> Vec<(String, String, Vec<u8>, Vec<String>)> {
        let workers = workers();
        let recorder = Recorder::default();
        let mut placement = placed(&workers, bytes_max, recorder.clone());
        let answers = on_driver(async move {
            let mut answers = Vec::new();
            for (path, body) in calls {
                let request = Request::builder().uri(path).body(body).unwrap();
                let answer = placement.call(request).await.unwrap();
                let mut body = answer.into_body();
                let mut frames = Vec::new();
                while let Some(frame) =
                    std::future::poll_fn(|cx| http_body::Body::poll_frame(Pin::new(&mut body), cx))
                        .await
                {
                    let frame = frame.unwrap();
                    frames.push(match frame.data_ref() {
                        Some(data) => String::from_utf8_lossy(data).into_owned(),
                        None => format!("{:?}", frame.trailers_ref().unwrap()),
                    });
                }
                answers.push(frames);
            }
            answers
        });
        let calls = recorder.calls.lock().unwrap().clone();
        assert_eq!(calls.len(), answers.len());
        calls
            .into_iter()
            .zip(answers)
            .map(|((path, thread, read), frames)| (path, thread, read, frames))
            .collect()
    }

    #[test]
    fn bounded_calls_run_on_the_driver_and_the_rest_on_the_workers() {
        let one_key = framed(&range("a", "", false).encode_to_vec(), false);
        let prefix = framed(&range("a", "b", false).encode_to_vec(), false);
        let compressed = framed(&range("a", "", false).encode_to_vec(), true);
        let put = framed(&PutRequest::default().encode_to_vec(), false);
        let calls = vec![
            ("/etcdserverpb.KV/Put", body(&put, 100)),
            ("/etcdserverpb.KV/Range", body(&one_key, 2)),
            ("/etcdserverpb.KV/Range", body(&prefix, 3)),
            ("/etcdserverpb.KV/Range", body(&compressed, 100)),
            ("/etcdserverpb.Watch/Watch", body(b"anything", 3)),
        ];
        let sent: Vec<Vec<u8>> = vec![put, one_key, prefix, compressed, b"anything".to_vec()];
        let served = serve(calls, 1024);
        let threads: Vec<&str> = served.iter().map(|(_, t, _, _)| t.as_str()).collect();
        assert_eq!(threads, ["driver", "driver", "worker", "worker", "worker"]);
        for ((path, _, read, frames), sent) in served.iter().zip(&sent) {
            // The request reached the service whole, read ahead or not, and
            // the answer whole, relayed or not.
            assert_eq!(read, sent, "{path}");
            assert_eq!(frames.len(), 3, "{path}");
            assert_eq!(frames[..2], ["one", "two"], "{path}");
            assert!(frames[2].contains("grpc-status"), "{path}: {frames:?}");
        }
    }

    #[test]
    fn a_request_over_the_bound_is_not_read_ahead() {
        let key = "k".repeat(600);
        let big = framed(&range(&key, "", false).encode_to_vec(), false);
        let served = serve(vec![("/etcdserverpb.KV/Range", body(&big, 64))], 512);
        assert_eq!(served[0].1, "worker");
        assert_eq!(served[0].2, big);
    }

    /// An answer that never ends and tells when it is dropped.
    struct Endless(Option<std::sync::mpsc::Sender<()>>);

    impl http_body::Body for Endless {
        type Data = Bytes;
        type Error = tonic::Status;

        fn poll_frame(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<http_body::Frame<Bytes>, tonic::Status>>> {
            Poll::Ready(Some(Ok(http_body::Frame::data(Bytes::from_static(
                b"event",
            )))))
        }
    }

    impl Drop for Endless {
        fn drop(&mut self) {
            if let Some(dropped) = self.0.take() {
                let _ = dropped.send(());
            }
        }
    }

    /// Answers every call with an [`Endless`] body, or, for
    /// `/never/answers`, never answers (telling when that call is dropped).
    #[derive(Clone)]
    struct Streams(std::sync::mpsc::Sender<()>, std::sync::mpsc::Sender<()>);

    impl Serve for Streams {
        fn serve(&mut self, request: Request<Body>) -> Served {
            let dropped = self.0.clone();
            let _ = self.1.send(());
            if request.uri().path() == "/fails" {
                return Box::pin(async move { Ok(tonic::Status::not_found("no").into_http()) });
            }
            if request.uri().path() == "/never/answers" {
                let guard = Endless(Some(dropped));
                return Box::pin(async move {
                    let _guard = guard;
                    std::future::pending().await
                });
            }
            Box::pin(async move { Ok(Response::new(Body::new(Endless(Some(dropped))))) })
        }
    }

    #[test]
    fn a_call_on_the_workers_ends_when_its_client_goes() {
        let workers = workers();
        let (dropped_tx, dropped) = std::sync::mpsc::channel();
        let (started_tx, started) = std::sync::mpsc::channel();
        let mut placement = placed(&workers, 1024, Streams(dropped_tx, started_tx));
        let driver = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let wait = std::time::Duration::from_secs(10);
        driver.block_on(async {
            // A stream read for a while, then dropped: its body on the
            // workers is dropped too.
            let request = Request::builder()
                .uri("/etcdserverpb.Watch/Watch")
                .body(Body::empty())
                .unwrap();
            let mut body = placement.call(request).await.unwrap().into_body();
            for _ in 0..3 * FRAMES_IN_FLIGHT {
                let frame =
                    std::future::poll_fn(|cx| http_body::Body::poll_frame(Pin::new(&mut body), cx))
                        .await;
                assert!(frame.unwrap().unwrap().is_data());
            }
            assert!(dropped.try_recv().is_err(), "dropped while read");
            drop(body);
        });
        dropped
            .recv_timeout(wait)
            .expect("the relayed body is dropped");
        driver.block_on(async {
            // A call dropped before it answered stops on the workers.
            let request = Request::builder()
                .uri("/never/answers")
                .body(Body::empty())
                .unwrap();
            while started.try_recv().is_ok() {}
            let call = placement.call(request);
            tokio::pin!(call);
            let waited = tokio::time::timeout(wait, async {
                loop {
                    tokio::select! {
                        _ = &mut call => panic!("answered"),
                        () = tokio::time::sleep(std::time::Duration::from_millis(5)) => {}
                    }
                    if started.try_recv().is_ok() {
                        return;
                    }
                }
            });
            waited.await.expect("the call started on the workers");
        });
        dropped
            .recv_timeout(wait)
            .expect("the unanswered call is dropped");
        driver.block_on(async {
            // A failure answered in the headers alone still ends there.
            let request = Request::builder()
                .uri("/fails")
                .body(Body::empty())
                .unwrap();
            let answer = placement.call(request).await.unwrap();
            assert_eq!(answer.headers()["grpc-status"], "5");
            assert!(http_body::Body::is_end_stream(answer.body()));
        });
    }

    /// Records the thread of each call and never answers.
    #[derive(Clone, Default)]
    struct Hangs(Arc<Mutex<Vec<String>>>);

    impl Serve for Hangs {
        fn serve(&mut self, _: Request<Body>) -> Served {
            let thread = std::thread::current().name().unwrap_or("").to_owned();
            self.0.lock().unwrap().push(thread);
            Box::pin(std::future::pending())
        }
    }

    #[test]
    fn past_its_bound_of_calls_the_driver_hands_the_next_to_the_workers() {
        let workers = workers();
        let hangs = Hangs::default();
        let mut placement = placed(&workers, 1024, hangs.clone());
        let hangs_seen = hangs.clone();
        let put = || request("/etcdserverpb.KV/Put", Body::empty());
        on_driver(async move {
            let hangs = hangs_seen;
            let mut calls: Vec<_> = (0..ON_DRIVER_CALLS_MAX)
                .map(|_| placement.call(put()))
                .collect();
            let past = tokio::spawn(placement.call(put()));
            let threads = threads_of(&hangs, ON_DRIVER_CALLS_MAX + 1).await;
            assert_eq!(
                threads.iter().filter(|t| *t == "driver").count(),
                ON_DRIVER_CALLS_MAX
            );
            assert_eq!(threads.last().map(String::as_str), Some("worker"));
            // One ends: the next call has its turn on the driver.
            calls.pop();
            let _next = placement.call(put());
            let threads = threads_of(&hangs, ON_DRIVER_CALLS_MAX + 2).await;
            assert_eq!(threads.last().map(String::as_str), Some("driver"));
            past.abort();
        });
    }

    #[test]
    fn an_inspected_call_holds_a_turn_only_while_read_or_served_on_the_driver() {
        let workers = workers();
        let hangs = Hangs::default();
        let mut placement = placed(&workers, 512, hangs.clone());
        let seen = hangs.clone();
        let call = |body: Body| request("/etcdserverpb.KV/Range", body);
        on_driver(async move {
            let hangs = seen;
            // A request over the bound goes to the workers on its
            // first frame: the rest is never waited for here.
            let key = "k".repeat(600);
            let big = framed(&range(&key, "", false).encode_to_vec(), false);
            let (rest, frames) = mpsc::channel(4);
            rest.send(Ok(http_body::Frame::data(Bytes::copy_from_slice(
                &big[..64],
            ))))
            .await
            .unwrap();
            let mut held = vec![tokio::spawn(
                placement.call(call(Body::new(Relayed(frames)))),
            )];
            assert_eq!(threads_of(&hangs, 1).await, ["worker"]);
            // Ranges over keys give their turns back once read:
            // a put still finds one.
            let prefix = framed(&range("a", "b", false).encode_to_vec(), false);
            for _ in 0..ON_DRIVER_CALLS_MAX {
                held.push(tokio::spawn(placement.call(call(body(&prefix, 7)))));
            }
            let threads = threads_of(&hangs, ON_DRIVER_CALLS_MAX + 1).await;
            assert!(threads.iter().all(|t| t == "worker"));
            let put = request("/etcdserverpb.KV/Put", Body::empty());
            held.push(tokio::spawn(placement.call(put)));
            let threads = threads_of(&hangs, ON_DRIVER_CALLS_MAX + 2).await;
            assert_eq!(threads.last().map(String::as_str), Some("driver"));
            // One-key ranges hold theirs while served.
            let one_key = framed(&range("a", "", false).encode_to_vec(), false);
            for _ in 1..ON_DRIVER_CALLS_MAX {
                held.push(tokio::spawn(placement.call(call(body(&one_key, 7)))));
            }
            let threads = threads_of(&hangs, 2 * ON_DRIVER_CALLS_MAX + 1).await;
            assert!(
                threads[ON_DRIVER_CALLS_MAX + 1..]
                    .iter()
                    .all(|t| t == "driver")
            );
            // With no turn left, a range goes to the workers
            // without being read here: its body never comes.
            let (silent, nothing) = mpsc::channel(1);
            held.push(tokio::spawn(
                placement.call(call(Body::new(Relayed(nothing)))),
            ));
            let threads = threads_of(&hangs, 2 * ON_DRIVER_CALLS_MAX + 2).await;
            assert_eq!(threads.last().map(String::as_str), Some("worker"));
            for call in held {
                call.abort();
            }
            drop((rest, silent));
        });
    }
}
