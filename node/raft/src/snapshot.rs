//! Snapshots and log compaction (Raft §7): the application snapshots its
//! state machine and the log before it is discarded; a follower that needs
//! discarded entries receives the snapshot in bounded, checksummed chunks and
//! installs it only once it is complete and its checksum matches.
//!
//! Neither side holds a snapshot whole: the leader reads each chunk from
//! storage as it sends it ([`Storage::snapshot_chunk`]), the follower hands
//! each chunk to storage as it arrives ([`Storage::receive_snapshot_chunk`])
//! and keeps only a running checksum.

use crate::error::StorageError;
use crate::message::MessageBody;
use crate::progress::ProgressState;
use crate::raft::Raft;
use crate::replication::IfNothingToSend;
use crate::storage::Storage;
use crate::types::{LogIndex, NodeId, Snapshot, SnapshotMeta, Term};
use bytes::Bytes;

/// A snapshot a follower is receiving: its data goes to storage chunk by
/// chunk; only the count and the running checksum stay here.
#[derive(Clone, Debug)]
pub(crate) struct IncomingSnapshot {
    meta: SnapshotMeta,
    received_bytes: u64,
    crc: crc32fast::Hasher,
}

impl<S: Storage> Raft<S> {
    /// Whether the log since the last snapshot passed the configured size:
    /// [`crate::Config::snapshot_after_bytes`], or
    /// [`crate::Config::snapshot_after_entries`] once its bytes also reach
    /// [`crate::Config::snapshot_min_log_percent`] of the last snapshot's.
    /// Time for the application to snapshot and call [`Raft::compact`].
    pub fn snapshot_due(&self) -> bool {
        let since = self.log.applied.saturating_sub(self.log.snapshot_index());
        let bytes = self.applied_bytes_since_snapshot;
        let worth_it = || {
            let percent = u128::from(self.config.snapshot_min_log_percent);
            u128::from(bytes) * 100 >= u128::from(self.last_snapshot_bytes) * percent
        };
        since > 0
            && (bytes >= self.config.snapshot_after_bytes
                || (since >= self.config.snapshot_after_entries && worth_it()))
    }

    /// Records `data` — the state machine as of the applied index — as a
    /// snapshot and discards the log up to that index, less the
    /// [`crate::Config::snapshot_catchup_entries`] before it. Call it
    /// between `advance` and the next input. Returns the snapshot's
    /// position.
    pub fn compact(&mut self, data: Bytes) -> Result<SnapshotMeta, StorageError> {
        let bytes = data.len() as u64;
        let snapshot = self.prepare_snapshot(data)?;
        let meta = snapshot.meta.clone();
        let compact_to = self.compact_to(meta.index);
        self.log.storage.compact(snapshot, compact_to)?;
        self.last_snapshot_bytes = bytes;
        self.confs.compact_to(meta.index);
        tracing::debug!(id = %self.id, index = meta.index, compact_to, "log compacted");
        Ok(meta)
    }

    /// The last index a compaction for a snapshot at `index` discards: the
    /// catch-up entries before the snapshot stay.
    fn compact_to(&self, index: LogIndex) -> LogIndex {
        index.saturating_sub(self.config.snapshot_catchup_entries)
    }

    /// The first half of [`Raft::compact`], for storage with a
    /// [`crate::Storage::snapshot_writer`]: `data` (the state machine as of
    /// the applied index) with its position. Have the writer store it,
    /// then call [`Raft::compact_written`]. Call it between `advance` and
    /// the next input.
    pub fn prepare_snapshot(&mut self, data: Bytes) -> Result<Snapshot, StorageError> {
        assert!(
            self.pending_ready_is_none(),
            "a snapshot taken between ready() and advance()"
        );
        let index = self.log.applied;
        let term = self.log.term(index)?;
        self.applied_bytes_since_snapshot = 0;
        Ok(Snapshot {
            meta: SnapshotMeta {
                index,
                term,
                conf_state: self.confs.at(index).clone(),
            },
            data,
        })
    }

    /// The second half: the snapshot at `meta`, of `data_bytes` bytes, is
    /// durable; discard the log it covers but the catch-up entries
    /// (nothing, if a newer snapshot was installed meanwhile).
    pub fn compact_written(
        &mut self,
        meta: &SnapshotMeta,
        data_bytes: u64,
    ) -> Result<(), StorageError> {
        assert!(
            self.pending_ready_is_none(),
            "compact_written() between ready() and advance()"
        );
        if meta.index <= self.log.snapshot_index() {
            return Ok(());
        }
        let compact_to = self.compact_to(meta.index);
        self.log.storage.compact_written(meta.clone(), compact_to)?;
        self.last_snapshot_bytes = data_bytes;
        self.confs.compact_to(meta.index);
        tracing::debug!(id = %self.id, index = meta.index, compact_to, "log compacted");
        Ok(())
    }

    /// Leader: `to` needs entries before the first one held; start sending
    /// the latest snapshot. Returns false if storage failed.
    pub(crate) fn start_snapshot_send(&mut self, to: NodeId) -> bool {
        let source = match self.log.storage.snapshot_source() {
            Ok(s) => s,
            Err(e) => {
                self.fatal = Some(StorageError::Fatal(format!("cannot read snapshot: {e}")));
                return false;
            }
        };
        tracing::info!(id = %self.id, %to, index = source.meta.index, bytes = source.len_bytes, "sending snapshot");
        if let Some(pr) = self.tracker.progress.get_mut(&to) {
            pr.become_snapshot(source);
        }
        true
    }

    /// Leader: the next chunk for `to`, within the chunk size, read from
    /// storage now. If storage no longer holds the snapshot being sent (a
    /// newer one replaced it), the newest is sent from its start instead.
    pub(crate) fn send_snapshot_chunk(&mut self, to: NodeId) {
        let chunk_max = self.config.max_snapshot_chunk_bytes;
        for _ in 0..2 {
            let Some(out) = self
                .tracker
                .progress
                .get(&to)
                .and_then(|pr| pr.snapshot.as_ref())
            else {
                return;
            };
            let (source, start) = (out.source.clone(), out.next_offset);
            let data = match self
                .log
                .storage
                .snapshot_chunk(&source.meta, start, chunk_max)
            {
                Ok(data) => data,
                Err(StorageError::Compacted(_)) => {
                    tracing::info!(id = %self.id, %to, index = source.meta.index, "snapshot replaced while being sent; sending the newest");
                    if !self.start_snapshot_send(to) {
                        return;
                    }
                    continue;
                }
                Err(e) => {
                    self.fatal = Some(StorageError::Fatal(format!(
                        "cannot read snapshot {} at {start}: {e}",
                        source.meta.index
                    )));
                    return;
                }
            };
            let total = source.len_bytes;
            let end = start + data.len() as u64;
            if end > total || (data.is_empty() && start < total) {
                self.fatal = Some(StorageError::Fatal(format!(
                    "snapshot {} gave {} bytes at {start} of {total}",
                    source.meta.index,
                    data.len()
                )));
                return;
            }
            let round = self.reads.last_round();
            let Some(pr) = self.tracker.progress.get_mut(&to) else {
                return;
            };
            if let Some(out) = pr.snapshot.as_mut() {
                out.next_offset = end;
                out.sent_in_round = round;
            }
            let body = MessageBody::InstallSnapshot {
                meta: source.meta,
                offset: start,
                chunk_crc: crc32fast::hash(&data),
                data,
                done: end == total,
                total_bytes: total,
                snapshot_crc: source.crc,
            };
            pr.inflights.add(end, end - start);
            self.send(to, body);
            return;
        }
    }

    /// Leader: a follower answered a chunk of snapshot `snapshot_index`
    /// (0: it did not say which).
    pub(crate) fn handle_snapshot_response(
        &mut self,
        from: NodeId,
        accepted: bool,
        next_offset: u64,
        snapshot_index: LogIndex,
    ) {
        let now = self.now_ticks;
        let Some(pr) = self.tracker.progress.get_mut(&from) else {
            return;
        };
        pr.recent_active = true;
        pr.last_heard_tick = Some(now);
        if pr.state != ProgressState::Snapshot {
            return;
        }
        let Some(out) = pr.snapshot.as_mut() else {
            return;
        };
        if snapshot_index != 0 && snapshot_index != out.source.meta.index {
            // About a snapshot sent before this one, or the one this send
            // replaced: its offsets are not this one's.
            return;
        }
        if accepted {
            out.acked_offset = out.acked_offset.max(next_offset);
            // The follower may hold more than was sent since a rewind.
            out.next_offset = out.next_offset.max(out.acked_offset);
            if out.rewound_to.is_some_and(|r| out.acked_offset > r) {
                out.rewound_to = None;
            }
            pr.inflights.free_to(next_offset);
        } else if out.rewound_to != Some(next_offset) {
            // The follower holds exactly `next_offset` bytes: a chunk was
            // lost or arrived out of order, or it started over (restarted,
            // or a check failed), in which case what it acknowledged
            // before is gone. Resend from where it stands.
            out.acked_offset = next_offset;
            out.next_offset = next_offset;
            out.rewound_to = Some(next_offset);
            pr.inflights.reset();
        } else {
            // The same refusal again, for a chunk sent before the resend
            // from `next_offset`: the resend is under way. (Were its
            // first chunk lost too, the answer to a later heartbeat
            // rewinds, see `rewind_snapshot_send`.)
            return;
        }
        self.send_appends(from, IfNothingToSend::Skip);
    }

    /// Leader: on the answer to heartbeat round `round`, if that round
    /// started after the newest chunk was sent and chunks are still
    /// unacknowledged, they (or their answers) were lost: the send resumes
    /// from the acknowledged offset. See
    /// [`OutgoingSnapshot::sent_in_round`](crate::progress::OutgoingSnapshot).
    pub(crate) fn rewind_snapshot_send(&mut self, from: NodeId, round: u64) {
        let Some(pr) = self.tracker.progress.get_mut(&from) else {
            return;
        };
        if let Some(out) = pr.snapshot.as_mut()
            && round > out.sent_in_round
            && out.next_offset > out.acked_offset
        {
            out.next_offset = out.acked_offset;
            pr.inflights.reset();
        }
    }

    /// Follower: one chunk of a snapshot from the leader.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn handle_install_snapshot(
        &mut self,
        from: NodeId,
        meta: SnapshotMeta,
        offset: u64,
        data: Bytes,
        chunk_crc: u32,
        done: bool,
        total_bytes: u64,
        snapshot_crc: u32,
    ) {
        if meta.index <= self.log.committed {
            // Nothing new: our log already covers it. A snapshot being
            // received goes only if the log covers it too: this may be a
            // late chunk of an older one.
            if self
                .incoming_snapshot
                .as_ref()
                .is_some_and(|s| s.meta.index <= self.log.committed)
            {
                self.incoming_snapshot = None;
            }
            let index = self.log.committed;
            self.send(from, append_ok(index));
            return;
        }
        let snapshot_index = meta.index;
        let respond = |raft: &mut Self, accepted: bool, next_offset: u64| {
            raft.send(
                from,
                MessageBody::InstallSnapshotResponse {
                    accepted,
                    next_offset,
                    snapshot_index,
                },
            );
        };
        if self
            .incoming_snapshot
            .as_ref()
            .is_none_or(|s| s.meta != meta)
        {
            if offset != 0 {
                return respond(self, false, 0);
            }
            if total_bytes > self.config.max_snapshot_bytes {
                tracing::error!(id = %self.id, total_bytes, limit = self.config.max_snapshot_bytes, "snapshot too large; refusing it");
                return respond(self, false, 0);
            }
            self.incoming_snapshot = Some(IncomingSnapshot {
                meta: meta.clone(),
                received_bytes: 0,
                crc: crc32fast::Hasher::new(),
            });
        }
        let incoming = self.incoming_snapshot.as_mut().expect("set above");
        let have = incoming.received_bytes;
        if offset < have {
            // A duplicate (the leader resent chunks it presumed lost): say
            // where this member stands, without asking to rewind, or each
            // duplicate in flight would make the leader resend its window
            // again.
            return respond(self, true, have);
        }
        if offset > have {
            return respond(self, false, have);
        }
        if crc32fast::hash(&data) != chunk_crc {
            tracing::warn!(id = %self.id, offset, "snapshot chunk failed its checksum");
            return respond(self, false, have);
        }
        if have + data.len() as u64 > total_bytes.min(self.config.max_snapshot_bytes) {
            self.incoming_snapshot = None;
            return respond(self, false, 0);
        }
        if let Err(e) = self
            .log
            .storage
            .receive_snapshot_chunk(&meta, offset, &data)
        {
            tracing::warn!(id = %self.id, index = meta.index, offset, error = %e, "cannot store a snapshot chunk; starting over");
            self.incoming_snapshot = None;
            return respond(self, false, 0);
        }
        let incoming = self.incoming_snapshot.as_mut().expect("set above");
        incoming.crc.update(&data);
        incoming.received_bytes += data.len() as u64;
        let have = incoming.received_bytes;
        if !done {
            return respond(self, true, have);
        }
        let incoming = self.incoming_snapshot.take().expect("set above");
        if have != total_bytes || incoming.crc.finalize() != snapshot_crc {
            tracing::warn!(id = %self.id, index = meta.index, "completed snapshot failed its checksum; starting over");
            return respond(self, false, 0);
        }
        let snapshot = match self.log.storage.received_snapshot(&meta) {
            Ok(snapshot) => snapshot,
            Err(e) => {
                tracing::warn!(id = %self.id, index = meta.index, error = %e, "cannot finish a received snapshot; starting over");
                return respond(self, false, 0);
            }
        };
        self.restore(snapshot, have);
        let index = self.log.committed;
        self.send(from, append_ok(index));
    }

    /// Installs a complete snapshot from the leader (thesis §5.1): if the log
    /// already holds its last entry, only the commit index moves; otherwise
    /// the log is replaced and the driver installs the snapshot (of
    /// `data_bytes` bytes).
    fn restore(&mut self, snapshot: Snapshot, data_bytes: u64) {
        let meta = &snapshot.meta;
        if self.log.match_term(meta.index, meta.term) {
            self.log.commit_to(meta.index);
            return;
        }
        self.last_snapshot_bytes = data_bytes;
        tracing::info!(id = %self.id, index = meta.index, term = %meta.term, "restoring snapshot");
        let conf = meta.conf_state.clone();
        self.log.restore(snapshot);
        self.confs.reset(conf);
        self.sync_tracker();
    }

    /// Leader: the follower matched at `index` after a snapshot.
    pub(crate) fn snapshot_caught_up(&mut self, from: NodeId) {
        if let Some(pr) = self.tracker.progress.get_mut(&from)
            && pr.state == ProgressState::Snapshot
            && pr
                .snapshot
                .as_ref()
                .is_none_or(|s| pr.match_index >= s.source.meta.index)
        {
            tracing::info!(id = %self.id, follower = %from, matched = pr.match_index, "snapshot delivered");
            pr.become_probe();
        }
    }
}

fn append_ok(index: LogIndex) -> MessageBody {
    MessageBody::AppendEntriesResponse {
        reject: false,
        index,
        hint_index: 0,
        hint_term: Term(0),
    }
}
