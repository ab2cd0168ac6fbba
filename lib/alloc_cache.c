/* SPDX-License-Identifier: MIT */
/*
 * Thread caches (struct upg_tcache, alloc.h): per thread and heap, arrays
 * of free blocks' addresses (nothing is written into a freed block). The
 * fast paths (alloc.h) pop and push without a lock or an atomic
 * read-modify-write; this file makes, finds, flushes and recycles caches.
 *
 * A thread finds its caches through initial-exec thread-locals (no
 * __tls_get_addr): the one for the default heap, the last used one, then
 * its list. Blocks freed by other threads than their maker's go into the
 * freeing thread's cache and back to their slabs in batches of half a bin.
 *
 * Life cycle: a cache is taken from the spare list (or mapped) on a
 * thread's first use of a heap and put on the heap's list. tc_key's
 * destructor flushes and recycles a thread's caches when it exits; after
 * that the thread allocates uncached. upg_heap_destroy() orphans the
 * caches of every thread (->h = NULL, off the heap's list): each owner
 * recycles its orphans on its next slow path or at exit, dropping the
 * blocks in them, so no thread reads a destroyed heap's metadata through
 * its cache. Cache memory is never unmapped: a stale upg_tc_last always
 * points to readable memory.
 *
 * fork(): a child has the forking thread only. The caches of the other
 * threads stay on their heaps' lists there with blocks in their bins;
 * upg_tcache_fork_child() gives those blocks back to their slabs and the
 * caches to the spare list (upg_tbin_publish() keeps the bins consistent
 * at any instant of their owners' operations).
 *
 * Locking: the caches lock (tc_lock) guards the spare list, every heap's
 * cache list and ->h of every cache on one; it comes after heaps_lock and
 * before the class locks (a flush under it takes those). A cache's bins
 * have no lock: only the owner touches them.
 */
#include "alloc.h"

static uint16_t class_cap[UPG_NCLASS]; /* thread cache slots */
static size_t tc_slots;

__thread struct upg_tcache *upg_tc_default UPG_TLS_IE;
__thread struct upg_tcache *upg_tc_last UPG_TLS_IE;
static __thread struct upg_tcache *tc_mine UPG_TLS_IE; /* via ->tnext */
static __thread bool tc_keyed UPG_TLS_IE; /* tc_key set: exit is seen */
static __thread bool tc_dead UPG_TLS_IE;  /* exiting: caches flushed */
static __thread bool tc_setup UPG_TLS_IE; /* in pthread_setspecific */

/* The caches lock and what it guards (see above). */
static pthread_mutex_t tc_lock = PTHREAD_MUTEX_INITIALIZER;
static struct upg_tcache *tc_spare; /* via ->tnext */
static size_t tc_nspare, tc_nmapped;
static pthread_key_t tc_key;
static bool tc_key_ok;

/*
 * Thread cache slots for a class. A bin refills or flushes when a random
 * mix of mallocs and frees walks it to an end, about (cap/2)^2 operations
 * after the last time, and then moves cap/2 blocks under the class lock:
 * the cost per operation falls as 2/cap. Large classes get few slots so
 * that a thread keeps under about 2 MiB of blocks cached.
 */
static uint16_t cache_slots(size_t size)
{
	if (size <= 256)
		return 256;
	if (size <= 1024)
		return 128;
	return size <= 4096 ? 32 : 8;
}

static void threads_exit(void *arg);

void upg_tcache_init(void)
{
	tc_key_ok = pthread_key_create(&tc_key, threads_exit) == 0;
	if (!tc_key_ok)
		upg_warn("allocator: no pthread key: threads allocate "
			 "without caches");
	for (unsigned c = 0; c < UPG_NCLASS; c++) {
		class_cap[c] = cache_slots(upg_class_size[c]);
		tc_slots += class_cap[c];
	}
}

static size_t tcache_bytes(void)
{
	return sizeof(struct upg_tcache) + tc_slots * sizeof(void *);
}

/* Caches lock held. */
static void heap_link(struct upg_heap *h, struct upg_tcache *tc)
{
	atomic_store_explicit(&tc->h, h, memory_order_relaxed);
	tc->hprev = NULL;
	tc->hnext = h->tcaches;
	if (tc->hnext)
		tc->hnext->hprev = tc;
	h->tcaches = tc;
}

/* Caches lock held; @tc is on @h's list. */
static void heap_unlink(struct upg_heap *h, struct upg_tcache *tc)
{
	if (tc->hprev)
		tc->hprev->hnext = tc->hnext;
	else
		h->tcaches = tc->hnext;
	if (tc->hnext)
		tc->hnext->hprev = tc->hprev;
	atomic_store_explicit(&tc->h, NULL, memory_order_relaxed);
}

/* A cache for @h, on its list and the caller's. */
static struct upg_tcache *tcache_new(struct upg_heap *h)
{
	struct upg_tcache *tc;
	void **slot;

	pthread_mutex_lock(&tc_lock);
	tc = tc_spare;
	if (tc) {
		tc_spare = tc->tnext;
		tc_nspare--;
	}
	pthread_mutex_unlock(&tc_lock);
	if (!tc) {
		tc = upg_map(tcache_bytes());
		if (!tc)
			return NULL;
		pthread_mutex_lock(&tc_lock);
		tc_nmapped++;
		pthread_mutex_unlock(&tc_lock);
	}
	slot = tc->slots;
	for (unsigned c = 0; c < UPG_NCLASS; c++) {
		tc->bin[c] = (struct tbin){ 0, class_cap[c], slot };
		slot += class_cap[c];
	}
	pthread_mutex_lock(&tc_lock);
	heap_link(h, tc);
	pthread_mutex_unlock(&tc_lock);
	tc->tnext = tc_mine;
	tc_mine = tc;
	return tc;
}

/*
 * Flush the newest @n objects of bin @c: off the bin, then to their slabs
 * (upg_tbin_publish() says why in this order). The newest rather than the
 * oldest, so that no slot moves while the bin counts it.
 */
void upg_tbin_flush(struct upg_heap *h, struct upg_tcache *tc, unsigned c,
		    unsigned n)
{
	struct tbin *b = &tc->bin[c];
	uint32_t keep = b->n - n;

	upg_tbin_publish(b, keep);
	upg_class_put(h, c, b->slot + keep, n);
}

void upg_tcache_flush(struct upg_heap *h, struct upg_tcache *tc)
{
	for (unsigned c = 0; c < UPG_NCLASS; c++)
		if (tc->bin[c].n)
			upg_tbin_flush(h, tc, c, tc->bin[c].n);
}

/* Caches lock held; @tc is off every heap list and off the caller's. */
static void spare_push(struct upg_tcache *tc)
{
	if (upg_tc_last == tc)
		upg_tc_last = NULL;
	if (upg_tc_default == tc)
		upg_tc_default = NULL;
	tc->tnext = tc_spare;
	tc_spare = tc;
	tc_nspare++;
}

/*
 * Give the caller's caches back: every one (@all: the thread is exiting;
 * live ones are flushed to their heaps first) or the orphans only. The
 * flush runs under the caches lock, so that the heap cannot be destroyed
 * meanwhile; it takes class and page locks after it (lock order).
 */
static void tcache_recycle(bool all)
{
	struct upg_tcache **pp = &tc_mine, *tc;

	pthread_mutex_lock(&tc_lock);
	while ((tc = *pp)) {
		struct upg_heap *h =
			atomic_load_explicit(&tc->h, memory_order_relaxed);

		if (h && !all) {
			pp = &tc->tnext;
			continue;
		}
		*pp = tc->tnext;
		if (h) {
			upg_tcache_flush(h, tc);
			heap_unlink(h, tc);
		}
		spare_push(tc);
	}
	pthread_mutex_unlock(&tc_lock);
}

/* tc_key's destructor: the thread is exiting. */
static void threads_exit(void *arg)
{
	(void)arg;
	tc_dead = true;
	tcache_recycle(true);
}

/* Make sure the thread's exit is seen (tc_key set). */
static bool tcache_keyed(void)
{
	int err;

	if (likely(tc_keyed))
		return true;
	if (!tc_key_ok)
		return false;
	tc_setup = true; /* a nested allocation here goes uncached */
	err = pthread_setspecific(tc_key, (void *)1);
	tc_setup = false;
	tc_keyed = !err;
	return tc_keyed;
}

struct upg_tcache *upg_tcache_slow(struct upg_heap *h)
{
	struct upg_tcache *tc;
	bool orphans = false;

	if (tc_dead || tc_setup)
		return NULL;
	for (tc = tc_mine; tc; tc = tc->tnext) {
		struct upg_heap *th =
			atomic_load_explicit(&tc->h, memory_order_relaxed);

		if (th == h)
			break;
		orphans |= !th;
	}
	if (orphans)
		tcache_recycle(false);
	if (!tc && (!tcache_keyed() || !(tc = tcache_new(h))))
		return NULL;
	upg_tc_last = tc;
	if (h == upg_dheap_get())
		upg_tc_default = tc;
	return tc;
}

void upg_tcache_count(size_t *mapped, size_t *spare)
{
	pthread_mutex_lock(&tc_lock);
	*mapped = tc_nmapped;
	*spare = tc_nspare;
	pthread_mutex_unlock(&tc_lock);
}

/*
 * Other threads' caches become orphans, which their owners recycle (see
 * the top of this file); the blocks in them are dropped with the heap. A thread that
 * exits meanwhile flushes under the caches lock, so it finishes before
 * or finds its cache orphaned.
 */
void upg_tcache_orphan(struct upg_heap *h)
{
	pthread_mutex_lock(&tc_lock);
	while (h->tcaches)
		heap_unlink(h, h->tcaches);
	pthread_mutex_unlock(&tc_lock);
	tcache_recycle(false); /* the caller's own */
}

/* Whether @tc is one of the calling thread's caches. */
static bool mine(const struct upg_tcache *tc)
{
	for (const struct upg_tcache *t = tc_mine; t; t = t->tnext)
		if (t == tc)
			return true;
	return false;
}

/*
 * In a fork() child, with the caches lock still held from the prepare
 * handler and the class and page locks released: the caches of @h that
 * are not the caller's belong to threads that do not exist here. Their
 * blocks go back to the slabs, in the child's heap only.
 */
void upg_tcache_fork_child(struct upg_heap *h)
{
	struct upg_tcache *tc, *next;

	for (tc = h->tcaches; tc; tc = next) {
		next = tc->hnext;
		if (mine(tc))
			continue;
		upg_tcache_flush(h, tc);
		heap_unlink(h, tc);
		spare_push(tc);
	}
}

void upg_tcache_fork_lock(void)
{
	pthread_mutex_lock(&tc_lock);
}

void upg_tcache_fork_unlock(void)
{
	pthread_mutex_unlock(&tc_lock);
}
