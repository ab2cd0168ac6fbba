#!/usr/bin/env bash
# sort -S 128M under upagerctl with a 32M budget, on 100 MB of lines: the
# output must be identical to plain sort's. sort closes stderr at exit (no
# statistics report), so the heap's resident size is sampled instead: it
# must stay within the budget while plain sort's peak is 4x the budget.
. "$(dirname "$0")/lib.sh"
need sort base64 cmp python3
need_uffd
here=$(dirname "$0")
head -c 75M /dev/urandom | base64 -w 76 >"$WORK/in.txt"
LC_ALL=C sort -S 128M --parallel=1 "$WORK/in.txt" >"$WORK/plain.txt" &
read -r plain_hwm _ < <(python3 "$here/procwatch.py" $!)
wait $! || fail "plain sort failed"
LC_ALL=C "$UPAGERCTL" run --budget 32M -- \
	sort -S 128M --parallel=1 "$WORK/in.txt" >"$WORK/paged.txt" \
	2>"$WORK/err.txt" &
pid=$!
PIDS+=($pid)
read -r _ heap < <(python3 "$here/procwatch.py" $pid)
wait $pid || fail "sort failed: $(tail -3 "$WORK/err.txt")"
cmp "$WORK/plain.txt" "$WORK/paged.txt" || fail "outputs differ"
log "plain sort peak $((plain_hwm >> 10)) MiB; paged heap peak $((heap >> 10)) MiB"
((plain_hwm >= 4 * 32 * 1024)) || fail "footprint below 4x the budget"
((heap <= 36 * 1024)) || fail "heap resident $((heap >> 10)) MiB > budget"
log "PASS: $(wc -l <"$WORK/in.txt") lines sorted identically under 32M"
