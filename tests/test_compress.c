/* SPDX-License-Identifier: MIT */
/*
 * Tests of page compression (lib/compress.c): same-filled detection, fill,
 * LZ4 round trips and the rejection of corrupt input. Run under ASan, the
 * corruption tests also check that decompression stays in bounds.
 */
#include <errno.h>
#include <string.h>

#include <criterion/criterion.h>
#include <lz4.h>

#include "common.h"
#include "compress.h"

#define PAGE UPG_PAGE_SIZE

static uint64_t rnd(uint64_t *s)
{
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return *s * 0x2545F4914F6CDD1DULL;
}

static void fill_random(void *buf, size_t len, uint64_t seed)
{
	unsigned char *p = buf;
	uint64_t s = seed * 0x9E3779B97F4A7C15ULL + 7;
	size_t i;

	for (i = 0; i < len; i++)
		p[i] = (unsigned char)rnd(&s);
}

static void fill_text(char *page, uint64_t seed)
{
	static const char *const words[] = { "alpha ", "beta ",	 "gamma ",
					     "delta ", "page ",	 "fault ",
					     "pool ",  "chunk ", "lz4 " };
	uint64_t s = seed + 1;
	size_t off = 0, n;

	while (off < PAGE) {
		const char *w = words[rnd(&s) % ARRAY_SIZE(words)];

		n = MIN(strlen(w), PAGE - off);
		memcpy(page + off, w, n);
		off += n;
	}
}

static char page[PAGE], out[PAGE], z[LZ4_COMPRESSBOUND(2 * PAGE)];

TestSuite(compress, .timeout = 60);

Test(compress, same_filled_detects_repeated_words)
{
	static const uint64_t words[] = { 0, ~0ULL, 1, 0x3ff0000000000000ULL,
					  0x0102030405060708ULL };
	uint64_t w;
	size_t i;

	for (i = 0; i < ARRAY_SIZE(words); i++) {
		upg_page_fill(page, words[i]);
		w = ~words[i];
		cr_assert(upg_page_same_filled(page, &w));
		cr_assert_eq(w, words[i]);
	}
}

Test(compress, fill_writes_every_word)
{
	uint64_t *p = (uint64_t *)page;
	size_t i;

	memset(page, 0x5a, PAGE);
	upg_page_fill(page, 0x1122334455667788ULL);
	for (i = 0; i < PAGE / 8; i++)
		cr_assert_eq(p[i], 0x1122334455667788ULL, "word %zu", i);
	upg_page_fill(page, 0);
	for (i = 0; i < PAGE / 8; i++)
		cr_assert_eq(p[i], 0, "word %zu", i);
}

/* One byte changed anywhere, including inside an unrolled block. */
Test(compress, same_filled_rejects_any_differing_byte)
{
	static const size_t at[] = { 0, 1, 7, 8, 63, 64, 100, 2048, 4095 };
	uint64_t w = 0;
	size_t i;

	for (i = 0; i < ARRAY_SIZE(at); i++) {
		upg_page_fill(page, 0xabababababababab);
		page[at[i]] ^= 1;
		cr_assert_not(upg_page_same_filled(page, &w), "byte %zu",
			      at[i]);
	}
	fill_text(page, 1);
	cr_assert_not(upg_page_same_filled(page, &w));
}

Test(compress, text_round_trips_smaller)
{
	int len, seed;

	for (seed = 0; seed < 50; seed++) {
		fill_text(page, (uint64_t)seed);
		len = upg_compress_page(page, z, UPG_COMPRESS_MAX);
		cr_assert(len > 0 && len <= UPG_COMPRESS_MAX, "len %d", len);
		cr_assert_lt(len, (int)PAGE * 3 / 4);
		memset(out, 0, PAGE);
		cr_assert_eq(upg_decompress_page(z, len, out), 0);
		cr_assert_eq(memcmp(out, page, PAGE), 0);
	}
}

Test(compress, same_filled_page_compresses_tiny)
{
	int len;

	upg_page_fill(page, 0x0123456789abcdefULL);
	len = upg_compress_page(page, z, UPG_COMPRESS_MAX);
	cr_assert(len > 0 && len < 64, "len %d", len);
	cr_assert_eq(upg_decompress_page(z, len, out), 0);
	cr_assert_eq(memcmp(out, page, PAGE), 0);
}

Test(compress, random_page_does_not_fit_the_cap)
{
	fill_random(page, PAGE, 3);
	cr_assert_eq(upg_compress_page(page, z, UPG_COMPRESS_MAX), 0);
	/* With room for LZ4's worst case it does compress (and expands). */
	cr_assert_gt(upg_compress_page(page, z, (int)sizeof(z)), (int)PAGE);
}

Test(compress, truncated_input_fails_with_eio)
{
	int len, cut;

	fill_text(page, 9);
	len = upg_compress_page(page, z, UPG_COMPRESS_MAX);
	cr_assert_gt(len, 16);
	for (cut = 1; cut < len; cut += 7)
		cr_assert_eq(upg_decompress_page(z, len - cut, out), -EIO,
			     "cut %d of %d", cut, len);
	cr_assert_eq(upg_decompress_page(z, 0, out), -EIO);
	cr_assert_eq(upg_decompress_page(z, -1, out), -EIO);
}

/* A valid stream of anything but exactly one page is corrupt for us. */
Test(compress, wrong_size_stream_fails_with_eio)
{
	static char big[2 * PAGE];
	int len;

	fill_text(big, 4);
	fill_text(big + PAGE, 5);
	len = LZ4_compress_default(big, z, (int)PAGE / 2, (int)sizeof(z));
	cr_assert_gt(len, 0);
	cr_assert_eq(upg_decompress_page(z, len, out), -EIO, "short");
	len = LZ4_compress_default(big, z, (int)sizeof(big), (int)sizeof(z));
	cr_assert_gt(len, 0);
	cr_assert_eq(upg_decompress_page(z, len, out), -EIO, "long");
}

Test(compress, garbage_input_fails_with_eio)
{
	int seed;

	for (seed = 0; seed < 100; seed++) {
		fill_random(z, 1024, (uint64_t)seed);
		cr_assert_eq(upg_decompress_page(z, 1024, out), -EIO, "seed %d",
			     seed);
	}
}

/*
 * LZ4 has no checksum: a flipped bit may still decode to a page, only a
 * wrong one. What must hold is that the result is 0 or -EIO and that
 * nothing is read or written out of bounds (ASan checks the latter).
 */
Test(compress, corrupt_streams_never_crash)
{
	uint64_t s = 77;
	int len, i, ret, fails = 0;

	fill_text(page, 11);
	len = upg_compress_page(page, z, UPG_COMPRESS_MAX);
	cr_assert_gt(len, 0);
	for (i = 0; i < 2000; i++) {
		static char bad[UPG_COMPRESS_MAX];
		uint64_t r = rnd(&s);

		memcpy(bad, z, (size_t)len);
		bad[r % (uint64_t)len] ^= (char)(1 << (r >> 32) % 8);
		ret = upg_decompress_page(bad, len, out);
		cr_assert(ret == 0 || ret == -EIO, "ret %d", ret);
		fails += ret == -EIO;
	}
	cr_assert_gt(fails, 0, "no bit flip was detected at all");
}
