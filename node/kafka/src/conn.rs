//! One client connection: read a request frame, answer it, repeat, until
//! the client closes, sends something that is not a request, or the node
//! stops.

use crate::Context;
use crate::dispatch::{self, Outcome};
use crate::frame::{self, FrameError};
use std::net::SocketAddr;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::watch;

/// Serves one connection.
pub async fn run(
    stream: TcpStream,
    peer: SocketAddr,
    ctx: &Context,
    mut shutdown: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::with_capacity(64 << 10, r);
    loop {
        let frame = tokio::select! {
            _ = shutdown.wait_for(|s| *s) => return,
            f = frame::read_frame(&mut r, ctx.config.frame_bytes_max) => f,
        };
        let result = match frame {
            Ok(f) => dispatch::handle_frame(ctx, f).await,
            Err(e) => Err(e),
        };
        match result {
            Ok(Outcome::Respond(bytes)) => {
                if let Err(e) = w.write_all(&bytes).await {
                    tracing::debug!(%peer, error = %e, "kafka connection: write failed");
                    return;
                }
            }
            Ok(Outcome::Silent) => {}
            Err(FrameError::Closed) => return,
            Err(e @ FrameError::Io(_)) => {
                tracing::debug!(%peer, error = %e, "kafka connection ended");
                return;
            }
            Err(e) => {
                tracing::warn!(%peer, error = %e, "kafka connection: closing it");
                return;
            }
        }
    }
}
