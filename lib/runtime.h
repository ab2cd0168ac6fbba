/* SPDX-License-Identifier: MIT */
/*
 * The runtime object shared by the fault handlers (handler.c, fault.c),
 * the evictor (evict.c) and the API (runtime.c).
 *
 * Lock order: regions_lock (rwlock) -> page locks (PTE_LOCK, in address
 * order within a batch) -> pool class locks. ev_lock only guards the
 * evictor's sleep and is never held with the others.
 *
 * Budget: `resident` counts pages installed in managed memory plus pages
 * parked in the evictor's staging area. A page is charged before it is
 * installed, so resident never exceeds budget, except while `overrun` is
 * set (the pool is full and nothing can be evicted: we let the program run
 * rather than deadlock, and count budget_overruns).
 */
#ifndef UPG_RUNTIME_H
#define UPG_RUNTIME_H

#include <pthread.h>
#include <stdatomic.h>
#include <sys/types.h>

#include "upager.h"
#include "common.h"
#include "pool.h"
#include "region.h"
#include "swap.h"
#include "testing.h"
#include "stats.h"
#include "uffd.h"

#define UPG_EVICT_BATCH 128
#define UPG_CLUSTER_MAX 256
#define UPG_SELF_ZAP_RING 64
#define UPG_WB_BATCH 256   /* pages per write-back batch: ~680 KiB packed */
#define UPG_DROP_RING 1024 /* handles a handler may leave to the evictor */
#define UPG_WB_DEPTH 8	   /* write-back batches in flight, at most */

struct upg_wb;
struct upg_store_item;

struct upg_handler {
	struct upg *u;
	pthread_t thread;
	bool started;
	int cpu;
	_Atomic uint64_t served; /* fault messages handled */
	_Atomic bool parked;	 /* sleeping, not reading: see handler.c */
	_Atomic pid_t tid;	 /* for the guard; 0 until the thread runs */
	uint64_t seen_total;	 /* all handlers' faults at the last check */
	uint64_t seen_served;	 /* ours at the last check */
	struct upg_stat_shard *stats;
	struct upg_io *io; /* swap-in ring, made on first use */
	char *buf;	   /* max(cluster, readahead) pages: restore target */
	char *rbuf;	   /* twice buf, made on first use: swap reads */
	char *zero;	   /* cluster pages of zeros, never written */
	/*
	 * Pool objects this handler dropped, for the evictor to free
	 * (upg_free_dropped()): single producer, single consumer.
	 */
	uint64_t *dropped;	    /* UPG_DROP_RING handles */
	_Atomic unsigned drop_head; /* next to write: the handler's */
	_Atomic unsigned drop_tail; /* next to free: the evictor's */
};

struct upg {
	struct upg_params p;
	struct upg_uffd_caps caps;
	int uffd;
	int pagemap_fd;
	struct upg_pool *pool;
	struct upg_swap *swap; /* NULL: no swap tier */

	pthread_rwlock_t regions_lock;
	struct upg_region **regions; /* sorted by address */
	size_t nregions;
	size_t regions_cap;

	_Atomic long resident;
	_Atomic long resident_peak;
	_Atomic long budget;   /* pages */
	_Atomic long low_gap;  /* evictor wakes below this much headroom */
	_Atomic long high_gap; /* and evicts until this much is free */
	_Atomic bool overrun;
	_Atomic bool stopping;

	/* Evictor: sleeps on ev_wake; API callers wait for it on ev_done. */
	pthread_t evictor;
	bool evictor_started;
	_Atomic pid_t evictor_tid;
	pthread_mutex_t ev_lock;
	pthread_cond_t ev_wake;
	pthread_cond_t ev_done;
	_Atomic bool ev_idle;
	_Atomic unsigned long ev_rounds; /* completed batches and sleeps */
	_Atomic unsigned ev_waiters;	 /* threads in upg_evict_wait() */
	_Atomic bool ev_pause;		 /* fork() under way: stay idle */
	bool ev_paused;			 /* and idle now; under ev_lock */
	size_t hand_region;		 /* clock hand, evictor-private */
	uint64_t reaped_ns;		 /* last reaper pass, evictor-private */
	uint64_t compacted_ns;		 /* last compaction, evictor-private */
	uint64_t compact_floor;		 /* holes it could not fill (relaxed) */
	_Atomic bool keep_copies;	 /* see copy_policy() in evict.c */
	_Atomic bool freeing_dropped;	 /* upg_free_dropped() under way */
	uint64_t copy_paid, copy_wasted; /* its last counts, evictor-private */
	uint64_t copy_off_ns;		 /* when copies were last given up */
	size_t hand_idx;
	char *staging;	     /* UPG_EVICT_BATCH pages, registered WP-only */
	char *chunk_area;    /* 3 chunks of address space, for: */
	char *chunk_staging; /* one 2 MiB-aligned chunk, for mremap */
	upg_test_remap_fn test_remap; /* testing.h */
	void *test_remap_arg;
	upg_test_store_fn test_store;
	void *test_store_arg;
	bool remap;	      /* evict scattered pages with mremap */
	struct upg_io *ev_io; /* the evictor's ring (swap writes) */
	char *wb_buf;	      /* UPG_WB_DEPTH batches: write-back staging */
	struct upg_wb *wb;    /* write-back batches */
	size_t wb_region;     /* write-back hand, evictor-private */
	size_t wb_idx;
	/*
	 * The batch the evictor is storing (compressing), shared with
	 * handlers that wait for room meanwhile: see upg_evict_help().
	 */
	struct {
		_Atomic bool active;
		_Atomic unsigned helpers; /* threads inside the job */
		_Atomic size_t next;	  /* next item to claim */
		_Atomic uint32_t done;	  /* items finished */
		_Atomic bool waiting;	  /* the evictor sleeps on done */
		size_t n;
		struct upg_store_item *item;
	} job;
	/*
	 * Copy fallback: ranges the evictor zapped itself whose REMOVE event
	 * no handler has consumed yet. madvise() returns once its event is
	 * read, so the evictor can be several zaps ahead of a slow handler.
	 */
	struct {
		_Atomic uintptr_t start;
		_Atomic uintptr_t end;
	} self_zap[UPG_SELF_ZAP_RING];
	_Atomic unsigned self_zap_next;

	unsigned nhandlers;
	struct upg_handler *handlers;
	_Atomic unsigned active_handlers;
	/* UPG_IDLE_HANDLERS=auto: the guard thread, see handler.c */
	pthread_t guard;
	bool guard_started;
	pthread_mutex_t guard_lock;
	pthread_cond_t guard_cond;
	struct upg_canary *canaries; /* one per handler CPU */
	unsigned ncanaries;
	pthread_mutex_t park_lock;
	pthread_cond_t park_cond;
	struct upg_stat_shard *shards; /* handlers, then evictor, then API */
	unsigned nshards;

	char features[160];
	struct upg *next_live;
};

static inline struct upg_stat_shard *upg_evictor_stats(struct upg *u)
{
	return &u->shards[u->nhandlers];
}

static inline struct upg_stat_shard *upg_api_stats(struct upg *u)
{
	return &u->shards[u->nhandlers + 1];
}

static inline struct upg_stat_shard *upg_guard_stats(struct upg *u)
{
	return &u->shards[u->nhandlers + 2];
}

/* Region lookup; caller holds regions_lock (read or write). */
struct upg_region *upg_region_find(struct upg *u, const void *addr);

/*
 * upg_charge() - account up to @want new resident pages
 * Return: how many were granted (0 when the budget is full); the caller
 * installs at most that many and upg_uncharge()s what it did not use.
 */
long upg_charge(struct upg *u, long want, struct upg_stat_shard *st);

static inline void upg_uncharge(struct upg *u, long n)
{
	if (n)
		atomic_fetch_sub_explicit(&u->resident, n,
					  memory_order_relaxed);
}

/*
 * upg_page_publish() - store @val (unlocked) into a locked entry
 * Applies a discard that arrived while the page was locked (PTE_ZAP: an
 * evicted page becomes untouched, a resident one loses its stored copy),
 * keeps the chunk counters right (@from is the state the holder locked) and
 * wakes faults deferred on the page (PTE_WAIT).
 */
void upg_page_publish(struct upg *u, struct upg_region *r, size_t idx,
		      uint64_t from, uint64_t val);

/*
 * upg_self_zap() - madvise(MADV_DONTNEED) a range of managed memory that
 * the runtime itself empties (the evictor's copy fallback, upg_discard())
 * With REMOVE events on, the range is recorded first so that the handler
 * reading the event knows it is ours and leaves the pages alone: the
 * caller has done the bookkeeping, and by the time a handler gets to the
 * event the pages may hold new data. Thread-safe; the caller holds the
 * pages' locks.
 */
void upg_self_zap(struct upg *u, void *start, size_t len);

/* upg_page_drop_copy() - free the stored copy an entry refers to, if any */
void upg_page_drop_copy(struct upg *u, uint64_t val);

/*
 * upg_free_dropped() - free the pool objects handlers dropped since the
 * last call: the evictor between batches, upg_release() so that nothing
 * stored stays behind. Any thread (callers are serialized).
 */
void upg_free_dropped(struct upg *u);

/*
 * upg_internal_thread() - whether the caller is the runtime's own code
 * True on the fault handlers and the evictor, inside upg_create(), and while
 * a fork child rebuilds its runtime. Memory such a thread allocates must not
 * come from managed regions (a handler faulting on managed memory deadlocks,
 * and a fork child has no handlers yet): the preload allocator serves these
 * calls from memory of its own. Async-signal-safe (initial-exec TLS).
 */
bool upg_internal_thread(void);
void upg_internal_enter(void);
void upg_internal_leave(void);
/* The same as a variable, for the allocator's inline fast paths. */
extern __thread unsigned upg_internal_depth
	__attribute__((tls_model("initial-exec")));

/*
 * upg_runtime_atfork_register() - install the runtime's fork handlers now
 * rather than with the first runtime (idempotent). The allocator calls it
 * before registering its own, which must run before the runtime's prepare
 * handler and after its child handler (see alloc.c, "fork()").
 */
void upg_runtime_atfork_register(void);

/* Fault handler threads (handler.c). */
int upg_fault_start(struct upg *u);
void upg_fault_stop(struct upg *u);

int upg_fault_restart(struct upg *u);
/* Now and then, note the CPU of faulting thread @tid (parking). */
void upg_handler_sample(struct upg_handler *h, uint32_t tid);

/* Bytes of a handler's buf: the largest run. */
static inline size_t upg_handler_buf_bytes(const struct upg *u)
{
	return (size_t)MAX(u->p.cluster, u->p.swap_readahead) << UPG_PAGE_SHIFT;
}

/* Resolve one userfaultfd message (fault.c). */
void upg_fault_dispatch(struct upg_handler *h, const struct uffd_msg *m);

/* The evictor (evict.c, evict_store.c). */
int upg_evict_start(struct upg *u);
int upg_evict_restart(struct upg *u);
/* Hold the evictor between batches (fork), and let it go again. */
void upg_evict_pause(struct upg *u);
void upg_evict_resume(struct upg *u);
void upg_evict_stop(struct upg *u);
void upg_evict_kick(struct upg *u);
/*
 * upg_evict_wait() - wake the evictor and wait for it to finish a pass
 * @timeout_ns: give up after this long (fault handlers wait briefly: they
 * must get back to reading messages), 0 for no limit.
 */
void upg_evict_wait(struct upg *u, uint64_t timeout_ns);
/*
 * upg_evict_help() - compress pages of the evictor's current batch
 * @st: the caller's statistics
 *
 * For a fault handler that must wait for room anyway: it does part of the
 * work that makes the room, on its CPU, instead of sleeping.
 * Return: whether there was a batch to help with.
 */
bool upg_evict_help(struct upg *u, struct upg_stat_shard *st);
/* Recompute the watermarks from the budget and the headroom option. */
void upg_evict_set_watermarks(struct upg *u);

/*
 * Write-back (writeback.c): the pool's coldest entries to the swap file.
 * upg_wb_init() sets up the evictor's ring and the staging when there is
 * a swap tier (a no-op otherwise); upg_wb_run(), evictor only, writes back
 * if the pool is past 3/4 of its limit; upg_wb_restart() rebuilds the
 * ring in a fork child.
 */
int upg_wb_init(struct upg *u);
int upg_wb_restart(struct upg *u);
void upg_wb_run(struct upg *u);
void upg_wb_stop(struct upg *u);

/*
 * Pool compaction (compact.c), evictor only but for upg_compact_kick():
 * upg_compact_run() compacts if the pool's holes are worth it and the
 * last run is old enough (return: whether it ran); upg_compact_wait_ns()
 * is how long until a wanted run may start (0: none wanted,
 * UPG_COMPACT_DUE: now); upg_compact_kick() wakes an idle evictor when
 * one is wanted (after a discard freed pool objects).
 */
#define UPG_COMPACT_DUE 1ULL
bool upg_compact_run(struct upg *u);
uint64_t upg_compact_wait_ns(struct upg *u);
void upg_compact_kick(struct upg *u);

#endif
