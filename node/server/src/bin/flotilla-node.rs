//! `flotilla-node`: one Flotilla member. Flags follow etcd's
//! (`--name`, `--initial-cluster`, `--data-dir`, `--listen-client-urls`,
//! ...); each is also `FLOTILLA_<NAME>` and a key of `--config-file`.
//! Logs go to stderr, filtered by `RUST_LOG` (default `info`).
//!
//! Exit codes: 0 after a clean stop (Ctrl-C or SIGTERM), 1 when the member
//! cannot start or fails while running, 2 on bad flags or configuration.

use clap::Parser;
use flotilla_node::config::NodeArgs;
use std::process::ExitCode;

/// The same allocator as `flotilla node` (see `bin/flotilla/main.rs`).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Debug, Parser)]
#[command(
    name = "flotilla-node",
    version,
    about = "A Flotilla member: Raft-replicated, etcd-v3-compatible key-value store"
)]
struct Cli {
    #[command(flatten)]
    node: NodeArgs,
}

fn main() -> ExitCode {
    flotilla_node::member::run_member(Cli::parse().node)
}
