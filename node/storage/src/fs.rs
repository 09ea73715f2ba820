//! The file operations the storage uses, behind a trait so that tests can
//! inject faults (a failed fsync, a failed write) without touching the disk
//! layer's logic. [`RealFs`] is the production implementation;
//! [`crate::FaultyFs`] wraps it for tests.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

/// A file the storage writes its log to: the active segment. The storage
/// tracks where the valid frames end and writes there; the file may be
/// longer, its tail zeros written ahead of time (see
/// [`crate::StorageOptions::preallocate_bytes`]).
pub trait AppendFile: fmt::Debug + Send {
    /// Writes all of `data` at byte `offset` (one `pwrite` call where the
    /// OS allows: this is the group commit's single write).
    fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()>;

    /// Writes `len` zero bytes at byte `offset`: blocks allocated and
    /// written now, so that later writes over them, and their fsyncs,
    /// change no file metadata.
    fn fill_zeros(&mut self, offset: u64, len: u64) -> io::Result<()>;

    /// Cuts (or extends with a hole) the file to `len` bytes.
    fn truncate(&mut self, len: u64) -> io::Result<()>;

    /// Makes everything written so far durable (`fdatasync`: the data and
    /// the size, not the timestamps).
    fn sync_data(&mut self) -> io::Result<()>;

    /// A second handle on the same file that syncs it from another thread
    /// (a deferred sync: `fdatasync` flushes every write made before it,
    /// through any handle).
    fn sync_handle(&self) -> io::Result<Arc<dyn FileSync>>;
}

/// Syncs an [`AppendFile`] from another thread.
pub trait FileSync: fmt::Debug + Send + Sync {
    /// `fdatasync` of the file.
    fn sync_data(&self) -> io::Result<()>;
}

/// A file opened for positioned reads (a snapshot sent or installed chunk
/// by chunk). It stays readable after the path is renamed or removed.
pub trait ReadAtFile: fmt::Debug + Send + Sync {
    /// Reads up to `buf.len()` bytes at byte `offset`; fewer only at the end
    /// of the file.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize>;
}

/// Directory and whole-file operations.
pub trait FileSystem: fmt::Debug + Send + Sync {
    /// Creates `dir` and its parents if missing.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;

    /// The names of the regular files in `dir`.
    fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>>;

    /// The whole content of a file.
    fn read_file(&self, path: &Path) -> io::Result<Vec<u8>>;

    /// Opens `path` for positioned reads.
    fn open_read(&self, path: &Path) -> io::Result<Box<dyn ReadAtFile>>;

    /// Creates (or truncates) `path`, writes `data`, and fsyncs it when
    /// `sync` is set. Used for the temporary file of an atomic replace.
    fn write_file(&self, path: &Path, data: &[u8], sync: bool) -> io::Result<()>;

    /// Opens `path` for writing (not truncated), creating it if `create` is
    /// set.
    fn open_append(&self, path: &Path, create: bool) -> io::Result<Box<dyn AppendFile>>;

    /// Atomically renames `from` to `to`, replacing `to`.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;

    /// Removes a file.
    fn remove_file(&self, path: &Path) -> io::Result<()>;

    /// Makes the directory's entries (creations, renames, removals) durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
}

/// The real file system.
#[derive(Clone, Copy, Debug, Default)]
pub struct RealFs;

#[derive(Debug)]
struct RealAppendFile(File);

/// Zeros for [`AppendFile::fill_zeros`], written in pieces of this size.
static ZEROS: [u8; 64 << 10] = [0; 64 << 10];

impl AppendFile for RealAppendFile {
    fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.0.write_all_at(data, offset)
    }

    fn fill_zeros(&mut self, offset: u64, len: u64) -> io::Result<()> {
        let mut at = offset;
        while at < offset + len {
            let n = (offset + len - at).min(ZEROS.len() as u64);
            self.0.write_all_at(&ZEROS[..n as usize], at)?;
            at += n;
        }
        Ok(())
    }

    fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }

    fn sync_data(&mut self) -> io::Result<()> {
        self.0.sync_data()
    }

    fn sync_handle(&self) -> io::Result<Arc<dyn FileSync>> {
        Ok(Arc::new(RealFileSync(self.0.try_clone()?)))
    }
}

#[derive(Debug)]
struct RealFileSync(File);

impl FileSync for RealFileSync {
    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }
}

#[derive(Debug)]
struct RealReadFile(File);

impl ReadAtFile for RealReadFile {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let mut done = 0;
        while done < buf.len() {
            match self.0.read_at(&mut buf[done..], offset + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(done)
    }
}

impl FileSystem for RealFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        fs::create_dir_all(dir)
    }

    fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            if entry.file_type()?.is_file() {
                names.push(entry.file_name().to_string_lossy().into_owned());
            }
        }
        names.sort();
        Ok(names)
    }

    fn read_file(&self, path: &Path) -> io::Result<Vec<u8>> {
        fs::read(path)
    }

    fn open_read(&self, path: &Path) -> io::Result<Box<dyn ReadAtFile>> {
        Ok(Box::new(RealReadFile(File::open(path)?)))
    }

    fn write_file(&self, path: &Path, data: &[u8], sync: bool) -> io::Result<()> {
        let mut file = File::create(path)?;
        file.write_all(data)?;
        if sync {
            file.sync_data()?;
        }
        Ok(())
    }

    fn open_append(&self, path: &Path, create: bool) -> io::Result<Box<dyn AppendFile>> {
        // Not O_APPEND: writes are positioned (`pwrite`), because the file
        // may already be longer than its valid frames.
        let file = OpenOptions::new().write(true).create(create).open(path)?;
        Ok(Box::new(RealAppendFile(file)))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }
}
