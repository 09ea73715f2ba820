//! The store's snapshot encoding: prost messages, so it is deterministic
//! (maps are written in key order) and tolerant of added fields.
//!
//! The key histories are most of a snapshot, so they never exist twice in
//! memory: [`KvStore::encode_snapshot`] writes them straight from the store
//! into one buffer of the exact size, [`KvStore::encode_snapshot_to`]
//! streams them into a sink (the snapshot's file) a piece at a time, and [`KvStore::decode_snapshot_from`]
//! reads them from a stream (a snapshot file) one key at a time, straight
//! into the store. The bytes are
//! the same as prost would write for a [`StoreRecord`] whose field 4 were
//! `repeated KeyHistory` messages.

use super::alarm::AlarmTable;
use super::error::ErrorRecord;
use super::lease::LeaseTable;
use super::mvcc::{MvccStore, Revision};
use super::session::{KvResult, Session, SessionTable};
use super::version::{Version, VersionMeta};
use super::{KvConfig, KvError, KvResponse, KvStore};
use flotilla_proto::etcdserverpb::{AlarmMember, AlarmType, Member};
use flotilla_raft::Bytes;
use prost::Message as _;
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len};
use std::collections::BTreeMap;
use std::io::Read;

/// The whole store. Lease → key attachments are not stored: they are
/// rebuilt from the leases of the keys' current versions.
#[derive(Clone, PartialEq, prost::Message)]
struct StoreRecord {
    #[prost(int64, tag = "1")]
    revision: i64,
    #[prost(int64, tag = "2")]
    compact_revision: i64,
    #[prost(uint64, tag = "3")]
    applied_index: u64,
    /// Each key's history, an encoded [`KeyHistory`], in key order. Never
    /// set here: written and read key by key (see the module docs), so the
    /// store is not built twice.
    #[prost(bytes = "bytes", repeated, tag = "4")]
    keys: Vec<Bytes>,
    #[prost(message, repeated, tag = "5")]
    leases: Vec<LeaseRecord>,
    #[prost(message, repeated, tag = "6")]
    sessions: Vec<SessionRecord>,
    /// The member table, in id order.
    #[prost(message, repeated, tag = "7")]
    members: Vec<Member>,
    /// Ids of removed members, in order.
    #[prost(uint64, repeated, tag = "8")]
    removed_members: Vec<u64>,
    /// The raised alarms, in order.
    #[prost(message, repeated, tag = "9")]
    alarms: Vec<AlarmMember>,
    /// [`MvccStore::compaction_split`]: absent but while a revision's
    /// compaction is split, so a store without one encodes as before.
    #[prost(int64, optional, tag = "10")]
    compaction_split: Option<i64>,
}

/// The tag of [`StoreRecord::keys`].
const KEYS_TAG: u32 = 4;

/// A key and its retained versions, oldest first.
#[derive(Clone, PartialEq, prost::Message)]
struct KeyHistory {
    #[prost(bytes = "vec", tag = "1")]
    key: Vec<u8>,
    #[prost(message, repeated, tag = "2")]
    versions: Vec<VersionRecord>,
}

/// One version of a key; `version == 0` marks a tombstone.
#[derive(Clone, PartialEq, prost::Message)]
struct VersionRecord {
    #[prost(int64, tag = "1")]
    main: i64,
    #[prost(int64, tag = "2")]
    sub: i64,
    #[prost(int64, tag = "3")]
    create_revision: i64,
    #[prost(int64, tag = "4")]
    version: i64,
    #[prost(bytes = "vec", tag = "5")]
    value: Vec<u8>,
    #[prost(int64, tag = "6")]
    lease: i64,
}

impl VersionRecord {
    fn into_version(self) -> Result<Version, String> {
        let revision = Revision {
            main: self.main,
            sub: self.sub,
        };
        if self.main < 1 || self.sub < 0 || self.version < 0 {
            return Err(format!("snapshot: bad version record at {revision:?}"));
        }
        if self.version == 0 {
            if self.create_revision != 0 || self.lease != 0 || !self.value.is_empty() {
                return Err(format!("snapshot: tombstone with content at {revision:?}"));
            }
            return Ok(Version::tombstone(revision));
        }
        if !(1..=self.main).contains(&self.create_revision) {
            return Err(format!("snapshot: bad create revision at {revision:?}"));
        }
        let meta = VersionMeta {
            revision,
            create_revision: self.create_revision,
            version: self.version,
            lease: self.lease,
        };
        Ok(Version::new(meta, &self.value))
    }
}

// Field by field as prost's generated code writes proto3: zero scalars and
// empty bytes are left out; repeated messages are always written.

fn int64_len(tag: u32, v: i64) -> usize {
    if v == 0 {
        0
    } else {
        key_len(tag) + encoded_len_varint(v as u64)
    }
}

fn delimited_len(tag: u32, len: usize) -> usize {
    key_len(tag) + encoded_len_varint(len as u64) + len
}

fn bytes_len(tag: u32, b: &[u8]) -> usize {
    if b.is_empty() {
        0
    } else {
        delimited_len(tag, b.len())
    }
}

fn put_int64(tag: u32, v: i64, buf: &mut Vec<u8>) {
    if v != 0 {
        encode_key(tag, WireType::Varint, buf);
        encode_varint(v as u64, buf);
    }
}

fn put_delimited(tag: u32, len: usize, buf: &mut Vec<u8>) {
    encode_key(tag, WireType::LengthDelimited, buf);
    encode_varint(len as u64, buf);
}

fn put_bytes(tag: u32, b: &[u8], buf: &mut Vec<u8>) {
    if !b.is_empty() {
        put_delimited(tag, b.len(), buf);
        buf.extend_from_slice(b);
    }
}

/// The encoded length of a version as a [`VersionRecord`].
fn version_len(meta: &VersionMeta, value: &[u8]) -> usize {
    int64_len(1, meta.revision.main)
        + int64_len(2, meta.revision.sub)
        + int64_len(3, meta.create_revision)
        + int64_len(4, meta.version)
        + bytes_len(5, value)
        + int64_len(6, meta.lease)
}

/// The encoded length of a key's [`KeyHistory`].
fn history_len(key: &[u8], versions: &[Version]) -> usize {
    bytes_len(1, key)
        + versions
            .iter()
            .map(|v| {
                let (meta, value) = v.parts();
                delimited_len(2, version_len(&meta, value))
            })
            .sum::<usize>()
}

/// Reads a varint from a stream; `None` at the end of the stream when
/// `at_field_start` (a clean end between fields).
fn read_varint(r: &mut impl Read, at_field_start: bool) -> Result<Option<u64>, String> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let mut byte = [0u8];
        match r.read(&mut byte) {
            Ok(0) if shift == 0 && at_field_start => return Ok(None),
            Ok(0) => return Err("undecodable kv snapshot: it ends inside a field".into()),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("reading the kv snapshot: {e}")),
        }
        value |= u64::from(byte[0] & 0x7f) << shift;
        if byte[0] & 0x80 == 0 {
            return Ok(Some(value));
        }
    }
    Err("undecodable kv snapshot: a varint longer than 10 bytes".into())
}

/// Reads exactly `len` bytes into `buf` (replacing its content), growing it
/// only as the bytes arrive: a corrupt length cannot allocate ahead.
fn read_payload(r: &mut impl Read, len: u64, buf: &mut Vec<u8>) -> Result<(), String> {
    buf.clear();
    r.take(len)
        .read_to_end(buf)
        .map_err(|e| format!("reading the kv snapshot: {e}"))?;
    if buf.len() as u64 != len {
        return Err("undecodable kv snapshot: a field runs past the end".into());
    }
    Ok(())
}

/// Decodes one [`KeyHistory`] into the store.
fn restore_history(mvcc: &mut MvccStore, encoded: &[u8]) -> Result<(), String> {
    let (key, versions) = decode_history(encoded)?;
    mvcc.restore_key(&key, versions)
}

/// One encoded [`KeyHistory`]: its key and versions, oldest first.
fn decode_history(encoded: &[u8]) -> Result<(Vec<u8>, Vec<Version>), String> {
    let h = KeyHistory::decode(encoded).map_err(|e| format!("undecodable key history: {e}"))?;
    let versions = h
        .versions
        .into_iter()
        .map(VersionRecord::into_version)
        .collect::<Result<Vec<_>, _>>()?;
    Ok((h.key, versions))
}

/// Appends a key's history as field 4 of [`StoreRecord`].
fn put_history(key: &[u8], versions: &[Version], buf: &mut Vec<u8>) {
    put_delimited(KEYS_TAG, history_len(key, versions), buf);
    put_bytes(1, key, buf);
    for v in versions {
        let (meta, value) = v.parts();
        put_delimited(2, version_len(&meta, value), buf);
        put_int64(1, meta.revision.main, buf);
        put_int64(2, meta.revision.sub, buf);
        put_int64(3, meta.create_revision, buf);
        put_int64(4, meta.version, buf);
        put_bytes(5, value, buf);
        put_int64(6, meta.lease, buf);
    }
}

#[derive(Clone, PartialEq, prost::Message)]
struct LeaseRecord {
    #[prost(int64, tag = "1")]
    id: i64,
    #[prost(int64, tag = "2")]
    ttl_secs: i64,
}

/// A session. Fields 1-4 and the response are what the first release
/// wrote, one cached response per session (its last applied seq's); they
/// still hold that, so that release reads these snapshots too (with its
/// one-response rule). The window's other responses and the mark are
/// fields 5 and 6; without them (a snapshot of the first release) the
/// session is what that release kept: its mark is its last seq.
#[derive(Clone, PartialEq, prost::Message)]
struct SessionRecord {
    #[prost(uint64, tag = "1")]
    client_id: u64,
    /// The highest seq applied; its response is `error` or `response`.
    #[prost(uint64, tag = "2")]
    last_seq: u64,
    #[prost(uint64, tag = "3")]
    last_index: u64,
    #[prost(message, optional, tag = "4")]
    error: Option<ErrorRecord>,
    /// [`Session::mark`]; absent in the first release's snapshots.
    #[prost(uint64, optional, tag = "5")]
    mark: Option<u64>,
    /// The other cached responses, seqs in increasing order, all below
    /// `last_seq`.
    #[prost(message, repeated, tag = "6")]
    earlier: Vec<CachedRecord>,
    #[prost(oneof = "KvResponse", tags = "11, 12, 13, 14, 15, 16, 17, 18, 19, 20")]
    response: Option<KvResponse>,
}

/// One cached response of a session, besides its last.
#[derive(Clone, PartialEq, prost::Message)]
struct CachedRecord {
    #[prost(uint64, tag = "1")]
    seq: u64,
    #[prost(message, optional, tag = "4")]
    error: Option<ErrorRecord>,
    #[prost(oneof = "KvResponse", tags = "11, 12, 13, 14, 15, 16, 17, 18, 19, 20")]
    response: Option<KvResponse>,
}

/// The response a snapshot holds as `error` or `response`.
fn cached_result(
    response: Option<KvResponse>,
    error: Option<ErrorRecord>,
) -> Result<KvResult, String> {
    match (response, error) {
        (Some(ok), None) => Ok(Ok(ok)),
        (None, Some(e)) => Ok(Err(KvError::from_record(&e)?)),
        _ => Err("snapshot: session needs exactly one of response and error".into()),
    }
}

impl SessionRecord {
    fn new(client_id: u64, s: &Session) -> SessionRecord {
        let mut responses = s.responses.iter().rev();
        let (last_seq, last) = match responses.next() {
            Some((seq, r)) => (*seq, Some(r)),
            None => (0, None),
        };
        let mut earlier: Vec<CachedRecord> = responses
            .map(|(seq, r)| CachedRecord {
                seq: *seq,
                error: r.as_ref().err().map(KvError::to_record),
                response: r.as_ref().ok().cloned(),
            })
            .collect();
        earlier.reverse();
        SessionRecord {
            client_id,
            last_seq,
            last_index: s.last_index,
            error: last.and_then(|r| r.as_ref().err().map(KvError::to_record)),
            mark: Some(s.mark),
            earlier,
            response: last.and_then(|r| r.as_ref().ok().cloned()),
        }
    }

    fn into_session(self) -> Result<Session, String> {
        let mut responses = BTreeMap::new();
        for c in self.earlier {
            if c.seq >= self.last_seq {
                return Err("snapshot: a session's cached seq is not below its last".into());
            }
            responses.insert(c.seq, cached_result(c.response, c.error)?);
        }
        responses.insert(self.last_seq, cached_result(self.response, self.error)?);
        let mark = self.mark.unwrap_or(self.last_seq);
        if responses.keys().next().is_some_and(|first| *first < mark) {
            return Err("snapshot: a session caches a response below its mark".into());
        }
        Ok(Session {
            last_index: self.last_index,
            mark,
            responses,
        })
    }
}

/// Bytes [`KvStore::encode_snapshot_to`] gathers before each write to its
/// sink: few writes (each a system call into a file), little memory.
const ENCODE_PIECE_BYTES: usize = 256 << 10;

impl KvStore {
    /// The fields before the key histories and those after them (prost
    /// writes fields in tag order: 1-3, the keys (4), then 5-9).
    fn snapshot_head_and_tail(&self) -> (StoreRecord, StoreRecord) {
        let head = StoreRecord {
            revision: self.mvcc.revision(),
            compact_revision: self.mvcc.compact_revision(),
            applied_index: self.applied_index,
            ..StoreRecord::default()
        };
        let tail = StoreRecord {
            leases: self
                .leases
                .iter()
                .map(|(id, l)| LeaseRecord {
                    id,
                    ttl_secs: l.ttl_secs,
                })
                .collect(),
            sessions: self
                .sessions
                .iter()
                .map(|(client_id, s)| SessionRecord::new(client_id, s))
                .collect(),
            members: self.members.values().cloned().collect(),
            removed_members: self.removed_members.iter().copied().collect(),
            alarms: self.alarms.get(AlarmType::None),
            compaction_split: self.mvcc.compaction_split(),
            ..StoreRecord::default()
        };
        (head, tail)
    }

    /// The whole state as bytes; equal stores give equal bytes.
    pub fn encode_snapshot(&self) -> Vec<u8> {
        let (head, tail) = self.snapshot_head_and_tail();
        let keys_len: usize = self
            .mvcc
            .histories()
            .map(|(k, v)| delimited_len(KEYS_TAG, history_len(k, v)))
            .sum();
        let total = head.encoded_len() + keys_len + tail.encoded_len();
        let mut buf = Vec::with_capacity(total);
        head.encode(&mut buf).expect("a Vec has room");
        for (k, v) in self.mvcc.histories() {
            put_history(k, v, &mut buf);
        }
        tail.encode(&mut buf).expect("a Vec has room");
        debug_assert_eq!(buf.len(), total, "snapshot length computed ahead");
        buf
    }

    /// [`Self::encode_snapshot`]'s bytes written into `sink` in pieces of
    /// about `ENCODE_PIECE_BYTES`: memory is one piece (or one key's
    /// history, if larger) and the small tables, never the encoded state.
    pub fn encode_snapshot_to(&self, sink: &mut dyn std::io::Write) -> std::io::Result<()> {
        let (head, tail) = self.snapshot_head_and_tail();
        let mut buf = Vec::with_capacity(ENCODE_PIECE_BYTES + (ENCODE_PIECE_BYTES >> 2));
        head.encode(&mut buf).expect("a Vec has room");
        for (k, v) in self.mvcc.histories() {
            put_history(k, v, &mut buf);
            if buf.len() >= ENCODE_PIECE_BYTES {
                sink.write_all(&buf)?;
                buf.clear();
            }
        }
        sink.write_all(&buf)?;
        drop(buf);
        sink.write_all(&tail.encode_to_vec())
    }

    /// A store from [`Self::encode_snapshot`]'s bytes, under `config`.
    pub fn decode_snapshot(config: KvConfig, data: &[u8]) -> Result<Self, String> {
        Self::decode_snapshot_from(config, &mut &*data)
    }

    /// A store from [`Self::encode_snapshot`]'s bytes read from a stream, in
    /// one pass: each key history is decoded and added to the store as it
    /// is read, so only the store and one key's history are in memory,
    /// never the encoded snapshot. The small fields go aside and are
    /// decoded at the end; the revisions, which checking the keys needs,
    /// come before the keys ([`Self::encode_snapshot`] writes fields in tag
    /// order).
    pub fn decode_snapshot_from(config: KvConfig, r: &mut dyn Read) -> Result<Self, String> {
        let mut mvcc: Option<MvccStore> = None;
        let r = read_fields(r, &mut |head, payload| {
            if mvcc.is_none() {
                mvcc = Some(MvccStore::restoring(head.revision, head.compact_revision)?);
            }
            restore_history(mvcc.as_mut().expect("set above"), payload)
        })?;
        let mut mvcc = match mvcc {
            Some(store) => store,
            None => MvccStore::restoring(r.revision, r.compact_revision)?,
        };
        mvcc.restore_compaction_split(r.compaction_split)?;
        let Tables {
            mut leases,
            sessions,
            alarms,
        } = Tables::decode(&r)?;
        for (key, lease) in mvcc.live_leases() {
            if !leases.contains(lease) {
                return Err(unknown_lease(lease));
            }
            leases.reattach(key, 0, lease);
        }
        Ok(KvStore {
            config,
            mvcc,
            leases,
            sessions,
            applied_index: r.applied_index,
            members: r.members.into_iter().map(|m| (m.id, m)).collect(),
            removed_members: r.removed_members.into_iter().collect(),
            alarms,
            event_keys: super::EventKeys::All,
        })
    }

    /// Copies the store's snapshot encoding that `r` yields into `sink`,
    /// checking it as [`Self::decode_snapshot_from`] does but without
    /// building the store: memory is one key's history, the small tables
    /// and a bit per retained revision, whatever the store's size. With
    /// `members`, the copy gets that member table instead of the one read,
    /// and no removed members, as [`Self::replace_members`] does (a
    /// restore into a new cluster); otherwise the copy of a snapshot this
    /// store wrote is the same bytes. `std::io::sink()` only checks.
    pub fn copy_snapshot(
        r: &mut dyn Read,
        sink: &mut dyn std::io::Write,
        members: Option<Vec<Member>>,
    ) -> Result<SnapshotFacts, CopySnapshotError> {
        let mut check: Option<HistoryCheck> = None;
        let mut buf = Vec::with_capacity(ENCODE_PIECE_BYTES + (ENCODE_PIECE_BYTES >> 2));
        // A failure of the sink, told apart from a bad snapshot.
        let mut sink_failed: Option<std::io::Error> = None;
        let read = read_fields(r, &mut |head, payload| {
            if check.is_none() {
                MvccStore::restoring(head.revision, head.compact_revision)?;
                put_head(head, &mut buf);
                check = Some(HistoryCheck::new(head.revision, head.compact_revision));
            }
            check.as_mut().expect("set above").add(payload)?;
            put_delimited(KEYS_TAG, payload.len(), &mut buf);
            buf.extend_from_slice(payload);
            write_piece(sink, &mut buf, ENCODE_PIECE_BYTES, &mut sink_failed)
        });
        let failed = |e: String, sink_failed: Option<std::io::Error>| match sink_failed {
            Some(io) => CopySnapshotError::Sink(io),
            None => CopySnapshotError::Invalid(e),
        };
        let r = match read {
            Ok(r) => r,
            Err(e) => return Err(failed(e, sink_failed)),
        };
        let check = match check {
            Some(check) => check,
            None => {
                MvccStore::restoring(r.revision, r.compact_revision)
                    .map_err(CopySnapshotError::Invalid)?;
                put_head(&r, &mut buf);
                HistoryCheck::new(r.revision, r.compact_revision)
            }
        };
        super::mvcc::check_split(r.compaction_split, check.first_releasing)
            .map_err(CopySnapshotError::Invalid)?;
        let tables = Tables::decode(&r).map_err(CopySnapshotError::Invalid)?;
        if let Some(&lease) = check.leases.iter().find(|&&l| !tables.leases.contains(l)) {
            return Err(CopySnapshotError::Invalid(unknown_lease(lease)));
        }
        let (members, removed_members) = match members {
            Some(members) => {
                let by_id: std::collections::BTreeMap<u64, Member> =
                    members.into_iter().map(|m| (m.id, m)).collect();
                (by_id.into_values().collect(), Vec::new())
            }
            None => (r.members, r.removed_members),
        };
        let tail = StoreRecord {
            leases: r.leases,
            sessions: r.sessions,
            members,
            removed_members,
            alarms: r.alarms,
            compaction_split: r.compaction_split,
            ..StoreRecord::default()
        };
        tail.encode(&mut buf).expect("a Vec has room");
        write_piece(sink, &mut buf, 0, &mut sink_failed).map_err(|e| failed(e, sink_failed))?;
        Ok(SnapshotFacts {
            revision: r.revision,
            compact_revision: r.compact_revision,
            applied_index: r.applied_index,
            live_keys: check.live_keys,
            leases: tail.leases.len(),
        })
    }
}

/// What [`KvStore::copy_snapshot`] found in a store's snapshot encoding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotFacts {
    /// The store's revision.
    pub revision: i64,
    /// Its compaction point.
    pub compact_revision: i64,
    /// The last log index it applied.
    pub applied_index: u64,
    /// Keys live at its revision.
    pub live_keys: i64,
    /// Its leases.
    pub leases: usize,
}

/// Why [`KvStore::copy_snapshot`] failed.
#[derive(Debug, thiserror::Error)]
pub enum CopySnapshotError {
    /// The encoding read does not decode, or is not a coherent store: what
    /// [`KvStore::decode_snapshot_from`] would say. A failure to read is
    /// one too ("reading the kv snapshot: ...").
    #[error("{0}")]
    Invalid(String),
    /// Writing the copy failed.
    #[error("writing the kv snapshot: {0}")]
    Sink(std::io::Error),
}

/// Appends the fields before the keys (the revisions, the applied index).
fn put_head(r: &StoreRecord, buf: &mut Vec<u8>) {
    let head = StoreRecord {
        revision: r.revision,
        compact_revision: r.compact_revision,
        applied_index: r.applied_index,
        ..StoreRecord::default()
    };
    head.encode(buf).expect("a Vec has room");
}

/// Writes `buf` into `sink` and empties it, if it holds `at_least` bytes;
/// a failure is kept in `failed`.
fn write_piece(
    sink: &mut dyn std::io::Write,
    buf: &mut Vec<u8>,
    at_least: usize,
    failed: &mut Option<std::io::Error>,
) -> Result<(), String> {
    if buf.len() >= at_least {
        if let Err(e) = sink.write_all(buf) {
            *failed = Some(e);
            return Err("the copy's sink failed".into());
        }
        buf.clear();
    }
    Ok(())
}

fn unknown_lease(lease: i64) -> String {
    format!("snapshot: a key carries unknown lease {lease}")
}

/// What [`read_fields`] hands each key history to: the record of the
/// fields before the keys, and the history's encoding.
type OnHistory<'a> = dyn FnMut(&StoreRecord, &[u8]) -> Result<(), String> + 'a;

/// Reads a store's snapshot encoding field by field: each key history's
/// encoding goes to `on_history` as it is read, with the record of the
/// fields before the keys (the revisions, which checking a history needs);
/// the other fields are gathered aside and returned decoded, without keys.
fn read_fields(r: &mut dyn Read, on_history: &mut OnHistory<'_>) -> Result<StoreRecord, String> {
    let mut r = std::io::BufReader::with_capacity(1 << 16, r);
    let undecodable = |e: prost::DecodeError| format!("undecodable kv snapshot: {e}");
    // The fields other than the key histories, as they were read.
    let mut rest = Vec::new();
    let mut payload = Vec::new();
    // The fields before the keys, decoded when the first key comes.
    let mut head: Option<StoreRecord> = None;
    while let Some(key) = read_varint(&mut r, true)? {
        let tag = u32::try_from(key >> 3)
            .ok()
            .filter(|&t| t > 0)
            .ok_or("undecodable kv snapshot: a bad field tag")?;
        let wire_type = WireType::try_from(key & 7).map_err(undecodable)?;
        if tag == KEYS_TAG {
            if wire_type != WireType::LengthDelimited {
                return Err("undecodable kv snapshot: a key history of the wrong wire type".into());
            }
            let len = read_varint(&mut r, false)?.expect("not at a field start");
            read_payload(&mut r, len, &mut payload)?;
            if head.is_none() {
                head = Some(StoreRecord::decode(rest.as_slice()).map_err(undecodable)?);
            }
            on_history(head.as_ref().expect("set above"), &payload)?;
            continue;
        }
        encode_varint(key, &mut rest);
        match wire_type {
            WireType::Varint => {
                let v = read_varint(&mut r, false)?.expect("not at a field start");
                encode_varint(v, &mut rest);
            }
            WireType::SixtyFourBit => {
                read_payload(&mut r, 8, &mut payload)?;
                rest.extend_from_slice(&payload);
            }
            WireType::ThirtyTwoBit => {
                read_payload(&mut r, 4, &mut payload)?;
                rest.extend_from_slice(&payload);
            }
            WireType::LengthDelimited => {
                let len = read_varint(&mut r, false)?.expect("not at a field start");
                read_payload(&mut r, len, &mut payload)?;
                encode_varint(len, &mut rest);
                rest.extend_from_slice(&payload);
            }
            WireType::StartGroup | WireType::EndGroup => {
                return Err("undecodable kv snapshot: a group field".into());
            }
        }
    }
    let record = StoreRecord::decode(rest.as_slice()).map_err(undecodable)?;
    if head.is_some_and(|h| {
        (h.revision, h.compact_revision) != (record.revision, record.compact_revision)
    }) {
        return Err("kv snapshot: its revisions come after the keys".into());
    }
    Ok(record)
}

/// The tables after the keys, decoded and checked; leases without keys
/// attached yet.
struct Tables {
    leases: LeaseTable,
    sessions: SessionTable,
    alarms: AlarmTable,
}

impl Tables {
    fn decode(r: &StoreRecord) -> Result<Tables, String> {
        let mut leases = LeaseTable::default();
        for l in &r.leases {
            leases.insert(l.id, l.ttl_secs);
        }
        let mut sessions = SessionTable::default();
        for s in &r.sessions {
            sessions.insert_restored(s.client_id, s.clone().into_session()?);
        }
        let mut alarms = AlarmTable::default();
        for a in &r.alarms {
            if AlarmType::try_from(a.alarm).is_err() {
                return Err(format!("snapshot: unknown alarm type {}", a.alarm));
            }
            alarms.insert_restored(a);
        }
        Ok(Tables {
            leases,
            sessions,
            alarms,
        })
    }
}

/// The checks [`MvccStore::restore_key`] makes of each key history, made
/// without keeping the histories: versions in order, none after the
/// store's revision, none at a revision another key holds, keys in
/// increasing order, none without versions. What else a store is checked
/// for is gathered: the live keys, and the leases they carry.
struct HistoryCheck {
    revision: i64,
    compact_revision: i64,
    last_key: Option<Vec<u8>>,
    /// Revisions `(main, 0)` from the compaction point on, held: one bit
    /// per main revision since it (each one changed at least one key).
    mains: Vec<u64>,
    /// Revisions with `sub > 0` (the second change of a transaction on),
    /// held.
    subs: std::collections::HashSet<Revision>,
    live_keys: i64,
    leases: std::collections::BTreeSet<i64>,
    /// The least [`super::mvcc::first_releasing_at_point`] of the keys.
    first_releasing: Option<i64>,
}

impl HistoryCheck {
    fn new(revision: i64, compact_revision: i64) -> Self {
        HistoryCheck {
            revision,
            compact_revision,
            last_key: None,
            mains: Vec::new(),
            subs: Default::default(),
            live_keys: 0,
            leases: Default::default(),
            first_releasing: None,
        }
    }

    /// Whether `at` was held already; holds it.
    fn held_twice(&mut self, at: Revision) -> bool {
        if at.sub != 0 {
            return !self.subs.insert(at);
        }
        // Within [compact_revision, revision], checked before.
        let bit = (at.main - self.compact_revision) as u64;
        let (word, mask) = ((bit / 64) as usize, 1u64 << (bit % 64));
        if word >= self.mains.len() {
            self.mains.resize(word + 1, 0);
        }
        let held = self.mains[word] & mask != 0;
        self.mains[word] |= mask;
        held
    }

    fn add(&mut self, encoded: &[u8]) -> Result<(), String> {
        let (key, versions) = decode_history(encoded)?;
        if !versions.is_sorted_by(|a, b| a.revision() < b.revision()) {
            return Err("snapshot: key history out of order".into());
        }
        if self.last_key.as_ref().is_some_and(|last| *last >= key) {
            return Err("snapshot: keys out of order or repeated".into());
        }
        super::mvcc::check_unreleased(&versions, self.compact_revision)?;
        if let Some(sub) = super::mvcc::first_releasing_at_point(&versions, self.compact_revision) {
            self.first_releasing = Some(self.first_releasing.map_or(sub, |s| s.min(sub)));
        }
        for v in &versions {
            if v.main() > self.revision {
                return Err("snapshot: a version after the store's revision".into());
            }
            if v.main() >= self.compact_revision && self.held_twice(v.revision()) {
                return Err("snapshot: two changes at one revision".into());
            }
        }
        let last = versions.last().ok_or("snapshot: key without versions")?;
        if !last.is_tombstone() {
            self.live_keys += 1;
            let lease = last.meta().lease;
            if lease != 0 {
                self.leases.insert(lease);
            }
        }
        self.last_key = Some(key);
        Ok(())
    }
}

#[cfg(test)]
#[path = "snapshot_tests.rs"]
mod tests;
