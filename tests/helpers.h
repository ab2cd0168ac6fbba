/* SPDX-License-Identifier: MIT */
/*
 * Test helpers: runtimes that skip the test (with the reason) when the
 * kernel or the permissions do not allow userfaultfd, deterministic page
 * contents of several kinds, and statistics shortcuts.
 */
#ifndef UPG_TEST_HELPERS_H
#define UPG_TEST_HELPERS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <upager.h>

#define MiB (1UL << 20)
#define PAGE 4096UL

enum t_kind {
	T_TEXT,	  /* words from a vocabulary: compresses 2-3x */
	T_RANDOM, /* incompressible */
	T_SAME,	  /* one repeated word per page */
	T_ZERO,
};

/*
 * t_runtime() - a runtime with @budget bytes and "NAME=VALUE" options
 * (NULL-terminated list, may be NULL). Skips the test if userfaultfd is
 * unavailable; fails it on any other error.
 */
struct upg *t_runtime(size_t budget, const char *const *opts);

/* t_region() - reserve @len bytes or fail the test. */
void *t_region(struct upg *u, size_t len);

/* Deterministic contents of page @idx at @version. */
void t_page_fill(void *page, enum t_kind kind, uint64_t idx, uint64_t version);
bool t_page_check(const void *page, enum t_kind kind, uint64_t idx,
		  uint64_t version);

/* Fill/verify @npages pages from @base at version 0; returns bad pages. */
void t_fill(void *base, size_t npages, enum t_kind kind);
size_t t_verify(const void *base, size_t npages, enum t_kind kind);

struct upg_stats t_stats(struct upg *u);

/* Shrink the budget to @low bytes and restore @high: evicts most pages. */
void t_evict_all(struct upg *u, size_t low, size_t high);

uint64_t t_rand(uint64_t *state);

/* CLOCK_MONOTONIC in nanoseconds. */
uint64_t t_now_ns(void);

#endif

/*
 * t_store_race() - stores racing eviction
 * @threads writers each own every @threads-th page of a region 8x the
 * budget (4M), filled with incompressible data, and keep storing increasing sequence numbers into words of
 * their pages, reading each back at once and re-reading older ones, for
 * @seconds. Returns the number of mismatches (lost or stale stores).
 */
size_t t_store_race(const char *const *opts, unsigned threads, unsigned seconds,
		    struct upg_stats *out);
