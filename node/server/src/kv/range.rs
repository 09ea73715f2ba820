//! etcd's Range over the MVCC store: filters, sort, limit, count.

use super::mvcc::MvccStore;
use flotilla_proto::etcdserverpb::range_request::{SortOrder, SortTarget};
use flotilla_proto::etcdserverpb::{RangeRequest, RangeResponse, ResponseHeader};
use flotilla_proto::mvccpb::KeyValue;

/// Answers `req` at revision `at` (already checked). Follows etcd's
/// `applierV3backend.Range`: `count` is every key of the range at `at`,
/// before the revision filters and the limit; `more` says the limit cut
/// the filtered, sorted list.
///
/// `count_only`, `limit` and `keys_only` are pushed down: a count copies
/// nothing, and a range in key order without revision filters (what
/// Kubernetes' paginated LISTs and `etcdctl get --prefix --limit` send)
/// copies only the keys it returns; `count` is then one pass over the
/// range's keys, or free for the whole key space at the current revision.
pub(crate) fn range_at(store: &MvccStore, req: &RangeRequest, at: i64) -> RangeResponse {
    let header = Some(ResponseHeader {
        revision: at,
        ..Default::default()
    });
    if req.count_only {
        return RangeResponse {
            header,
            kvs: Vec::new(),
            more: false,
            count: store.count(&req.key, &req.range_end, at) as i64,
        };
    }
    let target = SortTarget::try_from(req.sort_target).unwrap_or(SortTarget::Key);
    let mut order = SortOrder::try_from(req.sort_order).unwrap_or(SortOrder::None);
    // Scans come in ascending key order; etcd sorts ascending by default
    // only when the target is not the key.
    if target != SortTarget::Key && order == SortOrder::None {
        order = SortOrder::Ascend;
    }
    let filtered = req.min_mod_revision != 0
        || req.max_mod_revision != 0
        || req.min_create_revision != 0
        || req.max_create_revision != 0;
    if target == SortTarget::Key && !filtered {
        return in_key_order(store, req, at, order == SortOrder::Descend, header);
    }
    let mut kvs = store.scan(&req.key, &req.range_end, at);
    let count = kvs.len() as i64;
    kvs.retain(|kv| keep(req, kv));
    if order != SortOrder::None {
        sort(&mut kvs, target);
        if order == SortOrder::Descend {
            kvs.reverse();
        }
    }
    let mut more = false;
    if req.limit > 0 && kvs.len() as i64 > req.limit {
        kvs.truncate(req.limit as usize);
        more = true;
    }
    if req.keys_only {
        for kv in &mut kvs {
            kv.value = Vec::new();
        }
    }
    RangeResponse {
        header,
        kvs,
        more,
        count,
    }
}

/// A range in key order (descending when `reverse`) with no revision
/// filter: the first `limit` visible keys are copied, the rest only counted.
fn in_key_order(
    store: &MvccStore,
    req: &RangeRequest,
    at: i64,
    reverse: bool,
    header: Option<ResponseHeader>,
) -> RangeResponse {
    let limit = usize::try_from(req.limit).ok().filter(|l| *l > 0);
    let kvs: Vec<KeyValue> = store
        .visible_range(&req.key, &req.range_end, at, reverse)
        .take(limit.unwrap_or(usize::MAX))
        .map(|(k, v)| MvccStore::key_value(k, v, req.keys_only))
        .collect();
    let count = match limit {
        Some(limit) if kvs.len() == limit => store.count(&req.key, &req.range_end, at),
        _ => kvs.len() as u64,
    };
    RangeResponse {
        header,
        more: count > kvs.len() as u64,
        count: count as i64,
        kvs,
    }
}

fn keep(req: &RangeRequest, kv: &KeyValue) -> bool {
    (req.min_mod_revision == 0 || kv.mod_revision >= req.min_mod_revision)
        && (req.max_mod_revision == 0 || kv.mod_revision <= req.max_mod_revision)
        && (req.min_create_revision == 0 || kv.create_revision >= req.min_create_revision)
        && (req.max_create_revision == 0 || kv.create_revision <= req.max_create_revision)
}

/// A stable sort, so ties keep key order and every replica answers alike.
fn sort(kvs: &mut [KeyValue], target: SortTarget) {
    match target {
        SortTarget::Key => kvs.sort_by(|a, b| a.key.cmp(&b.key)),
        SortTarget::Version => kvs.sort_by_key(|kv| kv.version),
        SortTarget::Create => kvs.sort_by_key(|kv| kv.create_revision),
        SortTarget::Mod => kvs.sort_by_key(|kv| kv.mod_revision),
        SortTarget::Value => kvs.sort_by(|a, b| a.value.cmp(&b.value)),
    }
}
