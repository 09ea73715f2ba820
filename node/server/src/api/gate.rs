//! [`FeatureGate`]: whether what this member proposes may use a feature that
//! members of the previous release do not understand.
//!
//! A member of the previous release ignores `KvCommand.first_unanswered`
//! and applies the one-response rule, so an entry carrying the mark could
//! apply on new members and be refused on old ones: the replicas would
//! diverge. The leader therefore clears the mark of what it proposes
//! unless every member of the configuration has advertised
//! [`WINDOWED_SESSIONS`] in its peer batches since this process started;
//! the command then follows the old rule on every replica.
//!
//! Batched auto-compaction ([`BATCHED_COMPACTION`]) is gated the same way:
//! how far an entry compacts decides the store size every replica checks
//! quotas against, so the leader asks for batches only when every member
//! compacts alike.

use crate::kv::KvCommand;
use crate::state::MemberIds;
use crate::transport::{BATCHED_COMPACTION, PeerFeatures, WINDOWED_SESSIONS};
use flotilla_raft::Bytes;
use prost::Message as _;

/// What this member knows of the features every member understands.
/// Cheap to clone.
#[derive(Clone, Debug)]
pub struct FeatureGate {
    me: u64,
    own: u64,
    heard: PeerFeatures,
    members: MemberIds,
}

impl FeatureGate {
    /// The gate of member `me`, which understands `own` (the features its
    /// batches advertise), over what its peer service heard and the member
    /// table's ids.
    pub fn new(me: u64, own: u64, heard: PeerFeatures, members: MemberIds) -> Self {
        FeatureGate {
            me,
            own,
            heard,
            members,
        }
    }

    /// Whether every member, this one included, understands `feature`.
    pub fn open(&self, feature: u64) -> bool {
        self.own & feature == feature
            && self
                .members
                .with(|ids| self.heard.all_have(self.me, ids, feature))
    }

    /// Whether this member itself understands `feature` (what its own
    /// batches advertise).
    pub fn understood_here(&self, feature: u64) -> bool {
        self.own & feature == feature
    }

    /// Whether `member` was last heard advertising `feature`.
    pub fn understood_by(&self, member: u64, feature: u64) -> bool {
        self.heard.has(member, feature)
    }

    /// Clears the mark of `command` (which this member is about to
    /// propose) while a member may not understand marks; whether it did.
    pub fn clear_mark(&self, command: &mut KvCommand) -> bool {
        if command.first_unanswered != 0 && !self.open(WINDOWED_SESSIONS) {
            command.first_unanswered = 0;
            true
        } else {
            false
        }
    }

    /// Makes `command` (which this member is about to propose) compact in
    /// batches exactly when every member understands that; whether it
    /// changed. Commands arrive without it (a follower never sets it, so a
    /// previous-release leader passes none on), and the leader decides.
    pub fn stamp_compaction(&self, command: &mut KvCommand) -> bool {
        let batched = self.open(BATCHED_COMPACTION);
        let changed = command.batched_compaction != batched;
        command.batched_compaction = batched;
        changed
    }

    /// Both stamps of a command this member is about to propose
    /// ([`Self::clear_mark`], [`Self::stamp_compaction`]); whether it
    /// changed.
    pub fn stamp(&self, command: &mut KvCommand) -> bool {
        let cleared = self.clear_mark(command);
        self.stamp_compaction(command) | cleared
    }

    /// The encoded command `bytes` without its mark, for a leader that
    /// does not understand marks; the same bytes when it carries none (or
    /// does not decode: the leader refuses those).
    pub fn strip_mark(bytes: Bytes) -> Bytes {
        match KvCommand::decode(bytes.clone()) {
            Ok(c) if c.first_unanswered != 0 => c.with_first_unanswered(0).encode_to_bytes(),
            _ => bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::KvOp;
    use flotilla_proto::etcdserverpb::PutRequest;

    fn put(mark: u64) -> KvCommand {
        KvCommand::with_session(
            7,
            5,
            KvOp::Put(PutRequest {
                key: b"k".to_vec(),
                ..Default::default()
            }),
        )
        .with_first_unanswered(mark)
    }

    #[test]
    fn marks_are_cleared_until_every_member_and_this_one_understand_them() {
        let heard = PeerFeatures::default();
        let members = MemberIds::default();
        let gate = FeatureGate::new(1, WINDOWED_SESSIONS, heard.clone(), members.clone());
        // The member table is not known yet.
        assert!(!gate.open(WINDOWED_SESSIONS));
        members.set(vec![1, 2, 3]);
        heard.record(2, WINDOWED_SESSIONS);
        let mut command = put(3);
        assert!(gate.clear_mark(&mut command));
        assert_eq!(command, put(0));
        heard.record(3, WINDOWED_SESSIONS);
        let mut command = put(3);
        assert!(!gate.clear_mark(&mut command));
        assert_eq!(command, put(3));
        // A command without a mark never changes.
        heard.record(3, 0);
        let mut command = put(0);
        assert!(!gate.clear_mark(&mut command));
        // A member that does not understand marks itself never uses them.
        heard.record(3, WINDOWED_SESSIONS);
        let old = FeatureGate::new(1, 0, heard.clone(), members);
        assert!(gate.open(WINDOWED_SESSIONS) && !old.open(WINDOWED_SESSIONS));
        assert!(gate.understood_by(2, WINDOWED_SESSIONS) && !gate.understood_by(4, 1));
    }

    #[test]
    fn commands_compact_in_batches_only_when_every_member_understands_it() {
        let heard = PeerFeatures::default();
        let members = MemberIds::default();
        members.set(vec![1, 2, 3]);
        let gate = FeatureGate::new(1, crate::transport::FEATURES, heard.clone(), members);
        heard.record(2, crate::transport::FEATURES);
        heard.record(3, WINDOWED_SESSIONS);
        let mut command = put(0);
        assert!(!gate.stamp_compaction(&mut command));
        assert!(!command.batched_compaction);
        // A stray flag is cleared while the gate is closed.
        let mut command = put(0).with_batched_compaction(true);
        assert!(gate.stamp_compaction(&mut command));
        assert!(!command.batched_compaction);
        heard.record(3, crate::transport::FEATURES);
        let mut command = put(0);
        assert!(gate.stamp_compaction(&mut command));
        assert!(command.batched_compaction);
        assert!(!gate.stamp_compaction(&mut command));
    }

    #[test]
    fn a_forwarded_command_loses_only_its_mark() {
        let marked = put(3).encode_to_bytes();
        let stripped = FeatureGate::strip_mark(marked);
        assert_eq!(KvCommand::decode(stripped).unwrap(), put(0));
        let plain = put(0).encode_to_bytes();
        assert_eq!(FeatureGate::strip_mark(plain.clone()), plain);
        let garbage = Bytes::from_static(&[0xff, 0xff]);
        assert_eq!(FeatureGate::strip_mark(garbage.clone()), garbage);
    }
}
