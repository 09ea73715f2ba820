//! A backup (what Maintenance Snapshot streams) of a store of tens of MB is
//! spooled and sent in bounded memory: the bytes the saving thread
//! allocates are counted (this test binary's global allocator is
//! `allocation-counter`'s, which counts per thread), and must stay far
//! below the encoded store. The spool is synced every few MiB as it is
//! written, the file sent reads back as the same store, and the spool is
//! gone once the chunks are.

use flotilla_node::backup::{SPOOL_FILE, SnapshotHeader, read_snapshot, spool_snapshot};
use flotilla_node::kv::{KvConfig, KvStore};
use std::io::Write;

#[path = "common/big_store.rs"]
mod big_store;
use big_store::store;

/// What the Maintenance service sends per message.
const CHUNK_BYTES: usize = 64 << 10;
/// What saving may allocate at once: the encoder's piece (256 KiB and a
/// quarter), a chunk, the store's small tables; far below the store.
const PEAK_BYTES_MAX: u64 = 4 << 20;

fn header(s: &KvStore) -> SnapshotHeader {
    SnapshotHeader {
        cluster_id: 7,
        member_id: 2,
        applied_index: s.applied_index(),
        revision: s.revision(),
        compact_revision: s.compact_revision(),
        server_version: "test".into(),
        ..Default::default()
    }
}

#[test]
fn a_backup_of_tens_of_mb_is_sent_in_bounded_memory_and_reads_back() {
    let s = store();
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join(SPOOL_FILE);
    let out_path = dir.path().join("backup.db");
    let mut out = std::fs::File::create(&out_path).unwrap();
    let (mut messages, mut spooled_while_sending, mut syncs) = (0usize, false, 0);
    let frozen = s.clone(); // what the driver hands over: O(1)
    let info = allocation_counter::measure(|| {
        let encode = |w: &mut dyn Write| frozen.encode_snapshot_to(w);
        let mut chunks = spool_snapshot(dir.path(), header(&s), encode, CHUNK_BYTES).unwrap();
        syncs = chunks.spool_syncs();
        let total = chunks.total_bytes();
        let mut sent = 0u64;
        while let Some(chunk) = chunks.next_chunk().unwrap() {
            assert!(!chunk.is_empty() && chunk.len() <= CHUNK_BYTES);
            sent += chunk.len() as u64;
            // etcd's remaining_bytes: what follows this message.
            assert_eq!(chunks.remaining_bytes(), total - sent);
            if messages == 0 {
                spooled_while_sending = spool.exists();
            }
            messages += 1;
            out.write_all(&chunk).unwrap();
        }
        assert_eq!(sent, total);
    });
    let encoded = s.encode_snapshot();
    assert!(
        encoded.len() > 40 << 20,
        "a store of {} bytes",
        encoded.len()
    );
    eprintln!(
        "{} bytes allocated at once while a backup of a {}-byte store was saved",
        info.bytes_max,
        encoded.len()
    );
    assert!(
        info.bytes_max < PEAK_BYTES_MAX,
        "{} bytes allocated at once while a backup of a {}-byte store was saved (bound {PEAK_BYTES_MAX})",
        info.bytes_max,
        encoded.len()
    );
    assert!(spooled_while_sending, "the store was sent from its spool");
    // Paced as a Raft snapshot is: synced every 8 MiB on the way.
    assert!(
        syncs >= (encoded.len() >> 23) as u64,
        "{syncs} syncs while spooling {} bytes",
        encoded.len()
    );
    assert!(!spool.exists(), "the spool is removed with the chunks");
    assert!(messages > 100, "{messages} messages");
    let bytes = std::fs::read(&out_path).unwrap();

    // The restore round trip: the file checks, and holds the same store.
    let file = read_snapshot(&bytes).unwrap();
    assert_eq!(file.header.store_bytes, encoded.len() as u64);
    assert_eq!(file.header.revision, s.revision());
    assert_eq!(file.store, &encoded[..]);
    let restored = KvStore::decode_snapshot(KvConfig::default(), file.store).unwrap();
    assert_eq!(restored.revision(), s.revision());
    assert_eq!(restored.encode_snapshot(), encoded);
}

#[test]
fn a_failed_encoding_leaves_no_spool() {
    let dir = tempfile::tempdir().unwrap();
    let failing = |w: &mut dyn Write| {
        w.write_all(&[1u8; 1000])?;
        Err(std::io::Error::other("the encoder failed"))
    };
    let e =
        spool_snapshot(dir.path(), SnapshotHeader::default(), failing, CHUNK_BYTES).unwrap_err();
    assert_eq!(e.to_string(), "the encoder failed");
    assert!(!dir.path().join(SPOOL_FILE).exists());
}
