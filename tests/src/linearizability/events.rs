//! The event list the search walks: calls and returns in time order.

#[derive(Debug, Clone, Copy)]
pub(super) struct Event {
    /// Local index of the operation within the partition.
    pub(super) op: usize,
    pub(super) is_call: bool,
    /// For a call, the index of its return event.
    partner: usize,
    prev: usize,
    next: usize,
}

/// Call and return events in time order, as a doubly linked list over a
/// vector with head and tail sentinels, so that lifting an operation out
/// and putting it back are O(1) (Knuth's dancing links).
pub(super) struct EventList {
    pub(super) events: Vec<Event>,
}

const HEAD: usize = 0;

impl EventList {
    pub(super) fn new(intervals: impl Iterator<Item = (u64, Option<u64>)>) -> Self {
        // Sort key: (at infinity, time, returns after calls). Calls first
        // at equal times treats touching operations as concurrent, which
        // can only hide, never invent, a violation.
        let mut keyed: Vec<((bool, u64, bool), usize, bool)> = Vec::new();
        for (op, (call_ns, return_ns)) in intervals.enumerate() {
            keyed.push(((false, call_ns, false), op, true));
            let ret = return_ns.map_or((true, 0, true), |r| (false, r.max(call_ns), true));
            keyed.push((ret, op, false));
        }
        keyed.sort_by_key(|&(key, op, _)| (key, op));
        let tail = keyed.len() + 1;
        let sentinel = |prev, next| Event {
            op: usize::MAX,
            is_call: false,
            partner: usize::MAX,
            prev,
            next,
        };
        let mut events = vec![sentinel(HEAD, 1)];
        let mut return_of = vec![0; keyed.len() / 2];
        for (position, &(_, op, is_call)) in keyed.iter().enumerate() {
            let index = position + 1;
            if !is_call {
                return_of[op] = index;
            }
            events.push(Event {
                op,
                is_call,
                partner: usize::MAX,
                prev: index - 1,
                next: index + 1,
            });
        }
        events.push(sentinel(tail - 1, tail));
        for event in &mut events[1..tail] {
            if event.is_call {
                event.partner = return_of[event.op];
            }
        }
        Self { events }
    }

    pub(super) fn first(&self) -> usize {
        self.events[HEAD].next
    }

    pub(super) fn next(&self, entry: usize) -> usize {
        self.events[entry].next
    }

    fn unlink(&mut self, entry: usize) {
        let Event { prev, next, .. } = self.events[entry];
        self.events[prev].next = next;
        self.events[next].prev = prev;
    }

    fn relink(&mut self, entry: usize) {
        let Event { prev, next, .. } = self.events[entry];
        self.events[prev].next = entry;
        self.events[next].prev = entry;
    }

    /// Removes a call and its return.
    pub(super) fn lift(&mut self, call: usize) {
        self.unlink(call);
        self.unlink(self.events[call].partner);
    }

    /// Undoes `lift`; must be called in reverse order of lifting.
    pub(super) fn unlift(&mut self, call: usize) {
        self.relink(self.events[call].partner);
        self.relink(call);
    }
}
