/* SPDX-License-Identifier: MIT */
/*
 * Managed regions: the reservation, its page table and chunk counters.
 *
 * Managed memory is MAP_NORESERVE anonymous memory with transparent huge
 * pages disabled (UFFDIO_COPY installs 4 KiB pages and eviction moves
 * single pages; a THP appearing under us would only be split again). The
 * page table and the counters are separate NORESERVE mappings that the
 * kernel zero-fills on first touch: untouched means zero, so a fresh
 * region needs no initialisation.
 */
#include <errno.h>
#include <sys/mman.h>

#include "region.h"

void upg_region_account(struct upg_region *r, size_t idx, uint64_t from,
			uint64_t to)
{
	size_t c = idx >> UPG_CHUNK_SHIFT;

	if (from == to)
		return;
	if (from == PTE_RESIDENT)
		atomic_fetch_sub_explicit(&r->chunk_res[c], 1,
					  memory_order_relaxed);
	if (to == PTE_RESIDENT)
		atomic_fetch_add_explicit(&r->chunk_res[c], 1,
					  memory_order_relaxed);
	if (from == PTE_UNTOUCHED)
		atomic_fetch_add_explicit(&r->chunk_used[c], 1,
					  memory_order_relaxed);
	if (to == PTE_UNTOUCHED)
		atomic_fetch_sub_explicit(&r->chunk_used[c], 1,
					  memory_order_relaxed);
}

static size_t table_bytes(const struct upg_region *r)
{
	return r->npages * sizeof(upg_pte_t);
}

static size_t chunk_bytes(const struct upg_region *r)
{
	return r->nchunks * sizeof(uint32_t);
}

/*
 * Managed memory aligned to a chunk (2 MiB), so that each chunk is one
 * page table: eviction moves a chunk's page table with one TLB flush.
 */
static void *map_aligned(size_t len)
{
	size_t slop = UPG_CHUNK_PAGES << UPG_PAGE_SHIFT;
	char *raw = mmap(NULL, len + slop, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	char *mem;

	if (raw == MAP_FAILED)
		return MAP_FAILED;
	mem = (char *)(((uintptr_t)raw + slop - 1) & ~(uintptr_t)(slop - 1));
	if (mem > raw)
		munmap(raw, (size_t)(mem - raw));
	munmap(mem + len, (size_t)(raw + slop - mem));
	return mem;
}

int upg_region_create(size_t len, struct upg_region **out)
{
	struct upg_region *r;
	void *mem;

	len = (len + UPG_PAGE_SIZE - 1) & UPG_PAGE_MASK;
	if (!len)
		return -EINVAL;
	r = upg_map(sizeof(*r));
	if (!r)
		return -ENOMEM;
	r->len = len;
	r->npages = len >> UPG_PAGE_SHIFT;
	r->nchunks = (r->npages + UPG_CHUNK_PAGES - 1) >> UPG_CHUNK_SHIFT;
	r->pte = upg_map(table_bytes(r));
	r->chunk_res = upg_map(chunk_bytes(r));
	r->chunk_used = upg_map(chunk_bytes(r));
	mem = map_aligned(len);
	if (mem == MAP_FAILED || !r->pte || !r->chunk_res || !r->chunk_used) {
		if (mem != MAP_FAILED)
			munmap(mem, len);
		r->start = NULL;
		upg_region_destroy(r);
		return -ENOMEM;
	}
	/* Advisory only: the region works with or without it. */
	madvise(mem, len, MADV_NOHUGEPAGE);
	r->start = mem;
	for (unsigned i = 0; i < UPG_STREAMS; i++) {
		r->stream[i].last = SIZE_MAX - 1; /* matches no page */
		r->stream[i].window = 1;
	}
	*out = r;
	return 0;
}

void upg_region_destroy(struct upg_region *r)
{
	if (!r)
		return;
	if (r->start)
		munmap(r->start, r->len);
	upg_unmap((void *)r->pte, table_bytes(r));
	upg_unmap((void *)r->chunk_res, chunk_bytes(r));
	upg_unmap((void *)r->chunk_used, chunk_bytes(r));
	upg_unmap(r, sizeof(*r));
}
