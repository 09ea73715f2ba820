#!/usr/bin/env bash
# kafka: produce throughput through the Kafka listener (confluent-kafka, on
# librdkafka, with its own batching) against the gRPC path (`flotilla bench
# produce`), in the same run on the same 3-member cluster: 1 KiB records to
# one partition, rf 3, acks=all, min.insync.replicas 2. The two paths
# alternate ROUNDS times, each on a fresh topic. Prints a table (path, msgs/s,
# MB/s, ratio to gRPC) with the median of the rounds and each round's
# figures. Issue 16's target: Kafka at least 80 % of gRPC. Asserts nothing.
#
# How to run (from anywhere; not run in CI):
#
#     bash benches/kafka/run.sh                     # 3 rounds of 300,000 records each way
#     MESSAGES=100000 ROUNDS=2 bash benches/kafka/run.sh
#
# Time on the 2-core development machine: the release build (minutes cold,
# seconds when up to date), then well under a minute per round.
#
# What it does: builds `flotilla` in release mode (CARGO_TARGET_DIR is
# honoured), starts 3 members on loopback with their data in a temp dir,
# each serving Kafka on KAFKA_BASE+i; per round, creates a topic and runs
# benches/kafka/produce.py (librdkafka: linger.ms LINGER_MS, batch.size
# BATCH_BYTES, IN_FLIGHT requests per connection; msgs/s from the first
# send to the last delivery report), then `flotilla bench produce
# --endpoints-given --rf 3` (batches of GRPC_BATCH records, GRPC_IN_FLIGHT
# in flight). The Python client and the gRPC bench run on the same cores as
# the members: on a 2-core machine the client's own CPU counts.
#
# Environment: MESSAGES (300000), SIZE (1024), ROUNDS (3), LINGER_MS (20),
# BATCH_BYTES (4000000: under the members' --broker-max-batch-bytes, 4 MiB), IN_FLIGHT (5), IDEMPOTENCE (0; 1 sets
# enable.idempotence), GRPC_BATCH (1000), GRPC_IN_FLIGHT (4), BASE (23379):
# member i listens for clients on BASE+i, peers on BASE+100+i, HTTP on
# BASE+200+i, Kafka on KAFKA_BASE (BASE+300)+i.
# Needs: bash, jq, curl, timeout (coreutils), cargo, python3 with
# confluent-kafka (pip install confluent-kafka).

set -euo pipefail

MESSAGES=${MESSAGES:-300000}
SIZE=${SIZE:-1024}
ROUNDS=${ROUNDS:-3}
LINGER_MS=${LINGER_MS:-20}
BATCH_BYTES=${BATCH_BYTES:-4000000}
IN_FLIGHT=${IN_FLIGHT:-5}
IDEMPOTENCE=${IDEMPOTENCE:-0}
GRPC_BATCH=${GRPC_BATCH:-1000}
GRPC_IN_FLIGHT=${GRPC_IN_FLIGHT:-4}
BASE=${BASE:-23379}
KAFKA_BASE=$((BASE + 300))

LOG_TAG=kafka
WORK_PREFIX=flotilla-kafka
# shellcheck source=../lib/members.sh
source "$(dirname "$0")/../lib/members.sh"
for v in MESSAGES SIZE ROUNDS LINGER_MS BATCH_BYTES IN_FLIGHT IDEMPOTENCE GRPC_BATCH GRPC_IN_FLIGHT BASE; do
	[[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a non-negative integer, not '${!v}'"
done
((MESSAGES > 0 && ROUNDS > 0 && GRPC_BATCH > 0 && GRPC_IN_FLIGHT > 0 && IN_FLIGHT > 0)) ||
	die "MESSAGES, ROUNDS, GRPC_BATCH, GRPC_IN_FLIGHT and IN_FLIGHT must be positive"
((KAFKA_BASE + 2 < 32768)) || die "BASE $BASE is too high"
python3 -c 'import confluent_kafka' 2>/dev/null ||
	die "python3 with confluent-kafka is needed (pip install confluent-kafka)"

log "building flotilla (release)"
(cd "$ROOT" && timeout 3600 cargo build --release -p flotilla-node --bin flotilla >&2)
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/flotilla
[[ -x $BIN ]] || die "no binary at $BIN"

EPS="http://127.0.0.1:$BASE,http://127.0.0.1:$((BASE + 1)),http://127.0.0.1:$((BASE + 2))"
BOOTSTRAP="127.0.0.1:$KAFKA_BASE,127.0.0.1:$((KAFKA_BASE + 1)),127.0.0.1:$((KAFKA_BASE + 2))"
CLUSTER=""
for i in 0 1 2; do
	CLUSTER+="${CLUSTER:+,}n$((i + 1))=http://127.0.0.1:$((BASE + 100 + i))"
done

in_use() { # in_use PORT: something on loopback accepts connections there
	(exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}
for off in 0 100 200 300; do
	for i in 0 1 2; do
		! in_use $((BASE + off + i)) || die "port $((BASE + off + i)) is in use; choose another BASE"
	done
done
for i in 0 1 2; do
	name=n$((i + 1))
	"$BIN" node --name "$name" --data-dir "$WORK/$name" --initial-cluster "$CLUSTER" \
		--listen-client-urls "http://127.0.0.1:$((BASE + i))" \
		--listen-peer-urls "http://127.0.0.1:$((BASE + 100 + i))" \
		--listen-metrics-urls "http://127.0.0.1:$((BASE + 200 + i))" \
		--kafka-listen-addr "127.0.0.1:$((KAFKA_BASE + i))" >>"$WORK/$name.log" 2>&1 &
	PIDS[$name]=$!
done

deadline=$(($(now_ms) + 60000))
for i in 0 1 2; do
	until curl -fs "http://127.0.0.1:$((BASE + 200 + i))/readyz" >/dev/null; do
		(($(now_ms) < deadline)) || die "the cluster did not become ready in 60 s"
		kill -0 "${PIDS[n$((i + 1))]}" 2>/dev/null || die "member n$((i + 1)) exited"
		sleep 0.2
	done
done
log "cluster ready"

topic() { # topic NAME: one partition, rf 3, min.insync 2, led and in sync
	local deadline=$(($(now_ms) + 30000))
	until timeout 10 "$BIN" --endpoints "$EPS" topic create "$1" -p 1 -r 3 \
		--min-insync-replicas 2 >/dev/null 2>&1; do
		(($(now_ms) < deadline)) || die "cannot create topic $1"
		sleep 0.2
	done
	until [[ $(timeout 10 "$BIN" --endpoints "$EPS" topic describe "$1" -w json 2>/dev/null |
		jq '[.partitions[] | select(.leader != "0" and (.isr | length) == 3)] | length' 2>/dev/null) == 1 ]]; do
		(($(now_ms) < deadline)) || die "topic $1 has no leader or full ISR in 30 s"
		sleep 0.1
	done
}

KAFKA_RUNS=()
GRPC_RUNS=()
idem=()
((IDEMPOTENCE == 0)) || idem=(--idempotence)
for round in $(seq 1 "$ROUNDS"); do
	t=kafka-bench-$round
	topic "$t"
	log "round $round: kafka ($MESSAGES x $SIZE B)"
	k=$(timeout 600 python3 "$ROOT/benches/kafka/produce.py" --bootstrap "$BOOTSTRAP" --topic "$t" \
		--messages "$MESSAGES" --size "$SIZE" --linger-ms "$LINGER_MS" \
		--batch-bytes "$BATCH_BYTES" --in-flight "$IN_FLIGHT" "${idem[@]}") ||
		die "the kafka producer failed"
	KAFKA_RUNS+=("$k")
	timeout 30 "$BIN" --endpoints "$EPS" topic delete "$t" >/dev/null 2>&1 || true
	log "round $round: grpc ($MESSAGES x $SIZE B)"
	g=$(timeout 600 "$BIN" --endpoints "$EPS" -w json bench produce --endpoints-given --rf 3 \
		--messages "$MESSAGES" --size "$SIZE" --batch "$GRPC_BATCH" \
		--concurrency "$GRPC_IN_FLIGHT") || die "flotilla bench produce failed"
	GRPC_RUNS+=("$(jq -c '.produce[0]' <<<"$g")")
done

median() { # median FIELD JSON...: the median of .FIELD over the JSON lines
	local f=$1
	shift
	printf '%s\n' "$@" | jq -s "[.[].$f] | sort | .[length / 2 | floor]"
}
k_msgs=$(median msgs_per_sec "${KAFKA_RUNS[@]}")
g_msgs=$(median msgs_per_sec "${GRPC_RUNS[@]}")
k_mb=$(median mb_per_sec "${KAFKA_RUNS[@]}")
g_mb=$(median mb_per_sec "${GRPC_RUNS[@]}")

echo "produce to one partition, rf 3, acks=all: $MESSAGES x $SIZE B per run, $ROUNDS rounds, median"
echo "kafka: linger.ms $LINGER_MS, batch.size $BATCH_BYTES, $IN_FLIGHT in flight, idempotence $IDEMPOTENCE; grpc: batches of $GRPC_BATCH, $GRPC_IN_FLIGHT in flight"
printf '%-6s  %10s  %8s  %6s\n' PATH MSGS/S MB/S RATIO
printf '%-6s  %10.0f  %8.1f  %6.2f\n' kafka "$k_msgs" "$k_mb" "$(jq -n "$k_msgs / $g_msgs")"
printf '%-6s  %10.0f  %8.1f  %6.2f\n' grpc "$g_msgs" "$g_mb" 1
echo "rounds (msgs/s):"
for i in "${!KAFKA_RUNS[@]}"; do
	printf '  %d  kafka %10.0f (client CPU %.1f s of %.1f s)  grpc %10.0f\n' $((i + 1)) \
		"$(jq .msgs_per_sec <<<"${KAFKA_RUNS[$i]}")" "$(jq .client_cpu_s <<<"${KAFKA_RUNS[$i]}")" \
		"$(jq .seconds <<<"${KAFKA_RUNS[$i]}")" "$(jq .msgs_per_sec <<<"${GRPC_RUNS[$i]}")"
done
