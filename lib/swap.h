/* SPDX-License-Identifier: MIT */
/*
 * The swap file: the tier below the compressed pool. One page per 4 KiB
 * slot, stored whole or as the pool's LZ4 object of it (write-back copies
 * objects without decoding them), each slot with a 128-bit checksum.
 *
 * Slots are allocated by one thread only (the evictor), in runs, so that
 * pages written together sit together in the file (swap-in readahead reads
 * them back in one request): next-fit among the file's free slots, or at
 * its end once 3/4 of it is in use, so the file stays within 4/3 of the
 * slots in use (plus a growth step). They are freed from any thread. Slot 0
 * is never used, so that 0 can mean "none".
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
 * upg_swap_write() - write @n pages, allocating their slots
 * Pages contiguous in memory go out in one request when their slots are
 * contiguous too. Evictor thread only. On return slots[i] is the page's slot,
 * or 0 if it could not be written (its slot is free again; the cause is
 * counted in @st and reported once).
 * Return: the number of pages not written.
 */
unsigned upg_swap_write(struct upg_swap *sw, struct upg_io *io,
			struct upg_stat_shard *st, void *const *pages,
			unsigned n, uint64_t *slots);

#define UPG_SWAP_WRITE_MAX 256 /* pages per write */

/* A checksum, as kept for each slot. */
struct upg_swap_sum {
	uint64_t a, b;
};

/* upg_swap_sum() - the checksum of @len bytes at @data. Any thread. */
void upg_swap_sum(const void *data, size_t len, struct upg_swap_sum *out);

/* A write in flight: upg_swap_write() in two halves, to overlap work. */
struct upg_swap_wr {
	struct upg_io_op ops[UPG_SWAP_WRITE_MAX];
	unsigned first[UPG_SWAP_WRITE_MAX];
	unsigned n, got, nops;
	uint64_t *slots;
};

/*
 * upg_swap_write_start() - upg_swap_write()'s first half: allocate slots,
 * record what they will hold and submit. Each of @pages is a 4 KiB buffer
 * holding either a whole page or, at its start, the pool's LZ4 object of
 * a page (what upg_decompress_page() takes, shorter than a page).
 * @lens: bytes of each buffer that count (UPG_PAGE_SIZE for a whole page),
 *	or NULL: all whole pages
 * @sums: upg_swap_sum() of those bytes, or NULL to compute them here
 * The buffers must stay unchanged until upg_swap_write_finish() returns.
 */
void upg_swap_write_start(struct upg_swap *sw, struct upg_io *io,
			  struct upg_stat_shard *st, void *const *pages,
			  const uint32_t *lens, const struct upg_swap_sum *sums,
			  unsigned n, uint64_t *slots, struct upg_swap_wr *w);
unsigned upg_swap_write_finish(struct upg_swap *sw, struct upg_io *io,
			       struct upg_stat_shard *st,
			       struct upg_swap_wr *w);

/*
 * upg_swap_read() - read @n pages from consecutive slots into @buf
 * What every slot holds is checked against its checksum, and objects are
 * decoded into whole pages. Return: 0, or -errno (-EIO for a failed read,
 * -ENODATA for a short one, -EBADMSG for a slot that does not match its
 * checksum or does not decode).
 */
int upg_swap_read(struct upg_swap *sw, struct upg_io *io, uint64_t slot,
		  unsigned n, void *buf);

/*
 * upg_swap_matches() - whether @page equals what @slot holds (by checksum;
 * false while the page's checksum is unknown: a slot written from the pool
 * that was never read back)
 */
bool upg_swap_matches(struct upg_swap *sw, uint64_t slot, const void *page);

/* upg_swap_free() - free @slot (0 is ignored). Any thread. */
void upg_swap_free(struct upg_swap *sw, uint64_t slot);

/*
 * upg_swap_fork() - before fork(): every slot in use gains a reference (the
 * child's). Caller keeps the evictor and every freeing thread quiet.
 */
void upg_swap_fork(struct upg_swap *sw);

/* Slots in use and the file's size in bytes. */
uint64_t upg_swap_used(struct upg_swap *sw);
uint64_t upg_swap_file_bytes(struct upg_swap *sw);

/* upg_swap_failing() - whether writes failed recently (back off) */
bool upg_swap_failing(struct upg_swap *sw);

/* The file descriptor (tests) and a description for messages. */
int upg_swap_fd(struct upg_swap *sw);
const char *upg_swap_name(struct upg_swap *sw);

#endif
