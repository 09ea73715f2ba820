//! [`restore`]: a snapshot file → the data directory of one member of a new
//! cluster; [`summarize`]: what a snapshot file holds.

use super::file::{SnapshotFileError, SnapshotHeader, SnapshotReader};
use crate::config::{ClusterState, ConfigError, NodeArgs, NodeConfig};
use crate::kv::{CopySnapshotError, KvStore, SnapshotFacts};
use flotilla_proto::etcdserverpb::Member;
use flotilla_raft::{HardState, NodeId, SnapshotMeta, Storage as _, Term};
use flotilla_storage::{DiskStorage, StorageOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// Why a snapshot could not be restored or read.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// The file cannot be opened.
    #[error("cannot read {path}: {reason}")]
    Open {
        /// The file.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
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

/// Opens a snapshot file for reading, with its size.
fn open_file(path: &Path) -> Result<(std::fs::File, u64), RestoreError> {
    let failed = |e: std::io::Error| RestoreError::Open {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let file = std::fs::File::open(path).map_err(failed)?;
    let len = file.metadata().map_err(failed)?.len();
    Ok((file, len))
}

/// The store's revisions against the header's.
fn check_header(header: &SnapshotHeader, facts: &SnapshotFacts) -> Result<(), RestoreError> {
    if facts.applied_index != header.applied_index || facts.revision != header.revision {
        return Err(RestoreError::Store(format!(
            "the header says index {} revision {}, the store index {} revision {}",
            header.applied_index, header.revision, facts.applied_index, facts.revision
        )));
    }
    Ok(())
}

/// Checks the snapshot file at `path` and describes it; see
/// [`summarize_from`].
pub fn summarize(path: &Path) -> Result<SnapshotSummary, RestoreError> {
    let (file, len) = open_file(path)?;
    summarize_from(file, len)
}

/// Checks the snapshot file of `len` bytes that `src` yields and describes
/// it. The file is read once, as a stream: its sha256 and the store's
/// CRC are computed and the store is checked (as a member decoding it
/// would) as the bytes go by, in memory that does not grow with the file.
pub fn summarize_from(src: impl Read, len: u64) -> Result<SnapshotSummary, RestoreError> {
    let mut reader = SnapshotReader::open(src, len)?;
    let header = reader.header().clone();
    let facts = match KvStore::copy_snapshot(&mut reader, &mut std::io::sink(), None) {
        Ok(facts) => facts,
        Err(e) => return Err(reader.blame(RestoreError::Store(e.to_string()))),
    };
    let digest = reader.finish()?;
    check_header(&header, &facts)?;
    Ok(SnapshotSummary {
        hash: digest.store_crc32,
        revision: facts.revision,
        total_key: facts.live_keys,
        total_size: len,
        compact_revision: facts.compact_revision,
        applied_index: facts.applied_index,
        cluster_id: header.cluster_id,
        member_id: header.member_id,
        version: header.server_version,
        created_unix_ms: header.created_unix_ms,
        sha256: digest.sha256,
    })
}

/// Whether `dir` is missing or an empty directory.
fn is_unused(dir: &Path) -> bool {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => entries.next().is_none(),
        Err(e) => e.kind() == std::io::ErrorKind::NotFound,
    }
}

/// Restores the snapshot file at `path` into the data directory of member
/// `args.name` of the new cluster that `args` describes; see
/// [`restore_from`].
pub fn restore(path: &Path, args: NodeArgs) -> Result<RestoreReport, RestoreError> {
    let (file, len) = open_file(path)?;
    restore_from(file, len, args)
}

/// Restores the snapshot file of `len` bytes that `src` yields into the
/// data directory of member `args.name` of the new cluster that `args`
/// describes (`--name`, `--initial-cluster`, `--initial-cluster-token`,
/// `--initial-advertise-peer-urls`, `--data-dir`, as etcdctl's restore
/// takes them). Run it once per member, with the same file and cluster
/// flags; then start every member with those flags and its directory.
///
/// The directory holds the store as a Raft snapshot at the index it had
/// applied, in term 1, with the new cluster's voters; the store keeps its
/// keys, revisions, leases, alarms and sessions, and gets the new member
/// table. It is stamped with the new cluster's and this member's ids (the
/// ids the member derives from the same flags), so a member of any other
/// cluster refuses it.
///
/// The file is read once, as a stream: the store is checked as a member
/// decoding it would and copied, member table replaced, straight into the
/// Raft snapshot's file, while the file's sha256 is computed; memory does
/// not grow with the file. All of it is written into a directory beside
/// the target (`<dir>.restoring`), renamed into place only once the file
/// checked to its last byte; on any error that directory is removed, so
/// a truncated or damaged file, or an interrupted restore, leaves no data
/// directory a member would start from.
pub fn restore_from(
    src: impl Read,
    len: u64,
    args: NodeArgs,
) -> Result<RestoreReport, RestoreError> {
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
    let dir = config.data_dir.clone();
    if !is_unused(&dir) {
        return Err(RestoreError::DataDirExists(dir));
    }
    let mut reader = SnapshotReader::open(src, len)?;
    let header = reader.header().clone();
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
    let meta = SnapshotMeta {
        index: header.applied_index.max(1),
        term: Term(1),
        conf_state: config.founding_conf_state(),
    };
    let failed = |reason: String| RestoreError::Write {
        path: dir.clone(),
        reason,
    };
    let staging = Staging::create(&dir).map_err(failed)?;
    let mut options = StorageOptions::new(config.cluster_id, config.member_id);
    options.bootstrap = Some(meta.conf_state.clone());
    let mut storage =
        DiskStorage::open(&staging.path, options).map_err(|e| failed(e.to_string()))?;
    let copied = {
        let mut sink = std::io::BufWriter::with_capacity(
            WRITE_PIECE_BYTES,
            ReceivedChunks {
                storage: &mut storage,
                meta: &meta,
                offset: 0,
            },
        );
        KvStore::copy_snapshot(&mut reader, &mut sink, Some(members)).and_then(|facts| {
            sink.flush().map_err(CopySnapshotError::Sink)?;
            Ok(facts)
        })
    };
    let facts = match copied {
        Ok(facts) => facts,
        Err(CopySnapshotError::Invalid(e)) => return Err(reader.blame(RestoreError::Store(e))),
        Err(CopySnapshotError::Sink(e)) => return Err(failed(e.to_string())),
    };
    reader.finish()?;
    check_header(&header, &facts)?;
    let report = RestoreReport {
        data_dir: dir.clone(),
        member_id: config.member_id,
        cluster_id: config.cluster_id,
        revision: facts.revision,
        keys: facts.live_keys,
        leases: facts.leases,
    };
    let snapshot = storage
        .received_snapshot(&meta)
        .map_err(|e| failed(e.to_string()))?;
    storage
        .apply_snapshot(snapshot)
        .map_err(|e| failed(e.to_string()))?;
    let hard_state = HardState {
        term: Term(1),
        vote: NodeId::NONE,
        commit: meta.index,
    };
    storage
        .save(Some(&hard_state), &[])
        .map_err(|e| failed(e.to_string()))?;
    drop(storage);
    staging.rename_into_place(&dir)?;
    Ok(report)
}

/// Bytes of the Raft snapshot's data written at once.
const WRITE_PIECE_BYTES: usize = 1 << 20;

/// The Raft snapshot's data, written into its file as a follower receives
/// a snapshot from its leader: chunk by chunk, never held whole.
struct ReceivedChunks<'a> {
    storage: &'a mut DiskStorage,
    meta: &'a SnapshotMeta,
    offset: u64,
}

impl Write for ReceivedChunks<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.storage
            .receive_snapshot_chunk(self.meta, self.offset, buf)
            .map_err(std::io::Error::other)?;
        self.offset += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The directory a restore writes, beside the target: removed, with all
/// it holds, unless it was renamed into place.
struct Staging {
    path: PathBuf,
    renamed: bool,
}

impl Staging {
    /// `<dir>.restoring`, replacing a leftover of an interrupted restore.
    fn create(dir: &Path) -> Result<Staging, String> {
        let mut path = dir.as_os_str().to_owned();
        path.push(".restoring");
        let path = PathBuf::from(path);
        if path.exists() {
            std::fs::remove_dir_all(&path)
                .map_err(|e| format!("removing {}: {e}", path.display()))?;
        }
        Ok(Staging {
            path,
            renamed: false,
        })
    }

    /// Renames the directory to `dir` (missing or empty: checked again,
    /// something may have been put there meanwhile) and syncs its parent.
    fn rename_into_place(mut self, dir: &Path) -> Result<(), RestoreError> {
        let failed = |reason: String| RestoreError::Write {
            path: dir.to_path_buf(),
            reason,
        };
        if !is_unused(dir) {
            return Err(RestoreError::DataDirExists(dir.to_path_buf()));
        }
        if dir.exists() {
            // Empty (checked): rename cannot replace a directory portably.
            std::fs::remove_dir(dir).map_err(|e| failed(e.to_string()))?;
        }
        std::fs::rename(&self.path, dir)
            .map_err(|e| failed(format!("renaming into place: {e}")))?;
        self.renamed = true;
        let parent = dir
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::File::open(parent)
            .and_then(|d| d.sync_all())
            .map_err(|e| failed(format!("syncing {}: {e}", parent.display())))
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.renamed
            && let Err(e) = std::fs::remove_dir_all(&self.path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(path = %self.path.display(), error = %e, "cannot remove a failed restore's directory");
        }
    }
}
