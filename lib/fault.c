/* SPDX-License-Identifier: MIT */
/*
 * Fault handling: one handler thread per CPU, pinned, blocking in read(2)
 * on the runtime's (blocking) userfaultfd.
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
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sched.h>
#include <signal.h>
#include <string.h>
#include <linux/futex.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "runtime.h"

#define MSG_BATCH 16
#define BUDGET_WAIT_NS 1000000ULL
#define PARK_WINDOW 1024    /* faults between two looks at our share */
#define PARK_SHARE 32	    /* park below 1/32 of the faults */
#define PARK_NS 50000000ULL /* then look again after 50 ms */
#define SAMPLE_EVERY 256    /* faults between two faulter-CPU samples */

static void sample_faulter(struct upg_handler *h, uint32_t tid);

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
 * else a new one (replacing streams round-robin). Sets run->stream.
 * Return: whether the fault continues a stream.
 */
static bool find_stream(struct run *run)
{
	struct upg_region *r = run->r;

	for (unsigned i = 0; i < UPG_STREAMS; i++) {
		if (atomic_load_explicit(&r->stream[i].last,
					 memory_order_relaxed) +
			    1 ==
		    run->idx) {
			run->stream = i;
			return true;
		}
	}
	run->stream = atomic_fetch_add_explicit(&r->stream_next, 1,
						memory_order_relaxed) %
		      UPG_STREAMS;
	atomic_store_explicit(&r->stream[run->stream].window, 1,
			      memory_order_relaxed);
	return false;
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

/*
 * Note that @run's stream has reached its page @k - 1. Before install():
 * the install wakes the thread, which may fault on the next page before
 * the handler returns from the ioctl; a stream noted only afterwards
 * would then look random and restart at one page.
 */
static void stream_reach(struct run *run, size_t k)
{
	atomic_store_explicit(&run->r->stream[run->stream].last,
			      run->idx + k - 1, memory_order_release);
}

/*
 * After install(): keep pages [0, k) with their new entries, unlock the
 * rest unchanged, and settle the charge. Return: k.
 */
static size_t settle(struct upg_handler *h, struct run *run, long ret,
		     const uint64_t *val)
{
	struct upg *u = h->u;
	size_t k = ret > 0 ? (size_t)ret >> UPG_PAGE_SHIFT : 0;
	size_t n = run->n;

	for (size_t i = 0; i < k; i++)
		upg_page_publish(u, run->r, run->idx + i,
				 pte_state(run->old[i]), val[i]);
	release_run(u, run, k);
	upg_uncharge(u, (long)(n - k));
	if (k && k < n)
		stream_reach(run, k);
	return k;
}

/*
 * Count a fault by its kind @id before install() wakes the thread: once
 * the access has completed, the program's statistics include it, however
 * long the handler then waits for a CPU (an idle one may wait long).
 */
static void count_fault(struct upg_handler *h, enum upg_stat_id id)
{
	upg_stat_inc(h->stats, id);
}

/* ... and take it back when nothing could be installed. */
static void uncount_fault(struct upg_handler *h, enum upg_stat_id id)
{
	upg_stat_add(h->stats, id, (uint64_t)-1);
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

static void resolve_zero(struct upg_handler *h, struct run *run, bool write)
{
	struct upg *u = h->u;
	uint64_t val[UPG_CLUSTER_MAX];
	char *dst = region_addr(run->r, run->idx);
	long got, ret;
	size_t k;

	grow_run(u, run, fault_window(u, run));
	got = charge_or_wait(h, (long)run->n);
	release_run(u, run, (size_t)got);
	if (!got)
		return install_failed(h, dst, -EAGAIN);
	for (size_t i = 0; i < run->n; i++)
		val[i] = pte_make(PTE_RESIDENT, PTE_REF, 0);
	stream_reach(run, run->n);
	count_fault(h, UPG_STAT_fault_zero);
	/* A write needs a private page anyway; a read can share the zero page. */
	ret = install(u, dst, write ? h->zero : NULL, run->n << UPG_PAGE_SHIFT,
		      false, h->zero);
	k = settle(h, run, ret, val);
	if (!k) {
		uncount_fault(h, UPG_STAT_fault_zero);
		return install_failed(h, dst, ret);
	}
	upg_stat_add(h->stats, UPG_STAT_fault_around_zero, k - 1);
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

static void count_restore(struct upg_handler *h, uint64_t first, size_t k,
			  uint64_t t0)
{
	bool same = upg_pool_kind(pte_payload(first)) == UPG_POOL_SAME;

	upg_stat_add(h->stats, UPG_STAT_refault, k);
	upg_stat_add(h->stats, UPG_STAT_fault_around_pool, k - 1);
	upg_stat_time(h->stats, same ? UPG_HIST_same : UPG_HIST_pool,
		      upg_now_ns() - t0);
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

/* Bytes of h->buf: the largest run. */
static size_t buf_bytes(struct upg *u)
{
	return (size_t)MAX(u->p.cluster, u->p.swap_readahead) << UPG_PAGE_SHIFT;
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
		h->rbuf = upg_map(2 * buf_bytes(u));
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

static void count_swapin(struct upg_handler *h, size_t k, uint64_t t0)
{
	upg_stat_add(h->stats, UPG_STAT_refault, k);
	upg_stat_add(h->stats, UPG_STAT_swap_ra_pages, k - 1);
	upg_stat_time(h->stats, UPG_HIST_swap, upg_now_ns() - t0);
}

/* Lock the neighbours to restore with the faulting page, and charge. */
static void gather(struct upg_handler *h, struct run *run, bool swapped)
{
	struct upg *u = h->u;

	grow_run(u, run, swapped ? swap_window(h, run) : fault_window(u, run));
	release_run(u, run, (size_t)charge_or_wait(h, (long)run->n));
}

/* The counter of a fault on evicted page @v. */
static enum upg_stat_id fault_kind(uint64_t v)
{
	if (v & PTE_SWAP)
		return UPG_STAT_fault_swap;
	if (upg_pool_kind(pte_payload(v)) == UPG_POOL_SAME)
		return UPG_STAT_fault_same;
	return UPG_STAT_fault_pool;
}

static void resolve_evicted(struct upg_handler *h, struct run *run, bool write,
			    uint64_t t0)
{
	struct upg *u = h->u;
	uint64_t val[UPG_CLUSTER_MAX];
	uint64_t first = run->old[0];
	bool swapped = first & PTE_SWAP;
	enum upg_stat_id kind = fault_kind(first);
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
	stream_reach(run, run->n);
	count_fault(h, kind);
	ret = install_loaded(h, run, val);
	k = settle(h, run, ret, val);
	if (!k) {
		uncount_fault(h, kind);
		return install_failed(h, region_addr(run->r, run->idx), ret);
	}
	/* Installed pages that were not kept clean lose their stored copy. */
	for (size_t i = 0; i < k; i++)
		if (!(val[i] & PTE_COPY))
			drop_copy_later(h, run->old[i]);
	if (swapped)
		count_swapin(h, k, t0);
	else
		count_restore(h, first, k, t0);
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
	sample_faulter(h, m->arg.pagefault.feat.ptid);
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
		resolve_zero(h, &run, write);
		upg_stat_time(h->stats, UPG_HIST_zero, upg_now_ns() - t0);
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

static void dispatch(struct upg_handler *h, const struct uffd_msg *m)
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

/* ------------------------------------------------------------------ */
/* Parking idle handlers                                               */
/* ------------------------------------------------------------------ */

/*
 * Every fault wakes every handler blocked in read() on the userfaultfd (its
 * wait queue is not exclusive); the handler on the faulter's CPU wins and
 * the others go back to sleep inside the kernel, having preempted whatever
 * ran on their CPU (the evictor, another program thread) for nothing. A
 * handler that serves almost no faults therefore parks: it waits on a
 * condition variable instead of reading, for 50 ms at a time. Active
 * handlers sample the CPU of faulting threads and wake the parked handler
 * of that CPU at once. At least one handler always reads.
 */

static uint64_t total_served(struct upg *u)
{
	uint64_t t = 0;

	for (unsigned i = 0; i < u->nhandlers; i++)
		t += atomic_load_explicit(&u->handlers[i].served,
					  memory_order_relaxed);
	return t;
}

static void park(struct upg_handler *h)
{
	struct upg *u = h->u;
	struct timespec ts;

	upg_deadline(&ts, PARK_NS);
	pthread_mutex_lock(&u->park_lock);
	atomic_store(&h->parked, true);
	while (atomic_load(&h->parked) && !atomic_load(&u->stopping))
		if (pthread_cond_timedwait(&u->park_cond, &u->park_lock, &ts))
			break;
	atomic_store(&h->parked, false);
	atomic_fetch_add(&u->active_handlers, 1);
	pthread_mutex_unlock(&u->park_lock);
	h->seen_total = total_served(u);
	h->seen_served = atomic_load(&h->served);
}

/* After handling messages: park if our share of faults is tiny. */
static void maybe_park(struct upg_handler *h)
{
	struct upg *u = h->u;
	uint64_t total = total_served(u), dt = total - h->seen_total;
	uint64_t mine = atomic_load(&h->served) - h->seen_served;
	unsigned active = atomic_load(&u->active_handlers);

	if (dt < PARK_WINDOW)
		return;
	h->seen_total = total;
	h->seen_served += mine;
	if (mine * PARK_SHARE >= dt || active < 2 ||
	    !atomic_compare_exchange_strong(&u->active_handlers, &active,
					    active - 1))
		return;
	park(h);
}

/* The CPU a thread of ours last ran on, from /proc; -1 if unknown. */
static int thread_cpu(uint32_t tid)
{
	char path[64], buf[512], *p;
	ssize_t n;
	int fd, field = 2;

	snprintf(path, sizeof(path), "/proc/self/task/%u/stat", tid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return -1;
	buf[n] = 0;
	p = strrchr(buf, ')'); /* the command name may hold anything */
	while (p && *p && field < 39)
		if (*p++ == ' ')
			field++;
	return p && *p ? atoi(p) : -1;
}

/* Now and then: is the faulting thread on a parked handler's CPU? */
static void sample_faulter(struct upg_handler *h, uint32_t tid)
{
	struct upg *u = h->u;
	int cpu;

	if (atomic_load_explicit(&h->served, memory_order_relaxed) %
		    SAMPLE_EVERY ||
	    !tid || atomic_load(&u->active_handlers) == u->nhandlers)
		return;
	cpu = thread_cpu(tid);
	for (unsigned i = 0; i < u->nhandlers && cpu >= 0; i++) {
		if (u->handlers[i].cpu != cpu ||
		    !atomic_load(&u->handlers[i].parked))
			continue;
		pthread_mutex_lock(&u->park_lock);
		atomic_store(&u->handlers[i].parked, false);
		pthread_cond_broadcast(&u->park_cond);
		pthread_mutex_unlock(&u->park_lock);
	}
}

/* ------------------------------------------------------------------ */
/* Handler priority: the guard (UPG_IDLE_HANDLERS=auto)                */
/* ------------------------------------------------------------------ */

/*
 * Every fault wakes every handler reading the userfaultfd. At normal
 * priority the one on another CPU preempts whatever runs there, only to
 * find the message taken: with a faulting thread on each CPU that halves
 * their gain. An idle (SCHED_IDLE) handler runs only when its CPU has
 * nothing else to do, which is exactly when its own CPU's faulting thread
 * waits; the price is that it starves while other work keeps its CPU busy
 * (another program, more runnable threads than CPUs, the evictor), and the
 * program's faults wait with it.
 *
 * So in auto mode the handlers run idle while a normal-priority guard
 * thread checks, every GUARD_TICK_NS while faults flow, how long an idle
 * thread waits for each handler's CPU: it wakes a canary, an idle thread
 * pinned there, and reads at the next tick when it ran. A canary that has
 * not run after a whole tick, or ran late (GUARD_LATE_NS) twice in a row,
 * means idle handlers may starve there. Busy CPUs are not proof: the
 * program's own faulting threads keep them busy too, and those wait for
 * the handlers, which then serve them as fast idle (faster: a raised
 * handler woken for the other CPU's fault preempts the evictor there; two
 * threads on two CPUs ran 1.2-1.3x as fast idle). So the guard tries both:
 * GUARD_TRIAL_NS raised, then as long idle, and compares the faults served.
 * If idle serves 9/10 as many, the handlers stay idle and the canaries are
 * not heeded for a quiet time (1 s, doubling while idle keeps winning, up
 * to 64 s); otherwise every handler is raised to normal priority for a
 * hold time that doubles each time raised wins again, so a machine that
 * stays busy with other work pays a few tenths of a second a minute at
 * most. Raising a thread out of SCHED_IDLE needs CAP_SYS_NICE (or
 * RLIMIT_NICE); without it auto means normal priority.
 */
#define GUARD_TICK_NS 4000000ULL	/* look every 4 ms while faults flow */
#define GUARD_QUIET_NS 20000000ULL	/* every 20 ms when none do */
#define GUARD_LATE_NS 250000ULL		/* an idle thread waited too long */
#define GUARD_HOLD_MIN_NS 1000000000ULL /* normal for 1 s at first */
#define GUARD_HOLD_MAX_NS 64000000000ULL
#define GUARD_TRIAL_NS 50000000ULL /* each priority's trial: 50 ms */
#define GUARD_WIN_NUM 9		   /* idle wins at 9/10 of the raised rate */
#define GUARD_WIN_DEN 10

struct upg_canary {
	struct upg *u;
	pthread_t thread;
	int cpu;
	_Atomic uint32_t sent;	   /* probes sent (futex word) */
	_Atomic uint32_t answered; /* the last probe it ran for */
	_Atomic uint64_t sent_ns;  /* when the last probe was sent */
	_Atomic uint64_t late_ns;  /* how long it waited for the CPU */
	unsigned late;		   /* guard: late answers in a row */
};

static int set_policy(pid_t tid, int policy)
{
	struct sched_param sp = { 0 };

	return sched_setscheduler(tid, policy, &sp) ? -errno : 0;
}

/* Every handler to @policy; 0, or the first error. */
static int handlers_policy(struct upg *u, int policy)
{
	int err = 0, e;

	for (unsigned i = 0; i < u->nhandlers; i++) {
		e = set_policy(atomic_load(&u->handlers[i].tid), policy);
		if (e && !err)
			err = e;
	}
	return err;
}

static void *canary_main(void *arg)
{
	struct upg_canary *c = arg;
	cpu_set_t set;
	uint32_t s;

	upg_internal_enter();
	pthread_setname_np(pthread_self(), "upg-canary");
	CPU_ZERO(&set);
	CPU_SET(c->cpu, &set);
	pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
	set_policy(0, SCHED_IDLE);
	while (!atomic_load(&c->u->stopping)) {
		s = atomic_load(&c->sent);
		if (s != atomic_load(&c->answered)) {
			atomic_store(&c->late_ns,
				     upg_now_ns() - atomic_load(&c->sent_ns));
			atomic_store(&c->answered, s);
		}
		upg_futex_wait(&c->sent, s, NULL);
	}
	return NULL;
}

static void canary_probe(struct upg_canary *c)
{
	atomic_store(&c->sent_ns, upg_now_ns());
	atomic_fetch_add(&c->sent, 1);
	upg_futex_wake(&c->sent);
}

static bool faults_waiting(struct upg *u)
{
	struct pollfd pfd = { .fd = u->uffd, .events = POLLIN };

	return poll(&pfd, 1, 0) > 0 && (pfd.revents & POLLIN);
}

/* The answers to the last probes: does an idle thread starve somewhere? */
static bool starved(struct upg_canary *c, unsigned n)
{
	bool bad = false;

	for (unsigned i = 0; i < n; i++) {
		if (atomic_load(&c[i].answered) != atomic_load(&c[i].sent))
			c[i].late = 2; /* not run for a whole tick */
		else if (atomic_load(&c[i].late_ns) > GUARD_LATE_NS)
			c[i].late++;
		else
			c[i].late = 0;
		bad |= c[i].late >= 2;
	}
	return bad;
}

/* Sleep @ns or until the runtime stops; false when it stops. */
static bool guard_sleep(struct upg *u, uint64_t ns)
{
	struct timespec ts;

	upg_deadline(&ts, ns);
	pthread_mutex_lock(&u->guard_lock);
	while (!atomic_load(&u->stopping))
		if (pthread_cond_timedwait(&u->guard_cond, &u->guard_lock, &ts))
			break;
	pthread_mutex_unlock(&u->guard_lock);
	return !atomic_load(&u->stopping);
}

/* One canary per handler CPU; false if none could start. */
static bool canaries_start(struct upg *u)
{
	unsigned n = 0;

	for (unsigned i = 0; i < u->nhandlers; i++) {
		struct upg_canary *c = &u->canaries[n];
		bool dup = u->handlers[i].cpu < 0;

		for (unsigned j = 0; j < n && !dup; j++)
			dup = u->canaries[j].cpu == u->handlers[i].cpu;
		if (dup)
			continue;
		*c = (struct upg_canary){ .u = u, .cpu = u->handlers[i].cpu };
		if (pthread_create(&c->thread, NULL, canary_main, c))
			break;
		pthread_setname_np(c->thread, "upg-canary"); /* named at once */
		n++;
	}
	u->ncanaries = n;
	return n > 0;
}

static void canaries_stop(struct upg *u)
{
	for (unsigned i = 0; i < u->ncanaries; i++) {
		struct upg_canary *c = &u->canaries[i];

		atomic_fetch_add(&c->sent, 1);
		upg_futex_wake(&c->sent);
		pthread_join(c->thread, NULL);
	}
	u->ncanaries = 0;
}

/*
 * Whether idle handlers could be raised again: a thread may always lower
 * itself to SCHED_IDLE, but leaving it takes CAP_SYS_NICE or RLIMIT_NICE.
 * Tried on the guard itself.
 */
static bool can_raise(void)
{
	return !set_policy(0, SCHED_IDLE) && !set_policy(0, SCHED_OTHER);
}

/*
 * Faults served per second over the next @ns (the guard sleeps meanwhile);
 * -1 if the runtime stops.
 */
static double served_rate(struct upg *u, uint64_t ns)
{
	uint64_t t0 = upg_now_ns(), s0 = total_served(u);

	if (!guard_sleep(u, ns))
		return -1;
	return (double)(total_served(u) - s0) * 1e9 /
	       (double)MAX(upg_now_ns() - t0, 1);
}

static void guard_loop(struct upg *u)
{
	uint64_t hold = GUARD_HOLD_MIN_NS, quiet = 0, quiet_until = 0;
	uint64_t served = total_served(u), now_served;
	double raised, idle;
	bool flowing = false;

	handlers_policy(u, SCHED_IDLE);
	while (guard_sleep(u, flowing ? GUARD_TICK_NS : GUARD_QUIET_NS)) {
		now_served = total_served(u);
		if (flowing && upg_now_ns() >= quiet_until &&
		    starved(u->canaries, u->ncanaries)) {
			handlers_policy(u, SCHED_OTHER);
			raised = served_rate(u, GUARD_TRIAL_NS);
			handlers_policy(u, SCHED_IDLE);
			idle = served_rate(u, GUARD_TRIAL_NS);
			if (raised < 0 || idle < 0)
				return;
			upg_stat_inc(upg_guard_stats(u),
				     UPG_STAT_handler_trials);
			upg_dbg("CPUs busy: %.0f faults/s raised, %.0f idle",
				raised, idle);
			if (idle * GUARD_WIN_DEN >= raised * GUARD_WIN_NUM) {
				/* The busy CPUs run threads that wait for our
				 * faults: idle handlers serve them as fast. */
				quiet = MIN(MAX(2 * quiet, GUARD_HOLD_MIN_NS),
					    GUARD_HOLD_MAX_NS);
				quiet_until = upg_now_ns() + quiet;
				hold = GUARD_HOLD_MIN_NS;
			} else {
				quiet = quiet_until = 0;
				handlers_policy(u, SCHED_OTHER);
				upg_stat_inc(upg_guard_stats(u),
					     UPG_STAT_handler_raises);
				upg_dbg("fault handlers at normal priority "
					"for %llu ms",
					(unsigned long long)(hold / 1000000));
				if (!guard_sleep(u, hold))
					return;
				handlers_policy(u, SCHED_IDLE);
				hold = MIN(2 * hold, GUARD_HOLD_MAX_NS);
			}
			for (unsigned i = 0; i < u->ncanaries; i++)
				u->canaries[i].late = 0;
			now_served = total_served(u);
		}
		/*
		 * Probe only while faults flow (served, or waiting to be
		 * read: starved handlers serve none): idle handlers matter
		 * then.
		 */
		flowing = now_served != served || faults_waiting(u);
		served = now_served;
		for (unsigned i = 0; flowing && i < u->ncanaries; i++)
			canary_probe(&u->canaries[i]);
	}
}

static void *guard_main(void *arg)
{
	struct upg *u = arg;

	upg_internal_enter();
	pthread_setname_np(pthread_self(), "upg-guard");
	for (unsigned i = 0; i < u->nhandlers; i++)
		while (!atomic_load(&u->handlers[i].tid))
			if (!guard_sleep(u, 1000000))
				return NULL;
	if (!can_raise()) {
		upg_info("fault handlers at normal priority: leaving "
			 "SCHED_IDLE needs CAP_SYS_NICE or RLIMIT_NICE");
		return NULL;
	}
	if (!canaries_start(u)) {
		upg_warn("fault handlers at normal priority: cannot start "
			 "their canary threads");
		return NULL;
	}
	guard_loop(u);
	canaries_stop(u);
	return NULL;
}

static void guard_start(struct upg *u)
{
	int err;

	if (u->p.idle_handlers != UPG_IDLE_AUTO || u->nhandlers < 2)
		return;
	if (!u->canaries) /* a fork child has its parent's */
		u->canaries = upg_map(u->nhandlers * sizeof(*u->canaries));
	if (!u->canaries) {
		upg_warn("fault handlers stay at normal priority: %s",
			 "out of memory");
		return;
	}
	err = pthread_create(&u->guard, NULL, guard_main, u);
	if (err) {
		upg_warn("fault handlers stay at normal priority: cannot "
			 "start their guard thread: %s",
			 strerror(err));
		return;
	}
	pthread_setname_np(u->guard, "upg-guard"); /* named at once */
	u->guard_started = true;
}

static void guard_stop(struct upg *u)
{
	if (!u->guard_started)
		return;
	pthread_mutex_lock(&u->guard_lock);
	pthread_cond_broadcast(&u->guard_cond);
	pthread_mutex_unlock(&u->guard_lock);
	pthread_join(u->guard, NULL);
	u->guard_started = false;
}

/* ------------------------------------------------------------------ */
/* Threads                                                             */
/* ------------------------------------------------------------------ */

/*
 * Pin to our CPU and block every signal: the program's handlers must not
 * run on our threads, and a signal must not interrupt a fault resolution.
 */
static void handler_setup(struct upg_handler *h)
{
	sigset_t all;
	cpu_set_t set;
	char name[16];

	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, NULL);
	if (h->cpu >= 0) {
		CPU_ZERO(&set);
		CPU_SET(h->cpu, &set);
		pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
	}
	atomic_store(&h->tid, (pid_t)syscall(SYS_gettid));
	if (h->u->p.idle_handlers == UPG_IDLE_ON)
		set_policy(0, SCHED_IDLE); /* AUTO: the guard sets it */
	snprintf(name, sizeof(name), "upg-fault/%d", h->cpu);
	pthread_setname_np(pthread_self(), name);
	pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, NULL);
}

/* Blocking read; the only point where upg_fault_stop() may cancel us. */
static ssize_t read_msgs(struct upg_handler *h, struct uffd_msg *m)
{
	ssize_t n;

	pthread_setcancelstate(PTHREAD_CANCEL_ENABLE, NULL);
	n = read(h->u->uffd, m, sizeof(*m) * MSG_BATCH);
	pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, NULL);
	return n;
}

static void *handler_main(void *arg)
{
	struct upg_handler *h = arg;
	struct uffd_msg m[MSG_BATCH];
	ssize_t n;

	upg_internal_enter(); /* for good: this thread is the runtime's */
	handler_setup(h);
	while (!atomic_load_explicit(&h->u->stopping, memory_order_relaxed)) {
		n = read_msgs(h, m);
		if (n <= 0) {
			if (n < 0 && errno != EINTR && errno != EAGAIN) {
				upg_err("reading userfaultfd: %s",
					strerror(errno));
				break;
			}
			continue;
		}
		pthread_rwlock_rdlock(&h->u->regions_lock);
		for (ssize_t i = 0; i < n / (ssize_t)sizeof(*m); i++)
			dispatch(h, &m[i]);
		pthread_rwlock_unlock(&h->u->regions_lock);
		maybe_park(h);
	}
	return NULL;
}

/* The CPUs we may run on, in order; handlers are pinned one per CPU. */
static unsigned allowed_cpus(int *cpus, unsigned max)
{
	cpu_set_t set;
	unsigned n = 0;

	if (sched_getaffinity(0, sizeof(set), &set) < 0)
		return 0;
	for (int c = 0; c < CPU_SETSIZE && n < max; c++)
		if (CPU_ISSET(c, &set))
			cpus[n++] = c;
	return n;
}

static int handler_init(struct upg *u, struct upg_handler *h, int cpu)
{
	size_t len = (size_t)u->p.cluster << UPG_PAGE_SHIFT;

	h->u = u;
	h->cpu = cpu;
	h->buf = upg_map(buf_bytes(u));
	h->zero = upg_map(len);
	h->dropped = upg_map(UPG_DROP_RING * sizeof(*h->dropped));
	return h->buf && h->zero && h->dropped ? 0 : -ENOMEM;
}

static int start_handlers(struct upg *u)
{
	int err;

	atomic_store(&u->active_handlers, u->nhandlers);
	for (unsigned i = 0; i < u->nhandlers; i++) {
		struct upg_handler *h = &u->handlers[i];

		err = -pthread_create(&h->thread, NULL, handler_main, h);
		if (err)
			return upg_seterr(err, "cannot start fault handler: %s",
					  strerror(-err));
		h->started = true;
	}
	guard_start(u);
	return 0;
}

int upg_fault_start(struct upg *u)
{
	int cpus[1024];
	unsigned ncpu = allowed_cpus(cpus, ARRAY_SIZE(cpus));
	int err;

	for (unsigned i = 0; i < u->nhandlers; i++) {
		struct upg_handler *h = &u->handlers[i];

		err = handler_init(u, h, ncpu ? cpus[i % ncpu] : -1);
		if (err)
			return err;
		h->stats = &u->shards[i];
	}
	return start_handlers(u);
}

/* In a fork child: the handler threads did not survive fork(). */
int upg_fault_restart(struct upg *u)
{
	u->guard_started = false; /* nor did the guard */
	for (unsigned i = 0; i < u->nhandlers; i++) {
		struct upg_handler *h = &u->handlers[i];

		h->started = false;
		atomic_store(&h->parked, false);
		atomic_store(&h->tid, 0);
		upg_io_destroy(h->io); /* shared with the parent: made anew */
		h->io = NULL;
		h->seen_total = total_served(u);
		h->seen_served = atomic_load(&h->served);
	}
	return start_handlers(u);
}

void upg_fault_stop(struct upg *u)
{
	atomic_store(&u->stopping, true);
	guard_stop(u);
	if (u->canaries)
		upg_unmap(u->canaries, u->nhandlers * sizeof(*u->canaries));
	u->canaries = NULL;
	pthread_mutex_lock(&u->park_lock);
	pthread_cond_broadcast(&u->park_cond);
	pthread_mutex_unlock(&u->park_lock);
	for (unsigned i = 0; i < u->nhandlers; i++) {
		struct upg_handler *h = &u->handlers[i];

		if (h->started) {
			pthread_cancel(h->thread);
			pthread_join(h->thread, NULL);
		}
		upg_unmap(h->buf, buf_bytes(u));
		if (h->rbuf)
			upg_unmap(h->rbuf, 2 * buf_bytes(u));
		upg_io_destroy(h->io);
		upg_unmap(h->zero, (size_t)u->p.cluster << UPG_PAGE_SHIFT);
	}
	upg_free_dropped(u); /* (the evictor has stopped) */
	for (unsigned i = 0; i < u->nhandlers; i++) {
		upg_unmap(u->handlers[i].dropped,
			  UPG_DROP_RING * sizeof(*u->handlers[i].dropped));
		u->handlers[i].dropped = NULL;
	}
}
