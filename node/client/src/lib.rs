//! The Rust client of a Flotilla cluster (or any etcd v3 endpoint): leader
//! discovery through retries, exactly-once writes, timeouts, and the spec's
//! `get` / `put` / `delete` / `put_if_absent(ttl)`.
//!
//! Exactly-once: every client has a random id and numbers its writes; both
//! travel as gRPC metadata (`flotilla-client-id`, `flotilla-seq`), and a
//! retry of the same write carries the same number, so the cluster applies
//! it once even when the first attempt's answer was lost. Against a plain
//! etcd the metadata is ignored and writes have etcd's semantics.

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
use std::sync::atomic::{AtomicU64, Ordering};
use tonic::transport::Channel;
pub use watch::Watch;

/// Metadata key carrying the client's id.
pub const CLIENT_ID_HEADER: &str = "flotilla-client-id";
/// Metadata key carrying the write's sequence number.
pub const SEQ_HEADER: &str = "flotilla-seq";
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
    seq: AtomicU64,
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
            seq: AtomicU64::new(0),
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
    async fn with_retries<T, F, Fut>(&self, seq: Option<u64>, mut call: F) -> Result<T, ClientError>
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
                meta.insert(SEQ_HEADER, seq.into());
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

    fn next_seq(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::Relaxed) + 1
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
            .with_retries(Some(seq), |ch, meta| {
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
            .with_retries(Some(seq), |ch, meta| {
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
        let seq = self.next_seq();
        let lease = self
            .with_retries(Some(seq), |ch, meta| {
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
            .with_retries(Some(seq), |ch, meta| {
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
