//! Opening a data directory: stamp or check its identity, load the hard
//! state and newest snapshot, scan the segments (cutting a torn tail,
//! refusing damage), and finish an `apply_snapshot` a crash interrupted.

use std::io;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use flotilla_raft::{
    Entry, HardState, LogIndex, MemStorage, Snapshot, SnapshotMeta, SnapshotSource, Term,
};

use crate::disk::{
    DiskStorage, HARD_STATE_FILE, IDENTITY_FILE, LOG_DIR, SNAPSHOT_DIR, Segment, SyncMarks,
};
use crate::error::OpenError;
use crate::fs::FileSystem;
use crate::meta_files::{self, TMP_SUFFIX, write_atomic};
use crate::options::{FsyncMode, StorageOptions};
use crate::segment::{self, parse_segment_name, segment_name};

/// See [`DiskStorage::open`].
pub(crate) fn open(
    fs: Arc<dyn FileSystem>,
    dir: &Path,
    options: StorageOptions,
) -> Result<DiskStorage, OpenError> {
    if options.fsync == FsyncMode::Never {
        tracing::warn!(
            dir = %dir.display(),
            "RAFT STORAGE FSYNC IS OFF (fsync = never): a machine crash can lose acknowledged \
             writes and break Raft's guarantees. Use only for benchmarks."
        );
    }
    let sync = options.fsync == FsyncMode::Always;
    let (log_dir, snap_dir) = (dir.join(LOG_DIR), dir.join(SNAPSHOT_DIR));
    for d in [dir, &log_dir, &snap_dir] {
        fs.create_dir_all(d).map_err(OpenError::io(d))?;
    }
    check_identity(&*fs, dir, &options)?;
    for d in [dir, &snap_dir] {
        remove_tmp_files(&*fs, d)?;
    }
    let hard_state = read_hard_state(&*fs, dir)?;
    let newest = check_latest_snapshot(&*fs, &snap_dir)?;
    // What a leader sends the snapshot with, computed by the check.
    let sums = (newest.meta.index > 0).then(|| newest.clone());
    let snap = Snapshot {
        meta: newest.meta,
        data: Bytes::new(),
    };
    let log = recover_log(&*fs, &log_dir, &snap.meta, sync)?;
    let last_index = snap.meta.index + log.entries.len() as u64;
    if hard_state.commit > last_index {
        return Err(OpenError::CommittedEntriesLost {
            commit: hard_state.commit,
            last_index,
        });
    }
    let active_path = log_dir.join(segment_name(log.segments.last().expect("one").first_index));
    let mut active = fs
        .open_append(&active_path, false)
        .map_err(OpenError::io(&active_path))?;
    if sync {
        // A process that crashed (rather than its machine) may have left
        // deferred writes in the page cache, unsynced: what is read back
        // counts as durable from now on, so make it so.
        active.sync_data().map_err(OpenError::io(&active_path))?;
    }
    // Without fsync nothing read back is known durable beyond the snapshot.
    let marks = SyncMarks::recovered(last_index, if sync { last_index } else { snap.meta.index });
    tracing::info!(
        dir = %dir.display(),
        snapshot_index = snap.meta.index,
        last_index,
        term = hard_state.term.0,
        "raft storage recovered"
    );
    Ok(DiskStorage {
        fs,
        dir: dir.to_path_buf(),
        options,
        mirror: MemStorage::from_parts(
            HardState {
                commit: hard_state.commit.max(snap.meta.index),
                ..hard_state
            },
            snap,
            log.entries,
        ),
        durable_vote: hard_state,
        offsets: log.offsets,
        segments: log.segments,
        active,
        file_bytes: log.active_file_bytes,
        buf: Vec::new(),
        fatal: None,
        snapshot_sums: std::sync::Arc::new(std::sync::Mutex::new(sums)),
        receiving: None,
        unsynced: false,
        active_sync: None,
        sync_failure: Arc::default(),
        marks: Arc::new(std::sync::Mutex::new(marks)),
    })
}

fn read_optional(fs: &dyn FileSystem, path: &Path) -> Result<Option<Vec<u8>>, OpenError> {
    match fs.read_file(path) {
        Ok(buf) => Ok(Some(buf)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(OpenError::Io {
            path: path.to_path_buf(),
            source: e,
        }),
    }
}

/// Checks the stamp, or stamps a fresh directory. The stamp is written last
/// in initialisation, so a directory without one is fresh unless it holds
/// a cast vote or log frames (then it is somebody's data: refuse).
fn check_identity(
    fs: &dyn FileSystem,
    dir: &Path,
    options: &StorageOptions,
) -> Result<(), OpenError> {
    let path = dir.join(IDENTITY_FILE);
    let Some(buf) = read_optional(fs, &path)? else {
        if holds_raft_state(fs, dir)? {
            return Err(OpenError::Unstamped { path });
        }
        return initialise(fs, dir, options);
    };
    let ((cluster_id, member_id), current) = meta_files::decode_identity(&path, &buf)?;
    if cluster_id != options.cluster_id {
        return Err(OpenError::ForeignCluster {
            path,
            found: cluster_id,
            expected: options.cluster_id,
        });
    }
    if member_id != options.member_id {
        return Err(OpenError::ForeignMember {
            path,
            found: member_id,
            expected: options.member_id,
        });
    }
    if !current {
        // Before any frame with a synced mark is written: from here on a
        // version that cannot read those frames refuses the directory.
        let stamp = meta_files::encode_identity(cluster_id, member_id);
        let sync = options.fsync == FsyncMode::Always;
        write_atomic(fs, dir, IDENTITY_FILE, &stamp, sync).map_err(OpenError::io(&path))?;
        tracing::info!(
            dir = %dir.display(),
            "restamped the raft data directory for log frames with synced marks; \
             versions before them will refuse it"
        );
    }
    Ok(())
}

fn holds_raft_state(fs: &dyn FileSystem, dir: &Path) -> Result<bool, OpenError> {
    let hs_path = dir.join(HARD_STATE_FILE);
    if let Some(buf) = read_optional(fs, &hs_path)? {
        let hs = meta_files::decode_hard_state(&hs_path, &buf).ok();
        if hs != Some(HardState::default()) {
            return Ok(true);
        }
    }
    let log_dir = dir.join(LOG_DIR);
    for name in fs.list_dir(&log_dir).map_err(OpenError::io(&log_dir))? {
        let path = log_dir.join(&name);
        if !fs
            .read_file(&path)
            .map_err(OpenError::io(&path))?
            .is_empty()
        {
            return Ok(true);
        }
    }
    Ok(false)
}

/// First start: bootstrap snapshot, empty hard state, first segment, and
/// the identity stamp last.
fn initialise(fs: &dyn FileSystem, dir: &Path, options: &StorageOptions) -> Result<(), OpenError> {
    let sync = options.fsync == FsyncMode::Always;
    let (log_dir, snap_dir) = (dir.join(LOG_DIR), dir.join(SNAPSHOT_DIR));
    // Leftovers of an initialisation a crash interrupted.
    for d in [&log_dir, &snap_dir] {
        for name in fs.list_dir(d).map_err(OpenError::io(d))? {
            fs.remove_file(&d.join(&name))
                .map_err(OpenError::io(d.join(&name)))?;
        }
    }
    if let Some(conf_state) = &options.bootstrap {
        let snap = Snapshot {
            meta: SnapshotMeta {
                index: 0,
                term: Term(0),
                conf_state: conf_state.clone(),
            },
            data: Bytes::new(),
        };
        let name = meta_files::snapshot_name(&snap.meta);
        write_atomic(
            fs,
            &snap_dir,
            &name,
            &meta_files::encode_snapshot(&snap),
            sync,
        )
        .map_err(OpenError::io(snap_dir.join(&name)))?;
    }
    let hs = meta_files::encode_hard_state(&HardState::default());
    write_atomic(fs, dir, HARD_STATE_FILE, &hs, sync)
        .map_err(OpenError::io(dir.join(HARD_STATE_FILE)))?;
    let first = log_dir.join(segment_name(1));
    fs.open_append(&first, true)
        .map_err(OpenError::io(&first))?;
    if sync {
        for d in [&log_dir, dir] {
            fs.sync_dir(d).map_err(OpenError::io(d))?;
        }
    }
    let stamp = meta_files::encode_identity(options.cluster_id, options.member_id);
    write_atomic(fs, dir, IDENTITY_FILE, &stamp, sync)
        .map_err(OpenError::io(dir.join(IDENTITY_FILE)))?;
    tracing::info!(
        dir = %dir.display(),
        cluster_id = options.cluster_id,
        member_id = options.member_id,
        "stamped a new raft data directory"
    );
    Ok(())
}

/// Removes half-written files of an atomic replace a crash interrupted.
fn remove_tmp_files(fs: &dyn FileSystem, dir: &Path) -> Result<(), OpenError> {
    for name in fs.list_dir(dir).map_err(OpenError::io(dir))? {
        if name.ends_with(TMP_SUFFIX) {
            let path = dir.join(&name);
            fs.remove_file(&path).map_err(OpenError::io(&path))?;
        }
    }
    Ok(())
}

fn read_hard_state(fs: &dyn FileSystem, dir: &Path) -> Result<HardState, OpenError> {
    let path = dir.join(HARD_STATE_FILE);
    match read_optional(fs, &path)? {
        Some(buf) => meta_files::decode_hard_state(&path, &buf),
        None => Err(OpenError::HardStateLost { path }),
    }
}

/// The newest snapshot file, checked whole but never held whole (see
/// [`meta_files::check_snapshot_file`]): its position, length and data
/// CRC. None means a joining member's empty start. The state machine reads
/// the data later, as a stream ([`flotilla_raft::Storage::snapshot_reader`]).
fn check_latest_snapshot(fs: &dyn FileSystem, dir: &Path) -> Result<SnapshotSource, OpenError> {
    let names = fs.list_dir(dir).map_err(OpenError::io(dir))?;
    // Names are zero-padded index then term, so the greatest is the newest.
    let Some(newest) = names.iter().filter(|n| n.ends_with(".snap")).max() else {
        return Ok(SnapshotSource::default());
    };
    meta_files::check_snapshot_file(fs, &dir.join(newest))
}

/// The log as found on disk.
struct RecoveredLog {
    entries: Vec<Entry>,
    offsets: Vec<u64>,
    segments: Vec<Segment>,
    /// The last segment file's length after recovery: its valid frames and
    /// any zeros written ahead of them.
    active_file_bytes: u64,
}

/// Scans every segment in order. Entries the snapshot covers are skipped.
/// If the log does not continue the snapshot (it ends before it, or holds
/// another term at its index), an `apply_snapshot` that discards the log
/// was interrupted: the log is discarded now.
fn recover_log(
    fs: &dyn FileSystem,
    log_dir: &Path,
    snap: &SnapshotMeta,
    sync: bool,
) -> Result<RecoveredLog, OpenError> {
    let mut firsts: Vec<LogIndex> = (fs.list_dir(log_dir).map_err(OpenError::io(log_dir))?)
        .iter()
        .filter_map(|name| parse_segment_name(name))
        .collect();
    firsts.sort_unstable();
    let mut log = RecoveredLog {
        entries: Vec::new(),
        offsets: Vec::new(),
        segments: Vec::new(),
        active_file_bytes: 0,
    };
    let mut next: Option<LogIndex> = None;
    let mut term_at_snapshot = None;
    for (i, &first) in firsts.iter().enumerate() {
        let path = log_dir.join(segment_name(first));
        if next.is_some_and(|n| n != first) {
            let reason = format!(
                "segment starts at index {first}, expected {}",
                next.unwrap_or(0)
            );
            return Err(OpenError::corrupt(&path, 0, reason));
        }
        let is_last = i + 1 == firsts.len();
        let buf = Bytes::from(fs.read_file(&path).map_err(OpenError::io(&path))?);
        let scanned = segment::scan(&path, &buf, first, is_last)?;
        if !is_last && scanned.frames.is_empty() {
            return Err(OpenError::corrupt(
                &path,
                0,
                "empty segment before the last one",
            ));
        }
        log.active_file_bytes = buf.len() as u64;
        if let Some(err) = scanned.torn {
            cut_torn_tail(fs, &path, scanned.valid_bytes, buf.len(), err, sync)?;
            log.active_file_bytes = scanned.valid_bytes;
        }
        next = Some(first + scanned.frames.len() as u64);
        for (mut entry, offset) in scanned.frames {
            if entry.index == snap.index {
                term_at_snapshot = Some(entry.term);
            }
            if entry.index > snap.index {
                // Copied out, so the segment buffer (up to a whole segment,
                // much of it perhaps before the snapshot) is freed now
                // rather than held by a slice until the next compaction.
                entry.data = Bytes::copy_from_slice(&entry.data);
                log.entries.push(entry);
                log.offsets.push(offset);
            }
        }
        log.segments.push(Segment {
            first_index: first,
            len_bytes: scanned.valid_bytes,
        });
    }
    let continues =
        next.is_some_and(|n| n > snap.index) && term_at_snapshot.is_none_or(|t| t == snap.term);
    if !continues {
        if next.is_some() {
            tracing::warn!(
                snapshot_index = snap.index,
                "log does not continue the snapshot; discarding it"
            );
        }
        return reset(fs, log_dir, firsts, snap.index + 1, sync);
    }
    if let Some(first) = log.entries.first().filter(|e| e.index != snap.index + 1) {
        let path = log_dir.join(segment_name(firsts[0]));
        let reason = format!(
            "log resumes at index {} after a snapshot at {}",
            first.index, snap.index
        );
        return Err(OpenError::corrupt(&path, 0, reason));
    }
    Ok(log)
}

fn cut_torn_tail(
    fs: &dyn FileSystem,
    path: &Path,
    valid_bytes: u64,
    file_bytes: usize,
    err: crate::frame::FrameError,
    sync: bool,
) -> Result<(), OpenError> {
    tracing::warn!(
        file = %path.display(),
        offset = valid_bytes,
        dropped_bytes = file_bytes as u64 - valid_bytes,
        %err,
        "truncating a torn log tail"
    );
    let cut = || -> io::Result<()> {
        let mut file = fs.open_append(path, false)?;
        file.truncate(valid_bytes)?;
        if sync {
            file.sync_data()?;
        }
        Ok(())
    };
    cut().map_err(OpenError::io(path))
}

/// Replaces every segment with one empty segment starting at `first_index`.
fn reset(
    fs: &dyn FileSystem,
    log_dir: &Path,
    firsts: Vec<LogIndex>,
    first_index: LogIndex,
    sync: bool,
) -> Result<RecoveredLog, OpenError> {
    for first in firsts.into_iter().rev() {
        let path = log_dir.join(segment_name(first));
        fs.remove_file(&path).map_err(OpenError::io(&path))?;
    }
    let path = log_dir.join(segment_name(first_index));
    let mut file = fs.open_append(&path, true).map_err(OpenError::io(&path))?;
    file.truncate(0).map_err(OpenError::io(&path))?;
    if sync {
        fs.sync_dir(log_dir).map_err(OpenError::io(log_dir))?;
    }
    Ok(RecoveredLog {
        entries: Vec::new(),
        offsets: Vec::new(),
        segments: vec![Segment {
            first_index,
            len_bytes: 0,
        }],
        active_file_bytes: 0,
    })
}
