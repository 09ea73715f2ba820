//! The store's snapshot encoding: prost messages, so it is deterministic
//! (maps are written in key order) and tolerant of added fields.
//!
//! The key histories are most of a snapshot, so they never exist twice in
//! memory: [`KvStore::encode_snapshot`] writes them straight from the store
//! into one buffer of the exact size, and [`KvStore::decode_snapshot`]
//! decodes them one key at a time, straight into the store. The bytes are
//! the same as prost would write for a [`StoreRecord`] whose field 4 were
//! `repeated KeyHistory` messages.

use super::alarm::AlarmTable;
use super::error::ErrorRecord;
use super::lease::LeaseTable;
use super::mvcc::{MvccStore, Revision};
use super::session::{Session, SessionTable};
use super::version::{Version, VersionMeta};
use super::{KvConfig, KvError, KvResponse, KvStore};
use flotilla_proto::etcdserverpb::{AlarmMember, AlarmType, Member};
use flotilla_raft::Bytes;
use prost::Message as _;
use prost::encoding::{
    DecodeContext, WireType, decode_key, decode_varint, encode_key, encode_varint,
    encoded_len_varint, key_len, skip_field,
};

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

/// Calls `f(tag, field, payload)` for each top-level field of the encoded
/// message `buf`: `field` is all of its bytes, `payload` the content of a
/// length-delimited one.
fn for_each_field<'a>(
    mut buf: &'a [u8],
    mut f: impl FnMut(u32, &'a [u8], Option<&'a [u8]>) -> Result<(), String>,
) -> Result<(), String> {
    let undecodable = |e: prost::DecodeError| format!("undecodable kv snapshot: {e}");
    while !buf.is_empty() {
        let start = buf;
        let (tag, wire_type) = decode_key(&mut buf).map_err(undecodable)?;
        let payload = if wire_type == WireType::LengthDelimited {
            let len = decode_varint(&mut buf).map_err(undecodable)?;
            let len = usize::try_from(len)
                .ok()
                .filter(|&l| l <= buf.len())
                .ok_or("undecodable kv snapshot: a field runs past the end")?;
            let (payload, after) = buf.split_at(len);
            buf = after;
            Some(payload)
        } else {
            skip_field(wire_type, tag, &mut buf, DecodeContext::default()).map_err(undecodable)?;
            None
        };
        f(tag, &start[..start.len() - buf.len()], payload)?;
    }
    Ok(())
}

/// Decodes one [`KeyHistory`] into the store.
fn restore_history(mvcc: &mut MvccStore, encoded: &[u8]) -> Result<(), String> {
    let h = KeyHistory::decode(encoded).map_err(|e| format!("undecodable key history: {e}"))?;
    let versions = h
        .versions
        .into_iter()
        .map(VersionRecord::into_version)
        .collect::<Result<Vec<_>, _>>()?;
    mvcc.restore_key(&h.key, versions)
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

#[derive(Clone, PartialEq, prost::Message)]
struct SessionRecord {
    #[prost(uint64, tag = "1")]
    client_id: u64,
    #[prost(uint64, tag = "2")]
    last_seq: u64,
    #[prost(uint64, tag = "3")]
    last_index: u64,
    #[prost(message, optional, tag = "4")]
    error: Option<ErrorRecord>,
    #[prost(oneof = "KvResponse", tags = "11, 12, 13, 14, 15, 16, 17, 18, 19, 20")]
    response: Option<KvResponse>,
}

impl KvStore {
    /// The whole state as bytes; equal stores give equal bytes.
    pub fn encode_snapshot(&self) -> Vec<u8> {
        // prost writes fields in tag order: 1-3, the keys (4), then 5-9.
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
                .map(|(client_id, s)| SessionRecord {
                    client_id,
                    last_seq: s.last_seq,
                    last_index: s.last_index,
                    error: s.response.as_ref().err().map(KvError::to_record),
                    response: s.response.as_ref().ok().cloned(),
                })
                .collect(),
            members: self.members.values().cloned().collect(),
            removed_members: self.removed_members.iter().copied().collect(),
            alarms: self.alarms.get(AlarmType::None),
            ..StoreRecord::default()
        };
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

    /// A store from [`Self::encode_snapshot`]'s bytes, under `config`. Two
    /// passes: the small fields first (the revisions are needed to check
    /// the keys), then the key histories, each decoded and added to the
    /// store in turn.
    pub fn decode_snapshot(config: KvConfig, data: &[u8]) -> Result<Self, String> {
        let mut rest = Vec::new();
        for_each_field(data, |tag, field, _| {
            if tag != KEYS_TAG {
                rest.extend_from_slice(field);
            }
            Ok(())
        })?;
        let r = StoreRecord::decode(rest.as_slice())
            .map_err(|e| format!("undecodable kv snapshot: {e}"))?;
        let mut mvcc = MvccStore::restoring(r.revision, r.compact_revision)?;
        for_each_field(data, |tag, _, payload| match (tag, payload) {
            (KEYS_TAG, Some(history)) => restore_history(&mut mvcc, history),
            (KEYS_TAG, None) => {
                Err("undecodable kv snapshot: a key history of the wrong wire type".into())
            }
            _ => Ok(()),
        })?;
        let mut leases = LeaseTable::default();
        for l in r.leases {
            leases.insert(l.id, l.ttl_secs);
        }
        for (key, lease) in mvcc.live_leases() {
            if !leases.contains(lease) {
                return Err(format!("snapshot: a key carries unknown lease {lease}"));
            }
            leases.reattach(key, 0, lease);
        }
        let mut sessions = SessionTable::default();
        for s in r.sessions {
            let response = match (s.response, s.error) {
                (Some(ok), None) => Ok(ok),
                (None, Some(e)) => Err(KvError::from_record(&e)?),
                _ => return Err("snapshot: session needs exactly one of response and error".into()),
            };
            let session = Session {
                last_seq: s.last_seq,
                last_index: s.last_index,
                response,
            };
            sessions.insert_restored(s.client_id, session);
        }
        let mut alarms = AlarmTable::default();
        for a in &r.alarms {
            if AlarmType::try_from(a.alarm).is_err() {
                return Err(format!("snapshot: unknown alarm type {}", a.alarm));
            }
            alarms.insert_restored(a);
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
            record_events: true,
        })
    }
}

#[cfg(test)]
#[path = "snapshot_tests.rs"]
mod tests;
