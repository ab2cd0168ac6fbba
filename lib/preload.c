/* SPDX-License-Identifier: MIT */
/*
 * libupager-preload.so: the malloc family of an unmodified program served
 * from upager's default heap, so that its whole heap is paged under
 * UPG_BUDGET. Started with LD_PRELOAD=/abs/path/libupager-preload.so (see
 * `upagerctl run`).
 *
 * Exports glibc's malloc API (with the __libc_* aliases and the mallinfo
 * family) and jemalloc's non-standard API (mallocx ... mallctl), used by
 * programs linked against jemalloc such as Debian's redis-server.
 *
 * Where a block comes from (front.h): the default heap, created lazily on
 * first use; the bootstrap arena on the runtime's own threads and while
 * the heap is being created (pthread_create allocates); glibc's malloc if
 * the runtime cannot start (one error line, then the program runs
 * unmanaged). Pointers we did not make (glibc's, from before a fallback or
 * from the dynamic loader) go back to glibc through its __libc_* entry
 * points, looked up with dlsym(RTLD_NEXT).
 */
#include <dlfcn.h>
#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "alloc.h"
#include "front.h"
#include "runtime.h"

#define EXPORT __attribute__((visibility("default")))

struct libc_fns {
	void *(*malloc)(size_t);
	void (*free)(void *);
	void *(*calloc)(size_t, size_t);
	void *(*realloc)(void *, size_t);
	void *(*memalign)(size_t, size_t);
	size_t (*usable)(void *);
};

static struct libc_fns libc;
static _Atomic bool libc_ready;

/*
 * dlsym may allocate; that lands in the bootstrap arena or the heap, never
 * here. Two threads racing store the same values.
 */
static const struct libc_fns *real(void)
{
	if (likely(atomic_load_explicit(&libc_ready, memory_order_acquire)))
		return &libc;
	libc.malloc = (void *(*)(size_t))dlsym(RTLD_NEXT, "__libc_malloc");
	libc.free = (void (*)(void *))dlsym(RTLD_NEXT, "__libc_free");
	libc.calloc =
		(void *(*)(size_t, size_t))dlsym(RTLD_NEXT, "__libc_calloc");
	libc.realloc =
		(void *(*)(void *, size_t))dlsym(RTLD_NEXT, "__libc_realloc");
	libc.memalign =
		(void *(*)(size_t, size_t))dlsym(RTLD_NEXT, "__libc_memalign");
	libc.usable = (size_t(*)(void *))dlsym(RTLD_NEXT, "malloc_usable_size");
	atomic_store_explicit(&libc_ready, true, memory_order_release);
	return &libc;
}

static void announce_fallback(void)
{
	char buf[512];
	int n = snprintf(buf, sizeof(buf),
			 "upager: error: cannot page this program's heap "
			 "(%s); running it with glibc malloc\n",
			 upg_front_error());

	if (n > 0 && write(STDERR_FILENO, buf, (size_t)MIN(n, 511)) < 0)
		return; /* nowhere else to say it */
}

/*
 * The source for a new block: the heap (in *@h), the arena or glibc
 * (UPG_FRONT_FAILED). Every caller goes through here so that the one call
 * that finds the runtime refused prints the error line.
 */
static inline enum upg_front source(struct upg_heap **h)
{
	enum upg_front f = upg_front(h);

	if (unlikely(f == UPG_FRONT_FAILED_NOW)) {
		announce_fallback();
		f = UPG_FRONT_FAILED;
	}
	return f;
}

static void *alloc_aligned(size_t align, size_t size)
{
	struct upg_heap *h;

	switch (source(&h)) {
	case UPG_FRONT_HEAP:
		return align <= 16 ? upg_heap_malloc(h, size)
				   : upg_heap_aligned_alloc(h, align, size);
	case UPG_FRONT_BOOT:
		return upg_boot_aligned(align, size);
	default:
		return align <= 16 ? real()->malloc(size)
				   : real()->memalign(align, size);
	}
}

static __attribute__((noinline)) void *malloc_slow(size_t size)
{
	struct upg_heap *h;

	if (likely(source(&h) == UPG_FRONT_HEAP))
		return upg_heap_malloc(h, size);
	return alloc_aligned(16, size);
}

/* The fast paths (alloc.h): no lock, no atomic read-modify-write. */
EXPORT void *malloc(size_t size)
{
	void *p = upg_tc_malloc(size);

	if (likely(p))
		return p;
	return malloc_slow(size);
}

static __attribute__((noinline)) void free_slow(void *p)
{
	if (!p)
		return;
	if (upg_boot_owns(p))
		upg_boot_free(p);
	else if (real()->free)
		real()->free(p);
}

EXPORT void free(void *p)
{
	struct upg_heap *h = upg_dheap_get();

	if (likely(h && upg_heap_has(h, p))) {
		if (likely(upg_tc_free(h, p)))
			return;
		upg_heap_free(h, p);
		return;
	}
	free_slow(p);
}

EXPORT void *calloc(size_t n, size_t size)
{
	struct upg_heap *h;
	size_t total;
	void *p;

	if (__builtin_mul_overflow(n, size, &total)) {
		errno = ENOMEM;
		return NULL;
	}
	p = upg_tc_malloc(total);
	if (likely(p)) {
		memset(p, 0, total);
		return p;
	}
	if (likely(source(&h) == UPG_FRONT_HEAP))
		return upg_heap_calloc(h, n, size);
	p = alloc_aligned(16, total);
	/* glibc's and the arena's fresh memory need not be zero here. */
	if (p)
		memset(p, 0, total);
	return p;
}

EXPORT size_t malloc_usable_size(void *p)
{
	struct upg_heap *h = upg_front_heap_if_ready();
	int c;

	if (likely(h && upg_heap_has(h, p))) {
		c = upg_page_class(h, p);
		if (likely(c >= 0))
			return upg_class_size[c];
		return upg_heap_usable_size(h, p);
	}
	if (!p)
		return 0;
	if (upg_boot_owns(p))
		return upg_boot_usable_size(p);
	return real()->usable ? real()->usable(p) : 0;
}

/* Move @p (any owner) to a new block of @size from the current source. */
static void *move_block(void *p, size_t size)
{
	size_t old = malloc_usable_size(p);
	void *q = malloc(size);

	if (!q)
		return NULL;
	memcpy(q, p, MIN(old, size));
	free(p);
	return q;
}

EXPORT void *realloc(void *p, size_t size)
{
	struct upg_heap *h = upg_front_heap_if_ready();

	if (!p)
		return malloc(size);
	if (!size) { /* glibc frees and returns NULL */
		free(p);
		return NULL;
	}
	if (likely(h && upg_heap_has(h, p)))
		return upg_heap_realloc(h, p, size);
	if (upg_boot_owns(p)) {
		if (source(&h) == UPG_FRONT_BOOT)
			return upg_boot_realloc(p, size);
		return move_block(p, size);
	}
	return real()->realloc ? real()->realloc(p, size) : NULL;
}

EXPORT void *reallocarray(void *p, size_t n, size_t size)
{
	size_t total;

	if (__builtin_mul_overflow(n, size, &total)) {
		errno = ENOMEM;
		return NULL;
	}
	return realloc(p, total);
}

static bool pow2(size_t a)
{
	return a && !(a & (a - 1));
}

EXPORT int posix_memalign(void **out, size_t align, size_t size)
{
	void *p;

	if (!pow2(align) || align % sizeof(void *))
		return EINVAL;
	p = alloc_aligned(align, size);
	if (!p)
		return ENOMEM;
	*out = p;
	return 0;
}

EXPORT void *aligned_alloc(size_t align, size_t size)
{
	if (!pow2(align)) {
		errno = EINVAL;
		return NULL;
	}
	return alloc_aligned(align, size);
}

EXPORT void *memalign(size_t align, size_t size)
{
	/* glibc: not a power of two is rounded up to one. */
	if (!pow2(align)) {
		if (align > SIZE_MAX / 2) {
			errno = EINVAL;
			return NULL;
		}
		align = align <= 1 ? 1 : 1UL << (64 - __builtin_clzl(align));
	}
	return alloc_aligned(align, size);
}

EXPORT void *valloc(size_t size)
{
	return alloc_aligned(UPG_PAGE_SIZE, size);
}

EXPORT void *pvalloc(size_t size)
{
	if (size > SIZE_MAX - UPG_PAGE_SIZE) {
		errno = ENOMEM;
		return NULL;
	}
	return alloc_aligned(UPG_PAGE_SIZE, (MAX(size, 1) + UPG_PAGE_SIZE - 1) &
						    UPG_PAGE_MASK);
}

/*
 * pthread_create() allocates the new thread's DTV (the table of its TLS
 * blocks) with malloc, and glibc reuses it with the thread's stack. A fork
 * child rebuilding its runtime starts its fault handlers on cached stacks
 * of threads that the fork left behind, and pthread_create writes their
 * DTVs before any handler runs: a DTV in an evicted page of managed memory
 * hung redis's BGSAVE child there. So whatever thread creation allocates
 * comes from the bootstrap arena (upg_internal_enter), never managed.
 */
typedef int (*create_fn)(pthread_t *, const pthread_attr_t *, void *(*)(void *),
			 void *);

EXPORT int pthread_create(pthread_t *t, const pthread_attr_t *attr,
			  void *(*fn)(void *), void *arg)
{
	static _Atomic(create_fn) next;
	create_fn create;
	int err;

	upg_internal_enter(); /* dlsym allocates too */
	create = atomic_load_explicit(&next, memory_order_relaxed);
	if (unlikely(!create)) {
		create = (create_fn)dlsym(RTLD_NEXT, "pthread_create");
		atomic_store_explicit(&next, create, memory_order_relaxed);
	}
	err = create ? create(t, attr, fn, arg) : EAGAIN;
	upg_internal_leave();
	return err;
}

void cfree(void *p); /* removed from glibc's headers, still exported */
EXPORT void cfree(void *p)
{
	free(p);
}

/* glibc's internal names, which some programs and libraries call. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmissing-attributes"
EXPORT void *__libc_malloc(size_t) __attribute__((alias("malloc")));
EXPORT void __libc_free(void *) __attribute__((alias("free")));
EXPORT void *__libc_calloc(size_t, size_t) __attribute__((alias("calloc")));
EXPORT void *__libc_realloc(void *, size_t) __attribute__((alias("realloc")));
EXPORT void *__libc_memalign(size_t, size_t) __attribute__((alias("memalign")));
EXPORT void *__libc_valloc(size_t) __attribute__((alias("valloc")));
EXPORT void *__libc_pvalloc(size_t) __attribute__((alias("pvalloc")));
#pragma GCC diagnostic pop

/* ------------------------------------------------------------------ */
/* glibc's tuning and statistics entry points                          */
/* ------------------------------------------------------------------ */

EXPORT int mallopt(int param, int value)
{
	(void)param;
	(void)value;
	return 1; /* accepted; nothing to tune */
}

EXPORT int malloc_trim(size_t pad)
{
	struct upg_heap *h = upg_front_heap_if_ready();

	(void)pad;
	return h && upg_heap_trim(h) > 0;
}

static void heap_stats(struct upg_heap_stats *s)
{
	struct upg_heap *h = upg_front_heap_if_ready();

	memset(s, 0, sizeof(*s));
	if (h)
		upg_heap_stats_get(h, s);
}

EXPORT struct mallinfo2 mallinfo2(void)
{
	struct mallinfo2 m = { 0 };
	struct upg_heap_stats s;

	heap_stats(&s);
	m.arena = s.mapped_bytes;
	m.uordblks = s.active_bytes;
	m.fordblks = s.free_bytes;
	m.keepcost = s.dirty_bytes;
	return m;
}

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
EXPORT struct mallinfo mallinfo(void)
{
	struct mallinfo2 m2 = mallinfo2();
	struct mallinfo m = { 0 };

	m.arena = (int)MIN(m2.arena, (size_t)INT32_MAX);
	m.uordblks = (int)MIN(m2.uordblks, (size_t)INT32_MAX);
	m.fordblks = (int)MIN(m2.fordblks, (size_t)INT32_MAX);
	m.keepcost = (int)MIN(m2.keepcost, (size_t)INT32_MAX);
	return m;
}
#pragma GCC diagnostic pop

EXPORT void malloc_stats(void)
{
	struct upg_heap_stats s;

	heap_stats(&s);
	fprintf(stderr,
		"upager heap: mapped %llu, active %llu, free %llu (dirty "
		"%llu), discarded %llu bytes\n",
		(unsigned long long)s.mapped_bytes,
		(unsigned long long)s.active_bytes,
		(unsigned long long)s.free_bytes,
		(unsigned long long)s.dirty_bytes,
		(unsigned long long)s.discarded_bytes);
}

EXPORT int malloc_info(int options, FILE *f)
{
	struct upg_heap_stats s;

	if (options) {
		errno = EINVAL;
		return -1;
	}
	heap_stats(&s);
	fprintf(f,
		"<malloc version=\"upager-1\">\n"
		"<total type=\"mmap\" size=\"%llu\"/>\n"
		"<total type=\"active\" size=\"%llu\"/>\n"
		"<total type=\"free\" size=\"%llu\"/>\n"
		"<total type=\"dirty\" size=\"%llu\"/>\n"
		"<total type=\"discarded\" size=\"%llu\"/>\n</malloc>\n",
		(unsigned long long)s.mapped_bytes,
		(unsigned long long)s.active_bytes,
		(unsigned long long)s.free_bytes,
		(unsigned long long)s.dirty_bytes,
		(unsigned long long)s.discarded_bytes);
	return 0;
}
