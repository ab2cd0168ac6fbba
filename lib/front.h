/* SPDX-License-Identifier: MIT */
/*
 * Where an allocation through the default heap must come from; shared by
 * upg_malloc() (alloc_default.c) and the preload library (preload.c).
 */
#ifndef UPG_FRONT_H
#define UPG_FRONT_H

#include "alloc.h"

enum upg_front {
	UPG_FRONT_HEAP,	      /* the default heap, in *h */
	UPG_FRONT_BOOT,	      /* the bootstrap arena */
	UPG_FRONT_FAILED,     /* no heap: the runtime could not start */
	UPG_FRONT_FAILED_NOW, /* the same, and this call found out */
};

/*
 * upg_front() - the source for an allocation by the calling thread
 * Creates the default heap on first use (from the UPG_* environment).
 */
enum upg_front upg_front(struct upg_heap **h);
enum upg_front upg_front_slow(struct upg_heap **h);

/* The default heap if it is up, else NULL; never creates it. */
static inline struct upg_heap *upg_front_heap_if_ready(void)
{
	return upg_dheap_get();
}

/* fork(): wait for a creation of the default heap to finish, and back. */
void upg_front_fork_lock(void);
void upg_front_fork_unlock(void);

/* Why the default heap could not be created ("" if it was). */
const char *upg_front_error(void);

/* xallocx: resize a large block in place; Return: its usable size. */
size_t upg_heap_resize_in_place(struct upg_heap *h, void *p, size_t size,
				bool zero);

#endif
