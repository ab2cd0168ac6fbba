/* SPDX-License-Identifier: MIT */
/*
 * Hooks for the test suite, not part of the API: they let a test stop the
 * runtime at a point where a race would otherwise be a matter of timing.
 */
#ifndef UPG_TESTING_H
#define UPG_TESTING_H

#include <stddef.h>

#include <upager.h>

/*
 * Called by the evictor in a chunk move (mremap) once the resident pages
 * that stay are copied back, before the victims are stored: @pageless are
 * the chunk's pages that had no page (evicted or untouched) and are not
 * victims, @n of them. A fault on one must not wait for the victims.
 */
typedef void (*upg_test_remap_fn)(void *arg, char *const *pageless, size_t n);

UPG_API void upg_test_remap_hook(struct upg *u, upg_test_remap_fn fn,
				 void *arg);

/*
 * Called by the evictor when a batch's @n victims are ready to be stored,
 * before it stores any itself: threads that wait for room meanwhile may
 * store them (upg_evict_help()).
 */
typedef void (*upg_test_store_fn)(void *arg, size_t n);

UPG_API void upg_test_store_hook(struct upg *u, upg_test_store_fn fn,
				 void *arg);

#endif
