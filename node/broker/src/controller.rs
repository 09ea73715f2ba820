//! The broker's background work: keeping its lease (and registration),
//! following the metadata (opening replicas, taking or giving up
//! leadership, starting follower fetchers), keeping the ISR as leader, and
//! checkpointing high watermarks.
//!
//! Leadership, step by step:
//! 1. A partition without a leader key is led by the first replica (in
//!    placement order) that is live and eligible: in the ISR, or any replica
//!    while the partition has no ISR yet (new), or any replica when the
//!    topic allows unclean election. Others wait a second before trying, in
//!    case the first cannot.
//! 2. It takes the key by a Txn: the leader key's create_revision is 0 and
//!    the ISR key is unchanged since read; put the key with the broker's
//!    lease. The new key's create_revision is the epoch.
//! 3. It then writes the ISR (the old ISR's live members and itself) fenced
//!    by the epoch, and starts leading.
//! 4. Followers see the new key, ask the leader where their last epoch ends
//!    (KIP-101) and truncate a divergent suffix before fetching.
//!
//! The metadata is watched (one KV Watch stream over the topic, partition
//! and broker prefixes): every change starts a reconcile at once, so a
//! follower fetches from a new leader, and a replica of a partition whose
//! leader key vanished stands for election, as soon as the KV applied the
//! change. A full re-read every `metadata_resync_interval` is the backstop;
//! while the watch is down, or a partition waits for a leader (the other
//! candidates' one-second grace), the metadata is polled every
//! `reconcile_interval` instead.

use crate::core::{BrokerCore, TopicPartition};
use crate::kv;
use crate::lease::ttl_secs;
use crate::metadata::{self, BrokerRecord, IsrRecord, LeaderRecord};
use crate::replica::{Replica, Role};
use crate::view::View;
use flotilla_proto::broker as pb;
use pb::broker_client::BrokerClient;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

/// Runs the broker's background tasks until `stop` turns true; then revokes
/// the lease so its leaderships move at once.
pub async fn run(core: Arc<BrokerCore>, mut stop: watch::Receiver<bool>) {
    let lease_task = tokio::spawn(keep_lease(core.clone(), stop.clone()));
    let isr_task = tokio::spawn(keep_isr(core.clone(), stop.clone()));
    let retention_task = tokio::spawn(keep_retention(core.clone(), stop.clone()));
    let mut fetchers: HashMap<TopicPartition, (Role, JoinHandle<()>)> = HashMap::new();
    let mut leaderless: HashMap<TopicPartition, Instant> = HashMap::new();
    let changed = Arc::new(Notify::new());
    let watching = Arc::new(AtomicBool::new(false));
    let watch_task = tokio::spawn(watch_metadata(
        core.clone(),
        changed.clone(),
        watching.clone(),
        stop.clone(),
    ));
    let mut last_checkpoint = Instant::now();
    let mut first = true;
    loop {
        let wait = if watching.load(Ordering::Acquire) && leaderless.is_empty() {
            core.config.metadata_resync_interval
        } else {
            core.config.reconcile_interval
        };
        if !first {
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = changed.notified() => {}
                _ = stop.changed() => break,
            }
        }
        first = false;
        if *stop.borrow() {
            break;
        }
        // A KV without quorum holds a read for its whole timeout: a stop
        // must not wait for it.
        let read = tokio::select! {
            r = View::read(&core.kv) => r,
            _ = stop.changed() => break,
        };
        match read {
            Ok(view) => reconcile(&core, &view, &mut fetchers, &mut leaderless).await,
            Err(e) => tracing::debug!(error = %e, "cannot read the broker metadata"),
        }
        if last_checkpoint.elapsed() >= Duration::from_secs(1) {
            last_checkpoint = Instant::now();
            for r in core.all_replicas() {
                if let Err(e) = r.checkpoint_hw() {
                    tracing::warn!(topic = %r.topic, partition = r.partition, error = %e, "high watermark checkpoint failed");
                }
                if let Err(e) = r.checkpoint_producers() {
                    tracing::warn!(topic = %r.topic, partition = r.partition, error = %e, "producer state snapshot failed");
                }
            }
        }
    }
    for (_, (_, h)) in fetchers.drain() {
        h.abort();
    }
    watch_task.abort();
    isr_task.abort();
    retention_task.abort();
    if tokio::time::timeout(Duration::from_millis(1500), lease_task)
        .await
        .is_err()
    {
        tracing::warn!("the lease task did not stop in time");
    }
    for r in core.all_replicas() {
        r.set_role(Role::None);
        let _ = r.checkpoint_hw();
        let _ = r.checkpoint_producers();
    }
}

/// Keeps a KV Watch on the broker's metadata prefixes and wakes the
/// reconcile loop on every change; `watching` says whether one is open. A
/// reconcile follows each (re)opening, so nothing written while the watch
/// was down is missed.
async fn watch_metadata(
    core: Arc<BrokerCore>,
    changed: Arc<Notify>,
    watching: Arc<AtomicBool>,
    mut stop: watch::Receiver<bool>,
) {
    let prefixes: [&[u8]; 3] = [
        metadata::TOPIC_PREFIX.as_bytes(),
        metadata::PARTITION_PREFIX.as_bytes(),
        metadata::BROKER_PREFIX.as_bytes(),
    ];
    let mut backoff = Duration::from_millis(50);
    while !*stop.borrow() {
        let opened = tokio::select! {
            w = core.kv.watch_prefixes(&prefixes) => w,
            _ = stop.changed() => return,
        };
        match opened {
            Ok(mut w) => {
                backoff = Duration::from_millis(50);
                watching.store(true, Ordering::Release);
                changed.notify_one();
                loop {
                    let next = tokio::select! {
                        n = w.next() => n,
                        _ = stop.changed() => return,
                    };
                    match next {
                        Ok(Some(_)) => {
                            core.metrics.metadata_watch_events.inc();
                            changed.notify_one();
                        }
                        Ok(None) => {
                            tracing::debug!("the metadata watch ended");
                            break;
                        }
                        Err(e) => {
                            tracing::debug!(error = %e, "the metadata watch failed");
                            break;
                        }
                    }
                }
                watching.store(false, Ordering::Release);
                changed.notify_one();
            }
            Err(e) => tracing::debug!(error = %e, "cannot watch the broker metadata"),
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop.changed() => return,
        }
        backoff = (backoff * 2).min(Duration::from_secs(1));
    }
}

/// Grants the lease, registers the broker under it, renews it every quarter
/// TTL, and on loss grants a new one.
async fn keep_lease(core: Arc<BrokerCore>, mut stop: watch::Receiver<bool>) {
    let ttl = core.config.partition_lease_ttl;
    let record = BrokerRecord {
        id: core.id(),
        addr: core.config.advertise_addr.clone(),
        kafka_addr: core.config.kafka_advertise_addr.clone(),
    };
    let key = metadata::broker_key(core.id());
    let mut lease: Option<i64> = None;
    loop {
        if *stop.borrow() {
            break;
        }
        let sent = Instant::now();
        match lease {
            None => match tokio::select! {
                r = core.kv.lease_grant(ttl_secs(ttl)) => r,
                _ = stop.changed() => continue,
            } {
                Ok((id, _)) => {
                    let put = core
                        .kv
                        .put_request(flotilla_proto::etcdserverpb::PutRequest {
                            key: key.clone().into_bytes(),
                            value: kv::json(&record),
                            lease: id,
                            ..Default::default()
                        })
                        .await;
                    match put {
                        Ok(_) => {
                            core.lease.granted(id, sent, ttl);
                            lease = Some(id);
                            tracing::info!(broker = core.id(), lease = id, "broker registered");
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot register the broker");
                            let _ = core.kv.lease_revoke(id).await;
                        }
                    }
                }
                Err(e) => tracing::debug!(error = %e, "cannot grant the broker lease"),
            },
            Some(id) => match tokio::select! {
                r = core.kv.lease_keep_alive(id) => r,
                _ = stop.changed() => continue,
            } {
                Ok(t) if t > 0 => core.lease.renewed(id, sent, ttl),
                Ok(_) => {
                    tracing::warn!(lease = id, "the broker lease expired; registering again");
                    core.lease.lost();
                    lease = None;
                    continue;
                }
                Err(e) => tracing::debug!(error = %e, "lease keepalive failed"),
            },
        }
        tokio::select! {
            _ = tokio::time::sleep(ttl / 4) => {}
            _ = stop.changed() => {}
        }
    }
    core.lease.lost();
    if let Some(id) = lease {
        let revoke = core.kv.lease_revoke(id);
        if tokio::time::timeout(Duration::from_secs(1), revoke)
            .await
            .is_err()
        {
            tracing::warn!("lease revoke timed out; leaderships move when it expires");
        }
    }
}

/// Brings the replicas in line with `view`.
async fn reconcile(
    core: &Arc<BrokerCore>,
    view: &View,
    fetchers: &mut HashMap<TopicPartition, (Role, JoinHandle<()>)>,
    leaderless: &mut HashMap<TopicPartition, Instant>,
) {
    let me = core.id();
    let my_lease = core.lease.valid_id(Instant::now());
    let mut mine: HashSet<TopicPartition> = HashSet::new();
    for (tp, pv) in &view.partitions {
        if !pv.replicas.contains(&me) {
            continue;
        }
        let Some(spec) = view.topics.get(&tp.0) else {
            continue;
        };
        mine.insert(tp.clone());
        let replica = match core.open_replica(&tp.0, tp.1, spec) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(topic = %tp.0, partition = tp.1, error = %e, "cannot open replica");
                continue;
            }
        };
        replica.set_min_insync(spec.min_insync_replicas);
        // AlterTopic's segment size, fsync policy and retention.
        match spec.log_config() {
            Ok(c) => {
                if let Err(e) = replica.apply_config(c) {
                    tracing::warn!(topic = %tp.0, partition = tp.1, error = %e, "cannot apply the topic configuration");
                }
            }
            Err(e) => {
                tracing::warn!(topic = %tp.0, partition = tp.1, error = %e, "bad topic configuration")
            }
        }
        core.specs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(tp.clone(), (spec.clone(), pv.replicas.clone()));
        let want = match &pv.leader {
            Some(l) if l.record.broker == me && Some(l.record.lease) == my_lease => {
                Role::Leader { epoch: l.epoch }
            }
            // Ours under a lost lease (or one we cannot vouch for now): it
            // will expire; lead again only by a new election.
            Some(l) if l.record.broker == me => Role::None,
            Some(l) => Role::Follower {
                epoch: l.epoch,
                leader: l.record.broker,
                addr: l.record.addr.clone(),
            },
            None => Role::None,
        };
        // A leaderless partition keeps the metadata polled every
        // `reconcile_interval` (not only the resync), also while this
        // broker cannot stand yet (its lease not confirmed this moment).
        if pv.leader.is_some() {
            leaderless.remove(tp);
        } else {
            leaderless.entry(tp.clone()).or_insert_with(Instant::now);
        }
        if replica.role() != want {
            if let Role::Leader { epoch } = want {
                let isr = pv.isr.as_ref().map_or(vec![me], |i| i.isr.clone());
                // `want` is Leader only under the record's lease, ours now.
                let lease = pv.leader.as_ref().map_or(0, |l| l.record.lease);
                if let Err(e) = replica.become_leader(epoch, isr, lease) {
                    tracing::warn!(topic = %tp.0, partition = tp.1, error = %e, "cannot lead");
                    continue;
                }
            } else {
                replica.set_role(want.clone());
            }
        }
        // Fetchers follow the role.
        let running = fetchers.get(tp).map(|(r, h)| (r.clone(), h.is_finished()));
        if let Role::Follower { .. } = want {
            if running.as_ref().is_none_or(|(r, done)| *r != want || *done) {
                if let Some((_, h)) = fetchers.remove(tp) {
                    h.abort();
                }
                let h = tokio::spawn(follow(core.clone(), replica.clone(), want.clone()));
                fetchers.insert(tp.clone(), (want.clone(), h));
            }
        } else if let Some((_, h)) = fetchers.remove(tp) {
            h.abort();
        }
        if pv.leader.is_none()
            && let Some(lease) = my_lease
        {
            try_elect(core, view, tp, &replica, lease, leaderless).await;
        }
    }
    leaderless.retain(|tp, _| mine.contains(tp));
    // Replicas no longer in the metadata: their topic was deleted.
    for r in core.all_replicas() {
        let tp = (r.topic.clone(), r.partition);
        if !mine.contains(&tp) {
            if let Some((_, h)) = fetchers.remove(&tp) {
                h.abort();
            }
            let deleted = !view.topics.contains_key(&tp.0);
            core.close_replica(&tp, deleted);
        }
    }
}

/// Steps 1-3 of the module docs.
async fn try_elect(
    core: &Arc<BrokerCore>,
    view: &View,
    tp: &TopicPartition,
    replica: &Arc<Replica>,
    lease: i64,
    leaderless: &mut HashMap<TopicPartition, Instant>,
) {
    let me = core.id();
    let Some(pv) = view.partitions.get(tp) else {
        return;
    };
    let Some(spec) = view.topics.get(&tp.0) else {
        return;
    };
    let live = |b: &u64| view.brokers.contains_key(b) || *b == me;
    let eligible = |b: &u64| {
        live(b)
            && (spec.unclean_leader_election || pv.isr.as_ref().is_none_or(|i| i.isr.contains(b)))
    };
    let candidates: Vec<u64> = pv.replicas.iter().copied().filter(eligible).collect();
    if !candidates.contains(&me) {
        return;
    }
    let since = *leaderless.entry(tp.clone()).or_insert_with(Instant::now);
    if candidates[0] != me && since.elapsed() < Duration::from_secs(1) {
        return;
    }
    let leader_key = metadata::leader_key(&tp.0, tp.1);
    let isr_key = metadata::isr_key(&tp.0, tp.1);
    let record = LeaderRecord {
        broker: me,
        addr: core.config.advertise_addr.clone(),
        lease,
    };
    let txn = kv::txn(
        vec![
            kv::create_revision_is(&leader_key, 0),
            kv::mod_revision_is(&isr_key, pv.isr_revision),
        ],
        vec![kv::put(&leader_key, kv::json(&record), lease)],
        vec![],
    );
    let resp = match core.kv.txn(txn).await {
        Ok(r) if r.succeeded => r,
        Ok(_) => return,
        Err(e) => {
            tracing::debug!(error = %e, "leader election txn failed");
            return;
        }
    };
    let epoch = resp.header.map_or(0, |h| h.revision);
    let mut isr: Vec<u64> = match &pv.isr {
        Some(i) => i.isr.iter().copied().filter(|b| live(b)).collect(),
        None => pv.replicas.iter().copied().filter(|b| live(b)).collect(),
    };
    if !isr.contains(&me) {
        isr.push(me);
    }
    let write = kv::txn(
        vec![kv::create_revision_is(&leader_key, epoch)],
        vec![kv::put(
            &isr_key,
            kv::json(&IsrRecord {
                isr: isr.clone(),
                leader_epoch: epoch,
            }),
            0,
        )],
        vec![],
    );
    match core.kv.txn(write).await {
        Ok(r) if r.succeeded => {}
        _ => return,
    }
    leaderless.remove(tp);
    core.metrics.leader_elections.inc();
    tracing::info!(topic = %tp.0, partition = tp.1, epoch, ?isr, "elected partition leader");
    if let Err(e) = replica.become_leader(epoch, isr, lease) {
        tracing::warn!(topic = %tp.0, partition = tp.1, error = %e, "cannot lead");
    }
}

/// As leader, writes ISR changes (shrinks of lagging followers, expansions
/// of caught-up ones) to the KV fenced by the epoch, then applies them.
async fn keep_isr(core: Arc<BrokerCore>, stop: watch::Receiver<bool>) {
    let every = (core.config.replica_lag_time_max / 10).max(Duration::from_millis(50));
    loop {
        if *stop.borrow() {
            return;
        }
        tokio::time::sleep(every).await;
        for r in core.all_replicas() {
            let Role::Leader { epoch } = r.role() else {
                continue;
            };
            let replicas = {
                let specs = core.specs.lock().unwrap_or_else(|p| p.into_inner());
                match specs.get(&(r.topic.clone(), r.partition)) {
                    Some((_, replicas)) => replicas.clone(),
                    None => continue,
                }
            };
            let Some(isr) = r.desired_isr(&replicas, core.config.replica_lag_time_max) else {
                continue;
            };
            let old = r.isr();
            let leader_key = metadata::leader_key(&r.topic, r.partition);
            let txn = kv::txn(
                vec![kv::create_revision_is(&leader_key, epoch)],
                vec![kv::put(
                    &metadata::isr_key(&r.topic, r.partition),
                    kv::json(&IsrRecord {
                        isr: isr.clone(),
                        leader_epoch: epoch,
                    }),
                    0,
                )],
                vec![],
            );
            match core.kv.txn(txn).await {
                Ok(resp) if resp.succeeded => {
                    if isr.len() < old.len() {
                        core.metrics.isr_shrinks.inc();
                    } else {
                        core.metrics.isr_expands.inc();
                    }
                    tracing::info!(topic = %r.topic, partition = r.partition, epoch, ?old, new = ?isr, "ISR changed");
                    r.set_isr(isr);
                }
                Ok(_) => {
                    tracing::warn!(topic = %r.topic, partition = r.partition, epoch, "fenced: the leader key moved on; stepping down");
                    r.set_role(Role::None);
                }
                Err(e) => tracing::debug!(error = %e, "ISR write failed"),
            }
        }
    }
}

/// Applies each replica's retention every `retention_check_interval`.
async fn keep_retention(core: Arc<BrokerCore>, stop: watch::Receiver<bool>) {
    loop {
        if *stop.borrow() {
            return;
        }
        tokio::time::sleep(core.config.retention_check_interval).await;
        for r in core.all_replicas() {
            match r.apply_retention() {
                Ok(n) => {
                    core.metrics.retention_segments_deleted.inc_by(n as u64);
                }
                Err(e) => {
                    tracing::warn!(topic = %r.topic, partition = r.partition, error = %e, "retention failed")
                }
            }
        }
    }
}

/// A follower's loop for one epoch: truncate (KIP-101), then fetch and
/// append until the role changes.
async fn follow(core: Arc<BrokerCore>, replica: Arc<Replica>, role: Role) {
    let Role::Follower {
        epoch,
        leader,
        addr,
    } = role.clone()
    else {
        return;
    };
    let channel = match core.channel(&addr) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "cannot reach the partition leader");
            return;
        }
    };
    let mut client = BrokerClient::new(channel)
        .max_decoding_message_size(usize::MAX)
        .max_encoding_message_size(usize::MAX);
    let (topic, partition) = (replica.topic.clone(), replica.partition);
    let mut truncated = false;
    let mut backoff = Duration::from_millis(20);
    while replica.role() == role {
        if !truncated {
            let req = pb::OffsetForLeaderEpochRequest {
                topic: topic.clone(),
                partition,
                leader_epoch: replica.latest_epoch(),
                replica_id: core.id(),
                current_leader_epoch: epoch,
            };
            match client.offset_for_leader_epoch(req).await {
                Ok(resp) => {
                    let resp = resp.into_inner();
                    if let Some(e) = resp.error.filter(|e| e.code != 0) {
                        tracing::debug!(leader, error = %e.message, "offset for leader epoch refused");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_millis(500));
                        continue;
                    }
                    let from = replica.log_end();
                    let cut = replica.truncation_point(resp.leader_epoch, resp.end_offset);
                    if cut < from {
                        match replica.truncate_to(cut).await {
                            Ok(dropped) => {
                                core.metrics.truncations.inc();
                                core.metrics.truncated_records.inc_by(dropped);
                                tracing::warn!(
                                    %topic, partition, epoch,
                                    leader_epoch = resp.leader_epoch,
                                    from_offset = cut, to_offset = from, dropped,
                                    "truncated a divergent log suffix"
                                );
                            }
                            Err(e) => {
                                tracing::error!(%topic, partition, error = %e, "truncation failed");
                                return;
                            }
                        }
                    }
                    truncated = true;
                }
                Err(s) => {
                    tracing::debug!(leader, error = %s.message(), "offset for leader epoch failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_millis(500));
                    continue;
                }
            }
        }
        let req = pb::FetchRequest {
            topic: topic.clone(),
            partition,
            offset: replica.log_end(),
            max_bytes: core.config.fetch_max_bytes,
            max_wait_ms: 500,
            replica_id: core.id(),
            leader_epoch: epoch,
        };
        match client.fetch(req).await {
            Ok(resp) => {
                let resp = resp.into_inner();
                if let Some(e) = resp.error.filter(|e| e.code != 0) {
                    let from = replica.log_end();
                    if e.code == pb::ErrorCode::OffsetOutOfRange as i32
                        && resp.log_start_offset > from
                    {
                        // Below the leader's log start: what we lack is
                        // gone there; start our log at its start.
                        match replica.reset_to(resp.log_start_offset).await {
                            Ok(dropped) => {
                                core.metrics.follower_resets.inc();
                                tracing::warn!(
                                    %topic, partition, epoch, from_offset = from,
                                    leader_log_start = resp.log_start_offset, dropped,
                                    "follower below the leader's log start: log reset"
                                );
                                continue;
                            }
                            Err(e) => {
                                tracing::error!(%topic, partition, error = %e, "log reset failed");
                                return;
                            }
                        }
                    }
                    if e.code == pb::ErrorCode::OffsetOutOfRange as i32 {
                        // Our log end is past the leader's: ask again.
                        truncated = false;
                    }
                    tracing::debug!(leader, error = %e.message, "replication fetch refused");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_millis(500));
                    continue;
                }
                backoff = Duration::from_millis(20);
                if let Err(e) = replica
                    .append_as_follower(&resp.records, resp.high_watermark)
                    .await
                {
                    tracing::warn!(%topic, partition, error = %e, "replication append failed");
                    truncated = false;
                    tokio::time::sleep(backoff).await;
                }
            }
            Err(s) => {
                tracing::debug!(leader, error = %s.message(), "replication fetch failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_millis(500));
            }
        }
    }
}
