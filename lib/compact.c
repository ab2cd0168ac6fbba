/* SPDX-License-Identifier: MIT */
/*
 * Pool compaction, the runtime's half (pool.c has the allocator's): find
 * the owners of the objects in the chunks the pool is emptying and move
 * each object under its owner's page lock.
 *
 * Why. Frees leave holes in the pool's chunks, and a chunk goes back only
 * when its last object does. Under a steady oversubscribed load the pool
 * swings by a few per cent, and the chunks it filled at the top stay
 * mapped, 2-4% holes (measured at 1 GiB, uniform); after a program frees
 * half its data the pool would keep nearly all its memory. zsmalloc
 * compacts; so do we.
 *
 * How. The pool keeps no owner per object (8 bytes each, a third of what
 * compaction gives back), so the evictor walks the page tables, as
 * write-back does, checking each entry that holds a pool handle against
 * the chunks being emptied (a lock-free look at the chunk's state), and
 * moves the ones it finds: trylock, move, publish. An entry found locked
 * keeps its object where it is; its chunk is put back at the end. The walk
 * stops as soon as every object has moved.
 *
 * When. On the evictor, between eviction batches and when it would go to
 * sleep, at most every COMPACT_PERIOD_NS, when the holes pass
 * 1/COMPACT_SHARE of the pool's memory plus COMPACT_MIN_BYTES; at most
 * COMPACT_MAX_BYTES of objects per run (the evictor does not evict
 * meanwhile). A discard that leaves the pool with holes past the mark
 * wakes an idle evictor for it (upg_compact_kick()). The same run unmaps
 * all empty chunks parked for reuse once they pass COMPACT_MIN_BYTES,
 * while write-back is not near (parked_excess()).
 */
#include "runtime.h"

#define COMPACT_PERIOD_NS 200000000ULL /* 200 ms */
#define COMPACT_SHARE 256
#define COMPACT_MIN_BYTES (1ULL << 20)
#define COMPACT_MAX_BYTES (32ULL << 20)

/*
 * Whether the pool's holes are worth a compaction: past the mark, over
 * what the last run left (holes it could not fill: classes with too few
 * free slots elsewhere, objects whose owner was busy).
 */
static bool holes_excess(struct upg *u, const struct upg_pool_stats *ps)
{
	uint64_t floor = __atomic_load_n(&u->compact_floor, __ATOMIC_RELAXED);

	if (ps->hole_bytes < floor) /* filled since: lower the floor */
		__atomic_store_n(&u->compact_floor, floor = ps->hole_bytes,
				 __ATOMIC_RELAXED);
	return ps->hole_bytes - floor >
	       ps->used_bytes / COMPACT_SHARE + COMPACT_MIN_BYTES;
}

/*
 * Whether the empty chunks the pool keeps mapped for reuse pass
 * COMPACT_MIN_BYTES while write-back is not near (the pool below a
 * quarter of its limit; write-back starts at three quarters and stops at
 * half).
 * Write-back empties whole chunks by the thousand and unmapping each
 * costs a TLB shootdown, so they are parked for the next stores; without
 * it they pile up anyway where the sizes freed and stored differ (a scan:
 * 2.6 MiB of a 216 MiB pool) and are memory held for nothing.
 */
static bool parked_excess(const struct upg_pool_stats *ps)
{
	return ps->compressed_bytes < ps->max_bytes / 4 &&
	       ps->parked_bytes > COMPACT_MIN_BYTES;
}

static bool compact_wanted(struct upg *u)
{
	struct upg_pool_stats ps;

	if (!u->p.pool_compact)
		return false;
	upg_pool_get_stats(u->pool, &ps);
	return holes_excess(u, &ps) || parked_excess(&ps);
}

static void set_floor(struct upg *u)
{
	struct upg_pool_stats ps;

	upg_pool_get_stats(u->pool, &ps);
	__atomic_store_n(&u->compact_floor, ps.hole_bytes, __ATOMIC_RELAXED);
}

uint64_t upg_compact_wait_ns(struct upg *u)
{
	uint64_t since = upg_now_ns() - u->compacted_ns;

	if (!compact_wanted(u))
		return 0;
	return since >= COMPACT_PERIOD_NS ? UPG_COMPACT_DUE
					  : COMPACT_PERIOD_NS - since;
}

/* Whether entry value @v holds a pool object that compaction moves. */
static bool moving(struct upg *u, uint64_t v)
{
	return (v & PTE_COPY) && !(v & PTE_SWAP) &&
	       upg_pool_moving(u->pool, pte_payload(v));
}

/*
 * Move entry @idx's object if it lies in a chunk being emptied.
 * Return: whether it moved.
 */
static bool move_entry(struct upg *u, struct upg_region *r, size_t idx)
{
	upg_pte_t *p = &r->pte[idx];
	uint64_t v, nh, keep = (1ULL << PTE_PAYLOAD_SHIFT) - 1;
	int ret;

	if (!moving(u, atomic_load_explicit(p, memory_order_relaxed)) ||
	    !pte_trylock(p, &v))
		return false;
	ret = moving(u, v) ? upg_pool_move(u->pool, pte_payload(v), &nh) : 0;
	if (ret == 1)
		v = (v & keep) | nh << PTE_PAYLOAD_SHIFT;
	upg_page_publish(u, r, idx, pte_state(v), v);
	return ret == 1;
}

/* Move the objects of the chunks the pool empties. Return: bytes freed. */
static uint64_t move_objects(struct upg *u, uint64_t *moved)
{
	uint64_t freed;

	if (!upg_pool_compact_begin(u->pool, COMPACT_MAX_BYTES)) {
		set_floor(u);
		return 0;
	}
	pthread_rwlock_rdlock(&u->regions_lock);
	for (size_t i = 0; i < u->nregions; i++) {
		struct upg_region *r = u->regions[i];

		for (size_t idx = 0; idx < r->npages; idx++) {
			size_t c = idx >> UPG_CHUNK_SHIFT;

			if (!atomic_load_explicit(&r->chunk_used[c],
						  memory_order_relaxed)) {
				idx = ((c + 1) << UPG_CHUNK_SHIFT) - 1;
				continue;
			}
			if (!(idx & 63) && !upg_pool_compact_left(u->pool))
				goto done;
			*moved += move_entry(u, r, idx);
		}
	}
done:
	pthread_rwlock_unlock(&u->regions_lock);
	freed = upg_pool_compact_end(u->pool);
	if (!freed) /* what is left cannot be filled now */
		set_floor(u);
	return freed;
}

bool upg_compact_run(struct upg *u)
{
	uint64_t now = upg_now_ns(), moved = 0, freed = 0;
	struct upg_pool_stats ps, after;

	if (now - u->compacted_ns < COMPACT_PERIOD_NS || !compact_wanted(u))
		return false;
	u->compacted_ns = now;
	upg_free_dropped(u); /* their chunks could not empty */
	upg_pool_get_stats(u->pool, &ps);
	if (parked_excess(&ps)) {
		upg_pool_trim(u->pool);
		upg_pool_get_stats(u->pool, &after);
		freed += ps.parked_bytes -
			 MIN(ps.parked_bytes, after.parked_bytes);
	}
	if (holes_excess(u, &ps))
		freed += move_objects(u, &moved);
	upg_stat_inc(upg_evictor_stats(u), UPG_STAT_pool_compactions);
	upg_stat_add(upg_evictor_stats(u), UPG_STAT_pool_compact_moved, moved);
	upg_stat_add(upg_evictor_stats(u), UPG_STAT_pool_compact_freed, freed);
	return true;
}

void upg_compact_kick(struct upg *u)
{
	if (atomic_load_explicit(&u->ev_idle, memory_order_relaxed) &&
	    compact_wanted(u))
		upg_evict_kick(u);
}
