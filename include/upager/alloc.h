/* SPDX-License-Identifier: MIT */
/*
 * upager allocator: malloc-style allocation from managed memory.
 *
 * A heap (struct upg_heap) carves one region of a runtime into size-class
 * slabs (with per-thread caches) and page runs. Its metadata lives outside
 * managed memory, so freeing never faults an evicted page back in, and
 * whole pages it no longer uses are discarded (upg_discard()): they are
 * never compressed or written out.
 *
 * upg_malloc() and friends use a default heap over a default runtime,
 * created on first use from the UPG_* environment. Every function is
 * thread-safe. Blocks are 16-byte aligned.
 */
#ifndef UPAGER_ALLOC_H
#define UPAGER_ALLOC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

struct upg;
struct upg_heap;

/**
 * upg_heap_create() - a heap over a new region of @u
 * @u: runtime
 * @reserve: address space to reserve, 0 for the runtime's UPG_RESERVE
 * @out: the new heap
 *
 * Return: 0; -ENOMEM; or upg_reserve()'s error.
 */
__attribute__((visibility("default"))) int
upg_heap_create(struct upg *u, size_t reserve, struct upg_heap **out);

/**
 * upg_heap_destroy() - release a heap and every block in it
 * @h: heap, or NULL
 *
 * No thread may use @h or its blocks during or after this call. Every
 * thread's cache for @h is reclaimed: the caller's at once, another live
 * thread's on its next allocator call that misses its cache or at its
 * exit (the blocks in it are dropped, never reused). Thread-safe against
 * other threads exiting meanwhile.
 */
__attribute__((visibility("default"))) void
upg_heap_destroy(struct upg_heap *h);

/*
 * The malloc family over heap @h. On failure they return NULL with errno
 * set to ENOMEM (EINVAL for a bad alignment). A pointer passed to free,
 * realloc or usable_size must come from @h (NULL is allowed).
 */
__attribute__((visibility("default"))) void *upg_heap_malloc(struct upg_heap *h,
							     size_t size);
__attribute__((visibility("default"))) void *
upg_heap_calloc(struct upg_heap *h, size_t n, size_t size);
__attribute__((visibility("default"))) void *
upg_heap_realloc(struct upg_heap *h, void *p, size_t size);
/* @align: a power of two; any size is accepted. */
__attribute__((visibility("default"))) void *
upg_heap_aligned_alloc(struct upg_heap *h, size_t align, size_t size);
__attribute__((visibility("default"))) void upg_heap_free(struct upg_heap *h,
							  void *p);
__attribute__((visibility("default"))) size_t
upg_heap_usable_size(struct upg_heap *h, const void *p);

/**
 * upg_heap_owns() - whether @p lies in @h's region (lock-free)
 */
__attribute__((visibility("default"))) bool
upg_heap_owns(const struct upg_heap *h, const void *p);

/**
 * upg_heap_trim() - discard every free page now (and flush the caller's
 * thread cache)
 *
 * Return: the number of pages discarded.
 */
__attribute__((visibility("default"))) size_t upg_heap_trim(struct upg_heap *h);

struct upg_heap_stats {
	uint64_t mapped_bytes;	  /* address space handed out so far */
	uint64_t active_bytes;	  /* pages in slabs and page runs */
	uint64_t free_bytes;	  /* pages free for reuse */
	uint64_t dirty_bytes;	  /* free pages not discarded yet */
	uint64_t discarded_bytes; /* total given back with upg_discard() */
	uint64_t large_allocs;	  /* page runs handed out */
	uint64_t realloc_inplace; /* large reallocs that did not move */
	uint64_t invalid_frees;	  /* frees of pointers not allocated */
};

/**
 * upg_heap_stats_get() - the heap's counters
 */
__attribute__((visibility("default"))) void
upg_heap_stats_get(struct upg_heap *h, struct upg_heap_stats *s);

/*
 * The default heap. upg_malloc() and friends create it on first use with
 * upg_create(NULL) (the UPG_* environment). If that fails they return NULL
 * with errno ENOMEM, and upg_last_error() says why. upg_free() and
 * upg_usable_size() accept NULL.
 */
__attribute__((visibility("default"))) void *upg_malloc(size_t size);
__attribute__((visibility("default"))) void *upg_calloc(size_t n, size_t size);
__attribute__((visibility("default"))) void *upg_realloc(void *p, size_t size);
__attribute__((visibility("default"))) void *upg_aligned_alloc(size_t align,
							       size_t size);
__attribute__((visibility("default"))) void upg_free(void *p);
__attribute__((visibility("default"))) size_t upg_usable_size(const void *p);

/**
 * upg_default_heap() - the heap behind upg_malloc(), created if needed
 *
 * Return: the heap, or NULL if the runtime cannot be created.
 */
__attribute__((visibility("default"))) struct upg_heap *upg_default_heap(void);

/**
 * upg_heap_runtime() - the runtime a heap pages through
 */
__attribute__((visibility("default"))) struct upg *
upg_heap_runtime(struct upg_heap *h);

#ifdef __cplusplus
}
#endif

#endif
