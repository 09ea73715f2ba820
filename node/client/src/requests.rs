//! The etcd requests themselves, for callers that need more than
//! `get`/`put`/`delete` (ranges with options, leases on puts, transactions):
//! the same retries, leader discovery and exactly-once ids.

use super::{Client, ClientError, with_metadata};
use flotilla_proto::etcdserverpb::kv_client::KvClient;
use flotilla_proto::etcdserverpb::lease_client::LeaseClient;
use flotilla_proto::etcdserverpb::{
    DeleteRangeRequest, DeleteRangeResponse, LeaseGrantRequest, LeaseKeepAliveRequest,
    LeaseRevokeRequest, PutRequest, PutResponse, RangeRequest, RangeResponse, TxnRequest,
    TxnResponse,
};

impl Client {
    /// Runs `req` as is: linearizable unless it asks to be serializable.
    pub async fn range(&self, req: RangeRequest) -> Result<RangeResponse, ClientError> {
        self.with_retries(None, |ch, meta| {
            let req = req.clone();
            async move {
                KvClient::new(ch)
                    .range(with_metadata(req, meta))
                    .await
                    .map(|r| r.into_inner())
            }
        })
        .await
    }

    /// Applies `req` once, however often it is retried.
    pub async fn put_request(&self, req: PutRequest) -> Result<PutResponse, ClientError> {
        let seq = self.next_seq();
        self.with_retries(Some(&seq), |ch, meta| {
            let req = req.clone();
            async move {
                KvClient::new(ch)
                    .put(with_metadata(req, meta))
                    .await
                    .map(|r| r.into_inner())
            }
        })
        .await
    }

    /// Applies `req` once, however often it is retried.
    pub async fn delete_range(
        &self,
        req: DeleteRangeRequest,
    ) -> Result<DeleteRangeResponse, ClientError> {
        let seq = self.next_seq();
        self.with_retries(Some(&seq), |ch, meta| {
            let req = req.clone();
            async move {
                KvClient::new(ch)
                    .delete_range(with_metadata(req, meta))
                    .await
                    .map(|r| r.into_inner())
            }
        })
        .await
    }

    /// Applies the transaction `req` once, however often it is retried.
    pub async fn txn(&self, req: TxnRequest) -> Result<TxnResponse, ClientError> {
        let seq = self.next_seq();
        self.with_retries(Some(&seq), |ch, meta| {
            let req = req.clone();
            async move {
                KvClient::new(ch)
                    .txn(with_metadata(req, meta))
                    .await
                    .map(|r| r.into_inner())
            }
        })
        .await
    }
}

/// Leases, for callers that hold keys alive (the broker's registrations and
/// partition leaderships, consumer group members).
impl Client {
    /// Grants a lease of `ttl_secs`; returns its id and granted TTL.
    pub async fn lease_grant(&self, ttl_secs: i64) -> Result<(i64, i64), ClientError> {
        let seq = self.next_seq();
        let req = LeaseGrantRequest {
            ttl: ttl_secs,
            id: 0,
        };
        let resp = self
            .with_retries(Some(&seq), |ch, meta| async move {
                LeaseClient::new(ch)
                    .lease_grant(with_metadata(req, meta))
                    .await
                    .map(|r| r.into_inner())
            })
            .await?;
        if !resp.error.is_empty() {
            return Err(ClientError::Status(tonic::Status::unavailable(resp.error)));
        }
        Ok((resp.id, resp.ttl))
    }

    /// Renews lease `id` once; returns its TTL in seconds, or 0 when the
    /// lease no longer exists (expired or revoked).
    ///
    /// One keepalive stream per call: renewals are a few a second at most,
    /// and a fresh stream cannot be stuck behind an earlier broken one. A
    /// caller that uses the answer to bound how long it may act on the lease
    /// measures from before this call, not from its answer.
    pub async fn lease_keep_alive(&self, id: i64) -> Result<i64, ClientError> {
        self.with_retries(None, |ch, meta| async move {
            let requests = tokio_stream::iter([LeaseKeepAliveRequest { id }]);
            let mut responses = LeaseClient::new(ch)
                .lease_keep_alive(with_metadata(requests, meta))
                .await?
                .into_inner();
            match responses.message().await? {
                Some(r) => Ok(r.ttl),
                None => Err(tonic::Status::unavailable("keepalive stream ended")),
            }
        })
        .await
    }

    /// Revokes lease `id`, deleting the keys attached to it. Revoking a lease
    /// that no longer exists is not an error.
    pub async fn lease_revoke(&self, id: i64) -> Result<(), ClientError> {
        let seq = self.next_seq();
        let result = self
            .with_retries(Some(&seq), |ch, meta| async move {
                LeaseClient::new(ch)
                    .lease_revoke(with_metadata(LeaseRevokeRequest { id }, meta))
                    .await
                    .map(|r| r.into_inner())
            })
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(ClientError::Status(s)) if s.message().contains("lease not found") => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The keys under `prefix` (every key starting with it), sorted, at one
    /// revision; returns them with that revision.
    pub async fn range_prefix(
        &self,
        prefix: &[u8],
    ) -> Result<(Vec<flotilla_proto::mvccpb::KeyValue>, i64), ClientError> {
        let resp = self
            .range(RangeRequest {
                key: prefix.to_vec(),
                range_end: prefix_end(prefix),
                ..RangeRequest::default()
            })
            .await?;
        Ok((resp.kvs, resp.header.map_or(0, |h| h.revision)))
    }
}

/// The `range_end` that makes a range cover every key starting with
/// `prefix` (etcd's rule: the prefix with its last byte below 0xff
/// incremented; `[0]`, every key, for an empty or all-0xff prefix).
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}
