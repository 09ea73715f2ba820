//! Flotilla's Kafka wire-protocol listener: existing Kafka clients (kcat,
//! librdkafka, the Java, Python and Go clients) produce to and consume from
//! the broker on their own protocol.
//!
//! One core, two front doors: every handler here calls the same broker
//! core (`flotilla-broker`) as the gRPC services, so offsets, leader
//! epochs, the high watermark and committed offsets are the same objects
//! whichever door a client came in by.
//!
//! # Layout
//!
//! | module | what |
//! |---|---|
//! | [`frame`] | size-prefixed frames, request header, response encoding |
//! | [`walk`], [`schema`] | a bounded walk of each request before the codec decodes it |
//! | [`conn`] | one connection: read a frame, answer it, in order |
//! | [`dispatch`] | the APIs and versions served; routing |
//! | [`ids`] | Kafka's int32 node ids from Flotilla's u64 broker ids |
//! | [`errors`] | broker errors as Kafka error codes; leader epochs |
//! | [`records`] | record batches v2 to and from the broker's records |
//! | [`decompress`] | the codecs, with a bound on the output |
//! | [`produce`], [`fetch`], [`offsets`] | Produce, Fetch, ListOffsets |
//! | [`metadata`], [`topics`] | Metadata, CreateTopics, DeleteTopics |
//! | [`producer_id`] | InitProducerId (ids from the KV) |
//! | [`group`] | the group APIs (FindCoordinator … ListGroups) |
//!
//! # Serving
//!
//! 1. The node binds the listener and builds a [`Context`] over its broker.
//! 2. [`serve`] accepts connections (at most
//!    [`KafkaConfig::connections_max`] at once) until shutdown.
//! 3. Each connection reads one request, answers it, then reads the next:
//!    Kafka clients expect answers in request order, and a partition's
//!    batches from one producer must be appended in the order sent.

pub mod conn;
pub mod decompress;
pub mod dispatch;
pub mod errors;
pub mod fetch;
pub mod frame;
pub mod group;
pub mod ids;
pub mod metadata;
pub mod offsets;
pub mod produce;
pub mod producer_id;
pub mod records;
pub mod schema;
pub mod topics;
pub mod walk;

use flotilla_broker::BrokerCore;
use flotilla_broker::admin::AdminService;
use flotilla_broker::service::BrokerService;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

/// The listener's settings (node flags).
#[derive(Debug, Clone)]
pub struct KafkaConfig {
    /// `host:port` clients are told to connect to for this broker.
    pub advertise_addr: String,
    /// Largest request frame accepted; a larger one closes the connection.
    pub frame_bytes_max: u32,
    /// Most open client connections.
    pub connections_max: usize,
}

impl KafkaConfig {
    /// Defaults for a listener advertised at `advertise_addr`.
    pub fn new(advertise_addr: String) -> KafkaConfig {
        KafkaConfig {
            advertise_addr,
            frame_bytes_max: frame::FRAME_BYTES_MAX_DEFAULT,
            connections_max: 1024,
        }
    }
}

/// What every handler shares: the broker core and its services.
#[derive(Debug)]
pub struct Context {
    /// The broker core.
    pub core: Arc<BrokerCore>,
    /// The `Broker` service (produce, fetch, list offsets) the handlers call.
    pub broker: BrokerService,
    /// The `BrokerAdmin` service (topics).
    pub admin: AdminService,
    /// The settings.
    pub config: KafkaConfig,
}

impl Context {
    /// The context over `core`.
    pub fn new(core: Arc<BrokerCore>, config: KafkaConfig) -> Context {
        Context {
            broker: BrokerService::new(core.clone()),
            admin: AdminService::new(core.clone()),
            core,
            config,
        }
    }
}

/// Serves Kafka clients on `listener` until `shutdown` turns true.
pub async fn serve(listener: TcpListener, ctx: Arc<Context>, mut shutdown: watch::Receiver<bool>) {
    let slots = Arc::new(Semaphore::new(ctx.config.connections_max));
    loop {
        let accepted = tokio::select! {
            _ = shutdown.wait_for(|s| *s) => return,
            a = listener.accept() => a,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "kafka listener: accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::warn!(%peer, max = ctx.config.connections_max, "kafka listener: too many connections; closing the new one");
            continue;
        };
        let ctx = ctx.clone();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            conn::run(stream, peer, &ctx, stop).await;
            drop(slot);
        });
    }
}
