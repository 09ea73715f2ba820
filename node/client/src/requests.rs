//! The etcd requests themselves, for callers that need more than
//! `get`/`put`/`delete` (ranges with options, leases on puts, transactions):
//! the same retries, leader discovery and exactly-once ids.

use super::{Client, ClientError, with_metadata};
use flotilla_proto::etcdserverpb::kv_client::KvClient;
use flotilla_proto::etcdserverpb::{
    DeleteRangeRequest, DeleteRangeResponse, PutRequest, PutResponse, RangeRequest, RangeResponse,
    TxnRequest, TxnResponse,
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
        self.with_retries(Some(seq), |ch, meta| {
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
        self.with_retries(Some(seq), |ch, meta| {
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
        self.with_retries(Some(seq), |ch, meta| {
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
