//! [`KvView`]: the store frozen at one revision, for reads off the driver.

use super::KvError;
use super::mvcc::MvccStore;
use super::range::range_at;
use flotilla_proto::etcdserverpb::{RangeRequest, RangeResponse};
use flotilla_proto::mvccpb::Event;

/// The MVCC store as it was when the driver made the view (O(1): it shares
/// the store's nodes), and the revision a read resolved to. Nothing the
/// driver applies afterwards shows in it, so a read that the driver
/// confirmed and then handed a view answers exactly as if it had run on
/// the driver at that moment.
#[derive(Clone, Debug)]
pub struct KvView {
    mvcc: MvccStore,
    at: i64,
}

impl KvView {
    pub(crate) fn new(mvcc: MvccStore, at: i64) -> KvView {
        KvView { mvcc, at }
    }

    /// The revision reads of this view are at.
    pub fn revision(&self) -> i64 {
        self.at
    }

    /// The store's revision when the view was made.
    pub fn store_revision(&self) -> i64 {
        self.mvcc.revision()
    }

    /// History below this revision is gone.
    pub fn compact_revision(&self) -> i64 {
        self.mvcc.compact_revision()
    }

    /// etcd's Range at the view's revision (the request passed its checks
    /// when the view was made: [`super::KvStore::range_view`]).
    pub fn range(&self, req: &RangeRequest) -> RangeResponse {
        range_at(&self.mvcc, req, self.at)
    }

    /// Watch catch-up: see [`MvccStore::events`].
    pub fn events(
        &self,
        key: &[u8],
        range_end: &[u8],
        start_revision: i64,
        limit: usize,
    ) -> Result<Vec<Event>, KvError> {
        self.mvcc.events(key, range_end, start_revision, limit)
    }
}
