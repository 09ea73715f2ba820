//! The fault schedule of one cluster: each kind of fault alone, on a
//! follower and on the leader, then a rolling restart in the operator's
//! order, then mixed faults, all while the workloads run; then healing,
//! convergence and the workloads' checks.

use crate::cluster::{ContainerCluster, READY_WAIT};
use crate::workload::{Workload, WorkloadContext};
use anyhow::{Context, Result, bail};
use flotilla_client::{Client, ClientConfig};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long a fault lasts before it is healed.
pub const FAULT_HOLD: Duration = Duration::from_secs(3);

/// The kinds of fault, as chaos-mesh names their Kubernetes equivalents.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fault {
    /// `docker kill -s KILL`, then the container is started again (pod-kill).
    Kill,
    /// `docker pause`, then unpause (pod-failure).
    Pause,
    /// `docker network disconnect`, then connect (partition).
    Disconnect,
    /// preStop, SIGTERM, and a new container with a new address.
    Replace,
}

impl Fault {
    const ALL: [Fault; 4] = [Fault::Kill, Fault::Pause, Fault::Disconnect, Fault::Replace];

    fn name(self) -> &'static str {
        match self {
            Fault::Kill => "kill -9",
            Fault::Pause => "pause",
            Fault::Disconnect => "disconnect",
            Fault::Replace => "restart with a new IP",
        }
    }
}

/// What a run measured.
#[derive(Debug, Default)]
pub struct Stats {
    /// Faults injected, by kind and target ("kill -9 of the leader").
    pub faults: BTreeMap<String, u32>,
    /// Leader losses: what happened, and the time until a new leader
    /// served a write.
    pub recoveries: Vec<(String, Duration)>,
    /// The workloads' summaries.
    pub summaries: Vec<String>,
    /// The converged revision and store hash.
    pub converged: (i64, u64),
}

impl Stats {
    fn count(&mut self, what: String) {
        *self.faults.entry(what).or_default() += 1;
    }
}

/// Runs the schedule on a new `size`-member cluster of `image`.
pub async fn run(
    size: u32,
    image: &str,
    seed: u64,
    workloads: &mut [Box<dyn Workload>],
) -> Result<Stats> {
    let started = Instant::now();
    let mut cluster = ContainerCluster::start(size, image, &format!("n{size}"))
        .await
        .context("starting the cluster")?;
    let leader = cluster.wait_leader(&cluster.all()).await?;
    println!(
        "[{size} members] ready after {:.1} s on network {}; leader {}",
        started.elapsed().as_secs_f64(),
        cluster.network,
        cluster.pod(leader)
    );
    let ctx = WorkloadContext {
        endpoints: cluster.endpoints(),
        stop: Arc::new(AtomicBool::new(false)),
        phase: Arc::new(AtomicU64::new(0)),
        seed,
    };
    let mut handles = Vec::new();
    for w in workloads.iter_mut() {
        handles.extend(w.start(&ctx));
    }
    let mut stats = Stats::default();
    let mut rng = SmallRng::seed_from_u64(seed ^ u64::from(size));
    let result = schedule(&mut cluster, &ctx, &mut stats, &mut rng).await;
    ctx.stop.store(true, Ordering::Relaxed);
    for h in handles {
        let _ = tokio::time::timeout(Duration::from_secs(10), h).await;
    }
    result?;
    cluster.wait_ready_all().await?;
    stats.converged = cluster.converged().await?;
    println!(
        "[{size} members] converged: every member at revision {} with store hash {:016x}",
        stats.converged.0, stats.converged.1
    );
    let urls = cluster.client_urls();
    for w in workloads.iter_mut() {
        stats.summaries.push(w.verify(&urls).await?);
    }
    Ok(stats)
}

async fn schedule(
    c: &mut ContainerCluster,
    ctx: &WorkloadContext,
    stats: &mut Stats,
    rng: &mut SmallRng,
) -> Result<()> {
    let size = c.members.len();
    let next_phase = || ctx.phase.fetch_add(1, Ordering::Relaxed);
    // Let the workloads warm up.
    tokio::time::sleep(Duration::from_secs(2)).await;
    // One kind at a time, a follower then the leader.
    for fault in Fault::ALL {
        for on_leader in [false, true] {
            next_phase();
            inject(c, stats, rng, &[(fault, on_leader)]).await?;
        }
    }
    next_phase();
    rolling_restart(c, stats).await?;
    // Mixed: random kinds and targets; on 5 members two at once (a
    // quorum always survives).
    let at_once = (size - 1) / 2;
    for _ in 0..3 {
        next_phase();
        let faults: Vec<(Fault, bool)> = (0..at_once)
            .map(|i| {
                let fault = Fault::ALL[rng.random_range(0..Fault::ALL.len())];
                // At most one of them hits the leader.
                (fault, i == 0 && rng.random_bool(0.5))
            })
            .collect();
        inject(c, stats, rng, &faults).await?;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    Ok(())
}

/// A client of `urls` for the recovery probe: answers quickly or fails.
fn probe_client(urls: &[String]) -> Result<Client> {
    Ok(Client::new(
        urls,
        ClientConfig {
            request_timeout: Duration::from_millis(800),
            attempt_timeout: Duration::from_millis(400),
            max_attempts: 4,
            connect_timeout: Duration::from_millis(200),
            backoff_min: Duration::from_millis(5),
            backoff_max: Duration::from_millis(20),
        },
    )?)
}

/// From `t0` (the leader `old` lost): the time until a leader other than
/// `old`, among `others`, served a write.
async fn recovery(
    c: &ContainerCluster,
    old: usize,
    others: &[usize],
    t0: Instant,
) -> Result<Duration> {
    let urls: Vec<String> = others.iter().map(|&o| c.client_urls()[o].clone()).collect();
    let client = probe_client(&urls)?;
    let deadline = t0 + READY_WAIT;
    let mut n = 0u64;
    while Instant::now() < deadline {
        if let Some(l) = c.leader_among(others).await
            && l != old
        {
            n += 1;
            if client
                .put(b"e2e/recovery-probe", format!("{n}").as_bytes())
                .await
                .is_ok()
            {
                return Ok(t0.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    bail!(
        "no new leader served a write within {READY_WAIT:?} of losing {}",
        c.pod(old)
    )
}

/// Injects `faults` at once (each: kind, on the leader?), holds them,
/// heals, and waits until every member is ready again.
async fn inject(
    c: &mut ContainerCluster,
    stats: &mut Stats,
    rng: &mut SmallRng,
    faults: &[(Fault, bool)],
) -> Result<()> {
    let leader = c.wait_leader(&c.all()).await?;
    let mut followers: Vec<usize> = c.all().into_iter().filter(|&o| o != leader).collect();
    let mut targets = Vec::new();
    for &(fault, on_leader) in faults {
        let target = if on_leader {
            leader
        } else {
            followers.remove(rng.random_range(0..followers.len()))
        };
        targets.push((fault, target));
    }
    let t0 = Instant::now();
    for &(fault, o) in &targets {
        let role = if o == leader { "leader" } else { "follower" };
        println!("  {} of the {role} {}", fault.name(), c.pod(o));
        stats.count(format!("{} of the {role}", fault.name()));
        match fault {
            Fault::Kill => c.kill(o).await?,
            Fault::Pause => c.pause(o).await?,
            Fault::Disconnect => c.disconnect(o).await?,
            Fault::Replace => {
                let (code, body) = c.delete_pod(o).await?;
                println!("    preStop: {code} {}", body.trim());
            }
        }
    }
    let hit: Vec<usize> = targets.iter().map(|&(_, o)| o).collect();
    let others: Vec<usize> = c.all().into_iter().filter(|o| !hit.contains(o)).collect();
    if hit.contains(&leader) {
        let took = recovery(c, leader, &others, t0).await?;
        let what = targets
            .iter()
            .find(|&&(_, o)| o == leader)
            .map(|&(f, _)| f.name())
            .unwrap_or("fault");
        println!(
            "    leader recovery: {what} of {} -> a new leader served a write after {:.3} s",
            c.pod(leader),
            took.as_secs_f64()
        );
        stats.recoveries.push((
            format!("{what} of the leader ({} members)", c.members.len()),
            took,
        ));
    }
    tokio::time::sleep(FAULT_HOLD.saturating_sub(t0.elapsed())).await;
    for &(fault, o) in &targets {
        match fault {
            Fault::Kill => c.restart_in_place(o).await?,
            Fault::Pause => c.unpause(o).await?,
            Fault::Disconnect => c.reconnect(o).await?,
            Fault::Replace => c.run_container(o).await?,
        }
    }
    c.wait_ready_all().await?;
    c.wait_leader(&c.all()).await?;
    Ok(())
}

/// The operator's rolling update: one pod at a time, followers highest
/// ordinal first, the leader last; each pod deleted as the kubelet does
/// (preStop hook hands leadership away, SIGTERM) and replaced by a new
/// container with a new address, and the next one only once every member
/// is ready again.
async fn rolling_restart(c: &mut ContainerCluster, stats: &mut Stats) -> Result<()> {
    let leader = c.wait_leader(&c.all()).await?;
    let mut order: Vec<usize> = c.all().into_iter().filter(|&o| o != leader).rev().collect();
    order.push(leader);
    println!(
        "  rolling restart: {}",
        order
            .iter()
            .map(|&o| c.pod(o))
            .collect::<Vec<_>>()
            .join(", ")
    );
    for o in order {
        let was_leader = c.leader_among(&c.all()).await == Some(o);
        let t0 = Instant::now();
        let (code, body) = c.delete_pod(o).await?;
        stats.count("rolling restart of a pod".to_string());
        println!("    {}: preStop {code} {}", c.pod(o), body.trim());
        if was_leader {
            let others: Vec<usize> = c.all().into_iter().filter(|&x| x != o).collect();
            let took = recovery(c, o, &others, t0).await?;
            println!(
                "    leader recovery: rolling restart of {} -> a new leader served a write after {:.3} s",
                c.pod(o),
                took.as_secs_f64()
            );
            stats.recoveries.push((
                format!(
                    "rolling restart of the leader ({} members)",
                    c.members.len()
                ),
                took,
            ));
        }
        c.run_container(o).await?;
        c.wait_ready_all().await?;
    }
    c.wait_leader(&c.all()).await?;
    Ok(())
}
