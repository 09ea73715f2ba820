//! Response headers: etcd's `ResponseHeader`, filled from this member.

use crate::driver::NodeStatus;
use flotilla_proto::etcdserverpb::ResponseHeader;
use tokio::sync::watch;

/// Fills response headers with this member's cluster id, member id and
/// current term; the revision comes from the store.
#[derive(Clone, Debug)]
pub struct HeaderSource {
    cluster_id: u64,
    member_id: u64,
    status: watch::Receiver<NodeStatus>,
}

impl HeaderSource {
    /// Headers of member `member_id` of cluster `cluster_id`, with the term
    /// read from the driver's `status`.
    pub fn new(cluster_id: u64, member_id: u64, status: watch::Receiver<NodeStatus>) -> Self {
        HeaderSource {
            cluster_id,
            member_id,
            status,
        }
    }

    /// A header at `revision`.
    pub fn header(&self, revision: i64) -> ResponseHeader {
        ResponseHeader {
            cluster_id: self.cluster_id,
            member_id: self.member_id,
            revision,
            raft_term: self.status.borrow().term.0,
        }
    }

    /// Completes a header the store filled (which carries the revision).
    pub fn fill(&self, header: &mut Option<ResponseHeader>) {
        let revision = header.as_ref().map_or(0, |h| h.revision);
        *header = Some(self.header(revision));
    }
}
