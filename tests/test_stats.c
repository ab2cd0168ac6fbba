/* SPDX-License-Identifier: MIT */
/*
 * Statistics: summing shards, names, latency percentiles and the
 * UPG_STATS=1 report.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>

#include "stats.h"

static struct upg_stat_shard shards[2];

static uint64_t percentile(const struct upg_hist *h, double p)
{
	return upg_hist_percentile(h, p);
}

Test(stats, sum_of_two_shards, .timeout = 10)
{
	struct upg_stats s;

	upg_stat_add(&shards[0], UPG_STAT_fault_zero, 3);
	upg_stat_inc(&shards[0], UPG_STAT_evict_pages);
	upg_stat_add(&shards[1], UPG_STAT_fault_zero, 4);
	upg_stat_inc(&shards[1], UPG_STAT_pool_max_bytes);
	upg_stat_time(&shards[0], UPG_HIST_pool, 1500);
	upg_stat_time(&shards[1], UPG_HIST_pool, 1600);
	upg_stat_time(&shards[1], UPG_HIST_pool, 70000);
	memset(&s, 0xff, sizeof(s));
	s.size = sizeof(s);
	upg_stat_sum(shards, 2, &s);
	cr_assert_eq(s.size, sizeof(s));
	cr_assert_eq(s.version, UPG_STATS_VERSION);
	cr_assert_eq(s.fault_zero, 7);
	cr_assert_eq(s.evict_pages, 1);
	cr_assert_eq(s.pool_max_bytes, 1);
	cr_assert_eq(s.fault_pool, 0, "untouched counter not zeroed");
	cr_assert_eq(s.lat_pool.count, 3);
	cr_assert_eq(s.lat_pool.sum_ns, 73100);
	cr_assert_eq(s.lat_pool.bucket[10], 2);
	cr_assert_eq(s.lat_pool.bucket[16], 1);
	cr_assert_eq(s.lat_zero.count, 0);
	cr_assert_eq(s.lat_evict.bucket[10], 0);
}

Test(stats, sum_of_no_shards_is_zero, .timeout = 10)
{
	struct upg_stats s;

	memset(&s, 0xff, sizeof(s));
	s.size = sizeof(s);
	upg_stat_sum(shards, 0, &s);
	cr_assert_eq(s.fault_zero, 0);
	cr_assert_eq(s.pool_max_bytes, 0);
	cr_assert_eq(s.lat_evict.count, 0);
}

Test(stats, sum_writes_only_size_bytes, .timeout = 10)
{
	struct upg_stats s;

	upg_stat_add(&shards[0], UPG_STAT_fault_zero, 5);
	upg_stat_add(&shards[0], UPG_STAT_fault_pool, 6);
	memset(&s, 0xab, sizeof(s));
	s.size = offsetof(struct upg_stats, fault_pool);
	upg_stat_sum(shards, 1, &s);
	cr_assert_eq(s.fault_zero, 5);
	cr_assert_eq(s.fault_pool, 0xababababababababULL,
		     "wrote past out->size");
}

Test(stats, names_and_descriptions, .timeout = 10)
{
	unsigned i, j;

	cr_assert_str_eq(upg_stat_name(UPG_STAT_fault_zero), "fault_zero");
	cr_assert_str_eq(upg_stat_name(UPG_STAT_pool_max_bytes),
			 "pool_max_bytes");
	cr_assert_str_eq(upg_stat_desc(UPG_STAT_refault),
			 "faults on pages evicted before");
	cr_assert_null(upg_stat_name(UPG_STAT_NR));
	cr_assert_null(upg_stat_desc(UPG_STAT_NR));
	for (i = 0; i < UPG_STAT_NR; i++) {
		cr_assert(upg_stat_desc(i)[0], "%s has no description",
			  upg_stat_name(i));
		for (j = 0; j < i; j++)
			cr_assert_str_neq(upg_stat_name(i), upg_stat_name(j));
	}
}

Test(stats, percentile_empty_is_zero, .timeout = 10)
{
	struct upg_hist h;

	memset(&h, 0, sizeof(h));
	cr_assert_eq(percentile(&h, 50), 0);
	cr_assert_eq(percentile(&h, 99.9), 0);
}

Test(stats, percentile_inside_one_bucket, .timeout = 10)
{
	struct upg_hist h;
	uint64_t p0, p50, p100;

	memset(&h, 0, sizeof(h));
	h.count = 1000;
	h.bucket[10] = 1000; /* [1024, 2048) ns */
	p0 = percentile(&h, 0);
	p50 = percentile(&h, 50);
	p100 = percentile(&h, 100);
	cr_assert_eq(p0, 1024);
	cr_assert(p50 > 1024 && p50 < 2048, "p50 %lu", (unsigned long)p50);
	/* geometric midpoint of the bucket: 1024 * sqrt(2) */
	cr_assert(p50 >= 1447 && p50 <= 1449, "p50 %lu", (unsigned long)p50);
	cr_assert(p100 >= p50 && p100 <= 2048, "p100 %lu", (unsigned long)p100);
}

Test(stats, percentile_mixed_buckets_ordered, .timeout = 10)
{
	struct upg_hist h;
	uint64_t p50, p99, p999;

	memset(&h, 0, sizeof(h));
	h.bucket[10] = 900;
	h.bucket[14] = 95;
	h.bucket[20] = 5;
	h.count = 1000;
	p50 = percentile(&h, 50);
	p99 = percentile(&h, 99);
	p999 = percentile(&h, 99.9);
	cr_assert(p50 >= 1024 && p50 < 2048, "p50 %lu", (unsigned long)p50);
	cr_assert(p99 >= 16384 && p99 < 32768, "p99 %lu", (unsigned long)p99);
	cr_assert(p999 >= (1UL << 20) && p999 < (2UL << 20), "p99.9 %lu",
		  (unsigned long)p999);
	cr_assert(p50 <= p99 && p99 <= p999);
}

Test(stats, percentile_clamps_out_of_range, .timeout = 10)
{
	struct upg_hist h;

	memset(&h, 0, sizeof(h));
	h.bucket[3] = 10;
	h.bucket[5] = 10;
	h.count = 20;
	cr_assert_eq(percentile(&h, -5), percentile(&h, 0));
	cr_assert_eq(percentile(&h, 250), percentile(&h, 100));
	cr_assert_leq(percentile(&h, 100), 64);
}

Test(stats, percentile_monotonic, .timeout = 10)
{
	struct upg_hist h;
	uint64_t prev = 0, v;
	double p;
	unsigned i;

	memset(&h, 0, sizeof(h));
	for (i = 0; i < UPG_HIST_BUCKETS; i += 3)
		h.bucket[i] = i + 1;
	for (p = 0; p <= 100; p += 0.5) {
		v = percentile(&h, p);
		cr_assert_geq(v, prev, "p%.1f went down", p);
		prev = v;
	}
}

Test(stats, recorded_latencies_give_percentiles, .timeout = 10)
{
	struct upg_stats s;
	unsigned i;

	for (i = 0; i < 1000; i++)
		upg_stat_time(&shards[i & 1], UPG_HIST_zero, 1500);
	s.size = sizeof(s);
	upg_stat_sum(shards, 2, &s);
	cr_assert_eq(s.lat_zero.count, 1000);
	cr_assert_geq(percentile(&s.lat_zero, 50), 1024);
	cr_assert_lt(percentile(&s.lat_zero, 50), 2048);
}

static char *print_stats(const struct upg_stats *s)
{
	char *out = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&out, &len);

	cr_assert_not_null(f);
	upg_stat_print(f, s);
	cr_assert_eq(fclose(f), 0);
	return out;
}

Test(stats, print_names_every_counter, .timeout = 10)
{
	struct upg_stats s;
	char *out, *first;
	unsigned i;

	memset(&s, 0, sizeof(s));
	s.size = sizeof(s);
	out = print_stats(&s);
	first = strstr(out, "upager stats:");
	cr_assert(first == out, "no header first:\n%s", out);
	cr_assert_null(strstr(first + 1, "upager stats:"), "two headers");
	for (i = 0; i < UPG_STAT_NR; i++)
		cr_assert(strstr(out, upg_stat_name(i)), "missing %s in:\n%s",
			  upg_stat_name(i), out);
	cr_assert(strstr(out, "lat_zero") && strstr(out, "lat_pool") &&
			  strstr(out, "lat_same") && strstr(out, "lat_evict"),
		  "%s", out);
	cr_assert(strstr(out, "p99.9"), "%s", out);
	free(out);
}

Test(stats, print_derived_ratios, .timeout = 10)
{
	struct upg_stats s;
	char *out, *line;

	memset(&s, 0, sizeof(s));
	s.size = sizeof(s);
	s.fault_zero = 10;
	s.fault_pool = 30;
	s.pool_stored_bytes = 3 << 20;
	s.pool_compressed_bytes = 1 << 20;
	s.pool_used_bytes = 5 << 18;
	s.lat_pool.count = 2;
	s.lat_pool.sum_ns = 4000;
	s.lat_pool.bucket[10] = 2;
	out = print_stats(&s);
	line = strstr(out, "pool_ratio");
	cr_assert(line && strstr(line, "3.00x"), "%s", out);
	line = strstr(out, "pool_frag_pct");
	cr_assert(line && strstr(line, "20.00%"), "%s", out);
	line = strstr(out, "pool_hit_pct");
	cr_assert(line && strstr(line, "75.00%"), "%s", out);
	line = strstr(out, "\n  faults ");
	cr_assert(line && strstr(line, " 40 "), "%s", out);
	line = strstr(out, "lat_pool");
	cr_assert(line && strstr(line, "2.00"), "mean 2 us:\n%s", out);
	free(out);
}
