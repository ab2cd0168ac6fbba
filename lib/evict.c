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
 *
 * This file holds the clock, the passes and the evictor thread; taking
 * victims out and storing them is evict_store.c.
 */
#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "evict_impl.h"

#define EVICTOR_PERIOD_NS 50000000ULL
#define STALL_RETRY_NS 1000000ULL

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
	evicted = evict_victims(u, v, n);
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
	u->remap = u->p.use_remap && evict_remap_works(u->chunk_staging);
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
		err = evict_staging_reset(u);
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
