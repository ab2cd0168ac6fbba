#!/usr/bin/env bash
# sort -S 128M under upagerctl with a 32M budget, on 100 MB of lines: the
# output must be identical to plain sort's.
. "$(dirname "$0")/lib.sh"
need sort base64 cmp
need_uffd
head -c 75M /dev/urandom | base64 -w 76 >"$WORK/in.txt"
LC_ALL=C sort -S 128M --parallel=1 "$WORK/in.txt" >"$WORK/plain.txt"
LC_ALL=C UPG_STATS=1 "$UPAGERCTL" run --budget 32M -- \
	sort -S 128M --parallel=1 "$WORK/in.txt" >"$WORK/paged.txt" \
	2>"$WORK/stats.txt" || fail "sort failed: $(tail -3 "$WORK/stats.txt")"
cmp "$WORK/plain.txt" "$WORK/paged.txt" || fail "outputs differ"
evicted=$(stat_of "$WORK/stats.txt" evict_pages)
((evicted > 8192)) || fail "the budget was never exceeded ($evicted evicted)"
log "PASS: $(wc -l <"$WORK/in.txt") lines sorted identically, $evicted pages evicted"
