/* SPDX-License-Identifier: MIT */
/*
 * The allocator's page layer: spans of whole pages carved from one managed
 * region, for slabs and large blocks.
 *
 * Free spans sit in bins by size (exact up to 127 pages, then one bin per
 * power of two) and are coalesced with free neighbours at once, found
 * through the page map's first/last entries. Address space above `top`
 * was never used and reads as zeros.
 *
 * Freed pages keep their contents until purged: free spans that may hold
 * data are on the dirty list, and when it exceeds dirty_max pages the whole
 * list is discarded with upg_discard() (their contents are never compressed
 * or written out again). Purging runs outside the page lock: the spans are
 * marked SPAN_PURGING so nobody allocates or merges them meanwhile.
 *
 * Locking: everything here under heap->lock, which is never held while
 * managed memory is touched or the runtime is called. Descriptors are
 * never unmapped while the heap lives, so a stale map entry always points
 * to readable memory.
 */
#include <errno.h>
#include <string.h>

#include "alloc.h"
#include "runtime.h"

#define DESC_CHUNK (64 * 1024)

static struct span *desc_get(struct upg_heap *h)
{
	struct span *s = h->desc_free;

	if (!s) {
		struct span *a = upg_map(DESC_CHUNK);

		if (!a)
			return NULL;
		/* The first descriptor of a chunk links the chunks. */
		a[0].next = h->desc_chunks;
		h->desc_chunks = a;
		for (size_t i = 1; i < DESC_CHUNK / sizeof(*a); i++) {
			a[i].next = h->desc_free;
			h->desc_free = &a[i];
		}
		s = h->desc_free;
	}
	h->desc_free = s->next;
	memset(s, 0, sizeof(*s));
	return s;
}

static void desc_put(struct upg_heap *h, struct span *s)
{
	s->kind = SPAN_NONE;
	s->npages = 0;
	s->next = h->desc_free;
	h->desc_free = s;
}

static unsigned bin_of(size_t npages)
{
	if (npages < UPG_NBINS_EXACT)
		return (unsigned)npages;
	return UPG_NBINS_EXACT +
	       (unsigned)(63 - __builtin_clzl(npages) - 7); /* log2 - 7 */
}

static void bin_insert(struct upg_heap *h, struct span *s)
{
	unsigned b = bin_of(s->npages);

	s->prev = NULL;
	s->next = h->bins[b];
	if (s->next)
		s->next->prev = s;
	h->bins[b] = s;
	h->binmap[b / 64] |= 1ULL << (b % 64);
	h->free_pages += s->npages;
	if (!s->clean) {
		s->dprev = NULL;
		s->dnext = h->dirty;
		if (s->dnext)
			s->dnext->dprev = s;
		h->dirty = s;
		s->dirty_listed = true;
		h->dirty_pages += s->npages;
	}
}

static void bin_remove(struct upg_heap *h, struct span *s)
{
	unsigned b = bin_of(s->npages);

	if (s->prev)
		s->prev->next = s->next;
	else
		h->bins[b] = s->next;
	if (s->next)
		s->next->prev = s->prev;
	if (!h->bins[b])
		h->binmap[b / 64] &= ~(1ULL << (b % 64));
	h->free_pages -= s->npages;
	if (s->dirty_listed) {
		if (s->dprev)
			s->dprev->dnext = s->dnext;
		else
			h->dirty = s->dnext;
		if (s->dnext)
			s->dnext->dprev = s->dprev;
		s->dirty_listed = false;
		h->dirty_pages -= s->npages;
	}
}

static void map_ends(struct upg_heap *h, struct span *s)
{
	size_t i = page_index(h, s->start);

	h->map[i] = s;
	h->map[i + s->npages - 1] = s;
}

static void map_all(struct upg_heap *h, struct span *s)
{
	size_t i = page_index(h, s->start);

	for (size_t k = 0; k < s->npages; k++)
		h->map[i + k] = s;
}

static uintptr_t span_end(const struct span *s)
{
	return s->start + ((uintptr_t)s->npages << UPG_PAGE_SHIFT);
}

/* The free span right before (@left) or after @s, or NULL. */
static struct span *adjacent_free(struct upg_heap *h, struct span *s, bool left)
{
	struct span *n;

	if (left) {
		if (s->start == h->base)
			return NULL;
		n = h->map[page_index(h, s->start) - 1];
		return n && n->kind == SPAN_FREE && span_end(n) == s->start
			       ? n
			       : NULL;
	}
	if (span_end(s) >= h->top)
		return NULL;
	n = h->map[page_index(h, span_end(s))];
	return n && n->kind == SPAN_FREE && n->start == span_end(s) ? n : NULL;
}

/*
 * The neighbour @s merges with. Only spans alike (both clean or both
 * dirty) merge: a merged span is purged as a whole, and discarding a large
 * clean span again for a small dirty one costs more than keeping them
 * apart until the next purge makes both clean.
 */
static struct span *free_neighbour(struct upg_heap *h, struct span *s,
				   bool left)
{
	struct span *n = adjacent_free(h, s, left);

	return n && n->clean == s->clean ? n : NULL;
}

/* Insert free span @s (kind and clean set), merging with its neighbours. */
static void free_insert(struct upg_heap *h, struct span *s)
{
	struct span *n = free_neighbour(h, s, true);

	if (n) {
		bin_remove(h, n);
		n->npages += s->npages;
		n->clean = n->clean && s->clean;
		desc_put(h, s);
		s = n;
	}
	n = free_neighbour(h, s, false);
	if (n) {
		bin_remove(h, n);
		s->npages += n->npages;
		s->clean = s->clean && n->clean;
		desc_put(h, n);
	}
	map_ends(h, s);
	bin_insert(h, s);
}

/* A free span of at least @n pages, removed from its bin, or NULL. */
static struct span *find_fit(struct upg_heap *h, size_t n)
{
	unsigned b = bin_of(n);

	/* The first bin may hold smaller spans (log bins): best fit there. */
	if (b >= UPG_NBINS_EXACT) {
		struct span *best = NULL;
		int budget = 32;

		for (struct span *s = h->bins[b]; s && budget--; s = s->next)
			if (s->npages >= n &&
			    (!best || s->npages < best->npages))
				best = s;
		if (best) {
			bin_remove(h, best);
			return best;
		}
		b++;
	}
	for (unsigned w = b / 64; w < ARRAY_SIZE(h->binmap); w++) {
		uint64_t m = h->binmap[w];

		if (w == b / 64)
			m &= ~0ULL << (b % 64);
		if (m) {
			struct span *s = h->bins[w * 64 + __builtin_ctzll(m)];

			bin_remove(h, s);
			return s;
		}
	}
	return NULL;
}

static struct span *from_top(struct upg_heap *h, size_t n)
{
	struct span *s;

	if (h->end - h->top < (n << UPG_PAGE_SHIFT))
		return NULL;
	s = desc_get(h);
	if (!s)
		return NULL;
	s->start = h->top;
	s->npages = (uint32_t)n;
	s->clean = true;
	h->top += n << UPG_PAGE_SHIFT;
	return s;
}

/* Cut the first @n pages off @s into a new free span; @s keeps the rest. */
static void cut_front(struct upg_heap *h, struct span *s, size_t n)
{
	struct span *f;

	if (!n)
		return;
	f = desc_get(h);
	if (!f)
		return; /* keep the pages: no descriptor, no loss */
	f->start = s->start;
	f->npages = (uint32_t)n;
	f->kind = SPAN_FREE;
	f->clean = s->clean;
	s->start += n << UPG_PAGE_SHIFT;
	s->npages -= (uint32_t)n;
	free_insert(h, f);
}

/* Give the pages of @s past @n back as a free span. */
static void cut_back(struct upg_heap *h, struct span *s, size_t n)
{
	struct span *t;

	if (s->npages <= n || !(t = desc_get(h)))
		return;
	t->start = s->start + (n << UPG_PAGE_SHIFT);
	t->npages = s->npages - (uint32_t)n;
	t->kind = SPAN_FREE;
	t->clean = s->clean;
	s->npages = (uint32_t)n;
	free_insert(h, t);
}

struct span *upg_span_alloc(struct upg_heap *h, size_t npages,
			    size_t align_pages, int kind, bool *clean)
{
	size_t want = npages + align_pages - 1;
	struct span *s;
	uintptr_t mask = (align_pages << UPG_PAGE_SHIFT) - 1;

	if (npages > UINT32_MAX / 2 || want > UINT32_MAX / 2)
		return NULL;
	pthread_mutex_lock(&h->lock);
	s = find_fit(h, want);
	if (!s)
		s = from_top(h, want);
	if (!s)
		goto out_unlock;
	s->kind = SPAN_LARGE; /* not free: neighbours must not merge it */
	cut_front(h, s,
		  ((mask + 1 - (s->start & mask)) & mask) >> UPG_PAGE_SHIFT);
	cut_back(h, s, npages);
	s->kind = (uint8_t)kind;
	*clean = s->clean;
	if (kind == SPAN_SLAB)
		map_all(h, s);
	else
		map_ends(h, s);
	h->active_pages += s->npages;
	h->large_allocs += kind == SPAN_LARGE;
out_unlock:
	pthread_mutex_unlock(&h->lock);
	return s;
}

void upg_span_free(struct upg_heap *h, struct span *s)
{
	bool purge;

	pthread_mutex_lock(&h->lock);
	h->active_pages -= s->npages;
	s->kind = SPAN_FREE;
	s->clean = false;
	free_insert(h, s);
	purge = h->dirty_pages > h->dirty_max;
	pthread_mutex_unlock(&h->lock);
	/* A runtime thread must not discard: it may be a fault handler. */
	if (purge && !upg_internal_thread())
		upg_span_purge(h);
}

/* Take @extra pages right after @s from top or a free neighbour. */
static bool grow_right(struct upg_heap *h, struct span *s, size_t extra,
		       bool *clean)
{
	struct span *n;

	if (span_end(s) == h->top) {
		if (h->end - h->top < (extra << UPG_PAGE_SHIFT))
			return false;
		h->top += extra << UPG_PAGE_SHIFT;
		*clean = true;
		return true;
	}
	n = adjacent_free(h, s, false);
	if (!n || n->npages < extra)
		return false;
	bin_remove(h, n);
	*clean = n->clean;
	if (n->npages == extra) {
		desc_put(h, n);
		return true;
	}
	n->start += extra << UPG_PAGE_SHIFT;
	n->npages -= (uint32_t)extra;
	map_ends(h, n);
	bin_insert(h, n);
	return true;
}

bool upg_span_resize(struct upg_heap *h, struct span *s, size_t npages,
		     bool *clean)
{
	bool ok = true;

	*clean = true;
	if (npages > UINT32_MAX / 2)
		return false;
	pthread_mutex_lock(&h->lock);
	if (npages < s->npages) {
		size_t old = s->npages;

		s->clean = false; /* the tail held data */
		cut_back(h, s, npages);
		h->active_pages -= old - s->npages;
	} else if (npages > s->npages) {
		ok = grow_right(h, s, npages - s->npages, clean);
		if (ok) {
			h->active_pages += npages - s->npages;
			s->npages = (uint32_t)npages;
		}
	}
	map_ends(h, s);
	pthread_mutex_unlock(&h->lock);
	return ok;
}

/* Detach every dirty span: they become SPAN_PURGING, linked by ->next. */
static struct span *detach_dirty(struct upg_heap *h)
{
	struct span *list = NULL;

	while (h->dirty) {
		struct span *s = h->dirty;

		bin_remove(h, s);
		s->kind = SPAN_PURGING;
		s->next = list;
		list = s;
	}
	return list;
}

size_t upg_span_purge(struct upg_heap *h)
{
	struct span *list, *next;
	size_t n = 0;

	if (atomic_exchange(&h->purging, true))
		return 0; /* another thread is at it */
	pthread_mutex_lock(&h->lock);
	list = detach_dirty(h);
	pthread_mutex_unlock(&h->lock);
	for (struct span *s = list; s; s = s->next) {
		int err = upg_discard(h->u, (void *)s->start,
				      (size_t)s->npages << UPG_PAGE_SHIFT);

		if (err)
			upg_warn("allocator: discard of %u pages at %#lx: %s",
				 s->npages, (unsigned long)s->start,
				 upg_last_error());
		n += s->npages;
	}
	pthread_mutex_lock(&h->lock);
	for (struct span *s = list; s; s = next) {
		next = s->next;
		s->kind = SPAN_FREE;
		s->clean = true;
		free_insert(h, s);
	}
	h->discarded_pages += n;
	pthread_mutex_unlock(&h->lock);
	atomic_store(&h->purging, false);
	return n;
}

int upg_page_init(struct upg_heap *h)
{
	size_t npages = (h->end - h->base) >> UPG_PAGE_SHIFT;

	h->map = upg_map(npages * sizeof(*h->map));
	h->pcls = upg_map(npages);
	if (!h->map || !h->pcls)
		return -ENOMEM;
	h->top = h->base;
	return pthread_mutex_init(&h->lock, NULL) ? -ENOMEM : 0;
}

void upg_page_fini(struct upg_heap *h)
{
	size_t npages = (h->end - h->base) >> UPG_PAGE_SHIFT;

	struct span *c, *next;

	for (c = h->desc_chunks; c; c = next) {
		next = c->next;
		upg_unmap(c, DESC_CHUNK);
	}
	upg_unmap(h->map, npages * sizeof(*h->map));
	if (h->pcls)
		upg_unmap(h->pcls, npages);
	pthread_mutex_destroy(&h->lock);
}
