//! Watching key ranges: one etcd v3 Watch stream carrying a watcher per
//! range, opened on the endpoint in use (the next one after a failure).

use crate::{Client, ClientError};
use flotilla_proto::etcdserverpb::watch_client::WatchClient;
use flotilla_proto::etcdserverpb::watch_request::RequestUnion;
use flotilla_proto::etcdserverpb::{WatchCreateRequest, WatchRequest, WatchResponse};
use tokio::sync::mpsc;

/// An open watch stream. Dropping it ends the stream (the server cancels
/// its watchers).
#[derive(Debug)]
pub struct Watch {
    // Held so the request side stays open for the stream's life.
    _requests: mpsc::Sender<WatchRequest>,
    responses: tonic::Streaming<WatchResponse>,
    watchers: usize,
}

impl Watch {
    /// The next response with events (creation confirmations and progress
    /// notifications are skipped). `Ok(None)`: the server ended the stream.
    /// A watcher canceled by the server (compaction, or the member shutting
    /// down) is an error: open a new watch and read again what it covers.
    pub async fn next(&mut self) -> Result<Option<WatchResponse>, ClientError> {
        loop {
            let Some(resp) = self
                .responses
                .message()
                .await
                .map_err(ClientError::Status)?
            else {
                return Ok(None);
            };
            if resp.canceled {
                return Err(ClientError::Status(tonic::Status::aborted(format!(
                    "watch {} canceled: {}",
                    resp.watch_id, resp.cancel_reason
                ))));
            }
            if !resp.events.is_empty() {
                return Ok(Some(resp));
            }
        }
    }

    /// How many watchers the stream carries.
    pub fn watchers(&self) -> usize {
        self.watchers
    }
}

impl Client {
    /// Opens a watch stream with one watcher per `[key, range_end)` range
    /// (an empty `range_end` is the single key), from the current revision
    /// on, and waits until the server confirmed every watcher: events of any
    /// write after this returns are delivered. A failure moves the client to
    /// its next endpoint, so the caller's next attempt tries another member.
    pub async fn watch_ranges(&self, ranges: &[(Vec<u8>, Vec<u8>)]) -> Result<Watch, ClientError> {
        if ranges.is_empty() {
            return Err(ClientError::Status(tonic::Status::invalid_argument(
                "a watch needs at least one range",
            )));
        }
        let (index, channel) = self.endpoints.current()?;
        let result = tokio::time::timeout(self.config.attempt_timeout, async {
            let (tx, rx) = mpsc::channel(ranges.len());
            for (key, range_end) in ranges {
                tx.send(WatchRequest {
                    request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
                        key: key.clone(),
                        range_end: range_end.clone(),
                        ..Default::default()
                    })),
                })
                .await
                .map_err(|_| tonic::Status::internal("watch request queue closed"))?;
            }
            let mut responses = WatchClient::new(channel)
                .watch(tokio_stream::wrappers::ReceiverStream::new(rx))
                .await?
                .into_inner();
            let mut created = 0;
            while created < ranges.len() {
                match responses.message().await? {
                    Some(r) if r.canceled => {
                        return Err(tonic::Status::aborted(format!(
                            "watch refused: {}",
                            r.cancel_reason
                        )));
                    }
                    Some(r) if r.created => created += 1,
                    Some(_) => {}
                    None => return Err(tonic::Status::unavailable("watch stream ended")),
                }
            }
            Ok(Watch {
                _requests: tx,
                responses,
                watchers: ranges.len(),
            })
        })
        .await
        .unwrap_or_else(|_| {
            Err(tonic::Status::deadline_exceeded(
                "watch not created in time",
            ))
        });
        result.map_err(|status| {
            self.endpoints.after_failure(index, &status);
            ClientError::Status(status)
        })
    }

    /// [`Client::watch_ranges`] over every key starting with each prefix.
    pub async fn watch_prefixes(&self, prefixes: &[&[u8]]) -> Result<Watch, ClientError> {
        let ranges: Vec<(Vec<u8>, Vec<u8>)> = prefixes
            .iter()
            .map(|p| (p.to_vec(), crate::prefix_end(p)))
            .collect();
        self.watch_ranges(&ranges).await
    }
}
