//! The snapshot file: what Maintenance Snapshot streams and `etcdctl
//! snapshot save` writes.
//!
//! ```text
//! "FLOTSNAP"            8 bytes, the magic
//! format version        u32 little-endian (1)
//! header length H       u32 little-endian
//! header                H bytes: a SnapshotHeader (prost)
//! store                 header.store_bytes bytes: the KvStore snapshot encoding
//! zeros                 up to the next multiple of 512 bytes
//! sha256                32 bytes, of everything before it
//! ```
//!
//! The zeros and the trailing sha256 give the file etcd's shape: etcd's
//! snapshot is a bbolt file (whole 512-byte pages) followed by the sha256
//! of its content, and `etcdctl snapshot save` refuses a download whose
//! size is not a multiple of 512 plus 32 (a cut-off stream). The checksum
//! is real: a truncated or damaged file is refused before anything is read
//! from it, and `head -c -32 FILE | sha256sum` shows it.

use prost::Message as _;
use sha2::{Digest, Sha256};
use std::io::{self, Read};

/// The first bytes of every snapshot file.
pub const MAGIC: &[u8; 8] = b"FLOTSNAP";
/// The format version written.
pub const FORMAT_VERSION: u32 = 1;
/// The trailing checksum's length (sha256).
pub const CHECKSUM_BYTES: usize = 32;
/// Content is padded to a multiple of this (etcd's page-sized rule).
pub const BLOCK_BYTES: usize = 512;
/// The fixed prefix before the header: magic, version, header length.
const PREFIX_BYTES: usize = 16;
/// Largest header accepted: it holds a few numbers and a version string.
const HEADER_BYTES_MAX: usize = 64 * 1024;
/// The padding's source: it is always shorter than a block.
static ZEROS: [u8; BLOCK_BYTES] = [0; BLOCK_BYTES];

/// What a snapshot is of.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct SnapshotHeader {
    /// The cluster it was taken from.
    #[prost(uint64, tag = "1")]
    pub cluster_id: u64,
    /// The member that took it.
    #[prost(uint64, tag = "2")]
    pub member_id: u64,
    /// The last log index applied to the store it holds.
    #[prost(uint64, tag = "3")]
    pub applied_index: u64,
    /// The store's revision.
    #[prost(int64, tag = "4")]
    pub revision: i64,
    /// The store's compaction point.
    #[prost(int64, tag = "5")]
    pub compact_revision: i64,
    /// Length of the store encoding after the header.
    #[prost(uint64, tag = "6")]
    pub store_bytes: u64,
    /// The version of the server that took it.
    #[prost(string, tag = "7")]
    pub server_version: String,
    /// When it was taken, in milliseconds since the Unix epoch.
    #[prost(uint64, tag = "8")]
    pub created_unix_ms: u64,
}

/// Why a snapshot file cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SnapshotFileError {
    /// Its size cannot be that of a whole snapshot.
    #[error(
        "snapshot file is truncated or not a Flotilla snapshot: {len} bytes is not a multiple of {BLOCK_BYTES} plus the {CHECKSUM_BYTES}-byte checksum"
    )]
    BadLength {
        /// The file's size.
        len: u64,
    },
    /// The content does not match the trailing sha256.
    #[error(
        "snapshot file is damaged: its sha256 is {found}, but the file says {expected}; refusing to use it"
    )]
    ChecksumMismatch {
        /// The checksum stored in the file.
        expected: String,
        /// The checksum of its content.
        found: String,
    },
    /// The checksum is right but the content is not a Flotilla snapshot.
    #[error(
        "not a Flotilla snapshot (no FLOTSNAP magic); an etcd snapshot is a bbolt database, which Flotilla cannot read"
    )]
    BadMagic,
    /// A format this build does not know.
    #[error("snapshot format version {0} is not supported (this build reads version 1)")]
    UnsupportedVersion(u32),
    /// The layout inside is inconsistent.
    #[error("snapshot file is malformed: {0}")]
    Malformed(String),
    /// Reading it failed, or it ended before its size said (it was cut
    /// while being read).
    #[error("cannot read the snapshot file (truncated or unreadable): {0}")]
    Read(String),
}

/// A snapshot file read and checked: its header and the store bytes.
#[derive(Debug)]
pub struct SnapshotFile<'a> {
    /// What it is of.
    pub header: SnapshotHeader,
    /// The store's snapshot encoding.
    pub store: &'a [u8],
    /// The trailing sha256, in hex.
    pub sha256: String,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The bytes before the store: magic, version, header length, header.
fn prefix(header: &SnapshotHeader) -> Vec<u8> {
    let encoded = header.encode_to_vec();
    let mut out = Vec::with_capacity(PREFIX_BYTES + encoded.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&(encoded.len() as u32).to_le_bytes());
    out.extend_from_slice(&encoded);
    out
}

/// [`padding`] of a length that may not fit a `usize` (a 32-bit build
/// streaming a large spooled store).
fn padding_u64(content_len: u64) -> usize {
    let block = BLOCK_BYTES as u64;
    ((block - content_len % block) % block) as usize
}

/// Reads and checks a whole snapshot file in memory: length, checksum,
/// magic, version, header, store length, zero padding (as
/// [`SnapshotReader`] does, over a slice).
pub fn read_snapshot(bytes: &[u8]) -> Result<SnapshotFile<'_>, SnapshotFileError> {
    let reader = SnapshotReader::open(bytes, bytes.len() as u64)?;
    let start = reader.store_offset() as usize;
    let header = reader.header().clone();
    let store_len = header.store_bytes as usize;
    let digest = reader.finish()?;
    Ok(SnapshotFile {
        header,
        store: &bytes[start..start + store_len],
        sha256: digest.sha256,
    })
}

/// What [`SnapshotReader::finish`] computed while the file was read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotDigest {
    /// The file's trailing sha256 (checked), in hex.
    pub sha256: String,
    /// CRC-32 (IEEE) of the store's encoding.
    pub store_crc32: u32,
}

/// The content of a snapshot file read from a stream, hashed as it goes.
struct Hashed<R> {
    inner: R,
    hasher: Sha256,
    /// Content bytes (all but the checksum) not read yet.
    left: u64,
}

impl<R: Read> Hashed<R> {
    /// Reads exactly `buf.len()` content bytes.
    fn read_exact(&mut self, buf: &mut [u8]) -> Result<(), SnapshotFileError> {
        debug_assert!(buf.len() as u64 <= self.left);
        self.inner.read_exact(buf).map_err(read_failed)?;
        self.hasher.update(&*buf);
        self.left -= buf.len() as u64;
        Ok(())
    }

    /// Reads what is left of the content (checking it is zeros when
    /// `zeros`), then the stored checksum, and compares.
    fn finish(mut self, zeros: bool) -> Result<String, SnapshotFileError> {
        let mut piece = vec![0u8; self.left.min(1 << 16) as usize];
        let mut nonzero = false;
        while self.left > 0 {
            let n = piece.len().min(self.left as usize);
            self.read_exact(&mut piece[..n])?;
            nonzero |= piece[..n].iter().any(|b| *b != 0);
        }
        let mut stored = [0u8; CHECKSUM_BYTES];
        self.inner.read_exact(&mut stored).map_err(read_failed)?;
        let found = self.hasher.finalize();
        if found.as_slice() != stored {
            return Err(SnapshotFileError::ChecksumMismatch {
                expected: hex(&stored),
                found: hex(&found),
            });
        }
        if zeros && nonzero {
            return Err(SnapshotFileError::Malformed(
                "bytes after the store are not its padding".into(),
            ));
        }
        Ok(hex(&stored))
    }

    /// `e`, an error in the content, unless the rest of the file shows the
    /// content damaged: then that (the checksum is checked first, so a
    /// damaged file is called damaged, whatever part of it is).
    fn blame(self, e: SnapshotFileError) -> SnapshotFileError {
        match self.finish(false) {
            Err(damaged @ SnapshotFileError::ChecksumMismatch { .. }) => damaged,
            _ => e,
        }
    }
}

fn read_failed(e: io::Error) -> SnapshotFileError {
    SnapshotFileError::Read(e.to_string())
}

/// A snapshot file read as a stream, checked as it goes, in bounded memory:
/// [`SnapshotReader::open`] reads and checks what comes before the store,
/// reading `self` (`Read`) yields the store's encoding, and
/// [`SnapshotReader::finish`] reads the rest and checks the padding and the
/// trailing sha256. The whole file is hashed once, as it is read; nothing
/// read is kept but the header. Until `finish` says so, what was read may
/// be damaged: whatever is built from it must be thrown away on an error,
/// and an error found in the store is best passed through
/// [`SnapshotReader::blame`] (a damaged file is then reported as such).
pub struct SnapshotReader<R> {
    src: Hashed<R>,
    header: SnapshotHeader,
    store_offset: u64,
    /// Store bytes not read yet.
    store_left: u64,
    store_crc: crc32fast::Hasher,
}

impl<R> std::fmt::Debug for SnapshotReader<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotReader")
            .field("header", &self.header)
            .field("store_left", &self.store_left)
            .finish_non_exhaustive()
    }
}

impl<R: Read> SnapshotReader<R> {
    /// Starts reading the snapshot file of `len` bytes that `src` yields
    /// from its start: checks the length, then reads and checks the magic,
    /// version and header. An error here is about the whole file: if it is
    /// not the checksum's, the rest was read to check that first.
    pub fn open(src: R, len: u64) -> Result<Self, SnapshotFileError> {
        let block = BLOCK_BYTES as u64;
        let sum = CHECKSUM_BYTES as u64;
        if len < block + sum || !(len - sum).is_multiple_of(block) {
            return Err(SnapshotFileError::BadLength { len });
        }
        let mut src = Hashed {
            inner: src,
            hasher: Sha256::new(),
            left: len - sum,
        };
        match Self::read_prefix(&mut src, len - sum) {
            Ok((header, store_offset)) => Ok(SnapshotReader {
                src,
                store_left: header.store_bytes,
                header,
                store_offset,
                store_crc: crc32fast::Hasher::new(),
            }),
            Err(e @ SnapshotFileError::Read(_)) => Err(e),
            Err(e) => Err(src.blame(e)),
        }
    }

    /// Magic, version, header; checks the store's announced length against
    /// the content's. Returns the header and where the store starts.
    fn read_prefix(
        src: &mut Hashed<R>,
        content_len: u64,
    ) -> Result<(SnapshotHeader, u64), SnapshotFileError> {
        let mut prefix = [0u8; PREFIX_BYTES];
        src.read_exact(&mut prefix)?;
        if &prefix[..MAGIC.len()] != MAGIC {
            return Err(SnapshotFileError::BadMagic);
        }
        let word = |at: usize| u32::from_le_bytes(prefix[at..at + 4].try_into().expect("4 bytes"));
        let version = word(8);
        if version != FORMAT_VERSION {
            return Err(SnapshotFileError::UnsupportedVersion(version));
        }
        let header_len = word(12) as usize;
        let malformed = |what: String| SnapshotFileError::Malformed(what);
        if header_len > HEADER_BYTES_MAX || (PREFIX_BYTES + header_len) as u64 > content_len {
            return Err(malformed(format!("a header of {header_len} bytes")));
        }
        let mut encoded = vec![0u8; header_len];
        src.read_exact(&mut encoded)?;
        let header = SnapshotHeader::decode(encoded.as_slice())
            .map_err(|e| malformed(format!("undecodable header: {e}")))?;
        let start = (PREFIX_BYTES + header_len) as u64;
        if header.store_bytes > content_len - start {
            return Err(malformed(format!(
                "the header announces {} store bytes, more than the file holds",
                header.store_bytes
            )));
        }
        let end = start + header.store_bytes;
        if content_len - end != padding_u64(end) as u64 {
            return Err(malformed(
                "bytes after the store are not its padding".into(),
            ));
        }
        Ok((header, start))
    }

    /// What the file is of.
    pub fn header(&self) -> &SnapshotHeader {
        &self.header
    }

    /// Where the store's encoding starts in the file.
    pub fn store_offset(&self) -> u64 {
        self.store_offset
    }

    /// Reads what is left of the store (unless it was all read), the
    /// padding and the checksum: the file checks, or why not.
    pub fn finish(mut self) -> Result<SnapshotDigest, SnapshotFileError> {
        io::copy(&mut self, &mut io::sink()).map_err(read_failed)?;
        let store_crc32 = self.store_crc.clone().finalize();
        let sha256 = self.src.finish(true)?;
        Ok(SnapshotDigest {
            sha256,
            store_crc32,
        })
    }

    /// `e`, an error found in what was read (the store does not decode, or
    /// is not coherent), unless the rest of the file shows it damaged: then
    /// [`SnapshotFileError::ChecksumMismatch`]. Reads the rest to know.
    pub fn blame<E: From<SnapshotFileError>>(mut self, e: E) -> E {
        if io::copy(&mut self, &mut io::sink()).is_err() {
            return e;
        }
        match self.src.finish(false) {
            Err(damaged @ SnapshotFileError::ChecksumMismatch { .. }) => damaged.into(),
            _ => e,
        }
    }
}

impl<R: Read> Read for SnapshotReader<R> {
    /// The store's encoding, then the end.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = (buf.len() as u64).min(self.store_left) as usize;
        if want == 0 {
            return Ok(0);
        }
        let n = self.src.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the snapshot file ends inside its store",
            ));
        }
        self.src.hasher.update(&buf[..n]);
        self.store_crc.update(&buf[..n]);
        self.src.left -= n as u64;
        self.store_left -= n as u64;
        Ok(n)
    }
}

/// Cuts a snapshot file into chunks, hashing as it goes: what a Snapshot
/// stream sends. The store's encoding is read from `store` (an owned
/// buffer, or the file it was spooled to, see [`crate::backup::spool_snapshot`])
/// a chunk at a time, so the chunks hold one chunk's bytes, whatever the
/// store's size; the total is known from the start, as etcd's
/// `remaining_bytes` needs.
pub struct SnapshotChunks {
    prefix: Vec<u8>,
    store: Box<dyn Read + Send>,
    store_bytes: u64,
    padding: usize,
    hasher: Option<Sha256>,
    checksum: Vec<u8>,
    /// Bytes handed out so far.
    sent: u64,
    chunk_bytes: usize,
    /// Syncs made while the store was spooled.
    spool_syncs: u64,
}

impl std::fmt::Debug for SnapshotChunks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotChunks")
            .field("store_bytes", &self.store_bytes)
            .field("sent", &self.sent)
            .field("chunk_bytes", &self.chunk_bytes)
            .finish_non_exhaustive()
    }
}

impl SnapshotChunks {
    /// The file of `store` (a KvStore snapshot encoding) described by
    /// `header` (its `store_bytes` is set here), cut into chunks of at most
    /// `chunk_bytes`.
    pub fn new(header: SnapshotHeader, store: Vec<u8>, chunk_bytes: usize) -> Self {
        let len = store.len() as u64;
        Self::from_reader(header, Box::new(io::Cursor::new(store)), len, chunk_bytes)
    }

    /// The file of the `store_bytes` bytes of a KvStore snapshot encoding
    /// that `store` yields, described by `header` (its `store_bytes` is set
    /// here), cut into chunks of at most `chunk_bytes`. `store` is read
    /// only as chunks are asked for, and dropped with `self`.
    pub fn from_reader(
        mut header: SnapshotHeader,
        store: Box<dyn Read + Send>,
        store_bytes: u64,
        chunk_bytes: usize,
    ) -> Self {
        header.store_bytes = store_bytes;
        let prefix = prefix(&header);
        let padding = padding_u64(prefix.len() as u64 + store_bytes);
        SnapshotChunks {
            prefix,
            store,
            store_bytes,
            padding,
            hasher: Some(Sha256::new()),
            checksum: Vec::new(),
            sent: 0,
            chunk_bytes: chunk_bytes.max(1),
            spool_syncs: 0,
        }
    }

    /// `self`, noting that spooling its store took `syncs` syncs.
    pub(crate) fn spooled_with_syncs(mut self, syncs: u64) -> Self {
        self.spool_syncs = syncs;
        self
    }

    /// The syncs made while the store was spooled (see
    /// [`crate::backup::spool_snapshot`]): one every few MiB.
    pub fn spool_syncs(&self) -> u64 {
        self.spool_syncs
    }

    /// The bytes before the checksum: prefix, store, padding.
    fn content_bytes(&self) -> u64 {
        self.prefix.len() as u64 + self.store_bytes + self.padding as u64
    }

    /// The whole file's size.
    pub fn total_bytes(&self) -> u64 {
        self.content_bytes() + CHECKSUM_BYTES as u64
    }

    /// Bytes not yet handed out.
    pub fn remaining_bytes(&self) -> u64 {
        self.total_bytes() - self.sent
    }

    /// The next chunk, `None` at the end, or why the store could not be
    /// read (its source ended before `store_bytes`, or failed).
    pub fn next_chunk(&mut self) -> io::Result<Option<Vec<u8>>> {
        let want = (self.chunk_bytes as u64).min(self.remaining_bytes()) as usize;
        if want == 0 {
            return Ok(None);
        }
        let prefix = self.prefix.len() as u64;
        let store_end = prefix + self.store_bytes;
        let content = self.content_bytes();
        let mut chunk = Vec::with_capacity(want);
        while chunk.len() < want {
            let at = self.sent;
            let room = (want - chunk.len()) as u64;
            let start = chunk.len();
            if at < prefix {
                let take = room.min(prefix - at) as usize;
                chunk.extend_from_slice(&self.prefix[at as usize..][..take]);
            } else if at < store_end {
                let take = room.min(store_end - at) as usize;
                chunk.resize(start + take, 0);
                self.store
                    .read_exact(&mut chunk[start..])
                    .map_err(|e| match e.kind() {
                        io::ErrorKind::UnexpectedEof => io::Error::new(
                            e.kind(),
                            format!(
                                "the store's encoding ended before its {} bytes",
                                self.store_bytes
                            ),
                        ),
                        _ => e,
                    })?;
            } else if at < content {
                let take = room.min(content - at) as usize;
                chunk.extend_from_slice(&ZEROS[..take]);
            } else {
                if let Some(hasher) = self.hasher.take() {
                    self.checksum = hasher.finalize().to_vec();
                }
                let from = (at - content) as usize;
                let take = (room as usize).min(CHECKSUM_BYTES - from);
                chunk.extend_from_slice(&self.checksum[from..][..take]);
            }
            if at < content
                && let Some(h) = self.hasher.as_mut()
            {
                h.update(&chunk[start..]);
            }
            self.sent += (chunk.len() - start) as u64;
        }
        Ok(Some(chunk))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> SnapshotHeader {
        SnapshotHeader {
            cluster_id: 7,
            member_id: 3,
            applied_index: 42,
            revision: 9,
            compact_revision: 2,
            server_version: "test".into(),
            ..Default::default()
        }
    }

    fn file(store: &[u8], chunk: usize) -> Vec<u8> {
        let mut chunks = SnapshotChunks::new(header(), store.to_vec(), chunk);
        let total = chunks.total_bytes();
        let mut out = Vec::new();
        while let Some(c) = chunks.next_chunk().unwrap() {
            assert!(!c.is_empty() && c.len() <= chunk);
            out.extend_from_slice(&c);
            assert_eq!(chunks.remaining_bytes(), total - out.len() as u64);
        }
        out
    }

    #[test]
    fn a_file_reads_back_whatever_the_chunk_size() {
        let store: Vec<u8> = (0..5000u32).map(|i| (i * 7) as u8).collect();
        let whole = file(&store, 1 << 20);
        assert_eq!(whole.len() % BLOCK_BYTES, CHECKSUM_BYTES, "etcd's shape");
        for chunk in [1, 7, 512, 4096] {
            assert_eq!(file(&store, chunk), whole, "chunk {chunk}");
        }
        let read = read_snapshot(&whole).unwrap();
        assert_eq!(read.store, &store[..]);
        assert_eq!(read.header.applied_index, 42);
        assert_eq!(read.header.store_bytes, 5000);
        let empty = file(&[], 100);
        assert_eq!(read_snapshot(&empty).unwrap().store, &[] as &[u8]);
    }

    #[test]
    fn a_store_source_shorter_than_announced_is_an_error() {
        let short = io::Cursor::new(vec![1u8; 100]);
        let mut chunks = SnapshotChunks::from_reader(header(), Box::new(short), 1000, 64);
        let e = loop {
            match chunks.next_chunk() {
                Ok(Some(_)) => {}
                Ok(None) => panic!("a whole file from a short source"),
                Err(e) => break e,
            }
        };
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        assert!(e.to_string().contains("1000 bytes"), "{e}");
    }

    #[test]
    fn truncated_or_damaged_files_are_refused() {
        let store: Vec<u8> = (0..3000u32).map(|i| i as u8).collect();
        let whole = file(&store, 4096);
        for cut in [0, 1, whole.len() / 2, whole.len() - 1] {
            assert!(
                matches!(
                    read_snapshot(&whole[..cut]),
                    Err(SnapshotFileError::BadLength { .. })
                ),
                "cut at {cut}"
            );
        }
        // Cut by whole blocks: the length is plausible, the checksum not.
        let short = [&whole[..whole.len() - 512 - 32], &whole[whole.len() - 32..]].concat();
        assert!(matches!(
            read_snapshot(&short),
            Err(SnapshotFileError::ChecksumMismatch { .. })
        ));
        for at in [0, 20, 1000, whole.len() - 40, whole.len() - 1] {
            let mut bad = whole.clone();
            bad[at] ^= 0x10;
            let e = read_snapshot(&bad).unwrap_err();
            assert!(
                matches!(e, SnapshotFileError::ChecksumMismatch { .. }),
                "flip at {at}: {e}"
            );
            assert!(e.to_string().contains("damaged"));
        }
    }

    #[test]
    fn a_checksummed_file_of_another_kind_is_refused() {
        let mut other = vec![0u8; 1024];
        other[..4].copy_from_slice(b"bolt");
        let sum = Sha256::digest(&other);
        other.extend_from_slice(&sum);
        assert_eq!(
            read_snapshot(&other).unwrap_err(),
            SnapshotFileError::BadMagic
        );
    }

    /// A source that gives at most 7 bytes a read.
    struct Trickle<'a>(&'a [u8]);

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = buf.len().min(7).min(self.0.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    #[test]
    fn a_file_read_as_a_stream_is_checked_to_its_last_byte() {
        let store: Vec<u8> = (0..5000u32).map(|i| (i * 13) as u8).collect();
        let whole = file(&store, 4096);
        let len = whole.len() as u64;
        let mut r = SnapshotReader::open(Trickle(&whole), len).unwrap();
        assert_eq!(r.header().applied_index, 42);
        let mut read = Vec::new();
        r.read_to_end(&mut read).unwrap();
        assert_eq!(read, store);
        let digest = r.finish().unwrap();
        assert_eq!(digest.store_crc32, crc32fast::hash(&store));
        assert_eq!(digest.sha256, read_snapshot(&whole).unwrap().sha256);

        // A damaged store reads, and is refused at the end.
        let mut bad = whole.clone();
        bad[200] ^= 0x01;
        let mut r = SnapshotReader::open(Trickle(&bad), len).unwrap();
        r.read_to_end(&mut Vec::new()).unwrap();
        assert!(matches!(
            r.finish(),
            Err(SnapshotFileError::ChecksumMismatch { .. })
        ));
        // What the store's reader made of it is blamed on the damage...
        let r = SnapshotReader::open(Trickle(&bad), len).unwrap();
        let e = r.blame(SnapshotFileError::Malformed("the store".into()));
        assert!(
            matches!(e, SnapshotFileError::ChecksumMismatch { .. }),
            "{e}"
        );
        // ...but not on a whole file.
        let r = SnapshotReader::open(Trickle(&whole), len).unwrap();
        let e = r.blame(SnapshotFileError::Malformed("the store".into()));
        assert_eq!(e, SnapshotFileError::Malformed("the store".into()));

        // A source shorter than the length said (cut while read).
        let mut r = SnapshotReader::open(Trickle(&whole[..1000]), len).unwrap();
        assert!(r.read_to_end(&mut Vec::new()).is_err());
        let r = SnapshotReader::open(Trickle(&whole[..1000]), len).unwrap();
        assert!(matches!(r.finish(), Err(SnapshotFileError::Read(_))));
    }
}
