# Shared by the integration tests (meson test --suite integ): real programs
# from Debian's packages under `upagerctl run` with a budget a quarter of
# their footprint. Exit 0 pass, 1 fail, 77 skip (meson's convention).
set -euo pipefail

UPAGERCTL=${UPAGERCTL:?set by meson}
NAME=$(basename "$0" .sh)
WORK=$(mktemp -d "/tmp/upager-integ-$NAME.XXXXXX")
PIDS=()

log() { printf '%s: %s\n' "$NAME" "$*" >&2; }
skip() { log "SKIP: $*"; exit 77; }
fail() { log "FAIL: $*"; exit 1; }

# Kill what we started and remove the work directory on every exit path.
cleanup() {
	local p
	for p in "${PIDS[@]}"; do
		kill -9 "$p" 2>/dev/null || true
		wait "$p" 2>/dev/null || true
	done
	rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

need() {
	local p
	for p in "$@"; do
		command -v "$p" >/dev/null ||
			skip "$p is not installed (apt-get install ${PKG:-$p})"
	done
}

# userfaultfd must be usable, or the program would run unmanaged.
need_uffd() {
	local out
	out=$("$UPAGERCTL" run --budget 64M -- /bin/true 2>&1) || true
	case $out in
	*"cannot page"*) skip "runtime refused: $out" ;;
	esac
}

# A free TCP port on 127.0.0.1.
free_port() {
	python3 - <<'PY'
import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
PY
}

# Wait up to $2 seconds for "$1" (a command) to succeed.
wait_for() {
	local i
	for ((i = 0; i < $2 * 10; i++)); do
		if eval "$1" >/dev/null 2>&1; then
			return 0
		fi
		sleep 0.1
	done
	return 1
}

# The statistics line "name value" from an UPG_STATS=1 report in file $1.
stat_of() {
	awk -v n="$2" '$1 == n { v = $2 } END { print v + 0 }' "$1"
}
