/* SPDX-License-Identifier: MIT */
/*
 * Page compression: same-filled detection and LZ4, one 4 KiB page at a time.
 *
 * This is the only file that includes <lz4.h>. Everything here is a pure
 * function of its arguments: no locks, no global state, no allocation. The
 * LZ4 compression state (16 KiB) lives on the caller's stack, so callers
 * must run on a normal thread stack (handler and evictor threads do).
 *
 * Why not a thread-local state with LZ4_compress_fast_extState_fastReset():
 * liblz4 1.9.4 does not export it from the shared library, and the exported
 * LZ4_compress_fast_extState() clears the state on every call exactly as
 * LZ4_compress_default() does, so a thread-local state saves nothing and
 * would cost 16 KiB of static TLS in every thread of a preloaded program.
 *
 * Invariant: upg_decompress_page() succeeds only when the input decodes to
 * exactly one page without reading or writing out of bounds.
 */
#include <errno.h>
#include <string.h>

#include <lz4.h>

#include "common.h"
#include "compress.h"

#define PAGE_WORDS (UPG_PAGE_SIZE / sizeof(uint64_t))
#define SCAN_STRIDE 8 /* words compared per early-exit check */

/*
 * Compare the page against its first word SCAN_STRIDE words at a time: the
 * inner loop has no branch so the compiler vectorises it, and most pages
 * that are not same-filled differ within the first 64 bytes.
 */
bool upg_page_same_filled(const void *page, uint64_t *word)
{
	const uint64_t *p = page;
	uint64_t w = p[0];
	size_t i, j;

	if (p[PAGE_WORDS - 1] != w)
		return false;
	for (i = 0; i < PAGE_WORDS; i += SCAN_STRIDE) {
		uint64_t diff = 0;

		for (j = 0; j < SCAN_STRIDE; j++)
			diff |= p[i + j] ^ w;
		if (diff)
			return false;
	}
	*word = w;
	return true;
}

void upg_page_fill(void *page, uint64_t word)
{
	uint64_t *p = page;
	size_t i;

	if (word == 0) {
		memset(page, 0, UPG_PAGE_SIZE);
		return;
	}
	for (i = 0; i < PAGE_WORDS; i++)
		p[i] = word;
}

int upg_compress_page(const void *page, void *dst, int cap)
{
	/* LZ4 returns 0 when the output would exceed @cap. */
	return LZ4_compress_default(page, dst, (int)UPG_PAGE_SIZE, cap);
}

int upg_decompress_page(const void *src, int len, void *page)
{
	int n;

	if (len <= 0)
		return -EIO;
	n = LZ4_decompress_safe(src, page, len, (int)UPG_PAGE_SIZE);
	return n == (int)UPG_PAGE_SIZE ? 0 : -EIO;
}
