/* SPDX-License-Identifier: MIT */
/*
 * Stress (meson test --suite stress): stores racing eviction for a minute
 * per configuration, at the minimum budget so that the evictor never
 * stops, with four writers on two CPUs.
 */
#include <criterion/criterion.h>

#include "helpers.h"

TestSuite(stress, .timeout = 300);

static void race(const char *const *opts)
{
	struct upg_stats s;
	size_t bad = t_store_race(opts, 4, 60, &s);

	cr_expect_eq(bad, 0, "%zu lost or stale stores", bad);
	cr_expect_gt(s.evict_pages, 10000, "evictor barely ran");
	cr_expect_eq(s.fault_error, 0);
}

Test(stress, stores_racing_move_eviction)
{
	race(NULL);
}

/*
 * Every victim by UFFDIO_MOVE. Multi-page moves lost about one store per
 * few minutes here: Linux 6.18 can report a multi-page move as failed
 * (EEXIST with a count of 0) after moving the pages. Eviction now moves
 * one page per ioctl and trusts mincore() over the count.
 */
Test(stress, stores_racing_single_page_moves)
{
	static const char *const opts[] = { "REMAP=0", NULL };

	race(opts);
}

Test(stress, stores_racing_copy_eviction)
{
	static const char *const opts[] = { "MOVE=0", NULL };

	race(opts);
}

Test(stress, stores_racing_all_dirty)
{
	static const char *const opts[] = { "WP_ASYNC=0", "CLUSTER=64", NULL };

	race(opts);
}

/*
 * A 1 MiB pool: write-back moves entries to the swap file while faults
 * read them back and stores dirty them again.
 */
Test(stress, stores_racing_swap_writeback)
{
	static const char *const opts[] = { "POOL_MAX=1M", NULL };
	struct upg_stats s;
	size_t bad = t_store_race(opts, 4, 60, &s);

	cr_expect_eq(bad, 0, "%zu lost or stale stores", bad);
	cr_expect_gt(s.swap_writeback, 10000, "write-back barely ran");
	cr_expect_eq(s.fault_error + s.swap_read_errors, 0);
}
