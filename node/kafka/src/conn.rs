//! One client connection: read request frames, answer them in order, until
//! the client closes, sends something that is not a request, or the node
//! stops.
//!
//! Produce requests are pipelined: a produce's batches are appended when it
//! is read (in the order the requests came), and its answer waits (acks=all:
//! until replicated) while the next requests are read and appended, up to
//! [`IN_FLIGHT_MAX`] waiting. Any other request is handled once every
//! earlier answer is written, so answers leave in the order of the requests.

use crate::Context;
use crate::dispatch::{self, Later, Outcome};
use crate::frame::{self, FrameError};
use futures::StreamExt;
use futures::stream::FuturesOrdered;
use kafka_protocol::messages::ApiKey;
use std::net::SocketAddr;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::{mpsc, watch};

/// Produce answers one connection may have waiting (librdkafka's
/// max.in.flight is at most 5 with idempotence).
pub const IN_FLIGHT_MAX: usize = 5;

/// Serves one connection.
pub async fn run(
    stream: TcpStream,
    peer: SocketAddr,
    ctx: &Context,
    mut shutdown: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let (r, mut w) = stream.into_split();
    // Frames are read by their own task (reading is not cancel-safe), at
    // most a few ahead of the answers.
    let (tx, mut rx) = mpsc::channel::<Result<bytes::Bytes, FrameError>>(2);
    let max = ctx.config.frame_bytes_max;
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
    let _abort = AbortOnDrop(reader);
    let mut waiting: FuturesOrdered<Later<'_>> = FuturesOrdered::new();
    loop {
        let event = tokio::select! {
            _ = shutdown.wait_for(|s| *s) => Event::Stop,
            Some(answer) = waiting.next(), if !waiting.is_empty() => Event::Answer(answer),
            f = rx.recv(), if waiting.len() < IN_FLIGHT_MAX => Event::Frame(f),
        };
        let frame = match event {
            Event::Stop => return,
            Event::Answer(answer) => {
                if !write(&mut w, peer, answer).await {
                    return;
                }
                continue;
            }
            Event::Frame(f) => f,
        };
        let frame = match frame {
            Some(Ok(f)) => f,
            // The reader ended: answer what waits, then close.
            Some(Err(e)) => {
                drain(&mut waiting, &mut w, peer).await;
                end(peer, e);
                return;
            }
            None => {
                drain(&mut waiting, &mut w, peer).await;
                return;
            }
        };
        let produce =
            frame::header_prefix(&frame).is_ok_and(|p| p.api_key == ApiKey::Produce as i16);
        if !produce && !drain(&mut waiting, &mut w, peer).await {
            return;
        }
        match dispatch::handle_frame(ctx, frame).await {
            Ok(Outcome::Later(later)) => waiting.push_back(later),
            Ok(outcome) => {
                if waiting.is_empty() {
                    if !write(&mut w, peer, Ok(outcome)).await {
                        return;
                    }
                } else {
                    waiting.push_back(Box::pin(async move { Ok(outcome) }));
                }
            }
            Err(e) => {
                drain(&mut waiting, &mut w, peer).await;
                end(peer, e);
                return;
            }
        }
    }
}

/// What the connection's loop woke up for.
enum Event<'a> {
    Stop,
    Answer(Result<Outcome<'a>, FrameError>),
    Frame(Option<Result<bytes::Bytes, FrameError>>),
}

/// Writes every waiting answer, in order; false if the connection is done.
async fn drain(
    waiting: &mut FuturesOrdered<Later<'_>>,
    w: &mut OwnedWriteHalf,
    peer: SocketAddr,
) -> bool {
    while let Some(answer) = waiting.next().await {
        if !write(w, peer, answer).await {
            return false;
        }
    }
    true
}

/// Writes one answer; false if the connection is done.
async fn write(
    w: &mut OwnedWriteHalf,
    peer: SocketAddr,
    answer: Result<Outcome<'_>, FrameError>,
) -> bool {
    match answer {
        Ok(Outcome::Respond(bytes)) => {
            if let Err(e) = w.write_all(&bytes).await {
                tracing::debug!(%peer, error = %e, "kafka connection: write failed");
                return false;
            }
            true
        }
        Ok(Outcome::Silent) => true,
        // Only produce answers wait, and they do not wait twice.
        Ok(Outcome::Later(_)) => {
            tracing::warn!(%peer, "kafka connection: an answer waited twice; closing it");
            false
        }
        Err(e) => {
            end(peer, e);
            false
        }
    }
}

fn end(peer: SocketAddr, e: FrameError) {
    match e {
        FrameError::Closed => {}
        e @ FrameError::Io(_) => tracing::debug!(%peer, error = %e, "kafka connection ended"),
        e => tracing::warn!(%peer, error = %e, "kafka connection: closing it"),
    }
}

/// Stops the frame reader when the connection ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
