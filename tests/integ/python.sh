#!/usr/bin/env bash
# /usr/bin/python3 with PYTHONMALLOC=malloc (every object through malloc)
# under upagerctl with a 64M budget, on a script that builds ~250 MB of
# dicts, lists and strings: its result must equal plain python's.
. "$(dirname "$0")/lib.sh"
PKG=python3
[[ -x /usr/bin/python3 ]] || skip "/usr/bin/python3 is not installed"
need_uffd
cat >"$WORK/heavy.py" <<'PY'
import hashlib
d = {}
for i in range(1_200_000):
    d[f"key-{i}"] = [i, str(i) * 8, (i * 7919) % 1000003]
total = 0
for k, v in d.items():
    total = (total * 31 + v[2] + len(v[1])) % (1 << 61)
words = sorted(str(i * 2654435761 % 1000000007) for i in range(600_000))
h = hashlib.sha256("".join(words[::97]).encode()).hexdigest()
del d
print(total, len(words), h)
PY
/usr/bin/python3 "$WORK/heavy.py" >"$WORK/plain.txt"
PYTHONMALLOC=malloc UPG_STATS=1 "$UPAGERCTL" run --budget 64M -- \
	/usr/bin/python3 "$WORK/heavy.py" >"$WORK/paged.txt" \
	2>"$WORK/stats.txt" || fail "python failed: $(tail -3 "$WORK/stats.txt")"
cmp "$WORK/plain.txt" "$WORK/paged.txt" || fail "results differ"
evicted=$(stat_of "$WORK/stats.txt" evict_pages)
((evicted > 16384)) || fail "the budget was never exceeded ($evicted evicted)"
log "PASS: same result ($(cat "$WORK/paged.txt")), $evicted pages evicted"
