"""What the Kafka client scripts beside this file share: the
confluent-kafka import (exit 3, which the Rust tests read as a skip, when
the module is missing) and how a script reports a failure."""

import sys

try:
    import confluent_kafka  # noqa: F401  (checked here, imported by each script)
except ImportError:
    print("SKIP: the python module confluent_kafka is missing "
          "(pip install confluent-kafka)", file=sys.stderr)
    sys.exit(3)


def fail(msg):
    """Prints the failure on stderr and exits 1."""
    print(f"FAIL: {msg}", file=sys.stderr)
    sys.exit(1)
