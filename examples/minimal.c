/* SPDX-License-Identifier: MIT */
/*
 * The smallest complete use of upager, shown in README.md: create a
 * runtime, reserve a region larger than the budget, use it as ordinary
 * memory, read the statistics, destroy the runtime.
 */
#include <stdio.h>
#include <string.h>

#include <upager.h>

int main(void)
{
	struct upg_params p;
	struct upg_stats s = { .size = sizeof(s) };
	struct upg *u;
	size_t len = 256UL << 20, i;
	char *mem;

	upg_params_init(&p);
	p.budget = 64UL << 20; /* 64 MiB resident for 256 MiB of data */
	if (upg_params_from_env(&p) < 0 || upg_create(&p, &u) < 0) {
		fprintf(stderr, "upager: %s\n", upg_last_error());
		return 2;
	}
	if (upg_reserve(u, len, (void **)&mem) < 0) {
		fprintf(stderr, "upg_reserve: %s\n", upg_last_error());
		upg_destroy(u);
		return 2;
	}
	for (i = 0; i < len; i += 4096)
		snprintf(mem + i, 64, "page %zu says hello", i / 4096);
	printf("%s\n", mem + 1000 * 4096UL); /* evicted long ago: faults back */
	upg_stats_get(u, &s);
	printf("faults: %llu zero-fill, %llu from the pool; %llu evictions\n",
	       (unsigned long long)s.fault_zero,
	       (unsigned long long)s.fault_pool,
	       (unsigned long long)s.evict_pages);
	upg_destroy(u);
	return 0;
}
