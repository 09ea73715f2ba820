//! What a plan decides: one [`Step`], or why it waits ([`Wait`]).

use crate::admin::MemberId;

/// Why leadership is moved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MoveReason {
    /// The leader is about to be removed.
    ScaleDown,
    /// The leader's pod is about to be replaced.
    RollingUpdate,
}

/// One step that changes the cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Create every object, the StatefulSet with the founding members.
    CreateCluster {
        /// Founding members.
        founders: u32,
    },
    /// Set the StatefulSet's replicas.
    ScaleStatefulSet {
        /// Replicas now.
        from: u32,
        /// Replicas wanted.
        to: u32,
    },
    /// MemberAdd the pod `ordinal` as a learner.
    AddLearner {
        /// The new member's ordinal.
        ordinal: u32,
    },
    /// MemberPromote a caught-up learner.
    PromoteLearner {
        /// Its ordinal.
        ordinal: u32,
        /// Its id.
        id: MemberId,
    },
    /// MoveLeader, asked of the leader.
    MoveLeader {
        /// The leader's ordinal.
        from: u32,
        /// The new leader's ordinal.
        to_ordinal: u32,
        /// The new leader's id.
        to: MemberId,
        /// Why.
        reason: MoveReason,
    },
    /// MemberRemove the highest ordinal.
    RemoveMember {
        /// Its ordinal.
        ordinal: u32,
        /// Its id.
        id: MemberId,
    },
    /// Delete the data volume of a removed member.
    DeleteVolume {
        /// Its ordinal.
        ordinal: u32,
    },
    /// Delete a pod of an old revision so the StatefulSet recreates it.
    ReplacePod {
        /// Its ordinal.
        ordinal: u32,
    },
}

/// Why the plan takes no step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Wait {
    /// Nothing to do.
    Converged,
    /// No member answered the member list.
    MembersUnreachable(String),
    /// Founding members (by ordinal) not yet in the member table: the
    /// cluster is still bootstrapping.
    FoundersStarting(Vec<u32>),
    /// Members whose peer URLs are not this cluster's pod addresses.
    UnknownMembers(Vec<String>),
    /// The membership's ordinals are not `0..n`.
    MembershipGap(Vec<u32>),
    /// The StatefulSet controller has not yet seen the latest spec.
    StatefulSetNotObserved,
    /// A pod is still terminating.
    PodTerminating(u32),
    /// A volume is still being deleted.
    VolumeTerminating(u32),
    /// A learner has not started or caught up yet.
    LearnerCatchingUp {
        /// Its ordinal.
        ordinal: u32,
        /// How far behind it is, if it answered.
        lag: Option<u64>,
    },
    /// Members that are not healthy (by ordinal) hold up the next step.
    MembersUnhealthy(Vec<u32>),
    /// The step would leave the voters without a healthy quorum.
    QuorumAtRisk {
        /// What was held back.
        step: String,
    },
    /// No healthy voter can take over leadership.
    NoTransferTarget,
}

/// The decision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Take this step.
    Act(Step),
    /// Take none.
    Wait(Wait),
}
