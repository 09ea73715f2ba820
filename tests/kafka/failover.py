#!/usr/bin/env python3
"""An idempotent acks=all producer (confluent-kafka, on librdkafka) through a
partition leader's failover: the caller kills the leader while this runs.

Sends --records numbered records to partition 0 of --topic at about --rate
records a second, printing `acked N` on stdout as delivery reports come in
(every 100) and `sent N` once every record is handed to the client, so the
caller can time its kill. Then it checks:

- every delivery report is a success (no failed delivery) and no error the
  client reported was fatal (retriable ones, such as a lost connection to
  the killed leader, are counted and listed);
- a consumer reading the whole partition from the start finds record i
  exactly once, in order, at the offset its delivery report gave.

Prints one JSON line with what happened; exits non-zero with a message on
any failure (3 if confluent_kafka is missing).

    python3 tests/kafka/failover.py --bootstrap 127.0.0.1:9092 --topic t
"""

import argparse
import json
import time

from kafka_common import fail  # exits 3 if confluent_kafka is missing

from confluent_kafka import (OFFSET_BEGINNING, Consumer, KafkaException,
                                 Producer, TopicPartition)


def say(line):
    print(line, flush=True)


def produce(args):
    client_errors = []

    def on_error(err):
        client_errors.append({"name": err.name(), "str": err.str(),
                              "fatal": err.fatal(), "retriable": err.retriable()})

    p = Producer({
        "bootstrap.servers": args.bootstrap,
        "acks": "all",
        "enable.idempotence": True,
        "linger.ms": 5,
        "retry.backoff.ms": 100,
        "message.timeout.ms": int(args.timeout * 1000),
        "error_cb": on_error,
    })
    failed = []
    offsets = {}

    def report(err, msg):
        if err is not None:
            failed.append(f"record {msg.key().decode()}: {err}")
            return
        offsets[int(msg.key().decode())] = msg.offset()
        if len(offsets) % 100 == 0:
            say(f"acked {len(offsets)}")

    started = time.monotonic()
    for i in range(args.records):
        # Pace the sends so that the caller's kill lands mid-run.
        due = started + i / args.rate
        while time.monotonic() < due:
            p.poll(min(0.01, max(0.0, due - time.monotonic())))
        while True:
            try:
                p.produce(args.topic, partition=0, key=str(i).encode(),
                          value=f"record-{i}".encode(), on_delivery=report)
                break
            except BufferError:
                p.poll(0.1)
            except KafkaException as e:
                fail(f"produce of record {i} refused: {e}")
        p.poll(0)
    say(f"sent {args.records}")
    left = p.flush(args.timeout)
    produce_s = time.monotonic() - started
    fatal = [e for e in client_errors if e["fatal"]]
    if fatal:
        fail(f"fatal producer error: {fatal[0]}")
    if failed:
        fail(f"{len(failed)} failed deliveries, first: {failed[0]}")
    if left:
        fail(f"{left} records unacknowledged after {args.timeout} s")
    if len(offsets) != args.records:
        fail(f"{len(offsets)} of {args.records} records acknowledged")
    return offsets, client_errors, produce_s


def consume(args, want):
    """Every record of partition 0 from offset 0 to its end: (offset, i)."""
    c = Consumer({
        "bootstrap.servers": args.bootstrap,
        "group.id": f"{args.topic}-check",
        "enable.auto.commit": False,
        "fetch.wait.max.ms": 100,
    })
    tp = TopicPartition(args.topic, 0)
    _, end = c.get_watermark_offsets(tp, timeout=20)
    if end < want:
        fail(f"the partition ends at {end}, below the {want} acknowledged records")
    c.assign([TopicPartition(args.topic, 0, OFFSET_BEGINNING)])
    read = []
    deadline = time.monotonic() + args.timeout
    while len(read) < end:
        if time.monotonic() > deadline:
            fail(f"read {len(read)} of {end} records in {args.timeout} s")
        for msg in c.consume(num_messages=500, timeout=0.5):
            if msg.error():
                fail(f"consume error {msg.error()}")
            read.append((msg.offset(), int(msg.key().decode()),
                         msg.value().decode()))
    c.close()
    return read, end


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--records", type=int, default=3000)
    ap.add_argument("--rate", type=float, default=500.0)
    ap.add_argument("--timeout", type=float, default=120.0)
    args = ap.parse_args()
    if args.records < 1 or args.rate <= 0:
        fail("--records and --rate must be positive")

    offsets, client_errors, produce_s = produce(args)
    read, end = consume(args, args.records)

    # The partition holds exactly the acknowledged records, each once, in
    # the order sent, at the offsets their delivery reports gave.
    for pos, (offset, i, value) in enumerate(read):
        if offset != pos:
            fail(f"offset {offset} read at position {pos}")
        if i != pos:
            seen = [k for _, k, _ in read]
            dups = len(seen) - len(set(seen))
            fail(f"offset {pos} holds record {i}, not {pos} "
                 f"({dups} duplicates, {args.records - len(set(seen))} missing)")
        if value != f"record-{i}":
            fail(f"record {i} has the value {value!r}")
        if offsets[i] != offset:
            fail(f"record {i} was acknowledged at {offsets[i]} but is at {offset}")
    if len(read) != args.records:
        fail(f"the partition holds {len(read)} records, {args.records} were sent")

    say(json.dumps({
        "records": args.records,
        "acknowledged": len(offsets),
        "read": len(read),
        "end": end,
        # What librdkafka reported through its error callback: all
        # retriable (a fatal one failed the run above).
        "client_errors": len(client_errors),
        "client_error_names": sorted({e["name"] for e in client_errors}),
        # Informative only (never asserted).
        "produce_s": round(produce_s, 3),
    }))


if __name__ == "__main__":
    main()
