//! Pacing a large file written in one go (a snapshot, a backup's spool):
//! its data is synced every [`SYNC_EVERY_BYTES`] on the way, so the kernel
//! never holds much of it dirty at once. Without that, hundreds of
//! megabytes sit dirty in the page cache and are flushed in one burst (by
//! the final fsync, or by writeback), and the Raft log's own fdatasyncs on
//! the same disk queue behind the burst.

use std::fs::File;
use std::io::{self, Write};

/// Bytes written between two syncs. Each sync flushes at most this much,
/// which a disk writing a few hundred MB/s does in a few tens of
/// milliseconds, about what a log fsync may wait behind once; smaller
/// pieces would cost more fsyncs (and journal commits, the file growing)
/// for little gain.
pub const SYNC_EVERY_BYTES: u64 = 8 << 20;

/// Where the syncs of a file written from start to end fall: a write is
/// cut at the next sync point ([`SyncPacer::piece`]), so one large write is
/// paced too, and [`SyncPacer::wrote`] says when to sync.
#[derive(Clone, Debug, Default)]
pub struct SyncPacer {
    unsynced: u64,
}

impl SyncPacer {
    /// How much of a write of `len` bytes to make before the next sync.
    pub fn piece(&self, len: usize) -> usize {
        (len as u64).min(SYNC_EVERY_BYTES - self.unsynced) as usize
    }

    /// Counts `n` bytes written (at most [`SyncPacer::piece`]); whether the
    /// file is due a sync now.
    pub fn wrote(&mut self, n: usize) -> bool {
        self.unsynced += n as u64;
        if self.unsynced >= SYNC_EVERY_BYTES {
            self.unsynced = 0;
            return true;
        }
        false
    }
}

/// A file written from its current position on through [`Write`], its
/// data synced (`fdatasync`) every [`SYNC_EVERY_BYTES`]; it counts the
/// bytes written and the syncs made. No buffer of its own: each write goes
/// to the file (cut at sync points).
#[derive(Debug)]
pub struct PacedFile<'a> {
    file: &'a File,
    pacer: SyncPacer,
    written: u64,
    syncs: u64,
}

impl<'a> PacedFile<'a> {
    /// Writes to `file`.
    pub fn new(file: &'a File) -> Self {
        PacedFile {
            file,
            pacer: SyncPacer::default(),
            written: 0,
            syncs: 0,
        }
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Syncs made so far.
    pub fn syncs(&self) -> u64 {
        self.syncs
    }
}

impl Write for PacedFile<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let piece = self.pacer.piece(buf.len());
        let n = self.file.write(&buf[..piece])?;
        self.written += n as u64;
        if self.pacer.wrote(n) {
            self.file.sync_data()?;
            self.syncs += 1;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syncs_fall_every_few_mib_however_the_writes_are_cut() {
        let dir = tempfile::tempdir().unwrap();
        let file = File::create(dir.path().join("f")).unwrap();
        let mut paced = PacedFile::new(&file);
        // One write larger than a piece, then many small ones.
        paced
            .write_all(&vec![1u8; (SYNC_EVERY_BYTES + 100) as usize])
            .unwrap();
        assert_eq!(paced.syncs(), 1);
        let small = vec![2u8; 4096];
        while paced.written() < 3 * SYNC_EVERY_BYTES {
            paced.write_all(&small).unwrap();
        }
        assert_eq!(paced.syncs(), 3);
        assert_eq!(file.metadata().unwrap().len(), paced.written());
    }
}
