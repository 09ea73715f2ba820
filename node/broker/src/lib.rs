//! Flotilla's broker: Kafka-style topics on the partition log
//! (`flotilla-log`), served by every node as gRPC package
//! `flotilla.broker.v1` on its client port.
//!
//! The broker reaches the KV **only through the etcd v3 API**
//! (`flotilla-client` pointed at the cluster's client URLs), so it would run
//! unchanged against any etcd. Its concepts are Kafka's: topics, partitions,
//! offsets, leader epochs, the high watermark, the ISR, producer ids and
//! sequences, group generations, committed offsets.
//!
//! # Layout
//!
//! | module | what |
//! |---|---|
//! | [`metadata`] | KV keys, their JSON values, placement (pure) |
//! | [`view`] | the metadata read from the KV in one pass |
//! | [`lease`] | the broker's lease and its leader-side safe window |
//! | [`epoch`] | leader-epoch cache and KIP-101/279 truncation rules (pure) |
//! | [`producers`] | idempotent producer windows (pure) |
//! | [`replica`] | one partition replica: log, role, HW, ISR |
//! | [`controller`] | background work: lease, elections, followers, ISR |
//! | [`service`], [`admin`], [`groups`] | the gRPC services |
//! | [`assign`] | consumer group assignment (pure) |
//! | [`kcoord`] | the Kafka group coordinator: the IO around [`kgroup`] |
//! | [`kgroup`] | a Kafka consumer group's rendezvous at its coordinator (pure) |
//!
//! # Guarantees, and the rules that give them
//!
//! 1. A partition has at most one leader that can write: leadership is the
//!    leader key, created only if absent and attached to the leader's lease;
//!    the leader writes only within three quarters of the lease TTL after
//!    its last confirmed keepalive was sent ([`lease`]).
//! 2. The leader epoch (the key's create_revision) fences every replication
//!    fetch and every ISR write; a stale epoch is refused.
//! 3. A record is committed once every ISR member has it (the high
//!    watermark); consumers never read past it; acks=all answers only then,
//!    with at least min.insync.replicas in the ISR.
//! 4. Only an ISR member becomes leader (unless unclean election is on), so
//!    committed records survive any leader change; records a deposed leader
//!    wrote beyond them are truncated by its epoch history (KIP-101/279).

pub mod admin;
pub mod assign;
pub mod controller;
pub mod core;
pub mod epoch;
pub mod error;
pub mod groups;
pub mod kcoord;
pub mod kgroup;
pub mod kv;
pub mod lease;
pub mod metadata;
pub mod producers;
pub mod replica;
pub mod service;
pub mod view;

pub use crate::core::{BrokerConfig, BrokerCore, BrokerMetrics};
use std::sync::Arc;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A running broker: its background tasks and the core its services share.
#[derive(Debug)]
pub struct Broker {
    core: Arc<BrokerCore>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Broker {
    /// Starts the broker's background work (registration, elections,
    /// replication). Serve its services with [`Broker::admin_service`],
    /// [`Broker::broker_service`] and [`Broker::groups_service`].
    pub fn start(config: BrokerConfig, metrics: BrokerMetrics) -> Result<Broker, String> {
        std::fs::create_dir_all(&config.data_dir)
            .map_err(|e| format!("{}: {e}", config.data_dir.display()))?;
        let core = Arc::new(BrokerCore::new(config, metrics)?);
        let (stop, rx) = watch::channel(false);
        let task = tokio::spawn(controller::run(core.clone(), rx));
        Ok(Broker { core, stop, task })
    }

    /// The shared core.
    pub fn core(&self) -> &Arc<BrokerCore> {
        &self.core
    }

    /// The `BrokerAdmin` service.
    pub fn admin_service(&self) -> admin::AdminService {
        admin::AdminService::new(self.core.clone())
    }

    /// The `Broker` service.
    pub fn broker_service(&self) -> service::BrokerService {
        service::BrokerService::new(self.core.clone())
    }

    /// The `Groups` service.
    pub fn groups_service(&self) -> groups::GroupsService {
        groups::GroupsService::new(self.core.clone())
    }

    /// Stops: steps down from every partition, revokes the lease (so other
    /// replicas take over at once), checkpoints high watermarks.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}
