/* SPDX-License-Identifier: MIT */
/*
 * The public API: creating and destroying a runtime, reserving, releasing
 * and discarding regions, the budget, statistics.
 *
 * Locking: the region table is an array sorted by address under
 * regions_lock; fault handlers and the evictor take it for reading around
 * each batch of work, reserve and release take it for writing. API calls
 * that wait for page locks (discard, release) spin with sched_yield: lock
 * holders never block while holding one (see region.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <unistd.h>

#include "alloc.h"
#include "options.h"
#include "runtime.h"

static pthread_mutex_t live_lock = PTHREAD_MUTEX_INITIALIZER;
static struct upg *live; /* runtimes alive, for the UPG_STATS=1 report */

/* Depth, not a flag: upg_create() may run inside an internal section. */
__thread unsigned upg_internal_depth __attribute__((tls_model("initial-exec")));

bool upg_internal_thread(void)
{
	return upg_internal_depth != 0;
}

void upg_internal_enter(void)
{
	upg_internal_depth++;
}

void upg_internal_leave(void)
{
	upg_internal_depth--;
}

const char *upg_version(void)
{
	return UPG_VERSION_STRING;
}

/* ------------------------------------------------------------------ */
/* Region table                                                        */
/* ------------------------------------------------------------------ */

struct upg_region *upg_region_find(struct upg *u, const void *addr)
{
	size_t lo = 0, hi = u->nregions;

	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		struct upg_region *r = u->regions[mid];

		if ((const char *)addr < r->start)
			hi = mid;
		else if ((const char *)addr >= r->start + r->len)
			lo = mid + 1;
		else
			return r;
	}
	return NULL;
}

/* Grow the table (metadata memory only: never malloc). */
static int table_grow(struct upg *u)
{
	size_t cap = u->regions_cap ? u->regions_cap * 2 : 64;
	struct upg_region **t = upg_map(cap * sizeof(*t));

	if (!t)
		return -ENOMEM;
	if (u->regions)
		memcpy(t, u->regions, u->nregions * sizeof(*t));
	upg_unmap(u->regions, u->regions_cap * sizeof(*t));
	u->regions = t;
	u->regions_cap = cap;
	return 0;
}

static int table_insert(struct upg *u, struct upg_region *r)
{
	size_t i = 0;
	int err;

	if (u->nregions == u->regions_cap && (err = table_grow(u)))
		return err;
	while (i < u->nregions && u->regions[i]->start < r->start)
		i++;
	memmove(&u->regions[i + 1], &u->regions[i],
		(u->nregions - i) * sizeof(*u->regions));
	u->regions[i] = r;
	u->nregions++;
	return 0;
}

static void table_remove(struct upg *u, struct upg_region *r)
{
	size_t i = 0;

	while (i < u->nregions && u->regions[i] != r)
		i++;
	memmove(&u->regions[i], &u->regions[i + 1],
		(u->nregions - i - 1) * sizeof(*u->regions));
	u->nregions--;
}

/* ------------------------------------------------------------------ */
/* Regions                                                             */
/* ------------------------------------------------------------------ */

int upg_reserve(struct upg *u, size_t len, void **addr)
{
	struct upg_region *r;
	int err;

	if (!len)
		return upg_seterr(-EINVAL, "upg_reserve: zero length");
	err = upg_region_create(len, &r);
	if (err)
		return upg_seterr(err, "upg_reserve: cannot map %zu bytes: %s",
				  len, strerror(-err));
	err = upg_uffd_register(u->uffd, r->start, r->len, true, u->caps.wp);
	if (err)
		goto err_destroy;
	pthread_rwlock_wrlock(&u->regions_lock);
	err = table_insert(u, r);
	pthread_rwlock_unlock(&u->regions_lock);
	if (err)
		goto err_unregister;
	*addr = r->start;
	return 0;

err_unregister:
	upg_uffd_unregister(u->uffd, r->start, r->len);
err_destroy:
	upg_region_destroy(r);
	return err;
}

/* Lock a page from an API thread; holders never block, so spin. */
static uint64_t lock_page(upg_pte_t *p)
{
	uint64_t v;

	while (!pte_trylock(p, &v))
		sched_yield();
	return v;
}

/*
 * A ring slot is claimed with a CAS from 0 to 1 (never a real start: they
 * are page aligned), filled, then published by storing the start. A free
 * slot always comes round: each madvise() waits until its event is read,
 * and handlers consume records as they read them.
 */
void upg_self_zap(struct upg *u, void *start, size_t len)
{
	if (u->caps.remove) {
		for (unsigned i = atomic_fetch_add(&u->self_zap_next, 1);;
		     i++) {
			unsigned k = i % UPG_SELF_ZAP_RING;
			uintptr_t none = 0;

			if (!atomic_compare_exchange_strong(
				    &u->self_zap[k].start, &none, 1))
				continue;
			atomic_store(&u->self_zap[k].end,
				     (uintptr_t)start + len);
			atomic_store(&u->self_zap[k].start, (uintptr_t)start);
			break;
		}
	}
	madvise(start, len, MADV_DONTNEED);
}

/*
 * Forget pages [idx, end) of @r: free stored copies, zap resident pages,
 * mark untouched. Pages are locked while the range is zapped so that no
 * fault installs stale contents in between.
 */
static void forget_range(struct upg *u, struct upg_region *r, size_t idx,
			 size_t end, bool zap)
{
	size_t n = 0, first = idx;
	long resident = 0;

	for (size_t i = idx; i < end; i++) {
		uint64_t v = lock_page(&r->pte[i]);

		resident += pte_state(v) == PTE_RESIDENT;
		upg_page_drop_copy(u, v);
		if (pte_state(v) != PTE_UNTOUCHED)
			upg_region_account(r, i, pte_state(v), PTE_UNTOUCHED);
		n++;
	}
	if (zap && n)
		upg_self_zap(u, region_addr(r, first), n << UPG_PAGE_SHIFT);
	for (size_t i = idx; i < end; i++)
		upg_page_publish(u, r, i, PTE_UNTOUCHED, PTE_UNTOUCHED);
	upg_uncharge(u, resident);
	upg_stat_add(upg_api_stats(u), UPG_STAT_discard_pages, n);
}

/* Walk [idx, end) chunk by chunk, skipping chunks with nothing stored. */
static void forget_pages(struct upg *u, struct upg_region *r, size_t idx,
			 size_t end, bool zap)
{
	while (idx < end) {
		size_t c = idx >> UPG_CHUNK_SHIFT;
		size_t stop = MIN(end, (c + 1) << UPG_CHUNK_SHIFT);

		if (atomic_load(&r->chunk_used[c]))
			forget_range(u, r, idx, stop, zap);
		idx = stop;
	}
}

int upg_discard(struct upg *u, void *addr, size_t len)
{
	struct upg_region *r;
	char *a = addr;
	size_t idx;

	len = (len + UPG_PAGE_SIZE - 1) & UPG_PAGE_MASK;
	if ((uintptr_t)a & (UPG_PAGE_SIZE - 1))
		return upg_seterr(-EINVAL,
				  "upg_discard: %p is not page aligned", addr);
	pthread_rwlock_rdlock(&u->regions_lock);
	r = upg_region_find(u, a);
	if (!r || a + len > r->start + r->len) {
		pthread_rwlock_unlock(&u->regions_lock);
		return upg_seterr(
			-EINVAL, "upg_discard: %p+%zu is not inside one region",
			addr, len);
	}
	idx = (size_t)(a - r->start) >> UPG_PAGE_SHIFT;
	forget_pages(u, r, idx, idx + (len >> UPG_PAGE_SHIFT), true);
	pthread_rwlock_unlock(&u->regions_lock);
	upg_compact_kick(u);
	return 0;
}

int upg_release(struct upg *u, void *addr)
{
	struct upg_region *r;

	pthread_rwlock_wrlock(&u->regions_lock);
	r = upg_region_find(u, addr);
	if (!r || r->start != (char *)addr) {
		pthread_rwlock_unlock(&u->regions_lock);
		return upg_seterr(-ENOENT, "upg_release: %p is not a region",
				  addr);
	}
	table_remove(u, r);
	if (u->hand_region >= u->nregions)
		u->hand_region = 0;
	u->hand_idx = 0;
	pthread_rwlock_unlock(&u->regions_lock);
	upg_uffd_unregister(u->uffd, r->start, r->len);
	forget_pages(u, r, 0, r->npages, false);
	upg_region_destroy(r);
	upg_free_dropped(u); /* copies the handlers dropped, anywhere */
	return 0;
}

bool upg_owns(struct upg *u, const void *addr)
{
	bool found;

	pthread_rwlock_rdlock(&u->regions_lock);
	found = upg_region_find(u, addr) != NULL;
	pthread_rwlock_unlock(&u->regions_lock);
	return found;
}

/* ------------------------------------------------------------------ */
/* Budget                                                              */
/* ------------------------------------------------------------------ */

int upg_set_budget(struct upg *u, size_t bytes)
{
	struct upg_params p = u->p;
	int err;

	p.budget = bytes;
	err = upg_opt_validate(&p);
	if (err)
		return err;
	u->p.budget = bytes;
	atomic_store(&u->budget, (long)(bytes >> UPG_PAGE_SHIFT));
	upg_evict_set_watermarks(u);
	atomic_store(&u->overrun, false);
	while (atomic_load(&u->resident) > atomic_load(&u->budget) &&
	       !atomic_load(&u->overrun))
		upg_evict_wait(u, 0);
	return 0;
}

size_t upg_get_budget(const struct upg *u)
{
	return (size_t)atomic_load(&u->budget) << UPG_PAGE_SHIFT;
}

/* ------------------------------------------------------------------ */
/* Statistics                                                          */
/* ------------------------------------------------------------------ */

static void fill_gauges(struct upg *u, struct upg_stats *s)
{
	struct upg_pool_stats ps;

	upg_pool_get_stats(u->pool, &ps);
	s->resident = (uint64_t)MAX(atomic_load(&u->resident), 0);
	s->resident_peak = (uint64_t)atomic_load(&u->resident_peak);
	s->budget = (uint64_t)atomic_load(&u->budget);
	s->pool_objects = ps.objects;
	s->pool_same = ps.same;
	s->pool_stored_bytes = ps.stored_bytes;
	s->pool_compressed_bytes = ps.compressed_bytes;
	s->pool_used_bytes = ps.used_bytes;
	s->pool_max_bytes = ps.max_bytes;
	s->pool_parked_bytes = ps.parked_bytes;
	s->pool_hole_bytes = ps.hole_bytes;
	if (u->swap) {
		s->swap_slots_used = upg_swap_used(u->swap);
		s->swap_file_bytes = upg_swap_file_bytes(u->swap);
	}
}

int upg_stats_get(struct upg *u, struct upg_stats *s)
{
	if (s->size < sizeof(*s))
		return upg_seterr(-EINVAL,
				  "upg_stats_get: s->size is %u, "
				  "expected %zu",
				  s->size, sizeof(*s));
	upg_stat_sum(u->shards, u->nshards, s);
	fill_gauges(u, s);
	return 0;
}

void upg_stats_print(struct upg *u, FILE *f)
{
	struct upg_stats s = { .size = sizeof(s) };

	upg_stats_get(u, &s);
	fprintf(f, "upager %s, features: %s\n", upg_version(), u->features);
	upg_stat_print(f, &s);
}

const char *upg_features(const struct upg *u)
{
	return u->features;
}

static void print_live_stats(void)
{
	pthread_mutex_lock(&live_lock);
	for (struct upg *u = live; u; u = u->next_live)
		if (u->p.stats)
			upg_stats_print(u, stderr);
	pthread_mutex_unlock(&live_lock);
}

static void fork_prepare(void);
static void fork_parent(void);
static void fork_child(void);

static pthread_once_t hooks_once = PTHREAD_ONCE_INIT;

static void hooks_register(void)
{
	if (atexit(print_live_stats))
		upg_warn("atexit failed: UPG_STATS=1 prints nothing at exit");
	if (pthread_atfork(fork_prepare, fork_parent, fork_child))
		upg_warn("pthread_atfork failed: a fork() child's managed "
			 "memory may read as zeros");
}

void upg_runtime_atfork_register(void)
{
	pthread_once(&hooks_once, hooks_register);
}

static void live_add(struct upg *u)
{
	upg_runtime_atfork_register();
	pthread_mutex_lock(&live_lock);
	u->next_live = live;
	live = u;
	pthread_mutex_unlock(&live_lock);
}

static void live_remove(struct upg *u)
{
	struct upg **pp;

	pthread_mutex_lock(&live_lock);
	for (pp = &live; *pp && *pp != u; pp = &(*pp)->next_live)
		;
	if (*pp)
		*pp = u->next_live;
	pthread_mutex_unlock(&live_lock);
}

/* ------------------------------------------------------------------ */
/* fork()                                                              */
/* ------------------------------------------------------------------ */

/*
 * Without UFFD_FEATURE_EVENT_FORK a child's copy of a region is no longer
 * registered, and every evicted page would read as zeros. Rather than serve
 * the child from the parent's handlers (EVENT_FORK), each child rebuilds
 * its own runtime: it inherits the page table entries and a copy-on-write
 * copy of the pool, so all it needs is a userfaultfd of its own and
 * threads. The parent quiesces first, so that the child's copy is
 * consistent: the evictor stops between batches, then regions_lock taken
 * for writing waits for every handler and API call to finish its batch
 * (none holds a page lock or a pool lock outside it). Readers are
 * preferred, so a discard whose madvise() waits for a handler to read its
 * REMOVE event still completes.
 *
 * vfork() and posix_spawn() run no atfork handlers; their child shares our
 * memory and handlers until it execs, which is fine.
 */

static void fork_prepare(void)
{
	pthread_mutex_lock(&live_lock);
	for (struct upg *u = live; u; u = u->next_live) {
		upg_evict_pause(u);
		pthread_rwlock_wrlock(&u->regions_lock);
		if (u->swap)
			upg_swap_fork(u->swap); /* the child's references */
	}
}

static void fork_parent(void)
{
	for (struct upg *u = live; u; u = u->next_live) {
		pthread_rwlock_unlock(&u->regions_lock);
		upg_evict_resume(u);
	}
	pthread_mutex_unlock(&live_lock);
}

static int init_sync(struct upg *u);
static int open_kernel(struct upg *u);

/* Register every region on the child's new userfaultfd. */
static int child_register(struct upg *u)
{
	struct upg_uffd_caps was = u->caps;
	int err;

	close(u->uffd);
	if (u->pagemap_fd >= 0)
		close(u->pagemap_fd); /* it reads the parent's page tables */
	u->uffd = u->pagemap_fd = -1;
	err = open_kernel(u);
	if (err)
		return err;
	if (was.move != u->caps.move || was.wp != u->caps.wp ||
	    was.wp_async != u->caps.wp_async || was.remove != u->caps.remove)
		return upg_seterr(-ENOSYS, "userfaultfd features changed");
	for (size_t i = 0; i < u->nregions && !err; i++)
		err = upg_uffd_register(u->uffd, u->regions[i]->start,
					u->regions[i]->len, true, u->caps.wp);
	return err;
}

/*
 * Resident pages lost their write protection in the copy (the child's
 * regions were not registered), so PAGEMAP_SCAN reports them written and
 * their stored copies are dropped as for any written page: no clean page
 * is trusted that was not checked.
 */
static int child_rebuild(struct upg *u)
{
	int err;

	atomic_store(&u->stopping, false);
	err = init_sync(u); /* locks other threads may have held */
	if (!err)
		err = child_register(u);
	if (!err)
		err = upg_evict_restart(u);
	if (!err)
		err = upg_fault_restart(u);
	return err;
}

/* A child that cannot page must fault loudly, never read zeros. */
static void child_fence(struct upg *u)
{
	upg_err("fork child %d: cannot rebuild the runtime (%s); its managed "
		"memory is made inaccessible rather than read as zeros",
		(int)getpid(), upg_last_error());
	for (size_t i = 0; i < u->nregions; i++)
		mprotect(u->regions[i]->start, u->regions[i]->len, PROT_NONE);
}

static void fork_child(void)
{
	live_lock = (pthread_mutex_t)PTHREAD_MUTEX_INITIALIZER;
	upg_internal_enter();
	for (struct upg *u = live; u; u = u->next_live)
		if (child_rebuild(u))
			child_fence(u);
	upg_internal_leave();
}

/* ------------------------------------------------------------------ */
/* Create and destroy                                                  */
/* ------------------------------------------------------------------ */

static void describe_features(struct upg *u)
{
	snprintf(u->features, sizeof(u->features), "%s%s%s%s%s%s handlers=%u",
		 u->caps.move ? "move" : "copy-evict", u->remap ? " remap" : "",
		 u->caps.wp_async ? " wp_async" : " all-dirty",
		 u->caps.remove ? " remove" : "", u->caps.wp ? " wp" : "",
		 u->swap ? " swap" : "", u->nhandlers);
}

static int resolve_params(struct upg *u, const struct upg_params *p)
{
	int err;

	if (p) {
		u->p = *p;
	} else {
		upg_params_init(&u->p);
		err = upg_params_from_env(&u->p);
		if (err)
			return err;
	}
	err = upg_opt_validate(&u->p);
	if (err)
		return err;
	upg_log_level = u->p.log_level;
	if (!u->p.pool_max)
		u->p.pool_max = upg_opt_phys_mem() / 4;
	if (!u->p.handlers) {
		long n = sysconf(_SC_NPROCESSORS_ONLN);
		cpu_set_t set;

		if (!sched_getaffinity(0, sizeof(set), &set))
			n = CPU_COUNT(&set);
		u->p.handlers = (unsigned)MAX(n, 1);
	}
	return 0;
}

static int open_kernel(struct upg *u)
{
	int fd = upg_uffd_open(u->p.use_move, u->p.use_wp_async,
			       u->p.use_remove, &u->caps);

	if (fd < 0)
		return fd;
	u->uffd = fd;
	if (!u->caps.move && !u->caps.wp)
		return upg_seterr(-ENOSYS,
				  "this kernel has neither UFFDIO_MOVE (Linux "
				  "6.8) nor userfaultfd write-protection "
				  "(Linux 5.7): upager cannot evict pages");
	u->pagemap_fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	if (u->caps.wp_async && u->pagemap_fd < 0)
		return upg_seterr(-errno, "/proc/self/pagemap: %s",
				  strerror(errno));
	return 0;
}

static int open_swap(struct upg *u)
{
	if (!strcasecmp(u->p.swap_file, "off"))
		return 0;
	return upg_swap_open(u->p.swap_file, u->p.swap_max, u->p.swap_direct,
			     &u->swap);
}

static int alloc_threads(struct upg *u)
{
	u->nhandlers = u->p.handlers;
	u->nshards = u->nhandlers + 3; /* + evictor, API, guard */
	u->handlers = upg_map(u->nhandlers * sizeof(*u->handlers));
	u->shards = upg_map(u->nshards * sizeof(*u->shards));
	return u->handlers && u->shards ? 0 : -ENOMEM;
}

static int init_sync(struct upg *u)
{
	pthread_condattr_t ca;

	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	if (pthread_rwlock_init(&u->regions_lock, NULL) ||
	    pthread_mutex_init(&u->park_lock, NULL) ||
	    pthread_cond_init(&u->park_cond, &ca) ||
	    pthread_mutex_init(&u->guard_lock, NULL) ||
	    pthread_cond_init(&u->guard_cond, &ca) ||
	    pthread_mutex_init(&u->ev_lock, NULL) ||
	    pthread_cond_init(&u->ev_wake, &ca) ||
	    pthread_cond_init(&u->ev_done, &ca))
		return -ENOMEM;
	pthread_condattr_destroy(&ca);
	return 0;
}

static int create(const struct upg_params *p, struct upg **out)
{
	struct upg *u = upg_map(sizeof(*u));
	int err;

	if (!u)
		return upg_seterr(-ENOMEM, "upg_create: out of memory");
	u->uffd = u->pagemap_fd = -1;
	err = resolve_params(u, p);
	if (!err)
		err = init_sync(u);
	if (!err)
		err = open_kernel(u);
	if (!err)
		err = upg_pool_create(u->p.pool_max, &u->pool);
	if (!err)
		err = open_swap(u);
	if (err)
		goto err_destroy;
	atomic_store(&u->budget, (long)(u->p.budget >> UPG_PAGE_SHIFT));
	atomic_store(&u->keep_copies, true);
	err = alloc_threads(u);
	if (!err)
		err = upg_evict_start(u);
	if (!err)
		err = upg_fault_start(u);
	if (err)
		goto err_destroy;
	describe_features(u);
	upg_info("runtime up: budget %zu MiB, %s", u->p.budget >> 20,
		 u->features);
	live_add(u);
	*out = u;
	return 0;

err_destroy:
	upg_destroy(u);
	return err;
}

int upg_create(const struct upg_params *p, struct upg **out)
{
	int err;

	upg_internal_enter();
	err = create(p, out);
	upg_internal_leave();
	return err;
}

void upg_destroy(struct upg *u)
{
	if (!u)
		return;
	live_remove(u);
	upg_heaps_destroy(u); /* their regions go below */
	if (u->p.stats && u->shards)
		upg_stats_print(u, stderr);
	/* The evictor first: the copy fallback needs handlers to finish. */
	upg_evict_stop(u);
	if (u->handlers)
		upg_fault_stop(u);
	while (u->nregions)
		upg_release(u, u->regions[0]->start);
	upg_unmap(u->regions, u->regions_cap * sizeof(*u->regions));
	upg_pool_destroy(u->pool);
	upg_swap_close(u->swap);
	if (u->uffd >= 0)
		close(u->uffd);
	if (u->pagemap_fd >= 0)
		close(u->pagemap_fd);
	upg_unmap(u->handlers, u->nhandlers * sizeof(*u->handlers));
	upg_unmap(u->shards, u->nshards * sizeof(*u->shards));
	upg_unmap(u, sizeof(*u));
}
