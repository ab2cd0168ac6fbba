/* SPDX-License-Identifier: MIT */
/*
 * jemalloc's non-standard API for the preload library: programs linked
 * against jemalloc (Debian's redis-server imports mallctl, nallocx and
 * malloc_stats_print) get these instead of jemalloc's, so that every block
 * they see comes from one allocator.
 *
 * Flags: the alignment (MALLOCX_LG_ALIGN, low 6 bits) and MALLOCX_ZERO are
 * honoured; tcache and arena selections are accepted and ignored. mallctl
 * answers the names those programs read (statistics, page size, purge,
 * background thread); others return ENOENT, as jemalloc does for names it
 * does not know.
 */
#include <errno.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "front.h"
#include "jemalloc_api.h"

#define EXPORT __attribute__((visibility("default")))

static size_t flag_align(int flags)
{
	return (flags & 0x3f) ? 1UL << (flags & 0x3f) : 0;
}

/* The aligned/zeroed allocation mallocx and rallocx share. */
static void *alloc_flags(size_t size, int flags)
{
	size_t align = flag_align(flags);
	void *p;

	if (align > 16) {
		if (posix_memalign(&p, align, size))
			return NULL;
	} else {
		p = malloc(size);
	}
	if (p && (flags & MALLOCX_ZERO))
		memset(p, 0, malloc_usable_size(p));
	return p;
}

EXPORT void *mallocx(size_t size, int flags)
{
	if (!flags)
		return malloc(size);
	return alloc_flags(size, flags);
}

EXPORT void *rallocx(void *p, size_t size, int flags)
{
	size_t align = flag_align(flags), old = malloc_usable_size(p), now;
	void *q;

	if (align <= 16 || !((uintptr_t)p & (align - 1))) {
		q = realloc(p, size ? size : 1);
	} else {
		q = alloc_flags(size, flags & ~MALLOCX_ZERO);
		if (q) {
			memcpy(q, p, MIN(old, size));
			free(p);
		}
	}
	if (q && (uintptr_t)q & (align ? align - 1 : 0)) {
		/* realloc moved it to a less aligned block */
		void *r = alloc_flags(size, flags & ~MALLOCX_ZERO);

		if (!r)
			return NULL;
		memcpy(r, q, MIN(old, size));
		free(q);
		q = r;
	}
	now = q ? malloc_usable_size(q) : 0;
	if (q && (flags & MALLOCX_ZERO) && now > old)
		memset((char *)q + old, 0, now - old);
	return q;
}

EXPORT size_t xallocx(void *p, size_t size, size_t extra, int flags)
{
	struct upg_heap *h = upg_front_heap_if_ready();
	size_t old = malloc_usable_size(p), now = old;
	bool zero = flags & MALLOCX_ZERO;

	if (!h || !upg_heap_owns(h, p))
		return old;
	if (size + extra >= size)
		now = upg_heap_resize_in_place(h, p, size + extra, zero);
	if (now < size)
		now = upg_heap_resize_in_place(h, p, size, zero);
	return now;
}

EXPORT size_t sallocx(const void *p, int flags)
{
	(void)flags;
	return malloc_usable_size((void *)p);
}

EXPORT void dallocx(void *p, int flags)
{
	(void)flags;
	free(p);
}

EXPORT void sdallocx(void *p, size_t size, int flags)
{
	(void)size;
	(void)flags;
	free(p);
}

/* The usable size mallocx(size, flags) would give; 0 if too large. */
EXPORT size_t nallocx(size_t size, int flags)
{
	size_t align = MAX(flag_align(flags), 16);
	unsigned c;

	if (size > (1UL << 62))
		return 0;
	if (size <= UPG_SMALL_MAX && align <= UPG_PAGE_SIZE) {
		size = (MAX(size, 1) + align - 1) & ~(align - 1);
		c = upg_size_class(size);
		while (upg_class_size[c] % align)
			c++;
		return upg_class_size[c];
	}
	return (MAX(size, 1) + UPG_PAGE_SIZE - 1) & UPG_PAGE_MASK;
}

/* ------------------------------------------------------------------ */
/* mallctl                                                             */
/* ------------------------------------------------------------------ */

/* Copy @val (of @len bytes) out as jemalloc does: exact length only. */
static int ctl_read(void *oldp, size_t *oldlenp, const void *val, size_t len)
{
	if (!oldp || !oldlenp)
		return 0;
	if (*oldlenp != len) {
		memcpy(oldp, val, MIN(*oldlenp, len));
		*oldlenp = MIN(*oldlenp, len);
		return EINVAL;
	}
	memcpy(oldp, val, len);
	return 0;
}

static int ctl_size(void *oldp, size_t *oldlenp, size_t v)
{
	return ctl_read(oldp, oldlenp, &v, sizeof(v));
}

static bool ctl_stat(const char *name, size_t *v)
{
	struct upg_heap *h = upg_front_heap_if_ready();
	struct upg_heap_stats s = { 0 };

	if (h)
		upg_heap_stats_get(h, &s);
	if (!strcmp(name, "stats.allocated") || !strcmp(name, "stats.active"))
		*v = s.active_bytes;
	else if (!strcmp(name, "stats.resident"))
		*v = s.active_bytes + s.dirty_bytes;
	else if (!strcmp(name, "stats.mapped"))
		*v = s.mapped_bytes;
	else if (!strcmp(name, "stats.retained"))
		*v = s.free_bytes - s.dirty_bytes;
	else if (!strcmp(name, "stats.metadata"))
		*v = 0;
	else
		return false;
	return true;
}

/* "arena.<i>.purge" and "arena.<i>.decay": give free pages back. */
static bool is_arena_purge(const char *name)
{
	const char *dot;

	if (strncmp(name, "arena.", 6))
		return false;
	dot = strchr(name + 6, '.');
	return dot && (!strcmp(dot, ".purge") || !strcmp(dot, ".decay"));
}

static int ctl_bool(void *oldp, size_t *oldlenp, bool v)
{
	return ctl_read(oldp, oldlenp, &v, sizeof(v));
}

EXPORT int mallctl(const char *name, void *oldp, size_t *oldlenp, void *newp,
		   size_t newlen)
{
	static const char version[] = "5.3.0-0-upager";
	const char *vp = version;
	unsigned one = 1;
	size_t v;

	if (ctl_stat(name, &v))
		return newp ? EPERM : ctl_size(oldp, oldlenp, v);
	if (!strcmp(name, "epoch")) {
		uint64_t e = 1;

		if (newp && newlen != sizeof(e))
			return EINVAL;
		return ctl_read(oldp, oldlenp, &e, sizeof(e));
	}
	if (!strcmp(name, "arenas.page"))
		return ctl_size(oldp, oldlenp, UPG_PAGE_SIZE);
	if (!strcmp(name, "arenas.narenas") || !strcmp(name, "opt.narenas"))
		return ctl_read(oldp, oldlenp, &one, sizeof(one));
	if (!strcmp(name, "version"))
		return ctl_read(oldp, oldlenp, &vp, sizeof(vp));
	if (!strcmp(name, "background_thread") ||
	    !strcmp(name, "opt.background_thread"))
		return ctl_bool(oldp, oldlenp, false); /* writes ignored */
	if (!strcmp(name, "opt.tcache"))
		return ctl_bool(oldp, oldlenp, true);
	if (!strcmp(name, "config.debug") || !strcmp(name, "config.stats"))
		return ctl_bool(oldp, oldlenp, false);
	if (!strcmp(name, "thread.tcache.flush") || is_arena_purge(name)) {
		malloc_trim(0);
		return 0;
	}
	return ENOENT;
}

EXPORT void malloc_stats_print(void (*write_cb)(void *, const char *),
			       void *opaque, const char *opts)
{
	struct upg_heap *h = upg_front_heap_if_ready();
	struct upg_heap_stats s = { 0 };
	char buf[512];

	(void)opts;
	if (h)
		upg_heap_stats_get(h, &s);
	snprintf(buf, sizeof(buf),
		 "___ Begin upager statistics ___\n"
		 "Allocated: %llu, active: %llu, mapped: %llu, free: %llu, "
		 "dirty: %llu, discarded: %llu\n"
		 "--- End upager statistics ---\n",
		 (unsigned long long)s.active_bytes,
		 (unsigned long long)s.active_bytes,
		 (unsigned long long)s.mapped_bytes,
		 (unsigned long long)s.free_bytes,
		 (unsigned long long)s.dirty_bytes,
		 (unsigned long long)s.discarded_bytes);
	if (write_cb)
		write_cb(opaque, buf);
	else
		fputs(buf, stderr);
}
