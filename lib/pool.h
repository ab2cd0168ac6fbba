/* SPDX-License-Identifier: MIT */
/*
 * The compressed pool: stores evicted pages as LZ4 objects in a size-class
 * allocator (zsmalloc-like), same-filled pages as a bare word, and pages that
 * do not compress as raw 4 KiB objects. Thread-safe.
 *
 * A handle is an opaque 56-bit number (it lives in the page table's payload
 * field); 0 is never a valid handle. The caller guarantees that a handle is
 * loaded, compared or freed by one thread at a time (it holds the page lock
 * of the page the handle belongs to).
 */
#ifndef UPG_POOL_H
#define UPG_POOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define UPG_POOL_HANDLE_BITS 56

struct upg_pool;

enum upg_pool_kind {
	UPG_POOL_SAME = 0,	 /* same-filled: no storage */
	UPG_POOL_COMPRESSED = 1, /* LZ4 object */
	UPG_POOL_RAW = 2,	 /* incompressible: raw page */
};

struct upg_pool_stats {
	uint64_t objects;	   /* live handles, same-filled included */
	uint64_t same;		   /* live same-filled handles */
	uint64_t raw;		   /* live raw handles */
	uint64_t stored_bytes;	   /* pages stored * 4096 */
	uint64_t compressed_bytes; /* sum of object sizes */
	uint64_t used_bytes;	   /* memory held by the allocator */
	uint64_t parked_bytes;	   /* of which empty chunks kept for reuse */
	uint64_t hole_bytes;	   /* freed slots in chunks still mapped */
	uint64_t max_bytes;	   /* limit */
};

/*
 * upg_pool_create() - make a pool that holds at most @max_bytes of memory
 * Return: 0 or -errno.
 */
int upg_pool_create(size_t max_bytes, struct upg_pool **out);
void upg_pool_destroy(struct upg_pool *pool);

/*
 * Change the limit; existing objects stay, empty chunks kept for reuse are
 * unmapped down to a quarter of the new limit.
 */
void upg_pool_set_max(struct upg_pool *pool, size_t max_bytes);

/*
 * upg_pool_trim() - unmap every empty chunk kept for reuse
 * (up to a quarter of the limit: see parked_bytes). Any thread.
 */
void upg_pool_trim(struct upg_pool *pool);

/*
 * upg_pool_store() - store one 4 KiB page
 * Return: enum upg_pool_kind (>= 0) with *@handle set, -ENOSPC when the pool
 * is at its limit, -ENOMEM when memory for it cannot be mapped.
 */
int upg_pool_store(struct upg_pool *pool, const void *page, uint64_t *handle);

/*
 * upg_pool_load() - restore the page stored under @handle into @page
 * Return: 0, or -EIO when the object is corrupt. The handle stays valid.
 */
int upg_pool_load(struct upg_pool *pool, uint64_t handle, void *page);

/*
 * upg_pool_object() - the bytes stored under @handle, without decoding them
 * @obj: set to the object: an LZ4 block of the page (what
 *	upg_decompress_page() takes) or, for a raw handle, the page itself.
 *	Valid as long as the handle is.
 * Return: its length (UPG_PAGE_SIZE for a raw page), -EINVAL for a
 * same-filled handle (no object), -EIO for an invalid one.
 */
int upg_pool_object(struct upg_pool *pool, uint64_t handle, const void **obj);

/* upg_pool_equal() - whether @page holds exactly what @handle stores */
bool upg_pool_equal(struct upg_pool *pool, uint64_t handle, const void *page);

/* upg_pool_kind() - the kind of @handle, without touching its object */
enum upg_pool_kind upg_pool_kind(uint64_t handle);

/* upg_pool_free() - free @handle; it must not be used again */
void upg_pool_free(struct upg_pool *pool, uint64_t handle);

/*
 * upg_pool_free_many() - free @n handles, as upg_pool_free() frees each
 * (none may be used again): their objects' memory loaded in parallel, the
 * pool's counters updated once.
 */
void upg_pool_free_many(struct upg_pool *pool, const uint64_t *handles,
			unsigned n);

/*
 * Compaction: give back the memory of the holes that frees leave in the
 * pool's chunks. One compaction at a time, on one thread:
 *
 * upg_pool_compact_begin() - stop storing into the sparsest chunks whose
 * objects the other chunks have room for, up to @max_bytes of objects
 * Return: objects to move (0: nothing worth compacting).
 *
 * upg_pool_move() - move @h's object out of such a chunk, under the same
 * guarantee as a free (the caller holds the owner's page lock); on
 * success @h is freed and *@nh replaces it.
 * Return: 1 moved, 0 not in a chunk being emptied (nothing to do),
 * -EAGAIN no room left elsewhere, -EIO invalid handle.
 *
 * upg_pool_moving() - whether upg_pool_move() would move @h: a lock-free
 * look, to find owners without locking each
 *
 * upg_pool_compact_left() - objects not moved yet (the caller may stop
 * looking for owners at 0)
 *
 * upg_pool_compact_end() - end it: chunks not emptied (their owners were
 * busy) take stores again. Emptied chunks are unmapped, not parked.
 * Return: the bytes unmapped.
 */
uint64_t upg_pool_compact_begin(struct upg_pool *pool, uint64_t max_bytes);
bool upg_pool_moving(struct upg_pool *pool, uint64_t h);
int upg_pool_move(struct upg_pool *pool, uint64_t h, uint64_t *nh);
uint64_t upg_pool_compact_left(struct upg_pool *pool);
uint64_t upg_pool_compact_end(struct upg_pool *pool);

void upg_pool_get_stats(struct upg_pool *pool, struct upg_pool_stats *s);

#endif
