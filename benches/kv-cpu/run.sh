#!/usr/bin/env bash
# kv-cpu: what a put (or a linearizable get) costs the members, in CPU.
# Starts a 3-member Flotilla cluster on loopback (fsync on), runs `flotilla
# bench kv` against it and prints throughput, latency, and the CPU the
# members and the load generator used per 1,000 requests (user + system time
# from /proc/PID/stat and /usr/bin/time). On a machine this small the members and the generator
# share the CPU, so CPU per request, not only requests per second, says
# whether a change made the write path cheaper.
#
# How to run (from anywhere; not run in CI):
#
#     bash benches/kv-cpu/run.sh                          # 3 runs of 40,000 puts
#     BINS="/tmp/a/flotilla /tmp/b/flotilla" bash benches/kv-cpu/run.sh   # A/B
#     MODE=leader bash benches/kv-cpu/run.sh             # every connection to the leader
#     LOAD=range bash benches/kv-cpu/run.sh              # linearizable gets of one key
#     LOAD=single bash benches/kv-cpu/run.sh             # one client's puts (its p50)
#     BINS="$B $B@inline" SLOW_DISK_US=2000 bash benches/kv-cpu/run.sh  # 2 ms fsyncs
#     NODE_FLAGS="--snapshot-count 1000000" bash benches/kv-cpu/run.sh  # member flags
#
# BINS compares binaries: the runs alternate between them (A B A B ...), so
# drifting machine speed hits both alike; single runs here move by ~10%.
# Without BINS it builds `flotilla` in release mode (CARGO_TARGET_DIR is
# honoured) and measures that.
#
# A BINS entry may end in @inline (or @always, @never): the members run with
# that `--fsync` (default always: the log's fsync beside the Raft loop;
# inline: the loop waits for it). SLOW_DISK_US=N makes every fsync of the
# members take N microseconds more (slow_fsync.c, built with cc and
# preloaded), as on a network volume. Each line then gives the share of
# the machine's CPU time nobody used during the load (idle=, iowait
# included): near 0 when the load is bound by the CPU, more when requests
# wait on the disk or on each other, so that a run's requests per second
# can be read against it. It ends with the members'
# log fsyncs during the run (mean duration, and how many per 1,000
# requests: a slow day's disk shows there; with @inline each is the whole
# persist, the write included) and the leader changes (a loop that stalls
# on its disk loses its followers).
#
# LOAD=single sets CLIENTS=1 CONNS=1 and TOTAL=5000 unless they are given:
# with one request in flight the CPU per request includes every wake-up a
# request costs, and the p50 is the single-client latency.
#
# Environment: BINS (''), RUNS (3), LOAD (put | range | single; put), TOTAL
# (40000), WARMUP (5000), CLIENTS (100), CONNS (10), MODE (spread | leader |
# followers; spread), SLOW_DISK_US (''), NODE_FLAGS ('': more flags for every
# member's `flotilla node`), BASE
# (24379: member i serves clients on BASE+i, peers on BASE+100+i, HTTP on
# BASE+200+i). Needs: bash, jq, curl, /usr/bin/time (GNU time), cargo.

set -euo pipefail

BINS=${BINS:-}
RUNS=${RUNS:-3}
LOAD=${LOAD:-put}
if [[ $LOAD == single ]]; then
	TOTAL=${TOTAL:-5000}
	WARMUP=${WARMUP:-500}
	CLIENTS=${CLIENTS:-1}
	CONNS=${CONNS:-1}
fi
TOTAL=${TOTAL:-40000}
WARMUP=${WARMUP:-5000}
CLIENTS=${CLIENTS:-100}
CONNS=${CONNS:-10}
MODE=${MODE:-spread}
NODE_FLAGS=${NODE_FLAGS:-}
read -ra NODE_FLAG_LIST <<<"$NODE_FLAGS"
BASE=${BASE:-24379}

LOG_TAG=kv-cpu
WORK_PREFIX=kv-cpu
STOP_WAIT_MS=5000
# shellcheck source=../lib/members.sh
source "$(dirname "$0")/../lib/members.sh"

[[ -x /usr/bin/time ]] || die "needs GNU time at /usr/bin/time (Debian package: time)"
case $MODE in spread | leader | followers) ;; *) die "MODE must be spread, leader or followers" ;; esac
case $LOAD in put | range | single) ;; *) die "LOAD must be put, range or single" ;; esac
if [[ -z $BINS ]]; then
	log "building flotilla (release)"
	(cd "$ROOT" && timeout 3600 cargo build --release -p flotilla-node --bin flotilla >&2)
	BINS=${CARGO_TARGET_DIR:-$ROOT/target}/release/flotilla
fi
for spec in $BINS; do
	[[ -f ${spec%@*} && -x ${spec%@*} ]] || die "no flotilla binary at ${spec%@*} (BINS takes binaries, not directories)"
	[[ $spec != *@* ]] || case ${spec##*@} in always | inline | never) ;; *) die "unknown --fsync in $spec (always, inline or never)" ;; esac
done
PRELOAD=()
if [[ -n ${SLOW_DISK_US:-} ]]; then
	command -v cc >/dev/null || die "SLOW_DISK_US needs a C compiler (cc)"
	cc -shared -fPIC -O2 -o "$WORK/slow_fsync.so" "$(dirname "$0")/slow_fsync.c" -ldl
	PRELOAD=(env "LD_PRELOAD=$WORK/slow_fsync.so" "SLOW_FSYNC_US=$SLOW_DISK_US")
fi

CLUSTER="n1=http://127.0.0.1:$((BASE + 100)),n2=http://127.0.0.1:$((BASE + 101)),n3=http://127.0.0.1:$((BASE + 102))"
client() { echo "http://127.0.0.1:$((BASE + $1))"; }

cpu_ticks() { # cpu_ticks PID: utime + stime, in clock ticks
	local f
	read -r -a f <"/proc/$1/stat"
	echo $((f[13] + f[14]))
}

machine_ticks() { # machine_ticks: every CPU's busy and idle clock ticks so far (user to steal; idle counts iowait)
	awk '$1 == "cpu" { idle = $5 + $6; busy = 0; for (i = 2; i <= 9; i++) busy += $i; print busy - idle, idle; exit }' /proc/stat
}

proposals() { # proposals I: the proposals member I has made (0 on a follower)
	curl -sf "http://127.0.0.1:$((BASE + 200 + $1))/metrics" |
		awk '$1 == "flotilla_raft_proposals_total" { print $2 }'
}

fsyncs() { # fsyncs I: seconds spent in, and count of, member I's log fsyncs (0 0 if it does not answer)
	{ curl -sf "http://127.0.0.1:$((BASE + 200 + $1))/metrics" || true; } |
		awk '$1 == "flotilla_raft_fsync_duration_seconds_sum" { s = $2 }
			$1 == "flotilla_raft_fsync_duration_seconds_count" { c = $2 }
			END { printf "%s %s", s + 0, c + 0 }'
}

one_run() { # one_run BIN[@FSYNC]: prints one result line
	local spec=$1 bin=${1%@*} fsync=always run=$WORK/run.$RANDOM i
	[[ $spec == *@* ]] && fsync=${spec##*@}
	mkdir -p "$run"
	local pids=()
	for i in 0 1 2; do
		"${PRELOAD[@]}" "$bin" node --name "n$((i + 1))" --data-dir "$run/n$i" --initial-cluster "$CLUSTER" \
			--listen-client-urls "$(client "$i")" \
			--listen-peer-urls "http://127.0.0.1:$((BASE + 100 + i))" \
			--listen-metrics-urls "http://127.0.0.1:$((BASE + 200 + i))" \
			--fsync "$fsync" "${NODE_FLAG_LIST[@]}" >"$run/n$i.log" 2>&1 &
		pids+=($!)
		PIDS[run$i]=$!
	done
	local all
	all="$(client 0),$(client 1),$(client 2)"
	local deadline=$(($(now_ms) + 60000)) ready=0
	while (($(now_ms) < deadline)); do
		for i in 0 1 2; do
			kill -0 "${pids[i]}" 2>/dev/null || die "member n$((i + 1)) exited before the cluster was ready"
		done
		ready=$("$bin" --endpoints "$all" cluster status --endpoints-only -w json 2>/dev/null |
			jq '[.members[] | select(.leader != null and .leader != 0)] | length' 2>/dev/null || echo 0)
		[[ $ready == 3 ]] && break
		sleep 0.2
	done
	[[ $ready == 3 ]] || die "the cluster did not become ready in 60 s"
	local load=(bench kv put --clients "$CLIENTS" --conns "$CONNS" --key-size 8 --val-size 256
		--key-space-size 100000 --no-progress -w json)
	"$bin" --endpoints "$all" "${load[@]}" --total "$WARMUP" >/dev/null
	[[ $LOAD != range ]] || load=(bench kv range bench-range-key --consistency l
		--clients "$CLIENTS" --conns "$CONNS" --val-size 256 --no-progress -w json)
	local endpoints=$all extra=()
	case $MODE in
	leader) extra=(--leader-only) ;;
	followers)
		endpoints=""
		for i in 0 1 2; do
			[[ $(proposals "$i") == 0 ]] && endpoints+="${endpoints:+,}$(client "$i")"
		done
		;;
	esac
	local before=() after=() leaders_before leaders_after
	leaders_before=$(cat "$run"/n?.log | grep -c "became leader" || true)
	local syncs_before=() syncs_after=()
	for i in 0 1 2; do
		before+=("$(cpu_ticks "${pids[$i]}")")
		syncs_before+=("$(fsyncs "$i")")
	done
	local machine_before machine_after
	machine_before=$(machine_ticks)
	/usr/bin/time -f '%U %S' -o "$run/client.time" \
		"$bin" --endpoints "$endpoints" "${load[@]}" --total "$TOTAL" "${extra[@]}" >"$run/out.json"
	for i in 0 1 2; do
		after+=("$(cpu_ticks "${pids[$i]}")")
		syncs_after+=("$(fsyncs "$i")")
	done
	machine_after=$(machine_ticks)
	leaders_after=$(cat "$run"/n?.log | grep -c "became leader" || true)
	# The share of the machine's CPU time nobody used during the load
	# (iowait counted as idle): near 0 when the load is bound by the CPU,
	# more when the requests wait on something else (the disk, each other).
	local idle
	idle=$(echo "$machine_before $machine_after" | awk '{ b = $3 - $1; i = $4 - $2; printf "%d", (b + i) ? i * 100 / (b + i) : 0 }')
	local hz members="" sum=0 role
	hz=$(getconf CLK_TCK)
	for i in 0 1 2; do
		local ms=$(((after[i] - before[i]) * 1000 * 1000 / hz / TOTAL))
		sum=$((sum + ms))
		role=f
		[[ $(proposals "$i") != 0 ]] && role=L
		members+=" n$((i + 1))($role)=$ms"
	done
	# The members' fsyncs during the load: the mean, and how many each
	# member made per 1,000 requests (the disk's share of a request).
	local disk
	disk=$(printf '%s\n' "${syncs_before[@]}" "${syncs_after[@]}" | awk -v t="$TOTAL" '
		NR <= 3 { s -= $1; c -= $2; next }
		{ s += $1; c += $2 }
		END { printf "fsync mean=%.2fms (%.1f per 1000 req per member)", c ? s * 1000 / c : 0, c * 1000 / 3 / t }')
	local client_ms
	client_ms=$(awk -v t="$TOTAL" '{ printf "%d", ($1 + $2) * 1000 * 1000 / t }' "$run/client.time")
	jq -r --arg bin "$spec" --arg changes "$((leaders_after - leaders_before))" --arg la "$(cut -d' ' -f1-3 /proc/loadavg)" --arg members "$members" --arg sum "$sum" --arg client "$client_ms" --arg disk "$disk" --arg idle "$idle" \
		'"\($bin | split("/") | .[-2:] | join("/"))  load \($la)  req/s=\(.requests_per_s | floor)  p50=\(.latency_ms.p50)ms  p99=\(.latency_ms.p99)ms  errors=\(.errors)  member CPU ms/1000 req=\($sum) [\($members | ltrimstr(" "))]  generator=\($client)  idle=\($idle)%  \($disk)  leader changes=\($changes)"' \
		"$run/out.json"
	kill -TERM "${pids[@]}" 2>/dev/null || true
	wait "${pids[@]}" 2>/dev/null || true
	for i in 0 1 2; do unset "PIDS[run$i]"; done
	rm -rf "$run"
}

log "$RUNS run(s) of $TOTAL $LOAD requests ($MODE), $CLIENTS clients over $CONNS connections, 8 B keys, 256 B values${NODE_FLAGS:+, members with $NODE_FLAGS}"
for ((r = 1; r <= RUNS; r++)); do
	for spec in $BINS; do one_run "$spec"; done
done
