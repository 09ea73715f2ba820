//! A seeded, virtual-time network between simulated members: it drops,
//! delays, duplicates and reorders messages, and cuts arbitrary links (one way
//! or both).

use flotilla_raft::{Message, NodeId};
use rand::Rng;
use rand::rngs::SmallRng;
use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap};

/// How unreliable the network is.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct NetFaults {
    /// Probability that a message is lost.
    pub drop_prob: f64,
    /// Probability that a message is delivered twice.
    pub dup_prob: f64,
    /// Smallest delay, in time units (see [`super::TICK_UNITS`]).
    pub min_delay_units: u64,
    /// Largest delay, in time units; a spread between min and max reorders.
    pub max_delay_units: u64,
    /// Probability that a message is held back far longer instead: between
    /// `long_delay_min_units` and `long_delay_max_units`.
    pub long_delay_prob: f64,
    /// Shortest long delay, in time units.
    pub long_delay_min_units: u64,
    /// Longest long delay, in time units.
    pub long_delay_max_units: u64,
}

impl NetFaults {
    /// Every message arrives at once, exactly once, in order.
    pub const PERFECT: NetFaults = NetFaults {
        drop_prob: 0.0,
        dup_prob: 0.0,
        min_delay_units: 0,
        max_delay_units: 0,
        long_delay_prob: 0.0,
        long_delay_min_units: 0,
        long_delay_max_units: 0,
    };

    /// A usable LAN: small delays, no loss.
    pub const RELIABLE: NetFaults = NetFaults {
        drop_prob: 0.0,
        dup_prob: 0.0,
        min_delay_units: 1,
        max_delay_units: 3,
        long_delay_prob: 0.0,
        long_delay_min_units: 0,
        long_delay_max_units: 0,
    };

    /// The spec's "unreliable" network: loss, duplicates, and delays of up
    /// to 2.5 ticks that reorder messages (all well inside an election
    /// timeout).
    pub const UNRELIABLE: NetFaults = NetFaults {
        drop_prob: 0.1,
        dup_prob: 0.05,
        min_delay_units: 1,
        max_delay_units: 25,
        long_delay_prob: 0.0,
        long_delay_min_units: 0,
        long_delay_max_units: 0,
    };

    /// [`NetFaults::UNRELIABLE`] with long reordering, as the spec's
    /// Figure8Unreliable uses: one message in eight is held for 10–80 ticks,
    /// one to eight election timeouts of [`super::sim_config`] (10–20
    /// ticks), so it arrives after elections and leader changes that
    /// happened while it was in flight.
    pub const UNRELIABLE_LONG_DELAYS: NetFaults = NetFaults {
        long_delay_prob: 0.125,
        long_delay_min_units: 10 * super::TICK_UNITS,
        long_delay_max_units: 80 * super::TICK_UNITS,
        ..NetFaults::UNRELIABLE
    };
}

/// Messages in flight, ordered by delivery time.
#[derive(Debug)]
pub struct Network {
    faults: NetFaults,
    /// Directed links that are cut: (from, to).
    cut: BTreeSet<(NodeId, NodeId)>,
    queue: BinaryHeap<Reverse<(u64, u64, usize)>>,
    slots: Vec<Option<Message>>,
    free: Vec<usize>,
    seq: u64,
    /// Messages handed to `send` (before faults), and their bytes.
    pub sent_msgs: u64,
    /// Bytes handed to `send`.
    pub sent_bytes: u64,
    /// Messages (copies) held back for a long delay.
    pub long_delayed_msgs: u64,
}

impl Network {
    /// An empty network with the given faults.
    pub fn new(faults: NetFaults) -> Network {
        Network {
            faults,
            cut: BTreeSet::new(),
            queue: BinaryHeap::new(),
            slots: Vec::new(),
            free: Vec::new(),
            seq: 0,
            sent_msgs: 0,
            sent_bytes: 0,
            long_delayed_msgs: 0,
        }
    }

    /// Current fault settings.
    pub fn faults(&self) -> NetFaults {
        self.faults
    }

    /// Changes the fault settings for messages sent from now on.
    pub fn set_faults(&mut self, faults: NetFaults) {
        self.faults = faults;
    }

    /// Cuts the link from `from` to `to` (one way).
    pub fn cut_one_way(&mut self, from: NodeId, to: NodeId) {
        self.cut.insert((from, to));
    }

    /// Splits the members into groups that only talk within themselves.
    pub fn partition(&mut self, groups: &[Vec<NodeId>]) {
        self.cut.clear();
        for (i, a) in groups.iter().enumerate() {
            for (j, b) in groups.iter().enumerate() {
                if i == j {
                    continue;
                }
                for x in a {
                    for y in b {
                        self.cut.insert((*x, *y));
                    }
                }
            }
        }
    }

    /// Cuts `node` off from `others` in both directions.
    pub fn isolate(&mut self, node: NodeId, others: &[NodeId]) {
        for other in others {
            if *other != node {
                self.cut.insert((node, *other));
                self.cut.insert((*other, node));
            }
        }
    }

    /// Restores every link.
    pub fn heal(&mut self) {
        self.cut.clear();
    }

    /// Whether `from` can currently reach `to`.
    pub fn connected(&self, from: NodeId, to: NodeId) -> bool {
        !self.cut.contains(&(from, to))
    }

    /// Whether any link is cut.
    pub fn is_partitioned(&self) -> bool {
        !self.cut.is_empty()
    }

    /// Queues `m` for delivery after a random delay, subject to the faults.
    pub fn send(&mut self, m: Message, now: u64, rng: &mut SmallRng) {
        self.sent_msgs += 1;
        self.sent_bytes += m.size_bytes();
        if !self.connected(m.from, m.to) {
            return;
        }
        let f = self.faults;
        if f.drop_prob > 0.0 && rng.random_bool(f.drop_prob) {
            return;
        }
        if f.dup_prob > 0.0 && rng.random_bool(f.dup_prob) {
            let at = now + self.delay_units(rng);
            self.push(at, m.clone());
        }
        let at = now + self.delay_units(rng);
        self.push(at, m);
    }

    /// One message's delay, in time units.
    fn delay_units(&mut self, rng: &mut SmallRng) -> u64 {
        let f = self.faults;
        if f.long_delay_prob > 0.0 && rng.random_bool(f.long_delay_prob) {
            self.long_delayed_msgs += 1;
            return rng.random_range(f.long_delay_min_units..=f.long_delay_max_units);
        }
        rng.random_range(f.min_delay_units..=f.max_delay_units)
    }

    fn push(&mut self, at: u64, m: Message) {
        let slot = match self.free.pop() {
            Some(i) => {
                self.slots[i] = Some(m);
                i
            }
            None => {
                self.slots.push(Some(m));
                self.slots.len() - 1
            }
        };
        self.seq += 1;
        self.queue.push(Reverse((at, self.seq, slot)));
    }

    /// The delivery time of the next message, if any.
    pub fn next_delivery(&self) -> Option<u64> {
        self.queue.peek().map(|Reverse((at, _, _))| *at)
    }

    /// The next message due at or before `now`. A link cut while the message
    /// was in flight drops it.
    pub fn pop_due(&mut self, now: u64) -> Option<Message> {
        loop {
            let Reverse((at, _, slot)) = *self.queue.peek()?;
            if at > now {
                return None;
            }
            self.queue.pop();
            let m = self.slots[slot]
                .take()
                .expect("queued slot holds a message");
            self.free.push(slot);
            if self.connected(m.from, m.to) {
                return Some(m);
            }
        }
    }

    /// Messages in flight.
    pub fn in_flight(&self) -> usize {
        self.queue.len()
    }
}
