#!/usr/bin/env bash
# sqlite3 with a 400 MB page cache (malloc'd) under upagerctl with a 64M
# budget: 250 MB of rows, PRAGMA integrity_check, and aggregates that must
# match what the rows were built from.
. "$(dirname "$0")/lib.sh"
PKG=sqlite3
need sqlite3
need_uffd
cat >"$WORK/load.sql" <<'SQL'
PRAGMA cache_size = -400000;
PRAGMA journal_mode = OFF;
PRAGMA synchronous = OFF;
CREATE TABLE t(x INTEGER PRIMARY KEY, b TEXT);
WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 200000)
INSERT INTO t SELECT x, printf('%.1200c', char(65 + x % 26)) FROM c;
CREATE INDEX tb ON t(b, x);
PRAGMA integrity_check;
SELECT count(*), sum(x), sum(length(b)), count(DISTINCT b) FROM t;
SELECT b FROM t WHERE x = 12345;
SQL
UPG_STATS=1 "$UPAGERCTL" run --budget 64M -- sqlite3 "$WORK/db.sqlite" \
	<"$WORK/load.sql" >"$WORK/out.txt" 2>"$WORK/stats.txt" ||
	fail "sqlite3 failed: $(tail -3 "$WORK/stats.txt")"
want="off
ok
200000|20000100000|240000000|26
$(printf 'V%.0s' $(seq 1200))" # journal_mode's answer, then 12345 % 26 = 21
[[ $(cat "$WORK/out.txt") == "$want" ]] ||
	fail "unexpected output: $(head -c 300 "$WORK/out.txt")"
evicted=$(stat_of "$WORK/stats.txt" evict_pages)
((evicted > 16384)) || fail "the budget was never exceeded ($evicted evicted)"
log "PASS: integrity_check ok, aggregates right, $evicted pages evicted"
