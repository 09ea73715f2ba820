//! The identity stamp as a restarting member reads it before it opens its
//! data directory.

use flotilla_storage::{DiskStorage, IDENTITY_FILE, StorageOptions};

#[test]
fn the_stamp_is_read_back_and_damage_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    assert_eq!(
        DiskStorage::read_identity(dir.path()).expect("no stamp"),
        None
    );
    let storage = DiskStorage::open(dir.path(), StorageOptions::new(0xc1, 0x3e)).expect("open");
    drop(storage);
    assert_eq!(
        DiskStorage::read_identity(dir.path()).expect("stamp"),
        Some((0xc1, 0x3e))
    );
    let path = dir.path().join(IDENTITY_FILE);
    let mut bytes = std::fs::read(&path).expect("read");
    let last = bytes.len() - 1;
    bytes[last] ^= 0x40;
    std::fs::write(&path, bytes).expect("write");
    assert!(DiskStorage::read_identity(dir.path()).is_err());
}
