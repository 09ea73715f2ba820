//! A backup spooled to disk: the store's encoding goes to a temporary file
//! in the member's data directory as it is produced, then the snapshot file
//! is streamed from it, so a backup costs a chunk of memory, not the
//! encoded store.
//!
//! Why a file and not an encoding straight into the stream: the file's
//! header carries the store's length, known only once it is encoded; and
//! the frozen view of the store the encoder reads pins the versions that
//! later writes replace, so it is let go once encoded, not after the
//! slowest client has downloaded the file.

use super::file::{SnapshotChunks, SnapshotHeader};
use flotilla_storage::pacing::PacedFile;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// The temporary file a backup is spooled to, in the data directory. One
/// name, so there is at most one spool on disk: a member saves one backup
/// at a time (the Maintenance service holds a permit while it does), and
/// a spool left by a crash is replaced by the next backup or removed at
/// start ([`remove_stale_spool`]).
pub const SPOOL_FILE: &str = "backup-spool.tmp";

/// The spool file, open for reading from its start; removed from the disk
/// when dropped (the download finished, failed, or the client went away).
#[derive(Debug)]
struct Spool {
    path: PathBuf,
    file: File,
}

impl Read for Spool {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.file.read(buf)
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_file(&self.path)
            && e.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!(path = %self.path.display(), error = %e, "cannot remove a backup spool");
        }
    }
}

/// The snapshot file of the store that `encode` writes (a KvStore snapshot
/// encoding, e.g. `KvStore::encode_snapshot_to` of a frozen view),
/// described by `header`: the encoding is spooled to [`SPOOL_FILE`] in
/// `dir` (replacing a leftover), then handed out by the returned chunks of
/// at most `chunk_bytes`, read back from the spool as they are asked for.
/// The spool is removed when the chunks are dropped, or here if encoding
/// fails. Memory: the encoder's piece and one chunk, whatever the store's
/// size. Blocking: call it off the async threads, on a thread of low
/// priority ([`flotilla_storage::priority::lower_this_thread`]): it is
/// background work, as writing a Raft snapshot is.
///
/// The spool is worthless after a crash, and is read back at once, from
/// the page cache; but it is written as a Raft snapshot is, its data
/// synced every few MiB ([`flotilla_storage::pacing::PacedFile`]), so a
/// backup of gigabytes never leaves gigabytes of dirty pages for the kernel
/// to flush in one burst onto the disk the Raft log fsyncs to.
pub fn spool_snapshot(
    dir: &Path,
    header: SnapshotHeader,
    encode: impl FnOnce(&mut dyn Write) -> io::Result<()>,
    chunk_bytes: usize,
) -> io::Result<SnapshotChunks> {
    let path = dir.join(SPOOL_FILE);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)?;
    // From here on a failure drops the spool, which removes the file.
    let mut spool = Spool { path, file };
    let mut sink = PacedFile::new(&spool.file);
    encode(&mut sink)?;
    let (store_bytes, syncs) = (sink.written(), sink.syncs());
    spool.file.seek(SeekFrom::Start(0))?;
    let chunks = SnapshotChunks::from_reader(header, Box::new(spool), store_bytes, chunk_bytes);
    Ok(chunks.spooled_with_syncs(syncs))
}

/// Removes a spool a crash left in the data directory `dir`: called as a
/// member starts, before any backup can be under way.
pub fn remove_stale_spool(dir: &Path) -> io::Result<()> {
    match std::fs::remove_file(dir.join(SPOOL_FILE)) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}
