//! The store's snapshot encoding: prost messages, so it is deterministic
//! (maps are written in key order) and tolerant of added fields.

use super::error::ErrorRecord;
use super::lease::LeaseTable;
use super::mvcc::{KeyHistory, MvccStore};
use super::session::{Session, SessionTable};
use super::{KvConfig, KvError, KvResponse, KvStore};
use flotilla_proto::etcdserverpb::Member;
use prost::Message as _;

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
    #[prost(message, repeated, tag = "4")]
    keys: Vec<KeyHistory>,
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
    #[prost(oneof = "KvResponse", tags = "11, 12, 13, 14, 15, 16, 17")]
    response: Option<KvResponse>,
}

impl KvStore {
    /// The whole state as bytes; equal stores give equal bytes.
    pub fn encode_snapshot(&self) -> Vec<u8> {
        let record = StoreRecord {
            revision: self.mvcc.revision(),
            compact_revision: self.mvcc.compact_revision(),
            applied_index: self.applied_index,
            keys: self.mvcc.to_records(),
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
        };
        record.encode_to_vec()
    }

    /// A store from [`Self::encode_snapshot`]'s bytes, under `config`.
    pub fn decode_snapshot(config: KvConfig, data: &[u8]) -> Result<Self, String> {
        let r = StoreRecord::decode(data).map_err(|e| format!("undecodable kv snapshot: {e}"))?;
        let mvcc = MvccStore::from_records(r.keys, r.revision, r.compact_revision)?;
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
        Ok(KvStore {
            config,
            mvcc,
            leases,
            sessions,
            applied_index: r.applied_index,
            members: r.members.into_iter().map(|m| (m.id, m)).collect(),
            removed_members: r.removed_members.into_iter().collect(),
        })
    }
}
