//! The fault schedule of a random simulation: crashes and restarts,
//! partitions of arbitrary subsets, one-way cuts, and bouts of loss,
//! duplication and reordering.

use super::TICK_UNITS;
use super::cluster::Cluster;
use super::network::NetFaults;
use flotilla_raft::{ConfChange, NodeId};
use rand::Rng;
use rand::seq::SliceRandom;

/// Which faults the nemesis may inject.
#[derive(Clone, Debug)]
pub struct NemesisConfig {
    /// Crash and restart members.
    pub crashes: bool,
    /// Partition the network (both-way splits and one-way cuts).
    pub partitions: bool,
    /// Switch the network between reliable and lossy.
    pub lossy: bool,
    /// Crash members part-way through persisting a `Ready` (only a prefix
    /// of its writes reaches the disk).
    pub torn_crashes: bool,
    /// Change the membership: add learners, promote them, remove members.
    pub membership: bool,
    /// Chance that a member crashes (and restarts at once) right after its
    /// snapshot was written, before the log is compacted to it.
    pub crash_after_snapshot_write: f64,
    /// Most members the cluster may grow to (with membership changes).
    pub max_members: usize,
    /// Most members down at once.
    pub max_down: usize,
    /// Ticks between fault actions, drawn uniformly from this range.
    pub interval_ticks: (u64, u64),
}

impl Default for NemesisConfig {
    fn default() -> Self {
        NemesisConfig {
            crashes: true,
            partitions: true,
            lossy: true,
            torn_crashes: false,
            membership: false,
            crash_after_snapshot_write: 0.0,
            max_members: 9,
            max_down: 1,
            interval_ticks: (10, 60),
        }
    }
}

/// Injects faults on a schedule drawn from the run's RNG.
#[derive(Debug)]
pub struct Nemesis {
    config: NemesisConfig,
    next_at: u64,
    /// Actions taken, for the run's summary.
    pub actions: Vec<String>,
}

impl Nemesis {
    /// A nemesis that starts acting after the first interval.
    pub fn new(config: NemesisConfig) -> Nemesis {
        let first = config.interval_ticks.1 * TICK_UNITS;
        Nemesis {
            config,
            next_at: first,
            actions: Vec::new(),
        }
    }

    /// Acts if its time has come.
    pub fn step(&mut self, cluster: &mut Cluster) {
        if cluster.now < self.next_at {
            return;
        }
        let (lo, hi) = self.config.interval_ticks;
        self.next_at = cluster.now + cluster.rng.random_range(lo..=hi) * TICK_UNITS;
        let action = self.act(cluster);
        if let Some(a) = action {
            self.actions
                .push(format!("t={} {a}", cluster.now / TICK_UNITS));
        }
    }

    fn act(&mut self, cluster: &mut Cluster) -> Option<String> {
        let ids = cluster.ids();
        let down: Vec<NodeId> = ids
            .iter()
            .copied()
            .filter(|id| !cluster.node(*id).is_up())
            .collect();
        let up: Vec<NodeId> = ids
            .iter()
            .copied()
            .filter(|id| cluster.node(*id).is_up())
            .collect();
        let roll = cluster.rng.random_range(0..11);
        match roll {
            8 if self.config.torn_crashes
                && down.len() < self.config.max_down
                && !up.is_empty() =>
            {
                let victim = up[cluster.rng.random_range(0..up.len())];
                cluster.nodes[(victim.0 - 1) as usize].crash_mid_persist = true;
                Some(format!("crash {victim} mid-persist"))
            }
            9 | 10 if self.config.membership => self.change_membership(cluster),
            0 | 1 if self.config.crashes && down.len() < self.config.max_down && !up.is_empty() => {
                // Prefer the leader half the time: that is where bugs hide.
                let victim = match cluster.leader() {
                    Some(l) if cluster.rng.random_bool(0.5) => l,
                    _ => up[cluster.rng.random_range(0..up.len())],
                };
                cluster.crash(victim);
                Some(format!("crash {victim}"))
            }
            0..=2 if self.config.crashes && !down.is_empty() => {
                let id = down[cluster.rng.random_range(0..down.len())];
                cluster.restart(id);
                Some(format!("restart {id}"))
            }
            3 if self.config.partitions => {
                let mut shuffled = ids.clone();
                shuffled.shuffle(&mut cluster.rng);
                let cut = cluster.rng.random_range(1..ids.len());
                let groups = vec![shuffled[..cut].to_vec(), shuffled[cut..].to_vec()];
                cluster.net.partition(&groups);
                Some(format!("partition {groups:?}"))
            }
            4 if self.config.partitions => {
                let leader = cluster.leader()?;
                cluster.net.isolate(leader, &ids);
                Some(format!("isolate leader {leader}"))
            }
            5 if self.config.partitions => {
                let a = ids[cluster.rng.random_range(0..ids.len())];
                let b = ids[cluster.rng.random_range(0..ids.len())];
                if a == b {
                    return None;
                }
                cluster.net.cut_one_way(a, b);
                Some(format!("cut {a} -> {b}"))
            }
            6 if self.config.lossy => {
                let faults = if cluster.net.faults() == NetFaults::UNRELIABLE {
                    NetFaults::RELIABLE
                } else {
                    NetFaults::UNRELIABLE
                };
                cluster.net.set_faults(faults);
                Some(format!("network {faults:?}"))
            }
            _ => {
                cluster.net.heal();
                Some("heal".to_string())
            }
        }
    }

    /// One membership step at the leader: promote a learner, add one, or
    /// remove a member (the leader too, sometimes). Refusals are fine: the
    /// leader allows one change at a time.
    fn change_membership(&mut self, cluster: &mut Cluster) -> Option<String> {
        let leader = cluster.leader()?;
        let conf = cluster.raft(leader)?.conf_state();
        let rng = &mut cluster.rng;
        let change = if let Some(l) = conf
            .learners
            .first()
            .copied()
            .filter(|_| rng.random_bool(0.7))
        {
            ConfChange::PromoteLearner(l)
        } else if conf.voters.len() > 3 && rng.random_bool(0.5) {
            let v = conf.voters[rng.random_range(0..conf.voters.len())];
            ConfChange::RemoveNode(v)
        } else if cluster.nodes.len() < self.config.max_members {
            let id = cluster.add_node();
            ConfChange::AddLearner(id)
        } else {
            return None;
        };
        let result = cluster.raft(leader)?.propose_conf_change(change);
        Some(format!(
            "{change:?} at {leader}: {}",
            match result {
                Ok((index, _)) => format!("proposed at {index}"),
                Err(e) => format!("refused ({e})"),
            }
        ))
    }

    /// Ends every fault: restarts the crashed, heals the network, makes it
    /// reliable.
    pub fn heal_all(&mut self, cluster: &mut Cluster) {
        for node in &mut cluster.nodes {
            node.crash_mid_persist = false;
        }
        for id in cluster.ids() {
            cluster.restart(id);
        }
        cluster.net.heal();
        cluster.net.set_faults(NetFaults::RELIABLE);
        self.actions
            .push(format!("t={} heal all", cluster.now / TICK_UNITS));
    }
}
