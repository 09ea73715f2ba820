//! A small key-value state machine on the Raft log, with per-client
//! deduplication (the spec's Project 2 `lastSeq`), used by simulation clients.

use flotilla_raft::Bytes;
use std::collections::BTreeMap;

/// An operation on the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KvOp {
    /// Read a key (through the log; linearizable reads normally use ReadIndex).
    Get {
        /// The key.
        key: String,
    },
    /// Set a key.
    Put {
        /// The key.
        key: String,
        /// The value.
        value: String,
    },
    /// Remove a key.
    Delete {
        /// The key.
        key: String,
    },
    /// Set `key` to `value` if its value equals `expected` (None = absent).
    Cas {
        /// The key.
        key: String,
        /// Expected current value.
        expected: Option<String>,
        /// New value.
        value: String,
    },
}

impl KvOp {
    /// The key the operation touches.
    pub fn key(&self) -> &str {
        match self {
            KvOp::Get { key }
            | KvOp::Put { key, .. }
            | KvOp::Delete { key }
            | KvOp::Cas { key, .. } => key,
        }
    }
}

/// What an applied operation returned.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum KvOutput {
    /// Put and Delete.
    Done,
    /// Get: the value, if any.
    Value(Option<String>),
    /// Cas: whether it swapped.
    Swapped(bool),
}

/// A client command: one operation tagged for deduplication.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KvCommand {
    /// The issuing client.
    pub client: u64,
    /// The client's sequence number; retries reuse it.
    pub seq: u64,
    /// The operation.
    pub op: KvOp,
}

/// Why bytes are not a command.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("malformed kv command: {0}")]
pub struct DecodeError(&'static str);

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], DecodeError> {
        if self.0.len() < n {
            return Err(DecodeError("truncated"));
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    fn string(&mut self) -> Result<String, DecodeError> {
        let n = u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")) as usize;
        String::from_utf8(self.take(n)?.to_vec()).map_err(|_| DecodeError("not utf-8"))
    }
}

impl KvCommand {
    /// Encodes for the log.
    pub fn encode(&self) -> Bytes {
        let mut out = Vec::with_capacity(32);
        out.extend_from_slice(&self.client.to_le_bytes());
        out.extend_from_slice(&self.seq.to_le_bytes());
        match &self.op {
            KvOp::Get { key } => {
                out.push(0);
                put_str(&mut out, key);
            }
            KvOp::Put { key, value } => {
                out.push(1);
                put_str(&mut out, key);
                put_str(&mut out, value);
            }
            KvOp::Delete { key } => {
                out.push(2);
                put_str(&mut out, key);
            }
            KvOp::Cas {
                key,
                expected,
                value,
            } => {
                out.push(3);
                put_str(&mut out, key);
                out.push(u8::from(expected.is_some()));
                put_str(&mut out, expected.as_deref().unwrap_or(""));
                put_str(&mut out, value);
            }
        }
        Bytes::from(out)
    }

    /// Decodes a log entry.
    pub fn decode(data: &[u8]) -> Result<KvCommand, DecodeError> {
        let mut r = Reader(data);
        let client = r.u64()?;
        let seq = r.u64()?;
        let op = match r.u8()? {
            0 => KvOp::Get { key: r.string()? },
            1 => KvOp::Put {
                key: r.string()?,
                value: r.string()?,
            },
            2 => KvOp::Delete { key: r.string()? },
            3 => {
                let key = r.string()?;
                let has_expected = r.u8()? == 1;
                let expected = r.string()?;
                KvOp::Cas {
                    key,
                    expected: has_expected.then_some(expected),
                    value: r.string()?,
                }
            }
            _ => return Err(DecodeError("unknown operation")),
        };
        if !r.0.is_empty() {
            return Err(DecodeError("trailing bytes"));
        }
        Ok(KvCommand { client, seq, op })
    }
}

/// The replicated map plus client sessions.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct KvStore {
    data: BTreeMap<String, String>,
    /// client → (last applied seq, its output).
    sessions: BTreeMap<u64, (u64, KvOutput)>,
    /// Operations that were applied (not deduplicated).
    pub applied_ops: u64,
    /// Retries answered from the session cache.
    pub deduplicated_ops: u64,
}

impl KvStore {
    /// Applies a command exactly once per (client, seq); a retry gets the
    /// cached output.
    pub fn apply(&mut self, cmd: &KvCommand) -> KvOutput {
        if let Some((last_seq, output)) = self.sessions.get(&cmd.client)
            && cmd.seq <= *last_seq
        {
            self.deduplicated_ops += 1;
            return output.clone();
        }
        self.applied_ops += 1;
        let output = match &cmd.op {
            KvOp::Get { key } => KvOutput::Value(self.data.get(key).cloned()),
            KvOp::Put { key, value } => {
                self.data.insert(key.clone(), value.clone());
                KvOutput::Done
            }
            KvOp::Delete { key } => {
                self.data.remove(key);
                KvOutput::Done
            }
            KvOp::Cas {
                key,
                expected,
                value,
            } => {
                let swapped = self.data.get(key) == expected.as_ref();
                if swapped {
                    self.data.insert(key.clone(), value.clone());
                }
                KvOutput::Swapped(swapped)
            }
        };
        self.sessions.insert(cmd.client, (cmd.seq, output.clone()));
        output
    }

    /// The state as snapshot data (sessions included, so deduplication
    /// survives snapshots).
    pub fn encode(&self) -> Bytes {
        Bytes::from(serde_json::to_vec(self).expect("the store serializes"))
    }

    /// Restores a store from [`KvStore::encode`]'s output.
    pub fn decode(data: &[u8]) -> Result<KvStore, DecodeError> {
        serde_json::from_slice(data).map_err(|_| DecodeError("malformed snapshot"))
    }

    /// A local read (after ReadIndex confirmed it).
    pub fn get(&self, key: &str) -> Option<String> {
        self.data.get(key).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_round_trip() {
        let ops = [
            KvOp::Get { key: "a".into() },
            KvOp::Put {
                key: "k".into(),
                value: "v".into(),
            },
            KvOp::Delete { key: "k".into() },
            KvOp::Cas {
                key: "k".into(),
                expected: None,
                value: "x".into(),
            },
            KvOp::Cas {
                key: "k".into(),
                expected: Some(String::new()),
                value: "x".into(),
            },
        ];
        for (i, op) in ops.into_iter().enumerate() {
            let cmd = KvCommand {
                client: 7,
                seq: i as u64,
                op,
            };
            assert_eq!(KvCommand::decode(&cmd.encode()), Ok(cmd));
        }
        assert!(KvCommand::decode(b"short").is_err());
    }

    #[test]
    fn retries_apply_once() {
        let mut kv = KvStore::default();
        let cas = KvCommand {
            client: 1,
            seq: 1,
            op: KvOp::Cas {
                key: "k".into(),
                expected: None,
                value: "a".into(),
            },
        };
        assert_eq!(kv.apply(&cas), KvOutput::Swapped(true));
        assert_eq!(
            kv.apply(&cas),
            KvOutput::Swapped(true),
            "retry gets the cached answer"
        );
        assert_eq!(kv.applied_ops, 1);
        assert_eq!(kv.get("k").as_deref(), Some("a"));
    }
}
