//! A snapshot far larger than a chunk travels from a leader's file to a
//! follower's file without either side holding it whole (Raft §7, chunked
//! InstallSnapshot): three cores over `DiskStorage`, one thread, the bytes
//! it allocates counted.
//!
//! The follower's installation here reads the data back through
//! `Storage::snapshot_reader` as a state machine would; what the
//! application then builds from it is its own memory.

use bytes::Bytes;
use flotilla_raft::{ConfState, Config, Message, NodeId, Raft, Ready, Storage};
use flotilla_storage::{DiskStorage, FsyncMode, StorageOptions};
use std::io::Read;
use std::path::Path;

/// The snapshot's data: many chunks, many read pieces.
const SNAPSHOT_BYTES: usize = 24 << 20;
const CHUNK_BYTES: u64 = 64 << 10;
/// What either side may allocate at most while the snapshot moves: a few
/// chunks in flight, the reader's piece, bookkeeping; a sixth of the data.
const PEAK_BYTES_MAX: u64 = (SNAPSHOT_BYTES / 6) as u64;

type Core = Raft<DiskStorage>;

fn open(dir: &Path, id: u64) -> DiskStorage {
    let mut options = StorageOptions::new(7, id);
    options.fsync = FsyncMode::Never;
    options.bootstrap = Some(ConfState {
        voters: (1..=3).map(NodeId).collect(),
        learners: Vec::new(),
    });
    DiskStorage::open(dir.join(format!("m{id}")), options).expect("open")
}

fn core(dir: &Path, id: u64) -> Core {
    let mut config = Config::new(NodeId(id));
    config.seed = id;
    config.max_snapshot_chunk_bytes = CHUNK_BYTES;
    config.max_inflight_bytes = 4 * CHUNK_BYTES;
    Raft::new(config, open(dir, id)).expect("valid")
}

/// Follows the driver contract for one member; returns its messages and
/// what it read of an installed snapshot (length, CRC).
fn handle(core: &mut Core) -> (Vec<Message>, Option<(usize, u32)>) {
    let mut out = Vec::new();
    let mut installed = None;
    while core.has_ready() {
        let ready: Ready = core.ready().expect("storage");
        if let Some(snapshot) = &ready.snapshot {
            let mut reader = core
                .storage()
                .snapshot_reader(&snapshot.meta)
                .expect("storage")
                .expect("a received snapshot is read from its file");
            core.storage_mut()
                .apply_snapshot(snapshot.clone())
                .expect("install");
            let (mut len, mut crc, mut piece) = (0, crc32fast::Hasher::new(), vec![0; 64 << 10]);
            loop {
                let n = reader.read(&mut piece).expect("read");
                if n == 0 {
                    break;
                }
                len += n;
                crc.update(&piece[..n]);
            }
            installed = Some((len, crc.finalize()));
        }
        core.storage_mut()
            .save(ready.hard_state.as_ref(), &ready.entries)
            .expect("save");
        out.extend(ready.messages);
        core.advance();
    }
    (out, installed)
}

/// Delivers messages among `cores` (index = id - 1) until none is left,
/// dropping those to or from a member not `up`. Returns what a member
/// installed.
fn pump(cores: &mut [Core], up: &[bool], mut queue: Vec<Message>) -> Option<(usize, u32)> {
    let mut installed = None;
    for _ in 0..100_000 {
        for (i, core) in cores.iter_mut().enumerate() {
            if up[i] {
                let (sent, got) = handle(core);
                queue.extend(sent);
                installed = installed.or(got);
            }
        }
        if queue.is_empty() {
            return installed;
        }
        for m in std::mem::take(&mut queue) {
            let (from, to) = (m.from.0 as usize - 1, m.to.0 as usize - 1);
            if up[from] && up[to] {
                cores[to].step(m);
            }
        }
    }
    panic!("messages never stopped");
}

#[test]
fn a_large_snapshot_moves_file_to_file_within_a_bounded_memory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cores: Vec<Core> = (1..=3).map(|id| core(dir.path(), id)).collect();
    let mut up = [true, true, false];
    // Member 1 or 2 leads the two; 3 hears nothing.
    for _ in 0..100 {
        if cores[0].status().soft_state.leader != NodeId(0) {
            break;
        }
        cores[0].tick();
        cores[1].tick();
        pump(&mut cores, &up, Vec::new());
    }
    let leader = cores[0].status().soft_state.leader.0 as usize - 1;
    assert!(leader < 2, "member 1 or 2 leads");
    for i in 0..5 {
        cores[leader]
            .propose(Bytes::from(format!("c{i}")))
            .expect("leader");
        pump(&mut cores, &up, Vec::new());
    }
    // The leader snapshots a large state and compacts its log away.
    let data: Vec<u8> = (0..SNAPSHOT_BYTES).map(|i| (i * 7 % 251) as u8).collect();
    let want = (data.len(), crc32fast::hash(&data));
    let meta = cores[leader].compact(Bytes::from(data)).expect("compact");
    assert!(cores[leader].storage().first_index() > 1);
    // Member 3 comes up: it needs the snapshot.
    up[2] = true;
    let mut installed = None;
    let info = allocation_counter::measure(|| {
        for _ in 0..10 {
            for _ in 0..3 {
                cores[0].tick();
                cores[1].tick();
            }
            installed = installed.or(pump(&mut cores, &up, Vec::new()));
        }
    });
    assert_eq!(
        installed,
        Some(want),
        "member 3 installed the whole snapshot"
    );
    assert_eq!(cores[2].storage().snapshot_index(), meta.index);
    assert!(
        info.bytes_max < PEAK_BYTES_MAX,
        "{} bytes allocated at once while a {SNAPSHOT_BYTES}-byte snapshot moved (bound {PEAK_BYTES_MAX})",
        info.bytes_max
    );
    // The installed file is the snapshot, whole: a restart finds it.
    drop(cores);
    let reopened = open(dir.path(), 3);
    let snapshot = reopened.snapshot().expect("read back");
    assert_eq!(snapshot.meta, meta);
    assert_eq!((snapshot.data.len(), crc32fast::hash(&snapshot.data)), want);
}
