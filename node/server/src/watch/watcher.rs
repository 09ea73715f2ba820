//! One watcher: what it watches and how far it has got.

use crate::kv::in_range;
use crate::state::WatchedRange;
use flotilla_proto::etcdserverpb::WatchCreateRequest;
use flotilla_proto::etcdserverpb::watch_create_request::FilterType;
use flotilla_proto::mvccpb::Event;
use flotilla_proto::mvccpb::event::EventType;
use std::sync::Arc;

/// A watcher on one stream.
#[derive(Clone, Debug)]
pub(super) struct Watcher {
    key: Vec<u8>,
    range_end: Vec<u8>,
    prev_kv: bool,
    no_put: bool,
    no_delete: bool,
    /// Wants periodic progress notifications.
    pub(super) progress_notify: bool,
    /// Takes large responses in fragments.
    pub(super) fragment: bool,
    /// The first revision not yet delivered (or passed over as not
    /// matching): everything below it has been sent.
    pub(super) next_rev: i64,
    /// Follows the live broadcast; otherwise it catches up from history.
    pub(super) synced: bool,
    /// Its range, registered for the state machine to send its events.
    _registered: Option<Arc<WatchedRange>>,
}

impl Watcher {
    /// A watcher for `req`, created when the store was at `current_rev`.
    /// Start revision 0 means from the next revision; a start in the future
    /// needs no history either. Anything else catches up first.
    pub(super) fn new(req: &WatchCreateRequest, current_rev: i64) -> Watcher {
        let (next_rev, synced) = if req.start_revision <= 0 {
            (current_rev + 1, true)
        } else {
            (req.start_revision, req.start_revision > current_rev)
        };
        Watcher {
            key: req.key.clone(),
            range_end: req.range_end.clone(),
            prev_kv: req.prev_kv,
            no_put: req.filters.contains(&(FilterType::Noput as i32)),
            no_delete: req.filters.contains(&(FilterType::Nodelete as i32)),
            progress_notify: req.progress_notify,
            fragment: req.fragment,
            next_rev,
            synced,
            _registered: None,
        }
    }

    /// This watcher, holding the registration of its range.
    pub(super) fn registered(self, registered: Option<Arc<WatchedRange>>) -> Watcher {
        Watcher {
            _registered: registered,
            ..self
        }
    }

    /// The watched range, as `KvStore::events` takes it.
    pub(super) fn range(&self) -> (Vec<u8>, Vec<u8>) {
        (self.key.clone(), self.range_end.clone())
    }

    /// The events of `events` this watcher is to get, `prev_kv` dropped
    /// unless it asked for it.
    pub(super) fn select(&self, events: &[Event]) -> Vec<Event> {
        events
            .iter()
            .filter(|e| self.wants(e))
            .map(|e| {
                let mut e = e.clone();
                if !self.prev_kv {
                    e.prev_kv = None;
                }
                e
            })
            .collect()
    }

    fn wants(&self, e: &Event) -> bool {
        let Some(kv) = &e.kv else {
            return false;
        };
        let filtered = if e.r#type == EventType::Delete as i32 {
            self.no_delete
        } else {
            self.no_put
        };
        !filtered && in_range(&kv.key, &self.key, &self.range_end)
    }
}

/// The revision of an event (a delete's tombstone carries it too).
pub(super) fn event_revision(e: &Event) -> i64 {
    e.kv.as_ref().map_or(0, |kv| kv.mod_revision)
}
