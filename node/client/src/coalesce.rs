//! Write coalescing for HTTP/2 connections.
//!
//! hyper serves each gRPC call as a task of its own, and every finished
//! call wakes the connection's task, which tokio runs next (its LIFO slot).
//! So when the driver answers a batch of proposals at once, the connection
//! task runs after each call's task and writes that one response: one
//! `writev` per response, and on loopback each one also pays for the
//! receiver's TCP processing. [`CoalescingIo`] makes the first write of a
//! round wait until the worker has run every task that is ready (tokio's
//! `yield_now` deferral), so the responses of a batch leave in one write.
//! The wait ends at the latest when the worker looks for new work, so a
//! lone request is delayed by one scheduler pass, not by a timer.
//!
//! Only writes are held back; reads pass straight through, and a flush
//! that the peer waits for (h2 flushes after every round of frames) ends
//! the round.

use crate::resolve::Resolver;
use hyper_util::rt::TokioIo;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_stream::{Stream, StreamExt};
use tonic::codegen::Service;
use tonic::codegen::http::Uri;
use tonic::transport::server::{Connected, TcpConnectInfo, TcpIncoming};

/// Where a connection is in its write round.
#[derive(Debug)]
enum Round {
    /// Nothing written since the last flush: the next write defers.
    Idle,
    /// Deferred until the scheduler has run the other ready tasks.
    Deferred(Arc<Deferral>),
    /// The deferral ended: writes pass until the round's flush.
    Open,
    /// Never deferred ([`CoalescingIo::direct`]).
    Direct,
}

/// Wakes the connection's task when the scheduler's deferral ends, and
/// records that it did (the task may be woken earlier by other events).
#[derive(Debug)]
struct Deferral {
    ended: AtomicBool,
    task: std::sync::Mutex<Waker>,
}

impl Wake for Deferral {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.ended.store(true, Ordering::Release);
        let task = self.task.lock().unwrap_or_else(|e| e.into_inner()).clone();
        task.wake();
    }
}

/// An IO stream whose writes are gathered per scheduler pass (see the
/// module documentation).
#[derive(Debug)]
pub struct CoalescingIo<T> {
    inner: T,
    round: Round,
}

impl<T> CoalescingIo<T> {
    /// Wraps `inner`.
    pub fn new(inner: T) -> Self {
        CoalescingIo {
            inner,
            round: Round::Idle,
        }
    }

    /// Wraps `inner` without holding writes back: every write goes out at
    /// once (see [`Connector::direct`]).
    pub fn direct(inner: T) -> Self {
        CoalescingIo {
            inner,
            round: Round::Direct,
        }
    }

    /// Whether a write may go out now; otherwise the task is registered to
    /// be woken when it may.
    fn may_write(&mut self, cx: &mut Context<'_>) -> bool {
        match &self.round {
            Round::Open | Round::Direct => true,
            Round::Deferred(d) => {
                if d.ended.load(Ordering::Acquire) {
                    self.round = Round::Open;
                    return true;
                }
                let mut task = d.task.lock().unwrap_or_else(|e| e.into_inner());
                if !task.will_wake(cx.waker()) {
                    *task = cx.waker().clone();
                }
                false
            }
            Round::Idle => {
                let deferral = Arc::new(Deferral {
                    ended: AtomicBool::new(false),
                    task: std::sync::Mutex::new(cx.waker().clone()),
                });
                // `yield_now` hands its waker to the scheduler, which wakes
                // it once it has run out of ready tasks (outside a runtime
                // it wakes at once). Polled with the deferral's waker, the
                // scheduler wakes the deferral.
                let waker = Waker::from(deferral.clone());
                let yielded = std::pin::pin!(tokio::task::yield_now());
                let _pending = yielded.poll(&mut Context::from_waker(&waker));
                let ended = deferral.ended.load(Ordering::Acquire);
                self.round = if ended {
                    Round::Open
                } else {
                    Round::Deferred(deferral)
                };
                ended
            }
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for CoalescingIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for CoalescingIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if !self.may_write(cx) {
            return Poll::Pending;
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if !self.may_write(cx) {
            return Poll::Pending;
        }
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let flushed = Pin::new(&mut self.inner).poll_flush(cx);
        if flushed.is_ready() && !matches!(self.round, Round::Direct) {
            self.round = Round::Idle;
        }
        flushed
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The accepted connections of `listener` for a tonic server, with
/// TCP_NODELAY (or small answers wait out Nagle's algorithm against the
/// client's delayed ACK) and coalesced writes.
pub fn incoming(
    listener: TcpListener,
) -> impl Stream<Item = io::Result<CoalescingIo<TcpStream>>> + Send + 'static {
    TcpIncoming::from(listener)
        .with_nodelay(Some(true))
        .map(|accepted| accepted.map(CoalescingIo::new))
}

/// A tonic connector for plain-TCP `http://` endpoints with TCP_NODELAY
/// and coalesced writes:
/// `endpoint.connect_with_connector(Connector::default())` (tonic still
/// applies the endpoint's connect timeout). The host is resolved on every
/// connection attempt through the connector's [`Resolver`] (the system's by
/// default), so a lazily connected channel that reconnects follows a name
/// to its new address; each address it resolves to is tried in turn.
#[derive(Clone, Debug, Default)]
pub struct Connector {
    resolver: Resolver,
    /// Writes go out at once instead of per scheduler pass.
    direct: bool,
}

impl Connector {
    /// A connector resolving names through `resolver`.
    pub fn new(resolver: Resolver) -> Connector {
        Connector {
            resolver,
            direct: false,
        }
    }

    /// This connector with writes that go out at once, not gathered per
    /// scheduler pass: for a connection whose sender already batches (a
    /// Raft peer stream gets one batch per `Ready`), and whose task must
    /// not wait behind a caller that yields to let it write first.
    pub fn direct(self) -> Connector {
        Connector {
            direct: true,
            ..self
        }
    }
}

impl Service<Uri> for Connector {
    type Response = TokioIo<CoalescingIo<TcpStream>>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let resolver = self.resolver.clone();
        let direct = self.direct;
        Box::pin(async move {
            let bad = || io::Error::new(io::ErrorKind::InvalidInput, format!("no host in {uri}"));
            if uri.scheme_str().is_some_and(|s| s != "http") {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{uri}: only http:// endpoints are supported"),
                ));
            }
            let host = uri.host().ok_or_else(bad)?;
            let port = uri.port_u16().unwrap_or(80);
            let mut last = None;
            for addr in resolver.resolve(host, port).await? {
                match TcpStream::connect(addr).await {
                    Ok(stream) => {
                        stream.set_nodelay(true)?;
                        let io = if direct {
                            CoalescingIo::direct(stream)
                        } else {
                            CoalescingIo::new(stream)
                        };
                        return Ok(TokioIo::new(io));
                    }
                    Err(e) => last = Some(e),
                }
            }
            Err(last.unwrap_or_else(|| io::Error::other(format!("{host}: no address"))))
        })
    }
}

impl Connected for CoalescingIo<TcpStream> {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.inner.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::CoalescingIo;
    use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};

    /// Every byte arrives, in order, whatever the deferrals.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn writes_arrive_whole_and_in_order() {
        let (a, mut b) = tokio::io::duplex(1 << 20);
        let mut a = CoalescingIo::new(a);
        let writer = tokio::spawn(async move {
            for i in 0u32..2000 {
                a.write_all(&i.to_be_bytes()).await.unwrap();
                if i % 7 == 0 {
                    a.flush().await.unwrap();
                }
            }
            a.shutdown().await.unwrap();
        });
        let mut got = Vec::new();
        b.read_to_end(&mut got).await.unwrap();
        writer.await.unwrap();
        let expected: Vec<u8> = (0u32..2000).flat_map(|i| i.to_be_bytes()).collect();
        assert_eq!(got, expected);
    }

    /// Writes from a current-thread runtime and from outside any runtime
    /// (where the deferral ends at once) both go through.
    #[test]
    fn works_on_any_scheduler() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let (a, mut b) = tokio::io::duplex(64);
            let mut a = CoalescingIo::new(a);
            a.write_all(b"hello").await.unwrap();
            a.flush().await.unwrap();
            let mut buf = [0u8; 5];
            b.read_exact(&mut buf).await.unwrap();
            assert_eq!(&buf, b"hello");
        });
        let (a, _b) = tokio::io::duplex(64);
        let mut a = CoalescingIo::new(a);
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        let written = std::pin::Pin::new(&mut a).poll_write(&mut cx, b"x");
        assert!(
            matches!(written, std::task::Poll::Ready(Ok(1))),
            "{written:?}"
        );
    }
}
