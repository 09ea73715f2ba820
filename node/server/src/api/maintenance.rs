//! [`MaintenanceService`]: etcd's Status, MoveLeader, Alarm, Defragment and
//! Snapshot.

use super::context::ApiContext;
use super::errors::driver_status;
use super::write::Writes;
use crate::backup::{SPOOL_FILE, SnapshotHeader, spool_snapshot};
use crate::kv::{KvCommand, KvOp, KvResponse};
use flotilla_proto::etcdserverpb::alarm_request::AlarmAction;
use flotilla_proto::etcdserverpb::maintenance_server::Maintenance;
use flotilla_proto::etcdserverpb::{
    AlarmMember, AlarmRequest, AlarmResponse, AlarmType, DefragmentRequest, DefragmentResponse,
    MoveLeaderRequest, MoveLeaderResponse, SnapshotRequest, SnapshotResponse, StatusRequest,
    StatusResponse,
};
use flotilla_raft::NodeId;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::{Semaphore, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

/// The version Status reports: the etcd API level served, with Flotilla's
/// own version as a semver build suffix (etcdctl shows it as is).
pub const VERSION: &str = concat!("3.5.0+flotilla.", env!("CARGO_PKG_VERSION"));

/// Files and folders [`data_dir_bytes`] looks at before it gives up.
const DATA_DIR_ENTRIES_MAX: usize = 100_000;
/// Folder depth [`data_dir_bytes`] descends to.
const DATA_DIR_DEPTH_MAX: usize = 8;
/// Most blob bytes in one Snapshot stream message.
const SNAPSHOT_CHUNK_BYTES: usize = 64 * 1024;
/// Snapshot stream messages queued ahead of a slow client.
const SNAPSHOT_QUEUE: usize = 4;
/// The name of the thread that spools and sends a backup (at the lowest
/// CPU priority).
pub const BACKUP_THREAD: &str = "backup-send";

/// The stream of a Snapshot call.
pub type SnapshotStream = ReceiverStream<Result<SnapshotResponse, Status>>;

/// etcd's Maintenance service on one member (Status, MoveLeader, Alarm,
/// Defragment, Snapshot).
///
/// Status reports two sizes, as etcd does for its database file:
/// `db_size` is the bytes of the files in the data directory (the Raft log
/// segments, snapshots and metadata: what the member holds on disk,
/// including the zeros a log segment is filled with ahead of its end), a few
/// `stat` calls per request; `db_size_in_use` is the store's own estimate
/// of the memory its retained history takes
/// ([`crate::kv::MvccStore::size_bytes`]), kept up to date as entries apply,
/// so it falls after a compaction while the disk figure falls once a
/// snapshot lets old log segments go.
///
/// **Snapshot** streams the store as one consistent snapshot file (see
/// [`crate::backup`]) in chunks of 64 KiB, from this member's own state at
/// one applied index (no leader needed: a member of a cluster that lost
/// its quorum can still be backed up). The driver only freezes the store
/// (O(1), as for a Raft snapshot); a thread of low priority encodes the frozen
/// view into a spool file in the data directory
/// ([`crate::backup::spool_snapshot`]) and streams the file from there, so
/// a backup holds a chunk of memory, not the encoded store; the spool is
/// removed when the stream ends, fails or the client goes away. One backup
/// runs at a time per member (one spool on disk); a second call waits for
/// the first to finish.
///
/// **Defragment** answers success and does nothing: etcd's defragment
/// gives back the space of its database file that compaction freed, but
/// Flotilla's store is in memory and frees that space as it compacts
/// (`db_size_in_use` falls at once), so there is nothing left to do.
/// Serving it lets etcd's recovery procedure (compact, defrag, disarm) run
/// unchanged.
#[derive(Clone, Debug)]
pub struct MaintenanceService {
    ctx: ApiContext,
    writes: Writes,
    data_dir: PathBuf,
    snapshots: Arc<Semaphore>,
}

impl MaintenanceService {
    /// The service over `ctx`, on the member's data directory `data_dir`
    /// (where `db_size` is measured and backups are spooled).
    pub fn new(ctx: ApiContext, writes: Writes, data_dir: PathBuf) -> Self {
        MaintenanceService {
            ctx,
            writes,
            data_dir,
            // One spool file at a time: see SPOOL_FILE.
            snapshots: Arc::new(Semaphore::new(1)),
        }
    }

    /// The data directory's size, or the problem to report in `errors`.
    async fn db_size(&self) -> Result<u64, String> {
        let dir = self.data_dir.clone();
        tokio::task::spawn_blocking(move || data_dir_bytes(&dir))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("cannot measure the data directory: {e}"))
    }
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The bytes of the regular files under `dir` (symbolic links not
/// followed), at most [`DATA_DIR_DEPTH_MAX`] folders deep and
/// [`DATA_DIR_ENTRIES_MAX`] entries in all, less a backup's spool: it is
/// there only while a backup is downloaded, and etcd's `db_size` does not
/// grow during `snapshot save` either.
fn data_dir_bytes(dir: &Path) -> io::Result<u64> {
    let mut total = 0u64;
    let mut seen = 0usize;
    let mut folders = vec![(dir.to_path_buf(), 0usize)];
    while let Some((folder, depth)) = folders.pop() {
        for entry in std::fs::read_dir(&folder)? {
            let entry = entry?;
            seen += 1;
            if seen > DATA_DIR_ENTRIES_MAX {
                return Err(io::Error::other(format!(
                    "more than {DATA_DIR_ENTRIES_MAX} entries"
                )));
            }
            let meta = entry.path().symlink_metadata()?;
            if depth == 0 && entry.file_name() == SPOOL_FILE {
                continue;
            }
            if meta.is_file() {
                total += meta.len();
            } else if meta.is_dir() && depth < DATA_DIR_DEPTH_MAX {
                folders.push((entry.path(), depth + 1));
            }
        }
    }
    Ok(total)
}

/// `memberID:<id> alarm:<kind> `, as etcd prints an alarm (etcdctl alarm
/// list, and Status errors).
pub fn alarm_text(a: &AlarmMember) -> String {
    let kind = AlarmType::try_from(a.alarm).map_or("UNKNOWN", |t| t.as_str_name());
    format!("memberID:{} alarm:{kind} ", a.member_id)
}

/// Raises or clears an alarm: a write, through the one write path (the
/// leader proposes it; a bad request costs no entry).
pub(crate) async fn change_alarm(
    ctx: &ApiContext,
    writes: &Writes,
    request: AlarmRequest,
) -> Result<AlarmResponse, Status> {
    match writes.submit(KvCommand::new(KvOp::Alarm(request))).await? {
        KvResponse::Alarm(mut reply) => {
            ctx.header.fill(&mut reply.header);
            Ok(reply)
        }
        _ => Err(Status::internal(
            "flotilla: the store answered an Alarm with another response",
        )),
    }
}

#[tonic::async_trait]
impl Maintenance for MaintenanceService {
    async fn status(
        &self,
        _request: Request<StatusRequest>,
    ) -> Result<Response<StatusResponse>, Status> {
        let me = self.ctx.member_id;
        let (revision, is_learner, in_use, alarms) = self
            .ctx
            .raft
            .read_local(move |sm| {
                let kv = sm.kv();
                (
                    kv.revision(),
                    kv.member(me).is_some_and(|m| m.is_learner),
                    kv.mvcc().size_bytes(),
                    kv.alarms().get(AlarmType::None),
                )
            })
            .await
            .map_err(|e| driver_status(&e, &Default::default()))?;
        // As etcd: every raised alarm is an error of every member's status.
        let mut errors: Vec<String> = alarms.iter().map(alarm_text).collect();
        let db_size = match self.db_size().await {
            Ok(bytes) => bytes,
            Err(problem) => {
                errors.push(problem);
                0
            }
        };
        let bytes = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        let s = self.ctx.raft.status();
        Ok(Response::new(StatusResponse {
            header: Some(self.ctx.header.header(revision)),
            version: VERSION.to_string(),
            db_size: bytes(db_size),
            db_size_in_use: bytes(in_use),
            errors,
            leader: s.leader.0,
            raft_index: s.commit,
            raft_term: s.term.0,
            raft_applied_index: s.applied,
            is_learner,
            db_size_quota: self.ctx.admission.config().quota_bytes.map_or(0, bytes),
            ..Default::default()
        }))
    }

    async fn move_leader(
        &self,
        request: Request<MoveLeaderRequest>,
    ) -> Result<Response<MoveLeaderResponse>, Status> {
        let target = request.into_inner().target_id;
        if target == 0 {
            return Err(Status::invalid_argument(
                "etcdserver: bad leader transferee",
            ));
        }
        if let Err(e) = self.ctx.raft.transfer_leader(NodeId(target)).await {
            return Err(self.ctx.status_of(&e).await);
        }
        Ok(Response::new(MoveLeaderResponse {
            header: Some(self.ctx.header.header(0)),
        }))
    }

    /// GET lists the raised alarms (a linearizable read: no log entry);
    /// ACTIVATE and DEACTIVATE go through the log on the leader.
    async fn alarm(
        &self,
        request: Request<AlarmRequest>,
    ) -> Result<Response<AlarmResponse>, Status> {
        let request = request.into_inner();
        if request.action != AlarmAction::Get as i32 {
            return change_alarm(&self.ctx, &self.writes, request)
                .await
                .map(Response::new);
        }
        let kind = AlarmType::try_from(request.alarm).map_err(|_| {
            Status::invalid_argument(format!("flotilla: unknown alarm type {}", request.alarm))
        })?;
        let member = request.member_id;
        let (revision, alarms) = self
            .ctx
            .raft
            .read(move |sm| {
                let mut alarms = sm.kv().alarms().get(kind);
                alarms.retain(|a| member == 0 || a.member_id == member);
                (sm.kv().revision(), alarms)
            })
            .await
            .map_err(|e| driver_status(&e, &Default::default()))?;
        Ok(Response::new(AlarmResponse {
            header: Some(self.ctx.header.header(revision)),
            alarms,
        }))
    }

    /// Nothing to defragment: see the type's docs.
    async fn defragment(
        &self,
        _request: Request<DefragmentRequest>,
    ) -> Result<Response<DefragmentResponse>, Status> {
        let revision = self
            .ctx
            .raft
            .read_local(|sm| sm.kv().revision())
            .await
            .map_err(|e| driver_status(&e, &Default::default()))?;
        Ok(Response::new(DefragmentResponse {
            header: Some(self.ctx.header.header(revision)),
        }))
    }

    type SnapshotStream = SnapshotStream;

    async fn snapshot(
        &self,
        _request: Request<SnapshotRequest>,
    ) -> Result<Response<SnapshotStream>, Status> {
        let permit = self
            .snapshots
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Status::unavailable("etcdserver: server stopped"))?;
        let header = self.ctx.header.header(0);
        let (cluster_id, member_id) = (header.cluster_id, self.ctx.member_id);
        let (file_header, store) = self
            .ctx
            .raft
            .read_local(move |sm| {
                let kv = sm.kv();
                let header = SnapshotHeader {
                    cluster_id,
                    member_id,
                    applied_index: kv.applied_index(),
                    revision: kv.revision(),
                    compact_revision: kv.compact_revision(),
                    store_bytes: 0,
                    server_version: VERSION.to_string(),
                    created_unix_ms: unix_ms(),
                };
                // Frozen here in O(1) (the key space is persistent); encoded
                // below, off the driver.
                (header, kv.clone())
            })
            .await
            .map_err(|e| driver_status(&e, &Default::default()))?;
        let mut first = Some(self.ctx.header.header(file_header.revision));
        let (tx, rx) = mpsc::channel(SNAPSHOT_QUEUE);
        let dir = self.data_dir.clone();
        // Encoding, hashing and copying out chunks is CPU and disk work:
        // off the driver and the async threads, on a thread of its own at
        // the lowest priority, as a Raft snapshot is written (not a pooled
        // blocking thread: its priority would stay low for later work).
        let spawned = std::thread::Builder::new()
            .name(BACKUP_THREAD.into())
            .spawn(move || {
                flotilla_storage::priority::lower_this_thread();
                let _permit = permit;
                let (revision, applied_index) = (file_header.revision, file_header.applied_index);
                let encode = |w: &mut dyn std::io::Write| store.encode_snapshot_to(w);
                let spooled = spool_snapshot(&dir, file_header, encode, SNAPSHOT_CHUNK_BYTES);
                // The frozen view goes at once: it pins the versions that later
                // writes replace, and the client may download slowly.
                drop(store);
                let mut chunks = match spooled {
                    Ok(chunks) => chunks,
                    Err(e) => {
                        tracing::warn!(error = %e, dir = %dir.display(), "cannot spool a snapshot");
                        let status = Status::internal(format!(
                            "flotilla: cannot write the snapshot to the data directory: {e}"
                        ));
                        let _ = tx.blocking_send(Err(status));
                        return;
                    }
                };
                tracing::info!(
                    revision,
                    applied_index,
                    file_bytes = chunks.total_bytes(),
                    spool_syncs = chunks.spool_syncs(),
                    "sending a snapshot"
                );
                loop {
                    let message = match chunks.next_chunk() {
                        Ok(Some(blob)) => Ok(SnapshotResponse {
                            header: first.take(),
                            remaining_bytes: chunks.remaining_bytes(),
                            blob,
                            version: VERSION.to_string(),
                        }),
                        Ok(None) => return,
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot read a spooled snapshot back");
                            Err(Status::internal(format!(
                                "flotilla: cannot read the spooled snapshot: {e}"
                            )))
                        }
                    };
                    let failed = message.is_err();
                    if tx.blocking_send(message).is_err() || failed {
                        // The client went away, or was told why not; dropping
                        // the chunks removes the spool.
                        return;
                    }
                }
            });
        if let Err(e) = spawned {
            return Err(Status::internal(format!(
                "flotilla: cannot start a thread for the snapshot: {e}"
            )));
        }
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}
