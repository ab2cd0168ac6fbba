/* SPDX-License-Identifier: MIT */
/*
 * Prototypes of jemalloc's non-standard API as the preload library exports
 * it (unprefixed, as Debian's libjemalloc2 does).
 */
#ifndef UPG_JEMALLOC_API_H
#define UPG_JEMALLOC_API_H

#include <stddef.h>

#define MALLOCX_LG_ALIGN(la) ((int)(la))
#define MALLOCX_ALIGN(a) ((int)__builtin_ctzl(a))
#define MALLOCX_ZERO ((int)0x40)

void *mallocx(size_t size, int flags);
void *rallocx(void *p, size_t size, int flags);
size_t xallocx(void *p, size_t size, size_t extra, int flags);
size_t sallocx(const void *p, int flags);
void dallocx(void *p, int flags);
void sdallocx(void *p, size_t size, int flags);
size_t nallocx(size_t size, int flags);
int mallctl(const char *name, void *oldp, size_t *oldlenp, void *newp,
	    size_t newlen);
void malloc_stats_print(void (*write_cb)(void *, const char *), void *opaque,
			const char *opts);

#endif
