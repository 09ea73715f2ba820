//! The node's replicated state machine: the [`KvStore`] plus the two things
//! the rest of the node must learn from every applied entry — the events
//! live watchers wait for, and the lease changes the [`Lessor`] tracks.
//!
//! Applying stays pure and quick: events go to a bounded broadcast channel
//! (a watcher that falls behind gets a `Lagged` error and catches up from the
//! store's history, or is cancelled if that history was compacted), and lease
//! changes to the shared lessor under a short lock.

use crate::driver::StateMachine;
use crate::kv::{EventKeys, KeyRanges, KvConfig, KvOutput, KvStore, Lessor};
use flotilla_proto::etcdserverpb::AlarmType;
use flotilla_proto::mvccpb::Event;
use flotilla_raft::{Bytes, LogIndex, Snapshot};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::broadcast;

/// The events one applied entry produced, all at one revision.
#[derive(Clone, Debug, PartialEq)]
pub struct AppliedEvents {
    /// The store's revision after the entry.
    pub revision: i64,
    /// The changes, in order.
    pub events: Vec<Event>,
}

/// Bounds of the node state machine's outputs.
#[derive(Clone, Debug)]
pub struct StateConfig {
    /// The KV store's limits.
    pub kv: KvConfig,
    /// Applied entries buffered for live watchers before slow ones lag.
    pub watch_buffer: usize,
    /// Leases the lessor reports expired per call.
    pub expired_per_call_max: usize,
    /// How long before a reported-expired lease is reported again if its
    /// revoke did not go through.
    pub revoke_retry: Duration,
}

impl Default for StateConfig {
    fn default() -> Self {
        StateConfig {
            kv: KvConfig::default(),
            watch_buffer: 4096,
            expired_per_call_max: 256,
            revoke_retry: Duration::from_secs(1),
        }
    }
}

/// The store's size and whether NOSPACE is raised, as of the last applied
/// entry, readable without a trip through the driver: what a member checks
/// a write against before proposing it. Maybe a moment behind the store;
/// the store decides again as the entry applies.
#[derive(Debug, Default)]
pub struct StoreGauge {
    size_bytes: AtomicU64,
    nospace: AtomicBool,
}

impl StoreGauge {
    /// [`crate::kv::MvccStore::size_bytes`] after the last applied entry.
    pub fn size_bytes(&self) -> u64 {
        self.size_bytes.load(Ordering::Relaxed)
    }

    /// Whether NOSPACE was raised after the last applied entry.
    pub fn nospace(&self) -> bool {
        self.nospace.load(Ordering::Relaxed)
    }

    fn update(&self, kv: &KvStore) {
        self.size_bytes
            .store(kv.mvcc().size_bytes(), Ordering::Relaxed);
        self.nospace
            .store(kv.alarms().is_raised(AlarmType::Nospace), Ordering::Relaxed);
    }
}

/// Above this many watched ranges, every event is sent: checking each
/// event against each range on the driver's thread would cost more than
/// the wake-ups it saves.
const WATCHED_RANGES_CHECKED_MAX: usize = 64;

/// The key ranges someone watches, when the watch service keeps them
/// here ([`WatchedKeys::filtering`]): the state machine then sends only
/// events in one of them, and an entry none of whose keys is watched
/// wakes no watcher (the node's own broker watches a few prefixes while
/// clients write everywhere else). Without it, every event is sent.
///
/// A watcher registers its range before it reads the revision it starts
/// from, so an entry applied after that read is checked against the
/// range, and one applied before is in the history the watcher reads.
#[derive(Clone, Debug, Default)]
pub struct WatchedKeys(Arc<Mutex<WatchedRanges>>);

#[derive(Debug, Default)]
struct WatchedRanges {
    filtering: bool,
    next_id: u64,
    ranges: std::collections::HashMap<u64, (Vec<u8>, Vec<u8>)>,
    /// The ranges as the store takes them ([`EventKeys::Ranges`]), made
    /// again only after a range comes or goes.
    shared: Option<KeyRanges>,
}

/// One watched range, forgotten when dropped.
#[derive(Debug)]
pub struct WatchedRange {
    keys: WatchedKeys,
    id: u64,
}

impl Drop for WatchedRange {
    fn drop(&mut self) {
        let mut watched = self.keys.lock();
        watched.ranges.remove(&self.id);
        watched.shared = None;
    }
}

impl WatchedKeys {
    fn lock(&self) -> std::sync::MutexGuard<'_, WatchedRanges> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// From now on only events in registered ranges are sent.
    pub fn filtering(&self) {
        self.lock().filtering = true;
    }

    /// Registers `[key, range_end)` (etcd's range conventions).
    pub fn register(&self, key: &[u8], range_end: &[u8]) -> WatchedRange {
        let mut watched = self.lock();
        watched.next_id += 1;
        let id = watched.next_id;
        watched
            .ranges
            .insert(id, (key.to_vec(), range_end.to_vec()));
        watched.shared = None;
        WatchedRange {
            keys: self.clone(),
            id,
        }
    }

    /// Whose changes build events: all of them until the watch service
    /// filters (or past the ranges worth checking), else those of the
    /// registered ranges.
    fn event_keys(&self) -> EventKeys {
        let mut watched = self.lock();
        if !watched.filtering || watched.ranges.len() > WATCHED_RANGES_CHECKED_MAX {
            EventKeys::All
        } else if watched.ranges.is_empty() {
            EventKeys::None
        } else {
            let WatchedRanges { ranges, shared, .. } = &mut *watched;
            let shared = shared.get_or_insert_with(|| ranges.values().cloned().collect());
            EventKeys::Ranges(shared.clone())
        }
    }
}

/// Where lease timers read the time: the system's monotonic clock, or a
/// simulated one.
pub type Clock = Arc<dyn Fn() -> Instant + Send + Sync>;

/// The member ids in the member table, which changes together with Raft's
/// configuration (voters and learners) in one entry: kept up to date as
/// entries apply, so the API reads them without a trip to the driver.
/// Empty until the founders are seeded. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct MemberIds(Arc<Mutex<Vec<u64>>>);

impl MemberIds {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<u64>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` on the ids, in ascending order.
    pub fn with<R>(&self, f: impl FnOnce(&[u64]) -> R) -> R {
        f(&self.lock())
    }

    /// Replaces the ids (the state machine does, from its member table;
    /// the simulation, from its members).
    pub fn set(&self, mut ids: Vec<u64>) {
        ids.sort_unstable();
        *self.lock() = ids;
    }
}

/// [`KvStore`] with its event fan-out and lease tracking.
pub struct NodeStateMachine {
    kv: KvStore,
    events: broadcast::Sender<Arc<AppliedEvents>>,
    watched: WatchedKeys,
    lessor: Arc<Mutex<Lessor>>,
    gauge: Arc<StoreGauge>,
    member_ids: MemberIds,
    /// How many members `member_ids` holds, to notice a change cheaply.
    member_count: usize,
    clock: Clock,
    /// Batches of events sent to watchers so far (bumped before each
    /// send), shared with this state machine's copies.
    events_sent: Arc<AtomicU64>,
    /// On a copy ([`StateMachine::read_copy`]): `events_sent` when it was
    /// taken.
    copied_at: Option<u64>,
}

impl std::fmt::Debug for NodeStateMachine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeStateMachine")
            .field("revision", &self.kv.revision())
            .field("watch_receivers", &self.events.receiver_count())
            .finish_non_exhaustive()
    }
}

impl NodeStateMachine {
    /// An empty store. The returned lessor is shared with the lease service
    /// and the expiry loop.
    pub fn new(config: StateConfig) -> (NodeStateMachine, Arc<Mutex<Lessor>>) {
        let (events, _) = broadcast::channel(config.watch_buffer.max(1));
        let lessor = Arc::new(Mutex::new(Lessor::new(
            config.expired_per_call_max,
            config.revoke_retry,
        )));
        let sm = NodeStateMachine {
            kv: KvStore::new(config.kv),
            events,
            watched: WatchedKeys::default(),
            lessor: lessor.clone(),
            gauge: Arc::new(StoreGauge::default()),
            member_ids: MemberIds::default(),
            member_count: 0,
            clock: Arc::new(Instant::now),
            events_sent: Arc::new(AtomicU64::new(0)),
            copied_at: None,
        };
        (sm, lessor)
    }

    /// Lease timers started as entries apply read `clock` from now on
    /// (the seeded simulation's virtual time; the system clock otherwise).
    pub fn set_clock(&mut self, clock: Clock) {
        self.clock = clock;
    }

    /// The key-value store, for reads.
    pub fn kv(&self) -> &KvStore {
        &self.kv
    }

    /// The size and alarm gauge, kept up to date as entries apply.
    pub fn gauge(&self) -> Arc<StoreGauge> {
        self.gauge.clone()
    }

    /// The member ids, kept up to date as entries apply.
    pub fn member_ids(&self) -> MemberIds {
        self.member_ids.clone()
    }

    /// Publishes the member table's ids when they may have changed: always
    /// after a membership entry or a restore, else when the count changed
    /// (the founders' seed is an ordinary entry).
    fn sync_member_ids(&mut self, always: bool) {
        if always || self.kv.members.len() != self.member_count {
            self.member_count = self.kv.members.len();
            self.member_ids
                .set(self.kv.members.keys().copied().collect());
        }
    }

    /// A receiver of every later applied entry's events.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<AppliedEvents>> {
        self.events.subscribe()
    }

    /// The watched ranges, for the watch service to keep.
    pub fn watched_keys(&self) -> WatchedKeys {
        self.watched.clone()
    }

    /// A sender handle, so the watch service can subscribe without a trip
    /// through the driver.
    pub fn event_sender(&self) -> broadcast::Sender<Arc<AppliedEvents>> {
        self.events.clone()
    }

    fn lessor(&self) -> std::sync::MutexGuard<'_, Lessor> {
        self.lessor.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Re-seeds the lessor from the lease table (after a restore).
    fn reset_lessor(&self) {
        let leases: Vec<(i64, i64)> = self
            .kv
            .leases()
            .iter()
            .map(|(id, entry)| (id, entry.ttl_secs))
            .collect();
        self.lessor().reset(leases, (self.clock)());
    }
}

impl StateMachine for NodeStateMachine {
    type Output = KvOutput;

    fn apply(&mut self, index: LogIndex, command: &Bytes) -> KvOutput {
        // Events only while someone listens. A watcher subscribes before it
        // reads the history it starts from, so one that subscribes after
        // this entry finds its changes in that history.
        // Only the changes in watched ranges build events: building one
        // copies the key and the value, and a member's broker watches its
        // metadata keys all the time. (Each watcher picks its own events
        // out of those sent, so a range dropped meanwhile costs nothing.)
        self.kv.set_event_keys(if self.events.receiver_count() > 0 {
            self.watched.event_keys()
        } else {
            EventKeys::None
        });
        let mut output = self.kv.apply_entry(index, command.clone());
        self.gauge.update(&self.kv);
        self.sync_member_ids(false);
        if !output.lease_changes.is_empty() {
            let now = (self.clock)();
            self.lessor().apply(&output.lease_changes, now);
        }
        let events = std::mem::take(&mut output.events);
        if !events.is_empty() {
            // Counted first: whoever got these events and then reads a
            // copy finds the copy out of date (`copy_is_current`).
            self.events_sent.fetch_add(1, Ordering::Release);
            // Every receiver may have gone meanwhile: nobody watches then.
            let _ = self.events.send(Arc::new(AppliedEvents {
                revision: output.revision,
                events,
            }));
        }
        output
    }

    fn is_heavy(&self, command: &Bytes) -> bool {
        self.kv.is_heavy(command)
    }

    fn apply_conf_change(&mut self, index: LogIndex, context: &Bytes) -> KvOutput {
        let output = self.kv.apply_membership_entry(index, context);
        self.sync_member_ids(true);
        output
    }

    fn snapshot(&self) -> Bytes {
        self.kv.snapshot()
    }

    fn freeze(&self) -> flotilla_raft::SnapshotEncoder {
        self.kv.freeze()
    }

    /// The key space and member table ([`KvStore::read_copy`]: O(1) for
    /// the key space). The shared handles (events, lessor, gauge, member
    /// ids) are shared, so they follow the state machine away, not the
    /// copy: reads on it use `kv()` alone.
    fn read_copy(&self) -> Option<Self> {
        Some(NodeStateMachine {
            kv: self.kv.read_copy(),
            events: self.events.clone(),
            watched: self.watched.clone(),
            lessor: self.lessor.clone(),
            gauge: self.gauge.clone(),
            member_ids: self.member_ids.clone(),
            member_count: self.member_count,
            clock: self.clock.clone(),
            events_sent: self.events_sent.clone(),
            copied_at: Some(self.events_sent.load(Ordering::Acquire)),
        })
    }

    /// Until the state machine away sends watchers an event: after that, a
    /// client may have seen a revision the copy does not hold.
    fn copy_is_current(&self) -> bool {
        self.copied_at
            .is_none_or(|at| self.events_sent.load(Ordering::Acquire) == at)
    }

    fn restore(&mut self, snapshot: &Snapshot) -> Result<(), String> {
        self.kv.restore(snapshot)?;
        self.gauge.update(&self.kv);
        self.sync_member_ids(true);
        self.reset_lessor();
        Ok(())
    }

    fn restore_from(
        &mut self,
        meta: &flotilla_raft::SnapshotMeta,
        data: &mut dyn std::io::Read,
    ) -> Result<(), String> {
        self.kv.restore_from(meta, data)?;
        self.gauge.update(&self.kv);
        self.sync_member_ids(true);
        self.reset_lessor();
        Ok(())
    }
}
