#!/usr/bin/env bash
# Compare two builds of upager on the oversubscription workload, API mode,
# in alternating pairs (A B A B ...), and print the median operations per
# second and p99 of each side and their ratio, per pattern and thread count.
#
#   bench/run_oversub_ab.sh BUILD_A BUILD_B [pairs]
#
# e.g. a worktree of an older commit built in /tmp/old/build against
# build/. Environment: SIZE (512M), BUDGET (128M), SECONDS_PER_RUN (3),
# PATTERNS ("uniform zipf seq"), THREADS ("1 2"). Keep the machine idle.
set -euo pipefail

a=${1:?usage: run_oversub_ab.sh BUILD_A BUILD_B [pairs]}
b=${2:?usage: run_oversub_ab.sh BUILD_A BUILD_B [pairs]}
pairs=${3:-3}

run() { # build pattern threads -> "ops p99"
	"$1/bench/oversub" --mode api --size "${SIZE:-512M}" \
		--budget "${BUDGET:-128M}" --pattern "$2" --threads "$3" \
		--seconds "${SECONDS_PER_RUN:-3}" 2>/dev/null |
		python3 -c 'import json,sys; r=json.loads(sys.stdin.readline())
assert r["verified"], "a run failed verification"
print(r["ops_per_s"], r["lat_p99_ns"])'
}

median() { sort -n | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }

for p in ${PATTERNS:-uniform zipf seq}; do
	for t in ${THREADS:-1 2}; do
		oa=() ob=() qa=() qb=()
		for _ in $(seq "$pairs"); do
			read -r o q < <(run "$a" "$p" "$t")
			oa+=("$o") qa+=("$q")
			read -r o q < <(run "$b" "$p" "$t")
			ob+=("$o") qb+=("$q")
		done
		ma=$(printf '%s\n' "${oa[@]}" | median)
		mb=$(printf '%s\n' "${ob[@]}" | median)
		pa=$(printf '%s\n' "${qa[@]}" | median)
		pb=$(printf '%s\n' "${qb[@]}" | median)
		awk -v p="$p" -v t="$t" -v ma="$ma" -v mb="$mb" -v pa="$pa" \
			-v pb="$pb" -v ra="${oa[*]}" -v rb="${ob[*]}" 'BEGIN {
			printf "%-8s %st  A %7d  B %7d  B/A %.2f  p99 A %6.1f B %6.1f us  (A: %s; B: %s)\n",
				p, t, ma, mb, mb / ma, pa / 1000, pb / 1000, ra, rb }'
	done
done
