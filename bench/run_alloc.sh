#!/usr/bin/env bash
# Allocator benchmarks, glibc malloc against libupager-preload.so side by
# side (runs alternate, so both see the same machine load):
#
#   bench/run_alloc.sh [results-file] [repetitions]
#
# 1. No oversubscription (UPG_BUDGET=4G, footprint ~10 MB): bench_alloc
#    larson and xmalloc, and redis-benchmark SET/GET against redis-server.
# 2. Oversubscription: larson with a ~200 MB footprint under a 48M budget,
#    redis with a ~330 MB dataset under 64M; throughput and fault counts.
#
# Writes JSON lines to the results file (default results/alloc.jsonl) and
# prints the ratios. BUILD_DIR overrides the build directory.
set -euo pipefail

src=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD_DIR:-$src/build}
out=${1:-results/alloc.jsonl}
reps=${2:-3}
lib=$build/lib/libupager-preload.so
bench=$build/bench/bench_alloc
ctl=$build/daemon/upagerctl
work=$(mktemp -d /tmp/upager-bench.XXXXXX)
pids=()

cleanup() {
	local p
	for p in "${pids[@]}"; do
		kill -9 "$p" 2>/dev/null || true
	done
	rm -rf "$work"
}
trap cleanup EXIT INT TERM

ninja -C "$build" >&2
mkdir -p "$(dirname "$out")"
: >"$out"

# Fault counters from an UPG_STATS=1 report, as JSON fields.
faults() {
	awk '$1 ~ /^(fault_zero|fault_pool|evict_pages|discard_pages)$/ {
		printf ",\"%s\":%s", $1, $2 }' "$1"
}

# run_bench MODE BUDGET ARGS...: one bench_alloc run, tagged.
run_bench() {
	local mode=$1 budget=$2 line
	shift 2
	if [[ $mode == glibc ]]; then
		line=$("$bench" "$@")
	else
		line=$(LD_PRELOAD=$lib UPG_BUDGET=$budget UPG_STATS=1 \
			"$bench" "$@" 2>"$work/stats")
		line=${line%\}}$(faults "$work/stats")"}"
	fi
	echo "${line%\}},\"mode\":\"$mode\",\"budget\":\"$budget\"}" | tee -a "$out"
}

redis_port() {
	python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# run_redis MODE BUDGET BENCH-ARGS...: redis-benchmark against a fresh
# server (plain, or under upagerctl), one JSON line per test.
run_redis() {
	local mode=$1 budget=$2 port pre=() rps
	shift 2
	port=$(redis_port)
	[[ $mode == upager ]] && pre=(env UPG_STATS=1 "$ctl" run --budget "$budget" --)
	"${pre[@]}" redis-server --port "$port" --save '' --appendonly no \
		--daemonize no >"$work/redis.log" 2>&1 &
	pids+=($!)
	for _ in $(seq 100); do
		redis-cli -p "$port" ping 2>/dev/null | grep -q PONG && break
		sleep 0.1
	done
	redis-benchmark -p "$port" --csv "$@" >"$work/rb.csv" 2>/dev/null
	redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || true
	wait "${pids[-1]}" 2>/dev/null || true
	tail -n +2 "$work/rb.csv" | tr -d '"' | while IFS=, read -r t r _; do
		echo "{\"bench\":\"redis-$t\",\"mode\":\"$mode\",\"budget\":\"$budget\",\"ops_per_sec\":$r$(faults "$work/redis.log")}"
	done | tee -a "$out"
}

for ((i = 0; i < reps; i++)); do
	for m in glibc upager; do
		run_bench $m 4G larson --threads 2 --seconds 3
		run_bench $m 4G xmalloc --threads 2 --seconds 3
	done
done
if command -v redis-server >/dev/null && command -v redis-benchmark >/dev/null; then
	for ((i = 0; i < reps; i++)); do
		for m in glibc upager; do
			run_redis $m 4G -t set,get -n 200000 -r 100000 -d 100 -P 16
		done
	done
fi
for m in glibc upager; do
	run_bench $m 48M larson --threads 2 --seconds 5 --slots 100000 --max-size 2000
done
if command -v redis-server >/dev/null; then
	for m in glibc upager; do
		run_redis $m 64M -t set,get -n 350000 -r 1000000 -d 1000 -P 16
	done
fi

python3 - "$out" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
keys = sorted({(r["bench"], r["budget"]) for r in rows})
for bench, budget in keys:
    by = {m: [r["ops_per_sec"] for r in rows
              if (r["bench"], r["budget"], r["mode"]) == (bench, budget, m)]
          for m in ("glibc", "upager")}
    if not by["glibc"] or not by["upager"]:
        continue
    g, u = statistics.median(by["glibc"]), statistics.median(by["upager"])
    # Runs alternate, so run i of each mode saw the same machine load:
    # the median of the pairs' ratios is steadier than the ratio of the
    # medians when the load drifts during the run.
    pair = statistics.median(b / a for a, b in zip(by["glibc"], by["upager"]))
    f = [r for r in rows if (r["bench"], r["budget"], r["mode"]) ==
         (bench, budget, "upager")][-1]
    print(f"{bench:14s} budget {budget:4s} glibc {g:12.0f}/s  upager "
          f"{u:12.0f}/s  ratio {u / g:5.2f} (pairs {pair:5.2f})  faults zero "
          f"{f.get('fault_zero', '-')} pool {f.get('fault_pool', '-')} "
          f"evicted {f.get('evict_pages', '-')}")
PY
