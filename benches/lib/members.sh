# Shared by the benchmark scripts that run members as background processes:
# logging, a scratch folder, and a cleanup that stops every member on exit
# (also on Ctrl-C or failure) and shows their logs when the run failed.
#
# Source it after setting LOG_TAG (the log prefix), WORK_PREFIX (the scratch
# folder's name) and optionally STOP_WAIT_MS (how long members get to stop
# after SIGTERM before SIGKILL; default 10000). It sets ROOT, WORK and PIDS
# (member name -> pid: add every member started). KEEP_WORK=1 keeps the
# scratch folder (data and member logs) for a look afterwards.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/$WORK_PREFIX.XXXXXX")
declare -A PIDS=()

log() { printf '[%s] %s\n' "$LOG_TAG" "$*" >&2; }
die() {
	log "error: $*"
	exit 1
}
now_ms() { echo $(($(date +%s%N) / 1000000)); }

cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	for name in "${!PIDS[@]}"; do
		# A stopped (SIGSTOP) member must run again to handle SIGTERM.
		kill -CONT "${PIDS[$name]}" 2>/dev/null || true
		kill -TERM "${PIDS[$name]}" 2>/dev/null || true
	done
	local deadline=$(($(now_ms) + ${STOP_WAIT_MS:-10000}))
	for name in "${!PIDS[@]}"; do
		while kill -0 "${PIDS[$name]}" 2>/dev/null && (($(now_ms) < deadline)); do
			sleep 0.1
		done
		kill -KILL "${PIDS[$name]}" 2>/dev/null || true
		wait "${PIDS[$name]}" 2>/dev/null || true
	done
	if ((rc != 0)); then
		# Scripts keep logs in $WORK or in one directory per run under it.
		if compgen -G "$WORK/*.log" >/dev/null || compgen -G "$WORK/*/*.log" >/dev/null; then
			log "failed (exit $rc); member logs follow"
			tail -n 20 "$WORK"/*.log "$WORK"/*/*.log >&2 2>/dev/null || true
		else
			log "failed (exit $rc)"
		fi
	fi
	if [[ ${KEEP_WORK:-0} == 1 ]]; then
		log "kept the members' data and logs in $WORK (KEEP_WORK=1)"
	else
		rm -rf "$WORK"
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

command -v jq >/dev/null || die "jq is needed (apt-get install -y jq)"
command -v curl >/dev/null || die "curl is needed (apt-get install -y curl)"

flotilla_bin() { # prints the flotilla binary to run: $FLOTILLA_BIN, or a fresh release build
	if [[ -n ${FLOTILLA_BIN:-} ]]; then
		echo "$FLOTILLA_BIN"
		return
	fi
	log "building flotilla (release)"
	(cd "$ROOT" && timeout 3600 cargo build --release -p flotilla-node --bin flotilla >&2)
	echo "${CARGO_TARGET_DIR:-$ROOT/target}/release/flotilla"
}
