//! Exactly-once sessions: per client, the responses of the commands it has
//! not yet confirmed seeing, so a retried command is answered without
//! applying twice, even when one client has several commands in flight and
//! they reach the log out of order.
//!
//! The protocol (the Raft dissertation's §6.3 with a window): every command
//! of a session carries its sequence number `seq` and, from clients that
//! send it, the *mark* — the lowest sequence number the client still waits
//! for an answer to (`flotilla-first-unanswered`). The client has seen the
//! answer of every seq below the mark, so the session drops those and keeps
//! the responses of the applied seqs at or above it, in an ordered map.
//! A command whose seq is cached is answered from the cache; one below the
//! session's mark gets [`KvError::StaleSequence`]; any other is new and
//! applies. At most [`KvConfig::session_window_max`](super::KvConfig)
//! responses are kept per session; a new command beyond that gets
//! [`KvError::SessionWindowFull`] and is not applied.
//!
//! A command without a mark (clients that predate it) keeps the original
//! rule: it applies only above the last applied seq, the last one is
//! answered from the cache, anything lower is stale. Its own seq serves as
//! its mark, so such a session caches one response, as before.

use super::{KvError, KvResponse};
use std::collections::{BTreeMap, BTreeSet};

/// What applying a command gave, as a session caches it.
pub type KvResult = Result<KvResponse, KvError>;

/// One client's session.
#[derive(Clone, Debug, PartialEq)]
pub struct Session {
    /// The log index of the client's last command: sessions age in log
    /// entries, never in wall-clock time, so every replica agrees.
    pub last_index: u64,
    /// The highest mark the session has applied a command with: the
    /// client has seen the answers of all seqs below it.
    pub mark: u64,
    /// The responses of the applied seqs at or above `mark`. Never empty:
    /// the last applied seq is always among them.
    pub responses: BTreeMap<u64, KvResult>,
}

impl Session {
    /// The highest sequence number applied.
    pub fn last_seq(&self) -> u64 {
        self.responses.last_key_value().map_or(0, |(s, _)| *s)
    }
}

/// What [`SessionTable::check`] decided about a command.
#[derive(Debug)]
pub(crate) enum Dedup {
    /// New: apply it.
    Apply,
    /// Already applied, stale, or refused: answer this, apply nothing.
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

    /// Decides whether command `seq` of `client_id`, sent with `mark` (the
    /// client's lowest unanswered seq; None from clients without one), is
    /// new. A command that is not applied still counts as activity of the
    /// session. At most `window_max` responses are kept per session.
    pub(crate) fn check(
        &mut self,
        client_id: u64,
        seq: u64,
        mark: Option<u64>,
        index: u64,
        window_max: usize,
    ) -> Dedup {
        let Some(s) = self.sessions.get_mut(&client_id) else {
            return Dedup::Apply;
        };
        let last = s.last_seq();
        let answer = match mark {
            None if seq > last => return Dedup::Apply,
            None if seq == last => match s.responses.get(&last) {
                Some(cached) => cached.clone(),
                None => return Dedup::Apply,
            },
            None => Err(KvError::StaleSequence { seq, last }),
            Some(mark) => {
                if let Some(cached) = s.responses.get(&seq) {
                    cached.clone()
                } else if seq < s.mark {
                    Err(KvError::StaleSequence { seq, last })
                } else {
                    // What would stay cached once this one applies: the
                    // responses at or above its mark.
                    let kept = s.responses.range(mark.min(seq)..).count();
                    if kept < window_max {
                        return Dedup::Apply;
                    }
                    Err(KvError::SessionWindowFull {
                        seq,
                        max: window_max as u64,
                    })
                }
            }
        };
        self.lru.remove(&(s.last_index, client_id));
        s.last_index = index;
        self.lru.insert((index, client_id));
        Dedup::Answer(answer)
    }

    /// Records the response to a newly applied command `seq` sent with
    /// `mark`: drops the responses below the mark, keeps this one, then
    /// drops the least recently used sessions beyond `max`.
    pub(crate) fn record(
        &mut self,
        client_id: u64,
        seq: u64,
        mark: Option<u64>,
        index: u64,
        response: KvResult,
        max: usize,
    ) {
        let mark = mark.unwrap_or(seq).min(seq);
        match self.sessions.get_mut(&client_id) {
            Some(s) => {
                self.lru.remove(&(s.last_index, client_id));
                s.last_index = index;
                if mark > s.mark {
                    s.mark = mark;
                    s.responses = s.responses.split_off(&mark);
                }
                s.responses.insert(seq, response);
            }
            None => {
                self.sessions.insert(
                    client_id,
                    Session {
                        last_index: index,
                        mark,
                        responses: BTreeMap::from([(seq, response)]),
                    },
                );
            }
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

#[cfg(test)]
#[path = "session_tests.rs"]
mod tests;
