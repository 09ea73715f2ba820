#!/usr/bin/env python3
"""A Kafka client no one here wrote (confluent-kafka, on librdkafka) against
Flotilla's Kafka listener: produce with acks=all, then consume in a group of
two with a rebalance when the second member joins and another when the
first leaves. Every record must be consumed; the group's committed offsets
must reach the end of every partition.

The topic must exist with --partitions partitions. Prints one JSON line
with what happened; exits non-zero with a message on any failure.

    python3 tests/kafka/clients.py --bootstrap 127.0.0.1:9092 --topic t --group g
"""

import argparse
import json
import time

from kafka_common import fail  # exits 3 if confluent_kafka is missing

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition


def produce(args):
    p = Producer({
        "bootstrap.servers": args.bootstrap,
        "acks": "all",
        "linger.ms": 5,
        "message.timeout.ms": 60000,
    })
    errors = []
    acked = []

    def report(err, msg):
        if err is not None:
            errors.append(str(err))
        else:
            acked.append((msg.partition(), msg.offset()))

    for i in range(args.records):
        while True:
            try:
                p.produce(args.topic, key=f"k{i}".encode(), value=f"v{i}".encode(),
                          on_delivery=report)
                break
            except BufferError:
                p.poll(0.1)
        p.poll(0)
    left = p.flush(60)
    if left:
        fail(f"{left} records still unacknowledged after 60 s")
    if errors:
        fail(f"{len(errors)} produce errors, first: {errors[0]}")
    if len(acked) != args.records:
        fail(f"{len(acked)} of {args.records} records acknowledged")
    return acked


class Member:
    """One group member: its consumer, what it read, its assignments."""

    def __init__(self, name, args):
        self.name = name
        self.assignments = []
        self.seen = []
        self.c = Consumer({
            "bootstrap.servers": args.bootstrap,
            "group.id": args.group,
            "client.id": name,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "session.timeout.ms": 6000,
            "heartbeat.interval.ms": 500,
            "fetch.wait.max.ms": 100,
        })
        self.c.subscribe([args.topic], on_assign=self.on_assign, on_revoke=self.on_revoke)

    def on_assign(self, consumer, partitions):
        self.assignments.append(sorted(tp.partition for tp in partitions))

    def on_revoke(self, consumer, partitions):
        # Eager rebalance: commit what was read before giving it up.
        try:
            consumer.commit(asynchronous=False)
        except Exception:  # nothing to commit yet
            pass

    def poll(self):
        """Reads what is there (a short wait) and commits it."""
        got = 0
        for msg in self.c.consume(num_messages=200, timeout=0.2):
            if msg.error():
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    continue
                fail(f"{self.name}: consume error {msg.error()}")
            self.seen.append(int(msg.value().decode()[1:]))
            got += 1
        if got:
            self.c.commit(asynchronous=False)
        return got


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--group", required=True)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--records", type=int, default=2000)
    ap.add_argument("--timeout", type=float, default=60.0)
    args = ap.parse_args()

    t0 = time.monotonic()
    acked = produce(args)
    produce_s = time.monotonic() - t0
    ends = {}
    for part, off in acked:
        ends[part] = max(ends.get(part, -1), off + 1)

    def until(what, cond, members):
        deadline = time.monotonic() + args.timeout
        while not cond():
            if time.monotonic() > deadline:
                fail(f"timed out waiting for {what}: " + json.dumps(
                    {m.name: {"assignments": m.assignments, "read": len(m.seen)}
                     for m in members}))
            for m in members:
                m.poll()

    want = set(range(args.records))

    def read():
        return set(a.seen) | set(b.seen)

    # Phase 1: one member owns every partition and reads a part.
    a = Member("member-a", args)
    until("the first member's assignment and some records",
          lambda: a.assignments and len(a.seen) >= args.records // 4, [a])
    if a.assignments[-1] != list(range(args.partitions)):
        fail(f"member-a alone was assigned {a.assignments[-1]}")

    # Phase 2: a second member joins: a rebalance splits the partitions.
    t_join = time.monotonic()
    b = Member("member-b", args)
    until("a rebalance giving both members partitions",
          lambda: b.assignments and b.assignments[-1] and len(a.assignments) >= 2
          and a.assignments[-1], [a, b])
    join_rebalance_s = time.monotonic() - t_join
    split = (a.assignments[-1], b.assignments[-1])
    if sorted(split[0] + split[1]) != list(range(args.partitions)):
        fail(f"after the join the partitions were split as {split}")
    target = len(read()) + (args.records - len(read())) // 3
    until("both members reading", lambda: len(read()) >= target, [a, b])

    # Phase 3: the first member leaves: the second takes every partition
    # and reads the rest.
    t_leave = time.monotonic()
    a.c.close()
    until("the second member taking every partition",
          lambda: b.assignments[-1] == list(range(args.partitions)), [b])
    leave_rebalance_s = time.monotonic() - t_leave
    until("the second member taking every partition and reading the rest",
          lambda: b.assignments[-1] == list(range(args.partitions)) and read() >= want, [b])
    b.poll()
    b.c.close()

    # The group's committed offsets, read back through the protocol.
    check = Consumer({"bootstrap.servers": args.bootstrap, "group.id": args.group,
                      "enable.auto.commit": False})
    committed = check.committed(
        [TopicPartition(args.topic, p) for p in range(args.partitions)], timeout=20)
    check.close()
    offsets = {tp.partition: tp.offset for tp in committed}
    for p in range(args.partitions):
        if offsets.get(p) != ends.get(p, 0) and not (ends.get(p, 0) == 0):
            fail(f"partition {p}: committed {offsets.get(p)}, end {ends.get(p)}")

    missing = want - read()
    if missing:
        fail(f"{len(missing)} records never consumed, e.g. {sorted(missing)[:5]}")
    total = len(a.seen) + len(b.seen)
    print(json.dumps({
        "produced": args.records,
        "consumed": total,
        "duplicates": total - len(read()),
        "member_a_assignments": a.assignments,
        "member_b_assignments": b.assignments,
        "committed": {str(p): o for p, o in sorted(offsets.items())},
        "ends": {str(p): o for p, o in sorted(ends.items())},
        # Informative only (never asserted): seconds for the produce, and
        # from the second member's subscribe (and the first's close) to the
        # new assignments.
        "produce_s": round(produce_s, 3),
        "join_rebalance_s": round(join_rebalance_s, 3),
        "leave_rebalance_s": round(leave_rebalance_s, 3),
    }))


if __name__ == "__main__":
    main()
