/* SPDX-License-Identifier: MIT */
/*
 * Integrity under oversubscription: a region four times the budget,
 * random read-modify-write from one and two threads, every byte verified at
 * the end, with the preferred kernel features and with each fallback
 * forced on.
 *
 * Concurrent writers use atomic adds on words of managed memory and keep
 * the sum of what they added per word in ordinary memory: at the end each
 * word must equal its initial value plus that sum. A store lost to a
 * racing eviction, or a page restored stale or as zeros, shows up here.
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "helpers.h"

#define BUDGET (16 * MiB)
#define WORDS_PER_PAGE (PAGE / 8)

/* The region: 4x the budget, or 8x for the swap tests (set per test). */
static size_t ratio = 4;
#define SIZE (ratio * BUDGET)
#define NPAGES (SIZE / PAGE)

struct rmw {
	uint64_t *mem;
	_Atomic uint64_t *delta; /* per word of memory, ordinary RAM */
	unsigned seed;
	size_t ops;
	bool sequential;
};

static void *rmw_thread(void *arg)
{
	struct rmw *w = arg;
	uint64_t s = w->seed * 7919 + 1;

	for (size_t i = 0; i < w->ops; i++) {
		size_t page =
			w->sequential ? (i * 7) % NPAGES : t_rand(&s) % NPAGES;
		/* Skip the two identity words of the text header. */
		size_t word = page * WORDS_PER_PAGE + 2 +
			      t_rand(&s) % (WORDS_PER_PAGE - 2);
		uint64_t add = (t_rand(&s) & 0xff) + 1;

		__atomic_fetch_add(&w->mem[word], add, __ATOMIC_RELAXED);
		atomic_fetch_add_explicit(&w->delta[word], add,
					  memory_order_relaxed);
	}
	return NULL;
}

static size_t verify(uint64_t *mem, _Atomic uint64_t *delta)
{
	uint64_t page[WORDS_PER_PAGE];
	size_t bad = 0;

	for (size_t p = 0; p < NPAGES; p++) {
		t_page_fill(page, T_TEXT, p, 0);
		for (size_t i = 0; i < WORDS_PER_PAGE; i++)
			page[i] += atomic_load(&delta[p * WORDS_PER_PAGE + i]);
		bad += memcmp(page, mem + p * WORDS_PER_PAGE, PAGE) != 0;
	}
	return bad;
}

static struct upg_stats run_rmw(const char *const *opts, unsigned nthreads,
				bool seq, const char *feature)
{
	struct upg *u = t_runtime(BUDGET, opts);
	uint64_t *mem = t_region(u, SIZE);
	_Atomic uint64_t *delta = calloc(SIZE / 8, sizeof(*delta));
	pthread_t th[4];
	struct rmw w[4];
	struct upg_stats s;

	cr_assert(delta);
	cr_assert(strstr(upg_features(u), feature), "expected \"%s\" in \"%s\"",
		  feature, upg_features(u));
	t_fill(mem, NPAGES, T_TEXT);
	for (unsigned t = 0; t < nthreads; t++) {
		w[t] = (struct rmw){ mem, delta, t, 150000 / nthreads, seq };
		pthread_create(&th[t], NULL, rmw_thread, &w[t]);
	}
	for (unsigned t = 0; t < nthreads; t++)
		pthread_join(th[t], NULL);
	cr_expect_eq(verify(mem, delta), 0, "pages differ after RMW (%s)",
		     upg_features(u));
	s = t_stats(u);
	cr_expect_gt(s.evict_pages, NPAGES / 2, "too few evictions: %llu",
		     (unsigned long long)s.evict_pages);
	cr_expect_leq(s.resident_peak, s.budget, "budget exceeded");
	cr_expect_eq(s.fault_error, 0);
	free(delta);
	upg_destroy(u);
	return s;
}

/*
 * 8x oversubscription with a 1 MiB pool: most pages must go to the swap
 * file and come back from it.
 */
static void run_swap(unsigned nthreads, bool seq)
{
	static const char *const opts[] = { "POOL_MAX=1M", NULL };
	struct upg_stats s;

	ratio = 8;
	s = run_rmw(opts, nthreads, seq, "swap");
	cr_expect_gt(s.swap_writes, NPAGES / 2, "swap writes: %llu",
		     (unsigned long long)s.swap_writes);
	cr_expect_gt(s.fault_swap, 100, "swap-ins: %llu",
		     (unsigned long long)s.fault_swap);
	cr_expect_eq(s.swap_read_errors, 0);
}

Test(integrity, swap_one_thread_random_8x)
{
	run_swap(1, false);
}

Test(integrity, swap_one_thread_sequential_8x)
{
	run_swap(1, true);
}

Test(integrity, swap_two_threads_random_8x)
{
	run_swap(2, false);
}

Test(integrity, swap_two_threads_sequential_8x)
{
	run_swap(2, true);
}

TestSuite(integrity, .timeout = 240);

Test(integrity, one_thread_random_4x)
{
	run_rmw(NULL, 1, false, "move remap");
}

/* Also the test of pool compaction racing the faults: objects move
 * while both threads fault their pages back in. */
Test(integrity, two_threads_random_4x)
{
	struct upg_stats s = run_rmw(NULL, 2, false, "move");

	cr_expect_gt(s.pool_compact_moved, 0, "no compaction: %llu runs",
		     (unsigned long long)s.pool_compactions);
}

Test(integrity, two_threads_sequential_4x)
{
	run_rmw(NULL, 2, true, "move");
}

Test(integrity, copy_eviction_fallback)
{
	static const char *const opts[] = { "MOVE=0", NULL };

	run_rmw(opts, 2, false, "copy-evict");
}

Test(integrity, all_dirty_fallback)
{
	static const char *const opts[] = { "WP_ASYNC=0", NULL };

	run_rmw(opts, 2, false, "all-dirty");
}

Test(integrity, no_remove_events)
{
	static const char *const opts[] = { "REMOVE_EVENTS=0", NULL };

	run_rmw(opts, 2, false, "wp_async wp ");
}

Test(integrity, single_page_moves_without_remap)
{
	static const char *const opts[] = { "REMAP=0", NULL };

	run_rmw(opts, 2, false, "move wp_async");
}

Test(integrity, one_handler_no_fault_around)
{
	static const char *const opts[] = { "HANDLERS=1", "CLUSTER=1", NULL };

	run_rmw(opts, 2, false, "handlers=1");
}

Test(integrity, wide_fault_around)
{
	static const char *const opts[] = { "CLUSTER=256", NULL };

	run_rmw(opts, 2, true, "move");
}

/* A short version of the stress suite's race, in the default suite. */
static void short_race(const char *const *opts)
{
	struct upg_stats s;
	size_t bad = t_store_race(opts, 4, 4, &s);

	cr_expect_eq(bad, 0, "%zu lost or stale stores", bad);
	cr_expect_gt(s.evict_pages, 1000, "evictor barely ran");
}

Test(integrity, stores_racing_eviction)
{
	short_race(NULL);
}

Test(integrity, stores_racing_single_page_moves)
{
	static const char *const opts[] = { "REMAP=0", NULL };

	short_race(opts);
}

Test(integrity, stores_racing_copy_eviction)
{
	static const char *const opts[] = { "MOVE=0", NULL };

	short_race(opts);
}

Test(integrity, stores_racing_swap_writeback)
{
	static const char *const opts[] = { "POOL_MAX=1M", NULL };
	struct upg_stats s;
	size_t bad = t_store_race(opts, 4, 4, &s);

	cr_expect_eq(bad, 0, "%zu lost or stale stores", bad);
	cr_expect_gt(s.swap_writeback, 1000, "write-back barely ran: %llu",
		     (unsigned long long)s.swap_writeback);
	cr_expect_gt(s.fault_swap, 100, "few swap-ins: %llu",
		     (unsigned long long)s.fault_swap);
}
