//! One client connection: a reader task takes request frames off the
//! socket, this loop handles them in order and writes the answers in
//! request order, with at most [`IN_FLIGHT_MAX`] unanswered.
//!
//! Handling a request runs to its end before the next one starts, except
//! a produce's acks=all wait: its batches are appended, then the wait runs
//! beside the next requests (so a producer's next batch is appended while
//! the previous one replicates), and its answer still goes out in order.

use crate::Context;
use crate::dispatch::{self, Later, Outcome};
use crate::frame::{self, FrameError};
use futures::StreamExt;
use futures::stream::FuturesOrdered;
use std::net::SocketAddr;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};

/// Requests of one connection read and not yet answered, at most (Kafka
/// clients keep 5 in flight by default).
pub const IN_FLIGHT_MAX: usize = 8;

/// Serves one connection.
pub async fn run(
    stream: TcpStream,
    peer: SocketAddr,
    ctx: &Context,
    mut shutdown: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let (r, mut w) = stream.into_split();
    // One frame read ahead at most: memory per connection stays a few
    // frames, whatever the client pipelines.
    let (tx, mut frames) = mpsc::channel(1);
    let max = ctx.config.frame_bytes_max;
    // Reading a frame is not cancel-safe, so it runs on its own: the loop
    // below only waits on the channel.
    let reader = tokio::spawn(async move {
        let mut r = BufReader::with_capacity(64 << 10, r);
        loop {
            let f = frame::read_frame(&mut r, max).await;
            let end = f.is_err();
            if tx.send(f).await.is_err() || end {
                return;
            }
        }
    });
    let mut answers: FuturesOrdered<Later<'_>> = FuturesOrdered::new();
    let stop = async move {
        let _ = shutdown.wait_for(|s| *s).await;
    };
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => break,
            Some(done) = answers.next(), if !answers.is_empty() => {
                if !send(&mut w, peer, done).await {
                    break;
                }
            }
            f = frames.recv(), if answers.len() < IN_FLIGHT_MAX => {
                let Some(f) = f else { break };
                let outcome = match f {
                    Ok(f) => dispatch::handle_frame(ctx, f).await,
                    Err(e) => Err(e),
                };
                // Answered after every earlier request, even an error.
                answers.push_back(match outcome {
                    Ok(Outcome::Later(later)) => later,
                    other => Box::pin(std::future::ready(other)),
                });
            }
        }
    }
    reader.abort();
}

/// Writes one answer; whether the connection goes on.
async fn send(
    w: &mut tokio::net::tcp::OwnedWriteHalf,
    peer: SocketAddr,
    done: Result<Outcome<'_>, FrameError>,
) -> bool {
    match done {
        Ok(Outcome::Respond(bytes)) => match w.write_all(&bytes).await {
            Ok(()) => true,
            Err(e) => {
                tracing::debug!(%peer, error = %e, "kafka connection: write failed");
                false
            }
        },
        Ok(Outcome::Silent) => true,
        // Handlers never nest a later answer in a later answer.
        Ok(Outcome::Later(_)) => {
            tracing::warn!(%peer, "kafka connection: a nested pending answer; closing");
            false
        }
        Err(FrameError::Closed) => false,
        Err(e @ FrameError::Io(_)) => {
            tracing::debug!(%peer, error = %e, "kafka connection ended");
            false
        }
        Err(e) => {
            tracing::warn!(%peer, error = %e, "kafka connection: closing it");
            false
        }
    }
}
