/* SPDX-License-Identifier: MIT */
/*
 * Eviction: a clock over resident pages, run by one background thread that
 * keeps free headroom between two watermarks (like kswapd), so that faults
 * rarely wait.
 *
 * Reference bits: user space has no accessed bit, so a page's REF is set
 * when it is faulted in and when PAGEMAP_SCAN (UFFD_FEATURE_WP_ASYNC)
 * reports it written since the clock last passed; the same scan
 * write-protects it again. A page only read since its fault loses REF at
 * the first pass and is evicted at the second; if it is hot it comes back
 * cheaply (its stored copy is still valid, so re-evicting it later costs a
 * comparison, not a compression).
 *
 * Removal, UFFDIO_MOVE mode (Linux 6.8+): victims are locked, moved in one
 * ioctl per contiguous run into a staging area registered on the same
 * userfaultfd, compressed into the pool, published as evicted and
 * unlocked. A store racing with the move lands either before it (and is in
 * the moved page) or after it (and faults, waiting for the page lock).
 * Staging memory is released by mapping fresh memory over it, not by
 * madvise, which would raise UFFD_EVENT_REMOVE and stall every UFFDIO_COPY
 * with EAGAIN until a handler read the event.
 *
 * Clean pages: a resident page whose entry still has COPY was read back
 * from the pool and not reported written. Between that report and the move
 * a store may still sneak in, so after the move the page is compared with
 * its stored copy: equal pages keep the copy (a clean drop), others are
 * compressed again. Exact, and cheaper than compressing (decompress+memcmp).
 *
 * Removal, copy fallback (no UFFDIO_MOVE, or UPG_MOVE=0): the run is
 * write-protected (writes now block in a WP fault), copied into the pool,
 * zapped with MADV_DONTNEED, then unlocked; the WP faults are woken and
 * retry as missing-page faults.
 *
 * A full pool: the page goes back where it was and the runtime enters
 * overrun, letting the resident set exceed the budget rather than
 * deadlock; every later pass retries.
 */
#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "runtime.h"

#define EVICTOR_PERIOD_NS 50000000ULL
#define STALL_RETRY_NS 1000000ULL

struct victim {
	struct upg_region *r;
	size_t idx;
	uint64_t old;
	bool moved;
};

/* ------------------------------------------------------------------ */
/* Watermarks and waking                                               */
/* ------------------------------------------------------------------ */

void upg_evict_set_watermarks(struct upg *u)
{
	long b = atomic_load(&u->budget);
	long high = u->p.headroom ? (long)(u->p.headroom >> UPG_PAGE_SHIFT)
				  : MAX(b / 32, 2 * UPG_EVICT_BATCH);

	high = MAX(MIN(high, b / 2), 2);
	atomic_store(&u->high_gap, high);
	atomic_store(&u->low_gap, MAX(high / 2, 1));
}

static bool above_low(struct upg *u)
{
	return atomic_load(&u->resident) >
	       atomic_load(&u->budget) - atomic_load(&u->low_gap);
}

static bool above_high(struct upg *u)
{
	return atomic_load(&u->resident) >
	       atomic_load(&u->budget) - atomic_load(&u->high_gap);
}

void upg_evict_kick(struct upg *u)
{
	if (!atomic_exchange(&u->ev_idle, false))
		return;
	pthread_mutex_lock(&u->ev_lock);
	pthread_cond_signal(&u->ev_wake);
	pthread_mutex_unlock(&u->ev_lock);
}

void upg_evict_wait(struct upg *u, uint64_t timeout_ns)
{
	unsigned long round;
	struct timespec ts;

	upg_deadline(&ts, timeout_ns ? timeout_ns : 3600ULL * 1000000000ULL);
	pthread_mutex_lock(&u->ev_lock);
	round = atomic_load(&u->ev_rounds);
	atomic_store(&u->ev_idle, false);
	pthread_cond_signal(&u->ev_wake);
	while (round == atomic_load(&u->ev_rounds) &&
	       !atomic_load(&u->stopping))
		if (pthread_cond_timedwait(&u->ev_done, &u->ev_lock, &ts))
			break;
	pthread_mutex_unlock(&u->ev_lock);
}

/* ------------------------------------------------------------------ */
/* The clock                                                           */
/* ------------------------------------------------------------------ */

/*
 * A page reported written is dirty: its stored copy (if any) no longer
 * matches and is freed now, while the pool may need room. @clock: the
 * report comes from the clock's scan, which protected the page again, so
 * the write also counts as a reference; the reaper's report-only scan
 * reports every write since the last protection and only frees copies.
 */
static void page_written(struct upg *u, struct upg_region *r, size_t idx,
			 bool clock)
{
	upg_pte_t *p = &r->pte[idx];
	uint64_t v = atomic_load_explicit(p, memory_order_relaxed);

	if (pte_state(v) != PTE_RESIDENT)
		return; /* unpopulated entries are reported written too */
	if (clock)
		upg_stat_inc(upg_evictor_stats(u), UPG_STAT_wp_written);
	if (!(v & PTE_COPY) || !pte_trylock(p, &v)) {
		if (clock)
			atomic_fetch_or_explicit(p, PTE_REF,
						 memory_order_relaxed);
		return;
	}
	if (pte_state(v) == PTE_RESIDENT) {
		if (v & PTE_COPY)
			upg_stat_inc(upg_evictor_stats(u),
				     clock ? UPG_STAT_clock_copies
					   : UPG_STAT_reap_copies);
		upg_page_drop_copy(u, v);
		v = pte_make(PTE_RESIDENT, PTE_REF, 0);
	}
	upg_page_publish(u, r, idx, pte_state(v), v);
}

/* Pages [idx, idx + n) written since their protection: see page_written(). */
static void scan_written(struct upg *u, struct upg_region *r, size_t idx,
			 size_t n, bool clock)
{
	struct page_region vec[UPG_CHUNK_PAGES / 2];
	int k = upg_uffd_scan_written(u->pagemap_fd, region_addr(r, idx),
				      n << UPG_PAGE_SHIFT, vec, ARRAY_SIZE(vec),
				      clock);

	upg_stat_inc(upg_evictor_stats(u), UPG_STAT_wp_scan);
	for (int i = 0; i < k; i++) {
		size_t a = (size_t)((char *)(uintptr_t)vec[i].start - r->start);
		size_t b = (size_t)((char *)(uintptr_t)vec[i].end - r->start);

		for (a >>= UPG_PAGE_SHIFT; a < b >> UPG_PAGE_SHIFT; a++)
			page_written(u, r, a, clock);
	}
}

/*
 * The reaper. A page read back from the pool keeps its compressed copy
 * until the hand finds it written; in a read-modify-write workload that
 * is nearly every page brought back, and their copies are dead weight in
 * the pool for a whole turn of the clock. Every REAP_PERIOD_NS while the
 * evictor works, a report-only PAGEMAP_SCAN over the resident chunks (no
 * re-protection, so the clock's reference bits are untouched) finds them
 * sooner, and their copies are freed. It runs only while copies are kept
 * (they are given up when they do not pay off: see copy_policy()).
 */
#define REAP_PERIOD_NS 20000000ULL

/*
 * Whether kept copies pay off (fault.c keeps them only while they do): of
 * the copies that ended since the last look, a clean drop saved a
 * compression (~5 us) and a pool store; one freed because its page was
 * written only held pool memory until then (in a read-modify-write
 * workload, 3-4 MiB of a 110 MiB pool at 130K faults/s) and cost the
 * reaper's scans (a pass over 256 MiB of resident pages took 1.6 ms).
 * Copies are kept while at least one in COPY_PAYOFF pays, judged on
 * COPY_JUDGE endings or more. Given up, they are tried again every
 * COPY_PROBE_NS (the workload may have changed): kept, and judged anew.
 */
#define COPY_PAYOFF 8
#define COPY_JUDGE 64
#define COPY_PROBE_NS 2000000000ULL

static uint64_t count(struct upg *u, enum upg_stat_id id)
{
	return upg_stat_count(u->shards, u->nshards, id);
}

static void copy_policy(struct upg *u, uint64_t now)
{
	uint64_t paid = count(u, UPG_STAT_evict_clean_drop) +
			count(u, UPG_STAT_swap_clean_drop);
	uint64_t wasted = count(u, UPG_STAT_reap_copies) +
			  count(u, UPG_STAT_clock_copies) +
			  count(u, UPG_STAT_evict_clean_raced);
	uint64_t dp = paid - u->copy_paid, dw = wasted - u->copy_wasted;
	bool keep = atomic_load_explicit(&u->keep_copies, memory_order_relaxed);

	if (keep && dp + dw < COPY_JUDGE)
		return;
	if (!keep && now - u->copy_off_ns < COPY_PROBE_NS)
		return;
	u->copy_paid = paid;
	u->copy_wasted = wasted;
	if (keep && dp * COPY_PAYOFF < dw) {
		keep = false;
		u->copy_off_ns = now;
	} else {
		keep = true; /* paying off, or a new trial */
	}
	atomic_store_explicit(&u->keep_copies, keep, memory_order_relaxed);
}

static void reap(struct upg *u)
{
	uint64_t now = upg_now_ns();
	bool kept;

	if (!u->caps.wp_async || now - u->reaped_ns < REAP_PERIOD_NS)
		return;
	u->reaped_ns = now;
	kept = atomic_load_explicit(&u->keep_copies, memory_order_relaxed);
	copy_policy(u, now);
	if (!kept) /* no copies since the last pass */
		return;
	pthread_rwlock_rdlock(&u->regions_lock);
	for (size_t i = 0; i < u->nregions; i++) {
		struct upg_region *r = u->regions[i];

		for (size_t c = 0; c < r->nchunks; c++) {
			size_t idx = c << UPG_CHUNK_SHIFT;

			if (atomic_load_explicit(&r->chunk_res[c],
						 memory_order_relaxed))
				scan_written(u, r, idx,
					     MIN(r->npages - idx,
						 (size_t)UPG_CHUNK_PAGES),
					     false);
		}
	}
	pthread_rwlock_unlock(&u->regions_lock);
	upg_stat_inc(upg_evictor_stats(u), UPG_STAT_reap_passes);
}

/* Second chance: referenced pages lose REF, the others are locked. */
static bool examine(struct upg *u, struct upg_region *r, size_t idx,
		    struct victim *v)
{
	upg_pte_t *p = &r->pte[idx];
	uint64_t e = atomic_load_explicit(p, memory_order_relaxed);

	if (pte_state(e) != PTE_RESIDENT || (e & PTE_LOCK))
		return false;
	upg_stat_inc(upg_evictor_stats(u), UPG_STAT_clock_scanned);
	if (e & PTE_REF) {
		atomic_fetch_and_explicit(p, ~PTE_REF, memory_order_relaxed);
		upg_stat_inc(upg_evictor_stats(u), UPG_STAT_clock_referenced);
		return false;
	}
	if (!pte_trylock(p, &e))
		return false;
	if (pte_state(e) != PTE_RESIDENT) {
		upg_page_publish(u, r, idx, pte_state(e), e);
		return false;
	}
	*v = (struct victim){ .r = r, .idx = idx, .old = e };
	return true;
}

/*
 * Advance the hand over the rest of its chunk (one PAGEMAP_SCAN, so one TLB
 * flush, per chunk); returns the resident pages seen.
 */
static size_t sweep_window(struct upg *u, struct victim *v, size_t *n,
			   size_t want)
{
	struct upg_region *r = u->regions[u->hand_region];
	size_t idx = u->hand_idx, c = idx >> UPG_CHUNK_SHIFT, end, seen = 0;

	if (!atomic_load(&r->chunk_res[c])) {
		u->hand_idx = (c + 1) << UPG_CHUNK_SHIFT;
		return 0;
	}
	end = MIN(r->npages, (c + 1) << UPG_CHUNK_SHIFT);
	if (u->caps.wp_async)
		scan_written(u, r, idx, end - idx, true);
	for (; idx < end && *n < want; idx++, seen++)
		if (examine(u, r, idx, &v[*n]))
			(*n)++;
	u->hand_idx = idx;
	return seen;
}

/*
 * Whether the pool takes @n more pages, even incompressible ones, below
 * the mark where write-back starts. A batch bigger than that spills over
 * the pool in mid-batch: part of a run of pages goes to the pool (and
 * later to the file, elsewhere), part straight to the file, and swap-in's
 * readahead finds the run broken (a readahead scan through a 1 MiB pool
 * fell from 9x to 5.5x). So chunks are finished only while there is room.
 */
static bool pool_room(struct upg *u, size_t n)
{
	struct upg_pool_stats ps;

	upg_pool_get_stats(u->pool, &ps);
	return ps.used_bytes + (n << UPG_PAGE_SHIFT) <= ps.max_bytes / 4 * 3;
}

/*
 * With chunk moves, finish the chunk the hand stopped in: moving a chunk
 * costs the copy back of every resident page that stays, so a chunk left
 * after 128 of its victims is moved (and mostly copied back) again and
 * again as the hand crawls over it. Sequential access showed 1.5 pages
 * copied back per page evicted. At most @extra more victims, all in the
 * chunk, and only unreferenced ones, so the clock's choice is unchanged;
 * the evictor just runs a little below its high watermark (by at most an
 * eighth of the budget, or the gap between the watermarks), and only
 * while the pool has room for them.
 */
static void finish_chunk(struct upg *u, struct victim *v, size_t *n)
{
	long gap = MAX(atomic_load(&u->high_gap), atomic_load(&u->budget) / 8);
	size_t extra = MIN(UPG_CHUNK_PAGES, (size_t)gap);
	struct upg_region *r;

	if (!u->remap || !*n || u->hand_region >= u->nregions ||
	    !(u->hand_idx & (UPG_CHUNK_PAGES - 1)))
		return;
	r = u->regions[u->hand_region];
	if (r != v[*n - 1].r ||
	    (v[*n - 1].idx ^ u->hand_idx) >> UPG_CHUNK_SHIFT ||
	    u->hand_idx >= r->npages || !pool_room(u, extra))
		return;
	sweep_window(u, v, n, *n + extra);
}

/*
 * Collect up to @want victims in address order (plus the rest of the last
 * chunk's, see finish_chunk(); @v has room for UPG_CHUNK_PAGES more). Two
 * full turns of the clock are enough to clear every REF bit and find
 * victims; stop there. Caller holds regions_lock for reading.
 */
static size_t select_victims(struct upg *u, struct victim *v, size_t want)
{
	size_t n = 0, seen = 0, steps = 0, max_steps = 2;
	size_t limit = 2 * (size_t)MAX(atomic_load(&u->resident), 0) + want;

	/* Two turns: a step covers at most a chunk. */
	for (size_t i = 0; i < u->nregions; i++)
		max_steps += 2 * (2 * u->regions[i]->nchunks + 1);
	while (n < want && seen < limit && steps++ < max_steps) {
		if (u->hand_region >= u->nregions)
			u->hand_region = 0;
		if (u->hand_idx >= u->regions[u->hand_region]->npages) {
			u->hand_region++;
			u->hand_idx = 0;
			continue;
		}
		seen += sweep_window(u, v, &n, want);
	}
	finish_chunk(u, v, &n);
	return n;
}

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

/* Fresh, empty staging memory: map over the old one and register it. */
static int staging_reset(struct upg *u)
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
	if (moved && staging_reset(u) < 0)
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

#define CHUNK_BYTES (UPG_CHUNK_PAGES << UPG_PAGE_SHIFT)

/* Whether this kernel moves private anonymous memory with DONTUNMAP. */
static bool remap_works(char *staging)
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

/* ------------------------------------------------------------------ */
/* Passes                                                              */
/* ------------------------------------------------------------------ */

/* One batch: select, remove, store. Returns pages evicted. */
static size_t evict_batch(struct upg *u)
{
	struct victim v[UPG_EVICT_BATCH + UPG_CHUNK_PAGES];
	uint64_t t0 = upg_now_ns();
	size_t n, evicted;

	pthread_rwlock_rdlock(&u->regions_lock);
	n = u->nregions ? select_victims(u, v, UPG_EVICT_BATCH) : 0;
	if (!n) {
		pthread_rwlock_unlock(&u->regions_lock);
		return 0;
	}
	evicted = 0;
	for (size_t i = 0, k; i < n; i += k) {
		k = chunk_group(v, i, n);
		evicted += evict_chunk(u, v + i, k);
	}
	/*
	 * Under the lock: upg_release() must not find these pages evicted
	 * and still charged (the charge would outlive the region).
	 */
	upg_uncharge(u, (long)evicted);
	pthread_rwlock_unlock(&u->regions_lock);
	upg_stat_add(upg_evictor_stats(u), UPG_STAT_evict_pages, evicted);
	upg_stat_inc(upg_evictor_stats(u), UPG_STAT_evict_batches);
	upg_stat_time(upg_evictor_stats(u), UPG_HIST_evict, upg_now_ns() - t0);
	/* Nothing stored while victims existed: the pool is full. */
	atomic_store(&u->overrun, evicted == 0);
	return evicted;
}

/* Let threads waiting for room know that a batch freed some. */
static void batch_done(struct upg *u)
{
	if (!atomic_load(&u->ev_waiters))
		return;
	pthread_mutex_lock(&u->ev_lock);
	atomic_fetch_add(&u->ev_rounds, 1);
	pthread_cond_broadcast(&u->ev_done);
	pthread_mutex_unlock(&u->ev_lock);
}

/* Evict down to the high watermark. Return: false if no progress. */
static bool evict_pass(struct upg *u)
{
	bool progress = false;

	upg_free_dropped(u);
	reap(u);
	upg_wb_run(u);
	upg_compact_run(u);
	while (above_high(u) && !atomic_load(&u->stopping) &&
	       !atomic_load(&u->ev_pause)) {
		upg_free_dropped(u);
		reap(u);
		upg_wb_run(u);
		upg_compact_run(u);
		if (!evict_batch(u))
			break;
		progress = true;
		batch_done(u);
	}
	if (!above_high(u))
		atomic_store(&u->overrun, false);
	upg_free_dropped(u);
	return progress;
}

static void evictor_setup(struct upg *u)
{
	sigset_t all;

	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, NULL);
	pthread_setname_np(pthread_self(), "upg-evict");
	atomic_store(&u->evictor_tid, (pid_t)syscall(SYS_gettid));
}

/*
 * Sleep until kicked. ev_idle is set before the watermark is checked, so a
 * kicker either sees it set (and signals once we wait: it needs ev_lock)
 * or updated `resident` before our check. A full pool is retried
 * periodically; otherwise an idle evictor does not wake.
 */
static void evictor_sleep(struct upg *u, uint64_t period_ns)
{
	struct timespec ts;

	if (!atomic_load(&u->overrun) && !period_ns) {
		pthread_cond_wait(&u->ev_wake, &u->ev_lock);
		return;
	}
	upg_deadline(&ts, period_ns ? period_ns : EVICTOR_PERIOD_NS);
	if (pthread_cond_timedwait(&u->ev_wake, &u->ev_lock, &ts) &&
	    above_high(u))
		atomic_store(&u->overrun, false); /* try the pool again */
}

/* Between batches, with ev_lock held: sleep while fork() is under way. */
static void pause_here(struct upg *u)
{
	u->ev_paused = true;
	pthread_cond_broadcast(&u->ev_done);
	while (atomic_load(&u->ev_pause) && !atomic_load(&u->stopping))
		pthread_cond_wait(&u->ev_wake, &u->ev_lock);
	u->ev_paused = false;
}

void upg_evict_pause(struct upg *u)
{
	pthread_mutex_lock(&u->ev_lock);
	atomic_store(&u->ev_pause, true);
	pthread_cond_signal(&u->ev_wake);
	while (u->evictor_started && !u->ev_paused)
		pthread_cond_wait(&u->ev_done, &u->ev_lock);
	pthread_mutex_unlock(&u->ev_lock);
}

void upg_evict_resume(struct upg *u)
{
	pthread_mutex_lock(&u->ev_lock);
	atomic_store(&u->ev_pause, false);
	pthread_cond_broadcast(&u->ev_wake);
	pthread_mutex_unlock(&u->ev_lock);
}

static void *evictor_main(void *arg)
{
	struct upg *u = arg;
	bool stalled = false;

	upg_internal_enter(); /* for good: this thread is the runtime's */
	evictor_setup(u);
	pthread_mutex_lock(&u->ev_lock);
	while (!atomic_load(&u->stopping)) {
		if (atomic_load(&u->ev_pause)) {
			pause_here(u);
			continue;
		}
		atomic_store(&u->ev_idle, true);
		if (above_low(u) && !atomic_load(&u->overrun) && !stalled) {
			atomic_store(&u->ev_idle, false);
			pthread_mutex_unlock(&u->ev_lock);
			stalled = !evict_pass(u) && above_high(u) &&
				  !atomic_load(&u->overrun);
			pthread_mutex_lock(&u->ev_lock);
		} else if (!stalled &&
			   upg_compact_wait_ns(u) == UPG_COMPACT_DUE) {
			atomic_store(&u->ev_idle, false);
			pthread_mutex_unlock(&u->ev_lock);
			upg_compact_run(u);
			pthread_mutex_lock(&u->ev_lock);
		} else {
			/* Every victim locked or in use: retry shortly. A
			 * compaction due later: sleep until then. */
			evictor_sleep(u, stalled ? STALL_RETRY_NS
						 : upg_compact_wait_ns(u));
			stalled = false;
		}
		atomic_fetch_add(&u->ev_rounds, 1);
		pthread_cond_broadcast(&u->ev_done);
	}
	pthread_mutex_unlock(&u->ev_lock);
	return NULL;
}

/* A 2 MiB-aligned chunk of address space between PROT_NONE guards. */
static int chunk_staging_init(struct upg *u)
{
	char *area = mmap(NULL, 3 * CHUNK_BYTES, PROT_NONE,
			  MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);

	if (area == MAP_FAILED)
		return upg_seterr(-ENOMEM, "cannot map chunk staging area");
	u->chunk_area = area;
	u->chunk_staging = (char *)(((uintptr_t)area + 2 * CHUNK_BYTES - 1) &
				    ~(uintptr_t)(CHUNK_BYTES - 1));
	u->remap = u->p.use_remap && remap_works(u->chunk_staging);
	return 0;
}

static int start_evictor(struct upg *u)
{
	int err = -pthread_create(&u->evictor, NULL, evictor_main, u);

	if (err)
		return upg_seterr(err, "cannot start evictor: %s",
				  strerror(-err));
	u->evictor_started = true;
	return 0;
}

int upg_evict_start(struct upg *u)
{
	size_t len = (size_t)(UPG_EVICT_BATCH + 2) << UPG_PAGE_SHIFT;
	char *area;
	int err;

	upg_evict_set_watermarks(u);
	if (u->caps.move) {
		/* PROT_NONE guards keep the staging VMA from merging. */
		area = mmap(NULL, len, PROT_NONE,
			    MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
		if (area == MAP_FAILED)
			return upg_seterr(-ENOMEM, "cannot map staging area");
		u->staging = area + UPG_PAGE_SIZE;
		err = staging_reset(u);
		if (err)
			return err;
	}
	err = chunk_staging_init(u);
	if (!err)
		err = upg_wb_init(u);
	if (err)
		return err;
	return start_evictor(u);
}

/*
 * In a fork child: the evictor did not survive fork(), and the staging
 * area must be registered on the child's new userfaultfd.
 */
int upg_evict_restart(struct upg *u)
{
	size_t len = (size_t)UPG_EVICT_BATCH << UPG_PAGE_SHIFT;
	int err;

	u->evictor_started = false;
	u->ev_paused = false;
	atomic_store(&u->ev_pause, false);
	atomic_store(&u->ev_idle, false);
	atomic_store(&u->ev_waiters, 0);
	/* A handler may have been entering a job; it did not survive. */
	atomic_store(&u->job.active, false);
	atomic_store(&u->job.helpers, 0);
	if (u->staging) {
		err = upg_uffd_register(u->uffd, u->staging, len, false, true);
		if (err)
			return err;
	}
	err = upg_wb_restart(u);
	if (err)
		return err;
	return start_evictor(u);
}

void upg_evict_stop(struct upg *u)
{
	atomic_store(&u->stopping, true);
	if (u->evictor_started) {
		pthread_mutex_lock(&u->ev_lock);
		pthread_cond_broadcast(&u->ev_wake);
		pthread_mutex_unlock(&u->ev_lock);
		pthread_join(u->evictor, NULL);
		u->evictor_started = false;
	}
	if (u->staging) {
		munmap(u->staging - UPG_PAGE_SIZE, (size_t)(UPG_EVICT_BATCH + 2)
							   << UPG_PAGE_SHIFT);
		u->staging = NULL;
	}
	upg_wb_stop(u);
}
