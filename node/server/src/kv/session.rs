//! Exactly-once sessions: per client, the last sequence number applied and
//! its response, so a retried command is answered without applying twice.

use super::{KvError, KvResponse};
use std::collections::{BTreeMap, BTreeSet};

/// What applying a command gave, as a session caches it.
pub type KvResult = Result<KvResponse, KvError>;

/// One client's session.
#[derive(Clone, Debug, PartialEq)]
pub struct Session {
    /// The last sequence number applied.
    pub last_seq: u64,
    /// The log index of the client's last command: sessions age in log
    /// entries, never in wall-clock time, so every replica agrees.
    pub last_index: u64,
    /// The response to `last_seq`.
    pub response: KvResult,
}

/// What [`SessionTable::check`] decided about a command.
#[derive(Debug)]
pub(crate) enum Dedup {
    /// New: apply it.
    Apply,
    /// Already applied: answer this, apply nothing.
    Answer(KvResult),
}

/// The sessions, bounded by idle time and by count.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SessionTable {
    sessions: BTreeMap<u64, Session>,
    /// (last_index, client_id): least recently used first.
    lru: BTreeSet<(u64, u64)>,
}

impl SessionTable {
    /// Session `client_id`, if kept.
    pub fn get(&self, client_id: u64) -> Option<&Session> {
        self.sessions.get(&client_id)
    }

    /// Number of sessions.
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (u64, &Session)> {
        self.sessions.iter().map(|(c, s)| (*c, s))
    }

    /// Decides whether command `seq` of `client_id` is new. A duplicate
    /// still counts as activity of the session.
    pub(crate) fn check(&mut self, client_id: u64, seq: u64, index: u64) -> Dedup {
        let Some(s) = self.sessions.get_mut(&client_id) else {
            return Dedup::Apply;
        };
        if seq > s.last_seq {
            return Dedup::Apply;
        }
        self.lru.remove(&(s.last_index, client_id));
        s.last_index = index;
        self.lru.insert((index, client_id));
        if seq == s.last_seq {
            Dedup::Answer(s.response.clone())
        } else {
            Dedup::Answer(Err(KvError::StaleSequence {
                seq,
                last: s.last_seq,
            }))
        }
    }

    /// Records the response to a newly applied command, then drops the
    /// least recently used sessions beyond `max`.
    pub(crate) fn record(
        &mut self,
        client_id: u64,
        seq: u64,
        index: u64,
        response: KvResult,
        max: usize,
    ) {
        if let Some(old) = self.sessions.insert(
            client_id,
            Session {
                last_seq: seq,
                last_index: index,
                response,
            },
        ) {
            self.lru.remove(&(old.last_index, client_id));
        }
        self.lru.insert((index, client_id));
        while self.sessions.len() > max {
            let Some((i, c)) = self.lru.pop_first() else {
                break;
            };
            debug_assert!(self.sessions.get(&c).is_some_and(|s| s.last_index == i));
            self.sessions.remove(&c);
        }
    }

    /// Drops sessions idle for more than `ttl_entries` entries at `index`.
    pub(crate) fn expire(&mut self, index: u64, ttl_entries: u64) {
        while let Some(&(i, c)) = self.lru.first() {
            if index.saturating_sub(i) <= ttl_entries {
                break;
            }
            self.lru.pop_first();
            self.sessions.remove(&c);
        }
    }

    pub(crate) fn insert_restored(&mut self, client_id: u64, session: Session) {
        self.lru.insert((session.last_index, client_id));
        self.sessions.insert(client_id, session);
    }
}
