/* SPDX-License-Identifier: MIT */
/*
 * The swap file (see swap.h for the contract): opening it, its slots and
 * reading; swap_write.c packs and writes, swap_impl.h is what both share.
 *
 * Security: by default the file is an unlinked O_TMPFILE with mode 0600 in
 * $TMPDIR or /var/tmp, so no other user can open it and nothing is left
 * behind after a crash. Space is reserved with fallocate() before a slot
 * is written, so a full file system fails the write at once (ENOSPC)
 * instead of losing a buffered page at writeback.
 *
 * Slot contents: objects packed end to end. Write-back copies the pool's
 * LZ4 objects (an object of a page that did not compress is the page) into
 * a staging buffer one after the other, across slot boundaries, and writes
 * the slots they fill; a page the evictor writes straight to the file is
 * a 4096-byte object filling its own slot. So the file holds what the
 * pool held (1.5x fewer bytes than pages for text), write-back copies
 * objects instead of decompressing them, and only pages that are read
 * back again pay for decoding. A run of slots ends with zeros after its
 * last object, and an object starts in the next slot when UPG_SWAP_SLOT_OBJS
 * start in this one already (the per-slot records are that many).
 *
 * Slot map: a reference count and a struct slot per slot, in lazily
 * populated *shared* anonymous memory sized for the largest file, so that
 * after fork() parent and child (which share the file) allocate from one
 * map: a slot is taken by a CAS from 0 to 1, then holds one reference per
 * object lying in it, and at fork time every count doubles
 * (upg_swap_fork()), so neither process reuses a slot the other still
 * needs. A count that reaches REF_PINNED pins its slot. Only the evictor
 * allocates; any thread frees.
 *
 * Integrity: the 4 KiB a slot holds (objects, their tails from the slot
 * before, zeros) are checked against their 128-bit checksum when read
 * back, so a corrupt, stale or failing file is reported as the error it
 * is, never returned as data. Each object's page checksum (64 bits, known
 * from the start for a whole page, computed when an object is first
 * decoded) lets the evictor drop a clean page whose object still holds it
 * (a store racing with the eviction changes the checksum).
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "compress.h"
#include "swap_impl.h"

static bool sum_equal(const struct upg_swap_sum *x,
		      const struct upg_swap_sum *y)
{
	return x->a == y->a && x->b == y->b;
}

/* ------------------------------------------------------------------ */
/* Opening                                                             */
/* ------------------------------------------------------------------ */

static const char *default_dir(void)
{
	const char *t = getenv("TMPDIR");

	return t && *t ? t : "/var/tmp";
}

/* An unlinked file in @dir: O_TMPFILE, else a named file unlinked at once. */
static int open_in_dir(struct upg_swap *sw, const char *dir, int flags)
{
	char tmpl[256];
	int fd = open(dir, flags | O_TMPFILE, 0600);

	snprintf(sw->name, sizeof(sw->name), "%s/(unlinked upager swap)", dir);
	if (fd >= 0 || (errno != EOPNOTSUPP && errno != EISDIR))
		return fd;
	snprintf(tmpl, sizeof(tmpl), "%s/upager-swap.XXXXXX", dir);
	fd = mkostemp(tmpl, flags & ~O_RDWR);
	if (fd >= 0)
		unlink(tmpl);
	return fd;
}

static int open_file(struct upg_swap *sw, const char *path, bool direct)
{
	int flags = O_RDWR | O_CLOEXEC | (direct ? O_DIRECT : 0);
	struct stat st;

	if (!*path)
		return open_in_dir(sw, default_dir(), flags);
	if (!stat(path, &st) && S_ISDIR(st.st_mode))
		return open_in_dir(sw, path, flags);
	snprintf(sw->name, sizeof(sw->name), "%s", path);
	if (!stat(path, &st) && S_ISBLK(st.st_mode)) {
		sw->blockdev = true;
		return open(path, flags);
	}
	return open(path, flags | O_CREAT | O_TRUNC, 0600);
}

/* A block device has a fixed size; a file grows up to @max. */
static int size_limits(struct upg_swap *sw, size_t max)
{
	uint64_t bytes = max ? max : SLOTS_MAX << UPG_PAGE_SHIFT;

	if (sw->blockdev) {
		uint64_t dev;

		if (ioctl(sw->fd, BLKGETSIZE64, &dev) < 0)
			return -errno;
		bytes = max ? MIN(bytes, dev) : dev;
	}
	sw->nslots = MIN(bytes >> UPG_PAGE_SHIFT, SLOTS_MAX);
	return sw->nslots > 1 ? 0 : -EINVAL;
}

static void *map_shared(size_t len)
{
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE,
		       MAP_SHARED | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);

	return p == MAP_FAILED ? NULL : p;
}

static int map_slots(struct upg_swap *sw)
{
	sw->file_slots = map_shared(UPG_PAGE_SIZE);
	sw->inuse = sw->file_slots ? sw->file_slots + 1 : NULL;
	sw->ref = map_shared(sw->nslots * sizeof(*sw->ref));
	sw->slot = map_shared(sw->nslots * sizeof(*sw->slot));
	return sw->file_slots && sw->ref && sw->slot ? 0 : -ENOMEM;
}

static void unmap_slots(struct upg_swap *sw)
{
	if (sw->file_slots)
		munmap((void *)sw->file_slots, UPG_PAGE_SIZE);
	if (sw->ref)
		munmap((void *)sw->ref, sw->nslots * sizeof(*sw->ref));
	if (sw->slot)
		munmap(sw->slot, sw->nslots * sizeof(*sw->slot));
}

int upg_swap_open(const char *path, size_t max, bool direct,
		  struct upg_swap **out)
{
	struct upg_swap *sw = upg_map(sizeof(*sw));
	int err;

	if (!sw)
		return -ENOMEM;
	sw->fd = open_file(sw, path ? path : "", direct);
	sw->clean = direct && swap_have_clwb();
	if (sw->fd < 0) {
		err = -errno;
		upg_seterr(err, "UPG_SWAP_FILE: cannot open a swap file %s: %s",
			   sw->name, strerror(-err));
		goto err_free;
	}
	err = size_limits(sw, max);
	if (err) {
		upg_seterr(err, "UPG_SWAP_MAX: %s: no room for a single slot",
			   sw->name);
		goto err_close;
	}
	err = map_slots(sw);
	sw->stage = upg_map(UPG_PAGE_SIZE);
	if (!err && !sw->stage)
		err = -ENOMEM;
	if (err) {
		upg_seterr(err, "swap slot map: out of memory");
		goto err_close;
	}
	if (sw->blockdev)
		*sw->file_slots = sw->nslots;
	sw->ref[0] = REF_PINNED; /* slot 0 means "none" */
	sw->cursor = sw->tail = 1;
	*out = sw;
	return 0;

err_close:
	if (sw->stage)
		upg_unmap(sw->stage, UPG_PAGE_SIZE);
	unmap_slots(sw);
	close(sw->fd);
err_free:
	upg_unmap(sw, sizeof(*sw));
	return err;
}

void upg_swap_close(struct upg_swap *sw)
{
	if (!sw)
		return;
	close(sw->fd);
	upg_unmap(sw->stage, UPG_PAGE_SIZE);
	unmap_slots(sw);
	upg_unmap(sw, sizeof(*sw));
}

/* ------------------------------------------------------------------ */
/* Slots                                                               */
/* ------------------------------------------------------------------ */

static bool slot_used(struct upg_swap *sw, uint64_t s)
{
	return atomic_load_explicit(&sw->ref[s], memory_order_relaxed) != 0;
}

/* Drop one reference to slot @s. */
void swap_unref(struct upg_swap *sw, uint64_t s)
{
	uint16_t r = atomic_load_explicit(&sw->ref[s], memory_order_relaxed);

	do {
		if (r == REF_PINNED || !r)
			return;
	} while (!atomic_compare_exchange_weak(&sw->ref[s], &r,
					       (uint16_t)(r - 1)));
	if (r == 1) /* the last reference */
		atomic_fetch_sub_explicit(sw->inuse, 1, memory_order_relaxed);
}

void upg_swap_free(struct upg_swap *sw, uint64_t loc)
{
	uint64_t s = upg_swap_loc_slot(loc);

	if (!loc || upg_swap_loc_last(loc) >= sw->nslots)
		return;
	for (; s <= upg_swap_loc_last(loc); s++)
		swap_unref(sw, s);
}

/* Take @s if free. */
static bool take(struct upg_swap *sw, uint64_t s)
{
	uint16_t zero = 0;

	if (!atomic_compare_exchange_strong(&sw->ref[s], &zero, 1))
		return false;
	atomic_fetch_add_explicit(sw->inuse, 1, memory_order_relaxed);
	return true;
}

void upg_swap_fork(struct upg_swap *sw)
{
	for (uint64_t s = 1; s < atomic_load(sw->file_slots); s++) {
		uint16_t r =
			atomic_load_explicit(&sw->ref[s], memory_order_relaxed);

		while (r && r != REF_PINNED &&
		       !atomic_compare_exchange_weak(
			       &sw->ref[s], &r,
			       (uint16_t)MIN(2U * r, REF_PINNED)))
			;
	}
}

/* Reserve file space up to slot @end (exclusive). */
static int grow(struct upg_swap *sw, uint64_t end)
{
	uint64_t have = atomic_load(sw->file_slots), want;

	if (end <= have)
		return 0;
	if (sw->blockdev)
		return -ENOSPC;
	want = MIN(MAX(end, have + MAX(GROW_SLOTS, have / 8)), sw->nslots);
	/* Near a full file system, a smaller step may still fit. */
	while (fallocate(sw->fd, 0, (off_t)(have << UPG_PAGE_SHIFT),
			 (off_t)((want - have) << UPG_PAGE_SHIFT)) < 0) {
		if (want == end || (errno != ENOSPC && errno != EDQUOT))
			return -errno;
		want = MAX(end, have + (want - have) / 4);
	}
	while (have < want &&
	       !atomic_compare_exchange_weak(sw->file_slots, &have, want))
		; /* another process may have grown it further */
	return 0;
}

/* The first free slot at or after @from, or nslots. */
static uint64_t next_free(struct upg_swap *sw, uint64_t from)
{
	while (from < sw->nslots && slot_used(sw, from))
		from++;
	return from;
}

/* Whether at least 3/4 of the file's slots are in use. */
static bool file_full(struct upg_swap *sw, uint64_t file)
{
	uint64_t inuse = atomic_load_explicit(sw->inuse, memory_order_relaxed);

	return file <= 1 || inuse * 4 >= (file - 1) * 3;
}

/*
 * Next-fit inside the file: the first run of @min free slots from the
 * cursor on, wrapping at the file's end, looking at SCAN_MAX slots at
 * most; failing that, the first free slot seen. Return: NONE if none.
 */
static uint64_t find_in_file(struct upg_swap *sw, uint64_t file, unsigned min)
{
	uint64_t s = sw->cursor < file ? sw->cursor : 1, any = NONE, run = 0;

	for (uint64_t seen = 0; seen < MIN(SCAN_MAX, file - 1); seen++, s++) {
		if (s >= file) { /* wrap: a run does not span the end */
			s = 1;
			run = 0;
		}
		if (slot_used(sw, s)) {
			run = 0;
			continue;
		}
		if (any == NONE)
			any = s;
		if (++run == min)
			return s + 1 - min;
	}
	return any;
}

/*
 * Where to allocate up to @want slots. Freed slots inside the file are
 * reused first (next-fit, preferring runs of RUN_MIN slots, so a batch
 * stays one or a few requests and readahead finds neighbours together).
 * Once 3/4 of the file is in use, runs are appended instead: after the
 * last appended run, into the room the last growth left, and the file
 * grows when that is used up. So the file stays within 4/3 of the slots
 * in use plus a growth step, where it used to grow by every write while
 * freed slots piled up behind the cursor. Return: the first slot (nslots
 * if there is none); in *@end where the run must stop (the file's end
 * when reusing); in *@append whether it is appended.
 */
static uint64_t place(struct upg_swap *sw, unsigned want, uint64_t *end,
		      bool *append)
{
	uint64_t file = atomic_load(sw->file_slots), s = NONE;

	*end = file;
	*append = false;
	if (!file_full(sw, file))
		s = find_in_file(sw, file, MIN(want, RUN_MIN));
	if (s != NONE)
		return s;
	*end = sw->nslots;
	*append = true;
	s = next_free(sw, MAX(sw->tail, 1));
	return s < sw->nslots ? s : next_free(sw, 1); /* at its limit */
}

/*
 * Allocate up to @want contiguous slots; the file grows first if needed.
 * Return: how many (from *@first), 0 with *@err set when none.
 */
unsigned swap_alloc_run(struct upg_swap *sw, unsigned want, uint64_t *first,
			int *err)
{
	uint64_t end, s;
	unsigned n = 0;
	bool append;

	s = place(sw, want, &end, &append);
	if (s >= sw->nslots) {
		*err = -ENOSPC;
		return 0;
	}
	while (n < want && s + n < end && !slot_used(sw, s + n))
		n++;
	*err = grow(sw, s + n);
	if (*err)
		return 0;
	for (unsigned i = 0; i < n; i++) {
		if (!take(sw, s + i)) { /* another process took it */
			n = i;
			break;
		}
	}
	sw->cursor = s + n + !n;
	if (append)
		sw->tail = s + n;
	*first = s;
	if (!n)
		*err = -EAGAIN;
	return n;
}

uint64_t upg_swap_used(struct upg_swap *sw)
{
	return atomic_load_explicit(sw->inuse, memory_order_relaxed);
}

uint64_t upg_swap_file_bytes(struct upg_swap *sw)
{
	return atomic_load(sw->file_slots) << UPG_PAGE_SHIFT;
}

int upg_swap_fd(struct upg_swap *sw)
{
	return sw->fd;
}

const char *upg_swap_name(struct upg_swap *sw)
{
	return sw->name;
}

bool upg_swap_failing(struct upg_swap *sw)
{
	return upg_now_ns() < atomic_load(&sw->fail_until);
}

bool upg_swap_matches(struct upg_swap *sw, uint64_t loc, const void *page)
{
	struct slot *si = &sw->slot[upg_swap_loc_slot(loc)];
	uint32_t bit = 1U << swap_loc_index(loc);
	struct upg_swap_sum h;

	if (!(atomic_load_explicit(&si->page_known, memory_order_acquire) &
	      bit))
		return false;
	upg_swap_sum(page, UPG_PAGE_SIZE, &h);
	return (h.a ^ h.b) == si->page[swap_loc_index(loc)];
}

/*
 * Check slots [@first, @first + @n), read into @data, against their
 * checksums. Return: 0, or -EBADMSG.
 */
static int check_slots(struct upg_swap *sw, uint64_t first, unsigned n,
		       const char *data)
{
	for (unsigned j = 0; j < n; j++) {
		struct upg_swap_sum h;

		upg_swap_sum(data + ((size_t)j << UPG_PAGE_SHIFT),
			     UPG_PAGE_SIZE, &h);
		if (!sum_equal(&h, &sw->slot[first + j].data))
			return -EBADMSG;
	}
	return 0;
}

/*
 * Decode object @loc, whose bytes are at @obj, into @page; learn the
 * page's checksum on the first read. Return: 0, or -EBADMSG.
 */
static int unpack(struct upg_swap *sw, uint64_t loc, const char *obj,
		  char *page)
{
	struct slot *si = &sw->slot[upg_swap_loc_slot(loc)];
	uint32_t len = upg_swap_loc_len(loc), bit = 1U << swap_loc_index(loc);
	struct upg_swap_sum h;

	if (len == UPG_PAGE_SIZE) {
		memcpy(page, obj, UPG_PAGE_SIZE);
		return 0;
	}
	if (!len || upg_decompress_page(obj, (int)len, page))
		return -EBADMSG;
	if (!(atomic_load_explicit(&si->page_known, memory_order_acquire) &
	      bit)) {
		upg_swap_sum(page, UPG_PAGE_SIZE, &h);
		si->page[swap_loc_index(loc)] = h.a ^ h.b;
		atomic_fetch_or_explicit(&si->page_known, bit,
					 memory_order_release);
	}
	return 0;
}

int upg_swap_read(struct upg_swap *sw, struct upg_io *io, const uint64_t *locs,
		  unsigned n, void *buf, void *scratch)
{
	uint64_t first = upg_swap_loc_slot(locs[0]);
	uint64_t last = n ? upg_swap_loc_last(locs[n - 1]) : 0;
	struct upg_io_op op = {
		.buf = scratch,
		.len = (size_t)(last - first + 1) << UPG_PAGE_SHIFT,
		.off = first << UPG_PAGE_SHIFT,
	};
	int err;

	if (!n || !first || last >= sw->nslots || last - first >= 2ULL * n)
		return -EINVAL;
	for (unsigned i = 1; i < n; i++)
		if (!upg_swap_follows(locs[i - 1], locs[i]))
			return -EINVAL;
	if (upg_io_run(io, sw->fd, &op, 1, false))
		return op.res;
	err = check_slots(sw, first, (unsigned)(last - first + 1), scratch);
	for (unsigned i = 0; i < n && !err; i++)
		err = unpack(sw, locs[i],
			     (char *)scratch +
				     ((upg_swap_loc_slot(locs[i]) - first)
				      << UPG_PAGE_SHIFT) +
				     upg_swap_loc_off(locs[i]),
			     (char *)buf + ((size_t)i << UPG_PAGE_SHIFT));
	return err;
}
