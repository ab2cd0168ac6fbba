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
 * Thread caches: one per thread and heap, found through a thread-local
 * "last used" pointer (the fast path) or the heap's pthread key, whose
 * destructor flushes the cache when the thread exits. No lock on the fast
 * path; a cache refills or flushes half its capacity under the class lock.
 * After its caches are flushed an exiting thread allocates uncached.
 *
 * Locking: see alloc.h. fork(): a handler registered after the first
 * heap's runtime takes every allocator lock before fork and releases them
 * in both processes, so no lock is held across fork.
 */
#include <errno.h>
#include <string.h>

#include "alloc.h"
#include "front.h"
#include "runtime.h"

uint32_t upg_class_size[UPG_NCLASS];
static uint16_t class_pages[UPG_NCLASS];
static uint16_t class_objs[UPG_NCLASS];
static uint16_t class_cap[UPG_NCLASS]; /* thread cache slots */
static size_t tc_slots;
static uint8_t small_class[1024 / 16 + 1]; /* class of n <= 1024 */
static pthread_once_t class_once = PTHREAD_ONCE_INIT;

struct tbin {
	uint32_t n, cap;
	void **slot;
};

struct upg_tcache {
	struct upg_heap *h;
	uint64_t heap_id;
	struct upg_tcache *next; /* spare list */
	struct tbin bin[UPG_NCLASS];
	void *slots[];
};

#define IE __attribute__((tls_model("initial-exec")))
static __thread struct upg_tcache *tc_last IE;
static __thread bool tc_dead IE;  /* exiting: caches flushed */
static __thread bool tc_setup IE; /* pthread_setspecific may allocate */

/* Spare thread caches, never unmapped: a stale tc_last stays readable. */
static pthread_mutex_t tc_lock = PTHREAD_MUTEX_INITIALIZER;
static struct upg_tcache *tc_spare;

static pthread_mutex_t heaps_lock = PTHREAD_MUTEX_INITIALIZER;
static struct upg_heap *heaps;
static _Atomic uint64_t heap_ids;
static atomic_bool atfork_done;

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
		class_cap[c] = upg_class_size[c] <= 512	   ? 64
			       : upg_class_size[c] <= 4096 ? 32
							   : 8;
		tc_slots += class_cap[c];
	}
	for (unsigned n = 0; n <= 1024; n += 16) {
		unsigned c = 0;

		while (upg_class_size[c] < n)
			c++;
		small_class[n / 16] = (uint8_t)c;
	}
}

unsigned upg_size_class(size_t n)
{
	unsigned k;

	if (n <= 1024)
		return small_class[(n + 15) / 16];
	k = 63 - (unsigned)__builtin_clzl(n - 1); /* 2^k < n <= 2^(k+1) */
	return 8 + (k - 7) * 4 + (unsigned)((n - 1 - (1UL << k)) >> (k - 2));
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
	size_t size = upg_class_size[s->cls], off = (uintptr_t)p - s->start;
	size_t i = off / size;

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
	return s;
}

/* Give @n objects of class @c back to their slabs. */
static void class_put(struct upg_heap *h, unsigned c, void **objs, unsigned n)
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
/* Thread caches                                                       */
/* ------------------------------------------------------------------ */

static size_t tcache_bytes(void)
{
	return sizeof(struct upg_tcache) + tc_slots * sizeof(void *);
}

static struct upg_tcache *tcache_new(struct upg_heap *h)
{
	struct upg_tcache *tc;
	void **slot;

	pthread_mutex_lock(&tc_lock);
	tc = tc_spare;
	if (tc)
		tc_spare = tc->next;
	pthread_mutex_unlock(&tc_lock);
	if (!tc && !(tc = upg_map(tcache_bytes())))
		return NULL;
	tc->h = h;
	tc->heap_id = h->id;
	slot = tc->slots;
	for (unsigned c = 0; c < UPG_NCLASS; c++) {
		tc->bin[c] = (struct tbin){ 0, class_cap[c], slot };
		slot += class_cap[c];
	}
	return tc;
}

/* Flush the oldest @n objects of bin @c. */
static void tbin_flush(struct upg_tcache *tc, unsigned c, unsigned n)
{
	struct tbin *b = &tc->bin[c];

	class_put(tc->h, c, b->slot, n);
	memmove(b->slot, b->slot + n, (b->n - n) * sizeof(void *));
	b->n -= n;
}

static void tcache_flush(struct upg_tcache *tc)
{
	for (unsigned c = 0; c < UPG_NCLASS; c++)
		if (tc->bin[c].n)
			tbin_flush(tc, c, tc->bin[c].n);
}

static void tcache_release(struct upg_tcache *tc)
{
	if (tc_last == tc)
		tc_last = NULL;
	tc->h = NULL;
	tc->heap_id = 0;
	pthread_mutex_lock(&tc_lock);
	tc->next = tc_spare;
	tc_spare = tc;
	pthread_mutex_unlock(&tc_lock);
}

/* pthread key destructor: the thread is exiting. */
static void tcache_exit(void *arg)
{
	struct upg_tcache *tc = arg;

	tc_dead = true;
	tcache_flush(tc);
	tcache_release(tc);
}

static struct upg_tcache *tcache_slow(struct upg_heap *h)
{
	struct upg_tcache *tc;

	if (tc_dead || tc_setup || !h->key_ok)
		return NULL;
	tc = pthread_getspecific(h->key);
	if (!tc) {
		tc = tcache_new(h);
		if (!tc)
			return NULL;
		tc_setup = true;
		if (pthread_setspecific(h->key, tc)) {
			tc_setup = false;
			tcache_release(tc);
			return NULL;
		}
		tc_setup = false;
	}
	tc_last = tc;
	return tc;
}

static inline struct upg_tcache *tcache_get(struct upg_heap *h)
{
	struct upg_tcache *tc = tc_last;

	if (likely(tc && tc->h == h && tc->heap_id == h->id))
		return tc;
	return tcache_slow(h);
}

/* ------------------------------------------------------------------ */
/* Small and large blocks                                              */
/* ------------------------------------------------------------------ */

static void *small_alloc(struct upg_heap *h, unsigned c)
{
	struct upg_tcache *tc = tcache_get(h);
	struct tbin *b;
	void *p;

	if (unlikely(!tc))
		return class_take(h, c, &p, 1) ? p : NULL;
	b = &tc->bin[c];
	if (likely(b->n))
		return b->slot[--b->n];
	b->n = class_take(h, c, b->slot, b->cap / 2);
	return b->n ? b->slot[--b->n] : NULL;
}

static void small_free(struct upg_heap *h, struct span *s, void *p)
{
	struct upg_tcache *tc = tcache_get(h);
	struct tbin *b;

	if (unlikely(!tc)) {
		class_put(h, s->cls, &p, 1);
		return;
	}
	b = &tc->bin[s->cls];
	if (unlikely(b->n == b->cap))
		tbin_flush(tc, s->cls, b->cap / 2);
	b->slot[b->n++] = p;
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

static struct span *checked_span(struct upg_heap *h, const void *p)
{
	struct span *s = span_of(h, p);

	if (s && s->kind == SPAN_SLAB)
		return s;
	if (s && s->kind == SPAN_LARGE && s->start == (uintptr_t)p)
		return s;
	invalid_free(h, p, "not an allocated block");
	return NULL;
}

void upg_heap_free(struct upg_heap *h, void *p)
{
	struct span *s;

	if (!p)
		return;
	s = checked_span(h, p);
	if (!s)
		return;
	if (likely(s->kind == SPAN_SLAB))
		small_free(h, s, p);
	else
		upg_span_free(h, s);
}

size_t upg_heap_usable_size(struct upg_heap *h, const void *p)
{
	struct span *s;

	if (!p || !(s = checked_span(h, p)))
		return 0;
	if (s->kind == SPAN_SLAB)
		return upg_class_size[s->cls];
	return (size_t)s->npages << UPG_PAGE_SHIFT;
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

/* Whether @p (in @s) can hold @size bytes without moving. */
static bool fits_in_place(struct upg_heap *h, struct span *s, size_t size)
{
	if (s->kind == SPAN_SLAB)
		return size <= UPG_SMALL_MAX && upg_size_class(size) == s->cls;
	if (size <= UPG_SMALL_MAX)
		return false; /* move down to a slab */
	return large_resize(h, s, size, false);
}

void *upg_heap_realloc(struct upg_heap *h, void *p, size_t size)
{
	struct span *s;
	size_t old;
	void *q;

	if (!p)
		return upg_heap_malloc(h, size);
	s = checked_span(h, p);
	if (!s) {
		errno = EINVAL;
		return NULL;
	}
	if (fits_in_place(h, s, size))
		return p;
	old = upg_heap_usable_size(h, p);
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
	struct span *s = checked_span(h, p);

	if (s && s->kind == SPAN_LARGE && size > UPG_SMALL_MAX)
		large_resize(h, s, size, zero);
	return upg_heap_usable_size(h, p);
}

/* ------------------------------------------------------------------ */
/* Heaps                                                               */
/* ------------------------------------------------------------------ */

bool upg_heap_owns(const struct upg_heap *h, const void *p)
{
	return (uintptr_t)p >= h->base && (uintptr_t)p < h->end;
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
	h->id = atomic_fetch_add(&heap_ids, 1) + 1;
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
	err = upg_page_init(h);
	if (err)
		return err;
	h->key_ok = pthread_key_create(&h->key, tcache_exit) == 0;
	return 0;
}

int upg_heap_create(struct upg *u, size_t reserve, struct upg_heap **out)
{
	struct upg_heap *h;
	int err;

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
	upg_heap_atfork_register();
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
	if (h->key_ok) {
		struct upg_tcache *tc = pthread_getspecific(h->key);

		if (tc)
			tcache_release(tc);
		pthread_key_delete(h->key);
	}
	if (h->base)
		upg_release(h->u, (void *)h->base);
	if (h->map)
		upg_page_fini(h);
	for (unsigned c = 0; c < UPG_NCLASS; c++)
		pthread_mutex_destroy(&h->cls[c].lock);
	upg_unmap(h, sizeof(*h));
}

size_t upg_heap_trim(struct upg_heap *h)
{
	struct upg_tcache *tc = tcache_get(h);

	if (tc)
		tcache_flush(tc);
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

void upg_heap_lock_all(struct upg_heap *h)
{
	for (unsigned c = 0; c < UPG_NCLASS; c++)
		pthread_mutex_lock(&h->cls[c].lock);
	pthread_mutex_lock(&h->lock);
}

void upg_heap_unlock_all(struct upg_heap *h)
{
	pthread_mutex_unlock(&h->lock);
	for (unsigned c = UPG_NCLASS; c-- > 0;)
		pthread_mutex_unlock(&h->cls[c].lock);
}

static void fork_prepare(void)
{
	pthread_mutex_lock(&heaps_lock);
	for (struct upg_heap *h = heaps; h; h = h->next_heap)
		upg_heap_lock_all(h);
	pthread_mutex_lock(&tc_lock);
}

static void fork_parent(void)
{
	pthread_mutex_unlock(&tc_lock);
	for (struct upg_heap *h = heaps; h; h = h->next_heap)
		upg_heap_unlock_all(h);
	pthread_mutex_unlock(&heaps_lock);
}

/*
 * The child has only the forking thread, which owns every lock: unlocking
 * is valid. A purge another thread had under way never finishes here: its
 * spans stay out of use (a leak, not a corruption), and purging resumes.
 */
static void fork_child(void)
{
	for (struct upg_heap *h = heaps; h; h = h->next_heap)
		atomic_store(&h->purging, false);
	fork_parent();
}

/*
 * Registered once, after the first heap's runtime exists: pthread_atfork
 * runs prepare handlers in reverse order of registration, so the allocator
 * takes its locks before the runtime quiesces its threads, and in the child
 * the runtime is rebuilt before the allocator unlocks.
 */
void upg_heap_atfork_register(void)
{
	if (atomic_exchange(&atfork_done, true))
		return;
	if (pthread_atfork(fork_prepare, fork_parent, fork_child))
		upg_warn("allocator: pthread_atfork failed: a fork() child "
			 "may deadlock in malloc");
}
