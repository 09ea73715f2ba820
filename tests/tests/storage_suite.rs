//! The shared storage suite (`flotilla_tests::storage_suite`) run against
//! both implementations: `MemStorage` and the on-disk `DiskStorage`.
//!
//! Only `DiskStorage` runs the durability half. `MemStorage` has nothing to
//! lose in a restart: the simulation "restarts" a member by handing the same
//! object back, so a reopen could only return it, and a suite run that way
//! would pass whatever the storage does.

use flotilla_raft::{ConfState, MemStorage};
use flotilla_storage::{DiskStorage, StorageOptions};
use flotilla_tests::storage_suite::{self, VOTERS};
use std::path::{Path, PathBuf};
use tempfile::TempDir;

/// Small segments, so the suite's writes roll several of them.
fn options() -> StorageOptions {
    StorageOptions {
        segment_bytes_max: 256,
        bootstrap: Some(ConfState {
            voters: VOTERS.to_vec(),
            learners: Vec::new(),
        }),
        ..StorageOptions::new(0xF1, 1)
    }
}

/// Fresh directories, kept until the test ends.
#[derive(Default)]
struct Dirs(Vec<TempDir>);

impl Dirs {
    fn fresh(&mut self) -> PathBuf {
        self.0.push(tempfile::tempdir().expect("temp dir"));
        self.0.last().expect("just pushed").path().to_path_buf()
    }
}

fn open(dir: &Path) -> DiskStorage {
    DiskStorage::open(dir, options()).expect("open")
}

#[test]
fn memory_storage_passes_the_suite() {
    storage_suite::run_all(|| MemStorage::new_with_voters(&VOTERS));
}

#[test]
fn disk_storage_passes_the_suite() {
    let mut dirs = Dirs::default();
    storage_suite::run_all(|| open(&dirs.fresh()));
}

#[test]
fn disk_storage_passes_the_durability_suite() {
    let mut dirs = Dirs::default();
    storage_suite::run_durability(|old: Option<DiskStorage>| match old {
        Some(s) => {
            let dir = s.dir().to_path_buf();
            drop(s);
            open(&dir)
        }
        None => open(&dirs.fresh()),
    });
}
