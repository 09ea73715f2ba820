//! Generates the Rust code for the protocol files in `proto/` (messages with
//! prost, clients and servers with tonic) into `OUT_DIR`.
//!
//! protoc comes from `protoc-bin-vendored`, handed to the builder as a path:
//! no system protobuf compiler is needed, and no environment variable is set
//! (`std::env::set_var` is unsafe in edition 2024).

use std::error::Error;

const PROTOS: &[&str] = &[
    "proto/etcd/api/mvccpb/kv.proto",
    "proto/etcd/api/etcdserverpb/rpc.proto",
    "proto/flotilla/raft.proto",
    "proto/flotilla/forward.proto",
    "proto/flotilla/broker.proto",
];

fn main() -> Result<(), Box<dyn Error>> {
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // Raft entry data, snapshot chunks and read contexts are `Bytes` in
        // flotilla-raft: decoding straight into `Bytes` lets the conversion
        // move them instead of copying. The etcd messages keep `Vec<u8>`, the
        // type the etcd-client crate and most etcd code use.
        .bytes(".flotilla.raft.v1")
        .bytes(".flotilla.forward.v1")
        // Record keys and values move between the log, the wire and the
        // replicas without copies.
        .bytes(".flotilla.broker.v1")
        .compile_with_config(config, PROTOS, &["proto"])?;
    Ok(())
}
