/* SPDX-License-Identifier: MIT */
/*
 * The allocator's internals, shared by the page layer (alloc_page.c), the
 * slabs (alloc.c), the thread caches (alloc_cache.c), the bootstrap arena
 * (boot.c), the default heap (alloc_default.c) and the preload shim
 * (preload.c).
 *
 * A heap owns one managed region. Its pages are handed out as spans: slabs
 * of one size class, page runs (large blocks), free spans. Every span has a
 * descriptor outside managed memory; a page map (also outside) points from
 * each page of a slab, and from the first and last page of every other
 * span, to its descriptor. Entries for other pages may be stale: readers
 * check that the span they find really covers the address. A second map,
 * one byte per page, holds the size class (plus one) of each slab page and
 * 0 for every other page: free() finds a small block's class there without
 * reading a descriptor that other threads write.
 *
 * Lock order: the default heap's init_lock (alloc_default.c) -> heaps_lock
 * -> caches lock (tc_lock, alloc_cache.c) -> class lock (struct
 * upg_class.lock) -> page lock (heap->lock). A thread cache's bins have no
 * lock: only its thread touches them.
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
#include "runtime.h"

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

/* Own cache lines: threads refilling different classes do not collide. */
struct upg_class {
	pthread_mutex_t lock;
	struct span *partial; /* slabs with free objects */
	unsigned nempty;      /* completely free slabs kept in @partial */
} __attribute__((aligned(UPG_CACHELINE)));

struct upg_tcache;

struct upg_heap {
	/* Read-only after creation: every malloc and free reads these. */
	struct upg *u;
	uintptr_t base, end;
	struct span **map; /* per page of the region */
	uint8_t *pcls;	   /* per page: slab class + 1, else 0 */

	/* Thread caches for this heap (caches lock). */
	struct upg_tcache *tcaches;

	/* Page layer: everything below, on cache lines of its own. */
	pthread_mutex_t lock __attribute__((aligned(UPG_CACHELINE)));
	uintptr_t top; /* never used above this */
	struct span *bins[UPG_NBINS];
	uint64_t binmap[(UPG_NBINS + 63) / 64];
	struct span *dirty;	  /* free spans whose pages may hold data */
	size_t dirty_pages;	  /* pages on @dirty */
	size_t dirty_max;	  /* purge above this */
	struct span *desc_free;	  /* spare descriptors */
	struct span *desc_chunks; /* mappings of descriptors, to unmap */
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
extern uint8_t upg_small_class[1024 / 16 + 1]; /* class of n <= 1024 */

static inline unsigned upg_size_class(size_t n)
{
	unsigned k;

	if (likely(n <= 1024))
		return upg_small_class[(n + 15) >> 4];
	k = 63 - (unsigned)__builtin_clzl(n - 1); /* 2^k < n <= 2^(k+1) */
	return 8 + (k - 7) * 4 + (unsigned)((n - 1 - (1UL << k)) >> (k - 2));
}

/*
 * Thread caches (alloc_cache.c, which describes their life cycle): one per
 * thread and heap, on the thread's own list and on the heap's.
 */
struct tbin {
	uint32_t n, cap;
	void **slot;
};

/*
 * upg_tbin_publish() - set a bin's count, after the slots it covers
 * A fork() child gives the bins of threads that do not exist there back to
 * the slabs (upg_tcache_fork_child()), whatever those threads were doing
 * at the fork: it sees each one's stores up to some point in its program
 * order. So a bin never counts a slot before the slot is written (a push
 * stores the slot, then the count) and a block leaves the count before it
 * goes back to its slab (upg_tbin_flush()); an interrupted operation
 * leaves a block out (leaked in the child), never one counted twice or
 * one in use. The release store keeps the slot stores before the count's:
 * a plain store on x86, no read-modify-write.
 */
static inline void upg_tbin_publish(struct tbin *b, uint32_t n)
{
	__atomic_store_n(&b->n, n, __ATOMIC_RELEASE);
}

struct upg_tcache {
	struct tbin bin[UPG_NCLASS];
	/* Written by the owner and by upg_heap_destroy() (caches lock);
	 * read by the owner without it: relaxed, a stale heap only sends
	 * the owner to its slow path. */
	struct upg_heap *_Atomic h;
	struct upg_tcache *tnext;	  /* the owner's caches */
	struct upg_tcache *hnext, *hprev; /* the heap's caches */
	void *slots[];
};

#define UPG_TLS_IE __attribute__((tls_model("initial-exec")))

/* The calling thread's cache for the default heap, NULL if none. */
extern __thread struct upg_tcache *upg_tc_default UPG_TLS_IE;
/* The cache it used last, for any heap (possibly an orphan), or NULL. */
extern __thread struct upg_tcache *upg_tc_last UPG_TLS_IE;

void upg_tcache_init(void); /* once, after the size classes */
/* The caller's cache for @h, made if need be; NULL: go uncached. */
struct upg_tcache *upg_tcache_slow(struct upg_heap *h);

static inline struct upg_tcache *upg_tcache_get(struct upg_heap *h)
{
	struct upg_tcache *tc = upg_tc_last;

	if (likely(tc) &&
	    likely(atomic_load_explicit(&tc->h, memory_order_relaxed) == h))
		return tc;
	return upg_tcache_slow(h);
}

/* Flush the newest @n blocks of bin @c, or every bin, to @h's slabs. */
void upg_tbin_flush(struct upg_heap *h, struct upg_tcache *tc, unsigned c,
		    unsigned n);
void upg_tcache_flush(struct upg_heap *h, struct upg_tcache *tc);
/* Orphan every cache of @h (upg_heap_destroy) and recycle the caller's. */
void upg_tcache_orphan(struct upg_heap *h);
/* fork() child, caches lock held: reclaim the caches of absent threads. */
void upg_tcache_fork_child(struct upg_heap *h);
/* fork(): the caches lock, taken and released around the fork. */
void upg_tcache_fork_lock(void);
void upg_tcache_fork_unlock(void);

/* Whether @p lies in @h's region. */
static inline bool upg_heap_has(const struct upg_heap *h, const void *p)
{
	return (uintptr_t)p - h->base < h->end - h->base;
}

/* The size class of @p's slab, or -1 if @p is not in a slab page of @h. */
static inline int upg_page_class(const struct upg_heap *h, const void *p)
{
	return (int)h->pcls[((uintptr_t)p - h->base) >> UPG_PAGE_SHIFT] - 1;
}

/*
 * upg_tc_malloc() - a small block from the calling thread's cache for the
 * default heap, or NULL (no cache, empty bin, a runtime thread or a size
 * the cache does not hold): the caller takes the slow path.
 */
static inline void *upg_tc_malloc(size_t size)
{
	struct upg_tcache *tc = upg_tc_default;
	struct tbin *b;

	if (unlikely(!tc || size > UPG_SMALL_MAX || upg_internal_depth))
		return NULL;
	b = &tc->bin[upg_size_class(size)];
	if (unlikely(!b->n))
		return NULL;
	return b->slot[--b->n];
}

/*
 * upg_tc_free() - put @p (in the default heap @h) into the calling
 * thread's cache. Return: false if the slow path must free it (no cache,
 * full bin, not a slab block). A bad pointer in a slab page is caught when
 * the bin is flushed.
 */
static inline bool upg_tc_free(struct upg_heap *h, void *p)
{
	struct upg_tcache *tc = upg_tc_default;
	int c = upg_page_class(h, p);
	struct tbin *b;
	uint32_t n;

	if (unlikely(!tc || c < 0))
		return false;
	b = &tc->bin[c];
	n = b->n;
	if (unlikely(n == b->cap))
		return false;
	b->slot[n] = p;
	upg_tbin_publish(b, n + 1);
	return true;
}

/* upg_class_put() - give @n blocks of class @c back to their slabs (alloc.c) */
void upg_class_put(struct upg_heap *h, unsigned c, void **objs, unsigned n);

/* Caches ever mapped and spare ones (tests: every cache comes back). */
void upg_tcache_count(size_t *mapped, size_t *spare);

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

/*
 * upg_heaps_destroy() - destroy every heap over @u (upg_destroy(): a heap
 * must not outlive its runtime's regions)
 */
void upg_heaps_destroy(struct upg *u);

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

/*
 * The default heap (alloc_default.c), published once it is up and never
 * destroyed; NULL before. Release store, acquire load: a thread that sees
 * the pointer sees the heap's fields.
 */
extern struct upg_heap *_Atomic upg_dheap;

static inline struct upg_heap *upg_dheap_get(void)
{
	return atomic_load_explicit(&upg_dheap, memory_order_acquire);
}

int upg_heap_create_default(struct upg_heap **out);

/*
 * upg_alloc_atfork_register() - install the allocator's fork handlers (and,
 * before them, the runtime's), once. Called before the default heap or any
 * heap is created, so that a fork at any point of a creation finds the
 * handlers in place. Memory that pthread_atfork() allocates comes from the
 * bootstrap arena.
 */
void upg_alloc_atfork_register(void);

#endif
