/* SPDX-License-Identifier: MIT */
/*
 * The compressed pool's insides, shared by pool.c (the allocator) and
 * pool_compact.c (its compaction): the handle layout, the chunk and class
 * structures and the helpers both use. Not for other files: they go
 * through pool.h. See pool.c for the concepts, locking and invariants.
 */
#ifndef UPG_POOL_IMPL_H
#define UPG_POOL_IMPL_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "common.h"
#include "compress.h"
#include "pool.h"

#define H_KIND_MASK 0x3ULL
#define H_SAME_FORM_SHIFT 2
#define H_SAME_VAL_SHIFT 4
#define H_SAME_VAL_BITS 52
#define H_IDX_SHIFT 2
#define H_IDX_BITS 13
#define H_LEN_SHIFT 15
#define H_LEN_BITS 12
#define H_CHUNK_SHIFT 27
#define H_CHUNK_BITS 29

enum same_form {
	SAME_SEXT = 0,
	SAME_HALVES = 1,
	SAME_INTERNED = 2,
};

#define CLASS_STEP 16
#define NR_ZCLASSES (UPG_COMPRESS_MAX / CLASS_STEP)
#define RAW_CLASS NR_ZCLASSES
#define NR_CLASSES (NR_ZCLASSES + 1)
#define CHUNK_MIN_PAGES 4
#define CHUNK_MAX_PAGES 16
#define NR_GROUPS 4
#define GROUP_FULL NR_GROUPS
#define GROUP_EVAC 0xfe /* being emptied by compaction: on no fullness list */
#define GROUP_NONE 0xff
#define MAX_CHUNKS (1U << 22) /* >= 64 GiB of pool at 16 KiB chunks */
#define NO_CHUNK UINT32_MAX
#define NO_OBJ 0xffff
#define SAME_SLOTS 128
#define MAX_SLOTS (CHUNK_MAX_PAGES * 4096 / CLASS_STEP) /* objects per chunk */
#define STASH_SIZES (CHUNK_MAX_PAGES - CHUNK_MIN_PAGES + 1)
#define STASH_SHARE 4 /* the stash holds at most limit / STASH_SHARE */

_Static_assert(H_CHUNK_SHIFT + H_CHUNK_BITS == UPG_POOL_HANDLE_BITS,
	       "handle layout must fill exactly 56 bits");
_Static_assert(UPG_COMPRESS_MAX % CLASS_STEP == 0, "class step");
_Static_assert(UPG_COMPRESS_MAX < (1 << H_LEN_BITS), "length field");
_Static_assert(MAX_SLOTS <= (1 << H_IDX_BITS), "slot field");
_Static_assert(MAX_SLOTS < NO_OBJ, "slot type");
_Static_assert(MAX_CHUNKS <= (1ULL << H_CHUNK_BITS), "chunk id field");

/*
 * Chunk metadata, kept outside the chunk so that objects fill all of it.
 * @base: the mapping, NULL while the id is free. Written under the class
 *	lock (release) and read without it (acquire) by load and equal.
 * The rest is protected by the lock of class @cls while the chunk is
 * mapped, by id_lock while its id is free (then @next links free ids).
 */
struct chunk {
	char *base;
	uint32_t prev, next; /* fullness list links, chunk ids */
	uint16_t inuse;	     /* live objects */
	uint16_t fresh;	     /* slots >= fresh were never handed out */
	uint16_t free_head;  /* freed slots, linked through their bytes */
	uint8_t cls, group;  /* size class, fullness group or GROUP_FULL */
};

/* One size class. @lock protects @head and the chunks of this class. */
struct size_class {
	pthread_mutex_t lock;
	uint32_t head[NR_GROUPS]; /* non-full chunks, fullest group last */
	uint32_t evac;		  /* chunks being emptied by compaction */
	uint32_t size;		  /* object size in bytes */
	uint32_t chunk_bytes;
	uint16_t cap; /* objects per chunk */
} __attribute__((aligned(UPG_CACHELINE)));

/*
 * Interned same-filled words that do not fit inline. @lock protects all;
 * load reads @word[i] without it: a slot's word only changes when its
 * refcount is 0, and the caller holds a reference.
 */
struct same_table {
	pthread_mutex_t lock;
	uint64_t word[SAME_SLOTS];
	uint32_t refs[SAME_SLOTS];
};

/*
 * Empty chunks kept mapped, by size in pages from CHUNK_MIN_PAGES, each
 * list linked through the first word of its chunks. @lock protects all.
 */
struct stash {
	pthread_mutex_t lock;
	void *head[STASH_SIZES];
	uint64_t bytes;
};

struct upg_pool {
	struct chunk *chunks; /* MAX_CHUNKS entries, mapped NORESERVE */
	pthread_mutex_t id_lock;
	uint32_t id_free; /* free ids, linked through chunk.next */
	uint32_t id_next; /* ids >= id_next were never used */
	struct same_table same;
	struct stash stash;
	struct upg_pool_stats st __attribute__((aligned(UPG_CACHELINE)));
	uint64_t evac_left; /* objects still in GROUP_EVAC chunks (atomic) */
	uint64_t
		evac_freed; /* bytes unmapped by this compaction (its thread) */
	uint32_t evac_count[MAX_SLOTS + 1]; /* its scratch: chunks by inuse */
	struct size_class cls[NR_CLASSES];
};

static inline void stat_add(uint64_t *c, int64_t v)
{
	__atomic_fetch_add(c, (uint64_t)v, __ATOMIC_RELAXED);
}

static inline uint64_t stat_get(const uint64_t *c)
{
	return __atomic_load_n(c, __ATOMIC_RELAXED);
}

static inline uint64_t kind_bits(enum upg_pool_kind kind)
{
	return (uint64_t)kind + 1;
}

static inline uint64_t obj_handle(enum upg_pool_kind kind, uint32_t cid,
				  unsigned idx, int len)
{
	return kind_bits(kind) | (uint64_t)idx << H_IDX_SHIFT |
	       (uint64_t)len << H_LEN_SHIFT | (uint64_t)cid << H_CHUNK_SHIFT;
}

static inline unsigned h_idx(uint64_t h)
{
	return (h >> H_IDX_SHIFT) & ((1U << H_IDX_BITS) - 1);
}

static inline int h_len(uint64_t h)
{
	if (upg_pool_kind(h) == UPG_POOL_RAW)
		return (int)UPG_PAGE_SIZE;
	return (int)((h >> H_LEN_SHIFT) & ((1U << H_LEN_BITS) - 1));
}

static inline uint32_t h_chunk(uint64_t h)
{
	return (uint32_t)(h >> H_CHUNK_SHIFT);
}

/* The class of an object of @len bytes (UPG_PAGE_SIZE: raw). */
static inline unsigned len_class(int len)
{
	if (len > UPG_COMPRESS_MAX)
		return RAW_CLASS;
	return (unsigned)(len + CLASS_STEP - 1) / CLASS_STEP - 1;
}

/*
 * A chunk's group is written under its class lock and read without it by
 * upg_pool_move(), which only asks whether it is GROUP_EVAC: a state that
 * only compaction, on the caller's thread, sets and clears.
 */
static inline void set_group(struct chunk *ch, unsigned g)
{
	__atomic_store_n(&ch->group, (uint8_t)g, __ATOMIC_RELAXED);
}

static inline void list_add(struct upg_pool *pool, uint32_t *head, uint32_t id)
{
	struct chunk *ch = &pool->chunks[id];

	ch->prev = NO_CHUNK;
	ch->next = *head;
	if (*head != NO_CHUNK)
		pool->chunks[*head].prev = id;
	*head = id;
}

static inline void list_del(struct upg_pool *pool, uint32_t *head, uint32_t id)
{
	struct chunk *ch = &pool->chunks[id];

	if (ch->prev != NO_CHUNK)
		pool->chunks[ch->prev].next = ch->next;
	else
		*head = ch->next;
	if (ch->next != NO_CHUNK)
		pool->chunks[ch->next].prev = ch->prev;
}

static inline char *slot_addr(const struct size_class *sc, char *base,
			      unsigned idx)
{
	return base + (size_t)idx * sc->size;
}

/* Whether @h is well-formed for an object (kind, length and chunk id). */
static inline bool obj_handle_valid(uint64_t h)
{
	return (h & H_KIND_MASK) != 0 && h_len(h) > 0 &&
	       h_chunk(h) < MAX_CHUNKS && h >> UPG_POOL_HANDLE_BITS == 0;
}

/* Allocator internals compaction uses (pool.c; see there). */
void pool_regroup(struct upg_pool *pool, struct size_class *sc, uint32_t id);
int pool_obj_alloc(struct upg_pool *pool, unsigned c, bool grow, uint32_t *id,
		   unsigned *idx);
void pool_obj_free(struct upg_pool *pool, unsigned c, uint32_t id, unsigned idx,
		   bool park);
const char *pool_obj_ptr(struct upg_pool *pool, uint64_t h);

#endif
