/* SPDX-License-Identifier: MIT */
/*
 * Statistics shards. Every thread that counts (each fault handler, the
 * evictor) owns one shard; API callers share one. Counters are relaxed
 * atomics: a reader sums the shards and may see a slightly stale total,
 * which is all statistics need. The counter list is UPG_STATS_COUNTERS in
 * <upager/stats.h>.
 */
#ifndef UPG_STATS_INT_H
#define UPG_STATS_INT_H

#include <stdatomic.h>
#include <stdio.h>

#include "upager.h"
#include "common.h"

enum upg_stat_id {
#define UPG_STAT_ENUM(name, desc) UPG_STAT_##name,
	UPG_STATS_COUNTERS(UPG_STAT_ENUM)
#undef UPG_STAT_ENUM
		UPG_STAT_NR
};

enum upg_hist_id {
#define UPG_HIST_ENUM(name, desc) UPG_HIST_##name,
	UPG_STATS_HISTS(UPG_HIST_ENUM)
#undef UPG_HIST_ENUM
		UPG_HIST_NR
};

struct upg_stat_hist {
	_Atomic uint64_t count;
	_Atomic uint64_t sum_ns;
	_Atomic uint64_t bucket[UPG_HIST_BUCKETS];
};

struct upg_stat_shard {
	_Atomic uint64_t c[UPG_STAT_NR];
	struct upg_stat_hist h[UPG_HIST_NR];
} __attribute__((aligned(UPG_CACHELINE)));

static inline void upg_stat_add(struct upg_stat_shard *s, enum upg_stat_id id,
				uint64_t n)
{
	atomic_fetch_add_explicit(&s->c[id], n, memory_order_relaxed);
}

static inline void upg_stat_inc(struct upg_stat_shard *s, enum upg_stat_id id)
{
	upg_stat_add(s, id, 1);
}

/* upg_stat_count() - counter @id summed over @n shards */
static inline uint64_t upg_stat_count(const struct upg_stat_shard *shards,
				      unsigned n, enum upg_stat_id id)
{
	uint64_t sum = 0;

	for (unsigned i = 0; i < n; i++)
		sum += atomic_load_explicit(&shards[i].c[id],
					    memory_order_relaxed);
	return sum;
}

/* upg_stat_hist_bucket() - histogram bucket of a latency: floor(log2(ns)) */
static inline unsigned upg_stat_hist_bucket(uint64_t ns)
{
	unsigned b = ns ? 63 - (unsigned)__builtin_clzll(ns) : 0;

	return b < UPG_HIST_BUCKETS ? b : UPG_HIST_BUCKETS - 1;
}

static inline void upg_stat_time(struct upg_stat_shard *s, enum upg_hist_id id,
				 uint64_t ns)
{
	struct upg_stat_hist *h = &s->h[id];

	atomic_fetch_add_explicit(&h->count, 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&h->sum_ns, ns, memory_order_relaxed);
	atomic_fetch_add_explicit(&h->bucket[upg_stat_hist_bucket(ns)], 1,
				  memory_order_relaxed);
}

/*
 * upg_stat_sum() - add @n shards' counters and histograms into @out
 * Gauges are left for the caller to fill. @out->size must be set.
 */
void upg_stat_sum(const struct upg_stat_shard *shards, unsigned n,
		  struct upg_stats *out);

/* upg_stat_print() - the UPG_STATS=1 report: counters, ratios, percentiles */
void upg_stat_print(FILE *f, const struct upg_stats *s);

/* upg_stat_name() / upg_stat_desc() - by enum upg_stat_id */
const char *upg_stat_name(unsigned id);
const char *upg_stat_desc(unsigned id);

#endif
