/* SPDX-License-Identifier: MIT */
/*
 * The runtime's API and semantics: regions, discard, budget changes,
 * system calls on evicted pages, same-filled and incompressible pages,
 * clean pages, program madvise, option errors, refused userfaultfd.
 */
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../lib/testing.h"
#include "helpers.h"

TestSuite(runtime, .timeout = 120);

static long rss_kib(void)
{
	long pages = 0, rss = 0;
	FILE *f = fopen("/proc/self/statm", "r");

	cr_assert(f);
	cr_assert_eq(fscanf(f, "%ld %ld", &pages, &rss), 2);
	fclose(f);
	return rss * 4;
}

Test(runtime, create_reports_version_and_features)
{
	struct upg *u = t_runtime(64 * MiB, NULL);

	cr_expect_str_eq(upg_version(), UPG_VERSION_STRING);
	cr_expect(strstr(upg_features(u), "handlers="));
	cr_expect_eq(upg_get_budget(u), 64 * MiB);
	upg_destroy(u);
}

Test(runtime, fresh_region_reads_zero_and_keeps_writes)
{
	struct upg *u = t_runtime(64 * MiB, NULL);
	char *m = t_region(u, 8 * MiB);

	for (size_t i = 0; i < 8 * MiB; i += PAGE)
		cr_assert_eq(m[i], 0);
	t_fill(m, 8 * MiB / PAGE, T_TEXT);
	cr_expect_eq(t_verify(m, 8 * MiB / PAGE, T_TEXT), 0);
	cr_expect(upg_owns(u, m + 5));
	cr_expect(!upg_owns(u, &u));
	upg_destroy(u);
}

Test(runtime, one_tib_reservation_is_cheap)
{
	struct upg *u = t_runtime(64 * MiB, NULL);
	long before = rss_kib();
	size_t tib = 1UL << 40;
	char *m = t_region(u, tib);

	m[0] = 1;
	m[tib / 2] = 2;
	m[tib - 1] = 3;
	cr_expect_eq(m[0] + m[tib / 2] + m[tib - 1], 6);
	/* Page-table pages for three touched spots, not 2 GiB of entries. */
	cr_expect_lt(rss_kib() - before, 8 * 1024, "RSS grew %ld KiB",
		     rss_kib() - before);
	cr_expect_eq(upg_release(u, m), 0);
	upg_destroy(u);
}

/*
 * @ops read-modify-writes of random pages of @m (@n text pages): each is
 * read first (a read fault keeps the page's copy, while copies are kept),
 * then written again: as version ver[i] + 1, or as version 0 again if
 * @ver is NULL.
 */
static void rmw_random(char *m, size_t n, int ops, uint64_t seed, uint8_t *ver)
{
	for (int op = 0; op < ops; op++) {
		size_t i = (size_t)(t_rand(&seed) % n);
		uint8_t v = ver ? ver[i] : 0;

		cr_assert(t_page_check(m + i * PAGE, T_TEXT, i, v), "page %zu",
			  i);
		t_page_fill(m + i * PAGE, T_TEXT, i, ver ? ++ver[i] : 0);
	}
}

/*
 * 32 MiB of text through an 8 MiB budget, read-modify-written at random
 * until the evictor has given pool copies up (nearly every one is freed
 * unused); the test is skipped without UFFD_FEATURE_WP_ASYNC (@why).
 */
static struct upg *copies_given_up(char **m, size_t *n, uint64_t seed,
				   const char *why)
{
	struct upg *u = t_runtime(8 * MiB, NULL);

	*n = 32 * MiB / PAGE;
	*m = t_region(u, 32 * MiB);
	if (!strstr(upg_features(u), "wp_async"))
		cr_skip_test("no UFFD_FEATURE_WP_ASYNC: %s", why);
	t_fill(*m, *n, T_TEXT);
	rmw_random(*m, *n, 40000, seed, NULL);
	cr_assert_gt(t_stats(u).copy_skipped, 0, "copies were never given up");
	return u;
}

/*
 * Copies dropped by the handlers (given up: they did not pay off) are
 * freed by the evictor later; a release must not leave them behind. The
 * budget is raised first so that no evictor pass frees them meanwhile.
 */
Test(runtime, release_frees_dropped_copies)
{
	size_t n;
	char *m;
	struct upg *u = copies_given_up(&m, &n, 3, "no copies are kept");

	cr_assert_eq(upg_set_budget(u, 64 * MiB), 0);
	cr_assert_eq(t_verify(m, n, T_TEXT), 0); /* reads back, drops copies */
	cr_expect_eq(upg_release(u, m), 0);
	cr_expect_eq(t_stats(u).pool_objects, 0);
	upg_destroy(u);
}

/* Minor faults taken by the calling thread so far. */
static long thread_minflt(void)
{
	struct rusage ru;

	cr_assert_eq(getrusage(RUSAGE_THREAD, &ru), 0);
	return ru.ru_minflt;
}

/*
 * A page read back without a kept copy is installed writable: a
 * read-modify-write miss is one fault (the missing page, counted as a
 * minor fault when the thread retries), not that and then a write-protect
 * fault on the first store. Only pages that keep a copy need the
 * protection. Beyond one fault a miss, the thread takes one for each copy
 * kept and write-protect faults on resident pages the clock protected
 * again (its reference bits: ~a tenth of the misses here); with every
 * page read back protected, it was one more a miss.
 */
Test(runtime, read_modify_write_miss_is_one_fault)
{
	size_t n;
	char *m;
	struct upg *u = copies_given_up(&m, &n, 3, "nothing is protected");
	struct upg_stats s0 = t_stats(u), s1;
	uint64_t misses, kept;
	long f0, extra;

	f0 = thread_minflt();
	rmw_random(m, n, 4000, 4, NULL);
	extra = thread_minflt() - f0;
	s1 = t_stats(u);
	misses = s1.fault_pool - s0.fault_pool;
	kept = s1.copy_skipped - s0.copy_skipped;
	kept = misses > kept ? misses - kept : 0;
	cr_assert_gt(misses, 1000, "only %llu misses",
		     (unsigned long long)misses);
	extra -= (long)misses;
	cr_assert_leq(extra, (long)(kept + misses / 4),
		      "%ld faults beyond one a miss (%llu misses, %llu "
		      "copies kept)",
		      extra, (unsigned long long)misses,
		      (unsigned long long)kept);
	upg_destroy(u);
}

Test(runtime, release_frees_everything_stored)
{
	struct upg *u = t_runtime(8 * MiB, NULL);
	char *m = t_region(u, 32 * MiB);

	t_fill(m, 32 * MiB / PAGE, T_TEXT);
	cr_expect_gt(t_stats(u).pool_objects, 0);
	cr_expect_eq(upg_release(u, m), 0);
	cr_expect_eq(t_stats(u).pool_objects, 0);
	cr_expect_eq(t_stats(u).resident, 0, "resident %lu",
		     (unsigned long)t_stats(u).resident);
	cr_expect_eq(upg_release(u, m), -ENOENT);
	upg_destroy(u);
}

Test(runtime, many_regions)
{
	struct upg *u = t_runtime(16 * MiB, NULL);
	char *r[1000];

	for (int i = 0; i < 1000; i++) {
		r[i] = t_region(u, 64 * 1024);
		r[i][i] = (char)i;
	}
	for (int i = 0; i < 1000; i++)
		cr_assert_eq(r[i][i], (char)i);
	for (int i = 0; i < 1000; i += 2)
		cr_assert_eq(upg_release(u, r[i]), 0);
	for (int i = 1; i < 1000; i += 2)
		cr_assert_eq(r[i][i], (char)i);
	upg_destroy(u);
}

Test(runtime, discard_reads_zero_and_frees_copies)
{
	struct upg *u = t_runtime(8 * MiB, NULL);
	size_t n = 32 * MiB / PAGE;
	char *m = t_region(u, 32 * MiB);
	uint64_t objects;

	t_fill(m, n, T_TEXT);
	objects = t_stats(u).pool_objects;
	cr_assert_gt(objects, n / 2);
	/* Discard the first half: evicted and resident pages alike. */
	cr_assert_eq(upg_discard(u, m, 16 * MiB), 0);
	cr_expect_lt(t_stats(u).pool_objects, objects - n / 4,
		     "stored copies not freed at once");
	for (size_t i = 0; i < n / 2; i++)
		cr_assert_eq(*(uint64_t *)(m + i * PAGE), 0, "page %zu", i);
	for (size_t i = n / 2; i < n; i++)
		cr_assert(t_page_check(m + i * PAGE, T_TEXT, i, 0), "page %zu",
			  i);
	cr_expect_eq(upg_discard(u, m + 1, PAGE), -EINVAL);
	cr_expect(strstr(upg_last_error(), "aligned"));
	cr_expect_eq(upg_discard(u, m, 64 * MiB), -EINVAL);
	upg_destroy(u);
}

/*
 * Fill 64 MiB of text under an 8 MiB budget, discard every page but one in
 * @keep (all of them if @keep is 0) and wait up to 5 s for @done to be true
 * of the statistics and the pool's size before the discards. Kept pages
 * must still hold their data. Return: pool bytes used then over bytes used
 * before the discards; *@end the statistics then.
 */
static double pool_left_after_discards(const char *const *opts, size_t keep,
				       bool (*done)(const struct upg_stats *,
						    uint64_t),
				       struct upg_stats *end)
{
	struct upg *u = t_runtime(8 * MiB, opts);
	size_t n = 64 * MiB / PAGE;
	char *m = t_region(u, 64 * MiB);
	uint64_t before;

	t_fill(m, n, T_TEXT);
	before = t_stats(u).pool_used_bytes;
	cr_assert_gt(before, 16 * MiB);
	for (size_t i = 0; i < n; i++)
		if (!keep || i % keep)
			cr_assert_eq(upg_discard(u, m + i * PAGE, PAGE), 0);
	for (int t = 0; t < 500; t++) {
		*end = t_stats(u);
		if (done(end, before))
			break;
		usleep(10000);
	}
	for (size_t i = 0; keep && i < n; i += keep)
		cr_assert(t_page_check(m + i * PAGE, T_TEXT, i, 0), "page %zu",
			  i);
	upg_destroy(u);
	return (double)end->pool_used_bytes / (double)before;
}

/* Below half its size, its holes compacted (a quarter of it at most). */
static bool compacted(const struct upg_stats *s, uint64_t before)
{
	return s->pool_used_bytes < before / 2 &&
	       s->pool_hole_bytes < s->pool_used_bytes / 4;
}

/* Three pages of four discarded: every chunk keeps a quarter. */
Test(runtime, pool_gives_back_memory_after_frees)
{
	const char *const off[] = { "POOL_COMPACT=off", NULL };
	struct upg_stats s;
	double left;

	/* Without compaction nearly every chunk still holds objects. */
	left = pool_left_after_discards(off, 4, compacted, &s);
	cr_assert_gt(left, 0.6, "without compaction %.2f left", left);
	cr_assert_eq(s.pool_compactions, 0);

	left = pool_left_after_discards(NULL, 4, compacted, &s);
	cr_assert_leq(left, 0.4, "%.2f of the pool left", left);
	cr_assert_gt(s.pool_compactions, 0);
	cr_assert_gt(s.pool_compact_moved, 0);
	cr_assert_gt(s.pool_compact_freed, 0);
	cr_assert_lt(s.pool_hole_bytes, s.pool_used_bytes / 4);
}

/* Below a tenth of its size, all of that parked chunks. */
static bool trimmed(const struct upg_stats *s, uint64_t before)
{
	return s->pool_used_bytes < before / 10 &&
	       s->pool_parked_bytes == s->pool_used_bytes;
}

/* Everything discarded: every chunk empties and is parked for reuse. */
Test(runtime, parked_chunks_given_back_without_write_back)
{
	const char *const off[] = { "POOL_COMPACT=off", NULL };
	struct upg_stats s;
	double left;

	left = pool_left_after_discards(off, 0, trimmed, &s);
	cr_assert_gt(left, 0.6, "the chunks were not parked: %.2f left", left);
	cr_assert_eq(s.pool_objects, 0);
	left = pool_left_after_discards(NULL, 0, trimmed, &s);
	cr_assert_leq(left, 0.1, "%.2f of the pool left", left);
	cr_assert_eq(s.pool_parked_bytes, s.pool_used_bytes,
		     "%llu of %llu parked",
		     (unsigned long long)s.pool_parked_bytes,
		     (unsigned long long)s.pool_used_bytes);
}

Test(runtime, budget_shrink_evicts_down_and_grow_refills)
{
	struct upg *u = t_runtime(64 * MiB, NULL);
	size_t n = 48 * MiB / PAGE;
	char *m = t_region(u, 48 * MiB);
	struct upg_stats s;

	t_fill(m, n, T_TEXT);
	cr_assert_geq(t_stats(u).resident, n);
	cr_assert_eq(upg_set_budget(u, 8 * MiB), 0, "%s", upg_last_error());
	s = t_stats(u);
	cr_expect_leq(s.resident, 8 * MiB / PAGE);
	cr_expect_eq(s.budget, 8 * MiB / PAGE);
	cr_assert_eq(upg_set_budget(u, 64 * MiB), 0);
	cr_expect_eq(t_verify(m, n, T_TEXT), 0);
	cr_expect_geq(t_stats(u).resident, n / 2);
	cr_expect_eq(upg_set_budget(u, 0), -EINVAL);
	cr_expect(strstr(upg_last_error(), "UPG_BUDGET"));
	upg_destroy(u);
}

struct churn {
	char *m;
	size_t n;
	_Atomic bool stop;
	_Atomic uint64_t *sum;
};

static void *churn_thread(void *arg)
{
	struct churn *c = arg;
	uint64_t s = 42;

	while (!atomic_load(&c->stop)) {
		size_t p = t_rand(&s) % c->n;

		__atomic_fetch_add((uint64_t *)(c->m + p * PAGE + 64), 1,
				   __ATOMIC_RELAXED);
		atomic_fetch_add(&c->sum[p], 1);
	}
	return NULL;
}

Test(runtime, budget_changes_while_threads_run)
{
	struct upg *u = t_runtime(32 * MiB, NULL);
	struct churn c = { .n = 32 * MiB / PAGE };
	pthread_t th[2];

	c.m = t_region(u, 32 * MiB);
	c.sum = calloc(c.n, sizeof(*c.sum));
	for (int t = 0; t < 2; t++)
		pthread_create(&th[t], NULL, churn_thread, &c);
	for (int i = 0; i < 20; i++) {
		size_t b = (i % 2 ? 4 + i : 32) * MiB;

		cr_assert_eq(upg_set_budget(u, b), 0, "%s", upg_last_error());
		cr_expect_leq(t_stats(u).resident, b / PAGE + 2 * 16,
			      "resident over budget after shrink");
		usleep(20000);
	}
	atomic_store(&c.stop, true);
	for (int t = 0; t < 2; t++)
		pthread_join(th[t], NULL);
	for (size_t p = 0; p < c.n; p++)
		cr_assert_eq(*(uint64_t *)(c.m + p * PAGE + 64),
			     atomic_load(&c.sum[p]), "page %zu", p);
	free(c.sum);
	upg_destroy(u);
}

/* read(2), write(2), pread(2) with managed memory as buffer. */
Test(runtime, system_calls_on_evicted_pages)
{
	struct upg *u = t_runtime(4 * MiB, NULL);
	size_t len = 16 * MiB, n = len / PAGE;
	char *m = t_region(u, 2 * len);
	char *src = m, *dst = m + len;
	char path[] = "/tmp/upg-test-XXXXXX";
	int fd = mkstemp(path);
	char *check = malloc(len);

	cr_assert_geq(fd, 0);
	unlink(path);
	t_fill(src, n, T_TEXT);
	/* write(2) from evicted pages. */
	cr_assert_eq(write(fd, src, len), (ssize_t)len);
	cr_assert_eq(pread(fd, check, len, 0), (ssize_t)len);
	cr_assert_eq(t_verify(check, n, T_TEXT), 0);
	/* read(2) into pages that were never touched, then evicted ones. */
	cr_assert_eq(pread(fd, dst, len, 0), (ssize_t)len);
	cr_assert_eq(t_verify(dst, n, T_TEXT), 0);
	t_evict_all(u, 4 * MiB, 4 * MiB);
	memset(check, 0x5a, len);
	cr_assert_eq(pwrite(fd, check, len, 0), (ssize_t)len);
	cr_assert_eq(pread(fd, src, len, 0), (ssize_t)len);
	for (size_t i = 0; i < len; i += 4093)
		cr_assert_eq((unsigned char)src[i], 0x5a, "byte %zu", i);
	cr_assert_eq(t_verify(dst, n, T_TEXT), 0);
	close(fd);
	free(check);
	upg_destroy(u);
}

Test(runtime, same_filled_pages_take_no_space)
{
	struct upg *u = t_runtime(4 * MiB, NULL);
	size_t n = 32 * MiB / PAGE;
	char *m = t_region(u, 32 * MiB);
	struct upg_stats s;

	t_fill(m, n, T_SAME);
	s = t_stats(u);
	cr_expect_gt(s.evict_same, n / 2);
	cr_expect_gt(s.pool_same, n / 2);
	cr_expect_lt(s.pool_used_bytes, 1 * MiB,
		     "same-filled pages used %llu bytes",
		     (unsigned long long)s.pool_used_bytes);
	cr_expect_eq(t_verify(m, n, T_SAME), 0);
	cr_expect_gt(t_stats(u).fault_same, 0);
	upg_destroy(u);
}

Test(runtime, incompressible_pages_are_stored_raw)
{
	struct upg *u = t_runtime(4 * MiB, NULL);
	size_t n = 16 * MiB / PAGE;
	char *m = t_region(u, 16 * MiB);

	t_fill(m, n, T_RANDOM);
	cr_expect_gt(t_stats(u).evict_raw, n / 2);
	cr_expect_eq(t_verify(m, n, T_RANDOM), 0);
	upg_destroy(u);
}

Test(runtime, text_pages_compress)
{
	struct upg *u = t_runtime(4 * MiB, NULL);
	size_t n = 32 * MiB / PAGE;
	char *m = t_region(u, 32 * MiB);
	struct upg_stats s;

	t_fill(m, n, T_TEXT);
	s = t_stats(u);
	cr_expect_gt(s.evict_compressed, n / 2);
	cr_expect_gt(s.pool_stored_bytes, 2 * s.pool_compressed_bytes,
		     "ratio below 2: %llu / %llu",
		     (unsigned long long)s.pool_stored_bytes,
		     (unsigned long long)s.pool_compressed_bytes);
	cr_expect_eq(t_verify(m, n, T_TEXT), 0);
	upg_destroy(u);
}

/* Pages read back and not written are dropped, not compressed again. */
Test(runtime, clean_pages_are_dropped_not_recompressed)
{
	struct upg *u = t_runtime(4 * MiB, NULL);
	size_t n = 32 * MiB / PAGE;
	char *m = t_region(u, 32 * MiB);
	struct upg_stats a, b;

	if (!strstr(upg_features(u), "wp_async"))
		cr_skip_test("no UFFD_FEATURE_WP_ASYNC: every page is dirty");
	t_fill(m, n, T_TEXT);
	cr_assert_eq(t_verify(m, n, T_TEXT), 0); /* reads everything back */
	a = t_stats(u);
	cr_assert_eq(t_verify(m, n, T_TEXT), 0); /* and again: evicts clean */
	b = t_stats(u);
	cr_expect_gt(b.evict_clean_drop - a.evict_clean_drop, n / 2);
	cr_expect_lt(b.evict_compressed - a.evict_compressed, n / 20,
		     "clean pages recompressed");
	upg_destroy(u);
}

/* A clean page written after it came back must be stored again. */
Test(runtime, written_pages_after_refault_are_stored_again)
{
	struct upg *u = t_runtime(4 * MiB, NULL);
	size_t n = 16 * MiB / PAGE;
	char *m = t_region(u, 16 * MiB);

	t_fill(m, n, T_TEXT);
	cr_assert_eq(t_verify(m, n, T_TEXT), 0);
	for (size_t i = 0; i < n; i++)
		t_page_fill(m + i * PAGE, T_TEXT, i, 1);
	t_evict_all(u, 4 * MiB, 4 * MiB);
	for (size_t i = 0; i < n; i++)
		cr_assert(t_page_check(m + i * PAGE, T_TEXT, i, 1), "page %zu",
			  i);
	upg_destroy(u);
}

/*
 * Read-modify-write of pages brought back from the pool: their copies die
 * at the write, and the reaper must free them before the hand comes round.
 */
Test(runtime, copies_of_written_pages_are_reaped)
{
	struct upg *u = t_runtime(8 * MiB, NULL);
	size_t n = 32 * MiB / PAGE;
	char *m = t_region(u, 32 * MiB);
	uint8_t *ver = calloc(n, 1);
	struct upg_stats st;

	if (!strstr(upg_features(u), "wp_async"))
		cr_skip_test("no UFFD_FEATURE_WP_ASYNC: every page is dirty");
	cr_assert(ver);
	t_fill(m, n, T_TEXT);
	rmw_random(m, n, 40000, 42, ver);
	st = t_stats(u);
	cr_expect_gt(st.reap_copies, 0, "no copy reaped (%llu passes)",
		     (unsigned long long)st.reap_passes);
	/* Copies that never pay off are given up. */
	cr_expect_gt(
		st.copy_skipped, 40000 / 4,
		"copies kept: %llu skipped, %llu clean drops, %llu reaped, "
		"%llu freed by the clock",
		(unsigned long long)st.copy_skipped,
		(unsigned long long)st.evict_clean_drop,
		(unsigned long long)st.reap_copies,
		(unsigned long long)st.clock_copies);
	for (size_t i = 0; i < n; i++)
		cr_assert(t_page_check(m + i * PAGE, T_TEXT, i, ver[i]),
			  "page %zu", i);
	free(ver);
	upg_destroy(u);
}

/*
 * Copies given up in a read-modify-write phase come back once pages stay
 * clean (the evictor tries them again every 2 s): a read-only phase then
 * drops clean pages instead of compressing them again.
 */
Test(runtime, copies_come_back_when_pages_stay_clean, .timeout = 60)
{
	size_t n;
	char *m;
	struct upg *u = copies_given_up(&m, &n, 7, "every page is dirty");
	uint64_t t0 = t_now_ns();
	struct upg_stats a, b;

	do { /* read-only passes until a pass drops most pages clean */
		a = t_stats(u);
		cr_assert_eq(t_verify(m, n, T_TEXT), 0);
		b = t_stats(u);
	} while (b.evict_clean_drop - a.evict_clean_drop < n / 2 &&
		 t_now_ns() - t0 < 20 * 1000000000ULL);
	cr_expect_gt(b.evict_clean_drop - a.evict_clean_drop, n / 2,
		     "copies not kept again after %.1f s",
		     (double)(t_now_ns() - t0) / 1e9);
	upg_destroy(u);
}

/*
 * Sequential passes evict whole chunks: the evictor finishes the chunk its
 * hand stopped in, so a chunk moved out is not mostly copied back (it was
 * 1.5 pages copied back per page evicted).
 */
Test(runtime, sequential_eviction_moves_whole_chunks)
{
	struct upg *u = t_runtime(16 * MiB, NULL);
	size_t n = 64 * MiB / PAGE;
	char *m = t_region(u, 64 * MiB);
	struct upg_stats st;

	if (!strstr(upg_features(u), "remap"))
		cr_skip_test("no chunk moves (mremap MREMAP_DONTUNMAP)");
	t_fill(m, n, T_TEXT);
	for (int pass = 1; pass <= 3; pass++)
		for (size_t i = 0; i < n; i++) {
			cr_assert(t_page_check(m + i * PAGE, T_TEXT, i,
					       (uint8_t)(pass - 1)),
				  "pass %d page %zu", pass, i);
			t_page_fill(m + i * PAGE, T_TEXT, i, (uint8_t)pass);
		}
	st = t_stats(u);
	cr_assert_gt(st.evict_remap, n, "only %llu pages left by chunk moves",
		     (unsigned long long)st.evict_remap);
	cr_expect_lt(st.evict_remap_kept * 10, st.evict_remap,
		     "%llu pages copied back for %llu evicted",
		     (unsigned long long)st.evict_remap_kept,
		     (unsigned long long)st.evict_remap);
	for (size_t i = 0; i < n; i++)
		cr_assert(t_page_check(m + i * PAGE, T_TEXT, i, 3), "page %zu",
			  i);
	upg_destroy(u);
}

struct help_probe {
	struct upg *u;
	_Atomic bool armed, timed_out;
};

/* Hold the evictor's first batch until a handler has stored a victim. */
static void on_store(void *arg, size_t n)
{
	struct help_probe *k = arg;
	struct upg_stats st = { .size = sizeof(st) };
	uint64_t t0 = t_now_ns();

	if (!n || !atomic_exchange(&k->armed, false))
		return;
	while (upg_stats_get(k->u, &st) == 0 && !st.evict_helped) {
		if (t_now_ns() - t0 > 2000000000ULL) {
			atomic_store(&k->timed_out, true);
			return;
		}
		usleep(100);
	}
}

/*
 * A fault that finds no room while the evictor has victims to store
 * stores some of them itself (upg_evict_help()) rather than sleep: with
 * the evictor held before it stores any, the budget fills up and only a
 * handler can store them.
 */
Test(runtime, handlers_store_victims_while_waiting_for_room)
{
	struct upg *u = t_runtime(16 * MiB, NULL);
	size_t n = 64 * MiB / PAGE;
	char *m = t_region(u, 64 * MiB);
	struct help_probe k = { .u = u, .armed = true };
	struct upg_stats st;

	upg_test_store_hook(u, on_store, &k);
	t_fill(m, n, T_TEXT);
	upg_test_store_hook(u, NULL, NULL);
	st = t_stats(u);
	cr_assert(!atomic_load(&k.armed), "the evictor stored nothing");
	cr_expect(!atomic_load(&k.timed_out),
		  "no victim stored by a handler in 2 s (%llu waits for room)",
		  (unsigned long long)st.evict_sync);
	cr_expect_gt(st.evict_helped, 0);
	cr_expect_eq(t_verify(m, n, T_TEXT), 0);
	upg_destroy(u);
}

/*
 * A chunk move locks the chunk's entries. Those without a page (evicted or
 * never touched) are unlocked as soon as the page table has moved, so a
 * fault on an evicted page there is served while the chunk's victims are
 * still being compressed; it used to wait for all of them (a 2 ms batch,
 * and a fifth of a Zipfian run's time). The hook holds the evictor between
 * the two until the test thread's fault on such a page has returned, or
 * for 2 s.
 */
struct pageless_probe {
	struct upg *u;
	char *m;
	_Atomic(char *) page;
	_Atomic bool touched, timed_out, give_up;
	bool ok;
};

static void on_chunk_move(void *arg, char *const *pageless, size_t n)
{
	struct pageless_probe *k = arg;
	uint64_t t0 = t_now_ns();
	char *none = NULL;

	if (!n ||
	    !atomic_compare_exchange_strong(&k->page, &none, pageless[n / 2]))
		return;
	while (!atomic_load(&k->touched)) {
		if (t_now_ns() - t0 > 2000000000ULL) {
			atomic_store(&k->timed_out, true);
			return;
		}
		usleep(100);
	}
}

/*
 * Touch the page the hook names, from a thread of its own: the test's
 * thread may itself be waiting then, on a victim of the same chunk. The
 * budget is raised first, so that the fault does not wait for the held
 * evictor to make room (that wait is not what this tests).
 */
static void *pageless_toucher(void *arg)
{
	struct pageless_probe *k = arg;
	char *p;

	while (!(p = atomic_load(&k->page)) && !atomic_load(&k->give_up))
		usleep(50);
	p = atomic_load(&k->page);
	if (p && !upg_set_budget(k->u, 64 * MiB))
		k->ok = t_page_check(p, T_TEXT, (size_t)(p - k->m) / PAGE, 0);
	atomic_store(&k->touched, true);
	return NULL;
}

Test(runtime, faults_on_evicted_pages_do_not_wait_for_a_chunk_move)
{
	struct upg *u = t_runtime(4 * MiB, NULL);
	size_t n = 16 * MiB / PAGE, i;
	char *m = t_region(u, 16 * MiB), *p;
	struct pageless_probe k = { .u = u, .m = m };
	uint64_t seed = 5, t0;
	pthread_t toucher;

	if (!strstr(upg_features(u), "remap"))
		cr_skip_test("no chunk moves (mremap MREMAP_DONTUNMAP)");
	t_fill(m, n, T_TEXT);
	cr_assert_eq(pthread_create(&toucher, NULL, pageless_toucher, &k), 0);
	upg_test_remap_hook(u, on_chunk_move, &k);
	t0 = t_now_ns();
	while (!atomic_load(&k.page) && t_now_ns() - t0 < 20000000000ULL) {
		i = (size_t)(t_rand(&seed) % n);
		cr_assert(t_page_check(m + i * PAGE, T_TEXT, i, 0), "page %zu",
			  i);
	}
	atomic_store(&k.give_up, true); /* (no page came) */
	pthread_join(toucher, NULL);
	upg_test_remap_hook(u, NULL, NULL);
	p = atomic_load(&k.page);
	cr_assert(p, "no chunk move with evicted pages in 20 s");
	i = (size_t)(p - m) / PAGE;
	cr_assert(k.ok, "page %zu wrong", i);
	cr_assert(!atomic_load(&k.timed_out),
		  "a fault on evicted page %zu waited for the chunk move", i);
	upg_destroy(u);
}

/* madvise(MADV_DONTNEED) by the program: the range reads zeros. */
static void program_dontneed(const char *const *opts)
{
	struct upg *u = t_runtime(4 * MiB, opts);
	size_t n = 16 * MiB / PAGE;
	char *m = t_region(u, 16 * MiB);

	t_fill(m, n, T_TEXT);
	cr_assert_eq(madvise(m, 16 * MiB, MADV_DONTNEED), 0);
	for (size_t i = 0; i < n; i++)
		cr_assert_eq(*(uint64_t *)(m + i * PAGE + 8), 0, "page %zu", i);
	cr_expect_gt(t_stats(u).remove_events, 0);
	t_fill(m, n, T_TEXT);
	cr_expect_eq(t_verify(m, n, T_TEXT), 0);
	upg_destroy(u);
}

Test(runtime, program_madvise_dontneed_reads_zero)
{
	program_dontneed(NULL);
}

Test(runtime, program_madvise_dontneed_copy_fallback)
{
	static const char *const opts[] = { "MOVE=0", NULL };

	program_dontneed(opts);
}

Test(runtime, resident_never_exceeds_budget)
{
	struct upg *u = t_runtime(8 * MiB, NULL);
	size_t n = 64 * MiB / PAGE;
	char *m = t_region(u, 64 * MiB);
	struct upg_stats s;

	t_fill(m, n, T_TEXT);
	cr_expect_eq(t_verify(m, n, T_TEXT), 0);
	s = t_stats(u);
	cr_expect_leq(s.resident_peak, s.budget);
	cr_expect_eq(s.budget_overruns, 0);
	upg_destroy(u);
}

/*
 * A full pool and no swap file: the resident set overruns the budget,
 * nothing is lost.
 */
Test(runtime, full_pool_overruns_budget_without_loss)
{
	static const char *const opts[] = { "POOL_MAX=2M", "SWAP_FILE=off",
					    NULL };
	struct upg *u = t_runtime(4 * MiB, opts);
	size_t n = 16 * MiB / PAGE;
	char *m = t_region(u, 16 * MiB);
	struct upg_stats s;

	t_fill(m, n, T_RANDOM);
	cr_expect_eq(t_verify(m, n, T_RANDOM), 0);
	s = t_stats(u);
	cr_expect_gt(s.evict_pool_full, 0);
	cr_expect_gt(s.budget_overruns, 0);
	cr_expect_leq(s.pool_used_bytes, 2 * MiB);
	upg_destroy(u);
}

Test(runtime, bad_environment_names_the_variable)
{
	struct upg *u = NULL;

	setenv("UPG_BUDGET", "lots", 1);
	cr_expect_eq(upg_create(NULL, &u), -EINVAL);
	cr_expect(strstr(upg_last_error(), "UPG_BUDGET"), "%s",
		  upg_last_error());
	cr_expect(strstr(upg_last_error(), "512M"), "%s", upg_last_error());
	setenv("UPG_BUDGET", "0", 1);
	cr_expect_eq(upg_create(NULL, &u), -EINVAL);
	cr_expect(strstr(upg_last_error(), "UPG_BUDGET"));
	setenv("UPG_BUDGET", "128G", 1);
	setenv("UPG_RESERVE", "64G", 1);
	cr_expect_eq(upg_create(NULL, &u), -EINVAL);
	cr_expect(strstr(upg_last_error(), "UPG_BUDGET"), "%s",
		  upg_last_error());
	setenv("UPG_BUDGET", "64M", 1);
	setenv("UPG_CLUSTER", "3", 1);
	cr_expect_eq(upg_create(NULL, &u), -EINVAL);
	cr_expect(strstr(upg_last_error(), "UPG_CLUSTER"), "%s",
		  upg_last_error());
	unsetenv("UPG_CLUSTER");
	unsetenv("UPG_RESERVE");
	unsetenv("UPG_BUDGET");
}

/* Without privileges the error says how to grant access. */
Test(runtime, refused_userfaultfd_explains_the_fix)
{
	int status;
	pid_t pid = fork();

	if (!pid) {
		struct upg *u;
		int err;

		if (setgid(65534) || setuid(65534))
			_exit(3);
		err = upg_create(NULL, &u);
		if (!err)
			_exit(2); /* unprivileged userfaultfd is allowed */
		_exit(err == -EPERM &&
				      strstr(upg_last_error(),
					     "vm.unprivileged_userfaultfd") &&
				      strstr(upg_last_error(),
					     "/dev/userfaultfd")
			      ? 0
			      : 1);
	}
	cr_assert_eq(waitpid(pid, &status, 0), pid);
	if (WEXITSTATUS(status) == 3)
		cr_skip_test("cannot drop privileges here");
	if (WEXITSTATUS(status) == 2)
		cr_skip_test("this machine allows unprivileged userfaultfd");
	cr_expect_eq(WEXITSTATUS(status), 0, "wrong error for refused uffd");
}

/* UPG_STATS=1: the report reaches stderr at exit, even without destroy. */
Test(runtime, stats_printed_at_exit)
{
	char buf[16384] = "";
	int fds[2], status;
	ssize_t n, got = 0;
	pid_t pid;

	cr_assert_eq(pipe(fds), 0);
	pid = fork();
	if (!pid) {
		struct upg *u;
		char *m;

		dup2(fds[1], 2);
		setenv("UPG_STATS", "1", 1);
		setenv("UPG_BUDGET", "4M", 1);
		if (upg_create(NULL, &u)) {
			fprintf(stderr, "%s\n", upg_last_error());
			_exit(3);
		}
		if (upg_reserve(u, 16 * MiB, (void **)&m))
			_exit(5);
		memset(m, 1, 16 * MiB);
		exit(0);
	}
	close(fds[1]);
	while ((n = read(fds[0], buf + got, sizeof(buf) - 1 - (size_t)got)) > 0)
		got += n;
	buf[got] = 0;
	cr_assert_eq(waitpid(pid, &status, 0), pid);
	if (WEXITSTATUS(status) == 3 && strstr(buf, "userfaultfd"))
		cr_skip_test("userfaultfd unavailable");
	cr_assert_eq(WEXITSTATUS(status), 0, "child failed: %s", buf);
	cr_expect(strstr(buf, "upager stats"), "no report in: %s", buf);
	cr_expect(strstr(buf, "evict_pages"));
	cr_expect(strstr(buf, "lat_zero"));
}

struct scan {
	char *base;
	size_t len;
};

static void *scan_main(void *arg)
{
	struct scan *s = arg;

	for (size_t off = 0; off < s->len; off += PAGE)
		s->base[off] = 1;
	return NULL;
}

/*
 * Two threads scanning different halves at once are two sequential
 * streams: fault-around must follow both (one shared guess would see a
 * random pattern and bring in about half as much per fault).
 */
Test(runtime, fault_around_follows_two_streams)
{
	struct upg *u = t_runtime(512 * MiB, NULL);
	char *m = t_region(u, 256 * MiB);
	struct scan s[2] = { { m, 128 * MiB }, { m + 128 * MiB, 128 * MiB } };
	pthread_t th[2];
	struct upg_stats st;
	double per_fault;

	for (int i = 0; i < 2; i++)
		cr_assert_eq(pthread_create(&th[i], NULL, scan_main, &s[i]), 0);
	for (int i = 0; i < 2; i++)
		pthread_join(th[i], NULL);
	st = t_stats(u);
	per_fault = (double)(st.fault_zero + st.fault_around_zero) /
		    (double)st.fault_zero;
	cr_expect_gt(per_fault, 12.0, "%.1f pages per fault (cluster 16)",
		     per_fault);
	upg_destroy(u);
}

struct scatter {
	char *base;
	size_t pages;
	_Atomic bool *stop;
	_Atomic size_t touched;
};

/* Touch distinct pages, never two in a row: each one a random fault. */
static void *scatter_main(void *arg)
{
	struct scatter *s = arg;

	for (size_t i = 0; i < s->pages && !atomic_load(s->stop); i++) {
		s->base[(i * 7919 % s->pages) * PAGE] = 1;
		s->touched++;
	}
	return NULL;
}

/*
 * A scan while another thread faults at random in the same region: the
 * random faults must not take the scan's stream away (each one used to
 * replace the streams in turn, so the scan's was lost every few faults and
 * its window started again at one page).
 */
Test(runtime, fault_around_keeps_a_stream_among_random_faults)
{
	struct upg *u = t_runtime(512 * MiB, NULL);
	char *m = t_region(u, 256 * MiB);
	size_t scan_pages = 128 * MiB / PAGE;
	_Atomic bool stop = false;
	struct scan sc = { m, 128 * MiB };
	struct scatter rnd = { m + 128 * MiB, 128 * MiB / PAGE, &stop, 0 };
	pthread_t th[2];
	struct upg_stats st;
	double per_fault;

	cr_assert_eq(pthread_create(&th[0], NULL, scatter_main, &rnd), 0);
	for (int t = 0; t < 2000 && atomic_load(&rnd.touched) < 64; t++)
		usleep(1000); /* the scan starts among random faults */
	cr_assert_eq(pthread_create(&th[1], NULL, scan_main, &sc), 0);
	pthread_join(th[1], NULL);
	atomic_store(&stop, true);
	pthread_join(th[0], NULL);
	st = t_stats(u);
	cr_assert_eq(st.fault_zero + st.fault_around_zero,
		     scan_pages + rnd.touched,
		     "%llu + %llu pages in for %zu scanned and %zu touched",
		     (unsigned long long)st.fault_zero,
		     (unsigned long long)st.fault_around_zero, scan_pages,
		     (size_t)rnd.touched);
	cr_assert_gt(rnd.touched, 1000, "only %zu random faults",
		     (size_t)rnd.touched);
	per_fault = (double)scan_pages / (double)(st.fault_zero - rnd.touched);
	cr_expect_gt(per_fault, 12.0,
		     "%.1f pages per fault of the scan (cluster 16) among %zu "
		     "random faults",
		     per_fault, (size_t)rnd.touched);
	upg_destroy(u);
}

/* The number of this process's threads whose name starts with @prefix. */
static int threads_named(const char *prefix, int *policy)
{
	DIR *d = opendir("/proc/self/task");
	struct dirent *e;
	int n = 0;

	cr_assert(d);
	while ((e = readdir(d))) {
		char path[300], comm[32] = "";
		FILE *f;

		snprintf(path, sizeof(path), "/proc/self/task/%s/comm",
			 e->d_name);
		f = fopen(path, "r");
		if (!f)
			continue;
		if (fgets(comm, sizeof(comm), f) &&
		    !strncmp(comm, prefix, strlen(prefix))) {
			n++;
			if (policy)
				*policy = sched_getscheduler(atoi(e->d_name));
		}
		fclose(f);
	}
	closedir(d);
	return n;
}

/* The scheduling policy of the fault handlers, once it is @want (2 s). */
static int handler_policy(int want)
{
	int policy = -1;

	for (int i = 0; i < 200; i++) {
		threads_named("upg-fault/", &policy);
		if (policy == want)
			break;
		usleep(10000);
	}
	return policy;
}

Test(runtime, idle_handlers_option)
{
	static const char *const off[] = { "IDLE_HANDLERS=off", "HANDLERS=2",
					   NULL };
	static const char *const on[] = { "IDLE_HANDLERS=on", "HANDLERS=2",
					  NULL };
	static const char *const dflt[] = { "HANDLERS=2", NULL };
	struct upg_params p;
	struct upg *u;

	upg_params_init(&p);
	cr_expect_eq(p.idle_handlers, UPG_IDLE_AUTO, "the default is auto");
	cr_expect_eq(upg_params_set(&p, "IDLE_HANDLERS", "sometimes"), -EINVAL);
	cr_expect(strstr(upg_last_error(), "UPG_IDLE_HANDLERS") &&
			  strstr(upg_last_error(), "auto"),
		  "%s", upg_last_error());

	u = t_runtime(64 * MiB, off);
	cr_expect_eq(handler_policy(SCHED_OTHER), SCHED_OTHER);
	cr_expect_eq(threads_named("upg-guard", NULL), 0);
	upg_destroy(u);
	u = t_runtime(64 * MiB, on);
	cr_expect_eq(handler_policy(SCHED_IDLE), SCHED_IDLE);
	cr_expect_eq(threads_named("upg-guard", NULL), 0);
	upg_destroy(u);
	/* auto: the guard lowers them (root may raise them again) */
	u = t_runtime(64 * MiB, dflt);
	cr_expect_eq(threads_named("upg-guard", NULL), 1);
	cr_expect_eq(handler_policy(SCHED_IDLE), SCHED_IDLE);
	upg_destroy(u);
	cr_expect_eq(threads_named("upg-guard", NULL), 0);
	cr_expect_eq(threads_named("upg-canary", NULL), 0);
}

struct hog {
	_Atomic bool *stop;
	int cpu;
};

static void *hog_main(void *arg)
{
	struct hog *h = arg;
	cpu_set_t set;

	CPU_ZERO(&set);
	CPU_SET(h->cpu, &set);
	pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
	while (!atomic_load_explicit(h->stop, memory_order_relaxed))
		;
	return NULL;
}

/*
 * Idle handlers starve while normal-priority work holds every CPU; in auto
 * mode the guard must see it and raise them, and no fault may be lost.
 */
Test(runtime, idle_handlers_raised_when_cpus_busy, .timeout = 120)
{
	static const char *const opts[] = { "HANDLERS=2", "CLUSTER=1", NULL };
	enum { NPAGES = 4096 };
	struct hog hogs[64];
	pthread_t th[64];
	_Atomic bool stop = false;
	unsigned nhogs = 0;
	struct upg_stats st;
	cpu_set_t set;
	struct upg *u;
	char *r;

	u = t_runtime(64 * MiB, opts);
	if (handler_policy(SCHED_IDLE) != SCHED_IDLE)
		cr_skip_test("handlers never went idle (no CAP_SYS_NICE?)");
	r = t_region(u, NPAGES * 4096UL);
	cr_assert_eq(sched_getaffinity(0, sizeof(set), &set), 0);
	for (int c = 0; c < CPU_SETSIZE && nhogs < 64; c++) {
		if (!CPU_ISSET(c, &set))
			continue;
		hogs[nhogs] = (struct hog){ .stop = &stop, .cpu = c };
		cr_assert_eq(pthread_create(&th[nhogs], NULL, hog_main,
					    &hogs[nhogs]),
			     0);
		nhogs++;
	}
	t_fill(r, NPAGES, T_TEXT); /* one fault per page */
	st = t_stats(u);
	atomic_store(&stop, true);
	for (unsigned i = 0; i < nhogs; i++)
		pthread_join(th[i], NULL);
	cr_expect_geq(st.handler_raises, 1, "handlers never raised");
	/* Each fault is counted before its thread runs on (CLUSTER=1). */
	cr_expect_eq(st.fault_zero, NPAGES, "%lu of %d faults counted",
		     (unsigned long)st.fault_zero, NPAGES);
	cr_expect_eq(t_verify(r, NPAGES, T_TEXT), 0);
	upg_destroy(u);
}

struct rmw_worker {
	char *m;
	size_t first, n, bad; /* bad: 1 + a page found wrong, or 0 */
	uint64_t seed;
	_Atomic bool *stop;
};

/* Read-modify-write random pages of its slice until told to stop. */
static void *rmw_worker_main(void *arg)
{
	struct rmw_worker *w = arg;

	while (!atomic_load(w->stop) && !w->bad) {
		size_t i = w->first + (size_t)(t_rand(&w->seed) % w->n);

		if (!t_page_check(w->m + i * PAGE, T_TEXT, i, 0))
			w->bad = i + 1;
		t_page_fill(w->m + i * PAGE, T_TEXT, i, 0);
	}
	return NULL;
}

/*
 * When the CPUs are busy with the program's own faulting threads, idle
 * handlers serve them as fast as raised ones (faster: a raised handler
 * woken for another CPU's fault preempts the evictor there), so the guard
 * tries both and keeps them idle. Two threads on two CPUs at 4x ran
 * 1.2-1.3x as fast as when the guard raised the handlers on the canaries'
 * word alone. On a machine with idle CPUs the canaries never starve and
 * there is nothing to judge.
 */
Test(runtime, idle_handlers_judged_against_raised, .timeout = 60)
{
	static const char *const opts[] = { "HANDLERS=2", NULL };
	struct upg *u = t_runtime(8 * MiB, opts);
	size_t n = 32 * MiB / PAGE;
	char *m = t_region(u, 32 * MiB);
	struct rmw_worker w[2];
	pthread_t th[2];
	_Atomic bool stop = false;
	struct upg_stats st;
	uint64_t t0;

	if (handler_policy(SCHED_IDLE) != SCHED_IDLE)
		cr_skip_test("handlers never went idle (no CAP_SYS_NICE?)");
	if (sysconf(_SC_NPROCESSORS_ONLN) > 2)
		cr_skip_test("more than 2 CPUs: two threads leave one idle");
	t_fill(m, n, T_TEXT);
	for (int i = 0; i < 2; i++) {
		w[i] = (struct rmw_worker){ m, i * n / 2, n / 2,
					    0, 11 + i,	  &stop };
		cr_assert_eq(
			pthread_create(&th[i], NULL, rmw_worker_main, &w[i]),
			0);
	}
	t0 = t_now_ns();
	do {
		usleep(100000);
		st = t_stats(u);
	} while (st.handler_trials < 2 && t_now_ns() - t0 < 20000000000ULL);
	atomic_store(&stop, true);
	for (int i = 0; i < 2; i++) {
		pthread_join(th[i], NULL);
		cr_assert_eq(w[i].bad, 0, "page %zu wrong", w[i].bad - 1);
	}
	if (!st.handler_trials && !st.handler_raises)
		cr_skip_test("the canaries never starved: a CPU was idle");
	cr_expect_lt(st.handler_raises, st.handler_trials,
		     "raised after every one of %llu trials",
		     (unsigned long long)st.handler_trials);
	cr_expect_eq(t_verify(m, n, T_TEXT), 0);
	upg_destroy(u);
}
