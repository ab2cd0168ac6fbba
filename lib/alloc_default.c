/* SPDX-License-Identifier: MIT */
/*
 * The default heap behind upg_malloc() and the preload library: created on
 * first use from the UPG_* environment, never destroyed (blocks may be
 * freed by exit handlers and other threads until the process ends).
 *
 * upg_front() tells a caller where an allocation must come from: the
 * default heap, the bootstrap arena (on the runtime's own threads, and in
 * the thread creating the heap, whose upg_create() allocates through
 * pthread_create), or nowhere (the heap could not be created). Threads
 * that arrive during creation wait on init_lock, which the creating
 * thread never needs again: its nested allocations go to the arena. A
 * fork() waits for it too (alloc.c, "fork()"): a child never inherits a
 * creation half done.
 */
#include <errno.h>
#include <string.h>

#include "alloc.h"
#include "front.h"
#include "runtime.h"

enum { DH_NONE, DH_READY, DH_FAILED };

static _Atomic int dstate;
static struct upg_heap *dheap;
struct upg_heap *_Atomic upg_dheap;
static pthread_mutex_t init_lock = PTHREAD_MUTEX_INITIALIZER;
static __thread bool in_init __attribute__((tls_model("initial-exec")));
static char init_error[256];

/*
 * The default heap's runtime: the UPG_* environment, except that REMOVE
 * events are off unless UPG_REMOVE_EVENTS says otherwise. The heap is only
 * emptied by the allocator, which does its own bookkeeping (upg_discard);
 * with events on every discard waits for a handler to read its event, and
 * the evictor's UFFDIO_MOVE path loses stores racing such events (see
 * bench/RESULTS.md, "Allocator": larson under 4M with UPG_REMOVE_EVENTS=on
 * UPG_REMAP=off). A program's own madvise() still reads zeros afterwards.
 */
static int create_runtime(struct upg **u)
{
	struct upg_params p;
	int err;

	upg_params_init(&p);
	p.use_remove = false;
	err = upg_params_from_env(&p);
	if (err)
		return err;
	return upg_create(&p, u);
}

int upg_heap_create_default(struct upg_heap **out)
{
	struct upg *u;
	int err;

	err = create_runtime(&u);
	if (err)
		return err;
	err = upg_heap_create(u, 0, out);
	if (err) {
		/* Keep the message: upg_destroy() may overwrite it. */
		char msg[256];

		snprintf(msg, sizeof(msg), "%s", upg_last_error());
		upg_destroy(u);
		upg_seterr(err, "%s", msg);
	}
	return err;
}

static enum upg_front init_default(void)
{
	enum upg_front f = UPG_FRONT_HEAP;

	upg_alloc_atfork_register(); /* before the creation can start */
	pthread_mutex_lock(&init_lock);
	if (atomic_load(&dstate) == DH_NONE) {
		struct upg_heap *h = NULL;
		int err;

		in_init = true;
		err = upg_heap_create_default(&h);
		in_init = false;
		if (err) {
			snprintf(init_error, sizeof(init_error), "%s",
				 upg_last_error());
			f = UPG_FRONT_FAILED_NOW;
		}
		dheap = h;
		atomic_store_explicit(&upg_dheap, h, memory_order_release);
		atomic_store_explicit(&dstate, err ? DH_FAILED : DH_READY,
				      memory_order_release);
	} else if (atomic_load(&dstate) == DH_FAILED) {
		f = UPG_FRONT_FAILED;
	}
	pthread_mutex_unlock(&init_lock);
	return f;
}

enum upg_front upg_front_slow(struct upg_heap **h)
{
	int st = atomic_load_explicit(&dstate, memory_order_acquire);
	enum upg_front f;

	*h = NULL;
	if (in_init || upg_internal_thread())
		return UPG_FRONT_BOOT;
	if (st == DH_FAILED)
		return UPG_FRONT_FAILED;
	f = st == DH_READY ? UPG_FRONT_HEAP : init_default();
	if (f == UPG_FRONT_HEAP)
		*h = dheap;
	return f;
}

enum upg_front upg_front(struct upg_heap **h)
{
	if (likely(atomic_load_explicit(&dstate, memory_order_acquire) ==
		   DH_READY) &&
	    likely(!upg_internal_depth)) {
		*h = dheap;
		return UPG_FRONT_HEAP;
	}
	return upg_front_slow(h);
}

void upg_front_fork_lock(void)
{
	pthread_mutex_lock(&init_lock);
}

void upg_front_fork_unlock(void)
{
	pthread_mutex_unlock(&init_lock);
}

/* The fork handlers in place before any thread can start a creation. */
__attribute__((constructor)) static void front_init(void)
{
	upg_alloc_atfork_register();
}

const char *upg_front_error(void)
{
	return init_error;
}

struct upg_heap *upg_default_heap(void)
{
	struct upg_heap *h;

	upg_front(&h);
	return h ? h : upg_front_heap_if_ready();
}

/* ------------------------------------------------------------------ */
/* upg_malloc() and friends                                            */
/* ------------------------------------------------------------------ */

/* NULL and errno ENOMEM, with the reason in upg_last_error(). */
static void *unavailable(void)
{
	upg_seterr(-ENOMEM, "upager: default heap unavailable: %s", init_error);
	errno = ENOMEM;
	return NULL;
}

void *upg_malloc(size_t size)
{
	struct upg_heap *h;
	void *p = upg_tc_malloc(size);

	if (likely(p))
		return p;
	switch (upg_front(&h)) {
	case UPG_FRONT_HEAP:
		return upg_heap_malloc(h, size);
	case UPG_FRONT_BOOT:
		return upg_boot_malloc(size);
	default:
		return unavailable();
	}
}

void *upg_calloc(size_t n, size_t size)
{
	struct upg_heap *h;
	size_t total;
	void *p;

	switch (upg_front(&h)) {
	case UPG_FRONT_HEAP:
		return upg_heap_calloc(h, n, size);
	case UPG_FRONT_BOOT:
		if (__builtin_mul_overflow(n, size, &total)) {
			errno = ENOMEM;
			return NULL;
		}
		p = upg_boot_malloc(total);
		if (p)
			memset(p, 0, total);
		return p;
	default:
		return unavailable();
	}
}

void *upg_aligned_alloc(size_t align, size_t size)
{
	struct upg_heap *h;

	switch (upg_front(&h)) {
	case UPG_FRONT_HEAP:
		return upg_heap_aligned_alloc(h, align, size);
	case UPG_FRONT_BOOT:
		if (!align || (align & (align - 1))) {
			errno = EINVAL;
			return NULL;
		}
		return upg_boot_aligned(align, size);
	default:
		return unavailable();
	}
}

/* Move a bootstrap block into the heap (a normal thread reallocs it). */
static void *move_from_boot(struct upg_heap *h, void *p, size_t size)
{
	size_t old = upg_boot_usable_size(p);
	void *q = upg_heap_malloc(h, size);

	if (!q)
		return NULL;
	memcpy(q, p, MIN(old, size));
	upg_boot_free(p);
	return q;
}

void *upg_realloc(void *p, size_t size)
{
	struct upg_heap *h, *dh = upg_front_heap_if_ready();
	enum upg_front f;

	if (!p)
		return upg_malloc(size);
	if (dh && upg_heap_owns(dh, p))
		return upg_heap_realloc(dh, p, size);
	if (!upg_boot_owns(p)) {
		upg_err("upg_realloc(%p): not allocated by upg_malloc", p);
		errno = EINVAL;
		return NULL;
	}
	f = upg_front(&h);
	if (f == UPG_FRONT_HEAP)
		return move_from_boot(h, p, size);
	return upg_boot_realloc(p, size);
}

void upg_free(void *p)
{
	struct upg_heap *dh = upg_front_heap_if_ready();

	if (likely(dh && upg_heap_has(dh, p))) {
		if (likely(upg_tc_free(dh, p)))
			return;
		upg_heap_free(dh, p);
		return;
	}
	if (!p)
		return;
	if (upg_boot_owns(p))
		upg_boot_free(p);
	else
		upg_err("upg_free(%p): not allocated by upg_malloc", p);
}

size_t upg_usable_size(const void *p)
{
	struct upg_heap *dh = upg_front_heap_if_ready();

	if (!p)
		return 0;
	if (dh && upg_heap_owns(dh, p))
		return upg_heap_usable_size(dh, p);
	if (upg_boot_owns(p))
		return upg_boot_usable_size(p);
	return 0;
}
