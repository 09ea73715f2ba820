//! Who this member is, decided when it starts: bootstrap a new cluster,
//! join a running one, or come back as itself.
//!
//! Every member serves `flotilla.raft.v1.Membership/Discover` on its peer
//! port ([`DiscoveryService`]): its cluster id, the leader it knows and its
//! member table. [`resolve_identity`] asks the members it can name (the
//! peers of `--initial-cluster` and every address of `--discovery-peers`,
//! re-resolved on each round, so a headless Service's name reaches every
//! pod) and decides:
//!
//! | data directory | situation | outcome |
//! |---|---|---|
//! | stamped | a founder's flags describe another cluster | refuse: another cluster's data |
//! | stamped | no running member lists this id as removed | restart as the stamped member of the stamped cluster |
//! | stamped | a member of its cluster lists it as removed | refuse: it may only come back as a new member, with a fresh directory |
//! | empty | a founder (named in `--initial-cluster`, state `new`), and no running cluster of its id answers, or that cluster's table is not seeded yet | bootstrap |
//! | empty | a running cluster lists this member's advertised peer URL, never started | join it, with the id and cluster id it gives |
//! | empty | a running cluster lists this peer URL as a member that already ran | refuse: its data is gone; remove it and add it again |
//! | empty | a founder its running cluster no longer lists | refuse: it was removed |
//! | empty | anyone else | ask again until a running cluster lists it, at most `--join-timeout-ms`; then fail |
//!
//! So a member added with `etcdctl member add` (or the operator's
//! MemberAdd) starts with `--initial-cluster-state existing` and any
//! `--initial-cluster` naming a running member, even after every founder
//! was removed, and a removed member that restarts on its old directory
//! refuses to run with a clear error.

use crate::config::{ClusterState, NodeConfig};
use crate::driver::RaftHandle;
use crate::kv::valid_peer_url;
use crate::state::NodeStateMachine;
use flotilla_proto::etcdserverpb::Member;
use flotilla_proto::raft::membership_client::MembershipClient;
use flotilla_proto::raft::membership_server::{Membership, MembershipServer};
use flotilla_proto::raft::{DiscoverRequest, DiscoverResponse, DiscoveredMember};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use tonic::transport::Endpoint;
use tonic::{Request, Response, Status};

/// Pause between rounds of asking, doubling up to [`ROUND_PAUSE_MAX`].
const ROUND_PAUSE: Duration = Duration::from_millis(200);
const ROUND_PAUSE_MAX: Duration = Duration::from_secs(2);
/// Addresses asked per round, at most (a bound on a discovery name that
/// resolves to very many).
const TARGETS_MAX: usize = 64;

/// Why a member cannot start as configured.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    /// The data directory's identity stamp is unreadable.
    #[error("data directory: {0}")]
    Stamp(#[from] flotilla_storage::OpenError),
    /// This member was removed from its cluster.
    #[error(
        "this member ({member:x}) was removed from cluster {cluster:x}; it cannot rejoin with its old data directory: add it again (MemberAdd) and start it on a fresh one"
    )]
    Removed {
        /// The cluster.
        cluster: u64,
        /// This member.
        member: u64,
    },
    /// The data directory is empty but the cluster knows this member as
    /// one that already ran: its log and vote are lost.
    #[error(
        "the data directory is empty, but cluster {cluster:x} lists {peer_url} as member {member:x}, which already ran: its data is lost; remove the member (MemberRemove), add it again and start it on an empty directory"
    )]
    AlreadyStarted {
        /// The cluster.
        cluster: u64,
        /// The member the peer URL belongs to.
        member: u64,
        /// This member's advertised peer URL.
        peer_url: String,
    },
    /// A founder whose running cluster no longer lists it.
    #[error(
        "cluster {cluster:x} is running without this founder ({peer_url} is not a member any more): it was removed; add it again (MemberAdd) and start it with --initial-cluster-state existing on an empty directory"
    )]
    FounderRemoved {
        /// The cluster.
        cluster: u64,
        /// This member's advertised peer URL.
        peer_url: String,
    },
    /// A founder's flags describe another cluster than its data directory
    /// holds (a volume of another cluster, or flags of another one).
    #[error(
        "{dir}: data directory belongs to cluster {found:#x}, not {expected:#x} (the cluster --initial-cluster and --initial-cluster-token describe); refusing to start on another cluster's data"
    )]
    ForeignData {
        /// The data directory.
        dir: String,
        /// The cluster it holds.
        found: u64,
        /// The cluster the flags describe.
        expected: u64,
    },
    /// No running cluster listed this member in time.
    #[error(
        "no running cluster lists this member's peer URL {peer_url} after {waited:?} (asked: {asked}); add it first (`etcdctl member add NAME --peer-urls={peer_url} --learner`) and make sure --initial-cluster or --discovery-peers names a running member"
    )]
    NotAdded {
        /// This member's advertised peer URL.
        peer_url: String,
        /// How long it asked.
        waited: Duration,
        /// Whom it asked.
        asked: String,
    },
}

/// Who this member turned out to be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Identity {
    /// A founder of a new cluster, bootstrapping it.
    Bootstrap {
        /// The cluster id (from the token and the founders).
        cluster_id: u64,
        /// This member's id (from the token and its name).
        member_id: u64,
    },
    /// A member added to a running cluster, starting on an empty directory.
    Join {
        /// The running cluster's id.
        cluster_id: u64,
        /// The id the cluster gave this member.
        member_id: u64,
        /// The cluster's members as the answering member knew them, for
        /// the first peer connections.
        members: Vec<Member>,
    },
    /// A member restarting on its data directory.
    Restart {
        /// The stamped cluster id.
        cluster_id: u64,
        /// The stamped member id.
        member_id: u64,
    },
}

impl Identity {
    /// The cluster id.
    pub fn cluster_id(&self) -> u64 {
        match self {
            Identity::Bootstrap { cluster_id, .. }
            | Identity::Join { cluster_id, .. }
            | Identity::Restart { cluster_id, .. } => *cluster_id,
        }
    }

    /// This member's id.
    pub fn member_id(&self) -> u64 {
        match self {
            Identity::Bootstrap { member_id, .. }
            | Identity::Join { member_id, .. }
            | Identity::Restart { member_id, .. } => *member_id,
        }
    }
}

/// Serves `Membership/Discover` from this member's applied state.
#[derive(Clone, Debug)]
pub struct DiscoveryService {
    raft: RaftHandle<NodeStateMachine>,
    cluster_id: u64,
}

impl DiscoveryService {
    /// The service of a member of `cluster_id`.
    pub fn new(raft: RaftHandle<NodeStateMachine>, cluster_id: u64) -> Self {
        DiscoveryService { raft, cluster_id }
    }

    /// The tonic server.
    pub fn into_server(self) -> MembershipServer<DiscoveryService> {
        MembershipServer::new(self)
    }
}

fn discovered(m: Member) -> DiscoveredMember {
    DiscoveredMember {
        id: m.id,
        name: m.name,
        peer_urls: m.peer_ur_ls,
        client_urls: m.client_ur_ls,
        is_learner: m.is_learner,
    }
}

fn member(m: DiscoveredMember) -> Member {
    Member {
        id: m.id,
        name: m.name,
        peer_ur_ls: m.peer_urls,
        client_ur_ls: m.client_urls,
        is_learner: m.is_learner,
    }
}

#[tonic::async_trait]
impl Membership for DiscoveryService {
    async fn discover(
        &self,
        request: Request<DiscoverRequest>,
    ) -> Result<Response<DiscoverResponse>, Status> {
        let asking = request.into_inner().peer_url;
        let (members, removed) = self
            .raft
            .read_local(|sm| {
                let kv = sm.kv();
                (kv.members(), kv.removed_members().iter().copied().collect())
            })
            .await
            .map_err(|_| Status::unavailable("flotilla: this member is stopping"))?;
        let status = self.raft.status();
        tracing::debug!(%asking, "answering a discovery request");
        Ok(Response::new(DiscoverResponse {
            cluster_id: self.cluster_id,
            member_id: status.id.0,
            leader_id: status.leader.0,
            members: members.into_iter().map(discovered).collect(),
            removed,
        }))
    }
}

/// The URLs to ask: the other peers of `--initial-cluster`, and every
/// address `--discovery-peers` resolve to now.
async fn targets(config: &NodeConfig) -> Vec<String> {
    let me = normal(&config.peer_advertise);
    let mut urls: BTreeSet<String> = config
        .initial_cluster
        .iter()
        .map(|m| normal(&m.peer_url).to_string())
        .filter(|u| u != me)
        .collect();
    for peer in &config.discovery_peers {
        match tokio::net::lookup_host(peer.as_str()).await {
            Ok(addrs) => urls.extend(addrs.map(|a| format!("http://{a}"))),
            Err(e) => tracing::debug!(%peer, error = %e, "discovery name does not resolve (yet)"),
        }
    }
    urls.into_iter().take(TARGETS_MAX).collect()
}

fn normal(url: &str) -> &str {
    url.strip_suffix('/').unwrap_or(url)
}

/// Asks every target at once, each for at most `timeout`; the answers.
async fn ask_all(targets: &[String], me: &str, timeout: Duration) -> Vec<DiscoverResponse> {
    let mut asks = tokio::task::JoinSet::new();
    for url in targets {
        let (url, me) = (url.clone(), me.to_string());
        asks.spawn(async move {
            let endpoint = Endpoint::from_shared(url.clone())
                .ok()?
                .connect_timeout(timeout)
                .timeout(timeout);
            let ask = async {
                let channel = endpoint.connect().await.ok()?;
                MembershipClient::new(channel)
                    .discover(DiscoverRequest { peer_url: me })
                    .await
                    .ok()
            };
            match tokio::time::timeout(timeout, ask).await {
                Ok(Some(answer)) => Some(answer.into_inner()),
                _ => {
                    tracing::debug!(%url, "no discovery answer");
                    None
                }
            }
        });
    }
    let mut answers = Vec::new();
    while let Some(done) = asks.join_next().await {
        if let Ok(Some(answer)) = done {
            answers.push(answer);
        }
    }
    answers
}

/// What the answers say about the member advertising `peer_url`.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// No running cluster answered.
    NoCluster,
    /// A running cluster lists it, never started: join.
    Listed {
        cluster_id: u64,
        member_id: u64,
        members: Vec<Member>,
    },
    /// A running cluster lists it as a member that already ran.
    Started { cluster_id: u64, member_id: u64 },
    /// Running clusters answered; none lists it. `unseeded` when one of
    /// them has not filled its table yet (a cluster just bootstrapped).
    NotListed { cluster_id: u64, unseeded: bool },
}

/// Reads the answers of running members (those that know a leader), of
/// cluster `only` when given.
fn verdict(answers: Vec<DiscoverResponse>, peer_url: &str, only: Option<u64>) -> Verdict {
    let wanted = normal(peer_url);
    let mut not_listed = None;
    for answer in answers {
        if answer.leader_id == 0 || only.is_some_and(|c| c != answer.cluster_id) {
            continue;
        }
        let mine = answer
            .members
            .iter()
            .find(|m| m.peer_urls.iter().any(|u| normal(u) == wanted));
        match mine {
            Some(m) if !m.client_urls.is_empty() => {
                return Verdict::Started {
                    cluster_id: answer.cluster_id,
                    member_id: m.id,
                };
            }
            Some(m) => {
                return Verdict::Listed {
                    cluster_id: answer.cluster_id,
                    member_id: m.id,
                    members: answer.members.into_iter().map(member).collect(),
                };
            }
            None => {
                let unseeded = answer.members.is_empty() && answer.removed.is_empty();
                let seen: &mut Option<(u64, bool)> = &mut not_listed;
                *seen = Some(match *seen {
                    Some((c, u)) => (c, u || unseeded),
                    None => (answer.cluster_id, unseeded),
                });
            }
        }
    }
    match not_listed {
        Some((cluster_id, unseeded)) => Verdict::NotListed {
            cluster_id,
            unseeded,
        },
        None => Verdict::NoCluster,
    }
}

/// Decides who this member is (see the module docs). Waits for a running
/// cluster only when it must join one.
pub async fn resolve_identity(config: &NodeConfig) -> Result<Identity, JoinError> {
    let founder = config.cluster_state == ClusterState::New
        && config.initial_cluster.iter().any(|m| m.name == config.name);
    if let Some((cluster_id, member_id)) =
        flotilla_storage::DiskStorage::read_identity(&config.data_dir)?
    {
        // As etcd, the flags do not matter once the directory is stamped,
        // except that a founder's flags name its cluster: data of another
        // is a mistake (a wrong volume) that must not start.
        if founder && cluster_id != config.cluster_id {
            return Err(JoinError::ForeignData {
                dir: config.data_dir.display().to_string(),
                found: cluster_id,
                expected: config.cluster_id,
            });
        }
        check_not_removed(config, cluster_id, member_id).await?;
        return Ok(Identity::Restart {
            cluster_id,
            member_id,
        });
    }
    if founder {
        let targets = targets(config).await;
        let answers = ask_all(&targets, &config.peer_advertise, config.discovery_timeout).await;
        return match verdict(answers, &config.peer_advertise, Some(config.cluster_id)) {
            Verdict::NoCluster | Verdict::NotListed { unseeded: true, .. } => {
                Ok(Identity::Bootstrap {
                    cluster_id: config.cluster_id,
                    member_id: config.member_id,
                })
            }
            Verdict::Listed {
                cluster_id,
                member_id,
                members,
            } => {
                tracing::info!(member = %format!("{member_id:x}"), "the cluster already runs: joining it instead of bootstrapping");
                Ok(Identity::Join {
                    cluster_id,
                    member_id,
                    members,
                })
            }
            Verdict::Started {
                cluster_id,
                member_id,
            } => Err(JoinError::AlreadyStarted {
                cluster: cluster_id,
                member: member_id,
                peer_url: config.peer_advertise.clone(),
            }),
            Verdict::NotListed { cluster_id, .. } => Err(JoinError::FounderRemoved {
                cluster: cluster_id,
                peer_url: config.peer_advertise.clone(),
            }),
        };
    }
    join(config).await
}

/// Asks until a running cluster lists this member, within the join timeout.
async fn join(config: &NodeConfig) -> Result<Identity, JoinError> {
    let started = Instant::now();
    let mut pause = ROUND_PAUSE;
    loop {
        let targets = targets(config).await;
        let answers = ask_all(&targets, &config.peer_advertise, config.discovery_timeout).await;
        match verdict(answers, &config.peer_advertise, None) {
            Verdict::Listed {
                cluster_id,
                member_id,
                members,
            } => {
                tracing::info!(
                    cluster = %format!("{cluster_id:x}"),
                    member = %format!("{member_id:x}"),
                    "joining the running cluster"
                );
                return Ok(Identity::Join {
                    cluster_id,
                    member_id,
                    members,
                });
            }
            Verdict::Started {
                cluster_id,
                member_id,
            } => {
                return Err(JoinError::AlreadyStarted {
                    cluster: cluster_id,
                    member: member_id,
                    peer_url: config.peer_advertise.clone(),
                });
            }
            Verdict::NoCluster | Verdict::NotListed { .. } => {}
        }
        if started.elapsed() >= config.join_timeout {
            return Err(JoinError::NotAdded {
                peer_url: config.peer_advertise.clone(),
                waited: started.elapsed(),
                asked: if targets.is_empty() {
                    "nobody: --initial-cluster names no other member and --discovery-peers nothing that resolves".into()
                } else {
                    targets.join(", ")
                },
            });
        }
        tracing::info!(peer_url = %config.peer_advertise, "no running cluster lists this member yet; asking again");
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(ROUND_PAUSE_MAX);
    }
}

/// Refuses a restart of a member its cluster removed. Best effort: asks
/// once; when nobody answers (the whole cluster restarting) it starts.
async fn check_not_removed(
    config: &NodeConfig,
    cluster_id: u64,
    member_id: u64,
) -> Result<(), JoinError> {
    let targets = targets(config).await;
    let answers = ask_all(&targets, &config.peer_advertise, config.discovery_timeout).await;
    if removed_by(&answers, cluster_id, member_id) {
        return Err(JoinError::Removed {
            cluster: cluster_id,
            member: member_id,
        });
    }
    Ok(())
}

fn removed_by(answers: &[DiscoverResponse], cluster_id: u64, member_id: u64) -> bool {
    answers
        .iter()
        .any(|a| a.cluster_id == cluster_id && a.removed.contains(&member_id))
}

/// Asks `peer_urls` (the current peers) whether `member_id` was removed
/// from `cluster_id`: how a running member finds out, since a removed
/// member is no longer sent the entry that removes it.
pub async fn removed_from_cluster(
    peer_urls: &[String],
    me: &str,
    cluster_id: u64,
    member_id: u64,
    timeout: Duration,
) -> bool {
    let targets: Vec<String> = peer_urls
        .iter()
        .filter(|u| valid_peer_url(u))
        .take(TARGETS_MAX)
        .cloned()
        .collect();
    removed_by(&ask_all(&targets, me, timeout).await, cluster_id, member_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(cluster_id: u64, leader_id: u64, members: Vec<DiscoveredMember>) -> DiscoverResponse {
        DiscoverResponse {
            cluster_id,
            member_id: 1,
            leader_id,
            members,
            removed: Vec::new(),
        }
    }

    fn m(id: u64, url: &str, started: bool) -> DiscoveredMember {
        DiscoveredMember {
            id,
            name: if started {
                format!("m{id}")
            } else {
                String::new()
            },
            peer_urls: vec![url.to_string()],
            client_urls: if started {
                vec![format!("http://c{id}:2379")]
            } else {
                Vec::new()
            },
            is_learner: !started,
        }
    }

    const ME: &str = "http://me:2380";

    #[test]
    fn a_listed_unstarted_member_joins_with_the_given_ids() {
        let v = verdict(
            vec![answer(
                7,
                1,
                vec![m(1, "http://a:2380", true), m(9, ME, false)],
            )],
            "http://me:2380/",
            None,
        );
        assert!(
            matches!(v, Verdict::Listed { cluster_id: 7, member_id: 9, ref members } if members.len() == 2),
            "{v:?}"
        );
    }

    #[test]
    fn answers_without_a_leader_or_of_another_cluster_do_not_count() {
        let leaderless = answer(7, 0, vec![m(9, ME, false)]);
        assert_eq!(verdict(vec![leaderless], ME, None), Verdict::NoCluster);
        let other = answer(8, 1, vec![m(9, ME, false)]);
        assert_eq!(verdict(vec![other], ME, Some(7)), Verdict::NoCluster);
    }

    #[test]
    fn a_member_that_already_ran_or_is_missing_is_told_apart() {
        let v = verdict(vec![answer(7, 1, vec![m(9, ME, true)])], ME, None);
        assert_eq!(
            v,
            Verdict::Started {
                cluster_id: 7,
                member_id: 9
            }
        );
        let v = verdict(vec![answer(7, 1, vec![m(1, "http://a:1", true)])], ME, None);
        assert_eq!(
            v,
            Verdict::NotListed {
                cluster_id: 7,
                unseeded: false
            }
        );
        let v = verdict(vec![answer(7, 1, Vec::new())], ME, None);
        assert_eq!(
            v,
            Verdict::NotListed {
                cluster_id: 7,
                unseeded: true
            }
        );
    }

    #[test]
    fn removal_is_read_from_the_same_cluster_only() {
        let mut a = answer(7, 1, Vec::new());
        a.removed = vec![9];
        assert!(removed_by(std::slice::from_ref(&a), 7, 9));
        assert!(!removed_by(std::slice::from_ref(&a), 8, 9));
        assert!(!removed_by(&[a], 7, 10));
    }
}
