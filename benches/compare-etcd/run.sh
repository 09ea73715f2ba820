#!/usr/bin/env bash
# compare-etcd: the same loads against a 3-member etcd and a 3-member Flotilla,
# both on loopback with fsync on, then a side-by-side table with ratios.
#
# How to run (from anywhere; not run in CI, it takes minutes on 2 cores):
#
#     bash benches/compare-etcd/run.sh
#     TOTAL=10000 bash benches/compare-etcd/run.sh      # a quicker run
#     SCENARIOS=0 bash benches/compare-etcd/run.sh      # only the comparison
#     ROUNDS=3 bash benches/compare-etcd/run.sh         # medians of 3 alternating runs
#
# It installs Debian's etcd-server (etcd 3.4) when `etcd` is missing (needs
# root or sudo), builds `flotilla` in release mode (CARGO_TARGET_DIR is
# honoured), and uses `flotilla bench kv` as the load generator for both
# systems. Everything (members, data in a temp dir) is stopped and removed on
# exit, also on Ctrl-C or failure.
#
# Loads (same flags for both systems):
#   (a) put: 8 B keys (random over KEY_SPACE keys), 256 B values, CLIENTS
#       clients over CONNS connections, TOTAL requests, spread over the 3
#       members (followers forward to the leader); PUT_FLAGS adds flags;
#   (a') put-leader: the same, every connection to the leader (etcd's
#       benchmark calls this --target-leader; etcd's performance guide
#       reports both); LEADER_PUT=0 skips it;
#   (b) linearizable range of one key, CLIENTS clients, RANGE_TOTAL requests;
#   (b') put-1: one client on one connection to the leader, SINGLE_TOTAL puts
#       (its p50 is the single-client write latency); SINGLE_TOTAL=0 skips it.
#   (e) CHECK_PERF=s|m|l|xl: etcd's own `etcdctl check perf` (a client this
#       project did not write; 60 s of puts at that load's fixed rate and
#       client count, e.g. l: 8,000 puts/s from 500 clients) against each
#       system in turn, etcd first; its throughput, slowest request and
#       standard deviation are printed beside the table. Off by default.
# A load run that had errors is named under the table with its count and
# the load generator's samples of the error messages.
# Flotilla-only scenarios (SCENARIOS=1, the default):
#   (c) leader killed: kill -9 the leader, time until a Put succeeds again;
#   (d) follower catch-up: SIGSTOP a follower, write CATCHUP_KEYS keys,
#       SIGCONT it, time until its applied index reaches the leader's.
#
# Environment: FLOTILLA_BIN (a `flotilla` binary to run instead of building
# one), CHECK_PERF (''), ROUNDS (1: runs of each load per system, the two
# systems alternating; the table shows medians), TOTAL (20000), RANGE_TOTAL (TOTAL), SINGLE_TOTAL (2000),
# CLIENTS (100), CONNS (10),
# KEY_SPACE (100000), PUT_FLAGS (''), LEADER_PUT (1), SCENARIOS (1),
# CATCHUP_KEYS (100000),
# ETCD_BASE (32379) and FLOTILLA_BASE (22379): member i listens for clients on
# BASE+i, for peers on BASE+100+i (Flotilla: HTTP on BASE+200+i).
# Needs: bash, jq, curl, timeout (coreutils), cargo.

set -euo pipefail

TOTAL=${TOTAL:-20000}
RANGE_TOTAL=${RANGE_TOTAL:-$TOTAL}
SINGLE_TOTAL=${SINGLE_TOTAL:-2000}
CLIENTS=${CLIENTS:-100}
CONNS=${CONNS:-10}
KEY_SPACE=${KEY_SPACE:-100000}
PUT_FLAGS=${PUT_FLAGS:-}
read -ra PUT_FLAG_LIST <<<"$PUT_FLAGS"
LEADER_PUT=${LEADER_PUT:-1}
SCENARIOS=${SCENARIOS:-1}
CHECK_PERF=${CHECK_PERF:-}
ROUNDS=${ROUNDS:-1}
CATCHUP_KEYS=${CATCHUP_KEYS:-100000}
ETCD_BASE=${ETCD_BASE:-32379}
FLOTILLA_BASE=${FLOTILLA_BASE:-22379}

LOG_TAG=compare-etcd
WORK_PREFIX=compare-etcd
STOP_WAIT_MS=5000
# shellcheck source=../lib/members.sh
source "$(dirname "$0")/../lib/members.sh"
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "ROUNDS must be a positive whole number, not '$ROUNDS'"
case $CHECK_PERF in '' | s | m | l | xl) ;; *) die "CHECK_PERF must be s, m, l or xl, not '$CHECK_PERF'" ;; esac

# Flotilla takes ports FLOTILLA_BASE..+202 (clients, peers, HTTP), etcd
# ETCD_BASE..+102: overlapping ranges leave one system unable to bind (e.g.
# etcd's client ports on Flotilla's HTTP ones), seen only as a member that
# never gets ready.
if ((ETCD_BASE <= FLOTILLA_BASE + 202 && FLOTILLA_BASE <= ETCD_BASE + 102)); then
	die "ETCD_BASE=$ETCD_BASE (ports ..+102) overlaps FLOTILLA_BASE=$FLOTILLA_BASE (ports ..+202)"
fi

# --- etcd -------------------------------------------------------------------
if ! command -v etcd >/dev/null; then
	log "installing Debian etcd-server"
	SUDO=
	((EUID == 0)) || SUDO=sudo
	DEBIAN_FRONTEND=noninteractive timeout 600 $SUDO apt-get install -y etcd-server >&2 ||
		die "cannot install etcd-server"
fi
log "$(etcd --version | head -n1)"

# --- flotilla ---------------------------------------------------------------
BIN=$(flotilla_bin)
[[ -x $BIN ]] || die "no binary at $BIN"

eps() { # eps BASE: the client endpoints of members 0..2
	echo "http://127.0.0.1:$(($1)),http://127.0.0.1:$(($1 + 1)),http://127.0.0.1:$(($1 + 2))"
}
ETCD_EPS=$(eps "$ETCD_BASE")
FLO_EPS=$(eps "$FLOTILLA_BASE")

start_etcd() {
	local cluster="" i
	for i in 0 1 2; do
		cluster+="${cluster:+,}e$((i + 1))=http://127.0.0.1:$((ETCD_BASE + 100 + i))"
	done
	for i in 0 1 2; do
		local name=e$((i + 1)) c=$((ETCD_BASE + i)) p=$((ETCD_BASE + 100 + i))
		etcd --name "$name" --data-dir "$WORK/$name" \
			--listen-client-urls "http://127.0.0.1:$c" --advertise-client-urls "http://127.0.0.1:$c" \
			--listen-peer-urls "http://127.0.0.1:$p" --initial-advertise-peer-urls "http://127.0.0.1:$p" \
			--initial-cluster "$cluster" --initial-cluster-state new --initial-cluster-token compare-etcd \
			--logger zap --log-level warn >"$WORK/$name.log" 2>&1 &
		PIDS[$name]=$!
	done
}

FLO_CLUSTER=""
for i in 0 1 2; do
	FLO_CLUSTER+="${FLO_CLUSTER:+,}n$((i + 1))=http://127.0.0.1:$((FLOTILLA_BASE + 100 + i))"
done

start_flotilla_member() { # start_flotilla_member I
	local i=$1 name=n$(($1 + 1))
	"$BIN" node --name "$name" --data-dir "$WORK/$name" --initial-cluster "$FLO_CLUSTER" \
		--listen-client-urls "http://127.0.0.1:$((FLOTILLA_BASE + i))" \
		--listen-peer-urls "http://127.0.0.1:$((FLOTILLA_BASE + 100 + i))" \
		--listen-metrics-urls "http://127.0.0.1:$((FLOTILLA_BASE + 200 + i))" \
		--fsync always >>"$WORK/$name.log" 2>&1 &
	PIDS[$name]=$!
}

applied_index() { # applied_index I: member I's applied index from its /metrics, or 0
	{ curl -sf -m 1 "http://127.0.0.1:$((FLOTILLA_BASE + 200 + $1))/metrics" || true; } |
		awk '/^flotilla_raft_applied_index / { print $2; found = 1 } END { if (!found) print 0 }'
}

status() { # status ENDPOINTS: `flotilla cluster status -w json`, or nothing
	timeout 10 "$BIN" --endpoints "$1" cluster status --endpoints-only -w json 2>/dev/null || true
}

wait_cluster() { # wait_cluster NAME ENDPOINTS: every member answers and knows a leader
	local deadline=$(($(now_ms) + 60000))
	while (($(now_ms) < deadline)); do
		local n
		n=$(status "$2" | jq '[.members[] | select(.leader != null and .leader != 0)] | length' 2>/dev/null || echo 0)
		if [[ $n == 3 ]]; then
			log "$1 is ready"
			return 0
		fi
		sleep 0.2
	done
	die "$1 did not become ready in 60 s"
}

bench() { # bench OUT ENDPOINTS ARGS...: one `flotilla bench kv` run, JSON to OUT
	local out=$1 endpoints=$2
	shift 2
	timeout 1800 "$BIN" --endpoints "$endpoints" bench kv "$@" -w json >"$out" ||
		die "bench kv $* against $endpoints failed: $(cat "$out")"
}

log "starting etcd (3 members, client ports $ETCD_BASE..$((ETCD_BASE + 2)))"
start_etcd
log "starting flotilla (3 members, client ports $FLOTILLA_BASE..$((FLOTILLA_BASE + 2)), fsync always)"
for i in 0 1 2; do start_flotilla_member "$i"; done
wait_cluster etcd "$ETCD_EPS"
wait_cluster flotilla "$FLO_EPS"

PUT_ARGS=(put --clients "$CLIENTS" --conns "$CONNS" --total "$TOTAL" --key-size 8 --val-size 256
	--key-space-size "$KEY_SPACE" "${PUT_FLAG_LIST[@]}")
RANGE_ARGS=(range bench-range-key --consistency l --clients "$CLIENTS" --conns "$CONNS"
	--total "$RANGE_TOTAL" --val-size 256)

# Phase by phase, the two systems alternating within each (etcd, Flotilla,
# etcd, Flotilla, ... for ROUNDS rounds), so that a drift in the machine's
# speed hits both alike; each system sees only its own phases, in the same
# order. The table shows each figure's median over the rounds.
phase() { # phase NAME ARGS...: ROUNDS alternating runs of one load
	local name=$1 round sys e
	shift
	for round in $(seq 1 "$ROUNDS"); do
		for sys in etcd flotilla; do
			[[ $sys == etcd ]] && e=$ETCD_EPS || e=$FLO_EPS
			log "$sys: $name, round $round of $ROUNDS"
			bench "$WORK/$sys-$name-$round.json" "$e" "$@"
		done
	done
}
phase put "${PUT_ARGS[@]}"
[[ $LEADER_PUT != 1 ]] || phase put-leader "${PUT_ARGS[@]}" --leader-only
phase range "${RANGE_ARGS[@]}"
if ((SINGLE_TOTAL > 0)); then
	phase put-1 put --clients 1 --conns 1 --total "$SINGLE_TOTAL" \
		--key-size 8 --val-size 256 --key-space-size "$KEY_SPACE" --leader-only
fi

# (e) etcdctl check perf: etcd's load, etcd's client, the same for both.
check_perf() { # check_perf SYSTEM ENDPOINTS: one line of etcdctl's verdicts
	local out=$WORK/$1-check-perf.txt
	log "$1: etcdctl check perf --load $CHECK_PERF (60 s)"
	# It exits 1 when a figure misses its load's bar; the figures are still printed.
	timeout 300 etcdctl --endpoints "${2//http:\/\//}" check perf --load "$CHECK_PERF" \
		--auto-compact >"$out" 2>&1 || true
	# The progress bar shares the output: keep only the verdict lines.
	local verdicts
	verdicts=$(tr '\r' '\n' <"$out" | grep -E '^(PASS|FAIL)' | paste -sd';' -)
	# No verdict at all: show why (etcdctl's last message, not its progress bar).
	[[ -n $verdicts ]] ||
		verdicts="no verdict: $(tr '\r' '\n' <"$out" | grep -vE '^ *[0-9]+ / [0-9]+' | grep -v '^ *$' | tail -n 1)"
	printf '%s\t%s\n' "$1" "$verdicts"
}
if [[ -n $CHECK_PERF ]]; then
	CHECK_PERF_ROWS=$(
		check_perf etcd "$ETCD_EPS"
		check_perf flotilla "$FLO_EPS"
	)
fi

# --- the table ----------------------------------------------------------------
reports() { # reports SYSTEM LOAD: its rounds' JSON reports, one after another
	local round
	for round in $(seq 1 "$ROUNDS"); do cat "$WORK/$1-$2-$round.json"; done
}
row() { # row LOAD: one line per load: each system's medians over the rounds
	jq -r -n --arg load "$1" \
		--slurpfile e <(reports etcd "$1") --slurpfile f <(reports flotilla "$1") '
		def r(x): (x * 100 | round) / 100;
		def ratio(a; b): if b > 0 then r(a / b) else "-" end;
		def median: sort | if length % 2 == 1 then .[length / 2 | floor]
			else (.[length / 2 - 1] + .[length / 2]) / 2 end;
		def med(runs; f): [runs[] | f] | median;
		def rps(runs): med(runs; .requests_per_s);
		def p50(runs): med(runs; .latency_ms.p50);
		def p99(runs): med(runs; .latency_ms.p99);
		[$load,
		 r(rps($e)), r(rps($f)), ratio(rps($f); rps($e)),
		 r(p50($e)), r(p50($f)), ratio(p50($f); p50($e)),
		 r(p99($e)), r(p99($f)), ratio(p99($f); p99($e)),
		 "\([$e[].errors] | add)/\([$f[].errors] | add)"] | @tsv'
}
runs() { # runs LOAD: each round's flotilla/etcd throughput ratio
	local round e f out=""
	for round in $(seq 1 "$ROUNDS"); do
		e=$(jq '.requests_per_s' "$WORK/etcd-$1-$round.json")
		f=$(jq '.requests_per_s' "$WORK/flotilla-$1-$round.json")
		out+="${out:+ }$(jq -rn --argjson e "$e" --argjson f "$f" 'if $e > 0 then ($f / $e * 100 | round) / 100 else "-" end')"
	done
	echo "$out"
}
echo
echo "compare-etcd: 3 members each on loopback, fsync on; $CLIENTS clients, $CONNS connections"
echo "put: $TOTAL x (8 B key, 256 B value) spread over the members; put-leader: the same, all to the leader"
echo "range: $RANGE_TOTAL x linearizable range of one key"
((SINGLE_TOTAL == 0)) || echo "put-1: $SINGLE_TOTAL x put from one client on one connection to the leader"
echo "load average after the runs: $(cut -d' ' -f1-3 /proc/loadavg) (the machine should be otherwise idle)"
echo "ratio = flotilla / etcd (throughput: higher is better; latency: lower is better)"
echo "figures: medians over $ROUNDS round(s), the systems alternating within each load"
{
	printf 'load\tetcd req/s\tflotilla req/s\tratio\tetcd p50 ms\tflotilla p50 ms\tratio\tetcd p99 ms\tflotilla p99 ms\tratio\terrors e/f (total)\n'
	row put
	[[ $LEADER_PUT != 1 ]] || row put-leader
	row range
	((SINGLE_TOTAL == 0)) || row put-1
} | column -t -s $'\t'
if ((ROUNDS > 1)); then
	echo "throughput ratio in each round:"
	for load in put $([[ $LEADER_PUT != 1 ]] || echo put-leader) range $( ((SINGLE_TOTAL == 0)) || echo put-1); do
		printf '  %-10s %s\n' "$load" "$(runs "$load")"
	done
fi
# A run with errors says what they were (the load generator keeps a few
# distinct messages per run), so that a count in the table can be traced.
for report in "$WORK"/*-*.json; do
	[[ -e $report ]] || continue
	jq -r --arg run "$(basename "$report" .json)" \
		'select(.errors > 0) | "errors in \($run): \(.errors) of \(.total): \(.error_samples | join("; "))"' \
		"$report" 2>/dev/null || true
done
if [[ -n $CHECK_PERF ]]; then
	echo
	echo "etcdctl check perf --load $CHECK_PERF (etcd's client and load, 60 s each):"
	echo "$CHECK_PERF_ROWS" | column -t -s $'\t'
fi
echo

[[ $SCENARIOS == 1 ]] || exit 0

# --- Flotilla-only scenarios --------------------------------------------------
leader_endpoint() { # the endpoint of the current leader, or nothing
	status "$FLO_EPS" | jq -r '.members[] | select(.leader != null and .leader != 0 and .is_leader == true) | .endpoint' 2>/dev/null | head -n1
}
endpoint_member() { # endpoint_member URL: the member index (0..2) of a client URL
	echo $((${1##*:} - FLOTILLA_BASE))
}

# (c) leader killed.
leader=$(leader_endpoint)
[[ -n $leader ]] || die "no flotilla leader found"
li=$(endpoint_member "$leader")
survivors=()
for i in 0 1 2; do ((i == li)) || survivors+=("http://127.0.0.1:$((FLOTILLA_BASE + i))"); done
log "(c) kill -9 the leader n$((li + 1)) ($leader)"
kill -KILL "${PIDS[n$((li + 1))]}"
t0=$(now_ms)
recovered=
attempt=0
while (($(now_ms) - t0 < 30000)); do
	ep=${survivors[$((attempt % 2))]}
	attempt=$((attempt + 1))
	if timeout 2 "$BIN" --endpoints "$ep" bench kv put --total 1 --clients 1 --conns 1 \
		--timeout-ms 200 --no-progress -w json >/dev/null 2>&1; then
		recovered=$(($(now_ms) - t0))
		break
	fi
done
wait "${PIDS[n$((li + 1))]}" 2>/dev/null || true
[[ -n $recovered ]] || die "no put succeeded within 30 s of killing the leader"
LEADER_KILLED="$recovered ms ($attempt attempts; the members run the default --tick-ms and --election-ticks)"
log "(c) a put succeeded $recovered ms after the kill"

log "restarting n$((li + 1)) and waiting for it to catch up"
start_flotilla_member "$li"
wait_cluster flotilla "$FLO_EPS"

# (d) follower catch-up.
leader=$(leader_endpoint)
[[ -n $leader ]] || die "no flotilla leader found"
li=$(endpoint_member "$leader")
fi_=$(((li + 1) % 3))
others="$leader,http://127.0.0.1:$((FLOTILLA_BASE + 3 - li - fi_))"
log "(d) SIGSTOP follower n$((fi_ + 1)); writing $CATCHUP_KEYS keys through the others"
kill -STOP "${PIDS[n$((fi_ + 1))]}"
bench "$WORK/catchup-put.json" "$others" put --clients "$CLIENTS" --conns "$CONNS" \
	--total "$CATCHUP_KEYS" --key-size 8 --val-size 256 --sequential-keys \
	--key-space-size "$CATCHUP_KEYS" --no-progress
target=$(applied_index "$li")
[[ $target =~ ^[0-9]+$ ]] || die "cannot read the leader's applied index"
log "(d) SIGCONT; the leader has applied index $target"
kill -CONT "${PIDS[n$((fi_ + 1))]}"
t0=$(now_ms)
caught=
polls=0
while (($(now_ms) - t0 < 120000)); do
	polls=$((polls + 1))
	applied=$(applied_index "$fi_")
	if [[ $applied =~ ^[0-9]+$ ]] && ((applied >= target)); then
		caught=$(($(now_ms) - t0))
		break
	fi
	sleep 0.005
done
[[ -n $caught ]] || die "the follower did not catch up within 120 s"
CATCHUP="$caught ms (applied index $target, $polls polls of its /metrics)"
log "(d) caught up in $caught ms"

echo "Flotilla scenarios:"
echo "  (c) leader killed (kill -9) -> first successful put: $LEADER_KILLED"
echo "  (d) follower stopped during $CATCHUP_KEYS puts ($(jq -r '.requests_per_s | round' "$WORK/catchup-put.json") puts/s) -> caught up after SIGCONT: $CATCHUP"
