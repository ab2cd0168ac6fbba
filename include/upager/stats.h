/* SPDX-License-Identifier: MIT */
/*
 * upager statistics: one X-macro list generates the struct fields, their
 * names and the printer. Counters are monotonic unless marked "gauge".
 */
#ifndef UPAGER_STATS_H
#define UPAGER_STATS_H

#include <stddef.h>
#include <stdint.h>

/* clang-format off */
#define UPG_STATS_COUNTERS(X)						\
	X(fault_zero,		"faults resolved by zero-fill")		\
	X(fault_pool,		"faults resolved from the compressed pool") \
	X(fault_same,		"faults resolved from a same-filled page") \
	X(fault_dup,		"fault messages for pages already resolved") \
	X(fault_deferred,	"faults deferred (page busy or budget full)") \
	X(fault_write,		"faults that were writes")		\
	X(fault_wp,		"write-protect faults (sync WP fallback)") \
	X(fault_around_zero,	"neighbour pages zero-filled by fault-around") \
	X(fault_around_pool,	"neighbour pages restored by fault-around") \
	X(fault_copy_retry,	"UFFDIO_COPY retries after EAGAIN")	\
	X(fault_error,		"faults that failed (see log)")		\
	X(evict_pages,		"pages evicted")			\
	X(evict_batches,	"eviction batches")			\
	X(evict_move,		"pages evicted with UFFDIO_MOVE")	\
	X(evict_copy,		"pages evicted with write-protect and copy") \
	X(evict_remap,		"pages evicted by moving page tables (mremap)") \
	X(evict_remap_chunks,	"2 MiB chunks moved out with mremap")	\
	X(evict_remap_kept,	"resident pages copied back after a chunk move") \
	X(evict_remap_abort,	"chunk moves abandoned (a page was busy)") \
	X(evict_move_busy,	"UFFDIO_MOVE refused (EBUSY): page kept resident") \
	X(evict_clean_drop,	"clean pages dropped without recompression") \
	X(evict_clean_raced,	"pages believed clean but written during eviction") \
	X(evict_same,		"evicted pages stored as same-filled")	\
	X(evict_compressed,	"evicted pages stored compressed")	\
	X(evict_raw,		"evicted pages stored raw (incompressible)") \
	X(evict_pool_full,	"evictions refused because the pool is full") \
	X(evict_sync,		"evictor runs triggered by a full budget") \
	X(evict_helped,		"victims stored by fault handlers waiting for room") \
	X(refault,		"faults on pages evicted before")	\
	X(clock_scanned,	"resident pages examined by the clock")	\
	X(clock_referenced,	"pages spared by their reference bit")	\
	X(handler_raises,	"idle handlers raised to normal priority (CPUs busy)") \
	X(handler_trials,	"guard trials of idle against raised handlers") \
	X(wp_scan,		"PAGEMAP_SCAN calls")			\
	X(wp_written,		"pages found written since protection")	\
	X(reap_passes,		"reaper passes (copies of written pages)") \
	X(reap_copies,		"pool copies freed early: page written since") \
	X(clock_copies,		"copies freed by the clock: page written since") \
	X(copy_skipped,		"pages read back without a kept copy (not paying off)") \
	X(discard_pages,	"pages discarded")			\
	X(remove_events,	"UFFD_EVENT_REMOVE messages (program madvise)") \
	X(budget_overruns,	"pages installed beyond the budget (pool full)") \
	X(pool_compactions,	"pool compactions (objects moved out of sparse chunks)") \
	X(pool_compact_moved,	"pool objects moved by compaction")	\
	X(pool_compact_freed,	"bytes of pool chunks compaction gave back") \
	X(fault_swap,		"faults resolved from the swap file")	\
	X(swap_ra_pages,	"neighbour pages read ahead from the swap file") \
	X(swap_ra_hits,		"swap faults continuing a sequential readahead") \
	X(swap_ra_misses,	"swap faults starting a new stream (one page)") \
	X(swap_writes,		"pages written to the swap file")	\
	X(swap_write_bytes,	"bytes written to the swap file (packed objects)") \
	X(swap_writeback,	"pool entries written back to the swap file") \
	X(swap_direct,		"evicted pages written straight to the file") \
	X(swap_clean_drop,	"clean pages dropped, their slot still valid") \
	X(swap_err_nospc,	"swap writes failed: no space (ENOSPC/EDQUOT)") \
	X(swap_err_io,		"swap writes failed: I/O error")	\
	X(swap_err_short,	"swap writes failed: short write")	\
	X(swap_err_other,	"swap writes failed: other errors")	\
	X(swap_read_errors,	"swap reads failed or corrupt (page lost)") \
	X(resident,		"gauge: resident pages (incl. staging)") \
	X(resident_peak,	"gauge: peak resident pages")		\
	X(budget,		"gauge: budget in pages")		\
	X(pool_objects,		"gauge: objects in the pool (incl. same-filled)") \
	X(pool_same,		"gauge: same-filled pages (no storage)") \
	X(pool_stored_bytes,	"gauge: uncompressed bytes held in the pool") \
	X(pool_compressed_bytes,"gauge: compressed bytes in pool objects") \
	X(pool_used_bytes,	"gauge: bytes of pool memory allocated") \
	X(pool_max_bytes,	"gauge: pool size limit")			\
	X(pool_parked_bytes,	"gauge: empty pool chunks kept mapped for reuse") \
	X(pool_hole_bytes,	"gauge: freed slots in pool chunks (see compaction)") \
	X(swap_slots_used,	"gauge: swap file slots in use")	\
	X(swap_file_bytes,	"gauge: swap file size")
/* clang-format on */

/* Fault kinds with a latency histogram each. */
/* clang-format off */
#define UPG_STATS_HISTS(X)						\
	X(zero,	"zero-fill fault")					\
	X(pool,	"pool-hit fault")					\
	X(same,	"same-filled fault")					\
	X(swap,	"swap-in fault")					\
	X(evict,	"eviction batch")					\
	X(swap_write,	"write-back run (select, pack, write)")
/* clang-format on */

/* Histogram bucket i holds samples in [2^i, 2^(i+1)) nanoseconds. */
#define UPG_HIST_BUCKETS 40

struct upg_hist {
	uint64_t count;
	uint64_t sum_ns;
	uint64_t bucket[UPG_HIST_BUCKETS];
};

/*
 * Bumped whenever the layout changes (2: evict_helped, swap_write_bytes
 * and pool_parked_bytes added; 3: clock_copies and copy_skipped; 4:
 * handler_trials; 5: pool_compactions, pool_compact_moved,
 * pool_compact_freed and pool_hole_bytes).
 */
#define UPG_STATS_VERSION 5

struct upg_stats {
	uint32_t size;	  /* set by the caller: sizeof(struct upg_stats) */
	uint32_t version; /* set by the library: UPG_STATS_VERSION */
#define UPG_STAT_FIELD(name, desc) uint64_t name;
	UPG_STATS_COUNTERS(UPG_STAT_FIELD)
#undef UPG_STAT_FIELD
#define UPG_HIST_FIELD(name, desc) struct upg_hist lat_##name;
	UPG_STATS_HISTS(UPG_HIST_FIELD)
#undef UPG_HIST_FIELD
};

/**
 * upg_hist_percentile() - estimate a percentile from a latency histogram
 * @h: histogram
 * @p: percentile in [0, 100]
 *
 * Return: the estimated latency in nanoseconds (geometric interpolation
 * inside the bucket), 0 if the histogram is empty.
 */
__attribute__((visibility("default"))) uint64_t
upg_hist_percentile(const struct upg_hist *h, double p);

#endif
