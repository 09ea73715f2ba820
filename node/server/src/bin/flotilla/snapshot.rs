//! `flotilla snapshot save/status/restore`: backups, as etcdctl's
//! `snapshot` commands. `save` streams a snapshot from one member (etcd's
//! Maintenance Snapshot, so `etcdctl snapshot save` writes the same file);
//! `status` checks a file and says what it holds; `restore` prepares the
//! data directory of one member of a new cluster from it.

use crate::WriteOut;
use crate::connect::{describe, stream_channel};
use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use flotilla_node::backup::{SnapshotSummary, restore, summarize};
use flotilla_node::config::{DEFAULT_CLUSTER_TOKEN, NodeArgs};
use flotilla_proto::etcdserverpb::SnapshotRequest;
use flotilla_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use serde_json::json;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long a snapshot stream may go without a message.
const STALL_TIMEOUT: Duration = Duration::from_secs(30);

/// `flotilla snapshot ...`
#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    /// Stream a snapshot of the store from one member (the one
    /// --endpoints names) into FILE, as `etcdctl snapshot save`.
    Save {
        /// Where to write it (via FILE.part, renamed once complete).
        file: PathBuf,
    },
    /// Check a snapshot file's checksum and print its hash, revision, live
    /// keys and size.
    Status {
        /// The snapshot file.
        file: PathBuf,
    },
    /// Prepare the data directory of one member of a new cluster from a
    /// snapshot file, as `etcdctl snapshot restore`: run it once per
    /// member with the same file and cluster flags, then start each member
    /// with those flags and its directory.
    Restore(RestoreArgs),
}

/// Options of `flotilla snapshot restore`.
#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The snapshot file.
    file: PathBuf,
    /// This member's name in the new cluster.
    #[arg(long)]
    name: String,
    /// The new cluster's members, `name=peer-url,...`.
    #[arg(long)]
    initial_cluster: String,
    /// The new cluster's token (use a new one: the cluster's id derives
    /// from it and the members, and no member of another cluster will
    /// accept this one's data or messages).
    #[arg(long, default_value = DEFAULT_CLUSTER_TOKEN)]
    initial_cluster_token: String,
    /// This member's peer URL (default: its entry in --initial-cluster,
    /// which it must match).
    #[arg(long)]
    initial_advertise_peer_urls: Option<String>,
    /// The data directory to create (default `<name>.flotilla`); it must
    /// not exist or be empty.
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

/// Streams the snapshot into `file`.part, then renames it to `file`.
async fn save(endpoints: &[String], file: &Path) -> Result<SnapshotSummary> {
    let [endpoint] = endpoints else {
        bail!(
            "a snapshot must be requested from one member, not {} endpoints",
            endpoints.len()
        );
    };
    let mut part = file.as_os_str().to_owned();
    part.push(".part");
    let part = PathBuf::from(part);
    let mut out = std::fs::File::create(&part)
        .with_context(|| format!("cannot create {}", part.display()))?;
    let mut client =
        MaintenanceClient::new(stream_channel(endpoint)?).max_decoding_message_size(usize::MAX);
    let mut stream = client
        .snapshot(SnapshotRequest {})
        .await
        .map_err(|s| anyhow::anyhow!("{}", describe(&s)))?
        .into_inner();
    loop {
        let next = tokio::time::timeout(STALL_TIMEOUT, stream.message())
            .await
            .with_context(|| format!("the snapshot stream stalled for {STALL_TIMEOUT:?}"))?;
        match next {
            Ok(Some(chunk)) => out
                .write_all(&chunk.blob)
                .with_context(|| format!("cannot write {}", part.display()))?,
            Ok(None) => break,
            Err(s) => bail!("snapshot stream failed: {}", describe(&s)),
        }
    }
    out.sync_all()
        .with_context(|| format!("cannot sync {}", part.display()))?;
    drop(out);
    // Checked before it takes the name: a file under that name is whole.
    let summary = summarize(&part).context("the received snapshot is not usable")?;
    std::fs::rename(&part, file)
        .with_context(|| format!("cannot rename {} to {}", part.display(), file.display()))?;
    Ok(summary)
}

fn print_summary(s: &SnapshotSummary, out: WriteOut) {
    match out {
        WriteOut::Json => println!("{}", json!(s)),
        WriteOut::Table => {
            println!(
                "{:<10} {:<10} {:<12} {:<12} {:<13} SHA256",
                "HASH", "REVISION", "TOTAL KEYS", "TOTAL SIZE", "APPLIED INDEX"
            );
            println!(
                "{:<10} {:<10} {:<12} {:<12} {:<13} {}",
                format!("{:08x}", s.hash),
                s.revision,
                s.total_key,
                s.total_size,
                s.applied_index,
                s.sha256
            );
        }
    }
}

/// Runs a `snapshot` subcommand.
pub async fn run(cmd: SnapshotCommand, endpoints: &[String], out: WriteOut) -> Result<()> {
    match cmd {
        SnapshotCommand::Save { file } => {
            let s = save(endpoints, &file).await?;
            match out {
                WriteOut::Json => println!("{}", json!({ "file": file, "snapshot": s })),
                WriteOut::Table => println!(
                    "Snapshot saved at {} (revision {}, {} keys, {} bytes)",
                    file.display(),
                    s.revision,
                    s.total_key,
                    s.total_size
                ),
            }
        }
        SnapshotCommand::Status { file } => print_summary(&summarize(&file)?, out),
        SnapshotCommand::Restore(args) => {
            let node_args = NodeArgs {
                name: Some(args.name.clone()),
                initial_cluster: Some(args.initial_cluster.clone()),
                initial_cluster_token: Some(args.initial_cluster_token.clone()),
                initial_advertise_peer_urls: args.initial_advertise_peer_urls.clone(),
                data_dir: args.data_dir.clone(),
                ..NodeArgs::default()
            };
            let r = restore(&args.file, node_args)?;
            match out {
                WriteOut::Json => println!(
                    "{}",
                    json!({
                        "data_dir": r.data_dir,
                        "member_id": format!("{:x}", r.member_id),
                        "cluster_id": format!("{:x}", r.cluster_id),
                        "revision": r.revision,
                        "keys": r.keys,
                        "leases": r.leases,
                    })
                ),
                WriteOut::Table => {
                    println!(
                        "Restored revision {} ({} keys, {} leases) into {} for member {:x} of cluster {:x}",
                        r.revision,
                        r.keys,
                        r.leases,
                        r.data_dir.display(),
                        r.member_id,
                        r.cluster_id
                    );
                    println!(
                        "Start it with: flotilla-node --name {} --data-dir {} --initial-cluster {} --initial-cluster-token {}",
                        args.name,
                        r.data_dir.display(),
                        args.initial_cluster,
                        args.initial_cluster_token
                    );
                }
            }
        }
    }
    Ok(())
}
