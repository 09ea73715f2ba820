//! [`restore`]: a snapshot file → the data directory of one member of a new
//! cluster; [`summarize`]: what a snapshot file holds.

use super::file::{SnapshotFileError, read_snapshot};
use crate::config::{ClusterState, ConfigError, NodeArgs, NodeConfig};
use crate::kv::{KvConfig, KvStore};
use flotilla_proto::etcdserverpb::{Member, RangeRequest};
use flotilla_raft::{
    Bytes, ConfState, HardState, NodeId, Snapshot, SnapshotMeta, Storage as _, Term,
};
use flotilla_storage::{DiskStorage, StorageOptions};
use std::path::{Path, PathBuf};

/// Why a snapshot could not be restored or read.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// The file is damaged or not a snapshot.
    #[error(transparent)]
    File(#[from] SnapshotFileError),
    /// The store inside does not decode (a bug, or a file from a newer
    /// version: the checksum was right).
    #[error("snapshot store is unreadable: {0}")]
    Store(String),
    /// The flags do not describe a member of a new cluster.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The data directory exists and is not empty.
    #[error("data directory {0} exists and is not empty; restore into a new directory")]
    DataDirExists(PathBuf),
    /// Writing the data directory failed.
    #[error("cannot write the data directory {path}: {reason}")]
    Write {
        /// The directory.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
}

/// What a snapshot file holds (`flotilla snapshot status`).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct SnapshotSummary {
    /// CRC-32 (IEEE) of the store's encoding: equal stores give equal
    /// hashes, whichever member or moment the snapshot came from.
    pub hash: u32,
    /// The store's revision.
    pub revision: i64,
    /// Live keys at that revision.
    pub total_key: i64,
    /// The file's size in bytes.
    pub total_size: u64,
    /// The compaction point.
    pub compact_revision: i64,
    /// The log index the store had applied.
    pub applied_index: u64,
    /// The cluster and member it came from.
    pub cluster_id: u64,
    /// The member that took it.
    pub member_id: u64,
    /// The server version that took it.
    pub version: String,
    /// When, in milliseconds since the Unix epoch.
    pub created_unix_ms: u64,
    /// The file's trailing sha256, in hex.
    pub sha256: String,
}

/// What [`restore`] wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RestoreReport {
    /// The data directory.
    pub data_dir: PathBuf,
    /// The member it is for.
    pub member_id: u64,
    /// The new cluster's id.
    pub cluster_id: u64,
    /// The restored store's revision.
    pub revision: i64,
    /// Live keys restored.
    pub keys: i64,
    /// Leases restored.
    pub leases: usize,
}

fn live_keys(kv: &KvStore) -> i64 {
    let all = RangeRequest {
        key: vec![0],
        range_end: vec![0],
        count_only: true,
        ..Default::default()
    };
    kv.range(&all).map_or(0, |r| r.count)
}

/// Reads and checks a snapshot file and decodes its store.
fn open(bytes: &[u8]) -> Result<(super::SnapshotFile<'_>, KvStore), RestoreError> {
    let file = read_snapshot(bytes)?;
    let kv =
        KvStore::decode_snapshot(KvConfig::default(), file.store).map_err(RestoreError::Store)?;
    if kv.applied_index() != file.header.applied_index || kv.revision() != file.header.revision {
        return Err(RestoreError::Store(format!(
            "the header says index {} revision {}, the store index {} revision {}",
            file.header.applied_index,
            file.header.revision,
            kv.applied_index(),
            kv.revision()
        )));
    }
    Ok((file, kv))
}

/// Checks a snapshot file and describes it.
pub fn summarize(bytes: &[u8]) -> Result<SnapshotSummary, RestoreError> {
    let (file, kv) = open(bytes)?;
    Ok(SnapshotSummary {
        hash: crc32fast::hash(file.store),
        revision: kv.revision(),
        total_key: live_keys(&kv),
        total_size: bytes.len() as u64,
        compact_revision: kv.compact_revision(),
        applied_index: kv.applied_index(),
        cluster_id: file.header.cluster_id,
        member_id: file.header.member_id,
        version: file.header.server_version.clone(),
        created_unix_ms: file.header.created_unix_ms,
        sha256: file.sha256.clone(),
    })
}

/// Whether `dir` is missing or an empty directory.
fn is_unused(dir: &Path) -> bool {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => entries.next().is_none(),
        Err(e) => e.kind() == std::io::ErrorKind::NotFound,
    }
}

/// Restores the snapshot file `bytes` into the data directory of member
/// `args.name` of the new cluster that `args` describes (`--name`,
/// `--initial-cluster`, `--initial-cluster-token`,
/// `--initial-advertise-peer-urls`, `--data-dir`, as etcdctl's restore
/// takes them). Run it once per member, with the same file and cluster
/// flags; then start every member with those flags and its directory.
///
/// The directory holds the store as a Raft snapshot at the index it had
/// applied, in term 1, with the new cluster's voters; the store keeps its
/// keys, revisions, leases, alarms and sessions, and gets the new member
/// table. It is stamped with the new cluster's and this member's ids (the
/// ids the member derives from the same flags), so a member of any other
/// cluster refuses it. It is written beside the target and renamed into
/// place, so an interrupted restore leaves no half-written directory.
pub fn restore(bytes: &[u8], args: NodeArgs) -> Result<RestoreReport, RestoreError> {
    let args = NodeArgs {
        initial_cluster_state: Some(ClusterState::New),
        ..args
    };
    let config = NodeConfig::resolve(args)?;
    let me = config
        .initial_cluster
        .iter()
        .find(|m| m.id == config.member_id)
        .expect("resolve checks that a new cluster's member is in --initial-cluster");
    if me.peer_url != config.peer_advertise {
        return Err(ConfigError::Invalid {
            setting: "initial-advertise-peer-urls",
            reason: format!(
                "{} differs from {}'s URL in --initial-cluster, {}",
                config.peer_advertise, config.name, me.peer_url
            ),
        }
        .into());
    }
    let (file, mut kv) = open(bytes)?;
    let dir = config.data_dir.clone();
    if !is_unused(&dir) {
        return Err(RestoreError::DataDirExists(dir));
    }
    let members: Vec<Member> = config
        .initial_cluster
        .iter()
        .map(|m| Member {
            id: m.id,
            name: m.name.clone(),
            peer_ur_ls: vec![m.peer_url.clone()],
            // Each member publishes its client URLs when it starts.
            client_ur_ls: Vec::new(),
            is_learner: false,
        })
        .collect();
    kv.replace_members(members);
    let report = RestoreReport {
        data_dir: dir.clone(),
        member_id: config.member_id,
        cluster_id: config.cluster_id,
        revision: kv.revision(),
        keys: live_keys(&kv),
        leases: kv.leases().len(),
    };
    let index = file.header.applied_index.max(1);
    let voters = config
        .initial_cluster
        .iter()
        .map(|m| NodeId(m.id))
        .collect();
    let snapshot = Snapshot {
        meta: SnapshotMeta {
            index,
            term: Term(1),
            conf_state: ConfState {
                voters,
                learners: Vec::new(),
            },
        },
        data: Bytes::from(kv.encode_snapshot()),
    };
    write_data_dir(&config, &dir, snapshot)?;
    Ok(report)
}

/// Writes the directory beside `dir`, then renames it into place.
fn write_data_dir(config: &NodeConfig, dir: &Path, snapshot: Snapshot) -> Result<(), RestoreError> {
    let failed = |reason: String| RestoreError::Write {
        path: dir.to_path_buf(),
        reason,
    };
    let mut staging = dir.as_os_str().to_owned();
    staging.push(".restoring");
    let staging = PathBuf::from(staging);
    if staging.exists() {
        std::fs::remove_dir_all(&staging)
            .map_err(|e| failed(format!("removing {}: {e}", staging.display())))?;
    }
    let mut options = StorageOptions::new(config.cluster_id, config.member_id);
    options.bootstrap = Some(snapshot.meta.conf_state.clone());
    let index = snapshot.meta.index;
    {
        let mut storage =
            DiskStorage::open(&staging, options).map_err(|e| failed(e.to_string()))?;
        storage
            .apply_snapshot(snapshot)
            .map_err(|e| failed(e.to_string()))?;
        let hard_state = HardState {
            term: Term(1),
            vote: NodeId::NONE,
            commit: index,
        };
        storage
            .save(Some(&hard_state), &[])
            .map_err(|e| failed(e.to_string()))?;
    }
    if dir.exists() {
        // Empty (checked): rename cannot replace a directory portably.
        std::fs::remove_dir(dir).map_err(|e| failed(e.to_string()))?;
    }
    std::fs::rename(&staging, dir).map_err(|e| failed(format!("renaming into place: {e}")))?;
    let parent = dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::File::open(parent)
        .and_then(|d| d.sync_all())
        .map_err(|e| failed(format!("syncing {}: {e}", parent.display())))?;
    Ok(())
}
