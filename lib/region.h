/* SPDX-License-Identifier: MIT */
/*
 * Managed regions and their page tables.
 *
 * Each page of a region has one 64-bit entry (struct layout below), kept
 * outside managed memory in a lazily-populated mapping, so a 1 TiB region
 * costs page-table pages only where it is used. Per 2 MiB chunk two
 * counters (resident pages, pages with any state) let the clock and
 * discard skip empty stretches.
 *
 * Page lock: PTE_LOCK, taken with a CAS by whoever changes a page's state
 * (a fault handler installing it, the evictor removing it, discard). Fault
 * handlers never wait for a page lock: they set PTE_WAIT and move on, and
 * the holder wakes the faulting threads with UFFDIO_WAKE when it unlocks.
 * PTE_REF and PTE_ZAP may be set without the lock (atomic RMW).
 */
#ifndef UPG_REGION_H
#define UPG_REGION_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common.h"

/*
 * Entry layout:
 *   bits 0-1  state: untouched (reads as zeros), resident, evicted
 *   bit  2    COPY: the payload holds a pool handle whose contents equal
 *             the page (always for evicted pages; for resident pages, a
 *             clean copy kept for a cheap eviction)
 *   bit  3    LOCK
 *   bit  4    WAIT: a fault was deferred while locked; wake on unlock
 *   bit  5    REF: referenced since the clock last passed
 *   bit  6    ZAP: the program discarded the page while it was locked
 *   bit  7    SWAP: with COPY, the payload is a swap file slot, not a
 *             pool handle
 *   bits 8-63 payload
 */
#define PTE_STATE 3ULL
#define PTE_UNTOUCHED 0ULL
#define PTE_RESIDENT 1ULL
#define PTE_EVICTED 2ULL
#define PTE_COPY (1ULL << 2)
#define PTE_LOCK (1ULL << 3)
#define PTE_WAIT (1ULL << 4)
#define PTE_REF (1ULL << 5)
#define PTE_ZAP (1ULL << 6)
#define PTE_SWAP (1ULL << 7)
#define PTE_PAYLOAD_SHIFT 8

#define UPG_STREAMS 4

#define UPG_CHUNK_SHIFT 9 /* 512 pages = 2 MiB per chunk */
#define UPG_CHUNK_PAGES (1UL << UPG_CHUNK_SHIFT)

typedef _Atomic uint64_t upg_pte_t;

struct upg_region {
	char *start;
	size_t len;
	size_t npages;
	upg_pte_t *pte;
	_Atomic uint32_t *chunk_res;  /* resident pages per chunk */
	_Atomic uint32_t *chunk_used; /* pages not untouched, per chunk */
	size_t nchunks;
	/*
	 * Fault-around and readahead: a few sequential streams (threads
	 * scanning different parts at once), each the last page it brought
	 * in, its window and when it last had a fault (@used, a tick of
	 * @stream_tick); a new one takes the least recently used slot.
	 * Racy by design: a wrong guess costs one fault.
	 */
	struct upg_stream {
		_Atomic size_t last;
		_Atomic unsigned window;
		_Atomic uint64_t used;
	} stream[UPG_STREAMS];
	_Atomic uint64_t stream_tick;
};

static inline uint64_t pte_state(uint64_t v)
{
	return v & PTE_STATE;
}

static inline uint64_t pte_payload(uint64_t v)
{
	return v >> PTE_PAYLOAD_SHIFT;
}

static inline uint64_t pte_make(uint64_t state, uint64_t flags,
				uint64_t payload)
{
	return state | flags | (payload << PTE_PAYLOAD_SHIFT);
}

static inline char *region_addr(const struct upg_region *r, size_t idx)
{
	return r->start + (idx << UPG_PAGE_SHIFT);
}

/*
 * pte_trylock() - lock an unlocked entry
 * Return: true with the entry's value (without LOCK) in *@old.
 */
static inline bool pte_trylock(upg_pte_t *p, uint64_t *old)
{
	uint64_t v = atomic_load_explicit(p, memory_order_relaxed);

	do {
		if (v & PTE_LOCK)
			return false;
	} while (!atomic_compare_exchange_weak_explicit(p, &v, v | PTE_LOCK,
							memory_order_acquire,
							memory_order_relaxed));
	*old = v;
	return true;
}

/*
 * pte_mark_waiting() - note that a fault waits for the lock holder
 * Return: true if the entry is still locked (the holder will wake the
 * waiter), false if it was unlocked meanwhile (retry the fault).
 */
static inline bool pte_mark_waiting(upg_pte_t *p)
{
	uint64_t v = atomic_load_explicit(p, memory_order_relaxed);

	do {
		if (!(v & PTE_LOCK))
			return false;
	} while (!atomic_compare_exchange_weak_explicit(p, &v, v | PTE_WAIT,
							memory_order_relaxed,
							memory_order_relaxed));
	return true;
}

/*
 * pte_unlock() - publish @val (without LOCK/WAIT/ZAP) and unlock
 * Return: the flags the entry carried while locked (PTE_WAIT, PTE_ZAP), for
 * the holder to act on. Release order: the page's contents and pool object
 * are complete before anyone sees the new state.
 */
static inline uint64_t pte_unlock(upg_pte_t *p, uint64_t val)
{
	uint64_t old = atomic_exchange_explicit(p, val, memory_order_acq_rel);

	return old & (PTE_WAIT | PTE_ZAP);
}

/* Keep the per-chunk counters in step with a state change of @idx. */
void upg_region_account(struct upg_region *r, size_t idx, uint64_t from,
			uint64_t to);

/*
 * upg_region_create() - map @len bytes of managed memory and a page table
 * Registration with userfaultfd is the runtime's job.
 */
int upg_region_create(size_t len, struct upg_region **out);
void upg_region_destroy(struct upg_region *r);

static inline bool region_contains(const struct upg_region *r, const void *a)
{
	return (const char *)a >= r->start &&
	       (const char *)a < r->start + r->len;
}

#endif
