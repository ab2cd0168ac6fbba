#!/usr/bin/env bash
# redis-benchmark GET, plain redis-server against redis-server under
# `upagerctl run --budget 4G` (no oversubscription), alternating pairs so
# both see the same machine load. Prints one JSON line per run.
#
#   bench/redis_get_pairs.sh [pairs]
#
# BUILD_DIR overrides the build directory (default: build/).
set -uo pipefail

src=$(cd "$(dirname "$0")/.." && pwd)
ctl=${BUILD_DIR:-$src/build}/daemon/upagerctl
pairs=${1:-4}
pid=

trap '[ -n "$pid" ] && kill -9 "$pid" 2>/dev/null' EXIT INT TERM

for ((i = 0; i < pairs; i++)); do
	for m in glibc upager; do
		port=$((20000 + RANDOM % 10000))
		pre=()
		[[ $m == upager ]] && pre=("$ctl" run --budget 4G --)
		"${pre[@]}" redis-server --port "$port" --save '' \
			--appendonly no >/dev/null 2>&1 &
		pid=$!
		for _ in $(seq 50); do
			redis-cli -p "$port" ping 2>/dev/null | grep -q PONG &&
				break
			sleep 0.1
		done
		redis-benchmark -p "$port" -t set -n 100000 -r 100000 -d 100 \
			-P 16 -q >/dev/null 2>&1
		r=$(redis-benchmark -p "$port" -t get -n 1000000 -r 100000 \
			-d 100 -P 16 --csv 2>/dev/null | tail -1 | tr -d '"' |
			cut -d, -f2)
		echo "{\"bench\":\"redis-GET\",\"mode\":\"$m\",\"ops_per_sec\":$r}"
		redis-cli -p "$port" shutdown nosave >/dev/null 2>&1
		wait "$pid" 2>/dev/null
		pid=
	done
done
