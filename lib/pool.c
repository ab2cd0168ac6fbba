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
 * objects move only when compaction (pool_compact.c, compact.c) empties
 * sparse chunks, and then the owner of the handle gets a new one. The
 * structures and helpers both files use are in pool_impl.h.
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
 * both); only a class lock is ever held across mmap or munmap. A class lock
 * protects its fullness lists and all metadata of its chunks except @base;
 * id_lock protects the free chunk-id list. The interned-word table has its
 * own lock, never held with another. Loads and comparisons take no lock: the
 * caller guarantees that nobody frees the handle meanwhile, so the chunk is
 * mapped and its slot is stable; the chunk table is mapped once for
 * MAX_CHUNKS entries and never moves, and @base is published with release
 * before the handle exists.
 *
 * Invariants. stats.used_bytes is the size of all mapped chunks and never
 * exceeds stats.max_bytes at the time the chunk was mapped (it is reserved
 * with a compare-and-swap before mmap). A mapped chunk holds at least one
 * live object except inside pool_obj_alloc(). Statistics are relaxed atomics:
 * they are counters, nothing is published through them.
 */
#include <errno.h>
#include <pthread.h>
#include <string.h>

#include "pool_impl.h"

/* ---------------------------------------------------------------------- */
/* Statistics */

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

/* The list chunk @ch is on, or NULL. */
static uint32_t *chunk_list(struct size_class *sc, const struct chunk *ch)
{
	if (ch->group < NR_GROUPS)
		return &sc->head[ch->group];
	return ch->group == GROUP_EVAC ? &sc->evac : NULL;
}

/* Move chunk @id to the list that matches its fullness (unless evacuated). */
void pool_regroup(struct upg_pool *pool, struct size_class *sc, uint32_t id)
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
	pool_regroup(pool, sc, id);
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
	pool_regroup(pool, sc, id);
	return idx;
}

/*
 * Allocate one object of class @c, in a new chunk if none has room and
 * @grow. Return: 0, -ENOSPC, -ENOMEM, or -EAGAIN (no room, !@grow).
 */
int pool_obj_alloc(struct upg_pool *pool, unsigned c, bool grow, uint32_t *id,
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
void pool_obj_free(struct upg_pool *pool, unsigned c, uint32_t id, unsigned idx,
		   bool park)
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
		pool_regroup(pool, sc, id);
	pthread_mutex_unlock(&sc->lock);
	if (dead)
		chunk_release(pool, sc, id, dead, park);
}

/*
 * The bytes of the object behind @h, or NULL for a handle that names no
 * live chunk. Lock-free: see the file comment.
 */
const char *pool_obj_ptr(struct upg_pool *pool, uint64_t h)
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

	ret = pool_obj_alloc(pool, c, true, &id, &idx);
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
	obj = pool_obj_ptr(pool, handle);
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
	*obj = pool_obj_ptr(pool, handle);
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
	obj = pool_obj_ptr(pool, handle);
	if (!obj)
		return false;
	if (upg_pool_kind(handle) == UPG_POOL_RAW)
		return !memcmp(obj, page, UPG_PAGE_SIZE);
	return !upg_decompress_page(obj, h_len(handle), buf) &&
	       !memcmp(buf, page, UPG_PAGE_SIZE);
}

/*
 * Freeing an object writes the chunk's free list into it, and write-back
 * frees a batch of objects it copied megabytes ago: one at a time, each
 * free waited for its chunk's entry and then for its object's line (~150 ns
 * a free, 16 of the 18 ms that publishing ~107,000 entries took in
 * bench_swap --phase writeback). Loading them all first, then freeing,
 * halved that.
 */
static void prefetch_objects(struct upg_pool *pool, const uint64_t *handles,
			     unsigned n)
{
	for (unsigned i = 0; i < n; i++)
		if (obj_handle_valid(handles[i]))
			__builtin_prefetch(&pool->chunks[h_chunk(handles[i])]);
	for (unsigned i = 0; i < n; i++) {
		const char *obj = pool_obj_ptr(pool, handles[i]);

		if (obj)
			__builtin_prefetch(obj, 1);
	}
}

/* A malformed handle (0 included) is ignored, like free(NULL). */
void upg_pool_free_many(struct upg_pool *pool, const uint64_t *handles,
			unsigned n)
{
	int64_t objects = 0, same = 0, bytes = 0, raw = 0;

	if (n > 1)
		prefetch_objects(pool, handles, n);
	for (unsigned i = 0; i < n; i++) {
		uint64_t h = handles[i];
		enum upg_pool_kind kind = upg_pool_kind(h);

		if (kind == UPG_POOL_SAME) {
			if (same_form(h) == SAME_INTERNED)
				same_put(&pool->same,
					 (unsigned)same_payload(h));
			same++;
			continue;
		}
		if (!obj_handle_valid(h))
			continue;
		pool_obj_free(pool, len_class(h_len(h)), h_chunk(h), h_idx(h),
			      true);
		objects++;
		bytes += h_len(h);
		raw += kind == UPG_POOL_RAW;
	}
	/* (the counters as stats_account() keeps them, added up) */
	if (!objects && !same)
		return;
	stat_add(&pool->st.objects, -(objects + same));
	stat_add(&pool->st.stored_bytes,
		 -(objects + same) * (int64_t)UPG_PAGE_SIZE);
	if (same)
		stat_add(&pool->st.same, -same);
	if (objects)
		stat_add(&pool->st.compressed_bytes, -bytes);
	if (raw)
		stat_add(&pool->st.raw, -raw);
}

void upg_pool_free(struct upg_pool *pool, uint64_t handle)
{
	upg_pool_free_many(pool, &handle, 1);
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
