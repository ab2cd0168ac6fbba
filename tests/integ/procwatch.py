#!/usr/bin/python3
"""Watch process PID until it exits; print "HWM_KIB HEAP_RSS_MAX_KIB":
its peak resident set (VmHWM) and the largest resident size seen of its
mappings of 1 GiB or more (upager's heap region)."""
import sys
import time

pid = sys.argv[1]
hwm = heap = 0
while True:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    hwm = max(hwm, int(line.split()[1]))
        big = False
        with open(f"/proc/{pid}/smaps") as f:
            for line in f:
                head = line.split()
                if "-" in head[0] and len(head) >= 5:
                    lo, hi = (int(x, 16) for x in head[0].split("-"))
                    big = hi - lo >= 1 << 30
                elif big and head[0] == "Rss:":
                    heap = max(heap, int(head[1]))
    except (FileNotFoundError, ProcessLookupError, ValueError, IndexError):
        break
    time.sleep(0.05)
print(hwm, heap)
