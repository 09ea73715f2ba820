//! A bound on open client connections: [`limit_connections`] wraps the
//! accepted-connection stream of the client server. A connection beyond
//! `--max-client-connections` is closed as soon as it is accepted (its
//! client sees the connection reset and, like etcd's clients, tries
//! another endpoint or retries), and the refusal is logged at most every
//! ten seconds with a count. Each admitted connection holds a permit until
//! it is dropped, whichever side closes it.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_stream::{Stream, StreamExt};
use tonic::transport::server::Connected;

/// How often refusals are logged, at most.
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// How long the listener rests after an accept fails (out of file
/// descriptors, say; not a connection its client reset before it was
/// accepted), which would otherwise fail again at once: the server
/// retries, and on the driver's thread (`--client-thread`) a loop of
/// failing accepts would take the Raft loop's CPU.
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(20);

/// An admitted connection: `T` with its permit.
#[derive(Debug)]
pub struct Limited<T> {
    inner: T,
    _permit: OwnedSemaphorePermit,
}

impl<T: AsyncRead + Unpin> AsyncRead for Limited<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Limited<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

impl<T: Connected> Connected for Limited<T> {
    type ConnectInfo = T::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

/// Counts refusals and says when to log them.
#[derive(Debug, Default)]
struct Refusals {
    unlogged: u64,
    logged_at: Option<Instant>,
}

impl Refusals {
    fn refused(&mut self, max: usize) {
        self.unlogged += 1;
        let now = Instant::now();
        if self
            .logged_at
            .is_none_or(|at| now.duration_since(at) >= REFUSAL_LOG_INTERVAL)
        {
            tracing::warn!(
                refused = self.unlogged,
                max_client_connections = max,
                "client connections over the limit were closed at once"
            );
            self.unlogged = 0;
            self.logged_at = Some(now);
        }
    }
}

/// `incoming` with at most `max` connections open at once (see the module
/// docs). Accept errors pass through, each after [`ACCEPT_BACKOFF`].
pub fn limit_connections<T, S>(
    incoming: S,
    max: usize,
) -> impl Stream<Item = io::Result<Limited<T>>> + Send + 'static
where
    S: Stream<Item = io::Result<T>> + Send + 'static,
    T: Send + 'static,
{
    let permits = Arc::new(Semaphore::new(max.max(1)));
    let mut refusals = Refusals::default();
    incoming
        .filter_map(move |accepted| match accepted {
            Err(e) => Some(Err(e)),
            Ok(connection) => match permits.clone().try_acquire_owned() {
                Ok(permit) => Some(Ok(Limited {
                    inner: connection,
                    _permit: permit,
                })),
                Err(_) => {
                    drop(connection);
                    refusals.refused(max);
                    None
                }
            },
        })
        .then(|accepted| async move {
            if accepted.as_ref().is_err_and(|e| !one_connection(e)) {
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
            accepted
        })
}

/// Whether an accept failed for one connection only (its client reset it
/// before it was accepted), so the next accept may well succeed.
fn one_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn connections_past_the_limit_are_dropped_until_one_closes() {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<io::Result<u32>>();
        let mut limited = Box::pin(limit_connections(
            tokio_stream::wrappers::UnboundedReceiverStream::new(rx),
            2,
        ));
        for i in 0..4 {
            tx.send(Ok(i)).unwrap();
        }
        tx.send(Err(io::Error::other("accept failed"))).unwrap();
        let a = limited.next().await.unwrap().unwrap();
        let b = limited.next().await.unwrap().unwrap();
        assert_eq!((a.inner, b.inner), (0, 1));
        // 2 and 3 come while two are open: dropped; the error passes.
        assert!(limited.next().await.unwrap().is_err());
        drop(a);
        tx.send(Ok(4)).unwrap();
        let c = limited.next().await.unwrap().unwrap();
        assert_eq!(c.inner, 4, "a closed connection frees its place");
        drop((b, c));
    }

    #[tokio::test]
    async fn a_failed_accept_rests_the_listener_before_it_passes() {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<io::Result<u32>>();
        let mut limited = Box::pin(limit_connections(
            tokio_stream::wrappers::UnboundedReceiverStream::new(rx),
            2,
        ));
        tx.send(Err(io::Error::other("too many open files")))
            .unwrap();
        tx.send(Ok(1)).unwrap();
        let started = tokio::time::Instant::now();
        assert!(limited.next().await.unwrap().is_err());
        // A lower bound only: a sleep never ends early.
        assert!(started.elapsed() >= ACCEPT_BACKOFF);
        assert_eq!(limited.next().await.unwrap().unwrap().inner, 1);
    }

    #[test]
    fn only_a_failure_of_the_listener_rests_it() {
        let kind = |k| io::Error::from(k);
        assert!(one_connection(&kind(io::ErrorKind::ConnectionAborted)));
        assert!(one_connection(&kind(io::ErrorKind::ConnectionReset)));
        assert!(!one_connection(&io::Error::from_raw_os_error(24)), "EMFILE");
        assert!(!one_connection(&kind(io::ErrorKind::OutOfMemory)));
    }
}
