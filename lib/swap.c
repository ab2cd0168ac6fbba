/* SPDX-License-Identifier: MIT */
/*
 * The swap file (see swap.h for the contract).
 *
 * Security: by default the file is an unlinked O_TMPFILE with mode 0600 in
 * $TMPDIR or /var/tmp, so no other user can open it and nothing is left
 * behind after a crash. Space is reserved with fallocate() before a slot
 * is written, so a full file system fails the write at once (ENOSPC)
 * instead of losing a buffered page at writeback.
 *
 * Slot contents: a page written back from the pool is stored as the
 * pool's LZ4 object of it, at the start of its slot (the rest is zeros),
 * and decoded when read back; a page that does not compress, or one the
 * evictor writes straight to the file, is stored whole. So write-back
 * copies objects instead of decompressing them (two thirds of its CPU time
 * and the limit on its throughput, when it decompressed), and only pages
 * that are read back again pay for decoding. Slots stay 4 KiB, so the
 * file's layout, readahead and slot accounting do not depend on the
 * format.
 *
 * Slot map: a reference count and a struct slot per slot, in lazily
 * populated *shared* anonymous memory sized for the largest file, so that
 * after fork() parent and child (which share the file) allocate from one
 * map: a slot is taken by a CAS from 0 to 1, and the slots in use at fork
 * time gain a reference (upg_swap_fork()), so neither process reuses a
 * slot the other still needs. A count that reaches 255 pins its slot.
 * Only the evictor allocates; any thread frees.
 *
 * Integrity: the bytes a slot holds are checked against their 128-bit
 * checksum when read back, so a corrupt or failing file is reported as the
 * error it is, never returned as data. The page's own checksum, known from
 * the start for a whole page and computed when an object is first decoded,
 * lets the evictor drop a clean page whose slot still holds it (a store
 * racing with the eviction changes the checksum).
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

#include "common.h"
#include "compress.h"
#include "swap.h"

#define SLOTS_MAX (1ULL << 28) /* 1 TiB of 4 KiB slots */
#define REF_PINNED 255
#define GROW_SLOTS 4096ULL    /* the file grows by 16 MiB or 1/8 */
#define RUN_MIN 16	      /* a free run worth writing into */
#define SCAN_MAX (1ULL << 16) /* slots looked at per allocation */
#define NONE UINT64_MAX
#define FAIL_BACKOFF_NS 1000000000ULL /* no writes for 1 s after a failure */

enum cause { C_NOSPC, C_IO, C_SHORT, C_OTHER, C_NR };

/*
 * What a slot holds: @len bytes (UPG_PAGE_SIZE: the page itself; fewer:
 * its LZ4 object) whose checksum is @data, and, once @page_known, the
 * checksum of the page they decode to. Written by the evictor before the
 * write that fills the slot; @page also by readers of the slot, which all
 * compute the same value (a benign race between processes sharing it);
 * @page_known is set after @page with release, read with acquire.
 */
struct slot {
	struct upg_swap_sum data;
	struct upg_swap_sum page;
	uint32_t len;
	_Atomic uint32_t page_known;
};

struct upg_swap {
	int fd;
	bool blockdev;
	char name[256];
	uint64_t nslots;	      /* limit */
	uint64_t cursor;	      /* next-fit inside the file */
	uint64_t tail;		      /* where the last run appended ended */
	_Atomic uint64_t used;	      /* slots this process references */
	_Atomic uint64_t *file_slots; /* shared: slots the file has room for */
	_Atomic uint64_t *inuse;      /* shared: slots with a reference */
	_Atomic uint8_t *ref;	      /* shared: references per slot */
	struct slot *slot;	      /* shared */
	_Atomic uint64_t fail_until;
	_Atomic bool reported[C_NR];
};

/* ------------------------------------------------------------------ */
/* Hash                                                                */
/* ------------------------------------------------------------------ */

static uint64_t rotl(uint64_t x, int r)
{
	return (x << r) | (x >> (64 - r));
}

/*
 * Four independent multiply-rotate lanes over 32-byte blocks of the data
 * (so the multiplies overlap), the tail zero-padded, folded into 128 bits
 * with the length. Not cryptographic: it guards against a racing store and
 * a damaged file, not an adversary. ~0.2 us for a page here.
 */
static uint64_t mix(uint64_t h, uint64_t w, uint64_t k)
{
	return rotl((h ^ w) * k, 31);
}

struct lanes {
	uint64_t h[4];
};

static void mix_block(struct lanes *l, const void *block)
{
	uint64_t w[4];

	memcpy(w, block, sizeof(w));
	l->h[0] = mix(l->h[0], w[0], 0xff51afd7ed558ccdULL);
	l->h[1] = mix(l->h[1], w[1], 0xc4ceb9fe1a85ec53ULL);
	l->h[2] = mix(l->h[2], w[2], 0x94d049bb133111ebULL);
	l->h[3] = mix(l->h[3], w[3], 0xbf58476d1ce4e5b9ULL);
}

void upg_swap_sum(const void *data, size_t len, struct upg_swap_sum *out)
{
	struct lanes l = { { 0x9e3779b97f4a7c15ULL, 0xc2b2ae3d27d4eb4fULL,
			     0x165667b19e3779f9ULL, 0x27d4eb2f165667c5ULL } };
	const char *p = data;
	char tail[32] = { 0 };
	uint64_t h0, h1;
	size_t i;

	for (i = 0; i + sizeof(tail) <= len; i += sizeof(tail))
		mix_block(&l, p + i);
	if (i < len) {
		memcpy(tail, p + i, len - i);
		mix_block(&l, tail);
	}
	h0 = mix(l.h[0], l.h[2] ^ len, 0xff51afd7ed558ccdULL);
	h1 = mix(l.h[1], l.h[3], 0xc4ceb9fe1a85ec53ULL);
	h0 ^= h0 >> 33;
	h1 ^= h1 >> 29;
	out->a = h0 * 0x94d049bb133111ebULL;
	out->b = h1 * 0xbf58476d1ce4e5b9ULL;
}

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
	sw->ref = map_shared(sw->nslots);
	sw->slot = map_shared(sw->nslots * sizeof(*sw->slot));
	return sw->file_slots && sw->ref && sw->slot ? 0 : -ENOMEM;
}

static void unmap_slots(struct upg_swap *sw)
{
	if (sw->file_slots)
		munmap((void *)sw->file_slots, UPG_PAGE_SIZE);
	if (sw->ref)
		munmap((void *)sw->ref, sw->nslots);
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

void upg_swap_free(struct upg_swap *sw, uint64_t slot)
{
	uint8_t r;

	if (!slot || slot >= sw->nslots)
		return;
	r = atomic_load_explicit(&sw->ref[slot], memory_order_relaxed);
	do {
		if (r == REF_PINNED || !r)
			break;
	} while (!atomic_compare_exchange_weak(&sw->ref[slot], &r,
					       (uint8_t)(r - 1)));
	if (r == 1) /* the last reference */
		atomic_fetch_sub_explicit(sw->inuse, 1, memory_order_relaxed);
	atomic_fetch_sub_explicit(&sw->used, 1, memory_order_relaxed);
}

/* Take @s if free. */
static bool take(struct upg_swap *sw, uint64_t s)
{
	uint8_t zero = 0;

	if (!atomic_compare_exchange_strong(&sw->ref[s], &zero, 1))
		return false;
	atomic_fetch_add_explicit(sw->inuse, 1, memory_order_relaxed);
	return true;
}

void upg_swap_fork(struct upg_swap *sw)
{
	for (uint64_t s = 1; s < atomic_load(sw->file_slots); s++) {
		uint8_t r =
			atomic_load_explicit(&sw->ref[s], memory_order_relaxed);

		while (r && r != REF_PINNED &&
		       !atomic_compare_exchange_weak(&sw->ref[s], &r,
						     (uint8_t)(r + 1)))
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
static unsigned alloc_run(struct upg_swap *sw, unsigned want, uint64_t *first,
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
	atomic_fetch_add_explicit(&sw->used, n, memory_order_relaxed);
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
	return atomic_load_explicit(&sw->used, memory_order_relaxed);
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

bool upg_swap_matches(struct upg_swap *sw, uint64_t slot, const void *page)
{
	struct slot *si = &sw->slot[slot];
	struct upg_swap_sum h;

	if (!atomic_load_explicit(&si->page_known, memory_order_acquire))
		return false;
	upg_swap_sum(page, UPG_PAGE_SIZE, &h);
	return sum_equal(&h, &si->page);
}

/* ------------------------------------------------------------------ */
/* Writing and reading                                                 */
/* ------------------------------------------------------------------ */

static enum cause cause_of(int err)
{
	if (err == -ENOSPC || err == -EDQUOT)
		return C_NOSPC;
	if (err == -ENODATA)
		return C_SHORT;
	return err == -EIO ? C_IO : C_OTHER;
}

/* Count a failure by cause, report the first of each, and back off. */
static void failed(struct upg_swap *sw, struct upg_stat_shard *st, int err)
{
	static const enum upg_stat_id ids[C_NR] = {
		[C_NOSPC] = UPG_STAT_swap_err_nospc,
		[C_IO] = UPG_STAT_swap_err_io,
		[C_SHORT] = UPG_STAT_swap_err_short,
		[C_OTHER] = UPG_STAT_swap_err_other,
	};
	enum cause c = cause_of(err);

	upg_stat_inc(st, ids[c]);
	atomic_store(&sw->fail_until, upg_now_ns() + FAIL_BACKOFF_NS);
	if (!atomic_exchange(&sw->reported[c], true))
		upg_err("swap file %s: %s; the pages stay in memory (the "
			"budget may overrun, see budget_overruns)",
			sw->name,
			c == C_SHORT ? "short write" : strerror(-err));
}

/* Allocate slots for pages [0, n) in contiguous runs. Return: pages with
 * a slot; the rest get 0. */
static unsigned alloc_slots(struct upg_swap *sw, struct upg_stat_shard *st,
			    unsigned n, uint64_t *slots)
{
	unsigned got = 0;
	int err = 0;

	while (got < n) {
		uint64_t first;
		unsigned k = alloc_run(sw, n - got, &first, &err);

		if (!k && err == -EAGAIN)
			continue; /* lost a race with the other process */
		if (!k)
			break;
		for (unsigned i = 0; i < k; i++)
			slots[got + i] = first + i;
		got += k;
	}
	for (unsigned i = got; i < n; i++)
		slots[i] = 0;
	if (got < n)
		failed(sw, st, err);
	return got;
}

/* One request per stretch contiguous both in memory and in the file. */
static unsigned build_ops(void *const *pages, const uint64_t *slots, unsigned n,
			  struct upg_io_op *ops, unsigned *first)
{
	unsigned nops = 0;

	for (unsigned i = 0; i < n; i++) {
		struct upg_io_op *o = nops ? &ops[nops - 1] : NULL;

		if (o && slots[i] == slots[i - 1] + 1 &&
		    (char *)pages[i] == (char *)o->buf + o->len) {
			o->len += UPG_PAGE_SIZE;
			continue;
		}
		first[nops] = i;
		ops[nops++] = (struct upg_io_op){
			.buf = pages[i],
			.len = UPG_PAGE_SIZE,
			.off = slots[i] << UPG_PAGE_SHIFT,
		};
	}
	return nops;
}

/* Record what slot @s is about to hold: @len bytes at @data. */
static void record(struct upg_swap *sw, uint64_t s, const void *data,
		   uint32_t len, const struct upg_swap_sum *sum)
{
	struct slot *si = &sw->slot[s];

	si->len = len;
	if (sum)
		si->data = *sum;
	else
		upg_swap_sum(data, len, &si->data);
	si->page = si->data; /* meaningful for a whole page only */
	atomic_store_explicit(&si->page_known, len == UPG_PAGE_SIZE,
			      memory_order_release);
}

void upg_swap_write_start(struct upg_swap *sw, struct upg_io *io,
			  struct upg_stat_shard *st, void *const *pages,
			  const uint32_t *lens, const struct upg_swap_sum *sums,
			  unsigned n, uint64_t *slots, struct upg_swap_wr *w)
{
	w->n = MIN(n, UPG_SWAP_WRITE_MAX);
	w->slots = slots;
	w->got = alloc_slots(sw, st, w->n, slots);
	for (unsigned i = 0; i < w->got; i++)
		record(sw, slots[i], pages[i],
		       lens ? lens[i] : (uint32_t)UPG_PAGE_SIZE,
		       sums ? &sums[i] : NULL);
	w->nops = build_ops(pages, slots, w->got, w->ops, w->first);
	upg_io_start(io, sw->fd, w->ops, w->nops, true);
}

unsigned upg_swap_write_finish(struct upg_swap *sw, struct upg_io *io,
			       struct upg_stat_shard *st, struct upg_swap_wr *w)
{
	unsigned bad = 0;

	upg_io_finish(io, w->ops, w->nops);
	for (unsigned k = 0; k < w->nops; k++) {
		unsigned end = k + 1 < w->nops ? w->first[k + 1] : w->got;

		if (!w->ops[k].res)
			continue;
		failed(sw, st, w->ops[k].res);
		for (unsigned i = w->first[k]; i < end; i++) {
			upg_swap_free(sw, w->slots[i]);
			w->slots[i] = 0;
		}
	}
	for (unsigned i = 0; i < w->n; i++)
		bad += !w->slots[i];
	upg_stat_add(st, UPG_STAT_swap_writes, w->n - bad);
	return bad;
}

unsigned upg_swap_write(struct upg_swap *sw, struct upg_io *io,
			struct upg_stat_shard *st, void *const *pages,
			unsigned n, uint64_t *slots)
{
	struct upg_swap_wr w;

	upg_swap_write_start(sw, io, st, pages, NULL, NULL, n, slots, &w);
	return upg_swap_write_finish(sw, io, st, &w);
}

/*
 * Check what was read from slot @s into @page against its checksum and
 * decode it in place (through a copy on the stack); learn the page's
 * checksum on the first read. Return: 0, or -EBADMSG.
 */
static int unpack(struct upg_swap *sw, uint64_t s, char *page)
{
	struct slot *si = &sw->slot[s];
	char obj[UPG_PAGE_SIZE];
	struct upg_swap_sum h;
	uint32_t len = si->len;

	if (!len || len > UPG_PAGE_SIZE)
		return -EBADMSG;
	upg_swap_sum(page, len, &h);
	if (!sum_equal(&h, &si->data))
		return -EBADMSG;
	if (len == UPG_PAGE_SIZE)
		return 0;
	memcpy(obj, page, len);
	if (upg_decompress_page(obj, (int)len, page))
		return -EBADMSG;
	if (!atomic_load_explicit(&si->page_known, memory_order_acquire)) {
		upg_swap_sum(page, UPG_PAGE_SIZE, &si->page);
		atomic_store_explicit(&si->page_known, 1, memory_order_release);
	}
	return 0;
}

int upg_swap_read(struct upg_swap *sw, struct upg_io *io, uint64_t slot,
		  unsigned n, void *buf)
{
	struct upg_io_op op = {
		.buf = buf,
		.len = (size_t)n << UPG_PAGE_SHIFT,
		.off = slot << UPG_PAGE_SHIFT,
	};

	if (!slot || slot + n > sw->nslots)
		return -EINVAL;
	if (upg_io_run(io, sw->fd, &op, 1, false))
		return op.res;
	for (unsigned i = 0; i < n; i++) {
		int err = unpack(sw, slot + i,
				 (char *)buf + ((size_t)i << UPG_PAGE_SHIFT));

		if (err)
			return err;
	}
	return 0;
}
