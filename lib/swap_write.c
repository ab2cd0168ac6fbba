/* SPDX-License-Identifier: MIT */
/*
 * The swap file's writing (see swap.c for the file's layout): packing a
 * batch's objects end to end into newly allocated runs of slots,
 * checksumming the slots as they are staged, and the writes.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "swap_impl.h"

#if defined(__x86_64__)
#include <cpuid.h>
#include <immintrin.h>
#endif

/*
 * Dirty cache lines in a direct write's buffer. On this VM a direct write
 * from a buffer just filled went slower than from one written long ago
 * (a writer that copies each request first: 2.2 GB/s into reused blocks
 * against 3.4 without the copy), and writing the lines back (CLWB, which
 * keeps them cached) before submitting brought it to 2.5-2.7 GB/s;
 * flushing them (CLFLUSHOPT) or copying with non-temporal stores did not.
 * Write-back, whose CPU time is mostly elsewhere, gained 4-5% (bench_swap
 * --phase writeback, six runs each way: 2,020 against 1,912 MB/s of pages
 * into a new file, 2,358 against 2,272 into reused slots); a later A/B,
 * five runs each, put it within the runs' spread either way: what it
 * costs the evictor (a sixth of a write-back run) comes back as less
 * waiting for the device (bench/RESULTS.md, session 8). With eight writes
 * in flight, the same: 25 ms less CPU without it, 13-22 ms more waiting.
 * A writer copying 664 KiB requests, eight in flight: 3.1-3.3 GB/s with
 * CLWB, 2.4-2.7 without, 2.5 with non-temporal stores; CLDEMOTE cost what
 * CLWB does, for the same rate.
 */
#if defined(__x86_64__)
bool swap_have_clwb(void)
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
bool swap_have_clwb(void)
{
	return false;
}

static void clean_lines(void *buf, size_t len)
{
	(void)buf;
	(void)len;
}
#endif

/* ------------------------------------------------------------------ */
/* Failures                                                            */
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
		swap_unref(sw, r->first + j);
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
	r.k = want ? swap_alloc_run(sw, want, &r.first, err) : 0;
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
		si->page[swap_loc_index(loc)] = h.a ^ h.b;
		atomic_fetch_or_explicit(&si->page_known,
					 1U << swap_loc_index(loc),
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
