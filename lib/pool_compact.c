/* SPDX-License-Identifier: MIT */
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
#include <errno.h>
#include <string.h>

#include "pool_impl.h"

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
	obj = pool_obj_ptr(pool, h);
	if (!obj)
		return -EIO;
	len = h_len(h);
	c = len_class(len);
	ret = pool_obj_alloc(pool, c, false, &id, &idx);
	if (ret)
		return ret;
	memcpy(slot_addr(&pool->cls[c], pool->chunks[id].base, idx), obj,
	       (size_t)len);
	*nh = obj_handle(kind, id, idx, kind == UPG_POOL_RAW ? 0 : len);
	pool_obj_free(pool, c, h_chunk(h), h_idx(h), false);
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
			pool_regroup(pool, sc, id);
		}
		pthread_mutex_unlock(&sc->lock);
	}
	pool->evac_freed = 0;
	return freed;
}
