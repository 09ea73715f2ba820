//! Simulated clients: each keeps one operation outstanding, retries it (with
//! the same sequence number, so the state machine applies it once) at the
//! leader it hears of, and records the history for the linearizability
//! checker.

use super::TICK_UNITS;
use super::cluster::{Cluster, Event, read_ctx};
use super::kv::{KvCommand, KvOp, KvOutput};
use crate::linearizability::{self as lin, HistoryRecorder, OpId};
use flotilla_raft::{Bytes, NodeId, ProposeError};
use rand::Rng;

/// What the clients do.
#[derive(Clone, Debug)]
pub struct WorkloadConfig {
    /// Concurrent clients.
    pub clients: usize,
    /// Keys they share.
    pub keys: usize,
    /// Fraction of reads (served by ReadIndex or lease).
    pub read_fraction: f64,
    /// Fraction of compare-and-sets.
    pub cas_fraction: f64,
    /// Fraction of deletes.
    pub delete_fraction: f64,
    /// Ticks an attempt waits for its answer before trying elsewhere.
    pub attempt_timeout_ticks: u64,
    /// Attempts before the outcome is recorded as unknown.
    pub max_attempts: u32,
    /// Most ticks a client idles between operations.
    pub max_think_ticks: u64,
}

impl Default for WorkloadConfig {
    fn default() -> Self {
        WorkloadConfig {
            clients: 5,
            keys: 8,
            read_fraction: 0.4,
            cas_fraction: 0.15,
            delete_fraction: 0.05,
            attempt_timeout_ticks: 30,
            max_attempts: 40,
            max_think_ticks: 3,
        }
    }
}

#[derive(Debug)]
enum Request {
    Write(KvCommand),
    Read { ctx: Bytes },
}

#[derive(Debug)]
struct Pending {
    op: OpId,
    request: Request,
    /// Member the current attempt went to (None: not yet placed).
    node: Option<NodeId>,
    deadline: u64,
    attempts: u32,
    /// The last attempt was refused at once (not timed out): the client's
    /// leader guess already points at the next member to try.
    refused: bool,
}

#[derive(Debug)]
struct Client {
    id: u64,
    seq: u64,
    leader_guess: NodeId,
    pending: Option<Pending>,
    next_at: u64,
}

/// The clients and their history.
#[derive(Debug)]
pub struct Workload {
    config: WorkloadConfig,
    clients: Vec<Client>,
    /// The recorded history.
    pub recorder: HistoryRecorder,
    /// Operations answered.
    pub completed: u64,
    /// Operations given up on (outcome unknown).
    pub abandoned: u64,
    /// Whether new operations are started.
    pub issuing: bool,
}

fn time_ns(now: u64) -> u64 {
    // One tick stands for 10 ms; a unit for 1 ms.
    now * 1_000_000
}

impl Workload {
    /// Clients for a cluster of `members` members.
    pub fn new(config: WorkloadConfig, members: usize) -> Workload {
        let clients = (0..config.clients as u64)
            .map(|id| Client {
                id,
                seq: 0,
                leader_guess: NodeId(id % members as u64 + 1),
                pending: None,
                next_at: 0,
            })
            .collect();
        Workload {
            config,
            clients,
            recorder: HistoryRecorder::new(),
            completed: 0,
            abandoned: 0,
            issuing: true,
        }
    }

    /// Whether no operation is outstanding.
    pub fn idle(&self) -> bool {
        self.clients.iter().all(|c| c.pending.is_none())
    }

    /// Consumes the cluster's events, then starts, places or gives up on
    /// operations.
    pub fn step(&mut self, cluster: &mut Cluster) {
        let now = cluster.now;
        for event in std::mem::take(&mut cluster.events) {
            self.on_event(event, now);
        }
        for i in 0..self.clients.len() {
            self.drive_client(i, cluster);
        }
    }

    fn on_event(&mut self, event: Event, now: u64) {
        for client in &mut self.clients {
            let Some(p) = &client.pending else { continue };
            let answer = match (&p.request, &event) {
                (
                    Request::Write(cmd),
                    Event::Applied {
                        node,
                        cmd: applied,
                        output,
                        ..
                    },
                ) if applied.client == cmd.client
                    && applied.seq == cmd.seq
                    && Some(*node) == p.node =>
                {
                    Some(match output {
                        KvOutput::Done => None,
                        KvOutput::Value(v) => Some(lin::KvOutput::Value(v.clone())),
                        KvOutput::Swapped(s) => Some(lin::KvOutput::Succeeded(*s)),
                    })
                }
                (
                    Request::Read { ctx, .. },
                    Event::ReadDone {
                        ctx: done, value, ..
                    },
                ) if ctx == done => Some(Some(lin::KvOutput::Value(value.clone()))),
                _ => None,
            };
            if let Some(output) = answer {
                self.recorder.ok(p.op, time_ns(now), output);
                self.completed += 1;
                client.pending = None;
                client.next_at = now;
                return;
            }
        }
    }

    fn drive_client(&mut self, i: usize, cluster: &mut Cluster) {
        let now = cluster.now;
        let members = cluster.nodes.len() as u64;
        let timeout = self.config.attempt_timeout_ticks * TICK_UNITS;
        let client = &mut self.clients[i];
        match &mut client.pending {
            None => {
                if !self.issuing || now < client.next_at {
                    return;
                }
                let (request, input) = new_request(&self.config, client, cluster);
                let op = self.recorder.call(client.id, input, time_ns(now));
                client.pending = Some(Pending {
                    op,
                    request,
                    node: None,
                    deadline: now,
                    attempts: 0,
                    refused: true,
                });
            }
            Some(p) if now < p.deadline => return,
            Some(p) if p.attempts >= self.config.max_attempts => {
                self.recorder.unknown(p.op);
                self.abandoned += 1;
                client.pending = None;
                let think = cluster.rng.random_range(0..=self.config.max_think_ticks);
                client.next_at = now + think * TICK_UNITS;
                return;
            }
            Some(_) => {}
        }
        let p = client.pending.as_mut().expect("placed above");
        if !p.refused {
            // The previous attempt timed out: try somebody else.
            client.leader_guess = NodeId(cluster.rng.random_range(1..=members));
        }
        p.attempts += 1;
        let target = client.leader_guess;
        p.node = Some(target);
        p.deadline = now + timeout;
        p.refused = false;
        let Some(raft) = cluster.raft(target) else {
            // Connection refused: retry soon at another member.
            p.deadline = now + TICK_UNITS;
            return;
        };
        let refused_hint = match &p.request {
            Request::Write(cmd) => match raft.propose(cmd.encode()) {
                Ok(_) => None,
                Err(ProposeError::NotLeader { leader_hint }) => Some(leader_hint),
                Err(_) => Some(None),
            },
            Request::Read { ctx, .. } => raft.read_index(ctx.clone()).err().map(|_| None),
        };
        if let Some(hint) = refused_hint {
            // A refusal is immediate: retry within a tick at the hinted
            // leader, or at a random member. Refusals count as attempts, so
            // a client cannot spin forever on a leaderless cluster.
            p.deadline = now + TICK_UNITS;
            p.refused = true;
            client.leader_guess =
                hint.unwrap_or_else(|| NodeId(cluster.rng.random_range(1..=members)));
        }
    }

    /// Records every outstanding operation as unknown and returns the history.
    pub fn finish(mut self) -> lin::History {
        for client in &mut self.clients {
            if let Some(p) = client.pending.take() {
                self.recorder.unknown(p.op);
            }
        }
        self.recorder.history()
    }
}

fn new_request(
    config: &WorkloadConfig,
    client: &mut Client,
    cluster: &mut Cluster,
) -> (Request, lin::KvInput) {
    client.seq += 1;
    let rng = &mut cluster.rng;
    let key = format!("k{}", rng.random_range(0..config.keys));
    let value = format!("c{}s{}", client.id, client.seq);
    let roll: f64 = rng.random();
    if roll < config.read_fraction {
        let ctx = read_ctx(client.id, client.seq, &key);
        return (Request::Read { ctx }, lin::KvInput::get(key));
    }
    let (op, input) = if roll < config.read_fraction + config.cas_fraction {
        // Expect a value some client may have written, or absence.
        let expected = if rng.random_bool(0.3) {
            None
        } else {
            let other = rng.random_range(0..config.clients);
            let seq = client.seq.saturating_sub(rng.random_range(1..4)).max(1);
            Some(format!("c{other}s{seq}"))
        };
        (
            KvOp::Cas {
                key: key.clone(),
                expected: expected.clone(),
                value: value.clone(),
            },
            lin::KvInput::cas(key, expected, value),
        )
    } else if roll < config.read_fraction + config.cas_fraction + config.delete_fraction {
        (KvOp::Delete { key: key.clone() }, lin::KvInput::delete(key))
    } else {
        (
            KvOp::Put {
                key: key.clone(),
                value: value.clone(),
            },
            lin::KvInput::put(key, value),
        )
    };
    let cmd = KvCommand {
        client: client.id,
        seq: client.seq,
        op,
    };
    (Request::Write(cmd), input)
}
