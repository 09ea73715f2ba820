//! The client API: etcd v3's KV, Maintenance and Cluster services over
//! gRPC (DESIGN §5), on top of the driver's [`RaftHandle`](crate::driver::RaftHandle).
//!
//! Any member serves any request. Reads go through the driver (ReadIndex,
//! or the local state when the request is `serializable`), which answers a
//! single-key read itself and hands anything longer a frozen view of the
//! store to run on in the [`ReadPool`]. Every write —
//! KV, Lease and Cluster alike — takes one path, [`Writes::submit`]: checked,
//! then served by the leader. A follower has the leader append a plain
//! write through the Raft peer stream and answers once it applied it;
//! anything else it forwards once, in batches over one stream, to the
//! leader's advertised client URL found in the replicated member table
//! (`node/ARCHITECTURE.md` tells the whole life of a write). Each member publishes its own entry in that table
//! ([`publish_self`]) as soon as it knows a leader, like etcd's `publish`.
//!
//! | file | what |
//! |---|---|
//! | `context.rs` | [`ApiContext`]: what every service shares |
//! | `connections.rs` | [`limit_connections`]: the bound on open client connections |
//! | `admission.rs` | [`Admission`]: the checks every client write passes before it is proposed |
//! | `errors.rs` | the one mapping of driver and store errors to `tonic::Status` |
//! | `header.rs` | [`HeaderSource`]: response headers filled from this member |
//! | `forward.rs` | [`Forwarder`]: the bounded cache of channels to other members |
//! | `kv.rs` | [`KvService`] |
//! | `maintenance.rs` | [`MaintenanceService`] |
//! | `placement.rs` | [`Placement`]: the calls served on the driver's thread, the rest on the workers |
//! | `cluster.rs` | [`ClusterService`] |
//! | `publish.rs` | [`publish_self`] |
//! | `read_pool.rs` | [`ReadPool`]: the bounded threads that reads run on, off the driver |
//! | `write.rs` | [`Writes`]: the one path of every write — check, then serve here or forward |
//! | `write_forward.rs` | [`WriteForwarder`] and [`ForwardService`]: a follower's writes, batched to the leader |
//!
//! # Exactly-once metadata
//!
//! A write carrying `flotilla-client-id` and `flotilla-seq` (decimal `u64`s)
//! is applied at most once per (client, seq); without them it has etcd's
//! semantics. A malformed value, or one of the two without the other, is
//! refused with `INVALID_ARGUMENT`. Forwarding keeps both.

mod admission;
mod cluster;
mod connections;
mod context;
mod errors;
mod forward;
mod gate;
mod header;
mod kv;
mod maintenance;
mod placement;
mod publish;
mod read_pool;
mod write;
mod write_forward;

pub use admission::{Admission, AdmissionConfig, Refusal, space_cost};
pub use cluster::ClusterService;
pub use connections::{ACCEPT_BACKOFF, Limited, limit_connections};
pub use context::ApiContext;
pub use errors::{
    LEADER_ENDPOINT_METADATA, LEADER_ID_METADATA, LeaderHint, driver_status, kv_status,
    request_too_large,
};
pub use forward::Forwarder;
pub use gate::FeatureGate;
pub use header::HeaderSource;
pub use kv::{
    CLIENT_ID_METADATA, FIRST_UNANSWERED_METADATA, KvService, SEQ_METADATA, session_command,
    session_ids,
};
pub use maintenance::{BACKUP_THREAD, MaintenanceService, SnapshotStream, VERSION, alarm_text};
pub use placement::{
    AbortOnDrop, FRAMES_IN_FLIGHT, INSPECT_BYTES_MAX, ON_DRIVER_CALLS_MAX, ON_DRIVER_THREAD,
    Placement, PlacementCounts, PlacementLayer, TXN_VALUES_MAX,
};
pub use publish::publish_self;
pub use read_pool::{READS_OFF_DRIVER_MAX, ReadPool, ReadTurn};
pub use write::{COMMAND_OVERHEAD_BYTES, Writes};
pub use write::{peer_leader_takes, peer_proposal_filter};
pub use write_forward::{ForwardService, WriteForwardConfig, WriteForwarder};
