//! The Kafka group coordinator: the IO around [`crate::kgroup`]. The Kafka
//! listener calls these functions; they keep each group this broker
//! coordinates in memory and everything that must outlive the coordinator
//! in the KV.
//!
//! 1. **One coordinator per group.** `group:<g>/coordinator` names it and is
//!    attached to its broker's lease, so it vanishes with a dead broker.
//!    FindCoordinator answers the holder, or creates the key if absent
//!    (create_revision 0) for the broker the group's name hashes to among
//!    the live ones, attached to that broker's lease (read from its
//!    `broker:<id>` registration) — groups spread over the brokers.
//! 2. **Requests at another broker** answer NOT_COORDINATOR: a broker serves
//!    a group only while the key names it with its current lease, the rule
//!    partition leaders follow.
//! 3. **Generations.** Every new generation is written to
//!    `group:<g>/kafka-generation` (fenced by the coordinator key's
//!    create_revision) before any member hears of it; a new coordinator
//!    starts from the stored one, so it continues above it and the old
//!    coordinator's members, unknown to it, must rejoin.
//! 4. **Offsets** are the gRPC `Groups` service's objects,
//!    `cg:<g>/topic:<t>/partition:<p>` ([`CommittedRecord`]); a commit is
//!    checked against the group's generation and member, then written by a
//!    Txn fenced by the coordinator key's create_revision.
//! 5. **Bounds.** At most [`GROUPS_MAX`] groups in memory (groups without
//!    members are dropped first: they are only their stored generation),
//!    [`kgroup::Limits`] per group, every wait ends by the group's
//!    deadlines (a background tick) or [`WAIT_MAX`].

use crate::core::BrokerCore;
use crate::kgroup::{
    self, Group, GroupError, JoinRequest, JoinResponse, Limits, Replies, Reply, SyncResponse,
    Waiter,
};
use crate::kv;
use crate::metadata::{
    self, BROKER_PREFIX, CommittedRecord, CoordinatorRecord, KafkaGenerationRecord,
};
use flotilla_proto::etcdserverpb::RangeRequest;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Most groups one coordinator keeps in memory.
pub const GROUPS_MAX: usize = 10_000;
/// Longest any request waits, whatever the group's timeouts.
pub const WAIT_MAX: Duration = Duration::from_secs(310);
/// Longest committed-offset metadata.
pub const OFFSET_METADATA_MAX: usize = 4096;
/// Most offsets in one commit.
pub const COMMIT_OFFSETS_MAX: usize = 10_000;
/// How often the deadlines of waiting groups are checked.
const TICK: Duration = Duration::from_millis(100);

/// The coordinator's state in the broker core.
#[derive(Debug, Default)]
pub struct Groups {
    slots: Mutex<HashMap<String, Arc<Slot>>>,
    next_waiter: AtomicU64,
    ticker: AtomicBool,
    limits: Limits,
}

type Slot = tokio::sync::Mutex<SlotState>;
type Guard = tokio::sync::OwnedMutexGuard<SlotState>;

#[derive(Debug)]
struct SlotState {
    /// Dropped from the map: look the group up again.
    gone: bool,
    group: Group,
    /// The coordinator key's create_revision: fences the writes.
    epoch: i64,
    /// The lease the key is attached to.
    lease: i64,
    persisted: i32,
    senders: HashMap<Waiter, oneshot::Sender<Result<Reply, GroupError>>>,
}

/// One committed offset to write.
#[derive(Debug, Clone)]
pub struct OffsetToCommit {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// The next offset to consume.
    pub offset: i64,
    /// Free-form metadata.
    pub metadata: String,
}

/// A committed offset read back (-1: none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedOffset {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// The offset, -1 if none is committed.
    pub offset: i64,
    /// Its metadata.
    pub metadata: String,
}

/// A group as DescribeGroups shows it.
#[derive(Debug, Clone)]
pub struct GroupDescription {
    /// Kafka's state name.
    pub state: &'static str,
    /// Protocol type.
    pub protocol_type: String,
    /// Protocol.
    pub protocol: String,
    /// Members.
    pub members: Vec<kgroup::MemberDescription>,
}

/// A group as ListGroups shows it.
#[derive(Debug, Clone)]
pub struct ListedGroup {
    /// Name.
    pub group: String,
    /// Protocol type.
    pub protocol_type: String,
    /// Kafka's state name.
    pub state: &'static str,
}

fn check_name(group: &str) -> Result<(), GroupError> {
    metadata::validate_name("group", group).map_err(|_| GroupError::InvalidGroupId)
}

fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf29ce484222325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100000001b3)
    })
}

fn member_suffix() -> String {
    use std::hash::{BuildHasher, RandomState};
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let a = RandomState::new().hash_one((n, std::time::SystemTime::now()));
    let b = RandomState::new().hash_one((a, std::process::id()));
    format!("{a:016x}{b:08x}")
}

/// A member id for a client: its client id (what Kafka does), then a unique
/// suffix.
fn new_member_id(client_id: &str) -> String {
    let base: String = client_id
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        .take(64)
        .collect();
    let base = if base.is_empty() { "member" } else { &base };
    format!("{base}-{}", member_suffix())
}

async fn read_json<T: serde::de::DeserializeOwned>(
    core: &BrokerCore,
    key: &str,
) -> Result<Option<(T, i64)>, GroupError> {
    let r = core
        .kv
        .range(RangeRequest {
            key: key.as_bytes().to_vec(),
            ..Default::default()
        })
        .await
        .map_err(|e| {
            tracing::debug!(key, error = %e, "group coordinator cannot read the KV");
            GroupError::CoordinatorNotAvailable
        })?;
    match r.kvs.first() {
        None => Ok(None),
        Some(kv) => match serde_json::from_slice(&kv.value) {
            Ok(v) => Ok(Some((v, kv.create_revision))),
            Err(e) => {
                tracing::warn!(key, error = %e, "unreadable group record");
                Err(GroupError::UnknownServer)
            }
        },
    }
}

/// FindCoordinator: the broker id coordinating `group`, chosen now if none
/// does.
pub async fn find(core: &Arc<BrokerCore>, group: &str) -> Result<u64, GroupError> {
    check_name(group)?;
    let key = metadata::coordinator_key(group);
    for _ in 0..3 {
        if let Some((rec, _)) = read_json::<CoordinatorRecord>(core, &key).await? {
            return Ok(rec.broker);
        }
        let (kvs, _) = core
            .kv
            .range_prefix(BROKER_PREFIX.as_bytes())
            .await
            .map_err(|_| GroupError::CoordinatorNotAvailable)?;
        let mut brokers: Vec<(u64, i64)> = kvs
            .iter()
            .filter_map(|kv| {
                let rec: metadata::BrokerRecord = serde_json::from_slice(&kv.value).ok()?;
                (kv.lease != 0).then_some((rec.id, kv.lease))
            })
            .collect();
        brokers.sort_unstable();
        if brokers.is_empty() {
            return Err(GroupError::CoordinatorNotAvailable);
        }
        let (broker, lease) = brokers[(fnv1a(group) % brokers.len() as u64) as usize];
        let rec = CoordinatorRecord { broker, lease };
        let resp = core
            .kv
            .txn(kv::txn(
                vec![kv::create_revision_is(&key, 0)],
                vec![kv::put(&key, kv::json(&rec), lease)],
                vec![],
            ))
            .await;
        match resp {
            Ok(r) if r.succeeded => {
                tracing::info!(group, broker, "kafka group coordinator chosen");
                return Ok(broker);
            }
            // Taken meanwhile (read it), or the lease just expired (pick
            // again).
            Ok(_) | Err(_) => continue,
        }
    }
    Err(GroupError::CoordinatorNotAvailable)
}

impl Groups {
    fn slot(&self, group: &str) -> Option<Arc<Slot>> {
        self.slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(group)
            .cloned()
    }

    fn remove(&self, group: &str, slot: &Arc<Slot>) {
        let mut g = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        if g.get(group).is_some_and(|s| Arc::ptr_eq(s, slot)) {
            g.remove(group);
        }
    }

    fn waiter(&self) -> Waiter {
        self.next_waiter.fetch_add(1, Ordering::Relaxed)
    }
}

fn ensure_ticker(core: &Arc<BrokerCore>) {
    if core.kafka_groups.ticker.swap(true, Ordering::SeqCst) {
        return;
    }
    let weak: Weak<BrokerCore> = Arc::downgrade(core);
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(TICK).await;
            let Some(core) = weak.upgrade() else { return };
            tick_all(&core).await;
        }
    });
}

/// Answers every waiter with `error` and marks the slot gone.
fn drop_slot(st: &mut SlotState, error: GroupError) {
    st.gone = true;
    for (_, tx) in st.senders.drain() {
        let _ = tx.send(Err(error));
    }
}

/// The group's slot, locked, if this broker coordinates it (loading it
/// from the KV on first use).
async fn owned(core: &Arc<BrokerCore>, group: &str) -> Result<(Arc<Slot>, Guard), GroupError> {
    check_name(group)?;
    ensure_ticker(core);
    let Some(lease) = core.lease.valid_id(Instant::now()) else {
        return Err(GroupError::CoordinatorNotAvailable);
    };
    let groups = &core.kafka_groups;
    for _ in 0..3 {
        if let Some(slot) = groups.slot(group) {
            let mut st = slot.clone().lock_owned().await;
            if st.gone {
                continue;
            }
            if st.lease == lease {
                return Ok((slot, st));
            }
            // This broker's lease changed: the key it held is gone.
            drop_slot(&mut st, GroupError::NotCoordinator);
            groups.remove(group, &slot);
            continue;
        }
        let key = metadata::coordinator_key(group);
        let Some((rec, epoch)) = read_json::<CoordinatorRecord>(core, &key).await? else {
            return Err(GroupError::NotCoordinator);
        };
        if rec.broker != core.id() || rec.lease != lease {
            return Err(GroupError::NotCoordinator);
        }
        let stored =
            read_json::<KafkaGenerationRecord>(core, &metadata::kafka_generation_key(group))
                .await?
                .map(|(g, _)| g.generation)
                .unwrap_or(0);
        let slot: Arc<Slot> = Arc::new(tokio::sync::Mutex::new(SlotState {
            gone: false,
            group: Group::new(stored, groups.limits),
            epoch,
            lease,
            persisted: stored,
            senders: HashMap::new(),
        }));
        let st = slot.clone().lock_owned().await;
        {
            let mut map = groups.slots.lock().unwrap_or_else(|p| p.into_inner());
            if map.contains_key(group) {
                continue;
            }
            if map.len() >= GROUPS_MAX {
                // Groups without members are only their stored generation:
                // drop some to make room.
                let idle: Vec<String> = map
                    .iter()
                    .filter(|(_, s)| {
                        s.try_lock()
                            .is_ok_and(|st| st.group.is_empty() && !st.group.has_waiters())
                    })
                    .map(|(g, _)| g.clone())
                    .take(GROUPS_MAX / 10 + 1)
                    .collect();
                for g in idle {
                    if let Some(s) = map.remove(&g)
                        && let Ok(mut st) = s.try_lock()
                    {
                        st.gone = true;
                    }
                }
                if map.len() >= GROUPS_MAX {
                    tracing::warn!(
                        group,
                        "this broker coordinates {GROUPS_MAX} groups with members; refusing another"
                    );
                    return Err(GroupError::CoordinatorNotAvailable);
                }
            }
            map.insert(group.to_string(), slot.clone());
        }
        tracing::info!(
            group,
            generation = stored,
            epoch,
            "coordinating kafka group"
        );
        return Ok((slot, st));
    }
    Err(GroupError::CoordinatorNotAvailable)
}

/// After a step: writes a new generation to the KV, then delivers the
/// replies. If the write is refused (another broker coordinates the group
/// now) or fails, the group is dropped and every waiter told.
async fn settle(
    core: &BrokerCore,
    group: &str,
    slot: &Arc<Slot>,
    st: &mut Guard,
    replies: Replies,
) {
    let generation = st.group.generation();
    if generation != st.persisted {
        let rec = KafkaGenerationRecord {
            generation,
            members: st.group.member_ids(),
            protocol: st.group.protocol().to_string(),
        };
        let txn = kv::txn(
            vec![kv::create_revision_is(
                &metadata::coordinator_key(group),
                st.epoch,
            )],
            vec![kv::put(
                &metadata::kafka_generation_key(group),
                kv::json(&rec),
                0,
            )],
            vec![],
        );
        let error = match core.kv.txn(txn).await {
            Ok(r) if r.succeeded => None,
            Ok(_) => Some(GroupError::NotCoordinator),
            Err(e) => {
                tracing::warn!(group, error = %e, "cannot store the kafka group's generation");
                Some(GroupError::CoordinatorNotAvailable)
            }
        };
        if let Some(e) = error {
            tracing::info!(
                group,
                ?e,
                "kafka group dropped: not its coordinator any more"
            );
            drop_slot(st, e);
            core.kafka_groups.remove(group, slot);
            return;
        }
        st.persisted = generation;
        tracing::info!(group, generation, members = ?rec.members, protocol = %rec.protocol, "kafka group generation");
    }
    for (w, r) in replies {
        if let Some(tx) = st.senders.remove(&w) {
            let _ = tx.send(Ok(r));
        }
    }
}

/// Registers a waiter in the locked slot.
fn register(
    core: &BrokerCore,
    st: &mut Guard,
) -> (Waiter, oneshot::Receiver<Result<Reply, GroupError>>) {
    let w = core.kafka_groups.waiter();
    let (tx, rx) = oneshot::channel();
    st.senders.insert(w, tx);
    (w, rx)
}

/// Waits for the answer to `w`, at most [`WAIT_MAX`].
async fn wait(
    slot: &Arc<Slot>,
    w: Waiter,
    rx: oneshot::Receiver<Result<Reply, GroupError>>,
) -> Result<Reply, GroupError> {
    match tokio::time::timeout(WAIT_MAX, rx).await {
        Ok(Ok(r)) => r,
        Ok(Err(_)) => Err(GroupError::NotCoordinator),
        Err(_) => {
            slot.lock().await.senders.remove(&w);
            Err(GroupError::RebalanceInProgress)
        }
    }
}

/// JoinGroup.
pub async fn join(core: &Arc<BrokerCore>, group: &str, req: JoinRequest) -> JoinResponse {
    let member = req.member_id.clone();
    let (slot, mut st) = match owned(core, group).await {
        Ok(x) => x,
        Err(e) => return JoinResponse::error(e, &member),
    };
    let (w, rx) = register(core, &mut st);
    let id = new_member_id(&req.client_id);
    let replies = st.group.join(Instant::now(), w, req, &id);
    settle(core, group, &slot, &mut st, replies).await;
    drop(st);
    match wait(&slot, w, rx).await {
        Ok(Reply::Join(j)) => j,
        Ok(Reply::Sync(_)) => JoinResponse::error(GroupError::UnknownServer, &member),
        Err(e) => JoinResponse::error(e, &member),
    }
}

/// SyncGroup.
pub async fn sync(
    core: &Arc<BrokerCore>,
    group: &str,
    member_id: &str,
    generation: i32,
    assignments: Vec<(String, Vec<u8>)>,
) -> SyncResponse {
    let (slot, mut st) = match owned(core, group).await {
        Ok(x) => x,
        Err(e) => return SyncResponse::error(e),
    };
    let (w, rx) = register(core, &mut st);
    let replies = st
        .group
        .sync(Instant::now(), w, member_id, generation, assignments);
    settle(core, group, &slot, &mut st, replies).await;
    drop(st);
    match wait(&slot, w, rx).await {
        Ok(Reply::Sync(s)) => s,
        Ok(Reply::Join(_)) => SyncResponse::error(GroupError::UnknownServer),
        Err(e) => SyncResponse::error(e),
    }
}

/// Heartbeat.
pub async fn heartbeat(
    core: &Arc<BrokerCore>,
    group: &str,
    member_id: &str,
    generation: i32,
) -> Result<(), GroupError> {
    let (slot, mut st) = owned(core, group).await?;
    let (r, replies) = st.group.heartbeat(Instant::now(), member_id, generation);
    settle(core, group, &slot, &mut st, replies).await;
    r
}

/// LeaveGroup of `members`: one answer each.
pub async fn leave(
    core: &Arc<BrokerCore>,
    group: &str,
    members: &[String],
) -> Result<Vec<Result<(), GroupError>>, GroupError> {
    let (slot, mut st) = owned(core, group).await?;
    let now = Instant::now();
    let mut all = Replies::new();
    let mut out = Vec::with_capacity(members.len());
    for m in members {
        let (r, replies) = st.group.leave(now, m);
        all.extend(replies);
        out.push(r);
    }
    settle(core, group, &slot, &mut st, all).await;
    Ok(out)
}

/// OffsetCommit: one answer per offset, or one for the whole request.
pub async fn commit(
    core: &Arc<BrokerCore>,
    group: &str,
    member_id: &str,
    generation: i32,
    offsets: &[OffsetToCommit],
) -> Result<Vec<Result<(), GroupError>>, GroupError> {
    if offsets.len() > COMMIT_OFFSETS_MAX {
        return Err(GroupError::InvalidRequest);
    }
    let (slot, mut st) = owned(core, group).await?;
    let (r, replies) = st.group.check_commit(Instant::now(), member_id, generation);
    settle(core, group, &slot, &mut st, replies).await;
    r?;
    if st.gone {
        return Err(GroupError::NotCoordinator);
    }
    let mut answers = Vec::with_capacity(offsets.len());
    let mut ops = Vec::new();
    for o in offsets {
        let r = if o.metadata.len() > OFFSET_METADATA_MAX {
            Err(GroupError::OffsetMetadataTooLarge)
        } else if o.offset < 0 {
            Err(GroupError::InvalidCommitOffsetSize)
        } else if o.partition < 0 || metadata::validate_name("topic", &o.topic).is_err() {
            Err(GroupError::UnknownTopicOrPartition)
        } else {
            ops.push(kv::put(
                &metadata::committed_key(group, &o.topic, o.partition as u32),
                kv::json(&CommittedRecord {
                    offset: o.offset as u64,
                    metadata: o.metadata.clone(),
                    generation: generation.max(0) as u64,
                }),
                0,
            ));
            Ok(())
        };
        answers.push(r);
    }
    let fence = kv::create_revision_is(&metadata::coordinator_key(group), st.epoch);
    for chunk in ops.chunks(90) {
        match core
            .kv
            .txn(kv::txn(vec![fence.clone()], chunk.to_vec(), vec![]))
            .await
        {
            Ok(r) if r.succeeded => {}
            Ok(_) => {
                drop_slot(&mut st, GroupError::NotCoordinator);
                core.kafka_groups.remove(group, &slot);
                return Err(GroupError::NotCoordinator);
            }
            Err(e) => {
                tracing::warn!(group, error = %e, "cannot write committed offsets");
                return Err(GroupError::CoordinatorNotAvailable);
            }
        }
    }
    Ok(answers)
}

/// OffsetFetch: the committed offsets of `partitions` (every committed one
/// when `None`).
pub async fn fetch_offsets(
    core: &Arc<BrokerCore>,
    group: &str,
    partitions: Option<&[(String, i32)]>,
) -> Result<Vec<CommittedOffset>, GroupError> {
    drop(owned(core, group).await?);
    let prefix = metadata::committed_prefix(group);
    let (kvs, _) = core
        .kv
        .range_prefix(prefix.as_bytes())
        .await
        .map_err(|_| GroupError::CoordinatorNotAvailable)?;
    let mut all: HashMap<(String, i32), CommittedOffset> = HashMap::new();
    for kv in kvs {
        let Ok(key) = String::from_utf8(kv.key) else {
            continue;
        };
        let Some((topic, partition)) = key
            .strip_prefix(&prefix)
            .and_then(|r| r.split_once("/partition:"))
            .and_then(|(t, p)| Some((t.strip_prefix("topic:")?, p.parse::<i32>().ok()?)))
        else {
            continue;
        };
        let Ok(rec) = serde_json::from_slice::<CommittedRecord>(&kv.value) else {
            continue;
        };
        all.insert(
            (topic.to_string(), partition),
            CommittedOffset {
                topic: topic.to_string(),
                partition,
                offset: i64::try_from(rec.offset).unwrap_or(i64::MAX),
                metadata: rec.metadata,
            },
        );
    }
    Ok(match partitions {
        None => {
            let mut v: Vec<CommittedOffset> = all.into_values().collect();
            v.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
            v
        }
        Some(ps) => ps
            .iter()
            .map(|(t, p)| {
                all.remove(&(t.clone(), *p)).unwrap_or(CommittedOffset {
                    topic: t.clone(),
                    partition: *p,
                    offset: -1,
                    metadata: String::new(),
                })
            })
            .collect(),
    })
}

/// DescribeGroups of one group.
pub async fn describe(core: &Arc<BrokerCore>, group: &str) -> Result<GroupDescription, GroupError> {
    let (_, st) = owned(core, group).await?;
    Ok(GroupDescription {
        state: st.group.state().name(),
        protocol_type: st.group.protocol_type().to_string(),
        protocol: st.group.protocol().to_string(),
        members: st.group.describe(),
    })
}

/// The groups held in memory, copied out so no group's lock is taken under
/// the map's.
fn held_slots(core: &Arc<BrokerCore>) -> Vec<(String, Arc<Slot>)> {
    core.kafka_groups
        .slots
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .map(|(g, s)| (g.clone(), s.clone()))
        .collect()
}

/// ListGroups: the groups this broker coordinates and holds in memory.
pub async fn list(core: &Arc<BrokerCore>) -> Vec<ListedGroup> {
    let slots = held_slots(core);
    let mut out = Vec::with_capacity(slots.len());
    for (group, slot) in slots {
        let st = slot.lock().await;
        if st.gone {
            continue;
        }
        out.push(ListedGroup {
            group,
            protocol_type: st.group.protocol_type().to_string(),
            state: st.group.state().name(),
        });
    }
    out.sort_by(|a, b| a.group.cmp(&b.group));
    out
}

/// The background tick: deadlines of every group, groups of a lost lease
/// dropped, groups without members forgotten (their generation is stored).
async fn tick_all(core: &Arc<BrokerCore>) {
    let slots = held_slots(core);
    let now = Instant::now();
    for (group, slot) in slots {
        let Ok(mut st) = slot.clone().try_lock_owned() else {
            continue;
        };
        if st.gone {
            continue;
        }
        if core.lease.id() != st.lease {
            drop_slot(&mut st, GroupError::NotCoordinator);
            core.kafka_groups.remove(&group, &slot);
            continue;
        }
        if st.group.next_deadline().is_some_and(|d| d <= now) {
            let replies = st.group.tick(now);
            settle(core, &group, &slot, &mut st, replies).await;
        }
        if !st.gone && st.group.is_empty() && st.senders.is_empty() {
            st.gone = true;
            core.kafka_groups.remove(&group, &slot);
        }
    }
}
