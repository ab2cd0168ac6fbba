#!/bin/sh
# Build (if needed) and run the core fault benchmark in full, write its JSON
# lines to a results file, and print each ratio against its target.
#
#   bench/run_core.sh [results-file] [extra bench_fault options...]
#
# The results file defaults to results/core.jsonl (relative to the current
# directory); BUILD_DIR overrides the build directory (default: build/ in
# the source tree). Runs take about a minute; keep the machine otherwise
# idle, or read the "cpu_busy_idle_window" of the setup line.
set -eu

src=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD_DIR:-$src/build}
out=${1:-results/core.jsonl}
[ $# -gt 0 ] && shift

if [ ! -f "$build/build.ninja" ]; then
	meson setup "$build" "$src" >&2
fi
ninja -C "$build" bench/bench_fault >&2

mkdir -p "$(dirname "$out")"
"$build/bench/bench_fault" "$@" >"$out"
echo "results: $out" >&2

python3 - "$out" <<'PY'
import json, sys

rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
for r in rows:
    if "error" in r:
        print(f"ERROR [{r['phase']}]: {r['error']}: {r.get('detail', '')}")

for r in rows:
    if r["phase"] == "setup":
        print(f"machine: {r['cpus']} CPUs, load {r['loadavg1']}, "
              f"busy before start {100 * (r['cpu_busy_idle_window'] or 0):.0f}%")
    if r["phase"] == "machine":
        print(f"  during {r['after']:10s} {r['seconds']:6.1f} s, steal "
              f"{100 * (r['steal_share'] or 0):.1f}%, memory reported to host "
              f"{r['reported_to_host_mib'] or 0:.0f} MiB")

def us(v):
    return f"{v / 1000:8.2f}"

print("\nlatency, one fault at a time on CPU 0 (us):")
print(f"  {'series':44s} {'p50':>8s} {'p99':>8s} {'p99.9':>8s} {'mean':>8s}")
for r in rows:
    if r["phase"] == "latency" and "impl" in r:
        name = f"{r['impl']} {r['kind']} {r['op']}"
        if r["impl"] == "lz4":
            name += " (warm)" if r.get("memory") == "warm" else " (aged)"
        served = [v for k, v in r.items() if k.startswith("served_by")]
        note = f"  other-CPU share {served[1] / sum(served):.1%}" if len(served) > 1 else ""
        print(f"  {name:44s} {us(r['p50_ns'])} {us(r['p99_ns'])} "
              f"{us(r['p999_ns'])} {us(r['mean_ns'])}{note}")

print("\nfirst touch, sequential one-byte writes:")
for r in rows:
    if r["phase"] == "firsttouch" and "impl" in r:
        c = f" cluster {r['cluster']}" if "cluster" in r else ""
        print(f"  {r['impl'] + c:24s} {r['mb_per_s']:8.0f} MB/s "
              f"{r['ns_per_page']:7.0f} ns/page")

print("\nthroughput, 1 and 2 faulting threads:")
for r in rows:
    if r["phase"] == "threads" and "impl" in r:
        if "faults_per_s" in r:
            print(f"  {r['impl']:16s} {r['threads']} thread(s) "
                  f"{r['faults_per_s']:12.0f} faults/s")
        else:
            print(f"  {r['impl']:16s} {r['threads']} thread(s) "
                  f"{r['steps_per_s']:12.0f} steps/s")

print("\nratios:")
for r in rows:
    if "metric" not in r:
        continue
    v = "n/a" if r["ratio"] is None else f"{r['ratio']:.3f}"
    if "target" in r:
        verdict = "MET " if r["met"] == "yes" else "MISS"
        print(f"  {verdict} {r['metric']:44s} {v:>7s}  target {r['cmp']} {r['target']:g}")
    else:
        print(f"  info {r['metric']:44s} {v:>7s}")
PY
