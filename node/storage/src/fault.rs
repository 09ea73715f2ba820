//! A fault-injecting [`FileSystem`] for tests: it behaves like [`RealFs`]
//! until told to fail the Nth fsync or write from now on. Every fsync the
//! storage issues (file data, directory, temporary file) counts.

use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::fs::{AppendFile, FileSync, FileSystem, RealFs};

#[derive(Debug, Default)]
struct Plan {
    fsyncs: u64,
    writes: u64,
    zero_fills: u64,
    fail_fsync_at: Option<u64>,
    fail_write_at: Option<u64>,
}

/// [`RealFs`] with injectable failures. Clones share one plan, so a test
/// keeps a clone to arm faults after handing one to the storage.
#[derive(Clone, Debug, Default)]
pub struct FaultyFs {
    plan: Arc<Mutex<Plan>>,
}

impl FaultyFs {
    /// A file system that fails nothing yet.
    pub fn new() -> FaultyFs {
        FaultyFs::default()
    }

    fn plan(&self) -> MutexGuard<'_, Plan> {
        // A panicking test thread poisons the lock; the counters are still
        // meaningful, so keep going.
        self.plan.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes the `n`th fsync from now (1 = the next one) and every later one
    /// fail.
    pub fn fail_fsync_after(&self, n: u64) {
        let mut plan = self.plan();
        plan.fail_fsync_at = Some(plan.fsyncs + n);
    }

    /// Makes the `n`th write from now (1 = the next one) and every later one
    /// fail.
    pub fn fail_write_after(&self, n: u64) {
        let mut plan = self.plan();
        plan.fail_write_at = Some(plan.writes + n);
    }

    /// Fsyncs issued so far (file and directory).
    pub fn fsync_count(&self) -> u64 {
        self.plan().fsyncs
    }

    /// Writes issued so far (log writes, zero fills and whole-file writes).
    pub fn write_count(&self) -> u64 {
        self.plan().writes
    }

    /// Zero fills of log segments issued so far (also counted as writes).
    pub fn zero_fill_count(&self) -> u64 {
        self.plan().zero_fills
    }

    fn fsync(&self) -> io::Result<()> {
        let mut plan = self.plan();
        plan.fsyncs += 1;
        match plan.fail_fsync_at {
            Some(at) if plan.fsyncs >= at => Err(io::Error::other("injected fsync failure")),
            _ => Ok(()),
        }
    }

    fn write(&self) -> io::Result<()> {
        let mut plan = self.plan();
        plan.writes += 1;
        match plan.fail_write_at {
            Some(at) if plan.writes >= at => Err(io::Error::other("injected write failure")),
            _ => Ok(()),
        }
    }
}

#[derive(Debug)]
struct FaultyAppendFile {
    inner: Box<dyn AppendFile>,
    fs: FaultyFs,
}

impl AppendFile for FaultyAppendFile {
    fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.fs.write()?;
        self.inner.write_at(offset, data)
    }

    fn fill_zeros(&mut self, offset: u64, len: u64) -> io::Result<()> {
        self.fs.write()?;
        self.fs.plan().zero_fills += 1;
        self.inner.fill_zeros(offset, len)
    }

    fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.inner.truncate(len)
    }

    fn sync_data(&mut self) -> io::Result<()> {
        self.fs.fsync()?;
        self.inner.sync_data()
    }

    fn sync_handle(&self) -> io::Result<Arc<dyn FileSync>> {
        Ok(Arc::new(FaultyFileSync {
            inner: self.inner.sync_handle()?,
            fs: self.fs.clone(),
        }))
    }
}

/// A deferred sync's handle: its fsyncs count and fail like the others.
#[derive(Debug)]
struct FaultyFileSync {
    inner: Arc<dyn FileSync>,
    fs: FaultyFs,
}

impl FileSync for FaultyFileSync {
    fn sync_data(&self) -> io::Result<()> {
        self.fs.fsync()?;
        self.inner.sync_data()
    }
}

impl FileSystem for FaultyFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        RealFs.create_dir_all(dir)
    }

    fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>> {
        RealFs.list_dir(dir)
    }

    fn read_file(&self, path: &Path) -> io::Result<Vec<u8>> {
        RealFs.read_file(path)
    }

    fn open_read(&self, path: &Path) -> io::Result<Box<dyn crate::fs::ReadAtFile>> {
        RealFs.open_read(path)
    }

    fn write_file(&self, path: &Path, data: &[u8], sync: bool) -> io::Result<()> {
        self.write()?;
        RealFs.write_file(path, data, false)?;
        if sync {
            self.fsync()?;
        }
        Ok(())
    }

    fn open_append(&self, path: &Path, create: bool) -> io::Result<Box<dyn AppendFile>> {
        Ok(Box::new(FaultyAppendFile {
            inner: RealFs.open_append(path, create)?,
            fs: self.clone(),
        }))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        RealFs.rename(from, to)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        RealFs.remove_file(path)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.fsync()?;
        RealFs.sync_dir(dir)
    }
}
