/* SPDX-License-Identifier: MIT */
/*
 * The allocator: size-class slabs with per-thread caches over the page
 * layer (alloc_page.c), page runs for blocks above UPG_SMALL_MAX.
 *
 * Nothing here writes into a block the program freed: a slab's free
 * objects are bits in its descriptor and a thread cache is an array of
 * pointers, both outside managed memory. So free() never faults an evicted
 * page in, and a fully free slab goes back to the page layer untouched.
 *
 * Thread caches (alloc_cache.c) sit in front of the slabs: a malloc pops
 * a pointer from the caller's cache and a free pushes one, with no lock;
 * a bin refills or flushes half its capacity under its class lock.
 *
 * Locking: see alloc.h. fork(): see the section at the end.
 */
#include <errno.h>
#include <string.h>

#include "alloc.h"
#include "front.h"
#include "runtime.h"

/* Read on every malloc: on cache lines that nothing writes after init. */
uint32_t upg_class_size[UPG_NCLASS] __attribute__((aligned(UPG_CACHELINE)));
uint8_t upg_small_class[1024 / 16 + 1] __attribute__((aligned(UPG_CACHELINE)));
static uint16_t class_pages[UPG_NCLASS];
static uint16_t class_objs[UPG_NCLASS];
static pthread_once_t class_once = PTHREAD_ONCE_INIT;

static pthread_mutex_t heaps_lock = PTHREAD_MUTEX_INITIALIZER;
static struct upg_heap *heaps;

/* ------------------------------------------------------------------ */
/* Size classes                                                        */
/* ------------------------------------------------------------------ */

/* 16..128 by 16, then four classes per power of two up to 32 KiB. */
static size_t class_size_of(unsigned c)
{
	unsigned k, j;

	if (c < 8)
		return 16 * (c + 1);
	k = 7 + (c - 8) / 4;
	j = (c - 8) % 4 + 1;
	return (1UL << k) + j * (1UL << (k - 2));
}

/* Slab pages: few enough to waste under 1/16, enough for 4 objects. */
static void pick_slab(unsigned c)
{
	size_t size = upg_class_size[c], best = 1, best_waste = SIZE_MAX;

	for (size_t pages = 1; pages <= 32; pages++) {
		size_t bytes = pages * UPG_PAGE_SIZE, objs = bytes / size;
		size_t waste = bytes - objs * size;

		if (objs > UPG_SLAB_WORDS * 64)
			break;
		if (objs >= 1 && waste * best < best_waste * pages) {
			best = pages;
			best_waste = waste;
		}
		if (objs >= 4 && waste * 16 <= bytes) {
			best = pages;
			break;
		}
	}
	class_pages[c] = (uint16_t)best;
	class_objs[c] = (uint16_t)(best * UPG_PAGE_SIZE / size);
}

static void classes_init(void)
{
	for (unsigned c = 0; c < UPG_NCLASS; c++) {
		upg_class_size[c] = (uint32_t)class_size_of(c);
		pick_slab(c);
	}
	for (unsigned n = 0; n <= 1024; n += 16) {
		unsigned c = 0;

		while (upg_class_size[c] < n)
			c++;
		upg_small_class[n / 16] = (uint8_t)c;
	}
	upg_tcache_init();
}

/* ------------------------------------------------------------------ */
/* Slabs (class lock held)                                             */
/* ------------------------------------------------------------------ */

static void partial_push(struct upg_class *cl, struct span *s)
{
	s->prev = NULL;
	s->next = cl->partial;
	if (s->next)
		s->next->prev = s;
	cl->partial = s;
}

static void partial_remove(struct upg_class *cl, struct span *s)
{
	if (s->prev)
		s->prev->next = s->next;
	else
		cl->partial = s->next;
	if (s->next)
		s->next->prev = s->prev;
}

static struct span *slab_new(struct upg_heap *h, unsigned c)
{
	bool clean;
	struct span *s =
		upg_span_alloc(h, class_pages[c], 1, SPAN_SLAB, &clean);
	unsigned n = class_objs[c];

	if (!s)
		return NULL;
	s->cls = (uint8_t)c;
	/* Ours until freed: nobody else writes these bytes meanwhile. */
	memset(h->pcls + page_index(h, s->start), (int)c + 1, class_pages[c]);
	s->nobjs = s->nfree = (uint16_t)n;
	memset(s->bits, 0, sizeof(s->bits));
	for (unsigned w = 0; w < n / 64; w++)
		s->bits[w] = ~0ULL;
	if (n % 64)
		s->bits[n / 64] = (1ULL << (n % 64)) - 1;
	partial_push(&h->cls[c], s);
	h->cls[c].nempty++;
	return s;
}

/* Take up to @want free objects of @s into @out. */
static unsigned slab_take(struct span *s, size_t size, void **out,
			  unsigned want)
{
	unsigned got = 0;

	for (unsigned w = 0; w < UPG_SLAB_WORDS && got < want; w++) {
		uint64_t b = s->bits[w];

		while (b && got < want) {
			unsigned i = w * 64 + (unsigned)__builtin_ctzll(b);

			b &= b - 1;
			out[got++] = (void *)(s->start + i * size);
		}
		s->bits[w] = b;
	}
	s->nfree -= (uint16_t)got;
	return got;
}

/* Fill @out with up to @want objects of class @c; 0 when out of memory. */
static unsigned class_take(struct upg_heap *h, unsigned c, void **out,
			   unsigned want)
{
	struct upg_class *cl = &h->cls[c];
	unsigned got = 0;

	pthread_mutex_lock(&cl->lock);
	while (got < want) {
		struct span *s = cl->partial;

		if (!s && !(s = slab_new(h, c)))
			break;
		if (s->nfree == s->nobjs)
			cl->nempty--;
		got += slab_take(s, upg_class_size[c], out + got, want - got);
		if (!s->nfree)
			partial_remove(cl, s);
	}
	pthread_mutex_unlock(&cl->lock);
	return got;
}

static void invalid_free(struct upg_heap *h, const void *p, const char *why)
{
	if (!atomic_fetch_add(&h->invalid_frees, 1))
		upg_err("allocator: free(%p): %s (reported once)", p, why);
}

/*
 * Return object @p to slab @s. Return: @s if it became free and must go
 * back to the page layer (at most one empty slab per class is kept).
 */
static struct span *slab_put(struct upg_heap *h, struct upg_class *cl,
			     struct span *s, void *p)
{
	size_t size, off, i;

	if (!s || s->kind != SPAN_SLAB || &h->cls[s->cls] != cl) {
		invalid_free(h, p, "not an allocated block");
		return NULL;
	}
	size = upg_class_size[s->cls];
	off = (uintptr_t)p - s->start;
	i = off / size;
	if (off % size || (s->bits[i / 64] >> (i % 64)) & 1) {
		invalid_free(h, p, off % size ? "not a block" : "double free");
		return NULL;
	}
	s->bits[i / 64] |= 1ULL << (i % 64);
	if (++s->nfree == 1)
		partial_push(cl, s);
	if (s->nfree < s->nobjs)
		return NULL;
	if (!cl->nempty) {
		cl->nempty++;
		return NULL;
	}
	partial_remove(cl, s);
	memset(h->pcls + page_index(h, s->start), 0, s->npages);
	return s;
}

void upg_class_put(struct upg_heap *h, unsigned c, void **objs, unsigned n)
{
	struct upg_class *cl = &h->cls[c];
	struct span *release = NULL, *s;

	pthread_mutex_lock(&cl->lock);
	for (unsigned k = 0; k < n; k++) {
		s = slab_put(h, cl, span_of(h, objs[k]), objs[k]);
		if (s) {
			s->next = release;
			release = s;
		}
	}
	pthread_mutex_unlock(&cl->lock);
	while ((s = release)) {
		release = s->next;
		upg_span_free(h, s);
	}
}

/* ------------------------------------------------------------------ */
/* Small and large blocks                                              */
/* ------------------------------------------------------------------ */

/*
 * Reverse @n pointers. A refill takes blocks in address order and the
 * cache hands them out from the top: reversed, they go out in address
 * order, so the program touches a fresh slab's pages one after the other
 * and the fault handlers see a sequential stream (fault-around) rather
 * than a page at a time backwards.
 */
static void reverse(void **v, unsigned n)
{
	for (unsigned i = 0; i < n / 2; i++) {
		void *t = v[i];

		v[i] = v[n - 1 - i];
		v[n - 1 - i] = t;
	}
}

static void *small_alloc(struct upg_heap *h, unsigned c)
{
	struct upg_tcache *tc = upg_tcache_get(h);
	struct tbin *b;
	unsigned n;
	void *p;

	if (unlikely(!tc))
		return class_take(h, c, &p, 1) ? p : NULL;
	b = &tc->bin[c];
	if (likely(b->n))
		return b->slot[--b->n];
	n = class_take(h, c, b->slot, b->cap / 2);
	if (!n)
		return NULL;
	reverse(b->slot, n);
	upg_tbin_publish(b, n - 1);
	return b->slot[n - 1];
}

/* Free @p, in a page of a class @c slab (checked when it reaches it). */
static void small_free(struct upg_heap *h, unsigned c, void *p)
{
	struct upg_tcache *tc = upg_tcache_get(h);
	struct tbin *b;

	if (unlikely(!tc)) {
		upg_class_put(h, c, &p, 1);
		return;
	}
	b = &tc->bin[c];
	if (unlikely(b->n == b->cap))
		upg_tbin_flush(h, tc, c, b->cap / 2);
	b->slot[b->n] = p;
	upg_tbin_publish(b, b->n + 1);
}

static void *large_alloc(struct upg_heap *h, size_t size, size_t align,
			 bool zero)
{
	size_t align_pages = MAX(align >> UPG_PAGE_SHIFT, 1);
	struct span *s;
	bool clean;

	if (size > h->end - h->base)
		return NULL;
	s = upg_span_alloc(h, pages_for(size), align_pages, SPAN_LARGE, &clean);
	if (!s)
		return NULL;
	if (zero && !clean)
		memset((void *)s->start, 0, size);
	return (void *)s->start;
}

static void *heap_alloc(struct upg_heap *h, size_t size, bool zero)
{
	void *p;

	if (likely(size <= UPG_SMALL_MAX)) {
		unsigned c = upg_size_class(size);

		p = small_alloc(h, c);
		if (p && zero)
			memset(p, 0, upg_class_size[c]);
	} else {
		p = large_alloc(h, size, 0, zero);
	}
	if (unlikely(!p))
		errno = ENOMEM;
	return p;
}

void *upg_heap_malloc(struct upg_heap *h, size_t size)
{
	return heap_alloc(h, size, false);
}

void *upg_heap_calloc(struct upg_heap *h, size_t n, size_t size)
{
	size_t total;

	if (__builtin_mul_overflow(n, size, &total)) {
		errno = ENOMEM;
		return NULL;
	}
	return heap_alloc(h, total, true);
}

void *upg_heap_aligned_alloc(struct upg_heap *h, size_t align, size_t size)
{
	void *p = NULL;

	if (!align || (align & (align - 1))) {
		errno = EINVAL;
		return NULL;
	}
	if (align <= 16)
		return heap_alloc(h, size, false);
	if (align <= UPG_PAGE_SIZE && size <= UPG_SMALL_MAX) {
		/* Slabs start on a page: a class that is a multiple of
		 * @align yields aligned objects. Power-of-two classes exist
		 * up to UPG_SMALL_MAX, so the search always ends. */
		size_t want = (MAX(size, 1) + align - 1) & ~(align - 1);
		unsigned c = upg_size_class(want);

		while (upg_class_size[c] % align)
			c++;
		p = small_alloc(h, c);
	} else if (size <= SIZE_MAX - UPG_PAGE_SIZE) {
		p = large_alloc(h, MAX(size, 1), align, false);
	}
	if (!p)
		errno = ENOMEM;
	return p;
}

/* The page run starting at @p (in @h, not in a slab page), or NULL. */
static struct span *checked_span(struct upg_heap *h, const void *p)
{
	struct span *s = span_of(h, p);

	if (s && s->kind == SPAN_LARGE && s->start == (uintptr_t)p)
		return s;
	invalid_free(h, p, "not an allocated block");
	return NULL;
}

void upg_heap_free(struct upg_heap *h, void *p)
{
	struct span *s;
	int c;

	if (!p)
		return;
	if (unlikely(!upg_heap_has(h, p))) {
		invalid_free(h, p, "not in this heap");
		return;
	}
	c = upg_page_class(h, p);
	if (likely(c >= 0)) {
		small_free(h, (unsigned)c, p);
		return;
	}
	s = checked_span(h, p);
	if (s)
		upg_span_free(h, s);
}

size_t upg_heap_usable_size(struct upg_heap *h, const void *p)
{
	struct span *s;
	int c;

	if (!p || !upg_heap_has(h, p))
		return 0;
	c = upg_page_class(h, p);
	if (likely(c >= 0))
		return upg_class_size[c];
	s = checked_span(h, p);
	return s ? (size_t)s->npages << UPG_PAGE_SHIFT : 0;
}

/* Resize a page run in place; Return: true if @p now holds @size bytes. */
static bool large_resize(struct upg_heap *h, struct span *s, size_t size,
			 bool zero)
{
	size_t old = (size_t)s->npages << UPG_PAGE_SHIFT;
	bool clean;

	if (!upg_span_resize(h, s, pages_for(size), &clean))
		return false;
	if (zero && size > old && !clean)
		memset((void *)(s->start + old), 0, size - old);
	atomic_fetch_add_explicit(&h->realloc_inplace, 1, memory_order_relaxed);
	return true;
}

/* A page run's size, or 0 (reported) if @p does not start one. */
static size_t large_size(struct upg_heap *h, void *p, size_t size,
			 bool *in_place)
{
	struct span *s = checked_span(h, p);

	if (!s)
		return 0;
	/* A block that shrinks to a small size moves down to a slab. */
	*in_place = size > UPG_SMALL_MAX && large_resize(h, s, size, false);
	return (size_t)s->npages << UPG_PAGE_SHIFT;
}

void *upg_heap_realloc(struct upg_heap *h, void *p, size_t size)
{
	bool in_place = false;
	size_t old;
	int c;
	void *q;

	if (!p)
		return upg_heap_malloc(h, size);
	c = upg_heap_has(h, p) ? upg_page_class(h, p) : -1;
	if (c >= 0) {
		old = upg_class_size[c];
		in_place = size <= UPG_SMALL_MAX &&
			   upg_size_class(size) == (unsigned)c;
	} else if (!(old = large_size(h, p, size, &in_place))) {
		errno = EINVAL;
		return NULL;
	}
	if (in_place)
		return p;
	q = upg_heap_malloc(h, size);
	if (!q)
		return NULL;
	memcpy(q, p, MIN(old, size));
	upg_heap_free(h, p);
	return q;
}

size_t upg_heap_resize_in_place(struct upg_heap *h, void *p, size_t size,
				bool zero)
{
	struct span *s;

	if (upg_page_class(h, p) >= 0)
		return upg_heap_usable_size(h, p);
	s = checked_span(h, p);
	if (s && size > UPG_SMALL_MAX)
		large_resize(h, s, size, zero);
	return upg_heap_usable_size(h, p);
}

/* ------------------------------------------------------------------ */
/* Heaps                                                               */
/* ------------------------------------------------------------------ */

bool upg_heap_owns(const struct upg_heap *h, const void *p)
{
	return upg_heap_has(h, p);
}

struct upg *upg_heap_runtime(struct upg_heap *h)
{
	return h->u;
}

/* Freed pages kept before a purge. */
static size_t dirty_limit(struct upg *u)
{
	if (u->p.free_dirty)
		return u->p.free_dirty >> UPG_PAGE_SHIFT;
	/* A little of the budget: freed pages are charged while kept. */
	return MAX(u->p.budget / 64, 1UL << 20) >> UPG_PAGE_SHIFT;
}

static int heap_init(struct upg_heap *h, struct upg *u, size_t reserve)
{
	void *base;
	int err;

	h->u = u;
	h->dirty_max = dirty_limit(u);
	for (unsigned c = 0; c < UPG_NCLASS; c++)
		if (pthread_mutex_init(&h->cls[c].lock, NULL))
			return -ENOMEM;
	err = upg_reserve(u, reserve ? reserve : u->p.reserve, &base);
	if (err)
		return err;
	h->base = (uintptr_t)base;
	h->end = h->base +
		 (((reserve ? reserve : u->p.reserve) + UPG_PAGE_SIZE - 1) &
		  UPG_PAGE_MASK);
	return upg_page_init(h);
}

int upg_heap_create(struct upg *u, size_t reserve, struct upg_heap **out)
{
	struct upg_heap *h;
	int err;

	upg_alloc_atfork_register();
	pthread_once(&class_once, classes_init);
	h = upg_map(sizeof(*h));
	if (!h)
		return upg_seterr(-ENOMEM, "upg_heap_create: out of memory");
	err = heap_init(h, u, reserve);
	if (err) {
		upg_heap_destroy(h);
		return err;
	}
	pthread_mutex_lock(&heaps_lock);
	h->next_heap = heaps;
	heaps = h;
	pthread_mutex_unlock(&heaps_lock);
	*out = h;
	return 0;
}

void upg_heap_destroy(struct upg_heap *h)
{
	struct upg_heap **pp;

	if (!h)
		return;
	pthread_mutex_lock(&heaps_lock);
	for (pp = &heaps; *pp && *pp != h; pp = &(*pp)->next_heap)
		;
	if (*pp)
		*pp = h->next_heap;
	pthread_mutex_unlock(&heaps_lock);
	upg_tcache_orphan(h);
	if (h->base)
		upg_release(h->u, (void *)h->base);
	if (h->map)
		upg_page_fini(h);
	for (unsigned c = 0; c < UPG_NCLASS; c++)
		pthread_mutex_destroy(&h->cls[c].lock);
	upg_unmap(h, sizeof(*h));
}

void upg_heaps_destroy(struct upg *u)
{
	struct upg_heap *h;

	do {
		pthread_mutex_lock(&heaps_lock);
		for (h = heaps; h && h->u != u; h = h->next_heap)
			;
		pthread_mutex_unlock(&heaps_lock);
		upg_heap_destroy(h);
	} while (h);
}

size_t upg_heap_trim(struct upg_heap *h)
{
	struct upg_tcache *tc = upg_tcache_get(h);

	if (tc)
		upg_tcache_flush(h, tc);
	return upg_span_purge(h);
}

void upg_heap_stats_get(struct upg_heap *h, struct upg_heap_stats *s)
{
	pthread_mutex_lock(&h->lock);
	s->mapped_bytes = h->top - h->base;
	s->active_bytes = (uint64_t)h->active_pages << UPG_PAGE_SHIFT;
	s->free_bytes = (uint64_t)h->free_pages << UPG_PAGE_SHIFT;
	s->dirty_bytes = (uint64_t)h->dirty_pages << UPG_PAGE_SHIFT;
	s->discarded_bytes = h->discarded_pages << UPG_PAGE_SHIFT;
	s->large_allocs = h->large_allocs;
	pthread_mutex_unlock(&h->lock);
	s->realloc_inplace = atomic_load(&h->realloc_inplace);
	s->invalid_frees = atomic_load(&h->invalid_frees);
}

/* ------------------------------------------------------------------ */
/* fork()                                                              */
/* ------------------------------------------------------------------ */

/*
 * No allocator lock may be held by another thread at fork: the child has
 * only the forking thread, and its first malloc would wait forever. So the
 * prepare handler takes every allocator lock in lock order, starting with
 * the default heap's creation lock (a fork during that creation waits for
 * it to finish: the child then finds the heap up), and the parent and
 * child handlers release them.
 *
 * pthread_atfork runs prepare handlers in reverse order of registration
 * and the others in order. The runtime's handlers are registered first
 * (upg_alloc_atfork_register), so the allocator takes its locks before the
 * runtime quiesces its threads (a thread holding a class lock may be
 * waiting for a handler, never the reverse), and in the child the runtime
 * is rebuilt before the allocator unlocks. Both are registered before any
 * heap exists (a constructor, or the first heap): a fork during creation
 * finds them in place.
 */

static void heap_lock_all(struct upg_heap *h)
{
	for (unsigned c = 0; c < UPG_NCLASS; c++)
		pthread_mutex_lock(&h->cls[c].lock);
	pthread_mutex_lock(&h->lock);
}

static void heap_unlock_all(struct upg_heap *h)
{
	pthread_mutex_unlock(&h->lock);
	for (unsigned c = UPG_NCLASS; c-- > 0;)
		pthread_mutex_unlock(&h->cls[c].lock);
}

static void fork_prepare(void)
{
	upg_front_fork_lock();
	pthread_mutex_lock(&heaps_lock);
	upg_tcache_fork_lock();
	for (struct upg_heap *h = heaps; h; h = h->next_heap)
		heap_lock_all(h);
}

static void fork_parent(void)
{
	for (struct upg_heap *h = heaps; h; h = h->next_heap)
		heap_unlock_all(h);
	upg_tcache_fork_unlock();
	pthread_mutex_unlock(&heaps_lock);
	upg_front_fork_unlock();
}

/*
 * The forking thread owns every lock: unlocking is valid. A purge another
 * thread had under way never finishes here: its spans stay out of use (a
 * leak, not a corruption), and purging resumes. The blocks in other
 * threads' caches go back to the slabs, once the class and page locks
 * are free and before the caches lock is (lock order).
 */
static void fork_child(void)
{
	struct upg_heap *h;

	for (h = heaps; h; h = h->next_heap) {
		atomic_store(&h->purging, false);
		heap_unlock_all(h);
	}
	for (h = heaps; h; h = h->next_heap)
		upg_tcache_fork_child(h);
	upg_tcache_fork_unlock();
	pthread_mutex_unlock(&heaps_lock);
	upg_front_fork_unlock();
}

static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

static void atfork_install(void)
{
	upg_internal_enter(); /* pthread_atfork allocates: from the arena */
	upg_runtime_atfork_register();
	if (pthread_atfork(fork_prepare, fork_parent, fork_child))
		upg_warn("allocator: pthread_atfork failed: a fork() child "
			 "may deadlock in malloc");
	upg_internal_leave();
}

void upg_alloc_atfork_register(void)
{
	pthread_once(&atfork_once, atfork_install);
}
