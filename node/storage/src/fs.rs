//! The file operations the storage uses, behind a trait so that tests can
//! inject faults (a failed fsync, a failed write) without touching the disk
//! layer's logic. [`RealFs`] is the production implementation;
//! [`crate::FaultyFs`] wraps it for tests.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

/// A file the storage appends to: the active log segment.
pub trait AppendFile: fmt::Debug + Send {
    /// Writes all of `data` at the end of the file (one `write` call where
    /// the OS allows: this is the group commit's single write).
    fn append(&mut self, data: &[u8]) -> io::Result<()>;

    /// Cuts the file to `len` bytes; later appends land at `len`.
    fn truncate(&mut self, len: u64) -> io::Result<()>;

    /// Makes everything written so far durable (`fdatasync`: the data and
    /// the size, not the timestamps).
    fn sync_data(&mut self) -> io::Result<()>;
}

/// Directory and whole-file operations.
pub trait FileSystem: fmt::Debug + Send + Sync {
    /// Creates `dir` and its parents if missing.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;

    /// The names of the regular files in `dir`.
    fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>>;

    /// The whole content of a file.
    fn read_file(&self, path: &Path) -> io::Result<Vec<u8>>;

    /// Creates (or truncates) `path`, writes `data`, and fsyncs it when
    /// `sync` is set. Used for the temporary file of an atomic replace.
    fn write_file(&self, path: &Path, data: &[u8], sync: bool) -> io::Result<()>;

    /// Opens `path` for appending, creating it if `create` is set.
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

impl AppendFile for RealAppendFile {
    fn append(&mut self, data: &[u8]) -> io::Result<()> {
        self.0.write_all(data)
    }

    fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }

    fn sync_data(&mut self) -> io::Result<()> {
        self.0.sync_data()
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

    fn write_file(&self, path: &Path, data: &[u8], sync: bool) -> io::Result<()> {
        let mut file = File::create(path)?;
        file.write_all(data)?;
        if sync {
            file.sync_data()?;
        }
        Ok(())
    }

    fn open_append(&self, path: &Path, create: bool) -> io::Result<Box<dyn AppendFile>> {
        // O_APPEND: every write lands at the current end, including after a
        // truncate, so no file position needs tracking.
        let file = OpenOptions::new().append(true).create(create).open(path)?;
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
