//! Helpers shared by the node's tests.

use crate::driver::StateMachine;
use flotilla_raft::{Bytes, Config, LogIndex, NodeId, Raft, Snapshot};
use flotilla_storage::{DiskStorage, StorageOptions};

/// The core of a one-voter cluster (member 1, election after 10 ticks,
/// heartbeat every 2) on disk storage in `dir`; `tune` adjusts its
/// configuration.
pub(crate) fn single_voter_raft(
    dir: &std::path::Path,
    tune: impl FnOnce(&mut Config),
) -> Raft<DiskStorage> {
    let mut options = StorageOptions::new(7, 1);
    options.bootstrap = Some(flotilla_raft::ConfState {
        voters: vec![NodeId(1)],
        learners: Vec::new(),
    });
    let storage = DiskStorage::open(dir, options).expect("open storage");
    let mut config = Config::new(NodeId(1));
    config.election_ticks = 10;
    config.heartbeat_ticks = 2;
    tune(&mut config);
    Raft::new(config, storage).expect("raft")
}

/// Applies commands by appending them; the output is the log's length. Its
/// snapshot is the commands, length-prefixed, so a member restored from one
/// holds exactly what the others applied.
///
/// A command `slow:<ms>` is heavy ([`StateMachine::is_heavy`]): applying
/// it takes that many milliseconds, as a DeleteRange over many keys would,
/// plus `slower_ms` (members that share a few cores apply it at staggered
/// times).
#[derive(Debug, Default)]
pub(crate) struct Recorder {
    pub(crate) commands: Vec<Bytes>,
    pub(crate) slower_ms: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

/// How long applying `command` takes, if it is a heavy `slow:<ms>`.
fn slow_ms(command: &[u8]) -> Option<u64> {
    std::str::from_utf8(command.strip_prefix(b"slow:")?)
        .ok()?
        .parse()
        .ok()
}

impl StateMachine for Recorder {
    type Output = usize;

    fn apply(&mut self, _index: LogIndex, command: &Bytes) -> usize {
        if let Some(ms) = slow_ms(command) {
            let slower = self.slower_ms.load(std::sync::atomic::Ordering::Relaxed);
            std::thread::sleep(std::time::Duration::from_millis(ms + slower));
        }
        self.commands.push(command.clone());
        self.commands.len()
    }

    fn is_heavy(&self, command: &Bytes) -> bool {
        slow_ms(command).is_some()
    }

    fn read_copy(&self) -> Option<Self> {
        Some(Recorder {
            commands: self.commands.clone(),
            slower_ms: self.slower_ms.clone(),
        })
    }

    /// A membership entry's context is recorded like a command, marked so
    /// that tests can tell it apart.
    fn apply_conf_change(&mut self, _index: LogIndex, context: &Bytes) -> usize {
        let mut marked = b"conf:".to_vec();
        marked.extend_from_slice(context);
        self.commands.push(Bytes::from(marked));
        self.commands.len()
    }

    fn snapshot(&self) -> Bytes {
        let mut out = Vec::new();
        for c in &self.commands {
            out.extend_from_slice(&(c.len() as u32).to_le_bytes());
            out.extend_from_slice(c);
        }
        Bytes::from(out)
    }

    fn restore(&mut self, snapshot: &Snapshot) -> Result<(), String> {
        let mut data = &snapshot.data[..];
        self.commands.clear();
        while !data.is_empty() {
            let (len, rest) = data.split_at_checked(4).ok_or("truncated snapshot")?;
            let len = u32::from_le_bytes(len.try_into().expect("4 bytes")) as usize;
            let (cmd, rest) = rest.split_at_checked(len).ok_or("truncated snapshot")?;
            self.commands.push(Bytes::copy_from_slice(cmd));
            data = rest;
        }
        Ok(())
    }
}
