/* SPDX-License-Identifier: MIT */
/*
 * Throughput of the compressed pool: store, load and free of N pages of
 * text-like, random (incompressible) and zero data, single-threaded, then
 * store+load+free from two threads at once. Prints one JSON line per
 * measurement; never asserts.
 *
 *   bench_pool [pages]
 *
 * ratio: stored bytes / compressed bytes; mem_ratio: stored bytes / pool
 * memory (size-class rounding and chunk tails included). "compress_only" is
 * upg_compress_page() alone on the same pages, for comparison with "store".
 * The first store into fresh chunks pays the kernel's first-touch faults;
 * "store_load_free" cycles a window of pages through a warm pool instead.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "wordtext.h"
#include "common.h"
#include "compress.h"
#include "pool.h"

#define PAGE UPG_PAGE_SIZE

enum data { DATA_TEXT, DATA_RANDOM, DATA_ZERO };
static const char *const data_names[] = { "text", "random", "zero" };

static uint64_t rnd(uint64_t *s)
{
	return wordtext_rand(s);
}

static void fill_text(char *page, uint64_t seed)
{
	wordtext_fill(page, PAGE, seed);
}

static void fill(char *page, enum data d, uint64_t seed)
{
	uint64_t s = seed + 99, *p = (uint64_t *)page;
	size_t i;

	if (d == DATA_TEXT) {
		fill_text(page, seed);
	} else if (d == DATA_ZERO) {
		memset(page, 0, PAGE);
	} else {
		for (i = 0; i < PAGE / 8; i++)
			p[i] = rnd(&s);
	}
}

static double ratio(uint64_t a, uint64_t b)
{
	return b ? (double)a / (double)b : 0.0;
}

/* One JSON line; the ratios only when @st is given (after a store). */
static void report(const char *op, enum data d, int threads, uint64_t ns,
		   size_t n, const struct upg_pool_stats *st)
{
	printf("{\"bench\":\"pool\",\"op\":\"%s\",\"data\":\"%s\","
	       "\"threads\":%d,\"pages\":%zu,\"ns_per_page\":%.1f",
	       op, data_names[d], threads, n, ratio(ns, n));
	if (st)
		printf(",\"ratio\":%.3f,\"mem_ratio\":%.3f",
		       ratio(st->stored_bytes, st->compressed_bytes),
		       ratio(st->stored_bytes, st->used_bytes));
	printf("}\n");
}

/* Store, load and free @n pages of kind @d, timing each phase. */
static void bench_single(enum data d, size_t n)
{
	char *pages = upg_map(n * PAGE), out[PAGE];
	uint64_t *h = upg_map(n * sizeof(*h)), t;
	struct upg_pool_stats st;
	struct upg_pool *pool;
	size_t i;

	if (!pages || !h || upg_pool_create(n * PAGE * 2, &pool))
		return;
	for (i = 0; i < n; i++)
		fill(pages + i * PAGE, d, i);
	t = upg_now_ns();
	for (i = 0; i < n; i++)
		upg_compress_page(pages + i * PAGE, out, UPG_COMPRESS_MAX);
	report("compress_only", d, 1, upg_now_ns() - t, n, NULL);
	t = upg_now_ns();
	for (i = 0; i < n; i++)
		upg_pool_store(pool, pages + i * PAGE, &h[i]);
	t = upg_now_ns() - t;
	upg_pool_get_stats(pool, &st);
	report("store", d, 1, t, n, &st);
	t = upg_now_ns();
	for (i = 0; i < n; i++)
		upg_pool_load(pool, h[(i * 7919) % n], out);
	report("load", d, 1, upg_now_ns() - t, n, NULL);
	t = upg_now_ns();
	for (i = 0; i < n; i++)
		upg_pool_equal(pool, h[i], pages + i * PAGE);
	report("equal", d, 1, upg_now_ns() - t, n, NULL);
	t = upg_now_ns();
	for (i = 0; i < n; i++)
		upg_pool_free(pool, h[(i * 7919) % n]);
	report("free", d, 1, upg_now_ns() - t, n, NULL);
	upg_pool_destroy(pool);
	upg_unmap(h, n * sizeof(*h));
	upg_unmap(pages, n * PAGE);
}

struct mt_arg {
	struct upg_pool *pool;
	const char *pages;
	size_t n;
};

/* Each thread cycles a window of 256 pages through store, load, free. */
static void *mt_main(void *p)
{
	struct mt_arg *a = p;
	uint64_t h[256];
	char out[PAGE];
	size_t i;

	for (i = 0; i < a->n; i++) {
		if (i >= 256) {
			upg_pool_load(a->pool, h[i % 256], out);
			upg_pool_free(a->pool, h[i % 256]);
		}
		upg_pool_store(a->pool, a->pages + (i % 256) * PAGE,
			       &h[i % 256]);
	}
	for (i = 0; i < MIN(a->n, 256); i++)
		upg_pool_free(a->pool, h[i]);
	return NULL;
}

static void bench_threads(enum data d, size_t n, int threads)
{
	struct mt_arg a[8];
	pthread_t t[8];
	struct upg_pool *pool;
	char *pages = upg_map(256 * PAGE);
	uint64_t ns;
	int i;

	if (!pages || upg_pool_create(1UL << 30, &pool))
		return;
	for (i = 0; i < 256; i++)
		fill(pages + (size_t)i * PAGE, d, (uint64_t)i);
	ns = upg_now_ns();
	for (i = 0; i < threads; i++) {
		a[i] = (struct mt_arg){ pool, pages, n };
		pthread_create(&t[i], NULL, mt_main, &a[i]);
	}
	for (i = 0; i < threads; i++)
		pthread_join(t[i], NULL);
	ns = upg_now_ns() - ns;
	/* ns per page cycled, all threads together */
	report("store_load_free", d, threads, ns, n * (size_t)threads, NULL);
	upg_pool_destroy(pool);
	upg_unmap(pages, 256 * PAGE);
}

int main(int argc, char **argv)
{
	size_t n = argc > 1 ? strtoul(argv[1], NULL, 0) : 20000;
	enum data d;

	if (!n)
		n = 20000;
	for (d = DATA_TEXT; d <= DATA_ZERO; d++)
		bench_single(d, n);
	bench_threads(DATA_TEXT, n, 1);
	bench_threads(DATA_TEXT, n, 2);
	return 0;
}
