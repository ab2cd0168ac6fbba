/* SPDX-License-Identifier: MIT */
/*
 * Fault handling: what a handler thread (handler.c: one per CPU, pinned,
 * blocking in read(2) on the runtime's userfaultfd) does with a message.
 *
 * Why this shape: in the VMs we run on a cross-CPU wake-up costs ~30 us
 * against ~4.4 us on the same CPU. A faulting thread sleeps, its CPU goes
 * idle, and the handler pinned to that CPU is the one that wakes first:
 * DESIGN.md measured 98% of faults served on the faulter's CPU this way.
 *
 * A fault resolves by zero-fill (untouched page), decompression (evicted
 * page) or nothing (a duplicate message). Each may bring in neighbours
 * ("fault-around") when the region's recent faults were sequential: the
 * window doubles on every sequential fault up to the cluster option and
 * falls back to one page on a random one.
 *
 * Handlers never wait for a page lock (they mark the page PTE_WAIT and the
 * holder wakes the faulting thread) and never call madvise on registered
 * memory. The one place a handler sleeps is a full budget, for at most a
 * millisecond at a time, while the evictor (which needs no handler to make
 * progress in UFFDIO_MOVE mode) frees room.
 */
#include <errno.h>
#include <sched.h>
#include <string.h>
#include <sys/mman.h>

#include "runtime.h"

#define BUDGET_WAIT_NS 1000000ULL
#define STREAM_STALE 64 /* faults in the region without one of the stream's */

/* One locked run of pages starting at the faulting one. */
struct run {
	struct upg_region *r;
	size_t idx;
	size_t n;
	unsigned stream; /* the sequential stream it belongs to */
	uint64_t old[UPG_CLUSTER_MAX];
};

/* ------------------------------------------------------------------ */
/* Page locks and publication (shared with evict.c and runtime.c)      */
/* ------------------------------------------------------------------ */

void upg_page_drop_copy(struct upg *u, uint64_t val)
{
	if (!(val & PTE_COPY))
		return;
	if (val & PTE_SWAP)
		upg_swap_free(u->swap, pte_payload(val));
	else
		upg_pool_free(u->pool, pte_payload(val));
}

/* What a discard (PTE_ZAP) that raced with the lock holder leaves. */
static uint64_t apply_zap(struct upg *u, uint64_t val)
{
	upg_page_drop_copy(u, val);
	if (pte_state(val) == PTE_EVICTED)
		return PTE_UNTOUCHED;
	return val & ~(PTE_COPY | PTE_SWAP | (~0ULL << PTE_PAYLOAD_SHIFT));
}

void upg_page_publish(struct upg *u, struct upg_region *r, size_t idx,
		      uint64_t from, uint64_t val)
{
	upg_pte_t *p = &r->pte[idx];
	uint64_t cur = atomic_load_explicit(p, memory_order_relaxed);
	uint64_t flags;

	/* Loop until no new ZAP/WAIT appeared between load and store. */
	for (;;) {
		uint64_t v = (cur & PTE_ZAP) ? apply_zap(u, val) : val;

		if (atomic_compare_exchange_weak_explicit(
			    p, &cur, v, memory_order_release,
			    memory_order_relaxed)) {
			val = v;
			break;
		}
	}
	flags = cur;
	upg_region_account(r, idx, from, pte_state(val));
	if (flags & PTE_WAIT)
		upg_uffd_wake(u->uffd, region_addr(r, idx), UPG_PAGE_SIZE);
}

/* ------------------------------------------------------------------ */
/* Budget                                                              */
/* ------------------------------------------------------------------ */

long upg_charge(struct upg *u, long want, struct upg_stat_shard *st)
{
	long cur = atomic_load_explicit(&u->resident, memory_order_relaxed);
	long budget, got, peak;

	do {
		budget = atomic_load_explicit(&u->budget, memory_order_relaxed);
		got = MIN(want, budget - cur);
		if (got <= 0) {
			if (!atomic_load_explicit(&u->overrun,
						  memory_order_relaxed))
				return 0;
			got = 1;
		}
	} while (!atomic_compare_exchange_weak_explicit(
		&u->resident, &cur, cur + got, memory_order_relaxed,
		memory_order_relaxed));
	cur += got;
	if (cur > budget)
		upg_stat_add(st, UPG_STAT_budget_overruns, (uint64_t)got);
	peak = atomic_load_explicit(&u->resident_peak, memory_order_relaxed);
	while (cur > peak &&
	       !atomic_compare_exchange_weak_explicit(&u->resident_peak, &peak,
						      cur, memory_order_relaxed,
						      memory_order_relaxed))
		;
	if (cur >
	    budget - atomic_load_explicit(&u->low_gap, memory_order_relaxed))
		upg_evict_kick(u);
	return got;
}

/*
 * Charge for up to @want pages, waiting once, briefly, for the evictor if
 * the budget is full. A handler must get back to reading messages: the
 * copy fallback's evictor waits for one to read its UFFD_EVENT_REMOVE. If
 * there is still no room the fault is dropped and its thread woken; it
 * faults again and comes back through the queue.
 */
static long charge_or_wait(struct upg_handler *h, long want)
{
	long got = upg_charge(h->u, want, h->stats);

	if (got)
		return got;
	upg_stat_inc(h->stats, UPG_STAT_evict_sync);
	/* Rather than sleep, compress part of the batch that makes room. */
	while (upg_evict_help(h->u, h->stats)) {
		got = upg_charge(h->u, want, h->stats);
		if (got)
			return got;
	}
	upg_evict_wait(h->u, BUDGET_WAIT_NS);
	return upg_charge(h->u, want, h->stats);
}

/* ------------------------------------------------------------------ */
/* Runs                                                                */
/* ------------------------------------------------------------------ */

/*
 * Sequential-fault detection: the stream whose last page precedes @run's,
 * else a new one in the slot of the least recently used random stream
 * (window 1) or stale one (no fault in STREAM_STALE), else of the least
 * recently used. Not the slots in turn: a thread faulting at random took a
 * scanning thread's slot every few faults, and its window started again
 * at one page (3.8 pages a fault instead of 16). Sets run->stream.
 * Return: whether the fault continues a stream.
 */
static bool find_stream(struct run *run)
{
	struct upg_region *r = run->r;
	uint64_t now = atomic_fetch_add_explicit(&r->stream_tick, 1,
						 memory_order_relaxed);
	uint64_t best = UINT64_MAX;
	bool seq = false;

	for (unsigned i = 0; i < UPG_STREAMS && !seq; i++) {
		struct upg_stream *st = &r->stream[i];
		uint64_t used =
			atomic_load_explicit(&st->used, memory_order_relaxed);
		unsigned w =
			atomic_load_explicit(&st->window, memory_order_relaxed);
		uint64_t key = used >> 1; /* spare slots first */

		if (atomic_load_explicit(&st->last, memory_order_relaxed) + 1 ==
		    run->idx) {
			run->stream = i;
			seq = true;
		} else {
			if (w > 1 && now - used <= STREAM_STALE)
				key |= 1ULL << 63;
			if (key < best) {
				best = key;
				run->stream = i;
			}
		}
	}
	if (!seq)
		atomic_store_explicit(&r->stream[run->stream].window, 1,
				      memory_order_relaxed);
	atomic_store_explicit(&r->stream[run->stream].used, now,
			      memory_order_relaxed);
	return seq;
}

/*
 * The window for @run: doubled up to @max on a sequential fault, one page
 * on a random one. Return: pages, at most to the region's end.
 */
static size_t next_window(struct run *run, bool seq, unsigned max)
{
	struct upg_stream *st = &run->r->stream[run->stream];
	unsigned w = atomic_load_explicit(&st->window, memory_order_relaxed);

	w = seq ? MIN(w * 2, max) : 1;
	atomic_store_explicit(&st->window, w, memory_order_relaxed);
	return MIN((size_t)w, run->r->npages - run->idx);
}

/* Fault-around window in pages. */
static size_t fault_window(struct upg *u, struct run *run)
{
	return next_window(run, find_stream(run), u->p.cluster);
}

/*
 * Whether entry @v can join @run as its next page: the same state, from
 * the same tier, and for swapped pages the next object in the file (so
 * that one read brings the whole run in).
 */
static bool joins_run(const struct run *run, uint64_t v)
{
	uint64_t first = run->old[0];

	if (pte_state(v) != pte_state(first) || ((v ^ first) & PTE_SWAP))
		return false;
	return !(first & PTE_SWAP) ||
	       upg_swap_follows(pte_payload(run->old[run->n - 1]),
				pte_payload(v));
}

/* Extend a run (whose first page is locked) over pages that join it. */
static void grow_run(struct upg *u, struct run *run, size_t max)
{
	upg_pte_t *pte = run->r->pte + run->idx;

	while (run->n < max) {
		uint64_t v = atomic_load_explicit(&pte[run->n],
						  memory_order_relaxed);

		if (!joins_run(run, v) || (v & PTE_LOCK) ||
		    !pte_trylock(&pte[run->n], &v))
			break;
		if (!joins_run(run, v)) {
			/* Publish, not store: keeps a WAIT set meanwhile. */
			upg_page_publish(u, run->r, run->idx + run->n,
					 pte_state(v), v);
			break;
		}
		run->old[run->n++] = v;
	}
}

/* Unlock pages [from, n) of a run unchanged. */
static void release_run(struct upg *u, struct run *run, size_t from)
{
	for (size_t i = from; i < run->n; i++) {
		uint64_t s = pte_state(run->old[i]);

		upg_page_publish(u, run->r, run->idx + i, s, run->old[i]);
	}
	run->n = from;
}

/*
 * Install @len bytes at @dst, from @src or as zero pages (@src NULL),
 * retrying partial copies. Return: bytes installed, or -errno if none.
 *
 * UFFDIO_ZEROPAGE refuses to replace a uffd-wp marker (EEXIST), and
 * PAGEMAP_SCAN leaves such markers on empty entries it protects; UFFDIO_COPY
 * accepts them. So a zero-page install that meets EEXIST is redone as a
 * copy of zeros (@zeros: at least @len bytes of them); a true duplicate
 * then fails with EEXIST again.
 */
static long install(struct upg *u, char *dst, const char *src, size_t len,
		    bool wp, const char *zeros)
{
	size_t done = 0;
	long ret = 0;

	while (done < len) {
		ret = src ? upg_uffd_copy(u->uffd, dst + done, src + done,
					  len - done, wp, true)
			  : upg_uffd_zeropage(u->uffd, dst + done, len - done,
					      true);
		if (ret == -EEXIST && !src) {
			src = zeros - done;
			continue;
		}
		if (ret <= 0)
			break;
		done += (size_t)ret;
	}
	return done ? (long)done : ret;
}

/* Note that @run's stream has reached its page @k - 1. */
static void stream_reach(struct run *run, size_t k)
{
	atomic_store_explicit(&run->r->stream[run->stream].last,
			      run->idx + k - 1, memory_order_release);
}

/*
 * What a run's install counts: the fault as @fault, its other pages as
 * @around and, for pages brought back, every page as a refault; and the
 * time it took, in @hist.
 */
struct tally {
	enum upg_stat_id fault, around;
	bool refault;
	enum upg_hist_id hist;
};

static const struct tally zero_tally = { UPG_STAT_fault_zero,
					 UPG_STAT_fault_around_zero, false,
					 UPG_HIST_zero };

/* Add (or with @undo take back) @faults faults and @pages pages. */
static void count_run(struct upg_handler *h, const struct tally *t,
		      size_t faults, size_t pages, bool undo)
{
	uint64_t f = faults, a = pages - faults, p = pages;

	if (undo)
		f = -f, a = -a, p = -p;
	upg_stat_add(h->stats, t->fault, f);
	upg_stat_add(h->stats, t->around, a);
	if (t->refault)
		upg_stat_add(h->stats, UPG_STAT_refault, p);
}

/*
 * Before install(), which wakes the thread: note where the run's stream
 * is (else the thread's next fault may come first, look random and
 * restart the window at one page) and count the whole run (once the
 * access has completed the program's statistics include it, however long
 * the handler then waits for a CPU: an idle one may wait long).
 */
static void before_install(struct upg_handler *h, struct run *run,
			   const struct tally *t)
{
	stream_reach(run, run->n);
	count_run(h, t, 1, run->n, false);
}

/*
 * After install(): keep pages [0, k) with their new entries, unlock the
 * rest unchanged, settle the charge, and take back what before_install()
 * noted and counted of the pages that did not go in. Return: k.
 */
static size_t settle(struct upg_handler *h, struct run *run, long ret,
		     const uint64_t *val, const struct tally *t)
{
	struct upg *u = h->u;
	size_t k = ret > 0 ? (size_t)ret >> UPG_PAGE_SHIFT : 0;
	size_t n = run->n;

	for (size_t i = 0; i < k; i++)
		upg_page_publish(u, run->r, run->idx + i,
				 pte_state(run->old[i]), val[i]);
	release_run(u, run, k);
	upg_uncharge(u, (long)(n - k));
	if (k < n) {
		if (k)
			stream_reach(run, k);
		count_run(h, t, !k, n - k, true);
	}
	return k;
}

/*
 * The faulting page could not be installed. EEXIST: it is mapped after all
 * (a duplicate message): wake the thread. EAGAIN: the mm is changing (an
 * event is pending): wake the thread so it faults again once the event has
 * been read. ENOENT/ESRCH: the range or the process is gone.
 */
static void install_failed(struct upg_handler *h, char *addr, long err)
{
	if (err == -EAGAIN)
		upg_stat_inc(h->stats, UPG_STAT_fault_copy_retry);
	else if (err != -EEXIST && err != -ENOENT && err != -ESRCH) {
		upg_stat_inc(h->stats, UPG_STAT_fault_error);
		upg_err("cannot resolve fault at %p: %s", (void *)addr,
			strerror((int)-err));
	}
	upg_uffd_wake(h->u->uffd, addr, UPG_PAGE_SIZE);
}

/* ------------------------------------------------------------------ */
/* Resolution by kind                                                  */
/* ------------------------------------------------------------------ */

static void resolve_zero(struct upg_handler *h, struct run *run, bool write,
			 uint64_t t0)
{
	struct upg *u = h->u;
	uint64_t val[UPG_CLUSTER_MAX];
	char *dst = region_addr(run->r, run->idx);
	long got, ret;

	grow_run(u, run, fault_window(u, run));
	got = charge_or_wait(h, (long)run->n);
	release_run(u, run, (size_t)got);
	if (!got)
		return install_failed(h, dst, -EAGAIN);
	for (size_t i = 0; i < run->n; i++)
		val[i] = pte_make(PTE_RESIDENT, PTE_REF, 0);
	before_install(h, run, &zero_tally);
	/* A write needs a private page anyway; a read can share the zero page. */
	ret = install(u, dst, write ? h->zero : NULL, run->n << UPG_PAGE_SHIFT,
		      false, h->zero);
	if (!settle(h, run, ret, val, &zero_tally))
		return install_failed(h, dst, ret);
	upg_stat_time(h->stats, zero_tally.hist, upg_now_ns() - t0);
}

/*
 * Decompress the run's pages into h->buf; the run stops before the first
 * neighbour that fails. Return: -EIO if the faulting page itself failed.
 */
static int load_run(struct upg_handler *h, struct run *run)
{
	for (size_t i = 0; i < run->n; i++) {
		char *dst = h->buf + (i << UPG_PAGE_SHIFT);
		uint64_t handle = pte_payload(run->old[i]);

		if (upg_pool_load(h->u->pool, handle, dst) < 0) {
			if (!i)
				return -EIO;
			release_run(h->u, run, i);
			break;
		}
	}
	return 0;
}

/*
 * A page read back from the pool is installed write-protected (with
 * WP_ASYNC, a later write silently clears the protection and PAGEMAP_SCAN
 * reports it) and keeps its stored copy, so that an unwritten page is
 * dropped at eviction instead of being compressed again. A page that is
 * being written now is dirty at once: its copy is freed once installed.
 *
 * Pool copies cost memory until the page is found written, so they are
 * kept only while they pay off, as the evictor judges (copy_policy() in
 * evict.c): not in a read-modify-write workload, where nearly every copy
 * is freed unused. Slots in the swap file are always kept: they cost no
 * memory, and a clean drop saves a write.
 */
static bool keeps_copy(struct upg_handler *h, uint64_t old, bool write,
		       size_t i)
{
	if (!h->u->caps.wp_async || (write && i == 0))
		return false;
	if ((old & PTE_SWAP) ||
	    atomic_load_explicit(&h->u->keep_copies, memory_order_relaxed))
		return true;
	upg_stat_inc(h->stats, UPG_STAT_copy_skipped);
	return false;
}

/*
 * Free a dropped copy's pool object later, on the evictor: freeing here,
 * with the faulting thread just woken on this CPU, contended for the size
 * class's lock with the evictor storing on the other CPU (a cross-CPU
 * futex wake-up is ~30 us here): read-modify-write Zipfian ran 12% slower
 * when copies were given up and freed by the handlers. The evictor frees
 * them with its next batch; a full ring, or a slot in the swap file, is
 * freed at once.
 */
static void drop_copy_later(struct upg_handler *h, uint64_t old)
{
	unsigned head =
		atomic_load_explicit(&h->drop_head, memory_order_relaxed);

	if (!(old & PTE_COPY))
		return;
	if ((old & PTE_SWAP) || !h->dropped ||
	    head - atomic_load_explicit(&h->drop_tail, memory_order_acquire) >=
		    UPG_DROP_RING) {
		upg_page_drop_copy(h->u, old);
		return;
	}
	h->dropped[head % UPG_DROP_RING] = pte_payload(old);
	atomic_store_explicit(&h->drop_head, head + 1, memory_order_release);
}

void upg_free_dropped(struct upg *u)
{
	while (atomic_exchange_explicit(&u->freeing_dropped, true,
					memory_order_acquire))
		sched_yield(); /* upg_release() */
	for (unsigned i = 0; i < u->nhandlers; i++) {
		struct upg_handler *h = &u->handlers[i];
		unsigned head, tail;

		if (!h->dropped)
			continue; /* not set up, or stopped */
		head = atomic_load_explicit(&h->drop_head,
					    memory_order_acquire);
		tail = atomic_load_explicit(&h->drop_tail,
					    memory_order_relaxed);
		for (; tail != head; tail++)
			upg_pool_free(u->pool,
				      h->dropped[tail % UPG_DROP_RING]);
		atomic_store_explicit(&h->drop_tail, tail,
				      memory_order_release);
	}
	atomic_store_explicit(&u->freeing_dropped, false, memory_order_release);
}

static void entries_after_load(struct upg_handler *h, struct run *run,
			       bool write, uint64_t *val)
{
	for (size_t i = 0; i < run->n; i++)
		val[i] = keeps_copy(h, run->old[i], write, i)
				 ? (run->old[i] & ~PTE_STATE) | PTE_RESIDENT |
					   PTE_REF
				 : pte_make(PTE_RESIDENT, PTE_REF, 0);
}

/*
 * Install the run from h->buf: write-protected only the pages that keep
 * their copy (a write must be seen, to drop it). A page without one needs
 * no protection: the clock's next PAGEMAP_SCAN reports it written, which
 * is what its REF, set now, says anyway, and protects it then. So a
 * read-modify-write miss is one fault, not a read fault and then a
 * write-protect fault (which also flushes the other CPUs' TLBs whenever
 * the evictor has a flush pending in the program's mm, as a PAGEMAP_SCAN
 * or a zap of its staging does).
 */
static long install_loaded(struct upg_handler *h, struct run *run,
			   const uint64_t *val)
{
	char *dst = region_addr(run->r, run->idx);
	size_t i, j;
	long done = 0, ret;

	for (i = 0; i < run->n; i = j) {
		bool wp = val[i] & PTE_COPY;
		size_t off = i << UPG_PAGE_SHIFT, len;

		for (j = i + 1; j < run->n && !(val[j] & PTE_COPY) == !wp; j++)
			;
		len = (j - i) << UPG_PAGE_SHIFT;
		ret = install(h->u, dst + off, h->buf + off, len, wp, NULL);
		if (ret <= 0)
			return done ? done : ret;
		done += ret;
		if (ret != (long)len)
			break;
	}
	return done;
}

/*
 * The stored copy of an evicted page is unreadable: the data is lost and
 * the page must not read as anything. Poison it (the access raises SIGBUS)
 * where the kernel can; the error is logged with the address either way.
 * This unlocks the run.
 */
static void poison_lost(struct upg_handler *h, struct run *run)
{
	char *addr = region_addr(run->r, run->idx);

	upg_uncharge(h->u, (long)run->n);
	release_run(h->u, run, 0);
	if (upg_uffd_poison(h->u->uffd, addr, UPG_PAGE_SIZE) < 0)
		upg_err("cannot poison %p (no UFFDIO_POISON): the faulting "
			"thread stays blocked",
			(void *)addr);
}

static void restore_failed(struct upg_handler *h, struct run *run)
{
	char *addr = region_addr(run->r, run->idx);

	upg_stat_inc(h->stats, UPG_STAT_fault_error);
	upg_err("stored copy of page %p is corrupt (pool handle %#llx): the "
		"page's contents are lost",
		(void *)addr, (unsigned long long)pte_payload(run->old[0]));
	poison_lost(h, run);
}

/* ------------------------------------------------------------------ */
/* Swap-in                                                             */
/* ------------------------------------------------------------------ */

/*
 * Readahead window: like fault-around, it doubles while swap faults are
 * sequential (each one a readahead hit: the previous window was used up)
 * up to UPG_SWAP_READAHEAD, and falls back to one page on a random fault
 * (a miss). Pages read ahead are installed like the faulting one.
 */
static size_t swap_window(struct upg_handler *h, struct run *run)
{
	bool seq = find_stream(run);
	unsigned w = atomic_load_explicit(&run->r->stream[run->stream].window,
					  memory_order_relaxed);

	if (seq)
		upg_stat_add(h->stats, UPG_STAT_swap_ra_hits, w > 1);
	else
		upg_stat_inc(h->stats, UPG_STAT_swap_ra_misses);
	return next_window(run, seq, h->u->p.swap_readahead);
}

/*
 * Read the run's pages into h->buf in one request (their objects follow
 * each other in the file, in at most twice as many slots: h->rbuf); if
 * that fails, the faulting page alone. Return: 0, or -errno if the
 * faulting page failed.
 */
static int read_run(struct upg_handler *h, struct run *run)
{
	struct upg *u = h->u;
	uint64_t locs[UPG_CLUSTER_MAX];
	int err = 0;

	if (!h->io) {
		err = upg_io_create((unsigned)MIN(u->p.swap_readahead, 64),
				    &h->io);
		if (!err)
			upg_io_set_poll(h->io, u->p.swap_poll_us * 1000ULL);
	}
	if (!h->rbuf && !err) {
		h->rbuf = upg_map(2 * upg_handler_buf_bytes(u));
		err = h->rbuf ? 0 : -ENOMEM;
	}
	for (size_t i = 0; i < run->n; i++)
		locs[i] = pte_payload(run->old[i]);
	if (!err)
		err = upg_swap_read(u->swap, h->io, locs, (unsigned)run->n,
				    h->buf, h->rbuf);
	if (err && run->n > 1 && h->io && h->rbuf) {
		release_run(u, run, 1);
		err = upg_swap_read(u->swap, h->io, locs, 1, h->buf, h->rbuf);
	}
	return err;
}

/*
 * A swapped page cannot be read back: its data is lost. It must not read
 * as zeros: poison it (the access raises SIGBUS), and say which page and
 * slot, and why.
 */
static void swap_failed(struct upg_handler *h, struct run *run, int err)
{
	char *addr = region_addr(run->r, run->idx);

	upg_stat_inc(h->stats, UPG_STAT_swap_read_errors);
	upg_err("swap file %s: cannot read back page %p from slot %llu "
		"(offset %u, %u bytes): %s; the page's contents are lost",
		upg_swap_name(h->u->swap), (void *)addr,
		(unsigned long long)upg_swap_loc_slot(pte_payload(run->old[0])),
		upg_swap_loc_off(pte_payload(run->old[0])),
		upg_swap_loc_len(pte_payload(run->old[0])),
		err == -EBADMSG	  ? "its data does not match its checksum"
		: err == -ENODATA ? "short read"
				  : strerror(-err));
	poison_lost(h, run);
}

/* Lock the neighbours to restore with the faulting page, and charge. */
static void gather(struct upg_handler *h, struct run *run, bool swapped)
{
	struct upg *u = h->u;

	grow_run(u, run, swapped ? swap_window(h, run) : fault_window(u, run));
	release_run(u, run, (size_t)charge_or_wait(h, (long)run->n));
}

/* The counters of a fault on evicted page @v. */
static struct tally evicted_tally(uint64_t v)
{
	if (v & PTE_SWAP)
		return (struct tally){ UPG_STAT_fault_swap,
				       UPG_STAT_swap_ra_pages, true,
				       UPG_HIST_swap };
	if (upg_pool_kind(pte_payload(v)) == UPG_POOL_SAME)
		return (struct tally){ UPG_STAT_fault_same,
				       UPG_STAT_fault_around_pool, true,
				       UPG_HIST_same };
	return (struct tally){ UPG_STAT_fault_pool, UPG_STAT_fault_around_pool,
			       true, UPG_HIST_pool };
}

static void resolve_evicted(struct upg_handler *h, struct run *run, bool write,
			    uint64_t t0)
{
	struct upg *u = h->u;
	uint64_t val[UPG_CLUSTER_MAX];
	uint64_t first = run->old[0];
	bool swapped = first & PTE_SWAP;
	struct tally t = evicted_tally(first);
	size_t n, k;
	long ret;
	int err;

	gather(h, run, swapped);
	if (!run->n) {
		upg_uffd_wake(u->uffd, region_addr(run->r, run->idx),
			      UPG_PAGE_SIZE);
		return;
	}
	n = run->n;
	err = swapped ? read_run(h, run) : load_run(h, run);
	if (err < 0 && swapped)
		return swap_failed(h, run, err);
	if (err < 0)
		return restore_failed(h, run);
	upg_uncharge(u, (long)(n - run->n));
	entries_after_load(h, run, write, val);
	before_install(h, run, &t);
	ret = install_loaded(h, run, val);
	k = settle(h, run, ret, val, &t);
	if (!k)
		return install_failed(h, region_addr(run->r, run->idx), ret);
	/* Installed pages that were not kept clean lose their stored copy. */
	for (size_t i = 0; i < k; i++)
		if (!(val[i] & PTE_COPY))
			drop_copy_later(h, run->old[i]);
	upg_stat_time(h->stats, t.hist, upg_now_ns() - t0);
}

/*
 * A fault on a page we think is resident: either a duplicate message
 * (another thread faulted on it too, or a signal restarted the access) or
 * the program discarded the page behind our back (madvise without
 * UFFD_EVENT_REMOVE): then it reads as zeros, as the kernel would have it.
 */
static void resolve_resident(struct upg_handler *h, struct run *run)
{
	struct upg *u = h->u;
	char *addr = region_addr(run->r, run->idx);
	/* A copy, not a zero page: that would refuse a uffd-wp marker. */
	long ret = upg_uffd_copy(u->uffd, addr, h->zero, UPG_PAGE_SIZE, false,
				 true);
	uint64_t val = run->old[0];

	if (ret > 0) {
		upg_page_drop_copy(u, val);
		val = pte_make(PTE_RESIDENT, PTE_REF, 0);
		upg_stat_inc(h->stats, UPG_STAT_fault_zero);
	} else {
		upg_stat_inc(h->stats, UPG_STAT_fault_dup);
		upg_uffd_wake(u->uffd, addr, UPG_PAGE_SIZE);
	}
	upg_page_publish(u, run->r, run->idx, PTE_RESIDENT, val);
}

/* ------------------------------------------------------------------ */
/* Messages                                                            */
/* ------------------------------------------------------------------ */

/* A fault outside every region (released meanwhile): let it zero-fill. */
static void stray_fault(struct upg_handler *h, char *addr)
{
	if (upg_uffd_copy(h->u->uffd, addr, h->zero, UPG_PAGE_SIZE, false,
			  true) < 0)
		upg_uffd_wake(h->u->uffd, addr, UPG_PAGE_SIZE);
}

/*
 * Write-protect fault: only the copy fallback protects pages, while it
 * copies them out under the page lock. If the lock is still held the
 * holder wakes the writer when done; otherwise the eviction is over and
 * the writer can go again (it then takes a missing-page fault).
 */
static void wp_fault(struct upg_handler *h, struct upg_region *r, size_t idx)
{
	char *addr = region_addr(r, idx);

	if (pte_mark_waiting(&r->pte[idx])) {
		upg_stat_inc(h->stats, UPG_STAT_fault_deferred);
		return;
	}
	upg_stat_inc(h->stats, UPG_STAT_fault_wp);
	if (pte_state(atomic_load(&r->pte[idx])) == PTE_RESIDENT)
		upg_uffd_writeprotect(h->u->uffd, addr, UPG_PAGE_SIZE, false);
	else
		upg_uffd_wake(h->u->uffd, addr, UPG_PAGE_SIZE);
}

/*
 * The copy fallback reads managed memory from the evictor thread. If the
 * program zapped such a page meanwhile, the evictor itself faults on a page
 * it holds locked; a zero page is then the right contents.
 */
static bool evictor_self_fault(struct upg_handler *h, char *addr, uint32_t tid)
{
	if (!tid || (pid_t)tid != atomic_load(&h->u->evictor_tid))
		return false;
	upg_uffd_copy(h->u->uffd, addr, h->zero, UPG_PAGE_SIZE, false, true);
	return true;
}

static void on_fault(struct upg_handler *h, const struct uffd_msg *m)
{
	char *addr =
		(char *)(uintptr_t)(m->arg.pagefault.address & UPG_PAGE_MASK);
	uint64_t flags = m->arg.pagefault.flags;
	bool write = flags & UFFD_PAGEFAULT_FLAG_WRITE;
	struct upg_region *r = upg_region_find(h->u, addr);
	uint64_t t0 = upg_now_ns();
	struct run run;
	size_t idx;

	atomic_fetch_add_explicit(&h->served, 1, memory_order_relaxed);
	upg_handler_sample(h, m->arg.pagefault.feat.ptid);
	if (!r)
		return stray_fault(h, addr);
	idx = (size_t)(addr - r->start) >> UPG_PAGE_SHIFT;
	if (flags & UFFD_PAGEFAULT_FLAG_WP)
		return wp_fault(h, r, idx);
	if (write)
		upg_stat_inc(h->stats, UPG_STAT_fault_write);
	run = (struct run){ .r = r, .idx = idx, .n = 1 };
	while (!pte_trylock(&r->pte[idx], &run.old[0])) {
		if (pte_mark_waiting(&r->pte[idx])) {
			if (!evictor_self_fault(h, addr,
						m->arg.pagefault.feat.ptid))
				upg_stat_inc(h->stats, UPG_STAT_fault_deferred);
			return;
		}
	}
	switch (pte_state(run.old[0])) {
	case PTE_UNTOUCHED:
		resolve_zero(h, &run, write, t0);
		break;
	case PTE_EVICTED:
		resolve_evicted(h, &run, write, t0);
		break;
	default:
		resolve_resident(h, &run);
	}
}

/* Forget one page the program discarded (see on_remove()). */
static void zap_page(struct upg *u, struct upg_region *r, size_t idx)
{
	upg_pte_t *p = &r->pte[idx];
	uint64_t v;

	for (;;) {
		if (pte_trylock(p, &v)) {
			if (pte_state(v) == PTE_RESIDENT)
				upg_uncharge(u, 1);
			upg_page_drop_copy(u, v);
			upg_page_publish(u, r, idx, pte_state(v),
					 PTE_UNTOUCHED);
			return;
		}
		v = atomic_load(p);
		if ((v & PTE_LOCK) &&
		    atomic_compare_exchange_weak(p, &v, v | PTE_ZAP))
			return;
	}
}

static void zap_range(struct upg *u, struct upg_region *r, char *s, char *e)
{
	size_t idx = (size_t)(MAX(s, r->start) - r->start) >> UPG_PAGE_SHIFT;
	size_t end = (size_t)(MIN(e, r->start + r->len) - r->start) >>
		     UPG_PAGE_SHIFT;

	while (idx < end) {
		size_t c = idx >> UPG_CHUNK_SHIFT;
		size_t stop = MIN(end, (c + 1) << UPG_CHUNK_SHIFT);

		if (!atomic_load_explicit(&r->chunk_used[c],
					  memory_order_relaxed)) {
			idx = stop;
			continue;
		}
		for (; idx < stop; idx++)
			if (atomic_load_explicit(&r->pte[idx],
						 memory_order_relaxed))
				zap_page(u, r, idx);
	}
}

/* Whether [s, e) is a zap of the evictor's own; consumes the record. */
static bool consume_self_zap(struct upg *u, uintptr_t s, uintptr_t e)
{
	for (unsigned i = 0; i < UPG_SELF_ZAP_RING; i++) {
		uintptr_t start = s;

		if (atomic_load(&u->self_zap[i].end) == e &&
		    atomic_compare_exchange_strong(&u->self_zap[i].start,
						   &start, 0))
			return true;
	}
	return false;
}

/*
 * UFFD_EVENT_REMOVE: the program called madvise(MADV_DONTNEED/FREE) on
 * managed memory; the kernel zaps the range once we have read the event.
 * Every page in it reads as zeros afterwards, so stored copies are dead.
 * The copy fallback's own zaps (self_zap ring) are the evictor's business.
 */
static void on_remove(struct upg_handler *h, const struct uffd_msg *m)
{
	struct upg *u = h->u;
	char *s = (char *)(uintptr_t)m->arg.remove.start;
	char *e = (char *)(uintptr_t)m->arg.remove.end;

	if (consume_self_zap(u, (uintptr_t)s, (uintptr_t)e))
		return;
	upg_stat_inc(h->stats, UPG_STAT_remove_events);
	for (size_t i = 0; i < u->nregions; i++) {
		struct upg_region *r = u->regions[i];

		if (s < r->start + r->len && e > r->start)
			zap_range(u, r, s, e);
	}
	upg_compact_kick(u);
}

void upg_fault_dispatch(struct upg_handler *h, const struct uffd_msg *m)
{
	switch (m->event) {
	case UFFD_EVENT_PAGEFAULT:
		on_fault(h, m);
		break;
	case UFFD_EVENT_REMOVE:
		on_remove(h, m);
		break;
	default:
		upg_dbg("ignored userfaultfd event %u", m->event);
	}
}
