/* SPDX-License-Identifier: MIT */
/*
 * The allocator (lib/alloc*.c, lib/boot.c): size classes, alignment,
 * realloc, usable size, thread caches across thread exit, discard of freed
 * pages, metadata kept outside managed memory, the default heap and the
 * bootstrap arena, caches of a destroyed heap, fork() during the default
 * heap's creation, other threads' cached blocks in a fork child.
 */
#include <criterion/criterion.h>
#include <criterion/logging.h>
#include <unistd.h>
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>

#include "alloc.h"
#include "front.h"
#include "helpers.h"
#include "runtime.h"

TestSuite(alloc, .timeout = 60);

/*
 * A heap over a runtime with @opts. REMOVE events are off, as for the
 * default heap: a heap over a runtime that follows them never purges.
 */
static struct upg_heap *t_heap(struct upg **up, size_t budget,
			       const char *const *opts)
{
	const char *all[8] = { "REMOVE_EVENTS=off" };
	struct upg *u;

	for (size_t i = 0; opts && opts[i] && i < 6; i++)
		all[i + 1] = opts[i];
	u = t_runtime(budget, all);
	struct upg_heap *h = NULL;

	cr_assert_eq(upg_heap_create(u, 4UL << 30, &h), 0, "%s",
		     upg_last_error());
	*up = u;
	return h;
}

static void t_heap_done(struct upg *u, struct upg_heap *h)
{
	upg_heap_destroy(h);
	upg_destroy(u);
}

/* A byte pattern unique to (block, offset). */
static uint8_t pat(size_t k, size_t i)
{
	return (uint8_t)(k * 131 + i * 7 + (i >> 8));
}

static void fill(void *p, size_t n, size_t k)
{
	for (size_t i = 0; i < n; i++)
		((uint8_t *)p)[i] = pat(k, i);
}

static bool check(const void *p, size_t n, size_t k)
{
	for (size_t i = 0; i < n; i++)
		if (((const uint8_t *)p)[i] != pat(k, i))
			return false;
	return true;
}

Test(alloc, every_size_class_distinct_and_writable)
{
	struct upg *u;
	struct upg_heap *h = t_heap(&u, 256 * MiB, NULL);
	enum { N = 40 };
	void *p[UPG_NCLASS][N];

	for (unsigned c = 0; c < UPG_NCLASS; c++) {
		size_t size = upg_class_size[c];

		cr_assert_eq(upg_size_class(size), c, "size %zu", size);
		cr_assert_eq(upg_size_class(size - (c ? 1 : 15)), c);
		if (c + 1 < UPG_NCLASS)
			cr_assert_eq(upg_size_class(size + 1), c + 1);
		for (size_t k = 0; k < N; k++) {
			p[c][k] = upg_heap_malloc(h, size);
			cr_assert_not_null(p[c][k]);
			cr_assert(upg_heap_owns(h, p[c][k]));
			cr_assert_eq((uintptr_t)p[c][k] % 16, 0);
			cr_assert_eq(upg_heap_usable_size(h, p[c][k]), size);
			fill(p[c][k], size, c * N + k);
		}
	}
	for (unsigned c = 0; c < UPG_NCLASS; c++)
		for (size_t k = 0; k < N; k++) {
			cr_assert(check(p[c][k], upg_class_size[c], c * N + k),
				  "class %u block %zu overwritten", c, k);
			upg_heap_free(h, p[c][k]);
		}
	t_heap_done(u, h);
}

Test(alloc, zero_and_large_sizes)
{
	struct upg *u;
	struct upg_heap *h = t_heap(&u, 256 * MiB, NULL);
	static const size_t sizes[] = { 0,	 1,	 32769,
					65536,	 100000, (1 << 20) + 1,
					33 << 20 };

	for (size_t i = 0; i < ARRAY_SIZE(sizes); i++) {
		void *p = upg_heap_malloc(h, sizes[i]);
		size_t us = upg_heap_usable_size(h, p);

		cr_assert_not_null(p, "size %zu", sizes[i]);
		cr_assert_geq(us, sizes[i]);
		cr_assert_leq(us, MAX(sizes[i] + 4095, 16UL));
		fill(p, us, i);
		cr_assert(check(p, us, i));
		upg_heap_free(h, p);
	}
	errno = 0;
	cr_assert_null(upg_heap_malloc(h, SIZE_MAX - 100));
	cr_assert_eq(errno, ENOMEM);
	cr_assert_null(upg_heap_calloc(h, SIZE_MAX / 2, 3));
	t_heap_done(u, h);
}

Test(alloc, alignment)
{
	struct upg *u;
	struct upg_heap *h = t_heap(&u, 256 * MiB, NULL);
	static const size_t sizes[] = { 1, 24, 100, 4000, 5000, 40000 };

	for (size_t a = 8; a <= (2UL << 20); a *= 2)
		for (size_t i = 0; i < ARRAY_SIZE(sizes); i++) {
			void *p = upg_heap_aligned_alloc(h, a, sizes[i]);

			cr_assert_not_null(p, "align %zu size %zu", a,
					   sizes[i]);
			cr_assert_eq((uintptr_t)p % a, 0, "align %zu size %zu",
				     a, sizes[i]);
			cr_assert_geq(upg_heap_usable_size(h, p), sizes[i]);
			memset(p, 0x5a, sizes[i]);
			upg_heap_free(h, p);
		}
	errno = 0;
	cr_assert_null(upg_heap_aligned_alloc(h, 24, 100));
	cr_assert_eq(errno, EINVAL);
	t_heap_done(u, h);
}

Test(alloc, realloc_grow_and_shrink_keep_contents)
{
	struct upg *u;
	struct upg_heap *h = t_heap(&u, 256 * MiB, NULL);
	size_t n = 1;
	char *p = upg_heap_malloc(h, n);

	fill(p, n, 7);
	for (; n < (8UL << 20); n = n * 3 + 1) {
		p = upg_heap_realloc(h, p, n * 3 + 1);
		cr_assert_not_null(p);
		cr_assert(check(p, n, 7), "lost contents growing from %zu", n);
		fill(p, n * 3 + 1, 7);
	}
	while (n > 1) {
		n /= 5;
		p = upg_heap_realloc(h, p, n);
		cr_assert_not_null(p);
		cr_assert(check(p, n, 7), "lost contents shrinking to %zu", n);
	}
	upg_heap_free(h, p);
	t_heap_done(u, h);
}

Test(alloc, large_realloc_in_place)
{
	struct upg *u;
	struct upg_heap *h = t_heap(&u, 256 * MiB, NULL);
	struct upg_heap_stats s;
	char *a = upg_heap_malloc(h, 1 << 20);
	char *b = upg_heap_malloc(h, 1 << 20);
	char *c = upg_heap_malloc(h, 1 << 20);

	/* b is followed by c: free c and b grows into its pages. */
	fill(b, 1 << 20, 3);
	upg_heap_free(h, c);
	cr_assert_eq(upg_heap_realloc(h, b, 2 << 20), b);
	cr_assert(check(b, 1 << 20, 3));
	/* Shrinking stays in place too, and frees the tail for reuse. */
	cr_assert_eq(upg_heap_realloc(h, b, 512 << 10), b);
	cr_assert_eq(upg_heap_usable_size(h, b), 512 << 10);
	cr_assert(check(b, 512 << 10, 3));
	upg_heap_stats_get(h, &s);
	cr_assert_geq(s.realloc_inplace, 2);
	/* a is followed by b, in use: a must move, contents intact. */
	fill(a, 1 << 20, 4);
	a = upg_heap_realloc(h, a, 3 << 20);
	cr_assert(check(a, 1 << 20, 4));
	upg_heap_free(h, a);
	upg_heap_free(h, b);
	t_heap_done(u, h);
}

Test(alloc, calloc_zeroes_reused_memory)
{
	struct upg *u;
	struct upg_heap *h = t_heap(&u, 256 * MiB, NULL);
	static const size_t sizes[] = { 48, 3000, 30000, 200000 };

	for (size_t i = 0; i < ARRAY_SIZE(sizes); i++) {
		for (int round = 0; round < 3; round++) {
			char *p = upg_heap_calloc(h, 1, sizes[i]);
			size_t nonzero = 0;

			cr_assert_not_null(p);
			/* One assertion per block: --full-stats reports each. */
			for (size_t k = 0; k < sizes[i]; k++)
				nonzero += p[k] != 0;
			cr_assert_eq(nonzero, 0, "size %zu: %zu bytes not zero",
				     sizes[i], nonzero);
			memset(p, 0xff, sizes[i]);
			upg_heap_free(h, p);
		}
	}
	t_heap_done(u, h);
}

struct churn {
	struct upg_heap *h;
	size_t n;
	void **keep; /* handed to the caller, or NULL: free them all */
	size_t bad;  /* blocks found overwritten */
};

static void *churn_main(void *arg)
{
	struct churn *c = arg;
	void **p = calloc(c->n, sizeof(*p));

	for (size_t i = 0; i < c->n; i++) {
		p[i] = upg_heap_malloc(c->h, 16 + (i % 64) * 16);
		fill(p[i], 16, i);
	}
	for (size_t i = 0; i < c->n; i++) {
		if (c->keep) {
			c->keep[i] = p[i];
		} else {
			c->bad += !check(p[i], 16, i);
			upg_heap_free(c->h, p[i]);
		}
	}
	free(p);
	return NULL;
}

static uint64_t active(struct upg_heap *h)
{
	struct upg_heap_stats s;

	upg_heap_stats_get(h, &s);
	return s.active_bytes;
}

/* A thread exits holding freed blocks in its cache: they are flushed. */
Test(alloc, thread_cache_flushed_at_thread_exit)
{
	struct upg *u;
	struct upg_heap *h = t_heap(&u, 256 * MiB, NULL);
	struct churn c = { h, 200000, NULL, 0 };
	uint64_t before = active(h), after;
	pthread_t t;

	for (int round = 0; round < 3; round++) {
		pthread_create(&t, NULL, churn_main, &c);
		pthread_join(t, NULL);
	}
	cr_assert_eq(c.bad, 0, "%zu blocks overwritten", c.bad);
	after = active(h);
	/* 200000 blocks of 16-1024 bytes span ~100 MiB of slabs. Once
	 * flushed, all slabs but one empty slab per class are returned. */
	cr_assert_leq(after - before, 64 * 32 * PAGE,
		      "%lu KiB still active after the threads exited",
		      (unsigned long)((after - before) >> 10));
	t_heap_done(u, h);
}

/* Blocks allocated by exited threads, freed by another thread. */
Test(alloc, cross_thread_free_after_exit)
{
	struct upg *u;
	struct upg_heap *h = t_heap(&u, 256 * MiB, NULL);
	enum { T = 4, N = 20000 };
	void **keep = calloc(T * N, sizeof(void *));
	struct churn c[T];
	size_t bad = 0;
	pthread_t t[T];

	for (int i = 0; i < T; i++) {
		c[i] = (struct churn){ h, N, keep + i * N, 0 };
		pthread_create(&t[i], NULL, churn_main, &c[i]);
	}
	for (int i = 0; i < T; i++)
		pthread_join(t[i], NULL);
	for (size_t i = 0; i < T * N; i++) {
		bad += !check(keep[i], 16, i % N);
		upg_heap_free(h, keep[i]);
	}
	cr_assert_eq(bad, 0, "%zu blocks overwritten", bad);
	upg_heap_trim(h);
	cr_assert_leq(active(h), 64 * 32 * PAGE);
	free(keep);
	t_heap_done(u, h);
}

Test(alloc, freed_pages_are_discarded)
{
	const char *const opts[] = { "FREE_DIRTY=1M", NULL };
	struct upg *u;
	struct upg_heap *h = t_heap(&u, 64 * MiB, opts);
	struct upg_heap_stats hs;
	uint64_t before = t_stats(u).discard_pages;
	char *p = upg_heap_malloc(h, 8 << 20);
	size_t nonzero = 0;

	memset(p, 0x77, 8 << 20);
	upg_heap_free(h, p);
	upg_heap_stats_get(h, &hs);
	cr_assert_geq(t_stats(u).discard_pages - before, 2048,
		      "a free 8 MiB block beyond UPG_FREE_DIRTY is discarded");
	cr_assert_geq(hs.discarded_bytes, 8 << 20);
	cr_assert_eq(hs.dirty_bytes, 0);
	/* The same pages come back clean: calloc need not write them. */
	p = upg_heap_calloc(h, 1, 8 << 20);
	for (size_t i = 0; i < (8 << 20); i += 4096)
		nonzero += p[i] != 0;
	cr_assert_eq(nonzero, 0);
	upg_heap_free(h, p);
	t_heap_done(u, h);
}

/*
 * Over a runtime that follows REMOVE events, freed pages are discarded too
 * (each discard raises an event the runtime recognises as its own).
 */
Test(alloc, discards_with_remove_events)
{
	const char *const opts[] = { "REMOVE_EVENTS=on", "FREE_DIRTY=1M",
				     NULL };
	struct upg *u = t_runtime(64 * MiB, opts);
	struct upg_heap *h = NULL;
	uint64_t before;
	char *p;

	if (!u->caps.remove)
		cr_skip_test("the kernel lacks UFFD_FEATURE_EVENT_REMOVE");
	cr_assert_eq(upg_heap_create(u, 1UL << 30, &h), 0);
	before = t_stats(u).discard_pages;
	p = upg_heap_malloc(h, 8 << 20);
	memset(p, 1, 8 << 20);
	upg_heap_free(h, p);
	cr_assert_geq(t_stats(u).discard_pages - before, 1024);
	cr_assert_eq(t_stats(u).remove_events, 0,
		     "own discards taken for "
		     "the program's madvise");
	t_heap_done(u, h);
}

Test(alloc, small_frees_are_batched_not_discarded_one_by_one)
{
	struct upg *u;
	struct upg_heap *h = t_heap(&u, 256 * MiB, NULL);
	uint64_t before = t_stats(u).discard_pages;

	for (int i = 0; i < 100000; i++)
		upg_heap_free(h, upg_heap_malloc(h, 64 + (i % 8) * 512));
	/* Everything fits in the thread cache and the kept empty slabs. */
	cr_assert_eq(t_stats(u).discard_pages, before);
	t_heap_done(u, h);
}

/* With every page evicted, freeing faults nothing back in. */
static uint64_t faults_of(const struct upg_stats *s)
{
	return s->fault_zero + s->fault_pool + s->fault_same;
}

Test(alloc, free_never_faults_evicted_pages)
{
	const char *const opts[] = { "FREE_DIRTY=1M", NULL };
	struct upg *u;
	struct upg_heap *h = t_heap(&u, 16 * MiB, opts);
	enum { N = 200000 };
	void **p = calloc(N, sizeof(*p));
	struct upg_stats s0, s1;

	for (size_t i = 0; i < N; i++) {
		p[i] = upg_heap_malloc(h, 48 + (i % 16) * 96);
		fill(p[i], 48, i);
	}
	p[0] = upg_heap_realloc(h, p[0], 4 << 20); /* one large block too */
	t_evict_all(u, 4 * MiB, 16 * MiB);
	/*
	 * A fault is counted before its thread is woken: however long the
	 * handler then waits for a CPU, the counts now include every fault
	 * taken so far (once, they had to settle first: a count that came
	 * after free() had begun made this test fail on a busy machine).
	 */
	s0 = t_stats(u);
	cr_assert_gt(s0.evict_pages, 1000, "evicted %lu pages",
		     (unsigned long)s0.evict_pages);
	for (size_t i = N; i-- > 0;)
		upg_heap_free(h, p[i]);
	upg_heap_trim(h);
	s1 = t_stats(u);
	cr_assert_eq(faults_of(&s1), faults_of(&s0),
		     "free() faulted pages in: zero %lu->%lu pool %lu->%lu "
		     "same %lu->%lu",
		     (unsigned long)s0.fault_zero, (unsigned long)s1.fault_zero,
		     (unsigned long)s0.fault_pool, (unsigned long)s1.fault_pool,
		     (unsigned long)s0.fault_same,
		     (unsigned long)s1.fault_same);
	cr_assert_gt(s1.discard_pages, s0.discard_pages);
	free(p);
	t_heap_done(u, h);
}

Test(alloc, invalid_and_double_frees_are_reported)
{
	struct upg *u;
	struct upg_heap *h = t_heap(&u, 64 * MiB, NULL);
	struct upg_heap_stats s;
	char *big = upg_heap_malloc(h, 100000);
	char *small = upg_heap_malloc(h, 100);

	upg_heap_free(h, big + 4096); /* inside a page run */
	upg_heap_free(h, big);
	upg_heap_free(h, big); /* double free of a page run */
	upg_heap_free(h, small + 8);
	upg_heap_trim(h); /* small blocks are checked when caches flush */
	upg_heap_stats_get(h, &s);
	cr_assert_eq(s.invalid_frees, 3);
	upg_heap_free(h, small);
	t_heap_done(u, h);
}

Test(alloc, default_heap_and_foreign_pointers)
{
	char *p, *q;
	void *libc = malloc(100);

	p = upg_malloc(1000);
	if (!p)
		cr_skip_test("default heap unavailable: %s", upg_last_error());
	cr_assert(upg_heap_owns(upg_default_heap(), p));
	cr_assert_not(upg_heap_owns(upg_default_heap(), libc));
	cr_assert_eq(upg_usable_size(libc), 0);
	fill(p, 1000, 1);
	p = upg_realloc(p, 100000);
	cr_assert(check(p, 1000, 1));
	q = upg_calloc(10, 10);
	cr_assert_eq(q[99], 0);
	cr_assert_eq((uintptr_t)upg_aligned_alloc(4096, 10) % 4096, 0);
	cr_assert_geq(upg_usable_size(p), 100000);
	upg_free(p);
	upg_free(q);
	upg_free(NULL);
	free(libc);
}

/* The runtime's own threads allocate outside managed memory. */
Test(alloc, internal_threads_use_the_bootstrap_arena)
{
	struct upg_heap *h = upg_default_heap();
	char *p, *q;

	if (!h)
		cr_skip_test("default heap unavailable: %s", upg_last_error());
	upg_internal_enter();
	p = upg_malloc(100);
	q = upg_aligned_alloc(256, 5000);
	upg_internal_leave();
	cr_assert(upg_boot_owns(p) && upg_boot_owns(q));
	cr_assert_not(upg_owns(upg_heap_runtime(h), p));
	cr_assert_eq((uintptr_t)q % 256, 0);
	cr_assert_geq(upg_usable_size(q), 5000);
	fill(p, 100, 9);
	/* A normal thread reallocating it moves it into the heap. */
	p = upg_realloc(p, 200);
	cr_assert(upg_heap_owns(h, p));
	cr_assert(check(p, 100, 9));
	upg_free(p);
	upg_free(q);
}

struct reuser {
	struct upg *u;
	char *base;
	uint64_t *ver;
	size_t first, pages;
	unsigned rounds;
};

/* Discard random runs of our pages and rewrite them at once. */
static void *reuse_main(void *arg)
{
	struct reuser *r = arg;
	uint64_t s = r->first + 1;

	for (unsigned k = 0; k < r->rounds; k++) {
		size_t n = 1 + t_rand(&s) % 8;
		size_t i = r->first + t_rand(&s) % (r->pages - n);

		if (upg_discard(r->u, r->base + i * PAGE, n * PAGE))
			return (void *)1;
		for (size_t j = i; j < i + n; j++)
			t_page_fill(r->base + j * PAGE, T_TEXT, j, ++r->ver[j]);
		/* and touch a few others, so that the evictor keeps busy */
		for (int t = 0; t < 4; t++) {
			size_t j = r->first + t_rand(&s) % r->pages;

			r->base[j * PAGE + 100] ^= 0;
		}
	}
	return NULL;
}

/*
 * The allocator's pattern at the runtime level: discard pages, reuse them
 * at once, write, evict, read back. A REMOVE event the discard's own zap
 * raises must not be taken for the program's madvise once the pages hold
 * new data (it was, and later zapped the new contents).
 */
Test(alloc, discarded_pages_reused_at_once_keep_new_contents)
{
	struct upg *u = t_runtime(8 * MiB, NULL);
	enum { PAGES = 8192, T = 3 };
	char *base = t_region(u, PAGES * PAGE);
	uint64_t *ver = calloc(PAGES, sizeof(*ver));
	struct reuser r[T];
	pthread_t th[T];
	size_t bad = 0;

	for (size_t i = 0; i < PAGES; i++)
		t_page_fill(base + i * PAGE, T_TEXT, i, 0);
	for (int t = 0; t < T; t++) {
		r[t] = (struct reuser){ u,	   base, ver, t * (PAGES / T),
					PAGES / T, 4000 };
		pthread_create(&th[t], NULL, reuse_main, &r[t]);
	}
	for (int t = 0; t < T; t++) {
		void *ret;

		pthread_join(th[t], &ret);
		cr_assert_null(ret, "upg_discard failed");
	}
	t_evict_all(u, 4 * MiB, 8 * MiB);
	for (size_t i = 0; i < PAGES; i++)
		bad += !t_page_check(base + i * PAGE, T_TEXT, i, ver[i]);
	cr_assert_eq(bad, 0, "%zu of %d pages lost their contents", bad, PAGES);
	free(ver);
	upg_destroy(u);
}

/* ---- thread caches of a destroyed heap ---- */

struct holder {
	struct upg_heap *h, *h2;
	pthread_barrier_t *bar;
	size_t bad; /* blocks of h2 overwritten or not in h2 */
};

/* Fill a cache for @h, wait while @h is destroyed, then use @h2. */
static void *holder_main(void *arg)
{
	struct holder *t = arg;
	void *p[500];

	for (int i = 0; i < 500; i++)
		p[i] = upg_heap_malloc(t->h, 16 + (i % 40) * 24);
	for (int i = 0; i < 500; i++)
		upg_heap_free(t->h, p[i]); /* stay in this thread's cache */
	pthread_barrier_wait(t->bar);
	pthread_barrier_wait(t->bar); /* h destroyed, h2 created */
	for (int i = 0; i < 500; i++) {
		p[i] = upg_heap_malloc(t->h2, 16 + (i % 40) * 24);
		t->bad += !p[i] || !upg_heap_owns(t->h2, p[i]);
		if (p[i])
			fill(p[i], 16, i);
	}
	for (int i = 0; i < 500; i++) {
		t->bad += p[i] && !check(p[i], 16, i);
		upg_heap_free(t->h2, p[i]);
	}
	return NULL;
}

/*
 * Other live threads' caches for a destroyed heap are orphaned, then
 * recycled by their owners: the next heap never sees the old blocks, and
 * the cache memory comes back.
 */
Test(alloc, other_threads_caches_reclaimed_on_destroy)
{
	enum { T = 3 };
	struct upg *u;
	struct upg_heap *h = t_heap(&u, 64 * MiB, NULL), *h2;
	struct holder t[T];
	pthread_barrier_t bar;
	struct upg_heap_stats s;
	size_t mapped, spare;
	pthread_t th[T];

	pthread_barrier_init(&bar, NULL, T + 1);
	for (int i = 0; i < T; i++) {
		t[i] = (struct holder){ .h = h, .bar = &bar };
		pthread_create(&th[i], NULL, holder_main, &t[i]);
	}
	pthread_barrier_wait(&bar);
	upg_heap_destroy(h);
	cr_assert_eq(upg_heap_create(u, 4UL << 30, &h2), 0, "%s",
		     upg_last_error());
	for (int i = 0; i < T; i++)
		t[i].h2 = h2;
	pthread_barrier_wait(&bar);
	for (int i = 0; i < T; i++) {
		pthread_join(th[i], NULL);
		cr_assert_eq(t[i].bad, 0, "thread %d: %zu bad blocks", i,
			     t[i].bad);
	}
	/* Each thread recycled its orphan for h2, and gave that back at
	 * exit: no cache leaked. */
	upg_tcache_count(&mapped, &spare);
	cr_assert_eq(spare, mapped, "%zu caches mapped, %zu spare", mapped,
		     spare);
	cr_assert_geq(mapped, T);
	upg_heap_stats_get(h2, &s);
	cr_assert_eq(s.invalid_frees, 0);
	cr_assert_leq(s.active_bytes, 64 * 32 * PAGE);
	upg_heap_destroy(h2);
	upg_destroy(u);
	pthread_barrier_destroy(&bar);
}

static void *exit_holding(void *arg)
{
	struct holder *t = arg;

	for (int i = 0; i < 200; i++)
		upg_heap_free(t->h, upg_heap_malloc(t->h, 16 + i * 8));
	pthread_barrier_wait(t->bar);
	return NULL; /* exits while the heap is being destroyed */
}

/*
 * Threads exit (flushing their caches) while their heap is destroyed, or
 * the runtime under it: each exit finishes first or finds its cache
 * orphaned, and every cache comes back.
 */
Test(alloc, threads_exit_while_heap_or_runtime_destroyed)
{
	enum { T = 4 };

	for (int round = 0; round < 20; round++) {
		struct upg *u;
		struct upg_heap *h = t_heap(&u, 64 * MiB, NULL);
		struct holder t[T];
		pthread_barrier_t bar;
		size_t mapped, spare;
		pthread_t th[T];

		pthread_barrier_init(&bar, NULL, T + 1);
		for (int i = 0; i < T; i++) {
			t[i] = (struct holder){ .h = h, .bar = &bar };
			pthread_create(&th[i], NULL, exit_holding, &t[i]);
		}
		pthread_barrier_wait(&bar);
		if (round % 2)
			upg_heap_destroy(h);
		upg_destroy(u); /* takes a heap still on it along */
		for (int i = 0; i < T; i++)
			pthread_join(th[i], NULL);
		upg_tcache_count(&mapped, &spare);
		cr_assert_eq(spare, mapped, "round %d: %zu mapped, %zu spare",
			     round, mapped, spare);
		pthread_barrier_destroy(&bar);
	}
}

/* ---- fork() while the default heap is created ---- */

static atomic_bool go;

static void *first_alloc(void *arg)
{
	while (!atomic_load(&go))
		;
	for (int i = 0; i < 100; i++) {
		char *p = upg_malloc(16 + i * 40);

		if (p)
			p[0] = 1;
		upg_free(p);
	}
	return arg;
}

/* A fork child: allocate, use, free, exit 0 (never an assertion here). */
static void child_allocates(void)
{
	for (int i = 0; i < 200; i++) {
		char *p = upg_malloc(16 + i * 100);

		if (!p)
			_exit(2);
		memset(p, i, 16 + i * 100);
		if (p[15 + i * 100] != (char)i)
			_exit(3);
		upg_free(p);
	}
	_exit(0);
}

/* Wait up to @ms for @pid; its exit status, or 100 + signal, or 99. */
static int child_status(pid_t pid, int ms)
{
	int st;

	for (int t = 0; t < ms; t++) {
		if (waitpid(pid, &st, WNOHANG) == pid)
			return WIFEXITED(st) ? WEXITSTATUS(st)
					     : 100 + WTERMSIG(st);
		usleep(1000);
	}
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
	return 99; /* hung: a lock held across fork */
}

/*
 * In a process that has no default heap yet: threads allocate for the
 * first time (one of them creates the heap) while this thread forks again
 * and again, before, during and after the creation. Return: 0, or the
 * first failing child's status; *@early: forks started before the heap
 * was up.
 */
static int creation_race(unsigned *early)
{
	enum { T = 3 };
	pthread_t th[T];
	int bad = 0;

	if (upg_front_heap_if_ready())
		return 98;
	for (int i = 0; i < T; i++)
		pthread_create(&th[i], NULL, first_alloc, NULL);
	atomic_store(&go, true);
	for (int k = 0; k < 12 && !bad; k++) {
		pid_t pid;

		*early += !upg_front_heap_if_ready();
		pid = fork();
		if (pid < 0)
			return 97;
		if (!pid)
			child_allocates();
		bad = child_status(pid, 20000);
	}
	for (int i = 0; i < T; i++)
		pthread_join(th[i], NULL);
	return bad;
}

Test(alloc, fork_while_default_heap_is_created)
{
	unsigned early = 0;
	int *shared = mmap(NULL, PAGE, PROT_READ | PROT_WRITE,
			   MAP_SHARED | MAP_ANONYMOUS, -1, 0);

	cr_assert_null(upg_front_heap_if_ready(), "default heap already up");
	{
		struct upg *u = t_runtime(64 * MiB, NULL); /* skips if none */

		upg_destroy(u);
	}
	for (int round = 0; round < 15; round++) {
		pid_t pid = fork();
		int st;

		if (pid < 0)
			cr_assert_fail("fork: %s", strerror(errno));
		if (!pid) { /* no assertion in here: it would hang the runner */
			unsigned e = 0;
			int r = creation_race(&e);

			__atomic_add_fetch(shared, e, __ATOMIC_RELAXED);
			_exit(r);
		}
		st = child_status(pid, 120000);
		cr_assert_eq(st, 0,
			     "round %d: status %d (99: a child hung, 98: "
			     "heap up before the race)",
			     round, st);
	}
	early = (unsigned)__atomic_load_n(shared, __ATOMIC_RELAXED);
	cr_log_info("%u forks started before the heap was up", early);
	cr_assert_gt(early, 0, "no fork raced with the creation");
	munmap(shared, PAGE);
}

/* ---- fork(): blocks in the caches of threads the child has not ---- */

enum { CACHED = 100 }; /* 1 KiB blocks: under the bin's 128 slots */

/* Cache blocks of 1 KiB for @t->h (4 to a one-page slab), wait for a fork. */
static void *cache_blocks(void *arg)
{
	struct holder *t = arg;
	void *p[CACHED];

	for (int i = 0; i < CACHED; i++) {
		p[i] = upg_heap_malloc(t->h, 1024);
		memset(p[i], 1, 1024);
	}
	for (int i = 0; i < CACHED; i++)
		upg_heap_free(t->h, p[i]);
	pthread_barrier_wait(t->bar); /* cached */
	pthread_barrier_wait(t->bar); /* forked */
	return NULL;
}

/*
 * A fork child (no assertion in here): 0 if the absent thread's blocks
 * came back to the slabs (all but one of their slabs given back to the
 * page layer, its cache spare) and can be used; else the failed step.
 */
static int child_reclaimed(struct upg_heap *h, size_t active, size_t spare)
{
	size_t mapped, spare_now;
	struct upg_heap_stats s;
	void *p[CACHED];

	upg_heap_stats_get(h, &s);
	upg_tcache_count(&mapped, &spare_now);
	if (s.active_bytes + (CACHED / 4 - 2) * PAGE > active)
		return 1;
	if (spare_now < spare + 1)
		return 2;
	for (int i = 0; i < CACHED; i++) {
		p[i] = upg_heap_malloc(h, 1024);
		if (!p[i])
			return 3;
		fill(p[i], 1024, (size_t)i);
	}
	for (int i = 0; i < CACHED; i++)
		if (!check(p[i], 1024, (size_t)i))
			return 4;
	upg_heap_stats_get(h, &s);
	return s.invalid_frees ? 5 : 0;
}

/*
 * A fork child inherits the caches of threads that do not exist there:
 * their blocks go back to the child's heap instead of leaking, and the
 * parent's caches are untouched.
 */
Test(alloc, fork_child_reclaims_other_threads_cached_blocks)
{
	struct upg *u;
	struct upg_heap *h = t_heap(&u, 64 * MiB, NULL);
	pthread_barrier_t bar;
	struct upg_heap_stats s, after;
	size_t mapped, spare;
	struct holder t;
	pthread_t th;
	pid_t pid;
	int st;

	pthread_barrier_init(&bar, NULL, 2);
	t = (struct holder){ .h = h, .bar = &bar };
	pthread_create(&th, NULL, cache_blocks, &t);
	pthread_barrier_wait(&bar);
	upg_heap_stats_get(h, &s);
	upg_tcache_count(&mapped, &spare);
	pid = fork();
	if (pid < 0)
		cr_assert_fail("fork: %s", strerror(errno));
	if (!pid) /* no assertion in the child: it would hang the runner */
		_exit(child_reclaimed(h, s.active_bytes, spare));
	st = child_status(pid, 60000);
	upg_heap_stats_get(h, &after);
	pthread_barrier_wait(&bar);
	pthread_join(th, NULL);
	cr_assert_eq(st, 0,
		     "child: status %d (1: blocks not reclaimed, 2: cache not "
		     "recycled, 3-5: reclaimed blocks unusable)",
		     st);
	cr_assert_eq(after.active_bytes, s.active_bytes,
		     "the parent's heap changed");
	pthread_barrier_destroy(&bar);
	t_heap_done(u, h);
}

/* Blocks made by one thread and freed by another, in batches of 256. */
struct relay {
	struct upg_heap *h;
	pthread_mutex_t lock;
	void **batch; /* handed over, or NULL */
	atomic_bool stop;
	atomic_bool pause; /* while a child runs */
};

/* Whether to go on; sleeps while paused. */
static bool relay_on(struct relay *r)
{
	while (atomic_load(&r->pause) && !atomic_load(&r->stop))
		usleep(1000);
	return !atomic_load(&r->stop);
}

static void *relay_make(void *arg)
{
	struct relay *r = arg;
	uint64_t seed = 12345;

	while (relay_on(r)) {
		void **b = malloc(256 * sizeof(void *));

		for (int i = 0; i < 256; i++) {
			size_t n = 16 + (seed >> 33) % 2000;

			seed = seed * 6364136223846793005ULL + 1;
			b[i] = upg_heap_malloc(r->h, n);
			/* resident: a child need not fault it in */
			memset(b[i], 2, n);
		}
		pthread_mutex_lock(&r->lock);
		while (r->batch && !atomic_load(&r->stop)) {
			pthread_mutex_unlock(&r->lock);
			sched_yield();
			pthread_mutex_lock(&r->lock);
		}
		if (!r->batch) {
			r->batch = b;
			b = NULL;
		}
		pthread_mutex_unlock(&r->lock);
		free(b); /* stopping: the blocks stay allocated */
	}
	return NULL;
}

static void *relay_free(void *arg)
{
	struct relay *r = arg;

	while (relay_on(r)) {
		void **b;

		pthread_mutex_lock(&r->lock);
		b = r->batch;
		r->batch = NULL;
		pthread_mutex_unlock(&r->lock);
		if (!b) {
			sched_yield();
			continue;
		}
		for (int i = 0; i < 256; i++)
			upg_heap_free(r->h, b[i]);
		free(b);
	}
	return NULL;
}

/*
 * A fork child (no assertion in here): nothing reclaimed twice or in use
 * (@mine: the forking thread's blocks keep their contents while the child
 * allocates and fills fresh ones).
 */
static int child_heap_sound(struct upg_heap *h, char **mine, int n)
{
	struct upg_heap_stats s;
	void *p[1000];

	upg_heap_stats_get(h, &s);
	if (s.invalid_frees)
		return 1;
	for (int i = 0; i < 1000; i++) {
		p[i] = upg_heap_malloc(h, 16 + (size_t)i * 2);
		if (!p[i])
			return 2;
		fill(p[i], 16 + (size_t)i * 2, (size_t)i + 7);
	}
	for (int i = 0; i < n; i++)
		if (!check(mine[i], 64 + (size_t)i, (size_t)i))
			return 3;
	for (int i = 0; i < 1000; i++)
		if (!check(p[i], 16 + (size_t)i * 2, (size_t)i + 7))
			return 4;
	upg_heap_stats_get(h, &s);
	return s.invalid_frees ? 5 : 0;
}

/*
 * Forks while one thread allocates and another frees those blocks (its
 * bins flush to the slabs all the time): whatever the other threads were
 * doing, a child reclaims their cached blocks without freeing one twice or
 * one still in use.
 */
Test(alloc, fork_child_reclaims_caches_while_threads_relay_blocks,
     .timeout = 120)
{
	enum { MINE = 500, FORKS = 150 };
	struct upg *u;
	struct upg_heap *h = t_heap(&u, 256 * MiB, NULL);
	struct relay r = { .h = h };
	struct upg_heap_stats s;
	char *mine[MINE];
	pthread_t th[2];

	pthread_mutex_init(&r.lock, NULL);
	for (int i = 0; i < MINE; i++) {
		mine[i] = upg_heap_malloc(h, 64 + (size_t)i);
		fill(mine[i], 64 + (size_t)i, (size_t)i);
	}
	pthread_create(&th[0], NULL, relay_make, &r);
	pthread_create(&th[1], NULL, relay_free, &r);
	for (int k = 0; k < FORKS; k++) {
		pid_t pid;
		int st;

		usleep(500 + (unsigned)k * 97 % 3000);
		pid = fork();
		if (pid < 0)
			cr_assert_fail("fork: %s", strerror(errno));
		if (!pid) /* no assertion in the child */
			_exit(child_heap_sound(h, mine, MINE));
		atomic_store(&r.pause, true);
		st = child_status(pid, 60000);
		atomic_store(&r.pause, false);
		cr_assert_eq(st, 0,
			     "fork %d: child status %d (1, 5: a block "
			     "reclaimed twice, 3, 4: one in use)",
			     k, st);
	}
	atomic_store(&r.stop, true);
	pthread_join(th[0], NULL);
	pthread_join(th[1], NULL);
	upg_heap_stats_get(h, &s);
	cr_assert_eq(s.invalid_frees, 0);
	for (int i = 0; i < MINE; i++)
		cr_assert(check(mine[i], 64 + (size_t)i, (size_t)i));
	t_heap_done(u, h);
}

/*
 * free() finds a small block's class in the byte-per-page map: a slab's
 * pages carry its class while it lives and lose it when the slab goes back
 * to the page layer, so a page run later made of those pages is freed as
 * one (a stale class would put it in a thread cache as a small block).
 */
Test(alloc, page_class_map_follows_slabs_and_runs)
{
	enum { N = 20000 };
	struct upg *u;
	struct upg_heap *h = t_heap(&u, 64 * MiB, NULL);
	char **p = calloc(N, sizeof(*p));
	char *lo = NULL, *hi = NULL, *big;
	size_t classed = 0;
	struct upg_heap_stats s;

	for (int i = 0; i < N; i++) {
		p[i] = upg_heap_malloc(h, 48);
		cr_assert_eq(upg_page_class(h, p[i]), (int)upg_size_class(48));
		lo = !lo || p[i] < lo ? p[i] : lo;
		hi = !hi || p[i] > hi ? p[i] : hi;
	}
	for (int i = 0; i < N; i++)
		upg_heap_free(h, p[i]);
	upg_heap_trim(h); /* flush: every slab but one goes back */
	for (char *a = lo; a <= hi; a += PAGE)
		classed += upg_page_class(h, a) >= 0;
	cr_assert_leq(classed, 8, "%zu pages still carry a class", classed);
	big = upg_heap_malloc(h, 16 * PAGE); /* first fit: the old slabs */
	cr_assert(big >= lo && big <= hi, "the run reuses the slabs' pages");
	for (size_t k = 0; k < 16; k++)
		cr_assert_lt(upg_page_class(h, big + k * PAGE), 0);
	cr_assert_eq(upg_heap_usable_size(h, big), 16 * PAGE);
	upg_heap_free(h, big);
	upg_heap_stats_get(h, &s);
	cr_assert_eq(s.invalid_frees, 0);
	cr_assert_leq(s.active_bytes, 8 * PAGE, "the run was not freed");
	free(p);
	t_heap_done(u, h);
}

/*
 * A thread's successive blocks of a class come out of fresh slabs in
 * address order, so that the program's first touches of new pages form a
 * sequential stream that fault-around serves several pages at a time.
 */
Test(alloc, fresh_blocks_come_out_in_address_order)
{
	enum { N = 1000 };
	struct upg *u;
	struct upg_heap *h = t_heap(&u, 64 * MiB, NULL);
	char *prev = upg_heap_malloc(h, 100), *p;
	unsigned up = 0;

	for (int i = 0; i < N; i++, prev = p) {
		p = upg_heap_malloc(h, 100);
		up += p > prev;
	}
	/* Only a jump back to the next refill's start may go down. */
	cr_assert_geq(up, N * 9 / 10, "%u of %d steps went up", up, N);
	t_heap_done(u, h);
}
