//! Snapshots moved chunk by chunk, never held whole: a leader reads the
//! chunk it sends from the snapshot's file ([`DiskStorage::read_chunk`]); a
//! follower appends each chunk it receives to a temporary file
//! ([`Receiving`]), which becomes the snapshot's file when it is installed,
//! and the state machine is restored from a reader over that file
//! ([`SnapshotFileReader`]).
//!
//! What a leader sends with a snapshot — its length and the CRC-32 of its
//! data — is known without reading the file: it is computed while the file
//! is written (or read at open) and kept in a [`SnapshotSums`].

use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use flotilla_raft::{Snapshot, SnapshotMeta, SnapshotSource, Storage, StorageError};

use crate::disk::{DiskStorage, SNAPSHOT_DIR};
use crate::fs::{AppendFile, ReadAtFile};
use crate::meta_files::{
    TMP_SUFFIX, snapshot_data_offset, snapshot_file_crc, snapshot_header_of, snapshot_name,
};

/// Bytes a [`SnapshotFileReader`] reads at once.
const READ_PIECE_BYTES: usize = 1 << 20;

/// The length and data checksum of the newest snapshot file, shared with
/// the thread that writes a snapshot the application took.
pub(crate) type SnapshotSums = Arc<Mutex<Option<SnapshotSource>>>;

/// A snapshot being received from the leader, in a temporary file of the
/// snapshot folder (removed at open if a crash leaves it).
#[derive(Debug)]
pub(crate) struct Receiving {
    meta: SnapshotMeta,
    path: PathBuf,
    file: Box<dyn AppendFile>,
    data_at: u64,
    received_bytes: u64,
    crc: crc32fast::Hasher,
    /// Header and CRC written: waiting for `apply_snapshot`.
    complete: bool,
}

/// The data of a snapshot file, read in pieces through a file handle held
/// open (a rename or removal of the path does not disturb it). When the
/// data's CRC is known, the reader checks it as it reads: the read that
/// reaches the end fails if the data changed since it was checked.
#[derive(Debug)]
pub struct SnapshotFileReader {
    file: Box<dyn ReadAtFile>,
    at: u64,
    end: u64,
    buf: Vec<u8>,
    buf_at: usize,
    /// The CRC-32 of what was read so far, and what it must come to.
    check: Option<(crc32fast::Hasher, u32)>,
}

impl io::Read for SnapshotFileReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.buf_at == self.buf.len() {
            let want = (self.end - self.at).min(READ_PIECE_BYTES as u64) as usize;
            if want == 0 {
                if let Some((crc, expected)) = self.check.take()
                    && crc.finalize() != expected
                {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "snapshot data fails its CRC",
                    ));
                }
                return Ok(0);
            }
            self.buf.resize(want, 0);
            let n = self.file.read_at(self.at, &mut self.buf)?;
            if n < want {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "snapshot file shorter than its header says",
                ));
            }
            if let Some((crc, _)) = &mut self.check {
                crc.update(&self.buf);
            }
            self.at += n as u64;
            self.buf_at = 0;
        }
        let n = out.len().min(self.buf.len() - self.buf_at);
        out[..n].copy_from_slice(&self.buf[self.buf_at..self.buf_at + n]);
        self.buf_at += n;
        Ok(n)
    }
}

fn fatal(what: &str, path: &std::path::Path, e: impl std::fmt::Display) -> StorageError {
    StorageError::Fatal(format!("{what} {}: {e}", path.display()))
}

impl DiskStorage {
    fn snapshot_path(&self, meta: &SnapshotMeta) -> PathBuf {
        self.dir.join(SNAPSHOT_DIR).join(snapshot_name(meta))
    }

    /// Records the length and data checksum of the snapshot file at `meta`.
    pub(crate) fn note_sums(&self, meta: &SnapshotMeta, len_bytes: u64, crc: u32) {
        let mut sums = self.snapshot_sums.lock().expect("never poisoned");
        if sums.as_ref().is_none_or(|s| s.meta.index <= meta.index) {
            *sums = Some(SnapshotSource {
                meta: meta.clone(),
                len_bytes,
                crc,
            });
        }
    }

    /// See [`flotilla_raft::Storage::snapshot_source`]. The sums are known
    /// unless something unforeseen lost them; then the file is read once, a
    /// piece at a time, to compute them.
    pub(crate) fn source(&self) -> Result<SnapshotSource, StorageError> {
        let meta = self.mirror.snapshot()?.meta;
        if meta.index == 0 {
            return Ok(SnapshotSource {
                meta,
                ..SnapshotSource::default()
            });
        }
        if let Some(s) = &*self.snapshot_sums.lock().expect("never poisoned")
            && s.meta == meta
        {
            return Ok(s.clone());
        }
        tracing::warn!(
            index = meta.index,
            "snapshot checksum unknown; reading the file for it"
        );
        let mut reader = self.open_snapshot_file(&meta, &self.snapshot_path(&meta), None)?;
        let len_bytes = reader.end - reader.at;
        let mut crc = crc32fast::Hasher::new();
        let mut piece = vec![0; READ_PIECE_BYTES];
        loop {
            let n = io::Read::read(&mut reader, &mut piece)
                .map_err(|e| fatal("reading snapshot", &self.snapshot_path(&meta), e))?;
            if n == 0 {
                break;
            }
            crc.update(&piece[..n]);
        }
        let crc = crc.finalize();
        self.note_sums(&meta, len_bytes, crc);
        Ok(SnapshotSource {
            meta,
            len_bytes,
            crc,
        })
    }

    /// Opens the snapshot file at `path` (of the snapshot at `meta`) for
    /// its data: the length comes from the header, checked against the
    /// file's size; the data's CRC, when given, is checked as it is read.
    fn open_snapshot_file(
        &self,
        meta: &SnapshotMeta,
        path: &std::path::Path,
        crc: Option<u32>,
    ) -> Result<SnapshotFileReader, StorageError> {
        let file = self
            .fs
            .open_read(path)
            .map_err(|e| fatal("opening snapshot", path, e))?;
        let data_at = snapshot_data_offset(meta);
        let mut len = [0u8; 8];
        let n = file
            .read_at(data_at - 8, &mut len)
            .map_err(|e| fatal("reading snapshot", path, e))?;
        if n < 8 {
            return Err(fatal("reading snapshot", path, "file too short"));
        }
        let len = u64::from_le_bytes(len);
        Ok(SnapshotFileReader {
            file,
            at: data_at,
            end: data_at + len,
            buf: Vec::new(),
            buf_at: 0,
            check: crc.map(|c| (crc32fast::Hasher::new(), c)),
        })
    }

    /// See [`flotilla_raft::Storage::snapshot_chunk`]: one `pread`.
    pub(crate) fn read_chunk(
        &self,
        meta: &SnapshotMeta,
        offset: u64,
        max_bytes: u64,
    ) -> Result<Bytes, StorageError> {
        let held = self.mirror.snapshot()?.meta;
        if held != *meta {
            return Err(StorageError::Compacted(meta.index));
        }
        let path = self.snapshot_path(meta);
        let file = match self.fs.open_read(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(StorageError::Compacted(meta.index));
            }
            Err(e) => return Err(fatal("opening snapshot", &path, e)),
        };
        let len_bytes = self.source()?.len_bytes;
        let want = len_bytes.saturating_sub(offset).min(max_bytes) as usize;
        let mut buf = vec![0; want];
        let n = file
            .read_at(snapshot_data_offset(meta) + offset, &mut buf)
            .map_err(|e| fatal("reading snapshot", &path, e))?;
        if n < want {
            return Err(fatal(
                "reading snapshot",
                &path,
                "file shorter than its header says",
            ));
        }
        Ok(Bytes::from(buf))
    }

    /// See [`flotilla_raft::Storage::receive_snapshot_chunk`].
    pub(crate) fn receive_chunk(
        &mut self,
        meta: &SnapshotMeta,
        offset: u64,
        data: &[u8],
    ) -> Result<(), StorageError> {
        if offset == 0 {
            self.receiving = None;
            let dir = self.dir.join(SNAPSHOT_DIR);
            let path = dir.join(format!("{}.recv{TMP_SUFFIX}", snapshot_name(meta)));
            let mut file = self
                .fs
                .open_append(&path, true)
                .map_err(|e| fatal("creating", &path, e))?;
            file.truncate(0)
                .map_err(|e| fatal("truncating", &path, e))?;
            self.receiving = Some(Receiving {
                meta: meta.clone(),
                path,
                file,
                data_at: snapshot_data_offset(meta),
                received_bytes: 0,
                crc: crc32fast::Hasher::new(),
                complete: false,
            });
        }
        let Some(r) = self
            .receiving
            .as_mut()
            .filter(|r| r.meta == *meta && r.received_bytes == offset && !r.complete)
        else {
            self.receiving = None;
            return Err(StorageError::Unavailable(meta.index));
        };
        if let Err(e) = r.file.write_at(r.data_at + offset, data) {
            let e = fatal("writing", &r.path, e);
            self.receiving = None;
            return Err(e);
        }
        r.crc.update(data);
        r.received_bytes += data.len() as u64;
        Ok(())
    }

    /// See [`flotilla_raft::Storage::received_snapshot`]: writes the header
    /// and the trailing CRC around the received data; the file is made
    /// durable and renamed into place by `apply_snapshot`.
    pub(crate) fn finish_receiving(
        &mut self,
        meta: &SnapshotMeta,
    ) -> Result<Snapshot, StorageError> {
        let Some(r) = self
            .receiving
            .as_mut()
            .filter(|r| r.meta == *meta && !r.complete)
        else {
            return Err(StorageError::Unavailable(meta.index));
        };
        let header = snapshot_header_of(meta, r.received_bytes);
        debug_assert_eq!(header.len() as u64, r.data_at);
        let file_crc = snapshot_file_crc(&header, &r.crc);
        let written = r.file.write_at(0, &header).and_then(|()| {
            r.file
                .write_at(r.data_at + r.received_bytes, &file_crc.to_le_bytes())
        });
        if let Err(e) = written {
            let e = fatal("writing", &r.path, e);
            self.receiving = None;
            return Err(e);
        }
        r.complete = true;
        Ok(Snapshot {
            meta: meta.clone(),
            data: Bytes::new(),
        })
    }

    /// The received snapshot at `meta`, complete, if that is what
    /// `apply_snapshot` is given: its file becomes the snapshot's file
    /// (fsynced, renamed, directory fsynced). Returns whether it did.
    pub(crate) fn install_received(&mut self, snapshot: &Snapshot) -> io::Result<bool> {
        let staged = self
            .receiving
            .as_ref()
            .is_some_and(|r| r.complete && r.meta == snapshot.meta);
        if !staged || !snapshot.data.is_empty() {
            return Ok(false);
        }
        let mut r = self.receiving.take().expect("checked");
        let sync = self.sync();
        if sync {
            r.file.sync_data()?;
        }
        drop(r.file);
        let dir = self.dir.join(SNAPSHOT_DIR);
        self.fs.rename(&r.path, &dir.join(snapshot_name(&r.meta)))?;
        if sync {
            self.fs.sync_dir(&dir)?;
        }
        self.note_sums(&r.meta, r.received_bytes, r.crc.finalize());
        Ok(true)
    }

    /// See [`flotilla_raft::Storage::snapshot_reader`]: the received file
    /// not yet installed, or the held snapshot's file.
    pub(crate) fn reader(
        &self,
        meta: &SnapshotMeta,
    ) -> Result<Option<SnapshotFileReader>, StorageError> {
        if let Some(r) = self
            .receiving
            .as_ref()
            .filter(|r| r.complete && r.meta == *meta)
        {
            let crc = r.crc.clone().finalize();
            return self.open_snapshot_file(meta, &r.path, Some(crc)).map(Some);
        }
        if meta.index != 0 && self.mirror.snapshot()?.meta == *meta {
            let crc = self.source()?.crc;
            return self
                .open_snapshot_file(meta, &self.snapshot_path(meta), Some(crc))
                .map(Some);
        }
        Ok(None)
    }
}
