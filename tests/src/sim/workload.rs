//! Simulated clients: each keeps one operation outstanding, retries it (with
//! the same session and sequence number, so the store applies it once) at
//! the leader it hears of, and records the history for the linearizability
//! checker.
//!
//! Reads are the API's: a one-key Range (served on the driver), or a range
//! from a key to the end of the key space with a limit (served on a frozen
//! view after a delay, while writes go on). A range is recorded as a get of
//! each key it covers, all over the range's own interval: the range
//! linearizes at one point, so each of them does too.

use super::TICK_UNITS;
use super::cluster::{Cluster, read_ctx};
use super::kv::{SimWrite, get_request, scan_request};
use super::node::{Event, Proposal, Read};
use crate::linearizability::{self as lin, HistoryRecorder, OpId};
use flotilla_node::driver::DriverError;
use flotilla_node::kv::KeepAliveError;
use flotilla_proto::etcdserverpb::RangeRequest;
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
    /// Of the reads, the fraction that are ranges (on a frozen view).
    pub range_fraction: f64,
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
    /// Fraction of lease operations: grants, puts attached to a lease,
    /// revokes and keepalives, on keys of their own (`l0`, `l1`, ...);
    /// some gets read those keys too.
    pub lease_fraction: f64,
    /// Keys attached to leases.
    pub lease_keys: usize,
    /// Longest lease TTL granted, in seconds (from 1).
    pub lease_ttl_max_secs: i64,
}

impl Default for WorkloadConfig {
    fn default() -> Self {
        WorkloadConfig {
            clients: 5,
            keys: 8,
            read_fraction: 0.4,
            range_fraction: 0.4,
            cas_fraction: 0.15,
            delete_fraction: 0.05,
            attempt_timeout_ticks: 30,
            max_attempts: 40,
            max_think_ticks: 3,
            lease_fraction: 0.0,
            lease_keys: 3,
            lease_ttl_max_secs: 2,
        }
    }
}

#[derive(Debug)]
enum Request {
    Write {
        write: SimWrite,
        command: Bytes,
    },
    Read {
        ctx: Bytes,
        request: RangeRequest,
        /// The keys the range may hold, in order (one for a get).
        keys: Vec<String>,
    },
    /// A lease keepalive: the leader renews the lease on its lessor.
    KeepAlive {
        /// The lease.
        id: i64,
    },
}

#[derive(Debug)]
struct Pending {
    /// The recorded operation (None for a range: its gets are recorded
    /// once it answers).
    op: Option<OpId>,
    /// When it was invoked.
    called_at: u64,
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
    /// Leases it was granted (the newest few).
    leases: Vec<i64>,
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
    /// An answer no correct member gives, if one came.
    pub failure: Option<String>,
    /// Deletes made by lease revokes, recorded so far (each as a client
    /// of its own).
    pub lease_deletes: u64,
    /// Keepalives a leader renewed.
    pub keepalives: u64,
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
                leases: Vec::new(),
            })
            .collect();
        Workload {
            config,
            clients,
            recorder: HistoryRecorder::new(),
            completed: 0,
            abandoned: 0,
            issuing: true,
            failure: None,
            lease_deletes: 0,
            keepalives: 0,
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
        self.record_lease_deletes(cluster);
        for i in 0..self.clients.len() {
            self.drive_client(i, cluster);
        }
    }

    /// Keys attached to a lease go when a revoke of it applies, whoever
    /// proposed it (a client, or the leader's expiry loop): each such
    /// delete is recorded as a client's delete, called when the first
    /// revoke of the lease was proposed and answered when the first member
    /// applied it (the revoke committed in between).
    fn record_lease_deletes(&mut self, cluster: &mut Cluster) {
        for d in std::mem::take(&mut cluster.event_history.lease_deletes) {
            let called = cluster.revokes_proposed.get(&d.lease).copied().unwrap_or(0);
            let client = LEASE_DELETE_CLIENTS + self.lease_deletes;
            let op = self
                .recorder
                .call(client, lin::KvInput::delete(d.key), time_ns(called));
            self.recorder.ok(op, time_ns(d.applied_at), None);
            self.lease_deletes += 1;
        }
    }

    fn on_event(&mut self, event: Event, now: u64) {
        for client in &mut self.clients {
            let Some(p) = &mut client.pending else {
                continue;
            };
            let answer = match (&p.request, &event) {
                (
                    Request::Write { write, .. },
                    Event::Answered {
                        node,
                        proposal,
                        outcome,
                    },
                ) if proposal.client == client.id + 1
                    && proposal.seq == client.seq
                    && Some(*node) == p.node =>
                {
                    match outcome {
                        Ok((_, output)) if write.refused(output) => Some(Answer::Refused),
                        Ok((_, output)) => match write.outcome(output) {
                            Ok(output) => {
                                if let SimWrite::Grant { id, .. } = write {
                                    client.leases.push(*id);
                                    if client.leases.len() > 3 {
                                        client.leases.remove(0);
                                    }
                                }
                                Some(Answer::Single(output))
                            }
                            Err(e) => {
                                self.failure.get_or_insert(format!("member {node}: {e}"));
                                return;
                            }
                        },
                        Err(_) => {
                            // The outcome is unknown (another leader's
                            // entry took the index): retry elsewhere at once.
                            p.deadline = now;
                            return;
                        }
                    }
                }
                (
                    Request::Read { ctx, keys, request },
                    Event::ReadDone {
                        ctx: done,
                        kvs,
                        more,
                        ..
                    },
                ) if ctx == done => Some(read_answer(request, keys, kvs, *more)),
                (
                    Request::Read { ctx, .. },
                    Event::ReadFailed {
                        node,
                        ctx: failed,
                        error,
                    },
                ) if ctx == failed && Some(*node) == p.node => {
                    p.deadline = now + TICK_UNITS;
                    p.refused = true;
                    if let DriverError::NotLeader {
                        leader_hint: Some(hint),
                    } = error
                    {
                        client.leader_guess = *hint;
                    } else {
                        p.refused = false;
                    }
                    return;
                }
                _ => None,
            };
            let Some(answer) = answer else { continue };
            let p = client.pending.take().expect("matched above");
            match (answer, p.op) {
                (Answer::Single(output), Some(op)) => self.recorder.ok(op, time_ns(now), output),
                // Lease grants, revokes and keepalives are not in the
                // history (the deletes revokes make are).
                (Answer::Single(_), None) => {}
                (Answer::Refused, Some(op)) => self.recorder.fail(op, time_ns(now)),
                (Answer::Refused, None) => {}
                (Answer::Gets(gets), _) => {
                    for (key, value) in gets {
                        let op = self.recorder.call(
                            client.id,
                            lin::KvInput::get(key),
                            time_ns(p.called_at),
                        );
                        self.recorder
                            .ok(op, time_ns(now), Some(lin::KvOutput::Value(value)));
                    }
                }
            }
            self.completed += 1;
            client.next_at = now;
            return;
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
                let op = input.map(|input| self.recorder.call(client.id, input, time_ns(now)));
                client.pending = Some(Pending {
                    op,
                    called_at: now,
                    request,
                    node: None,
                    deadline: now,
                    attempts: 0,
                    refused: true,
                });
            }
            Some(p) if now < p.deadline => return,
            Some(p) if p.attempts >= self.config.max_attempts => {
                if let Some(op) = p.op {
                    self.recorder.unknown(op);
                }
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
        if !cluster.node(target).is_up() {
            // Connection refused: retry soon at another member.
            p.deadline = now + TICK_UNITS;
            return;
        }
        let refused_hint = match &p.request {
            Request::KeepAlive { id } => match keepalive(cluster, target, *id) {
                Ok(()) => {
                    // The leader answers at once.
                    client.pending = None;
                    client.next_at = now;
                    self.keepalives += 1;
                    self.completed += 1;
                    return;
                }
                Err(hint) => Some(hint),
            },
            Request::Write { write, command } => {
                match write {
                    SimWrite::Revoke { id } => cluster.note_revoke(*id),
                    SimWrite::Grant { id, ttl_secs } if p.attempts == 1 => {
                        cluster.note_renewed(*id, *ttl_secs)
                    }
                    _ => {}
                }
                let proposal = Proposal {
                    client: client.id + 1,
                    seq: client.seq,
                };
                match cluster.propose(target, command.clone(), proposal) {
                    Some(Ok(())) => None,
                    Some(Err(ProposeError::NotLeader { leader_hint })) => Some(leader_hint),
                    _ => Some(None),
                }
            }
            Request::Read { ctx, request, .. } => {
                let read = Read {
                    ctx: ctx.clone(),
                    request: request.clone(),
                };
                // A refusal comes back as an event (`ReadFailed`).
                cluster.read(target, read);
                None
            }
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
            if let Some(op) = client.pending.take().and_then(|p| p.op) {
                self.recorder.unknown(op);
            }
        }
        self.recorder.history()
    }
}

/// Client ids from which each lease delete is recorded as a client of its
/// own.
const LEASE_DELETE_CLIENTS: u64 = 1 << 32;

/// What answered an operation: one output, a refusal, or the gets a range
/// covers.
enum Answer {
    Single(Option<lin::KvOutput>),
    Refused,
    Gets(Vec<(String, Option<String>)>),
}

/// The gets a read's answer stands for: a one-key read's value, or, for a
/// range, each key it covers (up to the last it returned when the limit cut
/// it short) with its value or absence.
fn read_answer(
    request: &RangeRequest,
    keys: &[String],
    kvs: &[(String, String)],
    more: bool,
) -> Answer {
    if request.range_end.is_empty() {
        return Answer::Single(Some(lin::KvOutput::Value(Event::value(kvs))));
    }
    let last = kvs.last().map(|(k, _)| k.as_str());
    let covered = keys
        .iter()
        .filter(|k| !more || last.is_some_and(|last| k.as_str() <= last))
        .map(|k| {
            let value = kvs.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());
            (k.clone(), value)
        })
        .collect();
    Answer::Gets(covered)
}

/// A keepalive at member `target`, as the lease service serves it: the
/// leader renews the lease on its lessor (a lease it does not know is
/// answered too: the client learns it is gone); any other member refuses,
/// with the leader it knows of.
fn keepalive(cluster: &mut Cluster, target: NodeId, id: i64) -> Result<(), Option<NodeId>> {
    let node = cluster.node(target);
    let raft = node.raft().ok_or(None)?;
    let status = raft.status();
    let hint = (status.soft_state.leader != NodeId(0)).then_some(status.soft_state.leader);
    let Some(lessor) = node.lessor.as_ref() else {
        return Err(hint);
    };
    let mut lessor = lessor.lock().unwrap_or_else(|p| p.into_inner());
    let renewed = lessor.keepalive(id, cluster.instant());
    drop(lessor);
    match renewed {
        Ok(ttl_secs) => {
            cluster.note_renewed(id, ttl_secs);
            Ok(())
        }
        Err(KeepAliveError::NotFound) => Ok(()),
        Err(_) => Err(hint),
    }
}

/// The keys the clients share, in key order.
fn key_space(config: &WorkloadConfig) -> Vec<String> {
    let mut keys: Vec<String> = (0..config.keys).map(|i| format!("k{i}")).collect();
    keys.sort();
    keys
}

fn new_request(
    config: &WorkloadConfig,
    client: &mut Client,
    cluster: &mut Cluster,
) -> (Request, Option<lin::KvInput>) {
    client.seq += 1;
    let rng = &mut cluster.rng;
    let key = format!("k{}", rng.random_range(0..config.keys));
    let value = format!("c{}s{}", client.id, client.seq);
    if rng.random_bool(config.lease_fraction) {
        return lease_request(config, client, rng);
    }
    let roll: f64 = rng.random();
    if roll < config.read_fraction {
        let key = if config.lease_fraction > 0.0 && rng.random_bool(0.3) {
            format!("l{}", rng.random_range(0..config.lease_keys))
        } else {
            key
        };
        let ctx = read_ctx(client.id, client.seq, &key);
        if key.starts_with('k') && rng.random_bool(config.range_fraction) {
            let limit = rng.random_range(0..=3);
            let keys = key_space(config)
                .into_iter()
                .filter(|k| *k >= key)
                .collect();
            let request = scan_request(&key, "k", limit);
            return (Request::Read { ctx, request, keys }, None);
        }
        let request = get_request(&key);
        let read = Request::Read {
            ctx,
            request,
            keys: vec![key.clone()],
        };
        return (read, Some(lin::KvInput::get(key)));
    }
    let (write, input) = if roll < config.read_fraction + config.cas_fraction {
        // Expect a value some client may have written, or absence.
        let expected = if rng.random_bool(0.3) {
            None
        } else {
            let other = rng.random_range(0..config.clients);
            let seq = client.seq.saturating_sub(rng.random_range(1..4)).max(1);
            Some(format!("c{other}s{seq}"))
        };
        (
            SimWrite::Cas {
                key: key.clone(),
                expected: expected.clone(),
                value: value.clone(),
            },
            lin::KvInput::cas(key, expected, value),
        )
    } else if roll < config.read_fraction + config.cas_fraction + config.delete_fraction {
        (
            SimWrite::Delete {
                key: key.clone(),
                ranged: rng.random_bool(0.25),
            },
            lin::KvInput::delete(key),
        )
    } else {
        (
            SimWrite::Put {
                key: key.clone(),
                value: value.clone(),
            },
            lin::KvInput::put(key, value),
        )
    };
    let command = write.command(client.id + 1, client.seq);
    (Request::Write { write, command }, Some(input))
}

/// A lease operation: a grant (about a quarter, and always while the client
/// holds no lease), a put attached to one of its leases, a revoke, or a
/// keepalive.
fn lease_request(
    config: &WorkloadConfig,
    client: &mut Client,
    rng: &mut rand::rngs::SmallRng,
) -> (Request, Option<lin::KvInput>) {
    let roll: f64 = rng.random();
    let lease = (!client.leases.is_empty())
        .then(|| client.leases[rng.random_range(0..client.leases.len())]);
    let write = match lease {
        Some(id) if roll < 0.2 => return (Request::KeepAlive { id }, None),
        Some(id) if roll < 0.3 => SimWrite::Revoke { id },
        Some(lease) if roll < 0.75 => {
            let key = format!("l{}", rng.random_range(0..config.lease_keys));
            let value = format!("c{}s{}", client.id, client.seq);
            let command = SimWrite::PutLease {
                key: key.clone(),
                value: value.clone(),
                lease,
            };
            let bytes = command.command(client.id + 1, client.seq);
            return (
                Request::Write {
                    write: command,
                    command: bytes,
                },
                Some(lin::KvInput::put(key, value)),
            );
        }
        _ => SimWrite::Grant {
            // Unique per client and request, so a retry's answer is the
            // grant's own.
            id: (((client.id + 1) << 20) | client.seq) as i64,
            ttl_secs: rng.random_range(1..=config.lease_ttl_max_secs),
        },
    };
    let command = write.command(client.id + 1, client.seq);
    (Request::Write { write, command }, None)
}
