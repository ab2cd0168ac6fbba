/* SPDX-License-Identifier: MIT */
/*
 * The allocator's internals, shared by the page layer (alloc_page.c), the
 * slabs and thread caches (alloc.c), the bootstrap arena (boot.c) and the
 * preload shim (preload.c).
 *
 * A heap owns one managed region. Its pages are handed out as spans: slabs
 * of one size class, page runs (large blocks), free spans. Every span has a
 * descriptor outside managed memory; a page map (also outside) points from
 * each page of a slab, and from the first and last page of every other
 * span, to its descriptor. Entries for other pages may be stale: readers
 * check that the span they find really covers the address.
 *
 * Lock order: class lock (struct upg_class.lock) -> page lock (heap->lock).
 * Thread caches have no lock: only their thread touches them.
 */
#ifndef UPG_ALLOC_H
#define UPG_ALLOC_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "upager.h"
#include "common.h"

#define UPG_SMALL_MAX 32768UL
#define UPG_NCLASS 40
#define UPG_SLAB_WORDS 8 /* bitmap words: at most 512 objects per slab */
#define UPG_NBINS_EXACT 128
#define UPG_NBINS (UPG_NBINS_EXACT + 40)

enum span_kind {
	SPAN_NONE = 0, /* descriptor on the free list */
	SPAN_FREE,
	SPAN_SLAB,
	SPAN_LARGE,
	SPAN_PURGING, /* free, being discarded outside the lock */
};

struct span {
	uintptr_t start;
	uint32_t npages;
	uint8_t kind;
	uint8_t cls;
	bool clean; /* free span: every page reads as zeros */
	bool dirty_listed;
	struct span *next, *prev;   /* bin, partial list or descriptor list */
	struct span *dnext, *dprev; /* dirty list (free spans) */
	/* Slabs only (class lock). */
	uint16_t nfree;
	uint16_t nobjs;
	uint64_t bits[UPG_SLAB_WORDS]; /* 1 = object free */
};

struct upg_class {
	pthread_mutex_t lock;
	struct span *partial; /* slabs with free objects */
	unsigned nempty;      /* completely free slabs kept in @partial */
	char pad[UPG_CACHELINE];
};

struct upg_heap {
	struct upg *u;
	uint64_t id; /* unique, so a stale thread cache never matches */
	uintptr_t base, end;
	struct span **map; /* per page of the region */
	pthread_key_t key; /* thread cache; destructor flushes it */
	bool key_ok;

	pthread_mutex_t lock; /* page layer: everything below */
	uintptr_t top;	      /* never used above this */
	struct span *bins[UPG_NBINS];
	uint64_t binmap[(UPG_NBINS + 63) / 64];
	struct span *dirty;	  /* free spans whose pages may hold data */
	size_t dirty_pages;	  /* pages on @dirty */
	size_t dirty_max;	  /* purge above this */
	struct span *desc_free;	  /* spare descriptors */
	struct span *desc_chunks; /* mappings of descriptors, to unmap */
	struct upg_tcache *tc_free;
	size_t active_pages;
	size_t free_pages;
	uint64_t discarded_pages;
	uint64_t large_allocs;
	_Atomic uint64_t realloc_inplace;
	_Atomic uint64_t invalid_frees;
	_Atomic bool purging;

	struct upg_class cls[UPG_NCLASS];
	struct upg_heap *next_heap; /* all heaps, for fork */
};

/* Size classes (alloc.c). */
extern uint32_t upg_class_size[UPG_NCLASS];
unsigned upg_size_class(size_t n);

static inline size_t page_index(const struct upg_heap *h, uintptr_t a)
{
	return (a - h->base) >> UPG_PAGE_SHIFT;
}

static inline size_t pages_for(size_t bytes)
{
	return (bytes + UPG_PAGE_SIZE - 1) >> UPG_PAGE_SHIFT;
}

/*
 * span_of() - the span holding @p, or NULL
 * @p must lie in the heap's region. Lock-free: a block's span cannot change
 * while the block is allocated, which the caller guarantees for @p.
 */
static inline struct span *span_of(const struct upg_heap *h, const void *p)
{
	uintptr_t a = (uintptr_t)p;
	struct span *s = h->map[page_index(h, a)];

	if (!s || a < s->start ||
	    a >= s->start + ((uintptr_t)s->npages << UPG_PAGE_SHIFT))
		return NULL;
	return s;
}

/* Page layer (alloc_page.c). The caller holds no heap lock. */
int upg_page_init(struct upg_heap *h);
void upg_page_fini(struct upg_heap *h);
/*
 * upg_span_alloc() - @npages pages aligned to @align_pages (power of two)
 * Sets @kind and the page map (every page for a slab). *@clean tells
 * whether all pages read as zeros. Return: the span, NULL when out of
 * address space.
 */
struct span *upg_span_alloc(struct upg_heap *h, size_t npages,
			    size_t align_pages, int kind, bool *clean);
/* upg_span_free() - give a slab or page run back; may purge. */
void upg_span_free(struct upg_heap *h, struct span *s);
/*
 * upg_span_resize() - grow or shrink a page run in place
 * Return: true if @s now has @npages pages (*@clean: the added pages read
 * as zeros), false if the following pages are not free.
 */
bool upg_span_resize(struct upg_heap *h, struct span *s, size_t npages,
		     bool *clean);
/* upg_span_purge() - discard dirty free pages; returns pages discarded. */
size_t upg_span_purge(struct upg_heap *h);

/* Locks for fork: every lock of @h in order, and back. */
void upg_heap_lock_all(struct upg_heap *h);
void upg_heap_unlock_all(struct upg_heap *h);

/*
 * Bootstrap arena (boot.c): ordinary anonymous memory, never managed, for
 * the runtime's own threads and for allocations before a heap is up.
 * Lock-free (atomic bump and tagged free lists) so that it works in a fork
 * child whatever other threads were doing, and is not touched by fork.
 */
void *upg_boot_malloc(size_t n);
void *upg_boot_aligned(size_t align, size_t n);
void upg_boot_free(void *p);
void *upg_boot_realloc(void *p, size_t n);
size_t upg_boot_usable_size(const void *p);
bool upg_boot_owns(const void *p);

/* Default heap state for the front ends (alloc_default.c, preload.c). */
int upg_heap_create_default(struct upg_heap **out);
void upg_heap_atfork_register(void);

#endif
