/* SPDX-License-Identifier: MIT */
/*
 * What evict.c (the clock, the passes, the evictor thread) and
 * evict_store.c (taking victims out and storing them) share. Not part of
 * the library's API.
 */
#ifndef UPG_EVICT_IMPL_H
#define UPG_EVICT_IMPL_H

#include "runtime.h"

#define CHUNK_BYTES (UPG_CHUNK_PAGES << UPG_PAGE_SHIFT)

/*
 * A page the clock chose, locked: its entry as it was (@old); @moved once
 * UFFDIO_MOVE has taken its page out.
 */
struct victim {
	struct upg_region *r;
	size_t idx;
	uint64_t old;
	bool moved;
};

/*
 * evict_victims() - take victims [0, @n) (in address order) out of the
 * program and store them; those that cannot be stored go back. Caller
 * holds regions_lock for reading. Return: pages evicted.
 */
size_t evict_victims(struct upg *u, struct victim *v, size_t n);

/* Whether this kernel moves private anonymous memory with DONTUNMAP. */
bool evict_remap_works(char *staging);

/* Fresh, empty staging memory: map over the old one and register it. */
int evict_staging_reset(struct upg *u);

#endif
