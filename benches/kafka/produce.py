#!/usr/bin/env python3
"""Kafka produce throughput to one partition with librdkafka's own batching
(confluent-kafka): --messages records of --size bytes, acks=all, counted
from the first produce call to the last delivery report. Every record must
be delivered. Prints one JSON line: messages, seconds, msgs_per_sec,
mb_per_sec (MB = 10^6 bytes of values).

    python3 benches/kafka/produce.py --bootstrap 127.0.0.1:9092 --topic t
"""

import argparse
import json
import sys
import time

try:
    from confluent_kafka import Producer
except ImportError:
    print("the python module confluent_kafka is missing (pip install confluent-kafka)",
          file=sys.stderr)
    sys.exit(3)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--messages", type=int, default=300000)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--linger-ms", type=int, default=5)
    ap.add_argument("--batch-bytes", type=int, default=1000000)
    ap.add_argument("--in-flight", type=int, default=5)
    ap.add_argument("--idempotence", action="store_true")
    ap.add_argument("--timeout", type=float, default=300.0)
    args = ap.parse_args()
    if args.messages < 1 or args.size < 0:
        print("--messages must be positive, --size not negative", file=sys.stderr)
        sys.exit(2)

    p = Producer({
        "bootstrap.servers": args.bootstrap,
        "acks": "all",
        "enable.idempotence": args.idempotence,
        "linger.ms": args.linger_ms,
        "batch.size": args.batch_bytes,
        # A batch may not exceed the largest message librdkafka sends.
        "message.max.bytes": max(1000000, args.batch_bytes + 100000),
        "batch.num.messages": 100000,
        "max.in.flight.requests.per.connection": args.in_flight,
        "queue.buffering.max.messages": 1000000,
        "queue.buffering.max.kbytes": 1048576,
        "message.timeout.ms": int(args.timeout * 1000),
    })
    # Connect and learn the leader before the clock starts.
    p.list_topics(args.topic, timeout=20)

    delivered = 0
    failed = []

    def report(err, _msg):
        nonlocal delivered
        if err is None:
            delivered += 1
        elif len(failed) < 10:
            failed.append(str(err))

    value = b"x" * args.size
    started = time.monotonic()
    cpu = time.process_time()
    for _ in range(args.messages):
        while True:
            try:
                p.produce(args.topic, value=value, partition=0, on_delivery=report)
                break
            except BufferError:
                p.poll(0.01)
        p.poll(0)
    left = p.flush(args.timeout)
    secs = time.monotonic() - started
    cpu = time.process_time() - cpu
    if failed or left or delivered != args.messages:
        print(f"{delivered} of {args.messages} delivered, {left} left, errors: {failed}",
              file=sys.stderr)
        sys.exit(1)
    print(json.dumps({
        "messages": delivered,
        "size_bytes": args.size,
        "seconds": secs,
        "msgs_per_sec": delivered / secs,
        "mb_per_sec": delivered * args.size / secs / 1e6,
        # CPU seconds of this client (Python and librdkafka's threads).
        "client_cpu_s": cpu,
    }))


if __name__ == "__main__":
    main()
