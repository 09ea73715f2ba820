//! Installing a snapshot from the leader: the storage makes it durable
//! while the state machine decodes it, on a second thread.

use super::state_machine::StateMachine;
use flotilla_raft::{Raft, Ready, Snapshot, Storage, StorageError};
use std::time::{Duration, Instant};

/// How long the two halves of [`install_snapshot`] took.
pub(super) struct InstallTimes {
    pub(super) persisted: Duration,
    pub(super) restored: Duration,
}

/// Step 3 and the snapshot half of step 5 for a `Ready` that carries a
/// snapshot: the storage makes it durable (then saves the entries after
/// it) while the state machine decodes it on a scoped thread. The state is
/// committed data, so holding it before the local copy is durable is safe:
/// nothing is acknowledged before the caller sends this `Ready`'s messages,
/// after both halves have finished.
///
/// A snapshot the storage received chunk by chunk into a file comes
/// without its data: the state machine reads it from that file as a
/// stream ([`StateMachine::restore_from`]), opened before the storage
/// installs the file (a rename the open file does not notice). So the
/// snapshot is never in memory whole, only the state decoded from it.
pub(super) fn install_snapshot<S: Storage, M: StateMachine>(
    raft: &mut Raft<S>,
    sm: &mut M,
    snapshot: &Snapshot,
    ready: &Ready,
) -> Result<InstallTimes, StorageError> {
    let started = Instant::now();
    let reader = raft.storage().snapshot_reader(&snapshot.meta)?;
    let persist = |raft: &mut Raft<S>| {
        raft.storage_mut().apply_snapshot(snapshot.clone())?;
        raft.storage_mut()
            .save(ready.hard_state.as_ref(), &ready.entries)
    };
    std::thread::scope(|scope| {
        let restoring = std::thread::Builder::new()
            .name("snapshot-restore".into())
            .spawn_scoped(scope, move || {
                let restored = match reader {
                    Some(mut data) => sm.restore_from(&snapshot.meta, &mut data),
                    None => sm.restore(snapshot),
                };
                restored
                    .map_err(|e| StorageError::Fatal(format!("cannot restore snapshot: {e}")))
                    .map(|()| started.elapsed())
            });
        let persisted = persist(raft).map(|()| started.elapsed());
        let restored = match restoring {
            Ok(handle) => handle
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
            Err(e) => Err(StorageError::Fatal(format!(
                "cannot start a thread to restore the snapshot: {e}"
            ))),
        };
        Ok(InstallTimes {
            persisted: persisted?,
            restored: restored?,
        })
    })
}
