/* SPDX-License-Identifier: MIT */
/*
 * The swap file: the tier below the compressed pool, in 4 KiB slots.
 *
 * What it stores are objects: a page whole (4096 bytes) or the pool's LZ4
 * object of it (write-back copies objects without decoding them). Objects
 * are packed end to end in the slots of a write, so that one may span two
 * slots, and each has a location (below): its first slot, its offset and
 * length there, and its index among the objects starting in that slot
 * (at most UPG_SWAP_SLOT_OBJS). A slot is in use while any object lying in
 * it is: it counts one reference per object per process. Each slot has a
 * 128-bit checksum of its 4 KiB as written, checked when read back.
 *
 * Slots are allocated by one thread only (the evictor), in runs, so that
 * pages written together sit together in the file (swap-in readahead reads
 * them back in one request): next-fit among the file's free slots, or at
 * its end once 3/4 of it is in use, so the file stays within 4/3 of the
 * slots in use (plus a growth step). They are freed from any thread. Slot 0
 * is never used, so that location 0 can mean "none".
 */
#ifndef UPG_SWAP_H
#define UPG_SWAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "io.h"
#include "stats.h"

struct upg_swap;

/*
 * upg_swap_open() - open the swap file
 * @path: a directory (an unlinked O_TMPFILE there, mode 0600), a regular
 *	file (created or truncated, mode 0600), a block device, or "" for an
 *	unlinked file in $TMPDIR or /var/tmp
 * @max: size limit in bytes, 0 for none but the file system's
 * @direct: O_DIRECT
 * Return: 0, or -errno with upg_last_error() naming the file and the cause.
 */
int upg_swap_open(const char *path, size_t max, bool direct,
		  struct upg_swap **out);
void upg_swap_close(struct upg_swap *sw);

/*
 * A location: bits 0-12 the object's length (1-4096; 4096: a whole page),
 * 13-24 its offset in its first slot, 25-27 its index among the objects
 * starting there, 28-55 the slot. Fits a page table entry's payload.
 */
#define UPG_SWAP_SLOT_OBJS 8 /* objects starting in one slot, at most */

static inline uint64_t upg_swap_loc_slot(uint64_t loc)
{
	return loc >> 28;
}

static inline uint32_t upg_swap_loc_off(uint64_t loc)
{
	return (uint32_t)(loc >> 13) & 4095;
}

static inline uint32_t upg_swap_loc_len(uint64_t loc)
{
	return (uint32_t)loc & 8191;
}

/* The last slot that object @loc lies in. */
static inline uint64_t upg_swap_loc_last(uint64_t loc)
{
	return upg_swap_loc_slot(loc) +
	       (upg_swap_loc_off(loc) + upg_swap_loc_len(loc) - 1) / 4096;
}

/*
 * upg_swap_follows() - whether object @next lies after @prev with at most
 * padding between (so one read of their slots brings both in). A chain of
 * n such objects lies in at most 2n slots.
 */
static inline bool upg_swap_follows(uint64_t prev, uint64_t next)
{
	uint64_t end = (upg_swap_loc_slot(prev) << 12) +
		       upg_swap_loc_off(prev) + upg_swap_loc_len(prev);
	uint64_t at = (upg_swap_loc_slot(next) << 12) + upg_swap_loc_off(next);

	return at >= end &&
	       upg_swap_loc_slot(next) <= upg_swap_loc_last(prev) + 1;
}

#define UPG_SWAP_WRITE_MAX 256 /* objects per write */

/* A checksum, as kept for each slot. */
struct upg_swap_sum {
	uint64_t a, b;
};

/* upg_swap_sum() - the checksum of @len bytes at @data. Any thread. */
void upg_swap_sum(const void *data, size_t len, struct upg_swap_sum *out);

/* The checksum's versions: the same sums, from different instructions. */
enum upg_sum_version {
	UPG_SUM_C,
	UPG_SUM_SSE2,
	UPG_SUM_AVX2,
	UPG_SUM_AVX512,
	UPG_SUM_NR,
	UPG_SUM_BEST = UPG_SUM_NR, /* the widest the CPU has */
};

/* upg_swap_sum_has() - whether this build and CPU have version @v */
bool upg_swap_sum_has(enum upg_sum_version v);

/* upg_swap_sum_by() - upg_swap_sum() by version @v, which it must have */
void upg_swap_sum_by(enum upg_sum_version v, const void *data, size_t len,
		     struct upg_swap_sum *out);

/* A write in flight: one request per run of slots. */
struct upg_swap_wr {
	struct upg_io_op ops[UPG_SWAP_WRITE_MAX];
	unsigned first[UPG_SWAP_WRITE_MAX]; /* each request's first object */
	unsigned n, got, nops;
	unsigned hop;  /* checksummed: requests before @hop, and */
	size_t hashed; /* the first @hashed bytes of request @hop */
	char *buf;
	uint64_t *locs;
	size_t *offs;
};

/*
 * upg_swap_pack() - place @n objects of @lens bytes (1-4096 each) end to
 * end in slots allocated now, in contiguous runs, through the staging
 * @buf (page aligned, room for @n pages); zero the gaps. Evictor thread
 * only. On return locs[i] is object i's location and offs[i] where in @buf
 * its bytes go, for objects [0, returned); the others get location 0 (no
 * room: the cause is counted in @st and reported once). Then copy the
 * objects in and call upg_swap_submit().
 * Return: the number of objects placed.
 */
unsigned upg_swap_pack(struct upg_swap *sw, struct upg_stat_shard *st,
		       const uint32_t *lens, unsigned n, char *buf,
		       uint64_t *locs, size_t *offs, struct upg_swap_wr *w);

/*
 * upg_swap_staged() - object @i is copied in, and every object before it:
 * checksum the slots they complete now, while they are in the cache
 * (optional; in the order of the objects, for objects [0, placed)).
 */
void upg_swap_staged(struct upg_swap *sw, struct upg_swap_wr *w, unsigned i);

/*
 * upg_swap_submit() - checksum the packed slots and start writing them.
 * The staging must stay unchanged until upg_swap_write_finish() returns.
 */
void upg_swap_submit(struct upg_swap *sw, struct upg_io *io,
		     struct upg_swap_wr *w);

/*
 * upg_swap_write_finish() - wait for the write; objects whose request
 * failed are freed and their location set to 0 (the cause counted in @st
 * and reported once).
 * Return: the number of the @n objects not written.
 */
unsigned upg_swap_write_finish(struct upg_swap *sw, struct upg_io *io,
			       struct upg_stat_shard *st,
			       struct upg_swap_wr *w);

/*
 * upg_swap_write() - write @n whole pages, one slot each, synchronously.
 * Evictor thread only. On return locs[i] is the page's location, or 0 if
 * it could not be written. Return: the number of pages not written.
 */
unsigned upg_swap_write(struct upg_swap *sw, struct upg_io *io,
			struct upg_stat_shard *st, void *const *pages,
			unsigned n, uint64_t *locs);

/*
 * upg_swap_read() - read @n objects, each following the one before
 * (upg_swap_follows()), into @n pages at @buf, through @scratch (page
 * aligned, room for 2 * @n pages). The slots they lie in are checked
 * against their checksums, and objects are decoded into whole pages.
 * Return: 0, or -errno (-EIO for a failed read, -ENODATA for a short one,
 * -EBADMSG for a slot that does not match its checksum or an object that
 * does not decode, -EINVAL for objects that do not follow each other).
 */
int upg_swap_read(struct upg_swap *sw, struct upg_io *io, const uint64_t *locs,
		  unsigned n, void *buf, void *scratch);

/*
 * upg_swap_matches() - whether @page equals the page object @loc holds
 * (by checksum; false while the page's checksum is unknown: an object
 * written from the pool that was never read back)
 */
bool upg_swap_matches(struct upg_swap *sw, uint64_t loc, const void *page);

/*
 * upg_swap_free() - drop object @loc (0 is ignored): a slot is free once
 * no object lies in it. Any thread.
 */
void upg_swap_free(struct upg_swap *sw, uint64_t loc);

/*
 * upg_swap_fork() - before fork(): every slot in use gains the child's
 * references (its count doubles). Caller keeps the evictor and every
 * freeing thread quiet.
 */
void upg_swap_fork(struct upg_swap *sw);

/* Slots in use (by this process and any sharing the file) and the file's
 * size in bytes. */
uint64_t upg_swap_used(struct upg_swap *sw);
uint64_t upg_swap_file_bytes(struct upg_swap *sw);

/* upg_swap_failing() - whether writes failed recently (back off) */
bool upg_swap_failing(struct upg_swap *sw);

/* The file descriptor (tests) and a description for messages. */
int upg_swap_fd(struct upg_swap *sw);
const char *upg_swap_name(struct upg_swap *sw);

#endif
