#!/usr/bin/env bash
# memory: resident memory of each member of a 3-node Flotilla cluster holding
# KEYS distinct keys, against the raw bytes it stores (issue #4's target: RSS
# at most 2x the sum of key and value sizes). Prints the figures; asserts
# nothing.
#
# How to run (from anywhere; not run in CI):
#
#     bash benches/memory/run.sh                  # 1,000,000 keys x 256 B
#     KEYS=100000 bash benches/memory/run.sh      # a quicker run
#
# Time on the 2-core development machine: the release build (about 4 min
# cold, seconds when up to date), then about 2 minutes: 1,000,000 puts with
# fsync on (~9,000/s), settling, and the restart of one member.
#
# What it does: builds `flotilla` in release mode (CARGO_TARGET_DIR is
# honoured), starts 3 members on loopback with their data in a temp dir
# (fsync on, default snapshot and compaction settings), writes KEYS distinct
# keys with `flotilla bench kv put --sequential-keys` (each key once), waits
# until every member has applied everything the leader committed, lets them
# settle SETTLE_S seconds, then reads VmRSS (resident now) and VmHWM (peak
# resident) from /proc/PID/status of each member. Raw bytes = keys stored
# x (KEY_SIZE + VAL_SIZE), the keys counted in the store (a put the client
# saw fail may have been applied); the ratios are RSS / raw and peak / raw.
# The members run without the broker (--broker-enabled=false): it would
# add its own keys, leases and traffic to the KV being measured.
# The members' RSS right after start (empty store) is printed too, for the
# fixed cost of a process. With RESTART=1 (the default) a follower is then
# stopped, restarted from its data directory (snapshot + log) and measured
# again once it has caught up. With SAVE=1 (the default) a backup of a
# follower is then taken (`etcdctl snapshot save`, or `flotilla snapshot
# save` without etcdctl), and that member's peak resident memory during it
# is printed: its VmHWM is reset first (`echo 5 > /proc/PID/clear_refs`).
# Everything is stopped and removed on exit, also on Ctrl-C or failure.
#
# Reading the figures: RSS includes the Raft log since the last snapshot
# (up to --snapshot-count entries, 100,000 by default, or 32 MiB once
# --snapshot-min-log-percent defers the count; the "log entries"
# column, from the newest snapshot file's name) and memory the allocator
# keeps after freeing; the peak is reached while a snapshot is
# taken, when the encoded store is one buffer beside the store itself.
#
# Environment: FLOTILLA_BIN (a flotilla binary to run instead of building
# one, e.g. an older build for an A/B), KEYS (1000000), KEY_SIZE (8; at most 8 bytes carry the key
# number, so 8 is enough for distinct keys), VAL_SIZE (256), CLIENTS (100),
# CONNS (10), FSYNC (always), SETTLE_S (5), RESTART (1), SAVE (1), SNAPSHOT_COUNT (the
# node's default when empty), ELECTION_TICKS (100: a 1 s election timeout, so a
# busy shared machine does not change leaders mid-run; failover speed does
# not matter here), BASE (25379): member i listens for clients on BASE+i,
# for peers on BASE+100+i, HTTP on BASE+200+i.
# Needs: bash, jq, timeout (coreutils), cargo, Linux /proc.

set -euo pipefail

KEYS=${KEYS:-1000000}
KEY_SIZE=${KEY_SIZE:-8}
VAL_SIZE=${VAL_SIZE:-256}
CLIENTS=${CLIENTS:-100}
CONNS=${CONNS:-10}
FSYNC=${FSYNC:-always}
SETTLE_S=${SETTLE_S:-5}
RESTART=${RESTART:-1}
SAVE=${SAVE:-1}
SNAPSHOT_COUNT=${SNAPSHOT_COUNT:-}
ELECTION_TICKS=${ELECTION_TICKS:-100}
BASE=${BASE:-25379}

LOG_TAG=memory
WORK_PREFIX=flotilla-memory
# shellcheck source=../lib/members.sh
source "$(dirname "$0")/../lib/members.sh"
[[ -r /proc/self/status ]] || die "needs Linux /proc"
for v in KEYS KEY_SIZE VAL_SIZE CLIENTS CONNS SETTLE_S RESTART SAVE ELECTION_TICKS BASE; do
	[[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a non-negative integer, not '${!v}'"
done
((KEYS > 0 && KEY_SIZE > 0)) || die "KEYS and KEY_SIZE must be positive"
((KEY_SIZE >= 8 || KEYS <= 1 << (8 * KEY_SIZE))) ||
	die "$KEYS distinct keys do not fit in $KEY_SIZE bytes"
[[ -z $SNAPSHOT_COUNT || $SNAPSHOT_COUNT =~ ^[1-9][0-9]*$ ]] ||
	die "SNAPSHOT_COUNT must be a positive integer"

BIN=$(flotilla_bin)
[[ -x $BIN ]] || die "no binary at $BIN"

EPS="http://127.0.0.1:$BASE,http://127.0.0.1:$((BASE + 1)),http://127.0.0.1:$((BASE + 2))"
CLUSTER=""
for i in 0 1 2; do
	CLUSTER+="${CLUSTER:+,}n$((i + 1))=http://127.0.0.1:$((BASE + 100 + i))"
done
# No broker: it registers one key per member (and again whenever its
# 1 s lease lapses under load), which the KV figures must not include.
EXTRA=(--election-ticks "$ELECTION_TICKS" --broker-enabled=false)
[[ -z $SNAPSHOT_COUNT ]] || EXTRA+=(--snapshot-count "$SNAPSHOT_COUNT")

in_use() { # in_use PORT: something on loopback accepts connections there
	(exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}
for port in $BASE $((BASE + 1)) $((BASE + 2)) $((BASE + 100)) $((BASE + 101)) $((BASE + 102)) \
	$((BASE + 200)) $((BASE + 201)) $((BASE + 202)); do
	! in_use "$port" || die "port $port is in use; choose another BASE"
done
start_member() { # start_member I: member I (0..2), on its data directory
	local i=$1 name=n$(($1 + 1))
	"$BIN" node --name "$name" --data-dir "$WORK/$name" --initial-cluster "$CLUSTER" \
		--listen-client-urls "http://127.0.0.1:$((BASE + i))" \
		--listen-peer-urls "http://127.0.0.1:$((BASE + 100 + i))" \
		--listen-metrics-urls "http://127.0.0.1:$((BASE + 200 + i))" \
		--fsync "$FSYNC" "${EXTRA[@]}" >>"$WORK/$name.log" 2>&1 &
	PIDS[$name]=$!
}
for i in 0 1 2; do start_member "$i"; done

status() { # `flotilla cluster status -w json` over every member, or nothing
	timeout 10 "$BIN" --endpoints "$EPS" cluster status --endpoints-only -w json 2>/dev/null || true
}

deadline=$(($(now_ms) + 60000))
until [[ $(status | jq '[.members[] | select(.leader != null and .leader != 0)] | length' 2>/dev/null) == 3 ]]; do
	(($(now_ms) < deadline)) || die "the cluster did not become ready in 60 s"
	for name in n1 n2 n3; do
		kill -0 "${PIDS[$name]}" 2>/dev/null || die "member $name exited"
	done
	sleep 0.2
done
log "cluster ready"

kib() { # kib PID FIELD: a /proc/PID/status field (VmRSS, VmHWM) in KiB
	awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status"
}
declare -A START_RSS=()
for name in n1 n2 n3; do START_RSS[$name]=$(kib "${PIDS[$name]}" VmRSS); done

log "writing $KEYS keys ($KEY_SIZE B keys, $VAL_SIZE B values, $CLIENTS clients)"
t0=$(now_ms)
timeout 7200 "$BIN" --endpoints "$EPS" bench kv put --clients "$CLIENTS" --conns "$CONNS" \
	--total "$KEYS" --key-size "$KEY_SIZE" --val-size "$VAL_SIZE" --sequential-keys \
	--key-space-size "$KEYS" -w json >"$WORK/put.json" ||
	die "bench kv put failed: $(cat "$WORK/put.json")"
write_ms=$(($(now_ms) - t0))
read -r ok errors rps < <(jq -r '"\(.ok) \(.errors) \(.requests_per_s | round)"' "$WORK/put.json")
log "$ok puts answered ok, $errors failed, in $write_ms ms ($rps puts/s)"
((errors == 0)) || log "failures: $(jq -c .error_samples "$WORK/put.json")"

# How many keys the store holds: a put that failed at the client may still
# have been applied, so count the keys in the store (a linearizable count,
# after the marker's put). Not from the revision: every write of anyone
# spends one (a broker's registration did, when members ran one), and the
# bench's keys are the only other keys. The marker is written last so that
# the wait below covers every put.
MARKER=memory-bench-marker
marker_rev=$(timeout 60 "$BIN" --endpoints "$EPS" -w json kv put "$MARKER" x | jq '.header.revision')
[[ $marker_rev =~ ^[0-9]+$ ]] || die "cannot write the marker key"
all_keys=$(timeout 120 "$BIN" --endpoints "$EPS" kv get "" --from-key --count-only)
[[ $all_keys =~ ^[0-9]+$ ]] || die "cannot count the keys: $all_keys"
stored=$((all_keys - 1))
((stored >= ok && stored <= KEYS)) ||
	die "the store holds $stored keys besides the marker, the client saw $ok of $KEYS puts succeed"
((marker_rev - 2 == stored)) ||
	log "note: $((marker_rev - 2 - stored)) revisions went to writes other than the bench's keys"
log "the store holds $stored of the $KEYS keys"

# Wait until every member has applied what the leader had committed once
# the last put (and the marker) was answered.
wait_applied() {
	target=$(status | jq '[.members[] | select(.is_leader == true) | .raft_index] | first // empty')
	[[ $target =~ ^[0-9]+$ ]] || die "cannot read the leader's commit index"
	local deadline=$(($(now_ms) + 300000))
	until [[ $(status | jq --argjson t "$target" '[.members[] | select(.raft_applied_index >= $t)] | length' 2>/dev/null) == 3 ]]; do
		(($(now_ms) < deadline)) || die "the members did not apply index $target within 300 s"
		sleep 0.5
	done
	log "every member applied index $target; settling ${SETTLE_S} s"
	sleep "$SETTLE_S"
}
wait_applied

roles=$(status)
raw=$((stored * (KEY_SIZE + VAL_SIZE) + ${#MARKER} + 1))
mib() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1048576 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }

applied=$target
worst=0
rows=$'member\trole\tlog entries\tRSS at start MiB\tRSS MiB\tpeak (VmHWM) MiB\tRSS/raw\tpeak/raw\n'
log_entries() { # log_entries NAME: entries applied since the member's newest snapshot
	local newest
	newest=$(find "$WORK/$1/snapshot" -name '*.snap' -printf '%f\n' | sort | tail -n 1)
	echo $((target - 10#${newest%%-*}))
}
row() { # row NAME LABEL ROLE: one member's figures, appended to rows
	local pid=${PIDS[$1]} rss hwm
	rss=$(($(kib "$pid" VmRSS) * 1024))
	hwm=$(($(kib "$pid" VmHWM) * 1024))
	local at_start=-
	[[ -z ${START_RSS[$1]:-} ]] || at_start=$(mib $((START_RSS[$1] * 1024)))
	rows+=$(printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s' "$2" "$3" "$(log_entries "$1")" "$at_start" \
		"$(mib "$rss")" "$(mib "$hwm")" "$(ratio "$rss" "$raw")" "$(ratio "$hwm" "$raw")")$'\n'
	if ((rss > worst)); then worst=$rss; fi
}
role_of() { # role_of I: leader or follower, from the last status
	jq -r --arg ep "http://127.0.0.1:$((BASE + $1))" \
		'.members[] | select(.endpoint == $ep) | if .is_leader == true then "leader" else "follower" end' <<<"$roles"
}
follower=
for i in 0 1 2; do
	role=$(role_of "$i")
	[[ $role == follower && -z $follower ]] && follower=$i
	row "n$((i + 1))" "n$((i + 1))" "${role:-?}"
done

if [[ $RESTART == 1 && -n $follower ]]; then
	name=n$((follower + 1))
	log "restarting follower $name from its data directory"
	kill -TERM "${PIDS[$name]}"
	deadline=$(($(now_ms) + 30000))
	while kill -0 "${PIDS[$name]}" 2>/dev/null && (($(now_ms) < deadline)); do sleep 0.1; done
	kill -KILL "${PIDS[$name]}" 2>/dev/null || true
	wait "${PIDS[$name]}" 2>/dev/null || true
	start_member "$follower"
	unset 'START_RSS[$name]'
	wait_applied
	roles=$(status)
	row "$name" "$name restarted" "$(role_of "$follower")"
fi
save_line=
if [[ $SAVE == 1 && -n $follower ]]; then
	name=n$((follower + 1))
	pid=${PIDS[$name]}
	ep="http://127.0.0.1:$((BASE + follower))"
	log "saving a backup of $name (its peak RSS reset first)"
	echo 5 >"/proc/$pid/clear_refs" || die "cannot reset $name's VmHWM"
	before=$(($(kib "$pid" VmRSS) * 1024))
	t0=$(now_ms)
	if command -v etcdctl >/dev/null; then
		ETCDCTL_API=3 timeout 600 etcdctl --endpoints "$ep" snapshot save "$WORK/backup.db" >"$WORK/save.log" 2>&1 ||
			die "etcdctl snapshot save failed: $(tail -n 5 "$WORK/save.log")"
		tool=etcdctl
	else
		timeout 600 "$BIN" --endpoints "$ep" snapshot save "$WORK/backup.db" >"$WORK/save.log" 2>&1 ||
			die "flotilla snapshot save failed: $(tail -n 5 "$WORK/save.log")"
		tool=flotilla
	fi
	save_ms=$(($(now_ms) - t0))
	hwm=$(($(kib "$pid" VmHWM) * 1024))
	size=$(stat -c %s "$WORK/backup.db")
	save_line="backup of $name ($tool snapshot save): $(mib "$size") MiB file in $save_ms ms; RSS before $(mib "$before") MiB, peak during $(mib "$hwm") MiB (+$(mib $((hwm - before))) MiB)"
	rm -f "$WORK/backup.db"
fi
echo
echo "memory: 3 members on loopback, fsync $FSYNC; $stored keys x ($KEY_SIZE B key + $VAL_SIZE B value)"
echo "raw key+value bytes: $raw ($(mib "$raw") MiB); written in $write_ms ms ($rps puts/s); applied index $applied"
echo "target (issue #4): RSS / raw <= 2.0 on every member"
printf '%s' "$rows" | column -t -s $'\t'
echo "worst RSS/raw: $(ratio "$worst" "$raw")"
[[ -z $save_line ]] || echo "$save_line"
# The Raft snapshots the members took: encoding, and writing what it did not
# overlap with (from each member's "took a snapshot" log lines).
for name in n1 n2 n3; do
	sed 's/\x1b\[[0-9;]*m//g' "$WORK/$name.log" | grep 'took a snapshot' |
		sed -E 's/.*bytes=([0-9]+).*encode_ms=([0-9]+).*write_ms=([0-9]+).*/\1 \2 \3/' |
		awk -v n="$name" '{ c++; b = $1; if ($2 > e) e = $2; if ($3 > w) w = $3; t += $2 + $3 }
			END { if (c) printf "%s: %d snapshots, last %.1f MiB; encode max %d ms, write max %d ms, encode+write mean %.0f ms\n", n, c, b / 1048576, e, w, t / c }' ||
		true
done
