//! [`MaintenanceService`]: etcd's Status and MoveLeader.

use super::context::ApiContext;
use flotilla_proto::etcdserverpb::maintenance_server::Maintenance;
use flotilla_proto::etcdserverpb::{
    MoveLeaderRequest, MoveLeaderResponse, StatusRequest, StatusResponse,
};
use flotilla_raft::NodeId;
use std::io;
use std::path::{Path, PathBuf};
use tonic::{Request, Response, Status};

/// The version Status reports: the etcd API level served, with Flotilla's
/// own version as a semver build suffix (etcdctl shows it as is).
pub const VERSION: &str = concat!("3.5.0+flotilla.", env!("CARGO_PKG_VERSION"));

/// Files and folders [`data_dir_bytes`] looks at before it gives up.
const DATA_DIR_ENTRIES_MAX: usize = 100_000;
/// Folder depth [`data_dir_bytes`] descends to.
const DATA_DIR_DEPTH_MAX: usize = 8;

/// etcd's Maintenance service on one member (Status, MoveLeader).
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
#[derive(Clone, Debug)]
pub struct MaintenanceService {
    ctx: ApiContext,
    data_dir: Option<PathBuf>,
}

impl MaintenanceService {
    /// The service over `ctx`. Without [`Self::with_data_dir`] it reports
    /// a `db_size` of 0.
    pub fn new(ctx: ApiContext) -> Self {
        MaintenanceService {
            ctx,
            data_dir: None,
        }
    }

    /// Measures `db_size` in `dir`, the member's data directory.
    pub fn with_data_dir(mut self, dir: PathBuf) -> Self {
        self.data_dir = Some(dir);
        self
    }

    /// The data directory's size, or the problem to report in `errors`.
    async fn db_size(&self) -> Result<u64, String> {
        let Some(dir) = self.data_dir.clone() else {
            return Ok(0);
        };
        tokio::task::spawn_blocking(move || data_dir_bytes(&dir))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("cannot measure the data directory: {e}"))
    }
}

/// The bytes of the regular files under `dir` (symbolic links not
/// followed), at most [`DATA_DIR_DEPTH_MAX`] folders deep and
/// [`DATA_DIR_ENTRIES_MAX`] entries in all.
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
            if meta.is_file() {
                total += meta.len();
            } else if meta.is_dir() && depth < DATA_DIR_DEPTH_MAX {
                folders.push((entry.path(), depth + 1));
            }
        }
    }
    Ok(total)
}

#[tonic::async_trait]
impl Maintenance for MaintenanceService {
    async fn status(
        &self,
        _request: Request<StatusRequest>,
    ) -> Result<Response<StatusResponse>, Status> {
        let me = self.ctx.member_id;
        let (revision, is_learner, in_use) = self
            .ctx
            .raft
            .read_local(move |sm| {
                let kv = sm.kv();
                (
                    kv.revision(),
                    kv.member(me).is_some_and(|m| m.is_learner),
                    kv.mvcc().size_bytes(),
                )
            })
            .await
            .map_err(|e| super::errors::driver_status(&e, &Default::default()))?;
        let (db_size, errors) = match self.db_size().await {
            Ok(bytes) => (bytes, Vec::new()),
            Err(problem) => (0, vec![problem]),
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
}
