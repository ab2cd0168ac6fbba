/* SPDX-License-Identifier: MIT */
/*
 * Eviction's second half (see evict.c for the whole): taking a batch's
 * victims out of the program (UFFDIO_MOVE, the copy fallback, or a whole
 * chunk's page table moved with mremap) and storing them, the evictor and
 * the handlers that wait for room sharing the compression.
 */
#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "evict_impl.h"
/* ------------------------------------------------------------------ */
/* Storing a page                                                      */
/* ------------------------------------------------------------------ */

static void count_store(struct upg_stat_shard *st, int kind)
{
	static const enum upg_stat_id ids[] = {
		[UPG_POOL_SAME] = UPG_STAT_evict_same,
		[UPG_POOL_COMPRESSED] = UPG_STAT_evict_compressed,
		[UPG_POOL_RAW] = UPG_STAT_evict_raw,
	};

	upg_stat_inc(st, ids[kind]);
}

/*
 * Store @page (the victim's contents, now out of reach of the program) and
 * return the evicted entry, or a negative errno when the pool is full.
 */
/* Whether the page still equals its stored copy (pool or swap slot). */
static bool still_clean(struct upg *u, uint64_t old, const void *page)
{
	uint64_t where = pte_payload(old);

	if (old & PTE_SWAP)
		return upg_swap_matches(u->swap, where, page);
	return upg_pool_equal(u->pool, where, page);
}

/*
 * The pool is full: write the page straight to the swap file. One page,
 * synchronously; rare, because write-back keeps room in the pool.
 */
static int64_t store_swap(struct upg *u, const void *page)
{
	struct upg_stat_shard *st = upg_evictor_stats(u);
	void *pages[1] = { (void *)page };
	uint64_t loc;

	if (!u->swap || !u->ev_io || upg_swap_failing(u->swap) ||
	    upg_swap_write(u->swap, u->ev_io, st, pages, 1, &loc)) {
		upg_stat_inc(st, UPG_STAT_evict_pool_full);
		return -ENOSPC;
	}
	upg_stat_inc(st, UPG_STAT_swap_direct);
	return (int64_t)pte_make(PTE_EVICTED, PTE_COPY | PTE_SWAP, loc);
}

/*
 * @st: the storing thread's statistics. Return: the evicted entry, or
 * -EAGAIN if the pool is full (the page may go to the file: store_swap(),
 * the evictor's ring, so the evictor's alone).
 */
static int64_t store_page(struct upg *u, struct victim *v, const void *page,
			  struct upg_stat_shard *st)
{
	uint64_t handle = pte_payload(v->old);
	int kind;

	if (v->old & PTE_COPY) {
		if (still_clean(u, v->old, page)) {
			upg_stat_inc(st, v->old & PTE_SWAP
						 ? UPG_STAT_swap_clean_drop
						 : UPG_STAT_evict_clean_drop);
			return (int64_t)(v->old & ~(PTE_STATE | PTE_REF)) |
			       (int64_t)PTE_EVICTED;
		}
		upg_stat_inc(st, UPG_STAT_evict_clean_raced);
		upg_page_drop_copy(u, v->old);
		v->old &= ~(PTE_COPY | PTE_SWAP);
	}
	kind = upg_pool_store(u->pool, page, &handle);
	if (kind < 0)
		return -EAGAIN;
	count_store(st, kind);
	/* REF on an evicted entry: stored recently, spared by write-back. */
	return (int64_t)pte_make(PTE_EVICTED, PTE_COPY | PTE_REF, handle);
}

/*
 * Storing a batch with help. Compression is most of the evictor's time, and
 * while the budget is full the faulting threads' handlers have nothing to
 * do but wait for it (one program thread scanning: the evictor's CPU is
 * saturated, the program's idle). So the evictor publishes the batch it
 * stores as a job; a handler that must wait for room claims pages of it
 * one at a time and stores them too. The evictor claims from the same
 * counter, then waits for the pages others claimed, and only then
 * publishes entries, in order, as before. Pages the pool refuses go to the
 * swap file afterwards, by the evictor (its ring), in the batch's order.
 *
 * The job lives in struct upg; its items on the evictor's stack. A helper
 * registers (helpers + 1) and then checks the job is still active; the
 * evictor deactivates it and then waits for helpers to reach 0. Both
 * sequentially consistent, so either the helper sees the job gone or the
 * evictor sees the helper.
 */
struct upg_store_item {
	struct victim *v;
	const char *page;
	int64_t e;
};

/* Claim and store items; none goes to the file here (see store_items()). */
static void job_work(struct upg *u, struct upg_stat_shard *st, bool helper)
{
	size_t i;

	while ((i = atomic_fetch_add(&u->job.next, 1)) < u->job.n) {
		struct upg_store_item *it = &u->job.item[i];

		it->e = store_page(u, it->v, it->page, st);
		if (helper)
			upg_stat_inc(st, UPG_STAT_evict_helped);
		if (atomic_fetch_add(&u->job.done, 1) + 1 == u->job.n &&
		    atomic_load(&u->job.waiting))
			upg_futex_wake(&u->job.done);
	}
}

/* Wait for the items other threads claimed, then for them to leave. */
static void job_join(struct upg *u)
{
	struct timespec ts = { .tv_nsec = 200000 };
	uint32_t d;

	for (int spin = 0; spin < 1000; spin++)
		if (atomic_load(&u->job.done) == u->job.n)
			break;
	atomic_store(&u->job.waiting, true);
	while ((d = atomic_load(&u->job.done)) < u->job.n)
		upg_futex_wait(&u->job.done, d, &ts);
	atomic_store(&u->job.waiting, false);
	while (atomic_load(&u->job.helpers))
		sched_yield();
}

bool upg_evict_help(struct upg *u, struct upg_stat_shard *st)
{
	bool helped = false;

	if (!atomic_load_explicit(&u->job.active, memory_order_relaxed))
		return false;
	atomic_fetch_add(&u->job.helpers, 1);
	if (atomic_load(&u->job.active)) {
		helped = atomic_load(&u->job.next) < u->job.n;
		job_work(u, st, true);
	}
	atomic_fetch_sub(&u->job.helpers, 1);
	return helped;
}

/* testing.h: a batch's victims are ready to store. */
static void test_store(struct upg *u, size_t n)
{
	upg_test_store_fn fn =
		__atomic_load_n(&u->test_store, __ATOMIC_ACQUIRE);

	if (fn)
		fn(u->test_store_arg, n);
}

void upg_test_store_hook(struct upg *u, upg_test_store_fn fn, void *arg)
{
	u->test_store_arg = arg;
	__atomic_store_n(&u->test_store, fn, __ATOMIC_RELEASE);
}

/* Store @n items, with help if any comes. */
static void store_items(struct upg *u, struct upg_store_item *item, size_t n)
{
	struct upg_stat_shard *st = upg_evictor_stats(u);

	u->job.item = item;
	u->job.n = n;
	atomic_store(&u->job.next, 0);
	atomic_store(&u->job.done, 0);
	atomic_store(&u->job.active, true);
	test_store(u, n);
	job_work(u, st, false);
	atomic_store(&u->job.active, false);
	job_join(u);
	/*
	 * What did not fit a full pool goes to the file now, in the batch's
	 * (address) order, whoever claimed it: pages written straight to the
	 * file take consecutive slots, and swap-in's readahead follows them.
	 * Writing them as claimed, interleaved between threads, broke the
	 * runs and halved the readahead scan.
	 */
	for (size_t i = 0; i < n; i++)
		if (item[i].e == -EAGAIN)
			item[i].e = store_swap(u, item[i].page);
}

static void keep_resident(struct upg *u, struct victim *v)
{
	uint64_t e = (v->old & ~(PTE_STATE)) | PTE_RESIDENT | PTE_REF;

	upg_page_publish(u, v->r, v->idx, PTE_RESIDENT, e);
}

/* ------------------------------------------------------------------ */
/* UFFDIO_MOVE mode                                                    */
/* ------------------------------------------------------------------ */

int evict_staging_reset(struct upg *u)
{
	size_t len = (size_t)UPG_EVICT_BATCH << UPG_PAGE_SHIFT;
	void *p = mmap(u->staging, len, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED,
		       -1, 0);

	if (p == MAP_FAILED)
		return upg_seterr(-errno, "staging area: %s", strerror(errno));
	return upg_uffd_register(u->uffd, u->staging, len, false, true);
}

/* Length of the run of victims contiguous in memory starting at @i. */
static size_t run_length(const struct victim *v, size_t i, size_t n)
{
	size_t k = 1;

	while (i + k < n && v[i + k].r == v[i].r &&
	       v[i + k].idx == v[i].idx + k)
		k++;
	return k;
}

/*
 * Whether a failed UFFDIO_MOVE left a page in staging slot @dst anyway.
 * Linux 6.18 batches multi-page moves and can report an error (EEXIST,
 * EAGAIN, or a short count) for pages it has moved: the count cannot be
 * trusted, only what is mapped.
 */
static bool landed(char *dst)
{
	unsigned char vec;

	return !mincore(dst, UPG_PAGE_SIZE, &vec) && (vec & 1);
}

/*
 * Move victims [i, i+k) to staging slots [i, i+k), one page per ioctl, so
 * that a page is either moved or not (see landed()). Contiguous victims
 * would share a TLB flush in one multi-page move, but such moves report
 * failure for pages they moved; chunks leave by mremap instead.
 */
static void move_run(struct upg *u, struct victim *v, size_t i, size_t k)
{
	for (size_t j = 0; j < k; j++) {
		char *src = region_addr(v[i + j].r, v[i + j].idx);
		char *dst = u->staging + ((i + j) << UPG_PAGE_SHIFT);
		long ret;
		int again = 0;

		do
			ret = upg_uffd_move(u->uffd, dst, src, UPG_PAGE_SIZE);
		while (ret == -EAGAIN && ++again < 4 && !landed(dst));
		if (ret > 0 || landed(dst))
			v[i + j].moved = true;
		else /* EBUSY: shared with a child or pinned */
			upg_stat_inc(upg_evictor_stats(u),
				     UPG_STAT_evict_move_busy);
	}
}

/* Return a page that cannot be stored to where it came from. */
static void put_back(struct upg *u, struct victim *v, char *page)
{
	char *addr = region_addr(v->r, v->idx);

	if (upg_uffd_move(u->uffd, addr, page, UPG_PAGE_SIZE) <= 0 &&
	    upg_uffd_copy(u->uffd, addr, page, UPG_PAGE_SIZE, false, true) <= 0)
		upg_err("cannot put back page %p after a failed eviction",
			(void *)addr);
	keep_resident(u, v);
}

static size_t evict_copy(struct upg *u, struct victim *v, size_t n);

/*
 * Victims UFFDIO_MOVE refused (EBUSY: shared with a fork child until one
 * of them writes, or pinned; EAGAIN: an event is pending) leave by the
 * copy fallback instead, but only where write-protection is synchronous.
 * With UFFD_FEATURE_WP_ASYNC the kernel resolves a write to a protected
 * page by itself, so protection does not hold stores off while the page is
 * copied and zapped: they would be lost. Such victims stay resident.
 */
static size_t evict_busy(struct upg *u, struct victim *v, size_t n)
{
	struct victim busy[UPG_EVICT_BATCH];
	size_t nb = 0;

	for (size_t i = 0; i < n; i++)
		if (!v[i].moved)
			busy[nb++] = v[i];
	if (!nb)
		return 0;
	if (u->caps.wp && !u->caps.wp_async)
		return evict_copy(u, busy, nb);
	for (size_t i = 0; i < nb; i++)
		keep_resident(u, &busy[i]);
	return 0;
}

static size_t evict_move(struct upg *u, struct victim *v, size_t n)
{
	size_t evicted = 0, moved = 0;

	struct upg_store_item item[UPG_EVICT_BATCH];

	move_run(u, v, 0, n);
	for (size_t i = 0; i < n; i++)
		if (v[i].moved)
			item[moved++] = (struct upg_store_item){
				.v = &v[i],
				.page = u->staging + (i << UPG_PAGE_SHIFT),
			};
	store_items(u, item, moved);
	for (size_t j = 0; j < moved; j++) {
		struct victim *vj = item[j].v;

		if (item[j].e < 0) {
			put_back(u, vj, (char *)item[j].page);
			continue;
		}
		upg_page_publish(u, vj->r, vj->idx, PTE_RESIDENT,
				 (uint64_t)item[j].e);
		evicted++;
	}
	if (moved && evict_staging_reset(u) < 0)
		upg_err("%s", upg_last_error());
	upg_stat_add(upg_evictor_stats(u), UPG_STAT_evict_move, evicted);
	return evicted + evict_busy(u, v, n);
}

/* ------------------------------------------------------------------ */
/* Copy fallback                                                       */
/* ------------------------------------------------------------------ */

/* Zap and publish the stored pages of a run, in contiguous stretches. */
static size_t zap_stored(struct upg *u, struct victim *v,
			 const struct upg_store_item *item, size_t k)
{
	char *start = region_addr(v[0].r, v[0].idx);
	size_t evicted = 0;

	for (size_t j = 0, n; j < k; j += n) {
		for (n = 0; j + n < k && item[j + n].e >= 0; n++)
			;
		if (n)
			upg_self_zap(u, start + (j << UPG_PAGE_SHIFT),
				     n << UPG_PAGE_SHIFT);
		for (size_t i = j; i < j + n; i++)
			upg_page_publish(u, v[i].r, v[i].idx, PTE_RESIDENT,
					 (uint64_t)item[i].e);
		evicted += n;
		n += !n; /* step over a page that stays resident */
	}
	return evicted;
}

/*
 * Write-protect, copy out and zap one contiguous run of victims. The
 * protection must hold before the copy, or a store made during the copy is
 * lost with the zap: UFFDIO_WRITEPROTECT fails with EAGAIN while an event
 * is pending (another thread's madvise, e.g. upg_discard()), so retry until
 * a handler has read it; on any other error the run stays resident.
 */
static size_t copy_run(struct upg *u, struct victim *v, size_t k)
{
	char *start = region_addr(v[0].r, v[0].idx);
	struct upg_store_item item[UPG_EVICT_BATCH];
	int err;

	while ((err = upg_uffd_writeprotect(u->uffd, start, k << UPG_PAGE_SHIFT,
					    true)) == -EAGAIN)
		sched_yield();
	if (err) {
		upg_err("cannot write-protect %zu pages at %p for eviction: %s",
			k, (void *)start, strerror(-err));
		for (size_t j = 0; j < k; j++)
			keep_resident(u, &v[j]);
		return 0;
	}
	for (size_t j = 0; j < k; j++)
		item[j] = (struct upg_store_item){
			.v = &v[j],
			.page = start + (j << UPG_PAGE_SHIFT),
		};
	store_items(u, item, k);
	for (size_t j = 0; j < k; j++) {
		if (item[j].e >= 0)
			continue;
		upg_uffd_writeprotect(u->uffd, start + (j << UPG_PAGE_SHIFT),
				      UPG_PAGE_SIZE, false);
		keep_resident(u, &v[j]);
	}
	return zap_stored(u, v, item, k);
}

static size_t evict_copy(struct upg *u, struct victim *v, size_t n)
{
	size_t evicted = 0, k;

	for (size_t i = 0; i < n; i += k) {
		k = run_length(v, i, n);
		evicted += copy_run(u, v + i, k);
	}
	upg_stat_add(upg_evictor_stats(u), UPG_STAT_evict_copy, evicted);
	return evicted;
}

/* ------------------------------------------------------------------ */
/* Page-table move mode                                                */
/* ------------------------------------------------------------------ */

/*
 * Scattered victims are expensive to move one by one: each UFFDIO_MOVE of
 * a lone page flushes the TLB of every CPU running the program, an IPI that
 * costs ~28 us in these VMs (only contiguous present pages share a flush).
 * mremap(MREMAP_DONTUNMAP) moves a whole chunk's page table in one flush:
 * the chunk, all its entries locked, goes to a staging chunk; the pages
 * that stay resident are copied back (installing needs no flush), the
 * victims are stored from staging. The chunk stays registered.
 *
 * Only the victims stay locked while they are stored: the entries without
 * a page are unlocked once the page table has moved, and each page copied
 * back once it is in place. A Zipfian run faulted on the evicted pages of
 * a chunk under way ~200 times a second and each fault waited for the
 * whole move (2 ms at the median); unlocking early made it 1.2x faster.
 */

#ifndef MREMAP_DONTUNMAP
#define MREMAP_DONTUNMAP 4
#endif

bool evict_remap_works(char *staging)
{
	char *src = mmap(NULL, UPG_PAGE_SIZE, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	void *p;

	if (src == MAP_FAILED)
		return false;
	p = mremap(src, UPG_PAGE_SIZE, UPG_PAGE_SIZE,
		   MREMAP_MAYMOVE | MREMAP_FIXED | MREMAP_DONTUNMAP, staging);
	munmap(src, UPG_PAGE_SIZE);
	return p != MAP_FAILED;
}

struct chunk_op {
	struct upg_region *r;
	size_t first;			     /* page index of the chunk */
	size_t n;			     /* its pages in the region */
	struct victim *vic[UPG_CHUNK_PAGES]; /* victims by page, or NULL */
	uint64_t old[UPG_CHUNK_PAGES];	     /* other entries we locked */
};

/* Unlock entry @p, not a victim, unchanged (waking a thread waiting). */
static void unlock_other(struct upg *u, struct chunk_op *op, size_t p)
{
	upg_page_publish(u, op->r, op->first + p, pte_state(op->old[p]),
			 op->old[p]);
}

/* Unlock the entries [0, upto) we locked besides the victims. */
static void unlock_others(struct upg *u, struct chunk_op *op, size_t upto)
{
	for (size_t p = 0; p < upto; p++)
		if (!op->vic[p])
			unlock_other(u, op, p);
}

/* Whether page @p of the chunk is neither a victim nor mapped. */
static bool pageless(const struct chunk_op *op, size_t p)
{
	return !op->vic[p] && pte_state(op->old[p]) != PTE_RESIDENT;
}

/*
 * Once the chunk's page table is moved, entries without a page (evicted,
 * never touched) have nothing left to race with: unlock them at once, so
 * that a fault on one does not wait for the victims' compression.
 */
static void unlock_pageless(struct upg *u, struct chunk_op *op)
{
	for (size_t p = 0; p < op->n; p++)
		if (pageless(op, p))
			unlock_other(u, op, p);
}

/* Lock every non-victim entry of the chunk; false if one is busy. */
static bool lock_others(struct upg *u, struct chunk_op *op)
{
	for (size_t p = 0; p < op->n; p++) {
		if (op->vic[p] ||
		    pte_trylock(&op->r->pte[op->first + p], &op->old[p]))
			continue;
		unlock_others(u, op, p);
		return false;
	}
	return true;
}

/*
 * Copy resident non-victims back from staging and unlock each at once (a
 * thread faulting on a hot page waits for its copy, not for the victims'
 * compression); failures become victims.
 */
static void copy_back(struct upg *u, struct chunk_op *op, struct victim *spare)
{
	char *dst = region_addr(op->r, op->first);

	for (size_t p = 0; p < op->n; p++) {
		char *off = (char *)(p << UPG_PAGE_SHIFT);
		bool wp = u->caps.wp_async && (op->old[p] & PTE_COPY);

		if (op->vic[p] || pte_state(op->old[p]) != PTE_RESIDENT)
			continue;
		if (upg_uffd_copy(u->uffd, dst + (uintptr_t)off,
				  u->chunk_staging + (uintptr_t)off,
				  UPG_PAGE_SIZE, wp, false) > 0) {
			unlock_other(u, op, p);
			upg_stat_inc(upg_evictor_stats(u),
				     UPG_STAT_evict_remap_kept);
			continue;
		}
		*spare = (struct victim){ .r = op->r,
					  .idx = op->first + p,
					  .old = op->old[p] };
		op->vic[p] = spare++;
	}
}

/* Store each victim from staging (or put it back if the pool is full). */
static size_t store_victims(struct upg *u, struct chunk_op *op)
{
	struct upg_store_item item[UPG_CHUNK_PAGES];
	size_t evicted = 0, n = 0;

	for (size_t p = 0; p < op->n; p++)
		if (op->vic[p])
			item[n++] = (struct upg_store_item){
				.v = op->vic[p],
				.page = u->chunk_staging +
					(p << UPG_PAGE_SHIFT),
			};
	store_items(u, item, n);
	for (size_t j = 0; j < n; j++) {
		struct victim *v = item[j].v;
		char *page = (char *)item[j].page;
		int64_t e = item[j].e;

		if (e < 0) {
			upg_uffd_copy(u->uffd, region_addr(v->r, v->idx), page,
				      UPG_PAGE_SIZE, false, false);
			keep_resident(u, v);
			continue;
		}
		upg_page_publish(u, v->r, v->idx, PTE_RESIDENT, (uint64_t)e);
		evicted++;
	}
	return evicted;
}

/* testing.h: the chunk's pages without a page, to the test's hook. */
static void test_remap(struct upg *u, struct chunk_op *op)
{
	upg_test_remap_fn fn =
		__atomic_load_n(&u->test_remap, __ATOMIC_ACQUIRE);
	char *addr[UPG_CHUNK_PAGES];
	size_t n = 0;

	if (!fn)
		return;
	for (size_t p = 0; p < op->n; p++)
		if (pageless(op, p))
			addr[n++] = region_addr(op->r, op->first + p);
	fn(u->test_remap_arg, addr, n);
}

void upg_test_remap_hook(struct upg *u, upg_test_remap_fn fn, void *arg)
{
	u->test_remap_arg = arg;
	__atomic_store_n(&u->test_remap, fn, __ATOMIC_RELEASE);
}

/*
 * Evict victims [0, n), all in one chunk, by moving the chunk's page table.
 * Return: pages evicted, or -1 if the chunk could not be moved (a page was
 * busy, or mremap failed): the victims are then still locked.
 */
static long evict_remap(struct upg *u, struct victim *v, size_t n)
{
	struct victim spare[UPG_CHUNK_PAGES];
	struct chunk_op op;
	size_t evicted;

	op.r = v[0].r;
	op.first = v[0].idx & ~(UPG_CHUNK_PAGES - 1);
	op.n = MIN(UPG_CHUNK_PAGES, op.r->npages - op.first);
	memset(op.vic, 0, sizeof(op.vic));
	for (size_t i = 0; i < n; i++)
		op.vic[v[i].idx - op.first] = &v[i];
	if (!lock_others(u, &op))
		goto abort;
	if (mremap(region_addr(op.r, op.first), op.n << UPG_PAGE_SHIFT,
		   op.n << UPG_PAGE_SHIFT,
		   MREMAP_MAYMOVE | MREMAP_FIXED | MREMAP_DONTUNMAP,
		   u->chunk_staging) == MAP_FAILED) {
		unlock_others(u, &op, op.n);
		goto abort;
	}
	unlock_pageless(u, &op);
	copy_back(u, &op, spare);
	test_remap(u, &op);
	evicted = store_victims(u, &op); /* the others are unlocked */
	madvise(u->chunk_staging, op.n << UPG_PAGE_SHIFT, MADV_DONTNEED);
	upg_stat_inc(upg_evictor_stats(u), UPG_STAT_evict_remap_chunks);
	upg_stat_add(upg_evictor_stats(u), UPG_STAT_evict_remap, evicted);
	return (long)evicted;

abort:
	upg_stat_inc(upg_evictor_stats(u), UPG_STAT_evict_remap_abort);
	return -1;
}

/*
 * Victims [0, n) in one chunk: a page-table move, else page by page, in
 * slices that fit the staging area.
 */
static size_t evict_chunk(struct upg *u, struct victim *v, size_t n)
{
	size_t evicted = 0, k;
	long ret = -1;

	if (u->remap)
		ret = evict_remap(u, v, n);
	if (ret >= 0)
		return (size_t)ret;
	for (size_t i = 0; i < n; i += k) {
		k = MIN(n - i, (size_t)UPG_EVICT_BATCH);
		evicted += u->caps.move ? evict_move(u, v + i, k)
					: evict_copy(u, v + i, k);
	}
	return evicted;
}

/* Length of the group of victims from @i that share a region and chunk. */
static size_t chunk_group(const struct victim *v, size_t i, size_t n)
{
	size_t k = 1, c = v[i].idx >> UPG_CHUNK_SHIFT;

	while (i + k < n && v[i + k].r == v[i].r &&
	       v[i + k].idx >> UPG_CHUNK_SHIFT == c)
		k++;
	return k;
}

size_t evict_victims(struct upg *u, struct victim *v, size_t n)
{
	size_t evicted = 0;

	for (size_t i = 0, k; i < n; i += k) {
		k = chunk_group(v, i, n);
		evicted += evict_chunk(u, v + i, k);
	}
	return evicted;
}
