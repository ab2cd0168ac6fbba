#!/usr/bin/env bash
# redis-server under upagerctl with a 64M budget: redis-benchmark fills a
# dataset over four times the budget, 20 MB of known values are checked,
# BGSAVE forks a child that writes the whole heap (evicted pages included),
# redis-check-rdb checks the dump, and a fresh server reloads it and
# serves the same values.
. "$(dirname "$0")/lib.sh"
PKG="redis-server redis-tools"
need redis-server redis-benchmark redis-cli redis-check-rdb python3
need_uffd
here=$(dirname "$0")
BUDGET=64M
port=$(free_port)

start_server() {
	UPG_STATS=1 "$UPAGERCTL" run --budget "$BUDGET" -- \
		redis-server --port "$port" --bind 127.0.0.1 --save '' \
		--appendonly no --dir "$WORK" --dbfilename dump.rdb \
		--protected-mode no --daemonize no \
		>"$WORK/server$1.log" 2>&1 &
	PIDS+=($!)
	wait_for "redis-cli -p $port ping | grep -q PONG" 30 ||
		fail "server did not start: $(tail -5 "$WORK/server$1.log")"
}

info() {
	redis-cli -p "$port" info "$1" | tr -d '\r' |
		awk -F: -v k="$2" '$1 == k { print $2 }'
}

start_server 1
redis-benchmark -p "$port" -t set -n 350000 -r 1000000 -d 1000 -P 16 -q \
	>"$WORK/bench.txt" 2>&1 || fail "redis-benchmark: $(cat "$WORK/bench.txt")"
log "$(tr '\r' '\n' <"$WORK/bench.txt" | grep -a 'requests per second' | tail -1)"
python3 "$here/kv_check.py" redis load "$port" 10000 2000 >/dev/null
used=$(info memory used_memory)
keys=$(redis-cli -p "$port" dbsize)
log "dataset: $keys keys, used_memory $((used >> 20)) MiB, budget $BUDGET"
((used > 4 * 64 * 1048576)) || fail "dataset only $((used >> 20)) MiB"
python3 "$here/kv_check.py" redis verify "$port" 10000 2000 ||
	fail "values differ before BGSAVE"

redis-cli -p "$port" bgsave >/dev/null
wait_for "[ \"\$(info persistence rdb_bgsave_in_progress)\" = 0 ]" 300 ||
	fail "BGSAVE did not finish"
[[ $(info persistence rdb_last_bgsave_status) == ok ]] ||
	fail "BGSAVE failed: $(tail -5 "$WORK/server1.log")"
python3 "$here/kv_check.py" redis verify "$port" 10000 2000 ||
	fail "values differ after BGSAVE"
redis-check-rdb "$WORK/dump.rdb" >"$WORK/check.txt" 2>&1 ||
	fail "redis-check-rdb: $(tail -5 "$WORK/check.txt")"
grep -q "RDB looks OK" "$WORK/check.txt" || fail "$(cat "$WORK/check.txt")"

redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || true
wait "${PIDS[0]}" 2>/dev/null || true
grep -E "evict_pages|fault_pool " "$WORK/server1.log" | tr -s ' ' >&2 || true
start_server 2
[[ $(redis-cli -p "$port" dbsize) == "$keys" ]] ||
	fail "reload: $(redis-cli -p "$port" dbsize) keys, expected $keys"
python3 "$here/kv_check.py" redis verify "$port" 10000 2000 ||
	fail "values differ after reload"
log "PASS: $keys keys saved by a forked child, checked and reloaded"
