//! Flotilla's gRPC protocol: the `.proto` files in `proto/`, the Rust code
//! that `build.rs` generates from them (prost messages, tonic clients and
//! servers), and conversions between the Raft peer messages and the Raft
//! core's own types.
//!
//! # Layout
//!
//! | Module | Proto file | What it is for |
//! |---|---|---|
//! | [`mvccpb`] | `proto/etcd/api/mvccpb/kv.proto` | etcd's `KeyValue` and watch `Event` |
//! | [`etcdserverpb`] | `proto/etcd/api/etcdserverpb/rpc.proto` | the etcd v3 services Flotilla serves to clients |
//! | [`raft`] | `proto/flotilla/raft.proto` | the `RaftPeer` service between nodes |
//! | [`forward`] | `proto/flotilla/forward.proto` | the `Forward` service: a follower's writes, batched to the leader |
//! | [`broker`] | `proto/flotilla/broker.proto` | the broker: `BrokerAdmin` (topics), `Broker` (produce, fetch, offsets, replication), `Groups` (consumer groups) |
//! | [`convert`] | — | [`flotilla_raft::Message`] ⇄ [`raft::RaftMessage`], with [`DecodeError`] |
//!
//! # etcd compatibility
//!
//! [`etcdserverpb`] and [`mvccpb`] use etcd's package, service, method,
//! message, enum and field names and etcd's field numbers, taken from
//! etcd-io/etcd `api/etcdserverpb/rpc.proto` at main-branch commit
//! `022b9b22cf9b8563a9f4f384bb35c30f02aca657` (it has every field of etcd
//! 3.6, the newest being `StatusResponse.storageVersion`, `dbSizeQuota` and
//! `downgradeInfo`) and `api/mvccpb/kv.proto` at commit
//! `20962bc85b441a8daa36c5abe1a1328cfa5dd0e1` (unchanged since etcd 3.0). So
//! etcdctl, the `etcd-client` crate and any other etcd v3 client speak to a
//! Flotilla node unchanged. Only the annotations (gogoproto, grpc-gateway,
//! versionpb) are dropped; they do not change the wire format. The test
//! `tests/etcd_wire.rs` pins the exact bytes of a few messages.
//!
//! Served, with every field of every message they use:
//! - `KV`: Range, Put, DeleteRange, Txn, Compact;
//! - `Watch`: Watch (bidirectional stream);
//! - `Lease`: LeaseGrant, LeaseRevoke, LeaseKeepAlive (bidirectional stream),
//!   LeaseTimeToLive, LeaseLeases;
//! - `Cluster`: MemberAdd, MemberRemove, MemberUpdate, MemberList,
//!   MemberPromote;
//! - `Maintenance`: Status, MoveLeader, Alarm, Defragment, Snapshot (server
//!   stream).
//!
//! Left out: the Auth service and Maintenance's Hash, HashKV and Downgrade.
//! A client calling one gets `UNIMPLEMENTED`, which is also what etcd
//! answers for a method it does not know.
//!
//! Prost turns etcd's camel-case field names into snake case: `TTL` becomes
//! `ttl`, `ID` `id`, `isLearner` `is_learner`, and `peerURLs` `peer_ur_ls`
//! (the same names the `etcd-client` crate has).
//!
//! # Byte fields
//!
//! `bytes` fields of the etcd messages are `Vec<u8>`; those of the Raft peer
//! messages are [`bytes::Bytes`], the type `flotilla-raft` uses, so that the
//! conversions move entry data and snapshot chunks rather than copy them.
//!
//! # Generated code and lints
//!
//! Every service, method, message, field and enum value in the `.proto`
//! files carries a comment, which prost and tonic copy into the generated
//! code, so the generated modules need no `allow`: `missing_docs` (on for
//! this crate), clippy and rustdoc all pass on them as they are. Comment any
//! element you add to a `.proto` file, or the build fails under
//! `-D warnings`.

#![warn(missing_docs)]

pub mod convert;

pub use convert::DecodeError;

/// etcd's MVCC types (`package mvccpb`): `KeyValue` and the watch `Event`.
pub mod mvccpb {
    tonic::include_proto!("mvccpb");
}

/// The etcd v3 API subset Flotilla serves (`package etcdserverpb`): messages,
/// and a client and a server module per service (`kv_client`, `kv_server`,
/// `watch_client`, ...).
pub mod etcdserverpb {
    tonic::include_proto!("etcdserverpb");
}

/// The Raft peer protocol (`package flotilla.raft.v1`): `RaftMessage` and
/// the `RaftPeer` service (`raft_peer_client`, `raft_peer_server`).
pub mod raft {
    tonic::include_proto!("flotilla.raft.v1");
}

/// Write forwarding between members (`package flotilla.forward.v1`): the
/// `Forward` service (`forward_client`, `forward_server`).
pub mod forward {
    tonic::include_proto!("flotilla.forward.v1");
}

/// The broker (`package flotilla.broker.v1`): the `BrokerAdmin`, `Broker` and
/// `Groups` services (`broker_admin_client`, `broker_client`, `groups_client`
/// and their `_server` modules).
pub mod broker {
    tonic::include_proto!("flotilla.broker.v1");
}
