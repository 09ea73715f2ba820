//! [`start`]: one Flotilla member, assembled from its parts — disk storage,
//! the state machine restored from its snapshot, the Raft core, the peer
//! transport and service, the driver, the client gRPC services and the HTTP
//! port — on listeners the caller binds ([`start_with`] also takes the
//! resolver and file layer, for tests). [`RunningNode::failed`] resolves
//! when a part fails for good (a storage error stops the driver), so that
//! the process can end; [`RunningNode::hand_off`] moves leadership away;
//! [`RunningNode::shutdown`] stops the parts in order.

use crate::api::{
    AbortOnDrop, Admission, AdmissionConfig, ApiContext, ClusterService, FeatureGate,
    ForwardService, Forwarder, HeaderSource, KvService, MaintenanceService, PlacementLayer,
    WriteForwardConfig, WriteForwarder, Writes, limit_connections, publish_self,
};
use crate::compaction::spawn_auto_compaction;
use crate::config::{ClusterState, FsyncSetting, NodeConfig, ReadModeSetting};
use crate::driver::{Driver, DriverConfig, RaftHandle};
use crate::http::{self, HttpState};
use crate::join::{DiscoveryService, Identity, resolve_identity};
use crate::kv::Lessor;
use crate::lease::{LeaseExpiryConfig, LeaseService, spawn_lease_expiry};
use crate::lifecycle::{HandOff, track_readiness};
use crate::metrics::Metrics;
use crate::state::{AppliedEvents, NodeStateMachine, StateConfig};
use crate::transport::{self, FaultControl, GrpcTransport, PeerService, TransportConfig};
use crate::watch::{WatchConfig, WatchService};
use flotilla_client::resolve::{Resolve, Resolver, SystemResolve};
use flotilla_proto::etcdserverpb::Member;
use flotilla_proto::etcdserverpb::cluster_server::ClusterServer;
use flotilla_proto::etcdserverpb::kv_server::KvServer;
use flotilla_proto::etcdserverpb::maintenance_server::MaintenanceServer;
use flotilla_raft::{Config, NodeId, Raft, ReadMode, Storage as _};
use flotilla_storage::fs::FileSystem;
use flotilla_storage::{DiskStorage, FsyncMode, StorageOptions};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{broadcast, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// How often the transport's peers are reconciled with the member table.
const PEER_SYNC_INTERVAL: Duration = Duration::from_millis(200);
/// How often a member that knows no leader asks its peers whether it was
/// removed from the cluster.
const REMOVAL_CHECK_INTERVAL: Duration = Duration::from_secs(2);
/// Channels to other members kept for forwarding.
const FORWARD_CHANNELS_MAX: usize = 16;
/// How long a forwarded request may take.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a stopping member lets each of its servers drain before it
/// closes the connections left: one that never sends a byte (a half-open
/// client, a port probe) would otherwise hold a graceful shutdown forever.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);
/// Room for gRPC framing and the other fields above `max_request_bytes`,
/// so an oversized request reaches the handler and gets etcd's message
/// (etcd's `grpcOverheadBytes`). Every client service decodes messages up
/// to `max_request_bytes` plus this; responses are not limited (etcd's
/// send limit is 2 GiB): a large Range answers whole, as etcd's does.
const GRPC_OVERHEAD_BYTES: usize = 512 * 1024;

/// The three listeners of a member, bound by the caller (tests bind
/// `127.0.0.1:0`; the binary binds the configured addresses).
#[derive(Debug)]
pub struct NodeListeners {
    /// The client API (etcd's gRPC services).
    pub client: TcpListener,
    /// The Raft peer service.
    pub peer: TcpListener,
    /// `/livez`, `/readyz`, `/metrics`.
    pub http: TcpListener,
}

/// What a member reaches the outside through, besides its listeners:
/// injected so that tests control name resolution and the disk. The
/// default is production's: the system's resolver and the real file
/// system.
#[derive(Clone, Debug)]
pub struct NodeIo {
    /// Looks up the host names in members' URLs, on every connection.
    pub resolve: Arc<dyn Resolve>,
    /// The storage's file layer; `None` is the real one.
    pub fs: Option<Arc<dyn FileSystem>>,
    /// The features this member's peer batches advertise (and that it
    /// uses in what it proposes): [`transport::FEATURES`]. Only tests change
    /// it, to play a member of the previous release.
    #[doc(hidden)]
    pub advertised_features: u64,
}

impl Default for NodeIo {
    fn default() -> Self {
        NodeIo {
            resolve: Arc::new(SystemResolve),
            fs: None,
            advertised_features: transport::FEATURES,
        }
    }
}

/// Why a member could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The data directory could not be opened.
    #[error("cannot open the data directory: {0}")]
    Storage(#[from] flotilla_storage::OpenError),
    /// The storage opened but a read from it failed.
    #[error("cannot read the data directory: {0}")]
    StorageRead(#[from] flotilla_raft::StorageError),
    /// The snapshot could not be loaded into the state machine.
    #[error("cannot restore the snapshot: {0}")]
    Restore(String),
    /// This member cannot take its place in the cluster (removed, not
    /// added, its data lost).
    #[error("{0}")]
    Join(#[from] crate::join::JoinError),
    /// The Raft configuration is inconsistent.
    #[error("invalid raft configuration: {0}")]
    Raft(#[from] flotilla_raft::ConfigError),
    /// A peer URL is unusable.
    #[error("peer transport: {0}")]
    Transport(#[from] transport::TransportError),
    /// A listener's address could not be read.
    #[error("listener: {0}")]
    Io(#[from] std::io::Error),
    /// The broker could not start.
    #[error("broker: {0}")]
    Broker(String),
}

/// Why a running member stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The Raft driver stopped on a storage failure.
    #[error("raft storage failed: {0}")]
    Storage(#[from] flotilla_raft::StorageError),
    /// A gRPC server failed.
    #[error("grpc server: {0}")]
    Grpc(#[from] tonic::transport::Error),
    /// The HTTP server failed.
    #[error("http server: {0}")]
    Http(#[from] std::io::Error),
    /// A task panicked.
    #[error("task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
    /// A part did not stop within the time the stop had.
    #[error("{0} did not stop in time")]
    Overdue(&'static str),
}

/// A started member. Drop does not stop it: call [`RunningNode::shutdown`].
#[derive(Debug)]
pub struct RunningNode {
    member_id: u64,
    kafka_addr: Option<SocketAddr>,
    client_addr: SocketAddr,
    peer_addr: SocketAddr,
    http_addr: SocketAddr,
    raft: RaftHandle<NodeStateMachine>,
    transport: GrpcTransport,
    lessor: Arc<Mutex<Lessor>>,
    events: broadcast::Sender<Arc<AppliedEvents>>,
    /// Phase 1: the client server and background tasks.
    stop_clients: watch::Sender<bool>,
    /// Phase 2: the peer server, the driver, the HTTP port.
    stop_core: watch::Sender<bool>,
    client_server: JoinHandle<Result<(), RunError>>,
    background: Vec<JoinHandle<()>>,
    peer_server: JoinHandle<Result<(), RunError>>,
    driver: JoinHandle<Result<(), flotilla_raft::StorageError>>,
    http_server: JoinHandle<std::io::Result<()>>,
    /// Why the member failed for good, once a part has (or it was removed
    /// from the cluster).
    fatal: watch::Receiver<Option<String>>,
    hand_off: HandOff<NodeStateMachine>,
    /// The broker, stopped first (its lease revoked through the client
    /// port, so its partition leaderships move at once).
    broker: Option<flotilla_broker::Broker>,
    /// What this member knows of the features every member understands.
    features: FeatureGate,
}

/// Runs `part` of the member, which should run until `stopping` is set; if
/// it ends before that, records why in `fatal` (the first reason wins), so
/// that the process ends rather than live on serving nothing.
async fn guarded<E: std::fmt::Display>(
    part: &'static str,
    fatal: watch::Sender<Option<String>>,
    stopping: watch::Receiver<bool>,
    task: impl Future<Output = Result<(), E>>,
) -> Result<(), E> {
    let result = task.await;
    if !*stopping.borrow() {
        let reason = match &result {
            Ok(()) => format!("the {part} stopped by itself"),
            Err(e) => format!("the {part} failed: {e}"),
        };
        fatal.send_if_modified(|first| {
            let new = first.is_none();
            if new {
                *first = Some(reason);
            }
            new
        });
    }
    result
}

/// The driver's runtime until its thread takes it: dropped on an early
/// return from an async function, where a runtime may only be shut down
/// in the background.
struct UnstartedRuntime(Option<tokio::runtime::Runtime>);

impl UnstartedRuntime {
    fn handle(&self) -> tokio::runtime::Handle {
        self.0.as_ref().expect("not taken yet").handle().clone()
    }

    fn take(&mut self) -> tokio::runtime::Runtime {
        self.0.take().expect("taken once")
    }
}

impl Drop for UnstartedRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

/// A server's task on the driver's runtime (the peer server's, and the
/// client server's with `--client-thread driver`), awaited from this one:
/// aborted when dropped, as a task of this runtime would be by
/// [`JoinHandle::abort`] on the task awaiting it.
fn on_other_runtime(
    task: JoinHandle<Result<(), tonic::transport::Error>>,
) -> impl Future<Output = Result<(), RunError>> + Send + 'static {
    let task = AbortOnDrop(task);
    async move {
        match task.await {
            Ok(served) => served.map_err(RunError::from),
            // The driver's thread ended, and its runtime with it: the
            // driver's own result says why (a storage failure, not this).
            Err(e) if e.is_cancelled() => Ok(()),
            Err(e) => Err(RunError::from(e)),
        }
    }
}

fn signal(rx: &watch::Sender<bool>) -> impl Future<Output = ()> + Send + 'static {
    let mut rx = rx.subscribe();
    async move {
        let _ = rx.wait_for(|stop| *stop).await;
    }
}

/// The Raft core's configuration from the node's.
fn raft_config(config: &NodeConfig, restored: Restored) -> Config {
    let mut c = Config::new(NodeId(config.member_id));
    c.election_ticks = config.election_ticks;
    c.heartbeat_ticks = config.heartbeat_ticks;
    c.seed = config.member_id;
    c.read_mode = match config.read_mode {
        ReadModeSetting::Safe => ReadMode::Safe,
        ReadModeSetting::Lease => ReadMode::LeaseBased,
    };
    c.snapshot_after_entries = config.snapshot_count;
    c.snapshot_min_log_percent = config.snapshot_min_log_percent;
    c.snapshot_after_bytes = config.snapshot_max_log_bytes;
    c.snapshot_catchup_entries = config.snapshot_catchup_entries;
    c.applied = restored.index;
    c.restored_snapshot_bytes = restored.bytes;
    // etcd's --strict-reconfig-check: never remove (or add) a voter when
    // the voters that answer would then not make a quorum.
    c.strict_reconfig_check = true;
    c
}

fn open_storage(
    config: &NodeConfig,
    identity: &Identity,
    fs: Option<Arc<dyn FileSystem>>,
) -> Result<DiskStorage, StartError> {
    let mut options = StorageOptions::new(config.cluster_id, config.member_id);
    options.fsync = match config.fsync {
        FsyncSetting::Always | FsyncSetting::Inline => FsyncMode::Always,
        FsyncSetting::Never => FsyncMode::Never,
    };
    // Used only when the directory is fresh; a joining member starts empty
    // and learns the configuration from the leader.
    options.bootstrap = match identity {
        Identity::Bootstrap { .. } => Some(config.founding_conf_state()),
        Identity::Join { .. } | Identity::Restart { .. } => None,
    };
    Ok(match fs {
        Some(fs) => DiskStorage::open_with_fs(fs, &config.data_dir, options)?,
        None => DiskStorage::open(&config.data_dir, options)?,
    })
}

/// Starts a member of `config` on `listeners`: opens (or creates) its data
/// directory, restores the state machine from the snapshot there, and
/// spawns the driver, the peer and client servers, the HTTP port and the
/// background tasks (publishing this member, keeping the transport's peers
/// in step with the member table). Must run inside a multi-threaded tokio
/// runtime (storage is opened in place); the driver gets a thread of its
/// own.
pub async fn start(
    config: NodeConfig,
    listeners: NodeListeners,
) -> Result<RunningNode, StartError> {
    start_with(config, listeners, NodeIo::default()).await
}

/// [`start`], resolving names and reaching the disk through `io`.
pub async fn start_with(
    config: NodeConfig,
    listeners: NodeListeners,
    io: NodeIo,
) -> Result<RunningNode, StartError> {
    config.log_effective();
    let client_addr = listeners.client.local_addr()?;
    let peer_addr = listeners.peer.local_addr()?;
    let http_addr = listeners.http.local_addr()?;
    let identity = resolve_identity(&config).await?;
    // A founder of this configuration (bootstrapping now, or restarting as
    // the member it bootstrapped as) seeds the founders into the table if
    // that never happened; a member that joined has nothing to seed.
    let founder = config.cluster_state == ClusterState::New
        && identity.cluster_id() == config.cluster_id
        && identity.member_id() == config.member_id
        && config
            .initial_cluster
            .iter()
            .any(|m| m.id == config.member_id);
    let joined_members = match &identity {
        Identity::Join { members, .. } => Some(members.clone()),
        _ => None,
    };
    let config = NodeConfig {
        cluster_id: identity.cluster_id(),
        member_id: identity.member_id(),
        ..config
    };
    let storage = tokio::task::block_in_place(|| open_storage(&config, &identity, io.fs.clone()))?;
    // A backup that was being sent when the member last stopped.
    if let Err(e) = crate::backup::remove_stale_spool(&config.data_dir) {
        tracing::warn!(error = %e, "cannot remove the spool of an earlier backup");
    }
    // The store's limits stay the defaults on every member: applying must
    // give the same result everywhere, so they are not per-member settings.
    // `max_request_bytes` is checked before proposing instead.
    let (mut sm, lessor) = NodeStateMachine::new(StateConfig::default());
    let restored = tokio::task::block_in_place(|| restore_at_start(&storage, &mut sm))?;
    let events = sm.event_sender();
    let watched = sm.watched_keys();
    let gauge = sm.gauge();
    let member_ids = sm.member_ids();
    let raft = Raft::new(raft_config(&config, restored), storage)?;

    let transport_config = TransportConfig {
        jitter_seed: config.member_id,
        advertised_features: io.advertised_features,
        ..TransportConfig::default()
    };
    let metrics = Arc::new(Metrics::new());
    let resolver = Resolver::new(io.resolve.clone(), metrics.resolve_failures.clone());
    // The driver's thread runs the peer transport too (both directions):
    // an append goes from the network to the driver, and its answer from
    // the driver to the network, without waking another thread.
    let mut raft_runtime = UnstartedRuntime(Some(
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?,
    ));
    let raft_tasks = raft_runtime.handle();
    let transport = {
        let _on_raft_runtime = raft_tasks.enter();
        GrpcTransport::with_resolver(
            config.cluster_id,
            transport_config.clone(),
            FaultControl::new(config.member_id),
            resolver.clone(),
        )
    };
    // The first peers: the members the cluster gave a joining member, else
    // the founders; the member table takes over as soon as it is applied.
    let initial_peers: HashMap<NodeId, String> = match &joined_members {
        Some(members) => members
            .iter()
            .filter_map(|m| Some((NodeId(m.id), m.peer_ur_ls.first()?.clone())))
            .collect(),
        None => config
            .initial_cluster
            .iter()
            .map(|m| (NodeId(m.id), m.peer_url.clone()))
            .collect(),
    };
    let initial_peers: HashMap<NodeId, String> = initial_peers
        .into_iter()
        .filter(|(id, _)| id.0 != config.member_id)
        .collect();
    transport.set_peers(&initial_peers)?;

    let workers = tokio::runtime::Handle::current();
    // Whether the client server runs on the driver's thread. A
    // current-thread runtime has no workers to hand calls to.
    let on_driver_thread = config.client_thread.on_driver(
        (workers.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread)
            .then(|| workers.metrics().num_workers()),
    );
    let (driver, raft) = Driver::new(
        raft,
        sm,
        transport.clone(),
        DriverConfig {
            tick_interval: config.tick,
            deferred_sync: config.fsync == FsyncSetting::Always,
            follower_sync_on_loop: config.follower_sync_on_loop,
            answers_on_thread: on_driver_thread,
            ..DriverConfig::default()
        },
    );
    let peer_service = PeerService::new(
        config.cluster_id,
        raft.clone(),
        &transport_config,
        transport.metrics(),
    );
    let features = FeatureGate::new(
        config.member_id,
        io.advertised_features,
        peer_service.peer_features(),
        member_ids,
    );
    let limits = crate::kv::RequestLimits {
        value_bytes_max: config.max_request_bytes,
        txn_ops_max: config.max_txn_ops,
        ..crate::kv::KvConfig::default().limits()
    };
    let mut driver = driver.with_metrics(metrics.clone());
    // A member that does not advertise peer proposals (a test playing the
    // previous release) neither takes nor makes them.
    if features.understood_here(transport::PEER_PROPOSALS) {
        driver = driver.with_peer_proposals(
            crate::api::peer_proposal_filter(
                features.clone(),
                limits,
                WriteForwardConfig::for_request_limit(config.max_request_bytes).command_bytes_max,
            ),
            crate::api::peer_leader_takes(features.clone()),
        );
    }

    let stop_clients = watch::channel(false).0;
    let stop_core = watch::channel(false).0;
    let (fatal_tx, fatal) = watch::channel(None);
    // The peer server's end, which the driver's thread waits for before
    // it stops running the server's tasks.
    let (peer_server_ended, peer_server_end) = oneshot::channel::<()>();
    // The same for the client server, when it runs there (dropped, and so
    // ended at once, when it does not).
    let (client_server_ended, client_server_end) = oneshot::channel::<()>();
    let driver = driver.spawn_on_runtime(
        raft_runtime.take(),
        format!("raft-{}", config.name),
        signal(&stop_core),
        async move {
            let _ = peer_server_end.await;
            let _ = client_server_end.await;
        },
    )?;
    let driver = tokio::spawn(guarded(
        "raft driver",
        fatal_tx.clone(),
        stop_core.subscribe(),
        async move {
            driver.await.unwrap_or_else(|e| {
                Err(flotilla_raft::StorageError::Fatal(format!(
                    "the driver task failed: {e}"
                )))
            })
        },
    ));
    let discovery = tonic::service::Routes::new(
        DiscoveryService::new(raft.clone(), config.cluster_id).into_server(),
    );
    let peer_listener = {
        let listener = listeners.peer.into_std()?;
        let _on_raft_runtime = raft_tasks.enter();
        TcpListener::from_std(listener)?
    };
    let serving = raft_tasks.spawn({
        let serve =
            transport::serve_with(peer_listener, peer_service, discovery, signal(&stop_core));
        async move {
            let served = serve.await;
            let _ = peer_server_ended.send(());
            served
        }
    });
    let peer_server = tokio::spawn(guarded(
        "peer server",
        fatal_tx.clone(),
        stop_core.subscribe(),
        on_other_runtime(serving),
    ));
    // The hand-off (SIGTERM, /prestop) gets at most half the stop's time;
    // a transfer the core abandoned is started again after an election
    // timeout.
    let hand_off = HandOff::new(
        raft.clone(),
        config.shutdown_timeout / 2,
        config.tick * config.election_ticks,
    );
    let (caught_up_tx, caught_up) = watch::channel(false);
    let pre_stop: http::PreStop = {
        let hand_off = hand_off.clone();
        Arc::new(move || {
            let hand_off = hand_off.clone();
            Box::pin(async move { hand_off.run().await })
        })
    };
    let http_server = tokio::spawn(guarded(
        "HTTP server",
        fatal_tx.clone(),
        stop_core.subscribe(),
        http::serve(
            listeners.http,
            HttpState {
                status: raft.watch_status(),
                metrics: metrics.clone(),
                caught_up,
                fatal: fatal.clone(),
                pre_stop,
            },
            signal(&stop_core),
        ),
    ));

    let ctx = ApiContext {
        raft: raft.clone(),
        header: HeaderSource::new(config.cluster_id, config.member_id, raft.watch_status()),
        member_id: config.member_id,
        max_request_bytes: config.max_request_bytes,
        forwarder: Forwarder::new(FORWARD_CHANNELS_MAX, FORWARD_TIMEOUT).with_resolver(resolver),
        lessor: lessor.clone(),
        admission: Admission::new(
            AdmissionConfig {
                member_id: config.member_id,
                limits,
                max_request_bytes: config.max_request_bytes,
                quota_bytes: config.quota_backend_bytes,
            },
            gauge,
        ),
        raising_nospace: Arc::default(),
        features: features.clone(),
    };
    let forward_config = WriteForwardConfig::for_request_limit(config.max_request_bytes);
    let writes = Writes::new(
        ctx.clone(),
        WriteForwarder::spawn(ctx.clone(), config.cluster_id, forward_config.clone()),
    );
    let cluster = ClusterService::new(ctx.clone(), writes.clone());
    let watch_service = WatchService::new(
        raft.clone(),
        events.clone(),
        WatchConfig {
            cluster_id: config.cluster_id,
            fragment_bytes_max: config.max_request_bytes,
            ..WatchConfig::default()
        },
    )
    .with_watched(watched);
    let lease_service = LeaseService::new(ctx.clone(), writes.clone());
    let (watch_closer, lease_closer) =
        (watch_service.stream_closer(), lease_service.stream_closer());
    let message_max = config.max_request_bytes + GRPC_OVERHEAD_BYTES;
    let forward_service = ForwardService::new(ctx.clone(), config.cluster_id, &forward_config);
    let forward_closer = forward_service.stream_closer();
    let kafka = if config.broker.enabled {
        bind_kafka(&config).await?
    } else {
        None
    };
    let broker = if config.broker.enabled {
        let advertise = kafka.as_ref().map(|(_, a)| a.clone());
        Some(start_broker(&config, &metrics, advertise)?)
    } else {
        None
    };
    let kafka_addr = kafka.as_ref().map(|(l, _)| l.local_addr()).transpose()?;
    let kafka_task = match (&broker, kafka) {
        (Some(b), Some((listener, advertise))) => {
            let mut kc = flotilla_kafka::KafkaConfig::new(advertise.clone());
            kc.frame_bytes_max = config.broker.kafka_frame_bytes_max;
            let ctx = Arc::new(flotilla_kafka::Context::new(b.core().clone(), kc));
            tracing::info!(listen = ?kafka_addr, %advertise, "Kafka listener started");
            Some(tokio::spawn(flotilla_kafka::serve(
                listener,
                ctx,
                stop_clients.subscribe(),
            )))
        }
        _ => None,
    };
    let router = tonic::transport::Server::builder()
        .max_concurrent_streams(config.max_concurrent_streams)
        .layer(PlacementLayer::new(
            on_driver_thread.then_some(workers),
            message_max,
            metrics.client_calls.clone(),
        ))
        .add_service(
            KvServer::new(KvService::new(ctx.clone(), writes.clone()))
                .max_decoding_message_size(message_max)
                .max_encoding_message_size(usize::MAX),
        )
        .add_service(
            MaintenanceServer::new(MaintenanceService::new(
                ctx.clone(),
                writes.clone(),
                config.data_dir.clone(),
            ))
            .max_decoding_message_size(message_max)
            .max_encoding_message_size(usize::MAX),
        )
        .add_service(
            ClusterServer::new(cluster)
                .max_decoding_message_size(message_max)
                .max_encoding_message_size(usize::MAX),
        )
        .add_service(
            watch_service
                .into_server()
                .max_decoding_message_size(message_max)
                .max_encoding_message_size(usize::MAX),
        )
        .add_service(
            lease_service
                .into_server()
                .max_decoding_message_size(message_max)
                .max_encoding_message_size(usize::MAX),
        )
        .add_service(forward_service.into_server())
        .add_optional_service(broker.as_ref().map(|b| b.admin_service().into_server()))
        .add_optional_service(broker.as_ref().map(|b| b.broker_service().into_server()))
        .add_optional_service(broker.as_ref().map(|b| b.groups_service().into_server()));
    // Watch and keepalive streams never end by themselves: close them when
    // the client server is asked to stop, or its graceful shutdown waits.
    let stop_client_streams = {
        let stop = signal(&stop_clients);
        async move {
            stop.await;
            watch_closer.close();
            lease_closer.close();
            forward_closer.close();
        }
    };
    let client_server = {
        let incoming = |listener| {
            limit_connections(
                flotilla_client::coalesce::incoming(listener),
                config.max_client_connections,
            )
        };
        let serving: Pin<Box<dyn Future<Output = Result<(), RunError>> + Send>> =
            if on_driver_thread {
                // The connections' sockets, and so their tasks, on the
                // driver's runtime; what the driver's thread must not run
                // goes back to this runtime's workers (`PlacementLayer`).
                let listener = {
                    let listener = listeners.client.into_std()?;
                    let _on_raft_runtime = raft_tasks.enter();
                    TcpListener::from_std(listener)?
                };
                let serve =
                    router.serve_with_incoming_shutdown(incoming(listener), stop_client_streams);
                Box::pin(on_other_runtime(raft_tasks.spawn(async move {
                    let served = serve.await;
                    let _ = client_server_ended.send(());
                    served
                })))
            } else {
                drop(client_server_ended);
                let serve = router
                    .serve_with_incoming_shutdown(incoming(listeners.client), stop_client_streams);
                Box::pin(async move { serve.await.map_err(RunError::from) })
            };
        tokio::spawn(guarded(
            "client server",
            fatal_tx.clone(),
            stop_clients.subscribe(),
            serving,
        ))
    };

    let founders: Vec<Member> = if founder {
        config
            .initial_cluster
            .iter()
            .map(|m| Member {
                id: m.id,
                name: m.name.clone(),
                peer_ur_ls: vec![m.peer_url.clone()],
                client_ur_ls: Vec::new(),
                is_learner: false,
            })
            .collect()
    } else {
        Vec::new()
    };
    let me = Member {
        id: config.member_id,
        name: config.name.clone(),
        peer_ur_ls: vec![config.peer_advertise.clone()],
        client_ur_ls: vec![config.client_advertise.clone()],
        is_learner: false,
    };
    let mut background = vec![
        tokio::spawn(publish_self(
            raft.clone(),
            writes.clone(),
            me,
            founders,
            stop_clients.subscribe(),
        )),
        spawn_lease_expiry(
            raft.clone(),
            lessor.clone(),
            LeaseExpiryConfig::default(),
            signal(&stop_clients),
        ),
        spawn_auto_compaction(raft.clone(), config.auto_compaction, signal(&stop_clients)),
        tokio::spawn(sync_peers(
            raft.clone(),
            transport.clone(),
            config.member_id,
            initial_peers,
            stop_clients.subscribe(),
        )),
        tokio::spawn(watch_removal(
            RemovalWatch {
                raft: raft.clone(),
                transport: transport.clone(),
                cluster_id: config.cluster_id,
                member_id: config.member_id,
                peer_url: config.peer_advertise.clone(),
                timeout: config.discovery_timeout,
                fatal: fatal_tx.clone(),
            },
            stop_clients.subscribe(),
        )),
        tokio::spawn(track_readiness(
            raft.clone(),
            caught_up_tx,
            stop_clients.subscribe(),
        )),
    ];
    background.extend(kafka_task);
    tracing::info!(
        member = %format!("{:x}", config.member_id),
        name = %config.name,
        %client_addr,
        %peer_addr,
        %http_addr,
        "member started"
    );
    Ok(RunningNode {
        member_id: config.member_id,
        kafka_addr,
        client_addr,
        peer_addr,
        http_addr,
        raft,
        transport,
        lessor,
        events,
        stop_clients,
        stop_core,
        client_server,
        background,
        peer_server,
        driver,
        http_server,
        fatal,
        hand_off,
        broker,
        features,
    })
}

/// Binds the Kafka listener, if configured, and works out the address
/// clients are told: `--kafka-advertise-addr`, else the bound address, with
/// the advertised client URL's host in place of an unspecified IP
/// (`0.0.0.0:9092` advertised as `<client host>:9092`).
async fn bind_kafka(config: &NodeConfig) -> Result<Option<(TcpListener, String)>, StartError> {
    let Some(listen) = &config.broker.kafka_listen else {
        return Ok(None);
    };
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|e| StartError::Broker(format!("--kafka-listen-addr {listen}: {e}")))?;
    let bound = listener.local_addr()?;
    let advertise = match &config.broker.kafka_advertise {
        Some(a) => a.clone(),
        None if bound.ip().is_unspecified() => {
            let client = config
                .client_advertise
                .trim_start_matches("http://")
                .trim_start_matches("https://")
                .trim_end_matches('/');
            let host = client.rsplit_once(':').map_or(client, |(h, _)| h);
            format!("{host}:{}", bound.port())
        }
        None => bound.to_string(),
    };
    Ok(Some((listener, advertise)))
}

/// Starts the broker against this member's own client URL: it reaches the
/// KV only through the etcd API, as it would reach any etcd.
fn start_broker(
    config: &NodeConfig,
    metrics: &Metrics,
    kafka_advertise: Option<String>,
) -> Result<flotilla_broker::Broker, StartError> {
    let advertise = config
        .client_advertise
        .trim_start_matches("http://")
        .trim_start_matches("https://")
        .trim_end_matches('/')
        .to_string();
    let mut broker_config = flotilla_broker::BrokerConfig::new(
        config.member_id,
        advertise,
        config.data_dir.join("broker"),
        vec![config.client_advertise.clone()],
    );
    broker_config.default_replication_factor = config.broker.default_replication_factor;
    broker_config.min_insync_replicas = config.broker.min_insync_replicas;
    broker_config.partition_lease_ttl = config.broker.partition_lease_ttl;
    broker_config.max_batch_bytes = config.broker.max_batch_bytes;
    broker_config.replica_lag_time_max = config.broker.replica_lag_time_max;
    broker_config.kafka_advertise_addr = kafka_advertise.unwrap_or_default();
    broker_config.retention_check_interval = config.broker.retention_check_interval;
    let broker_metrics = flotilla_broker::BrokerMetrics::default();
    metrics.register(|r| broker_metrics.register(r));
    flotilla_broker::Broker::start(broker_config, broker_metrics).map_err(StartError::Broker)
}

/// Restores the state machine from the storage's snapshot, if it holds
/// one, streaming it from its file (checked at open; the reader checks the
/// CRC again as it reads): the snapshot is never in memory whole, only the
/// state decoded from it. Returns the snapshot's index and size.
fn restore_at_start(
    storage: &DiskStorage,
    sm: &mut NodeStateMachine,
) -> Result<Restored, StartError> {
    use crate::driver::StateMachine as _;
    let source = storage.snapshot_source()?;
    let meta = source.meta;
    if meta.index == 0 {
        return Ok(Restored::default());
    }
    let restored = match storage.snapshot_reader(&meta)? {
        Some(mut data) => sm.restore_from(&meta, &mut data),
        None => sm.restore(&storage.snapshot()?),
    };
    restored.map_err(StartError::Restore)?;
    Ok(Restored {
        index: meta.index,
        bytes: source.len_bytes,
    })
}

/// The snapshot a member's state machine was restored from at start.
#[derive(Clone, Copy, Debug, Default)]
struct Restored {
    /// Its index (0: none, the state starts empty).
    index: u64,
    /// Bytes of its data.
    bytes: u64,
}

/// Keeps the transport's peers equal to the initial cluster and the member
/// table, less removed members and this one.
async fn sync_peers(
    raft: RaftHandle<NodeStateMachine>,
    transport: GrpcTransport,
    me: u64,
    initial: HashMap<NodeId, String>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval(PEER_SYNC_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.wait_for(|stop| *stop) => return,
            _ = ticker.tick() => {}
        }
        let Ok((members, removed)) = raft
            .read_local(|sm| (sm.kv().members(), sm.kv().removed_members().clone()))
            .await
        else {
            return;
        };
        let mut wanted = initial.clone();
        for m in members {
            if let Some(url) = m.peer_ur_ls.first() {
                wanted.insert(NodeId(m.id), url.clone());
            }
        }
        wanted.retain(|id, _| id.0 != me && !removed.contains(&id.0));
        if wanted != transport.peers()
            && let Err(e) = transport.set_peers(&wanted)
        {
            tracing::warn!(error = %e, "member table holds an unusable peer URL");
        }
    }
}

/// What [`watch_removal`] needs.
struct RemovalWatch {
    raft: RaftHandle<NodeStateMachine>,
    transport: GrpcTransport,
    cluster_id: u64,
    member_id: u64,
    peer_url: String,
    timeout: Duration,
    fatal: watch::Sender<Option<String>>,
}

/// Stops a member removed from its cluster, as etcd's members do: it
/// learns it from its own table when the removal reached it, and, since a
/// removed member is no longer sent the entry that removes it, by asking
/// its peers while it knows no leader.
async fn watch_removal(w: RemovalWatch, mut shutdown: watch::Receiver<bool>) {
    let mut ticker = tokio::time::interval(REMOVAL_CHECK_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut leaderless_checks = 0u32;
    loop {
        tokio::select! {
            _ = shutdown.wait_for(|stop| *stop) => return,
            _ = ticker.tick() => {}
        }
        let me = w.member_id;
        let Ok(removed_here) = w
            .raft
            .read_local(move |sm| sm.kv().is_removed_member(me))
            .await
        else {
            return;
        };
        leaderless_checks = if w.raft.status().leader.is_some() {
            0
        } else {
            leaderless_checks + 1
        };
        let removed = removed_here
            || (leaderless_checks >= 2 && {
                let peers: Vec<String> = w.transport.peers().into_values().collect();
                crate::join::removed_from_cluster(&peers, &w.peer_url, w.cluster_id, me, w.timeout)
                    .await
            });
        if removed {
            let reason = format!(
                "this member ({me:x}) was removed from cluster {:x}; stopping (to serve again it must be added anew and started on a fresh data directory)",
                w.cluster_id
            );
            tracing::error!("{reason}");
            w.fatal.send_replace(Some(reason));
            return;
        }
    }
}

impl RunningNode {
    /// This member's id.
    pub fn member_id(&self) -> u64 {
        self.member_id
    }

    /// Where the Kafka listener listens, if it runs.
    pub fn kafka_addr(&self) -> Option<SocketAddr> {
        self.kafka_addr
    }

    /// Where the client API listens.
    pub fn client_addr(&self) -> SocketAddr {
        self.client_addr
    }

    /// Where the peer service listens.
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer_addr
    }

    /// Where the HTTP port listens.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// The driver, for status and tests.
    pub fn raft(&self) -> &RaftHandle<NodeStateMachine> {
        &self.raft
    }

    /// Whether what this member proposes may use features the previous
    /// release does not understand (tests).
    pub fn features(&self) -> &FeatureGate {
        &self.features
    }

    /// The fault layer of this member's outgoing peer traffic (tests).
    pub fn faults(&self) -> &FaultControl {
        self.transport.faults()
    }

    /// The lessor shared with the state machine (for the Lease service).
    pub fn lessor(&self) -> &Arc<Mutex<Lessor>> {
        &self.lessor
    }

    /// The applied-event fan-out (for the Watch service).
    pub fn event_sender(&self) -> &broadcast::Sender<Arc<AppliedEvents>> {
        &self.events
    }

    /// Why the member failed for good, if a part has: the driver stopped
    /// on a storage error, a server ended on its own, or the member was
    /// removed from the cluster.
    pub fn fatal_error(&self) -> Option<String> {
        self.fatal.borrow().clone()
    }

    /// Resolves, with the reason, once a part of the member failed for good
    /// ([`RunningNode::fatal_error`]); never while the member is healthy.
    /// The process should then end: the member can no longer do its job.
    pub async fn failed(&self) -> String {
        let mut fatal = self.fatal.clone();
        match fatal.wait_for(Option::is_some).await {
            Ok(reason) => reason.clone().unwrap_or_default(),
            // The sender lives in the guarded tasks, which hold it until
            // they end: gone only after a shutdown.
            Err(_) => std::future::pending().await,
        }
    }

    /// The leadership hand-off this member runs before it stops (and for
    /// `/prestop`): see [`HandOff`].
    pub fn hand_off(&self) -> &HandOff<NodeStateMachine> {
        &self.hand_off
    }

    /// Stops the member: first the client server (in-flight requests are
    /// answered while the driver still runs) and the background tasks, then
    /// the peer server (its open streams closed), the driver, the transport
    /// and the HTTP port. Each server drains its connections for at most
    /// 2 s, then closes those left. Returns the first error any part
    /// stopped with.
    pub async fn shutdown(self) -> Result<(), RunError> {
        self.shutdown_until(Instant::now() + 4 * DRAIN_TIMEOUT)
            .await
    }

    /// [`RunningNode::shutdown`], done by `deadline`: each server drains
    /// for at most 2 s and no later than the deadline, and a part still
    /// running then is left (aborted, or, for the driver's thread, left to
    /// end with the process) with [`RunError::Overdue`].
    pub async fn shutdown_until(mut self, deadline: Instant) -> Result<(), RunError> {
        if let Some(broker) = self.broker.take() {
            // At most a second or two (its lease revoke is bounded by one),
            // so the rest of the stop keeps its time.
            let bound = deadline.min(Instant::now() + Duration::from_secs(2));
            let _ = tokio::time::timeout_at(bound, broker.shutdown()).await;
        }
        self.stop_clients.send_replace(true);
        let mut first: Option<RunError> = None;
        let mut keep = |r: Result<(), RunError>| {
            if let Err(e) = r
                && first.is_none()
            {
                first = Some(e);
            }
        };
        keep(drained(self.client_server, "client", deadline).await);
        for mut task in self.background {
            match tokio::time::timeout_at(deadline, &mut task).await {
                Ok(r) => keep(r.map_err(RunError::from)),
                Err(_) => {
                    task.abort();
                    keep(Err(RunError::Overdue("a background task")));
                }
            }
        }
        self.stop_core.send_replace(true);
        keep(drained(self.peer_server, "peer", deadline).await);
        match tokio::time::timeout_at(deadline, self.driver).await {
            Ok(r) => keep(flatten(r)),
            Err(_) => keep(Err(RunError::Overdue("the raft driver"))),
        }
        self.transport.shutdown();
        keep(drained(self.http_server, "http", deadline).await);
        match first {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// Waits for a server task to finish its graceful shutdown, at most
/// [`DRAIN_TIMEOUT`] and no later than `deadline`; then aborts it. The
/// server has closed its listener by then, so the port is free; connections
/// still open end when their clients close them, and requests on them fail
/// once the driver stopped.
async fn drained<E: Into<RunError>>(
    mut server: JoinHandle<Result<(), E>>,
    name: &str,
    deadline: Instant,
) -> Result<(), RunError> {
    let until = deadline.min(Instant::now() + DRAIN_TIMEOUT);
    match tokio::time::timeout_at(until, &mut server).await {
        Ok(result) => flatten(result),
        Err(_) => {
            tracing::warn!(
                server = name,
                timeout = ?DRAIN_TIMEOUT,
                "connections still open after the drain timeout; closing the server"
            );
            server.abort();
            match server.await {
                Err(e) if e.is_cancelled() => Ok(()),
                other => flatten(other),
            }
        }
    }
}

fn flatten<E: Into<RunError>>(
    r: Result<Result<(), E>, tokio::task::JoinError>,
) -> Result<(), RunError> {
    r?.map_err(Into::into)
}
