/* SPDX-License-Identifier: MIT */
/*
 * Tests of the compressed pool (lib/pool.c): round trips of every kind of
 * page, the handle contract, the size limit, memory given back (emptied
 * chunks parked for reuse, within bounds), equality, concurrency and
 * fragmentation.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>

#include "common.h"
#include "pool.h"

#define PAGE UPG_PAGE_SIZE

static uint64_t rnd(uint64_t *s)
{
	/* xorshift64*: deterministic, good enough to defeat LZ4 */
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return *s * 0x2545F4914F6CDD1DULL;
}

/* Words from a vocabulary of @vocab (larger: compresses less). */
static void fill_text(void *page, uint64_t seed, unsigned vocab)
{
	static const char *const words[] = {
		"the ",	     "quick ",	"brown ",  "fox ",    "jumps ",
		"over ",     "lazy ",	"dog ",	   "memory ", "page ",
		"fault ",    "kernel ", "user ",   "space ",  "pool ",
		"object ",   "chunk ",	"handle ", "size ",   "class ",
		"thread ",   "lock ",	"free ",   "store ",  "load ",
		"compress ", "swap ",	"file ",   "budget ", "evict ",
		"region ",   "zero ",
	};
	uint64_t s = seed * 2654435761ULL + 1;
	char *p = page;
	size_t off = 0, n;

	while (off < PAGE) {
		const char *w = words[rnd(&s) % MIN(vocab, ARRAY_SIZE(words))];

		n = MIN(strlen(w), PAGE - off);
		memcpy(p + off, w, n);
		off += n;
		if (rnd(&s) % 16 == 0 && off < PAGE)
			p[off++] = (char)('0' + rnd(&s) % 10);
	}
}

/* Records of a small struct: counters, flags, pointers, doubles. */
static void fill_binary(void *page, uint64_t seed)
{
	struct rec {
		uint32_t id;
		uint16_t flags;
		uint16_t len;
		uint64_t ptr;
		double val;
	} *r = page;
	size_t i;

	for (i = 0; i < PAGE / sizeof(*r); i++) {
		r[i].id = (uint32_t)(seed * 1000 + i);
		r[i].flags = (uint16_t)(i % 3);
		r[i].len = (uint16_t)(64 + i % 7);
		r[i].ptr = 0x00007f0000001000ULL + (seed << 16) + i * 64;
		r[i].val = (double)i * 0.5;
	}
}

static void fill_random(void *page, uint64_t seed)
{
	uint64_t *w = page, s = seed * 0x9E3779B97F4A7C15ULL + 7;
	size_t i;

	for (i = 0; i < PAGE / 8; i++)
		w[i] = rnd(&s);
}

static void fill_word(void *page, uint64_t word)
{
	uint64_t *w = page;
	size_t i;

	for (i = 0; i < PAGE / 8; i++)
		w[i] = word;
}

static struct upg_pool *pool;

static void setup(void)
{
	cr_assert_eq(upg_pool_create(256UL << 20, &pool), 0);
}

static void teardown(void)
{
	upg_pool_destroy(pool);
	pool = NULL;
}

static struct upg_pool_stats stats(void)
{
	struct upg_pool_stats s;

	upg_pool_get_stats(pool, &s);
	return s;
}

/* Store @page, check its kind and the handle, restore and compare. */
static uint64_t round_trip(const void *page, int kind)
{
	static __thread char out[PAGE];
	uint64_t h = 0;
	int ret;

	ret = upg_pool_store(pool, page, &h);
	cr_assert_eq(ret, kind, "kind %d, expected %d", ret, kind);
	cr_assert_neq(h, 0);
	cr_assert_eq(h >> UPG_POOL_HANDLE_BITS, 0, "handle %#llx too wide",
		     (unsigned long long)h);
	cr_assert_eq((int)upg_pool_kind(h), kind);
	memset(out, 0xa5, PAGE);
	cr_assert_eq(upg_pool_load(pool, h, out), 0);
	cr_assert_eq(memcmp(out, page, PAGE), 0, "page differs after load");
	cr_assert(upg_pool_equal(pool, h, page));
	return h;
}

TestSuite(pool, .init = setup, .fini = teardown, .timeout = 60);

Test(pool, text_page_round_trips_compressed)
{
	static char page[PAGE];
	struct upg_pool_stats s;
	uint64_t h;

	fill_text(page, 1, 32);
	h = round_trip(page, UPG_POOL_COMPRESSED);
	s = stats();
	cr_assert_eq(s.objects, 1);
	cr_assert_eq(s.stored_bytes, PAGE);
	cr_assert(s.compressed_bytes > 0 && s.compressed_bytes < PAGE * 3 / 4,
		  "text compressed to %llu bytes",
		  (unsigned long long)s.compressed_bytes);
	cr_assert(s.used_bytes >= s.compressed_bytes);
	upg_pool_free(pool, h);
	s = stats();
	cr_assert_eq(s.objects, 0);
	cr_assert_eq(s.compressed_bytes, 0);
}

Test(pool, binary_page_round_trips_compressed)
{
	static char page[PAGE];
	uint64_t h;

	fill_binary(page, 3);
	h = round_trip(page, UPG_POOL_COMPRESSED);
	upg_pool_free(pool, h);
}

Test(pool, random_page_is_stored_raw)
{
	static char page[PAGE];
	struct upg_pool_stats s;
	uint64_t h;

	fill_random(page, 5);
	h = round_trip(page, UPG_POOL_RAW);
	s = stats();
	cr_assert_eq(s.raw, 1);
	cr_assert_eq(s.compressed_bytes, PAGE);
	upg_pool_free(pool, h);
	cr_assert_eq(stats().raw, 0);
}

Test(pool, same_filled_pages_take_no_space)
{
	static const uint64_t words[] = {
		0,
		~0ULL,
		1,
		0x00007f1234567890ULL, /* a pointer: fits 52 bits */
		0xfff8000000000000ULL, /* negative, fits sign-extended */
		0x4141414141414141ULL, /* memset pattern: equal halves */
		0x3ff0000000000000ULL, /* 1.0: interned */
		0x8000000000000001ULL, /* interned */
		0x000fffffffffffffULL, /* bit 51 set, positive: interned */
	};
	static char page[PAGE];
	uint64_t h[ARRAY_SIZE(words)];
	struct upg_pool_stats s;
	size_t i;

	for (i = 0; i < ARRAY_SIZE(words); i++) {
		fill_word(page, words[i]);
		h[i] = round_trip(page, UPG_POOL_SAME);
	}
	s = stats();
	cr_assert_eq(s.used_bytes, 0);
	cr_assert_eq(s.compressed_bytes, 0);
	cr_assert_eq(s.same, ARRAY_SIZE(words));
	cr_assert_eq(s.objects, ARRAY_SIZE(words));
	for (i = 0; i < ARRAY_SIZE(words); i++)
		upg_pool_free(pool, h[i]);
	s = stats();
	cr_assert_eq(s.same, 0);
	cr_assert_eq(s.objects, 0);
}

/*
 * Distinct non-inline words fill the interned table; past it the pages are
 * compressed instead, and freed slots are reused.
 */
Test(pool, interned_words_fall_back_to_compression)
{
	enum { N = 1000 };
	static uint64_t h[N];
	static char page[PAGE];
	unsigned i, same = 0, comp = 0;
	int ret;

	for (i = 0; i < N; i++) {
		fill_word(page, 0x3ff0000000000000ULL + ((uint64_t)i << 33));
		ret = upg_pool_store(pool, page, &h[i]);
		cr_assert(ret == UPG_POOL_SAME || ret == UPG_POOL_COMPRESSED);
		same += ret == UPG_POOL_SAME;
		comp += ret == UPG_POOL_COMPRESSED;
	}
	cr_assert(same >= 16, "only %u interned", same);
	cr_assert(comp > 0, "interned table is unbounded");
	for (i = 0; i < N; i++) {
		static char out[PAGE];

		fill_word(page, 0x3ff0000000000000ULL + ((uint64_t)i << 33));
		cr_assert_eq(upg_pool_load(pool, h[i], out), 0);
		cr_assert_eq(memcmp(out, page, PAGE), 0, "word %u", i);
		upg_pool_free(pool, h[i]);
	}
	fill_word(page, 0x3ff0000000000000ULL + (12345ULL << 33));
	h[0] = round_trip(page, UPG_POOL_SAME);
	upg_pool_free(pool, h[0]);
	cr_assert_eq(stats().used_bytes, stats().parked_bytes);
}

Test(pool, handles_are_never_zero_and_fit_56_bits)
{
	enum { N = 3000 };
	static uint64_t h[N];
	static char page[PAGE];
	int i, ret;

	for (i = 0; i < N; i++) {
		if (i % 4 == 0)
			fill_text(page, (uint64_t)i, 8 + i % 24);
		else if (i % 4 == 1)
			fill_random(page, (uint64_t)i);
		else if (i % 4 == 2)
			fill_word(page, (uint64_t)i * 0x10001);
		else
			fill_binary(page, (uint64_t)i);
		ret = upg_pool_store(pool, page, &h[i]);
		cr_assert_geq(ret, 0);
		cr_assert_neq(h[i], 0);
		cr_assert_eq(h[i] >> UPG_POOL_HANDLE_BITS, 0);
		cr_assert_eq((int)upg_pool_kind(h[i]), ret);
	}
	for (i = 0; i < N; i++)
		upg_pool_free(pool, h[i]);
	cr_assert_eq(stats().objects, 0);
}

Test(pool, store_fails_with_enospc_at_limit_then_recovers)
{
	enum { N = 256 };
	static uint64_t h[N];
	static char page[PAGE];
	struct upg_pool_stats s;
	uint64_t z;
	int i, n, ret = 0;

	upg_pool_set_max(pool, 256 << 10);
	for (n = 0; n < N; n++) {
		fill_random(page, (uint64_t)n);
		ret = upg_pool_store(pool, page, &h[n]);
		if (ret < 0)
			break;
	}
	cr_assert_eq(ret, -ENOSPC);
	cr_assert_geq(n, 32, "only %d raw pages fit in 256 KiB", n);
	s = stats();
	cr_assert_leq(s.used_bytes, s.max_bytes);
	cr_assert_eq(s.objects, (uint64_t)n);

	/* Same-filled pages need no space. */
	fill_word(page, 0);
	cr_assert_eq(upg_pool_store(pool, page, &z), UPG_POOL_SAME);
	upg_pool_free(pool, z);

	/* One free makes room for one more page of that class. */
	upg_pool_free(pool, h[n / 2]);
	fill_random(page, 999);
	cr_assert_eq(upg_pool_store(pool, page, &h[n / 2]), UPG_POOL_RAW);

	/* Raising the limit lets new chunks be mapped again. */
	upg_pool_set_max(pool, 1 << 20);
	fill_random(page, 1000);
	cr_assert_eq(upg_pool_store(pool, page, &z), UPG_POOL_RAW);
	upg_pool_free(pool, z);

	for (i = 0; i < n; i++)
		upg_pool_free(pool, h[i]);
	upg_pool_set_max(pool, 0);
	fill_text(page, 1, 32);
	cr_assert_eq(upg_pool_store(pool, page, &z), -ENOSPC);
	upg_pool_set_max(pool, 64 << 10);
	cr_assert_eq(upg_pool_store(pool, page, &z), UPG_POOL_COMPRESSED);
	upg_pool_free(pool, z);
}

Test(pool, freeing_everything_gives_memory_back)
{
	enum { N = 8000 };
	static uint64_t h[N];
	static char page[PAGE];
	struct upg_pool_stats s;
	uint64_t peak;
	int i;

	for (i = 0; i < N; i++) {
		if (i % 5 == 4)
			fill_random(page, (uint64_t)i);
		else
			fill_text(page, (uint64_t)i, 4 + i % 29);
		cr_assert_geq(upg_pool_store(pool, page, &h[i]), 0);
	}
	peak = stats().used_bytes;
	cr_assert(peak >= (uint64_t)N / 5 * PAGE);
	for (i = 0; i < N; i++)
		upg_pool_free(pool, h[(i * 7919) % N]);
	s = stats();
	/* Only empty chunks parked for reuse stay, then trimming unmaps them. */
	cr_assert_eq(s.used_bytes, s.parked_bytes,
		     "%llu bytes still held of %llu, %llu parked",
		     (unsigned long long)s.used_bytes, (unsigned long long)peak,
		     (unsigned long long)s.parked_bytes);
	cr_assert_leq(s.parked_bytes, s.max_bytes / 4);
	cr_assert_eq(s.objects, 0);
	cr_assert_eq(s.compressed_bytes, 0);
	cr_assert_eq(s.stored_bytes, 0);
	upg_pool_trim(pool);
	s = stats();
	cr_assert_eq(s.used_bytes, 0);
	cr_assert_eq(s.parked_bytes, 0);
}

/* Page @i of a mix: random (raw), same-filled, and text of various words. */
static void mixed_page(char *page, int i)
{
	if (i % 7 == 3)
		fill_random(page, (uint64_t)i);
	else if (i % 11 == 5)
		memset(page, i & 0xff, PAGE);
	else
		fill_text(page, (uint64_t)i, 4 + i % 29);
}

/*
 * upg_pool_free_many() frees what upg_pool_free() would, one by one, and
 * the counters agree: compressed, raw and same-filled pages mixed, a batch
 * that empties chunks, the pages not freed still intact, and then nothing
 * left.
 */
Test(pool, free_many_frees_as_free_does)
{
	enum { N = 3000, BATCH = 256 };
	static uint64_t h[N], batch[BATCH];
	static char page[PAGE], out[PAGE];
	struct upg_pool_stats s, before;
	uint64_t bytes = 0, raw = 0, same = 0, objects = 0;
	int i, n = 0;

	for (i = 0; i < N; i++) {
		mixed_page(page, i);
		cr_assert_geq(upg_pool_store(pool, page, &h[i]), 0);
	}
	before = stats();
	for (i = 0; i < N; i += 2) { /* every other page, in batches */
		const void *obj;
		int kind = (int)upg_pool_kind(h[i]);

		if (kind == UPG_POOL_SAME) {
			same++;
		} else {
			bytes += (uint64_t)upg_pool_object(pool, h[i], &obj);
			raw += kind == UPG_POOL_RAW;
			objects++;
		}
		batch[n++] = h[i];
		if (n == BATCH || i + 2 >= N) {
			upg_pool_free_many(pool, batch, (unsigned)n);
			n = 0;
		}
	}
	s = stats();
	cr_assert_eq(s.objects, before.objects - objects - same);
	cr_assert_eq(s.same, before.same - same);
	cr_assert_eq(s.raw, before.raw - raw);
	cr_assert_eq(s.compressed_bytes, before.compressed_bytes - bytes);
	cr_assert_eq(s.stored_bytes, before.stored_bytes - (N / 2) * PAGE);
	for (i = 1; i < N; i += 2) {
		cr_assert_eq(upg_pool_load(pool, h[i], out), 0);
		mixed_page(page, i);
		cr_assert_eq(memcmp(out, page, PAGE), 0, "page %d", i);
		h[i / 2] = h[i];
	}
	upg_pool_free_many(pool, h, N / 2);
	s = stats();
	cr_assert_eq(s.objects, 0);
	cr_assert_eq(s.same, 0);
	cr_assert_eq(s.raw, 0);
	cr_assert_eq(s.compressed_bytes, 0);
	cr_assert_eq(s.stored_bytes, 0);
	cr_assert_eq(s.used_bytes, s.parked_bytes);
}

/*
 * Unmapping an emptied chunk costs a TLB shootdown: emptied chunks are
 * parked and the next chunks of their size come from there. Storing the
 * same pages again needs the same chunks: no byte more is mapped, and every
 * parked chunk is taken back.
 */
Test(pool, emptied_chunks_are_parked_and_reused)
{
	enum { N = 2000 };
	static uint64_t h[N];
	static char page[PAGE];
	struct upg_pool_stats s;
	uint64_t peak;
	int i, round;

	for (round = 0; round < 2; round++) {
		for (i = 0; i < N; i++) {
			fill_text(page, (uint64_t)i, 4 + i % 29);
			cr_assert_geq(upg_pool_store(pool, page, &h[i]), 0);
		}
		s = stats();
		cr_assert_eq(s.parked_bytes, 0, "round %d: %llu parked", round,
			     (unsigned long long)s.parked_bytes);
		peak = s.used_bytes;
		for (i = 0; i < N; i++)
			upg_pool_free(pool, h[i]);
		s = stats();
		cr_assert_eq(s.objects, 0);
		cr_assert_gt(s.parked_bytes, 0);
		cr_assert_eq(s.used_bytes, s.parked_bytes);
		cr_assert_eq(s.used_bytes, peak, "round %d: %llu of %llu kept",
			     round, (unsigned long long)s.used_bytes,
			     (unsigned long long)peak);
	}
	/* A load through a handle of a parked chunk finds no object. */
	cr_assert_eq(upg_pool_load(pool, h[0], page), -EIO);
}

/* Store text (or @raw: random) pages until -ENOSPC. Return: how many fit. */
static int fill_to_limit(uint64_t *h, int max, bool raw)
{
	static char page[PAGE];
	int n;

	for (n = 0; n < max; n++) {
		if (raw)
			fill_random(page, (uint64_t)n);
		else
			fill_text(page, (uint64_t)n, 4 + n % 29);
		if (upg_pool_store(pool, page, &h[n]) < 0)
			break;
	}
	return n;
}

/*
 * The stash holds at most a quarter of the limit, and gives way when a
 * chunk of another size needs the room: after text pages filled the pool
 * and left, as many raw pages fit as in a pool that never held any.
 */
Test(pool, parked_chunks_are_bounded_and_give_way)
{
	enum { N = 4096, LIMIT = 1 << 20 };
	static uint64_t h[N];
	struct upg_pool_stats s;
	int n, i;

	upg_pool_set_max(pool, LIMIT);
	n = fill_to_limit(h, N, false);
	cr_assert_lt(n, N);
	for (i = 0; i < n; i++)
		upg_pool_free(pool, h[i]);
	s = stats();
	cr_assert_gt(s.parked_bytes, 0);
	cr_assert_leq(s.parked_bytes, LIMIT / 4);
	cr_assert_eq(s.used_bytes, s.parked_bytes);

	n = fill_to_limit(h, N, true);
	s = stats();
	cr_assert_eq(n, LIMIT / PAGE, "%d raw pages fit in 1 MiB", n);
	cr_assert_eq(s.parked_bytes, 0);
	cr_assert_eq(s.used_bytes, LIMIT);
	for (i = 0; i < n; i++)
		upg_pool_free(pool, h[i]);
	cr_assert_eq(stats().parked_bytes, LIMIT / 4);

	/* A lower limit trims the stash to a quarter of it. */
	upg_pool_set_max(pool, LIMIT / 2);
	s = stats();
	cr_assert_leq(s.parked_bytes, LIMIT / 8);
	cr_assert_eq(s.used_bytes, s.parked_bytes);
	upg_pool_trim(pool);
	cr_assert_eq(stats().used_bytes, 0);
}

Test(pool, equal_detects_any_difference)
{
	static char page[PAGE], other[PAGE];
	uint64_t h;
	int kind;

	for (kind = 0; kind < 4; kind++) {
		if (kind == 0)
			fill_word(page, 0x3ff0000000000000ULL);
		else if (kind == 1)
			fill_word(page, 0);
		else if (kind == 2)
			fill_text(page, 7, 32);
		else
			fill_random(page, 7);
		cr_assert_geq(upg_pool_store(pool, page, &h), 0);
		cr_assert(upg_pool_equal(pool, h, page));
		memcpy(other, page, PAGE);
		other[PAGE - 1] ^= 1;
		cr_assert_not(upg_pool_equal(pool, h, other), "last byte");
		memcpy(other, page, PAGE);
		other[0] ^= 0x80;
		cr_assert_not(upg_pool_equal(pool, h, other), "first byte");
		memcpy(other, page, PAGE);
		other[2049] ^= 0x10;
		cr_assert_not(upg_pool_equal(pool, h, other), "middle byte");
		upg_pool_free(pool, h);
	}
}

Test(pool, load_of_an_invalid_handle_fails_with_eio)
{
	static char page[PAGE];
	uint64_t h;

	cr_assert_eq(upg_pool_load(pool, 0, page), -EIO);
	cr_assert_not(upg_pool_equal(pool, 0, page));
	upg_pool_free(pool, 0); /* ignored */
	cr_assert_eq(stats().objects, 0);

	/* A handle whose chunk was unmapped names no object. */
	fill_text(page, 1, 32);
	cr_assert_eq(upg_pool_store(pool, page, &h), UPG_POOL_COMPRESSED);
	upg_pool_free(pool, h);
	cr_assert_eq(stats().objects, 0);
	cr_assert_eq(upg_pool_load(pool, h, page), -EIO);
	cr_assert_not(upg_pool_equal(pool, h, page));
}

struct worker {
	unsigned id;
	unsigned errors;
};

/* Each thread owns its handles (the pool's contract) and verifies them. */
static void *worker_main(void *arg)
{
	enum { RING = 64, ITERS = 4000 };
	struct worker *w = arg;
	static __thread char page[PAGE], out[PAGE];
	uint64_t h[RING], seed[RING];
	unsigned i, slot;

	for (i = 0; i < ITERS + RING; i++) {
		slot = i % RING;
		if (i >= RING) {
			fill_text(page, seed[slot], 4 + seed[slot] % 29);
			if (seed[slot] % 3 == 1)
				fill_random(page, seed[slot]);
			if (seed[slot] % 7 == 2)
				fill_word(page, seed[slot] << 40);
			if (upg_pool_load(pool, h[slot], out) ||
			    memcmp(out, page, PAGE) ||
			    !upg_pool_equal(pool, h[slot], page))
				w->errors++;
			upg_pool_free(pool, h[slot]);
		}
		if (i >= ITERS)
			continue;
		seed[slot] = (uint64_t)w->id << 32 | i;
		fill_text(page, seed[slot], 4 + seed[slot] % 29);
		if (seed[slot] % 3 == 1)
			fill_random(page, seed[slot]);
		if (seed[slot] % 7 == 2)
			fill_word(page, seed[slot] << 40);
		if (upg_pool_store(pool, page, &h[slot]) < 0)
			w->errors++;
	}
	return NULL;
}

Test(pool, concurrent_store_load_free_keeps_data)
{
	enum { T = 4 };
	struct worker w[T];
	pthread_t t[T];
	struct upg_pool_stats s;
	int i;

	for (i = 0; i < T; i++) {
		w[i] = (struct worker){ .id = (unsigned)i + 1 };
		cr_assert_eq(pthread_create(&t[i], NULL, worker_main, &w[i]),
			     0);
	}
	for (i = 0; i < T; i++) {
		pthread_join(t[i], NULL);
		cr_assert_eq(w[i].errors, 0, "thread %d: %u errors", i,
			     w[i].errors);
	}
	s = stats();
	cr_assert_eq(s.objects, 0);
	cr_assert_eq(s.same, 0);
	cr_assert_eq(s.raw, 0);
	cr_assert_eq(s.compressed_bytes, 0);
	cr_assert_eq(s.used_bytes, s.parked_bytes);
	upg_pool_trim(pool);
	cr_assert_eq(stats().used_bytes, 0);
}

/*
 * Without compaction, freeing a random half leaves every chunk about half
 * full. Full, used/compressed is the size-class rounding (< 32 bytes per
 * object of 1-2 KiB here, ~2%) times the chunk tail waste (< 1.7%) plus one
 * partly filled chunk per class: 1.10 allows for that (measured 1.02).
 * Half freed, the ideal is twice that, ~2.05 (measured 2.04); 2.25 allows
 * for the binomial spread of chunk fill and chunks that emptied. Storing as
 * many pages again must reuse the holes (partial chunks are preferred), so
 * used_bytes may grow by at most 5% (measured 0.4%).
 */
Test(pool, fragmentation_stays_bounded_after_random_frees)
{
	enum { N = 20000 };
	static uint64_t h[N];
	static char page[PAGE];
	struct upg_pool_stats s;
	uint64_t seed = 42, full_used;
	double ratio;
	int i, j;

	for (i = 0; i < N; i++) {
		fill_text(page, (uint64_t)i, 4 + i % 29);
		cr_assert_eq(upg_pool_store(pool, page, &h[i]),
			     UPG_POOL_COMPRESSED);
	}
	s = stats();
	full_used = s.used_bytes;
	ratio = (double)s.used_bytes / (double)s.compressed_bytes;
	cr_assert_leq(ratio, 1.10, "full pool: used/compressed %.3f", ratio);

	for (i = N - 1; i > 0; i--) { /* shuffle, then free the first half */
		uint64_t t = h[i];

		j = (int)(rnd(&seed) % (uint64_t)(i + 1));
		h[i] = h[j];
		h[j] = t;
	}
	for (i = 0; i < N / 2; i++)
		upg_pool_free(pool, h[i]);
	s = stats();
	ratio = (double)s.used_bytes / (double)s.compressed_bytes;
	cr_assert_leq(ratio, 2.25, "half freed: used/compressed %.3f", ratio);

	for (i = 0; i < N / 2; i++) {
		fill_text(page, (uint64_t)(N + i), 4 + i % 29);
		cr_assert_eq(upg_pool_store(pool, page, &h[i]),
			     UPG_POOL_COMPRESSED);
	}
	s = stats();
	cr_assert_leq(s.used_bytes, full_used + full_used / 20,
		      "refill grew the pool from %llu to %llu",
		      (unsigned long long)full_used,
		      (unsigned long long)s.used_bytes);
	for (i = 0; i < N; i++)
		upg_pool_free(pool, h[i]);
	upg_pool_trim(pool);
	cr_assert_eq(stats().used_bytes, 0);
}

/* Store N text pages of varied sizes, then free all but one in @keep. */
static int store_then_thin(uint64_t *h, int n, int keep)
{
	static char page[PAGE];
	uint64_t seed = 7;
	int i, j, kept = 0;

	for (i = 0; i < n; i++) {
		fill_text(page, (uint64_t)i, 4 + i % 29);
		cr_assert_eq(upg_pool_store(pool, page, &h[i]),
			     UPG_POOL_COMPRESSED);
	}
	for (i = 0; i < n; i++) {
		j = (int)(rnd(&seed) % (uint64_t)keep);
		if (j) {
			upg_pool_free(pool, h[i]);
			h[i] = 0;
		} else {
			kept++;
		}
	}
	return kept;
}

/* Free every handle in @h (0s included): the pool must be left empty. */
static void free_all(const uint64_t *h, int n)
{
	struct upg_pool_stats s;

	for (int i = 0; i < n; i++)
		upg_pool_free(pool, h[i]);
	upg_pool_trim(pool);
	s = stats();
	cr_assert_eq(s.used_bytes, 0);
	cr_assert_eq(s.hole_bytes, 0);
	cr_assert_eq(s.objects, 0);
}

/* Every handle still in @h holds the page it was stored with. */
static void check_kept(const uint64_t *h, int n)
{
	static char page[PAGE], out[PAGE];

	for (int i = 0; i < n; i++) {
		if (!h[i])
			continue;
		fill_text(page, (uint64_t)i, 4 + i % 29);
		cr_assert_eq(upg_pool_load(pool, h[i], out), 0, "object %d", i);
		cr_assert_eq(memcmp(out, page, PAGE), 0, "object %d differs",
			     i);
	}
}

Test(pool, compaction_gives_back_the_holes_of_random_frees)
{
	enum { N = 20000 };
	static uint64_t h[N];
	struct upg_pool_stats s;
	uint64_t before, parked, left, nh;
	int i, moved = 0, ret;

	store_then_thin(h, N, 4);
	s = stats();
	before = s.used_bytes;
	parked = s.parked_bytes;
	/* A quarter kept at random: nearly every chunk still holds some. */
	cr_assert_gt(s.used_bytes, 3 * s.compressed_bytes,
		     "used %llu, compressed %llu: frees emptied chunks",
		     (unsigned long long)s.used_bytes,
		     (unsigned long long)s.compressed_bytes);
	cr_assert_gt(s.hole_bytes, s.used_bytes / 2);

	left = upg_pool_compact_begin(pool, UINT64_MAX);
	cr_assert_gt(left, 0);
	for (i = 0; i < N; i++) {
		if (!h[i])
			continue;
		ret = upg_pool_move(pool, h[i], &nh);
		cr_assert_geq(ret, 0, "move of object %d: %d", i, ret);
		if (ret == 1) {
			cr_assert(!upg_pool_moving(pool, nh));
			cr_assert_neq(nh, h[i]);
			h[i] = nh;
			moved++;
		}
	}
	cr_assert_eq((uint64_t)moved, left);
	cr_assert_eq(upg_pool_compact_left(pool), 0);
	cr_assert_gt(upg_pool_compact_end(pool), before / 2);
	s = stats();
	cr_assert_leq((double)s.used_bytes, 1.20 * (double)s.compressed_bytes,
		      "after compaction: used %llu, compressed %llu",
		      (unsigned long long)s.used_bytes,
		      (unsigned long long)s.compressed_bytes);
	cr_assert_eq(s.parked_bytes, parked, "emptied chunks must be unmapped");
	check_kept(h, N);
	free_all(h, N);
}

Test(pool, compaction_leaves_busy_objects_and_takes_stores_after)
{
	enum { N = 8000 };
	static uint64_t h[N];
	static char page[PAGE];
	uint64_t nh, same;
	int i, skipped = 0;

	store_then_thin(h, N, 3);
	fill_word(page, 0x5555555555555555ULL);
	cr_assert_eq(upg_pool_store(pool, page, &same), UPG_POOL_SAME);
	cr_assert_gt(upg_pool_compact_begin(pool, UINT64_MAX), 0);
	cr_assert_eq(upg_pool_move(pool, same, &nh), 0);
	cr_assert(!upg_pool_moving(pool, same));
	/* Stores meanwhile go to chunks that stay. */
	fill_text(page, 1u << 20, 9);
	cr_assert_eq(upg_pool_store(pool, page, &nh), UPG_POOL_COMPRESSED);
	cr_assert(!upg_pool_moving(pool, nh));
	upg_pool_free(pool, nh);
	/* Every other candidate's owner is "busy": it stays where it is. */
	for (i = 0; i < N; i++) {
		if (!h[i] || !upg_pool_moving(pool, h[i]))
			continue;
		if (skipped++ % 2)
			continue;
		cr_assert_eq(upg_pool_move(pool, h[i], &nh), 1);
		h[i] = nh;
	}
	cr_assert_gt(skipped, 1);
	cr_assert_gt(upg_pool_compact_left(pool), 0);
	upg_pool_compact_end(pool);
	cr_assert_eq(upg_pool_compact_left(pool), 0);
	for (i = 0; i < N; i++)
		cr_assert(!h[i] || !upg_pool_moving(pool, h[i]), "object %d",
			  i);
	check_kept(h, N);
	/* The chunks put back take objects again and free normally. */
	for (i = 0; i < N; i++) {
		if (h[i])
			continue;
		fill_text(page, (uint64_t)i, 4 + i % 29);
		cr_assert_eq(upg_pool_store(pool, page, &h[i]),
			     UPG_POOL_COMPRESSED);
	}
	check_kept(h, N);
	upg_pool_free(pool, same);
	free_all(h, N);
}
