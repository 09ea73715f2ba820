//! The small files beside the log: the identity stamp, the hard state and
//! snapshots. Each is a fixed magic, little-endian fields and a trailing
//! CRC-32 over everything before it, and each is replaced atomically
//! ([`write_atomic`]), so a reader sees the old or the new version whole.

use std::io;
use std::path::Path;

use bytes::Bytes;
use flotilla_raft::{ConfState, HardState, NodeId, Snapshot, SnapshotMeta, SnapshotSource, Term};

use crate::error::OpenError;
use crate::fs::{AppendFile, FileSystem};
use crate::pacing::SyncPacer;

/// The stamp of a directory whose log frames may carry synced marks
/// ([`crate::frame`]). Versions from before the marks know only
/// [`IDENTITY_MAGIC_V1`]: they refuse such a directory rather than read
/// its frames as a torn tail and cut them.
const IDENTITY_MAGIC: &[u8; 8] = b"FLOTID02";
/// The stamp of a directory written before the synced marks; it is
/// restamped at open ([`crate::DiskStorage::open`]).
const IDENTITY_MAGIC_V1: &[u8; 8] = b"FLOTID01";
const HARD_STATE_MAGIC: &[u8; 8] = b"FLOTHS01";
const SNAPSHOT_MAGIC: &[u8; 8] = b"FLOTSN01";

/// Suffix of a file being written by [`write_atomic`]; leftovers are removed
/// at open.
pub const TMP_SUFFIX: &str = ".tmp";

/// Replaces `dir/name` with `data`: write a temporary file, fsync it, rename
/// it over the old one, fsync the directory (each fsync only when `sync`).
pub fn write_atomic(
    fs: &dyn FileSystem,
    dir: &Path,
    name: &str,
    data: &[u8],
    sync: bool,
) -> std::io::Result<()> {
    let tmp = dir.join(format!("{name}{TMP_SUFFIX}"));
    fs.write_file(&tmp, data, sync)?;
    fs.rename(&tmp, &dir.join(name))?;
    if sync {
        fs.sync_dir(dir)?;
    }
    Ok(())
}

fn seal(mut out: Vec<u8>) -> Vec<u8> {
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Checks magic and CRC; returns the fields between them.
fn unseal<'a>(path: &Path, magic: &[u8; 8], buf: &'a [u8]) -> Result<&'a [u8], OpenError> {
    if buf.len() < 12 || &buf[..8] != magic {
        return Err(OpenError::corrupt(path, 0, "bad magic or too short"));
    }
    let (body, crc) = buf.split_at(buf.len() - 4);
    if crc32fast::hash(body) != u32::from_le_bytes(crc.try_into().expect("4 bytes")) {
        return Err(OpenError::corrupt(path, body.len() as u64, "CRC mismatch"));
    }
    Ok(&body[8..])
}

/// Reads little-endian fields in order, naming the file on a short read.
struct Fields<'a> {
    path: &'a Path,
    buf: &'a [u8],
    at: usize,
}

impl Fields<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], OpenError> {
        let end = self.at + n;
        if end > self.buf.len() {
            return Err(OpenError::corrupt(
                self.path,
                self.at as u64 + 8,
                "truncated field",
            ));
        }
        let out = &self.buf[self.at..end];
        self.at = end;
        Ok(out)
    }

    fn u64(&mut self) -> Result<u64, OpenError> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }

    fn finish(self) -> Result<(), OpenError> {
        if self.at != self.buf.len() {
            return Err(OpenError::corrupt(
                self.path,
                self.at as u64 + 8,
                "trailing bytes",
            ));
        }
        Ok(())
    }
}

/// The identity stamp: cluster id and member id.
pub fn encode_identity(cluster_id: u64, member_id: u64) -> Vec<u8> {
    let mut out = IDENTITY_MAGIC.to_vec();
    out.extend_from_slice(&cluster_id.to_le_bytes());
    out.extend_from_slice(&member_id.to_le_bytes());
    seal(out)
}

/// Decodes [`encode_identity`]: `(cluster_id, member_id)`, and whether
/// the stamp is of this format (not [`IDENTITY_MAGIC_V1`]).
pub fn decode_identity(path: &Path, buf: &[u8]) -> Result<((u64, u64), bool), OpenError> {
    let current = buf.starts_with(IDENTITY_MAGIC);
    let magic = if current {
        IDENTITY_MAGIC
    } else if buf.starts_with(IDENTITY_MAGIC_V1) {
        IDENTITY_MAGIC_V1
    } else if buf.starts_with(b"FLOTID") {
        let found = String::from_utf8_lossy(&buf[..buf.len().min(8)]).into_owned();
        return Err(OpenError::corrupt(
            path,
            0,
            format!("stamp {found:?} is of a newer format than this version reads (FLOTID02)"),
        ));
    } else {
        IDENTITY_MAGIC
    };
    let mut f = Fields {
        path,
        buf: unseal(path, magic, buf)?,
        at: 0,
    };
    let ids = (f.u64()?, f.u64()?);
    f.finish()?;
    Ok((ids, current))
}

/// The hard state file.
pub fn encode_hard_state(hs: &HardState) -> Vec<u8> {
    let mut out = HARD_STATE_MAGIC.to_vec();
    for v in [hs.term.0, hs.vote.0, hs.commit] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    seal(out)
}

/// Decodes [`encode_hard_state`].
pub fn decode_hard_state(path: &Path, buf: &[u8]) -> Result<HardState, OpenError> {
    let mut f = Fields {
        path,
        buf: unseal(path, HARD_STATE_MAGIC, buf)?,
        at: 0,
    };
    let hs = HardState {
        term: Term(f.u64()?),
        vote: NodeId(f.u64()?),
        commit: f.u64()?,
    };
    f.finish()?;
    Ok(hs)
}

/// The name of the snapshot file for `meta`: sorts by index, then term.
pub fn snapshot_name(meta: &SnapshotMeta) -> String {
    format!("{:020}-{:020}.snap", meta.index, meta.term.0)
}

/// The start of a snapshot file: magic, index, term, encoded
/// configuration and the data's length; the data and the CRC follow.
fn snapshot_header(snapshot: &Snapshot) -> Vec<u8> {
    snapshot_header_of(&snapshot.meta, snapshot.data.len() as u64)
}

/// [`snapshot_header`] for the snapshot at `meta` with `data_len` bytes of
/// data (one received chunk by chunk).
pub fn snapshot_header_of(meta: &SnapshotMeta, data_len: u64) -> Vec<u8> {
    let conf = meta.conf_state.encode();
    let mut out = Vec::with_capacity(40 + conf.len());
    out.extend_from_slice(SNAPSHOT_MAGIC);
    out.extend_from_slice(&meta.index.to_le_bytes());
    out.extend_from_slice(&meta.term.0.to_le_bytes());
    out.extend_from_slice(&(conf.len() as u64).to_le_bytes());
    out.extend_from_slice(&conf);
    out.extend_from_slice(&data_len.to_le_bytes());
    out
}

/// Where the data starts in the file of the snapshot at `meta`.
pub fn snapshot_data_offset(meta: &SnapshotMeta) -> u64 {
    snapshot_header_of(meta, 0).len() as u64
}

/// The file's trailing CRC-32 (over the header and the data) from the
/// header and the CRC-32 of the data alone, without reading the data again.
pub fn snapshot_file_crc(header: &[u8], data_crc: &crc32fast::Hasher) -> u32 {
    let mut crc = crc32fast::Hasher::new();
    crc.update(header);
    crc.combine(data_crc);
    crc.finalize()
}

/// A snapshot file: index, term, encoded configuration, data.
pub fn encode_snapshot(snapshot: &Snapshot) -> Vec<u8> {
    let mut out = snapshot_header(snapshot);
    out.extend_from_slice(&snapshot.data);
    seal(out)
}

/// The data of a snapshot streamed into its temporary file: each write
/// lands right after the previous one, its CRC-32 is kept running, and the
/// file is synced every [`crate::pacing::SYNC_EVERY_BYTES`] (when `sync`; see
/// [`crate::pacing`]). It holds no buffer of its own: the writer's bytes
/// go straight to the file.
struct DataSink<'a> {
    file: &'a mut dyn AppendFile,
    data_at: u64,
    len: u64,
    crc: crc32fast::Hasher,
    sync: bool,
    pacer: SyncPacer,
}

impl io::Write for DataSink<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.pacer.piece(buf.len());
        let piece = &buf[..n];
        self.file.write_at(self.data_at + self.len, piece)?;
        self.crc.update(piece);
        self.len += n as u64;
        if self.pacer.wrote(n) && self.sync {
            self.file.sync_data()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Replaces `dir/name` with the file of the snapshot at `meta` whose data
/// `encode` writes, as [`write_atomic`] does, streaming: the data goes to
/// the temporary file as it is written (synced in pieces, see
/// [`crate::pacing::SYNC_EVERY_BYTES`]), its CRC computed in the same pass; then the
/// header, which needs the data's length, is written before it (its room
/// was left) and the file's CRC after it, combined from the header's and
/// the data's without reading the data again. Returns the data's length
/// and CRC-32 (what a leader sends it with).
pub fn write_snapshot_streamed(
    fs: &dyn FileSystem,
    dir: &Path,
    name: &str,
    meta: &SnapshotMeta,
    encode: impl FnOnce(&mut dyn io::Write) -> io::Result<()>,
    sync: bool,
) -> io::Result<(u64, u32)> {
    let tmp = dir.join(format!("{name}{TMP_SUFFIX}"));
    let written = write_snapshot_file(fs, &tmp, meta, encode, sync).and_then(|sums| {
        fs.rename(&tmp, &dir.join(name))?;
        if sync {
            fs.sync_dir(dir)?;
        }
        Ok(sums)
    });
    if written.is_err() {
        // A large file half written: not left to the next open to remove.
        let _ = fs.remove_file(&tmp);
    }
    written
}

/// The temporary file of [`write_snapshot_streamed`], durable when `sync`.
fn write_snapshot_file(
    fs: &dyn FileSystem,
    path: &Path,
    meta: &SnapshotMeta,
    encode: impl FnOnce(&mut dyn io::Write) -> io::Result<()>,
    sync: bool,
) -> io::Result<(u64, u32)> {
    let mut file = fs.open_append(path, true)?;
    file.truncate(0)?; // a leftover of the same name is stale
    let data_at = snapshot_data_offset(meta);
    let mut sink = DataSink {
        file: &mut *file,
        data_at,
        len: 0,
        crc: crc32fast::Hasher::new(),
        sync,
        pacer: SyncPacer::default(),
    };
    encode(&mut sink)?;
    let (len, data_crc) = (sink.len, sink.crc);
    let header = snapshot_header_of(meta, len);
    debug_assert_eq!(header.len() as u64, data_at);
    let file_crc = snapshot_file_crc(&header, &data_crc);
    file.write_at(0, &header)?;
    file.write_at(data_at + len, &file_crc.to_le_bytes())?;
    if sync {
        file.sync_data()?;
    }
    Ok((len, data_crc.finalize()))
}

/// [`write_snapshot_streamed`] of a snapshot whose data is in memory: the
/// data is not copied. Returns the CRC-32 of the data alone.
pub fn write_snapshot_atomic(
    fs: &dyn FileSystem,
    dir: &Path,
    name: &str,
    snapshot: &Snapshot,
    sync: bool,
) -> io::Result<u32> {
    let encode = |w: &mut dyn io::Write| w.write_all(&snapshot.data);
    write_snapshot_streamed(fs, dir, name, &snapshot.meta, encode, sync).map(|(_, crc)| crc)
}

/// Bound of a snapshot file's encoded configuration (a few bytes per
/// member): a damaged length must not size an allocation.
const SNAPSHOT_CONF_BYTES_MAX: u64 = 1 << 20;

/// Bytes [`check_snapshot_file`] reads at once.
const CHECK_PIECE_BYTES: usize = 1 << 20;

/// Checks the snapshot file at `path` by reading it once, a piece at a
/// time (memory: one piece, whatever the file's size): magic, header,
/// length, the trailing CRC over everything, and the header against the
/// file's name. Returns its position, its data's length and the data's
/// CRC-32, computed in the same pass. A torn or damaged file is
/// [`OpenError::Corrupt`].
pub fn check_snapshot_file(fs: &dyn FileSystem, path: &Path) -> Result<SnapshotSource, OpenError> {
    let file = fs.open_read(path).map_err(OpenError::io(path))?;
    let read = |at: u64, buf: &mut [u8]| file.read_at(at, buf).map_err(OpenError::io(path));
    let u64_at = |buf: &[u8], at: usize| u64::from_le_bytes(buf[at..at + 8].try_into().expect("8"));
    let mut fixed = [0u8; 32];
    if read(0, &mut fixed)? < fixed.len() || &fixed[..8] != SNAPSHOT_MAGIC {
        return Err(OpenError::corrupt(path, 0, "bad magic or too short"));
    }
    let conf_len = u64_at(&fixed, 24);
    if conf_len > SNAPSHOT_CONF_BYTES_MAX {
        return Err(OpenError::corrupt(
            path,
            24,
            "configuration length out of bounds",
        ));
    }
    let mut rest = vec![0u8; conf_len as usize + 8];
    if read(32, &mut rest)? < rest.len() {
        return Err(OpenError::corrupt(path, 32, "truncated field"));
    }
    let data_len = u64_at(&rest, conf_len as usize);
    let data_at = 40 + conf_len;
    let Some(end) = data_at.checked_add(data_len) else {
        return Err(OpenError::corrupt(
            path,
            data_at - 8,
            "data length out of bounds",
        ));
    };
    let mut file_crc = crc32fast::Hasher::new();
    file_crc.update(&fixed);
    file_crc.update(&rest);
    let mut data_crc = crc32fast::Hasher::new();
    let mut piece = vec![0u8; CHECK_PIECE_BYTES.min(data_len as usize)];
    let mut at = data_at;
    while at < end {
        let want = (end - at).min(piece.len() as u64) as usize;
        let n = read(at, &mut piece[..want])?;
        if n < want {
            return Err(OpenError::corrupt(path, at + n as u64, "truncated data"));
        }
        data_crc.update(&piece[..n]);
        at += n as u64;
    }
    // Four bytes of CRC, and nothing after them.
    let mut trailer = [0u8; 5];
    match read(end, &mut trailer)? {
        4 => {}
        n if n < 4 => return Err(OpenError::corrupt(path, end, "truncated CRC")),
        _ => return Err(OpenError::corrupt(path, end + 4, "trailing bytes")),
    }
    file_crc.combine(&data_crc);
    if file_crc.finalize() != u32::from_le_bytes(trailer[..4].try_into().expect("4 bytes")) {
        return Err(OpenError::corrupt(path, end, "CRC mismatch"));
    }
    let conf_state = ConfState::decode(&rest[..conf_len as usize])
        .ok_or_else(|| OpenError::corrupt(path, 32, "malformed configuration"))?;
    let meta = SnapshotMeta {
        index: u64_at(&fixed, 8),
        term: Term(u64_at(&fixed, 16)),
        conf_state,
    };
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
    if name.as_deref() != Some(snapshot_name(&meta).as_str()) {
        return Err(OpenError::corrupt(
            path,
            0,
            "header does not match the file name",
        ));
    }
    Ok(SnapshotSource {
        meta,
        len_bytes: data_len,
        crc: data_crc.finalize(),
    })
}

/// Decodes [`encode_snapshot`]. The data is a slice of `buf`, not a copy.
pub fn decode_snapshot(path: &Path, buf: Bytes) -> Result<Snapshot, OpenError> {
    let mut f = Fields {
        path,
        buf: unseal(path, SNAPSHOT_MAGIC, &buf)?,
        at: 0,
    };
    let index = f.u64()?;
    let term = Term(f.u64()?);
    let conf_len = f.u64()? as usize;
    let conf_at = f.at as u64 + 8;
    let conf_state = ConfState::decode(f.take(conf_len)?)
        .ok_or_else(|| OpenError::corrupt(path, conf_at, "malformed configuration"))?;
    let data_len = f.u64()? as usize;
    let data_at = SNAPSHOT_MAGIC.len() + f.at;
    f.take(data_len)?;
    f.finish()?;
    Ok(Snapshot {
        meta: SnapshotMeta {
            index,
            term,
            conf_state,
        },
        data: buf.slice(data_at..data_at + data_len),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::RealFs;

    #[test]
    fn a_snapshot_written_in_parts_is_the_encoded_file() {
        let dir = tempfile::tempdir().unwrap();
        let snap = Snapshot {
            meta: SnapshotMeta {
                index: 9,
                term: Term(3),
                conf_state: ConfState {
                    voters: vec![NodeId(1), NodeId(2)],
                    learners: vec![],
                },
            },
            data: Bytes::from(vec![5u8; 10_000]),
        };
        // A stale temporary file of the same name is replaced, not extended.
        std::fs::write(dir.path().join(format!("s{TMP_SUFFIX}")), vec![1u8; 20_000]).unwrap();
        write_snapshot_atomic(&RealFs, dir.path(), "s", &snap, true).unwrap();
        let written = std::fs::read(dir.path().join("s")).unwrap();
        assert_eq!(written, encode_snapshot(&snap));
        assert!(!dir.path().join(format!("s{TMP_SUFFIX}")).exists());
    }

    #[test]
    fn round_trips_and_detects_damage() {
        let p = Path::new("f");
        assert_eq!(
            decode_identity(p, &encode_identity(7, 3)).unwrap(),
            ((7, 3), true)
        );
        let hs = HardState {
            term: Term(4),
            vote: NodeId(2),
            commit: 9,
        };
        assert_eq!(decode_hard_state(p, &encode_hard_state(&hs)).unwrap(), hs);
        let snap = Snapshot {
            meta: SnapshotMeta {
                index: 5,
                term: Term(2),
                conf_state: ConfState {
                    voters: vec![NodeId(1)],
                    learners: vec![NodeId(4)],
                },
            },
            data: Bytes::from_static(b"state"),
        };
        let mut buf = encode_snapshot(&snap);
        assert_eq!(decode_snapshot(p, Bytes::from(buf.clone())).unwrap(), snap);
        buf[20] ^= 1;
        assert!(matches!(
            decode_snapshot(p, Bytes::from(buf)),
            Err(OpenError::Corrupt { .. })
        ));
    }
}
