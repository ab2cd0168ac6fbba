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

#include "common.h"
#include "compress.h"
#include "swap.h"

#if defined(__x86_64__)
#include <cpuid.h>
#include <immintrin.h>
#endif

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

/*
 * Dirty cache lines in a direct write's buffer. On this VM a direct write
 * from a buffer just filled went slower than from one written long ago
 * (a writer that copies each request first: 2.2 GB/s into reused blocks
 * against 3.4 without the copy), and writing the lines back (CLWB, which
 * keeps them cached) before submitting brought it to 2.5-2.7 GB/s;
 * flushing them (CLFLUSHOPT) or copying with non-temporal stores did not.
 * Write-back, whose CPU time is mostly elsewhere, gained 4-5% (bench_swap
 * --phase writeback, six runs each way: 2,020 against 1,912 MB/s of pages
 * into a new file, 2,358 against 2,272 into reused slots).
 */
#if defined(__x86_64__)
static bool have_clwb(void)
{
	unsigned a, b, c, d;

	return __get_cpuid_count(7, 0, &a, &b, &c, &d) && (b >> 24 & 1);
}

__attribute__((target("clwb"))) static void clean_lines(void *buf, size_t len)
{
	char *p = buf, *end = p + len;

	for (; p < end; p += UPG_CACHELINE)
		_mm_clwb(p);
	_mm_sfence();
}
#else
static bool have_clwb(void)
{
	return false;
}

static void clean_lines(void *buf, size_t len)
{
	(void)buf;
	(void)len;
}
#endif

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
	sw->clean = direct && have_clwb();
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
static void unref(struct upg_swap *sw, uint64_t s)
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
		unref(sw, s);
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

static unsigned loc_index(uint64_t loc)
{
	return (unsigned)(loc >> 25) & (OBJS - 1);
}

bool upg_swap_matches(struct upg_swap *sw, uint64_t loc, const void *page)
{
	struct slot *si = &sw->slot[upg_swap_loc_slot(loc)];
	uint32_t bit = 1U << loc_index(loc);
	struct upg_swap_sum h;

	if (!(atomic_load_explicit(&si->page_known, memory_order_acquire) &
	      bit))
		return false;
	upg_swap_sum(page, UPG_PAGE_SIZE, &h);
	return (h.a ^ h.b) == si->page[loc_index(loc)];
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

/* ------------------------------------------------------------------ */
/* Packing                                                             */
/* ------------------------------------------------------------------ */

static uint64_t make_loc(uint64_t slot, unsigned k, uint32_t off, uint32_t len)
{
	return slot << 28 | (uint64_t)k << 25 | (uint64_t)off << 13 | len;
}

/*
 * Packing position: @pos bytes packed from a slot's start, and @nstart
 * objects starting in slot @cur (the slot of the last object's start).
 */
struct packing {
	size_t pos;
	size_t cur;
	unsigned nstart;
};

/*
 * Where the next object goes: at the end of the last one, or at the next
 * slot's start when UPG_SWAP_SLOT_OBJS start in the slot there already.
 * Return: its offset from the first slot; counts it as started there.
 */
static size_t next_at(struct packing *p)
{
	size_t at = p->pos;

	if (at / UPG_PAGE_SIZE == p->cur && p->nstart == OBJS)
		at = SLOT_UP(at) << UPG_PAGE_SHIFT;
	if (at / UPG_PAGE_SIZE != p->cur || !p->nstart) {
		p->cur = at / UPG_PAGE_SIZE;
		p->nstart = 0;
	}
	return at;
}

/* Slots that objects [0, n) take packed from a slot's start. */
static unsigned slots_needed(const uint32_t *lens, unsigned n)
{
	struct packing p = { 0 };

	for (unsigned i = 0; i < n; i++) {
		p.pos = next_at(&p) + lens[i];
		p.nstart++;
	}
	return (unsigned)SLOT_UP(p.pos);
}

/* A run being packed: @k slots from @first, staged at @base in w->buf. */
struct run {
	uint64_t first;
	unsigned k;
	size_t base;
	struct packing p;
};

/*
 * Place objects from @i on into run @r while they fit, zeroing the gaps.
 * Return: the first object not placed.
 */
static unsigned fill_run(struct upg_swap *sw, struct run *r,
			 const uint32_t *lens, unsigned i, unsigned n,
			 struct upg_swap_wr *w)
{
	size_t room = (size_t)r->k << UPG_PAGE_SHIFT;

	for (; i < n; i++) {
		struct packing p = r->p;
		size_t at = next_at(&p);
		uint64_t s = r->first + p.cur;

		if (at + lens[i] > room)
			break;
		if (!p.nstart)
			atomic_store_explicit(&sw->slot[s].page_known, 0,
					      memory_order_relaxed);
		memset(w->buf + r->base + r->p.pos, 0, at - r->p.pos);
		w->locs[i] = make_loc(s, p.nstart, at % UPG_PAGE_SIZE, lens[i]);
		w->offs[i] = r->base + at;
		p.nstart++;
		p.pos = at + lens[i];
		r->p = p;
	}
	return i;
}

/*
 * The run's slots after @used go back; each one kept holds one reference
 * per object lying in it (objects [from, to)).
 */
static void settle_run(struct upg_swap *sw, struct run *r, unsigned used,
		       unsigned from, unsigned to, const uint64_t *locs)
{
	uint16_t refs[UPG_SWAP_WRITE_MAX] = { 0 };

	for (unsigned j = used; j < r->k; j++)
		unref(sw, r->first + j);
	if (sw->cursor == r->first + r->k)
		sw->cursor = r->first + used;
	if (sw->tail == r->first + r->k)
		sw->tail = r->first + used;
	for (unsigned i = from; i < to; i++)
		for (uint64_t s = upg_swap_loc_slot(locs[i]);
		     s <= upg_swap_loc_last(locs[i]); s++)
			refs[s - r->first]++;
	/* Ours alone (taken at 1) until the locations are published. */
	for (unsigned j = 0; j < used; j++)
		atomic_store_explicit(&sw->ref[r->first + j], refs[j],
				      memory_order_relaxed);
}

/* Pack objects from @i on into one newly allocated run. Return: the next. */
static unsigned pack_run(struct upg_swap *sw, const uint32_t *lens, unsigned i,
			 unsigned n, struct upg_swap_wr *w, size_t *staged,
			 int *err)
{
	struct run r = { .base = *staged };
	unsigned want = slots_needed(lens + i, n - i), used, to;
	struct upg_io_op *op;

	want = MIN(want, (unsigned)(((size_t)w->n << UPG_PAGE_SHIFT) - r.base) /
				 UPG_PAGE_SIZE);
	r.k = want ? alloc_run(sw, want, &r.first, err) : 0;
	if (!want)
		*err = -ENOBUFS; /* (cannot happen: n objects fit n pages) */
	if (!r.k)
		return i;
	to = fill_run(sw, &r, lens, i, n, w);
	used = (unsigned)SLOT_UP(r.p.pos);
	if (to == i) { /* (cannot happen: an object fits an empty slot) */
		settle_run(sw, &r, 0, i, i, w->locs);
		*err = -ENOBUFS;
		return i;
	}
	memset(w->buf + r.base + r.p.pos, 0,
	       ((size_t)used << UPG_PAGE_SHIFT) - r.p.pos);
	settle_run(sw, &r, used, i, to, w->locs);
	op = &w->ops[w->nops];
	*op = (struct upg_io_op){ .buf = w->buf + r.base,
				  .len = (size_t)used << UPG_PAGE_SHIFT,
				  .off = r.first << UPG_PAGE_SHIFT };
	w->first[w->nops++] = i;
	*staged += op->len;
	return to;
}

unsigned upg_swap_pack(struct upg_swap *sw, struct upg_stat_shard *st,
		       const uint32_t *lens, unsigned n, char *buf,
		       uint64_t *locs, size_t *offs, struct upg_swap_wr *w)
{
	size_t staged = 0;
	unsigned i = 0;
	int err = 0;

	*w = (struct upg_swap_wr){ .n = MIN(n, UPG_SWAP_WRITE_MAX),
				   .buf = buf,
				   .locs = locs,
				   .offs = offs };
	while (i < w->n) {
		unsigned next = pack_run(sw, lens, i, w->n, w, &staged, &err);

		if (next == i && err == -EAGAIN)
			continue; /* lost a race with the other process */
		if (next == i)
			break;
		i = next;
	}
	for (unsigned j = i; j < n; j++)
		locs[j] = 0;
	if (i < w->n)
		failed(sw, st, err);
	w->got = i;
	return i;
}

/* Checksum the slots of request @k from byte @from up to byte @to. */
static void sum_slots(struct upg_swap *sw, struct upg_swap_wr *w, unsigned k,
		      size_t from, size_t to)
{
	struct upg_io_op *op = &w->ops[k];
	uint64_t first = op->off >> UPG_PAGE_SHIFT;

	for (size_t at = from; at + UPG_PAGE_SIZE <= to; at += UPG_PAGE_SIZE)
		upg_swap_sum((char *)op->buf + at, UPG_PAGE_SIZE,
			     &sw->slot[first + (at >> UPG_PAGE_SHIFT)].data);
}

/*
 * Slots are checksummed as soon as their last byte is staged (the caller
 * copies objects in order; the gaps and tails were zeroed when packing):
 * hashing them in a pass over the staging after all the copies read
 * ~700 KiB back from L2 and took 17% of write-back's CPU time.
 */
void upg_swap_staged(struct upg_swap *sw, struct upg_swap_wr *w, unsigned i)
{
	size_t base, to;

	if (i >= w->got)
		return;
	for (; w->hop + 1 < w->nops && w->first[w->hop + 1] <= i; w->hop++) {
		sum_slots(sw, w, w->hop, w->hashed, w->ops[w->hop].len);
		w->hashed = 0;
	}
	base = (size_t)((char *)w->ops[w->hop].buf - w->buf);
	to = w->offs[i] + upg_swap_loc_len(w->locs[i]) - base;
	if (i + 1 == (w->hop + 1 < w->nops ? w->first[w->hop + 1] : w->got))
		to = w->ops[w->hop].len; /* its tail is zeros */
	to &= ~(size_t)(UPG_PAGE_SIZE - 1);
	sum_slots(sw, w, w->hop, w->hashed, to);
	w->hashed = MAX(w->hashed, to);
}

/*
 * Record the checksums of the staged slots not recorded yet, and the page
 * checksum of each whole page (an object's is learnt when it is first
 * decoded): a page alone in its slot has the slot's.
 */
static void record(struct upg_swap *sw, struct upg_swap_wr *w)
{
	for (unsigned k = w->hop; k < w->nops; k++)
		sum_slots(sw, w, k, k == w->hop ? w->hashed : 0, w->ops[k].len);
	w->hop = w->nops;
	for (unsigned i = 0; i < w->got; i++) {
		uint64_t loc = w->locs[i];
		struct slot *si = &sw->slot[upg_swap_loc_slot(loc)];
		struct upg_swap_sum h = si->data;

		if (upg_swap_loc_len(loc) != UPG_PAGE_SIZE)
			continue;
		if (upg_swap_loc_off(loc))
			upg_swap_sum(w->buf + w->offs[i], UPG_PAGE_SIZE, &h);
		si->page[loc_index(loc)] = h.a ^ h.b;
		atomic_fetch_or_explicit(&si->page_known, 1U << loc_index(loc),
					 memory_order_release);
	}
}

void upg_swap_submit(struct upg_swap *sw, struct upg_io *io,
		     struct upg_swap_wr *w)
{
	record(sw, w);
	if (sw->clean)
		for (unsigned k = 0; k < w->nops; k++)
			clean_lines(w->ops[k].buf, w->ops[k].len);
	upg_io_start(io, sw->fd, w->ops, w->nops, true);
}

unsigned upg_swap_write_finish(struct upg_swap *sw, struct upg_io *io,
			       struct upg_stat_shard *st, struct upg_swap_wr *w)
{
	uint64_t bytes = 0;
	unsigned bad = 0;

	upg_io_finish(io, w->ops, w->nops);
	for (unsigned k = 0; k < w->nops; k++) {
		unsigned end = k + 1 < w->nops ? w->first[k + 1] : w->got;

		if (!w->ops[k].res) {
			bytes += w->ops[k].len;
			continue;
		}
		failed(sw, st, w->ops[k].res);
		for (unsigned i = w->first[k]; i < end; i++) {
			upg_swap_free(sw, w->locs[i]);
			w->locs[i] = 0;
		}
	}
	for (unsigned i = 0; i < w->n; i++)
		bad += !w->locs[i];
	upg_stat_add(st, UPG_STAT_swap_writes, w->n - bad);
	upg_stat_add(st, UPG_STAT_swap_write_bytes, bytes);
	return bad;
}

unsigned upg_swap_write(struct upg_swap *sw, struct upg_io *io,
			struct upg_stat_shard *st, void *const *pages,
			unsigned n, uint64_t *locs)
{
	static const uint32_t whole = UPG_PAGE_SIZE;
	struct upg_swap_wr w;
	unsigned bad = 0;
	size_t off;

	/* One at a time, through a page of the file's own (rare: the pool
	 * is full). */
	for (unsigned i = 0; i < n; i++) {
		if (!upg_swap_pack(sw, st, &whole, 1, sw->stage, &locs[i], &off,
				   &w)) {
			bad++;
			continue;
		}
		memcpy(sw->stage, pages[i], UPG_PAGE_SIZE);
		upg_swap_submit(sw, io, &w);
		bad += upg_swap_write_finish(sw, io, st, &w);
	}
	return bad;
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
	uint32_t len = upg_swap_loc_len(loc), bit = 1U << loc_index(loc);
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
		si->page[loc_index(loc)] = h.a ^ h.b;
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
