#!/usr/bin/env bash
# memcached under upagerctl with a 64M budget: 256 MB of known values are
# stored (memcached's slab pages come from malloc), then every value is read
# back and compared.
. "$(dirname "$0")/lib.sh"
PKG=memcached
need memcached python3
need_uffd
here=$(dirname "$0")
port=$(free_port)

UPG_STATS=1 "$UPAGERCTL" run --budget 64M -- memcached -l 127.0.0.1 \
	-p "$port" -U 0 -m 1024 -t 2 -u "$(id -un)" >"$WORK/server.log" 2>&1 &
PIDS+=($!)
wait_for "python3 -c 'import socket; socket.create_connection((\"127.0.0.1\", $port))'" 30 ||
	fail "memcached did not start: $(tail -5 "$WORK/server.log")"
python3 "$here/kv_check.py" memcached load "$port" 250000 1024 >&2 ||
	fail "load failed"
python3 "$here/kv_check.py" memcached verify "$port" 250000 1024 >&2 ||
	fail "values differ"
kill -TERM "${PIDS[0]}"
wait "${PIDS[0]}" 2>/dev/null || true
PIDS=()
evicted=$(stat_of "$WORK/server.log" evict_pages)
log "evicted pages: $evicted"
((evicted > 16384)) || fail "the budget was never exceeded ($evicted pages evicted)"
log "PASS: 250000 values of 1 KiB verified under a 64M budget"
