#!/usr/bin/env bash
# compare-nats: the same produce load against NATS JetStream and against
# Flotilla's broker, R1 and R3, alternating the systems, then a table of
# msgs/s with ratios.
#
# How to run (from anywhere; not run in CI, it takes minutes on 2 cores):
#
#     bash benches/compare-nats/run.sh
#     ROUNDS=1 MESSAGES=100000 bash benches/compare-nats/run.sh   # quicker
#
# It installs Debian's nats-server (2.9.x) when it is missing (needs root or
# sudo), builds `flotilla` in release mode (CARGO_TARGET_DIR is honoured) and
# the load tool benches/compare-nats/load (`nats-load`, async-nats: a client
# we did not write; its own Cargo.lock, outside the workspace).
#
# Systems, all on loopback, all started here and stopped on exit:
#   JetStream R1: one nats-server with JetStream on (file storage);
#   JetStream R3: three nats-servers in one cluster with JetStream on;
#   Flotilla: three members (`flotilla node`, as `dev-cluster` runs them,
#     the broker on); R1 is a topic with replication factor 1 (acks=leader),
#     R3 one with replication factor 3 and min.insync.replicas 2 (acks=all).
# Neither fsyncs each write by default (JetStream syncs on a timer; a
# Flotilla topic's fsync policy is `never`, durability by replication).
#
# The load (the same for both): MESSAGES records of SIZE bytes to one
# partition / one stream, as CONCURRENCY tasks each sending BATCH records
# and waiting for their acknowledgement before the next BATCH. Flotilla
# sends a batch as one produce request (`flotilla bench produce
# --endpoints-given`); JetStream has no batch publish in 2.9, so nats-load
# publishes the BATCH messages back to back and then awaits their BATCH
# publish acks (an ack: stored on the stream leader, with R3 on a quorum).
# Each round runs JetStream R1, Flotilla R1, JetStream R3, Flotilla R3, in
# that order; ROUNDS rounds; the table shows every run and the medians.
#
# Environment: ROUNDS (3), MESSAGES (300000), SIZE (1024), BATCH (1000),
# CONCURRENCY (4), NATS_BASE (14222: R1 server on NATS_BASE, R3 servers on
# NATS_BASE+1..3, cluster routes on NATS_BASE+101..103), FLOTILLA_BASE
# (26379: member i on FLOTILLA_BASE+i, peers +100, HTTP +200).
# Needs: bash, jq, curl, timeout (coreutils), cargo.

set -euo pipefail

ROUNDS=${ROUNDS:-3}
MESSAGES=${MESSAGES:-300000}
SIZE=${SIZE:-1024}
BATCH=${BATCH:-1000}
CONCURRENCY=${CONCURRENCY:-4}
NATS_BASE=${NATS_BASE:-14222}
FLOTILLA_BASE=${FLOTILLA_BASE:-26379}

LOG_TAG=compare-nats
WORK_PREFIX=compare-nats
STOP_WAIT_MS=5000
# shellcheck source=../lib/members.sh
source "$(dirname "$0")/../lib/members.sh"

# --- nats-server --------------------------------------------------------------
if ! command -v nats-server >/dev/null; then
	log "installing Debian nats-server"
	SUDO=
	((EUID == 0)) || SUDO=sudo
	export DEBIAN_FRONTEND=noninteractive
	timeout 600 $SUDO apt-get install -y nats-server >&2 ||
		{ timeout 600 $SUDO apt-get update -qq >&2 && timeout 600 $SUDO apt-get install -y nats-server >&2; } ||
		die "cannot install nats-server"
fi
log "$(nats-server --version)"

# --- builds -------------------------------------------------------------------
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
log "building flotilla (release)"
(cd "$ROOT" && timeout 3600 cargo build --release -p flotilla-node --bin flotilla >&2)
BIN=$TARGET/release/flotilla
[[ -x $BIN ]] || die "no binary at $BIN"
log "building nats-load (release)"
(cd "$ROOT/benches/compare-nats/load" &&
	CARGO_TARGET_DIR=$TARGET/nats-load timeout 3600 cargo build --release --locked >&2)
LOAD=$TARGET/nats-load/release/nats-load
[[ -x $LOAD ]] || die "no binary at $LOAD"

# --- JetStream ------------------------------------------------------------------
start_nats() { # start_nats NAME PORT [ROUTE_PORT ROUTES]: one server, JetStream on
	local name=$1 port=$2
	local args=(-n "$name" -a 127.0.0.1 -p "$port" -js -sd "$WORK/$name")
	if (($# > 2)); then
		args+=(--cluster_name compare-nats --cluster "nats://127.0.0.1:$3" --routes "$4")
	fi
	nats-server "${args[@]}" >"$WORK/$name.log" 2>&1 &
	PIDS[$name]=$!
}
ROUTES=""
for i in 1 2 3; do ROUTES+="${ROUTES:+,}nats://127.0.0.1:$((NATS_BASE + 100 + i))"; done
log "starting JetStream: R1 server on $NATS_BASE, R3 cluster on $((NATS_BASE + 1))..$((NATS_BASE + 3))"
start_nats js1 "$NATS_BASE"
for i in 1 2 3; do start_nats "js3-$i" $((NATS_BASE + i)) $((NATS_BASE + 100 + i)) "$ROUTES"; done

wait_nats() { # wait_nats PORT: the server's monitoring-less readiness: a TCP INFO line
	local deadline=$(($(now_ms) + 30000))
	while (($(now_ms) < deadline)); do
		if timeout 1 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1 && head -c 4 <&3" 2>/dev/null | grep -q INFO; then
			return 0
		fi
		sleep 0.2
	done
	die "nats-server on port $1 did not start in 30 s"
}
for p in "$NATS_BASE" $((NATS_BASE + 1)) $((NATS_BASE + 2)) $((NATS_BASE + 3)); do wait_nats "$p"; done

# --- Flotilla -------------------------------------------------------------------
FLO_CLUSTER=""
for i in 0 1 2; do
	FLO_CLUSTER+="${FLO_CLUSTER:+,}n$((i + 1))=http://127.0.0.1:$((FLOTILLA_BASE + 100 + i))"
done
FLO_EPS="http://127.0.0.1:$FLOTILLA_BASE,http://127.0.0.1:$((FLOTILLA_BASE + 1)),http://127.0.0.1:$((FLOTILLA_BASE + 2))"
log "starting flotilla (3 members, client ports $FLOTILLA_BASE..$((FLOTILLA_BASE + 2)))"
for i in 0 1 2; do
	name=n$((i + 1))
	"$BIN" node --name "$name" --data-dir "$WORK/$name" --initial-cluster "$FLO_CLUSTER" \
		--listen-client-urls "http://127.0.0.1:$((FLOTILLA_BASE + i))" \
		--listen-peer-urls "http://127.0.0.1:$((FLOTILLA_BASE + 100 + i))" \
		--listen-metrics-urls "http://127.0.0.1:$((FLOTILLA_BASE + 200 + i))" >>"$WORK/$name.log" 2>&1 &
	PIDS[$name]=$!
done
deadline=$(($(now_ms) + 60000))
until (($(curl -sf -m 1 "http://127.0.0.1:$((FLOTILLA_BASE + 200))/readyz" >/dev/null &&
	curl -sf -m 1 "http://127.0.0.1:$((FLOTILLA_BASE + 201))/readyz" >/dev/null &&
	curl -sf -m 1 "http://127.0.0.1:$((FLOTILLA_BASE + 202))/readyz" >/dev/null && echo 1 || echo 0) == 1)); do
	(($(now_ms) < deadline)) || die "flotilla did not become ready in 60 s"
	sleep 0.2
done
log "flotilla is ready"

# --- the runs -------------------------------------------------------------------
LOAD_ARGS=(--messages "$MESSAGES" --size "$SIZE" --batch "$BATCH" --concurrency "$CONCURRENCY")
run_nats() { # run_nats R ROUND: msgs/s of one JetStream run
	local port=$NATS_BASE
	(($1 == 1)) || port=$((NATS_BASE + 1))
	timeout 1800 "$LOAD" --url "nats://127.0.0.1:$port" --replicas "$1" --stream "bench_r$1_$2" \
		"${LOAD_ARGS[@]}" >"$WORK/nats-r$1-$2.json" || die "nats-load R$1 failed"
	jq -r '.msgs_per_sec | round' "$WORK/nats-r$1-$2.json"
}
run_flotilla() { # run_flotilla RF: msgs/s of one Flotilla run
	timeout 1800 "$BIN" --endpoints "$FLO_EPS" bench produce --endpoints-given --rf "$1" \
		"${LOAD_ARGS[@]}" -w json >"$WORK/flotilla-r$1-$2.json" || die "bench produce rf $1 failed"
	jq -r '.produce[0].msgs_per_sec | round' "$WORK/flotilla-r$1-$2.json"
}

declare -A RESULTS=()
for round in $(seq 1 "$ROUNDS"); do
	for r in 1 3; do
		log "round $round: JetStream R$r"
		RESULTS[nats-$r-$round]=$(run_nats "$r" "$round")
		log "round $round: JetStream R$r ${RESULTS[nats-$r-$round]} msgs/s; Flotilla rf $r"
		RESULTS[flotilla-$r-$round]=$(run_flotilla "$r" "$round")
		log "round $round: Flotilla rf $r ${RESULTS[flotilla-$r-$round]} msgs/s"
	done
done

median() { sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : int((v[NR / 2] + v[NR / 2 + 1]) / 2) }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'; }

echo
echo "compare-nats: $MESSAGES x $SIZE B records to one partition/stream, $CONCURRENCY x $BATCH in flight, loopback"
echo "JetStream $(nats-server --version | awk '{ print $2 }') (R1: one server; R3: 3-server cluster), Flotilla 3 members"
echo "R1: JetStream R1 publish ack vs Flotilla rf 1 acks=leader; R3: JetStream R3 publish ack vs Flotilla rf 3 acks=all (min.insync 2)"
echo "ratio = Flotilla / JetStream msgs/s, per round (the two ran back to back) and of the medians"
{
	printf 'load\tround\tJetStream msgs/s\tFlotilla msgs/s\tratio\n'
	for r in 1 3; do
		for round in $(seq 1 "$ROUNDS"); do
			n=${RESULTS[nats-$r-$round]} f=${RESULTS[flotilla-$r-$round]}
			printf 'R%s\t%s\t%s\t%s\t%s\n' "$r" "$round" "$n" "$f" "$(ratio "$f" "$n")"
		done
		n=$(for round in $(seq 1 "$ROUNDS"); do echo "${RESULTS[nats-$r-$round]}"; done | median)
		f=$(for round in $(seq 1 "$ROUNDS"); do echo "${RESULTS[flotilla-$r-$round]}"; done | median)
		printf 'R%s\tmedian\t%s\t%s\t%s\n' "$r" "$n" "$f" "$(ratio "$f" "$n")"
	done
} | column -t -s $'\t'
