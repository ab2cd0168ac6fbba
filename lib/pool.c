/* SPDX-License-Identifier: MIT */
/*
 * The compressed pool: a zsmalloc-like size-class allocator for LZ4 objects.
 *
 * Concept. An object lives in a chunk: 16-128 KiB of anonymous memory mapped
 * with upg_map() (never malloc: in preload mode malloc is ours and lives in
 * managed memory). Each chunk serves one size class; compressed objects use
 * classes in CLASS_STEP steps up to UPG_COMPRESS_MAX, pages that compress
 * worse are stored raw in a 4096-byte class. A class keeps its non-full
 * chunks in NR_GROUPS lists by fullness and allocates from the fullest, so
 * that frees concentrate in few chunks; a chunk whose last object is freed
 * is given back (parked, below). Same-filled pages take no object: the
 * handle carries the word, inline or as an index into a small refcounted
 * table of interned words. The handle names the chunk and slot directly;
 * objects move only when compaction (below, and compact.c) empties sparse
 * chunks, and then the owner of the handle gets a new one.
 *
 * Empty chunks. Unmapping a chunk that threads on both CPUs have touched
 * costs a TLB-shootdown IPI: ~16 us measured here, 5.5K of them per 200 MiB
 * of write-back, a third of its time. So an emptied chunk is parked in a
 * stash (by size, linked through its own first bytes) and the next chunk
 * of that size is taken from there, already mapped and faulted in. Parked
 * chunks stay in used_bytes (the memory is held); the stash holds at most
 * a quarter of the limit (write-back frees a quarter of the pool per run),
 * and is emptied when a new chunk of another size would not fit the limit,
 * when the limit drops, and by upg_pool_trim().
 *
 * Handle layout (56 bits; 0 is never a handle because the kind is never 0):
 *   bits  0-1   kind + 1 (1 same, 2 compressed, 3 raw)
 *   same:   bits 2-3 form, bits 4-55 payload
 *           form 0: the word, sign-extended from 52 bits
 *           form 1: the word is two equal 32-bit halves; payload = one half
 *           form 2: payload = index into the interned-word table
 *   object: bits 2-14 slot, bits 15-26 compressed length (0 for raw),
 *           bits 27-55 chunk id
 *
 * Locking. Lock order: class lock, then the stash lock or id_lock (never
 * both); only a class lock is ever held across mmap or munmap. A class
 * lock protects its fullness lists and all metadata of its chunks except
 * @base; id_lock protects the free chunk-id list. The interned-word table has its own lock,
 * never held with another. Loads and comparisons take no lock: the caller
 * guarantees that nobody frees the handle meanwhile, so the chunk is mapped
 * and its slot is stable; the chunk table is mapped once for MAX_CHUNKS
 * entries and never moves, and @base is published with release before the
 * handle exists.
 *
 * Invariants. stats.used_bytes is the size of all mapped chunks and never
 * exceeds stats.max_bytes at the time the chunk was mapped (it is reserved
 * with a compare-and-swap before mmap). A mapped chunk holds at least one
 * live object except inside obj_alloc(). Statistics are relaxed atomics:
 * they are counters, nothing is published through them.
 */
#include <errno.h>
#include <pthread.h>
#include <string.h>

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

/* ---------------------------------------------------------------------- */
/* Statistics */

static void stat_add(uint64_t *c, int64_t v)
{
	__atomic_fetch_add(c, (uint64_t)v, __ATOMIC_RELAXED);
}

static uint64_t stat_get(const uint64_t *c)
{
	return __atomic_load_n(c, __ATOMIC_RELAXED);
}

static void stats_account(struct upg_pool *pool, enum upg_pool_kind kind,
			  int len, int sign)
{
	struct upg_pool_stats *st = &pool->st;

	stat_add(&st->objects, sign);
	stat_add(&st->stored_bytes, sign * (int64_t)UPG_PAGE_SIZE);
	if (kind == UPG_POOL_SAME)
		stat_add(&st->same, sign);
	else
		stat_add(&st->compressed_bytes, sign * (int64_t)len);
	if (kind == UPG_POOL_RAW)
		stat_add(&st->raw, sign);
}

/* Reserve @n bytes of the limit; false when that would exceed it. */
static bool bytes_reserve(struct upg_pool *pool, uint64_t n)
{
	uint64_t used = stat_get(&pool->st.used_bytes);

	do {
		if (used + n > stat_get(&pool->st.max_bytes))
			return false;
	} while (!__atomic_compare_exchange_n(&pool->st.used_bytes, &used,
					      used + n, true, __ATOMIC_RELAXED,
					      __ATOMIC_RELAXED));
	return true;
}

static void bytes_release(struct upg_pool *pool, uint64_t n)
{
	__atomic_fetch_sub(&pool->st.used_bytes, n, __ATOMIC_RELAXED);
}

/* ---------------------------------------------------------------------- */
/* Handles */

enum upg_pool_kind upg_pool_kind(uint64_t handle)
{
	return (enum upg_pool_kind)((handle & H_KIND_MASK) - 1);
}

static uint64_t kind_bits(enum upg_pool_kind kind)
{
	return (uint64_t)kind + 1;
}

static uint64_t same_handle(enum same_form form, uint64_t payload)
{
	uint64_t mask = (1ULL << H_SAME_VAL_BITS) - 1;

	return kind_bits(UPG_POOL_SAME) | (uint64_t)form << H_SAME_FORM_SHIFT |
	       (payload & mask) << H_SAME_VAL_SHIFT;
}

static enum same_form same_form(uint64_t h)
{
	return (enum same_form)((h >> H_SAME_FORM_SHIFT) & 3);
}

static uint64_t same_payload(uint64_t h)
{
	return h >> H_SAME_VAL_SHIFT;
}

static uint64_t obj_handle(enum upg_pool_kind kind, uint32_t cid, unsigned idx,
			   int len)
{
	return kind_bits(kind) | (uint64_t)idx << H_IDX_SHIFT |
	       (uint64_t)len << H_LEN_SHIFT | (uint64_t)cid << H_CHUNK_SHIFT;
}

static unsigned h_idx(uint64_t h)
{
	return (h >> H_IDX_SHIFT) & ((1U << H_IDX_BITS) - 1);
}

static int h_len(uint64_t h)
{
	if (upg_pool_kind(h) == UPG_POOL_RAW)
		return (int)UPG_PAGE_SIZE;
	return (int)((h >> H_LEN_SHIFT) & ((1U << H_LEN_BITS) - 1));
}

static uint32_t h_chunk(uint64_t h)
{
	return (uint32_t)(h >> H_CHUNK_SHIFT);
}

/* The class of an object of @len bytes (UPG_PAGE_SIZE: raw). */
static unsigned len_class(int len)
{
	if (len > UPG_COMPRESS_MAX)
		return RAW_CLASS;
	return (unsigned)(len + CLASS_STEP - 1) / CLASS_STEP - 1;
}

/* ---------------------------------------------------------------------- */
/* Same-filled words */

/*
 * Take a reference on the interned slot for @w, creating it if needed.
 * Return: the slot, or -ENOSPC when the table is full.
 */
static int same_get(struct same_table *t, uint64_t w)
{
	int i, slot = -ENOSPC;

	pthread_mutex_lock(&t->lock);
	for (i = 0; i < SAME_SLOTS; i++) {
		if (t->refs[i] && t->word[i] == w) {
			slot = i;
			break;
		}
		if (!t->refs[i] && slot < 0)
			slot = i;
	}
	if (slot >= 0) {
		if (!t->refs[slot])
			t->word[slot] = w;
		t->refs[slot]++;
	}
	pthread_mutex_unlock(&t->lock);
	return slot;
}

static void same_put(struct same_table *t, unsigned slot)
{
	pthread_mutex_lock(&t->lock);
	if (slot < SAME_SLOTS && t->refs[slot])
		t->refs[slot]--;
	pthread_mutex_unlock(&t->lock);
}

/* Encode @w in a handle; false when not inline and the table is full. */
static bool same_encode(struct upg_pool *pool, uint64_t w, uint64_t *h)
{
	int64_t sext = (int64_t)(w << (64 - H_SAME_VAL_BITS)) >>
		       (64 - H_SAME_VAL_BITS);
	int slot;

	if ((uint64_t)sext == w) {
		*h = same_handle(SAME_SEXT, w);
		return true;
	}
	if (w >> 32 == (w & 0xffffffffULL)) {
		*h = same_handle(SAME_HALVES, w & 0xffffffffULL);
		return true;
	}
	slot = same_get(&pool->same, w);
	if (slot < 0)
		return false;
	*h = same_handle(SAME_INTERNED, (uint64_t)slot);
	return true;
}

/* The word of a same-filled handle. Return: 0, or -EIO for a bad handle. */
static int same_decode(struct upg_pool *pool, uint64_t h, uint64_t *w)
{
	uint64_t v = same_payload(h);

	switch (same_form(h)) {
	case SAME_SEXT:
		*w = (uint64_t)((int64_t)(h << (64 - UPG_POOL_HANDLE_BITS)) >>
				(64 - UPG_POOL_HANDLE_BITS + H_SAME_VAL_SHIFT));
		return 0;
	case SAME_HALVES:
		*w = v << 32 | v;
		return 0;
	case SAME_INTERNED:
		if (v >= SAME_SLOTS)
			return -EIO;
		*w = pool->same.word[v];
		return 0;
	}
	return -EIO;
}

/* ---------------------------------------------------------------------- */
/*
 * Chunks: ids (under id_lock), mapping and fullness lists (caller holds the
 * class lock). A new chunk is mapped under its class lock: that stalls only
 * its class, once per 16-128 KiB of objects.
 */

static uint32_t id_get(struct upg_pool *pool)
{
	uint32_t id;

	pthread_mutex_lock(&pool->id_lock);
	id = pool->id_free;
	if (id != NO_CHUNK)
		pool->id_free = pool->chunks[id].next;
	else if (pool->id_next < MAX_CHUNKS)
		id = pool->id_next++;
	pthread_mutex_unlock(&pool->id_lock);
	return id;
}

static void id_put(struct upg_pool *pool, uint32_t id)
{
	pthread_mutex_lock(&pool->id_lock);
	pool->chunks[id].next = pool->id_free;
	pool->id_free = id;
	pthread_mutex_unlock(&pool->id_lock);
}

static void list_add(struct upg_pool *pool, uint32_t *head, uint32_t id)
{
	struct chunk *ch = &pool->chunks[id];

	ch->prev = NO_CHUNK;
	ch->next = *head;
	if (*head != NO_CHUNK)
		pool->chunks[*head].prev = id;
	*head = id;
}

static void list_del(struct upg_pool *pool, uint32_t *head, uint32_t id)
{
	struct chunk *ch = &pool->chunks[id];

	if (ch->prev != NO_CHUNK)
		pool->chunks[ch->prev].next = ch->next;
	else
		*head = ch->next;
	if (ch->next != NO_CHUNK)
		pool->chunks[ch->next].prev = ch->prev;
}

/*
 * A chunk's group is written under its class lock and read without it by
 * upg_pool_move(), which only asks whether it is GROUP_EVAC: a state that
 * only compaction, on the caller's thread, sets and clears.
 */
static void set_group(struct chunk *ch, unsigned g)
{
	__atomic_store_n(&ch->group, (uint8_t)g, __ATOMIC_RELAXED);
}

/* The list chunk @ch is on, or NULL. */
static uint32_t *chunk_list(struct size_class *sc, const struct chunk *ch)
{
	if (ch->group < NR_GROUPS)
		return &sc->head[ch->group];
	return ch->group == GROUP_EVAC ? &sc->evac : NULL;
}

/* Move chunk @id to the list that matches its fullness (unless evacuated). */
static void regroup(struct upg_pool *pool, struct size_class *sc, uint32_t id)
{
	struct chunk *ch = &pool->chunks[id];
	unsigned g = GROUP_FULL;

	if (ch->inuse < sc->cap)
		g = (unsigned)ch->inuse * NR_GROUPS / sc->cap;
	if (g == ch->group || ch->group == GROUP_EVAC)
		return;
	if (ch->group < NR_GROUPS)
		list_del(pool, &sc->head[ch->group], id);
	if (g < NR_GROUPS)
		list_add(pool, &sc->head[g], id);
	set_group(ch, g);
}

/* The fullest non-full chunk of @sc, or NO_CHUNK. */
static uint32_t class_pick(const struct size_class *sc)
{
	int g;

	for (g = NR_GROUPS - 1; g >= 0; g--)
		if (sc->head[g] != NO_CHUNK)
			return sc->head[g];
	return NO_CHUNK;
}

/* ---------------------------------------------------------------------- */
/* The stash of empty chunks */

static void **stash_head(struct upg_pool *pool, uint32_t bytes)
{
	return &pool->stash.head[bytes / UPG_PAGE_SIZE - CHUNK_MIN_PAGES];
}

/* An empty chunk of @bytes from the stash (still counted), or NULL. */
static char *stash_take(struct upg_pool *pool, uint32_t bytes)
{
	struct stash *sh = &pool->stash;
	void **head = stash_head(pool, bytes);
	char *base;

	pthread_mutex_lock(&sh->lock);
	base = *head;
	if (base) {
		memcpy(head, base, sizeof(*head));
		sh->bytes -= bytes;
	}
	pthread_mutex_unlock(&sh->lock);
	return base;
}

/* Park the empty chunk @base of @bytes; false if the stash is full. */
static bool stash_put(struct upg_pool *pool, uint32_t bytes, char *base)
{
	struct stash *sh = &pool->stash;
	uint64_t cap = stat_get(&pool->st.max_bytes) / STASH_SHARE;
	void **head = stash_head(pool, bytes);
	bool ok;

	pthread_mutex_lock(&sh->lock);
	ok = sh->bytes + bytes <= cap;
	if (ok) {
		memcpy(base, head, sizeof(*head));
		*head = base;
		sh->bytes += bytes;
	}
	pthread_mutex_unlock(&sh->lock);
	return ok;
}

/* Unmap one parked chunk, the largest. Return: false if none was parked. */
static bool stash_drop_one(struct upg_pool *pool)
{
	struct stash *sh = &pool->stash;
	uint32_t bytes = 0;
	char *base = NULL;

	pthread_mutex_lock(&sh->lock);
	for (int i = STASH_SIZES - 1; i >= 0 && !base; i--) {
		base = sh->head[i];
		bytes = (uint32_t)(i + CHUNK_MIN_PAGES) * UPG_PAGE_SIZE;
	}
	if (base) {
		memcpy(&sh->head[bytes / UPG_PAGE_SIZE - CHUNK_MIN_PAGES], base,
		       sizeof(void *));
		sh->bytes -= bytes;
	}
	pthread_mutex_unlock(&sh->lock);
	if (!base)
		return false;
	upg_unmap(base, bytes);
	bytes_release(pool, bytes);
	return true;
}

static uint64_t stash_bytes(struct upg_pool *pool)
{
	uint64_t b;

	pthread_mutex_lock(&pool->stash.lock);
	b = pool->stash.bytes;
	pthread_mutex_unlock(&pool->stash.lock);
	return b;
}

/* Unmap parked chunks until the stash holds at most @cap bytes. */
static void stash_trim(struct upg_pool *pool, uint64_t cap)
{
	while (stash_bytes(pool) > cap && stash_drop_one(pool))
		;
}

/* Reserve @n bytes of the limit, unmapping parked chunks to make room. */
static bool room_for(struct upg_pool *pool, uint64_t n)
{
	while (!bytes_reserve(pool, n))
		if (!stash_drop_one(pool))
			return false;
	return true;
}

/* An empty chunk of @bytes, parked or newly mapped; NULL with *@err set. */
static char *chunk_get(struct upg_pool *pool, uint32_t bytes, int *err)
{
	char *base = stash_take(pool, bytes);

	if (base)
		return base;
	if (!room_for(pool, bytes)) {
		*err = -ENOSPC;
		return NULL;
	}
	base = upg_map(bytes);
	if (!base) {
		bytes_release(pool, bytes);
		*err = -ENOMEM;
	}
	return base;
}

/* Give back an empty chunk: parked, or unmapped when the stash is full. */
static void chunk_put(struct upg_pool *pool, uint32_t bytes, char *base)
{
	if (stash_put(pool, bytes, base))
		return;
	upg_unmap(base, bytes);
	bytes_release(pool, bytes);
}

/* ---------------------------------------------------------------------- */
/*
 * Map a new, empty chunk for class @c and put it on its fullness list.
 * Return: 0, -ENOSPC at the limit or out of chunk ids, -ENOMEM.
 */
static int chunk_new(struct upg_pool *pool, unsigned c, uint32_t *out)
{
	struct size_class *sc = &pool->cls[c];
	struct chunk *ch;
	uint32_t id;
	char *base;
	int err = 0;

	base = chunk_get(pool, sc->chunk_bytes, &err);
	if (!base)
		return err;
	id = id_get(pool);
	if (id == NO_CHUNK) {
		chunk_put(pool, sc->chunk_bytes, base);
		return -ENOSPC;
	}
	ch = &pool->chunks[id];
	*ch = (struct chunk){ .free_head = NO_OBJ, .cls = (uint8_t)c };
	set_group(ch, GROUP_NONE);
	__atomic_store_n(&ch->base, base, __ATOMIC_RELEASE);
	regroup(pool, sc, id);
	*out = id;
	return 0;
}

/*
 * Take the chunk @id off its list and forget its mapping; the caller gives
 * it back with chunk_release() after dropping the class lock.
 * Return: the mapping.
 */
static char *chunk_retire(struct upg_pool *pool, struct size_class *sc,
			  uint32_t id)
{
	struct chunk *ch = &pool->chunks[id];
	uint32_t *list = chunk_list(sc, ch);
	char *base = ch->base;

	if (list)
		list_del(pool, list, id);
	set_group(ch, GROUP_NONE);
	stat_add(&pool->st.hole_bytes, -(int64_t)ch->fresh * sc->size);
	__atomic_store_n(&ch->base, NULL, __ATOMIC_RELAXED);
	return base;
}

/*
 * Park (if @park) or unmap a retired chunk, then give back its id. Only
 * compaction unmaps (see evac_freed).
 * Unmapping releases its bytes after the munmap, so that used_bytes never
 * undercounts what is mapped. No lock held.
 */
static void chunk_release(struct upg_pool *pool, struct size_class *sc,
			  uint32_t id, char *base, bool park)
{
	if (park) {
		chunk_put(pool, sc->chunk_bytes, base);
	} else {
		upg_unmap(base, sc->chunk_bytes);
		bytes_release(pool, sc->chunk_bytes);
		pool->evac_freed += sc->chunk_bytes;
	}
	id_put(pool, id);
}

/* ---------------------------------------------------------------------- */
/* Objects */

static char *slot_addr(const struct size_class *sc, char *base, unsigned idx)
{
	return base + (size_t)idx * sc->size;
}

/* Take a slot from chunk @id. Caller holds the class lock; chunk not full. */
static unsigned chunk_take(struct upg_pool *pool, struct size_class *sc,
			   uint32_t id)
{
	struct chunk *ch = &pool->chunks[id];
	unsigned idx;

	if (ch->free_head != NO_OBJ) {
		idx = ch->free_head;
		memcpy(&ch->free_head, slot_addr(sc, ch->base, idx),
		       sizeof(ch->free_head));
		stat_add(&pool->st.hole_bytes, -(int64_t)sc->size);
	} else {
		idx = ch->fresh++;
	}
	ch->inuse++;
	regroup(pool, sc, id);
	return idx;
}

/*
 * Allocate one object of class @c, in a new chunk if none has room and
 * @grow. Return: 0, -ENOSPC, -ENOMEM, or -EAGAIN (no room, !@grow).
 */
static int obj_alloc(struct upg_pool *pool, unsigned c, bool grow, uint32_t *id,
		     unsigned *idx)
{
	struct size_class *sc = &pool->cls[c];
	uint32_t cid;
	int ret = 0;

	pthread_mutex_lock(&sc->lock);
	cid = class_pick(sc);
	if (cid == NO_CHUNK) {
		ret = grow ? chunk_new(pool, c, &cid) : -EAGAIN;
		if (ret)
			goto out_unlock;
	}
	*idx = chunk_take(pool, sc, cid);
	*id = cid;
out_unlock:
	pthread_mutex_unlock(&sc->lock);
	return ret;
}

/* Free a slot; a chunk left empty is parked if @park, else unmapped. */
static void obj_free(struct upg_pool *pool, unsigned c, uint32_t id,
		     unsigned idx, bool park)
{
	struct size_class *sc = &pool->cls[c];
	struct chunk *ch = &pool->chunks[id];
	char *dead = NULL;

	pthread_mutex_lock(&sc->lock);
	memcpy(slot_addr(sc, ch->base, idx), &ch->free_head,
	       sizeof(ch->free_head));
	ch->free_head = (uint16_t)idx;
	stat_add(&pool->st.hole_bytes, sc->size);
	if (ch->group == GROUP_EVAC)
		stat_add(&pool->evac_left, -1);
	if (--ch->inuse == 0)
		dead = chunk_retire(pool, sc, id);
	else
		regroup(pool, sc, id);
	pthread_mutex_unlock(&sc->lock);
	if (dead)
		chunk_release(pool, sc, id, dead, park);
}

/* Whether @h is well-formed for an object (kind, length and chunk id). */
static bool obj_handle_valid(uint64_t h)
{
	return (h & H_KIND_MASK) != 0 && h_len(h) > 0 &&
	       h_chunk(h) < MAX_CHUNKS && h >> UPG_POOL_HANDLE_BITS == 0;
}

/*
 * The bytes of the object behind @h, or NULL for a handle that names no
 * live chunk. Lock-free: see the file comment.
 */
static const char *obj_ptr(struct upg_pool *pool, uint64_t h)
{
	uint32_t id = h_chunk(h);
	unsigned idx = h_idx(h);
	const struct size_class *sc;
	char *base;

	if (!obj_handle_valid(h))
		return NULL;
	base = __atomic_load_n(&pool->chunks[id].base, __ATOMIC_ACQUIRE);
	sc = &pool->cls[len_class(h_len(h))];
	if (!base || idx >= sc->cap)
		return NULL;
	return slot_addr(sc, base, idx);
}

static int store_object(struct upg_pool *pool, enum upg_pool_kind kind,
			const void *src, int len, uint64_t *handle)
{
	unsigned c = len_class(len), idx;
	uint32_t id;
	int ret;

	ret = obj_alloc(pool, c, true, &id, &idx);
	if (ret)
		return ret;
	memcpy(slot_addr(&pool->cls[c], pool->chunks[id].base, idx), src,
	       (size_t)len);
	*handle = obj_handle(kind, id, idx, kind == UPG_POOL_RAW ? 0 : len);
	stats_account(pool, kind, len, 1);
	return (int)kind;
}

/* ---------------------------------------------------------------------- */
/* API */

int upg_pool_store(struct upg_pool *pool, const void *page, uint64_t *handle)
{
	char buf[UPG_COMPRESS_MAX];
	uint64_t word;
	int len;

	if (upg_page_same_filled(page, &word) &&
	    same_encode(pool, word, handle)) {
		stats_account(pool, UPG_POOL_SAME, 0, 1);
		return UPG_POOL_SAME;
	}
	len = upg_compress_page(page, buf, (int)sizeof(buf));
	if (len > 0)
		return store_object(pool, UPG_POOL_COMPRESSED, buf, len,
				    handle);
	return store_object(pool, UPG_POOL_RAW, page, (int)UPG_PAGE_SIZE,
			    handle);
}

int upg_pool_load(struct upg_pool *pool, uint64_t handle, void *page)
{
	const char *obj;
	uint64_t word;

	if (upg_pool_kind(handle) == UPG_POOL_SAME) {
		if (same_decode(pool, handle, &word))
			return -EIO;
		upg_page_fill(page, word);
		return 0;
	}
	obj = obj_ptr(pool, handle);
	if (!obj)
		return -EIO;
	if (upg_pool_kind(handle) == UPG_POOL_RAW) {
		memcpy(page, obj, UPG_PAGE_SIZE);
		return 0;
	}
	return upg_decompress_page(obj, h_len(handle), page);
}

int upg_pool_object(struct upg_pool *pool, uint64_t handle, const void **obj)
{
	if (upg_pool_kind(handle) == UPG_POOL_SAME)
		return -EINVAL;
	*obj = obj_ptr(pool, handle);
	return *obj ? h_len(handle) : -EIO;
}

bool upg_pool_equal(struct upg_pool *pool, uint64_t handle, const void *page)
{
	char buf[UPG_PAGE_SIZE];
	const char *obj;
	uint64_t word, w;

	if (upg_pool_kind(handle) == UPG_POOL_SAME)
		return !same_decode(pool, handle, &word) &&
		       upg_page_same_filled(page, &w) && w == word;
	obj = obj_ptr(pool, handle);
	if (!obj)
		return false;
	if (upg_pool_kind(handle) == UPG_POOL_RAW)
		return !memcmp(obj, page, UPG_PAGE_SIZE);
	return !upg_decompress_page(obj, h_len(handle), buf) &&
	       !memcmp(buf, page, UPG_PAGE_SIZE);
}

/* A malformed handle (0 included) is ignored, like free(NULL). */
void upg_pool_free(struct upg_pool *pool, uint64_t handle)
{
	enum upg_pool_kind kind = upg_pool_kind(handle);

	if (kind == UPG_POOL_SAME) {
		if (same_form(handle) == SAME_INTERNED)
			same_put(&pool->same, (unsigned)same_payload(handle));
		stats_account(pool, kind, 0, -1);
		return;
	}
	if (!obj_handle_valid(handle))
		return;
	obj_free(pool, len_class(h_len(handle)), h_chunk(handle), h_idx(handle),
		 true);
	stats_account(pool, kind, h_len(handle), -1);
}

/* ---------------------------------------------------------------------- */
/*
 * Compaction. Random frees leave holes in every chunk, and a chunk is only
 * given back when its last object goes: after the pool shrinks, or as it
 * swings under a steady load, its chunks hold a few per cent of free slots
 * (4% measured at 1 GiB, uniform), memory zsmalloc would give back by
 * compaction. Objects can move only under their owner's page lock, which
 * the pool does not know, so the caller drives it: begin() takes the
 * sparsest chunks whose objects the other chunks' free slots can hold off
 * the fullness lists (no store goes there any more), the caller finds
 * their owners and moves each object with upg_pool_move() into the other
 * chunks, and end() puts back what is left (objects whose owner was busy).
 */

/*
 * Take the sparsest chunks of @sc whose objects fit in the free slots of
 * its other non-full chunks, at most *@budget bytes of objects, off the
 * fullness lists. Caller holds the class lock. Return: chunks taken. (If
 * stores meanwhile use up the room, the last objects stay, and with them
 * their chunk.)
 */
static unsigned class_evacuate(struct upg_pool *pool, struct size_class *sc,
			       uint64_t *budget)
{
	uint32_t *count = pool->evac_count;
	uint64_t room = 0, take, moved = 0;
	unsigned g, t, last_n, taken = 0;
	uint32_t id, next;

	memset(count, 0, (sc->cap + 1U) * sizeof(*count));
	for (g = 0; g < NR_GROUPS; g++)
		for (id = sc->head[g]; id != NO_CHUNK;
		     id = pool->chunks[id].next) {
			room += sc->cap - pool->chunks[id].inuse;
			count[pool->chunks[id].inuse]++;
		}
	/* Each chunk taken uses up exactly cap slots of room: its own free
	 * ones and, elsewhere, one per object it holds. */
	take = room / sc->cap;
	if (!take)
		return 0;
	/* The sparsest @take: all with fewer than t objects, last_n with t. */
	for (t = 0; t < sc->cap && count[t] < take; t++)
		take -= count[t];
	last_n = (unsigned)take;
	for (g = 0; g < NR_GROUPS; g++)
		for (id = sc->head[g]; id != NO_CHUNK; id = next) {
			struct chunk *ch = &pool->chunks[id];

			next = ch->next;
			if (ch->inuse > t || (ch->inuse == t && !last_n))
				continue;
			if (moved + (uint64_t)ch->inuse * sc->size > *budget)
				goto out;
			if (ch->inuse == t)
				last_n--;
			list_del(pool, &sc->head[g], id);
			list_add(pool, &sc->evac, id);
			set_group(ch, GROUP_EVAC);
			stat_add(&pool->evac_left, ch->inuse);
			moved += (uint64_t)ch->inuse * sc->size;
			taken++;
		}
out:
	*budget -= moved;
	return taken;
}

uint64_t upg_pool_compact_begin(struct upg_pool *pool, uint64_t max_bytes)
{
	for (unsigned c = 0; c < NR_CLASSES && max_bytes; c++) {
		struct size_class *sc = &pool->cls[c];

		pthread_mutex_lock(&sc->lock);
		class_evacuate(pool, sc, &max_bytes);
		pthread_mutex_unlock(&sc->lock);
	}
	return upg_pool_compact_left(pool);
}

uint64_t upg_pool_compact_left(struct upg_pool *pool)
{
	return stat_get(&pool->evac_left);
}

bool upg_pool_moving(struct upg_pool *pool, uint64_t h)
{
	return upg_pool_kind(h) != UPG_POOL_SAME && obj_handle_valid(h) &&
	       __atomic_load_n(&pool->chunks[h_chunk(h)].group,
			       __ATOMIC_RELAXED) == GROUP_EVAC;
}

int upg_pool_move(struct upg_pool *pool, uint64_t h, uint64_t *nh)
{
	enum upg_pool_kind kind = upg_pool_kind(h);
	unsigned c, idx;
	const char *obj;
	uint32_t id;
	int len, ret;

	if (!upg_pool_moving(pool, h))
		return 0;
	obj = obj_ptr(pool, h);
	if (!obj)
		return -EIO;
	len = h_len(h);
	c = len_class(len);
	ret = obj_alloc(pool, c, false, &id, &idx);
	if (ret)
		return ret;
	memcpy(slot_addr(&pool->cls[c], pool->chunks[id].base, idx), obj,
	       (size_t)len);
	*nh = obj_handle(kind, id, idx, kind == UPG_POOL_RAW ? 0 : len);
	obj_free(pool, c, h_chunk(h), h_idx(h), false);
	return 1;
}

uint64_t upg_pool_compact_end(struct upg_pool *pool)
{
	uint64_t freed = pool->evac_freed;

	for (unsigned c = 0; c < NR_CLASSES; c++) {
		struct size_class *sc = &pool->cls[c];
		uint32_t id;

		pthread_mutex_lock(&sc->lock);
		while ((id = sc->evac) != NO_CHUNK) {
			struct chunk *ch = &pool->chunks[id];

			list_del(pool, &sc->evac, id);
			stat_add(&pool->evac_left, -(int64_t)ch->inuse);
			set_group(ch, GROUP_NONE);
			regroup(pool, sc, id);
		}
		pthread_mutex_unlock(&sc->lock);
	}
	pool->evac_freed = 0;
	return freed;
}

void upg_pool_set_max(struct upg_pool *pool, size_t max_bytes)
{
	__atomic_store_n(&pool->st.max_bytes, (uint64_t)max_bytes,
			 __ATOMIC_RELAXED);
	stash_trim(pool, max_bytes / STASH_SHARE);
}

void upg_pool_trim(struct upg_pool *pool)
{
	stash_trim(pool, 0);
}

void upg_pool_trim_to(struct upg_pool *pool, uint64_t keep)
{
	stash_trim(pool, keep);
}

void upg_pool_get_stats(struct upg_pool *pool, struct upg_pool_stats *s)
{
	const struct upg_pool_stats *st = &pool->st;

	s->objects = stat_get(&st->objects);
	s->same = stat_get(&st->same);
	s->raw = stat_get(&st->raw);
	s->stored_bytes = stat_get(&st->stored_bytes);
	s->compressed_bytes = stat_get(&st->compressed_bytes);
	s->used_bytes = stat_get(&st->used_bytes);
	s->max_bytes = stat_get(&st->max_bytes);
	s->parked_bytes = stash_bytes(pool);
	s->hole_bytes = stat_get(&st->hole_bytes);
}

/* ---------------------------------------------------------------------- */
/* Setup */

/*
 * Chunk size for objects of @size bytes: of CHUNK_MIN_PAGES ..
 * CHUNK_MAX_PAGES pages, the smallest of those whose tail wastes the
 * least. With 16-byte classes, tail and rounding together waste 0.84% of
 * a chunk on average for objects of 1-2.5 KiB (text-like pages), against
 * 1.4% with 32-byte classes and the first chunk size that wasted less
 * than 1/128 (as before compaction, when small chunks emptied sooner).
 * Chunks of up to 32 pages would waste 0.55%, but a pool limited to 64
 * KiB could no longer hold any.
 */
static uint32_t chunk_bytes_for(uint32_t size)
{
	uint64_t bytes, waste, best = 0, best_waste = 0;
	uint32_t pages;

	for (pages = CHUNK_MIN_PAGES; pages <= CHUNK_MAX_PAGES; pages++) {
		bytes = pages * UPG_PAGE_SIZE;
		waste = bytes % size;
		/* waste / bytes < best_waste / best, without division */
		if (!best || waste * best < best_waste * bytes) {
			best = bytes;
			best_waste = waste;
		}
	}
	return (uint32_t)best;
}

static void class_init(struct size_class *sc, unsigned c)
{
	unsigned g;

	pthread_mutex_init(&sc->lock, NULL);
	for (g = 0; g < NR_GROUPS; g++)
		sc->head[g] = NO_CHUNK;
	sc->evac = NO_CHUNK;
	sc->size = c == RAW_CLASS ? UPG_PAGE_SIZE : (c + 1) * CLASS_STEP;
	sc->chunk_bytes = chunk_bytes_for(sc->size);
	sc->cap = (uint16_t)(sc->chunk_bytes / sc->size);
}

int upg_pool_create(size_t max_bytes, struct upg_pool **out)
{
	struct upg_pool *pool;
	unsigned c;

	pool = upg_map(sizeof(*pool));
	if (!pool)
		return -ENOMEM;
	pool->chunks = upg_map((size_t)MAX_CHUNKS * sizeof(struct chunk));
	if (!pool->chunks) {
		upg_unmap(pool, sizeof(*pool));
		return -ENOMEM;
	}
	pthread_mutex_init(&pool->id_lock, NULL);
	pthread_mutex_init(&pool->same.lock, NULL);
	pthread_mutex_init(&pool->stash.lock, NULL);
	pool->id_free = NO_CHUNK;
	for (c = 0; c < NR_CLASSES; c++)
		class_init(&pool->cls[c], c);
	pool->st.max_bytes = max_bytes;
	*out = pool;
	return 0;
}

/* Unmaps every chunk; no other thread may use the pool any more. */
void upg_pool_destroy(struct upg_pool *pool)
{
	struct chunk *ch;
	uint32_t id;
	unsigned c;

	if (!pool)
		return;
	upg_pool_trim(pool);
	for (id = 0; id < pool->id_next; id++) {
		ch = &pool->chunks[id];
		if (ch->base)
			upg_unmap(ch->base, pool->cls[ch->cls].chunk_bytes);
	}
	for (c = 0; c < NR_CLASSES; c++)
		pthread_mutex_destroy(&pool->cls[c].lock);
	pthread_mutex_destroy(&pool->same.lock);
	pthread_mutex_destroy(&pool->stash.lock);
	pthread_mutex_destroy(&pool->id_lock);
	upg_unmap(pool->chunks, (size_t)MAX_CHUNKS * sizeof(struct chunk));
	upg_unmap(pool, sizeof(*pool));
}
