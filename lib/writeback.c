/* SPDX-License-Identifier: MIT */
/*
 * Write-back: the pool's coldest entries to the swap file, like zswap's
 * writeback. When the pool's objects pass 3/4 of its limit, evicted entries
 * are written to the swap file in batches, in address order (so readahead
 * finds neighbours together), sparing entries stored since the hand last
 * passed (REF, set at store), until the pool is down to half (marks lower
 * for very small pools, see pool_above()). Same-filled entries take no
 * pool space and stay. It runs on the evictor thread, between eviction
 * batches.
 *
 * What goes to the file is the pool's object itself (an LZ4 block, or a
 * raw page), copied, not decoded: swap.c packs a batch's objects end to
 * end across the slots it allocates, and decodes an object when its page
 * is read back. Decompressing every page here
 * took two thirds of a run's CPU time and held write-back to ~1.1 GB/s on
 * one CPU; a helper thread sharing the decompression did not help
 * on this 2-CPU machine while the program kept the other CPU busy (it got
 * a third of the pages at best, mostly taking CPU time from the program or
 * the evictor itself).
 *
 * Faults never wait for these writes: an entry is locked only from its
 * selection to the copy of its object (a batch's selection and copy,
 * ~0.2 ms), stays in the pool while the copy is written, and afterwards
 * switches to its slot only if nothing touched it meanwhile (else the slot
 * is freed again). The objects are cold, and copying them is a third of
 * write-back's CPU time; prefetching each whole object at its selection
 * stalled the selection more than it saved the copy (select and copy 80
 * ms against 73 without, bench_swap --phase writeback), and prefetching a
 * few objects ahead of the copy changed nothing.
 *
 * Pipeline: up to UPG_WB_DEPTH batches of UPG_WB_BATCH entries are in
 * flight while the next is copied, and the staging is the evictor ring's
 * fixed buffer, so writes do not pin its pages each time (a quarter of a
 * write's submission cost), in huge pages where the kernel gives them
 * (below). This VM's disk, fed by a writer that copies each request just
 * before it submits it, goes at the bytes in flight, not at the queue
 * depth: 664 KiB requests went at 1.9-2.1 GB/s four at a time, 2.2-2.7
 * eight at a time and 2.4-3.0 sixteen at a time, against 3.3-3.4 for the
 * same requests from memory written long ago; 16 of 166 KiB went like 4
 * of 664. With four batches in flight the evictor waited for the file a
 * quarter of a run; with eight, write-back put out 4-9% more pages a
 * second (means of 3-4 rounds), for 8 MiB of staging (mapped and pinned
 * once write-back first runs). Twelve or sixteen gave no more. Batches
 * are 256 entries since objects are
 * packed: 128 packed text objects made 340 KiB requests, smaller than the
 * file's best shapes (512 KiB-4 MiB), and each batch costs the evictor a
 * submission and a sleep, which on a busy machine is a wait for a CPU.
 *
 * Locking: the evictor holds regions_lock (read) for a whole run (entries
 * point into regions), and the page locks of a batch's entries from their
 * selection until their objects are copied.
 */
#include <errno.h>
#include <string.h>
#include <sys/mman.h>

#include "runtime.h"

#define WB_ROUNDS 32 /* batches per run: regions_lock is held throughout */
#define WB_BUF_BYTES ((size_t)UPG_WB_DEPTH * UPG_WB_BATCH << UPG_PAGE_SHIFT)
#define HUGE_BYTES (2UL << 20)

struct wb_entry {
	struct upg_region *r;
	size_t idx;
	uint64_t old;
	const void *obj; /* its pool object, while the entry is locked */
};

/*
 * A batch: its entries, their objects' lengths, locations in the file and
 * offsets in staging, and the write.
 */
struct wb_batch {
	struct wb_entry e[UPG_WB_BATCH];
	uint32_t len[UPG_WB_BATCH];
	uint64_t locs[UPG_WB_BATCH];
	size_t offs[UPG_WB_BATCH];
	size_t n;
	uint64_t bytes; /* of the objects */
	struct upg_swap_wr w;
};

/*
 * Write-back state, evictor-private. @budget: entries the hand may still
 * pass in this run (one pass over the regions, so that no entry joins two
 * batches in flight); @inflight: object bytes in batches in flight, still
 * in the pool until they are published.
 */
struct upg_wb {
	struct wb_batch b[UPG_WB_DEPTH];
	size_t budget;
	uint64_t inflight;
	bool nomem; /* the staging could not be mapped (reported) */
};

/* ------------------------------------------------------------------ */
/* Selecting                                                           */
/* ------------------------------------------------------------------ */

/*
 * Whether the pool, objects in flight aside, is past its write-back mark:
 * @start, 3/4 of its limit, or @stop, half of it; both lower for a pool so
 * small that this would leave less room than two eviction batches of
 * incompressible pages (which would then go to the file one by one).
 */
static bool pool_above(struct upg *u, bool start)
{
	const uint64_t room = 2 * UPG_EVICT_BATCH * UPG_PAGE_SIZE;
	struct upg_pool_stats ps;
	uint64_t inflight = u->wb->inflight, max, mark;

	upg_pool_get_stats(u->pool, &ps);
	max = ps.max_bytes;
	if (start)
		mark = MIN(max / 8 * 6, max - MIN(max, room / 2));
	else
		mark = MIN(max / 2, max - MIN(max, room));
	return ps.compressed_bytes - MIN(ps.compressed_bytes, inflight) > mark;
}

/* Whether entry @v is a write-back candidate; clears REF (second chance). */
static bool wb_candidate(upg_pte_t *p, uint64_t v)
{
	if (pte_state(v) != PTE_EVICTED || (v & (PTE_SWAP | PTE_LOCK)) ||
	    !(v & PTE_COPY) || upg_pool_kind(pte_payload(v)) == UPG_POOL_SAME)
		return false;
	if (v & PTE_REF) {
		atomic_fetch_and_explicit(p, ~PTE_REF, memory_order_relaxed);
		return false;
	}
	return true;
}

/*
 * Lock entry @idx, and if it is (still) a candidate with an object, make
 * it entry @n of @b, still locked.
 * Return: whether it joined; if not, it is unlocked.
 */
static bool wb_take(struct upg *u, struct upg_region *r, size_t idx,
		    struct wb_batch *b, size_t n)
{
	struct wb_entry *e = &b->e[n];
	uint64_t v;
	int len = 0;

	if (!pte_trylock(&r->pte[idx], &v))
		return false;
	if (wb_candidate(&r->pte[idx], v))
		len = upg_pool_object(u->pool, pte_payload(v), &e->obj);
	if (len <= 0 || len > (int)UPG_PAGE_SIZE) {
		upg_page_publish(u, r, idx, pte_state(v), v);
		return false;
	}
	*e = (struct wb_entry){ r, idx, v, e->obj };
	b->len[n] = (uint32_t)len;
	return true;
}

/*
 * Copy entry @i's object to its place in staging @buf (if it has one:
 * else it stays in the pool) and unlock the entry.
 */
static void wb_copy(struct upg *u, struct wb_batch *b, size_t i, char *buf)
{
	struct wb_entry *e = &b->e[i];

	if (b->locs[i])
		memcpy(buf + b->offs[i], e->obj, b->len[i]);
	upg_page_publish(u, e->r, e->idx, pte_state(e->old), e->old);
}

/* Take up to UPG_WB_BATCH candidates from the hand on into @b, locked. */
static size_t wb_select(struct upg *u, struct wb_batch *b)
{
	size_t n = 0, *budget = &u->wb->budget;

	while (n < UPG_WB_BATCH && *budget) {
		struct upg_region *r;
		size_t c;

		if (u->wb_region >= u->nregions)
			u->wb_region = 0;
		r = u->regions[u->wb_region];
		if (u->wb_idx >= r->npages) {
			u->wb_region++;
			u->wb_idx = 0;
			continue;
		}
		c = u->wb_idx >> UPG_CHUNK_SHIFT;
		if (atomic_load(&r->chunk_used[c]) ==
		    atomic_load(&r->chunk_res[c])) { /* nothing evicted */
			*budget -= MIN(*budget, UPG_CHUNK_PAGES);
			u->wb_idx = (c + 1) << UPG_CHUNK_SHIFT;
			continue;
		}
		(*budget)--;
		if (wb_candidate(&r->pte[u->wb_idx],
				 atomic_load(&r->pte[u->wb_idx])) &&
		    wb_take(u, r, u->wb_idx, b, n))
			n++;
		u->wb_idx++;
	}
	return n;
}

/* ------------------------------------------------------------------ */
/* Writing and publishing                                              */
/* ------------------------------------------------------------------ */

/*
 * Switch an entry to its object in the file if it is unchanged, and leave
 * its pool object's handle in *@freed for the caller to free; else free
 * the object in the file.
 */
static bool wb_publish(struct upg *u, struct wb_entry *e, uint64_t slot,
		       uint64_t *freed)
{
	upg_pte_t *p = &e->r->pte[e->idx];
	uint64_t v;

	if (!pte_trylock(p, &v)) {
		upg_swap_free(u->swap, slot);
		return false;
	}
	if ((v & ~PTE_REF) != (e->old & ~PTE_REF)) {
		upg_page_publish(u, e->r, e->idx, pte_state(v), v);
		upg_swap_free(u->swap, slot);
		return false;
	}
	*freed = pte_payload(v);
	upg_page_publish(u, e->r, e->idx, PTE_EVICTED,
			 pte_make(PTE_EVICTED, PTE_COPY | PTE_SWAP, slot));
	return true;
}

/*
 * Fill batch @b: select its entries, pack their objects into slots
 * through staging part @k, copy them there and start writing them.
 */
static size_t wb_start(struct upg *u, struct wb_batch *b, unsigned k)
{
	char *buf = u->wb_buf + ((size_t)k * UPG_WB_BATCH << UPG_PAGE_SHIFT);
	unsigned placed = 0;

	b->n = wb_select(u, b);
	b->bytes = 0;
	if (b->n)
		placed = upg_swap_pack(u->swap, upg_evictor_stats(u), b->len,
				       (unsigned)b->n, buf, b->locs, b->offs,
				       &b->w);
	for (size_t i = 0; i < b->n; i++) {
		wb_copy(u, b, i, buf);
		if (i < placed)
			upg_swap_staged(u->swap, &b->w, (unsigned)i);
		b->bytes += b->locs[i] ? b->len[i] : 0;
	}
	u->wb->inflight += b->bytes;
	if (placed)
		upg_swap_submit(u->swap, u->ev_io, &b->w);
	return placed;
}

/* Wait for a batch's write and switch its entries to their objects. */
static void wb_finish(struct upg *u, struct wb_batch *b)
{
	struct upg_stat_shard *st = upg_evictor_stats(u);
	uint64_t freed[UPG_WB_BATCH];
	size_t done = 0;

	if (!b->n)
		return;
	if (b->w.got)
		upg_swap_write_finish(u->swap, u->ev_io, st, &b->w);
	for (size_t i = 0; i < b->n; i++)
		done += b->locs[i] &&
			wb_publish(u, &b->e[i], b->locs[i], &freed[done]);
	upg_pool_free_many(u->pool, freed, (unsigned)done);
	upg_stat_add(st, UPG_STAT_swap_writeback, done);
	u->wb->inflight -= b->bytes;
	b->n = 0;
}

static bool wb_go_on(struct upg *u)
{
	return pool_above(u, false) && !atomic_load(&u->stopping) &&
	       !atomic_load(&u->ev_pause) && !upg_swap_failing(u->swap);
}

static char *map_staging(void);
static int staging_register(struct upg *u);

/*
 * The staging is mapped and registered on the first write-back run, not
 * at start: registration pins it, and a runtime whose pool never fills
 * would hold those megabytes for nothing.
 */
static bool staging_ready(struct upg *u)
{
	if (u->wb_buf)
		return true;
	u->wb_buf = map_staging();
	if (!u->wb_buf) {
		if (!u->wb->nomem)
			upg_err("swap file: no memory for write-back staging "
				"(%zu KiB): pool entries stay in the pool",
				WB_BUF_BYTES >> 10);
		u->wb->nomem = true;
		return false;
	}
	staging_register(u);
	return true;
}

/* Round i publishes batch i - UPG_WB_DEPTH and starts batch i in its part. */
void upg_wb_run(struct upg *u)
{
	struct wb_batch *b = u->wb ? u->wb->b : NULL;
	uint64_t t0;
	unsigned i, k;

	if (!b || !u->ev_io || !pool_above(u, true) || !staging_ready(u))
		return; /* (nothing is in flight between runs) */
	t0 = upg_now_ns();
	pthread_rwlock_rdlock(&u->regions_lock);
	u->wb->budget = 0;
	for (i = 0; i < u->nregions; i++)
		u->wb->budget += u->regions[i]->npages;
	for (i = 0; i < WB_ROUNDS && u->nregions && wb_go_on(u); i++) {
		wb_finish(u, &b[i % UPG_WB_DEPTH]);
		if (!wb_start(u, &b[i % UPG_WB_DEPTH], i % UPG_WB_DEPTH))
			break;
	}
	for (k = 0; k < UPG_WB_DEPTH; k++) /* oldest first */
		wb_finish(u, &b[(i + k) % UPG_WB_DEPTH]);
	pthread_rwlock_unlock(&u->regions_lock);
	upg_stat_time(upg_evictor_stats(u), UPG_HIST_swap_write,
		      upg_now_ns() - t0);
}

/* ------------------------------------------------------------------ */
/* Setting up                                                          */
/* ------------------------------------------------------------------ */

/* The staging as the ring's fixed buffer (optional: else writes pin it). */
static int staging_register(struct upg *u)
{
	int err = upg_io_register(u->ev_io, u->wb_buf, WB_BUF_BYTES);

	if (err)
		upg_dbg("write-back staging not registered: %s",
			strerror(-err));
	return err;
}

/* The evictor's ring, and the staging's registration if it is mapped. */
static int ring_create(struct upg *u)
{
	int err = upg_io_create(UPG_WB_DEPTH * UPG_WB_BATCH, &u->ev_io);

	if (err)
		return upg_seterr(err, "swap file: cannot set up io_uring: %s",
				  strerror(-err));
	if (u->wb_buf)
		staging_register(u);
	return 0;
}

/*
 * Staging in 2 MiB pages if the kernel gives them (THP "madvise" or
 * "always"): a registered buffer of huge pages makes a write a few long
 * segments instead of one per 4 KiB page, and this VM's disk took the
 * same 680 KiB writes at 2.2-2.3 GB/s from 4 KiB pages and 3.0-3.3 GB/s
 * from huge pages. Mapped aligned (the rest of a larger mapping is cut
 * off), so that upg_unmap() of WB_BUF_BYTES frees it; plain pages
 * otherwise.
 */
static char *map_staging(void)
{
	char *raw = upg_map(WB_BUF_BYTES + HUGE_BYTES), *buf;
	size_t head;

	if (!raw)
		return NULL;
	buf = (char *)(((uintptr_t)raw + HUGE_BYTES - 1) & ~(HUGE_BYTES - 1));
	head = (size_t)(buf - raw);
	if (head)
		munmap(raw, head);
	munmap(buf + WB_BUF_BYTES, HUGE_BYTES - head);
	madvise(buf, WB_BUF_BYTES, MADV_HUGEPAGE); /* (staging, not managed) */
	memset(buf, 0, WB_BUF_BYTES); /* populate before registration */
	return buf;
}

int upg_wb_init(struct upg *u)
{
	if (!u->swap)
		return 0;
	u->wb = upg_map(sizeof(*u->wb));
	if (!u->wb)
		return upg_seterr(-ENOMEM, "cannot map write-back batches");
	return ring_create(u);
}

/* In a fork child: the ring is shared with the parent's. */
int upg_wb_restart(struct upg *u)
{
	if (!u->wb)
		return 0;
	upg_io_destroy(u->ev_io);
	u->ev_io = NULL;
	return ring_create(u);
}

void upg_wb_stop(struct upg *u)
{
	upg_io_destroy(u->ev_io);
	u->ev_io = NULL;
	upg_unmap(u->wb, sizeof(*u->wb));
	u->wb = NULL;
	upg_unmap(u->wb_buf, WB_BUF_BYTES);
	u->wb_buf = NULL;
}
