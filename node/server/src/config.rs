//! Node configuration: command-line flags, environment variables
//! (`FLOTILLA_*`) and an optional YAML file, in that order of precedence,
//! validated into one [`NodeConfig`] with clear errors.
//!
//! The flags follow etcd's where they mean the same thing
//! (`--initial-cluster`, `--initial-cluster-state`, `--data-dir`,
//! `--listen-client-urls`, ...), so operators can carry their habits over.

use crate::compaction::AutoCompaction;
use clap::Args;
use serde::Deserialize;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Why a configuration cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// A required setting is missing.
    #[error("missing setting: {0}")]
    Missing(&'static str),
    /// A setting has a value that cannot work.
    #[error("invalid {setting}: {reason}")]
    Invalid {
        /// The setting (flag name).
        setting: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The configuration file could not be read or parsed.
    #[error("configuration file {path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
}

mod retention;

pub use retention::Retention;
use retention::{auto_compaction, retention_from_file};

fn invalid(setting: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        setting,
        reason: reason.into(),
    }
}

/// Whether this member starts a new cluster or joins an existing one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ClusterState {
    /// Bootstrap a new cluster from `--initial-cluster`.
    New,
    /// Join a running cluster (the member was added with MemberAdd).
    Existing,
}

/// How linearizable reads are confirmed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ReadModeSetting {
    /// ReadIndex: a heartbeat round per batch of reads.
    Safe,
    /// Leader lease: no round trip while the lease holds.
    Lease,
}

/// Durability of the Raft log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum FsyncSetting {
    /// fsync every log write before anything counts on it (the default;
    /// required for safety). The fsync runs on a thread beside the Raft
    /// loop, which goes on while the disk flushes; a follower whose syncs
    /// have averaged under a millisecond syncs a write of up to 64 KiB on
    /// its loop when no sync is under way, saving two thread wake-ups.
    Always,
    /// As `always`, but the Raft loop waits for each fsync itself (the
    /// behaviour before the sync moved off the loop; for comparison).
    Inline,
    /// Never fsync (benchmarks only).
    Never,
}

/// Which threads serve a member's client connections.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ClientThreadSetting {
    /// `driver` when the runtime has one worker thread (two cores or
    /// fewer), else `workers` (the default).
    #[default]
    Auto,
    /// The Raft driver's thread: calls with a small, bounded answer (a
    /// put, a lease grant or revoke, a status, and a range, delete or
    /// transaction asking for one key, a count or no previous values; at
    /// most 128 at once) are served there without waking another thread;
    /// every other call runs on the worker threads, which encode its
    /// answer. Beside a current-thread runtime, which has no worker
    /// threads, as `workers`.
    Driver,
    /// The runtime's worker threads, every call.
    Workers,
}

impl ClientThreadSetting {
    /// Whether the client connections run on the driver's thread, beside a
    /// runtime of `workers` worker threads (`None`: a current-thread
    /// runtime, which `auto` leaves them on).
    pub fn on_driver(self, workers: Option<usize>) -> bool {
        match self {
            ClientThreadSetting::Auto => workers == Some(1),
            ClientThreadSetting::Driver => workers.is_some(),
            ClientThreadSetting::Workers => false,
        }
    }
}

/// How auto-compaction reads its retention (etcd's `--auto-compaction-mode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum AutoCompactionMode {
    /// The retention is a duration: keep the history of that long.
    Periodic,
    /// The retention is a count: keep that many revisions.
    Revision,
}

/// The flags (each also settable as `FLOTILLA_<NAME>` and in the file).
/// Every field is optional here; [`NodeConfig::resolve`] applies the file
/// and the defaults.
#[derive(Args, Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct NodeArgs {
    /// YAML file with any of these settings (flags and environment win).
    #[arg(long, env = "FLOTILLA_CONFIG_FILE")]
    #[serde(skip)]
    pub config_file: Option<PathBuf>,
    /// This member's name; must appear in --initial-cluster.
    #[arg(long, env = "FLOTILLA_NAME")]
    pub name: Option<String>,
    /// Data directory (Raft log, snapshots, identity stamp).
    #[arg(long, env = "FLOTILLA_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Initial members, `name=peer-url,...` (etcd's --initial-cluster).
    #[arg(long, env = "FLOTILLA_INITIAL_CLUSTER")]
    pub initial_cluster: Option<String>,
    /// `new` to bootstrap, `existing` to join.
    #[arg(long, value_enum, env = "FLOTILLA_INITIAL_CLUSTER_STATE")]
    pub initial_cluster_state: Option<ClusterState>,
    /// Token that, with the initial members, names the cluster; two clusters
    /// with different tokens never accept each other's data or messages.
    #[arg(long, env = "FLOTILLA_INITIAL_CLUSTER_TOKEN")]
    pub initial_cluster_token: Option<String>,
    /// Address the client gRPC API listens on, e.g. `http://127.0.0.1:2379`.
    #[arg(long, env = "FLOTILLA_LISTEN_CLIENT_URLS")]
    pub listen_client_urls: Option<String>,
    /// Client URL other members and clients should use.
    #[arg(long, env = "FLOTILLA_ADVERTISE_CLIENT_URLS")]
    pub advertise_client_urls: Option<String>,
    /// Address the peer (Raft) gRPC service listens on.
    #[arg(long, env = "FLOTILLA_LISTEN_PEER_URLS")]
    pub listen_peer_urls: Option<String>,
    /// Peer URL other members reach this one at (defaults to its entry in
    /// --initial-cluster).
    #[arg(long, env = "FLOTILLA_INITIAL_ADVERTISE_PEER_URLS")]
    pub initial_advertise_peer_urls: Option<String>,
    /// HTTP address for /livez, /readyz and /metrics.
    #[arg(long, env = "FLOTILLA_LISTEN_METRICS_URLS")]
    pub listen_metrics_urls: Option<String>,
    /// Milliseconds per Raft tick (default 10).
    #[arg(long, env = "FLOTILLA_TICK_MS")]
    pub tick_ms: Option<u32>,
    /// Minimum election timeout, in ticks (default 20; each term draws one
    /// from this to twice this).
    #[arg(long, env = "FLOTILLA_ELECTION_TICKS")]
    pub election_ticks: Option<u32>,
    /// Heartbeat interval, in ticks (default 1).
    #[arg(long, env = "FLOTILLA_HEARTBEAT_TICKS")]
    pub heartbeat_ticks: Option<u32>,
    /// Applied entries between snapshots.
    #[arg(long, env = "FLOTILLA_SNAPSHOT_COUNT")]
    pub snapshot_count: Option<u64>,
    /// `--snapshot-count` entries make a snapshot due only once their bytes
    /// reach this percentage of the last snapshot's size (default 100; 0:
    /// the count alone), so that a large keyspace with small writes is not
    /// written out whole every `--snapshot-count` entries.
    /// `--snapshot-max-log-bytes` of log makes one due whatever this says.
    #[arg(long, env = "FLOTILLA_SNAPSHOT_MIN_LOG_PERCENT")]
    pub snapshot_min_log_percent: Option<u64>,
    /// Bytes of entries applied since the last snapshot that make a
    /// snapshot due whatever the count and percentage say (default 32 MiB,
    /// 1 MiB to 16 GiB): the most log a member keeps between snapshots,
    /// also in memory, and replays at a restart.
    #[arg(long, env = "FLOTILLA_SNAPSHOT_MAX_LOG_BYTES")]
    pub snapshot_max_log_bytes: Option<u64>,
    /// `always` (default), `inline` (the Raft loop waits for each fsync
    /// itself) or `never` (benchmarks only).
    #[arg(long, value_enum, env = "FLOTILLA_FSYNC")]
    pub fsync: Option<FsyncSetting>,
    /// With `--fsync always`: a follower whose syncs have averaged under a
    /// millisecond syncs a small write on its Raft loop when no sync is
    /// under way, saving two thread wake-ups per write (false by default:
    /// a sync held up by the disk then holds the follower's heartbeat
    /// answers for as long; for a disk of the member's own).
    #[arg(long, env = "FLOTILLA_FOLLOWER_SYNC_ON_LOOP")]
    pub follower_sync_on_loop: Option<bool>,
    /// `safe` (ReadIndex, default) or `lease`.
    #[arg(long, value_enum, env = "FLOTILLA_READ_MODE")]
    pub read_mode: Option<ReadModeSetting>,
    /// Largest client request, in bytes.
    #[arg(long, env = "FLOTILLA_MAX_REQUEST_BYTES")]
    pub max_request_bytes: Option<usize>,
    /// `periodic` (the default: the retention is a duration) or `revision`
    /// (the retention is a revision count), as etcd's.
    #[arg(long, value_enum, env = "FLOTILLA_AUTO_COMPACTION_MODE")]
    pub auto_compaction_mode: Option<AutoCompactionMode>,
    /// History auto-compaction keeps: a duration such as `1h` or `30m` in
    /// periodic mode (a bare number is hours, as etcd reads it), a revision
    /// count in revision mode. `0`, the default, turns it off.
    #[arg(long, env = "FLOTILLA_AUTO_COMPACTION_RETENTION")]
    #[serde(default, deserialize_with = "retention_from_file")]
    pub auto_compaction_retention: Option<Retention>,
    /// Peer addresses (`host:port`, comma-separated) asked for the running
    /// cluster by a member that starts on an empty data directory, besides
    /// the peers of --initial-cluster; a name is resolved on every attempt
    /// and every address it resolves to is asked (a headless Service's
    /// name reaches every pod).
    #[arg(long, env = "FLOTILLA_DISCOVERY_PEERS")]
    pub discovery_peers: Option<String>,
    /// How long one discovery request may take, in milliseconds.
    #[arg(long, env = "FLOTILLA_DISCOVERY_TIMEOUT_MS")]
    pub discovery_timeout_ms: Option<u64>,
    /// How long a member joining a running cluster waits for one that
    /// lists it (added with MemberAdd) before it gives up, in milliseconds.
    #[arg(long, env = "FLOTILLA_JOIN_TIMEOUT_MS")]
    pub join_timeout_ms: Option<u64>,
    /// Space quota: writes that would take the store's size in use past it
    /// fail and raise the NOSPACE alarm (etcd's flag). 0, the default,
    /// means 2 GiB; a negative value turns the quota off.
    #[arg(long, env = "FLOTILLA_QUOTA_BACKEND_BYTES", allow_hyphen_values = true)]
    pub quota_backend_bytes: Option<i64>,
    /// Most compares, and most operations per branch, of one transaction
    /// (etcd's flag; 128 by default).
    #[arg(long, env = "FLOTILLA_MAX_TXN_OPS")]
    pub max_txn_ops: Option<usize>,
    /// Most concurrent gRPC streams per client connection (etcd's flag;
    /// unlimited by default, as etcd: a watch or keepalive is a stream).
    #[arg(long, env = "FLOTILLA_MAX_CONCURRENT_STREAMS")]
    pub max_concurrent_streams: Option<u32>,
    /// Most open client connections; one more is closed as soon as it is
    /// accepted (4096 by default).
    #[arg(long, env = "FLOTILLA_MAX_CLIENT_CONNECTIONS")]
    pub max_client_connections: Option<usize>,
    /// Which threads serve client connections: `driver` (the Raft loop's
    /// thread serves calls with a small, bounded answer itself — puts,
    /// lease grants and revokes, status, one-key ranges — and hands every
    /// other call to the workers), `workers`, or `auto` (default: `driver`
    /// when the process has one worker thread, i.e. two cores or fewer).
    #[arg(long, value_enum, env = "FLOTILLA_CLIENT_THREAD")]
    pub client_thread: Option<ClientThreadSetting>,
    /// Raft log entries kept before each snapshot (etcd's default, 5000),
    /// so that a member down for a few seconds catches up from the log
    /// instead of receiving the whole snapshot.
    #[arg(long, env = "FLOTILLA_SNAPSHOT_CATCHUP_ENTRIES")]
    pub snapshot_catchup_entries: Option<u64>,
    /// Milliseconds a stop (SIGTERM) may take in all, the leader's hand-off
    /// of leadership included (at most half of it); 5000 by default.
    #[arg(long, env = "FLOTILLA_SHUTDOWN_TIMEOUT_MS")]
    pub shutdown_timeout_ms: Option<u64>,
    /// Broker: run the broker on this node (true by default; every node of
    /// a cluster normally does).
    #[arg(long, env = "FLOTILLA_BROKER_ENABLED")]
    pub broker_enabled: Option<bool>,
    /// Broker: replication factor of topics created without one (1 by
    /// default).
    #[arg(long, env = "FLOTILLA_DEFAULT_REPLICATION_FACTOR")]
    pub default_replication_factor: Option<u32>,
    /// Broker: min.insync.replicas of topics created without one (1 by
    /// default; capped at the topic's replication factor).
    #[arg(long, env = "FLOTILLA_MIN_INSYNC_REPLICAS")]
    pub min_insync_replicas: Option<u32>,
    /// Broker: TTL in milliseconds of the lease behind the broker's
    /// registration and its partition leaderships (1000 by default: a
    /// killed leader is replaced in about 1.2 s; the KV's leases count
    /// whole seconds, so it is rounded up there, and a leader stops writing
    /// after three quarters of this value without a confirmed renewal, so
    /// raise it where a process may stall longer than that).
    #[arg(long, env = "FLOTILLA_PARTITION_LEASE_TTL_MS")]
    pub partition_lease_ttl_ms: Option<u64>,
    /// Broker: largest produce batch in bytes (encoded records; 4 MiB by
    /// default); a larger one is refused whole.
    #[arg(long, env = "FLOTILLA_BROKER_MAX_BATCH_BYTES")]
    pub broker_max_batch_bytes: Option<u64>,
    /// Broker: an in-sync replica that has not caught up with its leader for
    /// this many milliseconds leaves the ISR (3000 by default).
    #[arg(long, env = "FLOTILLA_REPLICA_LAG_TIME_MAX_MS")]
    pub replica_lag_time_max_ms: Option<u64>,
    /// Kafka: `host:port` the Kafka wire-protocol listener binds (e.g.
    /// `0.0.0.0:9092`); empty or unset: no Kafka listener.
    #[arg(long, env = "FLOTILLA_KAFKA_LISTEN_ADDR")]
    pub kafka_listen_addr: Option<String>,
    /// Kafka: `host:port` Kafka clients are told to reach this broker at
    /// (by default the listen address, with the host of the advertised
    /// client URL when it listens on 0.0.0.0).
    #[arg(long, env = "FLOTILLA_KAFKA_ADVERTISE_ADDR")]
    pub kafka_advertise_addr: Option<String>,
    /// Kafka: largest request frame in bytes (100 MiB by default); a larger
    /// one closes the connection.
    #[arg(long, env = "FLOTILLA_KAFKA_MAX_FRAME_BYTES")]
    pub kafka_max_frame_bytes: Option<u32>,
    /// Broker: how often every partition replica applies its topic's
    /// retention (by time and by size), in milliseconds (5000 by default).
    #[arg(long, env = "FLOTILLA_RETENTION_CHECK_INTERVAL_MS")]
    pub retention_check_interval_ms: Option<u64>,
}

/// One member of the initial cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InitialMember {
    /// Its name.
    pub name: String,
    /// Its member id (derived from the token and the name).
    pub id: u64,
    /// Its peer URL.
    pub peer_url: String,
}

/// A validated configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeConfig {
    /// This member's name.
    pub name: String,
    /// This member's id as a founder: from the cluster token and its name.
    /// A member that joins a running cluster is given its id by the
    /// cluster, and a member that restarts reads it from its data
    /// directory ([`crate::join`]); for those this is not used.
    pub member_id: u64,
    /// The id of the cluster the founders bootstrap: from the token and
    /// the founders. A joining or restarting member learns the real one as
    /// its member id.
    pub cluster_id: u64,
    /// Data directory.
    pub data_dir: PathBuf,
    /// Initial members (sorted by name).
    pub initial_cluster: Vec<InitialMember>,
    /// New or existing.
    pub cluster_state: ClusterState,
    /// Client API listen address (`host:port`).
    pub client_listen: String,
    /// Advertised client URL.
    pub client_advertise: String,
    /// Peer service listen address (`host:port`).
    pub peer_listen: String,
    /// Advertised peer URL.
    pub peer_advertise: String,
    /// HTTP listen address (`host:port`).
    pub metrics_listen: String,
    /// Tick length.
    pub tick: Duration,
    /// Election timeout in ticks.
    pub election_ticks: u32,
    /// Heartbeat interval in ticks.
    pub heartbeat_ticks: u32,
    /// Applied entries between snapshots.
    pub snapshot_count: u64,
    /// ...once they are this percentage of the last snapshot's size.
    pub snapshot_min_log_percent: u64,
    /// ...or, whatever the two above say, once they are this many bytes.
    pub snapshot_max_log_bytes: u64,
    /// Raft log durability.
    pub fsync: FsyncSetting,
    /// Whether a follower on a fast disk may sync small writes on its Raft
    /// loop (with `fsync` `Always`).
    pub follower_sync_on_loop: bool,
    /// Read confirmation.
    pub read_mode: ReadModeSetting,
    /// Largest client request.
    pub max_request_bytes: usize,
    /// What auto-compaction keeps.
    pub auto_compaction: AutoCompaction,
    /// Extra peer addresses (`host:port`) asked when joining.
    pub discovery_peers: Vec<String>,
    /// How long one discovery request may take.
    pub discovery_timeout: Duration,
    /// How long a joining member waits for a cluster that lists it.
    pub join_timeout: Duration,
    /// The space quota in bytes of the store's size in use, or `None`
    /// when off.
    pub quota_backend_bytes: Option<u64>,
    /// Most compares, and operations per branch, of one transaction.
    pub max_txn_ops: usize,
    /// Most concurrent streams per client connection.
    pub max_concurrent_streams: u32,
    /// Most open client connections.
    pub max_client_connections: usize,
    /// Which threads serve client connections.
    pub client_thread: ClientThreadSetting,
    /// Raft log entries kept before each snapshot, for catching up.
    pub snapshot_catchup_entries: u64,
    /// How long a stop may take in all (the leader's hand-off of leadership
    /// gets at most half).
    pub shutdown_timeout: Duration,
    /// The broker's settings.
    pub broker: BrokerSettings,
}

/// The broker's node-level settings (its flags).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrokerSettings {
    /// Whether the node runs the broker.
    pub enabled: bool,
    /// Replication factor of topics created without one.
    pub default_replication_factor: u32,
    /// min.insync.replicas of topics created without one.
    pub min_insync_replicas: u32,
    /// TTL of the broker's lease.
    pub partition_lease_ttl: Duration,
    /// Largest produce batch.
    pub max_batch_bytes: u64,
    /// ISR lag bound.
    pub replica_lag_time_max: Duration,
    /// Where the Kafka listener binds (`host:port`); `None`: no listener.
    pub kafka_listen: Option<String>,
    /// What Kafka clients are told (`host:port`); `None`: derived from the
    /// listen address when the node starts.
    pub kafka_advertise: Option<String>,
    /// Largest Kafka request frame.
    pub kafka_frame_bytes_max: u32,
    /// How often retention runs on each replica.
    pub retention_check_interval: Duration,
}

impl Default for BrokerSettings {
    fn default() -> Self {
        BrokerSettings {
            enabled: true,
            default_replication_factor: 1,
            min_insync_replicas: 1,
            partition_lease_ttl: Duration::from_millis(1000),
            max_batch_bytes: 4 << 20,
            replica_lag_time_max: Duration::from_millis(3000),
            kafka_listen: None,
            kafka_advertise: None,
            kafka_frame_bytes_max: 100 << 20,
            retention_check_interval: Duration::from_millis(5000),
        }
    }
}

impl BrokerSettings {
    fn resolve(args: &NodeArgs) -> Result<BrokerSettings, ConfigError> {
        let d = BrokerSettings::default();
        let rf = args
            .default_replication_factor
            .unwrap_or(d.default_replication_factor);
        if !(1..=16).contains(&rf) {
            return Err(invalid(
                "default-replication-factor",
                format!("{rf} is outside 1..=16"),
            ));
        }
        let min = args.min_insync_replicas.unwrap_or(d.min_insync_replicas);
        if !(1..=16).contains(&min) {
            return Err(invalid(
                "min-insync-replicas",
                format!("{min} is outside 1..=16"),
            ));
        }
        let ttl = args.partition_lease_ttl_ms.unwrap_or(1000);
        if !(500..=600_000).contains(&ttl) {
            return Err(invalid(
                "partition-lease-ttl-ms",
                format!("{ttl} is outside 500..=600000"),
            ));
        }
        let batch = args.broker_max_batch_bytes.unwrap_or(d.max_batch_bytes);
        if !(1024..=256 << 20).contains(&batch) {
            return Err(invalid(
                "broker-max-batch-bytes",
                format!("{batch} is outside 1024..={}", 256u64 << 20),
            ));
        }
        let lag = args.replica_lag_time_max_ms.unwrap_or(3000);
        if !(100..=600_000).contains(&lag) {
            return Err(invalid(
                "replica-lag-time-max-ms",
                format!("{lag} is outside 100..=600000"),
            ));
        }
        let kafka_listen = nonempty(&args.kafka_listen_addr)
            .map(|a| listen_addr("kafka-listen-addr", a))
            .transpose()?;
        let kafka_advertise = nonempty(&args.kafka_advertise_addr)
            .map(|a| listen_addr("kafka-advertise-addr", a))
            .transpose()?;
        if kafka_advertise.is_some() && kafka_listen.is_none() {
            return Err(invalid(
                "kafka-advertise-addr",
                "is set but --kafka-listen-addr is not",
            ));
        }
        let frame = args
            .kafka_max_frame_bytes
            .unwrap_or(d.kafka_frame_bytes_max);
        if !(1 << 16..=1 << 30).contains(&frame) {
            return Err(invalid(
                "kafka-max-frame-bytes",
                format!("{frame} is outside {}..={}", 1 << 16, 1 << 30),
            ));
        }
        let retention = args.retention_check_interval_ms.unwrap_or(5000);
        if !(10..=3_600_000).contains(&retention) {
            return Err(invalid(
                "retention-check-interval-ms",
                format!("{retention} is outside 10..=3600000"),
            ));
        }
        Ok(BrokerSettings {
            kafka_listen,
            kafka_advertise,
            kafka_frame_bytes_max: frame,
            enabled: args.broker_enabled.unwrap_or(true),
            default_replication_factor: rf,
            min_insync_replicas: min,
            partition_lease_ttl: Duration::from_millis(ttl),
            max_batch_bytes: batch,
            replica_lag_time_max: Duration::from_millis(lag),
            retention_check_interval: Duration::from_millis(retention),
        })
    }
}

/// The trimmed value of an optional flag, `None` when unset or empty.
fn nonempty(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

/// The least `--snapshot-max-log-bytes`: below it a busy member would
/// snapshot its whole state every few hundred milliseconds.
const SNAPSHOT_MAX_LOG_BYTES_MIN: u64 = 1 << 20;

/// The most `--snapshot-max-log-bytes`: storage mirrors the log since the
/// last snapshot in memory, and a restart replays it.
const SNAPSHOT_MAX_LOG_BYTES_MAX: u64 = 16 << 30;

/// etcd's default space quota (`DefaultQuotaBytes`), used when
/// `--quota-backend-bytes` is 0 or unset.
pub const DEFAULT_QUOTA_BYTES: u64 = 2 * 1024 * 1024 * 1024;

/// FNV-1a, for ids that must be the same on every member and every run.
fn stable_hash(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in part.as_bytes().iter().chain(std::iter::once(&0u8)) {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h.max(1)
}

/// The cluster token used when `--initial-cluster-token` is not given.
pub const DEFAULT_CLUSTER_TOKEN: &str = "flotilla";

/// The id of a member that bootstraps a cluster: derived from the cluster
/// token and its name, so every member computes the same ids.
pub fn founding_member_id(token: &str, name: &str) -> u64 {
    stable_hash(&[token, name])
}

/// The id of the cluster bootstrapped by `initial_cluster` (in any order)
/// with `token`. A member joining later computes the cluster id the same
/// way, so it must be given the cluster's original `--initial-cluster` and
/// token.
pub fn cluster_id_for(token: &str, initial_cluster: &[InitialMember]) -> u64 {
    let mut members: Vec<&InitialMember> = initial_cluster.iter().collect();
    members.sort_by(|a, b| a.name.cmp(&b.name));
    let mut key: Vec<&str> = vec![token];
    for m in members {
        key.push(&m.name);
        key.push(&m.peer_url);
    }
    stable_hash(&key)
}

/// `http://host:port` (or `host:port`) → `host:port`.
fn listen_addr(setting: &'static str, url: &str) -> Result<String, ConfigError> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .unwrap_or(url);
    let rest = rest.trim_end_matches('/');
    let (host, port) = rest
        .rsplit_once(':')
        .ok_or_else(|| invalid(setting, format!("{url:?} has no port")))?;
    if host.is_empty() {
        return Err(invalid(setting, format!("{url:?} has no host")));
    }
    port.parse::<u16>()
        .map_err(|_| invalid(setting, format!("{url:?} has a bad port")))?;
    if rest.contains('/') {
        return Err(invalid(setting, format!("{url:?} must not have a path")));
    }
    Ok(rest.to_string())
}

fn with_scheme(addr: &str) -> String {
    if addr.contains("://") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    }
}

/// Parses `name=url,name=url`. With `unnamed_allowed` (a member joining a
/// running cluster) an entry may have an empty name, as `etcdctl member
/// add` prints for members that never started: it is only a peer to ask.
fn parse_initial_cluster(
    text: &str,
    token: &str,
    unnamed_allowed: bool,
) -> Result<Vec<InitialMember>, ConfigError> {
    let mut members = Vec::new();
    let mut names = BTreeSet::new();
    let mut urls = BTreeSet::new();
    for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (name, url) = item
            .split_once('=')
            .ok_or_else(|| invalid("initial-cluster", format!("{item:?} is not name=peer-url")))?;
        let (name, url) = (name.trim(), url.trim());
        if name.is_empty() && !unnamed_allowed {
            return Err(invalid(
                "initial-cluster",
                format!("{item:?} has an empty name"),
            ));
        }
        listen_addr("initial-cluster", url)?;
        if !name.is_empty() && !names.insert(name.to_string()) {
            return Err(invalid(
                "initial-cluster",
                format!("member {name:?} appears twice"),
            ));
        }
        if !urls.insert(url.to_string()) {
            return Err(invalid(
                "initial-cluster",
                format!("peer URL {url} appears twice"),
            ));
        }
        members.push(InitialMember {
            name: name.to_string(),
            id: founding_member_id(token, name),
            peer_url: with_scheme(url),
        });
    }
    if members.is_empty() {
        return Err(ConfigError::Missing("initial-cluster"));
    }
    members.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(members)
}

impl NodeArgs {
    /// Reads the YAML file named by `config_file`, if any.
    fn load_file(path: &Path) -> Result<NodeArgs, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        serde_yaml::from_str(&text).map_err(|e| ConfigError::File {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
    }

    /// Fills every unset field from `other`.
    fn or(self, other: NodeArgs) -> NodeArgs {
        macro_rules! pick {
            ($($f:ident),*) => { NodeArgs { config_file: self.config_file, $($f: self.$f.or(other.$f)),* } };
        }
        pick!(
            name,
            data_dir,
            initial_cluster,
            initial_cluster_state,
            initial_cluster_token,
            listen_client_urls,
            advertise_client_urls,
            listen_peer_urls,
            initial_advertise_peer_urls,
            listen_metrics_urls,
            tick_ms,
            election_ticks,
            heartbeat_ticks,
            snapshot_count,
            snapshot_min_log_percent,
            snapshot_max_log_bytes,
            fsync,
            follower_sync_on_loop,
            read_mode,
            max_request_bytes,
            auto_compaction_mode,
            auto_compaction_retention,
            discovery_peers,
            discovery_timeout_ms,
            join_timeout_ms,
            quota_backend_bytes,
            max_txn_ops,
            max_concurrent_streams,
            max_client_connections,
            client_thread,
            snapshot_catchup_entries,
            shutdown_timeout_ms,
            broker_enabled,
            default_replication_factor,
            min_insync_replicas,
            partition_lease_ttl_ms,
            broker_max_batch_bytes,
            replica_lag_time_max_ms,
            kafka_listen_addr,
            kafka_advertise_addr,
            kafka_max_frame_bytes,
            retention_check_interval_ms
        )
    }
}

impl NodeConfig {
    /// Merges flags/environment (already in `args`), the file and the
    /// defaults, and validates the result.
    pub fn resolve(args: NodeArgs) -> Result<NodeConfig, ConfigError> {
        let args = match args.config_file.clone() {
            Some(path) => args.or(NodeArgs::load_file(&path)?),
            None => args,
        };
        let broker = BrokerSettings::resolve(&args)?;
        let name = args.name.ok_or(ConfigError::Missing("name"))?;
        let token = args
            .initial_cluster_token
            .unwrap_or_else(|| DEFAULT_CLUSTER_TOKEN.to_string());
        let cluster_state = args.initial_cluster_state.unwrap_or(ClusterState::New);
        let initial_cluster = parse_initial_cluster(
            args.initial_cluster
                .as_deref()
                .ok_or(ConfigError::Missing("initial-cluster"))?,
            &token,
            cluster_state == ClusterState::Existing,
        )?;
        // A member not named in --initial-cluster does not bootstrap: it
        // joins the running cluster once MemberAdd lists it, whatever the
        // state says (so every pod of a StatefulSet can share one template).
        let me = initial_cluster.iter().find(|m| m.name == name);
        let member_id = founding_member_id(&token, &name);
        let cluster_id = cluster_id_for(&token, &initial_cluster);
        let peer_advertise = match (&args.initial_advertise_peer_urls, me) {
            (Some(url), _) => with_scheme(url),
            (None, Some(m)) => m.peer_url.clone(),
            (None, None) => return Err(ConfigError::Missing("initial-advertise-peer-urls")),
        };
        if !crate::kv::valid_peer_url(&peer_advertise) {
            return Err(invalid(
                "initial-advertise-peer-urls",
                format!("{peer_advertise:?} is not http(s)://host:port"),
            ));
        }
        let discovery_peers = args
            .discovery_peers
            .as_deref()
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|p| listen_addr("discovery-peers", p))
            .collect::<Result<Vec<String>, ConfigError>>()?;
        let discovery_timeout_ms = args.discovery_timeout_ms.unwrap_or(1000);
        if !(10..=60_000).contains(&discovery_timeout_ms) {
            return Err(invalid(
                "discovery-timeout-ms",
                format!("{discovery_timeout_ms} is outside 10..=60000"),
            ));
        }
        let join_timeout_ms = args.join_timeout_ms.unwrap_or(60_000);
        if join_timeout_ms == 0 {
            return Err(invalid("join-timeout-ms", "must be at least 1"));
        }
        let peer_listen = listen_addr(
            "listen-peer-urls",
            args.listen_peer_urls.as_deref().unwrap_or(&peer_advertise),
        )?;
        let client_listen = listen_addr(
            "listen-client-urls",
            args.listen_client_urls
                .as_deref()
                .unwrap_or("127.0.0.1:2379"),
        )?;
        let client_advertise = with_scheme(
            args.advertise_client_urls
                .as_deref()
                .unwrap_or(&client_listen),
        );
        let metrics_listen = listen_addr(
            "listen-metrics-urls",
            args.listen_metrics_urls
                .as_deref()
                .unwrap_or("127.0.0.1:2381"),
        )?;
        let tick_ms = args.tick_ms.unwrap_or(10);
        if tick_ms == 0 || tick_ms > 10_000 {
            return Err(invalid(
                "tick-ms",
                format!("{tick_ms} is outside 1..=10000"),
            ));
        }
        // 10 ms ticks and an election timeout of 20 to 40 ticks (randomized
        // per term): a leader that stalls for up to 200 ms keeps its term,
        // and a killed one is replaced in 250-440 ms (`flotilla bench
        // failover --signal kill`); see the README's Timing section.
        let election_ticks = args.election_ticks.unwrap_or(20);
        let heartbeat_ticks = args.heartbeat_ticks.unwrap_or(1);
        if heartbeat_ticks == 0 || heartbeat_ticks >= election_ticks {
            return Err(invalid(
                "heartbeat-ticks",
                format!(
                    "{heartbeat_ticks} must be at least 1 and below --election-ticks ({election_ticks})"
                ),
            ));
        }
        let snapshot_count = args.snapshot_count.unwrap_or(100_000);
        if snapshot_count == 0 {
            return Err(invalid("snapshot-count", "must be at least 1"));
        }
        let snapshot_min_log_percent = args.snapshot_min_log_percent.unwrap_or(100);
        if snapshot_min_log_percent > 10_000 {
            return Err(invalid(
                "snapshot-min-log-percent",
                format!("{snapshot_min_log_percent} is above 10000"),
            ));
        }
        let snapshot_max_log_bytes = args
            .snapshot_max_log_bytes
            .unwrap_or(flotilla_raft::Config::SNAPSHOT_AFTER_BYTES_DEFAULT);
        if !(SNAPSHOT_MAX_LOG_BYTES_MIN..=SNAPSHOT_MAX_LOG_BYTES_MAX)
            .contains(&snapshot_max_log_bytes)
        {
            return Err(invalid(
                "snapshot-max-log-bytes",
                format!("{snapshot_max_log_bytes} is not between 1 MiB and 16 GiB"),
            ));
        }
        let max_request_bytes = args.max_request_bytes.unwrap_or(1536 * 1024);
        if !(1024..=crate::kv::REQUEST_BYTES_LIMIT).contains(&max_request_bytes) {
            return Err(invalid(
                "max-request-bytes",
                "must be between 1 KiB and 64 MiB",
            ));
        }
        let quota_backend_bytes = match args.quota_backend_bytes.unwrap_or(0) {
            q if q < 0 => None,
            0 => Some(DEFAULT_QUOTA_BYTES),
            q => Some(q as u64),
        };
        let max_txn_ops = args.max_txn_ops.unwrap_or(128);
        if !(1..=crate::kv::TXN_OPS_LIMIT).contains(&max_txn_ops) {
            return Err(invalid(
                "max-txn-ops",
                format!("{max_txn_ops} is outside 1..={}", crate::kv::TXN_OPS_LIMIT),
            ));
        }
        let max_concurrent_streams = args.max_concurrent_streams.unwrap_or(u32::MAX);
        if max_concurrent_streams == 0 {
            return Err(invalid("max-concurrent-streams", "must be at least 1"));
        }
        let max_client_connections = args.max_client_connections.unwrap_or(4096);
        if max_client_connections == 0 {
            return Err(invalid("max-client-connections", "must be at least 1"));
        }
        let auto_compaction =
            auto_compaction(args.auto_compaction_mode, args.auto_compaction_retention)?;
        let snapshot_catchup_entries = args.snapshot_catchup_entries.unwrap_or(5_000);
        if snapshot_catchup_entries > 10_000_000 {
            return Err(invalid(
                "snapshot-catchup-entries",
                format!("{snapshot_catchup_entries} is above 10000000"),
            ));
        }
        let shutdown_timeout_ms = args.shutdown_timeout_ms.unwrap_or(5_000);
        if !(100..=600_000).contains(&shutdown_timeout_ms) {
            return Err(invalid(
                "shutdown-timeout-ms",
                format!("{shutdown_timeout_ms} is outside 100..=600000"),
            ));
        }
        let data_dir = args
            .data_dir
            .unwrap_or_else(|| PathBuf::from(format!("{name}.flotilla")));
        let config = NodeConfig {
            name,
            member_id,
            cluster_id,
            data_dir,
            initial_cluster,
            cluster_state,
            client_listen,
            client_advertise,
            peer_listen,
            peer_advertise,
            metrics_listen,
            tick: Duration::from_millis(tick_ms.into()),
            election_ticks,
            heartbeat_ticks,
            snapshot_count,
            snapshot_min_log_percent,
            snapshot_max_log_bytes,
            fsync: args.fsync.unwrap_or(FsyncSetting::Always),
            follower_sync_on_loop: args.follower_sync_on_loop.unwrap_or(false),
            read_mode: args.read_mode.unwrap_or(ReadModeSetting::Safe),
            max_request_bytes,
            auto_compaction,
            discovery_peers,
            discovery_timeout: Duration::from_millis(discovery_timeout_ms),
            join_timeout: Duration::from_millis(join_timeout_ms),
            quota_backend_bytes,
            max_txn_ops,
            max_concurrent_streams,
            max_client_connections,
            client_thread: args.client_thread.unwrap_or_default(),
            snapshot_catchup_entries,
            shutdown_timeout: Duration::from_millis(shutdown_timeout_ms),
            broker,
        };
        let listens = [
            &config.client_listen,
            &config.peer_listen,
            &config.metrics_listen,
        ];
        let distinct: BTreeSet<&&String> = listens.iter().collect();
        if distinct.len() != listens.len() {
            return Err(invalid(
                "listen-*-urls",
                format!("client, peer and metrics addresses must differ: {listens:?}"),
            ));
        }
        Ok(config)
    }
}

impl NodeConfig {
    /// The Raft configuration a new cluster starts with: every member of
    /// `--initial-cluster` a voter. A bootstrapping member's storage and a
    /// restored backup's snapshot both begin from it.
    pub fn founding_conf_state(&self) -> flotilla_raft::ConfState {
        flotilla_raft::ConfState {
            voters: self
                .initial_cluster
                .iter()
                .map(|m| flotilla_raft::NodeId(m.id))
                .collect(),
            learners: Vec::new(),
        }
    }

    /// Logs the configuration in force, once, as one structured line: what
    /// an operator checks first when a member behaves unexpectedly.
    pub fn log_effective(&self) {
        let initial_cluster: Vec<String> = self
            .initial_cluster
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url))
            .collect();
        tracing::info!(
            name = %self.name,
            member_id = %format!("{:x}", self.member_id),
            cluster_id = %format!("{:x}", self.cluster_id),
            data_dir = %self.data_dir.display(),
            initial_cluster = %initial_cluster.join(","),
            cluster_state = ?self.cluster_state,
            listen_client = %self.client_listen,
            advertise_client = %self.client_advertise,
            listen_peer = %self.peer_listen,
            advertise_peer = %self.peer_advertise,
            listen_metrics = %self.metrics_listen,
            tick_ms = self.tick.as_millis() as u64,
            election_ticks = self.election_ticks,
            heartbeat_ticks = self.heartbeat_ticks,
            read_mode = ?self.read_mode,
            fsync = ?self.fsync,
            follower_sync_on_loop = self.follower_sync_on_loop,
            client_thread = ?self.client_thread,
            snapshot_count = self.snapshot_count,
            snapshot_min_log_percent = self.snapshot_min_log_percent,
            snapshot_max_log_bytes = self.snapshot_max_log_bytes,
            snapshot_catchup_entries = self.snapshot_catchup_entries,
            max_request_bytes = self.max_request_bytes,
            auto_compaction = ?self.auto_compaction,
            shutdown_timeout_ms = self.shutdown_timeout.as_millis() as u64,
            "effective configuration"
        );
    }
}

#[cfg(test)]
mod tests;
