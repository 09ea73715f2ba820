//! The Rust client of a Flotilla cluster (or any etcd v3 endpoint): leader
//! discovery through retries, exactly-once writes, timeouts, and the spec's
//! `get` / `put` / `delete` / `put_if_absent(ttl)`.
//!
//! Exactly-once: every client has a random id and numbers its writes; both
//! travel as gRPC metadata (`flotilla-client-id`, `flotilla-seq`), and a
//! retry of the same write carries the same number, so the cluster applies
//! it once even when the first attempt's answer was lost. Each write also
//! carries the lowest number the client still awaits an answer for
//! (`flotilla-first-unanswered`): the cluster keeps the answers of the
//! writes from that one up, so one client may have many writes in flight
//! (from many tasks sharing it) and they may reach the leader in any order.
//! Against a plain etcd the metadata is ignored and writes have etcd's
//! semantics.

pub mod broker;
pub mod coalesce;
mod requests;
pub mod resolve;
mod retry;
mod watch;

use flotilla_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use flotilla_proto::etcdserverpb::kv_client::KvClient;
use flotilla_proto::etcdserverpb::lease_client::LeaseClient;
use flotilla_proto::etcdserverpb::request_op::Request as Op;
use flotilla_proto::etcdserverpb::{
    Compare, DeleteRangeRequest, LeaseGrantRequest, PutRequest, RangeRequest, RequestOp, TxnRequest,
};
pub use requests::prefix_end;
pub use retry::{ClientConfig, ClientError};
use retry::{Endpoints, is_retryable};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use tonic::transport::Channel;
pub use watch::Watch;

/// Metadata key carrying the client's id.
pub const CLIENT_ID_HEADER: &str = "flotilla-client-id";
/// Metadata key carrying the write's sequence number.
pub const SEQ_HEADER: &str = "flotilla-seq";
/// Metadata key carrying the lowest sequence number the client has not yet
/// seen answered (finally: a success, an error, or given up on).
pub const FIRST_UNANSWERED_HEADER: &str = "flotilla-first-unanswered";
/// Metadata key of the leader's member id on a not-leader error.
pub const LEADER_ID_HEADER: &str = "flotilla-leader-id";
/// Metadata key of the leader's client endpoint on a not-leader error.
pub const LEADER_ENDPOINT_HEADER: &str = "flotilla-leader-endpoint";

/// A client of one cluster. Cheap to share by reference; methods take
/// `&self`.
#[derive(Debug)]
pub struct Client {
    endpoints: Endpoints,
    config: ClientConfig,
    client_id: u64,
    seq: Mutex<Unanswered>,
}

/// The client's sequence numbers: the last one given out and those whose
/// calls have not finished.
#[derive(Debug, Default)]
struct Unanswered {
    last: u64,
    open: BTreeSet<u64>,
}

/// A write's sequence number, unanswered until dropped: when its call
/// returns, whatever the outcome, or is cancelled.
struct Seq<'a> {
    client: &'a Client,
    seq: u64,
}

impl Drop for Seq<'_> {
    fn drop(&mut self) {
        self.client.unanswered().open.remove(&self.seq);
    }
}

/// A request carrying `meta` (the exactly-once ids, when a write).
fn with_metadata<T>(message: T, meta: tonic::metadata::MetadataMap) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    *request.metadata_mut() = meta;
    request
}

/// A random, non-zero client id. `RandomState` is seeded from the OS per
/// process; mixing in the time separates clients within one process.
fn random_id() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    RandomState::new()
        .hash_one((std::process::id(), std::time::SystemTime::now(), n))
        .max(1)
}

impl Client {
    /// A client of the cluster reachable at `endpoints` (`http://host:port`).
    /// Connections are made lazily.
    pub fn new(endpoints: &[String], config: ClientConfig) -> Result<Client, ClientError> {
        Ok(Client {
            endpoints: Endpoints::new(endpoints, &config)?,
            client_id: random_id(),
            seq: Mutex::default(),
            config,
        })
    }

    /// This client's exactly-once id.
    pub fn client_id(&self) -> u64 {
        self.client_id
    }

    /// Runs `call` against the current endpoint, moving to the leader it is
    /// told of or to the next endpoint on retryable errors, until the
    /// deadline.
    async fn with_retries<T, F, Fut>(
        &self,
        seq: Option<&Seq<'_>>,
        mut call: F,
    ) -> Result<T, ClientError>
    where
        F: FnMut(Channel, tonic::metadata::MetadataMap) -> Fut,
        Fut: std::future::Future<Output = Result<T, tonic::Status>>,
    {
        let deadline = tokio::time::Instant::now() + self.config.request_timeout;
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let (index, channel) = self.endpoints.current()?;
            let mut meta = tonic::metadata::MetadataMap::new();
            if let Some(seq) = seq {
                meta.insert(CLIENT_ID_HEADER, self.client_id.into());
                meta.insert(SEQ_HEADER, seq.seq.into());
                // Read afresh for each attempt: it only rises, and a higher
                // one lets the cluster drop more answers.
                let first = self.first_unanswered().unwrap_or(seq.seq).min(seq.seq);
                meta.insert(FIRST_UNANSWERED_HEADER, first.into());
            }
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            let result = tokio::time::timeout(
                remaining.min(self.config.attempt_timeout),
                call(channel, meta),
            )
            .await;
            let status = match result {
                Ok(Ok(v)) => return Ok(v),
                Ok(Err(status)) => status,
                Err(_) => tonic::Status::deadline_exceeded("attempt timed out"),
            };
            if !is_retryable(&status)
                || tokio::time::Instant::now() >= deadline
                || attempt >= self.config.max_attempts
            {
                return Err(ClientError::Status(status));
            }
            self.endpoints.after_failure(index, &status);
            tokio::time::sleep(self.config.backoff(attempt)).await;
        }
    }

    fn unanswered(&self) -> MutexGuard<'_, Unanswered> {
        // The set stays consistent even if a holder panicked.
        self.seq.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The next sequence number, unanswered until the returned guard drops.
    /// Given out and marked unanswered under one lock, so no other write
    /// can report a mark above it in between.
    fn next_seq(&self) -> Seq<'_> {
        let mut u = self.unanswered();
        u.last += 1;
        let seq = u.last;
        u.open.insert(seq);
        Seq { client: self, seq }
    }

    /// The lowest sequence number not yet answered, if any.
    fn first_unanswered(&self) -> Option<u64> {
        self.unanswered().open.first().copied()
    }

    /// The value of `key`, or None (a linearizable read).
    pub async fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, ClientError> {
        let req = RangeRequest {
            key: key.to_vec(),
            ..RangeRequest::default()
        };
        let resp = self
            .with_retries(None, |ch, meta| {
                let req = req.clone();
                async move {
                    let r = with_metadata(req, meta);
                    KvClient::new(ch).range(r).await.map(|r| r.into_inner())
                }
            })
            .await?;
        Ok(resp.kvs.into_iter().next().map(|kv| kv.value))
    }

    /// Sets `key` to `value`; returns the revision of the write.
    pub async fn put(&self, key: &[u8], value: &[u8]) -> Result<i64, ClientError> {
        let req = PutRequest {
            key: key.to_vec(),
            value: value.to_vec(),
            ..PutRequest::default()
        };
        let seq = self.next_seq();
        let resp = self
            .with_retries(Some(&seq), |ch, meta| {
                let req = req.clone();
                async move {
                    let r = with_metadata(req, meta);
                    KvClient::new(ch).put(r).await.map(|r| r.into_inner())
                }
            })
            .await?;
        Ok(resp.header.map_or(0, |h| h.revision))
    }

    /// Removes `key`; returns whether it existed.
    pub async fn delete(&self, key: &[u8]) -> Result<bool, ClientError> {
        let req = DeleteRangeRequest {
            key: key.to_vec(),
            ..DeleteRangeRequest::default()
        };
        let seq = self.next_seq();
        let resp = self
            .with_retries(Some(&seq), |ch, meta| {
                let req = req.clone();
                async move {
                    let r = with_metadata(req, meta);
                    KvClient::new(ch)
                        .delete_range(r)
                        .await
                        .map(|r| r.into_inner())
                }
            })
            .await?;
        Ok(resp.deleted > 0)
    }

    /// Sets `key` to `value` only if it does not exist, attached to a new
    /// lease of `ttl_secs` (the key vanishes when the lease expires unless
    /// kept alive); returns the lease id when it was set, None when the key
    /// existed. This is how the broker claims a partition's leadership.
    pub async fn put_if_absent(
        &self,
        key: &[u8],
        value: &[u8],
        ttl_secs: i64,
    ) -> Result<Option<i64>, ClientError> {
        let grant = LeaseGrantRequest {
            ttl: ttl_secs,
            id: 0,
        };
        let grant_seq = self.next_seq();
        let lease = self
            .with_retries(Some(&grant_seq), |ch, meta| {
                let req = grant;
                async move {
                    let r = with_metadata(req, meta);
                    LeaseClient::new(ch)
                        .lease_grant(r)
                        .await
                        .map(|r| r.into_inner())
                }
            })
            .await?;
        drop(grant_seq);
        let txn = TxnRequest {
            compare: vec![Compare {
                result: CompareResult::Equal as i32,
                target: CompareTarget::Create as i32,
                key: key.to_vec(),
                range_end: Vec::new(),
                target_union: Some(TargetUnion::CreateRevision(0)),
            }],
            success: vec![RequestOp {
                request: Some(Op::RequestPut(PutRequest {
                    key: key.to_vec(),
                    value: value.to_vec(),
                    lease: lease.id,
                    ..PutRequest::default()
                })),
            }],
            failure: Vec::new(),
        };
        let seq = self.next_seq();
        let resp = self
            .with_retries(Some(&seq), |ch, meta| {
                let req = txn.clone();
                async move {
                    let r = with_metadata(req, meta);
                    KvClient::new(ch).txn(r).await.map(|r| r.into_inner())
                }
            })
            .await?;
        Ok(resp.succeeded.then_some(lease.id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A client of an endpoint nothing listens on (connections are lazy).
    fn client() -> Client {
        let config = ClientConfig {
            request_timeout: Duration::from_millis(300),
            attempt_timeout: Duration::from_millis(100),
            max_attempts: 2,
            connect_timeout: Duration::from_millis(100),
            backoff_min: Duration::from_millis(1),
            backoff_max: Duration::from_millis(1),
        };
        Client::new(&["http://127.0.0.1:22999".to_string()], config).expect("client")
    }

    #[tokio::test]
    async fn the_mark_is_the_lowest_unfinished_seq() {
        let c = client();
        assert_eq!(c.first_unanswered(), None);
        let one = c.next_seq();
        let two = c.next_seq();
        let three = c.next_seq();
        assert_eq!((one.seq, two.seq, three.seq), (1, 2, 3));
        assert_eq!(c.first_unanswered(), Some(1));
        drop(two);
        assert_eq!(c.first_unanswered(), Some(1), "1 still waits");
        drop(one);
        assert_eq!(c.first_unanswered(), Some(3));
        drop(three);
        assert_eq!(c.first_unanswered(), None);
        assert_eq!(c.next_seq().seq, 4, "numbers are never reused");
    }

    #[tokio::test]
    async fn a_write_given_up_on_leaves_the_unanswered_set() {
        let c = client();
        let held = c.next_seq();
        assert!(c.put(b"k", b"v").await.is_err(), "nothing listens");
        assert!(c.put_if_absent(b"k", b"v", 5).await.is_err());
        assert_eq!(c.first_unanswered(), Some(held.seq));
        drop(held);
        assert_eq!(c.first_unanswered(), None, "the failed writes left it");
    }
}
