/* SPDX-License-Identifier: MIT */
/*
 * The swap file's internals, shared by swap.c (opening, slots, reading)
 * and swap_write.c (packing and writing). Not part of the library's API.
 */
#ifndef UPG_SWAP_IMPL_H
#define UPG_SWAP_IMPL_H

#include <stdatomic.h>

#include "common.h"
#include "swap.h"

#define SLOTS_MAX (1ULL << 28) /* 1 TiB of 4 KiB slots */
#define REF_PINNED UINT16_MAX
#define OBJS UPG_SWAP_SLOT_OBJS
#define GROW_SLOTS 4096ULL    /* the file grows by 16 MiB or 1/8 */
#define RUN_MIN 16	      /* a free run worth writing into */
#define SCAN_MAX (1ULL << 16) /* slots looked at per allocation */
#define NONE UINT64_MAX
#define SLOT_UP(bytes) (((bytes) + UPG_PAGE_SIZE - 1) >> UPG_PAGE_SHIFT)
#define FAIL_BACKOFF_NS 1000000000ULL /* no writes for 1 s after a failure */

enum cause { C_NOSPC, C_IO, C_SHORT, C_OTHER, C_NR };

/*
 * What a slot holds: 4 KiB whose checksum is @data, and for each object
 * starting in it (bit k of @page_known set) the checksum of the page it
 * decodes to, @page[k]. Written by the evictor before the write that fills
 * the slot; @page also by readers of an object, which all compute the same
 * value (a benign race between processes sharing it); a bit of
 * @page_known is set after its @page with release, read with acquire.
 */
struct slot {
	struct upg_swap_sum data;
	uint64_t page[OBJS];
	_Atomic uint32_t page_known;
};

struct upg_swap {
	int fd;
	bool blockdev;
	bool clean; /* write staged lines back before a direct write */
	char name[256];
	uint64_t nslots;	      /* limit */
	uint64_t cursor;	      /* next-fit inside the file */
	uint64_t tail;		      /* where the last run appended ended */
	_Atomic uint64_t *file_slots; /* shared: slots the file has room for */
	_Atomic uint64_t *inuse;      /* shared: slots with a reference */
	_Atomic uint16_t *ref;	      /* shared: references per slot */
	struct slot *slot;	      /* shared */
	char *stage;		      /* a page for upg_swap_write() */
	_Atomic uint64_t fail_until;
	_Atomic bool reported[C_NR];
};

static inline unsigned swap_loc_index(uint64_t loc)
{
	return (unsigned)(loc >> 25) & (OBJS - 1);
}

/* swap.c */
void swap_unref(struct upg_swap *sw, uint64_t s);
unsigned swap_alloc_run(struct upg_swap *sw, unsigned want, uint64_t *first,
			int *err);

/* swap_write.c */
bool swap_have_clwb(void);

#endif
