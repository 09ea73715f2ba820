//! Flotilla's Kubernetes operator: runs `RaftCluster` resources as
//! StatefulSets of `flotilla-node` pods and changes their Raft membership
//! one member at a time, and `Topic` resources as topics of a cluster's
//! broker ([`reconcile::topic`], through [`admin::broker::BrokerAdmin`]).
//!
//! # A reconcile is a pure step
//!
//! Each reconcile reads the world, decides, takes at most one step that
//! cannot be undone, writes the status and requeues:
//!
//! 1. **Observe** ([`observed`]): the StatefulSet, pods and data volumes
//!    from the API server; the member list (linearizable) and every
//!    member's Status from the nodes through [`admin::NodeAdmin`].
//! 2. **Plan** ([`plan::plan`], pure): the one step, or why to wait.
//! 3. **Apply** ([`resources`], pure builders): ConfigMap, headless and
//!    client Services, StatefulSet (replicas as the plan says) and the
//!    quorum-aware PodDisruptionBudget, by server-side apply under the
//!    field manager `flotilla-operator`, each owned by the RaftCluster.
//! 4. **Step**: MemberAdd, MemberPromote, MoveLeader, MemberRemove, a
//!    pod or volume deletion — or nothing; each step is a Kubernetes Event.
//! 5. **Status** ([`status`]): members, leader, phase and the Available /
//!    Progressing / Degraded conditions, through the status subresource.
//!
//! Progress lives only in the cluster (membership, StatefulSet, pods,
//! volumes) and the resource's status, so an operator restarted after any
//! step finds the next one. A membership it cannot read changes nothing.
//!
//! # The state machine of one member change
//!
//! ```text
//!                        spec.replicas > members                 spec.replicas < members
//!                                 │                                        │
//!                   all members healthy? ──no──▶ wait          highest ordinal h leads?
//!                                 │yes                           │yes              │no
//!                                 ▼                              ▼                 │
//!                   MemberAdd(ordinal n, learner)          MoveLeader(to the most  │
//!                                 │                         caught-up voter ≠ h)   │
//!                                 ▼                              │                 ▼
//!                   StatefulSet replicas = n + 1                 └────▶ voters left keep a
//!                                 │                                     healthy quorum? ──no──▶ wait
//!                                 ▼                                                │yes
//!             learner started and within max_lag_entries? ──no──▶ wait           MemberRemove(h)
//!                                 │yes                                             │
//!                  quorum stays healthy? ──no──▶ wait                              ▼
//!                                 │yes                                   StatefulSet replicas = h
//!                                 ▼                                                │
//!                        MemberPromote(learner)                      pod h gone? ──no──▶ wait
//!                                 │                                                │yes
//!                                 ▼                                                ▼
//!                         next reconcile                                 delete PVC data-<name>-h
//! ```
//!
//! A rolling update (a new pod template; the StatefulSet uses `OnDelete`)
//! replaces one pod per reconcile: first any outdated pod that is already
//! broken, then — only while every member is healthy and caught up — the
//! outdated followers, highest ordinal first, and last the leader, after a
//! MoveLeader to an updated voter. The rules and their order are listed in
//! [`plan`].
//!
//! # Layout
//!
//! | module | what |
//! |---|---|
//! | [`crd`] | `RaftCluster` and `Topic`: spec, status, conditions, CRD generation |
//! | [`names`] | every name and address derived from the cluster's name and namespace |
//! | [`resources`] | pure builders of the owned objects |
//! | [`admin`] | [`admin::NodeAdmin`] over etcd's Cluster/Maintenance gRPC API; [`admin::broker::BrokerAdmin`] over the broker's |
//! | [`observed`] | the facts a reconcile reads |
//! | [`plan`] | the pure decision |
//! | [`status`] | the status from the plan |
//! | [`reconcile`] | the reconciles: RaftCluster's and Topic's |
//! | [`controller`], [`leader`], [`http`], [`metrics`] | the process: controllers, Lease election, probes, metrics |
//!
//! Binaries: `flotilla-operator` (the process) and `crdgen` (writes
//! `crds/` and the Helm chart's copy).

pub mod admin;
pub mod controller;
pub mod crd;
pub mod error;
pub mod http;
pub mod leader;
pub mod metrics;
pub mod names;
pub mod observed;
pub mod plan;
pub mod reconcile;
pub mod resources;
pub mod status;
#[cfg(test)]
pub(crate) mod testing;
