#!/bin/sh
# Build (if needed) and run the swap tier benchmark with O_DIRECT (the
# default) and with buffered I/O, write the JSON lines to a results file
# and print each ratio against its target.
#
#   bench/run_swap.sh [results-file] [extra bench_swap options...]
#
# The results file defaults to results/swap.jsonl; BUILD_DIR overrides the
# build directory. A run takes about a minute per mode; keep the machine
# otherwise idle.
set -eu

src=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD_DIR:-$src/build}
out=${1:-results/swap.jsonl}
[ $# -gt 0 ] && shift

if [ ! -f "$build/build.ninja" ]; then
	meson setup "$build" "$src" >&2
fi
ninja -C "$build" bench/bench_swap >&2

mkdir -p "$(dirname "$out")"
: >"$out"
for direct in 1 0; do
	UPG_SWAP_DIRECT=$direct "$build/bench/bench_swap" "$@" |
		sed "s/^{/{\"direct\":$direct,/" >>"$out"
done
echo "results: $out" >&2

python3 - "$out" <<'PY'
import json, sys

for r in (json.loads(l) for l in open(sys.argv[1]) if l.strip()):
    mode = "O_DIRECT" if r["direct"] else "buffered"
    p = r["phase"]
    if p == "swapin":
        print(f"{mode:9s} swap-in p50 {r['p50_us']:.1f} us (p99 "
              f"{r['p99_us']:.0f}) vs bare io_uring read {r['bare_read_p50_us']:.1f} us "
              f"(p99 {r['bare_read_p99_us']:.0f}): {r['ratio_p50']:.2f}x")
    elif p == "scan":
        ok = "met" if r["ratio"] >= 5 else "MISSED"
        print(f"{mode:9s} scan {r['readahead_mbs']:.0f} MB/s with readahead, "
              f"{r['no_readahead_mbs']:.0f} without: {r['ratio']:.2f}x "
              f"(target >= 5: {ok})")
    elif p in ("writeback", "writeback_reuse"):
        ok = "met" if r["ratio"] >= 0.8 else "MISSED"
        what = "write-back" if p == "writeback" else "reused slots"
        phys = r.get("writeback_physical_mbs")
        print(f"{mode:9s} {what} {r['writeback_mbs']:.0f} MB/s of pages vs the "
              f"file's {r['file_seq_write_mbs']:.0f} MB/s "
              f"({r['file_best_req_kb']} KiB x {r['file_best_depth']}): "
              f"{r['ratio']:.2f} (target >= 0.8: {ok}); "
              + (f"bytes written {phys:.0f} MB/s ({r['bytes_per_page']:.0f} "
                 f"B/page): {r['ratio_physical']:.2f}; " if phys else "")
              + (f"vs the file's best from 4 KiB pages "
                 f"{r['file_4k_pages_mbs']:.0f} MB/s: {r['ratio_4k_pages']:.2f}; "
                 if "file_4k_pages_mbs" in r else "")
              + (f"vs a writer that copies its bytes first "
                 f"{r['file_copying_mbs']:.0f} MB/s: {r['ratio_copying']:.2f} "
                 f"(bytes {r['ratio_copying_physical']:.2f}); "
                 if "file_copying_mbs" in r else "")
              + f"vs 512 KiB x 1: {r['file_512k_qd1_mbs']:.0f} MB/s, "
              f"{r['ratio_512k_qd1']:.2f}; fill {r['fill_mbs']:.0f} MB/s")
PY
